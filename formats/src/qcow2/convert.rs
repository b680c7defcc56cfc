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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use super::header::{
    self, incompat, Qcow2Header, AUTOCLEAR_DATA_FILE_RAW, COMPRESSION_ZSTD, QCOW_MAGIC,
};
use super::limits::QCOW2_HEADER_CAPTURE;
use crate::convert::{corrupt, truncated};
use crate::convert::{ConvertError, ConvertLimits, ConvertSink, FormatConverter};
use crate::stream::{be_u32, be_u64, slice_at, Capture, EntryScanner};
use crate::stream::{u64_of, usize_of};
use crate::ReasonCode;

/// Bits 9–55 of an L1 entry: the L2 table offset (QEMU's `L1E_OFFSET_MASK`).
const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9–55 of a standard L2 entry: the cluster offset (QEMU's `L2E_OFFSET_MASK`).
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: the cluster is compressed.
const L2E_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (standard L2 only): the cluster reads as zeros.
const L2E_ZERO: u64 = 1;
/// Extended L2 entries split a cluster into 32 subclusters.
const SUBCLUSTERS: u64 = 32;
/// Compressed extents are counted in 512-byte sectors; spill works in sectors too.
const SECTOR: u64 = 512;
/// The all-zero check's granularity: output pieces of this many bytes (aligned in the output)
/// that are all zero are not written, so they stay holes.
const ZERO_CHECK: u64 = 4096;
/// Spilled sectors are batched into writes of up to this many bytes (1 MiB).
const SPILL_RUN: usize = 1 << 20;
/// Largest zstd window accepted: 8 MiB. QEMU compresses one cluster (≤ 2 MiB) per frame, so
/// its frames need a 2 MiB window at most; a frame asking for more is refused instead of
/// letting a hostile image make the decoder allocate up to 2 GiB.
const QCOW2_ZSTD_MAX_WINDOW_LOG: u32 = 23;

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
                "qcow2 header is cut short: the input ends after {len} bytes"
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

/// Checks the header the way the converter needs it (it trusts no inspector) and returns an
/// error for anything it cannot convert.
fn check_header(b: &[u8], limits: &ConvertLimits) -> Result<Qcow2Header, ConvertError> {
    if !b.starts_with(&QCOW_MAGIC) {
        return Err(not_qcow2());
    }
    let short = || {
        truncated(format!(
            "qcow2 header is cut short: the input ends after {} bytes",
            b.len()
        ))
    };
    let version = be_u32(b, header::off::VERSION).ok_or_else(short)?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(ConvertError::image(
                ReasonCode::UnsupportedFormat,
                "QCOW version 1 images are not converted",
            ))
        }
        0 => return Err(corrupt("qcow2 header has version 0".to_owned())),
        v => {
            return Err(ConvertError::image(
                ReasonCode::UnknownFeature,
                format!("qcow2 version {v} is newer than the versions 2 and 3 Sluice converts"),
            ))
        }
    }
    let h = Qcow2Header::parse(b).ok_or_else(short)?;
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
    if h.incompatible_features & incompat::DATA_FILE != 0
        || h.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0
    {
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

/// The decompressors, created once per conversion and reset per cluster.
struct Codec {
    zstd: Option<ZstdDecoder<'static>>,
    deflate: Decompress,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("zstd", &self.zstd.is_some())
            .finish_non_exhaustive()
    }
}

impl Codec {
    fn new(zstd: bool) -> Result<Self, ConvertError> {
        let zstd = if zstd {
            let mut d = ZstdDecoder::new()
                .map_err(|e| corrupt(format!("cannot create a zstd decoder: {e}")))?;
            d.set_parameter(DParameter::WindowLogMax(QCOW2_ZSTD_MAX_WINDOW_LOG))
                .map_err(|e| corrupt(format!("cannot configure the zstd decoder: {e}")))?;
            Some(d)
        } else {
            None
        };
        Ok(Codec {
            zstd,
            deflate: Decompress::new(false),
        })
    }

    /// Decompresses `input` into exactly `out.len()` bytes, accepting what QEMU accepts:
    /// deflate may stop anywhere once the cluster is full; zstd must end a frame exactly
    /// there (further frames are read while the cluster is not full).
    fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match &mut self.zstd {
            Some(d) => zstd_cluster(d, input, out),
            None => deflate_cluster(&mut self.deflate, input, out),
        }
    }
}

fn deflate_cluster(d: &mut Decompress, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    d.reset(false);
    loop {
        let in_pos = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
        let out_pos = usize::try_from(d.total_out()).unwrap_or(usize::MAX);
        if out_pos >= out.len() {
            return Ok(());
        }
        let (Some(src), Some(dst)) = (input.get(in_pos..), out.get_mut(out_pos..)) else {
            return Err("the deflate decoder overran its buffers".to_owned());
        };
        let status = d
            .decompress(src, dst, FlushDecompress::Finish)
            .map_err(|e| format!("invalid deflate data: {e}"))?;
        let progressed = d.total_in() > u64_of(in_pos) || d.total_out() > u64_of(out_pos);
        if d.total_out() >= u64_of(out.len()) {
            return Ok(());
        }
        if matches!(status, Status::StreamEnd) {
            return Err(format!(
                "deflate data ends after {} of {} bytes",
                d.total_out(),
                out.len()
            ));
        }
        if !progressed {
            return Err(format!(
                "deflate data runs out after {} of {} bytes",
                d.total_out(),
                out.len()
            ));
        }
    }
}

fn zstd_cluster(d: &mut ZstdDecoder<'static>, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    d.reinit()
        .map_err(|e| format!("zstd decoder reset failed: {e}"))?;
    let want = out.len();
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    let mut last = 0usize;
    while outb.pos() < want {
        let (in_before, out_before) = (inb.pos(), outb.pos());
        last = d
            .run(&mut inb, &mut outb)
            .map_err(|e| format!("invalid zstd data: {e}"))?;
        if inb.pos() <= in_before && outb.pos() <= out_before {
            return Err(format!(
                "zstd data runs out after {} of {want} bytes",
                outb.pos()
            ));
        }
    }
    if last > 0 {
        return Err(format!("zstd frame continues past the {want}-byte cluster"));
    }
    Ok(())
}

/// Is every byte zero?
fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(16);
    let acc = words.by_ref().fold(0u128, |acc, w| {
        acc | <[u8; 16]>::try_from(w).map_or(1, u128::from_ne_bytes)
    });
    acc == 0 && words.remainder().iter().all(|&x| x == 0)
}

/// Where spilled bytes are and the sectors waiting to be spilled.
#[derive(Debug)]
struct Spill {
    /// Host start → (spill offset, length); disjoint, in host order.
    ranges: BTreeMap<u64, (u64, u64)>,
    /// Bytes of the spill area assigned so far.
    used: u64,
    max: u64,
    /// Ranges ever inserted (see [`Qcow2ConvertWalk::check_tracked`]).
    inserted: usize,
    /// The sector being collected (host offset), its bytes, and the part written `[lo, hi)`.
    sector: Option<u64>,
    sector_buf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// Non-zero sectors assigned spill offsets `[used - run.len(), used)` but not written.
    run: Vec<u8>,
}

impl Spill {
    fn new(max: u64) -> Self {
        Spill {
            ranges: BTreeMap::new(),
            used: 0,
            max,
            inserted: 0,
            sector: None,
            sector_buf: vec![0; usize_of(SECTOR)],
            lo: 0,
            hi: 0,
            run: Vec::new(),
        }
    }

    /// Collects unclaimed bytes at host offset `host`.
    fn add(
        &mut self,
        mut host: u64,
        mut bytes: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        while !bytes.is_empty() {
            let sector = host & !(SECTOR - 1);
            if self.sector != Some(sector) {
                self.close_sector(sink)?;
                self.sector = Some(sector);
            }
            let at = usize_of(host.saturating_sub(sector));
            let take = bytes.len().min(usize_of(SECTOR).saturating_sub(at));
            let (head, rest) = bytes.split_at(take);
            let end = at.saturating_add(take);
            if let Some(dst) = self.sector_buf.get_mut(at..end) {
                dst.copy_from_slice(head);
            }
            if self.hi == 0 {
                self.lo = at;
            }
            self.hi = end;
            host = host.saturating_add(u64_of(take));
            bytes = rest;
        }
        Ok(())
    }

    /// Spills the collected sector if any of it is non-zero.
    fn close_sector(&mut self, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        let Some(sector) = self.sector.take() else {
            return Ok(());
        };
        let (lo, hi) = (self.lo, self.hi);
        self.lo = 0;
        self.hi = 0;
        let part = self.sector_buf.get(lo..hi).unwrap_or(&[]);
        if !is_zero(part) {
            let host = sector.saturating_add(u64_of(lo));
            let len = u64_of(part.len());
            let next_used = self.used.saturating_add(len);
            if next_used > self.max {
                return Err(ConvertError::image(
                    ReasonCode::LimitExceeded,
                    format!(
                        "qcow2 data at {host:#x} arrives before the L2 table that places it \
                         and the spill area would exceed its limit of {} bytes",
                        self.max
                    ),
                ));
            }
            let extended = self
                .ranges
                .last_key_value()
                .is_some_and(|(start, (off, l))| {
                    start.saturating_add(*l) == host && off.saturating_add(*l) == self.used
                });
            if extended {
                if let Some(mut last) = self.ranges.last_entry() {
                    let v = last.get_mut();
                    v.1 = v.1.saturating_add(len);
                }
            } else {
                self.ranges.insert(host, (self.used, len));
                self.inserted = self.inserted.saturating_add(1);
            }
            if self.run.len().saturating_add(usize_of(len)) > SPILL_RUN {
                self.flush_run(sink)?;
            }
            let part = self.sector_buf.get(lo..hi).unwrap_or(&[]);
            self.run.extend_from_slice(part);
            self.used = next_used;
        }
        self.sector_buf.fill(0);
        Ok(())
    }

    /// Writes the batched sectors to the sink's spill area.
    fn flush_run(&mut self, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        if self.run.is_empty() {
            return Ok(());
        }
        let at = self.used.saturating_sub(u64_of(self.run.len()));
        sink.spill_write(at, &self.run)?;
        self.run.clear();
        Ok(())
    }

    /// Fills `buf` (host bytes from `host`) with what was spilled there; the rest is left.
    fn read(
        &mut self,
        host: u64,
        buf: &mut [u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        self.flush_run(sink)?;
        let end = host.saturating_add(u64_of(buf.len()));
        let first = self
            .ranges
            .range(..=host)
            .next_back()
            .map_or(host, |(s, _)| *s);
        for (&start, &(off, len)) in self.ranges.range(first..end) {
            let r_end = start.saturating_add(len);
            let a = start.max(host);
            let b = r_end.min(end);
            if a >= b {
                continue;
            }
            let dst_at = usize_of(a.saturating_sub(host));
            let dst_end = usize_of(b.saturating_sub(host));
            if let Some(dst) = buf.get_mut(dst_at..dst_end) {
                sink.spill_read(off.saturating_add(a.saturating_sub(start)), dst)?;
            }
        }
        Ok(())
    }
}

/// Host byte ranges already used (as metadata or placed data) while the mapping was still
/// incomplete: a later reference to them cannot be served from the spill area. Coalesced.
#[derive(Debug, Default)]
struct Consumed {
    ranges: BTreeMap<u64, u64>,
    /// Ranges ever inserted.
    inserted: usize,
}

impl Consumed {
    fn add(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        if let Some(mut last) = self.ranges.last_entry() {
            if *last.get() == a {
                *last.get_mut() = b;
                return;
            }
        }
        self.ranges.insert(a, b);
        self.inserted = self.inserted.saturating_add(1);
    }

    /// The first used range overlapping `[a, b)`.
    fn overlap(&self, a: u64, b: u64) -> Option<(u64, u64)> {
        self.ranges
            .range(..b)
            .next_back()
            .filter(|(_, &end)| end > a)
            .map(|(&s, &e)| (s, e))
    }
}

/// An L2 table being scanned as it streams past.
#[derive(Debug)]
enum L2Scanner {
    Standard(EntryScanner<8>),
    Extended(EntryScanner<16>),
}

#[derive(Debug)]
struct L2Scan {
    table: u64,
    /// Guest offsets of the table's first cluster, one per L1 entry naming it.
    bases: Vec<u64>,
    scanner: L2Scanner,
}

/// The conversion state once the header is known.
#[derive(Debug)]
struct Qcow2ConvertWalk {
    cs: u64,
    cluster_bits: u32,
    extended: bool,
    l2_entries: u64,
    virtual_size: u64,
    max_entries: usize,
    /// The active L1 table's scanner (`None`: no L1 table, or fully read).
    l1: Option<EntryScanner<8>>,
    l1_start: u64,
    /// End of the L1 table rounded up to a cluster: QEMU allocates whole clusters.
    l1_clusters_end: u64,
    /// The refcount table `[start, end)`: metadata, never spilled.
    refcount: (u64, u64),
    /// The host cluster being streamed and whether the mapping was incomplete at its start.
    cluster: u64,
    incomplete: bool,
    /// Whether a table or a mapping claims the whole current cluster (nothing in it is
    /// spilled).
    whole: bool,
    /// L2 tables ahead of the stream → guest offsets of their first cluster.
    l2_pending: BTreeMap<u64, Vec<u64>>,
    l2_pending_bases: usize,
    /// Entries tracked when the current cluster began, and the insertions counted then.
    tracked_at_cluster: usize,
    inserted_at_cluster: usize,
    /// Queued L2 tables, data clusters and compressed extents ever inserted.
    inserted: usize,
    l2_scan: Option<L2Scan>,
    /// Data clusters ahead of the stream: `(host, guest)` → allocated subcluster mask.
    data: BTreeMap<(u64, u64), u32>,
    /// Compressed extents ahead of the stream: `(start, end, guest)`.
    compressed: BTreeSet<(u64, u64, u64)>,
    /// Compressed extents streaming in: `(end, start, guest)`.
    active: BTreeSet<(u64, u64, u64)>,
    /// Start offsets of the active extents (with counts): the window must keep them.
    active_starts: BTreeMap<u64, usize>,
    /// The union of the active extents, in order (claimed bytes are not spilled).
    claims: VecDeque<(u64, u64)>,
    window_start: u64,
    window: Vec<u8>,
    spill: Spill,
    consumed: Consumed,
    codec: Codec,
    /// The last decompressed extent `(start, end)` held in `cluster_buf`.
    decoded: Option<(u64, u64)>,
    cluster_buf: Vec<u8>,
    input_buf: Vec<u8>,
    table_buf: Vec<u8>,
}

impl Qcow2ConvertWalk {
    fn new(b: &[u8], limits: &ConvertLimits) -> Result<Self, ConvertError> {
        let h = check_header(b, limits)?;
        let (_, layout, tables) = header::check(&h);
        let layout = layout.ok_or_else(|| corrupt("qcow2 cluster size is invalid".to_owned()))?;
        let cs = layout.cluster_size;
        let (l1, l1_start, l1_clusters_end) = match tables.l1 {
            Some((offset, entries)) => {
                let end = offset.saturating_add(entries.saturating_mul(8));
                let rounded = end.checked_next_multiple_of(cs).unwrap_or(u64::MAX);
                (EntryScanner::new(offset, entries), offset, rounded)
            }
            None => (None, 0, 0),
        };
        let refcount = tables.refcount.map_or((0, 0), |(offset, entries)| {
            (offset, offset.saturating_add(entries.saturating_mul(8)))
        });
        Ok(Qcow2ConvertWalk {
            cs,
            cluster_bits: layout.cluster_bits,
            extended: layout.extended_l2,
            l2_entries: layout.l2_entries,
            virtual_size: h.virtual_size(),
            max_entries: limits.max_tracked_entries,
            l1,
            l1_start,
            l1_clusters_end,
            refcount,
            cluster: 0,
            incomplete: true,
            whole: false,
            l2_pending: BTreeMap::new(),
            l2_pending_bases: 0,
            tracked_at_cluster: 0,
            inserted_at_cluster: 0,
            inserted: 0,
            l2_scan: None,
            data: BTreeMap::new(),
            compressed: BTreeSet::new(),
            active: BTreeSet::new(),
            active_starts: BTreeMap::new(),
            claims: VecDeque::new(),
            window_start: 0,
            window: Vec::new(),
            spill: Spill::new(limits.max_spill_bytes),
            consumed: Consumed::default(),
            codec: Codec::new(h.compression_type == COMPRESSION_ZSTD)?,
            decoded: None,
            cluster_buf: vec![0; usize_of(cs)],
            input_buf: Vec::new(),
            table_buf: Vec::new(),
        })
    }

    /// Entries tracked now.
    fn tracked(&self) -> usize {
        self.l2_pending_bases
            .saturating_add(self.data.len())
            .saturating_add(self.compressed.len())
            .saturating_add(self.active.len())
            .saturating_add(self.spill.ranges.len())
            .saturating_add(self.consumed.ranges.len())
    }

    /// Insertions of tracked entries so far.
    fn insertions(&self) -> usize {
        self.inserted
            .saturating_add(self.spill.inserted)
            .saturating_add(self.consumed.inserted)
    }

    /// Checks the entries tracked against `max_tracked_entries`: those tracked when the
    /// current cluster began plus every insertion since. Called after every insertion, in
    /// stream order (see [`Self::piece`]). Entries released inside a cluster count until the
    /// next cluster begins, so whether and where the limit is hit does not depend on how the
    /// input is split.
    fn check_tracked(&self) -> Result<(), ConvertError> {
        let n = self
            .tracked_at_cluster
            .saturating_add(self.insertions().saturating_sub(self.inserted_at_cluster));
        if n > self.max_entries {
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "qcow2 conversion would track more than {} pending clusters and ranges \
                     (the max_tracked_entries limit)",
                    self.max_entries
                ),
            ));
        }
        Ok(())
    }

    fn feed(
        &mut self,
        mut pos: u64,
        mut data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let mask = self.cs.saturating_sub(1);
        while !data.is_empty() {
            let c = pos & !mask;
            if pos == c {
                self.begin_cluster(c, sink)?;
            }
            let left = c.saturating_add(self.cs).saturating_sub(pos);
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
            let (piece, rest) = data.split_at(take);
            if c != 0 {
                self.piece(pos, piece, sink)?;
            }
            pos = pos.saturating_add(u64_of(take));
            data = rest;
        }
        Ok(())
    }

    fn l1_done(&self) -> bool {
        self.l1.is_none()
    }

    /// The stream reaches host cluster `c`: the last spilled sector is closed, a queued L2
    /// table starts being scanned, and a cluster whose bytes are all claimed (table or mapped
    /// data) is recorded as used here, before any entry it holds completes.
    fn begin_cluster(&mut self, c: u64, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        self.spill.close_sector(sink)?;
        if c == 0 {
            return Ok(());
        }
        self.cluster = c;
        if let Some(bases) = self.l2_pending.remove(&c) {
            self.l2_pending_bases = self.l2_pending_bases.saturating_sub(bases.len());
            let scanner = if self.extended {
                EntryScanner::new(c, self.l2_entries).map(L2Scanner::Extended)
            } else {
                EntryScanner::new(c, self.l2_entries).map(L2Scanner::Standard)
            };
            if let Some(scanner) = scanner {
                self.l2_scan = Some(L2Scan {
                    table: c,
                    bases,
                    scanner,
                });
            }
        }
        self.incomplete = !self.l1_done() || !self.l2_pending.is_empty();
        self.tracked_at_cluster = self.tracked();
        self.inserted_at_cluster = self.insertions();
        self.whole = self.l2_scan.is_some()
            || self.data.range((c, 0)..=(c, u64::MAX)).next().is_some()
            || (self.l1_start..self.l1_clusters_end).contains(&c)
            || (self.refcount.0..self.refcount.1).contains(&c);
        if self.incomplete && self.whole {
            self.consumed.add(c, c.saturating_add(self.cs));
        }
        // The sector closed above and the range just added count from here.
        self.check_tracked()
    }

    /// Handles bytes `[p, p + piece.len())`, all inside the current host cluster (not 0).
    ///
    /// The piece is split where a compressed extent ends, so that each part's bytes are
    /// accounted for (spilled or recorded as used, each new range checked against
    /// `max_tracked_entries` as it is added) and the table entries the part completes are
    /// handled before the extent ending there is inflated. Every check then happens at an
    /// offset fixed by the bytes, as a byte-by-byte feed meets it, whatever the chunking. The
    /// entries a part completes need no finer split: they only complete in table clusters,
    /// whose bytes were recorded as used when the cluster began.
    fn piece(
        &mut self,
        p: u64,
        piece: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let e = p.saturating_add(u64_of(piece.len()));
        let mut at = p;
        while at < e {
            let was_active = !self.active.is_empty();
            let (to, first_new) = self.activate(at, e);
            let part = slice_at(p, piece, at, to);
            self.part(at, to, part, was_active, first_new, sink)?;
            at = to;
        }
        Ok(())
    }

    /// Activates the queued compressed extents that start before the next extent end (or
    /// `e`), which it returns with the first newly active extent's start.
    fn activate(&mut self, at: u64, e: u64) -> (u64, Option<u64>) {
        let mut to = self.active.first().map_or(e, |&(end, _, _)| end.min(e));
        let mut first_new: Option<u64> = None;
        while let Some(&(start, end, guest)) = self.compressed.first() {
            if start >= to {
                break;
            }
            self.compressed.pop_first();
            self.active.insert((end, start, guest));
            let n = self.active_starts.entry(start).or_insert(0);
            *n = n.saturating_add(1);
            // The last sector may hold the start of the next extent (QEMU packs compressed
            // data byte by byte), which an unread L2 table may name: it is not claimed.
            let claim_end = end.saturating_sub(SECTOR);
            if claim_end > start {
                match self.claims.back_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(claim_end),
                    _ => self.claims.push_back((start, claim_end)),
                }
            }
            first_new.get_or_insert(start);
            to = to.min(end);
        }
        // Extents end past their start, which is not before `at`: never reached.
        if to <= at {
            to = e;
        }
        (to, first_new)
    }

    /// Handles `[at, to)` (`part`), holding no compressed extent's end before `to`: the
    /// tables' entries it completes, the data mapped here, the accounting of unclaimed bytes,
    /// then the extents ending at `to`.
    fn part(
        &mut self,
        at: u64,
        to: u64,
        part: &[u8],
        was_active: bool,
        first_new: Option<u64>,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let c = self.cluster;
        let cluster_end = c.saturating_add(self.cs);
        self.window_add(at, part, was_active, first_new);

        // The L1 table.
        if let Some(mut scanner) = self.l1.take() {
            let mut result = Ok(());
            scanner.feed(at, part, |index, entry| {
                if result.is_ok() {
                    result = self.l1_entry(index, u64::from_be_bytes(*entry), sink);
                }
            });
            result?;
            if !scanner.is_done(to) {
                self.l1 = Some(scanner);
            }
        }

        // The L2 table in this cluster.
        if let Some(mut scan) = self.l2_scan.take() {
            let mut result = Ok(());
            let table = scan.table;
            let bases = std::mem::take(&mut scan.bases);
            match &mut scan.scanner {
                L2Scanner::Standard(s) => s.feed(at, part, |index, entry| {
                    for &base in &bases {
                        if result.is_ok() {
                            let word = u64::from_be_bytes(*entry);
                            result = self.l2_entry(table, base, index, word, 0, sink);
                        }
                    }
                }),
                L2Scanner::Extended(s) => s.feed(at, part, |index, entry| {
                    for &base in &bases {
                        if result.is_ok() {
                            let word = be_u64(entry, 0).unwrap_or(0);
                            let bitmap = be_u64(entry, 8).unwrap_or(0);
                            result = self.l2_entry(table, base, index, word, bitmap, sink);
                        }
                    }
                }),
            }
            result?;
            scan.bases = bases;
            if to < cluster_end {
                self.l2_scan = Some(scan);
            }
        }

        // Data clusters mapped here.
        let offset_in = at.saturating_sub(c);
        for (&(_, guest), &mask) in self.data.range((c, 0)..=(c, u64::MAX)) {
            self.emit_masked(sink, guest, offset_in, part, mask)?;
        }
        if to >= cluster_end {
            while let Some(entry) = self.data.range((c, 0)..=(c, u64::MAX)).next() {
                let key = *entry.0;
                self.data.remove(&key);
            }
        }

        // What no table or mapping claims (a cluster claimed whole was recorded when it
        // began): spilled, or recorded as used where an active compressed extent claims it.
        if self.incomplete && !self.whole {
            let mut cur = at;
            let mut i = 0;
            while let Some(&(a, b)) = self.claims.get(i) {
                i = i.saturating_add(1);
                if b <= at {
                    continue;
                }
                if a >= to {
                    break;
                }
                let (a, b) = (a.max(at), b.min(to));
                if a > cur {
                    self.spill_part(at, part, cur, a, sink)?;
                }
                self.consumed.add(a, b);
                self.check_tracked()?;
                cur = cur.max(b);
            }
            if cur < to {
                self.spill_part(at, part, cur, to, sink)?;
            }
        }

        // Compressed extents ending here.
        self.complete_extents(to, sink)?;
        while self.claims.front().is_some_and(|(_, b)| *b <= to) {
            self.claims.pop_front();
        }
        Ok(())
    }

    /// Spills the bytes `[a, b)` of `piece` (at `p`) sector by sector, checking each range
    /// the spill area adds against `max_tracked_entries` as it is added.
    fn spill_part(
        &mut self,
        p: u64,
        piece: &[u8],
        a: u64,
        b: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let mut at = a;
        while at < b {
            let next = (at | (SECTOR - 1)).saturating_add(1).min(b);
            self.spill.add(at, slice_at(p, piece, at, next), sink)?;
            self.check_tracked()?;
            at = next;
        }
        Ok(())
    }

    /// Adds `part` (at `at`) to the compressed window while extents are active: all of it
    /// when some already were, else from the first newly active extent's start.
    fn window_add(&mut self, at: u64, part: &[u8], was_active: bool, first_new: Option<u64>) {
        if self.active.is_empty() {
            return;
        }
        if was_active {
            self.window.extend_from_slice(part);
        } else if let Some(start) = first_new {
            // Extents become active in start order: the first is the earliest.
            self.window.clear();
            self.window_start = start.max(at);
            let from = usize_of(self.window_start.saturating_sub(at));
            self.window
                .extend_from_slice(part.get(from..).unwrap_or(&[]));
        }
    }

    /// Inflates and places the active compressed extents ending by `e`, then drops the
    /// window bytes no active extent needs.
    fn complete_extents(&mut self, e: u64, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        if self.active.is_empty() {
            return Ok(());
        }
        while let Some(&(end, start, guest)) = self.active.first() {
            if end > e {
                break;
            }
            self.active.pop_first();
            if let Some(n) = self.active_starts.get_mut(&start) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.active_starts.remove(&start);
                }
            }
            if self.decoded != Some((start, end)) {
                let from = usize_of(start.saturating_sub(self.window_start));
                let to = usize_of(end.saturating_sub(self.window_start));
                let input = self.window.get(from..to).unwrap_or(&[]);
                self.decoded = None;
                self.codec
                    .decompress(input, &mut self.cluster_buf)
                    .map_err(|m| {
                        corrupt(format!(
                            "qcow2 compressed cluster at {start:#x} (guest offset {guest:#x}): {m}"
                        ))
                    })?;
                self.decoded = Some((start, end));
            }
            emit(sink, self.virtual_size, guest, &self.cluster_buf)?;
        }
        match self.active_starts.first_key_value() {
            Some((&keep, _)) => {
                let drop = usize_of(keep.saturating_sub(self.window_start)).min(self.window.len());
                if drop > 0 {
                    self.window.drain(..drop);
                    self.window_start = self.window_start.saturating_add(u64_of(drop));
                }
            }
            None => self.window.clear(),
        }
        Ok(())
    }

    /// Writes `bytes` (at `offset_in` of a host cluster) to guest cluster `guest`, keeping only
    /// the subclusters in `mask`.
    fn emit_masked(
        &self,
        sink: &mut dyn ConvertSink,
        guest: u64,
        offset_in: u64,
        bytes: &[u8],
        mask: u32,
    ) -> Result<(), ConvertError> {
        if mask == u32::MAX {
            return emit(
                sink,
                self.virtual_size,
                guest.saturating_add(offset_in),
                bytes,
            );
        }
        let sc = self.cs / SUBCLUSTERS;
        let end = offset_in.saturating_add(u64_of(bytes.len()));
        let mut at = offset_in;
        while at < end {
            let index = at.checked_div(sc).unwrap_or(0);
            let sc_end = index.saturating_add(1).saturating_mul(sc).min(end);
            if mask >> index.min(31) & 1 != 0 {
                let from = usize_of(at.saturating_sub(offset_in));
                let to = usize_of(sc_end.saturating_sub(offset_in));
                if let Some(part) = bytes.get(from..to) {
                    emit(sink, self.virtual_size, guest.saturating_add(at), part)?;
                }
            }
            at = sc_end;
        }
        Ok(())
    }

    /// Reads host bytes `[a, a + len)` that already streamed past into `buf`: from the spill
    /// area, zeros where nothing was spilled. `what` names the referrer for errors.
    fn read_past(
        &mut self,
        a: u64,
        len: u64,
        buf: &mut Vec<u8>,
        sink: &mut dyn ConvertSink,
        what: &dyn Fn() -> String,
    ) -> Result<(), ConvertError> {
        let b = a.saturating_add(len);
        if let Some((s, e)) = self.consumed.overlap(a, b) {
            return Err(corrupt(format!(
                "{} references host bytes {a:#x}..{b:#x}, but {s:#x}..{e:#x} were already used \
                 as metadata or as another cluster's data",
                what()
            )));
        }
        buf.clear();
        buf.resize(usize_of(len), 0);
        self.spill.read(a, buf, sink)
    }

    fn l1_entry(
        &mut self,
        index: u64,
        entry: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let table = entry & L1E_OFFSET_MASK;
        if table == 0 {
            return Ok(());
        }
        let Some(base) = index
            .checked_mul(self.l2_entries)
            .and_then(|n| n.checked_mul(self.cs))
        else {
            return Ok(());
        };
        if base >= self.virtual_size {
            return Ok(());
        }
        let cs = self.cs;
        let at = self.l1_start.saturating_add(index.saturating_mul(8));
        let name = || format!("qcow2 L1 entry {index} (at {at:#x})");
        if table & cs.saturating_sub(1) != 0 {
            return Err(corrupt(format!(
                "{} points to an unaligned L2 table at {table:#x}",
                name()
            )));
        }
        if table < cs {
            return Err(corrupt(format!(
                "{} points into the header cluster ({table:#x})",
                name()
            )));
        }
        if (self.l1_start..self.l1_clusters_end).contains(&table) {
            return Err(corrupt(format!(
                "{} points into the L1 table itself ({table:#x})",
                name()
            )));
        }
        let now = self.cluster;
        let now_end = now.saturating_add(cs);
        if table >= now_end {
            self.l2_pending.entry(table).or_default().push(base);
            self.l2_pending_bases = self.l2_pending_bases.saturating_add(1);
            self.inserted = self.inserted.saturating_add(1);
            return self.check_tracked();
        }
        if table.saturating_add(cs) > now {
            return Err(corrupt(format!(
                "{} points to an L2 table at {table:#x} inside the metadata cluster being read",
                name()
            )));
        }
        // The table streamed past before the L1 entry naming it: read it back.
        let mut buf = std::mem::take(&mut self.table_buf);
        let result = self.past_table(table, base, &mut buf, sink, &name);
        self.table_buf = buf;
        result
    }

    fn past_table(
        &mut self,
        table: u64,
        base: u64,
        buf: &mut Vec<u8>,
        sink: &mut dyn ConvertSink,
        name: &dyn Fn() -> String,
    ) -> Result<(), ConvertError> {
        let what = || format!("{}'s L2 table", name());
        self.read_past(table, self.cs, buf, sink, &what)?;
        let size = if self.extended { 16 } else { 8 };
        for (index, entry) in (0u64..).zip(buf.chunks_exact(size)) {
            let word = be_u64(entry, 0).unwrap_or(0);
            let bitmap = if self.extended {
                be_u64(entry, 8).unwrap_or(0)
            } else {
                0
            };
            self.l2_entry(table, base, index, word, bitmap, sink)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn l2_entry(
        &mut self,
        table: u64,
        base: u64,
        index: u64,
        word: u64,
        bitmap: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let cs = self.cs;
        let Some(guest) = index
            .checked_mul(cs)
            .and_then(|g| g.checked_add(base))
            .filter(|g| *g < self.virtual_size)
        else {
            return Ok(());
        };
        let entry_size: u64 = if self.extended { 16 } else { 8 };
        let at = table.saturating_add(index.saturating_mul(entry_size));
        let name = move || format!("qcow2 L2 table at {table:#x} entry {index} (at {at:#x})");
        let now = self.cluster;
        let now_end = now.saturating_add(cs);

        if word & L2E_COMPRESSED != 0 {
            if self.extended && bitmap != 0 {
                return Err(corrupt(format!(
                    "{}: a compressed cluster has a subcluster bitmap",
                    name()
                )));
            }
            // Spec: x = 62 - (cluster_bits - 8); bits 0..x-1 host offset, bits x..61 the
            // number of additional 512-byte sectors.
            let x = 70u32.saturating_sub(self.cluster_bits);
            let start = word & (1u64 << x).saturating_sub(1);
            let sector_bits = self.cluster_bits.saturating_sub(8);
            let sectors = (word >> x & (1u64 << sector_bits).saturating_sub(1)).saturating_add(1);
            let end = (start & !(SECTOR - 1)).saturating_add(sectors.saturating_mul(SECTOR));
            if start < cs {
                return Err(corrupt(format!(
                    "{} points into the header cluster (compressed data at {start:#x})",
                    name()
                )));
            }
            if start >= now_end {
                self.compressed.insert((start, end, guest));
                self.inserted = self.inserted.saturating_add(1);
                return self.check_tracked();
            }
            if end > now {
                return Err(corrupt(format!(
                    "{}: compressed data at {start:#x}..{end:#x} overlaps the metadata cluster \
                     at {now:#x}",
                    name()
                )));
            }
            let mut input = std::mem::take(&mut self.input_buf);
            let result = self.read_past(start, end.saturating_sub(start), &mut input, sink, &name);
            let result = result.and_then(|()| {
                self.decoded = None;
                self.codec
                    .decompress(&input, &mut self.cluster_buf)
                    .map_err(|m| {
                        corrupt(format!(
                            "qcow2 compressed cluster at {start:#x} (guest offset {guest:#x}): {m}"
                        ))
                    })
            });
            self.input_buf = input;
            result?;
            return emit(sink, self.virtual_size, guest, &self.cluster_buf);
        }

        let host = word & L2E_OFFSET_MASK;
        let mask = if self.extended {
            let alloc = (bitmap & 0xffff_ffff) as u32;
            let zero = (bitmap >> 32) as u32;
            if alloc & zero != 0 {
                return Err(corrupt(format!(
                    "{} marks subclusters both allocated and zero",
                    name()
                )));
            }
            if host == 0 {
                if alloc != 0 {
                    return Err(corrupt(format!(
                        "{} marks subclusters allocated without a cluster",
                        name()
                    )));
                }
                return Ok(());
            }
            alloc
        } else if host == 0 {
            return Ok(());
        } else if word & L2E_ZERO != 0 {
            0
        } else {
            u32::MAX
        };
        if host & cs.saturating_sub(1) != 0 {
            return Err(corrupt(format!(
                "{} points to an unaligned cluster at {host:#x}",
                name()
            )));
        }
        if mask == 0 {
            return Ok(());
        }
        if host < cs {
            return Err(corrupt(format!(
                "{} points into the header cluster",
                name()
            )));
        }
        if host >= now_end {
            self.data.insert((host, guest), mask);
            self.inserted = self.inserted.saturating_add(1);
            return self.check_tracked();
        }
        if host.saturating_add(cs) > now {
            return Err(corrupt(format!(
                "{} points to a data cluster at {host:#x} that is the metadata cluster being \
                 read",
                name()
            )));
        }
        let mut buf = std::mem::take(&mut self.input_buf);
        let result = self
            .read_past(host, cs, &mut buf, sink, &name)
            .and_then(|()| self.emit_masked(sink, guest, 0, &buf, mask));
        self.input_buf = buf;
        result
    }

    /// Bytes of a host cluster that guest cluster `guest` reads: up to its last allocated
    /// subcluster, and not past the virtual size.
    fn needed_len(&self, guest: u64, mask: u32) -> u64 {
        let visible = self.virtual_size.saturating_sub(guest).min(self.cs);
        if mask == u32::MAX || !self.extended {
            return visible;
        }
        let subclusters = 32u64.saturating_sub(u64::from(mask.leading_zeros()));
        subclusters
            .saturating_mul(self.cs / SUBCLUSTERS)
            .min(visible)
    }

    fn finish(&mut self, len: u64, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        self.spill.close_sector(sink)?;
        self.spill.flush_run(sink)?;
        if let Some(scanner) = &self.l1 {
            return Err(truncated(format!(
                "qcow2 image ends at {len} bytes inside its L1 table at {:#x} (ending at {})",
                self.l1_start,
                scanner.end()
            )));
        }
        if let Some(scan) = &self.l2_scan {
            return Err(truncated(format!(
                "qcow2 image ends at {len} bytes inside its L2 table at {:#x}",
                scan.table
            )));
        }
        if let Some((table, bases)) = self.l2_pending.first_key_value() {
            return Err(truncated(format!(
                "qcow2 image ends at {len} bytes but its L1 table references an L2 table at \
                 {table:#x} (guest offset {:#x})",
                bases.first().copied().unwrap_or(0)
            )));
        }
        // A cluster still waiting was cut by the end of the input. QEMU does not pad the
        // file past the last subcluster it allocates (or past the virtual size), so only the
        // bytes the guest reads must exist.
        for (&(host, guest), &mask) in &self.data {
            let needed = host.saturating_add(self.needed_len(guest, mask));
            if needed > len {
                return Err(truncated(format!(
                    "qcow2 image ends at {len} bytes but guest offset {guest:#x} maps to the \
                     cluster at {host:#x}, whose data ends at {needed}"
                )));
            }
        }
        if let Some((start, end, guest)) = self.compressed.first() {
            return Err(truncated(format!(
                "qcow2 image ends at {len} bytes but guest offset {guest:#x} maps to compressed \
                 data at {start:#x}..{end:#x}"
            )));
        }
        // Extents cut by the end of the input: QEMU writes the compressed bytes without
        // padding the last sector, and reads past the end of the file as zeros. At least one
        // byte of the last sector must exist (the data ends there).
        while let Some((end, start, guest)) = self.active.pop_first() {
            if len <= end.saturating_sub(SECTOR) {
                return Err(truncated(format!(
                    "qcow2 image ends at {len} bytes but guest offset {guest:#x} maps to \
                     compressed data at {start:#x}..{end:#x}"
                )));
            }
            let from = usize_of(start.saturating_sub(self.window_start));
            let mut input = self.window.get(from..).unwrap_or(&[]).to_vec();
            input.resize(usize_of(end.saturating_sub(start)), 0);
            self.codec
                .decompress(&input, &mut self.cluster_buf)
                .map_err(|m| {
                    truncated(format!(
                        "qcow2 image ends at {len} bytes inside the compressed cluster at \
                         {start:#x} (guest offset {guest:#x}): {m}"
                    ))
                })?;
            emit(sink, self.virtual_size, guest, &self.cluster_buf)?;
        }
        Ok(self.virtual_size)
    }
}

/// Writes `data` at output offset `out`, clipped to the virtual size, leaving out every
/// [`ZERO_CHECK`]-aligned piece that is all zeros. Contiguous non-zero pieces go out as one
/// write.
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
    let data = data.get(..room.min(data.len())).unwrap_or(data);
    let mut run: Option<(u64, usize)> = None; // (output offset, start index in data)
    let mut at = 0usize;
    while at < data.len() {
        let off = out.saturating_add(u64_of(at));
        let to_boundary = ZERO_CHECK.saturating_sub(off % ZERO_CHECK);
        let end = at
            .saturating_add(usize::try_from(to_boundary).unwrap_or(usize::MAX))
            .min(data.len());
        let piece = data.get(at..end).unwrap_or(&[]);
        if is_zero(piece) {
            if let Some((run_off, run_at)) = run.take() {
                sink.write_at(run_off, data.get(run_at..at).unwrap_or(&[]))?;
            }
        } else if run.is_none() {
            run = Some((off, at));
        }
        at = end;
    }
    if let Some((run_off, run_at)) = run {
        sink.write_at(run_off, data.get(run_at..).unwrap_or(&[]))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::convert::{assert_convert_chunking_invariant, convert_chunked};
    use crate::{Format, Target};

    /// Header field offsets used by the builder (see `header::off`).
    const HEADER_LENGTH: u32 = 112;

    /// A hand-laid qcow2 v3 image: the header in cluster 0, a one-cluster refcount table in
    /// cluster 1, and tables and data in the clusters each test names.
    struct Image {
        bits: u32,
        extended: bool,
        bytes: Vec<u8>,
    }

    impl Image {
        fn new(bits: u32, size: u64, l1_cluster: u64, l1_entries: u32, features: u64) -> Self {
            let cs = 1usize << bits;
            let mut b = vec![0u8; cs * 2];
            b[..4].copy_from_slice(&QCOW_MAGIC);
            b[4..8].copy_from_slice(&3u32.to_be_bytes());
            b[20..24].copy_from_slice(&bits.to_be_bytes());
            b[24..32].copy_from_slice(&size.to_be_bytes());
            b[36..40].copy_from_slice(&l1_entries.to_be_bytes());
            b[40..48].copy_from_slice(&(l1_cluster << bits).to_be_bytes());
            b[48..56].copy_from_slice(&(1u64 << bits).to_be_bytes()); // refcount table
            b[56..60].copy_from_slice(&1u32.to_be_bytes());
            b[72..80].copy_from_slice(&features.to_be_bytes());
            b[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
            b[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
            if features & incompat::COMPRESSION_TYPE != 0 {
                b[104] = COMPRESSION_ZSTD;
            }
            Image {
                bits,
                extended: features & incompat::EXTENDED_L2 != 0,
                bytes: b,
            }
        }
        fn cs(&self) -> usize {
            1 << self.bits
        }
        fn at(&mut self, offset: usize, data: &[u8]) {
            let end = (offset + data.len()).next_multiple_of(self.cs());
            if self.bytes.len() < end {
                self.bytes.resize(end, 0);
            }
            self.bytes[offset..offset + data.len()].copy_from_slice(data);
        }
        fn l1(&mut self, l1_cluster: usize, index: usize, table_cluster: u64) {
            let word = (1u64 << 63) | (table_cluster << self.bits);
            self.at((l1_cluster << self.bits) + 8 * index, &word.to_be_bytes());
        }
        fn l2(&mut self, table_cluster: usize, index: usize, word: u64, bitmap: u64) {
            let size = if self.extended { 16 } else { 8 };
            let at = (table_cluster << self.bits) + size * index;
            self.at(at, &word.to_be_bytes());
            if self.extended {
                self.at(at + 8, &bitmap.to_be_bytes());
            }
        }
        fn data(&self, cluster: u64) -> u64 {
            (1u64 << 63) | (cluster << self.bits)
        }
        fn fill(&mut self, cluster: usize, byte: u8) {
            let cs = self.cs();
            self.at(cluster << self.bits, &vec![byte; cs]);
        }
        /// Puts `compressed` at byte `at` and returns its L2 entry.
        fn compressed(&mut self, at: usize, compressed: &[u8]) -> u64 {
            self.at(at, compressed);
            let x = 70 - self.bits;
            let sectors = ((at + compressed.len() - 1) / 512 - at / 512) as u64;
            L2E_COMPRESSED | (sectors << x) | at as u64
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 7 + usize::from(seed)) % 251) as u8 | 1)
            .collect()
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Converts `bytes` split at `size`; returns the output sized to the returned length and
    /// the bytes spilled.
    fn convert(
        bytes: &[u8],
        size: usize,
        limits: &ConvertLimits,
    ) -> Result<(Vec<u8>, usize), ConvertError> {
        let (sink, len) = convert_chunked(Format::Qcow2, Target::Raw, bytes, size, limits)?;
        let mut out = sink.output;
        assert!(out.len() as u64 <= len);
        out.resize(len as usize, 0);
        Ok((out, sink.spill.len()))
    }

    /// Converts at every split size; all must give `expected`. Returns the bytes spilled.
    fn assert_converts(bytes: &[u8], expected: &[u8]) -> usize {
        let mut spilled = None;
        for size in [bytes.len(), 1, 7, 512, 4096, 4097, 65_537] {
            let (out, spill) = convert(bytes, size, &ConvertLimits::default())
                .unwrap_or_else(|e| panic!("split {size}: {e:?}"));
            assert!(out == expected, "split {size}: output differs");
            assert_eq!(*spilled.get_or_insert(spill), spill, "split {size}: spill");
        }
        spilled.unwrap()
    }

    fn image_error(bytes: &[u8], limits: &ConvertLimits) -> ReasonCode {
        let mut codes = Vec::new();
        for size in [bytes.len(), 1, 4097] {
            match convert(bytes, size, limits) {
                Err(ConvertError::Image { code, .. }) => codes.push(code),
                other => panic!("split {size}: expected an image error, got {other:?}"),
            }
        }
        assert!(codes.windows(2).all(|w| w[0] == w[1]), "{codes:?}");
        codes[0]
    }

    /// 4 KiB clusters, 64 KiB guest: guest clusters 0 and 5 share host cluster `a`, 3 maps
    /// to `b`, 7 is a zero cluster over `z`, 9 is compressed at `c`; the L2 table at `l2`.
    fn layout(l1: usize, l2: usize, a: usize, b: usize, z: usize, c: usize) -> (Vec<u8>, Vec<u8>) {
        let mut img = Image::new(12, 64 << 10, l1 as u64, 1, 0);
        let cs = img.cs();
        img.l1(l1, 0, l2 as u64);
        img.fill(a, 0x11);
        img.fill(b, 0x22);
        img.fill(z, 0x33);
        let plain = pattern(cs, 9);
        let word_c = img.compressed((c << 12) + 100, &deflate(&plain));
        let (wa, wb, wz) = (img.data(a as u64), img.data(b as u64), img.data(z as u64));
        img.l2(l2, 0, wa, 0);
        img.l2(l2, 5, wa, 0);
        img.l2(l2, 3, wb, 0);
        img.l2(l2, 7, wz | L2E_ZERO, 0);
        img.l2(l2, 9, word_c, 0);
        let mut expected = vec![0u8; 64 << 10];
        expected[..cs].fill(0x11);
        expected[5 * cs..6 * cs].fill(0x11);
        expected[3 * cs..4 * cs].fill(0x22);
        expected[9 * cs..10 * cs].copy_from_slice(&plain);
        (img.bytes, expected)
    }

    #[test]
    fn test_qcow2_convert_tables_before_data_places_every_mapping_without_spill() {
        let (bytes, expected) = layout(2, 3, 4, 5, 6, 7);
        assert_eq!(assert_converts(&bytes, &expected), 0);
    }

    #[test]
    fn test_qcow2_convert_l2_after_data_spills_and_places_on_arrival() {
        let (bytes, expected) = layout(2, 8, 4, 5, 6, 7);
        assert!(assert_converts(&bytes, &expected) > 0);
    }

    #[test]
    fn test_qcow2_convert_l1_after_l2_and_data_reads_the_table_back() {
        let (bytes, expected) = layout(9, 3, 4, 5, 6, 7);
        assert!(assert_converts(&bytes, &expected) > 0);
        // Data in reverse order, tables at the end.
        let (bytes, expected) = layout(9, 8, 7, 6, 5, 4);
        assert!(assert_converts(&bytes, &expected) > 0);
    }

    #[test]
    fn test_qcow2_convert_spill_limit_is_limit_exceeded() {
        let (bytes, _) = layout(2, 8, 4, 5, 6, 7);
        let limits = ConvertLimits {
            max_spill_bytes: 4096,
            ..ConvertLimits::default()
        };
        assert!(matches!(
            image_error(&bytes, &limits),
            ReasonCode::LimitExceeded
        ));
    }

    #[test]
    fn test_qcow2_convert_zstd_and_subclusters_convert() {
        // 16 KiB clusters (512-byte subclusters), zstd: guest cluster 0 has subclusters 0 and 2
        // allocated and 1 zero; guest cluster 1 is compressed.
        let features = incompat::EXTENDED_L2 | incompat::COMPRESSION_TYPE;
        let mut img = Image::new(14, 64 << 10, 2, 1, features);
        let cs = img.cs();
        img.l1(2, 0, 3);
        img.fill(4, 0x44);
        let plain = pattern(cs, 3);
        let frame = zstd::encode_all(&plain[..], 3).unwrap();
        let word_c = img.compressed(5 << 14, &frame);
        let w4 = img.data(4);
        img.l2(3, 0, w4, (0b010 << 32) | 0b101);
        img.l2(3, 1, word_c, 0);
        let mut expected = vec![0u8; 64 << 10];
        expected[..512].fill(0x44);
        expected[1024..1536].fill(0x44);
        expected[cs..2 * cs].copy_from_slice(&plain);
        assert_converts(&img.bytes, &expected);
        // A compressed cluster with a bitmap, and allocated-and-zero subclusters: corrupt.
        let mut bad = Image {
            bytes: img.bytes.clone(),
            ..img
        };
        bad.l2(3, 1, word_c, 1);
        assert!(matches!(
            image_error(&bad.bytes, &ConvertLimits::default()),
            ReasonCode::Corrupt
        ));
        bad.l2(3, 1, word_c, 0);
        bad.l2(3, 0, w4, (0b1 << 32) | 0b1);
        assert!(matches!(
            image_error(&bad.bytes, &ConvertLimits::default()),
            ReasonCode::Corrupt
        ));
    }

    #[test]
    fn test_qcow2_convert_cluster_reused_after_placement_is_corrupt() {
        // 4 KiB clusters, 4 MiB guest: L2 table 0 maps guest 0 to cluster 5, placed as it
        // streams past while L2 table 1 (cluster 6) is still ahead; table 1 maps cluster 5
        // again.
        let mut img = Image::new(12, 4 << 20, 2, 2, 0);
        img.l1(2, 0, 3);
        img.l1(2, 1, 6);
        img.fill(5, 0x55);
        let w5 = img.data(5);
        img.l2(3, 0, w5, 0);
        img.l2(6, 0, w5, 0);
        assert!(matches!(
            image_error(&img.bytes, &ConvertLimits::default()),
            ReasonCode::Corrupt
        ));
    }

    #[test]
    fn test_qcow2_convert_references_past_the_end_are_truncated() {
        let (mut bytes, _) = layout(2, 3, 4, 5, 6, 7);
        bytes.truncate(5 << 12); // cuts clusters 5.. (data and the compressed cluster)
        assert!(matches!(
            image_error(&bytes, &ConvertLimits::default()),
            ReasonCode::Truncated
        ));
        bytes.truncate(3 << 12); // the L2 table
        assert!(matches!(
            image_error(&bytes, &ConvertLimits::default()),
            ReasonCode::Truncated
        ));
        bytes.truncate(100); // the header
        assert!(matches!(
            image_error(&bytes, &ConvertLimits::default()),
            ReasonCode::Truncated
        ));
    }

    #[test]
    fn test_qcow2_convert_header_refusals_name_their_reason() {
        let (bytes, _) = layout(2, 3, 4, 5, 6, 7);
        let mut backing = bytes.clone();
        backing[8..16].copy_from_slice(&512u64.to_be_bytes());
        backing[16..20].copy_from_slice(&4u32.to_be_bytes());
        let limits = ConvertLimits::default();
        assert!(matches!(
            image_error(&backing, &limits),
            ReasonCode::BackingFile
        ));
        let mut data_file = bytes.clone();
        data_file[72..80].copy_from_slice(&incompat::DATA_FILE.to_be_bytes());
        assert!(matches!(
            image_error(&data_file, &limits),
            ReasonCode::DataFile
        ));
        let mut encrypted = bytes.clone();
        encrypted[32..36].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            image_error(&encrypted, &limits),
            ReasonCode::Encrypted
        ));
        assert!(matches!(
            image_error(&vec![0u8; 4096], &limits),
            ReasonCode::FormatMismatch
        ));
        let small = ConvertLimits {
            max_virtual_size: 4096,
            ..ConvertLimits::default()
        };
        assert!(matches!(
            image_error(&bytes, &small),
            ReasonCode::LimitExceeded
        ));
    }

    #[test]
    fn test_qcow2_convert_mutated_images_never_panic_nor_depend_on_chunking() {
        let layouts = [layout(2, 3, 4, 5, 6, 7).0, layout(9, 8, 7, 6, 5, 4).0];
        let mut lcg = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            lcg = lcg
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (lcg >> 33) as usize
        };
        for base in &layouts {
            for _ in 0..150 {
                let mut data = vec![(next() % 200) as u8 + 1];
                data.extend_from_slice(base);
                for _ in 0..1 + next() % 4 {
                    // Mostly the header and tables (clusters 0..4), sometimes anywhere.
                    let span = if next() % 4 == 0 { base.len() } else { 5 << 12 };
                    let at = 1 + next() % span;
                    data[at] ^= 1 << (next() % 8);
                }
                crate::fuzzing::convert_qcow2(&data);
            }
        }
    }

    /// Chunk sizes the chunking-invariance tests feed (besides the whole image).
    const SIZES: [usize; 11] = [1, 2, 7, 13, 100, 511, 512, 513, 4095, 4096, 4097];

    fn limits(spill: u64, tracked: usize) -> ConvertLimits {
        ConvertLimits {
            max_spill_bytes: spill,
            max_tracked_entries: tracked,
            ..ConvertLimits::default()
        }
    }

    /// Bytes that deflate cannot shrink much (so a compressed extent spans several sectors).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect()
    }

    /// 512-byte clusters, 64 KiB guest: the L1 table (cluster 2) names L2 tables at clusters 5
    /// and 7, after unclaimed data at 3 and 4 (spilled while the mapping is incomplete). Table
    /// 5 maps guest cluster 0 to cluster 3 (read back from the spill), 1 to cluster 8 (ahead)
    /// and 2 with `bad`; table 7 maps guest cluster 64 to cluster 4.
    fn tables_after_data_c512(bad: u64) -> Vec<u8> {
        let mut img = Image::new(9, 64 << 10, 2, 2, 0);
        img.l1(2, 0, 5);
        img.l1(2, 1, 7);
        img.fill(3, 0x33);
        img.fill(4, 0x44);
        img.fill(6, 0x66);
        img.fill(8, 0x88);
        let (w3, w4, w8) = (img.data(3), img.data(4), img.data(8));
        img.l2(5, 0, w3, 0);
        img.l2(5, 1, w8, 0);
        img.l2(5, 2, bad, 0);
        img.l2(7, 0, w4, 0);
        img.bytes
    }

    /// 4 KiB clusters, 4 MiB guest: the L1 table (cluster 2) names L2 table A (cluster 3,
    /// before the data) and B (cluster 9, after it). A maps guest cluster 0 to cluster 7
    /// (ahead), 1 to a compressed extent at cluster 5 + 100 (`compressed`, several sectors)
    /// and 2 with `bad`. Cluster 4 alternates non-zero and zero sectors (four spill ranges),
    /// the rest of cluster 5 and clusters 6 and 8 are unclaimed data. B maps guest clusters
    /// 512.. to clusters 4, 6 and 8 (read back from the spill) and 515 with `bad_b`.
    fn compressed_between_tables_c4k(compressed: &[u8], bad: u64, bad_b: u64) -> Vec<u8> {
        let mut img = Image::new(12, 4 << 20, 2, 2, 0);
        img.l1(2, 0, 3);
        img.l1(2, 1, 9);
        for s in 0..8 {
            img.at(
                (4 << 12) + 512 * s,
                &[if s % 2 == 0 { 0x40 + s as u8 } else { 0 }; 512],
            );
        }
        img.fill(5, 0x55);
        img.fill(6, 0x66);
        img.fill(7, 0x77);
        img.fill(8, 0x88);
        let word_c = img.compressed((5 << 12) + 100, compressed);
        let (w4, w6, w7, w8) = (img.data(4), img.data(6), img.data(7), img.data(8));
        img.l2(3, 0, w7, 0);
        img.l2(3, 1, word_c, 0);
        img.l2(3, 2, bad, 0);
        img.l2(9, 0, w4, 0);
        img.l2(9, 1, w6, 0);
        img.l2(9, 2, w8, 0);
        img.l2(9, 3, bad_b, 0);
        img.bytes
    }

    /// The images the limit sweeps run on: each valid, and broken in ways that the converter
    /// finds while it also spills and tracks entries near the limits.
    fn limit_sweep_images() -> Vec<Vec<u8>> {
        let mut plain = noise(2048, 7);
        plain.extend(pattern(2048, 1));
        let good = deflate(&plain);
        let garbage = vec![0xff; good.len()];
        let mut v = Vec::new();
        for bits in [9u32, 12] {
            let cs = 1u64 << bits;
            // None; the L1 table (read already); unaligned with 4 KiB clusters (the second L2
            // table with 512-byte ones); compressed data in the header cluster; past the end.
            for bad in [
                0,
                (1 << 63) | (2 * cs),
                (1 << 63) | (6 * cs + 512),
                L2E_COMPRESSED | 100,
                (1 << 63) | (64 * cs),
            ] {
                if bits == 9 {
                    v.push(tables_after_data_c512(bad));
                } else {
                    v.push(compressed_between_tables_c4k(&good, bad, 0));
                    v.push(compressed_between_tables_c4k(&good, 0, bad));
                    v.push(compressed_between_tables_c4k(&garbage, bad, 0));
                }
            }
        }
        v
    }

    #[test]
    fn test_qcow2_convert_limit_verdicts_do_not_depend_on_chunking() {
        let (mut corrupt, mut limited, mut converted) = (0, 0, 0);
        for (i, img) in limit_sweep_images().iter().enumerate() {
            let mut pairs: Vec<(u64, usize)> = Vec::new();
            for spill in (0..=12_288).step_by(1536).chain([2 << 20]) {
                for tracked in (0..=7).chain([1 << 20]) {
                    pairs.push((spill, tracked));
                }
            }
            for (spill, tracked) in pairs {
                let l = limits(spill, tracked);
                match assert_convert_chunking_invariant(Format::Qcow2, img, &l, SIZES) {
                    Ok(_) => converted += 1,
                    Err(ConvertError::Image {
                        code: ReasonCode::LimitExceeded,
                        ..
                    }) => limited += 1,
                    Err(ConvertError::Image {
                        code: ReasonCode::Corrupt | ReasonCode::Truncated,
                        ..
                    }) => corrupt += 1,
                    Err(e) => panic!("image {i}, spill {spill}, tracked {tracked}: {e:?}"),
                }
            }
        }
        assert!(
            corrupt > 0 && limited > 0 && converted > 0,
            "{corrupt} corrupt, {limited} limited, {converted} converted"
        );
    }

    #[test]
    fn test_qcow2_convert_mutated_images_agree_near_the_limits() {
        let mut lcg = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            lcg = lcg
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (lcg >> 33) as usize
        };
        let mut outcomes = std::collections::BTreeSet::new();
        for base in limit_sweep_images() {
            for _ in 0..12 {
                let mut img = base.clone();
                for _ in 0..1 + next() % 3 {
                    let at = next() % img.len();
                    img[at] ^= 1 << (next() % 8);
                }
                let l = limits((next() % 16 * 512) as u64, next() % 8);
                let r = assert_convert_chunking_invariant(Format::Qcow2, &img, &l, SIZES);
                outcomes.insert(match r {
                    Ok(_) => None,
                    Err(ConvertError::Image { code, .. }) => Some(code),
                    Err(e) => panic!("{e:?}"),
                });
            }
        }
        assert!(outcomes.len() > 2, "{outcomes:?}");
    }
}
