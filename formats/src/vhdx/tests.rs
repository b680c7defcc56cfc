//! The VHDX inspector's unit tests: images built field by field.

#![allow(clippy::arithmetic_side_effects)]

use super::header::*;
use crate::{inspect_bytes, Format, Limits, ReasonCode, Report};

const MIB_USIZE: usize = 1 << 20;

/// A minimal VHDX built field by field: metadata region at 1 MiB, BAT at 2 MiB, one 1 MiB
/// payload block at 3 MiB, virtual size 1 MiB.
struct VhdxImage {
    block_size: u32,
    virtual_size: u64,
    file_flags: u32,
    bat_entry: u64,
    extra_required_item: bool,
}

impl VhdxImage {
    fn new() -> Self {
        VhdxImage {
            block_size: 1 << 20,
            virtual_size: 1 << 20,
            file_flags: 0,
            bat_entry: (3 << 20) | u64::from(state::FULLY_PRESENT),
            extra_required_item: false,
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut img = vec![0u8; 4 * MIB_USIZE];
        img[..8].copy_from_slice(VHDX_SIGNATURE);
        for (i, at) in VHDX_HEADER_OFFSETS.iter().enumerate() {
            let at = *at as usize;
            let h = &mut img[at..at + VHDX_HEADER_LEN];
            h[..4].copy_from_slice(b"head");
            h[head::SEQUENCE_NUMBER..][..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            h[head::VERSION..][..2].copy_from_slice(&1u16.to_le_bytes());
            seal(h, head::CHECKSUM);
        }
        for at in VHDX_REGION_TABLE_OFFSETS {
            let at = at as usize;
            let t = &mut img[at..at + VHDX_TABLE_LEN];
            t[..4].copy_from_slice(b"regi");
            t[region::ENTRY_COUNT..][..4].copy_from_slice(&2u32.to_le_bytes());
            for (i, (guid, offset)) in [(VHDX_METADATA_GUID, MIB), (VHDX_BAT_GUID, 2 * MIB)]
                .iter()
                .enumerate()
            {
                let e = region::ENTRIES + i * region::ENTRY_LEN;
                t[e..e + 16].copy_from_slice(guid);
                t[e + region::E_FILE_OFFSET..][..8].copy_from_slice(&offset.to_le_bytes());
                t[e + region::E_LENGTH..][..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
                t[e + region::E_FLAGS..][..4].copy_from_slice(&1u32.to_le_bytes());
            }
            seal(t, region::CHECKSUM);
        }
        let m = MIB_USIZE;
        img[m..m + 8].copy_from_slice(metadata::SIGNATURE);
        let mut items: Vec<([u8; 16], Vec<u8>, u32)> = vec![
            (
                VHDX_FILE_PARAMETERS_GUID,
                [self.block_size.to_le_bytes(), self.file_flags.to_le_bytes()].concat(),
                4,
            ),
            (
                VHDX_VIRTUAL_DISK_SIZE_GUID,
                self.virtual_size.to_le_bytes().to_vec(),
                6,
            ),
            (VHDX_PAGE83_GUID, vec![7; 16], 6),
            (
                VHDX_LOGICAL_SECTOR_SIZE_GUID,
                512u32.to_le_bytes().to_vec(),
                6,
            ),
            (
                VHDX_PHYSICAL_SECTOR_SIZE_GUID,
                4096u32.to_le_bytes().to_vec(),
                6,
            ),
        ];
        if self.extra_required_item {
            items.push(([0xee; 16], vec![1; 4], metadata::IS_REQUIRED));
        }
        img[m + metadata::ENTRY_COUNT..][..2].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut next = 64 << 10;
        for (i, (guid, data, flags)) in items.iter().enumerate() {
            let e = m + metadata::ENTRIES + i * metadata::ENTRY_LEN;
            img[e..e + 16].copy_from_slice(guid);
            img[e + metadata::E_OFFSET..][..4].copy_from_slice(&(next as u32).to_le_bytes());
            img[e + metadata::E_LENGTH..][..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
            img[e + metadata::E_FLAGS..][..4].copy_from_slice(&flags.to_le_bytes());
            img[m + next..m + next + data.len()].copy_from_slice(data);
            next += data.len();
        }
        img[2 * MIB_USIZE..][..8].copy_from_slice(&self.bat_entry.to_le_bytes());
        img[3 * MIB_USIZE..].fill(0x5a);
        img
    }
}

/// Stores the CRC-32C of `buf` (checksum field zeroed) at `at`.
fn seal(buf: &mut [u8], at: usize) {
    buf[at..at + 4].fill(0);
    let crc = VHDX_CRC.checksum(buf);
    buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

fn inspect(bytes: &[u8]) -> Report {
    inspect_bytes(bytes, Some(Format::Vhdx), Limits::default())
}

#[test]
fn test_vhdx_synthetic_image_with_metadata_first_is_accepted() {
    let img = VhdxImage::new().build();
    let report = inspect(&img);
    assert!(report.is_accepted(), "{:?}", report.reasons);
    assert!(matches!(report.virtual_size, Some(0x10_0000)));
    let split = crate::fuzzing::inspect_chunked(&img, Some(Format::Vhdx), &[4093, 1]);
    assert_eq!(report, split);
}

#[test]
fn test_vhdx_block_in_header_section_is_corrupt() {
    let mut image = VhdxImage::new();
    image.bat_entry = u64::from(state::FULLY_PRESENT);
    assert!(inspect(&image.build()).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhdx_block_overlapping_bat_is_corrupt() {
    let mut image = VhdxImage::new();
    image.block_size = 2 << 20;
    image.virtual_size = 2 << 20;
    image.bat_entry = (1 << 20) | u64::from(state::FULLY_PRESENT);
    // Starts inside the metadata region: corrupt at once.
    assert!(inspect(&image.build()).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhdx_block_beyond_stream_is_truncated() {
    let mut image = VhdxImage::new();
    image.bat_entry = (8 << 20) | u64::from(state::FULLY_PRESENT);
    assert!(inspect(&image.build()).has_reason(ReasonCode::Truncated));
}

#[test]
fn test_vhdx_invalid_bat_state_is_corrupt() {
    let mut image = VhdxImage::new();
    image.bat_entry = 4;
    assert!(inspect(&image.build()).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhdx_partially_present_without_parent_is_corrupt() {
    let mut image = VhdxImage::new();
    image.bat_entry = (3 << 20) | u64::from(state::PARTIALLY_PRESENT);
    assert!(inspect(&image.build()).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhdx_unmapped_states_are_accepted() {
    for st in [
        state::UNMAPPED,
        state::UNMAPPED_V095,
        state::ZERO,
        state::UNDEFINED,
    ] {
        let mut image = VhdxImage::new();
        image.bat_entry = u64::from(st);
        let report = inspect(&image.build());
        assert!(report.is_accepted(), "state {st}: {:?}", report.reasons);
    }
}

#[test]
fn test_vhdx_block_size_out_of_range_is_corrupt() {
    for bs in [512 << 10, 512 << 20, 3 << 20] {
        let mut image = VhdxImage::new();
        image.block_size = bs;
        assert!(inspect(&image.build()).has_reason(ReasonCode::Corrupt));
    }
}

#[test]
fn test_vhdx_virtual_size_over_64_tib_is_corrupt() {
    let mut image = VhdxImage::new();
    image.virtual_size = (64 << 40) + 512;
    assert!(inspect(&image.build()).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhdx_unknown_required_metadata_is_unknown_feature() {
    let mut image = VhdxImage::new();
    image.extra_required_item = true;
    assert!(inspect(&image.build()).has_reason(ReasonCode::UnknownFeature));
}

#[test]
fn test_vhdx_has_parent_is_backing_file() {
    let mut image = VhdxImage::new();
    image.file_flags = metadata::HAS_PARENT;
    let report = inspect(&image.build());
    assert!(report.has_reason(ReasonCode::BackingFile));
    assert!(!report.complete);
}

#[test]
fn test_vhdx_region_table_bad_crc_is_corrupt() {
    let mut img = VhdxImage::new().build();
    img[(192 << 10) + 100] ^= 1;
    assert!(inspect(&img).has_reason(ReasonCode::Corrupt));
}

#[test]
fn test_vhdx_parent_locator_paths_are_read() {
    let key = |s: &str| {
        s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>()
    };
    let (k, v) = (key("relative_path"), key("..\\base.vhdx"));
    let mut loc = vec![0u8; 20 + 12];
    loc[18..20].copy_from_slice(&1u16.to_le_bytes());
    let ko = loc.len() as u32;
    let vo = ko + k.len() as u32;
    loc[20..24].copy_from_slice(&ko.to_le_bytes());
    loc[24..28].copy_from_slice(&vo.to_le_bytes());
    loc[28..30].copy_from_slice(&(k.len() as u16).to_le_bytes());
    loc[30..32].copy_from_slice(&(v.len() as u16).to_le_bytes());
    loc.extend_from_slice(&k);
    loc.extend_from_slice(&v);
    assert_eq!(vhdx_parent_path(&loc).as_deref(), Some("..\\base.vhdx"));
}
