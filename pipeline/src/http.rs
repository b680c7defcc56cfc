//! The HTTP(S) pull source: one GET, redirects followed by hand (each hop checked by the
//! [`ImportPolicy`]), every connection made to an address the policy has just approved.
//!
//! Name resolution and connection are ours rather than a pooled client's, so the address
//! that was checked is the address connected to (no DNS-rebinding window), and each hop uses
//! a fresh connection that is closed as soon as the [`HttpSource`] is dropped: a rejected
//! image stops the download at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, HOST, LOCATION, USER_AGENT,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use url::{Host, Url};

use crate::source::{ChunkSource, SourceError};
use crate::ssrf::{ImportPolicy, PolicyError};

/// Largest body chunk hyper hands out (its read buffer limit, `max_buf_size`). Each chunk
/// may pin a buffer of this size while it waits in a pipeline channel.
pub const HTTP_MAX_CHUNK: usize = 512 << 10;

/// Redirects followed at most (Glance and curl's usual bound is similar; 5 is what the
/// browser-less clients in OpenStack use).
pub const MAX_REDIRECTS: usize = 5;

/// Timeouts and identity of the HTTP pull.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Resolving plus TCP connect plus TLS handshake, per hop.
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response headers.
    pub header_timeout: Duration,
    /// Longest wait for the next body bytes.
    pub idle_timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_redirects: MAX_REDIRECTS,
            user_agent: concat!("sluice/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// An open HTTP(S) response body, read chunk by chunk.
#[derive(Debug)]
pub struct HttpSource {
    url: Url,
    body: Incoming,
    conn: JoinHandle<()>,
    content_length: Option<u64>,
    idle_timeout: Duration,
    received: u64,
}

impl HttpSource {
    /// Checks `url` against `policy`, sends a GET, follows redirects (each target checked
    /// again) and returns once a 2xx response's headers have arrived.
    ///
    /// # Errors
    /// [`SourceError::Policy`] for a refused URL, hop or address; [`SourceError::HttpStatus`]
    /// ("source returned HTTP 404 Not Found") for a non-2xx answer; connect, TLS, timeout and
    /// protocol errors otherwise.
    pub async fn open(
        url: &str,
        policy: &ImportPolicy,
        config: &HttpConfig,
    ) -> Result<Self, SourceError> {
        let mut url = policy
            .parse_url(url)
            .map_err(|reason| SourceError::Policy {
                url: crate::redact::url(url),
                reason,
            })?;
        let mut redirects = 0usize;
        loop {
            let (response, conn) = request(&url, policy, config).await?;
            let status = response.status();
            if status.is_success() {
                let content_length = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                return Ok(HttpSource {
                    url,
                    body: response.into_body(),
                    conn,
                    content_length,
                    idle_timeout: config.idle_timeout,
                    received: 0,
                });
            }
            conn.abort();
            let is_redirect = matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            if !is_redirect {
                return Err(SourceError::HttpStatus {
                    status,
                    url: crate::redact::url(url.as_str()),
                });
            }
            if redirects >= config.max_redirects {
                return Err(SourceError::TooManyRedirects(config.max_redirects));
            }
            redirects = redirects.saturating_add(1);
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| SourceError::RedirectWithoutLocation {
                    status,
                    url: crate::redact::url(url.as_str()),
                })?;
            let next =
                policy
                    .parse_redirect(&url, location)
                    .map_err(|reason| SourceError::Policy {
                        // As sent when absolute: joining would canonicalise the spelling.
                        url: crate::redact::url(&if location.contains("//") {
                            location.to_owned()
                        } else {
                            url.join(location)
                                .map_or_else(|_| location.to_owned(), String::from)
                        }),
                        reason,
                    })?;
            tracing::debug!(
                from = %crate::redact::url(url.as_str()),
                to = %crate::redact::url(next.as_str()),
                %status,
                "following redirect"
            );
            url = next;
        }
    }

    /// The length announced in `Content-Length`, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The URL finally fetched (after redirects).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The next body chunk as it arrived; `Ok(None)` at the end of the body.
    ///
    /// # Errors
    /// [`SourceError::IdleTimeout`] when nothing arrives within the idle timeout;
    /// [`SourceError::Http`] for a broken or short body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        loop {
            let frame = tokio::time::timeout(self.idle_timeout, self.body.frame())
                .await
                .map_err(|_| SourceError::IdleTimeout {
                    offset: self.received,
                    secs: self.idle_timeout.as_secs(),
                })?;
            let Some(frame) = frame else {
                return Ok(None);
            };
            let frame = frame.map_err(|source| SourceError::Http {
                url: crate::redact::url(self.url.as_str()),
                offset: self.received,
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                if data.is_empty() {
                    continue;
                }
                let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                self.received = self.received.saturating_add(n);
                return Ok(Some(data));
            }
            // Trailers carry no image bytes.
        }
    }
}

impl Drop for HttpSource {
    /// Closes the connection at once (a rejected image is not downloaded further).
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl ChunkSource for HttpSource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        HttpSource::next_chunk(self).await
    }

    fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

/// One GET on a fresh connection to an approved address of `url`'s host.
async fn request(
    url: &Url,
    policy: &ImportPolicy,
    config: &HttpConfig,
) -> Result<(http::Response<Incoming>, JoinHandle<()>), SourceError> {
    let refused = |reason| SourceError::Policy {
        url: crate::redact::url(url.as_str()),
        reason,
    };
    let host = url
        .host()
        .ok_or_else(|| refused(PolicyError::MissingHost(crate::redact::url(url.as_str()))))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| refused(PolicyError::SchemeRefused(url.scheme().to_owned())))?;
    let host_port = format!("{}:{port}", url.host_str().unwrap_or_default());
    let connect = async {
        let stream = connect(url, &host, port, policy, &host_port).await?;
        if url.scheme() == "https" {
            let tls = tls_connect(&host, stream).await?;
            handshake(tls, url).await
        } else {
            handshake(stream, url).await
        }
    };
    let (mut sender, conn) = tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| SourceError::ConnectTimeout {
            host: host_port.clone(),
            secs: config.connect_timeout.as_secs(),
        })??;

    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host_header = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let header = |v: &str| {
        HeaderValue::from_str(v).map_err(|_| {
            refused(PolicyError::InvalidUrl {
                url: crate::redact::url(url.as_str()),
                reason: "not a valid header value".to_owned(),
            })
        })
    };
    let req = Request::get(path)
        .header(HOST, header(&host_header)?)
        .header(USER_AGENT, header(&config.user_agent)?)
        .header(ACCEPT, "*/*")
        // The stored bytes must be the bytes served: no transparent decompression.
        .header(ACCEPT_ENCODING, "identity")
        .body(Empty::<Bytes>::new())
        .map_err(|e| {
            refused(PolicyError::InvalidUrl {
                url: crate::redact::url(url.as_str()),
                reason: e.to_string(),
            })
        })?;
    let http_err = |source| SourceError::Http {
        url: crate::redact::url(url.as_str()),
        offset: 0,
        source,
    };
    let response = tokio::time::timeout(config.header_timeout, sender.send_request(req))
        .await
        .map_err(|_| {
            conn.abort();
            SourceError::HeaderTimeout {
                url: crate::redact::url(url.as_str()),
                secs: config.header_timeout.as_secs(),
            }
        })?
        .map_err(http_err)?;
    Ok((response, conn))
}

/// Resolves `host`, keeps the addresses the policy approves (refusing the host when it
/// approves none), and connects to the first of them that answers.
async fn connect(
    url: &Url,
    host: &Host<&str>,
    port: u16,
    policy: &ImportPolicy,
    host_port: &str,
) -> Result<TcpStream, SourceError> {
    let (name, addrs): (String, Vec<SocketAddr>) = match host {
        Host::Ipv4(v4) => (v4.to_string(), vec![SocketAddr::new(IpAddr::V4(*v4), port)]),
        Host::Ipv6(v6) => (v6.to_string(), vec![SocketAddr::new(IpAddr::V6(*v6), port)]),
        Host::Domain(name) => {
            let resolved =
                policy
                    .resolve(name, port)
                    .await
                    .map_err(|source| SourceError::Resolving {
                        host: (*name).to_owned(),
                        source,
                    })?;
            ((*name).to_owned(), resolved)
        }
    };
    // Only approved addresses are connected to: the address checked is the address used.
    let addrs = policy
        .approve(&name, &addrs)
        .map_err(|reason| SourceError::Policy {
            url: crate::redact::url(url.as_str()),
            reason,
        })?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Small writes only (the request); disabling Nagle saves a round trip.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(SourceError::Connecting {
        host: host_port.to_owned(),
        source: last,
    })
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        use hyper_rustls::ConfigBuilderExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_webpki_roots().with_no_client_auth())
            // The ring provider supports the default versions; this branch is unreachable
            // but falls back to the same configuration built the default way.
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_webpki_roots()
                    .with_no_client_auth()
            });
        Arc::new(config)
    }))
}

async fn tls_connect(
    host: &Host<&str>,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SourceError> {
    let name = match host {
        Host::Domain(d) => rustls::pki_types::ServerName::try_from((*d).to_owned()),
        Host::Ipv4(v4) => Ok(rustls::pki_types::ServerName::IpAddress(
            IpAddr::V4(*v4).into(),
        )),
        Host::Ipv6(v6) => Ok(rustls::pki_types::ServerName::IpAddress(
            IpAddr::V6(*v6).into(),
        )),
    };
    let tls_err = |source| SourceError::Tls {
        host: host.to_string(),
        source,
    };
    let name = name.map_err(|e| tls_err(std::io::Error::other(e)))?;
    tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, stream)
        .await
        .map_err(tls_err)
}

async fn handshake<T>(
    io: T,
    url: &Url,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        JoinHandle<()>,
    ),
    SourceError,
>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(HTTP_MAX_CHUNK)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| SourceError::Http {
            url: crate::redact::url(url.as_str()),
            offset: 0,
            source,
        })?;
    let conn = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "source connection ended");
        }
    });
    Ok((sender, conn))
}
