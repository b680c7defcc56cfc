//! `api_image_import` tasks, made by `POST /v2/images/{id}/import` (Glance's
//! `api_image_import` flow): the same pull as an `import` task (quota, minimum rate,
//! deadline, inspection, conversion, hashing), into the existing image.
//!
//! The image carries Glance's import lock, `os_glance_import_task` = the task id, from the
//! request on; its status is `importing` until the task ends. The worker re-takes the image
//! (`queued` after a restart, or `importing`) only while the lock names its task; success
//! makes it `active` and drops the lock, failure returns it to `queued` (data fields
//! cleared, lock dropped) with Glance's single-store `os_glance_importing_to_stores` and
//! `os_glance_failed_import` (both empty: there is one store). A deleted image cancels its
//! import ([`cancel_for_deleted`]); the task then fails with [`REASON_CANCELLED`] and whatever
//! the import wrote is removed.

use serde_json::{json, Value};
use sluice_pipeline::ingest::Fence;
use sluice_pipeline::{Ingested, Progress};
use tokio::sync::watch;

use super::{
    fail, now, pull, save_final, ImportRequest, ImportSource, REASON_CANCELLED, REASON_INTERNAL,
    REASON_INTERRUPTED, REASON_INVALID_INPUT,
};
use crate::api::tasks::UriUse;
use crate::meta::{
    Decision, ImageRecord, ImageStatus, MetaError, MetaStore, TaskRecord, TaskStatus, Transition,
    LOCK_PROPERTY,
};
use crate::state::AppState;

/// The task type of an interoperable import.
pub const API_IMAGE_IMPORT: &str = "api_image_import";
/// Stores an import is writing to (Glance's; empty with a single store).
pub const IMPORTING_TO_STORES: &str = "os_glance_importing_to_stores";
/// Stores an import failed for (Glance's; empty with a single store).
pub const FAILED_IMPORT: &str = "os_glance_failed_import";
/// Reason code of an import whose image no longer waits for it (another change won).
const REASON_IMAGE_CHANGED: &str = "image_changed";

/// The image and what the pipeline stored for it.
pub(super) type Imported = (ImageRecord, Ingested);

/// Cancels the import that holds the lock of `image`, which was just deleted.
pub fn cancel_for_deleted(state: &AppState, image: &ImageRecord) {
    if let Some(task_id) = image.properties.get(LOCK_PROPERTY) {
        if state.executor.cancel(task_id) {
            tracing::info!(image = %image.id, task = %task_id, "image deleted: import cancelled");
        }
    }
}

/// Whether `image`'s lock is held by task `task_id`.
fn locked_by(image: &ImageRecord, task_id: &str) -> bool {
    image.properties.get(LOCK_PROPERTY).map(String::as_str) == Some(task_id)
}

/// Takes the image (`queued` or `importing` under this task's lock) to `importing` and pulls
/// `import_req.method.uri` into the store under its id.
pub(super) async fn run(
    state: &AppState,
    task: &TaskRecord,
    progress: &Progress,
    cancel: watch::Receiver<bool>,
) -> Result<Imported, (String, String)> {
    if super::glance_direct::is_glance_direct(&task.input) {
        return super::glance_direct::run(state, &task.id, &task.input).await;
    }
    let invalid = |what: &str| {
        (
            REASON_INVALID_INPUT.to_owned(),
            format!("Task input {what}"),
        )
    };
    let image_id = task
        .input
        .get("image_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("has no image_id"))?
        .to_owned();
    let uri = task
        .input
        .pointer("/import_req/method/uri")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("has no import_req.method.uri"))?
        .to_owned();
    let image = take(state, &task.id, &image_id).await?;
    // Parsed when the import was asked for; parsed again the same way as a check.
    let source = ImportSource::Url {
        url: uri,
        uri_use: UriUse::WebDownload,
    };
    let request = ImportRequest::for_image(&image, source, state.config.conversion)
        .map_err(|m| (REASON_INVALID_INPUT.to_owned(), m))?;
    let ingested = pull(state, task, &request, &image_id, progress, cancel).await?;
    Ok((image, ingested))
}

/// The image under this task's lock, now `importing` (from `queued`, or `uploading` for a
/// `glance-direct` import).
pub(super) async fn take(
    state: &AppState,
    task_id: &str,
    image_id: &str,
) -> Result<ImageRecord, (String, String)> {
    let taken = state
        .meta
        .transition_image(
            image_id,
            &[
                ImageStatus::Queued,
                ImageStatus::Uploading,
                ImageStatus::Importing,
            ],
            &mut |image| {
                if !locked_by(image, task_id) {
                    return Decision::Keep;
                }
                image.status = ImageStatus::Importing;
                clear_store_lists(image);
                image.updated_at = now();
                Decision::Write
            },
        )
        .await
        .map_err(|e| {
            (
                REASON_INTERNAL.to_owned(),
                format!("reading the image failed: {e}"),
            )
        })?;
    match taken {
        Transition::Done(image) => Ok(image),
        Transition::Missing => Err(deleted(image_id)),
        Transition::Kept(image) | Transition::Refused(image) => Err((
            REASON_IMAGE_CHANGED.to_owned(),
            format!(
                "image {image_id} is {} and no longer waits for this import",
                image.status
            ),
        )),
    }
}

fn deleted(image_id: &str) -> (String, String) {
    (
        REASON_CANCELLED.to_owned(),
        format!("import cancelled: image {image_id} was deleted"),
    )
}

/// Records the outcome: the image `active` and the task `success`, or the image back to
/// `queued` and the task `failure`. Returns the stored size for the project's quota.
pub(super) async fn finish(
    state: &AppState,
    mut task: TaskRecord,
    outcome: Result<Imported, (String, String)>,
) -> Option<u64> {
    let ttl = state.config.task_ttl();
    let image_id = task
        .input
        .get("image_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let outcome = match outcome {
        Ok((image, ingested)) => {
            let at = now();
            let mut success = task.clone();
            success.status = TaskStatus::Success;
            success.result = Some(json!({ "image_id": image_id }));
            if let (Some(result), Some(wrapper)) = (success.result.as_mut(), ingested.unwrapped) {
                // Sluice's addition: the compression removed in the stream.
                result["unwrapped"] = wrapper.into();
            }
            success.message = String::new();
            success.reason = None;
            success.updated_at = at;
            success.expires_at = Some(at.saturating_add(ttl));
            commit(state, &success, image, &ingested).await
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(size) => {
            tracing::info!(task_id = %task.id, image_id, size, "interoperable import succeeded");
            Some(size)
        }
        Err((reason, message)) => {
            let (reason, message) = requeue(state, &task.id, &image_id, reason, message).await;
            tracing::info!(task_id = %task.id, %reason, %message, "interoperable import failed");
            fail(&mut task, &reason, message, ttl);
            save_final(state, &task).await;
            None
        }
    }
}

/// Makes the image `active` with what was stored and the task `success` (`success`), in one
/// atomic write, so a crash cannot leave an `active` image whose task is then marked
/// interrupted; on any refusal removes the stored data (and writes neither).
async fn commit(
    state: &AppState,
    success: &TaskRecord,
    image: ImageRecord,
    ingested: &Ingested,
) -> Result<u64, (String, String)> {
    let (size, converted, format) = (ingested.size, ingested.converted, ingested.format);
    let change = &mut |record: &mut ImageRecord| {
        if !locked_by(record, &success.id) {
            return Decision::Keep;
        }
        record.status = ImageStatus::Active;
        record.properties.remove(LOCK_PROPERTY);
        crate::unwrapping::apply(record, ingested);
        if converted {
            // A converted image is a bare disk in the target format (as Glance's).
            record.disk_format = Some(format.to_string());
            record.container_format = Some("bare".to_owned());
        }
        record.size = Some(size);
        record.virtual_size = ingested.report.virtual_size;
        record.checksum = Some(ingested.md5_hex.clone());
        record.os_hash_algo = Some("sha512".to_owned());
        record.os_hash_value = Some(ingested.sha512_hex.clone());
        record.updated_at = now();
        Decision::Write
    };
    let committed = state
        .meta
        .transition_image_with_task(&image.id, &[ImageStatus::Importing], change, success)
        .await;
    let gone = matches!(committed, Ok(Transition::Missing));
    let refused = match committed {
        Ok(Transition::Done(_)) => return Ok(size),
        Ok(Transition::Missing) => deleted(&image.id),
        Ok(Transition::Kept(now) | Transition::Refused(now)) => (
            REASON_IMAGE_CHANGED.to_owned(),
            format!("image {} became {} during the import", image.id, now.status),
        ),
        Err(e) => (
            REASON_INTERNAL.to_owned(),
            format!("recording the image failed: {e}"),
        ),
    };
    // The key is this run's to delete only while the image is gone or the task's lease
    // still holds: past it, another node may have taken the import back and be writing it.
    let ours = gone
        || super::task_fence(state, &success.id)
            .confirm()
            .await
            .is_ok();
    if !ours {
        tracing::warn!(image = %image.id, "data of a refused import left in place: this node no longer holds the task");
    } else if let Err(e) = state.store.delete(&image.id) {
        tracing::warn!(image = %image.id, "removing the data of a refused import failed: {e}");
    }
    Err(refused)
}

/// Empties Glance's per-store import lists (`os_glance_importing_to_stores`,
/// `os_glance_failed_import`), as Glance shows them before an import and after one stopped.
fn clear_store_lists(image: &mut ImageRecord) {
    for key in [IMPORTING_TO_STORES, FAILED_IMPORT] {
        image.properties.insert(key.into(), String::new());
    }
}

/// Returns image `image_id` to `queued` if task `task_id` still holds its import lock: data
/// fields cleared, lock dropped, Glance's failed-import properties set. A failed import does
/// it, and so does the take-back of an import whose node died ([`crate::takeover`]).
///
/// # Errors
/// A metadata error (nothing written).
pub(crate) async fn release_image(
    meta: &dyn MetaStore,
    task_id: &str,
    image_id: &str,
) -> Result<Transition, MetaError> {
    meta.transition_image(
        image_id,
        &[ImageStatus::Queued, ImageStatus::Importing],
        &mut |image| {
            if !locked_by(image, task_id) {
                return Decision::Keep;
            }
            image.status = ImageStatus::Queued;
            image.forget_data();
            image.properties.remove(LOCK_PROPERTY);
            clear_store_lists(image);
            image.updated_at = now();
            Decision::Write
        },
    )
    .await
}

/// Returns the image to `queued` (if this task still holds it) and words the failure: a
/// stop of an import whose image is gone was a cancellation, one whose image remains was a
/// shutdown.
async fn requeue(
    state: &AppState,
    task_id: &str,
    image_id: &str,
    reason: String,
    message: String,
) -> (String, String) {
    let requeued = release_image(state.meta.as_ref(), task_id, image_id).await;
    let stopped = reason == REASON_CANCELLED || reason == REASON_INTERRUPTED;
    match requeued {
        Ok(Transition::Missing) if stopped => deleted(image_id),
        Ok(_) if stopped => (
            REASON_INTERRUPTED.to_owned(),
            "import interrupted: the service is shutting down; import the image again".to_owned(),
        ),
        Ok(_) => (reason, message),
        Err(e) => {
            tracing::error!(image = %image_id, "returning the image to queued failed: {e}");
            (reason, message)
        }
    }
}
