//! Building blocks for reading structures out of a stream that arrives in arbitrary chunks.
//!
//! Every probe sees the stream as `(pos, data)` pairs: `data` are the bytes at absolute offset
//! `pos`, consecutive calls are contiguous. These helpers make a structure split across any
//! number of chunks look like one slice, so no probe special-cases chunk boundaries.

/// A length as `u64` (saturating; lengths of in-memory slices always fit).
pub(crate) fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A length as `usize`, for values already bounded by a limit far below `usize::MAX`.
pub(crate) fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Reads a big-endian `u16` at `off`, or `None` past the end.
pub(crate) fn be_u16(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(array(buf, off)?))
}

/// Reads a big-endian `u32` at `off`, or `None` past the end.
pub(crate) fn be_u32(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(array(buf, off)?))
}

/// Reads a big-endian `u64` at `off`, or `None` past the end.
pub(crate) fn be_u64(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(array(buf, off)?))
}

/// Reads a little-endian `u16` at `off`, or `None` past the end.
pub(crate) fn le_u16(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(array(buf, off)?))
}

/// Reads a little-endian `u32` at `off`, or `None` past the end.
pub(crate) fn le_u32(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(array(buf, off)?))
}

/// Reads a little-endian `u64` at `off`, or `None` past the end.
pub(crate) fn le_u64(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(array(buf, off)?))
}

/// Copies `N` bytes at `off` into an array, or `None` past the end.
pub(crate) fn array<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    buf.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// The part of `data` (at stream offset `pos`) that falls in `[start, end)`, with the offset of
/// that part relative to `start`. `None` when they do not intersect.
pub(crate) fn intersect(pos: u64, data: &[u8], start: u64, end: u64) -> Option<(u64, &[u8])> {
    let data_end = pos.checked_add(u64::try_from(data.len()).ok()?)?;
    let lo = pos.max(start);
    let hi = data_end.min(end);
    if lo >= hi {
        return None;
    }
    let from = usize::try_from(lo.checked_sub(pos)?).ok()?;
    let to = usize::try_from(hi.checked_sub(pos)?).ok()?;
    Some((lo.checked_sub(start)?, data.get(from..to)?))
}

/// The part of `data` (at stream offset `pos`) in `[from, to)`; empty when they do not
/// intersect.
pub(crate) fn slice_at(pos: u64, data: &[u8], from: u64, to: u64) -> &[u8] {
    intersect(pos, data, from, to).map_or(&[], |(_, part)| part)
}

/// Collects the bytes of one region `[start, start + len)` of the stream.
///
/// The buffer is allocated once, at construction, so callers must check `len` against a named
/// limit before creating a capture from a header value.
#[derive(Debug)]
pub(crate) struct Capture {
    start: u64,
    buf: Vec<u8>,
    want: usize,
}

impl Capture {
    /// A capture of `len` bytes at `start`. `len` must already be bounded by a limit.
    pub(crate) fn new(start: u64, len: usize) -> Self {
        Capture {
            start,
            buf: Vec::with_capacity(len),
            want: len,
        }
    }

    /// Feeds stream bytes; returns `true` once the region is complete.
    ///
    /// A capture whose start has already streamed past never completes; probes create captures
    /// only for regions ahead of the stream.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8]) -> bool {
        if self.is_complete() {
            return true;
        }
        let have = u64::try_from(self.buf.len()).unwrap_or(u64::MAX);
        let next = self.start.saturating_add(have);
        let end = self
            .start
            .saturating_add(u64::try_from(self.want).unwrap_or(u64::MAX));
        if let Some((rel, part)) = intersect(pos, data, next, end) {
            // `rel` is 0 unless bytes were skipped, which contiguous feeding never does.
            if rel == 0 {
                self.buf.extend_from_slice(part);
            }
        }
        self.is_complete()
    }

    /// Whether all bytes of the region have arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.buf.len() == self.want
    }

    /// The bytes captured so far (all of them once complete).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Where the region starts in the stream.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// One past the region's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.start
            .saturating_add(u64::try_from(self.want).unwrap_or(u64::MAX))
    }
}

/// Walks an array of fixed-size entries `[start, start + count * N)` as it streams past,
/// handing each whole entry to a callback with its index. Holds at most one partial entry.
#[derive(Debug)]
pub(crate) struct EntryScanner<const N: usize> {
    start: u64,
    end: u64,
    partial: [u8; N],
    partial_len: usize,
    next_index: u64,
}

impl<const N: usize> EntryScanner<N> {
    /// A scanner over `count` entries of `N` bytes at `start`; `None` if the range overflows.
    pub(crate) fn new(start: u64, count: u64) -> Option<Self> {
        let bytes = count.checked_mul(u64::try_from(N).ok()?)?;
        Some(EntryScanner {
            start,
            end: start.checked_add(bytes)?,
            partial: [0; N],
            partial_len: 0,
            next_index: 0,
        })
    }

    /// One past the array's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Whether every entry has been seen.
    pub(crate) fn is_done(&self, pos: u64) -> bool {
        pos >= self.end && self.partial_len == 0
    }

    /// Feeds stream bytes, calling `f(index, entry)` for each entry completed by them.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], mut f: impl FnMut(u64, &[u8; N])) {
        let Some((rel, mut part)) = intersect(pos, data, self.start, self.end) else {
            return;
        };
        // Entries are visited in order; a gap (never produced by contiguous feeding) resets.
        let expected = self
            .next_index
            .saturating_mul(u64::try_from(N).unwrap_or(u64::MAX))
            .saturating_add(u64::try_from(self.partial_len).unwrap_or(u64::MAX));
        if rel != expected {
            return;
        }
        if self.partial_len > 0 {
            let need = N.saturating_sub(self.partial_len);
            let take = need.min(part.len());
            let (head, rest) = part.split_at(take);
            if let Some(dst) = self
                .partial
                .get_mut(self.partial_len..self.partial_len.saturating_add(take))
            {
                dst.copy_from_slice(head);
            }
            self.partial_len = self.partial_len.saturating_add(take);
            part = rest;
            if self.partial_len < N {
                return;
            }
            f(self.next_index, &self.partial);
            self.partial_len = 0;
            self.next_index = self.next_index.saturating_add(1);
        }
        let mut entries = part.chunks_exact(N);
        for entry in entries.by_ref() {
            if let Ok(entry) = <&[u8; N]>::try_from(entry) {
                f(self.next_index, entry);
            }
            self.next_index = self.next_index.saturating_add(1);
        }
        let rest = entries.remainder();
        if let Some(dst) = self.partial.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
            self.partial_len = rest.len();
        }
    }
}

/// The last bytes of the stream, for structures that live at the end (VHD footer, VMDK
/// footer and end-of-stream marker, backup GPT header).
#[derive(Debug)]
pub(crate) struct Tail {
    buf: Box<[u8; TAIL_LEN]>,
    /// Total bytes seen.
    len: u64,
}

/// How many trailing bytes [`Tail`] keeps: the VMDK footer marker, footer and EOS marker.
pub(crate) const TAIL_LEN: usize = 1536;

impl Tail {
    pub(crate) fn new() -> Self {
        Tail {
            buf: Box::new([0; TAIL_LEN]),
            len: 0,
        }
    }

    /// Appends stream bytes, keeping only the last [`TAIL_LEN`].
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.len = self
            .len
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        if data.len() >= TAIL_LEN {
            if let Some(last) = data.get(data.len().saturating_sub(TAIL_LEN)..) {
                self.buf.copy_from_slice(last);
            }
        } else {
            self.buf.copy_within(data.len().., 0);
            if let Some(dst) = self.buf.get_mut(TAIL_LEN.saturating_sub(data.len())..) {
                dst.copy_from_slice(data);
            }
        }
    }

    /// The last `min(n, stream length, TAIL_LEN)` bytes of the stream.
    pub(crate) fn last(&self, n: usize) -> &[u8] {
        let avail = usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .min(TAIL_LEN);
        let n = n.min(avail);
        self.buf.get(TAIL_LEN.saturating_sub(n)..).unwrap_or(&[])
    }

    /// Total bytes in the stream.
    pub(crate) fn stream_len(&self) -> u64 {
        self.len
    }
}

/// Metadata tables (qcow2 L2 tables, VMDK grain tables) whose positions are known from a
/// directory read earlier, scanned entry by entry as they stream past.
///
/// Memory: 8 bytes per queued table, at most `max_tracked` tables (a named limit), plus one
/// partial entry.
#[derive(Debug)]
pub(crate) struct TableQueue<const N: usize> {
    pending: std::collections::BTreeSet<u64>,
    entries_per_table: u64,
    current: Option<(u64, EntryScanner<N>)>,
    max_tracked: usize,
}

/// A table could not be queued because [`TableQueue`] already tracks its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyTables;

impl<const N: usize> TableQueue<N> {
    /// A queue of tables of `entries_per_table` entries of `N` bytes each.
    pub(crate) fn new(entries_per_table: u64, max_tracked: usize) -> Self {
        TableQueue {
            pending: std::collections::BTreeSet::new(),
            entries_per_table,
            current: None,
            max_tracked,
        }
    }

    /// Queues the table at `offset`, given that the stream has reached `pos`.
    ///
    /// A table that began before `pos` has already streamed past and cannot be checked: it is
    /// ignored (the caller still knows its extent). Queuing the same offset twice is harmless.
    pub(crate) fn push(&mut self, pos: u64, offset: u64) -> Result<(), TooManyTables> {
        if offset < pos {
            return Ok(());
        }
        if self.current.as_ref().is_some_and(|(o, _)| *o == offset) {
            return Ok(());
        }
        if self.pending.len() >= self.max_tracked {
            return Err(TooManyTables);
        }
        self.pending.insert(offset);
        Ok(())
    }

    /// Tables still waiting for their bytes (including one being scanned).
    pub(crate) fn pending(&self) -> usize {
        self.pending
            .len()
            .saturating_add(usize::from(self.current.is_some()))
    }

    /// Feeds stream bytes, calling `f(table_offset, index, entry)` for each entry of each
    /// queued table that they complete.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], mut f: impl FnMut(u64, u64, &[u8; N])) {
        let data_end = pos.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        loop {
            if self.current.is_none() {
                let Some(&next) = self.pending.first() else {
                    return;
                };
                if next >= data_end {
                    return;
                }
                self.pending.remove(&next);
                if next < pos {
                    // Overlaps the table scanned before it: its first bytes are gone. Probes
                    // whose tables may overlap must reject that layout themselves.
                    continue;
                }
                match EntryScanner::new(next, self.entries_per_table) {
                    Some(scanner) => self.current = Some((next, scanner)),
                    // The table's extent overflows u64: nothing of it can stream past.
                    None => continue,
                }
            }
            let Some((offset, scanner)) = self.current.as_mut() else {
                return;
            };
            let offset = *offset;
            scanner.feed(pos, data, |i, e| f(offset, i, e));
            if scanner.end() <= data_end {
                self.current = None;
            } else {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_capture_split_across_chunks_is_complete() {
        let data: Vec<u8> = (0..=255).collect();
        let mut cap = Capture::new(10, 20);
        let mut pos = 0u64;
        for chunk in data.chunks(7) {
            cap.feed(pos, chunk);
            pos += chunk.len() as u64;
        }
        assert!(cap.is_complete());
        assert_eq!(cap.bytes(), &data[10..30]);
    }

    #[test]
    fn test_entry_scanner_byte_by_byte_sees_every_entry() {
        let data: Vec<u8> = (0..100).collect();
        let mut scanner = EntryScanner::<4>::new(3, 5).unwrap();
        let mut seen = Vec::new();
        for (i, b) in data.iter().enumerate() {
            scanner.feed(i as u64, std::slice::from_ref(b), |idx, e| {
                seen.push((idx, *e))
            });
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], (0, [3, 4, 5, 6]));
        assert_eq!(seen[4], (4, [19, 20, 21, 22]));
        assert!(scanner.is_done(100));
    }

    #[test]
    fn test_table_queue_scans_queued_tables_in_stream_order() {
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut q = TableQueue::<2>::new(2, 8);
        q.push(0, 100).unwrap();
        q.push(0, 20).unwrap();
        q.push(0, 20).unwrap();
        let mut seen = Vec::new();
        for (i, chunk) in data.chunks(3).enumerate() {
            q.feed(i as u64 * 3, chunk, |t, idx, e| seen.push((t, idx, *e)));
        }
        assert_eq!(
            seen,
            vec![
                (20, 0, [20, 21]),
                (20, 1, [22, 23]),
                (100, 0, [100, 101]),
                (100, 1, [102, 103])
            ]
        );
        q.push(200, 50).unwrap();
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn test_table_queue_over_limit_is_refused() {
        let mut q = TableQueue::<8>::new(1, 1);
        q.push(0, 8).unwrap();
        assert_eq!(q.push(0, 16), Err(TooManyTables));
    }

    #[test]
    fn test_tail_keeps_last_bytes() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut tail = Tail::new();
        for chunk in data.chunks(333) {
            tail.feed(chunk);
        }
        assert_eq!(tail.last(512), &data[data.len() - 512..]);
        assert_eq!(tail.last(TAIL_LEN), &data[data.len() - TAIL_LEN..]);
        assert_eq!(tail.stream_len(), 5000);
        let mut short = Tail::new();
        short.feed(&[1, 2, 3]);
        assert_eq!(short.last(512), &[1, 2, 3]);
    }
}
