//! The internal snapshot table, walked as it streams past. Entries are variable-length: a
//! 40-byte fixed part, extra data, the id and name strings, padding to 8 bytes.

use crate::stream::{be_u16, be_u32, be_u64, intersect};

use super::limits::{
    QCOW2_MAX_L1_BYTES, QCOW2_MAX_SNAPSHOT_EXTRA_DATA, QCOW2_MAX_SNAPSHOT_TABLE_BYTES,
};

/// Fixed part of one snapshot table entry.
const ENTRY_FIXED_LEN: usize = 40;

/// Offsets inside the fixed part.
mod off {
    /// u64 offset of the snapshot's L1 table.
    pub(super) const L1_TABLE_OFFSET: usize = 0;
    /// u32 entries in the snapshot's L1 table.
    pub(super) const L1_SIZE: usize = 8;
    /// u16 id string length.
    pub(super) const ID_STR_SIZE: usize = 12;
    /// u16 name length.
    pub(super) const NAME_SIZE: usize = 14;
    /// u32 extra data length.
    pub(super) const EXTRA_DATA_SIZE: usize = 36;
}

/// One decoded entry, as reported to the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Qcow2Snapshot {
    /// Index in the table.
    pub(crate) index: u32,
    /// Stream offset of the entry.
    pub(crate) at: u64,
    /// The snapshot's L1 table offset.
    pub(crate) l1_table_offset: u64,
    /// The snapshot's L1 table entries.
    pub(crate) l1_size: u32,
}

/// What one step of the walk produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotEvent {
    /// An entry's fixed part is known.
    Entry(Qcow2Snapshot),
    /// The table ended at this offset.
    End(u64),
    /// The table is malformed; the walk stops. `(offset, code, message)`.
    Bad(u64, crate::ReasonCode, String),
}

#[derive(Debug)]
enum State {
    Fixed {
        buf: [u8; ENTRY_FIXED_LEN],
        len: usize,
    },
    Skip {
        until: u64,
    },
    Done,
}

/// Walks `count` snapshot entries starting at `start`.
#[derive(Debug)]
pub(crate) struct Qcow2SnapshotWalker {
    start: u64,
    at: u64,
    entry_start: u64,
    index: u32,
    count: u32,
    state: State,
}

impl Qcow2SnapshotWalker {
    /// A walker over `count` entries at `start`.
    pub(crate) fn new(start: u64, count: u32) -> Self {
        Qcow2SnapshotWalker {
            start,
            at: start,
            entry_start: start,
            index: 0,
            count,
            state: if count == 0 {
                State::Done
            } else {
                State::Fixed {
                    buf: [0; ENTRY_FIXED_LEN],
                    len: 0,
                }
            },
        }
    }

    /// Whether the whole table has been walked (or the walk gave up).
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds stream bytes, reporting events in table order.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], mut event: impl FnMut(SnapshotEvent)) {
        while !self.is_done() {
            let Some((0, part)) = intersect(pos, data, self.at, u64::MAX) else {
                return;
            };
            let avail = u64::try_from(part.len()).unwrap_or(u64::MAX);
            match &mut self.state {
                State::Done => return,
                State::Fixed { buf, len } => {
                    let take = ENTRY_FIXED_LEN.saturating_sub(*len).min(part.len());
                    if let (Some(dst), Some(src)) = (
                        buf.get_mut(*len..len.saturating_add(take)),
                        part.get(..take),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    *len = len.saturating_add(take);
                    self.at = self.at.saturating_add(u64::try_from(take).unwrap_or(0));
                    if *len == ENTRY_FIXED_LEN {
                        let fixed = *buf;
                        self.entry(&fixed, &mut event);
                    }
                }
                State::Skip { until } => {
                    let until = *until;
                    self.at = self
                        .at
                        .saturating_add(until.saturating_sub(self.at).min(avail));
                    if self.at >= until {
                        self.next_entry(&mut event);
                    }
                }
            }
        }
    }

    /// Handles a complete fixed part.
    fn entry(&mut self, b: &[u8; ENTRY_FIXED_LEN], event: &mut impl FnMut(SnapshotEvent)) {
        let l1_table_offset = be_u64(b, off::L1_TABLE_OFFSET).unwrap_or(0);
        let l1_size = be_u32(b, off::L1_SIZE).unwrap_or(0);
        let id_len = u64::from(be_u16(b, off::ID_STR_SIZE).unwrap_or(0));
        let name_len = u64::from(be_u16(b, off::NAME_SIZE).unwrap_or(0));
        let extra = be_u32(b, off::EXTRA_DATA_SIZE).unwrap_or(0);
        let at = self.entry_start;
        if extra > QCOW2_MAX_SNAPSHOT_EXTRA_DATA {
            self.stop(
                event,
                at,
                crate::ReasonCode::Corrupt,
                format!(
                    "qcow2 snapshot {} has {extra} bytes of extra data, above QEMU's limit of \
                     {QCOW2_MAX_SNAPSHOT_EXTRA_DATA}",
                    self.index
                ),
            );
            return;
        }
        if u64::from(l1_size).saturating_mul(8) > QCOW2_MAX_L1_BYTES {
            self.stop(
                event,
                at,
                crate::ReasonCode::LimitExceeded,
                format!(
                    "qcow2 snapshot {} has an L1 table of {l1_size} entries, above QEMU's \
                     {QCOW2_MAX_L1_BYTES}-byte limit",
                    self.index
                ),
            );
            return;
        }
        event(SnapshotEvent::Entry(Qcow2Snapshot {
            index: self.index,
            at,
            l1_table_offset,
            l1_size,
        }));
        // 40 + ≤1024 + two u16 lengths: no overflow; rounded up to 8 as QEMU does.
        let len = (ENTRY_FIXED_LEN as u64)
            .saturating_add(u64::from(extra))
            .saturating_add(id_len)
            .saturating_add(name_len);
        let len = len.saturating_add(7) & !7;
        let until = self.entry_start.saturating_add(len);
        if until.saturating_sub(self.start) > QCOW2_MAX_SNAPSHOT_TABLE_BYTES {
            self.stop(
                event,
                at,
                crate::ReasonCode::LimitExceeded,
                format!(
                    "qcow2 snapshot table exceeds QEMU's {QCOW2_MAX_SNAPSHOT_TABLE_BYTES}-byte limit"
                ),
            );
            return;
        }
        self.state = State::Skip { until };
        if self.at >= until {
            self.next_entry(event);
        }
    }

    /// Moves to the next entry, or ends the table.
    fn next_entry(&mut self, event: &mut impl FnMut(SnapshotEvent)) {
        self.index = self.index.saturating_add(1);
        self.entry_start = self.at;
        if self.index >= self.count {
            self.state = State::Done;
            event(SnapshotEvent::End(self.at));
        } else {
            self.state = State::Fixed {
                buf: [0; ENTRY_FIXED_LEN],
                len: 0,
            };
        }
    }

    fn stop(
        &mut self,
        event: &mut impl FnMut(SnapshotEvent),
        at: u64,
        code: crate::ReasonCode,
        message: String,
    ) {
        self.state = State::Done;
        event(SnapshotEvent::Bad(at, code, message));
    }
}
