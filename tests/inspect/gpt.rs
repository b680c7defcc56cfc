//! gpt inspection tests on real images.
//!
//! GPT disks from sgdisk and parted, MBR disks from parted and sfdisk; hostile variants are
//! made by patching those disks' bytes at the named offsets below.

use std::path::{Path, PathBuf};

use sluice_formats::{Format, ReasonCode};

use crate::common::{
    assert_accepts_like_qemu, assert_chunking_invariant, assert_rejects, read, run, scratch,
    write_pattern,
};

/// Size of every test disk.
const DISK_LEN: u64 = 8 << 20;
/// Offset of MBR partition entry `i` is `MBR_ENTRIES + 16 * i`.
const MBR_ENTRIES: usize = 446;
/// Size of one MBR partition entry.
const MBR_ENTRY_LEN: usize = 16;
/// Offset of the boot flag inside an MBR entry.
const MBR_ENTRY_BOOT_FLAG: usize = 0;
/// The primary GPT header (LBA 1 of 512-byte sectors).
const GPT_HEADER: usize = 512;
/// Offset of the disk GUID inside the GPT header (covered by the header CRC).
const GPT_HEADER_DISK_GUID: usize = 56;
/// The primary partition entry array (LBA 2).
const GPT_ENTRIES: usize = 1024;
/// Offset of the UTF-16 name inside a GPT partition entry (covered by the array CRC).
const GPT_ENTRY_NAME: usize = 56;

/// A sparse raw file of [`DISK_LEN`] bytes.
fn blank_disk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(DISK_LEN))
        .expect("creating disk file");
    path
}

/// A GPT disk from `sgdisk -n`: a 2 MiB partition and one filling the rest, with data.
fn sgdisk_disk(dir: &Path) -> PathBuf {
    let path = blank_disk(dir, "sgdisk.img");
    let p = path.to_str().expect("utf-8");
    run("sgdisk", &["-n", "1:2048:+2M", "-n", "2:0:0", p]);
    write_pattern(&path, 1 << 20, 64 * 1024);
    write_pattern(&path, 5 << 20, 64 * 1024);
    path
}

/// An MBR disk from `parted mklabel msdos mkpart`: two primary partitions.
fn parted_msdos_disk(dir: &Path) -> PathBuf {
    let path = blank_disk(dir, "parted-msdos.img");
    let p = path.to_str().expect("utf-8");
    run(
        "parted",
        &[
            "-s", p, "mklabel", "msdos", "mkpart", "primary", "ext4", "1MiB", "4MiB", "mkpart",
            "primary", "4MiB", "100%",
        ],
    );
    write_pattern(&path, 1 << 20, 64 * 1024);
    path
}

/// Patches one MBR entry's boot flag.
fn set_boot_flag(bytes: &mut [u8], slot: usize, flag: u8) {
    bytes[MBR_ENTRIES + slot * MBR_ENTRY_LEN + MBR_ENTRY_BOOT_FLAG] = flag;
}

/// Moves MBR entry `from` to slot `to`, leaving `from` empty.
fn move_mbr_entry(bytes: &mut [u8], from: usize, to: usize) {
    let src = MBR_ENTRIES + from * MBR_ENTRY_LEN;
    let entry: Vec<u8> = bytes[src..src + MBR_ENTRY_LEN].to_vec();
    bytes[src..src + MBR_ENTRY_LEN].fill(0);
    let dst = MBR_ENTRIES + to * MBR_ENTRY_LEN;
    bytes[dst..dst + MBR_ENTRY_LEN].copy_from_slice(&entry);
}

#[test]
fn test_gpt_sgdisk_disk_is_accepted() {
    let dir = scratch();
    let disk = sgdisk_disk(dir.path());
    let report = assert_accepts_like_qemu(&disk, Format::Gpt, "raw");
    assert!(matches!(report.formats.as_slice(), [Format::Gpt]));
}

#[test]
fn test_gpt_parted_disk_is_accepted() {
    let dir = scratch();
    let path = blank_disk(dir.path(), "parted-gpt.img");
    let p = path.to_str().expect("utf-8");
    run(
        "parted",
        &[
            "-s", p, "mklabel", "gpt", "mkpart", "a", "1MiB", "4MiB", "mkpart", "b", "4MiB", "7MiB",
        ],
    );
    assert_accepts_like_qemu(&path, Format::Gpt, "raw");
}

#[test]
fn test_gpt_disk_declared_raw_is_accepted() {
    let dir = scratch();
    let disk = sgdisk_disk(dir.path());
    let report = assert_chunking_invariant(&read(&disk), Some(Format::Raw));
    assert!(report.is_accepted(), "{:?}", report.reasons);
    assert!(matches!(report.format, Format::Gpt));
    assert_eq!(report.virtual_size, Some(DISK_LEN));
}

#[test]
fn test_mbr_parted_disk_is_accepted() {
    let dir = scratch();
    let disk = parted_msdos_disk(dir.path());
    let report = assert_accepts_like_qemu(&disk, Format::Mbr, "raw");
    assert!(matches!(report.formats.as_slice(), [Format::Mbr]));
}

#[test]
fn test_mbr_sfdisk_disk_is_accepted() {
    let dir = scratch();
    let path = blank_disk(dir.path(), "sfdisk.img");
    let script = dir.path().join("layout.sfdisk");
    std::fs::write(&script, "label: dos\n,2M,L,*\n,2M,S\n,,L\n").expect("write");
    let out = std::process::Command::new("sfdisk")
        .args(["-q", path.to_str().expect("utf-8")])
        .stdin(std::fs::File::open(&script).expect("open"))
        .output()
        .expect("running sfdisk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_accepts_like_qemu(&path, Format::Mbr, "raw");
}

#[test]
fn test_mbr_disk_declared_raw_is_accepted() {
    let dir = scratch();
    let disk = parted_msdos_disk(dir.path());
    let report = assert_chunking_invariant(&read(&disk), Some(Format::Raw));
    assert!(report.is_accepted(), "{:?}", report.reasons);
    assert!(matches!(report.format, Format::Mbr));
}

#[test]
fn test_mbr_bad_boot_flag_is_corrupt() {
    let dir = scratch();
    let mut bytes = read(&parted_msdos_disk(dir.path()));
    set_boot_flag(&mut bytes, 1, 0x7F);
    assert_rejects(&bytes, Some(Format::Raw), ReasonCode::Corrupt);
}

#[test]
fn test_mbr_disk_cut_short_is_truncated() {
    let dir = scratch();
    let bytes = read(&parted_msdos_disk(dir.path()));
    assert_rejects(&bytes[..6 << 20], Some(Format::Raw), ReasonCode::Truncated);
}

#[test]
fn test_gpt_protective_entry_in_slot_1_is_corrupt() {
    let dir = scratch();
    let mut bytes = read(&sgdisk_disk(dir.path()));
    move_mbr_entry(&mut bytes, 0, 1);
    assert_rejects(&bytes, Some(Format::Raw), ReasonCode::Corrupt);
}

#[test]
fn test_gpt_sgdisk_hybrid_mbr_is_corrupt() {
    // A hybrid MBR (0xEE plus real entries) is refused, as oslo's check_mbr_partitions does.
    let dir = scratch();
    let disk = sgdisk_disk(dir.path());
    run("sgdisk", &["-h", "1", disk.to_str().expect("utf-8")]);
    assert_rejects(&read(&disk), Some(Format::Raw), ReasonCode::Corrupt);
}

#[test]
fn test_gpt_damaged_header_crc_is_corrupt() {
    let dir = scratch();
    let mut bytes = read(&sgdisk_disk(dir.path()));
    bytes[GPT_HEADER + GPT_HEADER_DISK_GUID] ^= 0xFF;
    let report = assert_rejects(&bytes, Some(Format::Raw), ReasonCode::Corrupt);
    assert!(!report.complete, "the header is checked as it streams past");
}

#[test]
fn test_gpt_damaged_entry_array_is_corrupt() {
    let dir = scratch();
    let mut bytes = read(&sgdisk_disk(dir.path()));
    bytes[GPT_ENTRIES + GPT_ENTRY_NAME] ^= 0x20;
    assert_rejects(&bytes, Some(Format::Raw), ReasonCode::Corrupt);
}

#[test]
fn test_gpt_disk_cut_in_half_is_truncated() {
    let dir = scratch();
    let bytes = read(&sgdisk_disk(dir.path()));
    let report = assert_rejects(
        &bytes[..bytes.len() / 2],
        Some(Format::Raw),
        ReasonCode::Truncated,
    );
    assert!(matches!(report.format, Format::Gpt));
}

#[test]
fn test_gpt_disk_declared_qcow2_is_format_mismatch() {
    let dir = scratch();
    let bytes = read(&sgdisk_disk(dir.path()));
    assert_rejects(&bytes, Some(Format::Qcow2), ReasonCode::FormatMismatch);
}
