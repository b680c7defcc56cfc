//! Interoperable import through the real server: `GET /v2/info/import`, `POST
//! /v2/images/{id}/import` with `web-download` (success, every refusal class, the import
//! lock, a hostile image, cancellation by delete, `kill -9`), and the unmodified clients
//! (`glance image-create-via-import`, openstacksdk `import_image`).

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::clients::{glance_without_stdin, venv_bin};
use super::harness::{assert_no_files, digest, FileServer, Serve, Server, ADMIN};
use super::imports::image_with_data;
use crate::common::{qcow2_backed_by_passwd, read, scratch};

/// How long an image may take to reach a status in these tests.
const STATUS_DEADLINE: Duration = Duration::from_secs(60);

/// `POST /v2/images` as admin: a queued image with the given formats; returns its id.
fn queued_image(server: &Server, body: &Value) -> String {
    let resp = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(&serde_json::to_vec(body).expect("json")),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

fn qcow2_image(server: &Server, name: &str) -> String {
    queued_image(
        server,
        &json!({"name": name, "disk_format": "qcow2", "container_format": "bare"}),
    )
}

/// `POST /v2/images/{id}/import` as admin with `body`.
fn import(server: &Server, id: &str, body: &Value) -> super::harness::Resp {
    server.req(
        "POST",
        &format!("/v2/images/{id}/import"),
        ADMIN,
        Some(&serde_json::to_vec(body).expect("json")),
    )
}

fn web_download(uri: &str) -> Value {
    json!({"method": {"name": "web-download", "uri": uri}})
}

/// Polls the image until its status is `want`; returns its body.
fn wait_image(server: &Server, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + STATUS_DEADLINE;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = server.get(&format!("/v2/images/{id}")).json();
        if last["status"] == want {
            return last;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "image {id} not {want}: {last}\n--- log ---\n{}",
        server.log_text()
    );
}

/// The image's tasks (`GET /v2/images/{id}/tasks`).
fn image_tasks(server: &Server, id: &str) -> Vec<Value> {
    let resp = server.get(&format!("/v2/images/{id}/tasks"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["tasks"].as_array().expect("tasks").clone()
}

/// Waits for the image's import task to be final; returns it (from `GET /v2/tasks/{id}`).
fn wait_import_task(server: &Server, image_id: &str) -> Value {
    let tasks = image_tasks(server, image_id);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    server.wait_task(tasks[0]["id"].as_str().expect("task id"))
}

#[test]
fn test_interop_info_and_create_header_follow_enabled_import_methods() {
    let server = Server::start(&[]);
    let info = server.get("/v2/info/import").json();
    assert_eq!(
        info["import-methods"]["value"],
        json!(["glance-direct", "web-download"])
    );
    let resp = server.req("POST", "/v2/images", ADMIN, Some(b"{}"));
    assert_eq!(resp.status, 201);
    assert_eq!(
        resp.header("openstack-image-import-methods"),
        Some("glance-direct,web-download")
    );

    let dir = scratch();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "enabled_import_methods = []\n").expect("config");
    let off = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let info = off.get("/v2/info/import").json();
    assert_eq!(info["import-methods"]["value"], json!([]));
    let resp = off.req("POST", "/v2/images", ADMIN, Some(b"{}"));
    assert_eq!(resp.header("openstack-image-import-methods"), None);
    let id = resp.json()["id"].as_str().expect("id").to_owned();
    let refused = import(&off, &id, &web_download("http://127.0.0.1:1/x"));
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.error_message(),
        "Unknown import method name 'web-download'."
    );
}

#[test]
fn test_interop_web_download_qcow2_reaches_active_with_an_api_image_import_task() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let id = qcow2_image(&server, "wd");
    let resp = import(&server, &id, &web_download(&files.url("small.qcow2")));
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert!(resp.body.is_empty(), "{}", resp.text());

    let task = wait_import_task(&server, &id);
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(task["type"], "api_image_import");
    assert_eq!(task["result"], json!({"image_id": id}));
    assert_eq!(task["image_id"], id.as_str());
    assert_eq!(task["input"]["image_id"], id.as_str());
    assert_eq!(
        task["input"]["import_req"],
        web_download(&files.url("small.qcow2"))
    );
    assert_eq!(task["input"]["backend"], json!([null]));

    let image = wait_image(&server, &id, "active");
    assert_eq!(image["checksum"], digest("md5sum", &src));
    assert_eq!(image["os_hash_value"], digest("sha512sum", &src));
    assert_eq!(image["size"], read(&src).len() as u64);
    assert_eq!(image["disk_format"], "qcow2");
    assert!(image.get("os_glance_import_task").is_none(), "{image}");
    assert_eq!(image["os_glance_importing_to_stores"], "");
    assert_eq!(image["os_glance_failed_import"], "");
    let data = server.get(&format!("/v2/images/{id}/file"));
    assert!(data.body == read(&src), "downloaded bytes differ");

    // Admins see it in /v2/tasks too; a second import of an active image is 409.
    let all = server.get("/v2/tasks").json();
    assert!(
        all["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .any(|t| t["id"] == task["id"] && t["type"] == "api_image_import"),
        "{all}"
    );
    let again = import(&server, &id, &web_download(&files.url("small.qcow2")));
    assert_eq!(again.status, 409, "{}", again.text());
}

#[test]
fn test_interop_web_download_refusals_are_glances() {
    let server = Server::start(&[]);
    let id = qcow2_image(&server, "refusals");
    let no_formats = queued_image(&server, &json!({"name": "bare"}));
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            &id,
            json!({}),
            400,
            "Import request requires a 'method' field.",
        ),
        (
            &id,
            json!({"method": {}}),
            400,
            "Import request requires a 'name' field.",
        ),
        (
            &id,
            json!({"method": {"name": "bogus"}}),
            400,
            "Unknown import method name 'bogus'.",
        ),
        (
            &id,
            json!({"method": {"name": "copy-image"}}),
            400,
            "Unknown import method name 'copy-image'.",
        ),
        (
            &id,
            json!({"method": {"name": "web-download", "uri": "http://127.0.0.1:1/x"}, "all_stores": "yes"}),
            400,
            "'all_stores' must be boolean value only",
        ),
        (
            &id,
            json!({"method": {"name": "web-download"}}),
            400,
            "URI for web-download does not pass filtering: None",
        ),
        (
            &id,
            web_download("file:///etc/passwd"),
            400,
            "URI for web-download does not pass filtering: file:///etc/passwd",
        ),
        (
            &id,
            web_download("http://127.0.0.1:9/x.qcow2"),
            400,
            "URI for web-download does not pass filtering: http://127.0.0.1:9/x.qcow2",
        ),
        (
            &id,
            web_download("http://169.254.169.254/latest/meta-data"),
            400,
            "URI for web-download does not pass filtering: http://169.254.169.254/latest/meta-data",
        ),
        (
            &no_formats,
            web_download("http://127.0.0.1:1/x"),
            409,
            "'container_format' needs to be set before import",
        ),
    ];
    for (image, body, status, message) in cases {
        let resp = import(&server, image, &body);
        assert_eq!(resp.status, status, "{body}: {}", resp.text());
        let got = resp.error_message();
        assert!(got.starts_with(message), "{body}: {got}");
    }
    // Nothing changed: both images are still queued, without a task.
    for image in [&id, &no_formats] {
        let shown = server.get(&format!("/v2/images/{image}")).json();
        assert_eq!(shown["status"], "queued", "{shown}");
        assert!(shown.get("os_glance_import_task").is_none(), "{shown}");
        assert!(image_tasks(&server, image).is_empty());
    }
    let missing = import(
        &server,
        "00000000-0000-0000-0000-000000000000",
        &web_download("http://127.0.0.1:1/x"),
    );
    assert_eq!(missing.status, 404, "{}", missing.text());
}

#[test]
fn test_interop_import_lock_gives_409_until_the_import_ends() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "slow.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    files.set("slow.qcow2", Serve::StallAfter(64 << 10));
    let server = Server::start(&[]);
    let id = qcow2_image(&server, "locked");
    let first = import(&server, &id, &web_download(&files.url("slow.qcow2")));
    assert_eq!(first.status, 202, "{}", first.text());
    let second = import(&server, &id, &web_download(&files.url("slow.qcow2")));
    assert_eq!(second.status, 409, "{}", second.text());
    let msg = second.error_message();
    assert!(
        msg == "Image needs to be in 'queued' state to use 'web-download' method"
            || msg == "Image has active task",
        "{msg}"
    );
    // An upload cannot sneak in either.
    let upload = server.req("PUT", &format!("/v2/images/{id}/file"), ADMIN, Some(b"x"));
    assert!(upload.status >= 400, "{}", upload.text());
    drop(src);
    assert_eq!(
        server.get(&format!("/v2/images/{id}")).json()["status"],
        "importing"
    );
}

#[test]
fn test_interop_hostile_web_download_fails_the_task_and_requeues_the_image() {
    let dir = scratch();
    qcow2_backed_by_passwd(dir.path(), "backed.qcow2", None);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let id = qcow2_image(&server, "hostile");
    let resp = import(&server, &id, &web_download(&files.url("backed.qcow2")));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let task = wait_import_task(&server, &id);
    assert_eq!(task["status"], "failure", "{task}");
    assert_eq!(task["type"], "api_image_import");
    assert_eq!(task["reason"], "backing_file", "{task}");
    assert!(
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains("/etc/passwd")),
        "{task}"
    );
    let image = wait_image(&server, &id, "queued");
    assert_eq!(image["os_glance_failed_import"], "", "{image}");
    assert!(image.get("os_glance_import_task").is_none(), "{image}");
    assert!(image["checksum"].is_null() && image["size"].is_null());
    assert_no_files(&server);
}

#[test]
fn test_interop_delete_cancels_the_import_in_flight() {
    let dir = scratch();
    image_with_data(dir.path(), "stall.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    files.set("stall.qcow2", Serve::StallAfter(256 << 10));
    let server = Server::start(&[]);
    let id = qcow2_image(&server, "doomed");
    assert_eq!(
        import(&server, &id, &web_download(&files.url("stall.qcow2"))).status,
        202
    );
    let task_id = image_tasks(&server, &id)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = Instant::now() + STATUS_DEADLINE;
    while files.stalled() == 0 {
        assert!(Instant::now() < deadline, "the source was never reached");
        thread::sleep(Duration::from_millis(20));
    }
    let deleted = server.req("DELETE", &format!("/v2/images/{id}"), ADMIN, None);
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let task = server.wait_task(&task_id);
    assert_eq!(task["status"], "failure", "{task}");
    assert_eq!(task["reason"], "cancelled", "{task}");
    assert_eq!(server.get(&format!("/v2/images/{id}")).status, 404);
    assert_no_files(&server);
}

/// A web-download cut short by `kill -9` starts again from its URL after the restart (one
/// more run of the same task, under the same import lock) and the image ends `active`.
#[test]
fn test_interop_kill9_during_web_download_starts_again_from_the_source_after_restart() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "ok.qcow2", "qcow2", "");
    std::fs::copy(&src, dir.path().join("stall.qcow2")).expect("copy");
    let files = FileServer::start(dir.path());
    files.set("stall.qcow2", Serve::StallAfter(256 << 10));
    let mut server = Server::start(&[]);
    let id = qcow2_image(&server, "crash");
    assert_eq!(
        import(&server, &id, &web_download(&files.url("stall.qcow2"))).status,
        202
    );
    let deadline = Instant::now() + STATUS_DEADLINE;
    while files.stalled() == 0 {
        assert!(Instant::now() < deadline, "the source was never reached");
        thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    files.set("stall.qcow2", Serve::Whole);
    server.restart();
    let task = wait_import_task(&server, &id);
    assert_eq!(task["status"], "success", "{task}");
    let image = wait_image(&server, &id, "active");
    assert_eq!(image["checksum"], digest("md5sum", &src));
    assert!(image.get("os_glance_import_task").is_none(), "{image}");
    let asked = files
        .request_log()
        .into_iter()
        .filter(|r| r.starts_with("/stall.qcow2"))
        .count();
    assert_eq!(asked, 2, "one request per run");
}

// ---- the unmodified clients --------------------------------------------------------------

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_interop_glanceclient_image_create_via_import_web_download_reaches_active() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let out = glance_without_stdin(
        &server,
        dir.path(),
        &[
            "image-create-via-import",
            "--name",
            "via-import",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "--import-method",
            "web-download",
            "--uri",
            &files.url("small.qcow2"),
        ],
    );
    assert_ok(&out, "glance image-create-via-import");
    let table = super::clients::property_table(&String::from_utf8_lossy(&out.stdout));
    let id = table.get("id").expect("id").clone();
    let image = wait_image(&server, &id, "active");
    assert_eq!(image["checksum"], digest("md5sum", &src));

    // The task that made it (`glance image-tasks` needs `/versions` to list v2.12).
    let tasks = image_tasks(&server, &id);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["type"], "api_image_import");
    assert_eq!(tasks[0]["status"], "success");
}

#[test]
fn test_interop_openstacksdk_import_image_web_download_reaches_active() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/sdk_web_download.py");
    let out = Command::new(venv_bin("python"))
        .arg(&script)
        .args([
            &format!("http://{}", server.addr),
            &files.url("small.qcow2"),
            "via-sdk-web-download",
        ])
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running sdk_web_download.py");
    assert_ok(&out, "sdk_web_download.py");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["created_status"], "queued", "{v}");
    assert_eq!(v["image_status"], "active", "{v}");
    assert_eq!(v["checksum"], digest("md5sum", &src));
    assert_eq!(v["hash_value"], digest("sha512sum", &src));
    assert_eq!(v["size"], read(&src).len() as u64);
    assert_eq!(v["task_types"], json!(["api_image_import"]));
}
