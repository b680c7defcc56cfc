//! `sluice serve` with its metadata in PostgreSQL (`--meta postgres`): a throwaway cluster
//! per test ([`PgCluster`]), the real binary, one import and one upload, a restart; two
//! nodes claiming each other's tasks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_server::meta::postgres::PgMeta;
use sluice_server::meta::testing_pg::PgCluster;
use sluice_server::meta::MetaStore;

use super::harness::{import_input, raw_disk, FileServer, Serve, Server, ADMIN};
use super::imports::{assert_import_ok, image_with_data};
use super::upload::assert_upload_ok;
use crate::common::{read, scratch};

#[test]
fn test_serve_on_postgres_imports_uploads_and_keeps_them_across_a_restart() {
    let cluster = PgCluster::start();
    let url = cluster.database("serve");
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let mut server = Server::start(&["--meta", "postgres", "--meta-postgres-url", &url]);
    let imported = assert_import_ok(&server, &files, dir.path(), "disk.qcow2", "qcow2");
    assert_upload_ok(&server, &raw_disk(dir.path(), "d.raw", 8 << 20, 4), "raw");
    assert!(
        !server.data_dir.join("meta").exists(),
        "no RocksDB database beside PostgreSQL"
    );

    server.restart();
    let id = imported["id"].as_str().expect("image id");
    let again = server.get(&format!("/v2/images/{id}"));
    assert_eq!(again.status, 200, "{}", server.log_text());
    assert_eq!(again.json()["status"], "active");
    let listed = server.get("/v2/images").json();
    assert_eq!(
        listed["images"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
}

/// `--meta postgres` without a URL, or with one that does not parse, is refused before
/// anything listens; a server that is not there fails the start, naming PostgreSQL.
#[test]
fn test_serve_on_postgres_bad_config_refused_before_listening() {
    let dir = scratch();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .env_remove("SLUICE_META_POSTGRES_URL")
            .output()
            .expect("running sluice")
    };
    let port = super::harness::free_port();
    for (args, needle) in [
        (vec!["--meta", "postgres"], "meta.postgres.url".to_owned()),
        (
            vec![
                "--meta",
                "postgres",
                "--meta-postgres-url",
                "postgres://x@[bad",
            ],
            "not a PostgreSQL URL".to_owned(),
        ),
        (
            vec![
                "--meta",
                "postgres",
                "--meta-postgres-url",
                &format!("postgres://sluice@127.0.0.1:{port}/none"),
            ],
            "PostgreSQL".to_owned(),
        ),
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("sluice listening"), "{stderr}");
    }
}

/// A node `id` on the PostgreSQL database at `url` that polls for claims every 100 ms, with
/// `extra` flags; no minimum rate (a stalled source holds its worker until the test lets it
/// go).
fn claiming_node(url: &str, id: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--meta",
        "postgres",
        "--meta-postgres-url",
        url,
        "--node-id",
        id,
        "--claim-interval-ms",
        "100",
        "--min-rate-bytes-per-sec",
        "0",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Two nodes on one PostgreSQL, one worker each: a task received by node A runs on node B
/// while A's worker is busy; a `glance-direct` import received by A (its stage is in A's
/// data directory) is never claimed by the idle B, and runs on A once A's worker is free.
#[test]
fn test_two_nodes_on_postgres_claim_each_others_tasks_but_not_another_nodes_stage() {
    let cluster = PgCluster::start();
    let url = cluster.database("claims");
    let dir = scratch();
    let src = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let stalling = FileServer::start(dir.path());
    stalling.set("disk.qcow2", Serve::StallAfter(4096));
    let files = FileServer::start(dir.path());
    let node = |id: &str| claiming_node(&url, id, &["--workers", "1"]);
    let a = node("node-a");
    // A's only worker is held by an import whose source stalls (B is not up yet).
    let held = a.create_task(import_input(&stalling.url("disk.qcow2"), "qcow2", "held"));
    let held = held["id"].as_str().expect("task id").to_owned();
    wait_until(&a, "the stalled import to hold A's worker", || {
        stalling.stalled() == 1
    });
    let b = node("node-b");
    // Live progress on the node running the task; the other shows its status only.
    let on_a = a.get(&format!("/v2/tasks/{held}")).json();
    assert_eq!(on_a["status"], "processing", "{on_a}");
    assert!(on_a["progress"]["bytes_received"].is_u64(), "{on_a}");
    let on_b = b.get(&format!("/v2/tasks/{held}")).json();
    assert_eq!(on_b["status"], "processing", "{on_b}");
    assert!(on_b.get("progress").is_none(), "{on_b}");

    // Received by A, run by B.
    let moved = a.create_task(import_input(&files.url("disk.qcow2"), "qcow2", "moved"));
    let moved = moved["id"].as_str().expect("task id").to_owned();
    let done = a.wait_task(&moved);
    assert_eq!(done["status"], "success", "{done}\n{}", b.log_text());
    assert!(ran(&b, &moved) && !ran(&a, &moved), "{}", b.log_text());
    let image = done["result"]["image_id"].as_str().expect("image id");
    let down = b.get(&format!("/v2/images/{image}/file"));
    assert!(down.body == read(&src), "downloaded bytes differ");

    // A glance-direct import received by A waits for A, however idle B is.
    let staged = a.create_image("staged", "qcow2");
    let resp = a.req(
        "PUT",
        &format!("/v2/images/{staged}/stage"),
        &[("Content-Type", "application/octet-stream")],
        Some(&read(&src)),
    );
    assert_eq!(resp.status, 204, "{}\n{}", resp.text(), a.log_text());
    let body = json!({"method": {"name": "glance-direct"}}).to_string();
    let resp = a.req(
        "POST",
        &format!("/v2/images/{staged}/import"),
        ADMIN,
        Some(body.as_bytes()),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let tasks = b.get(&format!("/v2/images/{staged}/tasks")).json();
    let pinned = tasks["tasks"][0]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    // Ten of B's claim intervals.
    thread::sleep(Duration::from_secs(1));
    let waiting = b.get(&format!("/v2/tasks/{pinned}")).json();
    assert_eq!(waiting["status"], "pending", "{waiting}\n{}", b.log_text());
    // A's worker comes free (the stalling source goes away): A runs it.
    drop(stalling);
    let failed = a.wait_task(&held);
    assert_eq!(failed["status"], "failure", "{failed}");
    let done = b.wait_task(&pinned);
    assert_eq!(done["status"], "success", "{done}\n{}", a.log_text());
    assert!(ran(&a, &pinned) && !ran(&b, &pinned), "{}", a.log_text());
    let img = b.get(&format!("/v2/images/{staged}")).json();
    assert_eq!(img["status"], "active", "{img}");
}

/// Two nodes on one PostgreSQL, one import per project (`per_project_imports = 1`) and one
/// task waiting per project (`tasks_waiting = 1`): while node A runs the project's import,
/// the idle node B does not start the project's next task (the cap holds across nodes), and
/// a third task is refused through B, counting the task waiting from A (503).
#[test]
fn test_two_nodes_on_postgres_share_the_per_project_caps() {
    let cluster = PgCluster::start();
    let url = cluster.database("caps");
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let stalling = FileServer::start(dir.path());
    stalling.set("disk.qcow2", Serve::StallAfter(4096));
    let files = FileServer::start(dir.path());
    let node = |id: &str| {
        let caps = ["--per-project-imports", "1", "--quota-tasks-waiting", "1"];
        claiming_node(&url, id, &caps)
    };
    let a = node("node-a");
    let b = node("node-b");
    let held = a.create_task(import_input(&stalling.url("disk.qcow2"), "qcow2", "held"));
    let held = held["id"].as_str().expect("task id").to_owned();
    wait_until(&a, "the stalled import to start", || {
        stalling.stalled() == 1
    });
    let next = a.create_task(import_input(&files.url("disk.qcow2"), "qcow2", "next"));
    let next = next["id"].as_str().expect("task id").to_owned();
    let refused = b.post_task(
        &json!({"type": "import", "input": import_input(&files.url("disk.qcow2"), "qcow2", "third")}),
        ADMIN,
    );
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.error_message().contains("1 tasks waiting"),
        "{}",
        refused.text()
    );
    // Ten claim intervals of two idle nodes: the project's import still runs alone.
    thread::sleep(Duration::from_secs(1));
    let waiting = b.get(&format!("/v2/tasks/{next}")).json();
    assert_eq!(waiting["status"], "pending", "{waiting}\n{}", b.log_text());
    // The queue is the cluster's: both nodes show the one task waiting, A its import running.
    for (node, running) in [(&a, 1), (&b, 0)] {
        let metrics = node.get("/metrics").text();
        assert!(
            metrics.lines().any(|l| l == "sluice_import_queue_depth 1")
                && metrics
                    .lines()
                    .any(|l| l == format!("sluice_import_workers_busy {running}")),
            "{metrics}"
        );
        let detail = node.req("GET", "/healthcheck?detail", ADMIN, None).json();
        assert_eq!(detail["imports"]["waiting"], 1, "{detail}");
        assert_eq!(detail["imports"]["running"], running, "{detail}");
    }
    // The held import ends: the next one runs, on whichever node.
    drop(stalling);
    assert_eq!(a.wait_task(&held)["status"], "failure");
    let done = b.wait_task(&next);
    assert_eq!(done["status"], "success", "{done}");
}

/// Two nodes on one PostgreSQL with `image_count_uploading = 1`: while node A receives the
/// project's upload, node B refuses the project's next upload and next task (413, Glance's
/// text), counting A's upload from its writer lease; once it is done, B takes both.
#[test]
fn test_two_nodes_on_postgres_count_each_others_uploads_for_image_count_uploading() {
    let cluster = PgCluster::start();
    let url = cluster.database("uploading");
    let dir = scratch();
    let src = raw_disk(dir.path(), "up.raw", 8 << 20, 4);
    let data = read(&src);
    let files = FileServer::start(dir.path());
    let node = |id: &str| claiming_node(&url, id, &["--quota-image-count-uploading", "1"]);
    let a = node("node-a");
    let b = node("node-b");
    let first = a.create_image("first", "raw");
    let held = hold_upload(
        &a,
        &format!("/v2/images/{first}/file"),
        &data[..1 << 20],
        data.len(),
    );
    wait_until(&a, "the upload to be saving", || {
        a.get(&format!("/v2/images/{first}")).json()["status"] == "saving"
    });

    let second = b.create_image("second", "raw");
    let over = "Resource image_count_uploading is over limit of 1 due to current usage 1";
    assert_upload_refused(&b, &second, &data, over);
    let task = json!({"type": "import", "input": import_input(&files.url("up.raw"), "raw", "t")});
    let refused = b.post_task(&task, ADMIN);
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(refused.text().contains(over), "{}", refused.text());

    finish_held(held, &data[1 << 20..]);
    let image = b.get(&format!("/v2/images/{first}")).json();
    assert_eq!(image["status"], "active", "{image}");
    let resp = b.req(
        "PUT",
        &format!("/v2/images/{second}/file"),
        &[("Content-Type", "application/octet-stream")],
        Some(&data),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
    let resp = b.post_task(&task, ADMIN);
    assert_eq!(resp.status, 201, "{}", resp.text());
}

/// Two nodes on one PostgreSQL with `image_size_total = 12` MiB: while node A receives the
/// project's 8 MiB upload, node B counts what A has charged so far (from A's writer lease,
/// renewed every second): B refuses the project's next 8 MiB upload (413, Glance's text),
/// and the project's import task fails with `quota_exceeded` on whichever node runs it;
/// A's upload is unaffected.
#[test]
fn test_two_nodes_on_postgres_count_each_others_charges_for_image_size_total() {
    let cluster = PgCluster::start();
    let url = cluster.database("size_total");
    let dir = scratch();
    let src = raw_disk(dir.path(), "up.raw", 8 << 20, 4);
    let data = read(&src);
    let files = FileServer::start(dir.path());
    let flags = ["--quota-image-size-total", "12", "--lease-secs", "3"];
    let a = claiming_node(&url, "node-a", &flags);
    let b = claiming_node(&url, "node-b", &flags);
    let first = a.create_image("first", "raw");
    let held = hold_upload(
        &a,
        &format!("/v2/images/{first}/file"),
        &data[..7 << 20],
        data.len(),
    );
    wait_writer_charged(&a, &url, &first, 5 << 20);

    // B's view of the project's usage is the cluster's: A's upload in flight counts.
    let usage = b.get("/v2/info/usage").json()["usage"].clone();
    assert!(
        usage["image_size_total"]["usage"].as_u64() >= Some(5),
        "{usage}"
    );
    assert_eq!(usage["image_count_uploading"]["usage"], 1, "{usage}");
    let second = b.create_image("second", "raw");
    assert_upload_refused(
        &b,
        &second,
        &data,
        "Resource image_size_total is over limit of 12",
    );
    let task = json!({"type": "import", "input": import_input(&files.url("up.raw"), "raw", "t")});
    let resp = b.post_task(&task, ADMIN);
    assert_eq!(resp.status, 201, "{}", resp.text());
    let id = resp.json()["id"].as_str().expect("task id").to_owned();
    let done = b.wait_task(&id);
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "quota_exceeded", "{done}");

    finish_held(held, &data[7 << 20..]);
    let image = b.get(&format!("/v2/images/{first}")).json();
    assert_eq!(image["status"], "active", "{image}");
}

/// Two nodes on one PostgreSQL with `image_stage_total = 12` MiB: an 8 MiB stage on node A
/// counts on node B while it streams in (by what A's writer lease says it received) and once
/// complete (from its image record), so B refuses the project's next 8 MiB stage both times
/// (413, Glance's text) and shows the cluster's staged bytes in `/v2/info/usage`; once A's
/// stage is imported, B takes the stage.
#[test]
fn test_two_nodes_on_postgres_count_each_others_stages_for_image_stage_total() {
    let cluster = PgCluster::start();
    let url = cluster.database("stage_total");
    let dir = scratch();
    let data = read(&raw_disk(dir.path(), "st.raw", 8 << 20, 4));
    let flags = ["--quota-image-stage-total", "12", "--lease-secs", "3"];
    let a = claiming_node(&url, "node-a", &flags);
    let b = claiming_node(&url, "node-b", &flags);
    let stage = |node: &Server, id: &str| {
        node.req(
            "PUT",
            &format!("/v2/images/{id}/stage"),
            &[("Content-Type", "application/octet-stream")],
            Some(&data),
        )
    };
    let first = a.create_image("first", "raw");
    let second = b.create_image("second", "raw");
    let stage_path = format!("/v2/images/{first}/stage");
    let held = hold_upload(&a, &stage_path, &data[..7 << 20], data.len());
    wait_writer_charged(&a, &url, &first, 5 << 20);
    let refused = stage(&b, &second);
    let over = "Resource image_stage_total is over limit of 12";
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(refused.text().contains(over), "{}", refused.text());
    finish_held(held, &data[7 << 20..]);

    let usage = b.get("/v2/info/usage").json()["usage"].clone();
    assert_eq!(usage["image_stage_total"]["usage"], 8, "{usage}");
    let refused = stage(&b, &second);
    let over = "Resource image_stage_total is over limit of 12 due to current usage 8";
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(refused.text().contains(over), "{}", refused.text());

    let body = json!({"method": {"name": "glance-direct"}}).to_string();
    let import = a.req(
        "POST",
        &format!("/v2/images/{first}/import"),
        ADMIN,
        Some(body.as_bytes()),
    );
    assert_eq!(import.status, 202, "{}", import.text());
    wait_until(&a, "the staged image to be imported", || {
        a.get(&format!("/v2/images/{first}")).json()["status"] == "active"
    });
    let staged = stage(&b, &second);
    assert_eq!(staged.status, 204, "{}", staged.text());
}

/// Waits until the writer lease of image `id` (read from the database at `url`) says its
/// upload or stage, held by `node`, has charged at least `bytes`: its renewals write it.
fn wait_writer_charged(node: &Server, url: &str, id: &str, bytes: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let meta = rt.block_on(PgMeta::open(url, 1)).expect("the test's view");
    wait_until(
        node,
        &format!("{bytes} bytes charged by image {id}'s writer"),
        || {
            let image = rt.block_on(meta.get_image(id)).expect("read");
            image
                .and_then(|i| i.writer)
                .is_some_and(|w| w.charged >= bytes)
        },
    );
}

/// A `PUT` of `len` bytes to `path` (an image's `file` or `stage`) through `node`, held after
/// its `first` bytes.
fn hold_upload(node: &Server, path: &str, first: &[u8], len: usize) -> TcpStream {
    let mut held = TcpStream::connect(&node.addr).expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    );
    held.write_all(head.as_bytes()).expect("head");
    held.write_all(first).expect("part of the body");
    held
}

/// Sends the `rest` of a held upload ([`hold_upload`]); asserts it is answered 204.
fn finish_held(mut held: TcpStream, rest: &[u8]) {
    held.write_all(rest).expect("rest of the body");
    let mut answer = [0u8; 12];
    held.read_exact(&mut answer).expect("answer");
    let shown = String::from_utf8_lossy(&answer);
    assert_eq!(&answer, b"HTTP/1.1 204", "{shown}");
}

/// Asserts that `node` refuses the upload of `data` to image `id` with a 413 saying `over`.
fn assert_upload_refused(node: &Server, id: &str, data: &[u8], over: &str) {
    let refused = node.req(
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(refused.text().contains(over), "{}", refused.text());
}

/// Whether `server`'s log says it started task `id`.
fn ran(server: &Server, id: &str) -> bool {
    server
        .log_text()
        .lines()
        .any(|l| l.contains("import started") && l.contains(id))
}

/// Polls `done` until it holds; panics (with `server`'s log) after a minute.
fn wait_until(server: &Server, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited for {what}\n{}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}
