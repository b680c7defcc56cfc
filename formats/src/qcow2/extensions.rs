//! Header extensions, walked as they stream past (never captured whole: cluster 0 may be
//! 2 MiB). Each is `{u32 type, u32 length, data, padding to 8}`; the chain ends at type 0,
//! at the backing file name, or at the end of cluster 0, as in QEMU's
//! `qcow2_read_extensions`.

use crate::stream::{be_u32, intersect};

use super::limits::QCOW2_MAX_EXTENSION_NAME;

/// Extension types.
pub(crate) mod ext {
    /// End of the chain.
    pub(crate) const END: u32 = 0;
    /// Backing file format name.
    pub(crate) const BACKING_FORMAT: u32 = 0xE279_2ACA;
    /// Full disk encryption (LUKS) header pointer.
    pub(crate) const FDE: u32 = 0x0537_BE77;
    /// External data file name.
    pub(crate) const DATA_FILE: u32 = 0x4441_5441;
}

/// What the walk found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Qcow2Extensions {
    /// The backing format extension's value (first bytes).
    pub(crate) backing_format: Option<Vec<u8>>,
    /// The external data file extension's value (first bytes).
    pub(crate) data_file: Option<Vec<u8>>,
    /// Offset of the FDE (LUKS header) extension, if present.
    pub(crate) fde_at: Option<u64>,
    /// Offset and message of a malformed chain.
    pub(crate) malformed: Option<(u64, String)>,
}

#[derive(Debug)]
enum State {
    /// Reading the 8-byte type and length.
    Header { buf: [u8; 8], len: usize },
    /// Inside one extension's data; `keep` holds its first bytes when it names something.
    Data {
        kind: u32,
        remaining: u64,
        pad: u64,
        keep: Vec<u8>,
    },
    /// Skipping the padding to the next 8-byte boundary.
    Pad { remaining: u64 },
    /// Chain ended (type 0, end of the area, or malformed).
    Done,
}

/// Walks the extension chain over `[start, end)` of the stream.
#[derive(Debug)]
pub(crate) struct Qcow2ExtensionWalker {
    at: u64,
    end: u64,
    state: State,
    found: Qcow2Extensions,
}

const NEXT_HEADER: State = State::Header {
    buf: [0; 8],
    len: 0,
};

impl Qcow2ExtensionWalker {
    /// A walker over `[start, end)`; an empty area is done at once.
    pub(crate) fn new(start: u64, end: u64) -> Self {
        Qcow2ExtensionWalker {
            at: start,
            end,
            state: if start < end {
                NEXT_HEADER
            } else {
                State::Done
            },
            found: Qcow2Extensions::default(),
        }
    }

    /// Whether the chain has ended.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// What was found so far (complete once [`Self::is_done`]).
    pub(crate) fn found(&self) -> &Qcow2Extensions {
        &self.found
    }

    /// Feeds stream bytes; bytes before the walk's position are ignored, so the captured
    /// header may be replayed over a chunk that also holds it.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8]) {
        while !self.is_done() {
            let Some((0, part)) = intersect(pos, data, self.at, self.end) else {
                return;
            };
            let taken = self.step(part);
            if taken == 0 {
                return;
            }
            self.at = self
                .at
                .saturating_add(u64::try_from(taken).unwrap_or(u64::MAX));
            if self.at >= self.end && !self.is_done() {
                self.end_of_area();
            }
        }
    }

    /// The area ended: QEMU stops there too, but an extension cut by it is malformed.
    fn end_of_area(&mut self) {
        match &self.state {
            State::Header { len, .. } if *len > 0 => {
                self.malformed("qcow2 header extension header is cut by the end of the header area")
            }
            _ => self.state = State::Done,
        }
    }

    fn malformed(&mut self, what: &str) {
        if self.found.malformed.is_none() {
            self.found.malformed = Some((self.at, format!("{what} (at {:#x})", self.at)));
        }
        self.state = State::Done;
    }

    /// Consumes bytes at `self.at`; returns how many.
    fn step(&mut self, part: &[u8]) -> usize {
        let avail = u64::try_from(part.len()).unwrap_or(u64::MAX);
        match &mut self.state {
            State::Done => 0,
            State::Header { buf, len } => {
                let take = 8usize.saturating_sub(*len).min(part.len());
                if let (Some(dst), Some(src)) = (
                    buf.get_mut(*len..len.saturating_add(take)),
                    part.get(..take),
                ) {
                    dst.copy_from_slice(src);
                }
                *len = len.saturating_add(take);
                if *len == 8 {
                    let kind = be_u32(buf, 0).unwrap_or(0);
                    let data_len = u64::from(be_u32(buf, 4).unwrap_or(0));
                    let data_start = self.at.saturating_add(u64::try_from(take).unwrap_or(0));
                    self.begin(kind, data_start, data_len);
                }
                take
            }
            State::Data {
                kind,
                remaining,
                pad,
                keep,
            } => {
                let take = (*remaining).min(avail);
                let take_usize = usize::try_from(take).unwrap_or(part.len());
                if matches!(*kind, ext::DATA_FILE | ext::BACKING_FORMAT) {
                    let room = QCOW2_MAX_EXTENSION_NAME.saturating_sub(keep.len());
                    if let Some(src) = part.get(..take_usize.min(room)) {
                        keep.extend_from_slice(src);
                    }
                }
                *remaining = remaining.saturating_sub(take);
                if *remaining == 0 {
                    let value = std::mem::take(keep);
                    let (kind, pad) = (*kind, *pad);
                    self.record(kind, value);
                    self.state = if pad > 0 {
                        State::Pad { remaining: pad }
                    } else {
                        NEXT_HEADER
                    };
                }
                take_usize
            }
            State::Pad { remaining } => {
                let take = (*remaining).min(avail);
                *remaining = remaining.saturating_sub(take);
                if *remaining == 0 {
                    self.state = NEXT_HEADER;
                }
                usize::try_from(take).unwrap_or(part.len())
            }
        }
    }

    /// Keeps the first value of each extension that names something.
    fn record(&mut self, kind: u32, value: Vec<u8>) {
        match kind {
            ext::DATA_FILE if self.found.data_file.is_none() => self.found.data_file = Some(value),
            ext::BACKING_FORMAT if self.found.backing_format.is_none() => {
                self.found.backing_format = Some(value)
            }
            _ => {}
        }
    }

    /// Starts an extension of `data_len` bytes at `data_start` (its header began 8 bytes
    /// earlier).
    fn begin(&mut self, kind: u32, data_start: u64, data_len: u64) {
        let ext_start = data_start.saturating_sub(8);
        if kind == ext::END {
            self.state = State::Done;
            return;
        }
        // QEMU: the data must fit before the end of the area ("Header extension too large").
        if data_len > self.end.saturating_sub(data_start) {
            self.found.malformed.get_or_insert_with(|| {
                (
                    ext_start,
                    format!(
                        "qcow2 header extension {kind:#010x} at {ext_start:#x} claims {data_len} \
                         bytes, past the end of the header area at {:#x}",
                        self.end
                    ),
                )
            });
            self.state = State::Done;
            return;
        }
        if kind == ext::FDE && self.found.fde_at.is_none() {
            self.found.fde_at = Some(ext_start);
        }
        // Padding to a multiple of 8 after the data, as QEMU skips it (`len` is a u32).
        let pad = data_len.wrapping_neg() & 7;
        if data_len == 0 {
            self.record(kind, Vec::new());
            self.state = NEXT_HEADER;
        } else {
            self.state = State::Data {
                kind,
                remaining: data_len,
                pad,
                keep: Vec::new(),
            };
        }
    }
}
