//! `keystone` mode: `X-Auth-Token` validated with Keystone's `GET /v3/auth/tokens`, as
//! keystonemiddleware's `auth_token` does.
//!
//! Sluice holds a service token (its own user's password, scoped to its service project,
//! renewed before it expires or when Keystone stops accepting it) and asks Keystone about
//! each user token it has not seen within `cache_secs`. Valid tokens are cached by their
//! SHA-256 (never the token itself) in a bounded cache, until the earlier of `cache_secs` and
//! the token's `expires_at`, so a revoked token keeps working for at most `cache_secs`, as
//! with keystonemiddleware. A missing, invalid, expired or revoked token gets 401 with
//! `WWW-Authenticate: Keystone uri="…"`; when Keystone cannot be asked (down, timing out,
//! refusing Sluice's credentials) an uncached token gets 503, never access.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{AuthError, RequestContext, MAX_IDENTITY_LEN, MAX_ROLES};
use crate::api::error::ApiError;
use crate::config::KeystoneConfig;

/// Largest Keystone response body read: a token with its catalog is a few tens of KiB; this
/// bounds what a misbehaving Keystone makes Sluice buffer.
const MAX_KEYSTONE_BODY: usize = 1 << 20;

/// A service token is renewed this long before it expires (at most half its lifetime), so
/// that no request waits on a token that expires in flight.
const SERVICE_TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(120);

/// The header carrying the token being validated (and, in responses, a new token).
const SUBJECT_TOKEN: &str = "x-subject-token";

/// A validated token as cached.
#[derive(Clone, Debug)]
struct Validated {
    project_id: String,
    user_id: String,
    roles: Vec<String>,
    /// The earlier of the token's expiry and the end of its cache time.
    until: Instant,
}

/// Sluice's own token and when to renew it.
#[derive(Clone)]
struct ServiceToken {
    token: HeaderValue,
    renew_at: Instant,
}

/// The Keystone validator of one [`Authenticator`](super::Authenticator).
pub(super) struct Keystone {
    /// `…/v3/auth/tokens`.
    tokens_url: Uri,
    /// `Keystone uri="…"`'s URI.
    public_url: String,
    /// The password-auth request body (holds the password: never logged).
    service_auth: Bytes,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    service_token: Mutex<Option<ServiceToken>>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Validated>>,
    cache_time: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone")
            .field("tokens_url", &self.tokens_url)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Keystone {
    /// A validator for `config`; checks the configuration but does not call Keystone
    /// (Sluice starts while Keystone is down, answering 503 until it is back).
    ///
    /// # Errors
    /// [`AuthError::Keystone`] naming the `auth.keystone` key that is missing or wrong.
    pub(super) fn new(config: &KeystoneConfig) -> Result<Keystone, AuthError> {
        // The message, then where the key was set (file and line, or a flag).
        let bad = |key: &str, value: Option<&str>, detail: String| {
            let at = super::origin::origin(config.file.as_deref(), key, value);
            AuthError::Keystone(format!("{detail}{at}"))
        };
        let url = config.url.as_deref().ok_or_else(|| {
            bad(
                "url",
                None,
                "auth mode 'keystone' needs auth.keystone.url".into(),
            )
        })?;
        let bad_url = |detail: String| bad("url", Some(url), detail);
        // Shown without credentials (refused below, never echoed).
        let shown = sluice_pipeline::redact::url(url);
        let parsed = url::Url::parse(url)
            .map_err(|e| bad_url(format!("auth.keystone.url {shown:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad_url(format!(
                "auth.keystone.url {shown:?} must be an http:// or https:// URL with a host"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad_url(
                "auth.keystone.url must not carry credentials; use auth.keystone.username and \
                 password"
                    .into(),
            ));
        }
        if let Some(public) = &config.public_url {
            // Sent in every 401's `WWW-Authenticate`: never with credentials.
            let has_credentials = url::Url::parse(public).map_or(public.contains('@'), |u| {
                !u.username().is_empty() || u.password().is_some()
            });
            if has_credentials {
                return Err(bad(
                    "public_url",
                    Some(public),
                    "auth.keystone.public_url must not carry credentials (it is sent to \
                     every client in WWW-Authenticate)"
                        .into(),
                ));
            }
        }
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        let tokens_url: Uri = format!("{base}/v3/auth/tokens")
            .parse()
            .map_err(|e| bad_url(format!("auth.keystone.url {shown:?}: {e}")))?;
        for (key, value) in [
            ("username", &config.username),
            ("user_domain_name", &config.user_domain_name),
            ("project_name", &config.project_name),
            ("project_domain_name", &config.project_domain_name),
        ] {
            if value.trim().is_empty() {
                return Err(bad(
                    key,
                    None,
                    format!("auth mode 'keystone' needs auth.keystone.{key}"),
                ));
            }
        }
        let password = match (&config.password, &config.password_file) {
            (Some(_), Some(path)) => {
                return Err(bad(
                    "password_file",
                    path.to_str(),
                    "auth.keystone.password and password_file are both set; give one".into(),
                ))
            }
            (Some(p), None) => p.clone(),
            (None, Some(path)) => read_password(path)?,
            (None, None) => {
                return Err(bad(
                    "password",
                    None,
                    "auth mode 'keystone' needs auth.keystone.password, password_file or \
                     SLUICE_KEYSTONE_PASSWORD"
                        .into(),
                ))
            }
        };
        for (key, zero) in [
            ("cache_size", config.cache_size == 0),
            ("timeout_secs", config.timeout_secs == 0),
        ] {
            if zero {
                return Err(bad(
                    key,
                    Some("0"),
                    format!(
                        "auth.keystone.{key} must be at least 1 (turn caching off with \
                         cache_secs = 0)"
                    ),
                ));
            }
        }
        let service_auth = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": config.username,
                "domain": {"name": config.user_domain_name},
                "password": password,
            }}},
            "scope": {"project": {
                "name": config.project_name,
                "domain": {"name": config.project_domain_name},
            }},
        }});
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Keystone {
            tokens_url,
            public_url: config.public_url.clone().unwrap_or_else(|| url.to_owned()),
            service_auth: Bytes::from(service_auth.to_string()),
            // No idle connections kept: Keystone servers (uWSGI's http-socket, proxies) close
            // them without notice, and a call on a dead one fails; calls are rare (cached).
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            service_token: Mutex::new(None),
            cache: quick_cache::sync::Cache::new(config.cache_size),
            cache_time: Duration::from_secs(config.cache_secs),
            timeout: Duration::from_secs(config.timeout_secs),
        })
    }

    /// The caller whose `X-Auth-Token` is in `headers`.
    ///
    /// # Errors
    /// [`ApiError::KeystoneUnauthorized`] for a missing, invalid, expired or revoked token (or
    /// one without a project); [`ApiError::IdentityUnavailable`] when Keystone cannot say.
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
        request_id: &str,
    ) -> Result<RequestContext, ApiError> {
        let unauthorized = || ApiError::KeystoneUnauthorized(self.public_url.clone());
        let token = super::header(headers, "x-auth-token")
            .map_err(|_| unauthorized())?
            .ok_or_else(unauthorized)?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(hit) = self.cache.get(&key) {
            if hit.until > now {
                return Ok(context(&hit, request_id));
            }
            self.cache.remove(&key);
        }
        let validated = self.validate(token).await?.ok_or_else(unauthorized)?;
        let validated = Arc::new(validated);
        if !self.cache_time.is_zero() {
            self.cache.insert(key, Arc::clone(&validated));
        }
        Ok(context(&validated, request_id))
    }

    /// Asks Keystone about `token`: `None` when it is not valid (404, or valid without a
    /// project). Retries once with a fresh service token when Keystone refuses the one held.
    async fn validate(&self, token: &str) -> Result<Option<Validated>, ApiError> {
        let subject = HeaderValue::try_from(token)
            .map_err(|_| ApiError::KeystoneUnauthorized(self.public_url.clone()))?;
        for attempt in 0..2 {
            let service = self.service_token(attempt > 0).await?;
            let request = Request::builder()
                .method(Method::GET)
                .uri(self.tokens_url.clone())
                .header("x-auth-token", service)
                .header(SUBJECT_TOKEN, subject.clone())
                .body(Full::new(Bytes::new()))
                .map_err(|e| unavailable(format!("building the request: {e}")))?;
            let (status, _, body) = self.call(request).await?;
            match status {
                StatusCode::OK => return Ok(parse_token(&body, self.cache_time)),
                StatusCode::NOT_FOUND => return Ok(None),
                StatusCode::UNAUTHORIZED if attempt == 0 => continue,
                other => {
                    return Err(unavailable(format!(
                        "validating a token: Keystone answered {other}"
                    )))
                }
            }
        }
        Err(unavailable(
            "Keystone refuses Sluice's freshly issued service token".into(),
        ))
    }

    /// The service token, issued anew when `renew` is set or the held one is due.
    async fn service_token(&self, renew: bool) -> Result<HeaderValue, ApiError> {
        let mut held = self.service_token.lock().await;
        if let Some(t) = held.as_ref() {
            if !renew && t.renew_at > Instant::now() {
                return Ok(t.token.clone());
            }
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.tokens_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(self.service_auth.clone()))
            .map_err(|e| unavailable(format!("building the request: {e}")))?;
        let (status, headers, body) = self.call(request).await?;
        if status != StatusCode::CREATED {
            return Err(unavailable(format!(
                "Keystone answered {status} to Sluice's service credentials \
                 (auth.keystone.username, password, project_name)"
            )));
        }
        let mut token = headers
            .get(SUBJECT_TOKEN)
            .cloned()
            .ok_or_else(|| unavailable("Keystone issued no X-Subject-Token".into()))?;
        token.set_sensitive(true);
        let lifetime = serde_json::from_slice::<TokenBody>(&body)
            .ok()
            .and_then(|b| remaining(&b.token.expires_at))
            .unwrap_or(Duration::ZERO);
        let margin = SERVICE_TOKEN_RENEW_MARGIN.min(lifetime / 2);
        *held = Some(ServiceToken {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Sends `request` and reads the whole (bounded) response within the timeout.
    async fn call(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ApiError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unavailable(format!("calling Keystone: {e}")))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_KEYSTONE_BODY)
                .collect()
                .await
                .map_err(|e| unavailable(format!("reading Keystone's answer: {e}")))?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "Keystone did not answer within {} s",
                    self.timeout.as_secs()
                ))
            })?
    }
}

/// A 503 whose reason is logged (the client sees only that Keystone is unavailable).
fn unavailable(detail: String) -> ApiError {
    tracing::warn!("keystone: {detail}");
    ApiError::IdentityUnavailable(detail)
}

/// The request context of a validated token.
fn context(v: &Validated, request_id: &str) -> RequestContext {
    RequestContext::new(&v.project_id, &v.user_id, v.roles.clone(), request_id)
}

/// The first line of `path`.
fn read_password(path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AuthError::Keystone(format!(
            "reading auth.keystone.password_file {}: {e}",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(AuthError::Keystone(format!(
            "auth.keystone.password_file {}: line 1 is empty (it holds the password)",
            path.display()
        )));
    }
    Ok(line.to_owned())
}

/// `{"token": {…}}` of Keystone's token responses.
#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    domain: Option<Box<Named>>,
}

/// What a validated token says, cached for at most `cache_time`; `None` for a token that
/// has no project (unscoped or domain-scoped: Sluice's images belong to projects), has
/// expired, or carries names Sluice does not accept.
fn parse_token(body: &[u8], cache_time: Duration) -> Option<Validated> {
    let info = serde_json::from_slice::<TokenBody>(body).ok()?.token;
    let left = remaining(&info.expires_at)?;
    let project = info.project?;
    let ids_ok = [&project.id, &info.user.id]
        .iter()
        .all(|id| !id.is_empty() && id.len() <= MAX_IDENTITY_LEN);
    if !ids_ok || info.roles.len() > MAX_ROLES {
        return None;
    }
    tracing::debug!(
        project = %project.id,
        project_domain = %project.domain.as_ref().map_or("", |d| d.id.as_str()),
        user = %info.user.id,
        user_name = %info.user.name,
        "keystone token validated"
    );
    Some(Validated {
        project_id: project.id,
        user_id: info.user.id,
        roles: info
            .roles
            .iter()
            .map(|r| r.name.to_ascii_lowercase())
            .collect(),
        until: Instant::now() + left.min(cache_time),
    })
}

/// Time left until Keystone's `expires_at` (`None` when past or unreadable).
fn remaining(expires_at: &str) -> Option<Duration> {
    let at: jiff::Timestamp = expires_at.parse().ok()?;
    let left = at.duration_since(jiff::Timestamp::now());
    Duration::try_from(left).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KeystoneConfig {
        KeystoneConfig {
            url: Some("http://127.0.0.1:5000/v3".into()),
            username: "sluice".into(),
            password: Some("pw".into()),
            ..KeystoneConfig::default()
        }
    }

    #[test]
    fn test_keystone_config_needs_url_and_password() {
        let mut c = config();
        c.url = None;
        let err = Keystone::new(&c).unwrap_err().to_string();
        assert!(err.contains("auth.keystone.url"), "{err}");
        let mut c = config();
        c.password = None;
        let err = Keystone::new(&c).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
        let mut c = config();
        c.url = Some("ftp://x/".into());
        assert!(Keystone::new(&c).is_err());
        let mut c = config();
        c.public_url = Some("https://u:s3cret@keystone.example/v3".into());
        let err = Keystone::new(&c).unwrap_err().to_string();
        assert!(
            err.contains("auth.keystone.public_url") && !err.contains("s3cret"),
            "{err}"
        );
        let k = Keystone::new(&config()).unwrap();
        assert_eq!(k.tokens_url, "http://127.0.0.1:5000/v3/auth/tokens");
        assert!(!format!("{k:?}").contains("pw"));
    }

    #[test]
    fn test_keystone_token_without_project_or_expired_is_refused() {
        let future = "2999-01-01T00:00:00.000000Z";
        let scoped = format!(
            r#"{{"token": {{"expires_at": "{future}", "user": {{"id": "u1", "name": "alice"}},
                "project": {{"id": "p1", "name": "demo", "domain": {{"id": "default"}}}},
                "roles": [{{"id": "r", "name": "Member"}}]}}}}"#
        );
        let v = parse_token(scoped.as_bytes(), Duration::from_secs(60)).unwrap();
        assert_eq!((v.project_id.as_str(), v.user_id.as_str()), ("p1", "u1"));
        assert_eq!(v.roles, vec!["member".to_owned()]);
        let unscoped = format!(
            r#"{{"token": {{"expires_at": "{future}", "user": {{"id": "u1"}}, "roles": []}}}}"#
        );
        assert!(parse_token(unscoped.as_bytes(), Duration::from_secs(60)).is_none());
        let expired = scoped.replace(future, "2001-01-01T00:00:00.000000Z");
        assert!(parse_token(expired.as_bytes(), Duration::from_secs(60)).is_none());
    }
}
