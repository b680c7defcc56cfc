//! vhd inspection tests on real images.
//!
//! Images are made by `qemu-img` (`-f vpc`); hostile variants patch their footers and dynamic
//! headers through [`VhdPatch`], which keeps checksums valid unless a test breaks them.

use std::path::Path;

use sluice_formats::{Format, ReasonCode};

use crate::common::{
    assert_accepts_like_qemu, assert_rejects, qemu_img_convert, qemu_img_create, raw_with_data,
    read, scratch,
};

/// Footer layout (big-endian): the same 512 bytes at offset 0 (dynamic) and at end of file.
const FOOTER_LEN: usize = 512;
const FOOTER_DATA_OFFSET: usize = 16;
const FOOTER_DISK_TYPE: usize = 60;
const FOOTER_CHECKSUM: usize = 64;
/// Dynamic header layout (1024 bytes at the footer's data offset).
const DYN_HEADER_LEN: usize = 1024;
const DYN_CHECKSUM: usize = 36;
const DYN_PARENT_NAME: usize = 64;
/// VHD disk type of a differencing disk.
const DISK_TYPE_DIFFERENCING: u32 = 4;

/// VHD's checksum: one's complement of the byte sum, checksum field excluded.
fn vhd_checksum(buf: &[u8], checksum_at: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    !sum
}

/// Edits a VHD image's footers and dynamic header by field name.
struct VhdPatch {
    bytes: Vec<u8>,
}

impl VhdPatch {
    fn new(bytes: Vec<u8>) -> Self {
        VhdPatch { bytes }
    }

    /// Offsets of the footer copies: 0 when the image has one there, and the end of file.
    fn footers(&self) -> Vec<usize> {
        let mut at = vec![self.bytes.len() - FOOTER_LEN];
        if self.bytes.starts_with(b"conectix") {
            at.push(0);
        }
        at
    }

    fn dyn_header(&self) -> usize {
        let f = &self.bytes[FOOTER_DATA_OFFSET..FOOTER_DATA_OFFSET + 8];
        u64::from_be_bytes(f.try_into().unwrap()) as usize
    }

    /// Sets a big-endian u32 field in every footer copy and fixes their checksums.
    fn footer_u32(mut self, field: usize, value: u32) -> Self {
        for at in self.footers() {
            self.bytes[at + field..at + field + 4].copy_from_slice(&value.to_be_bytes());
            self.fix_checksum(at, FOOTER_LEN, FOOTER_CHECKSUM);
        }
        self
    }

    /// Writes the parent's name (UTF-16BE) into the dynamic header and fixes its checksum.
    fn parent_name(mut self, name: &str) -> Self {
        let at = self.dyn_header();
        let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        self.bytes[at + DYN_PARENT_NAME..at + DYN_PARENT_NAME + utf16.len()]
            .copy_from_slice(&utf16);
        self.fix_checksum(at, DYN_HEADER_LEN, DYN_CHECKSUM);
        self
    }

    /// Flips a bit of the stored checksum of the footer at `at` (0 or end of file).
    fn break_footer_checksum(mut self, at_end: bool) -> Self {
        let at = if at_end {
            self.bytes.len() - FOOTER_LEN
        } else {
            0
        };
        self.bytes[at + FOOTER_CHECKSUM + 3] ^= 1;
        self
    }

    fn fix_checksum(&mut self, at: usize, len: usize, field: usize) {
        let sum = vhd_checksum(&self.bytes[at..at + len], field);
        self.bytes[at + field..at + field + 4].copy_from_slice(&sum.to_be_bytes());
    }
}

/// A dynamic VHD converted from a raw disk with data in several blocks.
fn dynamic_with_data(dir: &Path) -> Vec<u8> {
    let raw = raw_with_data(dir, "disk.raw", 24 << 20);
    let vhd = qemu_img_convert(&raw, &dir.join("disk.vhd"), "vpc", "subformat=dynamic");
    read(&vhd)
}

#[test]
fn test_vhd_dynamic_empty_accepted_like_qemu() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "empty.vhd", "vpc", "", "100M");
    let report = assert_accepts_like_qemu(&path, Format::Vhd, "vpc");
    // qemu's creator "qemu" is sized by CHS geometry: a little under 100 MiB.
    assert!(matches!(report.virtual_size, Some(104_865_792)));
}

#[test]
fn test_vhd_dynamic_force_size_accepted_like_qemu() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "sized.vhd", "vpc", "force_size=on", "100M");
    let report = assert_accepts_like_qemu(&path, Format::Vhd, "vpc");
    // Creator "qem2" is sized by the footer's current size.
    assert!(matches!(report.virtual_size, Some(104_857_600)));
}

#[test]
fn test_vhd_dynamic_with_data_accepted_like_qemu() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "disk.raw", 24 << 20);
    let path = qemu_img_convert(&raw, &dir.path().join("d.vhd"), "vpc", "subformat=dynamic");
    assert_accepts_like_qemu(&path, Format::Vhd, "vpc");
    let sized = qemu_img_convert(
        &raw,
        &dir.path().join("s.vhd"),
        "vpc",
        "subformat=dynamic,force_size=on",
    );
    assert_accepts_like_qemu(&sized, Format::Vhd, "vpc");
}

#[test]
fn test_vhd_fixed_accepted_like_qemu_at_end_of_stream() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "fixed.vhd", "vpc", "subformat=fixed", "6M");
    let report = assert_accepts_like_qemu(&path, Format::Vhd, "vpc");
    // A fixed VHD is only recognisable from its footer at end of stream.
    assert!(report.complete);
    let sized = qemu_img_create(
        dir.path(),
        "fixed-sized.vhd",
        "vpc",
        "subformat=fixed,force_size=on",
        "6M",
    );
    assert_accepts_like_qemu(&sized, Format::Vhd, "vpc");
}

#[test]
fn test_vhd_fixed_with_data_accepted_like_qemu() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "disk.raw", 20 << 20);
    let path = qemu_img_convert(&raw, &dir.path().join("f.vhd"), "vpc", "subformat=fixed");
    assert_accepts_like_qemu(&path, Format::Vhd, "vpc");
}

#[test]
fn test_vhd_fixed_declared_raw_is_format_mismatch() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "fixed.vhd", "vpc", "subformat=fixed", "2M");
    assert_rejects(&read(&path), Some(Format::Raw), ReasonCode::FormatMismatch);
}

#[test]
fn test_vhd_differencing_rejected_as_backing_file() {
    let dir = scratch();
    let bytes = VhdPatch::new(dynamic_with_data(dir.path()))
        .footer_u32(FOOTER_DISK_TYPE, DISK_TYPE_DIFFERENCING)
        .parent_name("C:\\parent.vhd")
        .bytes;
    let report = assert_rejects(&bytes, Some(Format::Vhd), ReasonCode::BackingFile);
    assert!(matches!(report.format, Format::Vhd));
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("parent.vhd")));
    // Known from the dynamic header: rejected before the end of the stream.
    assert!(!report.complete);
    assert_rejects(&bytes, None, ReasonCode::BackingFile);
}

#[test]
fn test_vhd_differencing_without_parent_name_rejected_as_backing_file() {
    let dir = scratch();
    let bytes = VhdPatch::new(dynamic_with_data(dir.path()))
        .footer_u32(FOOTER_DISK_TYPE, DISK_TYPE_DIFFERENCING)
        .bytes;
    let report = assert_rejects(&bytes, Some(Format::Vhd), ReasonCode::BackingFile);
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("differencing VHD")));
}

#[test]
fn test_vhd_bad_footer_checksum_rejected_as_corrupt() {
    let dir = scratch();
    let bytes = VhdPatch::new(dynamic_with_data(dir.path()))
        .break_footer_checksum(false)
        .bytes;
    assert_rejects(&bytes, Some(Format::Vhd), ReasonCode::Corrupt);
    let fixed = qemu_img_create(dir.path(), "fixed.vhd", "vpc", "subformat=fixed", "2M");
    let bytes = VhdPatch::new(read(&fixed))
        .break_footer_checksum(true)
        .bytes;
    assert_rejects(&bytes, Some(Format::Vhd), ReasonCode::Corrupt);
}

#[test]
fn test_vhd_unknown_disk_type_rejected_as_corrupt() {
    let dir = scratch();
    let bytes = VhdPatch::new(dynamic_with_data(dir.path()))
        .footer_u32(FOOTER_DISK_TYPE, 7)
        .bytes;
    assert_rejects(&bytes, Some(Format::Vhd), ReasonCode::Corrupt);
}

#[test]
fn test_vhd_dynamic_truncated_rejected_as_truncated() {
    let dir = scratch();
    let bytes = dynamic_with_data(dir.path());
    // Cut in the middle of the allocated blocks: data and end footer are gone.
    let cut = &bytes[..bytes.len() / 2];
    assert_rejects(cut, Some(Format::Vhd), ReasonCode::Truncated);
    // Only the end footer missing.
    let cut = &bytes[..bytes.len() - FOOTER_LEN];
    assert_rejects(cut, Some(Format::Vhd), ReasonCode::Truncated);
    // Cut inside the dynamic header.
    assert_rejects(&bytes[..1000], Some(Format::Vhd), ReasonCode::Truncated);
}
