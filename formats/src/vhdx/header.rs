//! VHDX on-disk layout: section offsets, GUIDs, field offsets, limits, and the small decoders
//! (CRC-32C, GUIDs, UTF-16 paths) the inspector and the converter share.

use crate::stream::{le_u16, le_u32};

/// One mebibyte: the alignment of every structure after the header section.
pub(super) const MIB: u64 = 1 << 20;
/// The file identifier's signature at offset 0.
pub(super) const VHDX_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// The two headers, 4 KiB each (the CRC covers all 4 KiB).
pub(super) const VHDX_HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// The size a header's checksum covers.
pub(super) const VHDX_HEADER_LEN: usize = 4 << 10;
/// The two region tables, 64 KiB each (the CRC covers all 64 KiB).
pub(super) const VHDX_REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// The size of a region table and of the metadata table.
pub(super) const VHDX_TABLE_LEN: usize = 64 << 10;
/// [`VHDX_TABLE_LEN`] as a stream length.
pub(super) const VHDX_TABLE_LEN_U64: u64 = 64 << 10;
/// The header section (file identifier, headers, region tables) is the first 1 MiB.
pub(super) const VHDX_HEADER_SECTION_END: u64 = MIB;
/// The specification's maximum number of region table entries.
pub(super) const VHDX_MAX_REGION_ENTRIES: u32 = 2047;
/// The specification's maximum number of metadata table entries (64 KiB minus the 32-byte
/// header, in 32-byte entries).
pub(super) const VHDX_MAX_METADATA_ENTRIES: u16 = 2047;
/// The specification's maximum length of one metadata item.
pub(super) const VHDX_MAX_METADATA_ITEM_LEN: u32 = 1 << 20;
/// Sluice reads a parent locator (only to name the parent in a message) when it is at most
/// 64 KiB; a locator is a few short UTF-16 paths, and a longer one is still refused as a parent.
pub(super) const VHDX_MAX_PARENT_LOCATOR_LEN: u32 = 64 << 10;
/// Block sizes allowed by the specification and qemu (`VHDX_BLOCK_SIZE_MIN`/`_MAX`).
pub(super) const VHDX_MIN_BLOCK_SIZE: u32 = 1 << 20;
/// See [`VHDX_MIN_BLOCK_SIZE`].
pub(super) const VHDX_MAX_BLOCK_SIZE: u32 = 256 << 20;
/// The specification's (and qemu's `VHDX_MAX_IMAGE_SIZE`) maximum virtual size: 64 TiB.
pub(super) const VHDX_MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Sectors covered by one sector-bitmap block (qemu's `VHDX_MAX_SECTORS_PER_BLOCK`, 2^23): the
/// chunk ratio is this × logical sector size / block size.
pub(super) const VHDX_SECTORS_PER_BITMAP: u64 = 1 << 23;
/// Bits 20..63 of a BAT entry: the block's file offset (a multiple of 1 MiB).
pub(super) const VHDX_BAT_OFFSET_MASK: u64 = 0xFFFF_FFFF_FFF0_0000;
/// Bits 0..2 of a BAT entry: the block's state.
pub(super) const VHDX_BAT_STATE_MASK: u64 = 7;

/// Payload block states (MS-VHDX 2.5.1.1; 5 is the pre-1.0 "unmapped" that qemu also accepts).
pub(super) mod state {
    pub(crate) const NOT_PRESENT: u8 = 0;
    pub(crate) const UNDEFINED: u8 = 1;
    pub(crate) const ZERO: u8 = 2;
    pub(crate) const UNMAPPED: u8 = 3;
    pub(crate) const UNMAPPED_V095: u8 = 5;
    pub(crate) const FULLY_PRESENT: u8 = 6;
    pub(crate) const PARTIALLY_PRESENT: u8 = 7;
}

/// {2DC27766-F623-4200-9D64-115E9BFD4A08}: the BAT region.
pub(super) const VHDX_BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
/// {8B7CA206-4790-4B9A-B8FE-575F050F886E}: the metadata region.
pub(super) const VHDX_METADATA_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
/// {CAA16737-FA36-4D43-B3B6-33F0AA44E76B}: File Parameters (block size, flags).
pub(super) const VHDX_FILE_PARAMETERS_GUID: [u8; 16] = [
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
];
/// {2FA54224-CD1B-4876-B211-5DBED83BF4B8}: Virtual Disk Size.
pub(super) const VHDX_VIRTUAL_DISK_SIZE_GUID: [u8; 16] = [
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
];
/// {BECA12AB-B2E6-4523-93EF-C309E000C746}: Page 83 data (a SCSI identifier).
pub(super) const VHDX_PAGE83_GUID: [u8; 16] = [
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
];
/// {8141BF1D-A96F-4709-BA47-F233A8FAAB5F}: Logical Sector Size.
pub(super) const VHDX_LOGICAL_SECTOR_SIZE_GUID: [u8; 16] = [
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
];
/// {CDA348C7-445D-4471-9CC9-E9885251C556}: Physical Sector Size.
pub(super) const VHDX_PHYSICAL_SECTOR_SIZE_GUID: [u8; 16] = [
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56,
];
/// {A8D35F2D-B30B-454D-ABF7-D3D84834AB0C}: Parent Locator (differencing disks).
pub(super) const VHDX_PARENT_LOCATOR_GUID: [u8; 16] = [
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
];

/// Field offsets in a header.
pub(super) mod head {
    pub(crate) const SIGNATURE: usize = 0;
    pub(crate) const CHECKSUM: usize = 4;
    pub(crate) const SEQUENCE_NUMBER: usize = 8;
    pub(crate) const LOG_GUID: usize = 48;
    pub(crate) const VERSION: usize = 66;
    pub(crate) const LOG_LENGTH: usize = 68;
    pub(crate) const LOG_OFFSET: usize = 72;
}

/// Field offsets in a region table.
pub(super) mod region {
    pub(crate) const SIGNATURE: usize = 0;
    pub(crate) const CHECKSUM: usize = 4;
    pub(crate) const ENTRY_COUNT: usize = 8;
    pub(crate) const ENTRIES: usize = 16;
    pub(crate) const ENTRY_LEN: usize = 32;
    pub(crate) const E_FILE_OFFSET: usize = 16;
    pub(crate) const E_LENGTH: usize = 24;
    pub(crate) const E_FLAGS: usize = 28;
    /// Flag bit: a reader that does not know the region must refuse the file.
    pub(crate) const REQUIRED: u32 = 1;
}

/// Field offsets in the metadata table.
pub(super) mod metadata {
    pub(crate) const SIGNATURE: &[u8; 8] = b"metadata";
    pub(crate) const ENTRY_COUNT: usize = 10;
    pub(crate) const ENTRIES: usize = 32;
    pub(crate) const ENTRY_LEN: usize = 32;
    pub(crate) const E_OFFSET: usize = 16;
    pub(crate) const E_LENGTH: usize = 20;
    pub(crate) const E_FLAGS: usize = 24;
    /// Flag bit: a reader that does not know the item must refuse the file.
    pub(crate) const IS_REQUIRED: u32 = 4;
    /// Items live after the 64 KiB table.
    pub(crate) const MIN_ITEM_OFFSET: u32 = 64 << 10;
    /// File Parameters flag: the disk is a differencing disk.
    pub(crate) const HAS_PARENT: u32 = 2;
}

/// CRC-32C, the checksum of VHDX headers, region tables and log entries.
pub(super) const VHDX_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Whether `buf`'s CRC-32C, computed with the 4-byte checksum at `at` zeroed, equals that field.
pub(super) fn vhdx_checksum_ok(buf: &[u8], at: usize) -> bool {
    let (Some(head), Some(stored), Some(rest)) = (
        buf.get(..at),
        le_u32(buf, at),
        at.checked_add(4).and_then(|e| buf.get(e..)),
    ) else {
        return false;
    };
    let mut digest = VHDX_CRC.digest();
    digest.update(head);
    digest.update(&[0; 4]);
    digest.update(rest);
    digest.finalize() == stored
}

/// Formats an on-disk (mixed-endian) GUID the usual way.
pub(super) fn vhdx_guid(g: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = *g;
    let tail: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1]),
        tail.get(..4).unwrap_or(""),
        tail.get(4..).unwrap_or("")
    )
}

/// Decodes UTF-16LE for a message: control characters escaped, at most 256 characters.
pub(super) fn vhdx_utf16le(buf: &[u8]) -> String {
    let units = buf.chunks_exact(2).map(|c| {
        u16::from_le_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ])
    });
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .take(256)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The parent path a parent locator names, if it can be read: the first of `relative_path`,
/// `absolute_win32_path`, `volume_path`.
pub(super) fn vhdx_parent_path(loc: &[u8]) -> Option<String> {
    /// Locator header: type GUID (16), reserved (2), key/value count (2); then 12-byte entries.
    const COUNT: usize = 18;
    const ENTRIES: usize = 20;
    const ENTRY_LEN: usize = 12;
    let count = usize::from(le_u16(loc, COUNT)?);
    let string = |off: u32, len: u16| -> Option<&[u8]> {
        let start = usize::try_from(off).ok()?;
        loc.get(start..start.checked_add(usize::from(len))?)
    };
    let mut found: [Option<String>; 3] = [None, None, None];
    for i in 0..count {
        let e = ENTRIES.checked_add(i.checked_mul(ENTRY_LEN)?)?;
        let (Some(ko), Some(vo), Some(kl), Some(vl)) = (
            le_u32(loc, e),
            le_u32(loc, e.checked_add(4)?),
            le_u16(loc, e.checked_add(8)?),
            le_u16(loc, e.checked_add(10)?),
        ) else {
            break;
        };
        let (Some(key), Some(value)) = (string(ko, kl), string(vo, vl)) else {
            continue;
        };
        let slot = match vhdx_utf16le(key).as_str() {
            "relative_path" => 0,
            "absolute_win32_path" => 1,
            "volume_path" => 2,
            _ => continue,
        };
        if let Some(s) = found.get_mut(slot) {
            s.get_or_insert_with(|| vhdx_utf16le(value));
        }
    }
    found.into_iter().flatten().next()
}
