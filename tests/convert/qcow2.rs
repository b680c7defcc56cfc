//! qcow2 → raw conversion on real images made by qemu-img (and qemu-io for zero clusters,
//! subclusters and snapshots), and on hand-laid layouts built by moving tables of real images
//! (L2 tables after their data, L1 and L2 tables at the end). The converter's output must
//! equal `qemu-img convert -O raw` byte for byte, however the input is split.

use std::path::{Path, PathBuf};

use sluice_formats::{ConvertError, ConvertLimits, Format, ReasonCode};

use super::vmdk::{
    assert_converts_like_qemu, assert_cuts_are_truncated, convert_chunked, qemu_raw,
};
use crate::common::*;

/// Header field offsets (QEMU's `docs/interop/qcow2.rst`).
mod off {
    /// u32 log2 of the cluster size.
    pub const CLUSTER_BITS: usize = 20;
    /// u64 virtual size.
    pub const SIZE: usize = 24;
    /// u32 active L1 entries.
    pub const L1_SIZE: usize = 36;
    /// u64 active L1 table offset.
    pub const L1_TABLE_OFFSET: usize = 40;
    /// u64 incompatible features (v3).
    pub const INCOMPATIBLE_FEATURES: usize = 72;
}

/// Bits 9–55 of L1 and standard L2 entries: a table or cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// Incompatible feature bit 4: 128-bit L2 entries.
const EXTENDED_L2: u64 = 1 << 4;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A qcow2 image's bytes with the few accessors the hand-laid layouts need.
struct Qcow2Bytes(Vec<u8>);

impl Qcow2Bytes {
    fn cluster_bits(&self) -> u32 {
        u32::from_be_bytes(
            self.0[off::CLUSTER_BITS..off::CLUSTER_BITS + 4]
                .try_into()
                .unwrap(),
        )
    }
    fn cluster_size(&self) -> usize {
        1 << self.cluster_bits()
    }
    fn l1_offset(&self) -> usize {
        be64(&self.0, off::L1_TABLE_OFFSET) as usize
    }
    fn l1_size(&self) -> usize {
        u32::from_be_bytes(self.0[off::L1_SIZE..off::L1_SIZE + 4].try_into().unwrap()) as usize
    }
    fn l1_entry(&self, i: usize) -> u64 {
        be64(&self.0, self.l1_offset() + 8 * i)
    }
    fn set_l1_entry(&mut self, i: usize, v: u64) {
        let at = self.l1_offset() + 8 * i;
        put64(&mut self.0, at, v);
    }
    fn extended(&self) -> bool {
        be64(&self.0, off::INCOMPATIBLE_FEATURES) & EXTENDED_L2 != 0
    }
    /// The L2 tables of the active L1 table: `(l1 index, offset)`.
    fn l2_tables(&self) -> Vec<(usize, usize)> {
        (0..self.l1_size())
            .map(|i| (i, (self.l1_entry(i) & OFFSET_MASK) as usize))
            .filter(|(_, t)| *t != 0)
            .collect()
    }
    /// Appends `len` bytes copied from `from` at the next cluster boundary, zeroes the
    /// original, and returns the new offset.
    fn move_to_end(&mut self, from: usize, len: usize) -> usize {
        let cs = self.cluster_size();
        let new = self.0.len().next_multiple_of(cs);
        self.0.resize(new + len.next_multiple_of(cs), 0);
        let copy = self.0[from..from + len].to_vec();
        self.0[new..new + len].copy_from_slice(&copy);
        self.0[from..from + len].fill(0);
        new
    }
    /// Moves the L2 table of L1 entry `i` to the end of the file and fixes the entry.
    fn move_l2_to_end(&mut self, i: usize) {
        let entry = self.l1_entry(i);
        let table = (entry & OFFSET_MASK) as usize;
        let new = self.move_to_end(table, self.cluster_size());
        self.set_l1_entry(i, (entry & !OFFSET_MASK) | new as u64);
    }
    /// Moves the active L1 table to the end of the file and fixes the header.
    fn move_l1_to_end(&mut self) {
        let new = self.move_to_end(self.l1_offset(), 8 * self.l1_size());
        put64(&mut self.0, off::L1_TABLE_OFFSET, new as u64);
    }
    /// The first compressed L2 entry's data offset.
    fn first_compressed(&self) -> Option<usize> {
        let entry_size = if self.extended() { 16 } else { 8 };
        let x = 70 - self.cluster_bits();
        for (_, table) in self.l2_tables() {
            for e in self.0[table..table + self.cluster_size()].chunks_exact(entry_size) {
                let word = be64(e, 0);
                if word & COMPRESSED != 0 {
                    return Some((word & ((1u64 << x) - 1)) as usize);
                }
            }
        }
        None
    }
    fn save(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.0).expect("writing patched image");
        path.to_path_buf()
    }
}

/// A raw file of `size` bytes with pattern data converted to qcow2 with `opts` (`-c` when
/// `compress`).
fn qcow2_with_data(dir: &Path, name: &str, opts: &str, size: u64, compress: bool) -> PathBuf {
    let raw = raw_with_data(dir, &format!("{name}.raw"), size);
    let dst = dir.join(name);
    let mut args = vec!["convert", "-O", "qcow2"];
    if compress {
        args.push("-c");
    }
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([raw.to_str().unwrap(), dst.to_str().unwrap()]);
    run("qemu-img", &args);
    dst
}

/// Runs qemu-io commands on a qcow2 image.
fn qemu_io(path: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

fn assert_image_error(result: Result<Vec<u8>, ConvertError>, code: ReasonCode, what: &str) {
    match result {
        Err(ConvertError::Image { code: got, message }) => {
            assert!(got == code, "{what}: expected {code}, got {got}: {message}")
        }
        other => panic!("{what}: expected {code}, got {:?}", other.map(|o| o.len())),
    }
}

#[test]
fn test_qcow2_convert_v3_default_clusters_matches_qemu() {
    let dir = scratch();
    let img = qcow2_with_data(dir.path(), "v3.qcow2", "", 4 << 20, false);
    assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_convert_v2_matches_qemu() {
    let dir = scratch();
    let img = qcow2_with_data(dir.path(), "v2.qcow2", "compat=0.10", 4 << 20, false);
    assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_convert_every_cluster_size_matches_qemu() {
    let dir = scratch();
    for (cs, size) in [
        ("512", 1u64 << 20),
        ("4096", 2 << 20),
        ("65536", 4 << 20),
        ("2M", 8 << 20),
    ] {
        let img = qcow2_with_data(
            dir.path(),
            &format!("cs{cs}.qcow2"),
            &format!("cluster_size={cs}"),
            size,
            false,
        );
        assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_convert_small_clusters_byte_by_byte_matches_qemu() {
    // 512-byte clusters: one L2 table per 32 KiB of guest data, many tables and clusters,
    // fed one byte at a time (assert_converts_like_qemu does for images up to 1 MiB).
    let dir = scratch();
    let img = qcow2_with_data(
        dir.path(),
        "small.qcow2",
        "cluster_size=512",
        300_000,
        false,
    );
    assert!(read(&img).len() <= 1 << 20);
    assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_convert_deflate_compressed_matches_qemu() {
    let dir = scratch();
    for cs in ["4096", "65536", "2M"] {
        let img = qcow2_with_data(
            dir.path(),
            &format!("deflate{cs}.qcow2"),
            &format!("cluster_size={cs}"),
            6 << 20,
            true,
        );
        assert!(Qcow2Bytes(read(&img)).first_compressed().is_some());
        assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_convert_zstd_compressed_matches_qemu() {
    let dir = scratch();
    for cs in ["4096", "65536"] {
        let img = qcow2_with_data(
            dir.path(),
            &format!("zstd{cs}.qcow2"),
            &format!("compression_type=zstd,cluster_size={cs}"),
            6 << 20,
            true,
        );
        assert!(Qcow2Bytes(read(&img)).first_compressed().is_some());
        assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_convert_extended_l2_subclusters_match_qemu() {
    let dir = scratch();
    // Writes smaller than a cluster allocate single 2 KiB subclusters; zero writes set
    // subcluster zero bits inside allocated clusters and on unallocated ones.
    let img = qemu_img_create(dir.path(), "ext.qcow2", "qcow2", "extended_l2=on", "4M");
    qemu_io(
        &img,
        &[
            "write -P 0x11 4k 4k",
            "write -P 0x22 100k 10k",
            "write -P 0x33 1M 128k",
            "write -z 1056k 4k",
            "write -z 2M 64k",
            "write -P 0x44 3M 2k",
        ],
    );
    assert!(Qcow2Bytes(read(&img)).extended());
    assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    let converted = qcow2_with_data(
        dir.path(),
        "ext-conv.qcow2",
        "extended_l2=on,cluster_size=32k",
        4 << 20,
        false,
    );
    assert_converts_like_qemu(&converted, Format::Qcow2, "qcow2");
    let compressed = qcow2_with_data(dir.path(), "ext-c.qcow2", "extended_l2=on", 4 << 20, true);
    assert_converts_like_qemu(&compressed, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_convert_zero_and_discarded_clusters_match_qemu() {
    let dir = scratch();
    for opts in ["", "compat=0.10"] {
        let img = qcow2_with_data(dir.path(), "zero.qcow2", opts, 4 << 20, false);
        // `write -z` keeps the allocation with the zero flag (v3) or writes zeros (v2);
        // `-u` unmaps; discard drops clusters.
        qemu_io(
            &img,
            &["write -z 0 64k", "write -z -u 2M 64k", "discard 3M 64k"],
        );
        assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_convert_with_snapshots_converts_active_layer_like_qemu() {
    let dir = scratch();
    let img = qcow2_with_data(dir.path(), "snap.qcow2", "", 4 << 20, false);
    run(
        "qemu-img",
        &["snapshot", "-c", "one", img.to_str().unwrap()],
    );
    // Copy-on-write after the snapshot: new L2 tables and clusters at the end of the file,
    // the snapshot's clusters earlier.
    qemu_io(
        &img,
        &[
            "write -P 0x5a 0 128k",
            "write -z 1M 64k",
            "write -P 0x6b 3M 4k",
        ],
    );
    run(
        "qemu-img",
        &["snapshot", "-c", "two", img.to_str().unwrap()],
    );
    qemu_io(&img, &["write -P 0x7c 64k 64k"]);
    assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    let raw = qemu_raw(&img, "qcow2");
    assert!(
        raw[0] == 0x5a && raw[64 << 10] == 0x7c,
        "qemu converts the active layer"
    );
}

#[test]
fn test_qcow2_convert_preallocated_images_match_qemu() {
    let dir = scratch();
    for prealloc in ["metadata", "full"] {
        let img = qcow2_with_data(
            dir.path(),
            &format!("{prealloc}.qcow2"),
            &format!("preallocation={prealloc}"),
            4 << 20,
            false,
        );
        assert_converts_like_qemu(&img, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_convert_odd_virtual_size_output_length_is_qemus() {
    // qemu-img counts whole sectors: a stored size of 1000001 converts to 999936 bytes.
    let dir = scratch();
    let mut img = Qcow2Bytes(read(&qcow2_with_data(
        dir.path(),
        "odd.qcow2",
        "",
        1_000_448,
        false,
    )));
    put64(&mut img.0, off::SIZE, 1_000_001);
    let path = img.save(&dir.path().join("odd-patched.qcow2"));
    assert_eq!(qemu_raw(&path, "qcow2").len(), 999_936);
    assert_converts_like_qemu(&path, Format::Qcow2, "qcow2");
}

#[test]
fn test_qcow2_convert_l2_table_after_its_data_spills_and_matches_qemu() {
    let dir = scratch();
    for (name, compress) in [("plain", false), ("deflate", true)] {
        let mut img = Qcow2Bytes(read(&qcow2_with_data(
            dir.path(),
            &format!("{name}.qcow2"),
            "",
            4 << 20,
            compress,
        )));
        let tables = img.l2_tables();
        assert_eq!(tables.len(), 1, "a 4 MiB image has one L2 table");
        img.move_l2_to_end(tables[0].0);
        let path = img.save(&dir.path().join(format!("{name}-l2-last.qcow2")));
        assert_converts_like_qemu(&path, Format::Qcow2, "qcow2");
        // The same bytes with the original image's output.
        assert_eq!(
            qemu_raw(&path, "qcow2"),
            qemu_raw(&dir.path().join(format!("{name}.qcow2")), "qcow2")
        );
    }
}

#[test]
fn test_qcow2_convert_all_metadata_at_end_reads_tables_back_and_matches_qemu() {
    // L2 tables moved to the end, then the L1 table after them: every L2 table streams past
    // before the L1 entry naming it and is read back from the spill area, as is all data.
    let dir = scratch();
    for (name, opts, compress) in [
        ("plain", "cluster_size=4096", false),
        ("deflate", "cluster_size=4096", true),
        ("zstd", "compression_type=zstd", true),
        ("ext", "extended_l2=on", false),
    ] {
        let mut img = Qcow2Bytes(read(&qcow2_with_data(
            dir.path(),
            &format!("{name}.qcow2"),
            opts,
            3 << 20,
            compress,
        )));
        for (i, _) in img.l2_tables() {
            img.move_l2_to_end(i);
        }
        img.move_l1_to_end();
        let path = img.save(&dir.path().join(format!("{name}-meta-last.qcow2")));
        assert_converts_like_qemu(&path, Format::Qcow2, "qcow2");
    }
}

#[test]
fn test_qcow2_convert_spill_over_limit_is_limit_exceeded() {
    let dir = scratch();
    let mut img = Qcow2Bytes(read(&qcow2_with_data(
        dir.path(),
        "a.qcow2",
        "",
        4 << 20,
        false,
    )));
    img.move_l2_to_end(0);
    let limits = ConvertLimits {
        max_spill_bytes: 64 << 10,
        ..ConvertLimits::default()
    };
    for sizes in [vec![img.0.len()], vec![4097], vec![1 << 20]] {
        let result = convert_chunked(&img.0, Format::Qcow2, &sizes, &limits);
        assert_image_error(result, ReasonCode::LimitExceeded, "spill limit");
    }
    // The same image fits under the default limit.
    assert!(convert_chunked(&img.0, Format::Qcow2, &[4097], &ConvertLimits::default()).is_ok());
}

#[test]
fn test_qcow2_convert_tracked_entries_over_limit_is_limit_exceeded() {
    let dir = scratch();
    let mut img = Qcow2Bytes(read(&qcow2_with_data(
        dir.path(),
        "a.qcow2",
        "cluster_size=4096",
        2 << 20,
        false,
    )));
    img.move_l2_to_end(0);
    let limits = ConvertLimits {
        max_tracked_entries: 2,
        ..ConvertLimits::default()
    };
    let result = convert_chunked(&img.0, Format::Qcow2, &[4096], &limits);
    assert_image_error(result, ReasonCode::LimitExceeded, "tracked entries");
}

#[test]
fn test_qcow2_convert_cut_image_is_truncated() {
    let dir = scratch();
    let img = qcow2_with_data(dir.path(), "cut.qcow2", "", 4 << 20, false);
    let bytes = read(&img);
    let cs = Qcow2Bytes(bytes.clone()).cluster_size();
    let l1 = Qcow2Bytes(bytes.clone()).l1_offset();
    // Inside the header, inside the L1 table, before the last data cluster, inside it.
    assert_cuts_are_truncated(
        &img,
        Format::Qcow2,
        &[50, l1 + 4, bytes.len() - cs, bytes.len() - 1],
    );
    let compressed = qcow2_with_data(dir.path(), "cut-c.qcow2", "", 4 << 20, true);
    let len = read(&compressed).len();
    assert_cuts_are_truncated(&compressed, Format::Qcow2, &[len - 2048]);
}

#[test]
fn test_qcow2_convert_corrupt_compressed_data_is_corrupt() {
    let dir = scratch();
    for (name, opts) in [("deflate", ""), ("zstd", "compression_type=zstd")] {
        let mut img = Qcow2Bytes(read(&qcow2_with_data(
            dir.path(),
            &format!("{name}.qcow2"),
            opts,
            4 << 20,
            true,
        )));
        let at = img.first_compressed().expect("a compressed cluster");
        // 0xff: a deflate block of the reserved type 3; not a zstd frame magic.
        img.0[at..at + 64].fill(0xff);
        for sizes in [vec![img.0.len()], vec![4097]] {
            let result = convert_chunked(&img.0, Format::Qcow2, &sizes, &ConvertLimits::default());
            assert_image_error(result, ReasonCode::Corrupt, name);
        }
    }
}

#[test]
fn test_qcow2_convert_unaligned_l2_table_is_corrupt() {
    let dir = scratch();
    let mut img = Qcow2Bytes(read(&qcow2_with_data(
        dir.path(),
        "a.qcow2",
        "",
        4 << 20,
        false,
    )));
    let entry = img.l1_entry(0);
    img.set_l1_entry(0, entry + 512);
    let result = convert_chunked(&img.0, Format::Qcow2, &[4096], &ConvertLimits::default());
    assert_image_error(result, ReasonCode::Corrupt, "unaligned L2 table");
}

#[test]
fn test_qcow2_convert_cluster_in_l1_table_is_corrupt() {
    // L2 entry 0 maps guest cluster 0 to the L1 table's cluster, which streamed past as
    // metadata: QEMU would copy the table's bytes; Sluice refuses the image.
    let dir = scratch();
    let mut img = Qcow2Bytes(read(&qcow2_with_data(
        dir.path(),
        "a.qcow2",
        "",
        4 << 20,
        false,
    )));
    let (_, table) = img.l2_tables()[0];
    let l1 = img.l1_offset() as u64;
    put64(&mut img.0, table, (1 << 63) | l1);
    let result = convert_chunked(&img.0, Format::Qcow2, &[4096], &ConvertLimits::default());
    assert_image_error(result, ReasonCode::Corrupt, "data in the L1 table");
}

#[test]
fn test_qcow2_convert_cluster_in_header_is_corrupt() {
    let dir = scratch();
    let mut img = Qcow2Bytes(read(&qcow2_with_data(
        dir.path(),
        "a.qcow2",
        "cluster_size=4096",
        1 << 20,
        true,
    )));
    let (_, table) = img.l2_tables()[0];
    // A compressed extent at byte 8 of the header cluster, one sector long.
    put64(&mut img.0, table, COMPRESSED | 8);
    let result = convert_chunked(&img.0, Format::Qcow2, &[4096], &ConvertLimits::default());
    assert_image_error(result, ReasonCode::Corrupt, "compressed data in the header");
}
