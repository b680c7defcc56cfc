//! Progress people can use (issue #12, item 4): a failed task's `message` (the field the
//! OpenStack clients print) starts with its reason code and says what to do; a running task
//! shows its rate and ETA, a pending one its place in the queue.

use std::path::Path;
use std::process::Command;

use super::clients::{stdout, venv_bin};
use super::harness::{import_input, FileServer, Server};
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
    assert!(message.contains("check that the URL"), "{message}");
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
    assert!(message.contains("check that the URL"), "{message}");
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
