//! `[limits]` keys through the real binary: each limit given by a flag (or its `SLUICE_*`
//! variable, or the TOML file) replaces its default, and the refusal it causes names the key.

use serde_json::Value;

use super::harness::{assert_no_files, assert_no_images, import_input, FileServer, Server};
use super::imports::image_with_data;
use crate::common::{scratch, wrap};
use crate::inspect::vmdk_footer::{FooterVmdk, GRAINS};

/// Imports `name` declared `fmt` and returns the finished task, which must have failed with
/// `limit_exceeded` naming `key`, leaving nothing behind.
fn assert_refused_naming(server: &Server, files: &FileServer, name: &str, fmt: &str, key: &str) {
    let task = server.create_task(import_input(&files.url(name), fmt, name));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "failure", "{done}");
    assert_eq!(done["reason"], "limit_exceeded", "{done}");
    assert!(
        done["message"].as_str().is_some_and(|m| m.contains(key)),
        "{key}: {done}"
    );
    assert_eq!(done["result"], Value::Null);
    assert_no_images(server);
    assert_no_files(server);
}

#[test]
fn test_limits_max_decoder_memory_flag_refuses_an_xz_stream_naming_the_key() {
    let dir = scratch();
    let qcow2 = image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    // xz's default preset (-6) has an 8 MiB dictionary: 9 MiB to decode.
    wrap(&qcow2, "xz", "xz");
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--max-decoder-memory", &(1u64 << 20).to_string()]);
    assert_refused_naming(
        &server,
        &files,
        "disk.qcow2.xz",
        "qcow2",
        "limits.max_decoder_memory",
    );
}

#[test]
fn test_limits_vmdk_max_footer_window_flag_refuses_a_footer_vmdk_naming_the_key() {
    let dir = scratch();
    // Its directory, one grain table and the footer: 4 KiB held from the end.
    FooterVmdk::build(&GRAINS).write(dir.path());
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--vmdk-max-footer-window", "2048"]);
    assert_refused_naming(
        &server,
        &files,
        "footer.vmdk",
        "vmdk",
        "limits.vmdk_max_footer_window",
    );
}

#[test]
fn test_limits_max_spill_bytes_flag_bounds_the_spool_of_a_footer_vmdk_conversion() {
    let dir = scratch();
    FooterVmdk::build(&GRAINS).write(dir.path());
    let files = FileServer::start(dir.path());
    let server = Server::start(&["--conversion", "raw", "--max-spill-bytes", "65536"]);
    assert_refused_naming(&server, &files, "footer.vmdk", "vmdk", "max_spill_bytes");
}
