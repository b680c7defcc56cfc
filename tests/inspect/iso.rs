//! iso inspection tests on real images.
//!
//! ISO 9660 images from genisoimage and xorriso (plain and hybrid with an MBR or GPT), UDF
//! from mkudffs and `genisoimage -udf`; hostile variants are made by patching real images.

use std::path::{Path, PathBuf};

use sluice_formats::{Format, ReasonCode, Report};

use crate::common::{
    assert_accepts_like_qemu, assert_chunking_invariant, assert_rejects, inspect, qemu_img_create,
    read, run, scratch, write_pattern,
};

/// The ISO 9660 / UDF system area: the first 16 sectors of 2048 bytes, free-form.
const SYSTEM_AREA_LEN: usize = 32 * 1024;

/// A small directory tree to master: a text file and 100 KiB of pattern data.
fn iso_source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("readme.txt"), "sluice test volume\n").expect("write");
    write_pattern(&src.join("sub").join("data.bin"), 0, 100 * 1024);
    src
}

/// `genisoimage -quiet ARGS -o DIR/NAME SRC`.
fn genisoimage(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let src = iso_source(dir);
    let out = dir.join(name);
    let mut all = vec!["-quiet"];
    all.extend_from_slice(args);
    all.extend([
        "-o",
        out.to_str().expect("utf-8"),
        src.to_str().expect("utf-8"),
    ]);
    run("genisoimage", &all);
    out
}

/// `xorriso -as mkisofs -quiet ARGS -o DIR/NAME SRC`.
fn xorriso(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let src = iso_source(dir);
    let out = dir.join(name);
    let mut all = vec!["-as", "mkisofs", "-quiet"];
    all.extend_from_slice(args);
    all.extend([
        "-o",
        out.to_str().expect("utf-8"),
        src.to_str().expect("utf-8"),
    ]);
    run("xorriso", &all);
    out
}

/// `mkudffs [ARGS] FILE` on a fresh 4 MiB file.
fn mkudffs(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(4 << 20))
        .expect("creating UDF file");
    let mut all = args.to_vec();
    all.push(path.to_str().expect("utf-8"));
    run("mkudffs", &all);
    path
}

/// Whether the report matched exactly `formats` (in any order).
fn has_formats(report: &Report, formats: &[Format]) -> bool {
    let mut got = report.formats.clone();
    let mut want = formats.to_vec();
    got.sort();
    want.sort();
    got == want
}

#[test]
fn test_iso_genisoimage_joliet_rock_ridge_is_accepted() {
    let dir = scratch();
    let iso = genisoimage(dir.path(), "g.iso", &["-J", "-R", "-V", "SLUICE"]);
    let report = assert_accepts_like_qemu(&iso, Format::Iso, "raw");
    assert!(has_formats(&report, &[Format::Iso]));
}

#[test]
fn test_iso_xorriso_is_accepted() {
    let dir = scratch();
    let iso = xorriso(dir.path(), "x.iso", &["-R", "-J"]);
    assert_accepts_like_qemu(&iso, Format::Iso, "raw");
}

#[test]
fn test_iso_xorriso_hybrid_mbr_is_accepted() {
    let dir = scratch();
    for (name, args) in [
        ("offset.iso", &["-partition_offset", "16"][..]),
        ("pmbr.iso", &["--protective-msdos-label"][..]),
    ] {
        let iso = xorriso(dir.path(), name, args);
        let report = assert_accepts_like_qemu(&iso, Format::Iso, "raw");
        assert!(has_formats(&report, &[Format::Iso, Format::Mbr]), "{name}");
    }
}

#[test]
fn test_iso_xorriso_hybrid_gpt_is_accepted() {
    let dir = scratch();
    let esp = dir.path().join("esp.img");
    write_pattern(&esp, 0, 1 << 20);
    let esp_arg = esp.to_str().expect("utf-8").to_owned();
    let iso = xorriso(
        dir.path(),
        "gpt.iso",
        &[
            "-append_partition",
            "2",
            "0xef",
            &esp_arg,
            "-appended_part_as_gpt",
        ],
    );
    let report = assert_accepts_like_qemu(&iso, Format::Iso, "raw");
    assert!(has_formats(&report, &[Format::Gpt, Format::Iso]));
}

#[test]
fn test_iso_udf_mkudffs_is_accepted() {
    let dir = scratch();
    for (name, args) in [
        ("udf2048.img", &["-b", "2048"][..]),
        ("udf4096.img", &["-b", "4096"][..]),
        ("udf512.img", &["-b", "512"][..]),
    ] {
        let udf = mkudffs(dir.path(), name, args);
        let report = assert_accepts_like_qemu(&udf, Format::Iso, "raw");
        assert!(has_formats(&report, &[Format::Iso]), "{name}");
    }
}

#[test]
fn test_iso_udf_mkudffs_with_mbr_boot_area_is_accepted() {
    let dir = scratch();
    let udf = mkudffs(dir.path(), "udfmbr.img", &["--bootarea=mbr"]);
    let report = assert_accepts_like_qemu(&udf, Format::Iso, "raw");
    assert!(has_formats(&report, &[Format::Iso, Format::Mbr]));
}

#[test]
fn test_iso_genisoimage_udf_bridge_is_accepted() {
    let dir = scratch();
    let iso = genisoimage(dir.path(), "bridge.iso", &["-udf", "-J", "-R"]);
    assert_accepts_like_qemu(&iso, Format::Iso, "raw");
}

/// The system area overwritten with a whole small qcow2 image (header, L1 and refcount
/// clusters of 4 KiB): qemu-img sees a qcow2, the ISO is intact (CVE-2024-32498 follow-up).
#[test]
fn test_iso_with_qcow2_in_system_area_is_multiple_formats() {
    let dir = scratch();
    let iso = genisoimage(dir.path(), "poly.iso", &["-J", "-R"]);
    let qcow2 = qemu_img_create(dir.path(), "q.qcow2", "qcow2", "cluster_size=4096", "1M");
    let header = read(&qcow2);
    assert!(
        header.len() <= SYSTEM_AREA_LEN,
        "qcow2 must fit the system area"
    );
    let mut bytes = read(&iso);
    bytes[..header.len()].copy_from_slice(&header);
    let report = assert_rejects(&bytes, Some(Format::Iso), ReasonCode::MultipleFormats);
    assert!(report.formats.contains(&Format::Iso));
    assert!(report.formats.contains(&Format::Qcow2));
    assert!(
        !report.complete,
        "a polyglot is refused before end of stream"
    );
}

#[test]
fn test_iso_cut_in_half_is_truncated() {
    let dir = scratch();
    let iso = genisoimage(dir.path(), "cut.iso", &["-J", "-R"]);
    let bytes = read(&iso);
    let half = &bytes[..bytes.len() / 2];
    let report = assert_rejects(half, Some(Format::Iso), ReasonCode::Truncated);
    assert!(matches!(report.format, Format::Iso));
}

#[test]
fn test_iso_declared_raw_is_format_mismatch() {
    let dir = scratch();
    let iso = xorriso(dir.path(), "raw.iso", &[]);
    let report = assert_rejects(&read(&iso), Some(Format::Raw), ReasonCode::FormatMismatch);
    assert!(matches!(report.format, Format::Iso));
}

#[test]
fn test_iso_hybrid_declared_raw_is_format_mismatch() {
    let dir = scratch();
    let iso = xorriso(dir.path(), "hybrid.iso", &["-partition_offset", "16"]);
    assert_rejects(&read(&iso), Some(Format::Raw), ReasonCode::FormatMismatch);
}

#[test]
fn test_iso_system_area_garbage_is_still_accepted() {
    // The system area is free-form: bytes that are no format change nothing.
    let dir = scratch();
    let iso = genisoimage(dir.path(), "junk.iso", &[]);
    let mut bytes = read(&iso);
    for (i, b) in bytes[..SYSTEM_AREA_LEN].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    let report = assert_chunking_invariant(&bytes, Some(Format::Iso));
    assert!(report.is_accepted(), "{:?}", report.reasons);
    assert!(inspect(&bytes, None).is_accepted());
}
