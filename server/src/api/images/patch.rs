//! `PATCH /v2/images/{id}` (both JSON-patch media types): operations parsed as Glance's
//! deserializer does, each checked by [`properties`](mod@crate::properties) (read-only and
//! reserved keys, the image schema, the quotas) and [`policy`](mod@crate::api::policy)
//! (`modify_image`, `publicize_image`, `communitize_image`, owner changes), applied in
//! order and saved once.

use http::header::CONTENT_TYPE;
use http::{Request, Response};
use hyper::body::Body;
use serde_json::Value;

use crate::api::auth::RequestContext;
use crate::api::body::{read_json, ApiBody};
use crate::api::error::ApiError;
use crate::api::images::{image_json, update};
use crate::api::policy::{self, Action, Target};
use crate::api::{now, ok_json, Api};
use crate::meta::{Decision, ImageRecord, ImageStatus, Transition};
use crate::properties::{self, Attribute, BaseValue, Change, PropertyLimits};

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
    let ops = parse_patch(&read_json(config, body, &parts.headers).await?, version)?;
    let limits = PropertyLimits::of(config);
    // Applied to the record as it is when written (no upload or other change in between).
    let outcome = update(
        api,
        ctx,
        id,
        Action::ModifyImage,
        &ImageStatus::ALL,
        |image| {
            let before = image.properties.len();
            for (op, name, value) in &ops {
                apply_patch(image, ctx, version, *op, name, value.as_ref(), &limits)?;
            }
            // An image already over a lowered quota may still shed properties.
            if image.properties.len() > before {
                limits.check_properties(image.properties.len())?;
            }
            image.updated_at = now();
            Ok(Decision::Write)
        },
    )
    .await?;
    match outcome {
        Transition::Done(image) | Transition::Kept(image) | Transition::Refused(image) => {
            Ok(ok_json(&image_json(&image)))
        }
        Transition::Missing => Err(ApiError::ImageNotFound(id.to_owned())),
    }
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

/// Applies one operation to `image`.
fn apply_patch(
    image: &mut ImageRecord,
    ctx: &RequestContext,
    version: PatchVersion,
    op: PatchOp,
    name: &str,
    value: Option<&Value>,
    limits: &PropertyLimits,
) -> Result<(), ApiError> {
    let base = match properties::classify(name, Change::Update)? {
        Attribute::Base(base) => base,
        Attribute::Extra => return apply_extra(image, version, op, name, value),
    };
    let Some(value) = value else {
        return Err(ApiError::Forbidden(format!(
            "Property {name} may not be removed."
        )));
    };
    match properties::parse_base(base, value, limits)? {
        BaseValue::Name(new_name) => image.name = new_name,
        BaseValue::Visibility(visibility) => {
            if let Some(action) = visibility.action() {
                policy::authorize(ctx, action, Target::Image(image))?;
            }
            visibility.as_str().clone_into(&mut image.visibility);
        }
        BaseValue::Protected(protected) => image.protected = protected,
        BaseValue::MinDisk(n) => image.min_disk = n,
        BaseValue::MinRam(n) => image.min_ram = n,
        BaseValue::Tags(tags) => image.tags = tags,
        BaseValue::Owner(owner) => {
            policy::authorize(ctx, Action::ChangeImageOwner, Target::Image(image))?;
            image.owner = owner;
        }
        // Glance's `Image` setters: the formats describe the data, so they change only
        // before it is committed.
        BaseValue::DiskFormat(_) | BaseValue::ContainerFormat(_)
            if !matches!(image.status, ImageStatus::Queued | ImageStatus::Importing) =>
        {
            return Err(ApiError::Forbidden(format!(
                "Attribute {name} can be only replaced for a queued image."
            )));
        }
        BaseValue::DiskFormat(format) => image.disk_format = format,
        BaseValue::ContainerFormat(format) => image.container_format = format,
    }
    Ok(())
}

/// Adds, replaces or removes an extra property.
fn apply_extra(
    image: &mut ImageRecord,
    version: PatchVersion,
    op: PatchOp,
    name: &str,
    value: Option<&Value>,
) -> Result<(), ApiError> {
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
            let text = properties::parse_extra(name, value)?;
            image.properties.insert(name.to_owned(), text);
        }
    }
    Ok(())
}
