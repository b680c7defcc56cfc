//! `POST /v2/tasks`, `GET /v2/tasks`, `GET /v2/tasks/{id}`.
//!
//! Create follows Glance's validation order (`RequestDeserializer.create`,
//! `TasksController.create`): body present and JSON; `type` then `input` present; the task
//! schema (`type` enum, `input` object or null, no extra top-level keys); for `import`, the
//! `import_from` URI (`validate_legacy_import_from_uri`, then the import filtering rules).
//! Then Sluice's own checks: `image_properties`, when given, is validated and authorised as
//! an image creation ([`ImageProperties`](crate::properties::ImageProperties): 400/403/413 with Glance's messages, before
//! anything is fetched; Glance checks nothing there and fails the task later, or stores what
//! it should have refused). Missing `import_from_format` or `image_properties` are not
//! create-time errors: the task fails asynchronously, as in Glance.

use http::header::LOCATION;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Body;
use serde_json::{Map, Value};
use sluice_pipeline::ssrf::ImportPolicy;
use sluice_pipeline::SourceError;

use crate::api::auth::RequestContext;
use crate::api::body::{json_response, read_json, ApiBody};
use crate::api::error::ApiError;
use crate::api::policy::{self, Action, Target};
use crate::api::{format_primitive_time, format_time, now, ok_json, Api};
use crate::config::Conversion;
use crate::imports::{InputError, LegacyImport};
use crate::meta::{TaskRecord, TaskStatus, TaskSummary, Timestamp};
use crate::properties::PropertyLimits;

mod list;
mod progress;

pub use list::list;

/// Task types in Glance's schema enum.
const GLANCE_TASK_TYPES: [&str; 3] = ["import", "api_image_import", "location_import"];

/// The only task type Sluice runs.
const IMPORT: &str = "import";

/// Top-level keys the task schema defines (Glance's `additionalProperties: false` refuses
/// anything else; these are accepted and ignored apart from `type` and `input`).
const TASK_SCHEMA_KEYS: [&str; 15] = [
    "id",
    "type",
    "status",
    "input",
    "result",
    "owner",
    "message",
    "image_id",
    "request_id",
    "user_id",
    "expires_at",
    "created_at",
    "updated_at",
    "self",
    "schema",
];

/// `POST /v2/tasks`.
pub async fn create<B>(
    api: &Api,
    ctx: &RequestContext,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let config = &api.state.config;
    let base_url = api.base_url(&request);
    let (parts, body) = request.into_parts();
    let body = read_json(config, body, &parts.headers).await?;
    let input = validate_task_body(&body)?;
    let policy = crate::imports::import_policy(config);
    validate_import_from(&policy, input).await?;
    check_input(ctx, input, &PropertyLimits::of(config), config.conversion)?;
    // Held until the task is stored and queued: a racing request counts it.
    let _reservation = crate::quota::admit_task(&api.state, &ctx.project_id).await?;

    let task = new_task(ctx, IMPORT, input.clone());
    // Below the free-space reserve the import could only fail: refuse it up front.
    api.state.store.space().check_import(0)?;
    crate::quota::admit_queued(&api.state, &ctx.project_id).await?;
    api.state.meta.put_task(&task).await?;
    if let Err(refused) = crate::quota::submit(&api.state, &task.id, &task.owner) {
        // The client never learns this id: do not leave a task that no worker will run.
        if let Err(e) = api.state.meta.delete_task(&task.id).await {
            tracing::warn!(task = %task.id, "removing a refused task failed: {e}");
        }
        return Err(refused);
    }
    tracing::info!(task = %task.id, owner = %task.owner, "import task created");
    let mut response = json_response(StatusCode::CREATED, &task_json(&task));
    let location = format!("{base_url}/v2/tasks/{}", task.id);
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

/// A new `pending` task of `task_type` for the caller, now.
pub fn new_task(ctx: &RequestContext, task_type: &str, input: Value) -> TaskRecord {
    let created = now();
    TaskRecord {
        id: uuid::Uuid::new_v4().to_string(),
        task_type: task_type.to_owned(),
        status: TaskStatus::Pending,
        input,
        result: None,
        owner: ctx.project_id.clone(),
        message: String::new(),
        reason: None,
        created_at: created,
        updated_at: created,
        expires_at: None,
        request_id: Some(ctx.request_id.clone()),
        user_id: Some(ctx.user_id.clone()),
        lease: None,
        attempts: 0,
        pinned_node: None,
    }
}

/// Checks the body's shape and returns its `input`.
pub(crate) fn validate_task_body(body: &Value) -> Result<&Value, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ApiError::BadRequest("Task 'type' is required".into()));
    };
    for key in ["type", "input"] {
        if !obj.contains_key(key) {
            return Err(ApiError::BadRequest(format!("Task '{key}' is required")));
        }
    }
    if let Some(extra) = obj.keys().find(|k| !TASK_SCHEMA_KEYS.contains(&k.as_str())) {
        return Err(schema_error(&format!(
            "Additional properties are not allowed ({} was unexpected)",
            py_repr(&Value::String(extra.clone()))
        )));
    }
    let task_type = obj.get("type").unwrap_or(&Value::Null);
    match task_type.as_str() {
        Some(t) if GLANCE_TASK_TYPES.contains(&t) => {}
        Some(_) => {
            return Err(schema_error(&format!(
                "{} is not one of ['import', 'api_image_import', 'location_import']",
                py_repr(task_type)
            )))
        }
        None => {
            return Err(schema_error(&format!(
                "{} is not of type 'string'",
                py_repr(task_type)
            )))
        }
    }
    let input = obj.get("input").unwrap_or(&Value::Null);
    if !(input.is_object() || input.is_null()) {
        return Err(schema_error(&format!(
            "{} is not of type 'null', 'object'",
            py_repr(input)
        )));
    }
    if task_type.as_str() != Some(IMPORT) {
        return Err(ApiError::BadRequest(format!(
            "Task type {} is not supported: Sluice runs only 'import' tasks.",
            py_repr(task_type)
        )));
    }
    Ok(input)
}

fn schema_error(detail: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Provided object does not match schema 'task': {detail}"
    ))
}

/// Glance's `validate_legacy_import_from_uri`, then the import policy (with DNS for names).
async fn validate_import_from(policy: &ImportPolicy, input: &Value) -> Result<(), ApiError> {
    let text = import_from_uri(input)?;
    check_uri(policy, text, UriUse::LegacyTask).await
}

/// Glance's `validate_legacy_import_from_uri`: `input.import_from`, a non-empty `http(s)` URI.
///
/// # Errors
/// 400 with Glance's messages.
pub(crate) fn import_from_uri(input: &Value) -> Result<&str, ApiError> {
    let uri = input.get("import_from").unwrap_or(&Value::Null);
    let text = match uri {
        Value::String(s) if !s.is_empty() => s.as_str(),
        Value::String(_) => return Err(ApiError::BadRequest("Invalid location: ".into())),
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid location: {}",
                py_str(other)
            )))
        }
    };
    let scheme = text
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    if scheme == "file" || scheme == "filesystem" {
        return Err(ApiError::BadRequest(
            "File based imports are not allowed. Please use a non-local source of image data."
                .into(),
        ));
    }
    if scheme != "http" && scheme != "https" {
        return Err(ApiError::BadRequest(
            "The given uri is not valid. Please specify a valid uri from the following list of \
             supported uri ['http']"
                .into(),
        ));
    }
    Ok(text)
}

/// What a URL is given for: Glance words a refusal after the way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriUse {
    /// A legacy `import` task's `import_from`.
    LegacyTask,
    /// A `web-download` import's `method.uri`.
    WebDownload,
}

impl UriUse {
    /// The words Glance puts before "does not pass filtering".
    fn subject(self) -> &'static str {
        match self {
            UriUse::LegacyTask => "legacy import task",
            UriUse::WebDownload => "web-download",
        }
    }
}

/// The import policy's pre-check of `text` ([`ImportPolicy::precheck`], DNS included),
/// refused in Glance's words for `use_` ([`filtering_refusal`]).
///
/// # Errors
/// 400 naming what was refused and why.
pub async fn check_uri(policy: &ImportPolicy, text: &str, use_: UriUse) -> Result<(), ApiError> {
    // Checked again, with every redirect, when the import connects; only approved addresses
    // are connected to.
    policy
        .precheck(text)
        .await
        .map(drop)
        .map_err(|e| ApiError::BadRequest(filtering_refusal(use_, text, &e)))
}

/// Glance's refusal of a URL (`validate_import_uri`: "URI for legacy import task …" or
/// "URI for web-download …"), followed by what was refused and why, so that a user can tell
/// a typo from a policy. The URL is shown without credentials ([`sluice_pipeline::redact`]).
pub fn filtering_refusal(use_: UriUse, url: &str, why: &dyn std::fmt::Display) -> String {
    format!(
        "URI for {} does not pass filtering: {}: {why}",
        use_.subject(),
        sluice_pipeline::redact::url(url)
    )
}

/// A task's failure message for a source that could not be opened: a policy refusal (of the
/// URL, a redirect target or a resolved address) in the words of a create-time refusal.
pub fn source_failure(use_: UriUse, e: &SourceError) -> String {
    match e {
        SourceError::Policy { url, reason } => filtering_refusal(use_, url, reason),
        other => other.to_string(),
    }
}

/// The task's `input` parsed as the worker will parse it ([`LegacyImport::parse`]): what it
/// refuses is a 4xx now, and the `image_properties`, when given, must be ones the caller may
/// set ([`ImageProperties::authorize`](crate::properties::ImageProperties::authorize)). What
/// Glance accepts here and fails later (a missing field) is accepted.
pub(crate) fn check_input(
    ctx: &RequestContext,
    input: &Value,
    limits: &PropertyLimits,
    conversion: Conversion,
) -> Result<(), ApiError> {
    let properties = match LegacyImport::parse(input, limits, conversion) {
        Ok(legacy) => Some(Box::new(legacy.properties)),
        Err(InputError::Deferred { properties, .. }) => properties,
        Err(refused) => return Err(refused.into()),
    };
    match properties {
        Some(properties) => properties.authorize(ctx),
        None => Ok(()),
    }
}

/// `GET /v2/tasks/{id}`.
pub async fn show(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let task = api
        .state
        .meta
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::TaskNotFound(id.to_owned()))?;
    policy::authorize(ctx, Action::GetTask, Target::Task(&task))?;
    let mut body = task_json(&task);
    if let Some(live) = progress::live_json(api, &task) {
        body["progress"] = live;
    }
    Ok(ok_json(&body))
}

/// A row of `GET /v2/images/{id}/tasks` ([`task_row_json`]) with the task's live `progress`
/// while it waits or runs (as `GET /v2/tasks/{id}` shows it).
pub fn image_task_row(api: &Api, task: &TaskRecord, image_id: &str) -> Value {
    let mut row = task_row_json(task, image_id);
    if let Some(live) = progress::live_json(api, task) {
        row["progress"] = live;
    }
    row
}

/// The full task (POST response and `GET /v2/tasks/{id}`, which adds the live `progress`):
/// Glance's keys, plus `reason` on failure.
pub fn task_json(task: &TaskRecord) -> Value {
    let mut obj = task_stub(&TaskSummary::from(task));
    obj.insert("input".into(), task.input.clone());
    obj.insert("result".into(), task.result.clone().unwrap_or(Value::Null));
    obj.insert("message".into(), Value::String(task.message.clone()));
    if let Some(image_id) = task.input.get("image_id").and_then(Value::as_str) {
        obj.insert("image_id".into(), Value::String(image_id.to_owned()));
    }
    if let Some(request_id) = &task.request_id {
        obj.insert("request_id".into(), Value::String(request_id.clone()));
    }
    if let Some(user_id) = &task.user_id {
        obj.insert("user_id".into(), Value::String(user_id.clone()));
    }
    insert_reason(&mut obj, task);
    Value::Object(obj)
}

/// A task as Glance's database layer formats it (`_task_format` with the task's info), which
/// `GET /v2/images/{id}/tasks` sends as is: every column, with `deleted`/`deleted_at` of a live
/// row, timestamps in oslo's `to_primitive` form, and `image_id` the image the task is listed
/// under; plus Sluice's `reason` on failure.
pub fn task_row_json(task: &TaskRecord, image_id: &str) -> Value {
    let text_or_null = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    let time = |ts: Timestamp| Value::String(format_primitive_time(ts));
    let mut obj = Map::new();
    for (key, value) in [
        ("id", Value::String(task.id.clone())),
        ("type", Value::String(task.task_type.clone())),
        ("status", Value::String(task.status.as_str().into())),
        ("owner", Value::String(task.owner.clone())),
        ("expires_at", task.expires_at.map_or(Value::Null, time)),
        ("created_at", time(task.created_at)),
        ("updated_at", time(task.updated_at)),
        ("deleted_at", Value::Null),
        ("deleted", Value::Bool(false)),
        ("image_id", Value::String(image_id.to_owned())),
        ("request_id", text_or_null(&task.request_id)),
        ("user_id", text_or_null(&task.user_id)),
        ("input", task.input.clone()),
        ("result", task.result.clone().unwrap_or(Value::Null)),
        ("message", Value::String(task.message.clone())),
    ] {
        obj.insert(key.into(), value);
    }
    insert_reason(&mut obj, task);
    Value::Object(obj)
}

/// Adds Sluice's stable failure code, `reason`, to a failed task's JSON.
fn insert_reason(obj: &mut Map<String, Value>, task: &TaskRecord) {
    if task.status == TaskStatus::Failure {
        if let Some(reason) = &task.reason {
            obj.insert("reason".into(), Value::String(reason.clone()));
        }
    }
}

/// Whether the caller may see the task (Glance's `_is_task_visible`): admins see every
/// task, others their project's.
pub fn visible(ctx: &RequestContext, task: &TaskRecord) -> bool {
    ctx.is_admin || task.owner == ctx.project_id
}

/// Whether the task has not expired at `now` (expired tasks are hidden until the sweeper
/// removes them).
pub fn unexpired(task: &TaskRecord, now: Timestamp) -> bool {
    task.expires_at.is_none_or(|e| e > now)
}

/// The list entry: id, type, status, owner, timestamps, self, schema (Glance's stub).
fn task_stub(task: &TaskSummary) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("id".into(), Value::String(task.id.clone()));
    obj.insert("type".into(), Value::String(task.task_type.clone()));
    obj.insert("status".into(), Value::String(task.status.as_str().into()));
    obj.insert("owner".into(), Value::String(task.owner.clone()));
    obj.insert(
        "created_at".into(),
        Value::String(format_time(task.created_at)),
    );
    obj.insert(
        "updated_at".into(),
        Value::String(format_time(task.updated_at)),
    );
    if let Some(expires) = task.expires_at {
        obj.insert("expires_at".into(), Value::String(format_time(expires)));
    }
    obj.insert(
        "self".into(),
        Value::String(format!("/v2/tasks/{}", task.id)),
    );
    obj.insert("schema".into(), Value::String("/v2/schemas/task".into()));
    obj
}

/// Python's `repr` of a JSON value, for Glance's schema error texts.
pub fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let escaped = s.replace('\\', "\\\\").replace('\'', "\\'");
            format!("'{escaped}'")
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Value::String(k.clone())), py_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python's `str` of a JSON value (strings unquoted).
fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

#[cfg(test)]
mod tests;
