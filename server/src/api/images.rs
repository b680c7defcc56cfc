//! The Images v2 calls a client makes after an import: show, list, download (with single
//! `Range`s), `PATCH` (both JSON-patch media types, in `patch`), tags, delete, and the
//! image's tasks.
//!
//! Who may do what is [`policy`]'s table. Visibility: admins see every image; others see
//! their project's images, `public` and `community` ones, and `shared` ones their project is
//! a member of ([`members`]). An image the caller cannot see is 404 for every action; an
//! image the caller sees but may not act on is 403.

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use crate::api::auth::RequestContext;
use crate::api::body::{empty_response, ApiBody, FileBody};
use crate::api::error::ApiError;
use crate::api::policy::{self, Action};
use crate::api::{format_time, now, ok_json, tasks, Api};
use crate::meta::{Decision, ImageRecord, ImageStatus, Transition};
use crate::properties::{self, PropertyLimits, VISIBILITIES};

mod create;
mod import;
mod list;
pub mod members;
mod patch;
mod stage;
mod upload;

pub use create::create;
pub use import::import;
pub use list::list;

pub use patch::patch;
pub use stage::stage;
pub use upload::upload;

/// Image properties kept out of API output (Glance hides these internal ones).
const HIDDEN_PROPERTIES: [&str; 2] = ["os_glance_stage_host", "os_glance_hash_op_host"];

/// Whether the caller may see the image.
fn visible(ctx: &RequestContext, image: &ImageRecord) -> bool {
    policy::can_see_image(ctx, &image.owner, &image.visibility)
}

/// The image, if the caller may perform `action` on it ([`policy::authorize`]: 404 when it
/// cannot see the image, 403 when it sees it but may not act on it).
pub(crate) async fn load(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> Result<ImageRecord, ApiError> {
    let image = api
        .state
        .meta
        .get_image(id)
        .await?
        .ok_or_else(|| ApiError::ImageNotFound(id.to_owned()))?;
    let member = members::is_member(api, ctx, id).await?;
    policy::authorize(ctx, action, members::target(ctx, &image, member))?;
    Ok(image)
}

/// Changes image `id` through the one compare-and-swap ([`crate::meta::MetaStore::transition_image`]),
/// so that it cannot race an upload, an import or another change: `change` sees the current
/// record once the caller may perform `action` on it ([`policy::authorize`]), and only when
/// its status is one of `expected`; it edits the record and decides, or refuses with an
/// error (nothing written).
///
/// # Errors
/// 404 when there is no such image (or the caller cannot see it), 403 from the policy,
/// `change`'s error, or a metadata error. A status not `expected` is not an error: it comes
/// back as [`Transition::Refused`] for the caller to word.
pub(crate) async fn update(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    action: Action,
    expected: &[ImageStatus],
    change: impl FnOnce(&mut ImageRecord) -> Result<Decision, ApiError> + Send,
) -> Result<Transition, ApiError> {
    let member = members::is_member(api, ctx, id).await?;
    let mut change = Some(change);
    let mut refused = None;
    let mut step = |image: &mut ImageRecord| {
        let target = members::target(ctx, image, member);
        let decided = policy::authorize(ctx, action, target).and_then(|()| {
            // The store calls this at most once.
            change.take().map_or(Ok(Decision::Keep), |f| f(image))
        });
        decided.unwrap_or_else(|e| {
            refused = Some(e);
            Decision::Keep
        })
    };
    let outcome = api
        .state
        .meta
        .transition_image(id, expected, &mut step)
        .await?;
    if let Some(e) = refused {
        return Err(e);
    }
    match outcome {
        Transition::Missing => Err(ApiError::ImageNotFound(id.to_owned())),
        Transition::Refused(image) => {
            // Seen by a caller that may not see it: still 404, whatever its status.
            policy::authorize(ctx, action, members::target(ctx, &image, member))?;
            Ok(Transition::Refused(image))
        }
        other => Ok(other),
    }
}

/// Glance's `_format_image`: extra properties flattened at top level, then the base fields.
pub fn image_json(image: &ImageRecord) -> Value {
    let mut obj = Map::new();
    for (k, v) in &image.properties {
        if !HIDDEN_PROPERTIES.contains(&k.as_str()) {
            obj.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let text_or_null = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    let base = [
        ("id", Value::String(image.id.clone())),
        (
            "name",
            image.name.clone().map_or(Value::Null, Value::String),
        ),
        ("status", Value::String(image.status.as_str().to_owned())),
        ("visibility", Value::String(image.visibility.clone())),
        ("protected", Value::Bool(image.protected)),
        ("os_hidden", Value::Bool(false)),
        ("checksum", text_or_null(&image.checksum)),
        ("os_hash_algo", text_or_null(&image.os_hash_algo)),
        ("os_hash_value", text_or_null(&image.os_hash_value)),
        ("owner", Value::String(image.owner.clone())),
        ("size", image.size.map_or(Value::Null, Value::from)),
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
pub async fn show(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
) -> Result<Response<ApiBody>, ApiError> {
    Ok(ok_json(&image_json(
        &load(api, ctx, id, Action::GetImage).await?,
    )))
}

/// `GET /v2/images/{id}/tasks` (Images API v2.12): `{"tasks": [...]}` holding every task of
/// the image (Glance's tasks with that `image_id`: its `api_image_import` tasks, or the
/// `import` task that created it), oldest first, as Glance's raw task rows
/// ([`tasks::task_row_json`]), except those the caller may not see (another project's, for a
/// public image) or that have expired. An image the caller cannot see is 404.
pub async fn image_tasks(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let image = load(api, ctx, id, Action::GetImage).await?;
    let current = now();
    let rows: Vec<Value> = api
        .state
        .meta
        .image_tasks(&image.id)
        .await?
        .into_iter()
        .filter(|t| tasks::visible(ctx, t) && tasks::unexpired(t, current))
        .map(|t| tasks::image_task_row(api, &t, &image.id))
        .collect();
    Ok(ok_json(&json!({ "tasks": rows })))
}

/// `DELETE /v2/images/{id}`: removes the record (in any status, as Glance: an upload or
/// import in flight then finds it gone and removes what it wrote), then the file.
pub async fn delete(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let deleted = update(
        api,
        ctx,
        id,
        Action::DeleteImage,
        &ImageStatus::ALL,
        |image| {
            if image.protected {
                return Err(ApiError::Forbidden(format!(
                    "Image {id} is protected and cannot be deleted."
                )));
            }
            Ok(Decision::Delete)
        },
    )
    .await?;
    if let Transition::Done(image) = &deleted {
        // Glance's only cancel: an import in flight stops and removes what it wrote.
        crate::imports::cancel_for_deleted(&api.state, image);
    }
    // The record is gone, so the image is deleted for clients; a file left behind by a
    // failed removal is an orphan that the store's startup cleanup removes.
    if let Err(e) = api.state.store.delete(id) {
        tracing::warn!(image = %id, "deleting image data failed: {e}");
    }
    if let Err(e) = api.state.staging.discard(id) {
        tracing::warn!(image = %id, "deleting staged data failed: {e}");
    }
    tracing::info!(image = %id, "image deleted");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `POST /v2/images/{id}/actions/reactivate` (`active`) and `…/deactivate` (`!active`), as
/// Glance's `Image.deactivate`/`reactivate`: `active` ↔ `deactivated`; asking for the status
/// the image already has is a no-op (204); any other status is 403 "Not allowed to
/// deactivate image in status 'queued'". The check and the change are one
/// compare-and-swap, so the race Glance answers with 409 cannot happen.
pub async fn set_active(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    active: bool,
) -> Result<Response<ApiBody>, ApiError> {
    use ImageStatus::{Active, Deactivated};
    let (action, verb, from, to) = if active {
        (Action::Reactivate, "reactivate", Deactivated, Active)
    } else {
        (Action::Deactivate, "deactivate", Active, Deactivated)
    };
    update(api, ctx, id, action, &ImageStatus::ALL, |image| {
        if image.status == to {
            return Ok(Decision::Keep);
        }
        if image.status != from {
            return Err(ApiError::Forbidden(format!(
                "Not allowed to {verb} image in status '{}'",
                image.status
            )));
        }
        image.status = to;
        image.updated_at = now();
        Ok(Decision::Write)
    })
    .await?;
    tracing::info!(image = %id, "image {verb}d");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `PUT /v2/images/{id}/tags/{tag}`: idempotent.
pub async fn add_tag(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    tag: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let limits = PropertyLimits::of(&api.state.config);
    update(
        api,
        ctx,
        id,
        Action::ModifyImage,
        &ImageStatus::ALL,
        |image| {
            properties::check_tag(tag)?;
            if image.tags.iter().any(|t| t == tag) {
                return Ok(Decision::Keep);
            }
            limits.check_tags(image.tags.len().saturating_add(1))?;
            image.tags.push(tag.to_owned());
            image.updated_at = now();
            Ok(Decision::Write)
        },
    )
    .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `DELETE /v2/images/{id}/tags/{tag}`.
pub async fn delete_tag(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    tag: &str,
) -> Result<Response<ApiBody>, ApiError> {
    update(
        api,
        ctx,
        id,
        Action::ModifyImage,
        &ImageStatus::ALL,
        |image| {
            let before = image.tags.len();
            image.tags.retain(|t| t != tag);
            if image.tags.len() == before {
                return Err(ApiError::TagNotFound(tag.to_owned()));
            }
            image.updated_at = now();
            Ok(Decision::Write)
        },
    )
    .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
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
    let image = load(api, ctx, id, Action::DownloadImage).await?;
    if image.status == ImageStatus::Deactivated && !ctx.is_admin {
        return Err(ApiError::Forbidden(
            "The requested image has been deactivated. Image data download is forbidden.".into(),
        ));
    }
    if !image.status.has_data() {
        return Ok(empty_response(StatusCode::NO_CONTENT));
    }
    let range = requested_range(request.headers())?;
    let stored = api
        .state
        .store
        .open(id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::ImageDataNotFound(id.to_owned()))?;
    let size = stored.size();
    if image.size != Some(size) {
        tracing::warn!(image = %id, recorded = ?image.size, on_disk = size, "image size mismatch");
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
    let file = stored
        .read(first, len)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = Response::new(FileBody::new(file, len).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    // Glance sends the image's hex md5 here (not RFC 1864 base64), also on 206.
    if let Some(Ok(md5)) = image.checksum.as_deref().map(HeaderValue::try_from) {
        headers.insert(http::header::HeaderName::from_static("content-md5"), md5);
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
