//! `POST /v2/images/{id}/import`: an interoperable import into a `queued` image (Glance's
//! `ImagesController.import_image`), answered 202 at once; an `api_image_import` task does
//! the work ([`crate::imports`]).
//!
//! Validation is Glance's, in its order: the body (`method`, `method.name` among the
//! enabled methods, boolean `all_stores` / `all_stores_must_succeed`: 400); the project's
//! stored bytes against `image_size_total` (413, Glance's `enforce_image_size_total`); the image
//! (404 when invisible; 409 when `active`, when not `queued` for `web-download`, when
//! `container_format` or `disk_format` is unset); the `modify_image` policy (403); the import
//! lock (409 "Image has active task" while another import task of the image is pending or
//! processing); the URI through the import policy, DNS included (400 "URI for web-download
//! does not pass filtering: …", followed by Sluice's reason). Then Sluice's own: the image's
//! `disk_format` must be one Sluice imports (400, before any byte moves), the free-space
//! reserve (507), and the project's `tasks_waiting` / `image_count_uploading` caps (503, 413).
//!
//! `stores`, `all_stores` and `all_stores_must_succeed` are accepted with their
//! single-store meaning (Glance without `enabled_backends`): there is one store, so they
//! change nothing, and the task's `input.backend` is `[null]` as Glance's.
//!
//! The lock is taken with the one compare-and-swap of the image: `queued` → `importing` with
//! `os_glance_import_task` = the new task, so an upload, a stage or a second import that
//! races this one finds the image no longer `queued` (409). Glance leaves the image `queued`
//! until its flow starts; Sluice marks it `importing` at once, which is what a client polls
//! for anyway.
//!
//! `glance-direct` commits a stage ([`stage`](mod@super::stage)): the image must be `uploading` with a
//! complete stage (409 "Image needs to be staged before 'glance-direct' method can be used",
//! also while the stage is still streaming). The stage is in the data directory of the node
//! that received it; on a shared store the image record names that node, so any node accepts
//! the import and pins its task to the stage's node, whose claim loop runs it. Its lock sets `os_glance_import_task` and
//! leaves the image `uploading` (as Glance, until the task starts): were the task then
//! refused (a quota), the lock is dropped and the stage stays importable.

use http::{Request, Response, StatusCode};
use hyper::body::Body;
use serde_json::{json, Map, Value};

use crate::api::auth::RequestContext;
use crate::api::body::{empty_response, read_json, ApiBody};
use crate::api::error::ApiError;
use crate::api::images::{load, update};
use crate::api::policy::{self, Action, Target};
use crate::api::tasks::{self, check_uri, filtering_refusal, py_repr, UriUse};
use crate::api::{now, Api};
use crate::config::ImportMethod;
use crate::imports::{ImportRequest, ImportSource, API_IMAGE_IMPORT};
use crate::meta::{Decision, ImageRecord, ImageStatus, TaskStatus, Transition, LOCK_PROPERTY};

/// Glance's 409 for an import while another holds the image's lock.
const LOCKED: &str = "Image has active task";
/// Glance's 409 for a `glance-direct` import of an image without a (complete) stage.
const NOT_STAGED: &str = "Image needs to be staged before 'glance-direct' method can be used";

/// `POST /v2/images/{id}/import`.
pub async fn import<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let state = &api.state;
    let config = &state.config;
    let (parts, body) = request.into_parts();
    let body = read_json(config, body, &parts.headers).await?;
    let (method, request_body) = validate_body(&body, &config.enabled_import_methods)?;
    crate::quota::admit_import(state, &ctx.project_id).await?;

    let image = load(api, ctx, id, Action::GetImage).await?;
    check_image(&image, method)?;
    policy::authorize(ctx, Action::ModifyImage, Target::Image(&image))?;
    let held = live_lock(api, &image).await?;
    if held.is_some() {
        return Err(ApiError::Conflict(LOCKED.into()));
    }
    let uri = request_body.get("method").and_then(|m| m.get("uri"));
    let source = match method {
        ImportMethod::GlanceDirect => ImportSource::Staged,
        ImportMethod::WebDownload => ImportSource::Url {
            url: uri.and_then(Value::as_str).unwrap_or_default().to_owned(),
            uri_use: UriUse::WebDownload,
        },
    };
    // The import's one parse (the task parses it again when it runs): a format Sluice cannot
    // import is a 400 before anything else is taken.
    ImportRequest::for_image(&image, source, config.conversion).map_err(ApiError::BadRequest)?;
    let mut stage_node = None;
    match method {
        ImportMethod::GlanceDirect => stage_node = stage_holder(api, &image)?,
        ImportMethod::WebDownload => {
            let policy = crate::imports::import_policy(config);
            match uri {
                Some(Value::String(uri)) => check_uri(&policy, uri, UriUse::WebDownload).await?,
                other => {
                    let shown = other.map_or_else(|| "None".to_owned(), py_repr);
                    return Err(ApiError::BadRequest(filtering_refusal(
                        UriUse::WebDownload,
                        &shown,
                        &"method.uri must be an http or https URL",
                    )));
                }
            }
        }
    }
    // Below the free-space reserve the import could only fail: refuse it up front.
    state.store.space().check_import(0)?;
    crate::quota::admit_queued(state, &ctx.project_id).await?;

    let mut task = tasks::new_task(
        ctx,
        API_IMAGE_IMPORT,
        json!({"image_id": image.id, "import_req": request_body, "backend": [null]}),
    );
    if method == ImportMethod::GlanceDirect {
        // The stage is in one node's data directory: no other node may claim the task.
        task.pinned_node = stage_node;
    }
    state.meta.put_task(&task).await?;
    let locked = lock(
        api,
        ctx,
        id,
        &task.id,
        image.properties.get(LOCK_PROPERTY),
        method,
    );
    let mut locked = locked.await;
    if locked.is_ok() {
        locked = crate::quota::submit(state, &task.id, &task.owner);
        if locked.is_err() {
            unlock(api, ctx, id, &task.id, method).await;
        }
    }
    if let Err(refused) = locked {
        // The client never learns this id: do not leave a task that no worker will run.
        if let Err(e) = state.meta.delete_task(&task.id).await {
            tracing::warn!(task = %task.id, "removing a refused task failed: {e}");
        }
        return Err(refused);
    }
    tracing::info!(image = %id, task = %task.id, method = method.as_str(), "image import accepted");
    Ok(empty_response(StatusCode::ACCEPTED))
}

/// Glance's `_validate_import_body`: the method and the boolean flags. Returns the method and
/// the body (an object).
fn validate_body<'a>(
    body: &'a Value,
    enabled: &[ImportMethod],
) -> Result<(ImportMethod, &'a Map<String, Value>), ApiError> {
    let bad = |m: &str| Err(ApiError::BadRequest(m.to_owned()));
    let Value::Object(obj) = body else {
        return bad("Import request requires a 'method' field.");
    };
    let Some(method) = obj.get("method") else {
        return bad("Import request requires a 'method' field.");
    };
    let Some(name) = method.get("name") else {
        return bad("Import request requires a 'name' field.");
    };
    let Some(method) = enabled
        .iter()
        .copied()
        .find(|m| name.as_str() == Some(m.as_str()))
    else {
        let shown = name.as_str().map_or_else(|| py_repr(name), str::to_owned);
        return Err(ApiError::BadRequest(format!(
            "Unknown import method name '{shown}'."
        )));
    };
    for key in ["all_stores_must_succeed", "all_stores"] {
        if obj.get(key).is_some_and(|v| !v.is_boolean()) {
            return Err(ApiError::BadRequest(format!(
                "'{key}' must be boolean value only"
            )));
        }
    }
    if obj
        .get("stores")
        .is_some_and(|v| !matches!(v, Value::Array(items) if items.iter().all(Value::is_string)))
    {
        return bad("'stores' must be a list of store identifiers");
    }
    Ok((method, obj))
}

/// Glance's status and format checks of the target image (409s).
fn check_image(image: &ImageRecord, method: ImportMethod) -> Result<(), ApiError> {
    let conflict = |m: String| Err(ApiError::Conflict(m));
    if image.status == ImageStatus::Active {
        return conflict("Image with status active cannot be target for import".into());
    }
    match method {
        ImportMethod::WebDownload if image.status != ImageStatus::Queued => {
            return conflict(format!(
                "Image needs to be in 'queued' state to use '{}' method",
                method.as_str()
            ));
        }
        ImportMethod::WebDownload => {}
        ImportMethod::GlanceDirect if image.status != ImageStatus::Uploading => {
            return conflict(NOT_STAGED.into());
        }
        ImportMethod::GlanceDirect => {}
    }
    if image.container_format.is_none() {
        return conflict("'container_format' needs to be set before import".into());
    }
    if image.disk_format.is_none() {
        return conflict("'disk_format' needs to be set before import".into());
    }
    Ok(())
}

/// The node whose data directory holds the complete stage of `image`, which its
/// `glance-direct` import must run on: this node when its staging area has it, else, on a
/// shared store, the node the image record names ([`ImageRecord::staged_on`]); 409 (Glance's
/// "needs to be staged") when none does.
fn stage_holder(api: &Api, image: &ImageRecord) -> Result<Option<String>, ApiError> {
    let state = &api.state;
    let this = state.config.node_id.as_ref();
    if state.staging.staged(&image.id).is_some() {
        return Ok(this.cloned());
    }
    match &image.staged_on {
        Some(node) if state.meta.is_shared() && Some(node) != this => Ok(Some(node.clone())),
        _ => Err(ApiError::Conflict(NOT_STAGED.into())),
    }
}

/// The task holding the image's import lock, if it is still pending or processing (a lock
/// left by a finished or expired task is stale: Glance breaks it too).
async fn live_lock(api: &Api, image: &ImageRecord) -> Result<Option<String>, ApiError> {
    let Some(task_id) = image.properties.get(LOCK_PROPERTY) else {
        return Ok(None);
    };
    let task = api.state.meta.get_task(task_id).await?;
    Ok(task
        .filter(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Processing))
        .map(|t| t.id))
}

/// The status an import of `method` starts from, and the one its lock leaves the image in.
fn lock_statuses(method: ImportMethod) -> (ImageStatus, ImageStatus) {
    match method {
        ImportMethod::GlanceDirect => (ImageStatus::Uploading, ImageStatus::Uploading),
        ImportMethod::WebDownload => (ImageStatus::Queued, ImageStatus::Importing),
    }
}

/// Takes the lock: `os_glance_import_task` = `task_id` and `queued` → `importing`
/// (`glance-direct`: stays `uploading`), if the lock is still what was checked (`seen`).
async fn lock(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    task_id: &str,
    seen: Option<&String>,
    method: ImportMethod,
) -> Result<(), ApiError> {
    let seen = seen.cloned();
    let (from, locked) = lock_statuses(method);
    let outcome = update(api, ctx, id, Action::ModifyImage, &[from], |image| {
        if image.properties.get(LOCK_PROPERTY) != seen.as_ref() {
            return Err(ApiError::Conflict(LOCKED.into()));
        }
        image.status = locked;
        image
            .properties
            .insert(LOCK_PROPERTY.into(), task_id.to_owned());
        image.task_id = Some(task_id.to_owned());
        image.updated_at = now();
        Ok(Decision::Write)
    })
    .await?;
    match outcome {
        Transition::Done(_) => Ok(()),
        Transition::Refused(image) => {
            check_image(&image, method).and(Err(ApiError::Conflict(LOCKED.into())))
        }
        Transition::Kept(_) | Transition::Missing => Err(ApiError::Conflict(LOCKED.into())),
    }
}

/// Undoes [`lock`] after the task could not be queued.
async fn unlock(api: &Api, ctx: &RequestContext, id: &str, task_id: &str, method: ImportMethod) {
    let (from, locked) = lock_statuses(method);
    let undone = update(api, ctx, id, Action::ModifyImage, &[locked], |image| {
        if image.properties.get(LOCK_PROPERTY).map(String::as_str) != Some(task_id) {
            return Ok(Decision::Keep);
        }
        image.status = from;
        image.properties.remove(LOCK_PROPERTY);
        image.updated_at = now();
        Ok(Decision::Write)
    })
    .await;
    if let Err(e) = undone {
        tracing::warn!(image = %id, "releasing the import lock failed: {e}");
    }
}
