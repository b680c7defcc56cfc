//! The convert lane's output: a [`ConvertSink`] that writes the converted image positionally
//! into the local scratch file of the import's [`Access::Positional`](crate::store::Access)
//! store writer (through [`FileSink`]: zero blocks stay holes, spill goes to an unnamed file in
//! the store's scratch directory) and hashes the output *in order* as it is produced. Output
//! and spill alike are checked against the store's reserve once per `SPACE_CHECK_INTERVAL`
//! (1 MiB): a conversion that would fill the volume fails with `storage_full`.
//!
//! # In-order hashing
//! The sink keeps a hash position `pos` (every output byte before it has been fed to the md5
//! and sha512 lanes). A write at `offset ≥ pos` first feeds the gap `[pos, offset)` as zeros
//! (a hole: Glance hashes the converted file, zeros included, so hashing costs per *virtual*
//! byte), then the data. At the end the gap up to the output's length is fed as zeros.
//!
//! A write at `offset < pos` (out-of-order output: data placed from the spill area when its
//! table arrives late, or the raw → qcow2 header written at the end) means the bytes already
//! hashed may not be the file's: in-order hashing is abandoned and the digests are computed by
//! a second read of the finished file ([`read_back`]). For raw → qcow2 that is known from the
//! start (the header is the last write), so no in-order hashing is attempted.
//!
//! # Memory
//! Hash pieces are at most [`HASH_PIECE`] bytes (one copy shared by both lanes), so the
//! queues hold at most `(HASH_CHANNEL_CAPACITY + 1 being hashed) × 2 lanes × HASH_PIECE`
//! = 9 MiB, plus one shared zero buffer of [`HASH_PIECE`] bytes. A second read holds the same.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_formats::{ConvertError, ConvertSink, Converter, SinkError};
use tokio::runtime::Handle;

use crate::convert::FileSink;
use crate::hash::{Checksummer, Digests, HashError};
use crate::store::space::SPACE_CHECK_INTERVAL;
use crate::store::{Access, ImageWriter, StoreError};

/// Largest piece of output handed to the hash lanes at once (also the zero buffer's size and
/// the second read's buffer).
pub(crate) const HASH_PIECE: usize = 512 << 10;

/// Why the convert lane stopped.
#[derive(Debug)]
pub(crate) enum LaneError {
    /// The converter refused the image, or the sink (disk) failed.
    Convert(ConvertError),
    /// A hashing thread stopped.
    Hash(HashError),
    /// The import was cancelled (or abandoned) while the lane worked.
    Cancelled,
    /// Sizing or reading back the output failed.
    Io(String),
    /// The store refused the output (free space below the reserve).
    Store(StoreError),
}

/// How the digests of a finished conversion were obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hashed {
    /// As the output was produced.
    InOrder,
    /// By a second read of the output, which took this long.
    SecondRead(Duration),
}

/// A finished conversion, not yet committed.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The store writer holding the output, to commit.
    pub(crate) writer: Box<dyn ImageWriter>,
    /// The output's length.
    pub(crate) len: u64,
    /// Its digests.
    pub(crate) digests: Digests,
    /// How they were computed.
    pub(crate) hashed: Hashed,
}

/// The hash lanes fed in output order.
#[derive(Debug)]
struct InOrder {
    sums: Checksummer,
    /// Output bytes before this offset have been hashed.
    pos: u64,
}

/// The convert lane's sink (see the module documentation).
#[derive(Debug)]
pub(crate) struct HashingSink {
    file: FileSink,
    /// A positional writer (it has a [`PartFile`](crate::store::PartFile) scratch).
    writer: Box<dyn ImageWriter>,
    /// `None` once in-order hashing is given up (or never tried).
    in_order: Option<InOrder>,
    runtime: Handle,
    zeros: Bytes,
    abort: Arc<AtomicBool>,
    /// Set when a hash lane stopped (the sink error then means [`LaneError::Hash`]).
    hash_failed: Option<HashError>,
    /// Set when the store refused a write (the sink error then means [`LaneError::Store`]).
    store_failed: Option<StoreError>,
    /// Spill bytes (the end of the spill file) that may be written before the store's
    /// reserve is checked again: spill takes room on the store's volume as output does.
    spill_checked_upto: u64,
    /// Bytes written to the store, for progress reports ([`HashingSink::counting_into`]).
    stored: Option<Arc<AtomicU64>>,
}

impl HashingSink {
    /// A sink over the scratch of positional `writer`, spilling into `spill_dir` up to `max_spill` bytes. With `in_order`,
    /// the output is hashed as produced (on two new hash lanes); else at the end by a second
    /// read. `runtime` drives the hash lanes' channels from this blocking thread; `abort`
    /// turning true stops the lane at its next write.
    ///
    /// # Errors
    /// When the scratch file's handle cannot be duplicated, or the writer has no scratch
    /// ([`StoreError::WrongAccess`]).
    pub(crate) fn new(
        mut writer: Box<dyn ImageWriter>,
        spill_dir: &Path,
        max_spill: u64,
        in_order: bool,
        runtime: Handle,
        abort: Arc<AtomicBool>,
    ) -> Result<Self, StoreError> {
        let id = writer.id().to_owned();
        let handle = writer
            .scratch()
            .ok_or(StoreError::WrongAccess {
                id,
                what: "positional writing",
                access: Access::Append,
            })?
            .positional_handle()?;
        let file = FileSink::new(handle, spill_dir, max_spill);
        Ok(HashingSink {
            file,
            writer,
            in_order: in_order.then(|| InOrder {
                sums: Checksummer::start(),
                pos: 0,
            }),
            runtime,
            zeros: Bytes::from(vec![0u8; HASH_PIECE]),
            abort,
            hash_failed: None,
            store_failed: None,
            spill_checked_upto: 0,
            stored: None,
        })
    }

    /// The sink, adding the bytes it writes to the store to `stored` (a progress counter;
    /// a rewritten range counts again).
    pub(crate) fn counting_into(mut self, stored: Arc<AtomicU64>) -> Self {
        self.stored = Some(stored);
        self
    }

    /// Whether the output is still being hashed in order.
    #[cfg(test)]
    pub(crate) fn hashing_in_order(&self) -> bool {
        self.in_order.is_some()
    }

    /// Maps a converter error raised through this sink to the lane's error.
    pub(crate) fn lane_error(&mut self, e: ConvertError) -> LaneError {
        if self.abort.load(Ordering::Relaxed) {
            return LaneError::Cancelled;
        }
        if let (Some(s), ConvertError::Sink(_)) = (self.store_failed.take(), &e) {
            return LaneError::Store(s);
        }
        match (self.hash_failed.take(), e) {
            (Some(h), ConvertError::Sink(_)) => LaneError::Hash(h),
            (_, e) => LaneError::Convert(e),
        }
    }

    /// Ends the conversion: the converter places what is left, the file gets its length,
    /// and the digests are finished (trailing zeros fed) or computed by a second read.
    ///
    /// # Errors
    /// See [`LaneError`]; the writer is aborted on every error (dropped).
    pub(crate) fn finish(mut self, conv: Converter) -> Result<Finished, LaneError> {
        let len = match conv.finish(&mut self) {
            Ok(len) => len,
            Err(e) => return Err(self.lane_error(e)),
        };
        if let Some(mut order) = self.in_order.take() {
            feed_zeros(&mut order, len, &self.zeros, &self.runtime, &self.abort)
                .map_err(LaneError::from)?;
            self.in_order = Some(order);
        }
        let HashingSink {
            file,
            writer,
            in_order,
            runtime,
            abort,
            ..
        } = self;
        let file = file
            .finish(len)
            .map_err(|e| LaneError::Io(format!("setting the converted image's length: {e}")))?;
        let (digests, hashed) = match in_order {
            Some(order) => {
                let digests = runtime
                    .block_on(order.sums.finish())
                    .map_err(LaneError::Hash)?;
                (digests, Hashed::InOrder)
            }
            None => {
                let started = Instant::now();
                let digests = read_back(&file, len, &runtime, &abort)?;
                (digests, Hashed::SecondRead(started.elapsed()))
            }
        };
        Ok(Finished {
            writer,
            len,
            digests,
            hashed,
        })
    }

    fn check_abort(&self) -> Result<(), SinkError> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(SinkError("the import was cancelled".into()));
        }
        Ok(())
    }

    /// Feeds a write of `data` at `offset` to the in-order hash lanes, or gives them up.
    fn hash_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(order) = self.in_order.as_mut() else {
            return Ok(());
        };
        if offset < order.pos {
            tracing::debug!(
                offset,
                hashed = order.pos,
                "converter wrote before the hash position: digests by a second read"
            );
            // Dropping the lanes ends their threads; their partial digests are discarded.
            self.in_order = None;
            return Ok(());
        }
        let fed =
            feed_zeros(order, offset, &self.zeros, &self.runtime, &self.abort).and_then(|()| {
                data.chunks(HASH_PIECE).try_for_each(|piece| {
                    send(order, Bytes::copy_from_slice(piece), &self.runtime).map_err(Stop::Hash)
                })
            });
        match fed {
            Ok(()) => Ok(()),
            Err(Stop::Cancelled) => Err(SinkError("the import was cancelled".into())),
            Err(Stop::Hash(e)) => {
                let message = e.to_string();
                self.hash_failed = Some(e);
                Err(SinkError(message))
            }
        }
    }
}

/// Why feeding the in-order hash lanes stopped.
#[derive(Debug)]
enum Stop {
    Cancelled,
    Hash(HashError),
}

impl From<Stop> for LaneError {
    fn from(s: Stop) -> Self {
        match s {
            Stop::Cancelled => LaneError::Cancelled,
            Stop::Hash(e) => LaneError::Hash(e),
        }
    }
}

fn send(order: &mut InOrder, piece: Bytes, runtime: &Handle) -> Result<(), HashError> {
    let n = u64::try_from(piece.len()).unwrap_or(u64::MAX);
    runtime.block_on(order.sums.update(piece))?;
    order.pos = order.pos.saturating_add(n);
    Ok(())
}

/// Feeds zeros from the hash position up to `end` (a hole), in pieces of the shared buffer.
fn feed_zeros(
    order: &mut InOrder,
    end: u64,
    zeros: &Bytes,
    runtime: &Handle,
    abort: &AtomicBool,
) -> Result<(), Stop> {
    while order.pos < end {
        if abort.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        let gap = end.saturating_sub(order.pos);
        let n = usize::try_from(gap).unwrap_or(usize::MAX).min(zeros.len());
        send(order, zeros.slice(..n), runtime).map_err(Stop::Hash)?;
    }
    Ok(())
}

/// The digests of the first `len` bytes of `file`, read front to back in [`HASH_PIECE`]
/// pieces and hashed on two new lanes. Holes read as zeros (the kernel fills them).
///
/// # Errors
/// [`LaneError::Io`] when a read fails, [`LaneError::Hash`], or [`LaneError::Cancelled`].
pub(crate) fn read_back(
    file: &File,
    len: u64,
    runtime: &Handle,
    abort: &AtomicBool,
) -> Result<Digests, LaneError> {
    let sums = Checksummer::start();
    let mut pos = 0u64;
    while pos < len {
        if abort.load(Ordering::Relaxed) {
            return Err(LaneError::Cancelled);
        }
        let n = usize::try_from(len.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(HASH_PIECE);
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, pos).map_err(|e| {
            LaneError::Io(format!(
                "reading back the converted image at offset {pos}: {e}"
            ))
        })?;
        runtime
            .block_on(sums.update(Bytes::from(buf)))
            .map_err(LaneError::Hash)?;
        pos = pos.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
    runtime.block_on(sums.finish()).map_err(LaneError::Hash)
}

impl ConvertSink for HashingSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.check_abort()?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        // `new` made sure the writer has a scratch file.
        let Some(part) = self.writer.scratch() else {
            return Err(SinkError("the store writer has no scratch file".into()));
        };
        if let Err(e) = part.check_space(len) {
            let message = e.to_string();
            self.store_failed = Some(e);
            return Err(SinkError(message));
        }
        self.file.write_at(offset, data)?;
        part.wrote(len);
        if let Some(stored) = &self.stored {
            stored.fetch_add(len, Ordering::Relaxed);
        }
        self.hash_write(offset, data)
    }

    fn spill_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.check_abort()?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let end = offset.saturating_add(len);
        if end > self.spill_checked_upto {
            // `new` made sure the writer has a scratch file.
            let Some(part) = self.writer.scratch() else {
                return Err(SinkError("the store writer has no scratch file".into()));
            };
            // Room for this write and the next interval's, as `PartFile::check_space` asks.
            if let Err(e) = part.check_room(len.saturating_add(SPACE_CHECK_INTERVAL)) {
                let message = e.to_string();
                self.store_failed = Some(e);
                return Err(SinkError(message));
            }
            self.spill_checked_upto = end.saturating_add(SPACE_CHECK_INTERVAL);
        }
        self.file.spill_write(offset, data)
    }

    fn spill_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SinkError> {
        self.file.spill_read(offset, buf)
    }
}
