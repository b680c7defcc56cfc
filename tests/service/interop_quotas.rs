//! Interoperable import and the project's quotas (issue #10): an import fills an image that
//! already exists, so it does not count against `image_count_total` again; and, as Glance's
//! `import_image`, `POST /v2/images/{id}/import` refuses up front (413) a project already over
//! its `image_size_total`. And `GET /v2/images/{id}/tasks` lists all of an image's imports.

use serde_json::{json, Value};

use super::harness::{import_input, member, raw_disk, FileServer, Resp, Server};
use crate::common::scratch;

/// `POST path` as `who` with a JSON body.
fn post(server: &Server, path: &str, who: &[(&str, &str)], body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).expect("json");
    server.req("POST", path, who, Some(&bytes))
}

/// A queued raw image of `who`'s project; returns its id.
fn queued_raw(server: &Server, who: &[(&str, &str)]) -> String {
    let resp = post(
        server,
        "/v2/images",
        who,
        &json!({"name": "q", "disk_format": "raw", "container_format": "bare"}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

fn web_download(uri: &str) -> Value {
    json!({"method": {"name": "web-download", "uri": uri}})
}

#[test]
fn test_interop_quota_import_into_own_queued_image_at_count_limit_succeeds() {
    let dir = scratch();
    raw_disk(dir.path(), "a.raw", 256 << 10, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--quota-image-count-total", "1"]);
    let who = member("count-project");
    let id = queued_raw(&server, &who);
    let resp = post(
        &server,
        &format!("/v2/images/{id}/import"),
        &who,
        &web_download(&files.url("a.raw")),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let tasks = server.get(&format!("/v2/images/{id}/tasks")).json();
    let task_id = tasks["tasks"][0]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    let task = server.wait_task(&task_id);
    assert_eq!(task["status"], "success", "{task}");
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "active", "{image}");
}

#[test]
fn test_interop_quota_import_over_image_size_total_is_413_up_front() {
    let dir = scratch();
    raw_disk(dir.path(), "a.raw", 256 << 10, 2);
    let files = FileServer::start(dir.path());
    let who = member("size-project");
    let data = scratch();
    {
        let server = Server::start_in(data.path(), &[]);
        let task = server.create_task_as(import_input(&files.url("a.raw"), "raw", "a"), &who);
        let task = server.wait_task(task["id"].as_str().expect("task id"));
        assert_eq!(task["status"], "success", "{task}");
    }
    // The project now holds 256 KiB, over a limit of 0 MiB.
    let server = Server::start_in(data.path(), &["--quota-image-size-total", "0"]);
    let id = queued_raw(&server, &who);
    let resp = post(
        &server,
        &format!("/v2/images/{id}/import"),
        &who,
        &web_download(&files.url("a.raw")),
    );
    assert_eq!(resp.status, 413, "{}", resp.text());
    let message = resp.error_message();
    assert!(
        message.contains(
            "Project size-project is over a limit for [Resource image_size_total is over \
             limit of 0 due to current usage 1 and delta 0]"
        ),
        "{message}"
    );
    // Nothing was started: the image is still queued, without a task.
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "queued", "{image}");
    let tasks = server.get(&format!("/v2/images/{id}/tasks")).json();
    assert_eq!(tasks["tasks"], json!([]), "{tasks}");
}

/// `GET /v2/images/{id}/tasks` lists every import task of the image (Glance's tasks with that
/// `image_id`), not only the latest: a failed web-download, then a successful one.
#[test]
fn test_interop_image_tasks_lists_every_import_task_of_the_image() {
    let dir = scratch();
    raw_disk(dir.path(), "a.raw", 256 << 10, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let who = member("tasks-project");
    let id = queued_raw(&server, &who);
    let import = |name: &str| {
        let resp = post(
            &server,
            &format!("/v2/images/{id}/import"),
            &who,
            &web_download(&files.url(name)),
        );
        assert_eq!(resp.status, 202, "{}", resp.text());
    };
    let listed = || -> Vec<Value> {
        let resp = server.req("GET", &format!("/v2/images/{id}/tasks"), &who, None);
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()["tasks"].as_array().expect("tasks").clone()
    };
    import("missing.raw");
    let first = listed();
    assert_eq!(first.len(), 1, "{first:?}");
    let first_id = first[0]["id"].as_str().expect("task id").to_owned();
    assert_eq!(server.wait_task(&first_id)["status"], "failure");
    import("a.raw");
    let both = listed();
    let ids: Vec<&str> = both.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{both:?}");
    // By creation (within one second by id, so either order).
    let second = ids
        .iter()
        .find(|t| **t != first_id)
        .expect("the second task");
    assert!(ids.contains(&first_id.as_str()), "{both:?}");
    assert_eq!(server.wait_task(second)["status"], "success");
    assert!(
        both.iter().all(|t| t["image_id"] == id.as_str()),
        "{both:?}"
    );
}
