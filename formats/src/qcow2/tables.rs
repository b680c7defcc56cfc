//! Walking a qcow2 image's metadata as it streams past: header extensions, the backing file
//! name, the refcount table, the active L1 table, the L2 tables it references, and the
//! snapshot table; and the furthest byte all of them reference.

use crate::stream::{be_u64, u64_of, Capture, EntryScanner, TableQueue};
use crate::{Limits, ReasonCode};

use super::clusters::ClusterMap;
use super::compressed::CompressedCheck;
use super::display_name;
use super::extensions::Qcow2ExtensionWalker;
use super::header::{self, check, off, OverLimit, Qcow2Header, Qcow2Layout};
use super::header::{COMPRESSION_ZSTD, QCOW2_V3_MIN_HEADER_LEN};
use super::limits::{QCOW2_HEADER_CAPTURE, QCOW2_MAX_BACKING_FILE_NAME, QCOW2_MAX_L1_BYTES};
use super::snapshots::{Qcow2SnapshotWalker, SnapshotEvent};
use crate::probe::PlacedFindings;

/// Bits 9–55 of an L1 entry: the L2 table offset (QEMU's `L1E_OFFSET_MASK`).
const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9–55 of a standard L2 entry: the cluster offset (QEMU's `L2E_OFFSET_MASK`).
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9–63 of a refcount table entry: the refcount block offset (`REFT_OFFSET_MASK`).
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// L2 entry bit 62: the cluster is compressed.
const L2E_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (standard L2 only): the cluster reads as zeros.
const L2E_ZERO: u64 = 1 << 0;
/// Extended L2 bitmap: allocation bits of the 32 subclusters (the zero bits are above).
const L2_BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;
/// Compressed data is counted in 512-byte sectors.
const SECTOR: u64 = 512;

/// Who references the furthest byte: enough to name it in a `truncated` message. The derived
/// order breaks ties between equal ends deterministically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Referrer {
    /// Cluster 0 itself.
    HeaderCluster,
    /// A table named by the header.
    Table { what: &'static str, offset: u64 },
    /// An L2 table named by an active L1 entry.
    L2Table { l1_index: u64, offset: u64 },
    /// A refcount block named by a refcount table entry.
    RefcountBlock { index: u64, offset: u64 },
    /// A data cluster or compressed extent named by an L2 entry.
    Data {
        table: u64,
        index: u64,
        compressed: bool,
    },
    /// A snapshot's L1 table.
    SnapshotL1 { snapshot: u32, offset: u64 },
}

impl Referrer {
    fn describe(&self, end: u64) -> String {
        match *self {
            Referrer::HeaderCluster => format!("its header cluster ends at {end}"),
            Referrer::Table { what, offset } => {
                format!("its {what} at {offset:#x} ends at {end}")
            }
            Referrer::L2Table { l1_index, offset } => format!(
                "its L1 entry {l1_index} references an L2 table at {offset:#x} ending at {end}"
            ),
            Referrer::RefcountBlock { index, offset } => format!(
                "its refcount table entry {index} references a refcount block at {offset:#x} \
                 ending at {end}"
            ),
            Referrer::Data {
                table,
                index,
                compressed,
            } => format!(
                "its L2 table at {table:#x} references {}data up to {end} (entry {index})",
                if compressed { "compressed " } else { "" }
            ),
            Referrer::SnapshotL1 { snapshot, offset } => {
                format!("the L1 table of its snapshot {snapshot} at {offset:#x} ends at {end}")
            }
        }
    }
}

/// The L2 tables waiting to be scanned: 64-bit entries, or 128-bit with extended L2.
#[derive(Debug)]
enum L2Queue {
    Standard(TableQueue<8>),
    Extended(TableQueue<16>),
}

/// The streaming state of a qcow2 image whose header passed the cluster-size checks.
#[derive(Debug)]
pub(crate) struct Qcow2Walk {
    layout: Qcow2Layout,
    /// The external data file must be reported once the extensions are known.
    data_file_flagged: bool,
    data_file_reported: bool,
    extensions: Option<Qcow2ExtensionWalker>,
    extensions_reported: bool,
    /// The backing file name, until it is captured and reported.
    backing_name: Option<Capture>,
    refcount: Option<(u64, EntryScanner<8>)>,
    l1: Option<(u64, EntryScanner<8>)>,
    snapshots: Option<(u64, Qcow2SnapshotWalker)>,
    l2: L2Queue,
    l2_limit_hit: bool,
    max_tracked_tables: usize,
    furthest: Option<(u64, Referrer)>,
    /// Which host clusters hold metadata and which data (checked at end of stream).
    clusters: ClusterMap,
    /// Compressed clusters inflated as they stream past (when enabled).
    compressed: Option<CompressedCheck>,
    /// Tables above a limit, waiting for the stream to reach their end (see [`OverLimit`]).
    over_limit: Vec<OverLimit>,
}

impl Qcow2Walk {
    /// Checks the header, records its problems, and prepares the walk; `None` when the
    /// cluster size is unusable (nothing can be walked).
    pub(crate) fn new(
        h: &Qcow2Header,
        limits: &Limits,
        findings: &mut PlacedFindings,
    ) -> Option<Self> {
        let max_tracked_tables = limits.max_tracked_tables;
        let (problems, layout, tables) = check(h);
        for p in problems {
            findings.push(p.code, p.at, p.message);
        }
        let layout = layout?;
        let cs = layout.cluster_size;

        let data_file_flagged = h.data_file_flagged();

        // Extensions run from the end of the header to the backing file name or the end of
        // cluster 0; a v3 header of bad length has no trustworthy start.
        let header_ok = h.version == 2
            || (h.header_length >= QCOW2_V3_MIN_HEADER_LEN
                && h.header_length % 8 == 0
                && u64::from(h.header_length) <= cs);
        let ext_end = if h.backing_file_offset != 0 {
            h.backing_file_offset.min(cs)
        } else {
            cs
        };
        let extensions =
            header_ok.then(|| Qcow2ExtensionWalker::new(u64::from(h.header_length), ext_end));

        let backing_name = backing_name(h, cs, findings);

        let mut walk = Qcow2Walk {
            layout,
            data_file_flagged,
            data_file_reported: false,
            extensions,
            extensions_reported: false,
            backing_name,
            refcount: None,
            l1: None,
            snapshots: None,
            l2: if layout.extended_l2 {
                L2Queue::Extended(TableQueue::new(layout.l2_entries, max_tracked_tables))
            } else {
                L2Queue::Standard(TableQueue::new(layout.l2_entries, max_tracked_tables))
            },
            l2_limit_hit: false,
            max_tracked_tables,
            furthest: None,
            clusters: ClusterMap::new(layout.cluster_bits, limits.qcow2_max_bitmap_clusters),
            compressed: if limits.verify_compressed_clusters {
                CompressedCheck::new(
                    cs,
                    h.compression_type == COMPRESSION_ZSTD,
                    limits.qcow2_max_pending_compressed,
                )
            } else {
                None
            },
            over_limit: tables.over_limit,
        };
        walk.reach(cs, Referrer::HeaderCluster);
        walk.clusters.mark_meta(0, cs);
        if let Some((offset, entries)) = tables.l1 {
            walk.l1 = EntryScanner::new(offset, entries).map(|s| (offset, s));
            walk.reach_table("L1 table", offset, entries.saturating_mul(8));
        }
        if let Some((offset, entries)) = tables.refcount {
            walk.refcount = EntryScanner::new(offset, entries).map(|s| (offset, s));
            walk.reach_table("refcount table", offset, entries.saturating_mul(8));
        }
        if let Some((offset, count)) = tables.snapshots {
            walk.snapshots = Some((offset, Qcow2SnapshotWalker::new(offset, count)));
            // Each entry has a 40-byte fixed part; the walk finds the real end.
            walk.reach_table(
                "snapshot table",
                offset,
                u64::from(count).saturating_mul(40),
            );
        }
        if walk.extensions.is_none() {
            walk.report_extensions(findings);
        }
        Some(walk)
    }

    /// Whether bytes beyond `pos` still matter.
    pub(crate) fn active(&self, pos: u64) -> bool {
        let l2_pending = match &self.l2 {
            L2Queue::Standard(q) => q.pending(),
            L2Queue::Extended(q) => q.pending(),
        };
        self.extensions.as_ref().is_some_and(|e| !e.is_done())
            || self.backing_name.as_ref().is_some_and(|c| !c.is_complete())
            || self.refcount.as_ref().is_some_and(|(_, s)| !s.is_done(pos))
            || self.l1.as_ref().is_some_and(|(_, s)| !s.is_done(pos))
            || self.snapshots.as_ref().is_some_and(|(_, s)| !s.is_done())
            || l2_pending > 0
            || !self.over_limit.is_empty()
            || self
                .compressed
                .as_ref()
                .is_some_and(CompressedCheck::is_pending)
    }

    /// Feeds stream bytes to every walker.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        if let Some(ext) = &mut self.extensions {
            ext.feed(pos, data);
            if ext.is_done() && !self.extensions_reported {
                self.report_extensions(findings);
            }
        }
        if let Some(cap) = &mut self.backing_name {
            if cap.feed(pos, data) {
                let name = display_name(cap.bytes());
                let format = self
                    .extensions
                    .as_ref()
                    .and_then(|e| e.found().backing_format.as_deref())
                    .map(|f| format!(" (format {})", display_name(f)))
                    .unwrap_or_default();
                findings.push(
                    ReasonCode::BackingFile,
                    off::BACKING_FILE_OFFSET as u64,
                    format!("qcow2 image references backing file '{name}'{format}"),
                );
                self.backing_name = None;
            }
        }
        self.feed_refcount(pos, data, findings);
        self.feed_l1(pos, data, findings);
        self.feed_snapshots(pos, data, findings);
        self.feed_l2(pos, data, findings);
        if let Some(check) = &mut self.compressed {
            check.feed(pos, data, findings);
        }
        let reached = pos.saturating_add(u64_of(data.len()));
        self.over_limit.retain(|t| {
            if t.end > reached {
                return true;
            }
            // The file holds the table: consistent, but above the limit.
            findings.push(
                ReasonCode::LimitExceeded,
                t.field,
                format!("{} exceeds {}", t.what, t.limit),
            );
            false
        });
    }

    /// End of stream at `len` bytes: report what is still owed and whether the image is
    /// shorter than what it references.
    pub(crate) fn finish(&mut self, len: u64, findings: &mut PlacedFindings) {
        if !self.extensions_reported {
            self.report_extensions(findings);
        }
        if let Some(check) = &mut self.compressed {
            check.finish(len, findings);
        }
        if let Some(cluster) = self.clusters.first_conflict() {
            findings.push(
                ReasonCode::Corrupt,
                cluster,
                format!(
                    "qcow2 host cluster at {cluster:#x} holds both metadata and guest data: an \
                     L2 entry points data into the image's header, tables or refcount blocks"
                ),
            );
        }
        for t in self.over_limit.drain(..) {
            // The header claims more than the file holds: the header is wrong, not big.
            findings.push(
                ReasonCode::Corrupt,
                t.field,
                format!(
                    "{} would end at byte {} but the file ends at {len}",
                    t.what, t.end
                ),
            );
        }
        if let Some(cap) = self.backing_name.take() {
            findings.push(
                ReasonCode::BackingFile,
                off::BACKING_FILE_OFFSET as u64,
                format!(
                    "qcow2 image references a backing file whose name at {:#x} is cut off by \
                     the end of the stream",
                    cap.start()
                ),
            );
        }
        // L2 tables that lie before the L1 table that names them (ignored by `TableQueue`, e.g.
        // after `qemu-img resize` moved the L1 table to the end) streamed past before they
        // were known: their entries are not checked, only their own extent is. The image is
        // still accepted; QEMU's reads of those clusters past the end would return zeros.
        if let Some((table, walker)) = &self.snapshots {
            if !walker.is_done() {
                findings.push(
                    ReasonCode::Truncated,
                    u64::MAX,
                    format!(
                        "qcow2 image ends at {len} bytes inside its snapshot table at {table:#x}"
                    ),
                );
            }
        }
        if let Some((end, who)) = self.furthest {
            if end > len {
                findings.push(
                    ReasonCode::Truncated,
                    u64::MAX,
                    format!("qcow2 image ends at {len} bytes but {}", who.describe(end)),
                );
            }
        }
    }

    /// Records that something needs the stream to reach `end`.
    fn reach(&mut self, end: u64, who: Referrer) {
        reach(&mut self.furthest, end, who);
    }

    fn reach_table(&mut self, what: &'static str, offset: u64, bytes: u64) {
        self.clusters
            .mark_meta(offset, offset.saturating_add(bytes));
        self.reach(
            offset.saturating_add(bytes),
            Referrer::Table { what, offset },
        );
    }

    /// Reports the external data file (bit 2, the raw-data autoclear bit or the extension),
    /// an encryption header extension, and a malformed extension chain.
    fn report_extensions(&mut self, findings: &mut PlacedFindings) {
        self.extensions_reported = true;
        let found = self.extensions.as_ref().map(|e| e.found().clone());
        let found = found.unwrap_or_default();
        if (self.data_file_flagged || found.data_file.is_some()) && !self.data_file_reported {
            self.data_file_reported = true;
            let message = match &found.data_file {
                Some(name) => format!(
                    "qcow2 image stores its data in external file '{}'",
                    display_name(name)
                ),
                None => "qcow2 image stores its data in an external data file \
                         (incompatible feature bit 2)"
                    .to_owned(),
            };
            findings.push(
                ReasonCode::DataFile,
                off::INCOMPATIBLE_FEATURES as u64,
                message,
            );
        }
        if let Some(at) = found.fde_at {
            findings.push(
                ReasonCode::Encrypted,
                at,
                "qcow2 image carries a full disk encryption (LUKS) header extension".to_owned(),
            );
        }
        if let Some((at, message)) = found.malformed {
            findings.push(ReasonCode::Corrupt, at, message);
        }
    }

    fn feed_refcount(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let Qcow2Walk {
            refcount,
            layout,
            furthest,
            clusters,
            ..
        } = self;
        let Some((table, scanner)) = refcount else {
            return;
        };
        let table = *table;
        let layout = *layout;
        scanner.feed(pos, data, |index, entry| {
            let block = u64::from_be_bytes(*entry) & REFT_OFFSET_MASK;
            if block == 0 {
                return;
            }
            let at = table.saturating_add(index.saturating_mul(8));
            if layout.aligned(block) {
                let who = Referrer::RefcountBlock {
                    index,
                    offset: block,
                };
                let end = block.saturating_add(layout.cluster_size);
                clusters.mark_meta(block, end);
                reach(furthest, end, who);
            } else {
                findings.push_with(ReasonCode::Corrupt, at, || {
                    format!(
                        "qcow2 refcount table entry {index} points to an unaligned refcount \
                         block at {block:#x}"
                    )
                });
            }
        });
    }

    fn feed_l1(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let Qcow2Walk {
            l1,
            l2,
            l2_limit_hit,
            furthest,
            clusters,
            layout,
            max_tracked_tables,
            ..
        } = self;
        let Some((l1_start, scanner)) = l1 else {
            return;
        };
        let l1_start = *l1_start;
        let l1_end = scanner.end();
        let layout = *layout;
        let max_tracked = *max_tracked_tables;
        scanner.feed(pos, data, |index, entry| {
            let table = u64::from_be_bytes(*entry) & L1E_OFFSET_MASK;
            if table == 0 {
                return;
            }
            let at = l1_start.saturating_add(index.saturating_mul(8));
            if !layout.aligned(table) {
                findings.push_with(ReasonCode::Corrupt, at, || {
                    format!("qcow2 L1 entry {index} points to an unaligned L2 table at {table:#x}")
                });
                return;
            }
            if (l1_start..l1_end).contains(&table) {
                // An L2 table inside the L1 table: never written by QEMU, and scanning it while
                // the L1 table is still streaming would make the result depend on chunking.
                // Every other L2 table starts after all L1 entries were read, or before the L1
                // table (missed), so the queue's contents never depend on chunking either.
                findings.push_with(ReasonCode::Corrupt, at, || {
                    format!("qcow2 L1 entry {index} points into the L1 table itself ({table:#x})")
                });
                return;
            }
            let end = table.saturating_add(layout.cluster_size);
            let who = Referrer::L2Table {
                l1_index: index,
                offset: table,
            };
            clusters.mark_meta(table, end);
            reach(furthest, end, who);
            if *l2_limit_hit {
                return;
            }
            let entry_end = at.saturating_add(8);
            let pushed = match l2 {
                L2Queue::Standard(q) => q.push(entry_end, table),
                L2Queue::Extended(q) => q.push(entry_end, table),
            };
            if pushed.is_err() {
                *l2_limit_hit = true;
                findings.push_with(ReasonCode::LimitExceeded, at, || {
                    format!(
                        "qcow2 image has more than {max_tracked} L2 tables to check (the \
                         max_tracked_tables limit)"
                    )
                });
            }
        });
    }

    fn feed_snapshots(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let Qcow2Walk {
            snapshots,
            layout,
            furthest,
            clusters,
            ..
        } = self;
        let Some((table, walker)) = snapshots else {
            return;
        };
        let table = *table;
        let layout = *layout;
        walker.feed(pos, data, |event| match event {
            SnapshotEvent::Entry(s) => {
                let bytes = u64::from(s.l1_size).saturating_mul(8);
                match header::table_placement(
                    &layout,
                    "snapshot L1 table",
                    0,
                    s.l1_table_offset,
                    bytes,
                ) {
                    Some(p) => findings.push_with(ReasonCode::Corrupt, s.at, || {
                        format!("{} (snapshot {})", p.message, s.index)
                    }),
                    None if bytes > 0 && bytes <= QCOW2_MAX_L1_BYTES => {
                        let who = Referrer::SnapshotL1 {
                            snapshot: s.index,
                            offset: s.l1_table_offset,
                        };
                        let end = s.l1_table_offset.saturating_add(bytes);
                        clusters.mark_meta(s.l1_table_offset, end);
                        reach(furthest, end, who);
                    }
                    None => {}
                }
            }
            SnapshotEvent::End(end) => {
                let who = Referrer::Table {
                    what: "snapshot table",
                    offset: table,
                };
                clusters.mark_meta(table, end);
                reach(furthest, end, who);
            }
            SnapshotEvent::Bad(at, code, message) => findings.push(code, at, message),
        });
    }

    fn feed_l2(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let Qcow2Walk {
            l2,
            layout,
            furthest,
            clusters,
            compressed,
            ..
        } = self;
        let layout = *layout;
        let entry_size: u64 = if layout.extended_l2 { 16 } else { 8 };
        let mut note = |start: u64, end: u64, who: Referrer, findings: &mut PlacedFindings| {
            clusters.mark_data(start, end);
            reach(furthest, end, who);
            if let (
                Referrer::Data {
                    table,
                    index,
                    compressed: true,
                },
                Some(check),
            ) = (who, compressed.as_mut())
            {
                // `end` is one past the first byte of the extent's last sector.
                let at = table.saturating_add(index.saturating_mul(entry_size));
                let sector_end = end.saturating_sub(1).saturating_add(SECTOR);
                check.note(
                    at,
                    at.saturating_add(entry_size),
                    start,
                    sector_end,
                    findings,
                );
            }
        };
        match l2 {
            L2Queue::Standard(q) => q.feed(pos, data, |table, index, entry| {
                let word = u64::from_be_bytes(*entry);
                check_l2_entry(&layout, table, index, word, None, findings, &mut note);
            }),
            L2Queue::Extended(q) => q.feed(pos, data, |table, index, entry| {
                let word = be_u64(entry, 0).unwrap_or(0);
                let bitmap = be_u64(entry, 8).unwrap_or(0);
                check_l2_entry(
                    &layout,
                    table,
                    index,
                    word,
                    Some(bitmap),
                    findings,
                    &mut note,
                );
            }),
        }
    }
}

/// Records that `who` needs the stream to reach `end`; the furthest need (ties broken by
/// the referrer's order) is kept.
fn reach(furthest: &mut Option<(u64, Referrer)>, end: u64, who: Referrer) {
    if furthest.is_none_or(|f| (end, who) > f) {
        *furthest = Some((end, who));
    }
}

/// Checks one L2 entry (`bitmap` is the subcluster bitmap with extended L2) and notes how
/// far into the file its data reaches.
fn check_l2_entry(
    layout: &Qcow2Layout,
    table: u64,
    index: u64,
    word: u64,
    bitmap: Option<u64>,
    findings: &mut PlacedFindings,
    note: &mut impl FnMut(u64, u64, Referrer, &mut PlacedFindings),
) {
    let entry_size: u64 = if bitmap.is_some() { 16 } else { 8 };
    let at = table.saturating_add(index.saturating_mul(entry_size));
    let cs = layout.cluster_size;
    if word & L2E_COMPRESSED != 0 {
        // Spec: x = 62 - (cluster_bits - 8); bits 0..x-1 host byte offset, bits x..61 the
        // number of additional 512-byte sectors. cluster_bits is 9..=21, so x is 49..=61.
        let x = 70u32.saturating_sub(layout.cluster_bits);
        let host = word & (1u64 << x).saturating_sub(1);
        let sector_bits = layout.cluster_bits.saturating_sub(8);
        let additional = (word >> x) & (1u64 << sector_bits).saturating_sub(1);
        if bitmap.is_some_and(|b| b != 0) {
            findings.push_with(ReasonCode::Corrupt, at, || {
                format!(
                    "qcow2 L2 table at {table:#x} entry {index}: a compressed cluster has a \
                     subcluster bitmap"
                )
            });
        }
        if host < cs {
            findings.push_with(ReasonCode::Corrupt, at, || {
                format!(
                    "qcow2 L2 table at {table:#x} entry {index} points into the header cluster \
                     (compressed data at {host:#x})"
                )
            });
            return;
        }
        // The compressed data's last byte lies in the last of its sectors.
        let end = (host / SECTOR)
            .saturating_add(additional)
            .saturating_mul(SECTOR)
            .saturating_add(1);
        note(
            host,
            end,
            Referrer::Data {
                table,
                index,
                compressed: true,
            },
            findings,
        );
        return;
    }
    let cluster = word & L2E_OFFSET_MASK;
    if cluster == 0 {
        if bitmap.is_some_and(|b| b & L2_BITMAP_ALL_ALLOC != 0) {
            findings.push_with(ReasonCode::Corrupt, at, || {
                format!(
                    "qcow2 L2 table at {table:#x} entry {index} marks subclusters allocated \
                     without a cluster"
                )
            });
        }
        return;
    }
    if !layout.aligned(cluster) {
        findings.push_with(ReasonCode::Corrupt, at, || {
            format!(
                "qcow2 L2 table at {table:#x} entry {index} points to an unaligned cluster at \
                 {cluster:#x}"
            )
        });
        return;
    }
    if let Some(b) = bitmap {
        if (b >> 32) & b & L2_BITMAP_ALL_ALLOC != 0 {
            findings.push_with(ReasonCode::Corrupt, at, || {
                format!(
                    "qcow2 L2 table at {table:#x} entry {index} marks subclusters both allocated \
                     and zero"
                )
            });
        }
    }
    // A preallocated zero cluster (standard L2, bit 0) reads as zeros without touching the
    // file, so only its alignment matters.
    if bitmap.is_none() && word & L2E_ZERO != 0 {
        return;
    }
    // With extended L2 only allocated subclusters are read, and QEMU does not pad the file
    // past the last one it wrote: the cluster's data ends after its last allocated
    // subcluster (none allocated: nothing is read from the file).
    let used = match bitmap {
        Some(b) => {
            let alloc = u32::try_from(b & L2_BITMAP_ALL_ALLOC).unwrap_or(u32::MAX);
            if alloc == 0 {
                return;
            }
            u64::from(32u32.saturating_sub(alloc.leading_zeros())).saturating_mul(cs >> 5)
        }
        None => cs,
    };
    note(
        cluster,
        cluster.saturating_add(used),
        Referrer::Data {
            table,
            index,
            compressed: false,
        },
        findings,
    );
}

/// Prepares the capture of the backing file name, or reports it at once when the name is
/// unusable (QEMU refuses names longer than 1023 bytes or past cluster 0) or overlaps the
/// header.
fn backing_name(h: &Qcow2Header, cs: u64, findings: &mut PlacedFindings) -> Option<Capture> {
    let offset = h.backing_file_offset;
    if offset == 0 {
        return None;
    }
    let len = h.backing_file_size;
    let fits = len > 0
        && len <= QCOW2_MAX_BACKING_FILE_NAME
        && offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= cs);
    let at = off::BACKING_FILE_OFFSET as u64;
    if !fits {
        findings.push(
            ReasonCode::BackingFile,
            at,
            format!(
                "qcow2 image references a backing file, but its name ({len} bytes at {offset:#x}) \
                 is invalid"
            ),
        );
        return None;
    }
    if offset < QCOW2_HEADER_CAPTURE as u64 {
        findings.push(
            ReasonCode::BackingFile,
            at,
            format!("qcow2 image references a backing file whose name at {offset:#x} overlaps the header"),
        );
        return None;
    }
    let len = usize::try_from(len).ok()?;
    Some(Capture::new(offset, len))
}
