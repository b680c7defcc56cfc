//! An upload stopped by Sluice rather than by its client (issue #10): past
//! `import_timeout_secs` it is 408 naming the deadline; during a shutdown it is 503 with
//! `Retry-After`. Either way the image is `queued` again and nothing is stored.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{assert_no_files, Server, ADMIN};

/// How long the trickling client keeps sending before giving up on an answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(20);

fn queued_raw(server: &Server) -> String {
    let body = json!({"name": "slow", "disk_format": "raw", "container_format": "bare"});
    let resp = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

/// Starts `PUT /v2/images/{id}/file` announcing 64 MiB and sends 4 KiB every 50 ms (fast
/// enough for the minimum rate, far from done) until the server answers; returns the answer.
fn trickle(addr: &str, id: &str, mut during: impl FnMut(Duration)) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        64u64 << 20
    );
    s.write_all(req.as_bytes()).expect("head");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let start = Instant::now();
    let block = [0u8; 4096];
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while start.elapsed() < CLIENT_DEADLINE {
        during(start.elapsed());
        let _ = s.write_all(&block);
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn test_upload_past_the_import_deadline_is_408_and_leaves_the_image_queued() {
    let server = Server::start(&["--import-timeout-secs", "1"]);
    let id = queued_raw(&server);
    let answer = trickle(&server.addr, &id, |_| {});
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("import_timeout_secs"), "{answer}");
    let img = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(img["status"], "queued", "{img}");
    assert_no_files(&server);
}

#[test]
fn test_upload_during_shutdown_is_503_with_retry_after() {
    let server = Server::start(&[]);
    let id = queued_raw(&server);
    let pid = server.pid().expect("pid").to_string();
    let mut signalled = false;
    let answer = trickle(&server.addr, &id, |elapsed| {
        if !signalled && elapsed > Duration::from_millis(500) {
            signalled = true;
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    });
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    assert!(answer.contains("shutting down"), "{answer}");
    thread::sleep(Duration::from_millis(200));
}
