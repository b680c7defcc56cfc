//! The qcow2 converter's walk over the image: tables, mappings and data as they stream past.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::spill::Spill;
use super::{check_header, emit};
use super::{SECTOR, SUBCLUSTERS};
use crate::qcow2::codec::Codec;
use crate::qcow2::header::{self, COMPRESSION_ZSTD};
use crate::stream::{be_u64, slice_at, u64_of, usize_of, EntryScanner};
use crate::support::converter::{corrupt, truncated, ConvertError, ConvertLimits};
use crate::support::sink::ConvertSink;
use crate::ReasonCode;

/// Host byte ranges already used (as metadata or placed data) while the mapping was still
/// incomplete: a later reference to them cannot be served from the spill area. Coalesced.
#[derive(Debug, Default)]
pub(super) struct Consumed {
    ranges: BTreeMap<u64, u64>,
    /// Ranges ever inserted.
    inserted: usize,
}

impl Consumed {
    pub(super) fn add(&mut self, a: u64, b: u64) {
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
    pub(super) fn overlap(&self, a: u64, b: u64) -> Option<(u64, u64)> {
        self.ranges
            .range(..b)
            .next_back()
            .filter(|(_, &end)| end > a)
            .map(|(&s, &e)| (s, e))
    }
}

/// An L2 table being scanned as it streams past.
#[derive(Debug)]
pub(super) enum L2Scanner {
    Standard(EntryScanner<8>),
    Extended(EntryScanner<16>),
}

#[derive(Debug)]
pub(super) struct L2Scan {
    table: u64,
    /// Guest offsets of the table's first cluster, one per L1 entry naming it.
    bases: Vec<u64>,
    scanner: L2Scanner,
}

/// The conversion state once the header is known.
#[derive(Debug)]
pub(super) struct Qcow2ConvertWalk {
    pub(super) cs: u64,
    pub(super) cluster_bits: u32,
    pub(super) extended: bool,
    pub(super) l2_entries: u64,
    pub(super) virtual_size: u64,
    pub(super) max_entries: usize,
    /// The active L1 table's scanner (`None`: no L1 table, or fully read).
    pub(super) l1: Option<EntryScanner<8>>,
    pub(super) l1_start: u64,
    /// End of the L1 table rounded up to a cluster: QEMU allocates whole clusters.
    pub(super) l1_clusters_end: u64,
    /// The refcount table `[start, end)`: metadata, never spilled.
    pub(super) refcount: (u64, u64),
    /// The host cluster being streamed and whether the mapping was incomplete at its start.
    pub(super) cluster: u64,
    pub(super) incomplete: bool,
    /// Whether a table or a mapping claims the whole current cluster (nothing in it is
    /// spilled).
    pub(super) whole: bool,
    /// L2 tables ahead of the stream → guest offsets of their first cluster.
    pub(super) l2_pending: BTreeMap<u64, Vec<u64>>,
    pub(super) l2_pending_bases: usize,
    /// Entries tracked when the current cluster began, and the insertions counted then.
    pub(super) tracked_at_cluster: usize,
    pub(super) inserted_at_cluster: usize,
    /// Queued L2 tables, data clusters and compressed extents ever inserted.
    pub(super) inserted: usize,
    pub(super) l2_scan: Option<L2Scan>,
    /// Data clusters ahead of the stream: `(host, guest)` → allocated subcluster mask.
    pub(super) data: BTreeMap<(u64, u64), u32>,
    /// Compressed extents ahead of the stream: `(start, end, guest)`.
    pub(super) compressed: BTreeSet<(u64, u64, u64)>,
    /// Compressed extents streaming in: `(end, start, guest)`.
    pub(super) active: BTreeSet<(u64, u64, u64)>,
    /// Start offsets of the active extents (with counts): the window must keep them.
    pub(super) active_starts: BTreeMap<u64, usize>,
    /// The union of the active extents, in order (claimed bytes are not spilled).
    pub(super) claims: VecDeque<(u64, u64)>,
    pub(super) window_start: u64,
    pub(super) window: Vec<u8>,
    pub(super) spill: Spill,
    pub(super) consumed: Consumed,
    pub(super) codec: Codec,
    /// The last decompressed extent `(start, end)` held in `cluster_buf`.
    pub(super) decoded: Option<(u64, u64)>,
    pub(super) cluster_buf: Vec<u8>,
    pub(super) input_buf: Vec<u8>,
    pub(super) table_buf: Vec<u8>,
}

impl Qcow2ConvertWalk {
    pub(super) fn new(b: &[u8], limits: &ConvertLimits) -> Result<Self, ConvertError> {
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
    pub(super) fn tracked(&self) -> usize {
        self.l2_pending_bases
            .saturating_add(self.data.len())
            .saturating_add(self.compressed.len())
            .saturating_add(self.active.len())
            .saturating_add(self.spill.ranges.len())
            .saturating_add(self.consumed.ranges.len())
    }

    /// Insertions of tracked entries so far.
    pub(super) fn insertions(&self) -> usize {
        self.inserted
            .saturating_add(self.spill.inserted)
            .saturating_add(self.consumed.inserted)
    }

    /// Checks the entries tracked against `max_tracked_entries`: those tracked when the
    /// current cluster began plus every insertion since. Called after every insertion, in
    /// stream order (see [`Self::piece`]). Entries released inside a cluster count until the
    /// next cluster begins, so whether and where the limit is hit does not depend on how the
    /// input is split.
    pub(super) fn check_tracked(&self) -> Result<(), ConvertError> {
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

    pub(super) fn feed(
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

    pub(super) fn l1_done(&self) -> bool {
        self.l1.is_none()
    }

    /// The stream reaches host cluster `c`: the last spilled sector is closed, a queued L2
    /// table starts being scanned, and a cluster whose bytes are all claimed (table or mapped
    /// data) is recorded as used here, before any entry it holds completes.
    pub(super) fn begin_cluster(
        &mut self,
        c: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
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
    pub(super) fn piece(
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
    pub(super) fn activate(&mut self, at: u64, e: u64) -> (u64, Option<u64>) {
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
    pub(super) fn part(
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
    pub(super) fn spill_part(
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
    pub(super) fn window_add(
        &mut self,
        at: u64,
        part: &[u8],
        was_active: bool,
        first_new: Option<u64>,
    ) {
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
    pub(super) fn complete_extents(
        &mut self,
        e: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
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
    pub(super) fn emit_masked(
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
    pub(super) fn read_past(
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

    pub(super) fn finish(
        &mut self,
        len: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<u64, ConvertError> {
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
