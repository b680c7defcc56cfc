//! The qcow2 converter's handling of L1 and L2 entries: where each table and cluster lies
//! relative to the stream, and what is placed, queued or read back.

use super::{emit, L1E_OFFSET_MASK, L2E_COMPRESSED, L2E_OFFSET_MASK, L2E_ZERO};
use super::{SECTOR, SUBCLUSTERS};
use crate::stream::be_u64;
use crate::support::converter::{corrupt, ConvertError};
use crate::support::sink::ConvertSink;

use super::walk::Qcow2ConvertWalk;

impl Qcow2ConvertWalk {
    pub(super) fn l1_entry(
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

    pub(super) fn past_table(
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
    pub(super) fn l2_entry(
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
    pub(super) fn needed_len(&self, guest: u64, mask: u32) -> u64 {
        let visible = self.virtual_size.saturating_sub(guest).min(self.cs);
        if mask == u32::MAX || !self.extended {
            return visible;
        }
        let subclusters = 32u64.saturating_sub(u64::from(mask.leading_zeros()));
        subclusters
            .saturating_mul(self.cs / SUBCLUSTERS)
            .min(visible)
    }
}
