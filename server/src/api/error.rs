//! Every way a request can fail, and its HTTP form, decided in exactly one place
//! ([`ApiError::describe`]).
//!
//! Bodies follow Glance's JSON error shape, which is webob's answer to
//! `Accept: application/json` (recorded in `reference/glance-wire/*/NN-*.json`,
//! `error_variants`):
//!
//! ```json
//! {"message": "Could not find task 3e43…<br /><br />\n\n\n", "code": "404 Not Found", "title": "Not Found"}
//! ```
//!
//! `code` is a string with the reason phrase, and `message` carries webob's `<br /><br />`
//! trailer exactly as Glance sends it. Sluice always answers errors in JSON, whatever the
//! `Accept` header says (Glance negotiates HTML or plain text too; clients only read the status
//! and, best effort, the message).

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use sluice_pipeline::store::space::SpaceError;

use crate::meta::MetaError;

/// The media types `PATCH /v2/images/{id}` accepts (sent back in `Accept-Patch` on 415).
pub const PATCH_MEDIA_TYPES: &str =
    "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch";

/// The reason code of an upload the image store failed (as a task's).
const REASON_STORE_ERROR: &str = "store_error";
/// The reason code of an upload over the image size cap (as a task's).
const REASON_SIZE_CAP: &str = sluice_formats::ReasonCode::SizeCap.as_str();

/// Seconds a client is asked to wait after a 503 for a full import queue.
const QUEUE_FULL_RETRY_AFTER_SECS: &str = "30";
/// Seconds a client is asked to wait after a 503 because Keystone could not be asked: a
/// restarting Keystone (uWSGI) answers again within seconds.
const IDENTITY_RETRY_AFTER_SECS: &str = "5";
/// Seconds a client is asked to wait after a 503 for an upload stopped by a shutdown: a
/// restart of the service takes a few seconds (recovery reads only unfinished records).
const SHUTDOWN_RETRY_AFTER_SECS: &str = "10";

/// A failed request. Variant names and fields are the stable API; the texts are Glance's
/// where Glance has one.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// 400 with a specific explanation (validation failures, bad query parameters…).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 400: `POST` without a body.
    #[error("body expected in request")]
    BodyExpected,
    /// 400: a body on a `GET` or `DELETE` (Glance's `body_reject` routes).
    #[error("body not expected with this request")]
    BodyNotExpected,
    /// 413: the body is longer than `max_request_body` (the limit).
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// 409 with an explanation.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 403 with an explanation.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 503 with `Retry-After`: Keystone could not validate a token (down, timing out, or
    /// refusing Sluice's service credentials); the value says which, for the log. Never
    /// answered by letting the request through.
    #[error("identity service unavailable: {0}")]
    IdentityUnavailable(String),
    /// 404: the image record exists but its data file does not.
    #[error("no data for image {0}")]
    ImageDataNotFound(String),
    /// 410: the image was deleted while its data was uploaded (Glance's text).
    #[error("image {0} deleted during its upload")]
    ImageGone(String),
    /// 404: the image does not exist or the caller may not see it.
    #[error("no image {0}")]
    ImageNotFound(String),
    /// 413: uploaded data larger than the image size cap (`max_virtual_size`, Glance's
    /// `image_size_cap`); the value says by how much. Reason code `size_cap`.
    #[error("image too large: {0}")]
    ImageTooLarge(String),
    /// 500: a bug or a backend failure; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// 401 in `keystone` mode: a missing, invalid, expired or revoked token; the value is
    /// Keystone's public URI for `WWW-Authenticate: Keystone uri="…"`, as keystonemiddleware
    /// sends it.
    #[error("keystone authentication required")]
    KeystoneUnauthorized(String),
    /// 413: a project quota (Glance's unified limits); the value is Glance's whole
    /// `LimitExceeded` text (see `quota::ProjectOverLimit::glance_message`).
    #[error("{0}")]
    LimitExceeded(String),
    /// 415: uploaded data the format inspector refused (Glance's `InvalidImageData`): the
    /// inspector's reason code and message.
    #[error("image data rejected ({reason}): {message}")]
    InvalidImageData {
        /// The inspector's stable reason code (`backing_file`, `format_mismatch`, …).
        reason: String,
        /// Its message.
        message: String,
    },
    /// 400: the body is not JSON.
    #[error("malformed JSON")]
    MalformedJson,
    /// 404: the project is not a member of the image (or the caller may not see that it
    /// is).
    #[error("{member} is not a member of image {image}")]
    MemberNotFound {
        /// The image.
        image: String,
        /// The member (project) id asked for.
        member: String,
    },
    /// 405 for a method the resource does not support; `allow` lists the ones it does.
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        /// The method the client sent.
        method: Method,
        /// The `Allow` header value (Glance's lists).
        allow: &'static str,
    },
    /// 403: the caller's roles do not allow this action (the value: Glance's policy name).
    #[error("not authorized to complete {0}")]
    NotAuthorized(&'static str),
    /// 404: no such resource (unknown path).
    #[error("no such resource")]
    NotFound,
    /// 415: a `PATCH` whose `Content-Type` (the value) is not a JSON-patch media type.
    #[error("unsupported patch media type {0:?}")]
    PatchMediaType(String),
    /// 503: the project has as many tasks waiting as its `tasks_waiting` quota allows.
    #[error("project {project} has {waiting} tasks waiting")]
    ProjectQueueFull {
        /// The project.
        project: String,
        /// Its tasks waiting.
        waiting: u64,
    },
    /// 503: the import queue is full (the value: tasks waiting).
    #[error("import queue full ({0} waiting)")]
    QueueFull(usize),
    /// 413: a per-image quota (tags, properties) would be exceeded.
    #[error("{attempted} {what}, more than {limit}")]
    QuotaExceeded {
        /// What is counted (`tags`, `properties`).
        what: &'static str,
        /// How many the request would make.
        attempted: usize,
        /// The limit.
        limit: usize,
    },
    /// 416: the `Range` cannot be served from an image of this many bytes.
    #[error("range not satisfiable for {0} bytes")]
    RangeNotSatisfiable(u64),
    /// 408: the client sent its body too slowly; the value says which limit (its value and
    /// config key) it missed.
    #[error("request body timed out: {0}")]
    RequestTimeout(String),
    /// 503 with `Retry-After`: the service is shutting down; the value says what stopped.
    #[error("shutting down: {0}")]
    ShuttingDown(String),
    /// 507: the data volume is below its free-space reserve (new imports) or its metadata
    /// floor (every write); the message says how much is free. Glance answers 413 "Image
    /// storage media is full" on upload; 507 does not suggest the request was too large.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// 503: the image store failed while an upload's data was written or committed (an
    /// object store away, a disk error); the value is the store's error, which is logged,
    /// not sent (it names the store's internal address). Reason code `store_error`, as a
    /// failed import's.
    #[error("image store failed: {0}")]
    StoreFailed(String),
    /// 404: `DELETE /v2/images/{id}/tags/{tag}` for a tag the image lacks.
    #[error("no tag {0}")]
    TagNotFound(String),
    /// 405: `DELETE /v2/tasks/{id}` (never allowed, as in Glance).
    #[error("tasks cannot be deleted")]
    TaskDeleteNotPermitted,
    /// 403: a task of another project (Glance answers 403, not 404, for tasks).
    #[error("task {0} belongs to another project")]
    TaskForbidden(String),
    /// 404: the task does not exist (or has expired and been removed).
    #[error("no task {0}")]
    TaskNotFound(String),
    /// 401: no or unknown credentials.
    #[error("authentication required")]
    Unauthorized,
    /// 415: an upload whose `Content-Type` (the value) is not `application/octet-stream`.
    #[error("unsupported upload media type {0:?}")]
    UploadMediaType(String),
    /// 408: an upload that did not finish within `import_timeout_secs` (the value).
    #[error("upload did not finish within {0} s")]
    UploadTimeout(u64),
}

/// How webob ends the explanation in a JSON error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trailer {
    /// `<br /><br />\n\n\n`: every error raised with an explanation.
    Standard,
    /// ` <br /><br />\n`: webob's own 405 for a method the route lacks.
    MethodTemplate,
    /// Nothing: Glance's task `DELETE` 405 (raised with a `detail`, not an explanation).
    None,
}

/// The HTTP form of an error.
#[derive(Debug)]
pub struct ErrorParts {
    /// Status code.
    pub status: StatusCode,
    /// The human explanation (without webob's trailer).
    pub explanation: Cow<'static, str>,
    /// Extra headers (`Allow`, `Content-Range`, `Accept-Patch`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A stable reason code for a refused upload (an additive `reason` key in the JSON
    /// body, as a failed task's; the explanation names it too, for plain-text clients).
    pub reason: Option<String>,
    trailer: Trailer,
}

impl ApiError {
    /// The one exhaustive mapping from error to status, explanation and headers.
    pub fn describe(&self) -> ErrorParts {
        use ApiError as E;
        let (status, explanation, headers, trailer): (_, Cow<'static, str>, _, _) = match self {
            E::BadRequest(msg) => (
                StatusCode::BAD_REQUEST,
                msg.clone().into(),
                vec![],
                Trailer::Standard,
            ),
            E::BodyExpected => (
                StatusCode::BAD_REQUEST,
                "Body expected in request.".into(),
                vec![],
                Trailer::Standard,
            ),
            E::BodyNotExpected => (
                StatusCode::BAD_REQUEST,
                "A body is not expected with this request.".into(),
                vec![],
                Trailer::Standard,
            ),
            E::BodyTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The request body is larger than the limit of {limit} bytes \
                     (max_request_body)."
                )
                .into(),
                vec![],
                Trailer::Standard,
            ),
            E::Conflict(msg) => (
                StatusCode::CONFLICT,
                msg.clone().into(),
                vec![],
                Trailer::Standard,
            ),
            E::Forbidden(msg) => (
                StatusCode::FORBIDDEN,
                msg.clone().into(),
                vec![],
                Trailer::Standard,
            ),
            E::IdentityUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity service (Keystone) cannot validate tokens at the moment; retry \
                 later."
                    .into(),
                vec![(
                    RETRY_AFTER,
                    HeaderValue::from_static(IDENTITY_RETRY_AFTER_SECS),
                )],
                Trailer::Standard,
            ),
            E::ImageDataNotFound(id) => (
                StatusCode::NOT_FOUND,
                format!("Image data for image {id} not found").into(),
                vec![],
                Trailer::Standard,
            ),
            E::ImageGone(id) => (
                StatusCode::GONE,
                format!(
                    "Image {id} could not be found after upload. The image may have been \
                     deleted during the upload."
                )
                .into(),
                vec![],
                Trailer::Standard,
            ),
            E::ImageNotFound(id) => (
                StatusCode::NOT_FOUND,
                format!("No image found with ID {id}").into(),
                vec![],
                Trailer::Standard,
            ),
            E::ImageTooLarge(msg) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The provided image is too large ({REASON_SIZE_CAP}): {msg} (the limit is \
                     max_virtual_size)"
                )
                .into(),
                vec![],
                Trailer::Standard,
            ),
            E::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server has either erred or is incapable of performing the requested \
                 operation."
                    .into(),
                vec![],
                Trailer::Standard,
            ),
            E::KeystoneUnauthorized(uri) => (
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.".into(),
                HeaderValue::try_from(format!("Keystone uri=\"{uri}\""))
                    .map(|v| vec![(WWW_AUTHENTICATE, v)])
                    .unwrap_or_default(),
                Trailer::Standard,
            ),
            E::LimitExceeded(msg) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                msg.clone().into(),
                vec![],
                Trailer::Standard,
            ),
            E::InvalidImageData { reason, message } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Image failed format inspection ({reason}): {message}").into(),
                vec![],
                Trailer::Standard,
            ),
            E::MalformedJson => (
                StatusCode::BAD_REQUEST,
                "Malformed JSON in request body.".into(),
                vec![],
                Trailer::Standard,
            ),
            E::MemberNotFound { image, member } => (
                StatusCode::NOT_FOUND,
                format!("{member} not found in the member list of the image {image}.").into(),
                vec![],
                Trailer::Standard,
            ),
            E::MethodNotAllowed { method, allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                format!("The method {method} is not allowed for this resource.").into(),
                vec![(ALLOW, HeaderValue::from_static(allow))],
                Trailer::MethodTemplate,
            ),
            E::NotAuthorized(policy) => (
                StatusCode::FORBIDDEN,
                format!("You are not authorized to complete {policy} action.").into(),
                vec![],
                Trailer::Standard,
            ),
            E::NotFound => (
                StatusCode::NOT_FOUND,
                "The resource could not be found.".into(),
                vec![],
                Trailer::Standard,
            ),
            E::PatchMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Content-Type".into(),
                vec![(
                    HeaderName::from_static("accept-patch"),
                    HeaderValue::from_static(PATCH_MEDIA_TYPES),
                )],
                Trailer::Standard,
            ),
            E::ProjectQueueFull { project, waiting } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Project {project} has {waiting} tasks waiting, its limit \
                     (quotas.tasks_waiting); retry later."
                )
                .into(),
                vec![(
                    RETRY_AFTER,
                    HeaderValue::from_static(QUEUE_FULL_RETRY_AFTER_SECS),
                )],
                Trailer::Standard,
            ),
            E::QueueFull(waiting) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "The import queue is full ({waiting} tasks waiting, its limit \
                     queue_capacity); retry later."
                )
                .into(),
                vec![(
                    RETRY_AFTER,
                    HeaderValue::from_static(QUEUE_FULL_RETRY_AFTER_SECS),
                )],
                Trailer::Standard,
            ),
            E::QuotaExceeded {
                what,
                attempted,
                limit,
            } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The limit has been exceeded on the number of allowed image {what}. \
                     Attempted: {attempted}, Maximum: {limit}"
                )
                .into(),
                vec![],
                Trailer::Standard,
            ),
            E::RangeNotSatisfiable(size) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested range not satisfiable".into(),
                // Digits and ASCII only: always a valid header value.
                HeaderValue::try_from(format!("bytes */{size}"))
                    .map(|v| vec![(CONTENT_RANGE, v)])
                    .unwrap_or_default(),
                Trailer::Standard,
            ),
            E::RequestTimeout(why) => (
                StatusCode::REQUEST_TIMEOUT,
                format!("The client did not send the request body in time: {why}.").into(),
                vec![],
                Trailer::Standard,
            ),
            E::ShuttingDown(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The service is shutting down: {what}; retry later.").into(),
                vec![(
                    RETRY_AFTER,
                    HeaderValue::from_static(SHUTDOWN_RETRY_AFTER_SECS),
                )],
                Trailer::Standard,
            ),
            E::StoreFailed(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "The image store failed ({REASON_STORE_ERROR}): nothing was stored; upload \
                     again later."
                )
                .into(),
                vec![(
                    RETRY_AFTER,
                    HeaderValue::from_static(SHUTDOWN_RETRY_AFTER_SECS),
                )],
                Trailer::Standard,
            ),
            E::StorageFull(msg) => (
                StatusCode::INSUFFICIENT_STORAGE,
                msg.clone().into(),
                vec![],
                Trailer::Standard,
            ),
            E::TagNotFound(tag) => (
                StatusCode::NOT_FOUND,
                format!("Tag {tag} not found").into(),
                vec![],
                Trailer::Standard,
            ),
            E::TaskDeleteNotPermitted => (
                StatusCode::METHOD_NOT_ALLOWED,
                "This operation is currently not permitted on Glance Tasks. They are auto \
                 deleted after reaching the time based on their expires_at property."
                    .into(),
                vec![(ALLOW, HeaderValue::from_static("GET"))],
                Trailer::None,
            ),
            E::TaskForbidden(id) => (
                StatusCode::FORBIDDEN,
                format!("Forbidden to get task {id}").into(),
                vec![],
                Trailer::Standard,
            ),
            E::TaskNotFound(id) => (
                StatusCode::NOT_FOUND,
                format!("Could not find task {id}").into(),
                vec![],
                Trailer::Standard,
            ),
            E::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.".into(),
                vec![],
                Trailer::Standard,
            ),
            E::UploadMediaType(content_type) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Invalid content type {content_type}").into(),
                vec![],
                Trailer::Standard,
            ),
            E::UploadTimeout(secs) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The upload did not finish within {secs} s (import_timeout_secs); nothing \
                     was stored."
                )
                .into(),
                vec![],
                Trailer::Standard,
            ),
        };
        let reason = match self {
            E::ImageTooLarge(_) => Some(REASON_SIZE_CAP.to_owned()),
            E::InvalidImageData { reason, .. } => Some(reason.clone()),
            E::ShuttingDown(_) => Some(crate::imports::REASON_INTERRUPTED.to_owned()),
            E::StoreFailed(_) => Some(REASON_STORE_ERROR.to_owned()),
            E::UploadTimeout(_) => Some(crate::imports::REASON_IMPORT_TIMEOUT.to_owned()),
            _ => None,
        };
        ErrorParts {
            status,
            explanation,
            headers,
            reason,
            trailer,
        }
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        self.describe().status
    }

    /// The JSON body, as Glance sends it for `Accept: application/json`.
    pub fn body(&self) -> serde_json::Value {
        self.describe().body()
    }
}

impl ErrorParts {
    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let trailer = match self.trailer {
            Trailer::Standard => "<br /><br />\n\n\n",
            Trailer::MethodTemplate => " <br /><br />\n",
            Trailer::None => "",
        };
        let title = webob_title(self.status);
        let mut body = serde_json::json!({
            "message": format!("{}{trailer}", self.explanation),
            "code": format!("{} {title}", self.status.as_u16()),
            "title": title,
        });
        if let (Some(reason), Some(map)) = (&self.reason, body.as_object_mut()) {
            map.insert("reason".to_owned(), reason.clone().into());
        }
        body
    }
}

impl ErrorParts {
    /// The plain-text body, as Glance sends it without `Accept: application/json`
    /// (e.g. `"404 Not Found\n\nCould not find task X\n\n   "`).
    pub fn text(&self) -> String {
        format!(
            "{} {}\n\n{}\n\n   ",
            self.status.as_u16(),
            webob_title(self.status),
            self.explanation
        )
    }
}

/// Whether the client's `Accept` header asks for JSON.
pub fn accepts_json(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"))
}

/// webob's title for a status (it keeps the RFC 2616 names where RFC 9110 renamed them).
fn webob_title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
        StatusCode::RANGE_NOT_SATISFIABLE => "Requested Range Not Satisfiable",
        other => other.canonical_reason().unwrap_or("Error"),
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::StorageFull(message) => ApiError::StorageFull(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SpaceError> for ApiError {
    fn from(e: SpaceError) -> Self {
        ApiError::StorageFull(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_error_json_shape_matches_glance_recording() {
        // 34-get-unknown-task.json, Accept: application/json.
        let err = ApiError::TaskNotFound("3e435003-ccc3-455a-b774-49d557ea3507".into());
        assert_eq!(err.status_code(), StatusCode::NOT_FOUND);
        assert_eq!(
            err.body(),
            serde_json::json!({
                "message": "Could not find task 3e435003-ccc3-455a-b774-49d557ea3507<br /><br />\n\n\n",
                "code": "404 Not Found",
                "title": "Not Found",
            })
        );
    }

    #[test]
    fn test_error_limit_refusals_name_limit_value_and_key() {
        for (err, says) in [
            (
                ApiError::BodyTooLarge(65_536),
                ["65536 bytes", "max_request_body"],
            ),
            (
                ApiError::ImageTooLarge("the body announces 9 bytes, more than 8".into()),
                ["more than 8", "max_virtual_size"],
            ),
            (
                ApiError::QueueFull(256),
                ["256 tasks waiting", "queue_capacity"],
            ),
            (
                ApiError::RequestTimeout("not within 60 s (request_timeout_secs)".into()),
                ["60 s", "request_timeout_secs"],
            ),
            (
                ApiError::ProjectQueueFull {
                    project: "p1".into(),
                    waiting: 16,
                },
                ["16 tasks waiting", "quotas.tasks_waiting"],
            ),
        ] {
            let message = err.body()["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for said in says {
                assert!(message.contains(said), "{message:?} does not say {said:?}");
            }
        }
    }

    #[test]
    fn test_error_method_not_allowed_uses_webob_template() {
        // 38-put-tasks.json.
        let err = ApiError::MethodNotAllowed {
            method: Method::PUT,
            allow: "GET, POST",
        };
        let parts = err.describe();
        assert_eq!(
            parts.body()["message"],
            "The method PUT is not allowed for this resource. <br /><br />\n"
        );
        assert!(
            matches!(parts.headers.first(), Some((name, v)) if name == ALLOW && v == "GET, POST")
        );
    }

    #[test]
    fn test_error_storage_full_is_507_with_its_message() {
        let err = ApiError::from(MetaError::StorageFull(
            "Image storage media is full: 0 bytes free".into(),
        ));
        let body = err.body();
        assert_eq!(err.status_code(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(body["code"], "507 Insufficient Storage");
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Image storage media is full: 0 bytes free")));
        assert!(matches!(
            ApiError::from(MetaError::Backend("x".into())),
            ApiError::Internal(_)
        ));
    }

    #[test]
    fn test_error_refused_upload_names_its_reason_in_text_and_json() {
        let err = ApiError::InvalidImageData {
            reason: "backing_file".into(),
            message: "qcow2 image references backing file '/etc/passwd'".into(),
        };
        let parts = err.describe();
        assert_eq!(parts.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(parts.body()["reason"], "backing_file");
        assert!(parts
            .text()
            .contains("(backing_file): qcow2 image references backing file '/etc/passwd'"));
        assert_eq!(
            ApiError::ImageTooLarge("x".into()).body()["reason"],
            "size_cap"
        );
        assert!(ApiError::NotFound.body().get("reason").is_none());
    }

    #[test]
    fn test_error_task_delete_has_no_trailer() {
        // 37-delete-task.json.
        let body = ApiError::TaskDeleteNotPermitted.body();
        assert_eq!(body["code"], "405 Method Not Allowed");
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("expires_at property.")));
    }

    #[test]
    fn test_error_keystone_401_names_keystone_and_503_asks_to_retry() {
        let parts = ApiError::KeystoneUnauthorized("http://ks:5000/v3".into()).describe();
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
        assert!(matches!(parts.headers.first(),
            Some((name, v)) if name == WWW_AUTHENTICATE && v == "Keystone uri=\"http://ks:5000/v3\""));
        let parts = ApiError::IdentityUnavailable("down".into()).describe();
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(parts.headers.first(), Some((name, _)) if name == RETRY_AFTER));
        assert!(
            !parts.text().contains("down"),
            "the detail is logged, not sent"
        );
    }

    #[test]
    fn test_error_range_not_satisfiable_names_size() {
        let parts = ApiError::RangeNotSatisfiable(42).describe();
        assert_eq!(parts.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(
            matches!(parts.headers.first(), Some((name, v)) if name == CONTENT_RANGE && v == "bytes */42")
        );
    }
}
