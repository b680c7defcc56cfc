//! One import task, start to finish: every state change of the task, the pull through the
//! pipeline, and the single atomic write that makes the image visible.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_pipeline::http::{HttpConfig, HttpSource};
use sluice_pipeline::ingest::ingest_as;
use sluice_pipeline::rate::RateGuard;
use sluice_pipeline::ssrf::ImportPolicy;
use sluice_pipeline::{IngestError, Ingested, Progress};
use tokio::sync::watch;

use crate::config::Config;
use crate::executor::Claimed;
use crate::meta::{
    ImageRecord, ImageStatus, MetaError, TaskLease, TaskRecord, TaskStatus, Timestamp,
};
use crate::properties::{PropertyLimits, Visibility};
use crate::state::AppState;
use crate::takeover;

mod advice;
mod api_image;
mod glance_direct;
mod request;

pub(crate) use api_image::release_image;
pub use api_image::{cancel_for_deleted, API_IMAGE_IMPORT};
pub use request::{min_rate, ImportRequest, ImportSource, InputError, LegacyImport};

/// Reason code of a task whose input cannot be imported.
pub const REASON_INVALID_INPUT: &str = "invalid_input";
/// Reason code of an import cut short by the service: a shutdown (SIGTERM/SIGINT, the
/// import's cancel signal) or a crash (found by recovery at the next start). Nothing is
/// wrong with the request: asking again works. Its counterpart is [`REASON_CANCELLED`].
///
/// The two are kept apart everywhere (tasks of both kinds, uploads, stages):
///
/// | code | meaning | written by |
/// |---|---|---|
/// | `cancelled` | stopped **on purpose** by a client: the image of an interoperable import was deleted (Glance's only cancel) | `api_image` when the stopped import's image is gone |
/// | `interrupted` | stopped by the **service**: shutdown, or a crash found at restart | `ingest_failure` for a stopped ingest, `service::finish_recovery`, an upload's or stage's 503 |
///
/// The pipeline cannot tell them apart (its `IngestError::Cancelled` is only "the cancel
/// signal turned"): a stop is `interrupted` unless the one who stopped it on purpose (the
/// image's deletion) is found.
pub const REASON_INTERRUPTED: &str = "interrupted";
/// Reason code of an import stopped on purpose: its image was deleted (see
/// [`REASON_INTERRUPTED`] for the distinction).
pub const REASON_CANCELLED: &str = "cancelled";
/// Reason code of a failure on Sluice's side (metadata store).
pub const REASON_INTERNAL: &str = "internal_error";
/// Reason code of an import that did not finish within `import_timeout_secs`.
pub const REASON_IMPORT_TIMEOUT: &str = "import_timeout";
/// Reason code of an import stopped because the data volume is below its reserve.
pub const REASON_STORAGE_FULL: &str = "storage_full";
/// Pause between attempts to record a task's final state on a full volume.
const SAVE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The import policy `import_from` URLs (and their redirects) must pass.
pub fn import_policy(config: &Config) -> ImportPolicy {
    let f = &config.import;
    let defaults = ImportPolicy::default();
    ImportPolicy {
        allowed_schemes: if f.allowed_schemes.is_empty() {
            defaults.allowed_schemes
        } else {
            f.allowed_schemes.clone()
        },
        allowed_hosts: f.allowed_hosts.clone(),
        denied_hosts: f.denied_hosts.clone(),
        allowed_ports: f.allowed_ports.clone(),
        denied_ports: f.denied_ports.clone(),
        nat64_prefixes: f.nat64_prefixes.clone(),
        pinned_hosts: f.resolve.clone(),
    }
}

/// Marks a task failed (`reason`, `message`), with its expiry. The stored message starts
/// with the reason code and ends with what to do (`advice::task_message`).
pub fn fail(task: &mut TaskRecord, reason: &str, message: String, ttl_secs: i64) {
    let at = now();
    task.status = TaskStatus::Failure;
    task.message = advice::task_message(reason, &message);
    task.reason = Some(reason.to_owned());
    task.result = None;
    task.updated_at = at;
    task.expires_at = Some(at.saturating_add(ttl_secs));
}

/// Runs one queued task to a final state. Never panics on bad input; every outcome is
/// written to the task. Returns the size of the image it stored, if it did (for the
/// project's quota).
///
/// The task is claimed here, by a plain write of `processing` under this node's lease (an
/// embedded store: the local queue is the only queue); then it runs as [`run_claimed`].
pub async fn run(
    state: &AppState,
    task_id: &str,
    progress: Arc<Progress>,
    cancel: watch::Receiver<bool>,
) -> Option<u64> {
    let ttl = state.config.task_ttl();
    let Some(mut task) = state.meta.get_task(task_id).await.ok().flatten() else {
        tracing::warn!(task_id, "queued task vanished before it ran");
        return None;
    };
    // Only a pending task may start (a requeued one may have finished meanwhile).
    if !task.status.can_become(TaskStatus::Processing) {
        return None;
    }
    // This run's claim: the next attempt, under this node's lease (renewed as it runs).
    task.status = TaskStatus::Processing;
    task.attempts = task.attempts.saturating_add(1);
    task.updated_at = now();
    task.lease = Some(lease(state, task.updated_at));
    if let Err(e) = save(state, &task).await {
        tracing::error!(task_id, error = %e, "cannot mark task processing");
        if let MetaError::StorageFull(why) = e {
            // The worker has taken the task off the queue: fail it (recorded once space is
            // freed) rather than leave it `pending` with nobody to run it. The claim was not
            // written, so neither is its lease (a leased write needs a `processing` task).
            task.lease = None;
            fail(
                &mut task,
                REASON_STORAGE_FULL,
                format!("{why}; create the task again once space has been freed"),
                ttl,
            );
            save_final(state, &task).await;
        }
        return None;
    }
    run_claimed(state, task, progress, cancel).await
}

/// This node's lease on a task, from `at` for `lease_secs`.
fn lease(state: &AppState, at: Timestamp) -> TaskLease {
    let lease_secs = i64::try_from(state.config.lease_secs).unwrap_or(i64::MAX);
    TaskLease {
        node: state.config.node_id.clone().unwrap_or_default(),
        until: at.saturating_add(lease_secs),
        charged: 0,
    }
}

/// Claims the next task from a shared metadata store for this node
/// ([`crate::meta::MetaStore::claim_task`] under `per_project_imports`), for the executor's
/// claim loop; `None` when nothing may be claimed, or the store failed (logged: the loop
/// asks again after its interval).
pub async fn claim_next(state: &AppState) -> Option<Claimed<TaskRecord>> {
    let at = now();
    let cap = u64::try_from(state.config.per_project_imports).unwrap_or(u64::MAX);
    match state.meta.claim_task(&lease(state, at), cap, at).await {
        Ok(claimed) => claimed.map(|task| Claimed {
            task_id: task.id.clone(),
            owner: task.owner.clone(),
            task,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "claiming a pending task failed; retrying");
            None
        }
    }
}

/// Runs `task`, claimed by this node (`processing` under its lease), to a final state:
/// renews the lease meanwhile, and writes every outcome to the task. Returns the size of
/// the image it stored, if it did (for the project's quota).
///
/// The import has `import_timeout_secs` from here to its last byte: then it is cancelled
/// like a shutdown would, and fails with [`REASON_IMPORT_TIMEOUT`].
pub async fn run_claimed(
    state: &AppState,
    mut task: TaskRecord,
    progress: Arc<Progress>,
    cancel: watch::Receiver<bool>,
) -> Option<u64> {
    let ttl = state.config.task_ttl();
    let task_id = task.id.clone();
    let task_id = task_id.as_str();
    tracing::info!(task_id, owner = %task.owner, attempt = task.attempts, "import started");
    if task.attempts > 1 {
        // An earlier run's node died; what it stored and did not record goes first.
        let earlier = task.attempts - 1;
        let store = state.store.as_ref();
        match takeover::remove_leftovers(state.meta.as_ref(), store, &task, earlier).await {
            Ok(removed) => tracing::info!(task_id, ?removed, "earlier runs' leftovers removed"),
            Err(e) => {
                tracing::warn!(task_id, error = %e, "looking for earlier runs' leftovers failed")
            }
        }
    }

    let fence = task_fence(state, task_id).watching(crate::quota::watch(state, &task.owner, false));
    let (cancel, lease_lost) = takeover::hold_fence(fence, cancel);
    let timeout = Duration::from_secs(state.config.import_timeout_secs);
    let (cancel, timed_out) = with_deadline(cancel, timeout);
    if task.task_type == API_IMAGE_IMPORT {
        let outcome = api_image::run(state, &task, &progress, cancel).await;
        if lease_lost.load(Ordering::SeqCst) {
            // The task is another run's now: its writes are refused (`lease::lost_by`).
            tracing::warn!(task_id, "import stopped: its lease was lost");
            return None;
        }
        let outcome = deadline_outcome(outcome, &timed_out, timeout);
        return api_image::finish(state, task, outcome).await;
    }
    let limits = PropertyLimits::of(&state.config);
    let outcome = match LegacyImport::parse(&task.input, &limits, state.config.conversion) {
        Ok(legacy) => import(state, &task, legacy, &progress, cancel).await,
        Err(e) => Err((REASON_INVALID_INPUT.to_owned(), e.message())),
    };
    if lease_lost.load(Ordering::SeqCst) {
        // Another node runs the task now; the image this run stored (its own new id) goes.
        tracing::warn!(task_id, "import stopped: its lease was lost");
        if let Ok((image, _)) = &outcome {
            let _ = state.store.delete(&image.id);
        }
        return None;
    }
    let outcome = deadline_outcome(outcome, &timed_out, timeout);
    match outcome {
        Ok((image, unwrapped)) => {
            let at = now();
            task.status = TaskStatus::Success;
            let mut result = serde_json::json!({ "image_id": image.id });
            if let Some(wrapper) = unwrapped {
                // Sluice's addition: the compression removed in the stream.
                result["unwrapped"] = wrapper.into();
            }
            task.result = Some(result);
            task.message = String::new();
            task.reason = None;
            task.updated_at = at;
            task.expires_at = Some(at.saturating_add(ttl));
            let committed = state.meta.commit_import(&task, &image).await;
            match committed {
                Ok(()) => {
                    tracing::info!(task_id, image_id = %image.id, size = ?image.size, "import succeeded");
                    return image.size;
                }
                Err(e) => {
                    tracing::error!(task_id, error = %e, "cannot record the imported image");
                    let _ = state.store.delete(&image.id);
                    let reason = if matches!(e, MetaError::StorageFull(_)) {
                        REASON_STORAGE_FULL
                    } else {
                        REASON_INTERNAL
                    };
                    fail(
                        &mut task,
                        reason,
                        format!("recording the image failed: {e}"),
                        ttl,
                    );
                    save_final(state, &task).await;
                }
            }
        }
        Err((reason, message)) => {
            tracing::info!(task_id, %reason, %message, "import failed");
            fail(&mut task, &reason, message, ttl);
            save_final(state, &task).await;
        }
    }
    None
}

/// An import's outcome, or [`REASON_IMPORT_TIMEOUT`] when it failed because its deadline
/// passed.
fn deadline_outcome<T>(
    outcome: Result<T, (String, String)>,
    timed_out: &AtomicBool,
    timeout: Duration,
) -> Result<T, (String, String)> {
    match outcome {
        Err(_) if timed_out.load(Ordering::SeqCst) => Err((
            REASON_IMPORT_TIMEOUT.to_owned(),
            format!(
                "import did not finish within {} s (import_timeout_secs); nothing was stored",
                timeout.as_secs()
            ),
        )),
        other => other,
    }
}

/// A cancel signal that turns `true` when `shutdown` does or when `timeout` has passed (then
/// the flag is set first): the import's deadline.
pub(crate) fn with_deadline(
    mut shutdown: watch::Receiver<bool>,
    timeout: Duration,
) -> (watch::Receiver<bool>, Arc<AtomicBool>) {
    let (tx, rx) = watch::channel(false);
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&timed_out);
    tokio::spawn(async move {
        tokio::select! {
            // Ends when the import drops its receiver (it finished first).
            () = tx.closed() => {}
            r = shutdown.wait_for(|stop| *stop) => {
                if r.is_ok() {
                    tx.send_replace(true);
                }
            }
            () = tokio::time::sleep(timeout) => {
                flag.store(true, Ordering::SeqCst);
                tx.send_replace(true);
            }
        }
    });
    (rx, timed_out)
}

/// Pulls, inspects, hashes and stores the image; returns its record (not yet written) and
/// the compression wrapper removed, if any.
async fn import(
    state: &AppState,
    task: &TaskRecord,
    legacy: LegacyImport,
    progress: &Progress,
    cancel: watch::Receiver<bool>,
) -> Result<(ImageRecord, Option<&'static str>), (String, String)> {
    // Named by the run, so that whoever takes the task back can find what this run stored.
    let image_id = takeover::attempt_image_id(&task.id, task.attempts);
    let ingested = pull(state, task, &legacy.request, &image_id, progress, cancel).await?;
    Ok((
        image_record(task, &image_id, &legacy, &ingested),
        ingested.unwrapped,
    ))
}

/// Pulls the URL of `request` through the pipeline (quota, minimum rate, unwrapping,
/// inspection, conversion, hashing) into the store under `image_id`.
async fn pull(
    state: &AppState,
    task: &TaskRecord,
    request: &ImportRequest,
    image_id: &str,
    progress: &Progress,
    mut cancel: watch::Receiver<bool>,
) -> Result<Ingested, (String, String)> {
    let ImportSource::Url { url, uri_use } = &request.source else {
        return Err((
            REASON_INVALID_INPUT.to_owned(),
            "the task's import has no URL to pull".to_owned(),
        ));
    };
    let config = &state.config;
    // An interoperable import fills an image whose record already counts.
    let adds_image = task.task_type != API_IMAGE_IMPORT;
    let quota = crate::quota::ImportQuota::start(state, &task.id, &task.owner, adds_image).await?;
    let policy = import_policy(config);
    let http = HttpConfig::default();
    let opened = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => {
            return Err(ingest_failure(&IngestError::Cancelled));
        }
        opened = HttpSource::open(url, &policy, &http) => opened,
    };
    let source = opened.map_err(|e| {
        (
            "source_error".to_owned(),
            crate::api::tasks::source_failure(*uri_use, &e),
        )
    })?;
    let source = RateGuard::new(source, min_rate(config));
    // Committed only under a lease just renewed (`takeover::LeaseFence`).
    let fence = task_fence(state, &task.id);
    let ingest = request
        .ingest_request(image_id, config, &quota)
        .fenced_by(&fence);
    let opened = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => Err(IngestError::Cancelled),
        r = request.unwrap.open(
            source,
            config.limits.unwrap_limits(ingest.limits.max_virtual_size),
            ingest.declared,
        ) => {
            r.map_err(IngestError::Source)
        }
    };
    let source = opened.map_err(|e| ingest_failure(&e))?;
    ingest_as(source, ingest, state.store.as_ref(), progress, cancel)
        .await
        .map_err(|e| ingest_failure(&e))
}

/// This node's lease on `task`, as the fence of its store commit (its renewals report the
/// task's charge).
pub(crate) fn task_fence(state: &AppState, task_id: &str) -> takeover::LeaseFence {
    takeover::LeaseFence::task(
        Arc::clone(&state.meta),
        task_id.to_owned(),
        state.config.node_id.clone().unwrap_or_default(),
        state.config.lease_secs,
    )
    .charging(&state.executor)
}

/// The task's reason code and message for a failed ingest: the pipeline's code, except that
/// a stopped ingest is [`REASON_INTERRUPTED`] (the service stopped it; an interoperable
/// import whose image was deleted rewords it as [`REASON_CANCELLED`]).
fn ingest_failure(e: &IngestError) -> (String, String) {
    let reason = match e {
        IngestError::Cancelled => REASON_INTERRUPTED,
        other => other.reason_code(),
    };
    (reason.to_owned(), failure_message(e))
}

/// Resolves when `cancel` turns `true`; never when its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The task message for a failed ingest: the inspector's own words for a rejection.
fn failure_message(e: &IngestError) -> String {
    match e {
        IngestError::Rejected(report) => {
            let msgs: Vec<&str> = report.reasons.iter().map(|r| r.message.as_str()).collect();
            if msgs.is_empty() {
                "image rejected by format inspection".to_owned()
            } else {
                msgs.join("; ")
            }
        }
        IngestError::Cancelled => {
            "import interrupted: the service is shutting down; create the task again".to_owned()
        }
        other => other.to_string(),
    }
}

/// Builds the image record from the task's parsed `image_properties` and what was stored.
fn image_record(
    task: &TaskRecord,
    image_id: &str,
    legacy: &LegacyImport,
    ingested: &Ingested,
) -> ImageRecord {
    let props = &legacy.properties;
    let at = now();
    let mut record = ImageRecord {
        id: image_id.to_owned(),
        name: props.name.clone(),
        status: ImageStatus::Active,
        // Another project only when an admin asked for it (checked at create time).
        owner: props.owner.clone().unwrap_or_else(|| task.owner.clone()),
        visibility: props
            .visibility
            .unwrap_or(Visibility::Shared)
            .as_str()
            .to_owned(),
        protected: props.protected.unwrap_or(false),
        // A converted image is a bare disk in the target format (as Glance's conversion).
        disk_format: Some(if ingested.converted {
            ingested.format.to_string()
        } else {
            legacy.request.disk_format.clone()
        }),
        container_format: Some(match &props.container_format {
            Some(requested) if !ingested.converted => requested.clone(),
            _ => "bare".to_owned(),
        }),
        size: Some(ingested.size),
        virtual_size: ingested.report.virtual_size,
        checksum: Some(ingested.md5_hex.clone()),
        os_hash_algo: Some("sha512".to_owned()),
        os_hash_value: Some(ingested.sha512_hex.clone()),
        min_disk: props.min_disk.unwrap_or(0),
        min_ram: props.min_ram.unwrap_or(0),
        tags: props.tags.clone(),
        properties: props.extra.clone(),
        created_at: at,
        updated_at: at,
        task_id: Some(task.id.clone()),
        writer: None,
        staged_on: None,
        staged_bytes: 0,
    };
    crate::unwrapping::apply(&mut record, ingested);
    record
}

/// Writes a status change of `task` through the compare-and-swap
/// ([`crate::meta::MetaStore::transition_task`]): a task another writer has moved on is not overwritten.
async fn save(state: &AppState, task: &TaskRecord) -> Result<(), MetaError> {
    state.meta.transition_task(task).await
}

/// Records a task's final state; on a full volume keeps trying in the background (every
/// [`SAVE_RETRY_INTERVAL`]), so the task does not stay `processing` once space is freed.
async fn save_final(state: &AppState, task: &TaskRecord) {
    match save(state, task).await {
        Ok(()) => {}
        Err(MetaError::StorageFull(_)) => {
            tracing::error!(
                task_id = %task.id,
                "data volume full: the task's final state is recorded once space is freed"
            );
            let (state, task) = (state.clone(), task.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SAVE_RETRY_INTERVAL).await;
                    match save(&state, &task).await {
                        Ok(()) => return,
                        Err(MetaError::StorageFull(_)) => {}
                        Err(e) => {
                            tracing::error!(task_id = %task.id, error = %e, "cannot mark task failed");
                            return;
                        }
                    }
                }
            });
        }
        Err(e) => tracing::error!(task_id = %task.id, error = %e, "cannot mark task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ingest_failure_stopped_ingest_is_interrupted_not_cancelled() {
        let (reason, message) = ingest_failure(&IngestError::Cancelled);
        assert_eq!(reason, REASON_INTERRUPTED);
        assert!(message.contains("shutting down"), "{message}");
    }
}
