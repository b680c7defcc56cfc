//! monolithicSparse to raw: directory, then tables, then grains, as they stream past.

use std::collections::BTreeMap;

use super::*;
use crate::stream::u64_of;
use crate::stream::{slice_at, EntryScanner, TableQueue};
use crate::support::converter::{corrupt, truncated};
use crate::support::converter::{ConvertError, ConvertLimits};
use crate::support::placer::Placer;
use crate::support::sink::ConvertSink;
use crate::vmdk::header::{VmdkHeader, SECTOR};
use crate::ReasonCode;

///
/// The monolithicSparse walk: directory → tables → grains.
///
/// Like the inspector ([`VmdkTableWalk`]), the converter requires the grain tables after the
/// directory, in directory order and not overlapping: every table is then ahead of the stream
/// when it is queued and scanned whole, however the input is chunked.
#[derive(Debug)]
pub(super) struct VmdkSparseWalk {
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
pub(super) struct GrainPlacement {
    entry_end: u64,
    input: u64,
    output: u64,
}

impl VmdkSparseWalk {
    pub(super) fn new(
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

    pub(super) fn feed(
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

    pub(super) fn finish(
        &mut self,
        len: u64,
        _sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
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
