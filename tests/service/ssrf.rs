//! Issue #9's SSRF findings through the real binary: IPv6 spellings that embed 127.0.0.1,
//! every port of an allowed host, an allowed name resolving to a link-local or metadata
//! address, `localhost` under an allowed 127.0.0.1, a refused redirect, and `Location` and
//! version links taken from a forged `Host`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use super::harness::{import_input, raw_disk, FileServer, Serve, Server, ADMIN};
use crate::common::scratch;

const PREFIX: &str = "URI for legacy import task does not pass filtering: ";

/// Asserts `POST /v2/tasks` from `url` answers 400 with Glance's prefix, the URL and `why`.
fn assert_refused(server: &Server, url: &str, why: &str) {
    let resp = server.post_task(
        &json!({"type": "import", "input": import_input(url, "raw", "ssrf")}),
        ADMIN,
    );
    assert_eq!(resp.status, 400, "{url}: {}", resp.text());
    let msg = resp.error_message();
    let want = format!("{PREFIX}{url}: ");
    assert!(msg.starts_with(&want), "{url}: {msg:?}");
    assert!(msg.contains(why), "{url}: {msg:?} does not say {why:?}");
    assert_eq!(server.get("/v2/tasks").json()["tasks"], json!([]));
}

/// Imports `url` and returns the final task.
fn import(server: &Server, url: &str) -> Value {
    let task = server.create_task(import_input(url, "raw", "ssrf"));
    server.wait_task(task["id"].as_str().expect("id"))
}

#[test]
fn test_ssrf_ipv6_forms_embedding_loopback_are_refused() {
    let server = Server::start(&[]);
    for (url, why) in [
        (
            "http://[::ffff:0:7f00:1]/x.raw",
            "::ffff:0:7f00:1 embeds 127.0.0.1 (IPv4-translated, ::ffff:0:0:0/96), a loopback address",
        ),
        (
            "http://[64:ff9b:1::7f00:1]/x.raw",
            "64:ff9b:1::7f00:1 is a local-use NAT64 address (64:ff9b:1::/48, RFC 8215)",
        ),
        ("http://[64:ff9b::7f00:1]/x.raw", "embeds 127.0.0.1 (NAT64"),
        ("http://[2002:7f00:1::]/x.raw", "embeds 127.0.0.1 (6to4"),
        ("http://[::ffff:127.0.0.1]/x.raw", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/x.raw", "169.254.169.254 is a cloud metadata address"),
    ] {
        assert_refused(&server, url, why);
    }
}

#[test]
fn test_ssrf_allowed_host_other_port_is_refused() {
    let dir = scratch();
    raw_disk(dir.path(), "disk.raw", 1 << 20, 1);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let other = files.port.wrapping_add(1).max(1);
    let url = format!("http://127.0.0.1:{other}/disk.raw");
    assert_refused(
        &server,
        &url,
        &format!(
            "port {other} is not allowed (allowed for 127.0.0.1: {})",
            files.port
        ),
    );
    assert_eq!(files.requests(), 0);
    let done = import(&server, &files.url("disk.raw"));
    assert_eq!(done["status"], "success", "{done}");
}

#[test]
fn test_ssrf_allowed_name_resolving_to_link_local_is_refused() {
    // The name is resolved from the server's --import-resolve list (like curl --resolve),
    // so the test controls its address without touching /etc/hosts or DNS.
    for (addr, what) in [
        (
            "169.254.169.254",
            "169.254.169.254, a cloud metadata address",
        ),
        (
            "169.254.1.1",
            "169.254.1.1, a link-local address (169.254.0.0/16, RFC 3927)",
        ),
        ("fd00:ec2::254", "fd00:ec2::254, a cloud metadata address"),
    ] {
        let pin = format!("images.lab={addr}");
        let server = Server::start(&[
            "--allow-import-host",
            "images.lab",
            "--import-resolve",
            &pin,
        ]);
        assert_refused(
            &server,
            "http://images.lab/disk.raw",
            &format!(
                "images.lab resolves to {what}; an allowed name does not cover link-local or \
                 metadata addresses (allow the address itself)"
            ),
        );
    }
}

#[test]
fn test_ssrf_allowed_name_resolving_to_loopback_imports() {
    // The counterpart: an allowed name may lead to an internal (not link-local) address.
    let dir = scratch();
    raw_disk(dir.path(), "disk.raw", 1 << 20, 1);
    let files = FileServer::start(dir.path());
    let entry = format!("images.lab:{}", files.port);
    let server = Server::start(&[
        "--allow-import-host",
        &entry,
        "--import-resolve",
        "images.lab=127.0.0.1",
    ]);
    let done = import(
        &server,
        &format!("http://images.lab:{}/disk.raw", files.port),
    );
    assert_eq!(done["status"], "success", "{done}");
}

#[test]
fn test_ssrf_allowed_address_covers_localhost() {
    let dir = scratch();
    raw_disk(dir.path(), "disk.raw", 1 << 20, 1);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let done = import(
        &server,
        &format!("http://localhost:{}/disk.raw", files.port),
    );
    assert_eq!(done["status"], "success", "{done}");
}

#[test]
fn test_ssrf_refused_redirect_fails_task_naming_target_and_reason() {
    let dir = scratch();
    let files = FileServer::start(dir.path());
    files.set(
        "moved.raw",
        Serve::RedirectTo("http://169.254.169.254/latest/meta-data/"),
    );
    let server = Server::start(&[]);
    let done = import(&server, &files.url("moved.raw"));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "source_error", "{done}");
    // The reason code first, then the refusal, then what to do.
    let message = done["message"].as_str().expect("message");
    let refusal = format!(
        "source_error: {PREFIX}http://169.254.169.254/latest/meta-data/: 169.254.169.254 is not \
         on the import allow-list; "
    );
    assert!(message.starts_with(&refusal), "{done}");
    assert!(message.contains("the import rules allow"), "{done}");
}

/// Sends `request` (with a forged `Host`) and returns the raw response.
fn raw(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn test_ssrf_location_and_version_links_ignore_forged_host() {
    let dir = scratch();
    raw_disk(dir.path(), "disk.raw", 1 << 20, 1);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let body = serde_json::to_string(&json!({
        "type": "import",
        "input": import_input(&files.url("disk.raw"), "raw", "host")
    }))
    .expect("json");
    let created = raw(
        &server.addr,
        &format!(
            "POST /v2/tasks HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let location = created
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("location header");
    assert!(
        location.starts_with(&format!("http://{}/v2/tasks/", server.addr)),
        "{location}"
    );
    let versions = raw(
        &server.addr,
        "GET /versions HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        versions.contains(&format!("\"href\":\"http://{}/v2/\"", server.addr)),
        "{versions}"
    );
    assert!(!versions.contains("evil.example"), "{versions}");
}
