//! `GET /v2/tasks` and `GET /v2/images`: paging with `limit`/`marker`/`next`, sorting and
//! filters, on a server holding a few finished imports.

use std::collections::BTreeSet;
use std::thread;

use serde_json::Value;

use super::harness::{import_input, raw_disk, FileServer, Server};
use super::imports::image_with_data;
use crate::common::scratch;

/// A server with three successful imports (`alpha` raw, `bravo` qcow2, `charlie` raw) and two
/// failed ones (404 sources); returns it with the final tasks in creation order.
fn populated() -> (Server, FileServer, tempfile::TempDir, Vec<Value>) {
    let dir = scratch();
    raw_disk(dir.path(), "small.raw", 1 << 20, 2);
    image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let inputs = [
        import_input(&files.url("small.raw"), "raw", "alpha"),
        import_input(&files.url("gone-1.raw"), "raw", "lost-1"),
        import_input(&files.url("small.qcow2"), "qcow2", "bravo"),
        import_input(&files.url("gone-2.raw"), "raw", "lost-2"),
        import_input(&files.url("small.raw"), "raw", "charlie"),
    ];
    let ids: Vec<String> = inputs
        .into_iter()
        .map(|input| {
            server.create_task(input)["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    let tasks: Vec<Value> = ids.iter().map(|id| server.wait_task(id)).collect();
    let statuses: Vec<&str> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["success", "failure", "success", "failure", "success"],
        "{tasks:?}"
    );
    (server, files, dir, tasks)
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array: {list}"))
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Follows `next` links from `first_path`; returns every page's ids in order.
fn walk_pages(server: &Server, first_path: &str, key: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = first_path.to_owned();
    for _ in 0..20 {
        let resp = server.get(&path);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let body = resp.json();
        let page = ids(&body, key);
        let done = page.is_empty();
        pages.push(page);
        match body.get("next").and_then(Value::as_str) {
            Some(next) if !done => path = next.to_owned(),
            _ => return pages,
        }
    }
    panic!("paging did not end");
}

#[test]
fn test_task_list_limit_and_marker_pages_through_every_task() {
    let (server, _files, _dir, tasks) = populated();
    let first = server.get("/v2/tasks?limit=2").json();
    assert_eq!(first["first"], "/v2/tasks?limit=2", "{first}");
    assert_eq!(first["schema"], "/v2/schemas/tasks");
    assert!(
        first["next"]
            .as_str()
            .is_some_and(|n| n.contains("marker=")),
        "{first}"
    );
    let pages = walk_pages(&server, "/v2/tasks?limit=2", "tasks");
    assert!(pages.iter().all(|p| p.len() <= 2), "{pages:?}");
    let seen: Vec<String> = pages.into_iter().flatten().collect();
    // Default order: created_at desc, then id desc (Glance's tiebreakers, same direction).
    let mut want: Vec<(String, String)> = tasks
        .iter()
        .map(|t| {
            (
                t["created_at"].as_str().unwrap().to_owned(),
                t["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    want.sort();
    want.reverse();
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(seen, want);
}

#[test]
fn test_task_list_entries_are_stubs_without_input_result_message() {
    let (server, _files, _dir, _tasks) = populated();
    let list = server.get("/v2/tasks").json();
    for entry in list["tasks"].as_array().expect("tasks") {
        let keys: BTreeSet<&str> = entry
            .as_object()
            .expect("obj")
            .keys()
            .map(String::as_str)
            .collect();
        let want: BTreeSet<&str> = [
            "id",
            "type",
            "status",
            "owner",
            "created_at",
            "updated_at",
            "expires_at",
            "self",
            "schema",
        ]
        .into_iter()
        .collect();
        assert_eq!(keys, want, "{entry}");
    }
}

#[test]
fn test_task_list_sort_key_status_asc_orders_failures_first() {
    let (server, _files, _dir, _tasks) = populated();
    let list = server.get("/v2/tasks?sort_key=status&sort_dir=asc").json();
    let statuses: Vec<&str> = list["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        ["failure", "failure", "success", "success", "success"]
    );
}

#[test]
fn test_task_list_status_and_type_filters_select_matching_tasks() {
    let (server, _files, _dir, tasks) = populated();
    let by_status = |status: &str| -> BTreeSet<String> {
        tasks
            .iter()
            .filter(|t| t["status"] == status)
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let failed: BTreeSet<String> = ids(&server.get("/v2/tasks?status=failure").json(), "tasks")
        .into_iter()
        .collect();
    assert_eq!(failed, by_status("failure"));
    let ok: BTreeSet<String> = ids(
        &server
            .get("/v2/tasks?status=success&type=import&limit=3")
            .json(),
        "tasks",
    )
    .into_iter()
    .collect();
    assert_eq!(ok, by_status("success"));
    let none = server.get("/v2/tasks?status=processing").json();
    assert_eq!(ids(&none, "tasks"), Vec::<String>::new());
}

#[test]
fn test_task_list_bad_parameters_return_glance_400s() {
    let server = Server::start(&[]);
    for (query, text) in [
        ("status=bogus", "Invalid status value: bogus"),
        ("type=export", "Invalid type value: export"),
        ("limit=-1", "limit param must be positive"),
        ("marker=nope", "Invalid marker format"),
        ("sort_dir=up", "Invalid sort direction: up"),
    ] {
        let resp = server.get(&format!("/v2/tasks?{query}"));
        assert_eq!(resp.status, 400, "{query}: {}", resp.text());
        assert_eq!(resp.error_message(), text, "{query}");
    }
}

#[test]
fn test_image_list_limit_and_marker_pages_through_every_image() {
    let (server, _files, _dir, tasks) = populated();
    let pages = walk_pages(&server, "/v2/images?limit=2", "images");
    assert!(pages.iter().all(|p| p.len() <= 2), "{pages:?}");
    let seen: Vec<String> = pages.into_iter().flatten().collect();
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an image was listed twice: {seen:?}"
    );
    let want: BTreeSet<String> = tasks
        .iter()
        .filter_map(|t| t["result"]["image_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);
    let first = server.get("/v2/images?limit=2").json();
    assert_eq!(first["schema"], "/v2/schemas/images");
    assert!(
        first["first"]
            .as_str()
            .is_some_and(|f| f.starts_with("/v2/images")),
        "{first}"
    );
}

#[test]
fn test_image_list_filters_by_name_disk_format_and_status() {
    let (server, _files, _dir, _tasks) = populated();
    let names = |query: &str| -> BTreeSet<String> {
        let list = server.get(&format!("/v2/images?{query}"));
        assert_eq!(list.status, 200, "{query}: {}", list.text());
        list.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| (*s).to_owned()).collect() };
    assert_eq!(names("name=bravo"), set(&["bravo"]));
    assert_eq!(names("disk_format=raw"), set(&["alpha", "charlie"]));
    assert_eq!(
        names("disk_format=in:qcow2,raw"),
        set(&["alpha", "bravo", "charlie"])
    );
    assert_eq!(names("status=active"), set(&["alpha", "bravo", "charlie"]));
    assert_eq!(names("status=queued"), set(&[]));
}

#[test]
fn test_image_list_sort_by_name_orders_both_syntaxes() {
    let (server, _files, _dir, _tasks) = populated();
    let order = |query: &str| -> Vec<String> {
        let list = server.get(&format!("/v2/images?{query}"));
        assert_eq!(list.status, 200, "{query}: {}", list.text());
        list.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(order("sort=name:asc"), ["alpha", "bravo", "charlie"]);
    assert_eq!(
        order("sort_key=name&sort_dir=desc"),
        ["charlie", "bravo", "alpha"]
    );
    assert_eq!(order("sort=name:desc&limit=2"), ["charlie", "bravo"]);
}

/// Tasks of one project written straight into a stopped server's RocksDB (seeding 1,000 tasks
/// through the API would take minutes), each with `property_bytes` of image properties.
fn seed_tasks(server: &mut Server, project: &str, count: u32, property_bytes: usize) {
    use sluice_server::meta::rocks::RocksMeta;
    use sluice_server::meta::TaskStatus;

    server.kill9();
    let meta = RocksMeta::open(&server.data_dir.join("meta")).expect("opening the meta store");
    let value = "v".repeat(500);
    let properties: serde_json::Map<String, Value> = (0..property_bytes / 512)
        .map(|n| (format!("p{n:03}"), Value::String(value.clone())))
        .collect();
    for n in 0..count {
        let mut task =
            sluice_server::meta::sample_task(&format!("00000000-0000-4000-8000-{n:012}"));
        task.owner = project.to_owned();
        task.status = TaskStatus::Failure;
        task.created_at = 1_700_000_000 + i64::from(n);
        task.expires_at = Some(4_000_000_000);
        task.input["image_properties"] = Value::Object(properties.clone());
        meta.put_task(&task).expect("seeding a task");
    }
    drop(meta);
    server.restart();
}

/// The peak resident set of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// Issue #9, "listing is a full scan": with 1,000 tasks of 60 KB each in one project, 8
/// concurrent lists (by another project, and by the owner) keep the server's peak RSS under
/// 128 MiB, and each answers the right page.
#[test]
fn test_task_list_of_big_store_memory_bounded_by_page() {
    let mut server = Server::start(&[]);
    seed_tasks(&mut server, "p-big", 1000, 60 << 10);
    let other = super::harness::member("p-other");
    let owner = super::harness::member("p-big");
    thread::scope(|s| {
        let lists: Vec<_> = (0..8)
            .map(|n| {
                let (server, other, owner) = (&server, &other, &owner);
                s.spawn(move || {
                    if n % 2 == 0 {
                        let resp = server.req("GET", "/v2/tasks?limit=1", other, None);
                        assert_eq!(resp.status, 200, "{}", resp.text());
                        assert_eq!(ids(&resp.json(), "tasks"), Vec::<String>::new());
                    } else {
                        let resp = server.req("GET", "/v2/tasks?limit=25", owner, None);
                        assert_eq!(resp.status, 200, "{}", resp.text());
                        let page = ids(&resp.json(), "tasks");
                        assert_eq!(page.len(), 25);
                        assert_eq!(page[0], "00000000-0000-4000-8000-000000000999");
                    }
                })
            })
            .collect();
        for list in lists {
            list.join().expect("list thread");
        }
    });
    let peak = peak_rss(server.pid().expect("running"));
    assert!(
        peak < 128 << 20,
        "peak RSS {} MiB during 8 lists",
        peak >> 20
    );
}
