//! One import in one streaming pass: source → inspector → (md5 ∥ sha512 ∥ store writer).
//!
//! ```text
//!   source ──Bytes──▶ ingest task ──┬─▶ [HASH_CHANNEL_CAPACITY] ─▶ md5 thread
//!   (socket)          (inspector,   ├─▶ [HASH_CHANNEL_CAPACITY] ─▶ sha512 thread
//!                      progress)    └─▶ [WRITE_CHANNEL_CAPACITY] ─▶ writer thread ─▶ tmp/<id>.part
//! ```
//!
//! The inspector runs inline on the receiving task: it costs a small fraction of hashing
//! (probes stop wanting bytes once they have seen their metadata), and a rejection must stop
//! the socket before the chunk is passed on. Every channel is bounded, so the slowest stage
//! (a hasher or the disk) back-pressures the socket.
//!
//! # Memory
//! Worst case for one import, with `C` the largest channel capacity and `S` the number of
//! consumer stages (3):
//! `S × (C + 1) × max_chunk + max_chunk (being received) + INSPECTOR_FIXED_BOUND +
//!  8 × Limits::max_tracked_tables`.
//! For HTTP, `max_chunk` = [`HTTP_MAX_CHUNK`](crate::http::HTTP_MAX_CHUNK) (512 KiB):
//! 3 × 3 × 512 KiB + 512 KiB = 5 MiB of chunks, plus 2 MiB + 8 MiB for the inspector at its
//! default limits. Chunks are shared `Bytes` handles, so in practice the stages hold the same
//! buffers and the chunk part is nearer `(C + 2) × max_chunk`. See [`worst_case_memory`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sluice_formats::{
    Format, Inspector, Limits, Reason, ReasonCode, Report, INSPECTOR_FIXED_BOUND,
};
use tokio::sync::{mpsc, watch};

use crate::background;
use crate::hash::{Checksummer, HASH_CHANNEL_CAPACITY};
use crate::source::{ChunkSource, SourceError};
use crate::store::{LocalStore, PartFile, StoreError};

/// Chunks queued for the store writer. Memory bound: `(capacity + 1) × max chunk`.
pub const WRITE_CHANNEL_CAPACITY: usize = 8;

/// Consumer stages fed by the ingest task: md5, sha512, store writer.
pub const CONSUMER_STAGES: usize = 3;

/// The worst-case memory (bytes) of one import whose source yields chunks of at most
/// `max_chunk` bytes, under `limits` (the formula in the module docs).
pub fn worst_case_memory(max_chunk: usize, limits: &Limits) -> usize {
    let capacity = HASH_CHANNEL_CAPACITY.max(WRITE_CHANNEL_CAPACITY);
    let chunks = CONSUMER_STAGES
        .saturating_mul(capacity.saturating_add(1))
        .saturating_add(1)
        .saturating_mul(max_chunk);
    chunks
        .saturating_add(INSPECTOR_FIXED_BOUND)
        .saturating_add(limits.max_tracked_tables.saturating_mul(8))
}

/// Live counters of one import, shared with whoever reports progress.
#[derive(Debug)]
pub struct Progress {
    received: AtomicU64,
    /// `u64::MAX`: unknown.
    total: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            received: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
        }
    }
}

impl Progress {
    /// Bytes received from the source so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The length the source announced, when it did.
    pub fn total(&self) -> Option<u64> {
        let t = self.total.load(Ordering::Relaxed);
        (t != u64::MAX).then_some(t)
    }

    fn set_total(&self, total: Option<u64>) {
        self.total
            .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn set_received(&self, n: u64) {
        self.received.store(n, Ordering::Relaxed);
    }
}

/// A committed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// Bytes stored.
    pub size: u64,
    /// MD5 of the stored bytes (Glance `checksum`).
    pub md5_hex: String,
    /// SHA-512 of the stored bytes (Glance `os_hash_value`).
    pub sha512_hex: String,
    /// The inspector's (accepting) report.
    pub report: Report,
    /// Where the image is stored.
    pub path: PathBuf,
}

/// Why an import failed. Nothing is left in the store after any of these.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The import was cancelled (shutdown or task deletion).
    #[error("the import was cancelled")]
    Cancelled,
    /// A hashing thread stopped unexpectedly (a bug, not the image's fault).
    #[error(transparent)]
    Hashing(#[from] crate::hash::HashError),
    /// The inspector refused the image; the download was stopped.
    #[error("image rejected: {}", rejection_message(.0))]
    Rejected(Box<Report>),
    /// Fetching failed (HTTP status, network, policy).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing or committing the image failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source sent more bytes than an image may hold.
    #[error("source sent more than {limit} bytes, the image size limit")]
    TooLarge {
        /// The limit (`Limits::max_virtual_size`).
        limit: u64,
    },
}

impl IngestError {
    /// A stable machine-readable code: the inspector's reason code for a rejection, else
    /// `cancelled`, `internal_error`, `source_error`, `store_error` or `size_cap`.
    pub fn reason_code(&self) -> &str {
        match self {
            IngestError::Cancelled => "cancelled",
            IngestError::Hashing(_) => "internal_error",
            IngestError::Rejected(report) => primary_reason(report)
                .map(|r| r.code.as_str())
                .unwrap_or("rejected"),
            IngestError::Source(SourceError::ContentTooLarge { .. }) => "size_cap",
            IngestError::Source(_) => "source_error",
            IngestError::Store(_) => "store_error",
            IngestError::TooLarge { .. } => "size_cap",
        }
    }
}

/// The reason that best explains a rejection: a finding about the content (backing file,
/// compression, ...) rather than the format mismatch or polyglot verdict it caused.
fn primary_reason(report: &Report) -> Option<&Reason> {
    report
        .reasons
        .iter()
        .find(|r| {
            !matches!(
                r.code,
                ReasonCode::FormatMismatch | ReasonCode::MultipleFormats
            )
        })
        .or_else(|| report.reasons.first())
}

/// Every reason's message, the primary one first.
fn rejection_message(report: &Report) -> String {
    let primary = primary_reason(report);
    let mut parts: Vec<&str> = primary.map(|r| r.message.as_str()).into_iter().collect();
    parts.extend(
        report
            .reasons
            .iter()
            .filter(|r| Some(*r) != primary)
            .map(|r| r.message.as_str()),
    );
    if parts.is_empty() {
        "unsafe image".to_owned()
    } else {
        parts.join("; ")
    }
}

/// Fetches `source` into the store as image `image_id`, inspecting it against `declared`
/// and hashing it on the way, in one pass. The image is committed only when the inspector
/// accepts it and every byte is on disk; on any failure the part file is removed before this
/// returns.
///
/// The stored size is capped at `limits.max_virtual_size` (like Glance's `image_size_cap`):
/// an announced or received size above it fails with `size_cap`.
///
/// `cancel` turning `true` stops the import with [`IngestError::Cancelled`] (a dropped
/// sender means "never cancelled").
///
/// # Errors
/// See [`IngestError`].
pub async fn ingest<S: ChunkSource>(
    mut source: S,
    declared: Format,
    limits: Limits,
    store: &LocalStore,
    image_id: &str,
    progress: &Progress,
    mut cancel: watch::Receiver<bool>,
) -> Result<Ingested, IngestError> {
    let cap = limits.max_virtual_size;
    progress.set_total(source.content_length());
    if let Some(announced) = source.content_length() {
        if announced > cap {
            return Err(SourceError::ContentTooLarge {
                announced,
                limit: cap,
            }
            .into());
        }
    }
    let part = store.begin(image_id)?;
    let mut inspector = Inspector::new(Some(declared), limits);
    let sums = Checksummer::start();
    let (write_tx, write_rx) = mpsc::channel::<Bytes>(WRITE_CHANNEL_CAPACITY);
    let writer = background::spawn("sluice-write", move || write_lane(part, write_rx))
        .map_err(|_| StoreError::WriterStopped)?;

    let pumped = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => Err(IngestError::Cancelled),
        r = pump(&mut source, &mut inspector, &sums, &write_tx, progress, cap) => r,
    };
    // Close the socket before waiting for the consumers to drain.
    drop(source);
    drop(write_tx);
    let digests = sums.finish().await;
    let written = writer.join().await.ok_or(StoreError::WriterStopped);

    // The first failure wins; dropping `part` (inside `written`) removes the file.
    if let Err(e) = pumped {
        // A writer error explains a closed write channel better than the failed send.
        if matches!(e, IngestError::Store(StoreError::WriterStopped)) {
            if let Ok(Err(store_err)) = written {
                return Err(store_err.into());
            }
        }
        return Err(e);
    }
    let part = written??;
    let digests = digests?;
    let report = inspector.finish();
    if !report.is_accepted() {
        drop(part);
        return Err(IngestError::Rejected(Box::new(report)));
    }
    let size = part.written();
    let commit_store = store.clone();
    let path = tokio::task::spawn_blocking(move || commit_store.commit(part))
        .await
        .map_err(|_| StoreError::WriterStopped)??;
    Ok(Ingested {
        size,
        md5_hex: digests.md5_hex,
        sha512_hex: digests.sha512_hex,
        report,
        path,
    })
}

/// Receives, inspects and fans out chunks until end of stream or the first failure.
async fn pump<S: ChunkSource>(
    source: &mut S,
    inspector: &mut Inspector,
    sums: &Checksummer,
    write_tx: &mpsc::Sender<Bytes>,
    progress: &Progress,
    cap: u64,
) -> Result<(), IngestError> {
    let mut received = 0u64;
    while let Some(chunk) = source.next_chunk().await? {
        let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        received = received
            .checked_add(n)
            .filter(|r| *r <= cap)
            .ok_or(IngestError::TooLarge { limit: cap })?;
        progress.set_received(received);
        if let sluice_formats::Progress::Rejected(report) = inspector.feed(&chunk) {
            return Err(IngestError::Rejected(Box::new(report.clone())));
        }
        sums.update(chunk.clone()).await?;
        write_tx
            .send(chunk)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
    }
    Ok(())
}

/// The store writer stage: appends every chunk, returns the part file at end of stream.
/// On error the part file is dropped (removed) and the channel closed, which fails the
/// sender's next `send`.
fn write_lane(mut part: PartFile, mut rx: mpsc::Receiver<Bytes>) -> Result<PartFile, StoreError> {
    while let Some(chunk) = rx.blocking_recv() {
        part.write_all(&chunk)?;
    }
    Ok(part)
}

/// Resolves when `cancel` turns `true`; never when its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}
