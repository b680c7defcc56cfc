//! `PUT /v2/images/{id}/file`: direct upload. The request body streams through the same
//! one-pass ingest as a task import (`sluice_pipeline::ingest`): inspector with the image's
//! `disk_format` as the declared format, size cap, project quota, md5 ∥ sha512, store; with
//! the same memory bound and backpressure (the body is read only as fast as the slowest stage
//! takes it). Stored as received, as Glance.
//!
//! Order of checks, as Glance's `ImageDataController.upload`: `Content-Type` must be
//! `application/octet-stream` (415), the image must exist and be visible (404), the caller
//! may `upload_image` (403), the image must be `queued` (409 "Image status transition from
//! … to saving is not allowed"), `disk_format` and `container_format` must be set (400
//! "Properties … must be set prior to saving data."), a `Content-Length` over
//! `max_virtual_size` is refused before a byte is read (413, reason `size_cap`), and the
//! project's `image_count_uploading` and `image_size_total` must allow it (413). Then one
//! compare-and-swap moves the image `queued` → `saving`: that is the lock, so two uploads of
//! one image never both run (the second gets 409).
//!
//! Outcomes: 204 with the image `active` (`size`, `checksum`, `os_hash_*`, `virtual_size`).
//! Any failure removes what was written and returns the image to `queued` *before* the
//! answer: 415 with the inspector's reason code and message for a refused image (Glance's
//! `InvalidImageData`), 413 for the size cap or a quota, 400 for a body that ends early or a
//! client that goes away, 408 for a client below the minimum rate, 507 for a full volume,
//! 410 when the image was deleted meanwhile. Stopped by Sluice (Glance has no answer for
//! these): 408 with reason `import_timeout` past `import_timeout_secs`, 503 with
//! `Retry-After` and reason `interrupted` when the service shuts down.
//!
//! **Refused mid-body.** The answer goes out at once, and the rest of the body is read and
//! dropped (never inspected, hashed or stored) up to `upload_discard_bytes` and
//! `upload_discard_secs`: python-glanceclient and openstacksdk send the whole body before
//! reading the answer, and closing under them makes them report a broken pipe instead of the
//! answer. Past the bounds the connection is closed.
//!
//! **Writer lease.** The compare-and-swap to `saving` (`uploading`) also writes this
//! upload's writer lease on the image (node id, upload id, until: `meta::writer`), renewed
//! every third of `lease_secs` while the body arrives and dropped when it ends (`active`,
//! back to `queued`, or a sealed stage). On a metadata store shared by several nodes, an
//! image whose lease ran out (its node died) is returned to `queued` by any node's sweep
//! (`takeover::sweep_writers_once`); if a renewal finds the lease lost that way, the upload
//! stops, writes nothing and answers 409. Right before its store commit the upload renews the
//! lease once more (`takeover::LeaseFence`): a renewal that fails or comes too late refuses
//! the commit (409; its own multipart upload aborted, the key left to whoever holds the
//! image now). Every write of the outcome checks that this upload still holds the image.
//!
//! The work runs in its own task, so a client that disconnects (hyper then drops the request
//! handler) still has its image returned to `queued` and its partial data removed.
//!
//! `PUT /v2/images/{id}/stage` ([`stage`](mod@super::stage)) is the same request with another
//! [`Destination`]: the image goes `queued` → `uploading`, the body is converted as the
//! server's `conversion` says and lands in the staging area, sealed there for the import.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Body;
use sluice_pipeline::body::{BodySource, Discarded};
use sluice_pipeline::ingest::{ingest_as, Fence};
use sluice_pipeline::rate::RateGuard;
use sluice_pipeline::store::StoreError;
use sluice_pipeline::{IngestError, Ingested, SourceError};
use tokio::sync::oneshot;

use crate::api::auth::RequestContext;
use crate::api::body::{empty_response, ApiBody};
use crate::api::error::ApiError;
use crate::api::policy::Action;
use crate::api::{now, Api};
use crate::config::Conversion;
use crate::imports::{self, ImportRequest, ImportSource};
use crate::meta::{writer, Decision, ImageRecord, ImageStatus, Transition, WriterLease};
use crate::quota;
use crate::quota::ImportQuota;
use crate::staging::Staged;
use crate::state::AppState;
use crate::takeover;

/// The one media type an upload may have (Glance's deserializer).
const OCTET_STREAM: &str = "application/octet-stream";

/// Where an admitted body goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Destination {
    /// `PUT …/file`: the image's data, stored as received; `queued` → `saving` → `active`.
    File,
    /// `PUT …/stage`: the staging area, converted as the server's `conversion` says;
    /// `queued` → `uploading`, which it stays until imported.
    Stage,
}

impl Destination {
    /// The status of the image while its body streams (the lock).
    fn status(self) -> ImageStatus {
        match self {
            Destination::File => ImageStatus::Saving,
            Destination::Stage => ImageStatus::Uploading,
        }
    }

    /// The policy the caller must pass (Glance's `stage` checks `modify_image`).
    fn action(self) -> Action {
        match self {
            Destination::File => Action::UploadImage,
            Destination::Stage => Action::ModifyImage,
        }
    }
}

/// `PUT /v2/images/{id}/file`.
///
/// # Errors
/// See the module documentation.
pub async fn upload<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    receive(api, ctx, id, request, Destination::File).await
}

/// Streams the request body of an upload or a stage to `dest` (module documentation).
///
/// # Errors
/// See the module documentation.
pub(super) async fn receive<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: Request<B>,
    dest: Destination,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let config = &api.state.config;
    let mut source = BodySource::new(
        body,
        announced,
        Duration::from_secs(config.request_timeout_secs.max(1)),
    );
    let upload = match admit(api, ctx, id, &parts.headers, announced, dest).await {
        Ok(upload) => upload,
        Err(e) => {
            // A client that waits for `100 Continue` has sent nothing and is told at once;
            // others are sending the body and must be read to see the answer.
            if !expects_continue(&parts.headers) {
                let (bytes, secs) = (config.upload_discard_bytes, config.upload_discard_secs);
                tokio::spawn(async move {
                    source.discard(bytes, Duration::from_secs(secs)).await;
                });
            }
            return Err(e);
        }
    };
    let (answer_tx, answer_rx) = oneshot::channel();
    // Detached: a client that goes away drops this handler, not the upload's cleanup.
    tokio::spawn(upload.run(source, answer_tx));
    answer_rx
        .await
        .map_err(|_| ApiError::Internal("the upload task stopped without an answer".into()))?
}

/// Whether the client asked for `100 Continue` before sending its body.
fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Every check before a byte is read (module documentation), then the lock.
async fn admit(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    headers: &http::HeaderMap,
    announced: Option<u64>,
    dest: Destination,
) -> Result<Upload, ApiError> {
    let config = &api.state.config;
    // Glance's stage call exists only while glance-direct is enabled (the body is dropped
    // as any refused body is).
    if dest == Destination::Stage
        && !config
            .enabled_import_methods
            .contains(&crate::config::ImportMethod::GlanceDirect)
    {
        return Err(ApiError::NotFound);
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(OCTET_STREAM) {
        return Err(ApiError::UploadMediaType(content_type.to_owned()));
    }
    let image = super::load(api, ctx, id, dest.action()).await?;
    check_uploadable(&image, dest)?;
    // A file is stored as received (as Glance); a stage is converted as the server's
    // `conversion` says (as Glance's `image_conversion` plugin, which runs on staged data).
    let conversion = match dest {
        Destination::File => Conversion::None,
        Destination::Stage => config.conversion,
    };
    let request = ImportRequest::for_image(&image, ImportSource::Body, conversion)
        .map_err(ApiError::BadRequest)?;
    if let Some(len) = announced.filter(|len| *len > config.max_virtual_size) {
        return Err(ApiError::ImageTooLarge(format!(
            "the body announces {len} bytes, more than the limit of {} bytes",
            config.max_virtual_size
        )));
    }
    let (quota, slot) = match dest {
        Destination::File => {
            ImportQuota::start_upload(&api.state, &image.id, &image.owner, announced).await?
        }
        Destination::Stage => {
            ImportQuota::start_stage(&api.state, &image.id, &image.owner, announced).await?
        }
    };
    // The lock: only one request moves the image from `queued` to `saving` (`uploading`),
    // holding the writer lease (renewed while the body arrives: `Upload::run`).
    let node = config.node_id.as_deref().unwrap_or_default();
    let writer = takeover::writer_lease(node, now(), config.lease_secs);
    let locked = super::update(
        api,
        ctx,
        id,
        dest.action(),
        &[ImageStatus::Queued],
        |image| {
            check_uploadable(image, dest)?;
            image.status = dest.status();
            image.writer = Some(writer.clone());
            image.updated_at = now();
            Ok(Decision::Write)
        },
    )
    .await?;
    if let Transition::Refused(image) = locked {
        return Err(not_queued(&image, dest));
    }
    Ok(Upload {
        state: api.state.clone(),
        image_id: image.id.clone(),
        request,
        dest,
        writer,
        quota,
        slot,
    })
}

/// The checks Glance's `Image.status` setter makes when an image goes to `saving`. A stage
/// needs the formats too in Sluice (Glance checks them only at import): the body is
/// inspected and converted as it arrives.
fn check_uploadable(image: &ImageRecord, dest: Destination) -> Result<(), ApiError> {
    if image.status != ImageStatus::Queued {
        return Err(not_queued(image, dest));
    }
    let missing: Vec<&str> = [
        ("disk_format", image.disk_format.is_none()),
        ("container_format", image.container_format.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, unset)| unset.then_some(name))
    .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(ApiError::BadRequest(format!(
            "Property {one} must be set prior to saving data."
        ))),
        many => Err(ApiError::BadRequest(format!(
            "Properties {} must be set prior to saving data.",
            many.join(", ")
        ))),
    }
}

/// Glance's 409 for an upload (a stage) to an image that is not `queued`.
fn not_queued(image: &ImageRecord, dest: Destination) -> ApiError {
    ApiError::Conflict(format!(
        "Image status transition from {} to {} is not allowed",
        image.status,
        dest.status()
    ))
}

/// One admitted upload, run detached from its request.
struct Upload {
    state: AppState,
    image_id: String,
    /// What the body is checked as and becomes.
    request: ImportRequest,
    dest: Destination,
    /// This upload's hold on the image ([`takeover::hold_fence`]): every write of the
    /// outcome checks it still holds the image, so an upload that lost it writes nothing.
    writer: WriterLease,
    quota: ImportQuota,
    slot: crate::executor::UploadSlot,
}

impl Upload {
    /// Ingests the body, records the outcome, answers through `answer`, then (after a
    /// refusal the client is still sending into) drops the rest of the body within bounds.
    async fn run<B>(
        mut self,
        mut source: BodySource<B>,
        answer: oneshot::Sender<Result<Response<ApiBody>, ApiError>>,
    ) where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let config = Arc::clone(&self.state.config);
        let timeout = Duration::from_secs(config.import_timeout_secs);
        let stage = matches!(self.dest, Destination::Stage);
        let watched = quota::watch(&self.state, self.quota.project(), stage);
        let (cancel, writer_lost) = takeover::hold_fence(
            self.fence().watching(watched),
            self.state.executor.shutdown_signal(),
        );
        let (cancel, timed_out) = imports::with_deadline(cancel, timeout);
        let store = match self.dest {
            Destination::File => &*self.state.store,
            Destination::Stage => self.state.staging.store(),
        };
        // Committed only under a writer lease just renewed (`takeover::LeaseFence`).
        let fence = self.fence();
        let ingest = self
            .request
            .ingest_request(&self.image_id, &config, &self.quota)
            .fenced_by(&fence);
        let rate = imports::min_rate(&config);
        let body = RateGuard::new(&mut source, rate);
        let opened = self
            .request
            .unwrap
            .open(
                body,
                config.limits.unwrap_limits(ingest.limits.max_virtual_size),
                ingest.declared,
            )
            .await;
        let ingested = match opened {
            Ok(body) => ingest_as(body, ingest, store, self.slot.progress(), cancel).await,
            // Reading the head of the body failed: the same failure as inside the ingest.
            Err(e) => Err(IngestError::Source(e)),
        };
        let outcome = match ingested {
            Ok(ingested) if self.dest == Destination::Stage => self.seal(ingested).await,
            Ok(ingested) => self.activate(ingested).await,
            // Deleted, or taken back by another node's sweep: the image is no longer this
            // upload's, so nothing is written (the ingest removed what it had stored).
            Err(e) if writer_lost.load(Ordering::SeqCst) => {
                tracing::warn!(image_id = %self.image_id, error = %e, "upload stopped: its writer lease was lost");
                match self.state.meta.get_image(&self.image_id).await {
                    Ok(None) => Err(UploadFailure::Gone),
                    _ => Err(UploadFailure::WriterLost),
                }
            }
            Err(e) => {
                tracing::info!(
                    image_id = %self.image_id,
                    reason = e.reason_code(),
                    received = source.received(),
                    "upload refused: {e}"
                );
                self.requeue().await;
                match e {
                    IngestError::Cancelled if timed_out.load(Ordering::SeqCst) => {
                        Err(UploadFailure::Deadline(timeout.as_secs()))
                    }
                    e => Err(UploadFailure::Ingest(e)),
                }
            }
        };
        let still_sending = matches!(&outcome, Err(e) if client_still_sending(e));
        let response = outcome.map(|()| empty_response(StatusCode::NO_CONTENT));
        let _ = answer.send(response.map_err(|e| upload_error(&self.image_id, e)));
        if still_sending {
            let dropped = source
                .discard(
                    config.upload_discard_bytes,
                    Duration::from_secs(config.upload_discard_secs),
                )
                .await;
            tracing::debug!(image_id = %self.image_id, ?dropped, "refused upload's body dropped");
            if !matches!(dropped, Discarded::Ended { .. }) {
                tracing::info!(
                    image_id = %self.image_id,
                    ?dropped,
                    "refused upload's body not read to its end: the connection closes"
                );
            }
        }
    }

    /// Records the stored data: `saving` → `active`. An image deleted meanwhile loses the
    /// data just stored (410).
    async fn activate(&mut self, ingested: Ingested) -> Result<(), UploadFailure> {
        let data = &ingested;
        let written = self
            .state
            .meta
            .transition_image(&self.image_id, &[ImageStatus::Saving], &mut |image| {
                if !writer::holds(image, &self.writer) {
                    return Decision::Keep;
                }
                image.size = Some(data.size);
                image.virtual_size = data.report.virtual_size;
                image.checksum = Some(data.md5_hex.clone());
                image.os_hash_algo = Some("sha512".to_owned());
                image.os_hash_value = Some(data.sha512_hex.clone());
                // (Leaving `saving` drops the writer lease.)
                image.status = ImageStatus::Active;
                image.updated_at = now();
                crate::unwrapping::apply(image, data);
                Decision::Write
            })
            .await;
        match written {
            Ok(Transition::Done(_)) => {
                self.slot.stored(ingested.size);
                crate::observe::global()
                    .upload_stored(crate::observe::metrics::UploadKind::File, ingested.size);
                tracing::info!(image_id = %self.image_id, size = ingested.size, "upload stored");
                Ok(())
            }
            Ok(lost) => Err(self.not_held(&lost)),
            Err(e) => {
                // The object is this upload's only while its writer lease still holds: past
                // it, another node may be writing the key.
                if self.fence().confirm().await.is_ok() {
                    self.remove_data();
                }
                self.requeue().await;
                Err(UploadFailure::Meta(e.into()))
            }
        }
    }

    /// This upload's writer lease, as the fence of its store commit (its renewals report
    /// the upload's charge).
    fn fence(&self) -> takeover::LeaseFence {
        takeover::LeaseFence::writer(
            Arc::clone(&self.state.meta),
            self.image_id.clone(),
            self.writer.clone(),
            self.state.config.lease_secs,
        )
        .charging(&self.state.executor)
    }

    /// Marks the stage complete (the image stays `uploading`, waiting for its import). An
    /// image deleted meanwhile loses the staged data (410).
    async fn seal(&mut self, ingested: Ingested) -> Result<(), UploadFailure> {
        let staged = Staged::of(&ingested, now());
        let (state, id) = (self.state.clone(), self.image_id.clone());
        let sealed = tokio::task::spawn_blocking(move || state.staging.seal(&id, &staged))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = sealed {
            self.remove_data();
            self.requeue().await;
            return Err(UploadFailure::Meta(ApiError::Internal(format!(
                "recording the staged data failed: {e}"
            ))));
        }
        let touched = self
            .state
            .meta
            .transition_image(&self.image_id, &[ImageStatus::Uploading], &mut |image| {
                if !writer::holds(image, &self.writer) {
                    return Decision::Keep;
                }
                // The stage is complete: no writer any more; the image waits for its import,
                // which runs on this node, where the stage is.
                image.writer = None;
                image.staged_on.clone_from(&self.state.config.node_id);
                image.staged_bytes = ingested.size;
                image.updated_at = now();
                Decision::Write
            })
            .await;
        match touched {
            Ok(Transition::Done(_)) => {
                self.quota.stage_sealed(ingested.size);
                crate::observe::global()
                    .upload_stored(crate::observe::metrics::UploadKind::Stage, ingested.size);
                tracing::info!(image_id = %self.image_id, size = ingested.size, converted = ingested.converted, "stage complete");
                Ok(())
            }
            Ok(lost) => Err(self.not_held(&lost)),
            Err(e) => {
                self.remove_data();
                self.requeue().await;
                Err(UploadFailure::Meta(e.into()))
            }
        }
    }

    /// `saving` (`uploading`) → `queued` (Glance's `_restore`), if this upload still holds
    /// the image; an image deleted meanwhile stays deleted.
    async fn requeue(&self) {
        let restored = self
            .state
            .meta
            .transition_image(&self.image_id, &[self.dest.status()], &mut |image| {
                writer::release(image, &self.writer, now())
            })
            .await;
        if let Err(e) = restored {
            tracing::error!(image_id = %self.image_id, error = %e, "cannot return the image to queued");
        }
    }

    /// Why the final write found the image no longer this upload's (`found`: what
    /// [`MetaStore::transition_image`](crate::meta::MetaStore::transition_image) answered
    /// instead of writing): deleted meanwhile (410), or taken back by a sweep after this
    /// upload's writer lease ran out (409). The data of a deleted image goes. A taken-back
    /// image's object is the sweeper's to remove, before it gave the image back
    /// ([`takeover::take_back_writer`]): removing it here, once the image is `queued`, could
    /// remove the object of the image's next upload. A stage is this node's own file, which
    /// no sweeper reaches: it goes while the image waits `queued`.
    fn not_held(&self, found: &Transition) -> UploadFailure {
        match found {
            Transition::Missing => {
                self.remove_data();
                UploadFailure::Gone
            }
            Transition::Done(image) | Transition::Kept(image) | Transition::Refused(image) => {
                if matches!(self.dest, Destination::Stage) && image.status == ImageStatus::Queued {
                    self.remove_data();
                }
                tracing::warn!(image_id = %self.image_id, status = %image.status, "upload not recorded: its writer lease was lost");
                UploadFailure::WriterLost
            }
        }
    }

    fn remove_data(&self) {
        let removed = match self.dest {
            Destination::File => self.state.store.delete(&self.image_id),
            Destination::Stage => self.state.staging.discard(&self.image_id).map(|_| ()),
        };
        if let Err(e) = removed {
            tracing::warn!(image_id = %self.image_id, "removing uploaded data failed: {e}");
        }
    }
}

/// Why an upload failed after it was admitted.
#[derive(Debug)]
enum UploadFailure {
    /// The upload did not finish within `import_timeout_secs` (the value).
    Deadline(u64),
    /// The image was deleted during the upload.
    Gone,
    /// The ingest failed.
    Ingest(IngestError),
    /// Recording the image failed.
    Meta(ApiError),
    /// The upload's writer lease ran out and another node returned the image to `queued`.
    WriterLost,
}

/// Whether the client may still be sending when the upload failed (the failure was not the
/// body's own), so that the rest of the body is worth dropping before the connection closes.
fn client_still_sending(e: &UploadFailure) -> bool {
    !matches!(
        e,
        UploadFailure::Ingest(IngestError::Source(
            SourceError::RequestBody { .. }
                | SourceError::IdleTimeout { .. }
                | SourceError::TooSlow { .. }
        ))
    )
}

/// The HTTP answer for a failed upload (module documentation, "Outcomes").
fn upload_error(image_id: &str, failure: UploadFailure) -> ApiError {
    let e = match failure {
        UploadFailure::Deadline(secs) => return ApiError::UploadTimeout(secs),
        UploadFailure::Gone => return ApiError::ImageGone(image_id.to_owned()),
        UploadFailure::Meta(e) => return e,
        UploadFailure::WriterLost => {
            return ApiError::Conflict(format!(
                "the upload of image {image_id} lost its hold on the image (its writer lease \
                 could not be renewed within lease_secs, and the image was returned to \
                 queued); this upload was not recorded: upload again"
            ))
        }
        UploadFailure::Ingest(e) => e,
    };
    let reason = e.reason_code().to_owned();
    match e {
        IngestError::Rejected(report) => ApiError::InvalidImageData {
            reason,
            message: sluice_pipeline::ingest::rejection_message(&report),
        },
        IngestError::Convert { message, .. } => ApiError::InvalidImageData { reason, message },
        IngestError::TooLarge { .. } | IngestError::Source(SourceError::ContentTooLarge { .. }) => {
            ApiError::ImageTooLarge(e.to_string())
        }
        IngestError::QuotaExceeded(message) => ApiError::LimitExceeded(message),
        IngestError::Source(SourceError::TooSlow { .. } | SourceError::IdleTimeout { .. }) => {
            ApiError::RequestTimeout(format!(
                "{e} (min_rate_bytes_per_sec, min_rate_window_secs)"
            ))
        }
        IngestError::Source(SourceError::Unwrap(e)) if reason == "size_cap" => {
            ApiError::ImageTooLarge(e.to_string())
        }
        IngestError::Source(SourceError::Unwrap(e)) if e.is_image_fault() => {
            ApiError::InvalidImageData {
                reason,
                message: e.to_string(),
            }
        }
        IngestError::Source(source) => ApiError::BadRequest(format!(
            "Client disconnected before sending all data to backend: {source}"
        )),
        IngestError::Store(StoreError::StorageFull(full)) => full.into(),
        IngestError::Store(_) | IngestError::Output(_) => {
            tracing::warn!(image_id, error = %e, "the image store failed the upload");
            ApiError::StoreFailed(e.to_string())
        }
        // Its writer lease could not be proved right before the commit (self-fencing).
        IngestError::Fenced(message) => ApiError::Conflict(format!(
            "the upload of image {image_id} was not recorded: {message}; upload again"
        )),
        IngestError::Cancelled => ApiError::ShuttingDown(format!(
            "the upload of image {image_id} was stopped and nothing was stored; upload again"
        )),
        other => ApiError::Internal(other.to_string()),
    }
}
