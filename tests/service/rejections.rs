//! Every rejection class of the formats inspector, and broken sources, arriving over HTTP:
//! the task fails with the inspector's reason code and a message naming the cause, no image
//! record is created and no file is left under the data directory.

use std::path::Path;

use serde_json::Value;

use super::harness::{
    assert_no_files, assert_no_images, free_port, import_input, raw_disk, FileServer, Serve, Server,
};
use super::imports::image_with_data;
use crate::common::{
    qcow2_backed_by_passwd, qcow2_luks, qemu_img_create, read, run, scratch, write_pattern,
};

/// qcow2 header: `cluster_bits` (u32, big-endian) at byte 20 (`docs/interop/qcow2.rst`).
const QCOW2_CLUSTER_BITS: usize = 20;
/// qcow2 v3 header: incompatible feature bits (u64, big-endian) at byte 72.
const QCOW2_INCOMPATIBLE_FEATURES: usize = 72;
/// Incompatible feature bit 5: the first bit no QEMU defines.
const QCOW2_INCOMPAT_FIRST_UNKNOWN: u64 = 1 << 5;
/// VMDK sparse images made by QEMU embed their descriptor at sector 1, in a 20-sector area.
const VMDK_DESCRIPTOR_START: usize = 512;
const VMDK_QEMU_DESCRIPTOR_LEN: usize = 20 * 512;
/// The ISO 9660 system area (16 sectors of 2048 bytes), free-form, where a polyglot hides.
const ISO_SYSTEM_AREA_LEN: usize = 32 * 1024;

/// Imports `name` declared `fmt` from `dir` on a fresh server (with `flags`) and returns the
/// failed task after checking the no-image, no-file guarantees.
fn import_failure(dir: &Path, name: &str, fmt: &str, flags: &[&str]) -> Value {
    let files = FileServer::start(dir);
    let server = Server::start(flags);
    failure_on(&server, &files.url(name), fmt)
}

fn failure_on(server: &Server, url: &str, fmt: &str) -> Value {
    let task = server.create_task(import_input(url, fmt, "hostile"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["result"], Value::Null, "{done}");
    assert!(done["expires_at"].is_string(), "{done}");
    assert_no_images(server);
    assert_no_files(server);
    done
}

/// Asserts `reason` and that the message contains every one of `needles`.
fn assert_failed(task: &Value, reason: &str, needles: &[&str]) {
    assert_eq!(task["reason"], reason, "{task}");
    let msg = task["message"].as_str().expect("message");
    for needle in needles {
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
}

#[test]
fn test_import_qcow2_backing_file_fails_with_backing_file() {
    let dir = scratch();
    qcow2_backed_by_passwd(dir.path(), "backed.qcow2", Some("16M"));
    let task = import_failure(dir.path(), "backed.qcow2", "qcow2", &[]);
    assert_failed(
        &task,
        "backing_file",
        &["qcow2 image references backing file '/etc/passwd'"],
    );
}

#[test]
fn test_import_qcow2_data_file_fails_with_data_file() {
    let dir = scratch();
    let data = dir.path().join("data.raw");
    let opts = format!("data_file={},data_file_raw=on", data.display());
    qemu_img_create(dir.path(), "df.qcow2", "qcow2", &opts, "16M");
    let task = import_failure(dir.path(), "df.qcow2", "qcow2", &[]);
    assert_failed(&task, "data_file", &[&format!("'{}'", data.display())]);
}

#[test]
fn test_import_vmdk_external_extent_fails_with_external_extent() {
    // CVE-2022-47951: an allowed createType whose extent copies a host file.
    let dir = scratch();
    let text = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                createType=\"monolithicSparse\"\n\nRW 2048 FLAT \"/etc/passwd\" 0\n";
    std::fs::write(dir.path().join("extent.vmdk"), text).expect("write");
    let task = import_failure(dir.path(), "extent.vmdk", "vmdk", &[]);
    assert_failed(&task, "external_extent", &["/etc/passwd"]);
}

#[test]
fn test_import_vmdk_monolithic_flat_descriptor_fails_with_external_extent() {
    // A descriptor file: its data lives in `flat-flat.vmdk`. The primary reason is the
    // external extent; the message also names the unsupported createType.
    let dir = scratch();
    qemu_img_create(
        dir.path(),
        "flat.vmdk",
        "vmdk",
        "subformat=monolithicFlat",
        "16M",
    );
    assert!(read(&dir.path().join("flat.vmdk")).starts_with(b"# Disk DescriptorFile"));
    let task = import_failure(dir.path(), "flat.vmdk", "vmdk", &[]);
    assert_failed(
        &task,
        "external_extent",
        &["flat-flat.vmdk", "createType 'monolithicFlat'"],
    );
}

#[test]
fn test_import_vmdk_vmfs_sparse_create_type_fails_with_unsupported_subformat() {
    // A QEMU monolithicSparse image whose embedded descriptor claims `vmfsSparse` (a VMware
    // subformat QEMU reads but oslo's inspector refuses).
    let dir = scratch();
    let path = image_with_data(
        dir.path(),
        "vmfs.vmdk",
        "vmdk",
        "subformat=monolithicSparse",
    );
    let mut bytes = read(&path);
    let area = &mut bytes[VMDK_DESCRIPTOR_START..VMDK_DESCRIPTOR_START + VMDK_QEMU_DESCRIPTOR_LEN];
    let len = area
        .iter()
        .position(|&b| b == 0)
        .expect("NUL-terminated descriptor");
    let text = std::str::from_utf8(&area[..len]).expect("ascii").to_owned();
    let edited = text.replace(
        "createType=\"monolithicSparse\"",
        "createType=\"vmfsSparse\"",
    );
    assert_ne!(edited, text);
    area.fill(0);
    area[..edited.len()].copy_from_slice(edited.as_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let task = import_failure(dir.path(), "vmfs.vmdk", "vmdk", &[]);
    assert_failed(&task, "unsupported_subformat", &["createType 'vmfsSparse'"]);
}

#[test]
fn test_import_luks_encrypted_qcow2_fails_with_encrypted() {
    let dir = scratch();
    qcow2_luks(dir.path(), "enc.qcow2", "16M");
    let task = import_failure(dir.path(), "enc.qcow2", "qcow2", &[]);
    assert_failed(&task, "encrypted", &["encrypt"]);
}

#[test]
fn test_import_qcow2_declared_raw_fails_with_format_mismatch() {
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let task = import_failure(dir.path(), "disk.qcow2", "raw", &[]);
    assert_failed(
        &task,
        "format_mismatch",
        &["image declared as raw is qcow2"],
    );
}

#[test]
fn test_import_qcow2_with_backing_declared_raw_fails_with_backing_file_and_mismatch() {
    // CVE-2024-40767: a "raw" image that is a qcow2 pointing at a host file. The reason is the
    // content finding (backing_file); the message also names the mismatch.
    let dir = scratch();
    qcow2_backed_by_passwd(dir.path(), "raw-but-qcow2", Some("16M"));
    let task = import_failure(dir.path(), "raw-but-qcow2", "raw", &[]);
    assert_failed(&task, "backing_file", &["'/etc/passwd'", "declared as raw"]);
}

#[test]
fn test_import_qcow2_cut_in_half_fails_with_truncated() {
    let dir = scratch();
    let whole = image_with_data(dir.path(), "whole.qcow2", "qcow2", "");
    let bytes = read(&whole);
    let half = &bytes[..bytes.len() / 2];
    std::fs::write(dir.path().join("half.qcow2"), half).expect("write");
    let task = import_failure(dir.path(), "half.qcow2", "qcow2", &[]);
    assert_failed(
        &task,
        "truncated",
        &[&format!("ends at {} bytes", half.len())],
    );
}

#[test]
fn test_import_qcow2_cluster_bits_30_fails_with_corrupt() {
    let dir = scratch();
    let path = image_with_data(dir.path(), "cb.qcow2", "qcow2", "");
    let mut bytes = read(&path);
    bytes[QCOW2_CLUSTER_BITS..QCOW2_CLUSTER_BITS + 4].copy_from_slice(&30u32.to_be_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let task = import_failure(dir.path(), "cb.qcow2", "qcow2", &[]);
    assert_failed(&task, "corrupt", &["cluster_bits 30"]);
}

#[test]
fn test_import_gzip_of_gzip_of_qcow2_fails_with_compressed() {
    // One gzip layer is unwrapped (see `service::unwrap`); a nested one is refused.
    let dir = scratch();
    let path = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    run("gzip", &["-k", "-n", path.to_str().expect("utf-8")]);
    let gz = dir.path().join("disk.qcow2.gz").display().to_string();
    run("sh", &["-c", &format!("gzip -c -n {gz} > {gz}.gz")]);
    let task = import_failure(dir.path(), "disk.qcow2.gz.gz", "qcow2", &[]);
    assert_failed(&task, "compressed", &["gzip", "nested"]);
}

#[test]
fn test_import_iso_with_qcow2_in_system_area_fails_with_multiple_formats() {
    let dir = scratch();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("readme.txt"), "sluice polyglot\n").expect("write");
    write_pattern(&src.join("data.bin"), 0, 100 * 1024);
    let iso = dir.path().join("poly.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-J",
            "-R",
            "-o",
            iso.to_str().expect("utf-8"),
            src.to_str().expect("utf-8"),
        ],
    );
    let qcow2 = qemu_img_create(dir.path(), "q.qcow2", "qcow2", "cluster_size=4096", "1M");
    let header = read(&qcow2);
    assert!(
        header.len() <= ISO_SYSTEM_AREA_LEN,
        "qcow2 must fit the system area"
    );
    let mut bytes = read(&iso);
    bytes[..header.len()].copy_from_slice(&header);
    std::fs::write(&iso, &bytes).expect("write");
    let task = import_failure(dir.path(), "poly.iso", "iso", &[]);
    assert_failed(&task, "multiple_formats", &["more than one format"]);
}

#[test]
fn test_import_over_max_virtual_size_fails_with_size_cap() {
    let dir = scratch();
    image_with_data(dir.path(), "big.qcow2", "qcow2", "");
    let cap = (8u64 << 20).to_string();
    let task = import_failure(
        dir.path(),
        "big.qcow2",
        "qcow2",
        &["--max-virtual-size", &cap],
    );
    assert_failed(&task, "size_cap", &["67108864", &cap]);
}

#[test]
fn test_import_source_404_fails_with_source_error() {
    let dir = scratch();
    let task = import_failure(dir.path(), "missing.qcow2", "qcow2", &[]);
    assert_failed(&task, "source_error", &["404"]);
}

#[test]
fn test_import_source_refused_port_fails_with_source_error() {
    let port = free_port();
    let allowed = format!("127.0.0.1:{port}");
    let server = Server::start(&["--allow-import-host", &allowed]);
    let url = format!("http://127.0.0.1:{port}/x.qcow2");
    let task = failure_on(&server, &url, "qcow2");
    assert_eq!(task["reason"], "source_error", "{task}");
    let msg = task["message"]
        .as_str()
        .expect("message")
        .to_ascii_lowercase();
    assert!(
        msg.contains("refused") || msg.contains("connect"),
        "message does not name the connection failure: {msg}"
    );
}

#[test]
fn test_import_source_closing_mid_body_fails_with_source_error() {
    let dir = scratch();
    raw_disk(dir.path(), "cut.raw", 4 << 20, 4);
    let files = FileServer::start(dir.path());
    files.set("cut.raw", Serve::CloseAfter(1 << 20));
    let server = Server::start(&[]);
    let task = failure_on(&server, &files.url("cut.raw"), "raw");
    assert_eq!(task["reason"], "source_error", "{task}");
    let msg = task["message"].as_str().expect("message");
    assert!(
        !msg.is_empty() && msg != "Task failed due to Internal Error",
        "{msg}"
    );
}

#[test]
fn test_import_qcow2_unknown_incompatible_feature_fails_with_unknown_feature() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "feat.qcow2", "qcow2", "", "16M");
    let mut bytes = read(&path);
    let field = &mut bytes[QCOW2_INCOMPATIBLE_FEATURES..QCOW2_INCOMPATIBLE_FEATURES + 8];
    let old = u64::from_be_bytes(field.try_into().expect("8 bytes"));
    field.copy_from_slice(&(old | QCOW2_INCOMPAT_FIRST_UNKNOWN).to_be_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let task = import_failure(dir.path(), "feat.qcow2", "qcow2", &[]);
    assert_failed(
        &task,
        "unknown_feature",
        &["unknown incompatible feature bits 0x20"],
    );
}

#[test]
fn test_import_qed_declared_raw_fails_with_unsupported_format() {
    let dir = scratch();
    qemu_img_create(dir.path(), "disk.qed", "qed", "", "16M");
    let task = import_failure(dir.path(), "disk.qed", "raw", &[]);
    assert_failed(&task, "unsupported_format", &[]);
}

#[test]
fn test_import_empty_source_fails_with_empty() {
    let dir = scratch();
    std::fs::write(dir.path().join("empty.raw"), b"").expect("write");
    let task = import_failure(dir.path(), "empty.raw", "raw", &[]);
    assert_failed(&task, "empty", &["0 bytes"]);
}
