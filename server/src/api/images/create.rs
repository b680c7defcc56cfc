//! `POST /v2/images`: a `queued` image record, Glance's first step of every upload and
//! interoperable import.
//!
//! Validation is Glance's (`RequestDeserializer.create`, then `ImageFactory.new_image`),
//! through the one property module ([`ImageProperties::parse_create`]: the only path that
//! accepts `id`, a UUID), then the policy (`add_image`, `publicize_image`,
//! `communitize_image`, an owner other than the caller's project for admins only), then the
//! `image_count_total` quota. The record is inserted only if its id is free (409 with Glance's
//! text otherwise), in one atomic write. The answer is 201 with the full image (Glance's
//! nulls for what a queued image does not have yet), `Location`, and
//! `OpenStack-image-import-methods` when any import method is enabled (as Glance, which
//! omits the header rather than send it empty).

use http::header::{HeaderName, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Body;
use serde_json::Value;

use crate::api::auth::RequestContext;
use crate::api::body::{json_response, read_json, ApiBody};
use crate::api::error::ApiError;
use crate::api::images::image_json;
use crate::api::schemas::enabled_import_methods;
use crate::api::{now, Api};
use crate::meta::{ImageRecord, ImageStatus};
use crate::properties::{ImageProperties, PropertyLimits, Visibility};

/// The response header naming the enabled import methods (Glance's).
pub const IMPORT_METHODS_HEADER: &str = "openstack-image-import-methods";

/// `POST /v2/images`.
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
    let (id, props) = parse_body(&body, &PropertyLimits::of(config))?;
    props.authorize(ctx)?;
    // Held until the record is written: a racing request counts it.
    let _reservation = crate::quota::admit_image(&api.state, &ctx.project_id).await?;

    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let image = queued_image(&id, ctx, props, now());
    let inserted = api.state.meta.insert_image(&image).await?;
    if !inserted {
        return Err(ApiError::Conflict(format!("Image ID {id} already exists!")));
    }
    tracing::info!(image = %id, owner = %image.owner, "image created (queued)");
    let mut response = json_response(StatusCode::CREATED, &image_json(&image));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::try_from(format!("{base_url}/v2/images/{id}")) {
        headers.insert(LOCATION, value);
    }
    let methods = enabled_import_methods(config);
    if !methods.is_empty() {
        if let Ok(value) = HeaderValue::try_from(methods.join(",")) {
            headers.insert(HeaderName::from_static(IMPORT_METHODS_HEADER), value);
        }
    }
    Ok(response)
}

/// The body of `POST /v2/images`: an object of image properties, and maybe an `id`.
///
/// # Errors
/// 400 for a body that is not an object; as [`ImageProperties::parse_create`].
pub(crate) fn parse_body(
    body: &Value,
    limits: &PropertyLimits,
) -> Result<(Option<String>, ImageProperties), ApiError> {
    let Value::Object(props) = body else {
        return Err(ApiError::BadRequest(format!(
            "Provided object does not match schema 'image': {} is not of type 'object'",
            crate::api::tasks::py_repr(body)
        )));
    };
    Ok(ImageProperties::parse_create(props, limits)?)
}

/// The record of a new image: Glance's defaults (`shared`, not protected, no minimums) for
/// what the request leaves out, owned by the caller's project unless an admin named another.
pub(crate) fn queued_image(
    id: &str,
    ctx: &RequestContext,
    props: ImageProperties,
    at: i64,
) -> ImageRecord {
    ImageRecord {
        id: id.to_owned(),
        name: props.name,
        status: ImageStatus::Queued,
        owner: props.owner.unwrap_or_else(|| ctx.project_id.clone()),
        visibility: props
            .visibility
            .unwrap_or(Visibility::Shared)
            .as_str()
            .to_owned(),
        protected: props.protected.unwrap_or(false),
        disk_format: props.disk_format,
        container_format: props.container_format,
        size: None,
        virtual_size: None,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        min_disk: props.min_disk.unwrap_or(0),
        min_ram: props.min_ram.unwrap_or(0),
        tags: props.tags,
        properties: props.extra,
        created_at: at,
        updated_at: at,
        task_id: None,
        writer: None,
        staged_on: None,
        staged_bytes: 0,
    }
}
