//! Streaming conversion, vmdk to raw.
//!
//! - **streamOptimized** (QEMU's layout with the grain directory after the descriptor, and
//!   VMware's with grain tables, directory and footer at the end): every grain marker carries
//!   its LBA, so the marker chain converts in one forward pass: each grain is inflated (zlib,
//!   RFC 1950, as QEMU's `compress()`/`uncompress()` and VMware write it) as its bytes stream
//!   past and written at `lba × 512`. Nothing is spilled.
//! - **monolithicSparse**: the grain directory (found from the header) is scanned as it
//!   streams past, then each grain table it names (after the directory, in directory order,
//!   as the inspector requires), then the grains those tables place are copied as they stream
//!   past. A grain that arrives before the table that places it is spilled (see [`Placer`])
//!   and placed when the table arrives. What is spilled and what is tracked, and so whether a
//!   limit is hit, depends only on the bytes: everything from `overHead` to the end of the
//!   last grain table is spilled, and each table entry is handled after the bytes before it.
//!
//! - **monolithicSparse with a footer** (`GD_AT_END`, VMware's layout): the directory comes
//!   last, so the whole input is spooled to the spill area and converted from there at the
//!   end (see [`spool`]): a second read of a local copy.
//!
//! Like QEMU, the primary grain directory is read (not the redundant one); entries of 0 and
//! zeroed-grain entries (1, with the zeroed-grain flag) stay holes; grains are clipped to the
//! capacity. The output's length is the capacity in bytes.
//!
//! Memory: one 512-byte header, one 16-byte marker, one inflate state (about 43 KiB) and one
//! [`SCRATCH_LEN`] buffer; for monolithicSparse also `16 × gd_entries` bytes of queued tables
//! plus [`Placer`]'s bound, at most `max_tracked_entries` pending grains.
//! Spill: 0 for streamOptimized; the whole input for a footer monolithicSparse; for
//! any other monolithicSparse every byte from `overHead` to the end of
//! the grain directory and its last table, at most `max_spill_bytes` (none for QEMU's and
//! VMware's layouts, whose directories and tables lie inside `overHead`).

pub(crate) mod footer;
mod sparse;
mod spool;
mod stream;
#[cfg(test)]
mod tests;

use super::header::{VmdkHeader, VmdkSubformat, GD_AT_END, VMDK4_MAGIC};
use crate::stream::Capture;
use crate::support::converter::{corrupt, truncated};
use crate::support::converter::{ConvertError, ConvertLimits, FormatConverter};
use crate::support::sink::ConvertSink;
use crate::ReasonCode;
use sparse::VmdkSparseWalk;
use spool::VmdkFooterSpool;
use stream::VmdkStreamWalk;

/// The sparse extent header is one sector.
pub(super) const HEADER_LEN: usize = 512;

/// Bytes of a grain marker before its compressed data: `{u64 lba, u32 size}`.
pub(super) const GRAIN_MARKER_LEN: u64 = 12;
/// Bytes of a metadata marker that matter: `{u64 numSectors, u32 0, u32 type}`.
pub(super) const META_MARKER_LEN: usize = 16;
/// Metadata marker types.
pub(super) const MARKER_EOS: u32 = 0;
pub(super) const MARKER_GT: u32 = 1;
pub(super) const MARKER_GD: u32 = 2;
pub(super) const MARKER_FOOTER: u32 = 3;

/// A compressed grain may be at most twice the grain size: QEMU reads two grains' worth of
/// bytes for one compressed grain and refuses a larger size (`vmdk_read_extent`).
pub(super) const VMDK_MAX_COMPRESSED_GRAIN_FACTOR: u64 = 2;

/// Bytes per grain directory or grain table entry.
pub(super) const ENTRY: u64 = 4;

/// Where the converter is.
#[derive(Debug)]
enum VmdkConvertState {
    /// Collecting the header sector.
    Header(Capture),
    /// A streamOptimized marker chain.
    Stream(Box<VmdkStreamWalk>),
    /// A monolithicSparse directory/table walk.
    Sparse(Box<VmdkSparseWalk>),
    /// A monolithicSparse with its directory in a footer, spooled until the end.
    Footer(Box<VmdkFooterSpool>),
}

/// The vmdk to raw converter.
#[derive(Debug)]
struct VmdkConverter {
    limits: ConvertLimits,
    state: VmdkConvertState,
    virtual_size: u64,
}

/// The vmdk to raw converter.
///
/// # Errors
/// Never at construction; see [`ConvertError`] while feeding.
pub(crate) fn converter(limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Ok(Box::new(VmdkConverter {
        limits: limits.clone(),
        state: VmdkConvertState::Header(Capture::new(0, HEADER_LEN)),
        virtual_size: 0,
    }))
}

impl VmdkConverter {
    /// Decides the layout from the header sector.
    fn on_header(&mut self, bytes: &[u8]) -> Result<(), ConvertError> {
        if !bytes.starts_with(VMDK4_MAGIC) {
            return Err(ConvertError::image(
                ReasonCode::UnsupportedFormat,
                "only VMDK sparse extents (KDMV) are converted",
            ));
        }
        let header = VmdkHeader::parse(bytes)
            .ok_or_else(|| truncated("VMDK sparse extent header is cut short".into()))?;
        let subformat = header
            .check()
            .map_err(|(code, message)| ConvertError::image(code, message))?;
        let virtual_size = header
            .virtual_size()
            .ok_or_else(|| corrupt("VMDK capacity overflows".into()))?;
        if virtual_size > self.limits.max_virtual_size {
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "VMDK virtual size of {virtual_size} bytes exceeds the limit of {} bytes",
                    self.limits.max_virtual_size
                ),
            ));
        }
        self.virtual_size = virtual_size;
        self.state = match subformat {
            // The grain directory is in the footer, after the data it places: spooled, then
            // converted from the spool at the end.
            VmdkSubformat::MonolithicSparse if header.gd_offset == GD_AT_END => {
                VmdkConvertState::Footer(Box::new(VmdkFooterSpool::new(bytes, &self.limits)))
            }
            VmdkSubformat::StreamOptimized => VmdkConvertState::Stream(Box::new(
                VmdkStreamWalk::new(&header, virtual_size, self.limits.max_tracked_entries)?,
            )),
            VmdkSubformat::MonolithicSparse => VmdkConvertState::Sparse(Box::new(
                VmdkSparseWalk::new(&header, virtual_size, &self.limits)?,
            )),
        };
        Ok(())
    }
}

impl FormatConverter for VmdkConverter {
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if let VmdkConvertState::Header(cap) = &mut self.state {
            if !cap.feed(pos, data) {
                return Ok(());
            }
            let bytes = cap.bytes().to_vec();
            self.on_header(&bytes)?;
        }
        match &mut self.state {
            VmdkConvertState::Header(_) => Ok(()),
            VmdkConvertState::Stream(walk) => walk.feed(pos, data, sink),
            VmdkConvertState::Sparse(walk) => walk.feed(pos, data, sink),
            VmdkConvertState::Footer(spool) => spool.feed(pos, data, sink),
        }
    }

    fn finish(&mut self, len: u64, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        match &mut self.state {
            VmdkConvertState::Header(cap) => Err(truncated(format!(
                "VMDK image ends at byte {len}, inside its {HEADER_LEN}-byte header ({} bytes)",
                cap.bytes().len()
            ))),
            VmdkConvertState::Stream(walk) => walk.finish(len),
            VmdkConvertState::Sparse(walk) => walk.finish(len, sink),
            VmdkConvertState::Footer(spool) => spool.finish(len, sink),
        }?;
        Ok(self.virtual_size)
    }
}
