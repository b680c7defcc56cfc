//! The VHD inspector's unit tests.

#![allow(clippy::arithmetic_side_effects)]

use super::header::*;
use crate::{inspect_bytes, Format, Limits, ReasonCode, Report};

/// Block size of the synthetic images: the smallest qemu accepts keeps them tiny.
const BLOCK: u32 = 4096;
/// The synthetic layout: footer copy, dynamic header, BAT, one block, footer.
const DYN_AT: usize = 512;
const BAT_AT: usize = 1536;
const BLOCK_AT: usize = 2048;

fn footer(disk_type: u32, creator: &[u8; 4], size: u64, chs: (u16, u8, u8)) -> Vec<u8> {
    let mut f = vec![0u8; VHD_FOOTER_LEN];
    f[..8].copy_from_slice(VHD_FOOTER_COOKIE);
    let data_offset = if disk_type == 2 {
        u64::MAX
    } else {
        DYN_AT as u64
    };
    f[footer::DATA_OFFSET..][..8].copy_from_slice(&data_offset.to_be_bytes());
    f[footer::CREATOR_APP..][..4].copy_from_slice(creator);
    f[footer::CURRENT_SIZE..][..8].copy_from_slice(&size.to_be_bytes());
    f[footer::CYLINDERS..][..2].copy_from_slice(&chs.0.to_be_bytes());
    f[footer::HEADS] = chs.1;
    f[footer::SECTORS_PER_TRACK] = chs.2;
    f[footer::DISK_TYPE..][..4].copy_from_slice(&disk_type.to_be_bytes());
    let sum = vhd_checksum(&f, footer::CHECKSUM).unwrap();
    f[footer::CHECKSUM..][..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// A dynamic VHD of 8 KiB (two blocks) whose first block is allocated at `block_sector`.
fn dynamic(block_size: u32, block_sector: u32) -> Vec<u8> {
    let foot = footer(3, b"qem2", 8192, (1, 1, 16));
    let mut img = foot.clone();
    let mut h = vec![0u8; VHD_DYN_HEADER_LEN];
    h[..8].copy_from_slice(VHD_DYN_HEADER_COOKIE);
    h[dyn_header::TABLE_OFFSET..][..8].copy_from_slice(&(BAT_AT as u64).to_be_bytes());
    h[dyn_header::MAX_TABLE_ENTRIES..][..4].copy_from_slice(&2u32.to_be_bytes());
    h[dyn_header::BLOCK_SIZE..][..4].copy_from_slice(&block_size.to_be_bytes());
    let sum = vhd_checksum(&h, dyn_header::CHECKSUM).unwrap();
    h[dyn_header::CHECKSUM..][..4].copy_from_slice(&sum.to_be_bytes());
    img.extend_from_slice(&h);
    let mut bat = vec![0xffu8; BLOCK_AT - BAT_AT];
    bat[..4].copy_from_slice(&block_sector.to_be_bytes());
    img.extend_from_slice(&bat);
    img.resize(BLOCK_AT + 512 + BLOCK as usize, 0x5a);
    img.extend_from_slice(&foot);
    img
}

fn inspect(bytes: &[u8]) -> Report {
    inspect_bytes(bytes, Some(Format::Vhd), Limits::default())
}

#[test]
fn test_vhd_virtual_size_follows_qemu_creator_rules() {
    let chs = (100, 16, 63); // 100800 sectors
    let sized = |creator: &[u8; 4], chs| {
        vhd_virtual_size(&VhdFooter::parse(&footer(3, creator, 50 << 20, chs)).unwrap())
    };
    assert_eq!(sized(b"qemu", chs), 100 * 16 * 63 * 512);
    assert_eq!(sized(b"vpc ", chs), 100 * 16 * 63 * 512);
    for creator in [b"qem2", b"win ", b"d2v ", b"wa\0\0", b"tap\0", b"xyz "] {
        assert_eq!(sized(creator, chs), 50 << 20);
    }
    assert_eq!(sized(b"qemu", (65535, 16, 255)), 50 << 20);
}

#[test]
fn test_vhd_synthetic_dynamic_is_accepted_in_any_chunking() {
    let img = dynamic(BLOCK, (BLOCK_AT / 512) as u32);
    let whole = inspect(&img);
    assert!(whole.is_accepted(), "{:?}", whole.reasons);
    assert!(matches!(whole.virtual_size, Some(8192)));
    let split = crate::fuzzing::inspect_chunked(&img, Some(Format::Vhd), &[1]);
    assert_eq!(whole, split);
}

#[test]
fn test_vhd_bat_entry_into_dynamic_header_is_corrupt() {
    let report = inspect(&dynamic(BLOCK, 2));
    assert!(
        report.has_reason(ReasonCode::Corrupt),
        "{:?}",
        report.reasons
    );
}

#[test]
fn test_vhd_block_beyond_stream_is_truncated() {
    let report = inspect(&dynamic(BLOCK, 1000));
    assert!(
        report.has_reason(ReasonCode::Truncated),
        "{:?}",
        report.reasons
    );
}

#[test]
fn test_vhd_block_size_not_power_of_two_is_corrupt() {
    let report = inspect(&dynamic(3 * 512, (BLOCK_AT / 512) as u32));
    assert!(report.has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhd_block_size_over_limit_is_limit_exceeded() {
    let report = inspect(&dynamic(VHD_MAX_BLOCK_SIZE * 2, 0xffff_ffff));
    assert!(report.has_reason(ReasonCode::LimitExceeded));
}

#[test]
fn test_vhd_dynamic_footer_only_at_end_is_corrupt() {
    let mut img = vec![0u8; 4096];
    img.extend_from_slice(&footer(3, b"win ", 4096, (1, 1, 8)));
    let report = inspect_bytes(&img, None, Limits::default());
    assert!(matches!(report.format, Format::Vhd));
    assert!(report.has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhd_fixed_footer_larger_than_data_is_truncated() {
    let mut img = vec![0u8; 4096];
    img.extend_from_slice(&footer(2, b"win ", 8192, (1, 1, 16)));
    let report = inspect(&img);
    assert!(report.has_reason(ReasonCode::Truncated));
}

#[test]
fn test_vhd_short_stream_is_not_vhd() {
    let report = inspect_bytes(b"conectix", None, Limits::default());
    assert!(matches!(report.format, Format::Raw));
}
