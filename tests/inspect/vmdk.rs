//! vmdk inspection tests on real images.
//!
//! Images come from `qemu-img` (monolithicSparse, QEMU's streamOptimized, descriptor files)
//! and from Debian's `python3-vmdkstream` (VMware-style streamOptimized with grain-table and
//! grain-directory markers, footer and end-of-stream marker, as cloud images are built).
//! Hostile variants patch those real images at the named offsets below.

use std::path::{Path, PathBuf};

use sluice_formats::{Format, ReasonCode};

use crate::common::*;

/// Sparse extent header fields (little-endian), byte offsets in sector 0.
const HDR_DESC_OFFSET: usize = 28;
/// Start of the embedded descriptor: sector 1.
const DESCRIPTOR_START: usize = 512;
/// QEMU writes a 20-sector descriptor area.
const QEMU_DESCRIPTOR_LEN: usize = 20 * 512;
/// The trailer of a VMware-style stream: footer marker, footer, end-of-stream marker.
const FOOTER_MARKER_FROM_END: usize = 1536;
const FOOTER_FROM_END: usize = 1024;
const EOS_FROM_END: usize = 512;
/// In a metadata marker `{u64 numSectors, u32 size, u32 type}`, the type field.
const MARKER_TYPE: usize = 12;
/// In a header or footer, `gdOffset`.
const HDR_GD_OFFSET: usize = 56;

fn vmdk_create(dir: &Path, name: &str, opts: &str, size: &str) -> PathBuf {
    qemu_img_create(dir, name, "vmdk", opts, size)
}

/// Rewrites the text of the embedded descriptor of a QEMU sparse image, keeping the area's
/// size (NUL padded), as a hostile uploader would.
fn patch_descriptor(bytes: &mut [u8], edit: impl Fn(&str) -> String) {
    let area = &mut bytes[DESCRIPTOR_START..DESCRIPTOR_START + QEMU_DESCRIPTOR_LEN];
    let len = area
        .iter()
        .position(|&b| b == 0)
        .expect("NUL-terminated descriptor");
    let text = std::str::from_utf8(&area[..len]).expect("ascii descriptor");
    let new = edit(text);
    assert_ne!(new, text, "the edit must change the descriptor");
    assert!(new.len() < QEMU_DESCRIPTOR_LEN);
    area.fill(0);
    area[..new.len()].copy_from_slice(new.as_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

// ---- accepted ----------------------------------------------------------------------------

#[test]
fn test_vmdk_monolithic_sparse_empty_is_accepted() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "a.vmdk", "", "10M");
    assert_accepts_like_qemu(&path, Format::Vmdk, "vmdk");
}

#[test]
fn test_vmdk_monolithic_sparse_with_data_is_accepted() {
    let dir = scratch();
    let small = vmdk_with_data(dir.path(), "s.vmdk", "", 8 << 20);
    assert_accepts_like_qemu(&small, Format::Vmdk, "vmdk");
    let large = vmdk_with_data(dir.path(), "l.vmdk", "", 300 << 20);
    assert_accepts_like_qemu(&large, Format::Vmdk, "vmdk");
}

#[test]
fn test_vmdk_stream_optimized_with_data_is_accepted() {
    let dir = scratch();
    let opts = "subformat=streamOptimized";
    let small = vmdk_with_data(dir.path(), "s.vmdk", opts, 8 << 20);
    assert_accepts_like_qemu(&small, Format::Vmdk, "vmdk");
    let large = vmdk_with_data(dir.path(), "l.vmdk", opts, 300 << 20);
    assert_accepts_like_qemu(&large, Format::Vmdk, "vmdk");
    let empty = vmdk_create(dir.path(), "e.vmdk", opts, "10M");
    assert_accepts_like_qemu(&empty, Format::Vmdk, "vmdk");
}

#[test]
fn test_vmdk_vmware_style_stream_with_footer_is_accepted() {
    let dir = scratch();
    let small = vmdkstream(dir.path(), "v.vmdk", 8 << 20);
    assert_accepts_like_qemu(&small, Format::Vmdk, "vmdk");
    let large = vmdkstream(dir.path(), "vl.vmdk", 80 << 20);
    assert_accepts_like_qemu(&large, Format::Vmdk, "vmdk");
}

#[test]
fn test_vmdk_size_not_a_grain_multiple_is_accepted() {
    // 5 MiB + 3 sectors: the last grain is partial.
    let dir = scratch();
    let size = (5 << 20) + 3 * 512;
    let odd = vmdkstream(dir.path(), "v.vmdk", size);
    assert_accepts_like_qemu(&odd, Format::Vmdk, "vmdk");
    for (i, opts) in ["", "subformat=streamOptimized"].iter().enumerate() {
        let odd = vmdk_with_data(dir.path(), &format!("q{i}.vmdk"), opts, size);
        assert_accepts_like_qemu(&odd, Format::Vmdk, "vmdk");
    }
}

#[test]
fn test_vmdk_create_options_are_accepted() {
    let dir = scratch();
    for (i, opts) in [
        "adapter_type=lsilogic",
        "adapter_type=buslogic,hwversion=6",
        "hwversion=4",
        "compat6=on",
        "zeroed_grain=on",
        "zeroed_grain=on,subformat=monolithicSparse",
    ]
    .iter()
    .enumerate()
    {
        let empty = vmdk_create(dir.path(), &format!("e{i}.vmdk"), opts, "64M");
        assert_accepts_like_qemu(&empty, Format::Vmdk, "vmdk");
        let data = vmdk_with_data(dir.path(), &format!("d{i}.vmdk"), opts, 12 << 20);
        assert_accepts_like_qemu(&data, Format::Vmdk, "vmdk");
    }
}

// ---- descriptor files and extents ------------------------------------------------------

#[test]
fn test_vmdk_monolithic_flat_descriptor_is_unsupported_subformat() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "f.vmdk", "subformat=monolithicFlat", "10M");
    let bytes = read(&path);
    assert!(bytes.starts_with(b"# Disk DescriptorFile"));
    let report = assert_rejects(&bytes, None, ReasonCode::UnsupportedSubformat);
    assert!(matches!(report.format, Format::Vmdk));
    assert!(report.has_reason(ReasonCode::ExternalExtent));
    // Declared raw (the CVE-2024-40767 shape): still refused for what it is.
    assert_rejects(&bytes, Some(Format::Raw), ReasonCode::UnsupportedSubformat);
}

#[test]
fn test_vmdk_descriptor_flat_extent_on_host_path_is_external_extent() {
    // CVE-2022-47951: an allowed createType whose extent copies a host file.
    let text = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                createType=\"monolithicSparse\"\n\nRW 2048 FLAT \"/etc/passwd\" 0\n";
    let report = assert_rejects(text.as_bytes(), None, ReasonCode::ExternalExtent);
    assert!(matches!(report.format, Format::Vmdk));
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("/etc/passwd")));
    assert_rejects(
        text.as_bytes(),
        Some(Format::Raw),
        ReasonCode::ExternalExtent,
    );
    assert_rejects(
        text.as_bytes(),
        Some(Format::Vmdk),
        ReasonCode::ExternalExtent,
    );
}

#[test]
fn test_vmdk_two_gb_max_extent_sparse_is_unsupported_subformat() {
    let dir = scratch();
    let path = vmdk_create(
        dir.path(),
        "t.vmdk",
        "subformat=twoGbMaxExtentSparse",
        "10M",
    );
    assert_rejects(
        &read(&path),
        Some(Format::Vmdk),
        ReasonCode::UnsupportedSubformat,
    );
}

#[test]
fn test_vmdk_embedded_extent_on_host_path_is_external_extent() {
    let dir = scratch();
    let path = vmdk_with_data(dir.path(), "x.vmdk", "", 4 << 20);
    let mut bytes = read(&path);
    patch_descriptor(&mut bytes, |t| t.replace("\"x.vmdk\"", "\"/etc/passwd\""));
    let report = assert_rejects(&bytes, None, ReasonCode::ExternalExtent);
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("/etc/passwd")));
    // The descriptor is known after 10.5 KiB: no need to read the rest.
    assert!(!report.complete);
}

#[test]
fn test_vmdk_embedded_two_extents_is_external_extent() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "x.vmdk", "", "4M");
    let mut bytes = read(&path);
    patch_descriptor(&mut bytes, |t| {
        t.replace(
            "RW 8192 SPARSE \"x.vmdk\"\n",
            "RW 8192 SPARSE \"x.vmdk\"\nRW 8192 SPARSE \"y.vmdk\"\n",
        )
    });
    assert_rejects(&bytes, Some(Format::Vmdk), ReasonCode::ExternalExtent);
}

#[test]
fn test_vmdk_missing_create_type_is_unsupported_subformat() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "x.vmdk", "", "4M");
    let mut bytes = read(&path);
    patch_descriptor(&mut bytes, |t| {
        t.replace("createType=\"monolithicSparse\"\n", "")
    });
    assert_rejects(&bytes, Some(Format::Vmdk), ReasonCode::UnsupportedSubformat);
}

#[test]
fn test_vmdk_invalid_descriptor_line_is_corrupt() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "x.vmdk", "", "4M");
    let mut bytes = read(&path);
    patch_descriptor(&mut bytes, |t| {
        format!("{t}this is not a descriptor line\n")
    });
    let report = assert_rejects(&bytes, Some(Format::Vmdk), ReasonCode::Corrupt);
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("descriptor line")));
}

#[test]
fn test_vmdk_descriptor_at_wrong_sector_is_corrupt() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "x.vmdk", "", "4M");
    let mut bytes = read(&path);
    put_u64(&mut bytes, HDR_DESC_OFFSET, 2);
    assert_rejects(&bytes, Some(Format::Vmdk), ReasonCode::Corrupt);
}

#[test]
fn test_vmdk_parent_is_backing_file() {
    let dir = scratch();
    let base = vmdk_create(dir.path(), "base.vmdk", "", "4M");
    let child = dir.path().join("child.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            base.to_str().expect("utf-8"),
            "-F",
            "vmdk",
            child.to_str().expect("utf-8"),
        ],
    );
    let report = assert_rejects(&read(&child), Some(Format::Vmdk), ReasonCode::BackingFile);
    assert!(!report.complete);
    // parentCID alone, patched into a plain image.
    let mut bytes = read(&base);
    patch_descriptor(&mut bytes, |t| {
        t.replace("parentCID=ffffffff", "parentCID=1234abcd")
    });
    assert_rejects(&bytes, Some(Format::Vmdk), ReasonCode::BackingFile);
}

#[test]
fn test_vmdk_declared_qcow2_is_format_mismatch() {
    let dir = scratch();
    let path = vmdk_create(dir.path(), "x.vmdk", "", "4M");
    assert_rejects(
        &read(&path),
        Some(Format::Qcow2),
        ReasonCode::FormatMismatch,
    );
}

// ---- structure ---------------------------------------------------------------------------

#[test]
fn test_vmdk_truncated_monolithic_sparse_is_truncated() {
    let dir = scratch();
    let path = vmdk_with_data(dir.path(), "x.vmdk", "", 8 << 20);
    let bytes = read(&path);
    let report = assert_rejects(&bytes[..bytes.len() - 4096], None, ReasonCode::Truncated);
    assert!(matches!(report.format, Format::Vmdk));
}

#[test]
fn test_vmdk_grain_inside_metadata_is_corrupt() {
    let dir = scratch();
    let path = vmdk_with_data(dir.path(), "x.vmdk", "", 8 << 20);
    let mut bytes = read(&path);
    // gdOffset → first grain table → its first entry (the grain of LBA 0, which has data).
    let gd = u64::from_le_bytes(bytes[HDR_GD_OFFSET..HDR_GD_OFFSET + 8].try_into().unwrap());
    let gt = u32::from_le_bytes(
        bytes[gd as usize * 512..gd as usize * 512 + 4]
            .try_into()
            .unwrap(),
    );
    put_u32(&mut bytes, gt as usize * 512, 1);
    assert_rejects(&bytes, Some(Format::Vmdk), ReasonCode::Corrupt);
}

#[test]
fn test_vmdk_stream_damaged_footer_marker_is_corrupt() {
    let dir = scratch();
    let bytes = read(&vmdkstream(dir.path(), "v.vmdk", 8 << 20));
    let len = bytes.len();
    let mut marker = bytes.clone();
    put_u32(&mut marker, len - FOOTER_MARKER_FROM_END + MARKER_TYPE, 7);
    assert_rejects(&marker, Some(Format::Vmdk), ReasonCode::Corrupt);
    let mut eos = bytes.clone();
    put_u32(&mut eos, len - EOS_FROM_END + MARKER_TYPE, 3);
    assert_rejects(&eos, Some(Format::Vmdk), ReasonCode::Corrupt);
    let mut gd = bytes.clone();
    put_u64(&mut gd, len - FOOTER_FROM_END + HDR_GD_OFFSET, u64::MAX);
    let report = assert_rejects(&gd, Some(Format::Vmdk), ReasonCode::Corrupt);
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("bad VMDK footer chain")));
}

#[test]
fn test_vmdk_truncated_stream_is_truncated() {
    let dir = scratch();
    // VMware style: the cut removes the end of the chain (footer and EOS): truncated, as
    // the chain runs past the end of the file.
    let bytes = read(&vmdkstream(dir.path(), "v.vmdk", 8 << 20));
    assert_rejects(&bytes[..bytes.len() - 1024], None, ReasonCode::Truncated);
    // QEMU style: the cut lands inside the last grain's compressed data.
    let bytes = read(&vmdk_with_data(
        dir.path(),
        "q.vmdk",
        "subformat=streamOptimized",
        8 << 20,
    ));
    let data_end = bytes.iter().rposition(|&b| b != 0).expect("data");
    assert_rejects(&bytes[..data_end - 16], None, ReasonCode::Truncated);
}
