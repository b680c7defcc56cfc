//! Compressed sources through the real binary: images made by qemu-img, wrapped by the real
//! `gzip`, `xz`, `zstd` and `bzip2`, imported by task (converted to raw byte-identical to
//! `qemu-img convert -O raw` of the unwrapped image) and uploaded with `PUT /file`; a gzip
//! bomb, truncated and corrupt streams of each compressor and nested wrappers refused with
//! nothing stored.

use std::path::Path;

use serde_json::{json, Value};

use super::harness::{assert_no_files, digest, import_input, FileServer, Server, ADMIN};
use super::imports::image_with_data;
use crate::common::{qemu_img_convert, read, run, scratch, wrap, WRAPPERS};

/// Runs an import task of `name` declared `fmt` and returns the finished task.
fn import(server: &Server, files: &FileServer, name: &str, fmt: &str) -> Value {
    let task = server.create_task(import_input(&files.url(name), fmt, name));
    server.wait_task(task["id"].as_str().expect("id"))
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).expect("name")
}

#[test]
fn test_import_each_wrapper_converts_to_qemu_raw_and_names_the_wrapper() {
    let dir = scratch();
    let qcow2 = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let vmdk = image_with_data(dir.path(), "disk.vmdk", "vmdk", "subformat=streamOptimized");
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--conversion", "raw"]);
    for (src, fmt) in [(&qcow2, "qcow2"), (&vmdk, "vmdk")] {
        let reference = qemu_img_convert(src, &src.with_extension("ref.raw"), "raw", "");
        for (tool, ext) in WRAPPERS {
            let wrapped = wrap(src, tool, ext);
            let done = import(&server, &files, file_name(&wrapped), fmt);
            assert_eq!(done["status"], "success", "{tool} {fmt}: {done}");
            assert_eq!(done["result"]["unwrapped"], tool, "{done}");
            let id = done["result"]["image_id"].as_str().expect("id");
            let image = server.get(&format!("/v2/images/{id}")).json();
            assert_eq!(image["disk_format"], "raw");
            assert_eq!(image["container_format"], "bare");
            assert_eq!(image["checksum"], digest("md5sum", &reference));
            assert_eq!(image["os_hash_value"], digest("sha512sum", &reference));
            let body = server.get(&format!("/v2/images/{id}/file")).body;
            assert!(body == read(&reference), "{tool} {fmt}: not qemu-img's raw");
            assert!(server.files_under("tmp").is_empty());
        }
    }
}

#[test]
fn test_import_without_conversion_stores_the_unwrapped_image() {
    let dir = scratch();
    let qcow2 = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let wrapped = wrap(&qcow2, "zstd", "zst");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let done = import(&server, &files, file_name(&wrapped), "qcow2");
    assert_eq!(done["status"], "success", "{done}");
    let id = done["result"]["image_id"].as_str().expect("id");
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["disk_format"], "qcow2");
    assert_eq!(image["size"], read(&qcow2).len());
    assert_eq!(image["checksum"], digest("md5sum", &qcow2));
}

#[test]
fn test_import_gzip_bomb_fails_size_cap_at_the_cap_and_stores_nothing() {
    let dir = scratch();
    // 1 GiB of zeros: a ~1 MiB gzip stream (deflate's ratio is at most ~1032:1).
    let bomb = dir.path().join("bomb.raw.gz");
    run(
        "sh",
        &[
            "-c",
            &format!(
                "head -c 1073741824 /dev/zero | gzip -c > {}",
                bomb.to_str().expect("utf-8")
            ),
        ],
    );
    assert!(read(&bomb).len() < 2 << 20);
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--max-virtual-size", &(16u64 << 20).to_string()]);
    let done = import(&server, &files, "bomb.raw.gz", "raw");
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "size_cap", "{done}");
    assert_no_files(&server);
}

#[test]
fn test_import_truncated_and_corrupt_streams_fail_corrupt_naming_the_wrapper() {
    let dir = scratch();
    let qcow2 = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    for (tool, ext) in WRAPPERS {
        let whole = read(&wrap(&qcow2, tool, ext));
        let truncated = format!("cut.{ext}");
        std::fs::write(dir.path().join(&truncated), &whole[..whole.len() * 2 / 3]).unwrap();
        let mut bad = whole.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 64] {
            *b ^= 0x5a;
        }
        let corrupt = format!("bad.{ext}");
        std::fs::write(dir.path().join(&corrupt), &bad).unwrap();
        for name in [&truncated, &corrupt] {
            let done = import(&server, &files, name, "qcow2");
            assert_eq!(done["status"], "failure", "{name}: {done}");
            assert_eq!(done["reason"], "corrupt", "{name}: {done}");
            let message = done["message"].as_str().expect("message");
            assert!(message.contains(tool), "{name}: {message}");
        }
    }
    assert_no_files(&server);
}

#[test]
fn test_import_nested_wrappers_and_compressed_container_are_refused_compressed() {
    let dir = scratch();
    let qcow2 = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let xz = wrap(&qcow2, "xz", "xz");
    let nested = wrap(&xz, "gzip", "gz");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let done = import(&server, &files, file_name(&nested), "qcow2");
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "compressed", "{done}");
    assert!(
        done["message"].as_str().unwrap().contains("nested"),
        "{done}"
    );
    // container_format `compressed` keeps the file compressed (Glance's plugin skips it),
    // which Sluice does not store.
    let mut input = import_input(&files.url(file_name(&xz)), "qcow2", "c");
    input["image_properties"]["container_format"] = json!("compressed");
    let task = server.create_task(input);
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["reason"], "compressed", "{done}");
    assert_no_files(&server);
}

#[test]
fn test_upload_gzip_body_is_stored_unwrapped_and_a_corrupt_one_is_415() {
    let dir = scratch();
    let qcow2 = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let gz = read(&wrap(&qcow2, "gzip", "gz"));
    let server = Server::start(&[]);
    let create = |container: &str| {
        let body = json!({"name": "up", "disk_format": "qcow2", "container_format": container});
        let resp = server.req(
            "POST",
            "/v2/images",
            ADMIN,
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.json()["id"].as_str().expect("id").to_owned()
    };
    let put = |id: &str, data: &[u8]| {
        let mut headers = ADMIN.to_vec();
        headers.push(("Content-Type", "application/octet-stream"));
        server.req(
            "PUT",
            &format!("/v2/images/{id}/file"),
            &headers,
            Some(data),
        )
    };
    let id = create("bare");
    let resp = put(&id, &gz);
    assert_eq!(resp.status, 204, "{}", resp.text());
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], read(&qcow2).len());
    assert_eq!(image["checksum"], digest("md5sum", &qcow2));

    let id = create("bare");
    let resp = put(&id, &gz[..gz.len() / 2]);
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert!(
        resp.text().contains("gzip stream is truncated"),
        "{}",
        resp.text()
    );

    let id = create("compressed");
    let resp = put(&id, &gz);
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert!(resp.text().contains("compressed"), "{}", resp.text());
}
