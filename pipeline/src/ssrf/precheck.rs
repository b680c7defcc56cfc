//! The check of an import URL when the import is asked for, before it is accepted: the text
//! through [`ImportPolicy::parse_url`], and a host name resolved (within
//! [`PRECHECK_RESOLVE_TIMEOUT`]) and its addresses through [`ImportPolicy::approve`]. Every
//! way in that takes a URL (a legacy `import` task, `web-download`) calls this one function,
//! so a refusal reads the same whichever it was. It is a pre-check: the connection checks
//! again, with every redirect, and connects only to approved addresses.

use std::time::Duration;

use url::{Host, Url};

use super::{ImportPolicy, PolicyError};

/// How long resolving a URL's host name may take when the import is asked for: 5 s, the
/// resolver's own default timeout (resolv.conf `timeout:5`), so a client learns of a name
/// that does not resolve in a request's time instead of from a failed task.
pub const PRECHECK_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`ImportPolicy::precheck`] refused a URL. The message names the host and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrecheckError {
    /// The URL or an address its host resolved to is refused by the policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Resolving the host name took longer than [`PRECHECK_RESOLVE_TIMEOUT`].
    #[error("resolving {host} took longer than {} s", .timeout.as_secs())]
    ResolveTimeout {
        /// The name in the URL.
        host: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The host name does not resolve.
    #[error("{host} does not resolve ({reason})")]
    Unresolved {
        /// The name in the URL.
        host: String,
        /// The resolver's error.
        reason: String,
    },
}

impl ImportPolicy {
    /// Checks the URL `text` when an import is asked for (module documentation) and returns
    /// it parsed.
    ///
    /// # Errors
    /// [`PrecheckError`] naming what is refused.
    pub async fn precheck(&self, text: &str) -> Result<Url, PrecheckError> {
        self.precheck_within(text, PRECHECK_RESOLVE_TIMEOUT).await
    }

    /// [`precheck`](Self::precheck) with resolution bounded by `timeout`.
    async fn precheck_within(&self, text: &str, timeout: Duration) -> Result<Url, PrecheckError> {
        let url = self.parse_url(text)?;
        if let Some(Host::Domain(host)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs = match tokio::time::timeout(timeout, self.resolve(host, port)).await {
                Ok(Ok(addrs)) => addrs,
                Ok(Err(e)) => {
                    return Err(PrecheckError::Unresolved {
                        host: host.to_owned(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(PrecheckError::ResolveTimeout {
                        host: host.to_owned(),
                        timeout,
                    })
                }
            };
            self.approve(host, &addrs)?;
        }
        Ok(url)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ssrf::PinnedHost;

    fn pinned(name: &str, addr: &str) -> ImportPolicy {
        ImportPolicy {
            pinned_hosts: vec![format!("{name}={addr}").parse::<PinnedHost>().unwrap()],
            ..ImportPolicy::default()
        }
    }

    #[tokio::test]
    async fn test_precheck_name_resolving_to_loopback_is_refused() {
        let policy = pinned("images.example", "127.0.0.1");
        let e = policy
            .precheck("http://images.example/disk.qcow2")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                PrecheckError::Policy(PolicyError::ResolvesToRefused { .. })
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn test_precheck_name_resolving_to_public_address_passes() {
        let policy = pinned("images.example", "93.184.216.34");
        let url = policy
            .precheck("http://images.example/disk.qcow2")
            .await
            .unwrap();
        assert_eq!(url.host_str(), Some("images.example"));
    }

    #[tokio::test]
    async fn test_precheck_literal_address_needs_no_resolution() {
        let e = ImportPolicy::default()
            .precheck("http://10.0.0.1/disk")
            .await
            .unwrap_err();
        assert!(
            matches!(e, PrecheckError::Policy(PolicyError::AddressRefused { .. })),
            "{e}"
        );
    }

    #[tokio::test]
    async fn test_precheck_unresolvable_name_is_named() {
        let e = ImportPolicy::default()
            .precheck("http://does-not-exist.invalid/disk")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                PrecheckError::Unresolved { .. } | PrecheckError::ResolveTimeout { .. }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("does-not-exist.invalid"), "{e}");
    }
}
