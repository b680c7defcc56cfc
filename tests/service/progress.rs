//! Progress people can use (issue #12, item 4): a failed task's `message` (the field the
//! OpenStack clients print) starts with its reason code and says what to do; a running task
//! shows its rate and ETA, a pending one its place in the queue.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::clients::{stdout, venv_bin};
use super::harness::{import_input, raw_disk, FileServer, Serve, Server, ADMIN};
use super::upload_clients::openstack;
use crate::common::scratch;

/// A failed import's message begins with the reason code (`source_error` for a URL that
/// answers 404) and tells the user what to do.
#[test]
fn test_failed_task_message_begins_with_reason_code_and_advice() {
    let dir = scratch();
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("missing.qcow2"), "qcow2", "gone"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "source_error", "{done}");
    let message = done["message"].as_str().expect("message");
    assert!(message.starts_with("source_error: "), "{message}");
    assert!(message.contains("check that the URL is right"), "{message}");
}

/// openstacksdk's failed task carries the reason code and the advice in `Task.message` (its
/// `wait_for_task` error names only the status, whatever the server says: openstacksdk's
/// own wording).
#[test]
fn test_openstacksdk_failed_task_message_names_the_reason() {
    let dir = scratch();
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/sdk_import.py");
    let out = Command::new(venv_bin("python"))
        .arg(&script)
        .args([
            "none",
            &format!("http://{}", server.addr),
            &files.url("missing.qcow2"),
            "sdk-fails",
        ])
        .arg(dir.path().join("never-written"))
        .arg("expect_failure")
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running sdk_import.py");
    assert!(
        out.status.success(),
        "sdk_import.py failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sdk_import JSON");
    assert!(
        v["sdk_error"]
            .as_str()
            .expect("sdk_error")
            .contains("failure"),
        "{v}"
    );
    assert_eq!(v["task_status"], "failure", "{v}");
    let message = v["task_message"].as_str().expect("task_message");
    assert!(message.starts_with("source_error: "), "{message}");
    assert!(message.contains("check that the URL is right"), "{message}");
}

/// `openstack image task show` prints the message with the reason code first.
#[test]
fn test_openstack_cli_task_show_prints_the_reason_first() {
    let dir = scratch();
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("missing.qcow2"), "qcow2", "cli"));
    let id = task["id"].as_str().expect("id");
    server.wait_task(id);
    let out = openstack(
        &server,
        dir.path(),
        &["image", "task", "show", id, "-f", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("task JSON");
    let message = shown["message"].as_str().expect("message");
    assert!(message.starts_with("source_error: "), "{shown}");
}

/// Size of the trickled image: at one byte a millisecond it runs far longer than the test.
const SLOW_IMAGE_SIZE: u64 = 256 * 1024;

/// Polls task `id` until `done` accepts its body (or a deadline passes); returns the body.
fn poll_task(server: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let task = server.get(&format!("/v2/tasks/{id}")).json();
        if done(&task) {
            return task;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {task}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// A running import shows bytes in and out, a rate and an ETA (its source announces its
/// length and trickles); with one worker busy, the tasks behind it show their queue places.
#[test]
fn test_running_task_shows_rate_and_eta_and_pending_ones_their_place() {
    let dir = scratch();
    raw_disk(dir.path(), "slow.raw", SLOW_IMAGE_SIZE, 2);
    raw_disk(dir.path(), "next.raw", 64 * 1024, 1);
    let files = FileServer::start(dir.path());
    files.set("slow.raw", Serve::Trickle(Duration::from_millis(1)));
    let server = Server::start(&["--workers", "1", "--min-rate-bytes-per-sec", "0"]);
    let slow = server.create_task(import_input(&files.url("slow.raw"), "raw", "slow"));
    let slow_id = slow["id"].as_str().expect("id");
    // Two seconds of data at least, so that the rate is measured over a real span.
    let started = Instant::now();
    let running = poll_task(&server, slow_id, |t| {
        t["status"] == "processing"
            && t["progress"]["bytes_received"].as_u64() > Some(0)
            && started.elapsed() > Duration::from_secs(2)
    });
    let p = &running["progress"];
    assert_eq!(p["bytes_total"], SLOW_IMAGE_SIZE, "{running}");
    let received = p["bytes_received"].as_u64().expect("bytes_received");
    assert!(received < SLOW_IMAGE_SIZE, "{running}");
    assert!(p["bytes_stored"].as_u64() <= Some(received), "{running}");
    let rate = p["rate_bytes_per_sec"].as_u64().expect("rate");
    assert!(rate > 0, "{running}");
    let eta = p["eta_secs"].as_u64().expect("eta");
    assert_eq!(
        eta,
        (SLOW_IMAGE_SIZE - received).div_ceil(rate),
        "{running}"
    );
    assert_eq!(p["queue_position"], Value::Null, "{running}");

    let ids: Vec<String> = (0..2)
        .map(|n| {
            let task = server.create_task(import_input(&files.url("next.raw"), "raw", "next"));
            assert_eq!(task["status"], "pending", "{n}: {task}");
            task["id"].as_str().expect("id").to_owned()
        })
        .collect();
    for (place, id) in ids.iter().enumerate() {
        let task = server.get(&format!("/v2/tasks/{id}")).json();
        assert_eq!(task["status"], "pending", "{task}");
        assert_eq!(task["progress"]["queue_position"], place + 1, "{task}");
        assert_eq!(task["progress"]["queue_waiting"], 2, "{task}");
        assert_eq!(
            task["progress"]["rate_bytes_per_sec"],
            Value::Null,
            "{task}"
        );
    }
}

/// An interoperable import (web-download) shows the same progress on the image's task row
/// (`GET /v2/images/{id}/tasks`), where clients find the task of an image.
#[test]
fn test_web_download_image_task_row_shows_rate_while_importing() {
    let dir = scratch();
    raw_disk(dir.path(), "slow.raw", SLOW_IMAGE_SIZE, 2);
    let files = FileServer::start(dir.path());
    files.set("slow.raw", Serve::Trickle(Duration::from_millis(1)));
    let server = Server::start(&["--min-rate-bytes-per-sec", "0"]);
    let body = json!({"name": "slow", "disk_format": "raw", "container_format": "bare"});
    let created = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let image_id = created.json()["id"].as_str().expect("id").to_owned();
    let import = json!({"method": {"name": "web-download", "uri": files.url("slow.raw")}});
    let path = format!("/v2/images/{image_id}/import");
    let resp = server.req("POST", &path, ADMIN, Some(import.to_string().as_bytes()));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let row = loop {
        let rows = server.get(&format!("/v2/images/{image_id}/tasks")).json();
        let row = rows["tasks"][0].clone();
        if row["status"] == "processing"
            && row["progress"]["bytes_received"].as_u64() > Some(0)
            && started.elapsed() > Duration::from_secs(2)
        {
            break row;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {rows}");
        thread::sleep(Duration::from_millis(200));
    };
    let p = &row["progress"];
    assert_eq!(p["bytes_total"], SLOW_IMAGE_SIZE, "{row}");
    assert!(p["rate_bytes_per_sec"].as_u64() > Some(0), "{row}");
    assert!(p["eta_secs"].as_u64() > Some(0), "{row}");
}
