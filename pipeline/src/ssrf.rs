//! The import URL policy: which schemes, hosts, ports and addresses an HTTP pull may reach.
//!
//! Defends against server-side request forgery (CVE-2026-34881, OSSA-2026-004): a URL that
//! names an internal service directly, through a non-canonical IPv4 spelling (`2130706433`,
//! `0x7f.1`, `0177.0.0.1`, `127.1`), through a DNS name that resolves to an internal address,
//! or through a redirect. [`ImportPolicy::parse_url`] checks the text a user gave,
//! [`ImportPolicy::check_url`] a parsed URL (every redirect hop), and
//! [`ImportPolicy::check_resolved`] every address a name resolves to, right before connecting.
//!
//! The options mirror Glance's `[import_filtering_opts]`: an allow-list takes precedence over
//! the matching deny-list when both are set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// The cloud metadata addresses that must never be reached unless explicitly allowed
/// (AWS/GCP/Azure/OpenStack use 169.254.169.254; AWS's IPv6 endpoint is fd00:ec2::254).
pub const METADATA_ADDRS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Which URLs an import may fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPolicy {
    /// Schemes allowed (lower case). Empty: any scheme not denied… but only `http`/`https`
    /// can be fetched at all.
    pub allowed_schemes: Vec<String>,
    /// Host names or IP literals allowed. Empty: any host not denied. A host listed here also
    /// bypasses the address rules (so a lab may allow `127.0.0.1`), for that host only.
    pub allowed_hosts: Vec<String>,
    /// Host names or IP literals refused (ignored when `allowed_hosts` is set).
    pub denied_hosts: Vec<String>,
    /// Ports allowed (the scheme's default port when the URL gives none). Empty: any.
    pub allowed_ports: Vec<u16>,
    /// Ports refused (ignored when `allowed_ports` is set).
    pub denied_ports: Vec<u16>,
    /// Whether loopback, private (RFC 1918, RFC 4193), shared (RFC 6598) and link-local
    /// addresses may be reached. Metadata, unspecified, multicast, broadcast and reserved
    /// addresses stay refused even then.
    pub allow_private: bool,
}

impl Default for ImportPolicy {
    /// Glance's defaults: `http`/`https` on ports 80 and 443, any public host.
    fn default() -> Self {
        ImportPolicy {
            allowed_schemes: vec!["http".to_owned(), "https".to_owned()],
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            allowed_ports: vec![80, 443],
            denied_ports: Vec::new(),
            allow_private: false,
        }
    }
}

/// Why a URL or address is refused. The message names the offending value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The address is in a class the policy refuses.
    #[error("address {addr} is {class} and not allowed as an import source")]
    AddressRefused {
        /// The refused address.
        addr: IpAddr,
        /// What kind of address it is ("loopback", "private", ...).
        class: &'static str,
    },
    /// The host is not on the allow-list or is on the deny-list.
    #[error("host '{0}' is not allowed as an import source")]
    HostRefused(String),
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
    /// The port is not allowed.
    #[error("port {0} is not allowed as an import source")]
    PortRefused(u16),
    /// The scheme is not allowed or cannot be fetched.
    #[error("scheme '{0}' is not allowed as an import source")]
    SchemeRefused(String),
}

/// The class of an IP address, as far as the policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddrClass {
    /// Globally routable.
    Public,
    /// Reachable only inside a site; allowed by `allow_private`.
    Private(&'static str),
    /// Never a legitimate source unless the host is explicitly allowed.
    Forbidden(&'static str),
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
            url: input.to_owned(),
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
            url: location.to_owned(),
            reason: e.to_string(),
        })?;
        check_spelling(location, &url)?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Checks a parsed URL: scheme, port, host lists, and literal IP addresses against the
    /// address rules. Host names are checked again once resolved
    /// ([`check_resolved`](Self::check_resolved)).
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
        self.check_port(port)?;
        let host = url
            .host()
            .ok_or_else(|| PolicyError::MissingHost(url.to_string()))?;
        let explicitly_allowed = self.check_host(&host)?;
        let ip = match host {
            Host::Domain(name) => {
                if looks_numeric(name) {
                    return Err(PolicyError::NonCanonicalAddress(name.to_owned()));
                }
                return Ok(());
            }
            Host::Ipv4(v4) => IpAddr::V4(v4),
            Host::Ipv6(v6) => IpAddr::V6(v6),
        };
        if explicitly_allowed {
            return Ok(());
        }
        self.check_ip(ip)
    }

    /// Checks an address a host name resolved to, just before connecting to it. The address
    /// rules apply unless `host` (as it appears in the URL) is on the allow-list.
    ///
    /// # Errors
    /// [`PolicyError`] naming what is refused.
    pub fn check_resolved(&self, host: &str, addr: SocketAddr) -> Result<(), PolicyError> {
        if self.host_listed(&self.allowed_hosts, host) {
            return self.check_port(addr.port());
        }
        self.check_addr(addr)
    }

    /// Checks a socket address against the port and address rules (an IP literal on the
    /// allow-list passes the address rules).
    ///
    /// # Errors
    /// [`PolicyError`] naming what is refused.
    pub fn check_addr(&self, addr: SocketAddr) -> Result<(), PolicyError> {
        self.check_port(addr.port())?;
        let ip = canonical_ip(addr.ip());
        if self.ip_listed(&self.allowed_hosts, ip) {
            return Ok(());
        }
        if !self.allowed_hosts.is_empty() {
            // With an allow-list, only listed hosts (checked by name in check_resolved) or
            // listed literals may be reached; the address rules still apply to names.
            return self.check_ip(ip);
        }
        if self.ip_listed(&self.denied_hosts, ip) {
            return Err(PolicyError::HostRefused(ip.to_string()));
        }
        self.check_ip(ip)
    }

    fn check_port(&self, port: u16) -> Result<(), PolicyError> {
        let refused = if self.allowed_ports.is_empty() {
            self.denied_ports.contains(&port)
        } else {
            !self.allowed_ports.contains(&port)
        };
        if refused {
            return Err(PolicyError::PortRefused(port));
        }
        Ok(())
    }

    /// Applies the host lists; `Ok(true)` when the host is explicitly allowed.
    fn check_host(&self, host: &Host<&str>) -> Result<bool, PolicyError> {
        let text = host_text(host);
        let listed = |list: &[String]| match host {
            Host::Domain(name) => self.host_listed(list, name),
            Host::Ipv4(v4) => self.ip_listed(list, IpAddr::V4(*v4)),
            Host::Ipv6(v6) => self.ip_listed(list, canonical_ip(IpAddr::V6(*v6))),
        };
        if !self.allowed_hosts.is_empty() {
            return if listed(&self.allowed_hosts) {
                Ok(true)
            } else {
                Err(PolicyError::HostRefused(text))
            };
        }
        if listed(&self.denied_hosts) {
            return Err(PolicyError::HostRefused(text));
        }
        Ok(false)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), PolicyError> {
        match classify(ip) {
            AddrClass::Public => Ok(()),
            AddrClass::Private(_) if self.allow_private => Ok(()),
            AddrClass::Private(class) | AddrClass::Forbidden(class) => {
                Err(PolicyError::AddressRefused { addr: ip, class })
            }
        }
    }

    fn host_listed(&self, list: &[String], host: &str) -> bool {
        let host = normalize_name(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ip_listed(list, canonical_ip(ip));
        }
        list.iter().any(|entry| normalize_name(entry) == host)
    }

    fn ip_listed(&self, list: &[String], ip: IpAddr) -> bool {
        list.iter().any(|entry| {
            normalize_name(entry)
                .parse::<IpAddr>()
                .is_ok_and(|e| canonical_ip(e) == ip)
        })
    }
}

/// Lower case, without IPv6 brackets or a trailing dot.
fn normalize_name(name: &str) -> String {
    let name = name.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn host_text(host: &Host<&str>) -> String {
    match host {
        Host::Domain(name) => (*name).to_owned(),
        Host::Ipv4(v4) => v4.to_string(),
        Host::Ipv6(v6) => v6.to_string(),
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it maps.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Host names made only of digits, dots and hex markers are refused even when the URL parser
/// did not read them as IPv4 (Glance's `normalize_hostname` rule): resolvers differ on them.
fn looks_numeric(name: &str) -> bool {
    let last = name
        .strip_suffix('.')
        .unwrap_or(name)
        .rsplit('.')
        .next()
        .unwrap_or("");
    !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || (last.starts_with("0x") && last.bytes().skip(2).all(|b| b.is_ascii_hexdigit())))
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

fn classify(ip: IpAddr) -> AddrClass {
    if METADATA_ADDRS.contains(&ip) {
        return AddrClass::Forbidden("a cloud metadata address");
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddrClass {
    let [a, b, _, _] = v4.octets();
    if v4.is_unspecified() || a == 0 {
        AddrClass::Forbidden("unspecified (0.0.0.0/8)")
    } else if v4.is_broadcast() {
        AddrClass::Forbidden("broadcast")
    } else if v4.is_multicast() {
        AddrClass::Forbidden("multicast")
    } else if a >= 240 {
        AddrClass::Forbidden("reserved (240.0.0.0/4)")
    } else if v4.is_loopback() {
        AddrClass::Private("loopback")
    } else if v4.is_private() {
        AddrClass::Private("private (RFC 1918)")
    } else if v4.is_link_local() {
        AddrClass::Private("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        AddrClass::Private("shared address space (RFC 6598)")
    } else if a == 198 && (b == 18 || b == 19) {
        AddrClass::Private("benchmarking (RFC 2544)")
    } else {
        AddrClass::Public
    }
}

fn classify_v6(v6: Ipv6Addr) -> AddrClass {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = v6.segments();
    let first = seg.first().copied().unwrap_or(0);
    // Addresses embedding an IPv4 address: NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    let [.., a, b, c, d] = v6.octets();
    if seg.get(..6) == Some(&[0x64, 0xff9b, 0, 0, 0, 0]) {
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if first == 0x2002 {
        let [_, _, e, f, g, h, ..] = v6.octets();
        return classify_v4(Ipv4Addr::new(e, f, g, h));
    }
    if v6.is_unspecified() {
        AddrClass::Forbidden("unspecified")
    } else if v6.is_multicast() {
        AddrClass::Forbidden("multicast")
    } else if v6.is_loopback() {
        AddrClass::Private("loopback")
    } else if seg.get(..6) == Some(&[0, 0, 0, 0, 0, 0]) {
        // Deprecated IPv4-compatible addresses (::a.b.c.d).
        AddrClass::Forbidden("IPv4-compatible (deprecated)")
    } else if first & 0xfe00 == 0xfc00 {
        AddrClass::Private("unique local (RFC 4193)")
    } else if first & 0xffc0 == 0xfe80 {
        AddrClass::Private("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        AddrClass::Private("site-local (deprecated)")
    } else {
        AddrClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> ImportPolicy {
        ImportPolicy {
            allowed_hosts: vec!["127.0.0.1".to_owned()],
            allowed_ports: Vec::new(),
            ..ImportPolicy::default()
        }
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_policy_default_public_https_is_allowed() {
        let p = ImportPolicy::default();
        assert!(p
            .parse_url("https://cloud-images.example.org/a.qcow2")
            .is_ok());
        assert!(p.parse_url("http://93.184.216.34/a.img").is_ok());
        assert!(p.parse_url("http://[2606:2800:220:1::1]/a.img").is_ok());
    }

    #[test]
    fn test_policy_file_and_ftp_schemes_are_refused() {
        let p = ImportPolicy::default();
        for url in ["file:///etc/passwd", "ftp://example.org/a", "gopher://x/"] {
            assert!(
                matches!(p.parse_url(url), Err(PolicyError::SchemeRefused(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn test_policy_empty_scheme_list_still_refuses_unfetchable() {
        let p = ImportPolicy {
            allowed_schemes: Vec::new(),
            ..ImportPolicy::default()
        };
        assert!(matches!(
            p.parse_url("file:///etc/passwd"),
            Err(PolicyError::SchemeRefused(_))
        ));
    }

    #[test]
    fn test_policy_loopback_literals_are_refused() {
        let p = ImportPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.9.9.9/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert!(
                matches!(p.parse_url(url), Err(PolicyError::AddressRefused { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn test_policy_private_and_link_local_literals_are_refused() {
        let p = ImportPolicy::default();
        for url in [
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.1.1/",
            "http://100.64.0.1/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:c0a8:101::1]/",
        ] {
            assert!(
                matches!(p.parse_url(url), Err(PolicyError::AddressRefused { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn test_policy_unusable_literals_are_refused() {
        let p = ImportPolicy::default();
        for url in [
            "http://0.0.0.0/",
            "http://[::]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://240.0.0.1/",
            "http://[ff02::1]/",
        ] {
            assert!(
                matches!(p.parse_url(url), Err(PolicyError::AddressRefused { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn test_policy_metadata_refused_even_with_allow_private() {
        let p = ImportPolicy {
            allow_private: true,
            ..ImportPolicy::default()
        };
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
        ] {
            assert!(
                matches!(
                    p.parse_url(url),
                    Err(PolicyError::AddressRefused {
                        class: "a cloud metadata address",
                        ..
                    })
                ),
                "{url}"
            );
        }
        assert!(p.parse_url("http://10.0.0.5/a.img").is_ok());
        assert!(p.parse_url("http://127.0.0.1/a.img").is_ok());
        assert!(matches!(
            p.parse_url("http://0.0.0.0/"),
            Err(PolicyError::AddressRefused { .. })
        ));
    }

    #[test]
    fn test_policy_non_canonical_ipv4_spellings_are_refused() {
        // Allowing 127.0.0.1 must not let its other spellings through either.
        for p in [ImportPolicy::default(), lab()] {
            for url in [
                "http://2130706433/",
                "http://0x7f000001/",
                "http://0x7f.1/",
                "http://0177.0.0.1/",
                "http://127.1/",
                "http://127.0.1/",
                "http://127.0.0.1./",
                "http://%31%32%37.0.0.1/",
                "http://user@0x7f.1:8080/x",
            ] {
                assert!(
                    matches!(p.parse_url(url), Err(PolicyError::NonCanonicalAddress(_))),
                    "{url}"
                );
            }
        }
    }

    #[test]
    fn test_policy_numeric_looking_name_is_refused() {
        let p = ImportPolicy::default();
        assert!(matches!(
            p.check_url(&Url::parse("http://example.0x1g/").unwrap()),
            Ok(())
        ));
        assert!(matches!(
            p.parse_url("http://1.2.3.4.5/"),
            Err(PolicyError::InvalidUrl { .. } | PolicyError::NonCanonicalAddress(_))
        ));
    }

    #[test]
    fn test_policy_allow_list_admits_only_listed_hosts() {
        let p = lab();
        assert!(p.parse_url("http://127.0.0.1:8080/a.img").is_ok());
        assert!(matches!(
            p.parse_url("http://localhost:8080/a.img"),
            Err(PolicyError::HostRefused(_))
        ));
        assert!(matches!(
            p.parse_url("http://127.0.0.2/a.img"),
            Err(PolicyError::HostRefused(_))
        ));
        assert!(matches!(
            p.parse_url("http://example.org/a.img"),
            Err(PolicyError::HostRefused(_))
        ));
    }

    #[test]
    fn test_policy_allowed_name_bypasses_address_rules_for_that_name() {
        let p = ImportPolicy {
            allowed_hosts: vec!["Images.Lab.".to_owned()],
            ..ImportPolicy::default()
        };
        assert!(p.parse_url("http://images.lab/a.img").is_ok());
        assert!(p.check_resolved("images.lab", sock("10.0.0.5:80")).is_ok());
        assert!(matches!(
            p.check_resolved("other.example", sock("10.0.0.5:80")),
            Err(PolicyError::AddressRefused { .. })
        ));
    }

    #[test]
    fn test_policy_deny_list_refuses_names_and_literals() {
        let p = ImportPolicy {
            denied_hosts: vec!["evil.example".to_owned(), "93.184.216.34".to_owned()],
            ..ImportPolicy::default()
        };
        assert!(matches!(
            p.parse_url("https://EVIL.example./x"),
            Err(PolicyError::HostRefused(_))
        ));
        assert!(matches!(
            p.parse_url("https://93.184.216.34/x"),
            Err(PolicyError::HostRefused(_))
        ));
        assert!(matches!(
            p.check_addr(sock("93.184.216.34:443")),
            Err(PolicyError::HostRefused(_))
        ));
        assert!(p.parse_url("https://good.example/x").is_ok());
    }

    #[test]
    fn test_policy_ports_default_to_80_and_443() {
        let p = ImportPolicy::default();
        assert!(p.parse_url("http://example.org:80/").is_ok());
        assert!(p.parse_url("https://example.org/").is_ok());
        assert!(matches!(
            p.parse_url("http://example.org:22/"),
            Err(PolicyError::PortRefused(22))
        ));
        let open = ImportPolicy {
            allowed_ports: Vec::new(),
            denied_ports: vec![25],
            ..ImportPolicy::default()
        };
        assert!(open.parse_url("http://example.org:8080/").is_ok());
        assert!(matches!(
            open.parse_url("http://example.org:25/"),
            Err(PolicyError::PortRefused(25))
        ));
    }

    #[test]
    fn test_policy_resolved_private_address_is_refused() {
        let p = ImportPolicy::default();
        assert!(matches!(
            p.check_resolved("innocent.example", sock("127.0.0.1:80")),
            Err(PolicyError::AddressRefused { .. })
        ));
        assert!(matches!(
            p.check_addr(sock("[::ffff:10.0.0.1]:443")),
            Err(PolicyError::AddressRefused { .. })
        ));
        assert!(p.check_addr(sock("93.184.216.34:443")).is_ok());
        assert!(matches!(
            p.check_addr(sock("93.184.216.34:8443")),
            Err(PolicyError::PortRefused(8443))
        ));
    }

    #[test]
    fn test_policy_lab_allows_loopback_address_only() {
        let p = lab();
        assert!(p.check_addr(sock("127.0.0.1:4000")).is_ok());
        assert!(matches!(
            p.check_addr(sock("127.0.0.2:4000")),
            Err(PolicyError::AddressRefused { .. })
        ));
    }

    #[test]
    fn test_policy_redirect_is_checked_like_a_url() {
        let p = lab();
        let base = Url::parse("http://127.0.0.1:8080/a").unwrap();
        assert_eq!(
            p.parse_redirect(&base, "/b").unwrap().as_str(),
            "http://127.0.0.1:8080/b"
        );
        assert!(matches!(
            p.parse_redirect(&base, "http://169.254.169.254/"),
            Err(PolicyError::HostRefused(_))
        ));
        assert!(matches!(
            p.parse_redirect(&base, "//2130706433:8080/"),
            Err(PolicyError::NonCanonicalAddress(_))
        ));
        assert!(matches!(
            ImportPolicy::default()
                .parse_redirect(&Url::parse("http://example.org/").unwrap(), "http://[::1]/"),
            Err(PolicyError::AddressRefused { .. })
        ));
    }

    #[test]
    fn test_policy_invalid_url_names_the_text() {
        let err = ImportPolicy::default().parse_url("not a url").unwrap_err();
        assert!(matches!(err, PolicyError::InvalidUrl { .. }));
        assert!(err.to_string().contains("not a url"));
    }

    #[test]
    fn test_raw_host_strips_userinfo_and_port() {
        assert_eq!(
            raw_host("http://u:p@Host.example:81/x"),
            Some("Host.example")
        );
        assert_eq!(raw_host("//h/x"), Some("h"));
        assert_eq!(raw_host("/relative"), None);
        assert_eq!(raw_host("http://[::1]:80/"), Some("[::1]"));
    }
}
