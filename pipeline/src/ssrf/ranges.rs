//! What an IP address is, as far as the import policy cares: the non-global rows of IANA's
//! IPv4 and IPv6 Special-Purpose Address Registries (`iana-ipv4-special-registry`,
//! `iana-ipv6-special-registry`), multicast, and every IPv6 form that embeds or translates an
//! IPv4 address (mapped, translated, compatible, NAT64, 6to4, Teredo, ISATAP), which is
//! classified by the IPv4 address it carries.
//!
//! Tables are searched first match wins, so a more specific row (e.g. a globally reachable
//! anycast address) comes before the block holding it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use self::Reach::{Global, Internal, Sensitive, Unusable};

/// How far an import may reach an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Globally reachable: any import may fetch from it.
    Global,
    /// Inside a site (loopback, private, shared, documentation, benchmarking, …): only a host
    /// on the allow-list, by name or by address.
    Internal,
    /// Link-local and cloud metadata: only when the address itself is on the allow-list, never
    /// because an allowed name resolves to it.
    Sensitive,
    /// Never a unicast peer (unspecified, "this network", multicast, broadcast, reserved,
    /// discard-only): always refused.
    Unusable,
}

/// What an address is, for the policy and its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrClass {
    /// How far imports may reach it.
    pub reach: Reach,
    /// A noun phrase naming the range: "a loopback address (127.0.0.0/8, RFC 1122)".
    pub what: &'static str,
    /// The IPv4 address an IPv6 address embeds, and the embedding's name, when that address
    /// decided the class.
    pub embedded: Option<(Ipv4Addr, &'static str)>,
}

/// The cloud metadata addresses (AWS, GCP, Azure and OpenStack use 169.254.169.254; AWS's
/// IPv6 endpoint is fd00:ec2::254). Not registry rows; refused as link-local is.
pub const METADATA_ADDRS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

const METADATA: &str = "a cloud metadata address";

/// One row: a prefix, its reach and what it is.
struct Row<A> {
    net: A,
    len: u32,
    reach: Reach,
    what: &'static str,
}

const fn v4(net: [u8; 4], len: u32, reach: Reach, what: &'static str) -> Row<Ipv4Addr> {
    let [a, b, c, d] = net;
    Row {
        net: Ipv4Addr::new(a, b, c, d),
        len,
        reach,
        what,
    }
}

const fn v6(net: [u16; 8], len: u32, reach: Reach, what: &'static str) -> Row<Ipv6Addr> {
    let [a, b, c, d, e, f, g, h] = net;
    Row {
        net: Ipv6Addr::new(a, b, c, d, e, f, g, h),
        len,
        reach,
        what,
    }
}

/// IANA IPv4 Special-Purpose Address Registry, every row whose "Globally Reachable" is not
/// True (the True rows inside 192.0.0.0/24 come first), plus multicast (IANA IPv4 Multicast
/// Address Space registry) and the metadata address.
const V4_TABLE: [Row<Ipv4Addr>; 23] = [
    // Row "192.0.0.9/32 Port Control Protocol Anycast", globally reachable.
    v4(
        [192, 0, 0, 9],
        32,
        Global,
        "a PCP anycast address (RFC 7723)",
    ),
    // Row "192.0.0.10/32 Traversal Using Relays around NAT Anycast", globally reachable.
    v4(
        [192, 0, 0, 10],
        32,
        Global,
        "a TURN anycast address (RFC 8155)",
    ),
    // Row "0.0.0.0/32 'This host on this network'".
    v4(
        [0, 0, 0, 0],
        32,
        Unusable,
        "the unspecified address (RFC 1122)",
    ),
    // Row "0.0.0.0/8 'This network'".
    v4(
        [0, 0, 0, 0],
        8,
        Unusable,
        "a 'this network' address (0.0.0.0/8, RFC 791)",
    ),
    // Row "10.0.0.0/8 Private-Use".
    v4(
        [10, 0, 0, 0],
        8,
        Internal,
        "a private address (10.0.0.0/8, RFC 1918)",
    ),
    // Row "100.64.0.0/10 Shared Address Space".
    v4(
        [100, 64, 0, 0],
        10,
        Internal,
        "a shared address (100.64.0.0/10, RFC 6598)",
    ),
    // Row "127.0.0.0/8 Loopback".
    v4(
        [127, 0, 0, 0],
        8,
        Internal,
        "a loopback address (127.0.0.0/8, RFC 1122)",
    ),
    // Not a registry row: the metadata service lives inside the link-local block.
    v4([169, 254, 169, 254], 32, Sensitive, METADATA),
    // Row "169.254.0.0/16 Link Local".
    v4(
        [169, 254, 0, 0],
        16,
        Sensitive,
        "a link-local address (169.254.0.0/16, RFC 3927)",
    ),
    // Row "172.16.0.0/12 Private-Use".
    v4(
        [172, 16, 0, 0],
        12,
        Internal,
        "a private address (172.16.0.0/12, RFC 1918)",
    ),
    // Row "192.0.0.0/29 IPv4 Service Continuity Prefix".
    v4(
        [192, 0, 0, 0],
        29,
        Internal,
        "a DS-Lite address (192.0.0.0/29, RFC 7335)",
    ),
    // Row "192.0.0.8/32 IPv4 dummy address".
    v4(
        [192, 0, 0, 8],
        32,
        Internal,
        "the IPv4 dummy address (RFC 7600)",
    ),
    // Rows "192.0.0.170/32, 192.0.0.171/32 NAT64/DNS64 Discovery".
    v4(
        [192, 0, 0, 170],
        31,
        Internal,
        "a NAT64 discovery address (RFC 8880)",
    ),
    // Row "192.0.0.0/24 IETF Protocol Assignments".
    v4(
        [192, 0, 0, 0],
        24,
        Internal,
        "an IETF protocol address (192.0.0.0/24, RFC 6890)",
    ),
    // Row "192.0.2.0/24 Documentation (TEST-NET-1)".
    v4(
        [192, 0, 2, 0],
        24,
        Internal,
        "a documentation address (192.0.2.0/24, RFC 5737)",
    ),
    // Row "192.88.99.0/24 Deprecated (6to4 Relay Anycast)".
    v4(
        [192, 88, 99, 0],
        24,
        Internal,
        "a 6to4 relay anycast address (192.88.99.0/24, RFC 7526)",
    ),
    // Row "192.168.0.0/16 Private-Use".
    v4(
        [192, 168, 0, 0],
        16,
        Internal,
        "a private address (192.168.0.0/16, RFC 1918)",
    ),
    // Row "198.18.0.0/15 Benchmarking".
    v4(
        [198, 18, 0, 0],
        15,
        Internal,
        "a benchmarking address (198.18.0.0/15, RFC 2544)",
    ),
    // Row "198.51.100.0/24 Documentation (TEST-NET-2)".
    v4(
        [198, 51, 100, 0],
        24,
        Internal,
        "a documentation address (198.51.100.0/24, RFC 5737)",
    ),
    // Row "203.0.113.0/24 Documentation (TEST-NET-3)".
    v4(
        [203, 0, 113, 0],
        24,
        Internal,
        "a documentation address (203.0.113.0/24, RFC 5737)",
    ),
    // IANA IPv4 Multicast Address Space registry.
    v4(
        [224, 0, 0, 0],
        4,
        Unusable,
        "a multicast address (224.0.0.0/4, RFC 5771)",
    ),
    // Row "255.255.255.255/32 Limited Broadcast".
    v4(
        [255, 255, 255, 255],
        32,
        Unusable,
        "the limited broadcast address (RFC 919)",
    ),
    // Row "240.0.0.0/4 Reserved".
    v4(
        [240, 0, 0, 0],
        4,
        Unusable,
        "a reserved address (240.0.0.0/4, RFC 1112)",
    ),
];

/// IANA IPv6 Special-Purpose Address Registry rows whose "Globally Reachable" is not True
/// (True rows inside 2001::/23 first), plus multicast and deprecated site-local. The
/// IPv4-embedding rows (::ffff:0:0/96, 64:ff9b::/96, 2002::/16, 2001::/32) are handled by
/// [`embedded_v4`] before this table.
const V6_TABLE: [Row<Ipv6Addr>; 20] = [
    // Row "::1/128 Loopback Address".
    v6(
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        Internal,
        "the loopback address (::1, RFC 4291)",
    ),
    // Row "::/128 Unspecified Address".
    v6(
        [0; 8],
        128,
        Unusable,
        "the unspecified address (::, RFC 4291)",
    ),
    // Row "64:ff9b:1::/48 IPv4-IPv6 Translat.": local-use, the embedding's length unknown.
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        Internal,
        "a local-use NAT64 address (64:ff9b:1::/48, RFC 8215)",
    ),
    // Row "100::/64 Discard-Only Address Block".
    v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        Unusable,
        "a discard-only address (100::/64, RFC 6666)",
    ),
    // Row "100:0:0:1::/64 Dummy IPv6 Prefix".
    v6(
        [0x100, 0, 0, 1, 0, 0, 0, 0],
        64,
        Internal,
        "a dummy address (100:0:0:1::/64, RFC 9780)",
    ),
    // Rows "2001:1::1/128 PCP Anycast", "2001:1::2/128 TURN Anycast", "2001:1::3/128 DNS-SD
    // SRP Anycast": globally reachable.
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 0],
        126,
        Global,
        "an anycast service address (2001:1::/126)",
    ),
    // Row "2001:3::/32 AMT", globally reachable.
    v6(
        [0x2001, 3, 0, 0, 0, 0, 0, 0],
        32,
        Global,
        "an AMT address (2001:3::/32, RFC 7450)",
    ),
    // Row "2001:4:112::/48 AS112-v6", globally reachable.
    v6(
        [0x2001, 4, 0x112, 0, 0, 0, 0, 0],
        48,
        Global,
        "an AS112 address (RFC 7535)",
    ),
    // Row "2001:20::/28 ORCHIDv2", globally reachable.
    v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        Global,
        "an ORCHIDv2 address (RFC 7343)",
    ),
    // Row "2001:30::/28 Drone Remote ID Protocol Entity Tags", globally reachable.
    v6(
        [0x2001, 0x30, 0, 0, 0, 0, 0, 0],
        28,
        Global,
        "a DET address (RFC 9374)",
    ),
    // Row "2001:2::/48 Benchmarking".
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        Internal,
        "a benchmarking address (2001:2::/48, RFC 5180)",
    ),
    // Row "2001:10::/28 Deprecated (previously ORCHID)".
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        Internal,
        "a deprecated ORCHID address (2001:10::/28, RFC 4843)",
    ),
    // Row "2001:db8::/32 Documentation".
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        Internal,
        "a documentation address (2001:db8::/32, RFC 3849)",
    ),
    // Row "2001::/23 IETF Protocol Assignments".
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        Internal,
        "an IETF protocol address (2001::/23, RFC 2928)",
    ),
    // Row "3fff::/20 Documentation".
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        Internal,
        "a documentation address (3fff::/20, RFC 9637)",
    ),
    // Row "5f00::/16 Segment Routing (SRv6) SIDs".
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        Internal,
        "an SRv6 SID (5f00::/16, RFC 9602)",
    ),
    // Row "fc00::/7 Unique-Local" (holds the metadata address, checked before this table).
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        Internal,
        "a unique local address (fc00::/7, RFC 4193)",
    ),
    // Row "fe80::/10 Link-Local Unicast".
    v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        Sensitive,
        "a link-local address (fe80::/10, RFC 4291)",
    ),
    // Not a registry row: deprecated site-local (RFC 3879), still routed inside some sites.
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        Internal,
        "a site-local address (fec0::/10, RFC 3879)",
    ),
    // IANA IPv6 Multicast Address Space registry.
    v6(
        [0xff00, 0, 0, 0, 0, 0, 0, 0],
        8,
        Unusable,
        "a multicast address (ff00::/8, RFC 4291)",
    ),
];

/// What is left outside 2000::/3 (IANA IPv6 Address Space registry: everything else is
/// reserved by the IETF or unassigned).
const V6_NOT_GLOBAL_UNICAST: &str = "outside the global unicast space (2000::/3, RFC 4291)";

const GLOBAL: &str = "a globally reachable address";

/// A NAT64 prefix (RFC 6052): IPv6 addresses in it carry an IPv4 address at a position fixed
/// by the prefix length (32, 40, 48, 56, 64 or 96).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat64Prefix {
    net: Ipv6Addr,
    len: u8,
}

/// The well-known NAT64 prefix (RFC 6052 §2.1).
pub const NAT64_WELL_KNOWN: Nat64Prefix = Nat64Prefix {
    net: Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
    len: 96,
};

/// A NAT64 prefix could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a NAT64 prefix: expected an IPv6 prefix of length 32, 40, 48, 56, 64 or 96 (RFC 6052), e.g. 64:ff9b::/96")]
pub struct Nat64PrefixError(pub String);

impl FromStr for Nat64Prefix {
    type Err = Nat64PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || Nat64PrefixError(s.to_owned());
        let (net, len) = s.trim().split_once('/').ok_or_else(err)?;
        let net: Ipv6Addr = net.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        if ![32, 40, 48, 56, 64, 96].contains(&len) {
            return Err(err());
        }
        let prefix = Nat64Prefix { net, len };
        // Host bits must be zero: the prefix as written is the prefix used.
        if prefix.net.octets() != masked(net, u32::from(len)).octets() {
            return Err(err());
        }
        Ok(prefix)
    }
}

impl fmt::Display for Nat64Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl Nat64Prefix {
    /// The IPv4 address `v6` carries when it lies in this prefix (RFC 6052 §2.2: the IPv4
    /// bits skip bits 64..72, the "u" octet).
    pub fn extract(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        if !in_v6(v6, self.net, u32::from(self.len)) {
            return None;
        }
        let o = v6.octets();
        let at = |i: [usize; 4]| {
            let [a, b, c, d] = i.map(|i| o.get(i).copied().unwrap_or(0));
            Ipv4Addr::new(a, b, c, d)
        };
        Some(match self.len {
            32 => at([4, 5, 6, 7]),
            40 => at([5, 6, 7, 9]),
            48 => at([6, 7, 9, 10]),
            56 => at([7, 9, 10, 11]),
            64 => at([9, 10, 11, 12]),
            _ => at([12, 13, 14, 15]),
        })
    }
}

/// Classifies `ip` (an IPv4-mapped IPv6 address as its IPv4 address). `nat64` are the
/// deployment's own NAT64 prefixes, besides the well-known one.
pub fn classify(ip: IpAddr, nat64: &[Nat64Prefix]) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6, nat64),
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddrClass {
    let (reach, what) = V4_TABLE
        .iter()
        .find(|row| in_v4(v4, row.net, row.len))
        .map_or((Global, GLOBAL), |row| (row.reach, row.what));
    AddrClass {
        reach,
        what,
        embedded: None,
    }
}

fn classify_v6(v6: Ipv6Addr, nat64: &[Nat64Prefix]) -> AddrClass {
    if METADATA_ADDRS.contains(&IpAddr::V6(v6)) {
        return AddrClass {
            reach: Sensitive,
            what: METADATA,
            embedded: None,
        };
    }
    for (v4, form, whole_form) in embedded_v4(v6, nat64) {
        let inner = classify_v4(v4);
        if inner.reach != Global {
            return AddrClass {
                embedded: Some((v4, form)),
                ..inner
            };
        }
        if let Some(class) = whole_form {
            return class;
        }
    }
    let row = V6_TABLE.iter().find(|row| in_v6(v6, row.net, row.len));
    let (reach, what) = match row {
        Some(row) => (row.reach, row.what),
        None if v6.segments().first().is_some_and(|s| s & 0xe000 != 0x2000) => {
            (Internal, V6_NOT_GLOBAL_UNICAST)
        }
        None => (Global, GLOBAL),
    };
    AddrClass {
        reach,
        what,
        embedded: None,
    }
}

/// The IPv4 addresses `v6` embeds, each with the embedding's name and, when the embedding
/// decides the whole address's class if the IPv4 address is global, that class.
fn embedded_v4(
    v6: Ipv6Addr,
    nat64: &[Nat64Prefix],
) -> Vec<(Ipv4Addr, &'static str, Option<AddrClass>)> {
    let s = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let global = |what| {
        Some(AddrClass {
            reach: Global,
            what,
            embedded: None,
        })
    };
    let internal = |what| {
        Some(AddrClass {
            reach: Internal,
            what,
            embedded: None,
        })
    };
    let mut found = Vec::new();
    // Row "::ffff:0:0/96 IPv4-mapped Address".
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] {
        found.push((low, "IPv4-mapped, ::ffff:0:0/96", global(GLOBAL)));
    }
    // IPv4-translated addresses (SIIT, RFC 2765): ::ffff:0:0:0/96.
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        found.push((
            low,
            "IPv4-translated, ::ffff:0:0:0/96",
            internal("an IPv4-translated address (::ffff:0:0:0/96, RFC 2765)"),
        ));
    }
    // IPv4-compatible addresses (::/96, deprecated by RFC 4291 §2.5.5.1); not :: or ::1.
    if s[..6] == [0; 6] && u32::from(low) > 1 {
        found.push((
            low,
            "IPv4-compatible, ::/96",
            internal("an IPv4-compatible address (::/96, deprecated by RFC 4291)"),
        ));
    }
    // Row "64:ff9b::/96 IPv4-IPv6 Translat." (globally reachable when the IPv4 address is),
    // and the deployment's own NAT64 prefixes: they translate to the IPv4 address.
    for prefix in std::iter::once(&NAT64_WELL_KNOWN).chain(nat64) {
        if let Some(v4) = prefix.extract(v6) {
            found.push((v4, "NAT64", global(GLOBAL)));
        }
    }
    // Row "2002::/16 6to4": the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        found.push((
            Ipv4Addr::new(o[2], o[3], o[4], o[5]),
            "6to4, 2002::/16",
            global(GLOBAL),
        ));
    }
    // Row "2001::/32 TEREDO": the server's IPv4 address in bits 32..64, the client's in the
    // low 32 bits, inverted (RFC 4380 §4).
    if s[0] == 0x2001 && s[1] == 0 {
        found.push((
            Ipv4Addr::new(o[4], o[5], o[6], o[7]),
            "Teredo server, 2001::/32",
            None,
        ));
        found.push((
            !low,
            "Teredo client, 2001::/32",
            global("a Teredo address (2001::/32, RFC 4380)"),
        ));
    }
    // ISATAP interface identifiers (RFC 5214 §6.1): ::0:5efe:a.b.c.d or ::200:5efe:a.b.c.d
    // (with the universal/local and group bits in any state), under any prefix.
    if s[4] & 0xfcff == 0 && s[5] == 0x5efe {
        found.push((low, "ISATAP interface identifier", None));
    }
    found
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32u32.saturating_sub(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn masked(ip: Ipv6Addr, len: u32) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128u32.saturating_sub(len))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    masked(ip, len) == masked(net, len)
}
