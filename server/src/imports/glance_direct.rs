//! The worker's half of a `glance-direct` import: the stage is already inspected, hashed and
//! converted ([`crate::api::images::stage`]), so the task only moves it. It takes the image
//! (`uploading` under its lock) to `importing`, renames the sealed stage into the store's
//! `images/` and hands what the stage recorded to [`super::api_image::finish`], which makes
//! the image `active` in one compare-and-swap (or removes the data and returns the image to
//! `queued`).

use serde_json::Value;
use sluice_pipeline::ingest::Fence;
use sluice_pipeline::store::StoreError;

use super::api_image::{take, Imported};
use super::{REASON_INTERNAL, REASON_INTERRUPTED, REASON_INVALID_INPUT, REASON_STORAGE_FULL};
use crate::state::AppState;

/// The `method.name` of a `glance-direct` import.
pub const GLANCE_DIRECT: &str = "glance-direct";

/// Reason code of a `glance-direct` import whose staged data is gone (expired or removed).
const REASON_NOT_STAGED: &str = "not_staged";

/// Whether `task`'s import request is a `glance-direct` one.
pub(super) fn is_glance_direct(input: &Value) -> bool {
    input
        .pointer("/import_req/method/name")
        .and_then(Value::as_str)
        == Some(GLANCE_DIRECT)
}

/// Commits the stage of the task's image into the store.
pub(super) async fn run(
    state: &AppState,
    task_id: &str,
    input: &Value,
) -> Result<Imported, (String, String)> {
    let image_id = input
        .get("image_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            (
                REASON_INVALID_INPUT.to_owned(),
                "Task input has no image_id".to_owned(),
            )
        })?
        .to_owned();
    let image = take(state, task_id, &image_id).await?;
    let Some(staged) = state.staging.staged(&image_id) else {
        return Err((
            REASON_NOT_STAGED.to_owned(),
            format!("image {image_id} has no staged data (expired or removed); stage it again"),
        ));
    };
    // Committed only under the task's lease just renewed (`takeover::LeaseFence`).
    super::task_fence(state, task_id)
        .confirm()
        .await
        .map_err(|m| (REASON_INTERRUPTED.to_owned(), m))?;
    let (staging, store, id) = (
        std::sync::Arc::clone(&state.staging),
        std::sync::Arc::clone(&state.store),
        image_id.clone(),
    );
    let promoted = tokio::task::spawn_blocking(move || staging.promote(&id, &store))
        .await
        .map_err(|e| (REASON_INTERNAL, e.to_string()))
        .and_then(|r| r.map_err(|e| (commit_reason(&e), e.to_string())));
    if let Err((reason, e)) = promoted {
        // As Glance: a failed import returns the image to `queued` and its stage goes.
        if let Err(e) = state.staging.discard(&image_id) {
            tracing::warn!(image = %image_id, "removing a stage that failed to commit: {e}");
        }
        return Err((
            reason.to_owned(),
            format!("committing the staged data failed: {e}; stage the image again"),
        ));
    }
    Ok((image, staged.into_ingested()))
}

/// The reason code of a stage's commit into the store that failed with `e`: the store's
/// (`store_error`, `storage_full`, as an import's), or `internal_error` when the image's key
/// is taken (a stage never commits over an image).
fn commit_reason(e: &StoreError) -> &'static str {
    match e {
        StoreError::StorageFull(_) => REASON_STORAGE_FULL,
        StoreError::AlreadyExists(_) => REASON_INTERNAL,
        _ => "store_error",
    }
}
