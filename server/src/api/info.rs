//! `GET /v2/info/stores` and `GET /v2/info/usage`: the discovery calls openstacksdk and
//! Horizon make.
//!
//! **Stores.** Sluice has one store, the local data directory: Glance's shape for it is one
//! store, id `local`, marked the default (`{"stores": [{"id", "description", "default"}]}`,
//! `default` being the string `"true"`, as Glance's `info.get_stores` sends it).
//!
//! **Usage.** Glance's unified-limits usage (Images API 2.13) for the caller's project:
//! `{"usage": {<resource>: {"limit", "usage"}}}` for `image_size_total` (MiB, rounded up),
//! `image_count_total`, `image_count_uploading` and `image_stage_total` (MiB), counted as
//! the quota checks count them ([`crate::quota`]); an unlimited resource has limit `-1`
//! (Keystone's convention).

use http::Response;
use serde_json::{json, Value};

use crate::api::auth::RequestContext;
use crate::api::body::ApiBody;
use crate::api::error::ApiError;
use crate::api::{ok_json, Api};
use crate::quota::{Limit, MIB};

/// The id of Sluice's one store.
pub const STORE_ID: &str = "local";

/// `GET /v2/info/stores`.
pub fn stores(api: &Api) -> Response<ApiBody> {
    let description = format!(
        "Local file store in {}",
        api.state.config.data_dir.join("images").display()
    );
    ok_json(&json!({
        "stores": [{"id": STORE_ID, "description": description, "default": "true"}]
    }))
}

/// One resource of the usage document.
fn resource(limit: Limit, usage: u64) -> Value {
    let limit = limit.get().map_or(json!(-1), |l| json!(l));
    json!({"limit": limit, "usage": usage})
}

/// MiB, rounded up (as the quota messages show bytes).
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

/// `GET /v2/info/usage`: on a shared store, for the whole cluster (the other nodes' imports,
/// uploads and stages read from their records now).
///
/// # Errors
/// An internal error when the metadata cannot be read.
pub async fn usage(api: &Api, ctx: &RequestContext) -> Result<Response<ApiBody>, ApiError> {
    let state = &api.state;
    let project = ctx.project_id.clone();
    let limits = state.config.quotas.for_project(&project);
    let stored = state.meta.project_usage(&project).await?;
    let mut uploading = None;
    if state.meta.is_shared() {
        let meta = &state.meta;
        let node = state.config.node_id.as_deref().unwrap_or_default();
        let charged = meta.charged_elsewhere(&project, node).await?;
        state.executor.set_charged_elsewhere(&project, charged);
        let staged = meta.staged_elsewhere(&project, node).await?;
        state.staging.ledger().set_elsewhere(&project, staged);
        let tasks = meta.queued_tasks(&project, u64::MAX).await?;
        let writing = meta.writing_images(&project, u64::MAX).await?;
        uploading = Some(
            tasks
                .project_pending
                .saturating_add(tasks.project_processing)
                .saturating_add(writing),
        );
    }
    let in_flight = state.executor.in_flight(&project, None);
    let uploading =
        uploading.unwrap_or_else(|| in_flight.waiting.saturating_add(in_flight.running));
    let staged = state.staging.ledger().usage(&project);
    let bytes = stored.image_bytes.saturating_add(in_flight.charged);
    Ok(ok_json(&json!({
        "usage": {
            "image_size_total": resource(limits.image_size_total, mib(bytes)),
            "image_count_total": resource(limits.image_count_total, stored.images),
            "image_count_uploading": resource(limits.image_count_uploading, uploading),
            "image_stage_total": resource(limits.image_stage_total, mib(staged)),
        }
    })))
}
