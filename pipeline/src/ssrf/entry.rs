//! Allow- and deny-list entries: a host name or an IP address, optionally with one port
//! (`images.example`, `images.example:8443`, `127.0.0.1:8000`, `::1`, `[::1]:8080`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::ranges::{classify, Reach};

/// The host part of a [`HostEntry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryHost {
    /// A DNS name, lower case, without a trailing dot. Matches that name only (no suffixes,
    /// no other spellings); addresses it resolves to are still checked.
    Name(String),
    /// An IP address (an IPv4-mapped IPv6 address is stored as its IPv4 address). Matches a
    /// connection to that address, whatever name led to it.
    Addr(IpAddr),
}

/// One allow- or deny-list entry. Without a port it covers the ports the policy allows
/// (Glance's `allowed_ports`); with one, that port only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEntry {
    /// The name or address.
    pub host: EntryHost,
    /// The one port covered, if given.
    pub port: Option<u16>,
}

/// An allow- or deny-list entry could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("import host entry '{entry}': {reason}")]
pub struct EntryError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for HostEntry {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| EntryError {
            entry: s.to_owned(),
            reason: reason.to_owned(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err("empty"));
        }
        if text.contains('/') {
            return Err(err(
                "a host name or IP address, not a URL: no scheme or path",
            ));
        }
        // `[v6]`, `[v6]:port`, a bare IP address, `host`, `host:port`.
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| err("missing ']' after an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected ':PORT' after ']'"))?,
                ),
            };
            let ip: std::net::Ipv6Addr = inner
                .parse()
                .map_err(|_| err("not an IPv6 address inside brackets"))?;
            (EntryHost::Addr(IpAddr::V6(ip)), port)
        } else if let Ok(ip) = text.parse::<IpAddr>() {
            (EntryHost::Addr(ip), None)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => {
                    return Err(err(
                        "an IPv6 address with a port needs brackets: [ADDR]:PORT",
                    ))
                }
                None => (text, None),
            };
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => EntryHost::Addr(ip),
                Err(_) => EntryHost::Name(parse_name(host).map_err(err)?),
            };
            (host, port)
        };
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(err("the port must be a number from 1 to 65535")),
                Ok(p) => Ok(p),
            })
            .transpose()?;
        let host = match host {
            EntryHost::Addr(ip) => {
                let ip = canonical_ip(ip);
                if classify(ip, &[]).reach == Reach::Unusable {
                    return Err(err(&format!(
                        "{} can never be an import source",
                        classify(ip, &[]).what
                    )));
                }
                EntryHost::Addr(ip)
            }
            name => name,
        };
        Ok(HostEntry { host, port })
    }
}

impl fmt::Display for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (EntryHost::Addr(IpAddr::V6(v6)), Some(p)) => write!(f, "[{v6}]:{p}"),
            (EntryHost::Addr(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (EntryHost::Addr(ip), None) => write!(f, "{ip}"),
            (EntryHost::Name(n), Some(p)) => write!(f, "{n}:{p}"),
            (EntryHost::Name(n), None) => write!(f, "{n}"),
        }
    }
}

impl HostEntry {
    /// Whether the entry names `name` (already `normalize_name`d).
    pub fn matches_name(&self, name: &str) -> bool {
        matches!(&self.host, EntryHost::Name(n) if n == name)
    }

    /// Whether the entry is the address `ip` (already `canonical_ip`).
    pub fn matches_addr(&self, ip: IpAddr) -> bool {
        self.host == EntryHost::Addr(ip)
    }

    /// Whether the entry is an address rather than a name.
    pub fn is_addr(&self) -> bool {
        matches!(self.host, EntryHost::Addr(_))
    }
}

/// Lower case, without IPv6 brackets or a trailing dot.
pub fn normalize_name(name: &str) -> String {
    let name = name.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it maps: a socket
/// to one is a socket to the other.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
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
pub fn looks_numeric(name: &str) -> bool {
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

/// A DNS name as an entry: letters, digits, `-`, `_` and dots, no empty label, not numeric.
fn parse_name(host: &str) -> Result<String, &'static str> {
    let name = normalize_name(host);
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok {
        return Err("not a host name, IP address, or either with ':PORT'");
    }
    if looks_numeric(&name) {
        return Err("a non-canonical IP address spelling; write the address as a.b.c.d");
    }
    Ok(name)
}

/// A host name resolved from configuration instead of DNS, like curl's `--resolve`
/// (`images.lab=10.0.0.5`): for air-gapped mirrors. The address still goes through every
/// rule of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedHost {
    /// The name, lower case, without a trailing dot.
    pub name: String,
    /// The address it resolves to.
    pub addr: IpAddr,
}

impl FromStr for PinnedHost {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| EntryError {
            entry: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, addr) = s
            .split_once('=')
            .ok_or_else(|| err("expected NAME=ADDRESS"))?;
        let name = parse_name(name).map_err(err)?;
        let addr = normalize_name(addr)
            .parse::<IpAddr>()
            .map_err(|_| err("expected NAME=ADDRESS with an IP address after '='"))?;
        Ok(PinnedHost { name, addr })
    }
}

impl fmt::Display for PinnedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.addr)
    }
}
