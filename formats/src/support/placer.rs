//! Placing input bytes at output offsets: [`write_nonzero`] (zero pieces stay holes) and
//! [`Placer`] (input ranges placed by metadata that may come before or after them).

use std::collections::BTreeMap;

use super::converter::{corrupt, ConvertError, ConvertLimits};
use super::is_zero;
use super::sink::ConvertSink;
use crate::stream::{intersect, u64_of};
use crate::ReasonCode;

/// Bytes of the output handled at once when copying out of the spill area or inflating: the
/// granularity of the all-zero check too.
pub(crate) const SCRATCH_LEN: usize = 64 << 10;

/// The all-zero check's granularity: output pieces of this many bytes (aligned in the output)
/// that are all zero are not written, so they stay holes.
const ZERO_CHECK: u64 = 4096;

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
        if is_zero(piece) {
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

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::convert::MemorySink;

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
}
