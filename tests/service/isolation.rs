//! Owner isolation between two projects (identity headers in no-auth mode) and the admin's
//! view of both. Glance answers 403 for another project's task and 404 for an image the
//! caller cannot see (`glance-api.md` §1.7, §2.2).

use std::collections::BTreeSet;

use serde_json::Value;

use super::harness::{import_input, member, raw_disk, FileServer, Server};
use crate::common::scratch;

/// Project A's and project B's finished imports on one server.
struct TwoProjects {
    server: Server,
    _files: FileServer,
    _dir: tempfile::TempDir,
    task_a: Value,
    task_b: Value,
}

fn two_projects() -> TwoProjects {
    let dir = scratch();
    raw_disk(dir.path(), "small.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let a = server.create_task_as(
        import_input(&files.url("small.raw"), "raw", "of-a"),
        &member("project-a"),
    );
    assert_eq!(a["owner"], "project-a", "{a}");
    let b = server.create_task_as(
        import_input(&files.url("small.raw"), "raw", "of-b"),
        &member("project-b"),
    );
    assert_eq!(b["owner"], "project-b", "{b}");
    let task_a = server.wait_task(a["id"].as_str().expect("id"));
    let task_b = server.wait_task(b["id"].as_str().expect("id"));
    assert_eq!(task_a["status"], "success", "{task_a}");
    assert_eq!(task_b["status"], "success", "{task_b}");
    TwoProjects {
        server,
        _files: files,
        _dir: dir,
        task_a,
        task_b,
    }
}

fn image_id(task: &Value) -> &str {
    task["result"]["image_id"].as_str().expect("image id")
}

fn listed(server: &Server, path: &str, who: &[(&str, &str)], key: &str) -> BTreeSet<String> {
    let resp = server.req("GET", path, who, None);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    resp.json()[key]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn test_member_can_read_own_task_and_image_with_owner_set() {
    let p = two_projects();
    let a = member("project-a");
    let id = p.task_a["id"].as_str().expect("id");
    let task = p.server.req("GET", &format!("/v2/tasks/{id}"), &a, None);
    assert_eq!(task.status, 200, "{}", task.text());
    let image = p.server.req(
        "GET",
        &format!("/v2/images/{}", image_id(&p.task_a)),
        &a,
        None,
    );
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(image.json()["owner"], "project-a");
}

#[test]
fn test_other_project_task_is_forbidden_and_unlisted() {
    let p = two_projects();
    let b = member("project-b");
    let id = p.task_a["id"].as_str().expect("id");
    let resp = p.server.req("GET", &format!("/v2/tasks/{id}"), &b, None);
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(
        listed(&p.server, "/v2/tasks", &b, "tasks"),
        set(&[p.task_b["id"].as_str().expect("id")])
    );
}

#[test]
fn test_other_project_image_is_not_found_and_unlisted() {
    let p = two_projects();
    let b = member("project-b");
    let id = image_id(&p.task_a);
    for path in [format!("/v2/images/{id}"), format!("/v2/images/{id}/file")] {
        let resp = p.server.req("GET", &path, &b, None);
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
    }
    let delete = p
        .server
        .req("DELETE", &format!("/v2/images/{id}"), &b, None);
    assert_eq!(delete.status, 404, "{}", delete.text());
    assert_eq!(
        listed(&p.server, "/v2/images", &b, "images"),
        set(&[image_id(&p.task_b)])
    );
}

#[test]
fn test_admin_sees_both_projects_tasks_and_images() {
    let p = two_projects();
    let admin = [
        ("X-Project-Id", "ops"),
        ("X-User-Id", "root"),
        ("X-Roles", "admin"),
    ];
    let tasks = set(&[
        p.task_a["id"].as_str().unwrap(),
        p.task_b["id"].as_str().unwrap(),
    ]);
    assert_eq!(listed(&p.server, "/v2/tasks", &admin, "tasks"), tasks);
    let images = set(&[image_id(&p.task_a), image_id(&p.task_b)]);
    assert_eq!(listed(&p.server, "/v2/images", &admin, "images"), images);
    let id = image_id(&p.task_a);
    let resp = p
        .server
        .req("GET", &format!("/v2/images/{id}"), &admin, None);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn test_image_tasks_lists_own_import_and_other_project_gets_404() {
    let p = two_projects();
    let id = image_id(&p.task_a);
    let path = format!("/v2/images/{id}/tasks");
    let own = p.server.req("GET", &path, &member("project-a"), None);
    assert_eq!(own.status, 200, "{}", own.text());
    let body = own.json();
    let tasks = body["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{body}");
    assert_eq!(tasks[0]["id"], p.task_a["id"], "{body}");
    assert_eq!(tasks[0]["status"], "success", "{body}");
    assert_eq!(tasks[0]["image_id"], id, "{body}");
    assert_eq!(tasks[0]["result"]["image_id"], id, "{body}");
    assert_eq!(tasks[0]["deleted"], false, "{body}");
    let other = p.server.req("GET", &path, &member("project-b"), None);
    assert_eq!(other.status, 404, "{}", other.text());
}
