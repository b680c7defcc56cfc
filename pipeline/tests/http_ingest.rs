//! End-to-end ingest tests against a small HTTP/1.1 server on 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use md5::Md5;
use sha2::{Digest, Sha512};
use sluice_formats::{Format, Limits};
use sluice_pipeline::http::{HttpConfig, HttpSource};
use sluice_pipeline::source::{ChunkSource, MemorySource};
use sluice_pipeline::ssrf::ImportPolicy;
use sluice_pipeline::store::LocalStore;
use sluice_pipeline::{ingest, IngestError, Progress, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the server did for one request to a streamed body.
#[derive(Clone, Debug, Default)]
struct Sent {
    bytes: u64,
    closed_early: bool,
}

/// A canned response: status line, headers, body, and how much of the body to send.
#[derive(Clone)]
struct Route {
    path: &'static str,
    head: String,
    body: Bytes,
    /// Send only this many body bytes, then hang (to test the idle timeout).
    stall_after: Option<usize>,
}

struct Server {
    port: u16,
    sent: Arc<Mutex<Vec<(String, Sent)>>>,
}

impl Server {
    async fn start(routes: Vec<Route>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&sent);
        let routes = Arc::new(routes);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let routes = Arc::clone(&routes);
                let log = Arc::clone(&log);
                tokio::spawn(async move { serve(stream, &routes, &log).await });
            }
        });
        Server { port, sent }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn sent(&self, path: &str) -> Option<Sent> {
        let log = self.sent.lock().unwrap();
        log.iter().find(|(p, _)| p == path).map(|(_, s)| s.clone())
    }
}

async fn serve(mut stream: TcpStream, routes: &[Route], log: &Mutex<Vec<(String, Sent)>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let Some(route) = routes.iter().find(|r| r.path == path) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    };
    if stream.write_all(route.head.as_bytes()).await.is_err() {
        return;
    }
    let mut sent = Sent::default();
    let limit = route.stall_after.unwrap_or(route.body.len());
    for piece in route.body[..limit].chunks(64 << 10) {
        if stream.write_all(piece).await.is_err() {
            sent.closed_early = true;
            break;
        }
        sent.bytes += piece.len() as u64;
    }
    if route.stall_after.is_some() {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    log.lock().unwrap().push((path, sent));
}

fn ok_route(path: &'static str, body: Bytes) -> Route {
    Route {
        path,
        head: format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n",
            body.len()
        ),
        body,
        stall_after: None,
    }
}

fn redirect(path: &'static str, location: &str) -> Route {
    Route {
        path,
        head: format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"),
        body: Bytes::new(),
        stall_after: None,
    }
}

/// Allows exactly the test server: 127.0.0.1 on its port.
fn lab_policy(server: &Server) -> ImportPolicy {
    ImportPolicy {
        allowed_hosts: vec![format!("127.0.0.1:{}", server.port).parse().unwrap()],
        ..ImportPolicy::default()
    }
}

fn quick_config() -> HttpConfig {
    HttpConfig {
        idle_timeout: Duration::from_millis(500),
        ..HttpConfig::default()
    }
}

fn never_cancel() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// 8 MiB + 123 bytes of a non-repeating pattern: a raw image whose size is not a multiple of
/// any chunk size.
fn pattern() -> Bytes {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..(8 << 20) + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(data)
}

/// A real qcow2 made by qemu-img, holding `data` written at offset 0.
fn qemu_qcow2(dir: &Path, data: &[u8]) -> Bytes {
    let raw = dir.join("src.raw");
    let qcow = dir.join("src.qcow2");
    let mut padded = data.to_vec();
    padded.resize(16 << 20, 0);
    std::fs::write(&raw, &padded).unwrap();
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(status.success());
    Bytes::from(std::fs::read(&qcow).unwrap())
}

fn assert_store_clean(root: &Path) {
    for sub in ["tmp", "images"] {
        let left: Vec<_> = std::fs::read_dir(root.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub}/ holds {left:?}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn test_ingest_http_raw_is_stored_with_digests() {
    let body = pattern();
    let server = Server::start(vec![ok_route("/disk.img", body.clone())]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let source = HttpSource::open(
        &server.url("/disk.img"),
        &lab_policy(&server),
        &quick_config(),
    )
    .await
    .unwrap();
    assert_eq!(source.content_length(), Some(body.len() as u64));
    let progress = Progress::default();
    let done = ingest(
        source,
        Format::Raw,
        Limits::default(),
        &store,
        "img-1",
        &progress,
        never_cancel(),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("images/img-1")).unwrap(),
        body
    );
    assert_eq!(done.size, body.len() as u64);
    assert_eq!(done.md5_hex, hex(&Md5::digest(&body)));
    assert_eq!(done.sha512_hex, hex(&Sha512::digest(&body)));
    assert!(done.report.is_accepted());
    assert_eq!(progress.received(), body.len() as u64);
    assert_eq!(progress.total(), Some(body.len() as u64));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn test_ingest_http_qcow2_is_accepted_as_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let image = qemu_qcow2(dir.path(), &pattern()[..1 << 20]);
    let server = Server::start(vec![ok_route("/disk.qcow2", image.clone())]).await;
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let source = HttpSource::open(
        &server.url("/disk.qcow2"),
        &lab_policy(&server),
        &quick_config(),
    )
    .await
    .unwrap();
    let done = ingest(
        source,
        Format::Qcow2,
        Limits::default(),
        &store,
        "q",
        &Progress::default(),
        never_cancel(),
    )
    .await
    .unwrap();
    assert_eq!(done.report.format, Format::Qcow2);
    assert_eq!(done.report.virtual_size, Some(16 << 20));
    assert_eq!(std::fs::read(store.path("q").unwrap()).unwrap(), image);
    assert_eq!(done.md5_hex, hex(&Md5::digest(&image)));
}

#[tokio::test]
async fn test_ingest_http_redirect_within_policy_is_followed() {
    let body = Bytes::from(vec![7u8; 64 << 10]);
    let server = Server::start(vec![
        ok_route("/disk.img", body.clone()),
        redirect("/old", "/disk.img"),
    ])
    .await;
    let source = HttpSource::open(&server.url("/old"), &lab_policy(&server), &quick_config())
        .await
        .unwrap();
    assert_eq!(source.url().path(), "/disk.img");
    assert_eq!(source.content_length(), Some(body.len() as u64));
}

#[tokio::test]
async fn test_ingest_http_404_names_the_status() {
    let server = Server::start(Vec::new()).await;
    let err = HttpSource::open(&server.url("/nope"), &lab_policy(&server), &quick_config())
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::HttpStatus { .. }));
    let err = IngestError::from(err);
    assert_eq!(err.reason_code(), "source_error");
    assert_eq!(err.to_string(), "source returned HTTP 404 Not Found");
}

#[tokio::test]
async fn test_ingest_http_gzip_is_rejected_and_download_stopped() {
    // A gzip header followed by 64 MiB: far more than socket buffers can hold.
    let mut data = vec![0x1f, 0x8b, 0x08, 0x00];
    data.resize(64 << 20, 0x55);
    let body = Bytes::from(data);
    let server = Server::start(vec![ok_route("/disk.img.gz", body.clone())]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let source = HttpSource::open(
        &server.url("/disk.img.gz"),
        &lab_policy(&server),
        &quick_config(),
    )
    .await
    .unwrap();
    let err = ingest(
        source,
        Format::Raw,
        Limits::default(),
        &store,
        "gz",
        &Progress::default(),
        never_cancel(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IngestError::Rejected(_)));
    assert_eq!(err.reason_code(), "compressed");
    assert!(err.to_string().starts_with("image rejected: "), "{err}");
    assert_store_clean(dir.path());
    // The server's writes fail once the client has closed the connection.
    let sent = loop {
        if let Some(sent) = server.sent("/disk.img.gz") {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(sent.closed_early, "{sent:?}");
    assert!(sent.bytes < body.len() as u64 / 2, "{sent:?}");
}

#[tokio::test]
async fn test_ingest_http_redirect_to_denied_host_is_refused() {
    let server = Server::start(vec![
        redirect("/meta", "http://169.254.169.254/latest/meta-data/"),
        redirect("/decimal", "http://2130706433/disk.img"),
        redirect("/name", "http://localhost/disk.img"),
        redirect("/port", "http://127.0.0.1:1/disk.img"),
    ])
    .await;
    for (path, target, why) in [
        (
            "/meta",
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is not on the import allow-list",
        ),
        (
            "/decimal",
            "http://2130706433/disk.img",
            "non-canonical IP address",
        ),
        (
            "/name",
            "http://localhost/disk.img",
            "port 80 is not allowed (allowed for 127.0.0.1: ",
        ),
        (
            "/port",
            "http://127.0.0.1:1/disk.img",
            "port 1 is not allowed (allowed for 127.0.0.1: ",
        ),
    ] {
        let err = HttpSource::open(&server.url(path), &lab_policy(&server), &quick_config())
            .await
            .unwrap_err();
        match &err {
            SourceError::Policy { url, reason } => {
                assert_eq!(url, target, "{path}");
                assert!(reason.to_string().contains(why), "{path}: {reason}");
            }
            other => panic!("{path}: {other}"),
        }
    }
    // Without the lab allow-list even the first hop is refused (loopback).
    let err = HttpSource::open(
        &server.url("/meta"),
        &ImportPolicy::default(),
        &quick_config(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SourceError::Policy { .. }), "{err}");
}

#[tokio::test]
async fn test_ingest_http_localhost_reaches_allowed_loopback_address() {
    // Issue #9: allowing 127.0.0.1 did not cover `localhost`. `localhost` may resolve to ::1
    // first; only the allowed 127.0.0.1 is connected to.
    let body = pattern();
    let server = Server::start(vec![ok_route("/disk.img", body.clone())]).await;
    let url = format!("http://localhost:{}/disk.img", server.port);
    let source = HttpSource::open(&url, &lab_policy(&server), &quick_config())
        .await
        .unwrap();
    assert_eq!(source.content_length(), Some(body.len() as u64));
}

#[tokio::test]
async fn test_ingest_http_redirect_loop_is_bounded() {
    let server = Server::start(vec![redirect("/loop", "/loop")]).await;
    let err = HttpSource::open(&server.url("/loop"), &lab_policy(&server), &quick_config())
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::TooManyRedirects(5)));
}

#[tokio::test]
async fn test_ingest_http_short_body_fails_and_cleans_up() {
    let body = pattern();
    let mut route = ok_route("/short", body);
    // Announce everything, send 100 KiB, then go quiet.
    route.stall_after = Some(100 << 10);
    let server = Server::start(vec![route]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let source = HttpSource::open(&server.url("/short"), &lab_policy(&server), &quick_config())
        .await
        .unwrap();
    let err = ingest(
        source,
        Format::Raw,
        Limits::default(),
        &store,
        "s",
        &Progress::default(),
        never_cancel(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Source(SourceError::IdleTimeout { offset: 102400, .. })
        ),
        "{err}"
    );
    // A stalled source is reported as too slow, whichever guard trips first.
    assert_eq!(err.reason_code(), "source_too_slow");
    assert_store_clean(dir.path());
}

/// A source that yields one chunk and then never another.
struct Hanging(Option<Bytes>);

impl ChunkSource for Hanging {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        match self.0.take() {
            Some(b) => Ok(Some(b)),
            None => std::future::pending().await,
        }
    }

    fn content_length(&self) -> Option<u64> {
        None
    }
}

#[tokio::test]
async fn test_ingest_cancel_stops_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let (tx, rx) = watch::channel(false);
    let progress = Progress::default();
    let run = ingest(
        Hanging(Some(Bytes::from(vec![0u8; 8192]))),
        Format::Raw,
        Limits::default(),
        &store,
        "c",
        &progress,
        rx,
    );
    let cancel = async {
        while progress.received() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx.send_replace(true);
    };
    let (result, ()) = tokio::join!(run, cancel);
    let err = result.unwrap_err();
    assert!(matches!(err, IngestError::Cancelled));
    assert_eq!(err.reason_code(), "cancelled");
    assert_store_clean(dir.path());
}

#[tokio::test]
async fn test_ingest_truncated_qcow2_is_rejected_at_end() {
    let dir = tempfile::tempdir().unwrap();
    let image = qemu_qcow2(dir.path(), &pattern()[..1 << 20]);
    let cut = image.slice(..image.len() - 4096);
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let err = ingest(
        MemorySource::new(cut, 4096),
        Format::Qcow2,
        Limits::default(),
        &store,
        "t",
        &Progress::default(),
        never_cancel(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IngestError::Rejected(_)), "{err}");
    assert_store_clean(&dir.path().join("store"));
}

#[tokio::test]
async fn test_ingest_announced_size_over_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let limits = Limits {
        max_virtual_size: 4096,
        ..Limits::default()
    };
    let err = ingest(
        MemorySource::new(Bytes::from(vec![0u8; 8192]), 1024),
        Format::Raw,
        limits,
        &store,
        "big",
        &Progress::default(),
        never_cancel(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason_code(), "size_cap");
    assert_store_clean(dir.path());
}
