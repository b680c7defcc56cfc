//! Task lifecycle around the import: DELETE is never allowed, finished tasks expire and are
//! swept, and a `kill -9` mid-import leaves a failed task and no data after restart.

use std::thread;
use std::time::{Duration, Instant};

use super::harness::{import_input, raw_disk, FileServer, Serve, Server, ADMIN};
use crate::common::scratch;

#[test]
fn test_delete_task_returns_405_allow_get() {
    let server = Server::start(&["--allow-import-host", "127.0.0.1:9"]);
    let task = server.create_task(import_input("http://127.0.0.1:9/x.raw", "raw", "d"));
    let id = task["id"].as_str().expect("id");
    for target in [id, "e33780c6-9ee5-40eb-a3e4-09aad65d7c05"] {
        let resp = server.req("DELETE", &format!("/v2/tasks/{target}"), ADMIN, None);
        assert_eq!(resp.status, 405, "{}", resp.text());
        assert_eq!(resp.header("allow"), Some("GET"));
        assert!(
            resp.error_message().starts_with(
                "This operation is currently not permitted on Glance Tasks. They are auto \
                 deleted after reaching the time based on their expires_at property."
            ),
            "{}",
            resp.text()
        );
    }
    assert_eq!(server.get(&format!("/v2/tasks/{id}")).status, 200);
}

#[test]
fn test_finished_task_past_ttl_is_swept_and_image_kept() {
    // `task_ttl_secs = 2`: a finished task is visible for two seconds; sweep every second.
    let dir = scratch();
    raw_disk(dir.path(), "small.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "task_ttl_secs = 2\nsweep_interval_secs = 1\n").expect("config");
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let task = server.create_task(import_input(&files.url("small.raw"), "raw", "short-lived"));
    let id = task["id"].as_str().expect("id");
    let done = server.wait_task(id);
    assert_eq!(done["status"], "success", "{done}");
    let secs = |key: &str| {
        let text = done[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {done}"));
        humantime::parse_rfc3339(text)
            .unwrap_or_else(|e| panic!("{key} {text}: {e}"))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs()
    };
    assert_eq!(secs("expires_at") - secs("updated_at"), 2, "{done}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = server.get(&format!("/v2/tasks/{id}"));
        if resp.status == 404 {
            break;
        }
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(
            Instant::now() < deadline,
            "task never expired: {}",
            resp.text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let list = server.get("/v2/tasks").json();
    assert_eq!(list["tasks"], serde_json::json!([]), "{list}");
    let image_id = done["result"]["image_id"].as_str().expect("image id");
    let image_tasks = server.get(&format!("/v2/images/{image_id}/tasks"));
    assert_eq!(image_tasks.status, 200, "{}", image_tasks.text());
    assert_eq!(image_tasks.json(), serde_json::json!({"tasks": []}));
    let images = server.get("/v2/images?name=short-lived").json();
    assert_eq!(
        images["images"].as_array().map(Vec::len),
        Some(1),
        "{images}"
    );
}

/// A legacy `import` killed mid-body is taken back at restart (its node, this one, is
/// provably dead) and runs again from its source: no `interrupted` failure, one image.
#[test]
fn test_kill_9_mid_import_then_restart_requeues_from_source_and_succeeds() {
    let dir = scratch();
    raw_disk(dir.path(), "slow.raw", 8 << 20, 8);
    let files = FileServer::start(dir.path());
    files.set("slow.raw", Serve::StallAfter(3 << 20));
    let mut server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("slow.raw"), "raw", "interrupted"));
    let id = task["id"].as_str().expect("id").to_owned();

    // Wait until the server holds part of the body: task processing, source stalled.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = server.get(&format!("/v2/tasks/{id}")).json();
        let received = body["progress"]["bytes_received"].as_u64().unwrap_or(0);
        if body["status"] == "processing" && files.stalled() == 1 && received > 0 {
            assert_eq!(body["progress"]["bytes_total"], 8u64 << 20, "{body}");
            break;
        }
        assert!(
            matches!(body["status"].as_str(), Some("pending" | "processing")),
            "{body}"
        );
        assert!(
            Instant::now() < deadline,
            "import never stalled mid-body: {body}"
        );
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        server.files_under("tmp").len(),
        1,
        "a partial file while importing"
    );

    server.kill9();
    // The node died mid-import: a pull import starts again from its source (issue #13),
    // which now sends the whole file.
    files.set("slow.raw", Serve::Whole);
    server.restart();

    let done = server.wait_task(&id);
    assert_eq!(done["status"], "success", "{done}");
    let image_id = done["result"]["image_id"].as_str().expect("image id");
    let image = server.get(&format!("/v2/images/{image_id}")).json();
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["size"], 8u64 << 20, "{image}");
    assert!(server.files_under("tmp").is_empty(), "partial data left");
}

#[test]
fn test_task_schemas_describe_reason_and_progress_extensions() {
    let server = Server::start(&[]);
    let task = server.get("/v2/schemas/task");
    assert_eq!(task.status, 200);
    let task = task.json();
    assert_eq!(task["name"], "task");
    for key in [
        "reason", "progress", "id", "status", "input", "result", "message",
    ] {
        assert!(
            task["properties"].get(key).is_some(),
            "task schema lacks {key}: {task}"
        );
    }
    let tasks = server.get("/v2/schemas/tasks").json();
    let item = &tasks["properties"]["tasks"]["items"]["properties"];
    assert!(
        item.get("id").is_some() && item.get("input").is_none(),
        "{tasks}"
    );
}
