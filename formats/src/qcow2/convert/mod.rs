//! Streaming conversion, qcow2 (versions 2 and 3) to raw.
//!
//! One forward pass over the image, host cluster by host cluster:
//! - the header (cluster 0) gives the geometry and the active L1 table (snapshots' tables are
//!   not read: the active layer is converted, as `qemu-img convert` does);
//! - the L1 table, as it streams past, names the L2 tables; an L2 table ahead of the stream
//!   is queued and scanned when it streams past; one that already went by is read back from
//!   the spill area;
//! - each L2 entry maps a guest cluster to a host cluster (or to a compressed extent, or to
//!   zeros): a host cluster ahead of the stream is remembered and its bytes are written at
//!   every guest offset mapping it as they stream past (without buffering); one that already
//!   went by is read back from the spill area; compressed extents are collected in a window
//!   and inflated (raw deflate, or zstd frames when `compression_type` is 1) into exactly one
//!   cluster, as QEMU's `qcow2_decompress` does.
//! - While the mapping is incomplete (the L1 table not fully read, or some L2 table still
//!   ahead), every byte past the header cluster that no known table or mapping claims could
//!   be data of an unread L2 table: its non-zero 512-byte sectors are spilled (keyed by host
//!   offset) so the entry that names them later can place them. Once the mapping is complete
//!   nothing more is spilled and unclaimed bytes (refcount blocks, snapshot-only clusters)
//!   are skipped.
//! - Verdicts depend on the bytes only, not on how the input is chunked: every check happens
//!   at an offset the bytes fix, in stream order (a cluster claimed whole by a table or a
//!   mapping is recorded as used when it begins, before its entries complete; other bytes
//!   are accounted for before the compressed extent ending after them is inflated; every new
//!   tracked entry or range is checked against the limit as it is added).
//!
//! Zero clusters, unallocated clusters and subclusters, and all-zero 4 KiB output pieces are
//! never written: they stay holes. The output's length is the virtual size rounded down to
//! 512 bytes (QEMU counts whole sectors), as `qemu-img convert -O raw` writes it.
//!
//! Broken images: a table or cluster pointing into the header cluster, into the L1 table or
//! into the metadata cluster being read, a host byte used twice where the second use comes
//! after the first was placed, undecodable compressed data, and invalid subcluster bitmaps
//! are `corrupt`; a table or cluster past the end of the input is `truncated`.
//!
//! Memory bound (bytes), with `cs` the cluster size (≤ 2 MiB) and `E` =
//! `ConvertLimits::max_tracked_entries`:
//! `≈ 64 × E` (queued L2 tables, pending data clusters and compressed extents, spill ranges
//! and consumed ranges, each a B-tree entry of at most 24 bytes plus node overhead, each
//! checked against `E` as it is inserted)
//! `+ 3 × cs` (compressed window) `+ 2 × cs` (decompressed cluster, past-read buffer: a
//! compressed extent is at most `2 × cs`, what its sector count field can express and what
//! QEMU reads)
//! `+ cs` (a past L2 table) `+ SPILL_RUN` (1 MiB batched spill write) `+ 512`
//! `+ inflate state (≈ 43 KiB) or zstd state (≤ 2^QCOW2_ZSTD_MAX_WINDOW_LOG + 256 KiB)`.
//! Spill bound: the non-zero unclaimed sectors that stream past before the mapping is
//! complete, at most `ConvertLimits::max_spill_bytes` (beyond it: `limit_exceeded`). For the
//! layouts QEMU writes (L2 tables before their data) that is only the refcount blocks and the
//! clusters only snapshots use that come before the last active L2 table.

mod entries;
mod spill;
#[cfg(test)]
mod tests;
mod walk;

use super::header::{self, Qcow2Header, Qcow2Kind, QCOW_MAGIC};
use super::limits::QCOW2_HEADER_CAPTURE;
use crate::stream::Capture;
use crate::support::converter::truncated;
use crate::support::converter::{ConvertError, ConvertLimits, FormatConverter};
use crate::support::placer::write_nonzero;
use crate::support::sink::ConvertSink;
use crate::ReasonCode;
use walk::Qcow2ConvertWalk;

/// Bits 9–55 of an L1 entry: the L2 table offset (QEMU's `L1E_OFFSET_MASK`).
pub(super) const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9–55 of a standard L2 entry: the cluster offset (QEMU's `L2E_OFFSET_MASK`).
pub(super) const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: the cluster is compressed.
pub(super) const L2E_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (standard L2 only): the cluster reads as zeros.
pub(super) const L2E_ZERO: u64 = 1;
/// Extended L2 entries split a cluster into 32 subclusters.
pub(super) const SUBCLUSTERS: u64 = 32;
/// Compressed extents are counted in 512-byte sectors; spill works in sectors too.
pub(super) const SECTOR: u64 = 512;
/// Spilled sectors are batched into writes of up to this many bytes (1 MiB).
pub(super) const SPILL_RUN: usize = 1 << 20;

/// The qcow2 to raw converter.
///
/// # Errors
/// None at construction: the header is checked when it streams past.
pub(crate) fn converter(limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Ok(Box::new(Qcow2Converter {
        limits: limits.clone(),
        header: Capture::new(0, QCOW2_HEADER_CAPTURE),
        walk: None,
    }))
}

/// Converts a qcow2 image to raw (see the module documentation).
#[derive(Debug)]
struct Qcow2Converter {
    limits: ConvertLimits,
    header: Capture,
    walk: Option<Box<Qcow2ConvertWalk>>,
}

impl FormatConverter for Qcow2Converter {
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if self.walk.is_none() {
            if !self.header.feed(pos, data) {
                if self
                    .header
                    .bytes()
                    .get(..QCOW_MAGIC.len())
                    .is_some_and(|m| m != QCOW_MAGIC)
                {
                    return Err(not_qcow2());
                }
                return Ok(());
            }
            let walk = Qcow2ConvertWalk::new(self.header.bytes(), &self.limits)?;
            self.walk = Some(Box::new(walk));
        }
        match self.walk.as_mut() {
            Some(walk) => walk.feed(pos, data, sink),
            None => Ok(()),
        }
    }

    fn finish(&mut self, len: u64, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        if self.walk.is_none() {
            // Builds the walk from a short header only to report why it is unusable.
            let walk = Qcow2ConvertWalk::new(self.header.bytes(), &self.limits)?;
            self.walk = Some(Box::new(walk));
        }
        match self.walk.as_mut() {
            Some(walk) => walk.finish(len, sink),
            None => Err(truncated(format!(
                "qcow2 header is cut short: the stream ends after {len} bytes"
            ))),
        }
    }
}

fn not_qcow2() -> ConvertError {
    ConvertError::image(
        ReasonCode::FormatMismatch,
        "input declared qcow2 does not start with the qcow2 magic QFI\\xfb",
    )
}

/// Checks the header with the inspector's checks ([`header::classify`], [`header::check`])
/// and returns an error for anything it cannot convert: the converter trusts no inspector.
pub(super) fn check_header(b: &[u8], limits: &ConvertLimits) -> Result<Qcow2Header, ConvertError> {
    let h = match header::classify(b) {
        Ok(Qcow2Kind::Qcow2(h)) => *h,
        Ok(Qcow2Kind::NotQcow) => return Err(not_qcow2()),
        Ok(Qcow2Kind::V1) => {
            return Err(ConvertError::image(
                ReasonCode::UnsupportedFormat,
                "QCOW version 1 images are not converted",
            ))
        }
        Err(p) => return Err(ConvertError::image(p.code, p.message)),
    };
    let (problems, _, _) = header::check(&h);
    if let Some(p) = problems.into_iter().next() {
        return Err(ConvertError::image(p.code, p.message));
    }
    if h.backing_file_offset != 0 {
        return Err(ConvertError::image(
            ReasonCode::BackingFile,
            "qcow2 image references a backing file; it cannot be converted on its own",
        ));
    }
    if h.data_file_flagged() {
        return Err(ConvertError::image(
            ReasonCode::DataFile,
            "qcow2 image stores its data in an external data file",
        ));
    }
    if h.virtual_size() > limits.max_virtual_size {
        return Err(ConvertError::image(
            ReasonCode::LimitExceeded,
            format!(
                "qcow2 virtual size {} exceeds the limit of {} bytes",
                h.virtual_size(),
                limits.max_virtual_size
            ),
        ));
    }
    Ok(h)
}

/// Writes `data` at output offset `out`, clipped to the virtual size, leaving out every
/// all-zero 4 KiB piece ([`write_nonzero`]).
fn emit(
    sink: &mut dyn ConvertSink,
    virtual_size: u64,
    out: u64,
    data: &[u8],
) -> Result<(), ConvertError> {
    if out >= virtual_size {
        return Ok(());
    }
    let room = usize::try_from(virtual_size.saturating_sub(out)).unwrap_or(usize::MAX);
    write_nonzero(sink, out, data.get(..room.min(data.len())).unwrap_or(data))
}
