//! Image members, as Glance's `image_members` API: the owner of a `shared` image adds and
//! removes projects (`add_member`, `delete_member`); each member answers for itself
//! (`modify_member`: `pending`, `accepted` or `rejected`); the owner sees every member, a
//! member only its own membership (`get_member(s)`).
//!
//! A member sees the image whatever its status (Glance shows a shared image by id to
//! pending and rejected members too), may download it, and may not change or delete it
//! (403: it sees the image). Lists show it by `member_status` (default `accepted`; see
//! `images::list`). Only `shared` images have members (403 otherwise, Glance's text); an
//! image has at most `image_member_quota` members (413). Deleting an image deletes its
//! members in the same write.

use http::{Request, Response, StatusCode};
use hyper::body::Body;
use serde_json::{json, Value};

use super::load;
use crate::api::auth::RequestContext;
use crate::api::body::{empty_response, read_json, ApiBody};
use crate::api::error::ApiError;
use crate::api::policy::{Action, Target};
use crate::api::{format_time, now, ok_json, Api};
use crate::meta::{AddMember, ImageRecord, MemberRecord, MemberStatus};

/// Whether image `id` is shared with the caller's project (an admin acts as an admin, not
/// as a member).
///
/// # Errors
/// A metadata error.
pub(crate) async fn is_member(api: &Api, ctx: &RequestContext, id: &str) -> Result<bool, ApiError> {
    if ctx.is_admin {
        return Ok(false);
    }
    Ok(api
        .state
        .meta
        .get_member(id, &ctx.project_id)
        .await?
        .is_some())
}

/// The policy target of `image` for a caller whose project is (`member`) or is not a member.
pub(crate) fn target<'i>(ctx: &RequestContext, image: &'i ImageRecord, member: bool) -> Target<'i> {
    if member && image.visibility == "shared" && image.owner != ctx.project_id {
        Target::SharedWith(image)
    } else {
        Target::Image(image)
    }
}

/// Glance's member document.
fn member_json(member: &MemberRecord) -> Value {
    json!({
        "created_at": format_time(member.created_at),
        "image_id": member.image_id,
        "member_id": member.member_id,
        "schema": "/v2/schemas/member",
        "status": member.status.as_str(),
        "updated_at": format_time(member.updated_at),
    })
}

/// The image, when the caller may perform `action` on its members and it is `shared`.
async fn shared_image(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> Result<ImageRecord, ApiError> {
    let image = load(api, ctx, id, action).await?;
    if image.visibility != "shared" {
        return Err(ApiError::Forbidden(format!(
            "Error fetching members of image {id}: Only shared images have members."
        )));
    }
    Ok(image)
}

/// Whether the caller sees member `member` of `image`: its owner and admins see every
/// member, a member only itself.
fn sees_member(ctx: &RequestContext, image: &ImageRecord, member: &str) -> bool {
    ctx.is_admin || image.owner == ctx.project_id || member == ctx.project_id
}

/// `GET /v2/images/{id}/members`.
///
/// # Errors
/// 404 for an image the caller cannot see, 403 for a non-shared image, a metadata error.
pub async fn list(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let image = shared_image(api, ctx, id, Action::GetMembers).await?;
    let members: Vec<Value> = api
        .state
        .meta
        .image_members(id)
        .await?
        .iter()
        .filter(|m| sees_member(ctx, &image, &m.member_id))
        .map(member_json)
        .collect();
    Ok(ok_json(
        &json!({"members": members, "schema": "/v2/schemas/members"}),
    ))
}

/// `GET /v2/images/{id}/members/{member}`.
///
/// # Errors
/// 404 for an image the caller cannot see or a member it does not see, 403 for a
/// non-shared image, a metadata error.
pub async fn show(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    member: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let image = shared_image(api, ctx, id, Action::GetMember).await?;
    let record = api
        .state
        .meta
        .get_member(id, member)
        .await?
        .filter(|_| sees_member(ctx, &image, member))
        .ok_or_else(|| not_found(id, member))?;
    Ok(ok_json(&member_json(&record)))
}

fn not_found(image: &str, member: &str) -> ApiError {
    ApiError::MemberNotFound {
        image: image.to_owned(),
        member: member.to_owned(),
    }
}

/// `POST /v2/images/{id}/members` with `{"member": "<project id>"}`: 200 with the new
/// `pending` member (Glance answers 200, not 201).
///
/// # Errors
/// 400 for a body without a member, 404/403 as the policy says, 403 for a non-shared image,
/// 409 for a project already a member, 413 over `image_member_quota`.
pub async fn create<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, body) = request.into_parts();
    let body = read_json(&api.state.config, body, &parts.headers).await?;
    let member_id = match body.as_object().map(|o| o.get("member")) {
        None => {
            return Err(ApiError::BadRequest(
                "Expected a member in the form: {\"member\": \"image_id\"}".into(),
            ))
        }
        Some(None) => {
            return Err(ApiError::BadRequest(
                "Member to be added not specified".into(),
            ))
        }
        Some(Some(Value::String(m))) if !m.is_empty() => m.clone(),
        Some(Some(_)) => return Err(ApiError::BadRequest("Member can't be empty".into())),
    };
    shared_image(api, ctx, id, Action::AddMember).await?;
    let at = now();
    let member = MemberRecord {
        image_id: id.to_owned(),
        member_id: member_id.clone(),
        status: MemberStatus::Pending,
        created_at: at,
        updated_at: at,
    };
    let limit = api.state.config.image_member_quota;
    match api.state.meta.add_member(&member, limit).await? {
        AddMember::Added => {
            tracing::info!(image = %id, member = %member_id, "image shared");
            Ok(ok_json(&member_json(&member)))
        }
        AddMember::Duplicate => Err(ApiError::Conflict(format!(
            "Member {member_id} is duplicated for image {id}"
        ))),
        AddMember::Full(limit) => Err(ApiError::QuotaExceeded {
            what: "members",
            attempted: limit.saturating_add(1),
            limit,
        }),
    }
}

/// `PUT /v2/images/{id}/members/{member}` with `{"status": …}`: the member's answer.
///
/// # Errors
/// 400 for a missing or unknown status, 403 for a caller who is not the member (the owner
/// included: `modify_member`), 404 for an unknown member.
pub async fn update<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    member: &str,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, body) = request.into_parts();
    let body = read_json(&api.state.config, body, &parts.headers).await?;
    let status = match body.get("status") {
        None => return Err(ApiError::BadRequest("Status not specified".into())),
        Some(value) => value
            .as_str()
            .and_then(MemberStatus::parse)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Status must be \"pending\", \"accepted\" or \"rejected\".".into(),
                )
            })?,
    };
    let image = shared_image(api, ctx, id, Action::ModifyMember).await?;
    let mut record = api
        .state
        .meta
        .get_member(id, member)
        .await?
        .filter(|_| sees_member(ctx, &image, member))
        .ok_or_else(|| not_found(id, member))?;
    record.status = status;
    record.updated_at = now();
    if !api.state.meta.update_member(&record).await? {
        return Err(not_found(id, member));
    }
    tracing::info!(image = %id, member, status = status.as_str(), "image member status");
    Ok(ok_json(&member_json(&record)))
}

/// `DELETE /v2/images/{id}/members/{member}`: 204.
///
/// # Errors
/// 404/403 as the policy says (owner only), 403 for a non-shared image, 404 for an unknown
/// member.
pub async fn delete(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    member: &str,
) -> Result<Response<ApiBody>, ApiError> {
    shared_image(api, ctx, id, Action::DeleteMember).await?;
    if !api.state.meta.delete_member(id, member).await? {
        return Err(not_found(id, member));
    }
    tracing::info!(image = %id, member, "image unshared");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests;
