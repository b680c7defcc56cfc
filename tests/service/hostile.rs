//! One table of hostile images, one per rejection class of the inspector (README's
//! reason-code table), each refused on every way in that inspects bytes: a legacy import
//! task (failure with the reason code, no image), a web-download import (the `api_image_import` task fails with the reason code and the inspector's message,
//! the image is `queued` again with `os_glance_failed_import` set), a direct upload and a
//! stage (415 with the reason code and message); nothing is stored or staged either way.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{
    assert_no_files, assert_no_images, import_input, FileServer, Resp, Server, ADMIN,
};
use super::imports::image_with_data;
use crate::common::{
    qcow2_backed_by_passwd, qcow2_luks, qemu_img_create, read, run, scratch, write_pattern,
};
use crate::inspect::vhdx::{dynamic_with_data, VhdxPatch};

/// The cap the servers of these tests run with (`--max-virtual-size`): 512 MiB, above every
/// image of the table but the `size_cap` one.
const CAP: u64 = 512 << 20;
/// qcow2 header fields (`docs/interop/qcow2.rst`), big-endian: `cluster_bits` (u32),
/// `l1_size` (u32), incompatible feature bits (u64, v3).
const QCOW2_CLUSTER_BITS: usize = 20;
/// `nb_snapshots` (u32) and `snapshots_offset` (u64).
const QCOW2_NB_SNAPSHOTS: usize = 60;
const QCOW2_SNAPSHOTS_OFFSET: usize = 64;
/// One more snapshot than QEMU's limit (`QCOW_MAX_SNAPSHOTS`).
const QCOW2_TOO_MANY_SNAPSHOTS: u32 = 65_537;
/// The smallest snapshot table entry (no id, name or extra data).
const QCOW2_SNAPSHOT_ENTRY_MIN: usize = 40;
const QCOW2_INCOMPATIBLE_FEATURES: usize = 72;
/// Incompatible feature bit 5: the first bit no QEMU defines.
const QCOW2_INCOMPAT_FIRST_UNKNOWN: u64 = 1 << 5;
/// VMDK sparse images made by QEMU embed their descriptor at sector 1, in a 20-sector area.
const VMDK_DESCRIPTOR: std::ops::Range<usize> = 512..512 + 20 * 512;
/// The ISO 9660 system area (16 sectors of 2048 bytes), free-form, where a polyglot hides.
const ISO_SYSTEM_AREA_LEN: usize = 32 * 1024;
/// How long a web-download may take to fail.
const TASK_DEADLINE: Duration = Duration::from_secs(60);

/// One hostile image: its bytes, the `disk_format` it is declared as, the reason code every
/// way in must refuse it with, and a text its message must contain.
struct Hostile {
    name: &'static str,
    disk_format: &'static str,
    bytes: Vec<u8>,
    reason: &'static str,
    needle: String,
}

fn hostile(
    name: &'static str,
    disk_format: &'static str,
    bytes: Vec<u8>,
    reason: &'static str,
    needle: &str,
) -> Hostile {
    Hostile {
        name,
        disk_format,
        bytes,
        reason,
        needle: needle.to_owned(),
    }
}

/// `bytes` with the big-endian `field` at `at` replaced by `value`.
fn patched(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    bytes[at..at + value.len()].copy_from_slice(value);
    bytes
}

/// `image` (64 KiB clusters) with a table of one snapshot more than QEMU allows appended,
/// all of it inside the file: consistent, but above the limit (an inconsistent header, such
/// as a table past the end of the file, is `corrupt`).
fn too_many_snapshots(mut image: Vec<u8>) -> Vec<u8> {
    let table_at = image.len().next_multiple_of(1 << 16);
    image.resize(table_at, 0);
    let count = usize::try_from(QCOW2_TOO_MANY_SNAPSHOTS).expect("usize");
    image.resize(table_at + count * QCOW2_SNAPSHOT_ENTRY_MIN + 512, 0);
    let image = patched(
        image,
        QCOW2_NB_SNAPSHOTS,
        &QCOW2_TOO_MANY_SNAPSHOTS.to_be_bytes(),
    );
    let offset = u64::try_from(table_at).expect("u64");
    patched(image, QCOW2_SNAPSHOTS_OFFSET, &offset.to_be_bytes())
}

/// The table: every reason code of the inspector, made by real tools and patched at named
/// offsets (the generators of `tests/inspect` and `tests/service/rejections.rs`).
fn hostile_images(d: &Path) -> Vec<Hostile> {
    let qcow2 = read(&image_with_data(d, "q.qcow2", "qcow2", ""));
    let small = read(&qemu_img_create(d, "s.qcow2", "qcow2", "", "16M"));
    let backed = read(&qcow2_backed_by_passwd(d, "b.qcow2", Some("16M")));
    let data_file = d.join("data.raw");
    let opts = format!("data_file={},data_file_raw=on", data_file.display());
    let with_data_file = read(&qemu_img_create(d, "df.qcow2", "qcow2", &opts, "16M"));
    let extent = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                   createType=\"monolithicSparse\"\n\nRW 2048 FLAT \"/etc/passwd\" 0\n";
    let features = u64::from_be_bytes(
        small[QCOW2_INCOMPATIBLE_FEATURES..QCOW2_INCOMPATIBLE_FEATURES + 8]
            .try_into()
            .expect("8 bytes"),
    );
    // One gzip layer is unwrapped (`service::unwrap`); a nested one is refused.
    let gz = d.join("q.qcow2");
    run("gzip", &["-k", "-n", gz.to_str().expect("utf-8")]);
    let once = d.join("q.qcow2.gz").display().to_string();
    run("sh", &["-c", &format!("gzip -c -n {once} > {once}.gz")]);
    let vhdx_dir = d.join("vhdx");
    std::fs::create_dir_all(&vhdx_dir).expect("mkdir");
    let dirty = VhdxPatch::new(dynamic_with_data(&vhdx_dir))
        .log_guid([0x5a; 16])
        .bytes;
    vec![
        hostile(
            "backing_file",
            "qcow2",
            backed.clone(),
            "backing_file",
            "/etc/passwd",
        ),
        // CVE-2024-40767: a "raw" image that is a qcow2 naming a host file.
        hostile(
            "backing_raw",
            "raw",
            backed,
            "backing_file",
            "declared as raw",
        ),
        hostile(
            "data_file",
            "qcow2",
            with_data_file,
            "data_file",
            &format!("'{}'", data_file.display()),
        ),
        hostile(
            "external_extent",
            "vmdk",
            extent.to_vec(),
            "external_extent",
            "/etc/passwd",
        ),
        hostile(
            "unsupported_subformat",
            "vmdk",
            vmfs_sparse(d),
            "unsupported_subformat",
            "createType 'vmfsSparse'",
        ),
        hostile(
            "unknown_feature",
            "qcow2",
            patched(
                small.clone(),
                QCOW2_INCOMPATIBLE_FEATURES,
                &(features | QCOW2_INCOMPAT_FIRST_UNKNOWN).to_be_bytes(),
            ),
            "unknown_feature",
            "unknown incompatible feature bits 0x20",
        ),
        hostile(
            "encrypted",
            "qcow2",
            read(&qcow2_luks(d, "l.qcow2", "16M")),
            "encrypted",
            "encrypt",
        ),
        hostile(
            "multiple_formats",
            "iso",
            iso_with_qcow2(d),
            "multiple_formats",
            "more than one format",
        ),
        hostile(
            "format_mismatch",
            "raw",
            qcow2.clone(),
            "format_mismatch",
            "is qcow2",
        ),
        hostile(
            "truncated",
            "qcow2",
            qcow2[..qcow2.len() / 2].to_vec(),
            "truncated",
            &format!("ends at {} bytes", qcow2.len() / 2),
        ),
        hostile(
            "corrupt",
            "qcow2",
            patched(qcow2.clone(), QCOW2_CLUSTER_BITS, &30u32.to_be_bytes()),
            "corrupt",
            "cluster_bits 30",
        ),
        hostile(
            "size_cap",
            "qcow2",
            read(&qemu_img_create(d, "big.qcow2", "qcow2", "", "1G")),
            "size_cap",
            "1073741824",
        ),
        hostile(
            "unsupported_format",
            "raw",
            read(&qemu_img_create(d, "x.qed", "qed", "", "16M")),
            "unsupported_format",
            "qed",
        ),
        hostile(
            "compressed",
            "qcow2",
            read(&d.join("q.qcow2.gz.gz")),
            "compressed",
            "nested",
        ),
        hostile("empty", "raw", Vec::new(), "empty", "0 bytes"),
        hostile(
            "limit_exceeded",
            "qcow2",
            too_many_snapshots(small),
            "limit_exceeded",
            "snapshots",
        ),
        hostile("dirty", "vhdx", dirty, "dirty", "log must be replayed"),
    ]
}

/// A QEMU monolithicSparse VMDK whose embedded descriptor claims `vmfsSparse`.
fn vmfs_sparse(d: &Path) -> Vec<u8> {
    let path = image_with_data(d, "vmfs.vmdk", "vmdk", "subformat=monolithicSparse");
    let mut bytes = read(&path);
    let area = &mut bytes[VMDK_DESCRIPTOR];
    let len = area.iter().position(|&b| b == 0).expect("NUL-terminated");
    let text = std::str::from_utf8(&area[..len]).expect("ascii").to_owned();
    let edited = text.replace("\"monolithicSparse\"", "\"vmfsSparse\"");
    assert_ne!(edited, text);
    area.fill(0);
    area[..edited.len()].copy_from_slice(edited.as_bytes());
    bytes
}

/// An ISO 9660 image (genisoimage) with a qcow2 header in its system area.
fn iso_with_qcow2(d: &Path) -> Vec<u8> {
    let src = d.join("iso-src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("readme.txt"), "sluice polyglot\n").expect("write");
    write_pattern(&src.join("data.bin"), 0, 100 * 1024);
    let iso = d.join("poly.iso");
    let (out, input) = (iso.to_str().expect("utf-8"), src.to_str().expect("utf-8"));
    run("genisoimage", &["-quiet", "-J", "-R", "-o", out, input]);
    let header = read(&qemu_img_create(
        d,
        "h.qcow2",
        "qcow2",
        "cluster_size=4096",
        "1M",
    ));
    assert!(header.len() <= ISO_SYSTEM_AREA_LEN, "qcow2 must fit");
    patched(read(&iso), 0, &header)
}

fn start_server() -> Server {
    Server::start(&["--max-virtual-size", &CAP.to_string()])
}

fn create_image(server: &Server, h: &Hostile) -> String {
    let body = json!({"name": h.name, "disk_format": h.disk_format, "container_format": "bare"});
    let resp = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

fn image(server: &Server, id: &str) -> Value {
    server.get(&format!("/v2/images/{id}")).json()
}

/// The image is `queued` with no data, and nothing is stored or staged.
fn assert_requeued_and_nothing_left(server: &Server, id: &str, what: &str) {
    let img = image(server, id);
    assert_eq!(img["status"], "queued", "{what}: {img}");
    for key in ["size", "checksum", "os_hash_value", "virtual_size"] {
        assert_eq!(img[key], Value::Null, "{what}: {key} kept: {img}");
    }
    assert!(img.get("os_glance_import_task").is_none(), "{what}: {img}");
    assert_no_files(server);
    let staged = server.files_under("staging");
    assert!(staged.is_empty(), "{what}: staged files left: {staged:?}");
}

/// A refused upload or stage: 415, the reason code, the message naming it and the cause.
fn assert_refused_body(resp: &Resp, h: &Hostile, what: &str) {
    assert_eq!(resp.status, 415, "{what} {}: {}", h.name, resp.text());
    assert_eq!(resp.json()["reason"], h.reason, "{what} {}", h.name);
    let msg = resp.error_message();
    assert!(
        msg.contains(&format!("({})", h.reason)) && msg.contains(&h.needle),
        "{what} {}: {msg:?} lacks the reason or {:?}",
        h.name,
        h.needle
    );
}

/// The table, served by a file server of its own.
fn serve_table(dir: &Path) -> (Vec<Hostile>, FileServer) {
    let table = hostile_images(dir);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    for h in &table {
        std::fs::write(served.join(h.name), &h.bytes).expect("write");
    }
    (table, FileServer::start(&served))
}

#[test]
fn test_hostile_every_rejection_class_fails_a_web_download_task() {
    let dir = scratch();
    let (table, files) = serve_table(dir.path());
    let server = start_server();
    for h in &table {
        let id = create_image(&server, h);
        let body = json!({"method": {"name": "web-download", "uri": files.url(h.name)}});
        let resp = server.req(
            "POST",
            &format!("/v2/images/{id}/import"),
            ADMIN,
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(resp.status, 202, "{}: {}", h.name, resp.text());
        let tasks = server.get(&format!("/v2/images/{id}/tasks")).json()["tasks"]
            .as_array()
            .expect("tasks")
            .clone();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        let task = server.wait_task(tasks[0]["id"].as_str().expect("task id"));
        assert_eq!(task["status"], "failure", "{}: {task}", h.name);
        assert_eq!(task["type"], "api_image_import", "{task}");
        assert_eq!(task["reason"], h.reason, "{}: {task}", h.name);
        let msg = task["message"].as_str().expect("message");
        assert!(
            msg.contains(&h.needle),
            "{}: {msg:?} lacks {:?}",
            h.name,
            h.needle
        );
        // The task is final before the image is requeued: give the worker a moment.
        let deadline = Instant::now() + TASK_DEADLINE;
        while image(&server, &id)["status"] != "queued" && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let img = image(&server, &id);
        assert_eq!(img["os_glance_failed_import"], "", "{}: {img}", h.name);
        assert_eq!(
            img["os_glance_importing_to_stores"], "",
            "{}: {img}",
            h.name
        );
        assert_requeued_and_nothing_left(&server, &id, h.name);
    }
}

#[test]
fn test_hostile_every_rejection_class_fails_a_legacy_import_task() {
    let dir = scratch();
    let (table, files) = serve_table(dir.path());
    let server = start_server();
    for h in &table {
        let input = import_input(&files.url(h.name), h.disk_format, h.name);
        let task = server.create_task(input);
        let task = server.wait_task(task["id"].as_str().expect("id"));
        assert_eq!(task["status"], "failure", "{}: {task}", h.name);
        assert_eq!(task["reason"], h.reason, "{}: {task}", h.name);
        assert_eq!(task["result"], Value::Null, "{task}");
        let msg = task["message"].as_str().expect("message");
        assert!(
            msg.contains(&h.needle),
            "{}: {msg:?} lacks {:?}",
            h.name,
            h.needle
        );
        assert_no_images(&server);
        assert_no_files(&server);
    }
}

#[test]
fn test_hostile_every_rejection_class_is_a_refused_upload_and_a_refused_stage() {
    let dir = scratch();
    let table = hostile_images(dir.path());
    let server = start_server();
    for h in &table {
        for what in ["file", "stage"] {
            let id = create_image(&server, h);
            let resp = server.req(
                "PUT",
                &format!("/v2/images/{id}/{what}"),
                &[("Content-Type", "application/octet-stream")],
                Some(&h.bytes),
            );
            assert_refused_body(&resp, h, what);
            assert_requeued_and_nothing_left(&server, &id, &format!("{what} {}", h.name));
        }
    }
}
