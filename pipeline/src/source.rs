//! Where an import's bytes come from: the [`ChunkSource`] trait and its errors.

use std::future::Future;
use std::io;

use bytes::Bytes;

use crate::ssrf::PolicyError;

/// The largest chunk a reader-driven inspection reads at once (bounds its buffer).
pub const MAX_CHUNK: usize = 16 << 20;

/// A source failed while being opened or read. Messages are fit for a task's `message`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The chunk size asked for is zero or above [`MAX_CHUNK`].
    #[error("chunk size {0} is outside 1..={MAX_CHUNK}")]
    BadChunkSize(usize),
    /// The source announced more bytes than the import may store.
    #[error("source announces {announced} bytes, more than the limit of {limit} bytes")]
    ContentTooLarge {
        /// The Content-Length.
        announced: u64,
        /// The limit.
        limit: u64,
    },
    /// No address of the host accepted a TCP connection.
    #[error("connecting to {host}: {source}")]
    Connecting {
        /// `host:port`.
        host: String,
        /// The last connection error.
        source: io::Error,
    },
    /// The connection was not established in time.
    #[error("connecting to {host} timed out after {secs} s")]
    ConnectTimeout {
        /// `host:port`.
        host: String,
        /// The timeout.
        secs: u64,
    },
    /// The response headers did not arrive in time.
    #[error("source {url} sent no response headers within {secs} s")]
    HeaderTimeout {
        /// The URL requested.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// The HTTP exchange failed (protocol error, connection reset, body shorter than announced).
    #[error("HTTP exchange with {url} failed after {offset} body bytes: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// Body bytes received before the failure.
        offset: u64,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The source answered with a status other than 2xx or a followed redirect.
    #[error("source returned HTTP {status}")]
    HttpStatus {
        /// The status, e.g. `404 Not Found`.
        status: http::StatusCode,
        /// The URL that answered.
        url: String,
    },
    /// No bytes arrived for too long.
    #[error("source stalled: no data for {secs} s after {offset} bytes")]
    IdleTimeout {
        /// Bytes received before the stall.
        offset: u64,
        /// The timeout.
        secs: u64,
    },
    /// The import policy refused the URL, a redirect target or a resolved address.
    #[error("import source {url} refused: {reason}")]
    Policy {
        /// The URL refused (the redirect target for a redirect).
        url: String,
        /// Why.
        reason: PolicyError,
    },
    /// Reading the next chunk failed.
    #[error("reading chunk at offset {offset}: {source}")]
    ReadingChunk {
        /// Stream offset of the failed read.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// A redirect without a usable `Location` header.
    #[error("source {url} answered HTTP {status} without a usable Location header")]
    RedirectWithoutLocation {
        /// The redirect status.
        status: http::StatusCode,
        /// The URL that answered.
        url: String,
    },
    /// The body of a request sent to Sluice (an upload) failed: the client disconnected, or
    /// the body ended before its `Content-Length`.
    #[error("the request body failed after {offset} bytes: {reason}")]
    RequestBody {
        /// Body bytes received before the failure.
        offset: u64,
        /// What failed (hyper's words).
        reason: String,
    },
    /// The host name did not resolve.
    #[error("resolving host '{host}': {source}")]
    Resolving {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        /// The host name.
        host: String,
        /// The TLS error.
        source: io::Error,
    },
    /// More redirects than allowed.
    #[error("source redirected more than {0} times")]
    TooManyRedirects(usize),
    /// The source sent fewer bytes than the minimum rate asks for over one window (a
    /// trickle, or nothing at all): see [`crate::rate::RateGuard`].
    #[error(
        "source too slow: {received} bytes in {window_secs} s after {offset} bytes, below the \
         minimum of {min_bytes_per_sec} bytes/s"
    )]
    TooSlow {
        /// Bytes received during the window.
        received: u64,
        /// The window, in seconds (fractions rounded down).
        window_secs: u64,
        /// The minimum rate.
        min_bytes_per_sec: u64,
        /// Bytes received before the failed window.
        offset: u64,
    },
    /// Decompressing a wrapped stream failed (corrupt, truncated, nested, too large).
    #[error(transparent)]
    Unwrap(crate::unwrap::UnwrapError),
}

/// Reads the next chunk of a blocking reader into `buf` (retrying interrupted reads):
/// `None` at end of input. `offset` (the stream position) names the failed read.
///
/// # Errors
/// [`SourceError::ReadingChunk`] when the read fails.
pub(crate) fn read_chunk<'a>(
    reader: &mut impl std::io::Read,
    buf: &'a mut [u8],
    offset: u64,
) -> Result<Option<&'a [u8]>, SourceError> {
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(buf.get(..n)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A decompressing reader's verdict on the stream is not an I/O failure.
            Err(e) => {
                return Err(match e.downcast::<crate::unwrap::UnwrapError>() {
                    Ok(e) => SourceError::Unwrap(e),
                    Err(source) => SourceError::ReadingChunk { offset, source },
                })
            }
        }
    }
}

/// A stream of chunks: an HTTP body, a file, or memory in tests.
pub trait ChunkSource: Send {
    /// The next chunk; `Ok(None)` at end of stream. Chunks may have any size up to the
    /// source's own bound.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, SourceError>> + Send;

    /// The length the source announced (HTTP Content-Length), if any.
    fn content_length(&self) -> Option<u64>;

    /// The compression wrapper this source removes (`gzip`, `xz`, ...; see
    /// [`crate::unwrap::Unwrapped`]), if any.
    fn unwrapped(&self) -> Option<&'static str> {
        None
    }

    /// Image properties the source found in the stream (an OVA descriptor's facts).
    fn source_properties(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A borrowed source is a source: the caller keeps it after the ingest (an upload's body is
/// still read, and dropped, after a refusal; see [`crate::body::BodySource::discard`]).
impl<S: ChunkSource + ?Sized> ChunkSource for &mut S {
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, SourceError>> + Send {
        (**self).next_chunk()
    }

    fn content_length(&self) -> Option<u64> {
        (**self).content_length()
    }

    fn unwrapped(&self) -> Option<&'static str> {
        (**self).unwrapped()
    }

    fn source_properties(&self) -> Vec<(String, String)> {
        (**self).source_properties()
    }
}

/// A source serving chunks from memory (tests, benchmarks, small uploads).
#[derive(Debug, Default)]
pub struct MemorySource {
    chunks: std::collections::VecDeque<Bytes>,
    len: u64,
}

impl MemorySource {
    /// Serves `data` in chunks of `chunk_size` bytes (the whole at once when 0).
    pub fn new(data: Bytes, chunk_size: usize) -> Self {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let mut chunks = std::collections::VecDeque::new();
        let mut rest = data;
        let step = if chunk_size == 0 {
            rest.len()
        } else {
            chunk_size
        };
        while !rest.is_empty() {
            chunks.push_back(rest.split_to(step.min(rest.len())));
        }
        MemorySource { chunks, len }
    }
}

impl ChunkSource for MemorySource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        Ok(self.chunks.pop_front())
    }

    fn content_length(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// A source reading a local file (the CLI, benchmarks) in chunks of a fixed size.
#[derive(Debug)]
pub struct FileSource {
    file: tokio::fs::File,
    chunk_size: usize,
    offset: u64,
    len: Option<u64>,
}

impl FileSource {
    /// Opens `path`, to be read in chunks of `chunk_size` bytes.
    ///
    /// # Errors
    /// [`SourceError::BadChunkSize`] or [`SourceError::ReadingChunk`] (offset 0) when the
    /// file cannot be opened.
    pub async fn open(
        path: impl AsRef<std::path::Path>,
        chunk_size: usize,
    ) -> Result<Self, SourceError> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK {
            return Err(SourceError::BadChunkSize(chunk_size));
        }
        let err = |source| SourceError::ReadingChunk { offset: 0, source };
        let file = tokio::fs::File::open(path).await.map_err(err)?;
        let len = file.metadata().await.map_err(err)?.len();
        Ok(FileSource {
            file,
            chunk_size,
            offset: 0,
            len: Some(len),
        })
    }
}

impl ChunkSource for FileSource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(self.chunk_size);
        while buf.len() < self.chunk_size {
            let n =
                self.file
                    .read_buf(&mut buf)
                    .await
                    .map_err(|source| SourceError::ReadingChunk {
                        offset: self.offset,
                        source,
                    })?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let n = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.offset = self.offset.saturating_add(n);
        Ok(Some(buf.freeze()))
    }

    fn content_length(&self) -> Option<u64> {
        self.len
    }
}
