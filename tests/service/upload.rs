//! `PUT /v2/images/{id}/file` through the real binary: uploads stored as received and
//! activated with their digests, every rejection class of the inspector refused with 415 and
//! the reason code (image back to `queued`, no file left), the size cap before any byte is
//! read, truncated bodies, disconnects, 409s, one upload at a time, quotas, and a hostile
//! header refused within the first 16 KiB of a 1 GiB body while the client still sends.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{assert_no_files, digest, member, raw_disk, Resp, Server, ADMIN};
use super::imports::image_with_data;
use crate::common::{qcow2_backed_by_passwd, qcow2_luks, qemu_info, read, run, scratch};

/// How long a server may take to return an image to `queued` after a client went away.
const REQUEUE_DEADLINE: Duration = Duration::from_secs(20);

/// `POST /v2/images` as `who`; returns the new image's id.
fn create_image(server: &Server, who: &[(&str, &str)], disk: &str, container: &str) -> String {
    let body = json!({"name": "up", "disk_format": disk, "container_format": container});
    let resp = server.req("POST", "/v2/images", who, Some(body.to_string().as_bytes()));
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

/// `PUT /v2/images/{id}/file` with `data` as `who`.
fn put_file(server: &Server, id: &str, who: &[(&str, &str)], data: &[u8]) -> Resp {
    let mut headers = who.to_vec();
    headers.push(("Content-Type", "application/octet-stream"));
    server.req(
        "PUT",
        &format!("/v2/images/{id}/file"),
        &headers,
        Some(data),
    )
}

fn image(server: &Server, id: &str) -> Value {
    server.get(&format!("/v2/images/{id}")).json()
}

/// Waits until image `id` is `queued` (a detached upload finishing its cleanup).
fn wait_queued(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + REQUEUE_DEADLINE;
    loop {
        let img = image(server, id);
        if img["status"] == "queued" || Instant::now() > deadline {
            return img;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Uploads `path` to a fresh image declared `fmt` and checks what a client sees.
pub(super) fn assert_upload_ok(server: &Server, path: &Path, fmt: &str) {
    let id = create_image(server, ADMIN, fmt, "bare");
    let data = read(path);
    let resp = put_file(server, &id, ADMIN, &data);
    assert_eq!(resp.status, 204, "{}\n{}", resp.text(), server.log_text());
    let img = image(server, &id);
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], data.len() as u64);
    assert_eq!(img["checksum"], digest("md5sum", path).as_str());
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(img["os_hash_value"], digest("sha512sum", path).as_str());
    assert_eq!(
        img["virtual_size"],
        qemu_info(path, Some(fmt)).virtual_size,
        "{img}"
    );
    let down = server.get(&format!("/v2/images/{id}/file"));
    assert_eq!(down.status, 200);
    assert!(down.body == data, "downloaded bytes differ");
}

#[test]
fn test_upload_qcow2_and_raw_are_stored_as_received_and_activated() {
    let dir = scratch();
    let server = Server::start(&[]);
    assert_upload_ok(
        &server,
        &image_with_data(dir.path(), "d.qcow2", "qcow2", ""),
        "qcow2",
    );
    assert_upload_ok(&server, &raw_disk(dir.path(), "d.raw", 8 << 20, 4), "raw");
    assert!(server.files_under("tmp").is_empty());
}

/// Uploads `data` declared `fmt` to a fresh image: 415 with `reason`, the message containing
/// every needle, the image `queued` again without data, no file left.
fn assert_refused(server: &Server, data: &[u8], fmt: &str, reason: &str, needles: &[&str]) {
    let id = create_image(server, ADMIN, fmt, "bare");
    let resp = put_file(server, &id, ADMIN, data);
    assert_eq!(resp.status, 415, "{fmt} {reason}: {}", resp.text());
    let body = resp.json();
    assert_eq!(body["reason"], reason, "{body}");
    let msg = resp.error_message();
    assert!(msg.contains(&format!("({reason})")), "{msg}");
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let img = image(server, &id);
    assert_eq!(img["status"], "queued", "{img}");
    assert_eq!(img["size"], Value::Null, "{img}");
    assert_eq!(img["checksum"], Value::Null, "{img}");
    assert_no_files(server);
}

#[test]
fn test_upload_every_inspector_rejection_class_is_415_with_its_reason() {
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);
    let backed = read(&qcow2_backed_by_passwd(d, "b.qcow2", Some("16M")));
    assert_refused(&server, &backed, "qcow2", "backing_file", &["/etc/passwd"]);
    // CVE-2024-40767: a "raw" upload that is a qcow2 with a backing file.
    assert_refused(
        &server,
        &backed,
        "raw",
        "backing_file",
        &["declared as raw"],
    );
    let qcow2 = read(&image_with_data(d, "q.qcow2", "qcow2", ""));
    assert_refused(&server, &qcow2, "raw", "format_mismatch", &["is qcow2"]);
    assert_refused(
        &server,
        &qcow2[..qcow2.len() / 2],
        "qcow2",
        "truncated",
        &[],
    );
    assert_refused(
        &server,
        &read(&qcow2_luks(d, "l.qcow2", "16M")),
        "qcow2",
        "encrypted",
        &[],
    );
    let df = d.join("data.raw");
    let opts = format!("data_file={},data_file_raw=on", df.display());
    let with_df = crate::common::qemu_img_create(d, "df.qcow2", "qcow2", &opts, "16M");
    assert_refused(&server, &read(&with_df), "qcow2", "data_file", &[]);
    // One gzip layer is unwrapped (see `service::unwrap`); a nested one is refused.
    let gz = d.join("q.qcow2");
    run("gzip", &["-k", "-n", gz.to_str().expect("utf-8")]);
    let once = d.join("q.qcow2.gz").display().to_string();
    run("sh", &["-c", &format!("gzip -c -n {once} > {once}.gz")]);
    assert_refused(
        &server,
        &read(&d.join("q.qcow2.gz.gz")),
        "qcow2",
        "compressed",
        &["gzip"],
    );
    let extent = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                   createType=\"monolithicSparse\"\n\nRW 2048 FLAT \"/etc/passwd\" 0\n";
    assert_refused(&server, extent, "vmdk", "external_extent", &["/etc/passwd"]);
    let mut corrupt = qcow2.clone();
    corrupt[20..24].copy_from_slice(&30u32.to_be_bytes());
    assert_refused(&server, &corrupt, "qcow2", "corrupt", &["cluster_bits 30"]);
    assert_refused(&server, b"", "raw", "empty", &[]);
    let qed = crate::common::qemu_img_create(d, "x.qed", "qed", "", "16M");
    assert_refused(&server, &read(&qed), "raw", "unsupported_format", &[]);
}

#[test]
fn test_upload_virtual_size_over_the_cap_is_415_size_cap_and_content_length_is_413() {
    let dir = scratch();
    let cap = (8u64 << 20).to_string();
    let server = Server::start(&["--max-virtual-size", &cap]);
    // 64 MiB virtual in a small qcow2: the inspector's size cap.
    let qcow2 = read(&image_with_data(dir.path(), "q.qcow2", "qcow2", ""));
    assert_refused(&server, &qcow2, "qcow2", "size_cap", &["67108864"]);

    // A Content-Length over the cap is answered before any byte of the body is sent.
    let id = create_image(&server, ADMIN, "raw", "bare");
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        16u64 << 20
    );
    s.write_all(head.as_bytes()).expect("head");
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).expect("an answer without a body");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"reason\":\"size_cap\""), "{text}");
    assert_eq!(image(&server, &id)["status"], "queued");
    assert_no_files(&server);
}

/// Sends a PUT announcing `total` bytes: `head` then zeros, 64 KiB per write, while another
/// thread reads the answer. Returns the answer and the bytes sent when it arrived.
fn put_streaming(addr: &str, id: &str, head: &[u8], total: u64) -> (String, u64) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut reader = s.try_clone().expect("clone");
    let req = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("head");
    let sent = Arc::new(AtomicU64::new(0));
    let at_answer = Arc::clone(&sent);
    let answer = thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        let n = reader.read(&mut buf).unwrap_or(0);
        let sent_then = at_answer.load(Ordering::SeqCst);
        (String::from_utf8_lossy(&buf[..n]).into_owned(), sent_then)
    });
    let mut block = vec![0u8; 64 << 10];
    let mut done = 0u64;
    while done < total {
        block.fill(0);
        if (done as usize) < head.len() {
            let at = done as usize;
            let n = (head.len() - at).min(block.len());
            block[..n].copy_from_slice(&head[at..at + n]);
        }
        let n = (total - done).min(block.len() as u64) as usize;
        if s.write_all(&block[..n]).is_err() {
            break;
        }
        done += n as u64;
        sent.store(done, Ordering::SeqCst);
    }
    let _ = s.shutdown(Shutdown::Write);
    answer.join().expect("reader")
}

/// The log without its colour escapes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn test_upload_backing_file_in_a_1_gib_body_is_refused_within_its_first_64_kib() {
    let dir = scratch();
    let server = Server::start(&[]);
    let backed = read(&qcow2_backed_by_passwd(dir.path(), "b.qcow2", Some("1G")));
    let id = create_image(&server, ADMIN, "qcow2", "bare");
    let total = 1u64 << 30;
    let (answer, sent_at_answer) = put_streaming(&server.addr, &id, &backed, total);
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert!(answer.contains("\"reason\":\"backing_file\""), "{answer}");
    // The answer came while the client was still sending.
    assert!(sent_at_answer < total, "answered only after the whole body");
    // What went into the pipeline (inspected; nothing hashed or stored), from the log.
    let log = strip_ansi(&server.log_text());
    let line = log
        .lines()
        .find(|l| l.contains("upload refused") && l.contains(&id))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    let received: u64 = line
        .split("received=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no received= in {line}"));
    assert!(
        received <= 64 << 10,
        "{received} bytes went into the pipeline"
    );
    assert_eq!(image(&server, &id)["status"], "queued");
    assert_no_files(&server);
}

#[test]
fn test_upload_truncated_body_and_disconnect_leave_the_image_queued_and_no_file() {
    let dir = scratch();
    let server = Server::start(&[]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 8 << 20, 4));
    for close_whole in [false, true] {
        let id = create_image(&server, ADMIN, "raw", "bare");
        let mut s = TcpStream::connect(&server.addr).expect("connect");
        let head = format!(
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            raw.len()
        );
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&raw[..3 << 20]).expect("part of the body");
        thread::sleep(Duration::from_millis(200));
        if close_whole {
            drop(s);
        } else {
            s.shutdown(Shutdown::Write).expect("shutdown");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        }
        let img = wait_queued(&server, &id);
        assert_eq!(img["status"], "queued", "{img}\n{}", server.log_text());
        assert_no_files(&server);
        // The image takes a whole upload afterwards.
        assert_eq!(put_file(&server, &id, ADMIN, &raw).status, 204);
        assert_eq!(image(&server, &id)["status"], "active");
        let _ = server.req("DELETE", &format!("/v2/images/{id}"), ADMIN, None);
    }
}

#[test]
fn test_upload_conflicts_formats_and_media_type_answer_as_glance() {
    let dir = scratch();
    let server = Server::start(&[]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 1 << 20, 1));
    let id = create_image(&server, ADMIN, "raw", "bare");
    assert_eq!(put_file(&server, &id, ADMIN, &raw).status, 204);
    // Not queued any more.
    let again = put_file(&server, &id, ADMIN, &raw);
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(
        again.error_message(),
        "Image status transition from active to saving is not allowed"
    );
    // Formats unset.
    let body = json!({"name": "bare"});
    let resp = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    let unset = resp.json()["id"].as_str().expect("id").to_owned();
    let resp = put_file(&server, &unset, ADMIN, &raw);
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.error_message(),
        "Properties disk_format, container_format must be set prior to saving data."
    );
    // Wrong media type.
    let other = create_image(&server, ADMIN, "raw", "bare");
    let resp = server.req(
        "PUT",
        &format!("/v2/images/{other}/file"),
        &[("Content-Type", "application/json")],
        Some(&raw),
    );
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert_eq!(image(&server, &other)["status"], "queued");
    // Another project's image: 404; a reader: 403.
    let theirs = create_image(&server, &member("p1"), "raw", "bare");
    assert_eq!(put_file(&server, &theirs, &member("p2"), &raw).status, 404);
    let reader = [("X-Project-Id", "p1"), ("X-Roles", "reader")];
    assert_eq!(put_file(&server, &theirs, &reader, &raw).status, 403);
    assert_eq!(put_file(&server, &theirs, &member("p1"), &raw).status, 204);
}

#[test]
fn test_upload_two_concurrent_uploads_of_one_image_second_gets_409() {
    let dir = scratch();
    let server = Server::start(&[]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 4 << 20, 4));
    let id = create_image(&server, ADMIN, "raw", "bare");
    let mut first = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        raw.len()
    );
    first.write_all(head.as_bytes()).expect("head");
    first.write_all(&raw[..1 << 20]).expect("part");
    let deadline = Instant::now() + REQUEUE_DEADLINE;
    while image(&server, &id)["status"] != "saving" {
        assert!(Instant::now() < deadline, "never saving");
        thread::sleep(Duration::from_millis(20));
    }
    let second = put_file(&server, &id, ADMIN, &raw);
    assert_eq!(second.status, 409, "{}", second.text());
    first.write_all(&raw[1 << 20..]).expect("rest");
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).expect("answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let img = image(&server, &id);
    assert_eq!(img["status"], "active");
    assert_eq!(
        img["checksum"],
        digest("md5sum", &dir.path().join("d.raw")).as_str()
    );
}

#[test]
fn test_upload_counts_against_the_project_quotas() {
    let dir = scratch();
    let server = Server::start(&["--quota-image-size-total", "1"]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 2 << 20, 2));
    let id = create_image(&server, &member("p1"), "raw", "bare");
    let resp = put_file(&server, &id, &member("p1"), &raw);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(
        resp.error_message()
            .contains("Resource image_size_total is over limit of 1"),
        "{}",
        resp.text()
    );
    assert_eq!(image(&server, &id)["status"], "queued");
    assert_no_files(&server);

    let server = Server::start(&["--quota-image-count-uploading", "0"]);
    let id = create_image(&server, &member("p1"), "raw", "bare");
    let resp = put_file(&server, &id, &member("p1"), &raw[..4096]);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(resp.error_message().contains("image_count_uploading"));
    assert_eq!(image(&server, &id)["status"], "queued");
}

#[test]
fn test_upload_kill_9_mid_body_then_restart_leaves_the_image_queued_and_no_file() {
    let dir = scratch();
    let mut server = Server::start(&[]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 16 << 20, 4));
    let id = create_image(&server, ADMIN, "raw", "bare");
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        raw.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&raw[..8 << 20]).expect("half the body");
    let deadline = Instant::now() + REQUEUE_DEADLINE;
    while server.files_under("tmp").is_empty() || image(&server, &id)["status"] != "saving" {
        assert!(Instant::now() < deadline, "upload never started");
        thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    drop(s);
    server.restart();
    let img = image(&server, &id);
    assert_eq!(img["status"], "queued", "{img}");
    assert_eq!(img["size"], Value::Null, "{img}");
    assert_no_files(&server);
    assert_eq!(put_file(&server, &id, ADMIN, &raw).status, 204);
    assert_eq!(image(&server, &id)["status"], "active");
}
