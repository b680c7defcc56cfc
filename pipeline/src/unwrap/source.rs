//! [`Unwrapped`]: a [`ChunkSource`] in front of another that decompresses a wrapped stream on
//! a background thread and passes anything else through untouched.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use sluice_formats::Format;

use super::ova::{read_ova, OvaEvent};
use super::{detect, Decompressor, UnwrapError, Wrapper, MAGIC_LEN};
use crate::background;
use crate::source::{ChunkSource, SourceError};

/// Compressed chunks queued for the decompressor thread. Memory: `(capacity + 1) × chunk`.
pub const INPUT_CHANNEL_CAPACITY: usize = 2;

/// Decompressed pieces queued for the ingest. Memory: `(capacity + 1) × OUTPUT_CHUNK`; also
/// how far ahead of the ingest's size cap and quota the thread can run.
pub const OUTPUT_CHANNEL_CAPACITY: usize = 2;

/// What the unwrapping thread sends: facts (OVA) and data, then exactly one end or failure.
enum Out {
    Data(Bytes),
    End,
    Facts(Vec<(String, String)>),
    Failed(UnwrapError),
}

/// What is unwrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Compressed(Wrapper),
    Ova,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Compressed(w) => w.as_str(),
            Kind::Ova => "ova",
        }
    }
}

/// A source whose stream is decompressed when it starts with a gzip, xz, zstd or bzip2 magic
/// (see the module docs of [`crate::unwrap`]), or read as an OVA ([`Unwrapped::open_ova`]),
/// and passed through otherwise.
#[derive(Debug)]
pub struct Unwrapped<S> {
    inner: S,
    mode: Mode,
    /// Image properties found while unwrapping (an OVA's descriptor facts).
    facts: Vec<(String, String)>,
    /// What was unwrapped, kept after the end.
    kind: Option<Kind>,
}

#[derive(Debug)]
enum Mode {
    /// Not wrapped: the chunks read to detect that, then the source's own.
    Plain { head: VecDeque<Bytes> },
    /// Wrapped: compressed chunks go to the thread, decompressed ones come back.
    Wrapped(Box<Lanes>),
    /// Finished (end of stream or a failure returned).
    Done,
}

#[derive(Debug)]
struct Lanes {
    kind: Kind,
    /// Compressed chunks read from the source, not yet handed to the thread.
    pending: VecDeque<Bytes>,
    /// `None` once the source ended and everything was handed over (the thread sees EOF).
    to_thread: Option<mpsc::Sender<Bytes>>,
    source_done: bool,
    from_thread: mpsc::Receiver<Out>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Out::Data(b) => write!(f, "Data({} bytes)", b.len()),
            Out::End => f.write_str("End"),
            Out::Facts(facts) => write!(f, "Facts({facts:?})"),
            Out::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl<S: ChunkSource> Unwrapped<S> {
    /// Reads the head of `inner` (at least [`MAGIC_LEN`] bytes, unless it is shorter) and, if
    /// it is wrapped, starts the decompressor thread, whose output fails with `size_cap` once
    /// it passes `limit` bytes.
    ///
    /// # Errors
    /// The source's errors, or [`SourceError::ReadingChunk`] when the thread cannot start.
    pub async fn open(mut inner: S, limit: u64) -> Result<Self, SourceError> {
        let mut head = VecDeque::new();
        let mut probe = Vec::with_capacity(MAGIC_LEN);
        let mut source_done = false;
        while probe.len() < MAGIC_LEN {
            let Some(chunk) = inner.next_chunk().await? else {
                source_done = true;
                break;
            };
            let want = MAGIC_LEN.saturating_sub(probe.len()).min(chunk.len());
            probe.extend_from_slice(chunk.get(..want).unwrap_or_default());
            if !chunk.is_empty() {
                head.push_back(chunk);
            }
        }
        let Some(wrapper) = detect(&probe) else {
            return Ok(Unwrapped {
                inner,
                mode: Mode::Plain { head },
                facts: Vec::new(),
                kind: None,
            });
        };
        let kind = Kind::Compressed(wrapper);
        Self::start(inner, kind, head, source_done, move |input, output| {
            decompress(wrapper, input, output, limit);
        })
    }

    /// Reads `inner` as an OVA (module docs of `unwrap::ova`): the one disk it holds is the
    /// stream, failing with `size_cap` past `limit` bytes; its descriptor must not contradict
    /// `declared`; its facts are [`ChunkSource::source_properties`] once the stream ends.
    ///
    /// # Errors
    /// [`SourceError::ReadingChunk`] when the thread cannot start.
    pub fn open_ova(inner: S, limit: u64, declared: Option<Format>) -> Result<Self, SourceError> {
        Self::start(
            inner,
            Kind::Ova,
            VecDeque::new(),
            false,
            move |input, output| {
                let reader = ChannelReader {
                    rx: input,
                    current: Bytes::new(),
                };
                let read = read_ova(reader, declared, limit, &mut |event| {
                    let out = match event {
                        OvaEvent::Facts(facts) => Out::Facts(facts),
                        OvaEvent::Data(piece) => Out::Data(piece),
                    };
                    output.blocking_send(out).is_ok()
                });
                let _ = output.blocking_send(match read {
                    Ok(()) => Out::End,
                    Err(e) => Out::Failed(e),
                });
            },
        )
    }

    /// Starts the unwrapping thread `run` (input: compressed chunks, starting with `head`).
    fn start(
        inner: S,
        kind: Kind,
        head: VecDeque<Bytes>,
        source_done: bool,
        run: impl FnOnce(mpsc::Receiver<Bytes>, &mpsc::Sender<Out>) + Send + 'static,
    ) -> Result<Self, SourceError> {
        let (to_thread, input) = mpsc::channel::<Bytes>(INPUT_CHANNEL_CAPACITY);
        let (output, from_thread) = mpsc::channel::<Out>(OUTPUT_CHANNEL_CAPACITY);
        // The thread reports through `output`; its join handle is not needed.
        drop(
            background::spawn("sluice-unwrap", move || run(input, &output))
                .map_err(|source| SourceError::ReadingChunk { offset: 0, source })?,
        );
        Ok(Unwrapped {
            inner,
            mode: Mode::Wrapped(Box::new(Lanes {
                kind,
                pending: head,
                to_thread: Some(to_thread),
                source_done,
                from_thread,
            })),
            facts: Vec::new(),
            kind: Some(kind),
        })
    }

    /// `inner` passed through untouched, whatever it holds (a `compressed` container is
    /// stored as it is, so its wrapper is the inspector's business).
    pub fn passthrough(inner: S) -> Self {
        Unwrapped {
            inner,
            mode: Mode::Plain {
                head: VecDeque::new(),
            },
            facts: Vec::new(),
            kind: None,
        }
    }

    /// The wrapper being decompressed, if any.
    pub fn wrapper(&self) -> Option<Wrapper> {
        match self.kind {
            Some(Kind::Compressed(w)) => Some(w),
            Some(Kind::Ova) | None => None,
        }
    }

    async fn next_wrapped(&mut self) -> Result<Option<Bytes>, SourceError> {
        loop {
            let (out, name) = {
                let Mode::Wrapped(lanes) = &mut self.mode else {
                    return Ok(None);
                };
                (
                    Self::next_out(lanes, &mut self.inner).await?,
                    lanes.kind.name(),
                )
            };
            return match out {
                Some(Out::Data(piece)) => Ok(Some(piece)),
                Some(Out::Facts(facts)) => {
                    self.facts = facts;
                    continue;
                }
                Some(Out::End) => {
                    self.mode = Mode::Done;
                    Ok(None)
                }
                Some(Out::Failed(e)) => {
                    self.mode = Mode::Done;
                    Err(SourceError::Unwrap(e))
                }
                None => {
                    self.mode = Mode::Done;
                    Err(SourceError::Unwrap(UnwrapError::Stopped(name)))
                }
            };
        }
    }

    /// The thread's next message, feeding it the source's chunks meanwhile; `None` when the
    /// thread is gone.
    async fn next_out(lanes: &mut Lanes, inner: &mut S) -> Result<Option<Out>, SourceError> {
        loop {
            if let Some(chunk) = lanes.pending.pop_front() {
                let Some(tx) = lanes.to_thread.clone() else {
                    continue;
                };
                // Hand the chunk over, unless output is ready first (the thread may be
                // waiting for room to send it); both branches are cancel-safe.
                tokio::select! {
                    biased;
                    out = lanes.from_thread.recv() => {
                        lanes.pending.push_front(chunk);
                        return Ok(out);
                    }
                    permit = tx.reserve() => match permit {
                        Ok(permit) => permit.send(chunk),
                        // The thread has stopped: its verdict is in the output channel.
                        Err(_) => {
                            lanes.pending.clear();
                            lanes.to_thread = None;
                            lanes.source_done = true;
                        }
                    },
                }
                continue;
            }
            if lanes.source_done {
                // Everything is handed over: EOF for the thread, then drain its output.
                lanes.to_thread = None;
                return Ok(lanes.from_thread.recv().await);
            }
            match lanes.from_thread.try_recv() {
                Ok(out) => return Ok(Some(out)),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match inner.next_chunk().await? {
                Some(chunk) => lanes.pending.push_back(chunk),
                None => lanes.source_done = true,
            }
        }
    }
}

impl<S: ChunkSource> ChunkSource for Unwrapped<S> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        match &mut self.mode {
            Mode::Plain { head } => match head.pop_front() {
                Some(chunk) => Ok(Some(chunk)),
                None => self.inner.next_chunk().await,
            },
            Mode::Wrapped(_) => self.next_wrapped().await,
            Mode::Done => Ok(None),
        }
    }

    /// The source's length when the stream passes through; unknown when it is decompressed.
    fn content_length(&self) -> Option<u64> {
        match self.mode {
            Mode::Plain { .. } => self.inner.content_length(),
            Mode::Wrapped(_) | Mode::Done => None,
        }
    }

    fn unwrapped(&self) -> Option<&'static str> {
        self.kind.map(Kind::name)
    }

    fn source_properties(&self) -> Vec<(String, String)> {
        self.facts.clone()
    }
}

/// The decompressor thread: decompresses what arrives on `input` until its end, sending
/// pieces, then [`Out::End`] or [`Out::Failed`]. Stops when the receiver is gone.
fn decompress(
    wrapper: Wrapper,
    input: mpsc::Receiver<Bytes>,
    output: &mpsc::Sender<Out>,
    limit: u64,
) {
    let reader = ChannelReader {
        rx: input,
        current: Bytes::new(),
    };
    let mut dec = match Decompressor::new(wrapper, reader, limit) {
        Ok(dec) => dec,
        Err(e) => {
            let _ = output.blocking_send(Out::Failed(e));
            return;
        }
    };
    loop {
        let out = match dec.next_piece() {
            Ok(Some(piece)) => Out::Data(piece),
            Ok(None) => Out::End,
            Err(e) => Out::Failed(e),
        };
        let last = !matches!(out, Out::Data(_));
        if output.blocking_send(out).is_err() || last {
            return;
        }
    }
}

/// The compressed chunks arriving on a channel, as a buffered reader (no copy): end of input
/// when the sender is gone.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amt: usize) {
        self.current.advance(amt.min(self.current.len()));
    }
}
