//! One import in one streaming pass: source → inspector → (md5 ∥ sha512 ∥ store writer).
//!
//! ```text
//!   source ──Bytes──▶ ingest task ──┬─▶ [HASH_CHANNEL_CAPACITY] ─▶ md5 thread
//!   (socket)          (inspector,   ├─▶ [HASH_CHANNEL_CAPACITY] ─▶ sha512 thread
//!                      progress)    └─▶ [WRITE_CHANNEL_CAPACITY] ─▶ writer thread ─▶ Store (Append)
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
//!  8 × Limits::max_tracked_tables + DIRECT_WRITE_SIZE`.
//! For HTTP, `max_chunk` = [`HTTP_MAX_CHUNK`](crate::http::HTTP_MAX_CHUNK) (512 KiB):
//! 3 × 9 × 512 KiB + 512 KiB = 14 MiB of chunks, plus 2 MiB + 8 MiB for the inspector at its
//! default limits and the writer's 4 MiB direct-I/O buffer
//! ([`DIRECT_WRITE_SIZE`](crate::store::DIRECT_WRITE_SIZE)). Chunks are shared `Bytes` handles, so in practice the stages hold the same
//! buffers and the chunk part is nearer `(C + 2) × max_chunk`. See [`worst_case_memory`].
//!
//! # Conversion
//! With a target ([`IngestRequest::target`]), the writer lane becomes a *convert lane*: the chunks go to a
//! [`Converter`] on a background thread, whose output is written positionally into the store
//! writer's local scratch file and hashed there, in output order (the hashers hash the converted bytes, as Glance's
//! checksum is of the stored file):
//!
//! ```text
//!   source ──Bytes──▶ ingest task ──▶ [WRITE_CHANNEL_CAPACITY] ─▶ convert thread ─▶ Store (Positional:
//!                     (inspector)                                 (Converter,      local scratch;
//!                                                                  HashingSink) ─┐  spill: unnamed
//!                                                                                │  file in scratch)
//!                                                 md5 thread ◀─ [HASH_CHANNEL_CAPACITY] ─┤
//!                                              sha512 thread ◀─ [HASH_CHANNEL_CAPACITY] ─┘
//! ```
//!
//! Holes are hashed as zeros; output written before the hash position (out of order) makes
//! the digests come from a second read of the finished file instead (see `hashing_sink`).
//! Memory: the chunk queue `(WRITE_CHANNEL_CAPACITY + 1) × max_chunk + max_chunk`, the hash
//! queues `2 × (HASH_CHANNEL_CAPACITY + 1) × HASH_PIECE` (9 MiB), the inspector's bound, and
//! the converter's own (each states its formula; spill is on disk, bounded by
//! `ConvertLimits::max_spill_bytes`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sluice_formats::{
    ConvertError, ConvertLimits, Converter, Format, Inspector, Limits, Reason, ReasonCode, Report,
    SinkError, Target, INSPECTOR_FIXED_BOUND,
};
use tokio::sync::watch;

use crate::background;
use crate::hash::{Checksummer, HASH_CHANNEL_CAPACITY};
use crate::lane::{self, LaneReceiver, LaneSender, LANE_WAKE_BATCH};
pub use crate::progress::Progress;
use crate::source::{ChunkSource, SourceError};
use crate::store::{Access, ImageWriter, Store, StoreError};

mod admission;
mod fence;
mod hashing_sink;

pub use admission::{Admission, Unlimited};
pub use fence::{Fence, Unfenced};

use admission::Charge;
use hashing_sink::{Finished, Hashed, HashingSink, LaneError};

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
        .saturating_add(crate::store::DIRECT_WRITE_SIZE)
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
    /// The format of the stored bytes: the conversion's target when the image was
    /// converted, else the inspector's verdict on what arrived.
    pub format: Format,
    /// Whether the image was converted (`size` and the digests are then the output's).
    pub converted: bool,
    /// The compression wrapper removed in the stream (`gzip`, `xz`, `zstd`, `bzip2`; see
    /// [`crate::unwrap`]): `size`, the digests and the report are then the decompressed
    /// image's.
    pub unwrapped: Option<&'static str>,
    /// Image properties found while unwrapping (an OVA descriptor's facts).
    pub properties: Vec<(String, String)>,
}

/// The conversion [`ingest_as`] performs for an image declared `declared` when asked for
/// `target`: none when no target is asked for, when the image already is the target (raw,
/// GPT and MBR disks are raw), or for ISO (never converted).
pub fn conversion_for(declared: Format, target: Option<Target>) -> Option<Target> {
    let target = target?;
    let already = match target {
        Target::Raw => matches!(declared, Format::Raw | Format::Gpt | Format::Mbr),
        Target::Qcow2 => declared == Format::Qcow2,
    };
    (!already && declared != Format::Iso).then_some(target)
}

/// Why an import failed. Nothing is left in the store after any of these.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The import's cancel signal turned `true`. Why (a shutdown, a deadline, a deleted
    /// image) is the caller's to say: the server words it `interrupted` or `cancelled`.
    #[error("the import was cancelled")]
    Cancelled,
    /// A hashing thread stopped unexpectedly (a bug, not the image's fault).
    #[error(transparent)]
    Hashing(#[from] crate::hash::HashError),
    /// Converting failed: the image is broken in a way only conversion finds (`corrupt`,
    /// `truncated`), exceeds a conversion limit (`limit_exceeded`), or the pair of formats is
    /// not converted (`unsupported_format`).
    #[error("{message}")]
    Convert {
        /// Stable reason code.
        code: ReasonCode,
        /// The converter's message.
        message: String,
    },
    /// The [`Fence`] refused the commit (the caller's lease is lost or cannot be proved):
    /// the import's own upload was aborted, the image's key left alone; the message is the
    /// caller's.
    #[error("{0}")]
    Fenced(String),
    /// Writing, sizing or reading back the converted image failed (I/O).
    #[error("writing the converted image: {0}")]
    Output(String),
    /// The caller's [`Admission`] refused what the import would store (a quota); the
    /// message is the caller's.
    #[error("{0}")]
    QuotaExceeded(String),
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
    /// `cancelled`, `interrupted` (fenced), `internal_error`, `quota_exceeded`,
    /// `source_error`, `source_too_slow`, `storage_full`, `store_error` or `size_cap`.
    pub fn reason_code(&self) -> &str {
        match self {
            IngestError::Cancelled => "cancelled",
            IngestError::Hashing(_) => "internal_error",
            IngestError::Convert { code, .. } => code.as_str(),
            IngestError::Fenced(_) => "interrupted",
            IngestError::Output(_) => "store_error",
            IngestError::QuotaExceeded(_) => "quota_exceeded",
            IngestError::Rejected(report) => primary_reason(report)
                .map(|r| r.code.as_str())
                .unwrap_or("rejected"),
            IngestError::Source(SourceError::ContentTooLarge { .. }) => "size_cap",
            IngestError::Source(SourceError::Unwrap(e)) => e.reason_code(),
            // A stalled source is the slowest one: the same code whichever guard trips first
            // (the HTTP idle timeout or the minimum rate, both 60 s by default).
            IngestError::Source(SourceError::TooSlow { .. } | SourceError::IdleTimeout { .. }) => {
                "source_too_slow"
            }
            IngestError::Source(_) => "source_error",
            IngestError::Store(StoreError::StorageFull(_)) => "storage_full",
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

/// Every reason's message of a rejecting report, the primary one first.
pub fn rejection_message(report: &Report) -> String {
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

/// What one import asks of [`ingest_as`], decided by the caller before a byte moves: the
/// image, how its bytes are checked, what they become and who may stop them. The source, the
/// store and the live signals (progress, cancel) are passed beside it: they are the run, not
/// the request.
#[derive(Clone)]
pub struct IngestRequest<'a> {
    /// The id the data is stored under.
    pub image_id: &'a str,
    /// The format the inspector holds the bytes to.
    pub declared: Format,
    /// The conversion asked for; [`conversion_for`] decides whether it applies.
    pub target: Option<Target>,
    /// The inspector's limits; `max_virtual_size` is also the cap on the stored size.
    pub limits: Limits,
    /// A conversion's spill area bound ([`ConvertLimits::max_spill_bytes`]; a footer VMDK
    /// spools its whole input there).
    pub max_spill_bytes: u64,
    /// Told what the import will store as soon as that is known (see [`Admission`]).
    pub admission: &'a dyn Admission,
    /// Asked right before the store commit (see [`Fence`]).
    pub fence: &'a dyn Fence,
}

impl<'a> IngestRequest<'a> {
    /// Image `image_id` inspected as `declared` under `limits`, stored as received, with no
    /// admission control.
    pub fn new(image_id: &'a str, declared: Format, limits: Limits) -> Self {
        IngestRequest {
            image_id,
            declared,
            target: None,
            limits,
            max_spill_bytes: ConvertLimits::default().max_spill_bytes,
            admission: &Unlimited,
            fence: &Unfenced,
        }
    }

    /// The same request, with a conversion's spill area bounded at `max_spill_bytes`.
    #[must_use]
    pub fn spilling(self, max_spill_bytes: u64) -> Self {
        IngestRequest {
            max_spill_bytes,
            ..self
        }
    }

    /// The same request, converting to `target` (none: stored as received).
    #[must_use]
    pub fn converting(self, target: Option<Target>) -> Self {
        IngestRequest { target, ..self }
    }

    /// The same request, charged to `admission` as it goes.
    #[must_use]
    pub fn admitted_by(self, admission: &'a dyn Admission) -> Self {
        IngestRequest { admission, ..self }
    }

    /// The same request, committed only once `fence` confirms (see [`Fence`]).
    #[must_use]
    pub fn fenced_by(self, fence: &'a dyn Fence) -> Self {
        IngestRequest { fence, ..self }
    }
}

impl std::fmt::Debug for IngestRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestRequest")
            .field("image_id", &self.image_id)
            .field("declared", &self.declared)
            .field("target", &self.target)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Fetches `source` into the store as image `image_id`, inspecting it against `declared`
/// and hashing it on the way, in one pass, storing it as received, with no admission
/// control: [`ingest_as`] with [`IngestRequest::new`].
///
/// # Errors
/// See [`IngestError`].
pub async fn ingest<S: ChunkSource>(
    source: S,
    declared: Format,
    limits: Limits,
    store: &dyn Store,
    image_id: &str,
    progress: &Progress,
    cancel: watch::Receiver<bool>,
) -> Result<Ingested, IngestError> {
    let request = IngestRequest::new(image_id, declared, limits);
    ingest_as(source, request, store, progress, cancel).await
}

/// Fetches `source` into `store` as image `request.image_id`, inspecting it against
/// `request.declared` and hashing it on the way, in one pass; with a `request.target`,
/// converting it on the way too (unless [`conversion_for`] says no conversion applies: the
/// image is then stored as received). A converted image's size and digests are the output's.
/// The image is committed only when the inspector accepts it and every byte is stored; on any
/// failure the store writer is aborted before this returns.
///
/// The stored size is capped at `request.limits.max_virtual_size` (like Glance's
/// `image_size_cap`): an announced or received size above it fails with `size_cap`.
///
/// `cancel` turning `true` stops the import with [`IngestError::Cancelled`] (a dropped
/// sender means "never cancelled").
///
/// `request.admission` is told what the import will store as soon as that is known (the
/// announced length before anything is fetched, then the bytes received, and for a
/// conversion to raw the virtual size from the image's header) and may stop it with
/// [`IngestError::QuotaExceeded`] (see [`Admission`]).
///
/// # Errors
/// See [`IngestError`].
pub async fn ingest_as<S: ChunkSource>(
    mut source: S,
    request: IngestRequest<'_>,
    store: &dyn Store,
    progress: &Progress,
    mut cancel: watch::Receiver<bool>,
) -> Result<Ingested, IngestError> {
    let cap = request.limits.max_virtual_size;
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
    let conversion = conversion_for(request.declared, request.target);
    let mut charge = Charge::new(request.admission, conversion == Some(Target::Raw));
    // Refused before anything is fetched or created when the announced length is too much.
    charge.at_least(source.content_length().unwrap_or(0))?;
    let unwrapped = source.unwrapped();
    if let Some(target) = conversion {
        let run = Run {
            store,
            progress,
            cancel,
        };
        return convert_into(source, &request, target, run, &mut charge)
            .await
            .map(|ingested| Ingested {
                unwrapped,
                ..ingested
            });
    }
    let IngestRequest {
        image_id,
        declared,
        limits,
        fence,
        ..
    } = request;
    let part = store.begin(image_id, Access::Append)?;
    let mut inspector = Inspector::new(Some(declared), limits);
    let sums = Checksummer::start();
    let (write_tx, write_rx) = lane::channel(WRITE_CHANNEL_CAPACITY, LANE_WAKE_BATCH);
    let stored = progress.stored_counter();
    let writer = background::spawn("sluice-write", move || write_lane(part, write_rx, &stored))
        .map_err(|_| StoreError::WriterStopped)?;

    let pumped = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => Err(IngestError::Cancelled),
        r = pump(&mut source, &mut inspector, Some(&sums), &write_tx, progress, cap, &mut charge) => r,
    };
    let properties = source.source_properties();
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
    fenced_commit(part, fence).await?;
    let format = report.format;
    Ok(Ingested {
        size,
        md5_hex: digests.md5_hex,
        sha512_hex: digests.sha512_hex,
        report,
        format,
        converted: false,
        unwrapped,
        properties,
    })
}

/// Where an import runs and how it is watched: beside its [`IngestRequest`].
struct Run<'a> {
    store: &'a dyn Store,
    progress: &'a Progress,
    cancel: watch::Receiver<bool>,
}

/// Commits `writer` once `fence` confirms: everything but the commit itself is sent first
/// ([`ImageWriter::flush`]), so what follows the confirmation is one short request. A
/// refusal drops the writer, which aborts its own upload and leaves the key alone.
async fn fenced_commit(
    mut writer: Box<dyn ImageWriter>,
    fence: &dyn Fence,
) -> Result<(), IngestError> {
    let flushed = tokio::task::spawn_blocking(move || writer.flush().map(|()| writer))
        .await
        .map_err(|_| StoreError::WriterStopped)??;
    fence.confirm().await.map_err(IngestError::Fenced)?;
    tokio::task::spawn_blocking(move || flushed.commit())
        .await
        .map_err(|_| StoreError::WriterStopped)??;
    Ok(())
}

/// [`ingest_as`] with a conversion to `target`: the convert lane replaces the writer lane and
/// feeds the hashers (module documentation, "Conversion").
async fn convert_into<S: ChunkSource>(
    mut source: S,
    request: &IngestRequest<'_>,
    target: Target,
    run: Run<'_>,
    charge: &mut Charge<'_>,
) -> Result<Ingested, IngestError> {
    let (image_id, declared, limits) = (request.image_id, request.declared, request.limits.clone());
    let Run {
        store,
        progress,
        mut cancel,
    } = run;
    let cap = limits.max_virtual_size;
    let convert_limits = ConvertLimits {
        max_virtual_size: cap,
        vmdk_max_footer_window: limits.vmdk_max_footer_window,
        max_spill_bytes: request.max_spill_bytes,
        ..ConvertLimits::default()
    };
    // An unsupported pair fails before anything is fetched or created.
    let conv = Converter::new(declared, target, &convert_limits).map_err(convert_error)?;
    let abort = Arc::new(AtomicBool::new(false));
    // raw → qcow2 writes its header last: hashing in order would always be given up.
    let in_order = target == Target::Raw;
    let writer = store.begin(image_id, Access::Positional)?;
    let sink = HashingSink::new(
        writer,
        store.scratch_dir(),
        convert_limits.max_spill_bytes,
        in_order,
        tokio::runtime::Handle::current(),
        Arc::clone(&abort),
    )?
    .counting_into(progress.stored_counter());
    let mut inspector = Inspector::new(Some(declared), limits);
    let (chunk_tx, chunk_rx) = lane::channel(WRITE_CHANNEL_CAPACITY, LANE_WAKE_BATCH);
    let lane = background::spawn("sluice-convert", move || convert_lane(conv, sink, chunk_rx))
        .map_err(|_| StoreError::WriterStopped)?;

    let pumped = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => Err(IngestError::Cancelled),
        r = pump(&mut source, &mut inspector, None, &chunk_tx, progress, cap, charge) => r,
    };
    let properties = source.source_properties();
    drop(source);
    drop(chunk_tx);
    if pumped.is_err() {
        abort.store(true, Ordering::Relaxed);
    }
    let fed = lane.join().await.ok_or(StoreError::WriterStopped);
    // The first failure wins; dropping the lane's state aborts the writer and removes the spill file.
    if let Err(e) = pumped {
        if matches!(e, IngestError::Store(StoreError::WriterStopped)) {
            if let Ok(Err(lane_err)) = fed {
                return Err(lane_err.into());
            }
        }
        return Err(e);
    }
    let (conv, sink) = fed??;
    let report = inspector.finish();
    if !report.is_accepted() {
        drop(sink);
        return Err(IngestError::Rejected(Box::new(report)));
    }
    let finishing = background::spawn("sluice-convert", move || sink.finish(conv))
        .map_err(|_| StoreError::WriterStopped)?;
    let mut finishing = std::pin::pin!(finishing.join());
    let finished = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => {
            // The lane stops at its next write or hash piece and drops (aborts) the writer.
            abort.store(true, Ordering::Relaxed);
            let _ = finishing.await;
            return Err(IngestError::Cancelled);
        }
        r = &mut finishing => r.ok_or(StoreError::WriterStopped)?,
    };
    let Finished {
        writer,
        len,
        digests,
        hashed,
    } = finished?;
    if let Hashed::SecondRead(took) = hashed {
        tracing::info!(
            image_id,
            bytes = len,
            secs = took.as_secs_f64(),
            "converted output hashed by a second read (it was not produced in order)"
        );
    }
    fenced_commit(writer, request.fence).await?;
    Ok(Ingested {
        size: len,
        md5_hex: digests.md5_hex,
        sha512_hex: digests.sha512_hex,
        report,
        format: match target {
            Target::Raw => Format::Raw,
            Target::Qcow2 => Format::Qcow2,
        },
        converted: true,
        unwrapped: None,
        properties,
    })
}

/// The convert lane: feeds every chunk to the converter until end of stream, then hands the
/// converter and its sink back (finishing waits for the inspector's verdict). On error the
/// state is dropped (writer aborted, spill file removed) and the channel closed, which fails the
/// sender's next `send`.
fn convert_lane(
    mut conv: Converter,
    mut sink: HashingSink,
    mut rx: LaneReceiver,
) -> Result<(Converter, HashingSink), LaneError> {
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = conv.feed(&chunk, &mut sink) {
            return Err(sink.lane_error(e));
        }
    }
    Ok((conv, sink))
}

fn convert_error(e: ConvertError) -> IngestError {
    match e {
        ConvertError::Image { code, message } => IngestError::Convert { code, message },
        ConvertError::Sink(SinkError(message)) => IngestError::Output(message),
    }
}

impl From<LaneError> for IngestError {
    fn from(e: LaneError) -> Self {
        match e {
            LaneError::Convert(e) => convert_error(e),
            LaneError::Hash(e) => IngestError::Hashing(e),
            LaneError::Cancelled => IngestError::Cancelled,
            LaneError::Io(message) => IngestError::Output(message),
            LaneError::Store(e) => IngestError::Store(e),
        }
    }
}

/// Receives, inspects and fans out chunks (to the hashers, when given, and the writer or
/// convert lane) until end of stream or the first failure; raises the `charge` as it goes
/// (before a chunk is passed on, so a refused import stores nothing more).
async fn pump<S: ChunkSource>(
    source: &mut S,
    inspector: &mut Inspector,
    sums: Option<&Checksummer>,
    write_tx: &LaneSender,
    progress: &Progress,
    cap: u64,
    charge: &mut Charge<'_>,
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
        charge.after_chunk(received, inspector.virtual_size())?;
        if let Some(sums) = sums {
            sums.update(chunk.clone()).await?;
        }
        write_tx
            .send(chunk)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
    }
    Ok(())
}

/// The store writer stage: appends every chunk (the local store with direct I/O where the
/// file system allows it, see [`PartFile::use_direct_io`](crate::store::PartFile::use_direct_io)),
/// returns the writer at end of stream. On error the writer is dropped (its data removed) and
/// the channel closed, which fails the sender's next `send`.
fn write_lane(
    mut writer: Box<dyn ImageWriter>,
    mut rx: LaneReceiver,
    stored: &AtomicU64,
) -> Result<Box<dyn ImageWriter>, StoreError> {
    while let Some(chunk) = rx.blocking_recv() {
        writer.append(&chunk)?;
        let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        stored.fetch_add(n, Ordering::Relaxed);
    }
    Ok(writer)
}

/// Resolves when `cancel` turns `true`; never when its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]
mod tests;
