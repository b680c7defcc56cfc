//! The qcow2 converter's unit tests: hand-laid images, whole and in every chunking.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]

use std::io::Write;

use super::*;
use crate::convert::{assert_convert_chunking_invariant, convert_chunked};
use crate::qcow2::header::{incompat, COMPRESSION_ZSTD};
use crate::{Format, Target};

/// Header field offsets used by the builder (see `header::off`).
const HEADER_LENGTH: u32 = 112;

/// A hand-laid qcow2 v3 image: the header in cluster 0, a one-cluster refcount table in
/// cluster 1, and tables and data in the clusters each test names.
struct Image {
    bits: u32,
    extended: bool,
    bytes: Vec<u8>,
}

impl Image {
    fn new(bits: u32, size: u64, l1_cluster: u64, l1_entries: u32, features: u64) -> Self {
        let cs = 1usize << bits;
        let mut b = vec![0u8; cs * 2];
        b[..4].copy_from_slice(&QCOW_MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&bits.to_be_bytes());
        b[24..32].copy_from_slice(&size.to_be_bytes());
        b[36..40].copy_from_slice(&l1_entries.to_be_bytes());
        b[40..48].copy_from_slice(&(l1_cluster << bits).to_be_bytes());
        b[48..56].copy_from_slice(&(1u64 << bits).to_be_bytes()); // refcount table
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[72..80].copy_from_slice(&features.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
        b[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
        if features & incompat::COMPRESSION_TYPE != 0 {
            b[104] = COMPRESSION_ZSTD;
        }
        Image {
            bits,
            extended: features & incompat::EXTENDED_L2 != 0,
            bytes: b,
        }
    }
    fn cs(&self) -> usize {
        1 << self.bits
    }
    fn at(&mut self, offset: usize, data: &[u8]) {
        let end = (offset + data.len()).next_multiple_of(self.cs());
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
    }
    fn l1(&mut self, l1_cluster: usize, index: usize, table_cluster: u64) {
        let word = (1u64 << 63) | (table_cluster << self.bits);
        self.at((l1_cluster << self.bits) + 8 * index, &word.to_be_bytes());
    }
    fn l2(&mut self, table_cluster: usize, index: usize, word: u64, bitmap: u64) {
        let size = if self.extended { 16 } else { 8 };
        let at = (table_cluster << self.bits) + size * index;
        self.at(at, &word.to_be_bytes());
        if self.extended {
            self.at(at + 8, &bitmap.to_be_bytes());
        }
    }
    fn data(&self, cluster: u64) -> u64 {
        (1u64 << 63) | (cluster << self.bits)
    }
    fn fill(&mut self, cluster: usize, byte: u8) {
        let cs = self.cs();
        self.at(cluster << self.bits, &vec![byte; cs]);
    }
    /// Puts `compressed` at byte `at` and returns its L2 entry.
    fn compressed(&mut self, at: usize, compressed: &[u8]) -> u64 {
        self.at(at, compressed);
        let x = 70 - self.bits;
        let sectors = ((at + compressed.len() - 1) / 512 - at / 512) as u64;
        L2E_COMPRESSED | (sectors << x) | at as u64
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + usize::from(seed)) % 251) as u8 | 1)
        .collect()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Converts `bytes` split at `size`; returns the output sized to the returned length and
/// the bytes spilled.
fn convert(
    bytes: &[u8],
    size: usize,
    limits: &ConvertLimits,
) -> Result<(Vec<u8>, usize), ConvertError> {
    let (sink, len) = convert_chunked(Format::Qcow2, Target::Raw, bytes, size, limits)?;
    let mut out = sink.output;
    assert!(out.len() as u64 <= len);
    out.resize(len as usize, 0);
    Ok((out, sink.spill.len()))
}

/// Converts at every split size; all must give `expected`. Returns the bytes spilled.
fn assert_converts(bytes: &[u8], expected: &[u8]) -> usize {
    let mut spilled = None;
    for size in [bytes.len(), 1, 7, 512, 4096, 4097, 65_537] {
        let (out, spill) = convert(bytes, size, &ConvertLimits::default())
            .unwrap_or_else(|e| panic!("split {size}: {e:?}"));
        assert!(out == expected, "split {size}: output differs");
        assert_eq!(*spilled.get_or_insert(spill), spill, "split {size}: spill");
    }
    spilled.unwrap()
}

fn image_error(bytes: &[u8], limits: &ConvertLimits) -> ReasonCode {
    let mut codes = Vec::new();
    for size in [bytes.len(), 1, 4097] {
        match convert(bytes, size, limits) {
            Err(ConvertError::Image { code, .. }) => codes.push(code),
            other => panic!("split {size}: expected an image error, got {other:?}"),
        }
    }
    assert!(codes.windows(2).all(|w| w[0] == w[1]), "{codes:?}");
    codes[0]
}

/// 4 KiB clusters, 64 KiB guest: guest clusters 0 and 5 share host cluster `a`, 3 maps
/// to `b`, 7 is a zero cluster over `z`, 9 is compressed at `c`; the L2 table at `l2`.
fn layout(l1: usize, l2: usize, a: usize, b: usize, z: usize, c: usize) -> (Vec<u8>, Vec<u8>) {
    let mut img = Image::new(12, 64 << 10, l1 as u64, 1, 0);
    let cs = img.cs();
    img.l1(l1, 0, l2 as u64);
    img.fill(a, 0x11);
    img.fill(b, 0x22);
    img.fill(z, 0x33);
    let plain = pattern(cs, 9);
    let word_c = img.compressed((c << 12) + 100, &deflate(&plain));
    let (wa, wb, wz) = (img.data(a as u64), img.data(b as u64), img.data(z as u64));
    img.l2(l2, 0, wa, 0);
    img.l2(l2, 5, wa, 0);
    img.l2(l2, 3, wb, 0);
    img.l2(l2, 7, wz | L2E_ZERO, 0);
    img.l2(l2, 9, word_c, 0);
    let mut expected = vec![0u8; 64 << 10];
    expected[..cs].fill(0x11);
    expected[5 * cs..6 * cs].fill(0x11);
    expected[3 * cs..4 * cs].fill(0x22);
    expected[9 * cs..10 * cs].copy_from_slice(&plain);
    (img.bytes, expected)
}

#[test]
fn test_qcow2_convert_tables_before_data_places_every_mapping_without_spill() {
    let (bytes, expected) = layout(2, 3, 4, 5, 6, 7);
    assert_eq!(assert_converts(&bytes, &expected), 0);
}

#[test]
fn test_qcow2_convert_l2_after_data_spills_and_places_on_arrival() {
    let (bytes, expected) = layout(2, 8, 4, 5, 6, 7);
    assert!(assert_converts(&bytes, &expected) > 0);
}

#[test]
fn test_qcow2_convert_l1_after_l2_and_data_reads_the_table_back() {
    let (bytes, expected) = layout(9, 3, 4, 5, 6, 7);
    assert!(assert_converts(&bytes, &expected) > 0);
    // Data in reverse order, tables at the end.
    let (bytes, expected) = layout(9, 8, 7, 6, 5, 4);
    assert!(assert_converts(&bytes, &expected) > 0);
}

#[test]
fn test_qcow2_convert_spill_limit_is_limit_exceeded() {
    let (bytes, _) = layout(2, 8, 4, 5, 6, 7);
    let limits = ConvertLimits {
        max_spill_bytes: 4096,
        ..ConvertLimits::default()
    };
    assert!(matches!(
        image_error(&bytes, &limits),
        ReasonCode::LimitExceeded
    ));
}

#[test]
fn test_qcow2_convert_zstd_and_subclusters_convert() {
    // 16 KiB clusters (512-byte subclusters), zstd: guest cluster 0 has subclusters 0 and 2
    // allocated and 1 zero; guest cluster 1 is compressed.
    let features = incompat::EXTENDED_L2 | incompat::COMPRESSION_TYPE;
    let mut img = Image::new(14, 64 << 10, 2, 1, features);
    let cs = img.cs();
    img.l1(2, 0, 3);
    img.fill(4, 0x44);
    let plain = pattern(cs, 3);
    let frame = zstd::encode_all(&plain[..], 3).unwrap();
    let word_c = img.compressed(5 << 14, &frame);
    let w4 = img.data(4);
    img.l2(3, 0, w4, (0b010 << 32) | 0b101);
    img.l2(3, 1, word_c, 0);
    let mut expected = vec![0u8; 64 << 10];
    expected[..512].fill(0x44);
    expected[1024..1536].fill(0x44);
    expected[cs..2 * cs].copy_from_slice(&plain);
    assert_converts(&img.bytes, &expected);
    // A compressed cluster with a bitmap, and allocated-and-zero subclusters: corrupt.
    let mut bad = Image {
        bytes: img.bytes.clone(),
        ..img
    };
    bad.l2(3, 1, word_c, 1);
    assert!(matches!(
        image_error(&bad.bytes, &ConvertLimits::default()),
        ReasonCode::Corrupt
    ));
    bad.l2(3, 1, word_c, 0);
    bad.l2(3, 0, w4, (0b1 << 32) | 0b1);
    assert!(matches!(
        image_error(&bad.bytes, &ConvertLimits::default()),
        ReasonCode::Corrupt
    ));
}

#[test]
fn test_qcow2_convert_cluster_reused_after_placement_is_corrupt() {
    // 4 KiB clusters, 4 MiB guest: L2 table 0 maps guest 0 to cluster 5, placed as it
    // streams past while L2 table 1 (cluster 6) is still ahead; table 1 maps cluster 5
    // again.
    let mut img = Image::new(12, 4 << 20, 2, 2, 0);
    img.l1(2, 0, 3);
    img.l1(2, 1, 6);
    img.fill(5, 0x55);
    let w5 = img.data(5);
    img.l2(3, 0, w5, 0);
    img.l2(6, 0, w5, 0);
    assert!(matches!(
        image_error(&img.bytes, &ConvertLimits::default()),
        ReasonCode::Corrupt
    ));
}

#[test]
fn test_qcow2_convert_references_past_the_end_are_truncated() {
    let (mut bytes, _) = layout(2, 3, 4, 5, 6, 7);
    bytes.truncate(5 << 12); // cuts clusters 5.. (data and the compressed cluster)
    assert!(matches!(
        image_error(&bytes, &ConvertLimits::default()),
        ReasonCode::Truncated
    ));
    bytes.truncate(3 << 12); // the L2 table
    assert!(matches!(
        image_error(&bytes, &ConvertLimits::default()),
        ReasonCode::Truncated
    ));
    bytes.truncate(100); // the header
    assert!(matches!(
        image_error(&bytes, &ConvertLimits::default()),
        ReasonCode::Truncated
    ));
}

#[test]
fn test_qcow2_convert_header_refusals_name_their_reason() {
    let (bytes, _) = layout(2, 3, 4, 5, 6, 7);
    let mut backing = bytes.clone();
    backing[8..16].copy_from_slice(&512u64.to_be_bytes());
    backing[16..20].copy_from_slice(&4u32.to_be_bytes());
    let limits = ConvertLimits::default();
    assert!(matches!(
        image_error(&backing, &limits),
        ReasonCode::BackingFile
    ));
    let mut data_file = bytes.clone();
    data_file[72..80].copy_from_slice(&incompat::DATA_FILE.to_be_bytes());
    assert!(matches!(
        image_error(&data_file, &limits),
        ReasonCode::DataFile
    ));
    let mut encrypted = bytes.clone();
    encrypted[32..36].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        image_error(&encrypted, &limits),
        ReasonCode::Encrypted
    ));
    assert!(matches!(
        image_error(&vec![0u8; 4096], &limits),
        ReasonCode::FormatMismatch
    ));
    let small = ConvertLimits {
        max_virtual_size: 4096,
        ..ConvertLimits::default()
    };
    assert!(matches!(
        image_error(&bytes, &small),
        ReasonCode::LimitExceeded
    ));
}

#[test]
fn test_qcow2_convert_mutated_images_never_panic_nor_depend_on_chunking() {
    let layouts = [layout(2, 3, 4, 5, 6, 7).0, layout(9, 8, 7, 6, 5, 4).0];
    let mut lcg = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (lcg >> 33) as usize
    };
    for base in &layouts {
        for _ in 0..150 {
            let mut data = vec![(next() % 200) as u8 + 1];
            data.extend_from_slice(base);
            for _ in 0..1 + next() % 4 {
                // Mostly the header and tables (clusters 0..4), sometimes anywhere.
                let span = if next() % 4 == 0 { base.len() } else { 5 << 12 };
                let at = 1 + next() % span;
                data[at] ^= 1 << (next() % 8);
            }
            crate::fuzzing::convert_qcow2(&data);
        }
    }
}

/// Chunk sizes the chunking-invariance tests feed (besides the whole image).
const SIZES: [usize; 11] = [1, 2, 7, 13, 100, 511, 512, 513, 4095, 4096, 4097];

fn limits(spill: u64, tracked: usize) -> ConvertLimits {
    ConvertLimits {
        max_spill_bytes: spill,
        max_tracked_entries: tracked,
        ..ConvertLimits::default()
    }
}

/// Bytes that deflate cannot shrink much (so a compressed extent spans several sectors).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// 512-byte clusters, 64 KiB guest: the L1 table (cluster 2) names L2 tables at clusters 5
/// and 7, after unclaimed data at 3 and 4 (spilled while the mapping is incomplete). Table
/// 5 maps guest cluster 0 to cluster 3 (read back from the spill), 1 to cluster 8 (ahead)
/// and 2 with `bad`; table 7 maps guest cluster 64 to cluster 4.
fn tables_after_data_c512(bad: u64) -> Vec<u8> {
    let mut img = Image::new(9, 64 << 10, 2, 2, 0);
    img.l1(2, 0, 5);
    img.l1(2, 1, 7);
    img.fill(3, 0x33);
    img.fill(4, 0x44);
    img.fill(6, 0x66);
    img.fill(8, 0x88);
    let (w3, w4, w8) = (img.data(3), img.data(4), img.data(8));
    img.l2(5, 0, w3, 0);
    img.l2(5, 1, w8, 0);
    img.l2(5, 2, bad, 0);
    img.l2(7, 0, w4, 0);
    img.bytes
}

/// 4 KiB clusters, 4 MiB guest: the L1 table (cluster 2) names L2 table A (cluster 3,
/// before the data) and B (cluster 9, after it). A maps guest cluster 0 to cluster 7
/// (ahead), 1 to a compressed extent at cluster 5 + 100 (`compressed`, several sectors)
/// and 2 with `bad`. Cluster 4 alternates non-zero and zero sectors (four spill ranges),
/// the rest of cluster 5 and clusters 6 and 8 are unclaimed data. B maps guest clusters
/// 512.. to clusters 4, 6 and 8 (read back from the spill) and 515 with `bad_b`.
fn compressed_between_tables_c4k(compressed: &[u8], bad: u64, bad_b: u64) -> Vec<u8> {
    let mut img = Image::new(12, 4 << 20, 2, 2, 0);
    img.l1(2, 0, 3);
    img.l1(2, 1, 9);
    for s in 0..8 {
        img.at(
            (4 << 12) + 512 * s,
            &[if s % 2 == 0 { 0x40 + s as u8 } else { 0 }; 512],
        );
    }
    img.fill(5, 0x55);
    img.fill(6, 0x66);
    img.fill(7, 0x77);
    img.fill(8, 0x88);
    let word_c = img.compressed((5 << 12) + 100, compressed);
    let (w4, w6, w7, w8) = (img.data(4), img.data(6), img.data(7), img.data(8));
    img.l2(3, 0, w7, 0);
    img.l2(3, 1, word_c, 0);
    img.l2(3, 2, bad, 0);
    img.l2(9, 0, w4, 0);
    img.l2(9, 1, w6, 0);
    img.l2(9, 2, w8, 0);
    img.l2(9, 3, bad_b, 0);
    img.bytes
}

/// The images the limit sweeps run on: each valid, and broken in ways that the converter
/// finds while it also spills and tracks entries near the limits.
fn limit_sweep_images() -> Vec<Vec<u8>> {
    let mut plain = noise(2048, 7);
    plain.extend(pattern(2048, 1));
    let good = deflate(&plain);
    let garbage = vec![0xff; good.len()];
    let mut v = Vec::new();
    for bits in [9u32, 12] {
        let cs = 1u64 << bits;
        // None; the L1 table (read already); unaligned with 4 KiB clusters (the second L2
        // table with 512-byte ones); compressed data in the header cluster; past the end.
        for bad in [
            0,
            (1 << 63) | (2 * cs),
            (1 << 63) | (6 * cs + 512),
            L2E_COMPRESSED | 100,
            (1 << 63) | (64 * cs),
        ] {
            if bits == 9 {
                v.push(tables_after_data_c512(bad));
            } else {
                v.push(compressed_between_tables_c4k(&good, bad, 0));
                v.push(compressed_between_tables_c4k(&good, 0, bad));
                v.push(compressed_between_tables_c4k(&garbage, bad, 0));
            }
        }
    }
    v
}

#[test]
fn test_qcow2_convert_limit_verdicts_do_not_depend_on_chunking() {
    let (mut corrupt, mut limited, mut converted) = (0, 0, 0);
    for (i, img) in limit_sweep_images().iter().enumerate() {
        let mut pairs: Vec<(u64, usize)> = Vec::new();
        for spill in (0..=12_288).step_by(1536).chain([2 << 20]) {
            for tracked in (0..=7).chain([1 << 20]) {
                pairs.push((spill, tracked));
            }
        }
        for (spill, tracked) in pairs {
            let l = limits(spill, tracked);
            match assert_convert_chunking_invariant(Format::Qcow2, img, &l, SIZES) {
                Ok(_) => converted += 1,
                Err(ConvertError::Image {
                    code: ReasonCode::LimitExceeded,
                    ..
                }) => limited += 1,
                Err(ConvertError::Image {
                    code: ReasonCode::Corrupt | ReasonCode::Truncated,
                    ..
                }) => corrupt += 1,
                Err(e) => panic!("image {i}, spill {spill}, tracked {tracked}: {e:?}"),
            }
        }
    }
    assert!(
        corrupt > 0 && limited > 0 && converted > 0,
        "{corrupt} corrupt, {limited} limited, {converted} converted"
    );
}

#[test]
fn test_qcow2_convert_mutated_images_agree_near_the_limits() {
    let mut lcg = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (lcg >> 33) as usize
    };
    let mut outcomes = std::collections::BTreeSet::new();
    for base in limit_sweep_images() {
        for _ in 0..12 {
            let mut img = base.clone();
            for _ in 0..1 + next() % 3 {
                let at = next() % img.len();
                img[at] ^= 1 << (next() % 8);
            }
            let l = limits((next() % 16 * 512) as u64, next() % 8);
            let r = assert_convert_chunking_invariant(Format::Qcow2, &img, &l, SIZES);
            outcomes.insert(match r {
                Ok(_) => None,
                Err(ConvertError::Image { code, .. }) => Some(code),
                Err(e) => panic!("{e:?}"),
            });
        }
    }
    assert!(outcomes.len() > 2, "{outcomes:?}");
}
