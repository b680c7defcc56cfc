//! Conversion inside the import service: `sluice serve --conversion raw|qcow2` and a task's
//! `input.output_format` convert the image while it streams in; the stored image, its
//! hashes and fields are the converted bytes'. Checked against `qemu-img convert`,
//! `qemu-img check` and `qemu-img compare`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::harness::{
    assert_no_files, assert_no_images, digest, import_input, raw_disk, FileServer, Server,
};
use super::imports::image_with_data;
use crate::common::{qemu_info, read, run, scratch, write_pattern};
use crate::inspect::vmdk_footer::{FooterVmdk, GRAINS};

/// Virtual size of the raw test disk converted to qcow2: 32 MiB.
const RAW_VIRTUAL: u64 = 32 << 20;
/// Blocks of 64 KiB pattern data in it.
const RAW_DATA_BLOCKS: u64 = 16;

/// qcow2 header (spec "Header"): u32 cluster_bits at 20.
const QCOW2_CLUSTER_BITS: usize = 20;
/// qcow2 header: u32 active L1 entries at 36.
const QCOW2_L1_SIZE: usize = 36;
/// qcow2 header: u64 active L1 table offset at 40.
const QCOW2_L1_TABLE_OFFSET: usize = 40;
/// Bits 9–55 of L1 entries: the L2 table's offset.
const QCOW2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: a compressed cluster, whose host offset is the low `70 - cluster_bits`
/// bits.
const QCOW2_COMPRESSED: u64 = 1 << 62;
/// Bytes of compressed data overwritten with 0xff (a deflate block of the reserved type 3).
const GARBLED_LEN: usize = 64;

fn be32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The host offset of the first compressed cluster of a (standard-L2) qcow2 image.
fn first_compressed_cluster(img: &[u8]) -> usize {
    let cluster_bits = be32(img, QCOW2_CLUSTER_BITS) as u32;
    let cluster = 1usize << cluster_bits;
    let l1 = be64(img, QCOW2_L1_TABLE_OFFSET) as usize;
    let host_mask = (1u64 << (70 - cluster_bits)) - 1;
    (0..be32(img, QCOW2_L1_SIZE) as usize)
        .map(|i| (be64(img, l1 + 8 * i) & QCOW2_OFFSET_MASK) as usize)
        .filter(|table| *table != 0)
        .flat_map(|table| img[table..table + cluster].chunks_exact(8))
        .map(|e| be64(e, 0))
        .find(|word| word & QCOW2_COMPRESSED != 0)
        .map(|word| (word & host_mask) as usize)
        .expect("a compressed cluster")
}

/// Imports `name` (declared `fmt`, plus `extra` input keys) and returns the active image and
/// its downloaded bytes, checking the task succeeded and nothing is left in `tmp/`.
fn import_image(
    server: &Server,
    files: &FileServer,
    name: &str,
    fmt: &str,
    extra: &[(&str, Value)],
) -> (Value, Vec<u8>) {
    let mut input = import_input(&files.url(name), fmt, name);
    for (k, v) in extra {
        input[*k] = v.clone();
    }
    let task = server.create_task(input);
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "success", "{done}\n{}", server.log_text());
    let image_id = done["result"]["image_id"].as_str().expect("image_id");
    let image = server.get(&format!("/v2/images/{image_id}")).json();
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["name"], name);
    let download = server.get(&format!("/v2/images/{image_id}/file"));
    assert_eq!(download.status, 200);
    assert_eq!(download.header("content-md5"), image["checksum"].as_str());
    assert!(
        server.files_under("tmp").is_empty(),
        "{:?}",
        server.files_under("tmp")
    );
    assert_eq!(server.files_under("images").len(), 1);
    (image, download.body)
}

/// Converts `src` (qemu format `fmt`) to raw with qemu-img; the reference output.
fn qemu_raw(src: &Path, fmt: &str) -> PathBuf {
    let dst = src.with_extension("qemu.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            src.to_str().expect("utf-8"),
            dst.to_str().expect("utf-8"),
        ],
    );
    dst
}

/// Imports `name` on a `--conversion raw` server and checks the image is qemu-img's raw
/// conversion of it, byte for byte, with its digests and virtual size.
fn assert_converted_to_raw(dir: &Path, name: &str, fmt: &str) {
    let src = dir.join(name);
    let reference = qemu_raw(&src, fmt);
    let files = FileServer::start(dir);
    let server = Server::start(&["--conversion", "raw"]);
    let (image, bytes) = import_image(&server, &files, name, fmt, &[]);
    assert_eq!(image["disk_format"], "raw");
    assert_eq!(image["container_format"], "bare");
    assert_eq!(image["size"], read(&reference).len() as u64);
    assert_eq!(
        image["virtual_size"],
        qemu_info(&src, Some(fmt)).virtual_size
    );
    assert!(
        bytes == read(&reference),
        "stored bytes differ from qemu-img convert -O raw"
    );
    assert_eq!(image["checksum"], digest("md5sum", &reference));
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["os_hash_value"], digest("sha512sum", &reference));
}

#[test]
fn test_conversion_raw_qcow2_with_data_stores_qemu_img_raw_and_its_hashes() {
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    assert_converted_to_raw(dir.path(), "disk.qcow2", "qcow2");
}

#[test]
fn test_conversion_raw_vmdk_stream_optimized_stores_qemu_img_raw_and_its_hashes() {
    let dir = scratch();
    image_with_data(
        dir.path(),
        "stream.vmdk",
        "vmdk",
        "subformat=streamOptimized",
    );
    assert_converted_to_raw(dir.path(), "stream.vmdk", "vmdk");
}

#[test]
fn test_conversion_raw_vmdk_footer_stores_qemu_img_raw_and_its_hashes() {
    let dir = scratch();
    FooterVmdk::build(&GRAINS).write(dir.path());
    assert_converted_to_raw(dir.path(), "footer.vmdk", "vmdk");
}

#[test]
fn test_conversion_raw_vmdk_footer_grain_in_metadata_fails_with_corrupt_leaving_nothing() {
    let dir = scratch();
    let mut img = FooterVmdk::build(&GRAINS);
    let gt = img.gt as u32;
    img.put_entry(img.gt, 7, gt);
    img.write(dir.path());
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--conversion", "raw"]);
    let task = server.create_task(import_input(&files.url("footer.vmdk"), "vmdk", "f"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "corrupt", "{done}");
    assert_eq!(done["result"], Value::Null);
    assert_no_images(&server);
    assert_no_files(&server);
}

#[test]
fn test_conversion_task_output_format_qcow2_on_raw_passes_qemu_check_and_compare() {
    let dir = scratch();
    let src = raw_disk(dir.path(), "disk.raw", RAW_VIRTUAL, RAW_DATA_BLOCKS);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let (image, bytes) = import_image(
        &server,
        &files,
        "disk.raw",
        "raw",
        &[("output_format", json!("qcow2"))],
    );
    let stored = dir.path().join("stored.qcow2");
    std::fs::write(&stored, &bytes).expect("writing the download");
    assert_eq!(image["disk_format"], "qcow2");
    assert_eq!(image["container_format"], "bare");
    assert_eq!(image["size"], bytes.len() as u64);
    assert_eq!(image["virtual_size"], RAW_VIRTUAL);
    assert_eq!(image["checksum"], digest("md5sum", &stored));
    assert_eq!(image["os_hash_value"], digest("sha512sum", &stored));
    let stored_arg = stored.to_str().expect("utf-8");
    run("qemu-img", &["check", "-f", "qcow2", stored_arg]);
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            src.to_str().expect("utf-8"),
            stored_arg,
        ],
    );
    assert_eq!(qemu_info(&stored, Some("qcow2")).virtual_size, RAW_VIRTUAL);
}

#[test]
fn test_conversion_task_output_format_none_overrides_server_raw() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--conversion", "raw"]);
    let (image, bytes) = import_image(
        &server,
        &files,
        "disk.qcow2",
        "qcow2",
        &[("output_format", json!("none"))],
    );
    assert_eq!(image["disk_format"], "qcow2");
    assert!(bytes == read(&src));
    assert_eq!(image["checksum"], digest("md5sum", &src));
}

#[test]
fn test_conversion_raw_iso_is_stored_as_iso() {
    let dir = scratch();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).expect("mkdir");
    write_pattern(&content.join("data.bin"), 0, 300 * 1024);
    let iso = dir.path().join("disc.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-J",
            "-R",
            "-o",
            iso.to_str().expect("utf-8"),
            content.to_str().expect("utf-8"),
        ],
    );
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--conversion", "raw"]);
    let (image, bytes) = import_image(&server, &files, "disc.iso", "iso", &[]);
    assert_eq!(image["disk_format"], "iso");
    assert_eq!(image["size"], read(&iso).len() as u64);
    assert!(bytes == read(&iso));
    assert_eq!(image["checksum"], digest("md5sum", &iso));
}

#[test]
fn test_conversion_raw_corrupt_compressed_cluster_fails_with_corrupt_leaving_nothing() {
    let dir = scratch();
    let raw = raw_disk(dir.path(), "c.raw", 8 << 20, 8);
    let compressed = dir.path().join("c.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            raw.to_str().expect("utf-8"),
            compressed.to_str().expect("utf-8"),
        ],
    );
    let mut img = read(&compressed);
    let at = first_compressed_cluster(&img);
    img[at..at + GARBLED_LEN].fill(0xff);
    std::fs::write(&compressed, &img).expect("writing the patched image");
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--conversion", "raw"]);
    let task = server.create_task(import_input(&files.url("c.qcow2"), "qcow2", "c"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "corrupt", "{done}");
    assert!(
        done["message"]
            .as_str()
            .is_some_and(|m| m.contains("compressed")),
        "{done}"
    );
    assert_eq!(done["result"], Value::Null);
    assert_no_images(&server);
    assert_no_files(&server);
}

#[test]
fn test_conversion_unknown_task_output_format_is_refused_with_400() {
    let server = Server::start(&["--allow-import-host", "127.0.0.1:9"]);
    let mut input = import_input("http://127.0.0.1:9/x.qcow2", "qcow2", "x");
    input["output_format"] = json!("vmdk");
    let resp = server.post_task(&json!({"type": "import", "input": input}), &[]);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("output_format"), "{}", resp.text());
}

#[test]
fn test_conversion_served_task_schema_documents_output_format() {
    let server = Server::start(&[]);
    let schema = server.get("/v2/schemas/task").json();
    let prop = &schema["properties"]["input"]["properties"]["output_format"];
    assert!(prop["description"].as_str().is_some(), "{schema}");
    assert!(prop["enum"]
        .as_array()
        .is_some_and(|e| e.contains(&json!("qcow2"))));
}
