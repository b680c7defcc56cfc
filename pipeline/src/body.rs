//! The request-body source: the body of an HTTP request a client sends to Sluice (a direct
//! upload, `PUT /v2/images/{id}/file`) as a [`ChunkSource`] for the one-pass ingest.
//!
//! ```text
//!   client ──TCP──▶ hyper (read buffer ≤ its max_buf_size) ──frames──▶ BodySource ──Bytes──▶ ingest
//! ```
//!
//! Nothing here buffers the image: a frame is read from the body only when the ingest asks
//! for the next chunk, and hyper reads from the socket only when a frame is asked for, so a
//! slow disk or hasher slows the client through TCP flow control.
//!
//! Frames are handed out in pieces (zero-copy `Bytes` slices): at most [`EARLY_CHUNK`] bytes
//! while the first [`EARLY_SPAN`] bytes of the body go by, where the inspector takes nearly
//! all of its verdicts, then at most [`BODY_MAX_CHUNK`]. A hostile header is therefore refused
//! after the piece holding it, not after whatever the socket buffer held: a backing-file
//! qcow2 goes into the pipeline for at most 16 KiB. The rest of the frame stays here, never
//! inspected, hashed or stored.
//!
//! After a refusal the server still has to answer a client that is busy sending: clients
//! that write the whole body before reading the answer (python-glanceclient, openstacksdk)
//! report a broken pipe instead of the answer when the server closes the connection under
//! them. [`BodySource::discard`] reads and drops the rest of the body, up to a bound in bytes
//! and in time, without any of it reaching the pipeline.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::http::HTTP_MAX_CHUNK;
use crate::source::{ChunkSource, SourceError};

/// Largest chunk handed to the pipeline: the same bound as the pull source's
/// ([`HTTP_MAX_CHUNK`]), so the memory formula of [`crate::ingest`](mod@crate::ingest) holds for uploads too.
pub const BODY_MAX_CHUNK: usize = HTTP_MAX_CHUNK;

/// Largest chunk while the start of the body goes by: the inspectors decide on headers at
/// 4 KiB steps (`DECISION_STEP`), so 16 KiB pieces stop a hostile header within 16 KiB.
pub const EARLY_CHUNK: usize = 16 << 10;

/// How much of the body is handed out in [`EARLY_CHUNK`] pieces: the headers, descriptors and
/// first tables of every format fit (a VMDK descriptor may take 1 MiB but is text read as it
/// streams). 16 pieces: a negligible cost next to the hashing of a whole image.
pub const EARLY_SPAN: u64 = 256 << 10;

/// What [`BodySource::discard`] did with the rest of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discarded {
    /// The body ended: the client has sent everything and reads the answer.
    Ended {
        /// Bytes dropped.
        bytes: u64,
    },
    /// More than the byte bound was left; the rest is not read.
    ByteBound {
        /// Bytes dropped.
        bytes: u64,
    },
    /// The time bound passed before the body ended.
    TimeBound {
        /// Bytes dropped.
        bytes: u64,
    },
    /// The body failed (the client went away or sent a broken body).
    Failed {
        /// Bytes dropped.
        bytes: u64,
    },
}

/// A request body read chunk by chunk (see the module docs).
#[derive(Debug)]
pub struct BodySource<B> {
    body: B,
    content_length: Option<u64>,
    idle_timeout: Duration,
    /// Bytes handed out so far.
    received: u64,
    /// Bytes read from the body (handed out, pending or discarded).
    read: u64,
    /// The part of the last frame not handed out yet.
    pending: Bytes,
    ended: bool,
}

impl<B> BodySource<B>
where
    B: Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    /// Reads `body`, which announced `content_length` (the request's `Content-Length`;
    /// `None` when chunked); fails with [`SourceError::IdleTimeout`] when nothing arrives for
    /// `idle_timeout`.
    pub fn new(body: B, content_length: Option<u64>, idle_timeout: Duration) -> Self {
        BodySource {
            body,
            content_length,
            idle_timeout,
            received: 0,
            read: 0,
            pending: Bytes::new(),
            ended: false,
        }
    }

    /// Bytes handed out to the pipeline so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk of the body; `Ok(None)` at its end.
    ///
    /// # Errors
    /// [`SourceError::IdleTimeout`] when the client sends nothing for the idle timeout;
    /// [`SourceError::RequestBody`] when the body fails (the client disconnected, or the
    /// connection ended before `Content-Length` bytes).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        if self.pending.is_empty() {
            match self.next_frame().await? {
                Some(data) => self.pending = data,
                None => return Ok(None),
            }
        }
        let limit = if self.received < EARLY_SPAN {
            EARLY_CHUNK
        } else {
            BODY_MAX_CHUNK
        };
        let piece = self.pending.split_to(limit.min(self.pending.len()));
        let n = u64::try_from(piece.len()).unwrap_or(u64::MAX);
        self.received = self.received.saturating_add(n);
        Ok(Some(piece))
    }

    /// Reads and drops the rest of the body (none of it reaches the pipeline) until it ends,
    /// `max_bytes` have been dropped or `max_time` has passed.
    pub async fn discard(&mut self, max_bytes: u64, max_time: Duration) -> Discarded {
        let deadline = Instant::now().checked_add(max_time);
        let mut bytes = u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        self.pending = Bytes::new();
        loop {
            if bytes > max_bytes {
                return Discarded::ByteBound { bytes };
            }
            let left = deadline.map_or(max_time, |d| d.saturating_duration_since(Instant::now()));
            let frame = match tokio::time::timeout(left, self.next_frame()).await {
                Err(_) => return Discarded::TimeBound { bytes },
                Ok(frame) => frame,
            };
            match frame {
                Ok(Some(data)) => {
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    bytes = bytes.saturating_add(n);
                }
                Ok(None) => return Discarded::Ended { bytes },
                Err(SourceError::IdleTimeout { .. }) => return Discarded::TimeBound { bytes },
                Err(_) => return Discarded::Failed { bytes },
            }
        }
    }

    /// The next non-empty data frame (trailers carry no image bytes).
    async fn next_frame(&mut self) -> Result<Option<Bytes>, SourceError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let frame = tokio::time::timeout(self.idle_timeout, self.body.frame())
                .await
                .map_err(|_| SourceError::IdleTimeout {
                    offset: self.received,
                    secs: self.idle_timeout.as_secs(),
                })?;
            let Some(frame) = frame else {
                self.ended = true;
                return self.check_complete().map(|()| None);
            };
            let frame = frame.map_err(|e| SourceError::RequestBody {
                offset: self.received,
                reason: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    self.read = self.read.saturating_add(n);
                    return Ok(Some(data));
                }
            }
        }
    }

    /// At the end of the body: fewer bytes than announced is a truncated body (hyper
    /// reports that itself for a socket; other bodies are checked here).
    fn check_complete(&self) -> Result<(), SourceError> {
        match self.content_length {
            Some(announced) if self.read < announced => Err(SourceError::RequestBody {
                offset: self.read,
                reason: format!("the body ended before its announced {announced} bytes"),
            }),
            _ => Ok(()),
        }
    }
}

impl<B> ChunkSource for BodySource<B>
where
    B: Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        BodySource::next_chunk(self).await
    }

    fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::process::Command;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use sluice_formats::Format;
    use tokio::net::TcpListener;
    use tokio::sync::{oneshot, watch};

    use super::*;
    use crate::ingest::{ingest, Progress};
    use crate::store::{LocalStore, Store};

    const IDLE: Duration = Duration::from_secs(30);

    /// Serves one connection on loopback; each request's body goes to `handle`, whose
    /// string becomes a 200 response. Returns the address and the handler's results.
    async fn serve_one<F, Fut>(handle: F) -> (std::net::SocketAddr, oneshot::Receiver<String>)
    where
        F: FnOnce(Request) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = String> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let slot = Arc::new(std::sync::Mutex::new(Some((handle, tx))));
            let service = service_fn(move |req: Request| {
                let taken = slot.lock().unwrap().take();
                async move {
                    let (handle, tx) = taken.expect("one request");
                    let out = handle(req).await;
                    let _ = tx.send(out.clone());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        out,
                    ))))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        (addr, rx)
    }

    type Request = http::Request<Incoming>;

    fn source_of(req: Request) -> BodySource<Incoming> {
        let len = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        BodySource::new(req.into_body(), len, IDLE)
    }

    /// A qcow2 whose header names `/etc/passwd` as its backing file (qemu-img, `-u`: the
    /// backing file is not opened).
    fn backed_qcow2() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backed.qcow2");
        let out = Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-b",
                "/etc/passwd",
                "-F",
                "raw",
            ])
            .arg(&path)
            .arg("1G")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::read(&path).unwrap()
    }

    /// Sends a request head announcing `announced` bytes, then `head` followed by zeros, in
    /// 64 KiB writes, until `total` bytes are written or a write fails; then shuts the
    /// socket's writing half. Returns the bytes written.
    fn send_body(addr: std::net::SocketAddr, head: &[u8], announced: u64, total: u64) -> u64 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {announced}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut block = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        while sent < total {
            block.fill(0);
            let at = sent as usize;
            if at < head.len() {
                let n = (head.len() - at).min(block.len());
                block[..n].copy_from_slice(&head[at..at + n]);
            }
            let n = (total - sent).min(block.len() as u64) as usize;
            if s.write_all(&block[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        let _ = s.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        sent
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_body_source_backing_file_qcow2_in_1_gib_body_refused_within_16_kib() {
        let image = backed_qcow2();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let tmp = store.scratch_dir().to_path_buf();
        let (addr, result) = serve_one(move |req| async move {
            let progress = Progress::default();
            let err = ingest(
                source_of(req),
                Format::Qcow2,
                sluice_formats::Limits::default(),
                &store,
                "img",
                &progress,
                watch::channel(false).1,
            )
            .await
            .unwrap_err();
            format!("{} {}", err.reason_code(), progress.received())
        })
        .await;
        let total = 1u64 << 30;
        let client = std::thread::spawn(move || send_body(addr, &image, total, total));
        let result = result.await.unwrap();
        let (code, received) = result.split_once(' ').unwrap();
        assert_eq!(code, "backing_file");
        let received: u64 = received.parse().unwrap();
        assert!(received <= EARLY_CHUNK as u64, "{received} bytes went in");
        assert!(received <= 64 << 10);
        let sent = client.join().unwrap();
        assert!(sent < total, "the server read the whole body");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_body_source_stalled_consumer_stops_the_client() {
        // The consumer takes one chunk, then stops reading: the client can send only what
        // the socket buffers and hyper's read buffer hold, not the body.
        let total = 1u64 << 30;
        let sent = Arc::new(AtomicU64::new(0));
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let (addr, done) = serve_one(move |req| async move {
            let mut source = source_of(req);
            let first = source.next_chunk().await.unwrap().unwrap();
            let _ = release_rx.await;
            format!("{}", first.len())
        })
        .await;
        let counter = Arc::clone(&sent);
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            let req = format!("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap();
            let block = vec![1u8; 64 << 10];
            while s.write_all(&block).is_ok() {
                counter.fetch_add(block.len() as u64, Ordering::SeqCst);
            }
            s
        });
        // The write timeout fires once the server stops taking bytes.
        let stream = tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
        let sent = sent.load(Ordering::SeqCst);
        assert!(
            sent < 64 << 20,
            "{sent} bytes were taken from a stalled upload"
        );
        release_tx.send(()).unwrap();
        let _ = done.await;
        drop(stream);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_body_source_client_gone_mid_body_is_request_body_error() {
        let (addr, result) = serve_one(|req| async move {
            let mut source = source_of(req);
            loop {
                match source.next_chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return "ended".to_owned(),
                    Err(e) => return format!("{e:?}"),
                }
            }
        })
        .await;
        let sent = tokio::task::spawn_blocking(move || send_body(addr, b"", 1 << 20, 100_000))
            .await
            .unwrap();
        assert_eq!(sent, 100_000);
        let result = result.await.unwrap();
        assert!(
            result.starts_with("RequestBody { offset: 100000"),
            "{result}"
        );
    }

    #[tokio::test]
    async fn test_body_source_hands_out_small_pieces_at_the_start() {
        let body = Full::new(Bytes::from(vec![5u8; 1 << 20]));
        let mut source = BodySource::new(body, Some(1 << 20), IDLE);
        let mut sizes = Vec::new();
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            sizes.push(chunk.len());
        }
        let mut want = vec![EARLY_CHUNK; 16];
        want.extend([BODY_MAX_CHUNK, 256 << 10]);
        assert_eq!(sizes, want);
        assert_eq!(source.received(), 1 << 20);
    }

    #[tokio::test]
    async fn test_body_source_shorter_than_announced_is_request_body_error() {
        let body = Full::new(Bytes::from(vec![5u8; 1000]));
        let mut source = BodySource::new(body, Some(4096), IDLE);
        assert_eq!(source.next_chunk().await.unwrap().unwrap().len(), 1000);
        let err = source.next_chunk().await.unwrap_err();
        assert!(
            matches!(err, SourceError::RequestBody { offset: 1000, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn test_body_source_discard_drops_the_rest_within_its_bound() {
        let body = Full::new(Bytes::from(vec![5u8; 100_000]));
        let mut source = BodySource::new(body, Some(100_000), IDLE);
        source.next_chunk().await.unwrap();
        let dropped = source.discard(1 << 20, IDLE).await;
        assert_eq!(
            dropped,
            Discarded::Ended {
                bytes: 100_000 - EARLY_CHUNK as u64
            }
        );
        assert_eq!(source.received(), EARLY_CHUNK as u64);

        let body = Full::new(Bytes::from(vec![5u8; 100_000]));
        let mut source = BodySource::new(body, Some(100_000), IDLE);
        assert_eq!(
            source.discard(10_000, IDLE).await,
            Discarded::ByteBound { bytes: 100_000 }
        );
    }
}
