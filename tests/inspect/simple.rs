//! simple inspection tests on real images.
//!
//! VDI, QED and LUKS images from qemu-img, and real images wrapped by gzip, xz, zstd, bzip2,
//! zip and tar: all refused, with the virtual size qemu-img reports where one exists.

use std::path::{Path, PathBuf};

use sluice_formats::{Format, ReasonCode, DECISION_STEP};

use crate::common::{
    assert_chunking_invariant, assert_rejects, qemu_img_convert, qemu_img_create, qemu_info,
    raw_with_data, read, run, scratch, sluice_inspect_stdin,
};

/// Creates `fmt` with qemu-img and checks it is refused as `unsupported_format` with
/// qemu-img's virtual size.
fn assert_unsupported_like_qemu(dir: &Path, fmt: &str, format: Format) {
    let path = qemu_img_create(dir, &format!("image.{fmt}"), fmt, "", "100M");
    let report = assert_rejects(&read(&path), Some(format), ReasonCode::UnsupportedFormat);
    assert!(matches!(report.format, f if f == format));
    let info = qemu_info(&path, None);
    assert_eq!(info.format, fmt);
    assert_eq!(report.virtual_size, Some(info.virtual_size));
}

#[test]
fn test_vdi_qemu_img_is_unsupported_format() {
    let dir = scratch();
    assert_unsupported_like_qemu(dir.path(), "vdi", Format::Vdi);
}

#[test]
fn test_vdi_with_data_is_unsupported_format() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "disk.raw", 3 << 20);
    let vdi = qemu_img_convert(&raw, &dir.path().join("disk.vdi"), "vdi", "");
    let report = assert_rejects(&read(&vdi), None, ReasonCode::UnsupportedFormat);
    assert_eq!(
        report.virtual_size,
        Some(qemu_info(&vdi, None).virtual_size)
    );
}

#[test]
fn test_qed_qemu_img_is_unsupported_format() {
    let dir = scratch();
    assert_unsupported_like_qemu(dir.path(), "qed", Format::Qed);
}

#[test]
fn test_luks_qemu_img_is_encrypted() {
    let dir = scratch();
    let path = dir.path().join("disk.luks");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            "secret,id=sec0,data=abc",
            "-o",
            "key-secret=sec0",
            path.to_str().expect("utf-8"),
            "1M",
        ],
    );
    let bytes = read(&path);
    let report = assert_rejects(&bytes, Some(Format::Luks), ReasonCode::Encrypted);
    assert!(matches!(report.format, Format::Luks));
    assert!(!report.complete, "LUKS is known from its first sector");
    assert_rejects(&bytes, Some(Format::Raw), ReasonCode::Encrypted);
}

/// A real 2 MiB qcow2 image with data, to be wrapped. 64 KiB of the data are pseudo-random
/// so that every compressor's output exceeds one decision step.
fn inner_image(dir: &Path) -> PathBuf {
    use rand::{RngCore, SeedableRng};
    use std::io::{Seek, SeekFrom, Write};
    let raw = raw_with_data(dir, "inner.raw", 2 << 20);
    let mut noise = vec![0u8; 64 * 1024];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut noise);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .expect("open raw");
    f.seek(SeekFrom::Start(1 << 20)).expect("seek");
    f.write_all(&noise).expect("write");
    qemu_img_convert(&raw, &dir.join("inner.qcow2"), "qcow2", "")
}

/// Runs `sh -c SCRIPT` in `dir` (for redirections).
fn shell(dir: &Path, script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks that `wrapped` is refused as compressed, early, and detected as `format`.
fn assert_wrapper_rejected_early(wrapped: &Path, format: Format) {
    let bytes = read(wrapped);
    assert!(
        bytes.len() as u64 > DECISION_STEP,
        "{format} output is too small"
    );
    for declared in [None, Some(Format::Qcow2), Some(Format::Raw)] {
        let report = inspector_refuses_wrapper(&bytes, declared);
        assert!(
            matches!(report.format, f if f == format),
            "{:?}",
            report.formats
        );
        assert!(
            !report.complete,
            "{format} must be refused before end of stream"
        );
        assert!(report.bytes_inspected <= DECISION_STEP);
    }
    match format {
        Format::Gzip | Format::Xz | Format::Zstd | Format::Bzip2 => cli_unwraps(&bytes, "qcow2"),
        // Zip and plain tar are not unwrapped: refused by the CLI too.
        _ => {
            assert_rejects(&bytes, None, ReasonCode::Compressed);
        }
    }
}

/// The inspector (`sluice-formats`) refuses a wrapper as `compressed`, in every chunking: a
/// wrapper found inside an image stays refused.
fn inspector_refuses_wrapper(bytes: &[u8], declared: Option<Format>) -> sluice_formats::Report {
    let report = assert_chunking_invariant(bytes, declared);
    assert!(
        report.has_reason(ReasonCode::Compressed),
        "expected compressed, got {:?} (format {})",
        report.reasons,
        report.format
    );
    report
}

/// `sluice inspect` unwraps one layer and inspects the image inside (README, "Compressed
/// images and OVA").
fn cli_unwraps(bytes: &[u8], inner: &str) {
    let (status, json) = sluice_inspect_stdin(bytes, &[]);
    assert_eq!(status, 0, "{json}");
    assert_eq!(json["format"], inner, "{json}");
    assert!(json["unwrapped"].is_string(), "{json}");
}

#[test]
fn test_gzip_wrapped_image_is_compressed() {
    let dir = scratch();
    inner_image(dir.path());
    shell(dir.path(), "gzip -c inner.qcow2 > inner.qcow2.gz");
    assert_wrapper_rejected_early(&dir.path().join("inner.qcow2.gz"), Format::Gzip);
}

#[test]
fn test_xz_wrapped_image_is_compressed() {
    let dir = scratch();
    inner_image(dir.path());
    shell(dir.path(), "xz -k -c inner.qcow2 > inner.qcow2.xz");
    assert_wrapper_rejected_early(&dir.path().join("inner.qcow2.xz"), Format::Xz);
}

#[test]
fn test_zstd_wrapped_image_is_compressed() {
    let dir = scratch();
    inner_image(dir.path());
    shell(dir.path(), "zstd -q -c inner.qcow2 > inner.qcow2.zst");
    assert_wrapper_rejected_early(&dir.path().join("inner.qcow2.zst"), Format::Zstd);
}

#[test]
fn test_bzip2_wrapped_image_is_compressed() {
    let dir = scratch();
    inner_image(dir.path());
    shell(dir.path(), "bzip2 -k -c inner.qcow2 > inner.qcow2.bz2");
    assert_wrapper_rejected_early(&dir.path().join("inner.qcow2.bz2"), Format::Bzip2);
}

#[test]
fn test_zip_wrapped_image_is_compressed() {
    let dir = scratch();
    inner_image(dir.path());
    shell(dir.path(), "python3 -m zipfile -c inner.zip inner.qcow2");
    assert_wrapper_rejected_early(&dir.path().join("inner.zip"), Format::Zip);
}

#[test]
fn test_tar_wrapped_image_is_compressed() {
    let dir = scratch();
    inner_image(dir.path());
    shell(dir.path(), "tar cf inner.tar inner.qcow2");
    assert_wrapper_rejected_early(&dir.path().join("inner.tar"), Format::Tar);
}

#[test]
fn test_gzip_of_raw_image_is_compressed() {
    // Compressible pattern data: check the small case too (input under one decision step).
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "small.raw", 1 << 20);
    let bytes = read(&raw);
    let gz = dir.path().join("small.raw.gz");
    std::fs::write(&gz, gzip(&bytes, dir.path())).expect("write");
    let wrapped = read(&gz);
    let report = inspector_refuses_wrapper(&wrapped, Some(Format::Raw));
    assert!(matches!(report.format, Format::Gzip));
    assert_eq!(report.complete, wrapped.len() as u64 <= DECISION_STEP);
    cli_unwraps(&wrapped, "raw");
}

/// `gzip -c` of `bytes`, through a file in `dir`.
fn gzip(bytes: &[u8], dir: &Path) -> Vec<u8> {
    let input = dir.join("gzip-input");
    std::fs::write(&input, bytes).expect("write");
    let out = run("gzip", &["-c", input.to_str().expect("utf-8")]);
    out.stdout
}
