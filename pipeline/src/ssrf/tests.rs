use std::net::Ipv4Addr;

use super::*;

fn entries(list: &[&str]) -> Vec<HostEntry> {
    list.iter().map(|e| e.parse().unwrap()).collect()
}

fn allowing(list: &[&str]) -> ImportPolicy {
    ImportPolicy {
        allowed_hosts: entries(list),
        ..ImportPolicy::default()
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every spelling of an internal address found so far, with the words its refusal must
/// contain. Issue #9 found the first two reaching 127.0.0.1.
const REFUSED: &[(&str, &str)] = &[
    (
        "http://[::ffff:0:7f00:1]/",
        "embeds 127.0.0.1 (IPv4-translated",
    ),
    ("http://[64:ff9b:1::7f00:1]/", "local-use NAT64"),
    ("http://[::ffff:0:127.0.0.1]/", "embeds 127.0.0.1"),
    ("http://[::ffff:0:a9fe:a9fe]/", "cloud metadata"),
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://127.255.255.254/", "loopback"),
    ("http://[::1]/", "::1 is the loopback address"),
    (
        "http://[::ffff:127.0.0.1]/",
        "127.0.0.1 is a loopback address",
    ),
    ("http://[::ffff:7f00:1]/", "127.0.0.1 is a loopback address"),
    ("http://[::127.0.0.1]/", "embeds 127.0.0.1 (IPv4-compatible"),
    ("http://[::7f00:1]/", "embeds 127.0.0.1 (IPv4-compatible"),
    ("http://[::5db8:d822]/", "IPv4-compatible address"),
    ("http://[64:ff9b::7f00:1]/", "embeds 127.0.0.1 (NAT64"),
    ("http://[64:ff9b::127.0.0.1]/", "embeds 127.0.0.1 (NAT64"),
    (
        "http://[64:ff9b::a9fe:a9fe]/",
        "embeds 169.254.169.254 (NAT64",
    ),
    ("http://[64:ff9b::a00:1]/", "embeds 10.0.0.1 (NAT64"),
    ("http://[64:ff9b:1:7f00:1::]/", "local-use NAT64"),
    ("http://[2002:7f00:1::]/", "embeds 127.0.0.1 (6to4"),
    (
        "http://[2002:a9fe:a9fe::1]/",
        "embeds 169.254.169.254 (6to4",
    ),
    ("http://[2002:c0a8:101::1]/", "embeds 192.168.1.1 (6to4"),
    // Teredo: client 127.0.0.1 is the low 32 bits inverted (0x80fffffe).
    (
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        "embeds 127.0.0.1 (Teredo client",
    ),
    (
        "http://[2001:0:a9fe:a9fe::1]/",
        "embeds 169.254.169.254 (Teredo server",
    ),
    (
        "http://[2607:f8b0::5efe:7f00:1]/",
        "embeds 127.0.0.1 (ISATAP",
    ),
    (
        "http://[2607:f8b0::200:5efe:a9fe:a9fe]/",
        "embeds 169.254.169.254 (ISATAP",
    ),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0.1.2.3/", "'this network'"),
    ("http://10.0.0.1/", "private address (10.0.0.0/8"),
    ("http://100.64.0.1/", "shared address"),
    ("http://100.127.255.254/", "shared address"),
    (
        "http://169.254.169.254/latest/meta-data/",
        "169.254.169.254 is a cloud metadata address",
    ),
    ("http://169.254.0.1/", "link-local"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.254/", "private"),
    ("http://192.0.0.1/", "DS-Lite"),
    ("http://192.0.0.8/", "dummy"),
    ("http://192.0.0.170/", "NAT64 discovery"),
    ("http://192.0.0.200/", "IETF protocol"),
    ("http://192.0.2.1/", "documentation"),
    ("http://192.88.99.1/", "6to4 relay"),
    ("http://192.168.0.1/", "private"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://198.19.255.254/", "benchmarking"),
    ("http://198.51.100.1/", "documentation"),
    ("http://203.0.113.1/", "documentation"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://[::]/", "unspecified"),
    ("http://[100::1]/", "discard-only"),
    ("http://[100:0:0:1::1]/", "dummy"),
    ("http://[2001:2::1]/", "benchmarking"),
    ("http://[2001:10::1]/", "ORCHID"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[2001:100::1]/", "IETF protocol"),
    ("http://[3fff::1]/", "documentation"),
    ("http://[5f00::1]/", "SRv6"),
    ("http://[fc00::1]/", "unique local"),
    ("http://[fd12:3456::1]/", "unique local"),
    (
        "http://[fd00:ec2::254]/",
        "fd00:ec2::254 is a cloud metadata address",
    ),
    ("http://[fe80::1]/", "link-local"),
    ("http://[febf::1]/", "link-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[ff05::1:3]/", "multicast"),
    ("http://[4000::1]/", "global unicast space"),
    ("http://[1000::1]/", "global unicast space"),
];

/// Globally reachable, including embeddings of global IPv4 addresses.
const ALLOWED: &[&str] = &[
    "http://93.184.216.34/a.img",
    "https://8.8.8.8/a.img",
    "http://192.0.0.9/",
    "http://192.0.0.10/",
    "http://192.31.196.1/",
    "http://192.52.193.1/",
    "http://192.175.48.1/",
    "http://100.128.0.1/",
    "http://172.32.0.1/",
    "http://[2606:2800:220:1::1]/a.img",
    "http://[2001:4860:4860::8888]/",
    "http://[64:ff9b::5db8:d822]/",
    "http://[::ffff:93.184.216.34]/",
    "http://[2002:5db8:d822::1]/",
    // Teredo: server 65.54.227.120, client ~0xa2472bdd = 93.184.212.34.
    "http://[2001:0:4136:e378:8000:63bf:a247:2bdd]/",
    "http://[2001:1::1]/",
    "http://[2001:3::1]/",
    "http://[2001:4:112::1]/",
    "http://[2001:20::1]/",
    "http://[2607:f8b0::5efe:5db8:d822]/",
    "https://cloud-images.example.org/a.qcow2",
];

#[test]
fn test_policy_every_internal_spelling_is_refused_with_its_reason() {
    let p = ImportPolicy::default();
    let mut wrong = Vec::new();
    for (url, why) in REFUSED {
        match p.parse_url(url) {
            Ok(_) => wrong.push(format!("{url}: allowed")),
            Err(e) if !e.to_string().contains(why) => {
                wrong.push(format!("{url}: '{e}' does not say '{why}'"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn test_policy_global_addresses_and_their_embeddings_are_allowed() {
    let p = ImportPolicy::default();
    for url in ALLOWED {
        assert!(p.parse_url(url).is_ok(), "{url}: {:?}", p.parse_url(url));
    }
}

#[test]
fn test_policy_every_internal_spelling_is_refused_when_resolved() {
    let p = ImportPolicy::default();
    for (url, _) in REFUSED {
        let url = Url::parse(url).unwrap();
        let ip: IpAddr = match url.host().unwrap() {
            Host::Ipv4(v4) => v4.into(),
            Host::Ipv6(v6) => v6.into(),
            Host::Domain(d) => panic!("{d}"),
        };
        let refused = p.check_resolved("innocent.example", SocketAddr::new(ip, 80));
        assert!(
            matches!(refused, Err(PolicyError::ResolvesToRefused { .. })),
            "{url}: {refused:?}"
        );
    }
}

#[test]
fn test_policy_configured_nat64_prefix_is_judged_by_its_ipv4() {
    let p = ImportPolicy {
        nat64_prefixes: vec![
            "2600:db8:64::/96".parse().unwrap(),
            "2600:db9::/32".parse().unwrap(),
        ],
        ..ImportPolicy::default()
    };
    let err = p.parse_url("http://[2600:db8:64::7f00:1]/").unwrap_err();
    assert!(err.to_string().contains("embeds 127.0.0.1 (NAT64"), "{err}");
    // /32: the IPv4 address in bits 32..64.
    let err = p.parse_url("http://[2600:db9:a9fe:a9fe::]/").unwrap_err();
    assert!(err.to_string().contains("169.254.169.254"), "{err}");
    assert!(p.parse_url("http://[2600:db8:64::5db8:d822]/").is_ok());
    // Without the prefix configured, the same address is an ordinary global one.
    assert!(ImportPolicy::default()
        .parse_url("http://[2600:db8:64::7f00:1]/")
        .is_ok());
}

#[test]
fn test_nat64_prefix_extracts_every_rfc6052_length() {
    // RFC 6052 §2.4's table: 192.0.2.33 under 2001:db8::/32…/96.
    for (prefix, addr) in [
        ("2001:db8::/32", "2001:db8:c000:221::"),
        ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
        ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
        ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
        ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
        ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
    ] {
        let prefix: Nat64Prefix = prefix.parse().unwrap();
        assert_eq!(
            prefix.extract(addr.parse().unwrap()),
            Some(Ipv4Addr::new(192, 0, 2, 33)),
            "{prefix}"
        );
    }
    for bad in ["2001:db8::/33", "2001:db8::1/96", "10.0.0.0/8", "64:ff9b::"] {
        assert!(bad.parse::<Nat64Prefix>().is_err(), "{bad}");
    }
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
    let any = ImportPolicy {
        allowed_schemes: Vec::new(),
        ..ImportPolicy::default()
    };
    assert!(matches!(
        any.parse_url("file:///etc/passwd"),
        Err(PolicyError::SchemeRefused(_))
    ));
}

#[test]
fn test_policy_non_canonical_ipv4_spellings_are_refused() {
    // Allowing 127.0.0.1 must not let its other spellings through either.
    for p in [ImportPolicy::default(), allowing(&["127.0.0.1:8080"])] {
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
    assert!(p
        .check_url(&Url::parse("http://example.0x1g/").unwrap())
        .is_ok());
    assert!(matches!(
        p.parse_url("http://1.2.3.4.5/"),
        Err(PolicyError::InvalidUrl { .. } | PolicyError::NonCanonicalAddress(_))
    ));
}

#[test]
fn test_policy_ports_default_to_80_and_443() {
    let p = ImportPolicy::default();
    assert!(p.parse_url("http://example.org:80/").is_ok());
    assert!(p.parse_url("https://example.org/").is_ok());
    let err = p.parse_url("http://example.org:8000/").unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 8000 is not allowed (allowed ports: 80, 443)"
    );
    assert!(matches!(
        p.check_resolved("example.org", sock("93.184.216.34:8443")),
        Err(PolicyError::PortRefused { port: 8443, .. })
    ));
    let open = ImportPolicy {
        allowed_ports: Vec::new(),
        denied_ports: vec![25],
        ..ImportPolicy::default()
    };
    assert!(open.parse_url("http://example.org:8080/").is_ok());
    assert_eq!(
        open.parse_url("http://example.org:25/")
            .unwrap_err()
            .to_string(),
        "port 25 is not allowed (denied ports: 25)"
    );
}

#[test]
fn test_policy_host_entry_without_port_allows_only_allowed_ports() {
    // Issue #9: allowing a host used to allow every port on it.
    let p = allowing(&["127.0.0.1"]);
    assert!(p.parse_url("http://127.0.0.1/a.img").is_ok());
    assert!(p.parse_url("https://127.0.0.1/a.img").is_ok());
    let err = p.parse_url("http://127.0.0.1:6379/").unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 6379 is not allowed (allowed ports: 80, 443)"
    );
    assert!(matches!(
        p.check_resolved("127.0.0.1", sock("127.0.0.1:22")),
        Err(PolicyError::PortRefused { port: 22, .. })
    ));
}

#[test]
fn test_policy_host_port_entries_allow_that_port_on_that_host_only() {
    let p = allowing(&["127.0.0.1:8000", "[::1]:8080", "Example.ORG.:8443"]);
    assert!(p.parse_url("http://127.0.0.1:8000/a").is_ok());
    assert!(p.parse_url("http://[::1]:8080/a").is_ok());
    assert!(p.parse_url("https://example.org:8443/a").is_ok());
    assert!(p
        .check_resolved("example.org", sock("93.184.216.34:8443"))
        .is_ok());
    for (url, port) in [
        ("http://127.0.0.1/a", 80),
        ("http://127.0.0.1:8080/a", 8080),
        ("http://[::1]:8000/a", 8000),
        ("https://example.org/a", 443),
    ] {
        assert!(
            matches!(p.parse_url(url), Err(PolicyError::PortRefused { port: p, .. }) if p == port),
            "{url}"
        );
    }
    assert_eq!(
        p.parse_url("http://127.0.0.1:9/").unwrap_err().to_string(),
        "port 9 is not allowed (allowed for 127.0.0.1: 8000)"
    );
    // Other hosts stay refused, on any port.
    assert!(matches!(
        p.parse_url("http://127.0.0.2:8000/"),
        Err(PolicyError::HostNotAllowed(_))
    ));
    assert!(matches!(
        p.check_resolved("other.example", sock("93.184.216.34:8000")),
        Err(PolicyError::ResolvesToUnlisted { .. })
    ));
}

#[test]
fn test_policy_allowed_name_matches_that_name_only() {
    let p = allowing(&["images.lab"]);
    assert!(p.parse_url("http://IMAGES.lab./a.img").is_ok());
    for url in [
        "http://x.images.lab/",
        "http://images.lab.evil.example/",
        "http://imagesXlab/",
        "http://127.0.0.1/",
    ] {
        assert!(
            matches!(p.parse_url(url), Err(PolicyError::HostNotAllowed(_))),
            "{url}"
        );
    }
    // Internal addresses are fine for an allowed name (a lab mirror on 10/8)…
    assert!(p.check_resolved("images.lab", sock("10.0.0.5:80")).is_ok());
    assert!(p.check_resolved("images.lab", sock("127.0.0.1:80")).is_ok());
    // …an unlisted name resolving there is not.
    assert!(matches!(
        p.check_resolved("other.example", sock("10.0.0.5:80")),
        Err(PolicyError::ResolvesToUnlisted { .. })
    ));
}

#[test]
fn test_policy_allowed_name_resolving_to_link_local_or_metadata_is_refused() {
    // Issue #9: an allowed name resolving to 169.254.169.254 was connected to.
    let p = allowing(&["images.lab"]);
    for addr in [
        "169.254.169.254:80",
        "169.254.1.1:80",
        "[fe80::1]:80",
        "[fd00:ec2::254]:80",
        "[::ffff:169.254.169.254]:80",
        "[64:ff9b::a9fe:a9fe]:80",
        "[::ffff:0:a9fe:a9fe]:80",
        "[2002:a9fe:a9fe::]:80",
        "0.0.0.0:80",
        "[::]:80",
    ] {
        let refused = p.check_resolved("images.lab", sock(addr));
        assert!(
            matches!(
                refused,
                Err(PolicyError::ResolvesToRefused {
                    allowed_name: true,
                    ..
                })
            ),
            "{addr}: {refused:?}"
        );
    }
    let err = p
        .check_resolved("images.lab", sock("169.254.169.254:80"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "images.lab resolves to 169.254.169.254, a cloud metadata address; an allowed name does \
         not cover link-local or metadata addresses (allow the address itself)"
    );
}

#[test]
fn test_policy_link_local_allowed_by_address_is_reachable() {
    let p = allowing(&["169.254.169.254", "images.lab", "[fe80::1]:8080"]);
    assert!(p.parse_url("http://169.254.169.254/latest").is_ok());
    assert!(p
        .check_resolved("images.lab", sock("169.254.169.254:80"))
        .is_ok());
    assert!(p.parse_url("http://[fe80::1]:8080/").is_ok());
    // Only the listed address: the rest of the block stays refused.
    assert!(matches!(
        p.parse_url("http://169.254.169.253/"),
        Err(PolicyError::HostNotAllowed(_))
    ));
}

#[test]
fn test_policy_allowed_address_covers_names_resolving_to_it() {
    // Issue #9: `--allow-import-host 127.0.0.1` did not cover `localhost`.
    let p = allowing(&["127.0.0.1:8000"]);
    assert!(p.parse_url("http://localhost:8000/a.img").is_ok());
    let approved = p
        .approve("localhost", &[sock("[::1]:8000"), sock("127.0.0.1:8000")])
        .unwrap();
    assert_eq!(approved, vec![sock("127.0.0.1:8000")]);
    assert!(matches!(
        p.approve("localhost", &[sock("[::1]:8000")]),
        Err(PolicyError::ResolvesToUnlisted { .. })
    ));
    assert!(matches!(
        p.approve("localhost", &[sock("127.0.0.1:9000")]),
        Err(PolicyError::PortRefused { port: 9000, .. })
    ));
    assert!(matches!(
        p.approve("localhost", &[]),
        Err(PolicyError::NoAddress(_))
    ));
}

#[test]
fn test_policy_approve_skips_internal_addresses_of_a_public_name() {
    let p = ImportPolicy::default();
    let approved = p
        .approve(
            "mixed.example",
            &[sock("127.0.0.1:80"), sock("93.184.216.34:80")],
        )
        .unwrap();
    assert_eq!(approved, vec![sock("93.184.216.34:80")]);
    let err = p
        .approve("evil.example", &[sock("[::ffff:0:7f00:1]:80")])
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "evil.example resolves to ::ffff:0:7f00:1, which embeds 127.0.0.1 (IPv4-translated"
        ),
        "{err}"
    );
}

#[test]
fn test_policy_deny_list_refuses_names_and_literals() {
    let p = ImportPolicy {
        denied_hosts: entries(&["evil.example", "93.184.216.34", "good.example:443"]),
        ..ImportPolicy::default()
    };
    assert!(matches!(
        p.parse_url("https://EVIL.example./x"),
        Err(PolicyError::HostDenied(_))
    ));
    assert!(matches!(
        p.parse_url("https://93.184.216.34/x"),
        Err(PolicyError::HostDenied(_))
    ));
    assert!(matches!(
        p.check_resolved("x.example", sock("93.184.216.34:443")),
        Err(PolicyError::HostDenied(_))
    ));
    assert!(matches!(
        p.parse_url("https://good.example/x"),
        Err(PolicyError::HostDenied(_))
    ));
    assert!(p.parse_url("http://good.example/x").is_ok());
}

#[test]
fn test_policy_redirect_is_checked_like_a_url() {
    let p = allowing(&["127.0.0.1:8080"]);
    let base = Url::parse("http://127.0.0.1:8080/a").unwrap();
    assert_eq!(
        p.parse_redirect(&base, "/b").unwrap().as_str(),
        "http://127.0.0.1:8080/b"
    );
    assert!(matches!(
        p.parse_redirect(&base, "http://169.254.169.254/"),
        Err(PolicyError::HostNotAllowed(_))
    ));
    assert!(matches!(
        p.parse_redirect(&base, "http://127.0.0.1:8081/"),
        Err(PolicyError::PortRefused { port: 8081, .. })
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
fn test_host_entry_parses_names_addresses_and_ports() {
    for (text, shown) in [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::1]:8080", "[::1]:8080"),
        ("[::ffff:127.0.0.1]:80", "127.0.0.1:80"),
        ("Example.ORG.", "example.org"),
        ("example.org:8443", "example.org:8443"),
        ("fd00:ec2::254", "fd00:ec2::254"),
        (" images_1.lab ", "images_1.lab"),
    ] {
        let entry: HostEntry = text.parse().unwrap();
        assert_eq!(entry.to_string(), shown, "{text}");
    }
}

#[test]
fn test_host_entry_bad_spellings_are_refused_with_a_reason() {
    for (text, why) in [
        ("", "empty"),
        ("[::1", "missing ']'"),
        ("[::1]8080", "':PORT'"),
        ("[example.org]", "IPv6 address"),
        ("::1:8080x", "brackets"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:65536", "port"),
        ("example.org:http", "port"),
        ("2130706433", "non-canonical"),
        ("0x7f.1", "non-canonical"),
        ("127.1:80", "non-canonical"),
        ("http://example.org", "not a URL"),
        ("exa mple.org", "not a host name"),
        ("a..b", "not a host name"),
        ("0.0.0.0", "never be an import source"),
        ("224.0.0.1", "never be an import source"),
        ("[::]:80", "never be an import source"),
    ] {
        let err = text.parse::<HostEntry>().unwrap_err();
        assert!(err.reason.contains(why), "{text}: {err}");
        assert!(err.to_string().contains(&format!("'{text}'")), "{err}");
    }
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

#[tokio::test]
async fn test_policy_pinned_host_resolves_from_config_and_is_still_checked() {
    let p = ImportPolicy {
        allowed_hosts: entries(&["images.lab"]),
        pinned_hosts: vec!["Images.Lab=169.254.169.254".parse().unwrap()],
        ..ImportPolicy::default()
    };
    let addrs = p.resolve("IMAGES.lab.", 80).await.unwrap();
    assert_eq!(addrs, vec![sock("169.254.169.254:80")]);
    assert!(matches!(
        p.approve("images.lab", &addrs),
        Err(PolicyError::ResolvesToRefused {
            allowed_name: true,
            ..
        })
    ));
    for bad in [
        "images.lab",
        "images.lab=",
        "=10.0.0.1",
        "images.lab=example.org",
    ] {
        assert!(bad.parse::<PinnedHost>().is_err(), "{bad}");
    }
}
