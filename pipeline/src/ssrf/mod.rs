//! The import URL policy: which schemes, hosts, ports and addresses an HTTP pull may reach.
//!
//! Defends against server-side request forgery (CVE-2026-34881, OSSA-2026-004): a URL that
//! names an internal service directly, through a non-canonical IPv4 spelling (`2130706433`,
//! `0x7f.1`, `0177.0.0.1`, `127.1`), through an IPv6 form that embeds or translates an IPv4
//! address (`::ffff:0:7f00:1`, `64:ff9b:1::7f00:1`, 6to4, Teredo, ISATAP), through a DNS name
//! that resolves to an internal address, or through a redirect. [`ImportPolicy::parse_url`]
//! checks the text a user gave, [`ImportPolicy::check_url`] a parsed URL (every redirect
//! hop), and [`ImportPolicy::approve`] the addresses a name resolved to, right before
//! connecting to one of them. [`ImportPolicy::precheck`] is the check of a URL when an
//! import is asked for (parse, resolve, approve), before any connection.
//!
//! The options mirror Glance's `[import_filtering_opts]` (an allow-list takes precedence over
//! the matching deny-list; ports default to 80 and 443), with entries that may name a port.
//! The rules:
//! - an address is reachable when it is globally reachable ([`ranges`]'s tables), or when it
//!   is on the allow-list, or when a name on the allow-list resolves to it and it is neither
//!   link-local nor a metadata address (those only by address);
//! - a name on the allow-list matches that name only; an address entry matches a connection
//!   to that address, whatever name led there;
//! - an entry without a port covers the allowed ports; with one, that port only.

use std::net::{IpAddr, SocketAddr};

use url::{Host, Url};

mod entry;
mod precheck;
pub mod ranges;

pub use entry::{EntryError, EntryHost, HostEntry, PinnedHost};
pub use precheck::{PrecheckError, PRECHECK_RESOLVE_TIMEOUT};
pub use ranges::{AddrClass, Nat64Prefix, Nat64PrefixError, Reach, METADATA_ADDRS};

use entry::{canonical_ip, looks_numeric, normalize_name};
use ranges::classify;

/// Ports an import may use unless configured otherwise: Glance's `allowed_ports` default
/// (`[import_filtering_opts]`), so an import cannot talk to a mail, database or admin port.
pub const GLANCE_ALLOWED_PORTS: [u16; 2] = [80, 443];

/// Which URLs an import may fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPolicy {
    /// Schemes allowed (lower case). Empty: any scheme… but only `http`/`https` can be
    /// fetched at all.
    pub allowed_schemes: Vec<String>,
    /// Hosts allowed, with an optional port each. Empty: any host not denied whose addresses
    /// are globally reachable. Otherwise only these, even on internal addresses.
    pub allowed_hosts: Vec<HostEntry>,
    /// Hosts refused (ignored when `allowed_hosts` is set).
    pub denied_hosts: Vec<HostEntry>,
    /// Ports allowed (the scheme's default port when the URL gives none) for hosts listed
    /// without a port, and for every host when no allow-list is set. Empty: any port not in
    /// `denied_ports`.
    pub allowed_ports: Vec<u16>,
    /// Ports refused (ignored when `allowed_ports` is set).
    pub denied_ports: Vec<u16>,
    /// The deployment's NAT64 prefixes besides the well-known 64:ff9b::/96: addresses in them
    /// are judged by the IPv4 address they translate to.
    pub nat64_prefixes: Vec<Nat64Prefix>,
    /// Names resolved from this list instead of DNS ([`resolve`](Self::resolve)).
    pub pinned_hosts: Vec<PinnedHost>,
}

impl Default for ImportPolicy {
    /// Glance's defaults: `http`/`https` on ports 80 and 443, any globally reachable host.
    fn default() -> Self {
        ImportPolicy {
            allowed_schemes: vec!["http".to_owned(), "https".to_owned()],
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            allowed_ports: GLANCE_ALLOWED_PORTS.to_vec(),
            denied_ports: Vec::new(),
            nat64_prefixes: Vec::new(),
            pinned_hosts: Vec::new(),
        }
    }
}

/// Why a URL or address is refused. The message names the offending value and the rule, so
/// that a user can tell a typo from a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A literal address in a range the policy refuses.
    #[error("{}", refused_addr(.addr, .class))]
    AddressRefused {
        /// The refused address.
        addr: IpAddr,
        /// What it is.
        class: AddrClass,
    },
    /// The host is on the deny-list.
    #[error("{0} is on the import deny-list")]
    HostDenied(String),
    /// An allow-list is set and the host is not on it.
    #[error("{0} is not on the import allow-list")]
    HostNotAllowed(String),
    /// The text is not a URL.
    #[error("'{url}' is not a valid URL: {reason}")]
    InvalidUrl {
        /// The text given.
        url: String,
        /// What the URL parser said.
        reason: String,
    },
    /// The URL has no host.
    #[error("URL '{0}' has no host")]
    MissingHost(String),
    /// A host spelled as a non-canonical IPv4 address (decimal, hex, octal, shorthand).
    #[error("host '{0}' is a non-canonical IP address spelling")]
    NonCanonicalAddress(String),
    /// The host name resolved to no address at all.
    #[error("{0} does not resolve to any address")]
    NoAddress(String),
    /// The port is not allowed.
    #[error("port {port} is not allowed ({rule})")]
    PortRefused {
        /// The refused port.
        port: u16,
        /// The rule that refused it ("allowed ports: 80, 443").
        rule: String,
    },
    /// A host name resolved to an address the policy refuses.
    #[error("{host} resolves to {}{}", resolved_addr(.addr, .class), if *.allowed_name {
        "; an allowed name does not cover link-local or metadata addresses (allow the address itself)"
    } else { "" })]
    ResolvesToRefused {
        /// The name in the URL.
        host: String,
        /// The address it resolved to.
        addr: IpAddr,
        /// What that address is.
        class: AddrClass,
        /// Whether the name is on the allow-list (which covers internal addresses, but not
        /// link-local or metadata ones).
        allowed_name: bool,
    },
    /// An allow-list is set and a host name resolved to an address not on it.
    #[error("{host} resolves to {addr}, which is not on the import allow-list")]
    ResolvesToUnlisted {
        /// The name in the URL.
        host: String,
        /// The address it resolved to.
        addr: IpAddr,
    },
    /// The scheme is not allowed or cannot be fetched.
    #[error("scheme '{0}' is not allowed (allowed schemes: http, https)")]
    SchemeRefused(String),
}

fn refused_addr(addr: &IpAddr, class: &AddrClass) -> String {
    match class.embedded {
        Some((v4, form)) => format!("{addr} embeds {v4} ({form}), {}", class.what),
        None => format!("{addr} is {}", class.what),
    }
}

fn resolved_addr(addr: &IpAddr, class: &AddrClass) -> String {
    match class.embedded {
        Some((v4, form)) => format!("{addr}, which embeds {v4} ({form}), {}", class.what),
        None => format!("{addr}, {}", class.what),
    }
}

impl ImportPolicy {
    /// Parses `input` and checks it with [`check_url`](Self::check_url), refusing first any
    /// host that the URL parser would silently canonicalise from a non-canonical IPv4 spelling
    /// (`http://2130706433/`, `http://0x7f.1/`, `http://0177.0.0.1/`, `http://127.1/`,
    /// percent-encoded or trailing-dot forms).
    ///
    /// # Errors
    /// [`PolicyError`] naming what is refused.
    pub fn parse_url(&self, input: &str) -> Result<Url, PolicyError> {
        let url = Url::parse(input).map_err(|e| PolicyError::InvalidUrl {
            url: crate::redact::url(input),
            reason: e.to_string(),
        })?;
        check_spelling(input, &url)?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Parses a redirect `location` relative to `base` and checks it like
    /// [`parse_url`](Self::parse_url).
    ///
    /// # Errors
    /// [`PolicyError`] naming what is refused.
    pub fn parse_redirect(&self, base: &Url, location: &str) -> Result<Url, PolicyError> {
        let url = base.join(location).map_err(|e| PolicyError::InvalidUrl {
            url: crate::redact::url(location),
            reason: e.to_string(),
        })?;
        check_spelling(location, &url)?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Checks a parsed URL: scheme, port, host lists, and literal IP addresses against the
    /// address rules. Host names are checked again once resolved
    /// ([`approve`](Self::approve)).
    ///
    /// A [`Url`] has already canonicalised IPv4 spellings; use [`parse_url`](Self::parse_url)
    /// on user text so that those spellings are refused rather than normalised.
    ///
    /// # Errors
    /// [`PolicyError`] naming what is refused.
    pub fn check_url(&self, url: &Url) -> Result<(), PolicyError> {
        let scheme = url.scheme();
        let fetchable = scheme == "http" || scheme == "https";
        let listed = self.allowed_schemes.is_empty()
            || self
                .allowed_schemes
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scheme));
        if !fetchable || !listed {
            return Err(PolicyError::SchemeRefused(scheme.to_owned()));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| PolicyError::SchemeRefused(scheme.to_owned()))?;
        match url
            .host()
            .ok_or_else(|| PolicyError::MissingHost(crate::redact::url(url.as_str())))?
        {
            Host::Domain(name) if looks_numeric(name) => {
                Err(PolicyError::NonCanonicalAddress(name.to_owned()))
            }
            Host::Domain(name) => self.check_name(&normalize_name(name), port),
            Host::Ipv4(v4) => self.check_ip(None, IpAddr::V4(v4), port),
            Host::Ipv6(v6) => self.check_ip(None, IpAddr::V6(v6), port),
        }
    }

    /// The addresses of the host name `name` on `port`: its [`PinnedHost`] entries when it
    /// has any, else what the system resolver answers. Check them with
    /// [`approve`](Self::approve) before connecting.
    ///
    /// # Errors
    /// The resolver's error.
    pub async fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let key = normalize_name(name);
        let pinned: Vec<SocketAddr> = self
            .pinned_hosts
            .iter()
            .filter(|p| p.name == key)
            .map(|p| SocketAddr::new(p.addr, port))
            .collect();
        if !pinned.is_empty() {
            return Ok(pinned);
        }
        Ok(tokio::net::lookup_host((name, port)).await?.collect())
    }

    /// The addresses `host` (as in the URL: a name or an IP literal) resolved to that an
    /// import may connect to, in their order; the first refusal when there is none.
    ///
    /// Addresses the policy refuses are left out rather than refusing the host: connections
    /// go only to the addresses returned, so a name resolving to both a public and an
    /// internal address cannot reach the internal one, and `localhost` reaches the one of
    /// its addresses that is allowed.
    ///
    /// # Errors
    /// [`PolicyError`] for the first refused address, or [`PolicyError::NoAddress`].
    pub fn approve(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, PolicyError> {
        let mut first_refusal = None;
        let mut approved = Vec::new();
        for addr in addrs {
            match self.check_resolved(host, *addr) {
                Ok(()) => approved.push(*addr),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if approved.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| PolicyError::NoAddress(host.to_owned())));
        }
        Ok(approved)
    }

    /// Checks one address `host` (as in the URL: a name or an IP literal) resolved to.
    ///
    /// # Errors
    /// [`PolicyError`] naming what is refused.
    pub fn check_resolved(&self, host: &str, addr: SocketAddr) -> Result<(), PolicyError> {
        let name = normalize_name(host);
        let name = name.parse::<IpAddr>().is_err().then_some(name.as_str());
        self.check_ip(name, addr.ip(), addr.port())
    }

    /// A host name before resolution: the lists and the port.
    fn check_name(&self, name: &str, port: u16) -> Result<(), PolicyError> {
        if !self.allowed_hosts.is_empty() {
            let by_name = self.allowed(|e| e.matches_name(name));
            if !by_name.is_empty() {
                return self.check_entry_port(name, &by_name, port);
            }
            // An address entry may still cover what the name resolves to.
            if self.allowed_hosts.iter().any(HostEntry::is_addr) {
                return Ok(());
            }
            return Err(PolicyError::HostNotAllowed(name.to_owned()));
        }
        let denied = self
            .denied_hosts
            .iter()
            .any(|e| e.matches_name(name) && e.port.is_none_or(|p| p == port));
        if denied {
            return Err(PolicyError::HostDenied(name.to_owned()));
        }
        self.check_port(port)
    }

    /// An address, literal (`name` is `None`) or resolved from `name`, on `port`.
    fn check_ip(&self, name: Option<&str>, ip: IpAddr, port: u16) -> Result<(), PolicyError> {
        let ip = canonical_ip(ip);
        if !self.allowed_hosts.is_empty() {
            let by_addr = self.allowed(|e| e.matches_addr(ip));
            if !by_addr.is_empty() {
                return self.check_entry_port(&ip.to_string(), &by_addr, port);
            }
            let Some(name) = name else {
                return Err(PolicyError::HostNotAllowed(ip.to_string()));
            };
            let by_name = self.allowed(|e| e.matches_name(name));
            if by_name.is_empty() {
                return Err(PolicyError::ResolvesToUnlisted {
                    host: name.to_owned(),
                    addr: ip,
                });
            }
            self.check_entry_port(name, &by_name, port)?;
            let class = classify(ip, &self.nat64_prefixes);
            return match class.reach {
                Reach::Global | Reach::Internal => Ok(()),
                Reach::Sensitive | Reach::Unusable => Err(PolicyError::ResolvesToRefused {
                    host: name.to_owned(),
                    addr: ip,
                    class,
                    allowed_name: true,
                }),
            };
        }
        let denied = self
            .denied_hosts
            .iter()
            .any(|e| e.matches_addr(ip) && e.port.is_none_or(|p| p == port));
        if denied {
            return Err(PolicyError::HostDenied(ip.to_string()));
        }
        self.check_port(port)?;
        let class = classify(ip, &self.nat64_prefixes);
        if class.reach == Reach::Global {
            return Ok(());
        }
        Err(match name {
            Some(name) => PolicyError::ResolvesToRefused {
                host: name.to_owned(),
                addr: ip,
                class,
                allowed_name: false,
            },
            None => PolicyError::AddressRefused { addr: ip, class },
        })
    }

    fn allowed(&self, matches: impl Fn(&HostEntry) -> bool) -> Vec<&HostEntry> {
        self.allowed_hosts.iter().filter(|e| matches(e)).collect()
    }

    /// `port` on a host the allow-list names in `entries`.
    fn check_entry_port(
        &self,
        host: &str,
        entries: &[&HostEntry],
        port: u16,
    ) -> Result<(), PolicyError> {
        let covered = entries.iter().any(|e| match e.port {
            Some(p) => p == port,
            None => self.check_port(port).is_ok(),
        });
        if covered {
            return Ok(());
        }
        let explicit: Vec<String> = entries
            .iter()
            .filter_map(|e| e.port)
            .map(|p| p.to_string())
            .collect();
        let rule = if explicit.is_empty() {
            self.port_rule()
        } else if entries.iter().all(|e| e.port.is_some()) {
            format!("allowed for {host}: {}", explicit.join(", "))
        } else {
            format!(
                "allowed for {host}: {}; {}",
                explicit.join(", "),
                self.port_rule()
            )
        };
        Err(PolicyError::PortRefused { port, rule })
    }

    /// The port lists, for hosts listed without a port and for every host without an
    /// allow-list.
    fn check_port(&self, port: u16) -> Result<(), PolicyError> {
        let refused = if self.allowed_ports.is_empty() {
            self.denied_ports.contains(&port)
        } else {
            !self.allowed_ports.contains(&port)
        };
        if refused {
            return Err(PolicyError::PortRefused {
                port,
                rule: self.port_rule(),
            });
        }
        Ok(())
    }

    /// "allowed ports: 80, 443", "denied ports: 25", or "any port".
    fn port_rule(&self) -> String {
        let join = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.allowed_ports.is_empty() {
            format!("allowed ports: {}", join(&self.allowed_ports))
        } else if !self.denied_ports.is_empty() {
            format!("denied ports: {}", join(&self.denied_ports))
        } else {
            "any port".to_owned()
        }
    }
}

/// Refuses a URL whose IPv4 host the parser canonicalised from another spelling.
fn check_spelling(input: &str, url: &Url) -> Result<(), PolicyError> {
    let Some(Host::Ipv4(v4)) = url.host() else {
        return Ok(());
    };
    match raw_host(input) {
        // A relative redirect keeps the base's host, which was checked before.
        None => Ok(()),
        Some(raw) if raw == v4.to_string() => Ok(()),
        Some(raw) => Err(PolicyError::NonCanonicalAddress(raw.to_owned())),
    }
}

/// The host as written in an absolute or scheme-relative URL, without userinfo or port.
fn raw_host(input: &str) -> Option<&str> {
    let input = input.trim_start();
    let after = match input.find("://") {
        Some(i) => input.get(i.checked_add(3)?..)?,
        None => input.strip_prefix("//")?,
    };
    let authority_end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    let authority = after.get(..authority_end)?;
    let hostport = match authority.rfind('@') {
        Some(i) => authority.get(i.checked_add(1)?..)?,
        None => authority,
    };
    if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        return hostport.get(..=end);
    }
    Some(match hostport.rfind(':') {
        Some(i) => hostport.get(..i)?,
        None => hostport,
    })
}

#[cfg(test)]
mod tests;
