//! Quotas, fair queues, deadlines and the minimum rate (issue #9, "Quotas"): Glance's
//! unified limits (`image_size_total` in MiB, `image_count_total`, `image_count_uploading`)
//! with per-project overrides, a per-project cap on waiting tasks, workers shared between
//! projects, and imports that cannot hold a worker for ever.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{
    assert_no_files, import_input, member, raw_disk, FileServer, Resp, Serve, Server,
};
use crate::common::{qemu_img_create, scratch};

/// Glance's `LimitExceeded` text that opens every 413 for a quota.
const GLANCE_413: &str = "The request returned a 413 Request Entity Too Large. This generally \
                          means that rate limiting or a quota threshold was breached.";

/// How long polling for a condition may take.
const WAIT: Duration = Duration::from_secs(30);

fn task(input: Value) -> Value {
    json!({"type": "import", "input": input})
}

fn id(task: &Value) -> &str {
    task["id"].as_str().expect("task id")
}

/// Asserts `resp` is Glance's 413 for a unified limit, naming `over` (e.g. "Resource
/// image_count_total is over limit of 1 due to current usage 1 and delta 1").
fn assert_over_limit(resp: &Resp, project: &str, over: &str) {
    assert_eq!(resp.status, 413, "{}", resp.text());
    let message = resp.error_message();
    assert!(message.starts_with(GLANCE_413), "{message}");
    assert!(
        message.contains(&format!("Project {project} is over a limit for [{over}]")),
        "{message}"
    );
}

/// Polls until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw disk of `kib` KiB with data in it.
fn raw(dir: &Path, name: &str, kib: u64) {
    raw_disk(dir, name, kib << 10, 2);
}

#[test]
fn test_quota_image_count_total_over_limit_is_413_with_glance_message() {
    let dir = scratch();
    raw(dir.path(), "a.raw", 256);
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--quota-image-count-total", "1"]);
    let who = member("count-project");
    let input = || import_input(&files.url("a.raw"), "raw", "a");

    let first = server.create_task_as(input(), &who);
    assert_eq!(server.wait_task(id(&first))["status"], "success");
    let resp = server.post_task(&task(input()), &who);
    assert_over_limit(
        &resp,
        "count-project",
        "Resource image_count_total is over limit of 1 due to current usage 1 and delta 1",
    );
    // Refused before the task was stored: the project still has one task.
    let tasks = server.req("GET", "/v2/tasks", &who, None).json();
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(1), "{tasks}");
    // Another project has its own count.
    let other = server.create_task_as(input(), &member("other-project"));
    assert_eq!(server.wait_task(id(&other))["status"], "success");
}

#[test]
fn test_quota_image_count_uploading_over_limit_is_413_with_glance_message() {
    let dir = scratch();
    raw(dir.path(), "stall.raw", 256);
    raw(dir.path(), "a.raw", 256);
    let files = FileServer::start(dir.path());
    files.set("stall.raw", Serve::StallAfter(4096));
    let server = Server::start(&["--quota-image-count-uploading", "1"]);
    let who = member("busy-project");

    let stalled = server.create_task_as(import_input(&files.url("stall.raw"), "raw", "s"), &who);
    wait_until("the import to stall", || files.stalled() == 1);
    let resp = server.post_task(&task(import_input(&files.url("a.raw"), "raw", "a")), &who);
    assert_over_limit(
        &resp,
        "busy-project",
        "Resource image_count_uploading is over limit of 1 due to current usage 1 and delta 1",
    );
    let other = server.create_task_as(
        import_input(&files.url("a.raw"), "raw", "a"),
        &member("idle-project"),
    );
    assert_eq!(server.wait_task(id(&other))["status"], "success");
    let still = server.get(&format!("/v2/tasks/{}", id(&stalled))).json();
    assert_eq!(still["status"], "processing", "{still}");
}

#[test]
fn test_quota_image_size_total_counts_stored_bytes_with_project_overrides() {
    let dir = scratch();
    raw(dir.path(), "768k.raw", 768);
    let files = FileServer::start(dir.path());
    let config = dir.path().join("sluice.toml");
    let write_config = |small: u64| {
        std::fs::write(
            &config,
            format!(
                "[quotas]\nimage_size_total = 100\n\
                 [quotas.projects.\"small-project\"]\nimage_size_total = {small}\n"
            ),
        )
        .expect("config");
    };
    write_config(1);
    let mut server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let small = member("small-project");
    let input = || import_input(&files.url("768k.raw"), "raw", "img");

    let first = server.create_task_as(input(), &small);
    assert_eq!(server.wait_task(id(&first))["status"], "success");
    // 768 KiB stored + 768 KiB announced > 1 MiB: the import fails before fetching a byte.
    let second = server.create_task_as(input(), &small);
    let done = server.wait_task(id(&second));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "quota_exceeded", "{done}");
    let message = done["message"].as_str().expect("message");
    assert!(
        message.contains(
            "Resource image_size_total is over limit of 1 due to current usage 1 and delta 1"
        ),
        "{message}"
    );
    assert!(server.files_under("tmp").is_empty());
    // The deployment default (100 MiB) applies to everyone else.
    let other = server.create_task_as(input(), &member("big-project"));
    assert_eq!(server.wait_task(id(&other))["status"], "success");

    // Lowered to 0 MiB: the project is over its limit already and is refused at create.
    write_config(0);
    server.restart();
    let resp = server.post_task(&task(input()), &small);
    assert_over_limit(
        &resp,
        "small-project",
        "Resource image_size_total is over limit of 0 due to current usage 1 and delta 0",
    );
}

#[test]
fn test_quota_1_tib_qcow2_to_raw_is_refused_at_its_header() {
    let dir = scratch();
    let image = qemu_img_create(dir.path(), "1t.qcow2", "qcow2", "", "1T");
    let image_len = std::fs::metadata(&image).expect("image").len();
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--quota-image-size-total", "1024"]);
    let who = member("convert-project");
    let mut input = import_input(&files.url("1t.qcow2"), "qcow2", "big");
    input["output_format"] = json!("raw");

    let started = Instant::now();
    let created = server.create_task_as(input.clone(), &who);
    let done = server.wait_task(id(&created));
    let took = started.elapsed();
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "quota_exceeded", "{done}");
    let message = done["message"].as_str().expect("message");
    assert!(
        message.contains(
            "Resource image_size_total is over limit of 1024 due to current usage 0 and delta \
             1048576"
        ),
        "{message}"
    );
    // Converting would write and hash 1 TiB (about an hour of CPU); refused at the header.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_no_files(&server);

    // Stored as received, the same image costs its own few hundred KiB.
    input["output_format"] = json!("none");
    let kept = server.create_task_as(input, &who);
    let done = server.wait_task(id(&kept));
    assert_eq!(done["status"], "success", "{done}");
    let image_id = done["result"]["image_id"].as_str().expect("image id");
    let stored = server.get(&format!("/v2/images/{image_id}")).json();
    assert_eq!(stored["size"], image_len, "{stored}");
}

#[test]
fn test_quota_waiting_cap_and_fair_share_between_projects() {
    let dir = scratch();
    raw(dir.path(), "stall.raw", 256);
    raw(dir.path(), "b.raw", 256);
    let files = FileServer::start(dir.path());
    files.set("stall.raw", Serve::StallAfter(4096));
    let server = Server::start(&[
        "--workers",
        "1",
        "--quota-tasks-waiting",
        "2",
        "--import-timeout-secs",
        "2",
    ]);
    let a = member("project-a");
    let stall = |n: u32| import_input(&files.url(&format!("stall.raw?a{n}")), "raw", "a");

    let a1 = server.create_task_as(stall(1), &a);
    wait_until("a1 to stall", || files.stalled() == 1);
    let queued: Vec<Value> = (2..=3)
        .map(|n| server.create_task_as(stall(n), &a))
        .collect();
    // Project A has filled its own share of the queue, not the shared queue.
    let resp = server.post_task(&task(stall(4)), &a);
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("retry-after").is_some());
    assert!(
        resp.error_message()
            .contains("project-a has 2 tasks waiting"),
        "{}",
        resp.error_message()
    );
    let b1 = server.create_task_as(
        import_input(&files.url("b.raw"), "raw", "b"),
        &member("project-b"),
    );

    // A's running import hits its deadline; B's import is the very next to start.
    let done = server.wait_task(id(&a1));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "import_timeout", "{done}");
    assert_eq!(server.wait_task(id(&b1))["status"], "success");
    let log = files.request_log();
    assert_eq!(
        log.get(..2),
        Some(&["/stall.raw?a1".to_owned(), "/b.raw".to_owned()][..])
    );
    for t in &queued {
        let waiting = server.get(&format!("/v2/tasks/{}", id(t))).json();
        assert_ne!(waiting["status"], "success", "{waiting}");
    }
}

#[test]
fn test_quota_trickling_or_silent_source_fails_within_the_window_and_frees_the_worker() {
    let dir = scratch();
    raw(dir.path(), "trickle.raw", 256);
    raw(dir.path(), "silent.raw", 256);
    raw(dir.path(), "fine.raw", 256);
    let files = FileServer::start(dir.path());
    files.set("trickle.raw", Serve::Trickle(Duration::from_secs(1)));
    files.set("silent.raw", Serve::StallAfter(0));
    let server = Server::start(&[
        "--workers",
        "1",
        "--min-rate-bytes-per-sec",
        "1024",
        "--min-rate-window-secs",
        "2",
    ]);
    for name in ["trickle.raw", "silent.raw"] {
        let started = Instant::now();
        let created = server.create_task(import_input(&files.url(name), "raw", name));
        let done = server.wait_task(id(&created));
        let took = started.elapsed();
        assert_eq!(done["status"], "failure", "{name}: {done}");
        assert_eq!(done["reason"], "source_too_slow", "{name}: {done}");
        assert!(
            done["message"]
                .as_str()
                .is_some_and(|m| m.contains("below the minimum of 1024 bytes/s")),
            "{name}: {done}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{name}: failed after {took:?}"
        );
    }
    assert_no_files(&server);
    // The single worker is free again.
    let fine = server.create_task(import_input(&files.url("fine.raw"), "raw", "fine"));
    assert_eq!(server.wait_task(id(&fine))["status"], "success");
}
