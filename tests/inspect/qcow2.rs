//! qcow2 inspection tests on real images.
//!
//! Every image is made by `qemu-img` at test time (small virtual sizes, so the chunking
//! invariant's byte-by-byte pass stays fast). Hostile variants no tool writes are made by
//! patching real images through [`Qcow2Patch`], which names every field it touches.

use std::path::{Path, PathBuf};

use sluice_formats::{Format, Limits, ReasonCode, Report};

use crate::common::{
    assert_accepts_like_qemu, assert_rejects, qcow2_backed_by_passwd, qcow2_luks, qemu_img_convert,
    qemu_img_create, qemu_info, raw_with_data, read, run, scratch, sluice_inspect_stdin,
};

/// Header fields (big-endian), from QEMU's `docs/interop/qcow2.rst`.
const HDR_CLUSTER_BITS: usize = 20;
const HDR_L1_TABLE_OFFSET: usize = 40;
const HDR_INCOMPATIBLE_FEATURES: usize = 72;
/// Incompatible feature bit 1: QEMU marked the image corrupt.
const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 5: the first bit no QEMU defines.
const INCOMPAT_FIRST_UNKNOWN: u64 = 1 << 5;
/// L1 entries: bits 9–55 hold the L2 table offset.
const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster descriptor.
const L2E_COMPRESSED: u64 = 1 << 62;

/// A small raw disk (3 MiB + 1.5 KiB, so the last cluster is partial) with data at its
/// start, middle and end, so converted images have populated L2 tables.
const RAW_SIZE: u64 = (3 << 20) + 1536;

/// Edits a qcow2 image by field name.
struct Qcow2Patch {
    bytes: Vec<u8>,
}

impl Qcow2Patch {
    fn open(path: &Path) -> Self {
        Qcow2Patch { bytes: read(path) }
    }

    fn get_u64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    fn set_u32(mut self, at: usize, value: u32) -> Self {
        self.bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
        self
    }

    fn set_u64(mut self, at: usize, value: u64) -> Self {
        self.bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
        self
    }

    /// ORs `bits` into the incompatible feature bits (v3 images).
    fn incompatible(self, bits: u64) -> Self {
        let old = self.get_u64(HDR_INCOMPATIBLE_FEATURES);
        self.set_u64(HDR_INCOMPATIBLE_FEATURES, old | bits)
    }

    /// Offset of the L2 table named by the first allocated active L1 entry.
    fn first_l2_table(&self) -> usize {
        let l1 = self.get_u64(HDR_L1_TABLE_OFFSET) as usize;
        (0..)
            .map(|i| self.get_u64(l1 + 8 * i) & L1E_OFFSET_MASK)
            .find(|&t| t != 0)
            .expect("an allocated L2 table") as usize
    }
}

/// A qcow2 image converted from a raw disk with data, with `opts` (`-o`) and extra
/// `qemu-img convert` flags (e.g. `-c`).
fn qcow2_with_data(dir: &Path, name: &str, opts: &str, flags: &[&str]) -> PathBuf {
    let raw = raw_with_data(dir, &format!("{name}.raw"), RAW_SIZE);
    let dst = dir.join(name);
    if flags.is_empty() {
        return qemu_img_convert(&raw, &dst, "qcow2", opts);
    }
    let mut args = vec!["convert"];
    args.extend_from_slice(flags);
    args.extend(["-O", "qcow2"]);
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([raw.to_str().expect("utf-8"), dst.to_str().expect("utf-8")]);
    run("qemu-img", &args);
    dst
}

fn message(report: &Report, code: ReasonCode) -> String {
    report
        .reasons
        .iter()
        .find(|r| r.code == code)
        .map(|r| r.message.clone())
        .unwrap_or_else(|| panic!("no {code} in {:?}", report.reasons))
}

// ---- accepted ------------------------------------------------------------------------------

#[test]
fn test_qcow2_v2_compat_0_10_is_accepted() {
    let dir = scratch();
    let empty = qemu_img_create(dir.path(), "v2.qcow2", "qcow2", "compat=0.10", "10M");
    assert_accepts_like_qemu(&empty, Format::Qcow2, "qcow2");
    let data = qcow2_with_data(dir.path(), "v2data.qcow2", "compat=0.10", &[]);
    assert_accepts_like_qemu(&data, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_v3_is_accepted() {
    let dir = scratch();
    let empty = qemu_img_create(dir.path(), "v3.qcow2", "qcow2", "compat=1.1", "10M");
    assert_accepts_like_qemu(&empty, Format::Qcow2, "qcow2");
    let data = qcow2_with_data(dir.path(), "v3data.qcow2", "", &[]);
    assert_accepts_like_qemu(&data, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_cluster_sizes_512_to_2m_are_accepted() {
    let dir = scratch();
    for cluster in ["512", "4k", "64k", "2M"] {
        let name = format!("c{cluster}.qcow2");
        let opts = format!("cluster_size={cluster}");
        let path = qcow2_with_data(dir.path(), &name, &opts, &[]);
        assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_compressed_zlib_and_zstd_are_accepted() {
    let dir = scratch();
    for ty in ["zlib", "zstd"] {
        let opts = format!("compression_type={ty}");
        let path = qcow2_with_data(dir.path(), &format!("{ty}.qcow2"), &opts, &["-c"]);
        assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_compressed_small_clusters_are_accepted() {
    // Compressed descriptors' sector-count field is narrowest here (x = 62 - (12 - 8)).
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "c4k.qcow2", "cluster_size=4k", &["-c"]);
    assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_extended_l2_is_accepted() {
    let dir = scratch();
    let empty = qemu_img_create(dir.path(), "el2.qcow2", "qcow2", "extended_l2=on", "10M");
    assert_accepts_like_qemu(&empty, Format::Qcow2, "qcow2");
    let data = qcow2_with_data(dir.path(), "el2data.qcow2", "extended_l2=on", &[]);
    assert_accepts_like_qemu(&data, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_extended_l2_partial_last_cluster_is_accepted() {
    // QEMU writes only the allocated subclusters and does not pad the file to the end of
    // the cluster: an image may end inside its last data cluster (found by the converter
    // work: the inspector called this truncated).
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "el2part.qcow2", "qcow2", "extended_l2=on", "4M");
    let p = path.to_str().expect("utf-8");
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 0x44 3M 2k", p]);
    let len = std::fs::metadata(&path).expect("stat").len();
    assert_ne!(len % (64 << 10), 0, "the image should end inside a cluster");
    assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_with_snapshots_is_accepted() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "snap.qcow2", "", &[]);
    let p = path.to_str().expect("utf-8");
    run("qemu-img", &["snapshot", "-c", "first", p]);
    run("qemu-img", &["snapshot", "-c", "second snapshot", p]);
    assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_preallocated_metadata_and_full_are_accepted() {
    let dir = scratch();
    for mode in ["metadata", "full"] {
        let opts = format!("preallocation={mode}");
        let path = qemu_img_create(dir.path(), &format!("{mode}.qcow2"), "qcow2", &opts, "4M");
        assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_refcount_bits_1_and_64_are_accepted() {
    let dir = scratch();
    for bits in ["1", "64"] {
        let opts = format!("refcount_bits={bits}");
        let path = qcow2_with_data(dir.path(), &format!("r{bits}.qcow2"), &opts, &[]);
        assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_lazy_refcounts_is_accepted() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "lazy.qcow2", "lazy_refcounts=on", &[]);
    assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_resized_with_l1_after_its_l2_tables_is_accepted() {
    // Growing past the L1 table's reach moves it to the end of the file: its L2 tables have
    // streamed past before they are known (not checked, but the image is sound).
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "grown.qcow2", "cluster_size=4k", &[]);
    run(
        "qemu-img",
        &["resize", "-q", path.to_str().expect("utf-8"), "64M"],
    );
    assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
}

// ---- rejected ------------------------------------------------------------------------------

#[test]
fn test_qcow2_backing_file_is_rejected_early_with_its_name() {
    let dir = scratch();
    let path = qcow2_backed_by_passwd(dir.path(), "backed.qcow2", None);
    let report = assert_rejects(&read(&path), Some(Format::Qcow2), ReasonCode::BackingFile);
    assert!(!report.complete, "a backing file is known from the header");
    let msg = message(&report, ReasonCode::BackingFile);
    assert!(msg.contains("'/etc/passwd'"), "{msg}");
}

#[test]
fn test_qcow2_external_data_file_is_rejected_with_its_name() {
    let dir = scratch();
    let data = dir.path().join("data.raw");
    let opts = format!("data_file={},data_file_raw=on", data.display());
    let path = qemu_img_create(dir.path(), "df.qcow2", "qcow2", &opts, "4M");
    let report = assert_rejects(&read(&path), Some(Format::Qcow2), ReasonCode::DataFile);
    let msg = message(&report, ReasonCode::DataFile);
    assert!(msg.contains(&format!("'{}'", data.display())), "{msg}");
}

#[test]
fn test_qcow2_unknown_incompatible_feature_is_rejected() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "f.qcow2", "qcow2", "", "4M");
    let img = Qcow2Patch::open(&path).incompatible(INCOMPAT_FIRST_UNKNOWN);
    assert_rejects(&img.bytes, Some(Format::Qcow2), ReasonCode::UnknownFeature);
}

#[test]
fn test_qcow2_corrupt_bit_is_rejected() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "c.qcow2", "", &[]);
    let img = Qcow2Patch::open(&path).incompatible(INCOMPAT_CORRUPT);
    assert_rejects(&img.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
}

#[test]
fn test_qcow2_luks_encrypted_is_rejected() {
    let dir = scratch();
    let path = qcow2_luks(dir.path(), "enc.qcow2", "4M");
    assert_rejects(&read(&path), Some(Format::Qcow2), ReasonCode::Encrypted);
}

#[test]
fn test_qcow2_cluster_bits_30_is_rejected() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "cb.qcow2", "qcow2", "", "4M");
    let img = Qcow2Patch::open(&path).set_u32(HDR_CLUSTER_BITS, 30);
    let report = assert_rejects(&img.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
    assert!(message(&report, ReasonCode::Corrupt).contains("cluster_bits 30"));
}

#[test]
fn test_qcow2_l1_offset_unaligned_or_in_header_is_rejected() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "l1.qcow2", "", &[]);
    let l1 = Qcow2Patch::open(&path).get_u64(HDR_L1_TABLE_OFFSET);
    let unaligned = Qcow2Patch::open(&path).set_u64(HDR_L1_TABLE_OFFSET, l1 + 8);
    let report = assert_rejects(&unaligned.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
    assert!(message(&report, ReasonCode::Corrupt).contains("not aligned"));
    let in_header = Qcow2Patch::open(&path).set_u64(HDR_L1_TABLE_OFFSET, 0);
    let report = assert_rejects(&in_header.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
    assert!(message(&report, ReasonCode::Corrupt).contains("header cluster"));
}

#[test]
fn test_qcow2_l2_entry_into_header_cluster_is_rejected() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "l2.qcow2", "", &[]);
    let img = Qcow2Patch::open(&path);
    let l2 = img.first_l2_table();
    // A compressed descriptor whose host byte offset (0x100) lies in the header cluster.
    let img = img.set_u64(l2, L2E_COMPRESSED | 0x100);
    let report = assert_rejects(&img.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
    assert!(message(&report, ReasonCode::Corrupt).contains("header cluster"));
}

#[test]
fn test_qcow2_data_cluster_pointing_into_the_l1_table_is_corrupt() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "meta.qcow2", "", &[]);
    let img = Qcow2Patch::open(&path);
    let l2 = img.first_l2_table();
    let l1 = img.get_u64(HDR_L1_TABLE_OFFSET);
    // The first mapped guest cluster now reads the L1 table as its data.
    let img = img.set_u64(l2, l1 | (1 << 63));
    let report = assert_rejects(&img.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
    assert!(message(&report, ReasonCode::Corrupt).contains("metadata"));
}

#[test]
fn test_qcow2_compressed_cluster_that_does_not_inflate_is_corrupt_without_conversion() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "c.qcow2", "", &["-c"]);
    let img = Qcow2Patch::open(&path);
    assert_accepts_like_qemu(&path, Format::Qcow2, "qcow2");
    let l2 = img.first_l2_table();
    let word = img.get_u64(l2);
    assert!(
        word & L2E_COMPRESSED != 0,
        "qemu-img -c compresses the first cluster"
    );
    let cluster_bits = u32::from_be_bytes(
        img.bytes[HDR_CLUSTER_BITS..HDR_CLUSTER_BITS + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let host = (word & ((1u64 << (70 - cluster_bits)) - 1)) as usize;
    let mut img = img;
    img.bytes[host..host + 64].fill(0xff);
    let report = assert_rejects(&img.bytes, Some(Format::Qcow2), ReasonCode::Corrupt);
    assert!(message(&report, ReasonCode::Corrupt).contains("does not inflate"));
}

#[test]
fn test_qcow2_cut_in_half_is_truncated() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "t.qcow2", "", &[]);
    let bytes = read(&path);
    let half = &bytes[..bytes.len() / 2];
    let report = assert_rejects(half, Some(Format::Qcow2), ReasonCode::Truncated);
    let msg = message(&report, ReasonCode::Truncated);
    assert!(
        msg.contains(&format!("ends at {} bytes", half.len())),
        "{msg}"
    );
}

#[test]
fn test_qcow2_over_virtual_size_cap_is_rejected() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "big.qcow2", "qcow2", "", "8M");
    let bytes = read(&path);
    let limits = Limits {
        max_virtual_size: 4 << 20,
        ..Limits::default()
    };
    let report = sluice_formats::inspect_bytes(&bytes, Some(Format::Qcow2), limits);
    assert!(
        report.has_reason(ReasonCode::SizeCap),
        "{:?}",
        report.reasons
    );
    let (status, json) = sluice_inspect_stdin(&bytes, &["--max-virtual-size", "4194304"]);
    assert_eq!(status, 1, "{json}");
    assert_eq!(json["reasons"][0]["code"], "size_cap");
}

#[test]
fn test_qcow_v1_is_unsupported_format() {
    let dir = scratch();
    let path = qemu_img_create(dir.path(), "v1.qcow", "qcow", "", "10M");
    let report = assert_rejects(&read(&path), None, ReasonCode::UnsupportedFormat);
    assert!(matches!(report.format, Format::Qcow));
    let info = qemu_info(&path, Some("qcow"));
    assert_eq!(report.virtual_size, Some(info.virtual_size));
}

#[test]
fn test_qcow2_with_backing_declared_raw_is_mismatch_and_backing_file() {
    // CVE-2024-40767: a "raw" upload that is a qcow2 pointing at a host file.
    let dir = scratch();
    let path = qcow2_backed_by_passwd(dir.path(), "raw-but-qcow2", None);
    let bytes = read(&path);
    let report = assert_rejects(&bytes, Some(Format::Raw), ReasonCode::FormatMismatch);
    assert!(
        report.has_reason(ReasonCode::BackingFile),
        "{:?}",
        report.reasons
    );
    assert_rejects(&bytes, Some(Format::Raw), ReasonCode::BackingFile);
}

#[test]
fn test_qcow2_declared_vmdk_is_format_mismatch() {
    let dir = scratch();
    let path = qcow2_with_data(dir.path(), "notvmdk.qcow2", "", &[]);
    assert_rejects(&read(&path), Some(Format::Vmdk), ReasonCode::FormatMismatch);
}
