//! Credentials in a source URL (`http://user:pass@host/…`, presigned `?X-Amz-Signature=…`,
//! `?token=…`) are never echoed: not in a refusal, a task's message or result, the image
//! record, `/metrics` or the server's log, whether the import is refused, fails or succeeds.
//! Only the task's `input` keeps the URL, as Glance shows a task's input to its owner.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{import_input, raw_disk, FileServer, Serve, Server, ADMIN};
use crate::common::scratch;

/// The secret every test URL carries, in its user information and its query.
const SECRET: &str = "s3cretXYZ";

/// `url` (`http://host/path`) with the secret as password and in two query values.
fn with_secrets(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    format!("http://sluice:{SECRET}@{rest}?X-Amz-Signature={SECRET}&token={SECRET}")
}

/// Panics if `what` shows the secret anywhere.
fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
}

/// `value` without its `input` (the one place the URL is kept, as given).
fn without_input(value: &Value) -> String {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("input");
    }
    value.to_string()
}

/// `POST /v2/images/{id}/import` with web-download from `uri`.
fn web_download(server: &Server, id: &str, uri: &str) -> super::harness::Resp {
    let body = json!({"method": {"name": "web-download", "uri": uri}});
    server.req(
        "POST",
        &format!("/v2/images/{id}/import"),
        ADMIN,
        Some(body.to_string().as_bytes()),
    )
}

/// The image's web-download task, once final.
fn wait_image_task(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let tasks = server.get(&format!("/v2/images/{id}/tasks")).json()["tasks"].clone();
        if let Some(task) = tasks.as_array().and_then(|t| t.first()) {
            if matches!(task["status"].as_str(), Some("success" | "failure")) {
                return task.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("image {id}'s task not final:\n{}", server.log_text());
}

#[test]
fn test_source_url_credentials_are_never_echoed() {
    let dir = scratch();
    let disk = raw_disk(dir.path(), "disk.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    files.set(
        "moved.raw",
        Serve::RedirectTo("http://sluice:s3cretXYZ@169.254.169.254/latest/?token=s3cretXYZ"),
    );
    std::fs::copy(&disk, dir.path().join("cut.raw")).expect("cut.raw");
    files.set("cut.raw", Serve::CloseAfter(4096));
    let server = Server::start(&[]);
    let metadata = with_secrets("http://169.254.169.254/x.raw");

    // Refused when asked for: legacy task and web-download, a 400 naming the host.
    let resp = server.post_task(
        &json!({"type": "import", "input": import_input(&metadata, "raw", "r")}),
        ADMIN,
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_clean("the task refusal", &resp.text());
    assert!(
        resp.error_message()
            .contains("http://***@169.254.169.254/x.raw?X-Amz-Signature=***&token=***"),
        "{}",
        resp.text()
    );
    let refused_image = &server.create_image("redaction", "raw");
    let resp = web_download(&server, refused_image, &metadata);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_clean("the web-download refusal", &resp.text());
    assert!(resp.error_message().contains("***@169.254.169.254"));

    // Failing while running: a redirect to a refused URL with credentials, a body cut short.
    for (name, shows) in [
        ("moved.raw", "http://***@169.254.169.254/latest/?token=***"),
        ("cut.raw", "?X-Amz-Signature=***&token=***"),
    ] {
        let task = server.create_task(import_input(&with_secrets(&files.url(name)), "raw", name));
        let task = server.wait_task(task["id"].as_str().expect("id"));
        assert_eq!(task["status"], "failure", "{task}");
        assert_clean(&format!("{name}'s task"), &without_input(&task));
        let message = task["message"].as_str().expect("message");
        assert!(message.contains(shows), "{name}: {message}");
        let id = &server.create_image("redaction", "raw");
        let resp = web_download(&server, id, &with_secrets(&files.url(name)));
        assert_eq!(resp.status, 202, "{}", resp.text());
        let task = wait_image_task(&server, id);
        assert_eq!(task["status"], "failure", "{task}");
        assert_clean(
            &format!("{name}'s web-download task"),
            &without_input(&task),
        );
        let image = server.get(&format!("/v2/images/{id}"));
        assert_clean("a failed web-download's image", &image.text());
    }

    // Succeeding: the task's result and the image record carry no trace of the secret.
    let task = server.create_task(import_input(
        &with_secrets(&files.url("disk.raw")),
        "raw",
        "ok",
    ));
    let task = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(task["status"], "success", "{task}");
    assert_clean("the task", &without_input(&task));
    let image_id = task["result"]["image_id"].as_str().expect("image id");
    let image = server.get(&format!("/v2/images/{image_id}"));
    assert_clean("the imported image", &image.text());
    let id = &server.create_image("redaction", "raw");
    let resp = web_download(&server, id, &with_secrets(&files.url("disk.raw")));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let task = wait_image_task(&server, id);
    assert_eq!(task["status"], "success", "{task}");
    assert_clean("the web-download task", &without_input(&task));
    let image = server.get(&format!("/v2/images/{id}"));
    assert_eq!(image.json()["size"], disk.metadata().expect("disk").len());
    assert_clean("the web-downloaded image", &image.text());
    let list = server.get("/v2/images");
    assert_clean("the image list", &list.text());

    assert_clean("/metrics", &server.get("/metrics").text());
    assert_clean("the server's log", &server.log_text());
}
