//! The create-time 400s recorded from Glance 33 (`glance-wire/legacy-noconv/08`–`31`): same
//! status, same explanation text (Glance's JSON error form), and no task left behind.

use serde_json::{json, Value};

use super::harness::{FileServer, Resp, Server, ADMIN};
use crate::common::scratch;

/// A server that only allows imports from 127.0.0.1 on the file server's port, plus that
/// file server (so port 9 and host 127.0.0.2 are refused as in recordings 08 and 09).
fn filtered_server() -> (Server, FileServer, tempfile::TempDir) {
    let dir = scratch();
    let files = FileServer::start(dir.path());
    let port = files.port.to_string();
    let server = Server::start(&["--allow-import-port", &port]);
    (server, files, dir)
}

fn good_input(url: &str) -> Value {
    json!({
        "import_from": url,
        "import_from_format": "qcow2",
        "image_properties": {"name": "x", "disk_format": "qcow2", "container_format": "bare"}
    })
}

/// Asserts a 400 whose JSON error explanation starts with `text`, and that no task exists.
fn assert_400(server: &Server, resp: &Resp, text: &str) {
    assert_eq!(resp.status, 400, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["code"], "400 Bad Request", "{body}");
    assert_eq!(body["title"], "Bad Request", "{body}");
    let msg = resp.error_message();
    assert!(
        msg.starts_with(text),
        "explanation {msg:?} does not start with {text:?}"
    );
    assert!(resp.header("x-openstack-request-id").is_some());
    let tasks = server.get("/v2/tasks").json();
    assert_eq!(
        tasks["tasks"],
        json!([]),
        "a refused create left a task: {tasks}"
    );
}

fn post_raw(server: &Server, body: &[u8]) -> Resp {
    server.req("POST", "/v2/tasks", ADMIN, Some(body))
}

#[test]
fn test_create_task_port_not_allowed_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let url = "http://127.0.0.1:9/x.qcow2";
    let resp = server.post_task(&json!({"type": "import", "input": good_input(url)}), ADMIN);
    assert_400(
        &server,
        &resp,
        &format!("URI for legacy import task does not pass filtering: {url}"),
    );
}

#[test]
fn test_create_task_host_not_allowed_returns_400() {
    let (server, files, _dir) = filtered_server();
    let url = format!("http://127.0.0.2:{}/small.qcow2", files.port);
    let resp = server.post_task(&json!({"type": "import", "input": good_input(&url)}), ADMIN);
    assert_400(
        &server,
        &resp,
        &format!("URI for legacy import task does not pass filtering: {url}"),
    );
    assert_eq!(
        files.requests(),
        0,
        "a refused source must not be contacted"
    );
}

#[test]
fn test_create_task_file_uri_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = server.post_task(
        &json!({"type": "import", "input": good_input("file:///etc/passwd")}),
        ADMIN,
    );
    assert_400(
        &server,
        &resp,
        "File based imports are not allowed. Please use a non-local source of image data.",
    );
}

#[test]
fn test_create_task_ftp_uri_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = server.post_task(
        &json!({"type": "import", "input": good_input("ftp://127.0.0.1/x.qcow2")}),
        ADMIN,
    );
    assert_400(
        &server,
        &resp,
        "The given uri is not valid. Please specify a valid uri from the following list of supported uri ['http']",
    );
}

#[test]
fn test_create_task_empty_import_from_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = server.post_task(&json!({"type": "import", "input": good_input("")}), ADMIN);
    assert_400(&server, &resp, "Invalid location: ");
    assert_eq!(resp.error_message(), "Invalid location: ");
}

#[test]
fn test_create_task_missing_import_from_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let input = json!({"import_from_format": "qcow2",
        "image_properties": {"name": "x", "disk_format": "qcow2", "container_format": "bare"}});
    let resp = server.post_task(&json!({"type": "import", "input": input}), ADMIN);
    assert_400(&server, &resp, "Invalid location: None");
}

#[test]
fn test_create_task_null_input_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = server.post_task(&json!({"type": "import", "input": null}), ADMIN);
    assert_400(&server, &resp, "Invalid location: None");
}

#[test]
fn test_create_task_missing_input_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = server.post_task(&json!({"type": "import"}), ADMIN);
    assert_400(&server, &resp, "Task 'input' is required");
}

#[test]
fn test_create_task_missing_type_returns_400() {
    let (server, files, _dir) = filtered_server();
    let resp = server.post_task(
        &json!({"input": good_input(&files.url("small.qcow2"))}),
        ADMIN,
    );
    assert_400(&server, &resp, "Task 'type' is required");
}

#[test]
fn test_create_task_unknown_type_returns_400() {
    let (server, files, _dir) = filtered_server();
    let resp = server.post_task(
        &json!({"type": "export", "input": good_input(&files.url("small.qcow2"))}),
        ADMIN,
    );
    assert_400(
        &server,
        &resp,
        "Provided object does not match schema 'task': 'export' is not one of ['import', 'api_image_import', 'location_import']",
    );
}

#[test]
fn test_create_task_input_not_object_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = server.post_task(&json!({"type": "import", "input": "nope"}), ADMIN);
    assert_400(
        &server,
        &resp,
        "Provided object does not match schema 'task': 'nope' is not of type 'null', 'object'",
    );
}

#[test]
fn test_create_task_extra_top_level_field_returns_400() {
    let (server, files, _dir) = filtered_server();
    let resp = server.post_task(
        &json!({"type": "import", "input": good_input(&files.url("small.qcow2")), "foo": "bar"}),
        ADMIN,
    );
    assert_400(
        &server,
        &resp,
        "Provided object does not match schema 'task': Additional properties are not allowed ('foo' was unexpected)",
    );
}

#[test]
fn test_create_task_malformed_json_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = post_raw(&server, b"{not json");
    assert_400(&server, &resp, "Malformed JSON in request body.");
}

#[test]
fn test_create_task_empty_body_returns_400() {
    let (server, _files, _dir) = filtered_server();
    let resp = post_raw(&server, b"");
    assert_400(&server, &resp, "Body expected in request.");
}
