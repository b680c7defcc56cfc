//! The Images v2 calls a client makes after an import: show, list, download (with single
//! `Range`s), `PATCH` (both JSON-patch media types, in [`patch`]), tags, delete, and the
//! image's tasks.
//!
//! Who may do what is [`policy`]'s table. Visibility (Glance's rules without image members):
//! admins see every image; others see their project's images plus `public` and `community`
//! ones. An image the caller cannot see is 404 for every action; an image the caller sees
//! but may not act on is 403.

use std::cmp::Ordering;
use std::io::SeekFrom;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tokio::io::AsyncSeekExt;

use crate::api::auth::RequestContext;
use crate::api::body::{empty_response, ApiBody, FileBody};
use crate::api::endpoint::Query;
use crate::api::error::ApiError;
use crate::api::isotime::{parse_isotime, IsoTime};
use crate::api::listing::{
    column_equals, page_json, paginate, param, params, parse_limit, SortDir, SortValue,
};
use crate::api::policy::{self, Action, Target};
use crate::api::{format_time, now, ok_json, tasks, Api};
use crate::meta::ImageRecord;
use crate::properties::{self, PropertyLimits, VISIBILITIES};

mod patch;

pub use patch::patch;

/// Image sort keys (Glance's `SUPPORTED_SORT_KEYS`).
const SORT_KEYS: [&str; 8] = [
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
];

/// Image properties kept out of API output (Glance hides these internal ones).
const HIDDEN_PROPERTIES: [&str; 2] = ["os_glance_stage_host", "os_glance_hash_op_host"];

/// Whether the caller may see the image.
fn visible(ctx: &RequestContext, image: &ImageRecord) -> bool {
    policy::can_see_image(ctx, &image.owner, &image.visibility)
}

/// The image, if the caller may perform `action` on it ([`policy::authorize`]: 404 when it
/// cannot see the image, 403 when it sees it but may not act on it).
pub(crate) fn load(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> Result<ImageRecord, ApiError> {
    let image = api
        .state
        .meta
        .get_image(id)?
        .ok_or_else(|| ApiError::ImageNotFound(id.to_owned()))?;
    policy::authorize(ctx, action, Target::Image(&image))?;
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
    Ok(ok_json(&image_json(&load(api, ctx, id, Action::GetImage)?)))
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
    let image = load(api, ctx, id, Action::GetImage)?;
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
    let image = load(api, ctx, id, Action::DeleteImage)?;
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
    let mut image = load(api, ctx, id, Action::ModifyImage)?;
    properties::check_tag(tag)?;
    if !image.tags.iter().any(|t| t == tag) {
        PropertyLimits::of(&api.state.config).check_tags(image.tags.len().saturating_add(1))?;
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
    let mut image = load(api, ctx, id, Action::ModifyImage)?;
    let before = image.tags.len();
    image.tags.retain(|t| t != tag);
    if image.tags.len() == before {
        return Err(ApiError::TagNotFound(tag.to_owned()));
    }
    image.updated_at = now();
    api.state.meta.put_image(&image)?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// A parsed `GET /v2/images` request.
#[derive(Debug)]
struct ImageListRequest {
    sort: Vec<(String, SortDir)>,
    marker: Option<String>,
    limit: usize,
    filters: Vec<Filter>,
    /// The `visibility` filter (`None`: everything visible except others' community images).
    visibility: Option<String>,
    hidden: bool,
}

/// One image list filter.
#[derive(Debug)]
enum Filter {
    /// A base column (or an extra property) equal to one of these values.
    In(String, Vec<String>),
    /// The image has every one of these tags.
    Tags(Vec<String>),
    /// `size >= n`.
    SizeMin(u64),
    /// `size <= n`.
    SizeMax(u64),
    /// `protected` equals.
    Protected(bool),
    /// `created_at` or `updated_at` compared with an instant.
    Time(TimeColumn, TimeOp, IsoTime),
}

/// The image times a list can be filtered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeColumn {
    CreatedAt,
    UpdatedAt,
}

impl TimeColumn {
    fn of(self, image: &ImageRecord) -> IsoTime {
        IsoTime::from_timestamp(match self {
            TimeColumn::CreatedAt => image.created_at,
            TimeColumn::UpdatedAt => image.updated_at,
        })
    }
}

/// The operators of the time filters (Glance's `evaluate_filter_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeOp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
    Neq,
}

impl TimeOp {
    fn parse(op: &str) -> Option<TimeOp> {
        match op {
            "eq" => Some(TimeOp::Eq),
            "gt" => Some(TimeOp::Gt),
            "gte" => Some(TimeOp::Gte),
            "lt" => Some(TimeOp::Lt),
            "lte" => Some(TimeOp::Lte),
            "neq" => Some(TimeOp::Neq),
            _ => None,
        }
    }

    /// Whether a column that compares to the filter's instant as `ordering` passes.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            TimeOp::Eq => ordering.is_eq(),
            TimeOp::Gt => ordering.is_gt(),
            TimeOp::Gte => ordering.is_ge(),
            TimeOp::Lt => ordering.is_lt(),
            TimeOp::Lte => ordering.is_le(),
            TimeOp::Neq => ordering.is_ne(),
        }
    }
}

/// Columns that accept Glance's `in:` and `eq:` operators.
const OPERATOR_COLUMNS: [&str; 5] = ["id", "name", "status", "container_format", "disk_format"];

impl ImageListRequest {
    fn parse(query: &Query) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::BadRequest(m);
        let limit = parse_limit(param(query, "limit"))?;
        let marker = param(query, "marker").map(str::to_owned);
        let sort = parse_sort(query)?;
        let mut filters = Vec::new();
        let mut visibility = None;
        let mut hidden = false;
        for (key, value) in query {
            match key.as_str() {
                "limit" | "marker" | "sort" | "sort_key" | "sort_dir" | "member_status" => {}
                "changes-since" => {
                    return Err(bad(
                        "The 'changes-since' filter is no longer available on v2.".into(),
                    ))
                }
                "visibility" => {
                    if value != "all" && !VISIBILITIES.contains(&value.as_str()) {
                        return Err(bad(format!("Invalid visibility value: {value}")));
                    }
                    visibility = Some(value.clone());
                }
                "os_hidden" => hidden = parse_bool(key, value)?,
                "protected" => filters.push(Filter::Protected(parse_bool(key, value)?)),
                "tag" => filters.push(Filter::Tags(vec![value.clone()])),
                "size_min" | "size_max" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| bad(format!("Invalid value for {key}: {value}")))?;
                    filters.push(if key == "size_min" {
                        Filter::SizeMin(n)
                    } else {
                        Filter::SizeMax(n)
                    });
                }
                column if OPERATOR_COLUMNS.contains(&column) => {
                    filters.push(Filter::In(key.clone(), parse_operator(value)?));
                }
                "created_at" | "updated_at" => {
                    let column = if key == "created_at" {
                        TimeColumn::CreatedAt
                    } else {
                        TimeColumn::UpdatedAt
                    };
                    let (op, at) = parse_time_filter(key, value)?;
                    filters.push(Filter::Time(column, op, at));
                }
                _ => filters.push(Filter::In(key.clone(), vec![value.clone()])),
            }
        }
        Ok(ImageListRequest {
            sort,
            marker,
            limit,
            filters,
            visibility,
            hidden,
        })
    }

    fn matches(&self, ctx: &RequestContext, image: &ImageRecord) -> bool {
        if self.hidden || !visible(ctx, image) {
            return false;
        }
        let visibility_ok = match self.visibility.as_deref() {
            None => image.visibility != "community" || image.owner == ctx.project_id,
            Some("all") => true,
            Some(v) => image.visibility == v,
        };
        visibility_ok
            && self.filters.iter().all(|f| match f {
                Filter::In(column, values) => values
                    .iter()
                    .any(|v| column_equals(image_column(image, column), v)),
                Filter::Tags(tags) => tags.iter().all(|t| image.tags.contains(t)),
                Filter::SizeMin(n) => image.size >= *n,
                Filter::SizeMax(n) => image.size <= *n,
                Filter::Protected(p) => image.protected == *p,
                Filter::Time(column, op, at) => op.accepts(column.of(image).cmp(at)),
            })
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "Invalid value for {key}: {value}. It must be 'true' or 'false'."
        ))),
    }
}

/// `in:a,"b,c"` → `[a, b,c]`; `eq:x` and plain `x` → `[x]`.
fn parse_operator(value: &str) -> Result<Vec<String>, ApiError> {
    let Some((op, rest)) = value.split_once(':') else {
        return Ok(vec![value.to_owned()]);
    };
    match op {
        "eq" => Ok(vec![rest.to_owned()]),
        "in" => split_quoted(rest),
        _ => Err(ApiError::BadRequest(format!(
            "Unable to filter on a unknown operator '{op}'."
        ))),
    }
}

/// A time filter's value (Glance's `split_filter_op`): `<op>:<ISO 8601 time>`, or a bare
/// time meaning `eq`.
///
/// # Errors
/// 400 naming the operator when it is not one of `gt, gte, lt, lte, eq, neq`, or naming the
/// value when the time does not parse ([`parse_isotime`]).
fn parse_time_filter(key: &str, value: &str) -> Result<(TimeOp, IsoTime), ApiError> {
    if let Some(at) = parse_isotime(value.trim()) {
        return Ok((TimeOp::Eq, at));
    }
    // A prefix that cannot be an operator (`2026-11-24T17` of a malformed bare time) is
    // reported as a bad time, not as an unknown operator.
    let (op, time) = match value.split_once(':') {
        Some((op, time)) if op.bytes().all(|b| b.is_ascii_alphabetic()) => (op, time),
        _ => ("eq", value),
    };
    let op = TimeOp::parse(op).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Unable to filter on a unknown operator '{op}'. The operators of {key} are gt, \
             gte, lt, lte, eq and neq."
        ))
    })?;
    let time = time.trim();
    let at = parse_isotime(time).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Invalid value '{time}' for parameter '{key}': it must be an ISO 8601 time such as \
             2026-11-24T17:28:21Z, optionally after an operator and a colon (gt:, gte:, lt:, \
             lte:, eq:, neq:)."
        ))
    })?;
    Ok((op, at))
}

/// Splits a comma-separated list whose items may be double-quoted (to contain commas).
fn split_quoted(text: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in text.chars() {
        match c {
            '"' if quoted => quoted = false,
            '"' if current.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
                was_quoted = false;
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(ApiError::BadRequest(
            "Invalid filter value: the quotes are not closed.".into(),
        ));
    }
    out.push(current);
    Ok(out)
}

/// The sort keys and directions, from `sort=k:dir,…` or `sort_key`/`sort_dir`, with
/// Glance's tiebreakers `created_at` and `id` (descending) appended.
fn parse_sort(query: &Query) -> Result<Vec<(String, SortDir)>, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let check_key = |key: &str| -> Result<String, ApiError> {
        if SORT_KEYS.contains(&key) {
            Ok(key.to_owned())
        } else {
            Err(bad(format!(
                "Invalid sort key: {key}. It must be one of the following: {}.",
                SORT_KEYS.join(", ")
            )))
        }
    };
    let new_syntax = param(query, "sort");
    let keys: Vec<&str> = params(query, "sort_key").collect();
    let dirs: Vec<&str> = params(query, "sort_dir").collect();
    let mut sort: Vec<(String, SortDir)> = Vec::new();
    if let Some(spec) = new_syntax {
        if !keys.is_empty() || !dirs.is_empty() {
            return Err(bad("Old and new sorting syntax cannot be combined".into()));
        }
        for item in spec.split(',') {
            let (key, dir) = match item.split_once(':') {
                Some((k, d)) => (k.trim(), SortDir::parse(d.trim())?),
                None => (item.trim(), SortDir::Desc),
            };
            sort.push((check_key(key)?, dir));
        }
    } else {
        let dirs: Vec<SortDir> = dirs
            .iter()
            .map(|d| SortDir::parse(d))
            .collect::<Result<_, _>>()?;
        let keys: Vec<&str> = if keys.is_empty() {
            vec!["created_at"]
        } else {
            keys
        };
        if dirs.len() > 1 && dirs.len() != keys.len() {
            return Err(bad(
                "Number of sort dirs does not match the number of sort keys".into(),
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            let dir = match dirs.as_slice() {
                [] => SortDir::Desc,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(SortDir::Desc),
            };
            sort.push((check_key(key)?, dir));
        }
    }
    for tiebreak in ["created_at", "id"] {
        if !sort.iter().any(|(k, _)| k == tiebreak) {
            sort.push((tiebreak.to_owned(), SortDir::Desc));
        }
    }
    Ok(sort)
}

/// An image column (base field or extra property) for sorting and filtering.
fn image_column<'i>(image: &'i ImageRecord, column: &str) -> SortValue<'i> {
    match column {
        "id" => SortValue::Str(&image.id),
        "name" => image
            .name
            .as_deref()
            .map_or(SortValue::Null, SortValue::Str),
        "status" => SortValue::Str(&image.status),
        "visibility" => SortValue::Str(&image.visibility),
        "owner" => SortValue::Str(&image.owner),
        "container_format" => SortValue::Str(&image.container_format),
        "disk_format" => SortValue::Str(&image.disk_format),
        "checksum" => SortValue::Str(&image.checksum),
        "os_hash_algo" => SortValue::Str(&image.os_hash_algo),
        "os_hash_value" => SortValue::Str(&image.os_hash_value),
        "size" => SortValue::Int(i128::from(image.size)),
        "virtual_size" => image
            .virtual_size
            .map_or(SortValue::Null, |v| SortValue::Int(i128::from(v))),
        "min_disk" => SortValue::Int(i128::from(image.min_disk)),
        "min_ram" => SortValue::Int(i128::from(image.min_ram)),
        "protected" => SortValue::Bool(image.protected),
        "created_at" => SortValue::Int(i128::from(image.created_at)),
        "updated_at" => SortValue::Int(i128::from(image.updated_at)),
        property => image
            .properties
            .get(property)
            .map_or(SortValue::Null, |v| SortValue::Str(v)),
    }
}

/// `GET /v2/images`.
pub async fn list(
    api: &Api,
    ctx: &RequestContext,
    query: Query,
) -> Result<Response<ApiBody>, ApiError> {
    let req = ImageListRequest::parse(&query)?;
    let limit = req.limit;
    let meta = api.state.meta.clone();
    let ctx = ctx.clone();
    let page = tokio::task::spawn_blocking(move || -> Result<Vec<ImageRecord>, ApiError> {
        let images = meta.list_images()?;
        let marker = match &req.marker {
            Some(id) => Some(
                images
                    .iter()
                    .find(|i| &i.id == id && visible(&ctx, i))
                    .cloned()
                    .ok_or_else(|| ApiError::BadRequest(format!("No image found with ID {id}")))?,
            ),
            None => None,
        };
        let matching: Vec<ImageRecord> = images
            .into_iter()
            .filter(|i| req.matches(&ctx, i))
            .collect();
        let cmp = |a: &ImageRecord, b: &ImageRecord| -> Ordering {
            req.sort
                .iter()
                .map(|(k, dir)| dir.apply(image_column(a, k).cmp(&image_column(b, k))))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        };
        Ok(paginate(matching, marker.as_ref(), req.limit, cmp))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("image list worker: {e}")))??;

    let items = page.iter().map(image_json).collect();
    let last_id = page.last().map(|i| i.id.as_str());
    Ok(ok_json(&page_json("images", items, &query, limit, last_id)))
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
    let image = load(api, ctx, id, Action::DownloadImage)?;
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
