//! VHD on-disk layout: the footer, the dynamic header, limits, the virtual size and the
//! checksum, shared by the inspector and the converter.

use crate::stream::{be_u16, be_u32, be_u64};

/// The footer (and its copy at offset 0) is one 512-byte sector.
pub(super) const VHD_FOOTER_LEN: usize = 512;
/// [`VHD_FOOTER_LEN`] as a stream offset.
pub(super) const VHD_FOOTER_LEN_U64: u64 = 512;
/// The footer's cookie.
pub(super) const VHD_FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// The dynamic disk header is 1024 bytes.
pub(super) const VHD_DYN_HEADER_LEN: usize = 1024;
/// [`VHD_DYN_HEADER_LEN`] as a stream offset.
pub(super) const VHD_DYN_HEADER_LEN_U64: u64 = 1024;
/// The dynamic disk header's cookie.
pub(super) const VHD_DYN_HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// A BAT entry for a block that is not allocated.
pub(super) const VHD_BAT_UNALLOCATED: u32 = 0xFFFF_FFFF;
/// VHD sectors (BAT entries count them, sizes are multiples of them) are 512 bytes.
pub(super) const VHD_SECTOR: u64 = 512;

/// qemu's `VHD_MAX_SECTORS`: images larger than 2040 GiB are refused (`-EFBIG`), the
/// specification's maximum VHD size.
pub(super) const VHD_MAX_SECTORS: u64 = 0xff00_0000;
/// qemu's `VHD_MAX_GEOMETRY` (65535 cylinders × 16 heads × 255 sectors): a footer with this
/// geometry cannot describe the disk, so qemu uses the footer's current size instead.
pub(super) const VHD_MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// The smallest block size qemu accepts (one sector).
pub(super) const VHD_MIN_BLOCK_SIZE: u32 = 512;
/// Sluice's cap on a dynamic VHD's block size: 256 MiB, 128 times the specification's 2 MiB
/// default (Hyper-V writes 2 MiB or 512 KiB, qemu 2 MiB) and the largest VHDX block size.
pub(super) const VHD_MAX_BLOCK_SIZE: u32 = 256 << 20;
/// qemu refuses a BAT with more than `INT_MAX / 4` entries ("Max Table Entries too large").
pub(super) const VHD_MAX_TABLE_ENTRIES: u32 = 0x1FFF_FFFF;
/// Creator applications whose images qemu sizes by their CHS geometry (qemu's
/// `vpc_ignore_current_size`, qemu 10.0): Virtual PC and qemu before `force_size`. Every other
/// creator (`win `, `qem2`, `d2v `, `CTXS`, `tap\0`, `wa\0\0`, ...) is sized by the footer's
/// current size.
pub(super) const VHD_CHS_CREATORS: [&[u8; 4]; 2] = [b"vpc ", b"qemu"];

/// Field offsets in the footer.
pub(super) mod footer {
    pub(crate) const COOKIE: usize = 0;
    pub(crate) const DATA_OFFSET: usize = 16;
    pub(crate) const CREATOR_APP: usize = 28;
    pub(crate) const CURRENT_SIZE: usize = 48;
    pub(crate) const CYLINDERS: usize = 56;
    pub(crate) const HEADS: usize = 58;
    pub(crate) const SECTORS_PER_TRACK: usize = 59;
    pub(crate) const DISK_TYPE: usize = 60;
    pub(crate) const CHECKSUM: usize = 64;
    pub(crate) const UNIQUE_ID: usize = 68;
}

/// Field offsets in the dynamic disk header.
pub(super) mod dyn_header {
    pub(crate) const COOKIE: usize = 0;
    pub(crate) const TABLE_OFFSET: usize = 16;
    pub(crate) const MAX_TABLE_ENTRIES: usize = 28;
    pub(crate) const BLOCK_SIZE: usize = 32;
    pub(crate) const CHECKSUM: usize = 36;
    /// The parent's name, UTF-16BE, NUL-padded.
    pub(crate) const PARENT_NAME: usize = 64;
    pub(crate) const PARENT_NAME_LEN: usize = 512;
}

/// A VHD's disk type (footer offset 60).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VhdDiskType {
    /// 2: the data is a raw disk before the footer.
    Fixed,
    /// 3: sparse blocks through a BAT.
    Dynamic,
    /// 4: dynamic, with unallocated blocks read from a parent image.
    Differencing,
    /// Anything else (0 none, 1 and 5 deprecated, or garbage).
    Other(u32),
}

impl VhdDiskType {
    pub(super) fn from_u32(v: u32) -> Self {
        match v {
            2 => VhdDiskType::Fixed,
            3 => VhdDiskType::Dynamic,
            4 => VhdDiskType::Differencing,
            other => VhdDiskType::Other(other),
        }
    }
}

/// The fields of a VHD footer that Sluice uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct VhdFooter {
    pub(super) data_offset: u64,
    pub(super) creator_app: [u8; 4],
    pub(super) current_size: u64,
    pub(super) cylinders: u16,
    pub(super) heads: u8,
    pub(super) sectors_per_track: u8,
    pub(super) disk_type: VhdDiskType,
    pub(super) unique_id: [u8; 16],
    pub(super) checksum_ok: bool,
}

impl VhdFooter {
    /// Parses a footer; `None` unless `buf` is 512 bytes starting with `conectix`.
    pub(super) fn parse(buf: &[u8]) -> Option<Self> {
        if buf.len() != VHD_FOOTER_LEN || buf.get(footer::COOKIE..8)? != VHD_FOOTER_COOKIE {
            return None;
        }
        Some(VhdFooter {
            data_offset: be_u64(buf, footer::DATA_OFFSET)?,
            creator_app: crate::stream::array(buf, footer::CREATOR_APP)?,
            current_size: be_u64(buf, footer::CURRENT_SIZE)?,
            cylinders: be_u16(buf, footer::CYLINDERS)?,
            heads: *buf.get(footer::HEADS)?,
            sectors_per_track: *buf.get(footer::SECTORS_PER_TRACK)?,
            disk_type: VhdDiskType::from_u32(be_u32(buf, footer::DISK_TYPE)?),
            unique_id: crate::stream::array(buf, footer::UNIQUE_ID)?,
            checksum_ok: vhd_checksum(buf, footer::CHECKSUM) == be_u32(buf, footer::CHECKSUM),
        })
    }

    /// The virtual size in 512-byte sectors, as qemu computes it.
    pub(super) fn sectors(&self) -> u64 {
        let chs = u64::from(self.cylinders)
            .saturating_mul(u64::from(self.heads))
            .saturating_mul(u64::from(self.sectors_per_track));
        let use_chs = VHD_CHS_CREATORS.contains(&&self.creator_app);
        if !use_chs || chs == VHD_MAX_GEOMETRY {
            self.current_size / VHD_SECTOR
        } else {
            chs
        }
    }
}

/// The guest-visible size of the disk a footer describes, exactly as `qemu-img info` reports it:
/// cylinders × heads × sectors per track × 512 for the creators in [`VHD_CHS_CREATORS`] (unless
/// the geometry is [`VHD_MAX_GEOMETRY`]), otherwise the footer's current size rounded down to a
/// sector.
pub(super) fn vhd_virtual_size(f: &VhdFooter) -> u64 {
    f.sectors().saturating_mul(VHD_SECTOR)
}

/// VHD's checksum of a structure: the one's complement of the sum of its bytes, with the
/// checksum field at `checksum_at` read as zero.
pub(super) fn vhd_checksum(buf: &[u8], checksum_at: usize) -> Option<u32> {
    let field = checksum_at..checksum_at.checked_add(4)?;
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !field.contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    Some(!sum)
}

/// Decodes a NUL-terminated UTF-16BE name for a message: control characters escaped, at most
/// 256 characters.
pub(super) fn vhd_utf16be_name(buf: &[u8]) -> String {
    let units = buf
        .chunks_exact(2)
        .map(|c| {
            u16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|&u| u != 0);
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
