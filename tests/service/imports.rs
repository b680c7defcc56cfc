//! Successful imports through the real server: qcow2, VMDK (streamOptimized and
//! monolithicSparse) and raw images made by qemu-img, served over loopback HTTP; the stored
//! bytes, hashes and sizes; the task's key set and headers; whole and ranged downloads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::harness::{digest, import_input, raw_disk, FileServer, Server, ADMIN};
use crate::common::{qemu_img_convert, qemu_info, read, scratch};

/// Virtual size of the structured test images: 64 MiB.
const VIRTUAL: u64 = 64 << 20;
/// 32 blocks of 64 KiB: 2 MiB of data in every structured image.
const DATA_BLOCKS: u64 = 32;
/// The raw test image: 16 MiB (every byte is stored and hashed).
const RAW_SIZE: u64 = 16 << 20;

/// Keys of a freshly created import task in Glance (`test_tasks.py::test_task_lifecycle`).
const GLANCE_NEW_TASK_KEYS: [&str; 13] = [
    "created_at",
    "id",
    "input",
    "message",
    "owner",
    "schema",
    "self",
    "status",
    "type",
    "result",
    "updated_at",
    "request_id",
    "user_id",
];

/// A qemu-img image of format `fmt` (`-o opts`) holding pattern data.
pub fn image_with_data(dir: &Path, name: &str, fmt: &str, opts: &str) -> PathBuf {
    let raw = raw_disk(dir, &format!("{name}.src.raw"), VIRTUAL, DATA_BLOCKS);
    qemu_img_convert(&raw, &dir.join(name), fmt, opts)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

/// Imports `name` (declared `fmt`) and checks everything a client can see; returns the image.
pub(super) fn assert_import_ok(
    server: &Server,
    files: &FileServer,
    dir: &Path,
    name: &str,
    fmt: &str,
) -> Value {
    let src = dir.join(name);
    let task = server.create_task(import_input(&files.url(name), fmt, name));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "success", "{done}\n{}", server.log_text());
    assert_eq!(done["message"], "");
    assert!(done.get("reason").is_none(), "{done}");
    assert!(done["expires_at"].is_string(), "{done}");
    let image_id = done["result"]["image_id"]
        .as_str()
        .expect("result.image_id");

    let image = server.get(&format!("/v2/images/{image_id}"));
    assert_eq!(image.status, 200, "{}", image.text());
    let image = image.json();
    let bytes = read(&src);
    assert_eq!(image["status"], "active");
    assert_eq!(image["name"], name);
    assert_eq!(image["disk_format"], fmt);
    assert_eq!(image["container_format"], "bare");
    assert_eq!(image["owner"], "admin");
    assert_eq!(image["size"], bytes.len() as u64);
    assert_eq!(image["checksum"], digest("md5sum", &src));
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["os_hash_value"], digest("sha512sum", &src));
    let qemu_fmt = if fmt == "vhd" { "vpc" } else { fmt };
    assert_eq!(
        image["virtual_size"],
        qemu_info(&src, Some(qemu_fmt)).virtual_size,
        "virtual_size differs from qemu-img info"
    );

    let download = server.get(&format!("/v2/images/{image_id}/file"));
    assert_eq!(download.status, 200);
    assert_eq!(
        download.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(download.header("content-md5"), image["checksum"].as_str());
    assert!(
        download.body == bytes,
        "downloaded bytes differ from the source"
    );

    assert!(
        server.files_under("tmp").is_empty(),
        "{:?}",
        server.files_under("tmp")
    );
    assert_eq!(server.files_under("images").len(), 1);
    image
}

#[test]
fn test_import_qcow2_with_data_stores_identical_bytes_and_hashes() {
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    assert_import_ok(&server, &files, dir.path(), "disk.qcow2", "qcow2");
}

#[test]
fn test_import_vmdk_stream_optimized_stores_identical_bytes_and_hashes() {
    let dir = scratch();
    image_with_data(
        dir.path(),
        "stream.vmdk",
        "vmdk",
        "subformat=streamOptimized",
    );
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    assert_import_ok(&server, &files, dir.path(), "stream.vmdk", "vmdk");
}

#[test]
fn test_import_vmdk_monolithic_sparse_stores_identical_bytes_and_hashes() {
    let dir = scratch();
    image_with_data(
        dir.path(),
        "sparse.vmdk",
        "vmdk",
        "subformat=monolithicSparse",
    );
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    assert_import_ok(&server, &files, dir.path(), "sparse.vmdk", "vmdk");
}

#[test]
fn test_import_raw_stores_identical_bytes_and_hashes() {
    let dir = scratch();
    raw_disk(dir.path(), "disk.raw", RAW_SIZE, 16);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    assert_import_ok(&server, &files, dir.path(), "disk.raw", "raw");
}

#[test]
fn test_task_create_response_has_glance_keys_and_absolute_location() {
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let input = import_input(&files.url("disk.qcow2"), "qcow2", "keys");
    let resp = server.post_task(
        &serde_json::json!({"type": "import", "input": input}),
        ADMIN,
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let task = resp.json();
    let want: BTreeSet<String> = GLANCE_NEW_TASK_KEYS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(keys(&task), want, "{task}");
    let id = task["id"].as_str().expect("id");
    assert_eq!(task["status"], "pending");
    assert_eq!(task["type"], "import");
    assert_eq!(task["input"], input, "input is echoed verbatim");
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task["message"], "");
    assert_eq!(task["owner"], "admin");
    assert_eq!(task["self"], format!("/v2/tasks/{id}"));
    assert_eq!(task["schema"], "/v2/schemas/task");
    assert_eq!(task["created_at"], task["updated_at"]);
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{}/v2/tasks/{id}", server.addr).as_str())
    );
    let request_id = resp.header("x-openstack-request-id").expect("request id");
    assert!(request_id.starts_with("req-"), "{request_id}");
    assert_eq!(task["request_id"], request_id);
    let done = server.wait_task(id);
    assert_eq!(done["status"], "success", "{done}");
}

#[test]
fn test_task_success_expires_48_hours_after_it_finished() {
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("disk.qcow2"), "qcow2", "ttl"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    let secs = |key: &str| -> u64 {
        let text = done[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {done}"));
        assert!(text.ends_with('Z') && text.len() == 20, "isotime: {text}");
        humantime::parse_rfc3339(text)
            .expect("rfc3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs()
    };
    assert_eq!(secs("expires_at") - secs("updated_at"), 48 * 3600, "{done}");
}

/// One image imported, for the download tests; returns (server, image id, source bytes).
fn imported_raw() -> (Server, String, Vec<u8>) {
    let dir = scratch();
    let src = raw_disk(dir.path(), "disk.raw", 1 << 20, 4);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("disk.raw"), "raw", "ranged"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "success", "{done}");
    let id = done["result"]["image_id"]
        .as_str()
        .expect("image id")
        .to_owned();
    (server, id, read(&src))
}

#[test]
fn test_download_range_returns_206_with_content_range() {
    let (server, id, bytes) = imported_raw();
    let size = bytes.len();
    let path = format!("/v2/images/{id}/file");
    let resp = server.req("GET", &path, &[("Range", "bytes=1000-70999")], None);
    assert_eq!(resp.status, 206, "{}", resp.text());
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes 1000-70999/{size}").as_str())
    );
    assert_eq!(resp.header("content-length"), Some("70000"));
    assert!(resp.body == bytes[1000..71000], "range bytes differ");

    let suffix = server.req("GET", &path, &[("Range", "bytes=-100")], None);
    assert_eq!(suffix.status, 206);
    assert!(
        suffix.body == bytes[size - 100..],
        "suffix range bytes differ"
    );
    assert_eq!(
        suffix.header("content-range"),
        Some(format!("bytes {}-{}/{size}", size - 100, size - 1).as_str())
    );

    let open = server.req(
        "GET",
        &path,
        &[("Range", &format!("bytes={}-", size - 10))],
        None,
    );
    assert_eq!(open.status, 206);
    assert!(open.body == bytes[size - 10..]);
}

#[test]
fn test_download_range_past_end_returns_416() {
    let (server, id, bytes) = imported_raw();
    let path = format!("/v2/images/{id}/file");
    let start = bytes.len();
    let resp = server.req(
        "GET",
        &path,
        &[("Range", &format!("bytes={start}-{}", start + 10))],
        None,
    );
    assert_eq!(resp.status, 416, "{}", resp.text());
}

#[test]
fn test_download_multiple_ranges_returns_400() {
    let (server, id, _) = imported_raw();
    let path = format!("/v2/images/{id}/file");
    let resp = server.req("GET", &path, &[("Range", "bytes=0-1,5-6")], None);
    assert_eq!(resp.status, 400, "{}", resp.text());
}
