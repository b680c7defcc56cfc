//! streamOptimized to raw: the marker chain in one forward pass.

use flate2::{Decompress, FlushDecompress, Status};

use super::*;
use crate::probe::PlacedFindings;
use crate::stream::u64_of;
use crate::stream::{intersect, le_u32, le_u64};
use crate::support::converter::ConvertError;
use crate::support::converter::{corrupt, truncated};
use crate::support::placer::{write_nonzero, SCRATCH_LEN};
use crate::support::sink::ConvertSink;
use crate::vmdk::header::{VmdkHeader, GD_AT_END, SECTOR};
use crate::vmdk::sparse::VmdkTableWalk;

/// Where the streamOptimized walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamPart {
    /// Reading the marker at `at` (`have` bytes of it so far).
    Marker { at: u64 },
    /// Inflating a grain's compressed bytes `[from, end)`; the marker was at `at`.
    Grain { at: u64, end: u64, lba: u64 },
    /// Skipping metadata up to `end`, then a marker.
    Skip { end: u64 },
    /// Past the end-of-stream marker at `at`: the rest is ignored (as QEMU does).
    Ended { at: u64 },
}

/// The forward walk over a streamOptimized marker chain, inflating grains as they pass.
pub(super) struct VmdkStreamWalk {
    part: StreamPart,
    head: [u8; META_MARKER_LEN],
    have: usize,
    inflate: Decompress,
    /// Bytes the current grain has produced, and whether its zlib stream ended.
    produced: u64,
    stream_end: bool,
    out: Vec<u8>,
    capacity: u64,
    grain_sectors: u64,
    grain_bytes: u64,
    max_compressed: u64,
    virtual_size: u64,
    footer: bool,
    /// QEMU's layout keeps the directory and tables at the start: they are walked (as the
    /// inspector does) so that a stream cut on a marker boundary still reads as truncated.
    tables: Option<VmdkTableWalk>,
    findings: PlacedFindings,
}

impl std::fmt::Debug for VmdkStreamWalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmdkStreamWalk")
            .field("part", &self.part)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl VmdkStreamWalk {
    pub(super) fn new(
        h: &VmdkHeader,
        virtual_size: u64,
        max_tracked: usize,
    ) -> Result<Self, ConvertError> {
        let overflow = || corrupt("VMDK header offsets overflow".into());
        let footer = h.gd_offset == GD_AT_END;
        let tables = if footer {
            None
        } else {
            Some(VmdkTableWalk::new(h, true, max_tracked).ok_or_else(overflow)?)
        };
        let grain_bytes = h.grain_size.checked_mul(SECTOR).ok_or_else(overflow)?;
        Ok(VmdkStreamWalk {
            part: StreamPart::Marker {
                at: h.overhead.checked_mul(SECTOR).ok_or_else(overflow)?,
            },
            head: [0; META_MARKER_LEN],
            have: 0,
            inflate: Decompress::new(true),
            produced: 0,
            stream_end: false,
            out: Vec::new(),
            capacity: h.capacity,
            grain_sectors: h.grain_size,
            grain_bytes,
            max_compressed: grain_bytes
                .checked_mul(VMDK_MAX_COMPRESSED_GRAIN_FACTOR)
                .ok_or_else(overflow)?,
            virtual_size,
            footer,
            tables,
            findings: PlacedFindings::default(),
        })
    }

    pub(super) fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let data_end = pos.saturating_add(u64_of(data.len()));
        if let Some(tables) = self.tables.as_mut() {
            tables.feed(pos, data, &mut self.findings);
        }
        loop {
            match self.part {
                StreamPart::Ended { .. } => return Ok(()),
                StreamPart::Skip { end } => {
                    if end > data_end {
                        return Ok(());
                    }
                    self.part = StreamPart::Marker { at: end };
                }
                StreamPart::Marker { at } => {
                    let want = if self.have >= GRAIN_MARKER_LEN as usize
                        && le_u32(&self.head, 8) == Some(0)
                    {
                        META_MARKER_LEN
                    } else {
                        GRAIN_MARKER_LEN as usize
                    };
                    let from = at.saturating_add(u64_of(self.have));
                    let Some((_, piece)) =
                        intersect(pos, data, from, at.saturating_add(u64_of(want)))
                    else {
                        return Ok(());
                    };
                    let end = self.have.saturating_add(piece.len());
                    if let Some(dst) = self.head.get_mut(self.have..end) {
                        dst.copy_from_slice(piece);
                    }
                    self.have = end;
                    if self.have < want {
                        return Ok(());
                    }
                    if want == GRAIN_MARKER_LEN as usize && le_u32(&self.head, 8) == Some(0) {
                        // A metadata marker: read its type too.
                        continue;
                    }
                    self.have = 0;
                    self.on_marker(at)?;
                }
                StreamPart::Grain { at, end, lba } => {
                    let from = at
                        .saturating_add(GRAIN_MARKER_LEN)
                        .saturating_add(self.consumed());
                    if let Some((_, piece)) = intersect(pos, data, from, end) {
                        self.inflate_piece(piece, at, lba, sink)?;
                    }
                    if end > data_end {
                        return Ok(());
                    }
                    self.end_grain(at, lba)?;
                    self.part = StreamPart::Marker {
                        at: next_sector(end, at)?,
                    };
                }
            }
        }
    }

    /// Compressed bytes consumed of the current grain.
    fn consumed(&self) -> u64 {
        self.inflate.total_in()
    }

    /// Decides the marker in `head`, at `at`.
    fn on_marker(&mut self, at: u64) -> Result<(), ConvertError> {
        let val = le_u64(&self.head, 0).unwrap_or(0);
        let size = u64::from(le_u32(&self.head, 8).unwrap_or(0));
        if size != 0 {
            if val >= self.capacity || val.checked_rem(self.grain_sectors) != Some(0) {
                return Err(corrupt(format!(
                    "VMDK grain marker at byte {at} has LBA {val}, which is not a grain start \
                     within the capacity of {} sectors",
                    self.capacity
                )));
            }
            if size > self.max_compressed {
                return Err(corrupt(format!(
                    "VMDK grain marker at byte {at} declares {size} compressed bytes, more than \
                     {VMDK_MAX_COMPRESSED_GRAIN_FACTOR} grains"
                )));
            }
            self.inflate.reset(true);
            self.produced = 0;
            self.stream_end = false;
            let end = at
                .checked_add(GRAIN_MARKER_LEN)
                .and_then(|e| e.checked_add(size))
                .ok_or_else(|| corrupt(format!("VMDK grain marker at byte {at} overflows")))?;
            self.part = StreamPart::Grain { at, end, lba: val };
            return Ok(());
        }
        let kind = le_u32(&self.head, 12).unwrap_or(u32::MAX);
        let body = |sectors: u64| {
            sectors
                .checked_add(1)
                .and_then(|s| s.checked_mul(SECTOR))
                .and_then(|b| at.checked_add(b))
                .ok_or_else(|| corrupt(format!("VMDK stream marker at byte {at} overflows")))
        };
        self.part = match kind {
            MARKER_EOS if val == 0 => StreamPart::Ended { at },
            MARKER_GT | MARKER_GD => StreamPart::Skip { end: body(val)? },
            MARKER_FOOTER if val == 1 => StreamPart::Skip { end: body(val)? },
            _ => {
                return Err(corrupt(format!(
                    "VMDK stream marker at byte {at} is invalid (type {kind}, {val} sectors)"
                )))
            }
        };
        Ok(())
    }

    /// Inflates compressed bytes of the grain at `at` and writes what they produce.
    ///
    /// The verdict on a bad grain depends on its bytes alone, not on how they arrive: each
    /// call may produce at most one byte more than the grain still has room for, and a grain
    /// whose output passed its size is too large even when the same call also met corrupt
    /// data (the inflater hands out everything it decoded before the error), so "too large"
    /// means "the deflate data before any error inflates to more than the grain". The
    /// inflater's own error text is not reported.
    fn inflate_piece(
        &mut self,
        mut input: &[u8],
        at: u64,
        lba: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if self.out.len() < SCRATCH_LEN {
            self.out.resize(SCRATCH_LEN, 0);
        }
        let base = lba.saturating_mul(SECTOR);
        let visible = self.virtual_size.saturating_sub(base).min(self.grain_bytes);
        // The last call filled the output buffer: the inflater may hold more output.
        let mut full = false;
        while !self.stream_end && (!input.is_empty() || full) {
            let room = usize::try_from(
                self.grain_bytes
                    .saturating_sub(self.produced)
                    .saturating_add(1),
            )
            .unwrap_or(usize::MAX)
            .min(self.out.len());
            let out = self.out.get_mut(..room).unwrap_or_default();
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self.inflate.decompress(input, out, FlushDecompress::None);
            let used =
                usize::try_from(self.inflate.total_in().saturating_sub(in0)).unwrap_or(usize::MAX);
            let made = usize::try_from(self.inflate.total_out().saturating_sub(out0))
                .unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or(&[]);
            let new_total = self.produced.saturating_add(u64_of(made));
            if new_total > self.grain_bytes {
                return Err(corrupt(format!(
                    "VMDK grain at byte {at} (LBA {lba}) inflates to more than its {} bytes",
                    self.grain_bytes
                )));
            }
            let status = result.map_err(|_| {
                corrupt(format!(
                    "VMDK grain at byte {at} (LBA {lba}) does not inflate: its deflate data is \
                     corrupt"
                ))
            })?;
            if self.produced < visible {
                let keep = usize::try_from(visible.saturating_sub(self.produced))
                    .unwrap_or(usize::MAX)
                    .min(made);
                if let Some(bytes) = self.out.get(..keep) {
                    write_nonzero(sink, base.saturating_add(self.produced), bytes)?;
                }
            }
            self.produced = new_total;
            full = made == room;
            if status == Status::StreamEnd {
                self.stream_end = true;
            } else if used == 0 && made == 0 {
                if !input.is_empty() {
                    // Cannot happen with output room: the inflater takes all input it is given.
                    return Err(corrupt(format!(
                        "VMDK grain at byte {at} (LBA {lba}) stalls the inflater"
                    )));
                }
                break;
            }
        }
        Ok(())
    }

    /// The grain's compressed bytes are all in: it must have inflated completely.
    fn end_grain(&mut self, at: u64, lba: u64) -> Result<(), ConvertError> {
        if !self.stream_end {
            // Drain what the inflater still holds without more input.
            return Err(corrupt(format!(
                "VMDK grain at byte {at} (LBA {lba}) holds an incomplete deflate stream"
            )));
        }
        let base = lba.saturating_mul(SECTOR);
        let visible = self.virtual_size.saturating_sub(base).min(self.grain_bytes);
        if self.produced < visible {
            return Err(corrupt(format!(
                "VMDK grain at byte {at} (LBA {lba}) inflates to {} bytes, less than the {visible} \
                 it must hold",
                self.produced
            )));
        }
        Ok(())
    }

    pub(super) fn finish(&mut self, len: u64) -> Result<(), ConvertError> {
        if let Some(tables) = self.tables.as_ref() {
            tables.finish(len, &mut self.findings);
        }
        if let Some(r) = self.findings.as_slice().first() {
            return Err(ConvertError::image(r.code, r.message.clone()));
        }
        match self.part {
            StreamPart::Ended { .. } => Ok(()),
            // QEMU's layout reads grains through the directory at the start: a chain that
            // stops cleanly on a marker boundary has every grain.
            StreamPart::Marker { at } if !self.footer && at == len && self.have == 0 => Ok(()),
            StreamPart::Marker { at } | StreamPart::Grain { at, .. } => Err(truncated(format!(
                "VMDK stream ends at byte {len} inside its marker chain (marker at byte {at})"
            ))),
            StreamPart::Skip { end } => Err(truncated(format!(
                "VMDK stream ends at byte {len} inside metadata that ends at byte {end}"
            ))),
        }
    }
}

/// The sector boundary at or after `end` (markers start on sectors).
fn next_sector(end: u64, at: u64) -> Result<u64, ConvertError> {
    end.checked_next_multiple_of(SECTOR)
        .ok_or_else(|| corrupt(format!("VMDK stream marker at byte {at} overflows")))
}
