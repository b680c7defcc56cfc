//! The spill area of the qcow2 converter: bytes that may be data of an L2 table not read yet.

use std::collections::BTreeMap;

use super::{SECTOR, SPILL_RUN};
use crate::is_zero;
use crate::stream::{u64_of, usize_of};
use crate::support::converter::ConvertError;
use crate::support::sink::ConvertSink;
use crate::ReasonCode;

/// Where spilled bytes are and the sectors waiting to be spilled.
#[derive(Debug)]
pub(super) struct Spill {
    /// Host start → (spill offset, length); disjoint, in host order.
    pub(super) ranges: BTreeMap<u64, (u64, u64)>,
    /// Bytes of the spill area assigned so far.
    pub(super) used: u64,
    pub(super) max: u64,
    /// Ranges ever inserted (see [`Qcow2ConvertWalk::check_tracked`]).
    pub(super) inserted: usize,
    /// The sector being collected (host offset), its bytes, and the part written `[lo, hi)`.
    pub(super) sector: Option<u64>,
    pub(super) sector_buf: Vec<u8>,
    pub(super) lo: usize,
    pub(super) hi: usize,
    /// Non-zero sectors assigned spill offsets `[used - run.len(), used)` but not written.
    pub(super) run: Vec<u8>,
}

impl Spill {
    pub(super) fn new(max: u64) -> Self {
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
    pub(super) fn add(
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
    pub(super) fn close_sector(&mut self, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
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
    pub(super) fn flush_run(&mut self, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        if self.run.is_empty() {
            return Ok(());
        }
        let at = self.used.saturating_sub(u64_of(self.run.len()));
        sink.spill_write(at, &self.run)?;
        self.run.clear();
        Ok(())
    }

    /// Fills `buf` (host bytes from `host`) with what was spilled there; the rest is left.
    pub(super) fn read(
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
