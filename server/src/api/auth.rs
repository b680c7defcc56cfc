//! Who is calling: a [`RequestContext`] built from the request headers according to
//! `config.auth.mode`.
//!
//! - `none` (local use): identity headers are honoured when `X-Project-Id` or `X-Tenant-Id` is
//!   present (then `X-Roles` gives the roles, `member` when absent, and `X-User-Id` defaults
//!   to `anonymous`); otherwise the caller is user `admin` of project `admin` with the
//!   `admin` role. The config refuses this mode on a non-loopback address unless forced.
//! - `proxy`: a trusted auth proxy (keystonemiddleware style) sets `X-Project-Id` (or
//!   `X-Tenant-Id`), `X-User-Id` and `X-Roles`; a request without all three gets 401.
//!   `X-Identity-Status`, when present, must be `Confirmed`.
//! - `token`: `X-Auth-Token` is looked up in the token file loaded at startup; unknown or
//!   missing tokens get 401.
//! - `keystone`: `X-Auth-Token` is validated with Keystone (`auth::keystone`).
//!
//! Role names are compared case-insensitively (as oslo.policy's role check); what they
//! allow is [`policy`](crate::api::policy)'s table.
//! Incoming `X-Openstack-Request-Id` headers are not trusted: every request gets a fresh
//! `req-<uuid>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::policy::Role;
use crate::config::{AuthConfig, AuthMode};

mod keystone;
mod origin;

/// Longest project, user or role name accepted from a header (Glance's `owner` column is
/// `String(255)`).
const MAX_IDENTITY_LEN: usize = 255;

/// Most roles one caller may carry (a bound on what one header makes us allocate).
const MAX_ROLES: usize = 64;

/// The project and user `none` mode gives to callers that send no identity headers.
pub const NO_AUTH_IDENTITY: &str = "admin";

/// The role that makes a caller an administrator.
pub const ADMIN_ROLE: &str = "admin";

/// The role `none` mode gives to identity headers without `X-Roles`.
const NO_AUTH_DEFAULT_ROLE: &str = "member";

/// The caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The caller's project (Glance's `owner`).
    pub project_id: String,
    /// The caller's user.
    pub user_id: String,
    /// Role names, lower-cased.
    pub roles: Vec<String>,
    /// The highest role Sluice knows among `roles` (`None`: no known role).
    pub role: Option<Role>,
    /// Whether the caller has the `admin` role.
    pub is_admin: bool,
    /// `req-<uuid>`, also sent back as `x-openstack-request-id`.
    pub request_id: String,
}

impl RequestContext {
    /// A context from identity parts; `roles` (lower-cased) decide `role` and `is_admin`.
    pub fn new(project_id: &str, user_id: &str, roles: Vec<String>, request_id: &str) -> Self {
        let role = Role::highest(roles.iter().map(String::as_str));
        RequestContext {
            project_id: project_id.to_owned(),
            user_id: user_id.to_owned(),
            roles,
            role,
            is_admin: role == Some(Role::Admin),
            request_id: request_id.to_owned(),
        }
    }
}

/// The auth configuration is incomplete, or the token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `auth.keystone` is incomplete or wrong (the text names the key).
    #[error("{0}")]
    Keystone(String),
    /// Token mode without `auth.token_file`.
    #[error("auth mode 'token' needs auth.token_file")]
    MissingTokenFile,
    /// The token file is not valid TOML of the expected shape, or has bad entries.
    #[error("parsing token file {path}: {detail}")]
    ParsingTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The token file could not be read.
    #[error("reading token file {path}: {source}")]
    ReadingTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The token file: `[[token]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// One `[[token]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// Spanned so that errors name the entry's line.
    token: toml::Spanned<String>,
    project_id: String,
    user_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Turns request headers into a [`RequestContext`].
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
    tokens: HashMap<String, TokenEntry>,
    keystone: Option<keystone::Keystone>,
}

impl Authenticator {
    /// An authenticator for `config`, loading the token file in token mode and checking
    /// `auth.keystone` in keystone mode (without calling Keystone).
    ///
    /// # Errors
    /// [`AuthError`] when the token file is missing, unreadable or malformed, or
    /// `auth.keystone` is incomplete.
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        let tokens = match config.mode {
            AuthMode::Token => {
                let path = config
                    .token_file
                    .as_deref()
                    .ok_or(AuthError::MissingTokenFile)?;
                load_tokens(path)?
            }
            AuthMode::None | AuthMode::Proxy | AuthMode::Keystone => HashMap::new(),
        };
        let keystone = match config.mode {
            AuthMode::Keystone => Some(keystone::Keystone::new(&config.keystone)?),
            AuthMode::None | AuthMode::Proxy | AuthMode::Token => None,
        };
        Ok(Authenticator {
            mode: config.mode,
            tokens,
            keystone,
        })
    }

    /// The caller of a request with these headers.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] (or [`ApiError::KeystoneUnauthorized`]) when the mode's
    /// credentials are missing, unknown, expired or revoked; [`ApiError::IdentityUnavailable`]
    /// when Keystone cannot be asked.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        request_id: &str,
    ) -> Result<RequestContext, ApiError> {
        match &self.keystone {
            Some(keystone) => keystone.authenticate(headers, request_id).await,
            None => self.authenticate_locally(headers, request_id),
        }
    }

    /// [`Authenticator::authenticate`] for the modes that need no network.
    fn authenticate_locally(
        &self,
        headers: &HeaderMap,
        request_id: &str,
    ) -> Result<RequestContext, ApiError> {
        match self.mode {
            AuthMode::None => match project_header(headers)? {
                Some(project) => {
                    let user = header(headers, "x-user-id")?.unwrap_or("anonymous");
                    let roles =
                        parse_roles(header(headers, "x-roles")?.unwrap_or(NO_AUTH_DEFAULT_ROLE))?;
                    Ok(RequestContext::new(project, user, roles, request_id))
                }
                None => Ok(RequestContext::new(
                    NO_AUTH_IDENTITY,
                    NO_AUTH_IDENTITY,
                    vec![ADMIN_ROLE.to_owned()],
                    request_id,
                )),
            },
            AuthMode::Proxy => {
                if let Some(status) = header(headers, "x-identity-status")? {
                    if !status.eq_ignore_ascii_case("confirmed") {
                        return Err(ApiError::Unauthorized);
                    }
                }
                let project = project_header(headers)?.ok_or(ApiError::Unauthorized)?;
                let user = header(headers, "x-user-id")?.ok_or(ApiError::Unauthorized)?;
                let roles =
                    parse_roles(header(headers, "x-roles")?.ok_or(ApiError::Unauthorized)?)?;
                Ok(RequestContext::new(project, user, roles, request_id))
            }
            AuthMode::Token | AuthMode::Keystone => {
                let token = header(headers, "x-auth-token")?.ok_or(ApiError::Unauthorized)?;
                let entry = self.tokens.get(token).ok_or(ApiError::Unauthorized)?;
                Ok(RequestContext::new(
                    &entry.project_id,
                    &entry.user_id,
                    entry.roles.iter().map(|r| r.to_ascii_lowercase()).collect(),
                    request_id,
                ))
            }
        }
    }
}

/// Reads and checks the token file.
fn load_tokens(path: &Path) -> Result<HashMap<String, TokenEntry>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadingTokenFile {
        path: path.to_owned(),
        source,
    })?;
    let bad = |detail: String| AuthError::ParsingTokenFile {
        path: path.to_owned(),
        detail,
    };
    let file: TokenFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut tokens = HashMap::with_capacity(file.token.len());
    for entry in file.token {
        // 1-based line of the entry's `token` key, for messages.
        let line = text
            .get(..entry.token.span().start)
            .map_or(0, |before| before.lines().count().max(1));
        if entry.token.get_ref().is_empty()
            || entry.project_id.is_empty()
            || entry.user_id.is_empty()
        {
            return Err(bad(format!(
                "line {line}: every [[token]] needs a non-empty token, project_id and user_id"
            )));
        }
        if entry.project_id.len() > MAX_IDENTITY_LEN || entry.user_id.len() > MAX_IDENTITY_LEN {
            return Err(bad(format!(
                "line {line}: project_id and user_id are limited to {MAX_IDENTITY_LEN} bytes"
            )));
        }
        let roles: Vec<String> = entry.roles.iter().map(|r| r.to_ascii_lowercase()).collect();
        if Role::highest(roles.iter().map(String::as_str)).is_none() {
            tracing::warn!(
                project = %entry.project_id,
                user = %entry.user_id,
                "a token has no role Sluice knows (admin, member, reader): its calls will be \
                 refused"
            );
        }
        if tokens
            .insert(entry.token.get_ref().clone(), entry.clone())
            .is_some()
        {
            return Err(bad(format!(
                "line {line}: this token is listed twice (here for project {})",
                entry.project_id
            )));
        }
    }
    Ok(tokens)
}

/// `X-Project-Id`, else `X-Tenant-Id`.
fn project_header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match header(headers, "x-project-id")? {
        Some(p) => Ok(Some(p)),
        None => header(headers, "x-tenant-id"),
    }
}

/// A trimmed, non-empty identity header; 401 when it is not visible ASCII or too long.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::Unauthorized)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    // Roles lists may be longer than one name.
    let max = MAX_IDENTITY_LEN.saturating_mul(MAX_ROLES);
    if text.len() > max || (name != "x-roles" && text.len() > MAX_IDENTITY_LEN) {
        return Err(ApiError::Unauthorized);
    }
    Ok(Some(text))
}

/// `X-Roles: member, Admin` → `["member", "admin"]`.
fn parse_roles(value: &str) -> Result<Vec<String>, ApiError> {
    let roles: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .take(MAX_ROLES.saturating_add(1))
        .map(str::to_ascii_lowercase)
        .collect();
    if roles.len() > MAX_ROLES || roles.iter().any(|r| r.len() > MAX_IDENTITY_LEN) {
        return Err(ApiError::Unauthorized);
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn authenticator(mode: AuthMode) -> Authenticator {
        Authenticator {
            mode,
            tokens: HashMap::new(),
            keystone: None,
        }
    }

    #[test]
    fn test_auth_none_without_headers_is_admin() {
        let ctx = authenticator(AuthMode::None)
            .authenticate_locally(&HeaderMap::new(), "req-1")
            .unwrap();
        assert_eq!(ctx.project_id, "admin");
        assert!(ctx.is_admin);
    }

    #[test]
    fn test_auth_none_honours_identity_headers() {
        let h = headers(&[("x-tenant-id", "p1"), ("x-roles", "member")]);
        let ctx = authenticator(AuthMode::None)
            .authenticate_locally(&h, "req-1")
            .unwrap();
        assert_eq!(ctx.project_id, "p1");
        assert!(!ctx.is_admin);
    }

    #[test]
    fn test_auth_proxy_missing_roles_is_unauthorized() {
        let h = headers(&[("x-project-id", "p1"), ("x-user-id", "u1")]);
        let res = authenticator(AuthMode::Proxy).authenticate_locally(&h, "req-1");
        assert!(matches!(res, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn test_auth_proxy_admin_role_is_case_insensitive() {
        let h = headers(&[
            ("x-project-id", "p1"),
            ("x-user-id", "u1"),
            ("x-roles", "reader, Admin"),
        ]);
        let ctx = authenticator(AuthMode::Proxy)
            .authenticate_locally(&h, "req-1")
            .unwrap();
        assert!(ctx.is_admin);
        assert_eq!(ctx.roles, vec!["reader".to_owned(), "admin".to_owned()]);
    }

    #[test]
    fn test_auth_proxy_unconfirmed_identity_is_unauthorized() {
        let h = headers(&[
            ("x-project-id", "p1"),
            ("x-user-id", "u1"),
            ("x-roles", "member"),
            ("x-identity-status", "Invalid"),
        ]);
        let res = authenticator(AuthMode::Proxy).authenticate_locally(&h, "req-1");
        assert!(matches!(res, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn test_auth_token_file_maps_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "[[token]]\ntoken = \"s3cret\"\nproject_id = \"p1\"\nuser_id = \"u1\"\nroles = [\"member\"]\n",
        )
        .unwrap();
        let auth = Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Token,
            token_file: Some(path),
            ..AuthConfig::default()
        })
        .unwrap();
        let ctx = auth
            .authenticate_locally(&headers(&[("x-auth-token", "s3cret")]), "req-1")
            .unwrap();
        assert_eq!(ctx.project_id, "p1");
        assert!(!ctx.is_admin);
        let res = auth.authenticate_locally(&headers(&[("x-auth-token", "nope")]), "req-1");
        assert!(matches!(res, Err(ApiError::Unauthorized)));
        let res = auth.authenticate_locally(&HeaderMap::new(), "req-1");
        assert!(matches!(res, Err(ApiError::Unauthorized)));
    }

    #[test]
    fn test_auth_token_file_duplicate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let entry = "[[token]]\ntoken = \"t\"\nproject_id = \"p\"\nuser_id = \"u\"\n";
        std::fs::write(&path, format!("{entry}{entry}")).unwrap();
        let res = Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Token,
            token_file: Some(path),
            ..AuthConfig::default()
        });
        let err = res.unwrap_err().to_string();
        assert!(err.contains("line 6"), "{err}");
    }
}
