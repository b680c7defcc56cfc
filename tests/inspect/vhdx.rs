//! vhdx inspection tests on real images.
//!
//! Images are made by `qemu-img` (`-f vhdx`); hostile variants patch headers and metadata
//! through [`VhdxPatch`], which recomputes CRC-32C checksums unless a test breaks them.

use std::path::Path;

use sluice_formats::{Format, ReasonCode};

use crate::common::{
    assert_accepts_like_qemu, assert_rejects, qemu_img_convert, qemu_img_create, raw_with_data,
    read, scratch,
};

/// The two headers (4 KiB each, CRC-32C over all of it, checksum at +4).
const HEADER_OFFSETS: [usize; 2] = [64 << 10, 128 << 10];
const HEADER_LEN: usize = 4 << 10;
const HEADER_CHECKSUM: usize = 4;
const HEADER_SEQUENCE: usize = 8;
const HEADER_LOG_GUID: usize = 48;
/// The first region table and its entries (32 bytes from +16: GUID, u64 offset, u32 length).
const REGION_TABLE: usize = 192 << 10;
const REGION_ENTRY_COUNT: usize = 8;
const REGION_ENTRIES: usize = 16;
const REGION_ENTRY_LEN: usize = 32;
/// Metadata table entries (32 bytes from +32: GUID, u32 offset, u32 length, u32 flags).
const METADATA_ENTRY_COUNT: usize = 10;
const METADATA_ENTRIES: usize = 32;
const METADATA_ENTRY_LEN: usize = 32;
/// The File Parameters item: u32 block size, u32 flags (bit 1: HasParent).
const FILE_PARAMETERS_FLAGS: usize = 4;
const HAS_PARENT: u32 = 2;
/// {8B7CA206-4790-4B9A-B8FE-575F050F886E} as stored (mixed-endian).
const METADATA_REGION_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
/// {CAA16737-FA36-4D43-B3B6-33F0AA44E76B} as stored.
const FILE_PARAMETERS_GUID: [u8; 16] = [
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
];

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Edits a VHDX image's headers and metadata by field name.
pub(crate) struct VhdxPatch {
    /// The image as patched so far.
    pub(crate) bytes: Vec<u8>,
}

impl VhdxPatch {
    /// Patches `bytes`.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        VhdxPatch { bytes }
    }

    /// The offset of the header qemu and Sluice use: the higher sequence number.
    fn active_header(&self) -> usize {
        let [h1, h2] = HEADER_OFFSETS;
        if le64(&self.bytes, h2 + HEADER_SEQUENCE) > le64(&self.bytes, h1 + HEADER_SEQUENCE) {
            h2
        } else {
            h1
        }
    }

    /// Sets the active header's log GUID and recomputes its checksum.
    pub(crate) fn log_guid(mut self, guid: [u8; 16]) -> Self {
        let at = self.active_header();
        self.bytes[at + HEADER_LOG_GUID..at + HEADER_LOG_GUID + 16].copy_from_slice(&guid);
        self.fix_header_checksum(at);
        self
    }

    /// Corrupts the stored checksum of both headers.
    fn break_header_checksums(mut self) -> Self {
        for at in HEADER_OFFSETS {
            self.bytes[at + HEADER_CHECKSUM] ^= 0xff;
        }
        self
    }

    fn fix_header_checksum(&mut self, at: usize) {
        self.bytes[at + HEADER_CHECKSUM..at + HEADER_CHECKSUM + 4].fill(0);
        let crc = crc32c(&self.bytes[at..at + HEADER_LEN]);
        self.bytes[at + HEADER_CHECKSUM..at + HEADER_CHECKSUM + 4]
            .copy_from_slice(&crc.to_le_bytes());
    }

    /// The metadata region's file offset, from the first region table.
    fn metadata_region(&self) -> usize {
        let count = le32(&self.bytes, REGION_TABLE + REGION_ENTRY_COUNT) as usize;
        (0..count)
            .map(|i| REGION_TABLE + REGION_ENTRIES + i * REGION_ENTRY_LEN)
            .find(|&e| self.bytes[e..e + 16] == METADATA_REGION_GUID)
            .map(|e| le64(&self.bytes, e + 16) as usize)
            .expect("metadata region")
    }

    /// The file offset of the File Parameters item.
    fn file_parameters(&self) -> usize {
        let region = self.metadata_region();
        let count = u16::from_le_bytes(
            self.bytes[region + METADATA_ENTRY_COUNT..region + METADATA_ENTRY_COUNT + 2]
                .try_into()
                .unwrap(),
        ) as usize;
        (0..count)
            .map(|i| region + METADATA_ENTRIES + i * METADATA_ENTRY_LEN)
            .find(|&e| self.bytes[e..e + 16] == FILE_PARAMETERS_GUID)
            .map(|e| region + le32(&self.bytes, e + 16) as usize)
            .expect("file parameters item")
    }

    /// Sets the File Parameters' HasParent flag (metadata items carry no checksum).
    fn has_parent(mut self) -> Self {
        let at = self.file_parameters() + FILE_PARAMETERS_FLAGS;
        let flags = le32(&self.bytes, at) | HAS_PARENT;
        self.bytes[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        self
    }
}

/// A dynamic VHDX converted from a raw disk with data in several blocks.
pub(crate) fn dynamic_with_data(dir: &Path) -> Vec<u8> {
    let raw = raw_with_data(dir, "disk.raw", 24 << 20);
    read(&qemu_img_convert(
        &raw,
        &dir.join("disk.vhdx"),
        "vhdx",
        "subformat=dynamic",
    ))
}

#[test]
fn test_vhdx_dynamic_empty_accepted_like_qemu() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "empty.vhdx", "vhdx", "", "100M");
    let report = assert_accepts_like_qemu(&path, Format::Vhdx, "vhdx");
    assert!(matches!(report.virtual_size, Some(104_857_600)));
}

#[test]
fn test_vhdx_block_sizes_accepted_like_qemu() {
    let dir = scratch();
    for (name, bs) in [("1m.vhdx", "1M"), ("8m.vhdx", "8M"), ("32m.vhdx", "32M")] {
        let opts = format!("subformat=dynamic,block_size={bs}");
        let path = qemu_img_create(dir.path(), name, "vhdx", &opts, "1G");
        assert_accepts_like_qemu(&path, Format::Vhdx, "vhdx");
    }
}

#[test]
fn test_vhdx_fixed_accepted_like_qemu() {
    let dir = scratch();
    let path = qemu_img_create(
        dir.path(),
        "fixed.vhdx",
        "vhdx",
        "subformat=fixed,block_size=1M",
        "5M",
    );
    assert_accepts_like_qemu(&path, Format::Vhdx, "vhdx");
}

#[test]
fn test_vhdx_log_size_accepted_like_qemu() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "log.vhdx", "vhdx", "log_size=2M", "64M");
    assert_accepts_like_qemu(&path, Format::Vhdx, "vhdx");
}

#[test]
fn test_vhdx_with_data_accepted_like_qemu() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "disk.raw", 24 << 20);
    for (name, opts) in [
        ("d.vhdx", "subformat=dynamic"),
        ("d8.vhdx", "subformat=dynamic,block_size=8M"),
        ("f.vhdx", "subformat=fixed,block_size=1M"),
    ] {
        let path = qemu_img_convert(&raw, &dir.path().join(name), "vhdx", opts);
        assert_accepts_like_qemu(&path, Format::Vhdx, "vhdx");
    }
    // A size that is not a multiple of the block size: the last block is partial.
    let odd = raw_with_data(dir.path(), "odd.raw", (5 << 20) + 512);
    let path = qemu_img_convert(&odd, &dir.path().join("odd.vhdx"), "vhdx", "");
    assert_accepts_like_qemu(&path, Format::Vhdx, "vhdx");
}

#[test]
fn test_vhdx_has_parent_rejected_as_backing_file() {
    let dir = scratch();
    let bytes = VhdxPatch::new(dynamic_with_data(dir.path()))
        .has_parent()
        .bytes;
    let report = assert_rejects(&bytes, Some(Format::Vhdx), ReasonCode::BackingFile);
    assert!(matches!(report.format, Format::Vhdx));
    // Known from the metadata: rejected before the end of the stream.
    assert!(!report.complete);
    assert_rejects(&bytes, None, ReasonCode::BackingFile);
}

#[test]
fn test_vhdx_log_guid_rejected_as_dirty() {
    let dir = scratch();
    let bytes = VhdxPatch::new(dynamic_with_data(dir.path()))
        .log_guid([0x5a; 16])
        .bytes;
    let report = assert_rejects(&bytes, Some(Format::Vhdx), ReasonCode::Dirty);
    assert!(report
        .reasons
        .iter()
        .any(|r| r.message.contains("log must be replayed")));
    assert!(!report.complete);
}

#[test]
fn test_vhdx_both_header_checksums_broken_rejected_as_corrupt() {
    let dir = scratch();
    let bytes = VhdxPatch::new(dynamic_with_data(dir.path()))
        .break_header_checksums()
        .bytes;
    assert_rejects(&bytes, Some(Format::Vhdx), ReasonCode::Corrupt);
}

#[test]
fn test_vhdx_truncated_rejected_as_truncated() {
    let dir = scratch();
    let bytes = dynamic_with_data(dir.path());
    // Cut after the metadata and BAT, inside the payload blocks.
    let cut = &bytes[..bytes.len() - (1 << 20)];
    assert_rejects(cut, Some(Format::Vhdx), ReasonCode::Truncated);
    // Cut inside the header section.
    assert_rejects(
        &bytes[..200 << 10],
        Some(Format::Vhdx),
        ReasonCode::Truncated,
    );
}

#[test]
fn test_vhdx_declared_given_vhd_is_format_mismatch() {
    let dir = scratch();
    let vhd = qemu_img_create(dir.path(), "disk.vhd", "vpc", "", "16M");
    assert_rejects(&read(&vhd), Some(Format::Vhdx), ReasonCode::FormatMismatch);
}
