//! The Images v2 calls a client makes after an import: show, list, download (with single
//! `Range`s), `PATCH` (both JSON-patch media types), tags, delete, and the image's tasks.
//!
//! Visibility (Glance's rules without image members): admins see every image; others see
//! their project's images plus `public` and `community` ones. An image the caller cannot see
//! is 404 for every action; an image the caller sees but does not own is 403 for changes.

use std::io::SeekFrom;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use serde_json::{json, Map, Value};
use tokio::io::AsyncSeekExt;

use crate::api::auth::RequestContext;
use crate::api::body::{empty_response, parse_json, read_body, ApiBody, FileBody};
use crate::api::error::ApiError;
use crate::api::tasks::{self, py_repr};
use crate::api::{format_time, now, ok_json, Api};
use crate::meta::ImageRecord;

mod list;

pub use list::list;

/// Most tags on one image (Glance's `image_tag_quota`).
pub const MAX_TAGS: usize = 128;

/// Longest tag, name, owner or property key, in characters (Glance's schema `maxLength`).
pub const MAX_FIELD_LEN: usize = 255;

/// Longest extra property value, in bytes (Glance's `image_properties.value` is a `Text`
/// column; this bounds what one PATCH can store).
pub const MAX_PROPERTY_VALUE_LEN: usize = 65_535;

/// Most extra properties on one image (Glance's `image_property_quota`).
pub const MAX_PROPERTIES: usize = 128;

/// Read-only attributes (403 on PATCH).
const READ_ONLY: [&str; 15] = [
    "checksum",
    "created_at",
    "direct_url",
    "file",
    "id",
    "os_hash_algo",
    "os_hash_value",
    "os_hidden",
    "schema",
    "self",
    "size",
    "status",
    "stores",
    "updated_at",
    "virtual_size",
];

/// Reserved attributes (403 on PATCH).
const RESERVED: [&str; 3] = ["deleted", "deleted_at", "location"];

/// Image properties kept out of API output (Glance hides these internal ones).
const HIDDEN_PROPERTIES: [&str; 2] = ["os_glance_stage_host", "os_glance_hash_op_host"];

/// Visibility values.
const VISIBILITIES: [&str; 4] = ["community", "public", "private", "shared"];

/// The JSON-patch media types and which draft each follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchVersion {
    /// `application/openstack-images-v2.0-json-patch`: `{"replace": "/name", "value": …}`.
    V20,
    /// `application/openstack-images-v2.1-json-patch`: `{"op": "replace", "path": …}`.
    V21,
}

/// One patch operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchOp {
    Add,
    Remove,
    Replace,
}

/// Whether the caller may see the image.
fn visible(ctx: &RequestContext, image: &ImageRecord) -> bool {
    ctx.is_admin
        || image.owner == ctx.project_id
        || image.visibility == "public"
        || image.visibility == "community"
}

/// Whether the caller may change the image.
fn owned(ctx: &RequestContext, image: &ImageRecord) -> bool {
    ctx.is_admin || image.owner == ctx.project_id
}

/// The image, if the caller may see it; 404 otherwise.
fn load(api: &Api, ctx: &RequestContext, id: &str) -> Result<ImageRecord, ApiError> {
    match api.state.meta.get_image(id)? {
        Some(image) if visible(ctx, &image) => Ok(image),
        Some(_) | None => Err(ApiError::ImageNotFound(id.to_owned())),
    }
}

/// The image, if the caller may change it (`action` names Glance's policy in the 403).
fn load_owned(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    action: &str,
) -> Result<ImageRecord, ApiError> {
    let image = load(api, ctx, id)?;
    if !owned(ctx, &image) {
        return Err(ApiError::Forbidden(format!(
            "You are not authorized to complete {action} action."
        )));
    }
    Ok(image)
}

/// Glance's `_format_image`: extra properties flattened at top level, then the base fields.
pub fn image_json(image: &ImageRecord) -> Value {
    let mut obj = Map::new();
    for (k, v) in &image.properties {
        if !HIDDEN_PROPERTIES.contains(&k.as_str()) {
            obj.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let text_or_null = |s: &str| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s.to_owned())
        }
    };
    let base = [
        ("id", Value::String(image.id.clone())),
        (
            "name",
            image.name.clone().map_or(Value::Null, Value::String),
        ),
        ("status", Value::String(image.status.clone())),
        ("visibility", Value::String(image.visibility.clone())),
        ("protected", Value::Bool(image.protected)),
        ("os_hidden", Value::Bool(false)),
        ("checksum", text_or_null(&image.checksum)),
        ("os_hash_algo", text_or_null(&image.os_hash_algo)),
        ("os_hash_value", text_or_null(&image.os_hash_value)),
        ("owner", Value::String(image.owner.clone())),
        ("size", Value::from(image.size)),
        (
            "virtual_size",
            image.virtual_size.map_or(Value::Null, Value::from),
        ),
        ("container_format", text_or_null(&image.container_format)),
        ("disk_format", text_or_null(&image.disk_format)),
        ("created_at", Value::String(format_time(image.created_at))),
        ("updated_at", Value::String(format_time(image.updated_at))),
        (
            "tags",
            Value::Array(image.tags.iter().cloned().map(Value::String).collect()),
        ),
        ("min_ram", Value::from(image.min_ram)),
        ("min_disk", Value::from(image.min_disk)),
        ("self", Value::String(format!("/v2/images/{}", image.id))),
        (
            "file",
            Value::String(format!("/v2/images/{}/file", image.id)),
        ),
        ("schema", Value::String("/v2/schemas/image".into())),
    ];
    for (k, v) in base {
        obj.insert(k.to_owned(), v);
    }
    Value::Object(obj)
}

/// `GET /v2/images/{id}`.
pub fn show(api: &Api, ctx: &RequestContext, id: &str) -> Result<Response<ApiBody>, ApiError> {
    Ok(ok_json(&image_json(&load(api, ctx, id)?)))
}

/// `GET /v2/images/{id}/tasks` (Images API v2.12): `{"tasks": [...]}` holding the import task
/// that created the image (the image's `task_id`), as Glance's raw task rows
/// ([`tasks::task_row_json`]), unless the caller may not see that task (another project's,
/// for a public image) or it has expired. An image the caller cannot see is 404.
pub fn image_tasks(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let image = load(api, ctx, id)?;
    let task = match &image.task_id {
        Some(task_id) => api.state.meta.get_task(task_id)?,
        None => None,
    };
    let current = now();
    let rows: Vec<Value> = task
        .filter(|t| tasks::visible(ctx, t) && tasks::unexpired(t, current))
        .map(|t| tasks::task_row_json(&t, &image.id))
        .into_iter()
        .collect();
    Ok(ok_json(&json!({ "tasks": rows })))
}

/// `DELETE /v2/images/{id}`: removes the record, then the file.
pub fn delete(api: &Api, ctx: &RequestContext, id: &str) -> Result<Response<ApiBody>, ApiError> {
    let image = load_owned(api, ctx, id, "delete_image")?;
    if image.protected {
        return Err(ApiError::Forbidden(format!(
            "Image {id} is protected and cannot be deleted."
        )));
    }
    api.state.meta.delete_image(id)?;
    // The record is gone, so the image is deleted for clients; a file left behind by a
    // failed removal is an orphan that the store's startup cleanup removes.
    if let Err(e) = api.state.store.delete(id) {
        tracing::warn!(image = %id, "deleting image data failed: {e}");
    }
    tracing::info!(image = %id, "image deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `PUT /v2/images/{id}/tags/{tag}`: idempotent.
pub fn add_tag(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    tag: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let mut image = load_owned(api, ctx, id, "modify_image")?;
    check_len("tags", tag)?;
    if !image.tags.iter().any(|t| t == tag) {
        if image.tags.len() >= MAX_TAGS {
            return Err(ApiError::QuotaExceeded {
                what: "tags",
                limit: MAX_TAGS,
            });
        }
        image.tags.push(tag.to_owned());
        image.updated_at = now();
        api.state.meta.put_image(&image)?;
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `DELETE /v2/images/{id}/tags/{tag}`.
pub fn delete_tag(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    tag: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let mut image = load_owned(api, ctx, id, "modify_image")?;
    let before = image.tags.len();
    image.tags.retain(|t| t != tag);
    if image.tags.len() == before {
        return Err(ApiError::TagNotFound(tag.to_owned()));
    }
    image.updated_at = now();
    api.state.meta.put_image(&image)?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `PATCH /v2/images/{id}`.
pub async fn patch<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let version = match content_type.split(';').next().unwrap_or("").trim() {
        "application/openstack-images-v2.1-json-patch" => PatchVersion::V21,
        "application/openstack-images-v2.0-json-patch" => PatchVersion::V20,
        _ => return Err(ApiError::PatchMediaType(content_type)),
    };
    let config = &api.state.config;
    let (parts, body) = request.into_parts();
    let bytes = read_body(
        body,
        &parts.headers,
        config.max_request_body,
        Duration::from_secs(config.request_timeout_secs.max(1)),
    )
    .await?;
    let ops = parse_patch(&parse_json(&bytes)?, version)?;
    let mut image = load_owned(api, ctx, id, "modify_image")?;
    for (op, name, value) in &ops {
        apply_patch(&mut image, ctx, version, *op, name, value.as_ref())?;
    }
    image.updated_at = now();
    api.state.meta.put_image(&image)?;
    Ok(ok_json(&image_json(&image)))
}

/// Parses the operations of a patch body: `(op, attribute, value)`.
fn parse_patch(
    body: &Value,
    version: PatchVersion,
) -> Result<Vec<(PatchOp, String, Option<Value>)>, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let Value::Array(items) = body else {
        return Err(bad(
            "Request body must be a JSON array of operation objects.".into(),
        ));
    };
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(obj) = item else {
            return Err(bad("Operations must be JSON objects.".into()));
        };
        let (op, path) = match version {
            PatchVersion::V21 => {
                let op = match obj.get("op").and_then(Value::as_str) {
                    Some("add") => PatchOp::Add,
                    Some("remove") => PatchOp::Remove,
                    Some("replace") => PatchOp::Replace,
                    Some(other) => return Err(bad(format!("Invalid operation: `{other}`."))),
                    None => {
                        return Err(bad(
                            "Unable to find `op` in JSON Schema change. It must be one of the \
                             following: add, remove, replace."
                                .into(),
                        ))
                    }
                };
                let path = obj
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Unable to find 'path' in JSON Schema change".into()))?;
                (op, path)
            }
            PatchVersion::V20 => {
                let found: Vec<(PatchOp, &Value)> = [
                    ("add", PatchOp::Add),
                    ("remove", PatchOp::Remove),
                    ("replace", PatchOp::Replace),
                ]
                .iter()
                .filter_map(|(k, op)| obj.get(*k).map(|v| (*op, v)))
                .collect();
                match found.as_slice() {
                    [(op, Value::String(path))] => (*op, path.as_str()),
                    _ => {
                        return Err(bad(
                            "Operation objects must contain exactly one member named \"add\", \
                             \"remove\", or \"replace\"."
                                .into(),
                        ))
                    }
                }
            }
        };
        let value = match op {
            PatchOp::Remove => None,
            PatchOp::Add | PatchOp::Replace => {
                let name = if op == PatchOp::Add { "add" } else { "replace" };
                Some(obj.get("value").cloned().ok_or_else(|| {
                    bad(format!(
                        "Operation \"{name}\" requires a member named \"value\"."
                    ))
                })?)
            }
        };
        ops.push((op, decode_pointer(path)?, value));
    }
    Ok(ops)
}

/// A depth-one JSON pointer (`/name`) to its attribute name, with Glance's checks.
fn decode_pointer(path: &str) -> Result<String, ApiError> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    let Some(rest) = path.strip_prefix('/') else {
        return bad(format!("Pointer `{path}` does not start with \"/\"."));
    };
    if path.contains("//") {
        return bad(format!("Pointer `{path}` contains adjacent \"/\"."));
    }
    if path.len() > 1 && path.ends_with('/') {
        return bad(format!("Pointer `{path}` end with \"/\"."));
    }
    if rest.contains('/') {
        return bad(format!("Invalid JSON pointer for this resource: '{path}'"));
    }
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => {
                    return bad(format!(
                        "Pointer `{path}` contains \"~\" not part of a recognized escape \
                         sequence."
                    ))
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn schema_error(detail: String) -> ApiError {
    ApiError::BadRequest(format!(
        "Provided object does not match schema 'image': {detail}"
    ))
}

/// A string field's length check (Glance's `maxLength: 255`).
fn check_len(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().count() > MAX_FIELD_LEN {
        return Err(schema_error(format!(
            "{} is too long (in {field})",
            py_repr(&Value::String(value.to_owned()))
        )));
    }
    Ok(())
}

fn want_string<'v>(name: &str, value: &'v Value) -> Result<&'v str, ApiError> {
    value.as_str().ok_or_else(|| {
        schema_error(format!(
            "{} is not of type 'string' (in {name})",
            py_repr(value)
        ))
    })
}

fn want_enum(name: &str, value: &Value, allowed: &[&str]) -> Result<String, ApiError> {
    match value.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s.to_owned()),
        _ => {
            let list: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
            Err(schema_error(format!(
                "{} is not one of [{}] (in {name})",
                py_repr(value),
                list.join(", ")
            )))
        }
    }
}

fn want_count(name: &str, value: &Value) -> Result<u64, ApiError> {
    match value {
        Value::Number(n) if n.is_u64() => n
            .as_u64()
            .ok_or_else(|| schema_error(format!("{n} is not of type 'integer'"))),
        Value::Number(n) if n.is_i64() => Err(schema_error(format!(
            "{n} is less than the minimum of 0 (in {name})"
        ))),
        other => Err(schema_error(format!(
            "{} is not of type 'integer' (in {name})",
            py_repr(other)
        ))),
    }
}

/// Applies one operation to `image`.
fn apply_patch(
    image: &mut ImageRecord,
    ctx: &RequestContext,
    version: PatchVersion,
    op: PatchOp,
    name: &str,
    value: Option<&Value>,
) -> Result<(), ApiError> {
    if READ_ONLY.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "Attribute '{name}' is read-only."
        )));
    }
    if RESERVED.contains(&name) || name.starts_with("os_glance") {
        return Err(ApiError::Forbidden(format!(
            "Attribute '{name}' is reserved."
        )));
    }
    if name == "locations" {
        return Err(ApiError::Forbidden(
            "It's not allowed to update locations if locations are invisible.".into(),
        ));
    }
    let base = [
        "name",
        "visibility",
        "protected",
        "min_disk",
        "min_ram",
        "tags",
        "owner",
        "disk_format",
        "container_format",
    ];
    if base.contains(&name) {
        let Some(value) = value else {
            return Err(ApiError::Forbidden(format!(
                "Property {name} may not be removed."
            )));
        };
        return set_base(image, ctx, name, value);
    }
    // An extra property.
    check_len("property name", name)?;
    let exists = image.properties.contains_key(name);
    match (op, value) {
        (PatchOp::Remove, _) | (_, None) => {
            if image.properties.remove(name).is_none() {
                return Err(ApiError::Conflict(format!(
                    "Property {name} does not exist."
                )));
            }
        }
        (PatchOp::Add | PatchOp::Replace, Some(value)) => {
            if op == PatchOp::Replace && !exists {
                return Err(ApiError::Conflict(format!(
                    "Property {name} does not exist."
                )));
            }
            if op == PatchOp::Add && exists && version == PatchVersion::V20 {
                return Err(ApiError::Conflict(format!(
                    "Property {name} already present."
                )));
            }
            let text = want_string(name, value)?;
            if text.len() > MAX_PROPERTY_VALUE_LEN {
                return Err(schema_error(format!(
                    "the value of {name} is longer than {MAX_PROPERTY_VALUE_LEN} bytes"
                )));
            }
            if !exists && image.properties.len() >= MAX_PROPERTIES {
                return Err(ApiError::QuotaExceeded {
                    what: "properties",
                    limit: MAX_PROPERTIES,
                });
            }
            image.properties.insert(name.to_owned(), text.to_owned());
        }
    }
    Ok(())
}

/// Sets a base attribute (`add` and `replace` both replace, as in Glance).
fn set_base(
    image: &mut ImageRecord,
    ctx: &RequestContext,
    name: &str,
    value: &Value,
) -> Result<(), ApiError> {
    match name {
        "name" => {
            image.name = match value {
                Value::Null => None,
                other => {
                    let text = want_string(name, other)?;
                    check_len(name, text)?;
                    Some(text.to_owned())
                }
            };
        }
        "visibility" => {
            let visibility = want_enum(name, value, &VISIBILITIES)?;
            if visibility == "public" && !ctx.is_admin {
                return Err(ApiError::Forbidden(
                    "You are not authorized to complete publicize_image action.".into(),
                ));
            }
            image.visibility = visibility;
        }
        "protected" => {
            image.protected = value.as_bool().ok_or_else(|| {
                schema_error(format!(
                    "{} is not of type 'boolean' (in protected)",
                    py_repr(value)
                ))
            })?;
        }
        "min_disk" => image.min_disk = want_count(name, value)?,
        "min_ram" => image.min_ram = want_count(name, value)?,
        "tags" => {
            let Value::Array(items) = value else {
                return Err(schema_error(format!(
                    "{} is not of type 'array' (in tags)",
                    py_repr(value)
                )));
            };
            let mut tags: Vec<String> = Vec::with_capacity(items.len().min(MAX_TAGS));
            for item in items {
                let tag = want_string(name, item)?;
                check_len(name, tag)?;
                if !tags.iter().any(|t| t == tag) {
                    if tags.len() >= MAX_TAGS {
                        return Err(ApiError::QuotaExceeded {
                            what: "tags",
                            limit: MAX_TAGS,
                        });
                    }
                    tags.push(tag.to_owned());
                }
            }
            image.tags = tags;
        }
        "owner" => {
            if !ctx.is_admin {
                return Err(ApiError::Forbidden(
                    "Owner can't be updated by non admin.".into(),
                ));
            }
            let owner = want_string(name, value)?;
            check_len(name, owner)?;
            image.owner = owner.to_owned();
        }
        "disk_format" | "container_format" => {
            // Sluice stores only active images, whose formats describe the stored bytes.
            return Err(ApiError::Forbidden(format!(
                "Attribute {name} can be only replaced for a queued image."
            )));
        }
        _ => {
            return Err(ApiError::Internal(format!(
                "set_base called for non-base attribute {name}"
            )))
        }
    }
    Ok(())
}

/// A requested byte range, before the image size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// `bytes=a-b` or `bytes=a-`.
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a `Range` header value (one range only).
    fn parse(value: &str) -> Result<ByteRange, ApiError> {
        let spec = value
            .trim()
            .strip_prefix("bytes=")
            .ok_or(ApiError::RangeNotSatisfiable(0))?;
        if spec.contains(',') {
            return Err(ApiError::BadRequest(
                "Requests with multiple ranges are not supported in Glance. You may make \
                 multiple single-range requests instead."
                    .into(),
            ));
        }
        Self::parse_spec(spec.trim())
    }

    /// Parses a legacy `Content-Range: bytes a-b/*` request header.
    fn parse_content_range(value: &str) -> Result<ByteRange, ApiError> {
        let spec = value
            .trim()
            .strip_prefix("bytes ")
            .and_then(|s| s.split_once('/'))
            .map(|(range, _)| range.trim())
            .ok_or(ApiError::RangeNotSatisfiable(0))?;
        match Self::parse_spec(spec)? {
            ByteRange::From(a, Some(b)) => Ok(ByteRange::From(a, Some(b))),
            _ => Err(ApiError::RangeNotSatisfiable(0)),
        }
    }

    fn parse_spec(spec: &str) -> Result<ByteRange, ApiError> {
        let unsatisfiable = ApiError::RangeNotSatisfiable(0);
        let (start, end) = spec.split_once('-').ok_or(unsatisfiable.clone())?;
        let num = |s: &str| -> Result<u64, ApiError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::RangeNotSatisfiable(0));
            }
            s.parse().map_err(|_| ApiError::RangeNotSatisfiable(0))
        };
        match (start.trim(), end.trim()) {
            ("", n) => Ok(ByteRange::Suffix(num(n)?)),
            (a, "") => Ok(ByteRange::From(num(a)?, None)),
            (a, b) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(unsatisfiable);
                }
                Ok(ByteRange::From(a, Some(b)))
            }
        }
    }

    /// `(first, last)` byte positions, inclusive, within an image of `size` bytes.
    fn resolve(self, size: u64) -> Result<(u64, u64), ApiError> {
        let unsatisfiable = ApiError::RangeNotSatisfiable(size);
        let last_byte = size.checked_sub(1).ok_or(unsatisfiable.clone())?;
        match self {
            ByteRange::From(a, b) => {
                if a >= size {
                    return Err(unsatisfiable);
                }
                Ok((a, b.unwrap_or(last_byte).min(last_byte)))
            }
            ByteRange::Suffix(0) => Err(unsatisfiable),
            ByteRange::Suffix(n) => Ok((size.saturating_sub(n), last_byte)),
        }
    }
}

/// The requested range, from `Range` or the legacy `Content-Range` request header.
fn requested_range(headers: &HeaderMap) -> Result<Option<ByteRange>, ApiError> {
    fn text(v: &HeaderValue) -> Result<&str, ApiError> {
        v.to_str().map_err(|_| ApiError::RangeNotSatisfiable(0))
    }
    if let Some(v) = headers.get(RANGE) {
        return ByteRange::parse(text(v)?).map(Some);
    }
    if let Some(v) = headers.get(CONTENT_RANGE) {
        return ByteRange::parse_content_range(text(v)?).map(Some);
    }
    Ok(None)
}

/// `GET /v2/images/{id}/file`: streamed in chunks; single ranges give 206.
pub async fn download<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: &Request<B>,
) -> Result<Response<ApiBody>, ApiError> {
    let image = load(api, ctx, id)?;
    if image.status != "active" {
        return Ok(empty_response(StatusCode::NO_CONTENT));
    }
    let range = requested_range(request.headers())?;
    let path = api
        .state
        .store
        .path(id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::ImageDataNotFound(id.to_owned()))
        }
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "opening {}: {e}",
                path.display()
            )))
        }
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("stat {}: {e}", path.display())))?
        .len();
    if size != image.size {
        tracing::warn!(image = %id, recorded = image.size, on_disk = size, "image size mismatch");
    }
    let (status, first, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(range) => {
            let (first, last) = range.resolve(size)?;
            (
                StatusCode::PARTIAL_CONTENT,
                first,
                last.saturating_sub(first).saturating_add(1),
            )
        }
    };
    if first > 0 {
        file.seek(SeekFrom::Start(first))
            .await
            .map_err(|e| ApiError::Internal(format!("seeking {}: {e}", path.display())))?;
    }
    let mut response = Response::new(FileBody::new(file, len).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    // Glance sends the image's hex md5 here (not RFC 1864 base64), also on 206.
    if let Ok(md5) = HeaderValue::try_from(image.checksum.as_str()) {
        if !image.checksum.is_empty() {
            headers.insert(http::header::HeaderName::from_static("content-md5"), md5);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let last = first.saturating_add(len).saturating_sub(1);
        if let Ok(v) = HeaderValue::try_from(format!("bytes {first}-{last}/{size}")) {
            headers.insert(CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests;
