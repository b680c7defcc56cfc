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
//! Like QEMU, the primary grain directory is read (not the redundant one); entries of 0 and
//! zeroed-grain entries (1, with the zeroed-grain flag) stay holes; grains are clipped to the
//! capacity. The output's length is the capacity in bytes.
//!
//! Memory: one 512-byte header, one 16-byte marker, one inflate state (about 43 KiB) and one
//! [`SCRATCH_LEN`] buffer; for monolithicSparse also `16 × gd_entries` bytes of queued tables
//! plus [`Placer`]'s bound, at most `max_tracked_entries` pending grains.
//! Spill: 0 for streamOptimized; for monolithicSparse every byte from `overHead` to the end of
//! the grain directory and its last table, at most `max_spill_bytes` (none for QEMU's and
//! VMware's layouts, whose directories and tables lie inside `overHead`).

use std::collections::BTreeMap;

use flate2::{Decompress, FlushDecompress, Status};

use super::header::{VmdkHeader, VmdkSubformat, GD_AT_END, SECTOR, VMDK4_MAGIC};
use super::sparse::VmdkTableWalk;
use crate::convert::{corrupt, truncated};
use crate::convert::{ConvertError, ConvertLimits, ConvertSink, FormatConverter};
use crate::probe::PlacedFindings;
use crate::stream::u64_of;
use crate::stream::{intersect, le_u32, le_u64, slice_at, Capture, EntryScanner, TableQueue};
use crate::ReasonCode;

/// Bytes of the output handled at once when copying out of the spill area or inflating: the
/// granularity of the all-zero check too.
pub(crate) const SCRATCH_LEN: usize = 64 << 10;

/// The all-zero check's granularity: output pieces of this many bytes (aligned in the output)
/// that are all zero are not written, so they stay holes.
const ZERO_CHECK: u64 = 4096;

/// The sparse extent header is one sector.
const HEADER_LEN: usize = 512;

/// Bytes of a grain marker before its compressed data: `{u64 lba, u32 size}`.
const GRAIN_MARKER_LEN: u64 = 12;
/// Bytes of a metadata marker that matter: `{u64 numSectors, u32 0, u32 type}`.
const META_MARKER_LEN: usize = 16;
/// Metadata marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// A compressed grain may be at most twice the grain size: QEMU reads two grains' worth of
/// bytes for one compressed grain and refuses a larger size (`vmdk_read_extent`).
const VMDK_MAX_COMPRESSED_GRAIN_FACTOR: u64 = 2;

/// Bytes per grain directory or grain table entry.
const ENTRY: u64 = 4;

/// Writes `data` at output offset `out`, leaving out every [`ZERO_CHECK`]-aligned piece that
/// is all zeros (holes stay holes). Contiguous non-zero pieces go out as one write.
pub(crate) fn write_nonzero(
    sink: &mut dyn ConvertSink,
    out: u64,
    data: &[u8],
) -> Result<(), ConvertError> {
    let mut rest = data;
    let mut at = out;
    // Start of the pending run of non-zero bytes (relative to `data`) and its output offset.
    let mut run: Option<(usize, u64)> = None;
    let mut done = 0usize;
    while !rest.is_empty() {
        let to_boundary = ZERO_CHECK.saturating_sub(at.checked_rem(ZERO_CHECK).unwrap_or(0));
        let n = usize::try_from(to_boundary)
            .unwrap_or(usize::MAX)
            .min(rest.len());
        let (piece, after) = rest.split_at(n);
        if piece.iter().all(|&b| b == 0) {
            if let Some((start, start_out)) = run.take() {
                if let Some(bytes) = data.get(start..done) {
                    sink.write_at(start_out, bytes)?;
                }
            }
        } else if run.is_none() {
            run = Some((done, at));
        }
        done = done.saturating_add(n);
        at = at.saturating_add(u64_of(n));
        rest = after;
    }
    if let Some((start, start_out)) = run {
        if let Some(bytes) = data.get(start..) {
            sink.write_at(start_out, bytes)?;
        }
    }
    Ok(())
}

/// Copies input ranges to output offsets as the input streams past, and keeps input that
/// arrives before the metadata placing it in the caller's spill area.
///
/// Memory: at most `max_tracked_entries` pending placements (one `BTreeMap` node each, about
/// 40 bytes) plus at most `max_tracked_entries` spilled ranges (24 bytes each) plus one
/// [`SCRATCH_LEN`] buffer. Spill: at most `max_spill_bytes` (then `limit_exceeded`).
#[derive(Debug)]
pub(crate) struct Placer {
    /// `(input start, output start) → length`; every pending range ends after `pos`.
    pending: BTreeMap<(u64, u64), u64>,
    max_entries: usize,
    /// Spilled input ranges `(input start, input end, spill offset)`, ascending, merged.
    spilled: Vec<(u64, u64, u64)>,
    spill_used: u64,
    max_spill: u64,
    /// Input bytes fed so far.
    pos: u64,
    /// The format's name for messages.
    what: &'static str,
    keys: Vec<(u64, u64)>,
    scratch: Vec<u8>,
}

impl Placer {
    /// A placer bounded by `limits`; `what` names the format in messages.
    pub(crate) fn new(limits: &ConvertLimits, what: &'static str) -> Self {
        Placer {
            pending: BTreeMap::new(),
            max_entries: limits.max_tracked_entries,
            spilled: Vec::new(),
            spill_used: 0,
            max_spill: limits.max_spill_bytes,
            pos: 0,
            what,
            keys: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Bytes spilled so far.
    pub(crate) fn spilled_bytes(&self) -> u64 {
        self.spill_used
    }

    /// The input range `[input, input + len)` holds output `[output, output + len)`. Parts
    /// that already streamed past come from the spill area (an error if they were not
    /// spilled: the range points back into metadata or data that cannot be read again).
    pub(crate) fn place(
        &mut self,
        input: u64,
        len: u64,
        output: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if len == 0 {
            return Ok(());
        }
        let end = input.checked_add(len).ok_or_else(|| {
            corrupt(format!(
                "{} data at input offset {input} overflows",
                self.what
            ))
        })?;
        if input < self.pos {
            let passed_end = end.min(self.pos);
            self.copy_spilled(input, passed_end, output, sink)?;
            if end <= self.pos {
                return Ok(());
            }
            let skip = self.pos.saturating_sub(input);
            return self.register(
                self.pos,
                end.saturating_sub(self.pos),
                output.saturating_add(skip),
            );
        }
        self.register(input, len, output)
    }

    fn register(&mut self, input: u64, len: u64, output: u64) -> Result<(), ConvertError> {
        if self.pending.len() >= self.max_entries && !self.pending.contains_key(&(input, output)) {
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "{} image places more than {} data ranges ahead of the stream",
                    self.what, self.max_entries
                ),
            ));
        }
        let slot = self.pending.entry((input, output)).or_insert(0);
        *slot = (*slot).max(len);
        Ok(())
    }

    /// Copies spilled input `[start, end)` to output `out`.
    fn copy_spilled(
        &mut self,
        start: u64,
        end: u64,
        out: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let mut at = start;
        if self.scratch.len() < SCRATCH_LEN {
            self.scratch.resize(SCRATCH_LEN, 0);
        }
        while at < end {
            let idx = self.spilled.partition_point(|&(_, e, _)| e <= at);
            let Some(&(s, e, spill_off)) = self.spilled.get(idx).filter(|(s, _, _)| *s <= at)
            else {
                return Err(corrupt(format!(
                    "{} data at input offset {at} is placed after it streamed past (it overlaps \
                     metadata or data already read)",
                    self.what
                )));
            };
            let n = e.min(end).saturating_sub(at).min(u64_of(SCRATCH_LEN));
            let n_usize = usize::try_from(n).unwrap_or(SCRATCH_LEN);
            let buf = self
                .scratch
                .get_mut(..n_usize)
                .ok_or_else(|| corrupt("spill buffer".into()))?;
            sink.spill_read(spill_off.saturating_add(at.saturating_sub(s)), buf)?;
            write_nonzero(sink, out.saturating_add(at.saturating_sub(start)), buf)?;
            at = at.saturating_add(n);
        }
        Ok(())
    }

    /// Feeds input at `pos`: copies the parts of pending ranges it holds, and spills its bytes
    /// that fall in one of the `spill` ranges (`[start, end)` of the input, ascending).
    ///
    /// Callers decide what to spill from positions alone (the ranges where data may lie before
    /// the metadata placing it) and feed the bytes before each metadata entry before placing
    /// what it names, so that what is spilled and tracked, and so whether a limit is hit, does
    /// not depend on how the input is chunked.
    pub(crate) fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        spill: &[(u64, u64)],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let data_end = pos.saturating_add(u64_of(data.len()));
        self.keys.clear();
        self.keys
            .extend(self.pending.range(..(data_end, 0)).map(|(k, _)| *k));
        for i in 0..self.keys.len() {
            let Some(&(input, output)) = self.keys.get(i) else {
                break;
            };
            let Some(&len) = self.pending.get(&(input, output)) else {
                continue;
            };
            let end = input.saturating_add(len);
            if let Some((rel, part)) = intersect(pos, data, input, end) {
                write_nonzero(sink, output.saturating_add(rel), part)?;
            }
            if end <= data_end {
                self.pending.remove(&(input, output));
            }
        }
        for &(start, end) in spill {
            if let Some((rel, part)) = intersect(pos, data, start, end) {
                self.spill(start.saturating_add(rel), part, sink)?;
            }
        }
        self.pos = data_end;
        Ok(())
    }

    /// Spills `part`, input bytes from `at`. Checks are made in the order a byte-by-byte feed
    /// would meet them: a new spilled range at `at`, then the byte that overflows the area.
    fn spill(
        &mut self,
        at: u64,
        part: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let extends = self.spilled.last().is_some_and(|last| last.1 == at);
        if !extends && self.spilled.len() >= self.max_entries {
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "{} image spills more than {} separate ranges (at input offset {at})",
                    self.what, self.max_entries
                ),
            ));
        }
        let n = u64_of(part.len());
        let used = self.spill_used.saturating_add(n);
        if used > self.max_spill {
            // The first byte that does not fit.
            let over = at.saturating_add(self.max_spill.saturating_sub(self.spill_used));
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "{} image keeps data ahead of the metadata placing it beyond the spill \
                     limit of {} bytes (at input offset {over})",
                    self.what, self.max_spill
                ),
            ));
        }
        sink.spill_write(self.spill_used, part)?;
        let end = at.saturating_add(n);
        match self.spilled.last_mut() {
            Some(last) if extends => last.1 = end,
            _ => self.spilled.push((at, end, self.spill_used)),
        }
        self.spill_used = used;
        Ok(())
    }

    /// The first pending range that never streamed past (the input ended at `len`), as
    /// `(input start, output start)`.
    pub(crate) fn first_pending(&self) -> Option<(u64, u64)> {
        self.pending.keys().next().copied()
    }

    /// Drops spilled ranges: once every placement is known, nothing more is read back.
    pub(crate) fn forget_spill(&mut self) {
        self.spilled = Vec::new();
    }
}

/// Where the converter is.
#[derive(Debug)]
enum VmdkConvertState {
    /// Collecting the header sector.
    Header(Capture),
    /// A streamOptimized marker chain.
    Stream(Box<VmdkStreamWalk>),
    /// A monolithicSparse directory/table walk.
    Sparse(Box<VmdkSparseWalk>),
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
        }?;
        Ok(self.virtual_size)
    }
}

/// Where the streamOptimized walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamPart {
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
struct VmdkStreamWalk {
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
    fn new(h: &VmdkHeader, virtual_size: u64, max_tracked: usize) -> Result<Self, ConvertError> {
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

    fn feed(
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

    fn finish(&mut self, len: u64) -> Result<(), ConvertError> {
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

/// The monolithicSparse walk: directory → tables → grains.
///
/// Like the inspector ([`VmdkTableWalk`]), the converter requires the grain tables after the
/// directory, in directory order and not overlapping: every table is then ahead of the stream
/// when it is queued and scanned whole, however the input is chunked.
#[derive(Debug)]
struct VmdkSparseWalk {
    gd: EntryScanner<4>,
    gd_start: u64,
    /// Grain tables named by the directory: start → directory index.
    table_index: BTreeMap<u64, u64>,
    tables: TableQueue<4>,
    /// Where the next grain table may start: the end of the directory, then of the last
    /// table queued. Once the directory is read, the end of all metadata.
    next_table: u64,
    placer: Placer,
    gtes: u64,
    grain_sectors: u64,
    grain_bytes: u64,
    capacity: u64,
    virtual_size: u64,
    overhead_bytes: u64,
    zero_grain: bool,
    max_tracked: usize,
    /// One past the last input byte of any grain placed.
    data_end: u64,
}

/// A grain table entry that places a grain, and where the entry ends in the input.
#[derive(Debug, Clone, Copy)]
struct GrainPlacement {
    entry_end: u64,
    input: u64,
    output: u64,
}

impl VmdkSparseWalk {
    fn new(
        h: &VmdkHeader,
        virtual_size: u64,
        limits: &ConvertLimits,
    ) -> Result<Self, ConvertError> {
        let overflow = || corrupt("VMDK header offsets overflow".into());
        let entries = h.gd_entries().ok_or_else(overflow)?;
        let gd_start = h.gd_offset.checked_mul(SECTOR).ok_or_else(overflow)?;
        let gtes = u64::from(h.gtes_per_gt);
        let gd = EntryScanner::new(gd_start, entries).ok_or_else(overflow)?;
        Ok(VmdkSparseWalk {
            next_table: gd.end(),
            gd,
            gd_start,
            table_index: BTreeMap::new(),
            tables: TableQueue::new(gtes, limits.max_tracked_entries),
            placer: Placer::new(limits, "VMDK"),
            gtes,
            grain_sectors: h.grain_size,
            grain_bytes: h.grain_size.checked_mul(SECTOR).ok_or_else(overflow)?,
            capacity: h.capacity,
            virtual_size,
            overhead_bytes: h.overhead.checked_mul(SECTOR).ok_or_else(overflow)?,
            zero_grain: h.zero_grain(),
            max_tracked: limits.max_tracked_entries,
            data_end: 0,
        })
    }

    /// Whether every table placing grains has been read.
    fn metadata_done(&self, pos: u64) -> bool {
        self.gd.is_done(pos) && self.tables.pending() == 0
    }

    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let data_end = pos.saturating_add(u64_of(data.len()));
        // 1. Directory entries: queue their tables. A bad entry fails the conversion where it
        //    ends in the input (after the data before it, see 3).
        let mut failure: Option<(u64, ConvertError)> = None;
        let (gd_start, table_bytes) = (self.gd_start, self.gtes.saturating_mul(ENTRY));
        let tables = &mut self.tables;
        let table_index = &mut self.table_index;
        let next_table = &mut self.next_table;
        let max_tracked = self.max_tracked;
        self.gd.feed(pos, data, |index, entry| {
            let sector = u64::from(u32::from_le_bytes(*entry));
            if sector == 0 || failure.is_some() {
                return;
            }
            let start = sector.saturating_mul(SECTOR);
            let entry_end = gd_start.saturating_add(index.saturating_add(1).saturating_mul(ENTRY));
            let Some(end) = start
                .checked_add(table_bytes)
                .filter(|_| start >= *next_table)
            else {
                failure = Some((
                    entry_end,
                    corrupt(format!(
                        "VMDK grain directory entry {index} points to a grain table at sector \
                         {sector}, not after the directory and the previous table"
                    )),
                ));
                return;
            };
            if table_index.len() >= max_tracked || tables.push(entry_end, start).is_err() {
                failure = Some((
                    entry_end,
                    ConvertError::image(
                        ReasonCode::LimitExceeded,
                        format!("VMDK image names more than {max_tracked} grain tables"),
                    ),
                ));
                return;
            }
            table_index.insert(start, index);
            *next_table = end;
        });
        // 2. Table entries: the grains they place. Tables start after the directory, so after
        //    any bad directory entry.
        let mut found: Vec<GrainPlacement> = Vec::new();
        let (gtes, grain_sectors) = (self.gtes, self.grain_sectors);
        let (capacity, zero_grain) = (self.capacity, self.zero_grain);
        let table_index = &self.table_index;
        self.tables.feed(pos, data, |table, index, entry| {
            let sector = u64::from(u32::from_le_bytes(*entry));
            if sector == 0 || (sector == 1 && zero_grain) {
                return;
            }
            let Some(&dir) = table_index.get(&table) else {
                return;
            };
            let grain = dir.saturating_mul(gtes).saturating_add(index);
            let lba = grain.saturating_mul(grain_sectors);
            if lba >= capacity {
                return;
            }
            found.push(GrainPlacement {
                entry_end: table.saturating_add(index.saturating_add(1).saturating_mul(ENTRY)),
                input: sector.saturating_mul(SECTOR),
                output: lba.saturating_mul(SECTOR),
            });
        });
        // 3. In stream order: the data before each entry, then what the entry places.
        //    Placements may read back spilled data.
        let mut at = pos;
        for g in found {
            if failure.as_ref().is_some_and(|(f, _)| *f <= g.entry_end) {
                break;
            }
            self.feed_data(at, slice_at(pos, data, at, g.entry_end), sink)?;
            at = g.entry_end;
            self.place(g, sink)?;
        }
        if let Some((fail_at, e)) = failure {
            self.feed_data(at, slice_at(pos, data, at, fail_at), sink)?;
            return Err(e);
        }
        self.feed_data(at, slice_at(pos, data, at, data_end), sink)?;
        if self.metadata_done(data_end) && self.placer.spilled_bytes() > 0 {
            self.placer.forget_spill();
        }
        Ok(())
    }

    /// Copies placed grains out of input `[at, at + data.len())`, spilling its bytes from
    /// `overHead` up to the end of the metadata (the directory, then its last table).
    fn feed_data(
        &mut self,
        at: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let end = at.saturating_add(u64_of(data.len()));
        // Until the whole directory is read, a later entry may name a table further on.
        let metadata_end = if self.gd.is_done(end) {
            self.next_table
        } else {
            u64::MAX
        };
        self.placer
            .feed(at, data, &[(self.overhead_bytes, metadata_end)], sink)
    }

    /// Places the grain a table entry names.
    fn place(&mut self, g: GrainPlacement, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        let len = self
            .grain_bytes
            .min(self.virtual_size.saturating_sub(g.output));
        if g.input < self.overhead_bytes {
            return Err(corrupt(format!(
                "VMDK grain table places LBA {} at input offset {}, inside the metadata \
                 (overHead ends at {})",
                g.output / SECTOR,
                g.input,
                self.overhead_bytes
            )));
        }
        self.data_end = self.data_end.max(g.input.saturating_add(len));
        self.placer.place(g.input, len, g.output, sink)
    }

    fn finish(&mut self, len: u64, _sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        if !self.metadata_done(len) {
            return Err(truncated(format!(
                "VMDK image ends at byte {len} before its grain directory and tables"
            )));
        }
        if let Some((input, output)) = self.placer.first_pending() {
            return Err(truncated(format!(
                "VMDK image ends at byte {len} but the grain for output offset {output} is at \
                 byte {input} (data up to byte {})",
                self.data_end
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::convert::{convert_chunked, MemorySink, Target};
    use crate::Format;

    #[test]
    fn test_write_nonzero_skips_zero_pieces() {
        let mut sink = MemorySink::new(1 << 20);
        let mut data = vec![0u8; 3 * 4096];
        data[5000] = 7;
        write_nonzero(&mut sink, 4096, &data).unwrap();
        // Only the second 4 KiB piece (output 8192..12288) was written.
        assert_eq!(sink.output.len(), 12288);
        assert_eq!(sink.output[4096 + 5000], 7);
    }

    #[test]
    fn test_placer_spills_data_before_placement_and_places_it_later() {
        let limits = ConvertLimits::default();
        let mut p = Placer::new(&limits, "test");
        let mut sink = MemorySink::new(1 << 20);
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 250) as u8 + 1).collect();
        p.feed(0, &data[..600], &[(100, u64::MAX)], &mut sink)
            .unwrap();
        p.place(200, 500, 0, &mut sink).unwrap();
        p.feed(600, &data[600..], &[], &mut sink).unwrap();
        assert_eq!(&sink.output[..500], &data[200..700]);
        assert!(p.first_pending().is_none());
        assert!(matches!(
            p.place(50, 10, 0, &mut sink),
            Err(ConvertError::Image {
                code: ReasonCode::Corrupt,
                ..
            })
        ));
    }

    #[test]
    fn test_placer_spill_over_limit_is_limit_exceeded() {
        let limits = ConvertLimits {
            max_spill_bytes: 100,
            ..ConvertLimits::default()
        };
        let mut p = Placer::new(&limits, "test");
        let mut sink = MemorySink::new(1 << 20);
        assert!(matches!(
            p.feed(0, &[1u8; 300], &[(0, u64::MAX)], &mut sink),
            Err(ConvertError::Image {
                code: ReasonCode::LimitExceeded,
                ..
            })
        ));
    }

    /// The tiny VMware-style stream of the probe's tests, with a real deflated grain.
    fn tiny_stream(grain: &[u8]) -> Vec<u8> {
        tiny_stream_compressed(&deflate(grain, flate2::Compression::default()))
    }

    /// `data` as a zlib stream at `level`.
    fn deflate(data: &[u8], level: flate2::Compression) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    /// [`tiny_stream`] with `compressed` as the grain's compressed bytes, whatever they are.
    fn tiny_stream_compressed(compressed: &[u8]) -> Vec<u8> {
        use super::super::header::tests::{encode, qemu_sparse_header};
        let mut h = qemu_sparse_header();
        h.flags = 0x3_0001;
        h.compress = 1;
        h.version = 3;
        h.capacity = 128;
        h.desc_size = 1;
        h.overhead = 4;
        h.rgd_offset = 0;
        h.gd_offset = GD_AT_END;
        let mut img = encode(&h);
        img.resize(4 * 512, 0);
        let mut m = vec![0u8; 12];
        m[8..12].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
        m.extend(compressed);
        m.resize(m.len().next_multiple_of(512), 0);
        let grain_sectors = m.len() / 512;
        img.extend(m);
        let marker = |n: u64, t: u32| {
            let mut m = vec![0u8; 512];
            m[..8].copy_from_slice(&n.to_le_bytes());
            m[12..16].copy_from_slice(&t.to_le_bytes());
            m
        };
        let gt_at = 4 + grain_sectors;
        img.extend(marker(4, MARKER_GT));
        let mut gt = vec![0u8; 2048];
        gt[..4].copy_from_slice(&4u32.to_le_bytes());
        img.extend(gt);
        img.extend(marker(1, MARKER_GD));
        let mut gd = vec![0u8; 512];
        gd[..4].copy_from_slice(&(gt_at as u32 + 1).to_le_bytes());
        img.extend(gd);
        img.extend(marker(1, MARKER_FOOTER));
        let mut f = h;
        f.gd_offset = (gt_at + 6) as u64;
        img.extend(encode(&f));
        img.extend(marker(0, MARKER_EOS));
        img
    }

    fn convert(img: &[u8], chunk: usize) -> Result<Vec<u8>, ConvertError> {
        let limits = ConvertLimits::default();
        let (mut sink, len) = convert_chunked(Format::Vmdk, Target::Raw, img, chunk, &limits)?;
        sink.output.resize(len as usize, 0);
        Ok(sink.output)
    }

    #[test]
    fn test_vmdk_convert_tiny_stream_any_chunking_is_exact() {
        let grain: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        let img = tiny_stream(&grain);
        for chunk in [1, 13, 512, 4097, img.len()] {
            assert_eq!(convert(&img, chunk).unwrap(), grain, "chunk {chunk}");
        }
    }

    #[test]
    fn test_vmdk_convert_damaged_grain_is_corrupt() {
        let grain = vec![9u8; 65536];
        let mut img = tiny_stream(&grain);
        // Flip the adler-32 trailer's last byte (compressed data ends before the padding).
        let size = u32::from_le_bytes(img[2048 + 8..2048 + 12].try_into().unwrap()) as usize;
        img[2048 + 12 + size - 1] ^= 0xff;
        assert!(matches!(
            convert(&img, 4096),
            Err(ConvertError::Image {
                code: ReasonCode::Corrupt,
                ..
            })
        ));
    }

    #[test]
    fn test_vmdk_convert_damaged_grain_error_does_not_depend_on_chunking() {
        use flate2::Compression;
        let pattern = |n: u32| -> Vec<u8> { (0..n).map(|i| (i * 7 % 251) as u8).collect() };
        // Grains of 128 sectors (64 KiB): one that fits, two that inflate to more (one of
        // them in stored blocks, so that its output comes in step with its input).
        let streams = [
            deflate(&pattern(65_536), Compression::default()),
            deflate(&pattern(100_000), Compression::default()),
            deflate(&pattern(70_000), Compression::none()),
        ];
        let (mut failures, mut too_large, mut corrupt_data) = (0, 0, 0);
        for (s, good) in streams.iter().enumerate() {
            // Garble one byte at a spread of places (the zlib header, block headers, data,
            // the adler-32 trailer), and cut the stream short.
            let mut damaged: Vec<Vec<u8>> = (0..8)
                .map(|k| {
                    let mut d = good.clone();
                    let at = (good.len() - 1) * k / 7;
                    d[at] ^= 0x5a;
                    d
                })
                .collect();
            damaged.push(good[..good.len() / 2].to_vec());
            damaged.push(good[..good.len() - 3].to_vec());
            for (d, bytes) in damaged.iter().enumerate() {
                let img = tiny_stream_compressed(bytes);
                let r = convert_any(&img, &ConvertLimits::default());
                if let Err(e) = &r {
                    assert!(
                        matches!(
                            e,
                            ConvertError::Image {
                                code: ReasonCode::Corrupt,
                                ..
                            }
                        ),
                        "stream {s}, damage {d}: {e:?}"
                    );
                    failures += 1;
                    let text = e.to_string();
                    too_large += usize::from(text.contains("inflates to more than"));
                    corrupt_data += usize::from(text.contains("does not inflate"));
                }
            }
        }
        // Not every garbled byte breaks a stream (a literal in a stored block only breaks
        // the checksum), but most do.
        assert!(failures >= 20, "{failures} failures");
        // Both verdicts on a bad grain are met, each the same for every chunking.
        assert!(
            too_large > 0 && corrupt_data > 0,
            "{too_large} too large, {corrupt_data} corrupt"
        );
    }

    /// Chunk sizes the chunking tests feed (besides the whole image).
    const SIZES: [usize; 12] = [1, 2, 3, 7, 13, 64, 511, 512, 513, 1000, 4095, 4096];

    /// Converts `img` at every size in [`SIZES`], asserting one result for all of them.
    fn convert_any(img: &[u8], limits: &ConvertLimits) -> Result<Vec<u8>, ConvertError> {
        crate::convert::assert_convert_chunking_invariant(Format::Vmdk, img, limits, SIZES)
    }

    /// Limits with `spill` bytes of spill and `tracked` tracked entries.
    fn limits(spill: u64, tracked: usize) -> ConvertLimits {
        ConvertLimits {
            max_spill_bytes: spill,
            max_tracked_entries: tracked,
            ..ConvertLimits::default()
        }
    }

    /// Whether `r` is a `limit_exceeded` failure.
    fn is_limit(r: &Result<Vec<u8>, ConvertError>) -> bool {
        matches!(
            r,
            Err(ConvertError::Image {
                code: ReasonCode::LimitExceeded,
                ..
            })
        )
    }

    /// The bytes of one-sector grain `lba` in the test images.
    fn grain_fill(lba: usize) -> u8 {
        lba as u8 + 1
    }

    /// A 16-sector monolithicSparse image (grains of one sector, grain tables of 4 entries)
    /// that keeps eight grains *before* its grain directory and tables, so that converting it
    /// spills them: header, descriptor, grains for LBAs 0..8 at sectors 2..10, the directory
    /// at sector 10, its four tables at 11..15, and the grain for LBA 12 at sector 15.
    /// Returns the image and the expected raw output.
    fn data_first_sparse() -> (Vec<u8>, Vec<u8>) {
        use super::super::header::tests::{encode, qemu_sparse_header};
        let mut h = qemu_sparse_header();
        h.flags = 1;
        h.rgd_offset = 0;
        h.capacity = 16;
        h.grain_size = 1;
        h.gtes_per_gt = 4;
        h.desc_size = 1;
        h.overhead = 2;
        h.gd_offset = 10;
        let mut img = encode(&h);
        img.resize(16 * 512, 0);
        let mut out = vec![0u8; 16 * 512];
        let mut map = |lba: usize, sector: usize| {
            img[sector * 512..][..512].fill(grain_fill(lba));
            out[lba * 512..][..512].fill(grain_fill(lba));
            let at = (11 + lba / 4) * 512 + lba % 4 * 4;
            img[at..at + 4].copy_from_slice(&(sector as u32).to_le_bytes());
        };
        for lba in 0..8 {
            map(lba, 2 + lba);
        }
        map(12, 15);
        for table in 0..4u32 {
            let at = 10 * 512 + table as usize * 4;
            img[at..at + 4].copy_from_slice(&(11 + table).to_le_bytes());
        }
        (img, out)
    }

    #[test]
    fn test_vmdk_convert_sparse_limits_do_not_depend_on_chunking() {
        let (img, expected) = data_first_sparse();
        assert_eq!(
            convert_any(&img, &ConvertLimits::default()).unwrap(),
            expected
        );
        // Every pair of limits around what the image needs: the verdict (and the error) must
        // be the same for every chunking.
        let (mut limited, mut converted) = (0, 0);
        for spill in (0..=8192).step_by(512) {
            for tracked in 0..=6 {
                match convert_any(&img, &limits(spill, tracked)) {
                    Ok(out) => {
                        assert_eq!(out, expected, "spill {spill}, tracked {tracked}");
                        converted += 1;
                    }
                    r => {
                        assert!(is_limit(&r), "spill {spill}, tracked {tracked}: {r:?}");
                        limited += 1;
                    }
                }
            }
        }
        // The sweep crosses both limits.
        assert!(
            limited > 0 && converted > 0,
            "{limited} limited, {converted} converted"
        );
    }

    #[test]
    fn test_vmdk_convert_sparse_every_chunk_size_agrees_near_the_limits() {
        let (img, _) = data_first_sparse();
        for (spill, tracked) in [(4096, 16), (8192, 4), (8192, 8)] {
            crate::convert::assert_convert_chunking_invariant(
                Format::Vmdk,
                &img,
                &limits(spill, tracked),
                1..=600,
            )
            .ok();
        }
    }

    #[test]
    fn test_vmdk_convert_sparse_overlapping_tables_are_corrupt_in_any_chunking() {
        use super::super::header::tests::{encode, qemu_sparse_header};
        // Tables of 512 entries (4 sectors): directory at sector 2 naming tables at sectors 3
        // and 4, which overlap; each places one grain after them.
        let mut h = qemu_sparse_header();
        h.flags = 1;
        h.rgd_offset = 0;
        h.capacity = 1024;
        h.grain_size = 1;
        h.desc_size = 1;
        h.overhead = 2;
        h.gd_offset = 2;
        let mut img = encode(&h);
        img.resize(10 * 512, 0);
        img[2 * 512..][..8].copy_from_slice(&[3, 0, 0, 0, 4, 0, 0, 0]);
        img[3 * 512..][..4].copy_from_slice(&8u32.to_le_bytes());
        img[4 * 512 + 8..][..4].copy_from_slice(&9u32.to_le_bytes());
        img[8 * 512..].fill(5);
        for img in [img.clone(), {
            // Out of directory order, without overlapping: refused as the inspector does.
            let mut i = img;
            i[2 * 512..][..8].copy_from_slice(&[7, 0, 0, 0, 3, 0, 0, 0]);
            i
        }] {
            let r = crate::convert::assert_convert_chunking_invariant(
                Format::Vmdk,
                &img,
                &ConvertLimits::default(),
                SIZES,
            );
            assert!(
                matches!(
                    r,
                    Err(ConvertError::Image {
                        code: ReasonCode::Corrupt,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    }

    /// A QEMU-layout streamOptimized image (directories at the start) with a redundant and a
    /// primary grain directory of three grain tables each, every table empty: header,
    /// descriptor, redundant directory (sector 2) and its tables (3..6), directory (6) and its
    /// tables (7..10), then the end-of-stream marker at overHead (sector 10).
    fn qemu_stream_two_directories() -> Vec<u8> {
        use super::super::header::tests::{encode, qemu_sparse_header};
        let mut h = qemu_sparse_header();
        h.flags = 0x3_0003;
        h.compress = 1;
        h.capacity = 12;
        h.grain_size = 1;
        h.gtes_per_gt = 4;
        h.desc_size = 1;
        h.rgd_offset = 2;
        h.gd_offset = 6;
        h.overhead = 10;
        let mut img = encode(&h);
        img.resize(11 * 512, 0);
        for (dir, first) in [(2usize, 3u32), (6, 7)] {
            for i in 0..3u32 {
                let at = dir * 512 + i as usize * 4;
                img[at..at + 4].copy_from_slice(&(first + i).to_le_bytes());
            }
        }
        img
    }

    #[test]
    fn test_vmdk_convert_stream_table_limit_does_not_depend_on_chunking() {
        let img = qemu_stream_two_directories();
        assert_eq!(
            convert_any(&img, &ConvertLimits::default()).unwrap(),
            vec![0u8; 12 * 512]
        );
        let results: Vec<_> = (0..=8)
            .map(|tracked| convert_any(&img, &limits(0, tracked)))
            .collect();
        assert!(results.iter().any(is_limit), "{results:?}");
        assert!(results.iter().any(Result::is_ok), "{results:?}");
    }

    #[test]
    fn test_vmdk_convert_cut_stream_is_truncated() {
        let img = tiny_stream(&[5u8; 65536]);
        for cut in [300, 2100, img.len() - 700] {
            assert!(
                matches!(
                    convert(&img[..cut], 512),
                    Err(ConvertError::Image {
                        code: ReasonCode::Truncated,
                        ..
                    })
                ),
                "cut {cut}"
            );
        }
    }
}
