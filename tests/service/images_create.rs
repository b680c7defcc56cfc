//! `POST /v2/images` through the real binary: a `queued` record in Glance's shape, with a
//! caller-chosen id or a fresh one, Glance's create-time validation, policy and quota, and a
//! queued image's life (listed, patched, deleted, kept across a restart).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use super::clients::{assert_ok, glance, stdout, venv_bin};
use super::harness::{import_input, member, raw_disk, FileServer, Resp, Server, ADMIN};
use crate::common::scratch;

/// Glance 33.0.0's keys for a queued image (`glance-wire/legacy-noconv/webdl-00-ok-qcow2.json`,
/// `create_response`).
const GLANCE_QUEUED_KEYS: [&str; 22] = [
    "name",
    "disk_format",
    "container_format",
    "visibility",
    "size",
    "virtual_size",
    "status",
    "checksum",
    "protected",
    "min_ram",
    "min_disk",
    "owner",
    "os_hidden",
    "os_hash_algo",
    "os_hash_value",
    "id",
    "created_at",
    "updated_at",
    "tags",
    "self",
    "file",
    "schema",
];

fn create(server: &Server, who: &[(&str, &str)], body: &Value) -> Resp {
    server.req("POST", "/v2/images", who, Some(body.to_string().as_bytes()))
}

fn reader(project: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Project-Id", project),
        ("X-User-Id", "a-reader"),
        ("X-Roles", "reader"),
    ]
}

fn image_ids(server: &Server, query: &str) -> Vec<String> {
    let list = server.get(&format!("/v2/images{query}")).json();
    list["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {list}"))
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn test_create_image_without_id_is_queued_in_glance_shape() {
    let server = Server::start(&[]);
    let resp = create(
        &server,
        ADMIN,
        &json!({"name": "q", "disk_format": "qcow2", "container_format": "bare"}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let body = resp.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, GLANCE_QUEUED_KEYS.into_iter().collect(), "{body}");
    let id = body["id"].as_str().expect("id");
    assert_eq!(id.len(), 36, "{id}");
    for (key, want) in [
        ("status", json!("queued")),
        ("visibility", json!("shared")),
        ("protected", json!(false)),
        ("os_hidden", json!(false)),
        ("owner", json!("admin")),
        ("min_disk", json!(0)),
        ("min_ram", json!(0)),
        ("tags", json!([])),
        ("self", json!(format!("/v2/images/{id}"))),
        ("file", json!(format!("/v2/images/{id}/file"))),
        ("schema", json!("/v2/schemas/image")),
    ] {
        assert_eq!(body[key], want, "{key}: {body}");
    }
    for key in [
        "size",
        "virtual_size",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
    ] {
        assert_eq!(body[key], Value::Null, "{key}: {body}");
    }
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{}/v2/images/{id}", server.addr).as_str())
    );
    // The enabled import methods (the default's; `interop.rs` tests the configured ones).
    assert_eq!(
        resp.header("openstack-image-import-methods"),
        Some("glance-direct,web-download")
    );

    // Shown, listed (also by status), downloadable as "no data" (204), deleted.
    assert_eq!(server.get(&format!("/v2/images/{id}")).json(), body);
    assert_eq!(image_ids(&server, ""), [id]);
    assert_eq!(image_ids(&server, "?status=queued"), [id]);
    assert!(image_ids(&server, "?status=active").is_empty());
    assert!(image_ids(&server, "?size_min=0").is_empty());
    assert_eq!(server.get(&format!("/v2/images/{id}/file")).status, 204);
    let deleted = server.req("DELETE", &format!("/v2/images/{id}"), ADMIN, None);
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(server.get(&format!("/v2/images/{id}")).status, 404);
}

#[test]
fn test_create_image_with_id_then_duplicate_is_409() {
    let server = Server::start(&[]);
    let id = "4a7b0c3e-9d1f-4e2a-8b5c-6d7e8f9a0b1c";
    let resp = create(&server, &member("p1"), &json!({"id": id, "name": "mine"}));
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.json()["id"], id);
    assert_eq!(resp.json()["owner"], "p1");
    assert_eq!(resp.json()["disk_format"], Value::Null);
    let again = create(&server, &member("p2"), &json!({"id": id, "name": "theirs"}));
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(
        again.error_message(),
        format!("Image ID {id} already exists!")
    );
    assert_eq!(
        server.get(&format!("/v2/images/{id}")).json()["name"],
        "mine"
    );
}

#[test]
fn test_create_image_validation_classes_refused_nothing_created() {
    let server = Server::start(&["--image-tag-quota", "2"]);
    let who = member("p1");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"size": 5}), 403, "Attribute 'size' is read-only."),
        (json!({"status": "active"}), 403, "Attribute 'status' is read-only."),
        (json!({"checksum": "x"}), 403, "Attribute 'checksum' is read-only."),
        (json!({"self": "/x"}), 403, "Attribute 'self' is read-only."),
        (json!({"location": "http://x/"}), 403, "Attribute 'location' is reserved."),
        (json!({"os_glance_import_task": "x"}), 403, "Attribute 'os_glance_import_task' is reserved."),
        (json!({"id": "not-a-uuid"}), 400, "Provided object does not match schema 'image': 'not-a-uuid' does not match '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$' (in id)"),
        (json!({"disk_format": "bogus"}), 400, "Provided object does not match schema 'image': 'bogus' is not one of ['ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop'] (in disk_format)"),
        (json!({"container_format": "box"}), 400, "Provided object does not match schema 'image': 'box' is not one of ['ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', 'compressed'] (in container_format)"),
        (json!({"visibility": "everyone"}), 400, "Provided object does not match schema 'image': 'everyone' is not one of ['community', 'public', 'private', 'shared'] (in visibility)"),
        (json!({"protected": "yes"}), 400, "Provided object does not match schema 'image': 'yes' is not of type 'boolean' (in protected)"),
        (json!({"min_disk": -1}), 400, "Provided object does not match schema 'image': -1 is less than the minimum of 0 (in min_disk)"),
        (json!({"min_ram": "1"}), 400, "Provided object does not match schema 'image': '1' is not of type 'integer' (in min_ram)"),
        (json!({"tags": "a"}), 400, "Provided object does not match schema 'image': 'a' is not of type 'array' (in tags)"),
        (json!({"os_distro": 5}), 400, "Provided object does not match schema 'image': 5 is not of type 'string' (in os_distro)"),
        (json!(["name"]), 400, "Provided object does not match schema 'image': ['name'] is not of type 'object'"),
        (json!({"tags": ["a", "b", "c"]}), 413, "The limit has been exceeded on the number of allowed image tags. Attempted: 3, Maximum: 2"),
        (json!({"visibility": "public"}), 403, "You are not authorized to complete publicize_image action."),
        (json!({"owner": "p2"}), 403, "You are not authorized to complete add_image action."),
    ];
    for (body, status, message) in cases {
        let resp = create(&server, &who, &body);
        assert_eq!(resp.status, status, "{body}: {}", resp.text());
        assert_eq!(resp.error_message(), message, "{body}");
    }
    let malformed = server.req("POST", "/v2/images", &who, Some(b"{\"name\": "));
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    let reader = create(&server, &reader("p1"), &json!({"name": "r"}));
    assert_eq!(reader.status, 403, "{}", reader.text());
    assert_eq!(
        reader.error_message(),
        "You are not authorized to complete add_image action."
    );
    assert!(image_ids(&server, "?visibility=all").is_empty());
    // An admin may create public images and images of other projects.
    let admin = create(
        &server,
        ADMIN,
        &json!({"visibility": "public", "owner": "p2"}),
    );
    assert_eq!(admin.status, 201, "{}", admin.text());
    assert_eq!(admin.json()["owner"], "p2");
}

#[test]
fn test_create_image_over_count_quota_is_413() {
    let server = Server::start(&["--quota-image-count-total", "1"]);
    let first = create(&server, &member("p1"), &json!({"name": "one"}));
    assert_eq!(first.status, 201, "{}", first.text());
    let second = create(&server, &member("p1"), &json!({"name": "two"}));
    assert_eq!(second.status, 413, "{}", second.text());
    assert!(
        second.error_message().ends_with(
            "Project p1 is over a limit for [Resource image_count_total is over limit of 1 \
             due to current usage 1 and delta 1]"
        ),
        "{}",
        second.text()
    );
    // Another project has its own count.
    assert_eq!(create(&server, &member("p2"), &json!({})).status, 201);
}

#[test]
fn test_queued_image_patch_replaces_formats() {
    let server = Server::start(&[]);
    let id = create(&server, ADMIN, &json!({"name": "q"})).json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ops = json!([
        {"op": "add", "path": "/disk_format", "value": "raw"},
        {"op": "add", "path": "/container_format", "value": "bare"},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"}
    ]);
    let resp = server.req(
        "PATCH",
        &format!("/v2/images/{id}"),
        &[(
            "Content-Type",
            "application/openstack-images-v2.1-json-patch",
        )],
        Some(ops.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(
        (
            &body["disk_format"],
            &body["container_format"],
            &body["hw_disk_bus"],
            &body["status"]
        ),
        (
            &json!("raw"),
            &json!("bare"),
            &json!("virtio"),
            &json!("queued")
        ),
        "{body}"
    );
}

#[test]
fn test_queued_image_survives_kill_9_and_restart() {
    let mut server = Server::start(&[]);
    let body = json!({"name": "kept", "disk_format": "qcow2", "container_format": "bare"});
    let created = create(&server, &member("p1"), &body).json();
    let id = created["id"].as_str().expect("id").to_owned();
    server.restart();
    let after = server.get(&format!("/v2/images/{id}"));
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json(), created);
    assert_eq!(image_ids(&server, "?status=queued"), [id]);
}

/// An active image of project `p1` imported by a task (raw, 1 MiB); its id.
fn active_image(server: &Server, files: &FileServer, visibility: &str) -> String {
    let mut input = import_input(&files.url("small.raw"), "raw", "act");
    input["image_properties"]["visibility"] = json!(visibility);
    input["image_properties"]["owner"] = json!("p1");
    let task = server.create_task(input);
    let done = server.wait_task(task["id"].as_str().expect("task id"));
    assert_eq!(done["status"], "success", "{done}");
    done["result"]["image_id"]
        .as_str()
        .expect("image id")
        .to_owned()
}

#[test]
fn test_deactivate_reactivate_matrix_as_glance() {
    let dir = scratch();
    raw_disk(dir.path(), "small.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let id = active_image(&server, &files, "shared");
    let public = active_image(&server, &files, "public");
    let queued = create(&server, &member("p1"), &json!({"name": "q"})).json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let action = |who: &[(&str, &str)], id: &str, what: &str| {
        server.req(
            "POST",
            &format!("/v2/images/{id}/actions/{what}"),
            who,
            None,
        )
    };
    let status = |id: &str| server.get(&format!("/v2/images/{id}")).json()["status"].clone();
    let download = |who: &[(&str, &str)], id: &str| {
        server.req("GET", &format!("/v2/images/{id}/file"), who, None)
    };
    let owner = member("p1");

    // Who: a reader of the project, another project (private: 404; public: 403).
    let resp = action(&reader("p1"), &id, "deactivate");
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(
        resp.error_message(),
        "You are not authorized to complete deactivate action."
    );
    assert_eq!(action(&member("p2"), &id, "deactivate").status, 404);
    let resp = action(&member("p2"), &public, "deactivate");
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(
        resp.error_message(),
        "You are not authorized to complete deactivate action."
    );

    // The owner's member deactivates; again is a no-op; downloads are the admin's only.
    for _ in 0..2 {
        let resp = action(&owner, &id, "deactivate");
        assert_eq!(resp.status, 204, "{}", resp.text());
        assert_eq!(status(&id), "deactivated");
    }
    let resp = download(&owner, &id);
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(
        resp.error_message(),
        "The requested image has been deactivated. Image data download is forbidden."
    );
    let resp = download(ADMIN, &id);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body.len(), 1 << 20);
    let listed = server.get("/v2/images?status=deactivated").json();
    assert_eq!(listed["images"][0]["id"], json!(id), "{listed}");

    // Reactivated (twice: a no-op), downloadable again.
    for _ in 0..2 {
        let resp = action(&owner, &id, "reactivate");
        assert_eq!(resp.status, 204, "{}", resp.text());
        assert_eq!(status(&id), "active");
    }
    assert_eq!(download(&owner, &id).status, 200);

    // A queued image is neither: Glance's 403.
    for what in ["deactivate", "reactivate"] {
        let resp = action(&owner, &queued, what);
        assert_eq!(resp.status, 403, "{}", resp.text());
        assert_eq!(
            resp.error_message(),
            format!("Not allowed to {what} image in status 'queued'")
        );
        assert_eq!(status(&queued), "queued");
    }
    // Routing: only POST, only these two actions, only known images.
    let resp = server.req(
        "GET",
        &format!("/v2/images/{id}/actions/deactivate"),
        ADMIN,
        None,
    );
    assert_eq!((resp.status, resp.header("allow")), (405, Some("POST")));
    assert_eq!(action(ADMIN, &id, "explode").status, 404);
    assert_eq!(
        action(ADMIN, "9a9a9a9a-0000-4000-8000-000000000000", "deactivate").status,
        404
    );
}

/// Runs its arguments with standard input on a pseudo-terminal, as an interactive user's:
/// without a terminal, `openstack image create` without `--file` uploads standard input.
const ON_A_TERMINAL: &str = "import os, pty, sys\n\
                             master, slave = pty.openpty()\n\
                             os.set_inheritable(master, True)\n\
                             os.dup2(slave, 0)\n\
                             os.execv(sys.argv[1], sys.argv[1:])";

/// `openstack --os-auth-type none --os-endpoint URL ARGS` (no Keystone), from a terminal.
fn openstack(server: &Server, home: &Path, args: &[&str]) -> Output {
    let url = format!("http://{}", server.addr);
    Command::new(venv_bin("python"))
        .args(["-c", ON_A_TERMINAL])
        .arg(venv_bin("openstack"))
        .args(["--os-auth-type", "none", "--os-endpoint", &url])
        .args(args)
        .env("HOME", home)
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running openstack")
}

#[test]
fn test_openstack_cli_create_without_file_queued_then_deactivate_activate() {
    let dir = scratch();
    raw_disk(dir.path(), "small.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let out = openstack(
        &server,
        dir.path(),
        &[
            "image",
            "create",
            "osc-queued",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "-f",
            "json",
        ],
    );
    assert_ok(&out, "openstack image create");
    let shown: Value = serde_json::from_str(&stdout(&out)).expect("openstack -f json output");
    assert_eq!(shown["status"], "queued", "{shown}");
    let id = shown["id"].as_str().expect("id");
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(
        (&image["name"], &image["status"], &image["disk_format"]),
        (&json!("osc-queued"), &json!("queued"), &json!("qcow2"))
    );

    let active = active_image(&server, &files, "shared");
    let out = openstack(
        &server,
        dir.path(),
        &["image", "set", "--deactivate", &active],
    );
    assert_ok(&out, "openstack image set --deactivate");
    assert_eq!(
        server.get(&format!("/v2/images/{active}")).json()["status"],
        "deactivated"
    );
    let out = openstack(
        &server,
        dir.path(),
        &["image", "set", "--activate", &active],
    );
    assert_ok(&out, "openstack image set --activate");
    assert_eq!(
        server.get(&format!("/v2/images/{active}")).json()["status"],
        "active"
    );
}

#[test]
fn test_glanceclient_image_tasks_negotiates_v2_12() {
    let dir = scratch();
    raw_disk(dir.path(), "small.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let id = active_image(&server, &files, "shared");
    let out = glance(&server, dir.path(), &["image-tasks", &id]);
    assert_ok(&out, "image-tasks");
    let text = stdout(&out);
    assert!(text.contains("success"), "{text}");
}
