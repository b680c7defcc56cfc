//! `PUT /v2/images/{id}/stage`: the first half of a `glance-direct` import (Glance's
//! `ImageDataController.stage`). The body streams as an upload's does ([`upload`](mod@super::upload):
//! the same checks, refusals, quotas, size cap, minimum rate and early answer), through the
//! inspector, the server's `conversion` (as Glance's `image_conversion` plugin, here while
//! the bytes arrive instead of after) and md5 ∥ sha512, into the staging area
//! ([`crate::staging`]), not `images/`. The image goes `queued` → `uploading` and stays
//! there, its stage sealed, until `POST /v2/images/{id}/import` with `glance-direct` commits
//! it or `staging_ttl_secs` pass. 204.
//!
//! Glance's answers: 404 when `glance-direct` is not enabled; 409 "Image status transition
//! from X to uploading is not allowed" for an image that is not `queued`; the policy is
//! `modify_image`. A refused stage gets the upload's 4xx with the reason, leaves the image
//! `queued` and nothing staged.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;

use super::upload::{receive, Destination};
use crate::api::auth::RequestContext;
use crate::api::body::ApiBody;
use crate::api::error::ApiError;
use crate::api::Api;

/// `PUT /v2/images/{id}/stage`.
///
/// # Errors
/// See the module documentation.
pub async fn stage<B>(
    api: &Api,
    ctx: &RequestContext,
    id: &str,
    request: Request<B>,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    receive(api, ctx, id, request, Destination::Stage).await
}
