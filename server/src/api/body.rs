//! Request bodies read under a size cap and a deadline, and response bodies: JSON, empty, or
//! an image file streamed in chunks.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};
use sluice_pipeline::store::ImageStream;
use tokio::io::{AsyncRead, ReadBuf};

use crate::api::error::ApiError;

/// Every response body.
pub type ApiBody = BoxBody<Bytes, io::Error>;

/// Bytes read from an image file per response frame: large enough for full disk and network
/// speed, small enough that a slow client pins little memory per download.
pub const FILE_CHUNK: usize = 256 << 10;

/// The JSON media type Glance sends (no charset).
pub const JSON: &str = "application/json";

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ApiBody> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A `text/plain` response (webob's form of an error when JSON was not asked for).
pub fn text_response(status: StatusCode, text: String) -> Response<ApiBody> {
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    response
}

/// A response with no body (204).
pub fn empty_response(status: StatusCode) -> Response<ApiBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

/// A body of fixed bytes.
pub fn full(bytes: Bytes) -> ApiBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Reads a request body of at most `limit` bytes within `deadline`.
///
/// A declared `Content-Length` above the limit is refused before reading anything.
///
/// # Errors
/// [`ApiError::BodyTooLarge`], [`ApiError::RequestTimeout`], or [`ApiError::BadRequest`] when
/// the connection fails mid-body.
pub async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let declared = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::BadRequest("Invalid Content-Length header.".into()))?;
        if declared > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Err(ApiError::BodyTooLarge(limit));
        }
    }
    tokio::time::timeout(deadline, read_capped(body, limit))
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "not within {} s (request_timeout_secs)",
                deadline.as_secs()
            ))
        })?
}

async fn read_capped<B>(mut body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("Error reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(ApiError::BodyTooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Parses a JSON request body.
///
/// # Errors
/// [`ApiError::BodyExpected`] for an empty body, [`ApiError::MalformedJson`] otherwise.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BodyExpected);
    }
    serde_json::from_slice(bytes).map_err(|_| ApiError::MalformedJson)
}

/// Reads a JSON request body within `max_request_body` and `request_timeout_secs`, then
/// parses it ([`read_body`], [`parse_json`]).
///
/// # Errors
/// As [`read_body`] and [`parse_json`].
pub async fn read_json<B>(
    config: &crate::config::Config,
    body: B,
    headers: &HeaderMap,
) -> Result<serde_json::Value, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let bytes = read_body(
        body,
        headers,
        config.max_request_body,
        Duration::from_secs(config.request_timeout_secs.max(1)),
    )
    .await?;
    parse_json(&bytes)
}

/// Streams `remaining` bytes of stored image data (an open range of it) in [`FILE_CHUNK`]
/// frames. Memory: one chunk per poll, released once hyper has written it.
pub struct FileBody {
    file: ImageStream,
    remaining: u64,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl FileBody {
    /// A body of the next `len` bytes of `file`.
    pub fn new(file: ImageStream, len: u64) -> Self {
        FileBody {
            file,
            remaining: len,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(FILE_CHUNK);
        let mut chunk = vec![0u8; want];
        let mut read_buf = ReadBuf::new(&mut chunk);
        let this = &mut *self;
        match Pin::new(&mut this.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                if n == 0 {
                    // The file shrank under us: end the response short rather than hang.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "image file ended before its recorded size",
                    ))));
                }
                chunk.truncate(n);
                this.remaining = this
                    .remaining
                    .saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_read_body_over_limit_is_413() {
        let body = Full::new(Bytes::from(vec![b'x'; 11]));
        let res = read_body(body, &HeaderMap::new(), 10, Duration::from_secs(5)).await;
        assert!(matches!(res, Err(ApiError::BodyTooLarge(10))));
    }

    #[tokio::test]
    async fn test_read_body_declared_length_over_limit_is_413() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1000000"));
        let body = Full::new(Bytes::from_static(b"{}"));
        let res = read_body(body, &headers, 10, Duration::from_secs(5)).await;
        assert!(matches!(res, Err(ApiError::BodyTooLarge(10))));
    }

    #[test]
    fn test_parse_json_empty_and_malformed() {
        assert!(matches!(parse_json(b""), Err(ApiError::BodyExpected)));
        assert!(matches!(parse_json(b"  \n"), Err(ApiError::BodyExpected)));
        assert!(matches!(
            parse_json(b"{not json"),
            Err(ApiError::MalformedJson)
        ));
        assert!(matches!(
            parse_json(b"{}"),
            Ok(serde_json::Value::Object(_))
        ));
    }
}
