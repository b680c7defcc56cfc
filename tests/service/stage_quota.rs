//! Glance's `image_stage_total` through the real server: staged bytes count against the
//! project's limit while they are staged (also across a `kill -9`), not only while they
//! arrive; a stage announcing too much is 413 up front, a chunked one is stopped as it
//! passes the limit; importing the stage frees its share; per-project overrides; direct
//! uploads do not count.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{member, raw_disk, Resp, Server};
use crate::common::{read, scratch};

/// Glance's `LimitExceeded` text that opens every 413 for a quota.
const GLANCE_413: &str = "The request returned a 413 Request Entity Too Large.";
/// How long an import may take.
const DEADLINE: Duration = Duration::from_secs(60);

fn create_raw(server: &Server, who: &[(&str, &str)]) -> String {
    let body = json!({"name": "s", "disk_format": "raw", "container_format": "bare"});
    let resp = server.req("POST", "/v2/images", who, Some(body.to_string().as_bytes()));
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

fn put(server: &Server, id: &str, what: &str, who: &[(&str, &str)], data: &[u8]) -> Resp {
    let mut headers = who.to_vec();
    headers.push(("Content-Type", "application/octet-stream"));
    server.req(
        "PUT",
        &format!("/v2/images/{id}/{what}"),
        &headers,
        Some(data),
    )
}

/// `PUT /v2/images/{id}/stage` with a chunked body (no announced length) as `project`'s
/// member; returns the status and the answer's text.
fn put_stage_chunked(server: &Server, id: &str, project: &str, data: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "PUT /v2/images/{id}/stage HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
         Accept: application/json\r\nX-Project-Id: {project}\r\nX-Roles: member\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("head");
    for chunk in data.chunks(64 << 10) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if s.write_all(&framed).is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    (status, text)
}

fn image(server: &Server, id: &str) -> Value {
    server.get(&format!("/v2/images/{id}")).json()
}

/// Asserts a 413 for `image_stage_total` with oslo.limit's numbers (MiB) in Glance's text.
fn assert_stage_413(text: &str, status: u16, usage: u64, delta: u64) {
    assert_eq!(status, 413, "{text}");
    assert!(text.contains(GLANCE_413), "{text}");
    let want = format!(
        "Resource image_stage_total is over limit of 4 due to current usage {usage} and \
         delta {delta}"
    );
    assert!(text.contains(&want), "{text:?} lacks {want:?}");
}

/// The ids staged under the data directory.
fn staged_ids(server: &Server) -> Vec<String> {
    let mut ids: Vec<String> = server
        .files_under("staging/images")
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn test_stage_quota_staged_bytes_count_until_imported_and_over_is_413() {
    let dir = scratch();
    let d = dir.path();
    let config = d.join("sluice.toml");
    std::fs::write(
        &config,
        "[quotas]\nimage_stage_total = 4\n[quotas.projects.\"free\"]\nimage_stage_total = -1\n",
    )
    .expect("config");
    let mut server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let p1 = member("p1");
    let three = read(&raw_disk(d, "three.raw", 3 << 20, 3));
    let two = read(&raw_disk(d, "two.raw", 2 << 20, 2));

    let a = create_raw(&server, &p1);
    assert_eq!(put(&server, &a, "stage", &p1, &three).status, 204);
    assert_eq!(image(&server, &a)["status"], "uploading");

    // A second stage announcing 2 MiB: 3 + 2 > 4, refused before a byte is read.
    let b = create_raw(&server, &p1);
    let resp = put(&server, &b, "stage", &p1, &two);
    assert_stage_413(&resp.text(), resp.status, 3, 2);
    assert_eq!(image(&server, &b)["status"], "queued");
    // Chunked, it is stopped as its bytes pass the limit.
    let (status, text) = put_stage_chunked(&server, &b, "p1", &two);
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("Resource image_stage_total is over limit of 4"),
        "{text}"
    );
    assert_eq!(image(&server, &b)["status"], "queued");
    assert_eq!(staged_ids(&server), vec![a.clone()]);
    // Direct uploads do not count against it; another project's stages neither.
    let c = create_raw(&server, &p1);
    assert_eq!(put(&server, &c, "file", &p1, &two).status, 204);
    let free = member("free");
    let f = create_raw(&server, &free);
    let six = read(&raw_disk(d, "six.raw", 6 << 20, 2));
    assert_eq!(put(&server, &f, "stage", &free, &six).status, 204);

    // The complete stage still counts after a crash.
    server.kill9();
    server.restart();
    assert_eq!(image(&server, &a)["status"], "uploading");
    let resp = put(&server, &b, "stage", &p1, &two);
    assert_stage_413(&resp.text(), resp.status, 3, 2);

    // Imported, it no longer does.
    let body = json!({"method": {"name": "glance-direct"}});
    let resp = server.req(
        "POST",
        &format!("/v2/images/{a}/import"),
        &p1,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let deadline = Instant::now() + DEADLINE;
    while image(&server, &a)["status"] != "active" {
        assert!(Instant::now() < deadline, "{}", image(&server, &a));
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(put(&server, &b, "stage", &p1, &two).status, 204);
    assert_eq!(image(&server, &b)["status"], "uploading");
}
