//! The HTTP API: Glance's v2 Tasks API for `import` tasks, and the Images v2 calls a client
//! makes around an import (show, list, download, patch, tags, delete, the image's tasks), on
//! hyper 1.
//!
//! A request goes through [`Endpoint::from_request`] (404/405 before any handler runs), then
//! authentication ([`auth`]; version discovery is public), then, for `GET` and `DELETE`, a
//! check that it has no body (400 "A body is not expected with this request.", as Glance),
//! then the role check of the endpoint's action ([`policy`]), then one handler. Every failure is
//! an [`ApiError`], mapped to HTTP in one place ([`error`]). Every response carries
//! `x-openstack-request-id: req-<uuid>` (the client's when valid); request spans, the access
//! log, `/metrics` and `/healthcheck` wrap this in [`crate::observe`].
//!
//! Deliberate differences from Glance (compatibility first, extensions additive):
//! - Members may create import tasks, and readers list and show their project's tasks
//!   (Glance's `tasks_api_access` policy is admin-only by default); admins see every
//!   project's tasks. A task's `image_properties` are checked at create time as an image
//!   creation's (Glance checks them only when the task runs, if at all).
//! - A caller whose roles cannot perform an action at all gets 403 before the resource is
//!   looked up (Glance answers 404 when the image is also invisible to it).
//! - Only `type: import` tasks are accepted; `api_image_import` and `location_import` (which
//!   pass Glance's schema and then fail asynchronously) are refused with 400.
//! - When both `input.import_from_format` and `input.image_properties.disk_format` are given
//!   they must be equal (400 otherwise); Glance ignores `import_from_format`.
//! - Task bodies carry two additive keys, both described in `/v2/schemas/task(s)`:
//!   `progress` (`{"bytes_received": n, "bytes_total": m|null}`) only while the task is
//!   `processing`, and `reason` (a stable failure code such as `backing_file`) only on
//!   `failure`. Pending and successful tasks have exactly Glance's key set.
//! - Errors are JSON (Glance's `Accept: application/json` form) when `Accept` names JSON,
//!   else Glance's plain-text form (where Glance would send HTML for `Accept: */*`;
//!   python-glanceclient reads both).
//! - `GET /v2/images/{id}/tasks` lists the `import` task that created the image, with
//!   `image_id` set to that image. Glance links only `api_image_import` tasks to their image
//!   (a legacy `import` task's `image_id` column stays null), so for a task-imported image it
//!   answers `{"tasks": []}`.
//! - `POST /v2/images` creates a `queued` record; data arrives through import tasks, direct
//!   upload (`PUT /v2/images/{id}/file`, `images/upload.rs`) and `POST /v2/images/{id}/import`
//!   with `web-download` (`images/import.rs`); there are no members, locations or
//!   `os_hidden` changes yet.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::meta::Timestamp;
use crate::state::AppState;

pub mod auth;
pub mod body;
pub mod endpoint;
pub mod error;
pub mod images;
pub mod info;
pub mod isotime;
pub mod listing;
pub mod policy;
pub mod schemas;
pub mod tasks;

pub use auth::{Authenticator, RequestContext};
pub use body::ApiBody;
pub use endpoint::Endpoint;
pub use error::ApiError;

/// The response header naming the request, as Glance's.
pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// How long in-flight requests (e.g. a long download) may go on after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The API: shared state plus the authenticator.
#[derive(Debug)]
pub struct Api {
    /// Shared service state.
    pub state: AppState,
    /// Turns headers into a caller.
    pub auth: Authenticator,
}

impl Api {
    /// The API over `state`, loading the token file when `config.auth.mode` is `token`.
    ///
    /// # Errors
    /// When the token file cannot be loaded.
    pub fn new(state: AppState) -> io::Result<Api> {
        let auth = Authenticator::from_config(&state.config.auth)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Api { state, auth })
    }

    /// Answers one request. Never fails: errors become their JSON responses.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ApiBody>
    where
        B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let request_id = match request.extensions().get::<crate::observe::RequestId>() {
            Some(id) => id.0.clone(),
            None => crate::observe::request_id(request.headers()),
        };
        let wants_json = error::accepts_json(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut response = match self.route(request, &request_id).await {
            Ok(response) => response,
            Err(err) => {
                if let ApiError::Internal(detail) = &err {
                    tracing::error!(%request_id, %method, %path, "internal error: {detail}");
                }
                error_response(&err, wants_json)
            }
        };
        if let Ok(value) = HeaderValue::try_from(request_id.as_str()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        tracing::debug!(%request_id, %method, %path, status = response.status().as_u16());
        response
    }

    async fn route<B>(
        &self,
        request: Request<B>,
        request_id: &str,
    ) -> Result<Response<ApiBody>, ApiError>
    where
        B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let endpoint = Endpoint::from_request(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        if let Ok(endpoint) = &endpoint {
            if endpoint.is_public() {
                return schemas::versions(self, &request, endpoint);
            }
        }
        // Authentication comes before routing errors, as keystonemiddleware runs before
        // Glance's router.
        let ctx = self
            .auth
            .authenticate(request.headers(), request_id)
            .await?;
        tracing::Span::current().record("project", tracing::field::display(&ctx.project_id));
        let endpoint = endpoint?;
        // Glance's `body_reject`: a body (`Content-Length` above 0, or chunked) on a GET or
        // DELETE is refused before any handler runs.
        if matches!(*request.method(), Method::GET | Method::DELETE)
            && !request.body().is_end_stream()
        {
            return Err(ApiError::BodyNotExpected);
        }
        // Every endpoint names its action; a caller whose roles cannot perform it anywhere
        // is refused here, and handlers check the rest against what they load.
        if let Some(action) = policy::action_of(&endpoint) {
            policy::check_role(&ctx, action)?;
        }
        match endpoint {
            Endpoint::Root | Endpoint::Versions => Err(ApiError::NotFound),
            Endpoint::CreateTask => tasks::create(self, &ctx, request).await,
            Endpoint::ListTasks { query } => tasks::list(self, &ctx, query).await,
            Endpoint::GetTask { id } => tasks::show(self, &ctx, &id).await,
            Endpoint::TaskSchema => Ok(schemas::task_schema()),
            Endpoint::TasksSchema => Ok(schemas::tasks_schema()),
            Endpoint::ImageSchema => Ok(schemas::image_schema()),
            Endpoint::ImagesSchema => Ok(schemas::images_schema()),
            Endpoint::ImportInfo => Ok(schemas::import_info(&self.state.config)),
            Endpoint::CreateImage => images::create(self, &ctx, request).await,
            Endpoint::ListImages { query } => images::list(self, &ctx, query).await,
            Endpoint::GetImage { id } => images::show(self, &ctx, &id).await,
            Endpoint::PatchImage { id } => images::patch(self, &ctx, &id, request).await,
            Endpoint::DeleteImage { id } => images::delete(self, &ctx, &id).await,
            Endpoint::DownloadImage { id } => images::download(self, &ctx, &id, &request).await,
            Endpoint::UploadImage { id } => images::upload(self, &ctx, &id, request).await,
            Endpoint::StageImage { id } => images::stage(self, &ctx, &id, request).await,
            Endpoint::ImageTasks { id } => images::image_tasks(self, &ctx, &id).await,
            Endpoint::ImageAction { id, deactivate } => {
                images::set_active(self, &ctx, &id, !deactivate).await
            }
            Endpoint::ImportImage { id } => images::import(self, &ctx, &id, request).await,
            Endpoint::AddTag { id, tag } => images::add_tag(self, &ctx, &id, &tag).await,
            Endpoint::DeleteTag { id, tag } => images::delete_tag(self, &ctx, &id, &tag).await,
            Endpoint::ListMembers { id } => images::members::list(self, &ctx, &id).await,
            Endpoint::AddMember { id } => images::members::create(self, &ctx, &id, request).await,
            Endpoint::GetMember { id, member } => {
                images::members::show(self, &ctx, &id, &member).await
            }
            Endpoint::UpdateMember { id, member } => {
                images::members::update(self, &ctx, &id, &member, request).await
            }
            Endpoint::DeleteMember { id, member } => {
                images::members::delete(self, &ctx, &id, &member).await
            }
            Endpoint::MemberSchema => Ok(schemas::member_schema()),
            Endpoint::MembersSchema => Ok(schemas::members_schema()),
            Endpoint::StoresInfo => Ok(info::stores(self)),
            Endpoint::UsageInfo => info::usage(self, &ctx).await,
        }
    }

    /// The absolute base URL for `Location` headers and version links: `config.public_url`,
    /// else `http://` and the address the request arrived on ([`LocalAddr`]), else the
    /// configured bind address. Never the request's `Host`, which the client chooses.
    pub fn base_url<B>(&self, request: &Request<B>) -> String {
        if let Some(url) = &self.state.config.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let addr = request
            .extensions()
            .get::<LocalAddr>()
            .map_or(self.state.config.bind, |local| local.0);
        format!("http://{addr}")
    }
}

/// The local address a request's connection was accepted on (a request extension set by
/// [`serve`]): the bound address, made concrete when bound to a wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The response for an error: Glance's JSON form when the client's `Accept` asks for JSON
/// (openstacksdk, keystoneauth), else webob's plain-text form, which python-glanceclient
/// expects (it sends `Accept: */*` and cannot parse the JSON form).
pub fn error_response(err: &ApiError, json: bool) -> Response<ApiBody> {
    let parts = err.describe();
    let mut response = if json {
        body::json_response(parts.status, &parts.body())
    } else {
        body::text_response(parts.status, parts.text())
    };
    for (name, value) in parts.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for up to [`SHUTDOWN_GRACE`], and returns.
///
/// Each connection is HTTP/1.1 with keep-alive; a client that does not finish sending its
/// request headers within `config.request_timeout_secs` is disconnected.
///
/// # Errors
/// When the token file cannot be loaded (before serving anything).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let header_timeout = Duration::from_secs(state.config.request_timeout_secs.max(1));
    let api = Arc::new(Api::new(state)?);
    let (closing_tx, closing_rx) = watch::channel(false);
    // Each connection task holds a sender; when all are dropped, `recv` returns `None`.
    let (alive_tx, mut alive_rx) = mpsc::channel::<Infallible>(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        let mut closing = closing_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let local = stream.local_addr().ok().map(LocalAddr);
            let service = service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let api = Arc::clone(&api);
                if let Some(local) = local {
                    request.extensions_mut().insert(local);
                }
                async move {
                    let listener = crate::observe::Listener::Api;
                    Ok::<_, Infallible>(crate::observe::handle(&api, listener, request).await)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let closing_started = async move {
                // An error means the sender is gone, which also means shutdown.
                let _ = closing.wait_for(|closing| *closing).await;
            };
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = closing_started => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    closing_tx.send_replace(true);
    drop(alive_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests still running after {}s; shutting down anyway",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

pub use crate::imports::now;

/// The last second humantime can print (9999-12-31T23:59:59Z); it panics beyond.
const MAX_PRINTABLE_TIME: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SSZ` (Glance's `isotime`); times before the epoch print as the epoch,
/// times after year 9999 as its last second.
pub fn format_time(ts: Timestamp) -> String {
    let secs = u64::try_from(ts).unwrap_or(0).min(MAX_PRINTABLE_TIME);
    let time = UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `YYYY-MM-DDTHH:MM:SS.000000`: oslo's `to_primitive` form of a timestamp (microseconds, no
/// zone), which Glance's `GET /v2/images/{id}/tasks` sends; clamped as [`format_time`].
pub fn format_primitive_time(ts: Timestamp) -> String {
    let iso = format_time(ts);
    format!("{}.000000", iso.strip_suffix('Z').unwrap_or(&iso))
}

/// A 200 JSON response.
pub fn ok_json(value: &serde_json::Value) -> Response<ApiBody> {
    body::json_response(StatusCode::OK, value)
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_format_time_is_glance_isotime() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_541_301), "2026-11-24T17:28:21Z");
        assert_eq!(format_time(-5), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn test_format_primitive_time_is_oslo_to_primitive() {
        assert_eq!(format_primitive_time(0), "1970-01-01T00:00:00.000000");
        assert_eq!(
            format_primitive_time(1_795_541_301),
            "2026-11-24T17:28:21.000000"
        );
    }

    /// Starts `serve` on a loopback port; returns its address, the shutdown trigger and the
    /// server task.
    async fn start(
        tweak: impl FnOnce(&mut crate::config::Config),
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
        testing::Harness,
    ) {
        let h = testing::Harness::with_config(tweak);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, h.api.state.clone(), async {
            let _ = rx.await;
        }));
        (addr, tx, server, h)
    }

    async fn read_all(stream: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn test_serve_answers_over_tcp_and_shuts_down_with_idle_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (addr, shutdown, server, _h) = start(|_| {}).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /versions HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_all(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("x-openstack-request-id: req-"), "{text}");
        assert!(text.contains("content-type: application/json"), "{text}");
        // Version links name the address the server is bound to, never the Host header
        // (issue #9).
        assert!(text.contains(&format!("http://{addr}/v2/")), "{text}");
        assert!(!text.contains("example.test"), "{text}");

        // A keep-alive connection left idle must not hold shutdown up for the grace period.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /v2/tasks/x HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 404");
        shutdown.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn test_serve_get_body_refused_unless_content_length_zero() {
        use tokio::io::AsyncWriteExt;
        let (addr, shutdown, server, _h) = start(|_| {}).await;
        for (head_and_body, status) in [
            ("Content-Length: 0\r\n\r\n", "HTTP/1.1 200"),
            ("\r\n", "HTTP/1.1 200"),
            ("Content-Length: 2\r\n\r\n{}", "HTTP/1.1 400"),
            (
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.1 400",
            ),
        ] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "GET /v2/tasks HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n\
                 Connection: close\r\n{head_and_body}"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let text = read_all(&mut stream).await;
            assert!(text.starts_with(status), "{head_and_body:?}: {text}");
            if status.ends_with("400") {
                assert!(
                    text.contains("A body is not expected with this request."),
                    "{text}"
                );
            }
        }
        shutdown.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn test_serve_slow_headers_are_cut_off() {
        use tokio::io::AsyncWriteExt;
        let (addr, shutdown, server, _h) = start(|c| c.request_timeout_secs = 1).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /versions HTTP/1.1\r\nHo")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let _ = read_all(&mut stream).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        shutdown.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn test_serve_bad_token_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "[[token]]\ntoken = 5\n").unwrap();
        let h = testing::Harness::new();
        let mut config = (*h.api.state.config).clone();
        config.auth.mode = crate::config::AuthMode::Token;
        config.auth.token_file = Some(path);
        let state = AppState {
            config: Arc::new(config),
            ..h.api.state.clone()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let res = serve(listener, state, std::future::pending()).await;
        assert!(matches!(res, Err(e) if e.kind() == io::ErrorKind::InvalidData));
    }
}
