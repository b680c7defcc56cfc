//! Hand-made qcow2 images for the cases no tool writes: a named-field header builder and a
//! small image layout (4 KiB clusters) with one L2 table and one data cluster.

use crate::fuzzing::inspect_chunked;
use crate::{inspect_bytes, Format, Inspector, Limits, Progress, ReasonCode, Report};

use super::extensions::ext;
use super::header::{incompat, off};

/// Every field of a v2/v3 header, by name.
#[derive(Clone, Debug)]
struct TestHeader {
    version: u32,
    backing_file_offset: u64,
    backing_file_size: u32,
    cluster_bits: u32,
    size: u64,
    crypt_method: u32,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    nb_snapshots: u32,
    snapshots_offset: u64,
    incompatible_features: u64,
    compatible_features: u64,
    autoclear_features: u64,
    refcount_order: u32,
    header_length: u32,
    compression_type: u8,
}

/// Cluster size of the test layout.
const CS: u64 = 4096;
/// Test layout: refcount table, refcount block, L1 table, L2 table, one data cluster.
const REFTABLE_AT: u64 = CS;
const REFBLOCK_AT: u64 = 2 * CS;
const L1_AT: u64 = 3 * CS;
const L2_AT: u64 = 4 * CS;
const DATA_AT: u64 = 5 * CS;
const IMAGE_LEN: u64 = 6 * CS;
/// L2 entry bit 63: refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// L2 entry bit 62: the cluster is compressed.
const L2E_COMPRESSED_BIT: u64 = 1 << 62;

impl Default for TestHeader {
    fn default() -> Self {
        TestHeader {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 12,
            size: 1 << 20,
            crypt_method: 0,
            l1_size: 1,
            l1_table_offset: L1_AT,
            refcount_table_offset: REFTABLE_AT,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 112,
            compression_type: 0,
        }
    }
}

impl TestHeader {
    /// The 112 header bytes (v2 images simply ignore the v3 fields).
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 112];
        b[..4].copy_from_slice(b"QFI\xfb");
        put32(&mut b, off::VERSION, self.version);
        put64(&mut b, off::BACKING_FILE_OFFSET, self.backing_file_offset);
        put32(&mut b, off::BACKING_FILE_SIZE, self.backing_file_size);
        put32(&mut b, off::CLUSTER_BITS, self.cluster_bits);
        put64(&mut b, off::SIZE, self.size);
        put32(&mut b, off::CRYPT_METHOD, self.crypt_method);
        put32(&mut b, off::L1_SIZE, self.l1_size);
        put64(&mut b, off::L1_TABLE_OFFSET, self.l1_table_offset);
        put64(
            &mut b,
            off::REFCOUNT_TABLE_OFFSET,
            self.refcount_table_offset,
        );
        put32(
            &mut b,
            off::REFCOUNT_TABLE_CLUSTERS,
            self.refcount_table_clusters,
        );
        put32(&mut b, off::NB_SNAPSHOTS, self.nb_snapshots);
        put64(&mut b, off::SNAPSHOTS_OFFSET, self.snapshots_offset);
        if self.version >= 3 {
            put64(
                &mut b,
                off::INCOMPATIBLE_FEATURES,
                self.incompatible_features,
            );
            put64(&mut b, off::COMPATIBLE_FEATURES, self.compatible_features);
            put64(&mut b, off::AUTOCLEAR_FEATURES, self.autoclear_features);
            put32(&mut b, off::REFCOUNT_ORDER, self.refcount_order);
            put32(&mut b, off::HEADER_LENGTH, self.header_length);
            b[off::COMPRESSION_TYPE] = self.compression_type;
        }
        b
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A header extension with its padding.
fn extension(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&kind.to_be_bytes());
    e.extend_from_slice(&(data.len() as u32).to_be_bytes());
    e.extend_from_slice(data);
    while e.len() % 8 != 0 {
        e.push(0);
    }
    e
}

/// The test layout under `h`: the refcount table names the refcount block, L1 entry 0 the L2
/// table, L2 entry 0 the data cluster (or `l2_entry` when given).
struct TestImage {
    bytes: Vec<u8>,
}

impl TestImage {
    fn new(h: &TestHeader) -> Self {
        let mut bytes = vec![0u8; IMAGE_LEN as usize];
        let header = h.encode();
        bytes[..header.len()].copy_from_slice(&header);
        let mut img = TestImage { bytes };
        img.put(REFTABLE_AT, REFBLOCK_AT);
        img.put(L1_AT, L2_AT | COPIED);
        img.put(L2_AT, DATA_AT | COPIED);
        img
    }

    /// Writes a big-endian u64 at `at`.
    fn put(&mut self, at: u64, v: u64) -> &mut Self {
        put64(&mut self.bytes, at as usize, v);
        self
    }

    /// Writes bytes at `at`.
    fn write(&mut self, at: u64, data: &[u8]) -> &mut Self {
        let at = at as usize;
        if self.bytes.len() < at + data.len() {
            self.bytes.resize(at + data.len(), 0);
        }
        self.bytes[at..at + data.len()].copy_from_slice(data);
        self
    }

    /// Writes header extensions after a 112-byte header, ending the chain.
    fn extensions(&mut self, exts: &[Vec<u8>]) -> &mut Self {
        let mut at = 112u64;
        for e in exts {
            self.write(at, e);
            at += e.len() as u64;
        }
        self.write(at, &[0u8; 8]);
        self
    }
}

fn inspect(bytes: &[u8]) -> Report {
    inspect_with(bytes, Limits::default())
}

fn inspect_with(bytes: &[u8], limits: Limits) -> Report {
    inspect_bytes(bytes, Some(Format::Qcow2), limits)
}

/// The report must not depend on chunking: compare whole, byte-by-byte, and odd splits.
fn assert_same_in_chunks(bytes: &[u8]) -> Report {
    let whole = inspect(bytes);
    for sizes in [&[1usize][..], &[7], &[511, 13, 4096], &[4095, 2]] {
        let split = inspect_chunked(bytes, Some(Format::Qcow2), sizes);
        assert_eq!(whole, split, "chunking {sizes:?} changed the report");
    }
    whole
}

fn reason(report: &Report, code: ReasonCode) -> &str {
    report
        .reasons
        .iter()
        .find(|r| r.code == code)
        .map(|r| r.message.as_str())
        .unwrap_or_else(|| panic!("no {code} in {:?}", report.reasons))
}

#[test]
fn test_qcow2_minimal_v3_image_is_accepted() {
    let img = TestImage::new(&TestHeader::default());
    let report = assert_same_in_chunks(&img.bytes);
    assert!(report.is_accepted(), "{:?}", report.reasons);
    assert!(matches!(report.format, Format::Qcow2));
    assert!(matches!(report.virtual_size, Some(0x10_0000)));
}

#[test]
fn test_qcow2_minimal_v2_image_is_accepted() {
    let img = TestImage::new(&TestHeader {
        version: 2,
        ..TestHeader::default()
    });
    let report = assert_same_in_chunks(&img.bytes);
    assert!(report.is_accepted(), "{:?}", report.reasons);
}

#[test]
fn test_qcow2_unaligned_size_reports_whole_sectors_like_qemu() {
    // qemu-img info shows 512 for a stored size of 1000 (total_sectors = size / 512).
    let img = TestImage::new(&TestHeader {
        size: 1000,
        ..TestHeader::default()
    });
    let report = inspect(&img.bytes);
    assert!(matches!(report.virtual_size, Some(512)));
}

#[test]
fn test_qcow2_backing_file_is_rejected_early_with_its_name() {
    let name = b"/etc/passwd";
    let mut img = TestImage::new(&TestHeader {
        backing_file_offset: 0x200,
        backing_file_size: name.len() as u32,
        ..TestHeader::default()
    });
    img.extensions(&[extension(ext::BACKING_FORMAT, b"raw")])
        .write(0x200, name);
    let mut inspector = Inspector::new(Some(Format::Qcow2), Limits::default());
    let early = match inspector.feed(&img.bytes[..4096]) {
        Progress::Rejected(r) => r.clone(),
        Progress::NeedMore => panic!("a backing file is known from cluster 0"),
    };
    assert!(!early.complete);
    let msg = reason(&early, ReasonCode::BackingFile);
    assert!(
        msg.contains("'/etc/passwd'") && msg.contains("format raw"),
        "{msg}"
    );
    assert_same_in_chunks(&img.bytes);
}

#[test]
fn test_qcow2_backing_name_too_long_is_rejected() {
    let img = TestImage::new(&TestHeader {
        backing_file_offset: 0x200,
        backing_file_size: 2000,
        ..TestHeader::default()
    });
    let report = inspect(&img.bytes);
    assert!(reason(&report, ReasonCode::BackingFile).contains("invalid"));
}

#[test]
fn test_qcow2_data_file_extension_is_named() {
    let mut img = TestImage::new(&TestHeader {
        incompatible_features: incompat::DATA_FILE,
        ..TestHeader::default()
    });
    img.extensions(&[extension(ext::DATA_FILE, b"/dev/sda")]);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::DataFile).contains("'/dev/sda'"));
}

#[test]
fn test_qcow2_data_file_extension_without_bit_is_rejected() {
    let mut img = TestImage::new(&TestHeader::default());
    img.extensions(&[extension(ext::DATA_FILE, b"x.raw")]);
    let report = inspect(&img.bytes);
    assert!(report.has_reason(ReasonCode::DataFile));
}

#[test]
fn test_qcow2_fde_extension_is_encrypted() {
    let mut img = TestImage::new(&TestHeader::default());
    img.extensions(&[extension(ext::FDE, &[0u8; 16])]);
    let report = inspect(&img.bytes);
    assert!(report.has_reason(ReasonCode::Encrypted));
}

#[test]
fn test_qcow2_extension_longer_than_cluster_is_corrupt() {
    let mut img = TestImage::new(&TestHeader::default());
    // Type and length only: the length runs past cluster 0.
    let mut e = 0x1234_5678u32.to_be_bytes().to_vec();
    e.extend_from_slice(&(CS as u32).to_be_bytes());
    img.write(112, &e);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("header extension"));
}

#[test]
fn test_qcow2_unknown_incompatible_bit_is_unknown_feature() {
    let img = TestImage::new(&TestHeader {
        incompatible_features: 1 << 5,
        ..TestHeader::default()
    });
    let report = inspect(&img.bytes);
    assert!(reason(&report, ReasonCode::UnknownFeature).contains("0x20"));
}

#[test]
fn test_qcow2_dirty_bit_is_accepted() {
    // Dirty only means stale refcounts (lazy refcounts); QEMU reads the data as is.
    let img = TestImage::new(&TestHeader {
        incompatible_features: incompat::DIRTY,
        ..TestHeader::default()
    });
    assert!(inspect(&img.bytes).is_accepted());
}

#[test]
fn test_qcow2_unknown_compression_type_is_unknown_feature() {
    let img = TestImage::new(&TestHeader {
        incompatible_features: incompat::COMPRESSION_TYPE,
        compression_type: 7,
        ..TestHeader::default()
    });
    let report = inspect(&img.bytes);
    assert!(report.has_reason(ReasonCode::UnknownFeature));
}

#[test]
fn test_qcow2_zstd_without_bit_is_corrupt() {
    let img = TestImage::new(&TestHeader {
        compression_type: 1,
        ..TestHeader::default()
    });
    assert!(inspect(&img.bytes).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_qcow2_version_4_is_unknown_feature_and_version_0_corrupt() {
    let v4 = TestHeader {
        version: 4,
        ..TestHeader::default()
    };
    let report = inspect(&TestImage::new(&v4).bytes);
    assert!(matches!(report.format, Format::Qcow2));
    assert!(report.has_reason(ReasonCode::UnknownFeature));
    let v0 = TestHeader {
        version: 0,
        ..TestHeader::default()
    };
    assert!(inspect(&TestImage::new(&v0).bytes).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_qcow2_magic_then_garbage_is_corrupt() {
    // A deterministic xorshift fill after the magic: what a damaged or forged file holds.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for seed in 0..32u64 {
        let mut bytes = b"QFI\xfb".to_vec();
        x ^= seed;
        while bytes.len() < 64 << 10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let report = inspect(&bytes);
        assert!(
            report.reasons.first().map(|r| r.code) == Some(ReasonCode::Corrupt),
            "seed {seed}: {:?}",
            report.reasons
        );
    }
}
#[test]
fn test_qcow2_bad_header_length_is_corrupt() {
    for header_length in [100, 108, 8192] {
        let img = TestImage::new(&TestHeader {
            header_length,
            ..TestHeader::default()
        });
        let report = inspect(&img.bytes);
        assert!(
            reason(&report, ReasonCode::Corrupt).contains("header_length"),
            "{header_length}"
        );
    }
}

#[test]
fn test_qcow2_extended_l2_with_small_clusters_is_corrupt() {
    let img = TestImage::new(&TestHeader {
        incompatible_features: incompat::EXTENDED_L2,
        ..TestHeader::default()
    });
    assert!(reason(&inspect(&img.bytes), ReasonCode::Corrupt).contains("extended L2"));
}

#[test]
fn test_qcow2_refcount_order_7_is_corrupt() {
    let img = TestImage::new(&TestHeader {
        refcount_order: 7,
        ..TestHeader::default()
    });
    assert!(reason(&inspect(&img.bytes), ReasonCode::Corrupt).contains("refcount_order"));
}

#[test]
fn test_qcow2_huge_l1_size_beyond_what_the_size_needs_is_corrupt_without_allocating() {
    // Found by reasoning: l1_size u32::MAX is 32 GiB of L1 table; 8 * l1_size overflows u32.
    // The header check refuses it before any scanner is built. A 1 MiB disk needs one entry:
    // the header contradicts itself (corrupt), it is not a big image (limit_exceeded).
    let img = TestImage::new(&TestHeader {
        l1_size: u32::MAX,
        ..TestHeader::default()
    });
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("L1 table"));
    assert!(!report.has_reason(ReasonCode::LimitExceeded));
}

#[test]
fn test_qcow2_l1_over_limit_that_the_size_needs_is_limit_exceeded() {
    // 4 KiB clusters: one L1 entry maps 2 MiB, so 16 TiB needs 8 Mi entries (64 MiB of L1).
    let img = TestImage::new(&TestHeader {
        size: 16 << 40,
        l1_size: 8 << 20,
        ..TestHeader::default()
    });
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::LimitExceeded).contains("L1 table"));
    assert!(!report.has_reason(ReasonCode::Corrupt));
}
#[test]
fn test_qcow2_size_u64_max_does_not_overflow() {
    // Found by reasoning: ceil(size / bytes_per_l1_entry) written as (size + n - 1) / n
    // overflows for size near u64::MAX.
    let img = TestImage::new(&TestHeader {
        size: u64::MAX,
        ..TestHeader::default()
    });
    let report = assert_same_in_chunks(&img.bytes);
    assert!(report.has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_qcow2_l1_too_small_for_size_is_corrupt() {
    // One L1 entry covers 2 MiB with 4 KiB clusters.
    let img = TestImage::new(&TestHeader {
        size: 3 << 20,
        ..TestHeader::default()
    });
    let report = inspect(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("needs 2"));
}

#[test]
fn test_qcow2_l1_offset_in_header_cluster_is_corrupt() {
    for l1_table_offset in [0, 0x3100] {
        let img = TestImage::new(&TestHeader {
            l1_table_offset,
            ..TestHeader::default()
        });
        assert!(inspect(&img.bytes).has_reason(ReasonCode::Corrupt));
    }
}

#[test]
fn test_qcow2_refcount_table_beyond_the_file_is_corrupt() {
    // 4096 clusters of 4 KiB: a 16 MiB table in a 24 KiB file.
    let img = TestImage::new(&TestHeader {
        refcount_table_clusters: 4096,
        ..TestHeader::default()
    });
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("refcount table"));
    assert!(!report.has_reason(ReasonCode::LimitExceeded));
}

#[test]
fn test_qcow2_refcount_table_over_limit_inside_the_file_is_limit_exceeded() {
    let mut img = TestImage::new(&TestHeader {
        refcount_table_clusters: 4096,
        ..TestHeader::default()
    });
    img.write(REFTABLE_AT + (16 << 20), &[0u8; 4096]);
    let report = inspect(&img.bytes);
    assert!(reason(&report, ReasonCode::LimitExceeded).contains("refcount table"));
    assert!(!report.has_reason(ReasonCode::Corrupt));
}
#[test]
fn test_qcow2_snapshot_count_beyond_the_file_is_corrupt() {
    let img = TestImage::new(&TestHeader {
        nb_snapshots: 65_537,
        snapshots_offset: 6 * CS,
        ..TestHeader::default()
    });
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("snapshot"));
    assert!(!report.has_reason(ReasonCode::LimitExceeded));
}

#[test]
fn test_qcow2_too_many_snapshots_inside_the_file_is_limit_exceeded() {
    let mut img = TestImage::new(&TestHeader {
        nb_snapshots: 65_537,
        snapshots_offset: 6 * CS,
        ..TestHeader::default()
    });
    img.write(6 * CS + 65_537 * 40, &[0u8; 512]);
    let report = inspect(&img.bytes);
    assert!(reason(&report, ReasonCode::LimitExceeded).contains("snapshots"));
    assert!(!report.has_reason(ReasonCode::Corrupt));
}
#[test]
fn test_qcow2_snapshot_extra_data_over_limit_is_corrupt() {
    let mut img = TestImage::new(&TestHeader {
        nb_snapshots: 1,
        snapshots_offset: 6 * CS,
        ..TestHeader::default()
    });
    let mut entry = [0u8; 40];
    put64(&mut entry, 0, L1_AT);
    put32(&mut entry, 8, 1);
    put32(&mut entry, 36, 4096); // extra_data_size
    img.write(6 * CS, &entry);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("extra data"));
}

#[test]
fn test_qcow2_snapshot_table_past_end_is_truncated() {
    let mut img = TestImage::new(&TestHeader {
        nb_snapshots: 2,
        snapshots_offset: 6 * CS,
        ..TestHeader::default()
    });
    let mut entry = [0u8; 40];
    put64(&mut entry, 0, L1_AT);
    put32(&mut entry, 8, 1);
    put32(&mut entry, 36, 16);
    img.write(6 * CS, &entry).write(6 * CS + 40, &[0u8; 16 + 8]);
    // The second entry (at + 56) is cut off by the end of the stream.
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Truncated).contains("snapshot table"));
    assert!(report.has_reason(ReasonCode::Truncated));
}

#[test]
fn test_qcow2_unaligned_l2_table_is_corrupt() {
    let mut img = TestImage::new(&TestHeader::default());
    img.put(L1_AT, (L2_AT + 512) | COPIED);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("L1 entry 0"));
}

#[test]
fn test_qcow2_l2_table_inside_l1_table_is_corrupt() {
    let mut img = TestImage::new(&TestHeader::default());
    img.put(L1_AT, L1_AT | COPIED);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("L1 table itself"));
}

#[test]
fn test_qcow2_unaligned_data_cluster_is_corrupt() {
    let mut img = TestImage::new(&TestHeader::default());
    img.put(L2_AT + 8, (DATA_AT + 512) | COPIED);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("entry 1"));
}

#[test]
fn test_qcow2_data_cluster_inside_metadata_is_corrupt() {
    // Found by the issue: L2 entries pointing guest data into the image's own metadata.
    for target in [REFTABLE_AT, REFBLOCK_AT, L1_AT, L2_AT] {
        let mut img = TestImage::new(&TestHeader::default());
        img.put(L2_AT + 8, target | COPIED);
        let report = assert_same_in_chunks(&img.bytes);
        assert!(
            reason(&report, ReasonCode::Corrupt).contains("metadata"),
            "data at {target:#x}: {:?}",
            report.reasons
        );
    }
}

#[test]
fn test_qcow2_data_cluster_inside_snapshot_table_is_corrupt() {
    let mut img = TestImage::new(&TestHeader {
        nb_snapshots: 1,
        snapshots_offset: 6 * CS,
        ..TestHeader::default()
    });
    let mut entry = [0u8; 40];
    put64(&mut entry, 0, L1_AT);
    put32(&mut entry, 8, 1);
    img.write(6 * CS, &entry).write(7 * CS - 8, &[0u8; 8]);
    img.put(L2_AT + 8, (6 * CS) | COPIED);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("metadata"));
}

#[test]
fn test_qcow2_compressed_data_inside_the_l1_table_is_corrupt() {
    // 4 KiB clusters: x = 62 - 4 = 58 bits of host offset; one 512-byte sector (count 0).
    let mut img = TestImage::new(&TestHeader::default());
    img.put(L2_AT + 8, L2E_COMPRESSED_BIT | (L1_AT + 512));
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("metadata"));
}

#[test]
fn test_qcow2_data_clusters_outside_metadata_are_accepted() {
    let mut img = TestImage::new(&TestHeader::default());
    img.put(L2_AT + 8, (6 * CS) | COPIED)
        .write(7 * CS - 8, &[1u8; 8]);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(report.is_accepted(), "{:?}", report.reasons);
}

/// The L2 entry of compressed data at `host`, `len` bytes long (4 KiB clusters: the host
/// offset takes bits 0..58, the additional sector count the bits above).
fn compressed_entry(host: u64, len: u64) -> u64 {
    let sectors = (host + len - 1) / 512 - host / 512;
    L2E_COMPRESSED_BIT | (sectors << 58) | host
}

/// One 4 KiB cluster as raw deflate, the way QEMU compresses it.
fn deflated_cluster(fill: u8) -> Vec<u8> {
    use std::io::Write;
    let cluster: Vec<u8> = (0..CS as usize).map(|i| fill ^ (i % 7) as u8).collect();
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&cluster).unwrap();
    e.finish().unwrap()
}

#[test]
fn test_qcow2_compressed_clusters_that_inflate_are_accepted() {
    // Two extents packed back to back: the second starts in the first one's last sector.
    let (a, b) = (deflated_cluster(1), deflated_cluster(2));
    let mut img = TestImage::new(&TestHeader::default());
    img.write(DATA_AT, &a).write(DATA_AT + a.len() as u64, &b);
    img.put(L2_AT, compressed_entry(DATA_AT, a.len() as u64));
    img.put(
        L2_AT + 8,
        compressed_entry(DATA_AT + a.len() as u64, b.len() as u64),
    );
    let report = assert_same_in_chunks(&img.bytes);
    assert!(report.is_accepted(), "{:?}", report.reasons);
}

#[test]
fn test_qcow2_compressed_cluster_that_does_not_inflate_is_corrupt() {
    // Found by the issue: accepted when no conversion was asked for.
    // Raw deflate has no checksum, so a flipped byte may still inflate to a (different) full
    // cluster, and the encoder decides which bytes matter: damage that no encoder's output
    // survives. A first block of type 3 (reserved) never decodes; half a stream runs out.
    let good = deflated_cluster(1);
    let mut reserved_type = good.clone();
    reserved_type[0] |= 0b110;
    let cut = good[..good.len() / 2].to_vec();
    for (damage, bad) in [("reserved block type", reserved_type), ("cut in half", cut)] {
        let mut img = TestImage::new(&TestHeader::default());
        img.write(DATA_AT, &good)
            .write(DATA_AT + good.len() as u64, &bad);
        img.put(L2_AT, compressed_entry(DATA_AT, good.len() as u64));
        img.put(
            L2_AT + 8,
            compressed_entry(DATA_AT + good.len() as u64, bad.len() as u64),
        );
        let report = assert_same_in_chunks(&img.bytes);
        assert!(
            reason(&report, ReasonCode::Corrupt).contains("does not inflate"),
            "damage at {damage}: {:?}",
            report.reasons
        );
    }
}

#[test]
fn test_qcow2_compressed_check_can_be_turned_off() {
    let mut img = TestImage::new(&TestHeader::default());
    img.write(DATA_AT, &[0xffu8; 600]);
    img.put(L2_AT, compressed_entry(DATA_AT, 600));
    let limits = Limits {
        verify_compressed_clusters: false,
        ..Limits::default()
    };
    assert!(inspect_with(&img.bytes, limits).is_accepted());
    assert!(inspect(&img.bytes).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_qcow2_compressed_cluster_in_header_is_corrupt() {
    let mut img = TestImage::new(&TestHeader::default());
    // Compressed descriptor: bit 62, host offset 0x100.
    img.put(L2_AT, (1 << 62) | 0x100);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("header cluster"));
}

#[test]
fn test_qcow2_compressed_extent_past_end_is_truncated() {
    let mut img = TestImage::new(&TestHeader::default());
    // cluster_bits 12: x = 62 - (12 - 8) = 58; 3 additional sectors after DATA_AT + 100.
    let descriptor = (1u64 << 62) | (3u64 << 58) | (DATA_AT + 100);
    img.put(L2_AT, descriptor);
    // The data needs the stream to reach into sector DATA_AT/512 + 3.
    let cut = DATA_AT + 3 * 512;
    let report = assert_same_in_chunks(&img.bytes[..cut as usize]);
    let msg = reason(&report, ReasonCode::Truncated);
    assert!(msg.contains("compressed data up to 22017"), "{msg}");
    // One byte of the last sector is enough to be whole (the zeros there are no deflate
    // stream, which the compressed-cluster check reports).
    let whole = inspect(&img.bytes[..(cut + 1) as usize]);
    assert!(
        !whole.has_reason(ReasonCode::Truncated),
        "{:?}",
        whole.reasons
    );
    assert!(reason(&whole, ReasonCode::Corrupt).contains("does not inflate"));
}

#[test]
fn test_qcow2_data_cluster_past_end_is_truncated() {
    let img = TestImage::new(&TestHeader::default());
    let report = assert_same_in_chunks(&img.bytes[..(DATA_AT + 100) as usize]);
    let msg = reason(&report, ReasonCode::Truncated);
    assert!(
        msg.contains("ends at 20580 bytes") && msg.contains("L2 table at 0x4000"),
        "{msg}"
    );
}

#[test]
fn test_qcow2_tracked_tables_limit_is_enforced() {
    let mut img = TestImage::new(&TestHeader {
        size: 4 << 20,
        l1_size: 2,
        ..TestHeader::default()
    });
    img.put(L1_AT + 8, IMAGE_LEN | COPIED)
        .write(IMAGE_LEN, &[0u8; CS as usize]);
    let limits = Limits {
        max_tracked_tables: 1,
        ..Limits::default()
    };
    let report = inspect_with(&img.bytes, limits);
    assert!(report.has_reason(ReasonCode::LimitExceeded));
    assert!(inspect(&img.bytes).is_accepted());
}

#[test]
fn test_qcow_v1_is_unsupported_with_its_size() {
    let mut b = vec![0u8; 560];
    b[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut b, off::VERSION, 1);
    put64(&mut b, off::V1_SIZE, 10 << 20);
    let report = inspect_bytes(&b, None, Limits::default());
    assert!(matches!(report.format, Format::Qcow));
    assert!(matches!(report.virtual_size, Some(0xa0_0000)));
    assert!(report.has_reason(ReasonCode::UnsupportedFormat));
}

#[test]
fn test_qcow2_short_stream_with_magic_is_truncated() {
    let header = TestHeader::default().encode();
    let report = inspect(&header[..60]);
    assert!(matches!(report.format, Format::Qcow2));
    assert!(report.has_reason(ReasonCode::Truncated));
    let tiny = inspect_bytes(b"QF", None, Limits::default());
    assert!(matches!(tiny.format, Format::Raw));
}

#[test]
fn test_qcow2_findings_keep_the_lowest_offset_per_code() {
    // Two corrupt entries in one chunk: the refcount table's (earlier in the stream) wins
    // whatever the chunking.
    let mut img = TestImage::new(&TestHeader::default());
    img.put(REFTABLE_AT, REFBLOCK_AT + 512)
        .put(L1_AT, (L2_AT + 512) | COPIED);
    let report = assert_same_in_chunks(&img.bytes);
    assert!(reason(&report, ReasonCode::Corrupt).contains("refcount table entry 0"));
}

#[test]
fn test_qcow2_mutated_images_keep_the_chunking_invariant() {
    // Deterministic xorshift mutations of the header, extensions and every table, each
    // image also cut at a random length: no panic, and the same report in any chunking.
    let mut img = TestImage::new(&TestHeader {
        nb_snapshots: 1,
        snapshots_offset: IMAGE_LEN,
        ..TestHeader::default()
    });
    let mut entry = [0u8; 40];
    put64(&mut entry, 0, L1_AT);
    put32(&mut entry, 8, 1);
    img.extensions(&[extension(ext::BACKING_FORMAT, b"raw")])
        .write(IMAGE_LEN, &entry)
        .write(IMAGE_LEN + 40, &[0u8; 8]);
    let base = img.bytes.clone();
    let regions: [(u64, u64); 6] = [
        (0, 112),
        (112, 144),
        (REFTABLE_AT, 16),
        (L1_AT, 16),
        (L2_AT, 32),
        (IMAGE_LEN, 48),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..60 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 3 {
            let (start, len) = regions[(next() % regions.len() as u64) as usize];
            let at = (start + next() % len) as usize;
            bytes[at] = next() as u8;
        }
        if next() % 4 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        let whole = inspect(&bytes);
        for sizes in [&[1usize][..], &[3, 4093], &[4095, 2]] {
            let split = inspect_chunked(&bytes, Some(Format::Qcow2), sizes);
            assert_eq!(whole, split, "chunking {sizes:?} changed the report");
        }
    }
}
