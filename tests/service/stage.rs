//! `glance-direct` through the real server: `PUT /v2/images/{id}/stage` (inspected, hashed
//! and converted while the body arrives; every refusal leaves the image `queued` and nothing
//! staged), `POST /v2/images/{id}/import` committing the stage, expiry of stages never
//! imported, `kill -9` mid-stage and after a stage, and the unmodified clients (`glance
//! image-stage` + `image-import`, `glance image-create-via-import --import-method
//! glance-direct --file`).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::clients::{assert_ok, glance, glance_without_stdin, property_table, sdk_upload, stdout};
use super::harness::{assert_no_files, digest, raw_disk, Resp, Server, ADMIN};
use super::imports::image_with_data;
use crate::common::{qcow2_backed_by_passwd, qemu_img_convert, read, scratch};

/// How long an image may take to reach a status in these tests.
const STATUS_DEADLINE: Duration = Duration::from_secs(60);

fn put_stage(server: &Server, id: &str, data: &[u8]) -> Resp {
    server.req(
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    )
}

fn import_direct(server: &Server, id: &str) -> Resp {
    let body = json!({"method": {"name": "glance-direct"}});
    server.req(
        "POST",
        &format!("/v2/images/{id}/import"),
        ADMIN,
        Some(body.to_string().as_bytes()),
    )
}

fn image(server: &Server, id: &str) -> Value {
    server.get(&format!("/v2/images/{id}")).json()
}

fn wait_image(server: &Server, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + STATUS_DEADLINE;
    loop {
        let img = image(server, id);
        if img["status"] == want {
            return img;
        }
        assert!(
            Instant::now() < deadline,
            "image {id} not {want}: {img}\n{}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts nothing is staged: no data, no partial stage, no marker.
fn assert_nothing_staged(server: &Server) {
    let staged = server.files_under("staging");
    assert!(staged.is_empty(), "staged files left: {staged:?}");
}

/// Asserts `img` is active with the size and digests of `expected`'s bytes.
fn assert_active_as(img: &Value, expected: &Path) {
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], read(expected).len() as u64, "{img}");
    assert_eq!(
        img["checksum"],
        digest("md5sum", expected).as_str(),
        "{img}"
    );
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(
        img["os_hash_value"],
        digest("sha512sum", expected).as_str(),
        "{img}"
    );
}

#[test]
fn test_stage_then_glance_direct_import_reaches_active_with_an_api_image_import_task() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "d.qcow2", "qcow2", "");
    let server = Server::start(&[]);
    let id = &server.create_image("staged", "qcow2");
    let resp = put_stage(&server, id, &read(&src));
    assert_eq!(resp.status, 204, "{}\n{}", resp.text(), server.log_text());
    let img = image(&server, id);
    assert_eq!(img["status"], "uploading", "{img}");
    assert!(server.files_under("images").is_empty());
    // A second stage of a staged image: Glance's transition refusal.
    let again = put_stage(&server, id, &read(&src));
    assert_eq!(again.status, 409);
    assert_eq!(
        again.error_message(),
        "Image status transition from uploading to uploading is not allowed"
    );

    let resp = import_direct(&server, id);
    assert_eq!(resp.status, 202, "{}", resp.text());
    // The lock, then the import itself, refuse a second import: Glance's 409s.
    let second = import_direct(&server, id);
    assert_eq!(second.status, 409, "{}", second.text());
    let img = wait_image(&server, id, "active");
    assert_active_as(&img, &src);
    assert_eq!(img["disk_format"], "qcow2");
    assert!(img.get("os_glance_import_task").is_none(), "{img}");
    let down = server.get(&format!("/v2/images/{id}/file"));
    assert!(down.body == read(&src), "downloaded bytes differ");
    let tasks = server.get(&format!("/v2/images/{id}/tasks")).json();
    let task = &tasks["tasks"][0];
    assert_eq!(task["type"], "api_image_import", "{tasks}");
    assert_eq!(task["status"], "success", "{tasks}");
    assert_eq!(task["input"]["image_id"], id.as_str());
    assert_eq!(
        task["input"]["import_req"]["method"]["name"],
        "glance-direct"
    );
    assert_eq!(task["input"]["backend"], json!([null]));
    assert_eq!(task["result"], json!({"image_id": id}));
    assert_nothing_staged(&server);
    // Imported: the image is active, a second import is Glance's 409.
    let resp = import_direct(&server, id);
    assert_eq!(resp.status, 409);
}

#[test]
fn test_stage_with_conversion_to_raw_imports_the_converted_bytes() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "d.qcow2", "qcow2", "");
    let raw = qemu_img_convert(&src, &dir.path().join("d.raw"), "raw", "");
    let server = Server::start(&["--conversion", "raw"]);
    let id = &server.create_image("staged", "qcow2");
    let resp = put_stage(&server, id, &read(&src));
    assert_eq!(resp.status, 204, "{}\n{}", resp.text(), server.log_text());
    assert_eq!(import_direct(&server, id).status, 202);
    let img = wait_image(&server, id, "active");
    assert_active_as(&img, &raw);
    assert_eq!(img["disk_format"], "raw", "{img}");
    assert_eq!(img["container_format"], "bare", "{img}");
    let down = server.get(&format!("/v2/images/{id}/file"));
    assert!(
        down.body == read(&raw),
        "downloaded bytes differ from qemu-img's"
    );
}

#[test]
fn test_stage_refusals_leave_the_image_queued_and_nothing_staged() {
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);

    // A hostile image: the inspector's reason, 415, as an upload.
    let id = &server.create_image("staged", "qcow2");
    let backed = read(&qcow2_backed_by_passwd(d, "b.qcow2", Some("16M")));
    let resp = put_stage(&server, id, &backed);
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert_eq!(resp.json()["reason"], "backing_file");
    assert!(resp.error_message().contains("(backing_file)"));
    assert_eq!(image(&server, id)["status"], "queued");
    // A format mismatch: raw data declared qcow2.
    let raw = read(&raw_disk(d, "r.raw", 4 << 20, 2));
    let resp = put_stage(&server, id, &raw);
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert_eq!(resp.json()["reason"], "format_mismatch");
    assert_eq!(image(&server, id)["status"], "queued");
    // The wrong media type.
    let resp = server.req(
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(resp.status, 415);
    // Nothing staged: a glance-direct import is Glance's 409.
    let resp = import_direct(&server, id);
    assert_eq!(resp.status, 409);
    assert_eq!(
        resp.error_message(),
        "Image needs to be staged before 'glance-direct' method can be used"
    );
    assert_eq!(image(&server, id)["status"], "queued");
    assert_nothing_staged(&server);
    assert_no_files(&server);

    // An active image cannot be staged.
    let id = &server.create_image("staged", "raw");
    assert_eq!(put_stage(&server, id, &raw).status, 204);
    assert_eq!(import_direct(&server, id).status, 202);
    wait_image(&server, id, "active");
    let resp = put_stage(&server, id, &raw);
    assert_eq!(resp.status, 409);
    assert_eq!(
        resp.error_message(),
        "Image status transition from active to uploading is not allowed"
    );

    // Over the size cap.
    let small = Server::start(&["--max-virtual-size", "1048576"]);
    let id = &small.create_image("staged", "raw");
    let resp = put_stage(&small, id, &raw);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(image(&small, id)["status"], "queued");
    assert_nothing_staged(&small);

    // glance-direct disabled: the stage call does not exist (Glance's 404).
    let config = d.join("only-web.toml");
    std::fs::write(&config, "enabled_import_methods = [\"web-download\"]\n").expect("config");
    let off = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let id = &off.create_image("staged", "raw");
    assert_eq!(put_stage(&off, id, &raw).status, 404);
}

#[test]
fn test_stage_deleted_image_removes_the_staged_data() {
    let dir = scratch();
    let server = Server::start(&[]);
    let raw = read(&raw_disk(dir.path(), "r.raw", 4 << 20, 2));
    let id = &server.create_image("staged", "raw");
    assert_eq!(put_stage(&server, id, &raw).status, 204);
    assert!(!server.files_under("staging").is_empty());
    let resp = server.req("DELETE", &format!("/v2/images/{id}"), ADMIN, None);
    assert_eq!(resp.status, 204);
    assert_nothing_staged(&server);
}

#[test]
fn test_stage_never_imported_expires_and_the_image_returns_to_queued() {
    let dir = scratch();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "staging_ttl_secs = 1\nsweep_interval_secs = 1\n").expect("config");
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let raw = read(&raw_disk(dir.path(), "r.raw", 4 << 20, 2));
    let id = &server.create_image("staged", "raw");
    assert_eq!(put_stage(&server, id, &raw).status, 204);
    let img = wait_image(&server, id, "queued");
    assert_eq!(img["size"], Value::Null, "{img}");
    assert_nothing_staged(&server);
    assert_eq!(import_direct(&server, id).status, 409);
    // Staged again, it can be imported again.
    assert_eq!(put_stage(&server, id, &raw).status, 204);
}

#[test]
fn test_stage_kill_9_mid_stage_then_restart_leaves_the_image_queued_and_nothing_staged() {
    let dir = scratch();
    let mut server = Server::start(&[]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 16 << 20, 4));
    let id = &server.create_image("staged", "raw");
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/stage HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        raw.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&raw[..8 << 20]).expect("half the body");
    let deadline = Instant::now() + STATUS_DEADLINE;
    while server.files_under("staging").is_empty() || image(&server, id)["status"] != "uploading" {
        assert!(Instant::now() < deadline, "stage never started");
        thread::sleep(Duration::from_millis(20));
    }
    // A stage still streaming is not importable.
    let resp = import_direct(&server, id);
    assert_eq!(resp.status, 409);
    assert_eq!(
        resp.error_message(),
        "Image needs to be staged before 'glance-direct' method can be used"
    );
    server.kill9();
    drop(s);
    server.restart();
    let img = image(&server, id);
    assert_eq!(img["status"], "queued", "{img}");
    assert_nothing_staged(&server);
    assert_eq!(import_direct(&server, id).status, 409);
    assert_eq!(put_stage(&server, id, &raw).status, 204);
}

#[test]
fn test_stage_complete_survives_kill_9_and_is_imported_after_restart() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "d.qcow2", "qcow2", "");
    let mut server = Server::start(&[]);
    let id = &server.create_image("staged", "qcow2");
    assert_eq!(put_stage(&server, id, &read(&src)).status, 204);
    server.kill9();
    server.restart();
    assert_eq!(image(&server, id)["status"], "uploading");
    assert_eq!(import_direct(&server, id).status, 202);
    let img = wait_image(&server, id, "active");
    assert_active_as(&img, &src);
    assert_nothing_staged(&server);
}

#[test]
fn test_stage_glance_clients_image_stage_import_and_create_via_import() {
    let dir = scratch();
    let d = dir.path();
    let src = image_with_data(d, "c.qcow2", "qcow2", "");
    let p = src.to_str().expect("utf-8");
    let server = Server::start(&[]);

    // `glance image-stage` + `glance image-import --import-method glance-direct`.
    let id = &server.create_image("staged", "qcow2");
    let out = glance(&server, d, &["image-stage", "--file", p, id]);
    assert_ok(&out, "image-stage");
    assert_eq!(image(&server, id)["status"], "uploading");
    let out = glance(
        &server,
        d,
        &["image-import", "--import-method", "glance-direct", id],
    );
    assert_ok(&out, "image-import");
    let img = wait_image(&server, id, "active");
    assert_active_as(&img, &src);

    // `glance image-create-via-import --import-method glance-direct --file`.
    let out = glance_without_stdin(
        &server,
        d,
        &[
            "image-create-via-import",
            "--name",
            "via-direct",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "--import-method",
            "glance-direct",
            "--file",
            p,
        ],
    );
    assert_ok(
        &out,
        "image-create-via-import --import-method glance-direct",
    );
    let table = property_table(&stdout(&out));
    let id = table.get("id").expect("id").clone();
    let img = wait_image(&server, &id, "active");
    assert_active_as(&img, &src);
    assert_nothing_staged(&server);
}

#[test]
fn test_stage_openstacksdk_create_image_with_use_import_stages_and_imports() {
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);
    let src = image_with_data(d, "sdk.qcow2", "qcow2", "");
    let out = sdk_upload(
        &server,
        &src,
        "qcow2",
        "via-sdk-import",
        &d.join("sdk-down.qcow2"),
        true,
    );
    assert!(
        out.status.success(),
        "sdk_upload.py use_import failed:\nstdout: {}\nstderr: {}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let md5 = digest("md5sum", &src);
    assert_eq!(v["image_status"], "active", "{v}");
    assert_eq!(v["checksum"], md5.as_str());
    assert_eq!(v["downloaded_md5"], md5.as_str());
    assert_eq!(v["hash_value"], digest("sha512sum", &src).as_str());
    // Through the stage, not a direct upload.
    let log = server.log_text();
    assert!(log.contains("stage complete"), "{log}");
    assert!(log.contains("\"glance-direct\""), "{log}");
    assert_nothing_staged(&server);
}
