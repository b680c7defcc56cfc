//! Observability: request ids, the access log and the log format, `/metrics` ([`metrics`])
//! and `/healthcheck` ([`health`]).
//!
//! Every request runs inside a `request` span carrying its `request_id` (and, once the
//! caller is known, its `project`), so every log line written while it is handled names it;
//! one access-log line (`target: sluice::access`) follows each response. The request id is
//! the client's `x-openstack-request-id` when that is a valid `req-<uuid>`, else a new one;
//! it is sent back on every response.
//!
//! `/metrics` and `/healthcheck` answer before authentication, as Glance's healthcheck
//! middleware sits in front of keystonemiddleware; with `[observe] bind` they are served on
//! that address only.

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Body;
use serde::Deserialize;
use tracing::Instrument;

use sluice_pipeline::Progress;

use crate::api::{Api, ApiBody, Endpoint, REQUEST_ID_HEADER};
use crate::config::Conversion;
use crate::meta::TaskStatus;
use crate::state::AppState;

pub mod health;
pub mod metrics;

pub use metrics::global;

/// The path of the Prometheus exposition.
pub const METRICS_PATH: &str = "/metrics";
/// The path of the health check (Glance's healthcheck middleware's default).
pub const HEALTHCHECK_PATH: &str = "/healthcheck";
/// The access log's tracing target.
pub const ACCESS_TARGET: &str = "sluice::access";
/// The request id's prefix (oslo.context's `req-<uuid>`).
const REQUEST_ID_PREFIX: &str = "req-";
/// Pause after a failed `accept` on `[observe] bind` (e.g. out of file descriptors) so the
/// loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, span fields first.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields
    /// (`message` included) and the request span's fields (`span.request_id`, …).
    Json,
}

/// Logs, metrics and health: `[observe]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// Log line format (`text`, `json`).
    pub log_format: LogFormat,
    /// A separate listen address for `/metrics` and `/healthcheck`, which are then not
    /// served on the API's address. Default: none (served on the API's address).
    pub bind: Option<SocketAddr>,
}

/// Installs the process's log subscriber: `SLUICE_LOG` filters (default `info`), `format`
/// shapes lines, and ANSI colours are used only on a terminal without `NO_COLOR`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = use_ansi(io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Whether log lines may carry ANSI colour codes: on a terminal, unless `NO_COLOR` is set
/// to a non-empty value (no-color.org).
fn use_ansi(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The request's id, set by [`handle`] as a request extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The id of a request with `headers`: the client's `x-openstack-request-id` when it is a
/// `req-<uuid>` (hyphenated; kept lower-cased), else a new `req-<uuid4>`.
pub fn request_id(headers: &HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(REQUEST_ID_PREFIX))
        .filter(|uuid| uuid.len() == uuid::fmt::Hyphenated::LENGTH)
        .and_then(|uuid| uuid::Uuid::try_parse(uuid).ok());
    let uuid = given.unwrap_or_else(uuid::Uuid::new_v4);
    format!("{REQUEST_ID_PREFIX}{}", uuid.hyphenated())
}

/// Where `/metrics` and `/healthcheck` are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The API's address: everything, with `/metrics` and `/healthcheck` unless
    /// `[observe] bind` moves them.
    Api,
    /// `[observe] bind`: `/metrics` and `/healthcheck` only.
    Observe,
}

/// Answers one request on `listener`: in its `request` span, with its id on the response,
/// then writes its access-log line and counts it in `/metrics`.
pub async fn handle<B>(api: &Api, listener: Listener, mut request: Request<B>) -> Response<ApiBody>
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let started = Instant::now();
    let id = request_id(request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let own = observe_path(request.uri().path());
    let serves_own = match listener {
        Listener::Api => api.state.config.observe.bind.is_none(),
        Listener::Observe => true,
    };
    let route = match own {
        Some(METRICS_PATH) if serves_own => "GET /metrics",
        Some(_) if serves_own => "GET /healthcheck",
        _ if listener == Listener::Observe => "unmatched",
        _ => route_template(&method, request.uri().path()),
    };
    let span = tracing::info_span!("request", request_id = %id, project = tracing::field::Empty);
    let mut response = async {
        match own {
            Some(_) if serves_own && method != Method::GET && method != Method::HEAD => {
                let err = crate::api::ApiError::MethodNotAllowed {
                    method: method.clone(),
                    allow: "GET, HEAD",
                };
                crate::api::error_response(&err, true)
            }
            Some(METRICS_PATH) if serves_own => metrics::response(&api.state).await,
            Some(_) if serves_own => health::response(api, &request, &id).await,
            _ if listener == Listener::Observe => {
                crate::api::error_response(&crate::api::ApiError::NotFound, true)
            }
            _ => api.handle(request).await,
        }
    }
    .instrument(span.clone())
    .await;
    if let Ok(value) = HeaderValue::try_from(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    global().http_request(route, status, elapsed);
    let bytes = response_bytes(&response);
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    // A load balancer's health checks and a scraper's polls answered 200 are debug lines:
    // at info they would be most of the log (one a second per balancer on every node).
    let polled = own.is_some() && serves_own && status == 200;
    span.in_scope(|| {
        if polled {
            tracing::debug!(target: ACCESS_TARGET, method = %method, route, status, bytes, duration_ms, "request");
        } else {
            tracing::info!(target: ACCESS_TARGET, method = %method, route, status, bytes, duration_ms, "request");
        }
    });
    response
}

/// Binds `addr` (`[observe] bind`) and serves only `/metrics` and `/healthcheck` there, on
/// a task the caller aborts at shutdown.
///
/// # Errors
/// When the address cannot be bound or the authenticator cannot be built.
pub async fn spawn_server(
    addr: SocketAddr,
    state: AppState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ([observe] bind)"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics and health check listening");
    let api = Arc::new(Api::new(state)?);
    let header_timeout =
        std::time::Duration::from_secs(api.state.config.request_timeout_secs.max(1));
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let api = Arc::clone(&api);
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(&api, Listener::Observe, request).await,
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

/// Counts import task `task_id`, which `imports::run` ran from `started` and which stored
/// `stored` bytes, in `/metrics` (a task that did not run this time, e.g. one already
/// final when requeued, is not counted).
pub async fn count_import(
    state: &AppState,
    task_id: &str,
    progress: &Progress,
    stored: Option<u64>,
    started: Instant,
) {
    let ran_since = crate::imports::now().saturating_sub(
        i64::try_from(started.elapsed().as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(1),
    );
    let task = match state.meta.get_task(task_id).await {
        Ok(Some(task)) if task.updated_at >= ran_since => task,
        _ => return,
    };
    let success = match task.status {
        TaskStatus::Success => true,
        TaskStatus::Failure => false,
        TaskStatus::Pending | TaskStatus::Processing => return,
    };
    let input = &task.input;
    let declared = input["import_from_format"]
        .as_str()
        .or_else(|| input["image_properties"]["disk_format"].as_str());
    let conversion = input["output_format"]
        .as_str()
        .and_then(Conversion::parse)
        .unwrap_or(state.config.conversion);
    let outcome = metrics::ImportOutcome {
        success,
        reason: task.reason,
        format: metrics::format_label(declared),
        conversion: match conversion {
            Conversion::None => "none",
            Conversion::Raw => "raw",
            Conversion::Qcow2 => "qcow2",
        },
        received: progress.received(),
        stored: stored.unwrap_or(0),
    };
    global().import_finished(&outcome, started.elapsed());
}

/// `/metrics` or `/healthcheck` when `path` is one of them.
fn observe_path(path: &str) -> Option<&'static str> {
    match path {
        METRICS_PATH => Some(METRICS_PATH),
        HEALTHCHECK_PATH => Some(HEALTHCHECK_PATH),
        _ => None,
    }
}

/// The route template of a request (`GET /v2/images/{id}`): a label whose values the
/// client cannot choose; `unmatched` for requests no endpoint takes.
pub fn route_template(method: &Method, path: &str) -> &'static str {
    let Ok(endpoint) = Endpoint::from_request(method, path, None) else {
        return "unmatched";
    };
    match endpoint {
        Endpoint::Root => "GET /",
        Endpoint::Versions => "GET /versions",
        Endpoint::CreateTask => "POST /v2/tasks",
        Endpoint::ListTasks { .. } => "GET /v2/tasks",
        Endpoint::GetTask { .. } => "GET /v2/tasks/{id}",
        Endpoint::TaskSchema => "GET /v2/schemas/task",
        Endpoint::TasksSchema => "GET /v2/schemas/tasks",
        Endpoint::ImageSchema => "GET /v2/schemas/image",
        Endpoint::ImagesSchema => "GET /v2/schemas/images",
        Endpoint::ImportInfo => "GET /v2/info/import",
        Endpoint::CreateImage => "POST /v2/images",
        Endpoint::ListImages { .. } => "GET /v2/images",
        Endpoint::GetImage { .. } => "GET /v2/images/{id}",
        Endpoint::PatchImage { .. } => "PATCH /v2/images/{id}",
        Endpoint::DeleteImage { .. } => "DELETE /v2/images/{id}",
        Endpoint::DownloadImage { .. } => "GET /v2/images/{id}/file",
        Endpoint::UploadImage { .. } => "PUT /v2/images/{id}/file",
        Endpoint::StageImage { .. } => "PUT /v2/images/{id}/stage",
        Endpoint::ImageTasks { .. } => "GET /v2/images/{id}/tasks",
        Endpoint::ImageAction {
            deactivate: true, ..
        } => "POST /v2/images/{id}/actions/deactivate",
        Endpoint::ImageAction { .. } => "POST /v2/images/{id}/actions/reactivate",
        Endpoint::ImportImage { .. } => "POST /v2/images/{id}/import",
        Endpoint::AddTag { .. } => "PUT /v2/images/{id}/tags/{tag}",
        Endpoint::DeleteTag { .. } => "DELETE /v2/images/{id}/tags/{tag}",
        Endpoint::StoresInfo => "GET /v2/info/stores",
        Endpoint::UsageInfo => "GET /v2/info/usage",
        Endpoint::MemberSchema => "GET /v2/schemas/member",
        Endpoint::MembersSchema => "GET /v2/schemas/members",
        Endpoint::ListMembers { .. } => "GET /v2/images/{id}/members",
        Endpoint::AddMember { .. } => "POST /v2/images/{id}/members",
        Endpoint::GetMember { .. } => "GET /v2/images/{id}/members/{member}",
        Endpoint::UpdateMember { .. } => "PUT /v2/images/{id}/members/{member}",
        Endpoint::DeleteMember { .. } => "DELETE /v2/images/{id}/members/{member}",
    }
}

/// The response body's length when known up front (`Content-Length` or an exact size
/// hint), else 0 (a streamed body of unknown length).
fn response_bytes(response: &Response<ApiBody>) -> u64 {
    response
        .body()
        .size_hint()
        .exact()
        .or_else(|| {
            response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_request_id_valid_incoming_kept_else_new() {
        let mut headers = HeaderMap::new();
        let fresh = request_id(&headers);
        assert!(fresh.starts_with("req-") && fresh.len() == 40, "{fresh}");
        let given = "req-0f5e1c9a-2b4d-4e6f-8a1b-3c5d7e9f1a2b";
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static(given));
        assert_eq!(request_id(&headers), given);
        for bad in [
            "req-nope",
            "0f5e1c9a-2b4d-4e6f-8a1b-3c5d7e9f1a2b",
            "req-0f5e1c9a2b4d4e6f8a1b3c5d7e9f1a2b",
            "req-0f5e1c9a-2b4d-4e6f-8a1b-3c5d7e9f1a2b\tx",
        ] {
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&headers);
            assert_ne!(id, bad);
            assert!(id.starts_with("req-") && id.len() == 40, "{id}");
        }
    }

    #[test]
    fn test_use_ansi_only_on_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some(OsString::new())));
        assert!(!use_ansi(true, Some(OsString::from("1"))));
        assert!(!use_ansi(false, None));
    }

    #[test]
    fn test_route_template_never_holds_ids() {
        let id = "0f5e1c9a-2b4d-4e6f-8a1b-3c5d7e9f1a2b";
        assert_eq!(
            route_template(&Method::GET, &format!("/v2/images/{id}/file")),
            "GET /v2/images/{id}/file"
        );
        assert_eq!(
            route_template(&Method::PUT, &format!("/v2/images/{id}/tags/secret")),
            "PUT /v2/images/{id}/tags/{tag}"
        );
        assert_eq!(route_template(&Method::GET, "/v2/whatever"), "unmatched");
        assert_eq!(
            route_template(&Method::from_bytes(b"BREW").unwrap(), "/"),
            "unmatched"
        );
    }
}
