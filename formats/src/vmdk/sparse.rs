//! The grain directory → grain table → grain walk of a sparse extent whose directory location
//! is in the header (monolithicSparse, and streamOptimized images written by QEMU).
//!
//! Directories are scanned entry by entry as they stream past; each grain table they name is
//! queued in a [`TableQueue`] and scanned when its bytes arrive. Writers lay tables out in
//! directory order right after their directory (QEMU and VMware: redundant directory, its
//! tables, directory, its tables), and Sluice requires that order: a table must start after
//! its directory, after the previous table of the same directory, and end before the next
//! directory. That keeps every table ahead of the stream when it is queued and no two tables
//! overlapping, so nothing depends on chunking.

use super::header::{VmdkHeader, SECTOR};
use crate::probe::PlacedFindings;
use crate::stream::{slice_at, u64_of, EntryScanner, TableQueue};
use crate::ReasonCode;

/// Bytes per grain directory or grain table entry (a little-endian sector number).
const ENTRY: u64 = 4;

/// One grain directory being scanned.
#[derive(Debug)]
struct Directory {
    name: &'static str,
    start: u64,
    scanner: EntryScanner<4>,
    /// Tables of this directory must end at or before this byte (the next directory).
    limit: u64,
    /// The next table must start at or after this byte.
    next_table: u64,
}

/// The walk over one sparse extent's directories and tables.
#[derive(Debug)]
pub(crate) struct VmdkTableWalk {
    directories: Vec<Directory>,
    tables: TableQueue<4>,
    table_bytes: u64,
    grain_sectors: u64,
    overhead: u64,
    zero_grain: bool,
    compressed: bool,
    /// One past the last byte that any directory, table or grain refers to.
    max_end: u64,
}

impl VmdkTableWalk {
    /// A walk for a header that passed [`VmdkHeader::check`] with a real `gdOffset`.
    pub(crate) fn new(h: &VmdkHeader, compressed: bool, max_tracked_tables: usize) -> Option<Self> {
        let entries = h.gd_entries()?;
        let gtes = u64::from(h.gtes_per_gt);
        let mut starts = vec![("grain directory", h.gd_offset.checked_mul(SECTOR)?)];
        if h.has_rgd() {
            starts.push((
                "redundant grain directory",
                h.rgd_offset.checked_mul(SECTOR)?,
            ));
        }
        starts.sort_by_key(|&(_, s)| s);
        let mut directories = Vec::with_capacity(starts.len());
        let mut max_end = 0u64;
        for (i, &(name, start)) in starts.iter().enumerate() {
            let scanner = EntryScanner::<4>::new(start, entries)?;
            let limit = starts
                .get(i.checked_add(1)?)
                .map_or(u64::MAX, |&(_, next)| next);
            max_end = max_end.max(scanner.end());
            directories.push(Directory {
                name,
                start,
                limit,
                next_table: scanner.end(),
                scanner,
            });
        }
        Some(VmdkTableWalk {
            directories,
            tables: TableQueue::new(gtes, max_tracked_tables),
            table_bytes: gtes.checked_mul(ENTRY)?,
            grain_sectors: h.grain_size,
            overhead: h.overhead,
            zero_grain: h.zero_grain(),
            compressed,
            max_end,
        })
    }

    /// Feeds stream bytes at `pos`.
    ///
    /// The bytes before each directory are walked first: the tables of the directory before it
    /// end there, so they are scanned and no longer queued when its entries queue new ones.
    /// The tables queued at once (and so whether the limit on them is hit) are then the same
    /// however the stream is chunked.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let end = pos.saturating_add(u64_of(data.len()));
        let mut at = pos;
        while at < end {
            let next = self
                .directories
                .iter()
                .map(|d| d.start)
                .filter(|&s| s > at)
                .min()
                .unwrap_or(end)
                .min(end);
            self.feed_piece(at, slice_at(pos, data, at, next), findings);
            at = next;
        }
    }

    /// Feeds stream bytes at `pos` that hold no directory start past their first byte.
    fn feed_piece(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let table_bytes = self.table_bytes;
        let tables = &mut self.tables;
        let max_end = &mut self.max_end;
        for dir in &mut self.directories {
            let (name, start, limit) = (dir.name, dir.start, dir.limit);
            let next_table = &mut dir.next_table;
            dir.scanner.feed(pos, data, |index, entry| {
                let sector = u64::from(u32::from_le_bytes(*entry));
                if sector == 0 {
                    return;
                }
                let at = entry_end(start, index);
                let table = sector.saturating_mul(SECTOR);
                let end = table.saturating_add(table_bytes);
                if table < *next_table || end > limit {
                    findings.push_with(ReasonCode::Corrupt, at, || {
                        format!(
                            "VMDK {name} entry {index} points to a grain table at sector \
                             {sector} that overlaps other metadata"
                        )
                    });
                    return;
                }
                *next_table = end;
                *max_end = (*max_end).max(end);
                if tables.push(at, table).is_err() {
                    findings.push_with(ReasonCode::LimitExceeded, at, || {
                        "VMDK image has more grain tables than the inspector tracks".to_owned()
                    });
                }
            });
        }
        let (overhead, zero_grain) = (self.overhead, self.zero_grain);
        // A compressed grain's length is in its marker: at least its first sector must exist.
        let grain_sectors = if self.compressed {
            1
        } else {
            self.grain_sectors
        };
        self.tables.feed(pos, data, |table, index, entry| {
            let sector = u64::from(u32::from_le_bytes(*entry));
            if sector == 0 || (sector == 1 && zero_grain) {
                return;
            }
            let at = entry_end(table, index);
            if sector < overhead {
                findings.push_with(ReasonCode::Corrupt, at, || {
                    format!(
                        "VMDK grain table at byte {table} entry {index} points to sector \
                         {sector}, inside the metadata (overHead is {overhead} sectors)"
                    )
                });
                return;
            }
            let end = sector.saturating_add(grain_sectors).saturating_mul(SECTOR);
            *max_end = (*max_end).max(end);
        });
    }

    /// Whether every directory and table has been scanned.
    pub(crate) fn is_done(&self, pos: u64) -> bool {
        self.tables.pending() == 0 && self.directories.iter().all(|d| d.scanner.is_done(pos))
    }

    /// At end of stream: everything referenced must lie inside the stream.
    pub(crate) fn finish(&self, stream_len: u64, findings: &mut PlacedFindings) {
        if stream_len < self.max_end {
            let max_end = self.max_end;
            findings.push_with(ReasonCode::Truncated, stream_len, || {
                format!(
                    "VMDK image is {stream_len} bytes but its grain directory and tables \
                     reference data up to byte {max_end}"
                )
            });
        }
    }
}

/// The stream offset just past entry `index` of a table at `start` (where it is known).
fn entry_end(start: u64, index: u64) -> u64 {
    start.saturating_add(index.saturating_add(1).saturating_mul(ENTRY))
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test arithmetic on small known values
mod tests {
    use super::super::header::tests::qemu_sparse_header;
    use super::*;

    /// A 100 MiB monolithicSparse layout (QEMU's): RGD at 21, its 4 tables at 22..26, GD at
    /// 38, its tables at 39... with the given grain in GT 0 entry 0.
    fn layout(grain_sector: u32) -> Vec<u8> {
        let mut img = vec![0u8; 128 * 512];
        for (gd, first_gt) in [(21usize, 22u32), (38, 39)] {
            for i in 0..4u32 {
                let at = gd * 512 + i as usize * 4;
                img[at..at + 4].copy_from_slice(&(first_gt + 4 * i).to_le_bytes());
            }
            let gt0 = first_gt as usize * 512;
            img[gt0..gt0 + 4].copy_from_slice(&grain_sector.to_le_bytes());
        }
        img
    }

    fn walk(img: &[u8], chunk: usize) -> (VmdkTableWalk, PlacedFindings) {
        let h = qemu_sparse_header();
        let mut w = VmdkTableWalk::new(&h, false, 64).unwrap();
        let mut f = PlacedFindings::default();
        for (i, c) in img.chunks(chunk).enumerate() {
            w.feed((i * chunk) as u64, c, &mut f);
        }
        (w, f)
    }

    #[test]
    fn test_table_walk_valid_layout_tracks_grain_end() {
        let img = layout(128);
        for chunk in [1, 7, 512, 4096, img.len()] {
            let (w, f) = walk(&img, chunk);
            assert!(f.as_slice().is_empty());
            assert!(w.is_done(img.len() as u64));
            assert!(matches!(w.max_end, 131_072));
            let mut f = PlacedFindings::default();
            w.finish(img.len() as u64, &mut f);
            assert!(f.as_slice().iter().any(|r| r.code == ReasonCode::Truncated));
        }
    }

    #[test]
    fn test_table_walk_grain_inside_metadata_is_corrupt() {
        let (_, f) = walk(&layout(1), 4096);
        assert!(matches!(f.as_slice().first(), Some(r) if r.code == ReasonCode::Corrupt));
    }
}
