//! The hosted sparse extent header (`KDMV`, 512 bytes, little-endian) and its checks.

use crate::stream::{le_u16, le_u32, le_u64};
use crate::ReasonCode;

/// `KDMV`: a hosted sparse extent (monolithicSparse, streamOptimized).
pub(crate) const VMDK4_MAGIC: &[u8; 4] = b"KDMV";
/// `COWD`: the legacy ESX 2 / VMDK3 sparse extent.
pub(crate) const VMDK3_MAGIC: &[u8; 4] = b"COWD";

/// One sector; every VMDK offset and size is counted in these.
pub(crate) const SECTOR: u64 = 512;

/// `gdOffset` meaning "the grain directory is found through the footer at the end".
pub(crate) const GD_AT_END: u64 = u64::MAX;

/// Flag bit 0: the newline-detection check bytes are valid.
const FLAG_NL_DETECT: u32 = 1 << 0;
/// Flag bit 1: a redundant grain directory exists at `rgdOffset`.
pub(crate) const FLAG_RGD: u32 = 1 << 1;
/// Flag bit 2: a grain table entry of 1 means "zeroed grain".
pub(crate) const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
const FLAG_COMPRESS: u32 = 1 << 16;
/// Flag bit 17: grains and tables are preceded by markers (streamOptimized).
const FLAG_MARKER: u32 = 1 << 17;

/// `compressAlgorithm` 1: deflate.
const COMPRESSION_DEFLATE: u16 = 1;

/// The check bytes a header with [`FLAG_NL_DETECT`] carries at offset 73; a text-mode
/// transfer (line-ending conversion) damages them.
const NL_CHECK_BYTES: [u8; 4] = *b"\n \r\n";

/// Largest grain: QEMU refuses more than 0x200000 sectors (1 GiB) per grain ("Invalid
/// granularity, image may be corrupt").
pub(crate) const VMDK_MAX_GRAIN_SECTORS: u64 = 0x20_0000;

/// Most entries per grain table: QEMU refuses more than 512 ("L2 table size too big"), and
/// VMware writes exactly 512.
pub(crate) const VMDK_MAX_GTES_PER_GT: u64 = 512;

/// Most grain directory entries: QEMU refuses more than 32 Mi ("L1 size too big"), enough for
/// 8 TiB with the smallest grains.
pub(crate) const VMDK_MAX_GD_ENTRIES: u64 = 32 << 20;

/// Highest version read as a future VMDK (`unsupported_format`) rather than garbage after the
/// magic (`corrupt`): VMware has used versions 1 to 3 of the sparse extent, so a version above
/// 15 is not a format VMware will write but bytes that merely start with `KDMV`.
const VMDK_MAX_PLAUSIBLE_VERSION: u32 = 15;

/// Largest embedded descriptor in sectors: QEMU and oslo.utils read at most 1 MiB − 1 bytes
/// of descriptor, so 2047 whole sectors.
pub(crate) const VMDK_MAX_DESCRIPTOR_SECTORS: u64 = ((1 << 20) - 1) / SECTOR;

/// The descriptor sector oslo.utils requires ("Wrong descriptor location").
const VMDK_DESCRIPTOR_SECTOR: u64 = 1;

/// Which layout a sparse extent header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmdkSubformat {
    /// Uncompressed grains addressed through grain tables (`monolithicSparse`).
    MonolithicSparse,
    /// Deflate-compressed grains with markers (`streamOptimized`).
    StreamOptimized,
}

impl VmdkSubformat {
    /// The createType naming this layout.
    pub(crate) fn create_type(self) -> &'static str {
        match self {
            VmdkSubformat::MonolithicSparse => "monolithicSparse",
            VmdkSubformat::StreamOptimized => "streamOptimized",
        }
    }
}

/// The fields of a `KDMV` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VmdkHeader {
    /// Format version (1–3).
    pub(crate) version: u32,
    /// Feature flags.
    pub(crate) flags: u32,
    /// Virtual size in sectors.
    pub(crate) capacity: u64,
    /// Grain size in sectors.
    pub(crate) grain_size: u64,
    /// Descriptor start, in sectors.
    pub(crate) desc_offset: u64,
    /// Descriptor length, in sectors.
    pub(crate) desc_size: u64,
    /// Entries per grain table.
    pub(crate) gtes_per_gt: u32,
    /// Redundant grain directory, in sectors.
    pub(crate) rgd_offset: u64,
    /// Grain directory, in sectors (or [`GD_AT_END`]).
    pub(crate) gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub(crate) overhead: u64,
    /// Newline check bytes.
    pub(crate) check_bytes: [u8; 4],
    /// Compression algorithm (0 none, 1 deflate).
    pub(crate) compress: u16,
}

/// A problem with a header: the reason code and its message.
pub(crate) type HeaderProblem = (ReasonCode, String);

impl VmdkHeader {
    /// Reads the fields of a `KDMV` sector (magic already checked); `None` if too short.
    pub(crate) fn parse(sector: &[u8]) -> Option<Self> {
        Some(VmdkHeader {
            version: le_u32(sector, 4)?,
            flags: le_u32(sector, 8)?,
            capacity: le_u64(sector, 12)?,
            grain_size: le_u64(sector, 20)?,
            desc_offset: le_u64(sector, 28)?,
            desc_size: le_u64(sector, 36)?,
            gtes_per_gt: le_u32(sector, 44)?,
            rgd_offset: le_u64(sector, 48)?,
            gd_offset: le_u64(sector, 56)?,
            overhead: le_u64(sector, 64)?,
            check_bytes: crate::stream::array(sector, 73)?,
            compress: le_u16(sector, 77)?,
        })
    }

    /// The virtual size in bytes, if it does not overflow.
    pub(crate) fn virtual_size(&self) -> Option<u64> {
        self.capacity.checked_mul(SECTOR)
    }

    /// Whether grain table entries of 1 mean "zeroed".
    pub(crate) fn zero_grain(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }

    /// Whether a redundant grain directory is in use.
    pub(crate) fn has_rgd(&self) -> bool {
        self.flags & FLAG_RGD != 0
    }

    /// The first sector after the descriptor.
    pub(crate) fn descriptor_end_sector(&self) -> u64 {
        self.desc_offset.saturating_add(self.desc_size)
    }

    /// Sectors covered by one grain table.
    pub(crate) fn sectors_per_table(&self) -> Option<u64> {
        u64::from(self.gtes_per_gt)
            .checked_mul(self.grain_size)
            .filter(|&n| n > 0)
    }

    /// Entries in the grain directory: one per grain table needed to cover the capacity.
    pub(crate) fn gd_entries(&self) -> Option<u64> {
        let per = self.sectors_per_table()?;
        let whole = self.capacity.checked_div(per)?;
        let part = self.capacity.checked_rem(per)?;
        whole.checked_add(u64::from(part != 0))
    }

    /// The layout selected by the flags and compression algorithm (QEMU reads grains as
    /// compressed when `compressAlgorithm` is deflate, and expects markers with flag 17).
    pub(crate) fn subformat(&self) -> Result<VmdkSubformat, HeaderProblem> {
        let markers = self.flags & FLAG_MARKER != 0;
        let compressed_flag = self.flags & FLAG_COMPRESS != 0;
        match (self.compress, compressed_flag, markers) {
            (0, false, false) => Ok(VmdkSubformat::MonolithicSparse),
            (COMPRESSION_DEFLATE, true, true) => Ok(VmdkSubformat::StreamOptimized),
            _ => Err((
                ReasonCode::UnsupportedSubformat,
                format!(
                    "VMDK sparse extent with flags {:#x} and compressAlgorithm {} is neither \
                     monolithicSparse nor streamOptimized",
                    self.flags, self.compress
                ),
            )),
        }
    }

    /// Every check on the header alone; the first problem, if any, stops the structure walk.
    pub(crate) fn check(&self) -> Result<VmdkSubformat, HeaderProblem> {
        let corrupt = |m: String| Err((ReasonCode::Corrupt, m));
        match self.version {
            1..=3 => {}
            0 => return corrupt("VMDK sparse extent has version 0".into()),
            v if v <= VMDK_MAX_PLAUSIBLE_VERSION => {
                return Err((
                    ReasonCode::UnsupportedFormat,
                    format!("VMDK sparse extent version {v} is not supported (only 1 to 3)"),
                ))
            }
            v => {
                return corrupt(format!(
                    "VMDK sparse extent version {v} is no VMDK version: the bytes after the \
                     magic are not a header"
                ))
            }
        }
        if self.flags & FLAG_NL_DETECT != 0 && self.check_bytes != NL_CHECK_BYTES {
            return corrupt(
                "VMDK header newline check bytes are damaged (transferred in text mode?)".into(),
            );
        }
        if self.desc_offset != VMDK_DESCRIPTOR_SECTOR {
            return corrupt(format!(
                "VMDK descriptor is at sector {}, expected sector {VMDK_DESCRIPTOR_SECTOR}",
                self.desc_offset
            ));
        }
        if self.desc_size == 0 {
            return corrupt("VMDK sparse extent has no embedded descriptor".into());
        }
        if self.desc_size > VMDK_MAX_DESCRIPTOR_SECTORS {
            let end = self.descriptor_end_sector();
            let directories = [
                (self.gd_offset != GD_AT_END).then_some(self.gd_offset),
                self.has_rgd().then_some(self.rgd_offset),
            ];
            if end > self.overhead || directories.into_iter().flatten().any(|gd| end > gd) {
                // The header contradicts itself: not a big descriptor but a wrong size.
                return corrupt(format!(
                    "VMDK descriptor of {} sectors runs past the metadata area (overHead {} \
                     sectors) or the grain directories",
                    self.desc_size, self.overhead
                ));
            }
            return Err((
                ReasonCode::LimitExceeded,
                format!(
                    "VMDK descriptor of {} sectors exceeds the limit of \
                     {VMDK_MAX_DESCRIPTOR_SECTORS} sectors",
                    self.desc_size
                ),
            ));
        }
        if self.capacity == 0 {
            // QEMU then opens the embedded descriptor as a descriptor file and follows its
            // extents, which may name other files.
            return corrupt("VMDK sparse extent has capacity 0".into());
        }
        if self.virtual_size().is_none() {
            return corrupt(format!(
                "VMDK capacity of {} sectors overflows",
                self.capacity
            ));
        }
        if self.grain_size == 0
            || !self.grain_size.is_power_of_two()
            || self.grain_size > VMDK_MAX_GRAIN_SECTORS
        {
            return corrupt(format!(
                "VMDK grain size of {} sectors is not a power of two up to \
                 {VMDK_MAX_GRAIN_SECTORS}",
                self.grain_size
            ));
        }
        let gtes = u64::from(self.gtes_per_gt);
        if gtes == 0 || gtes > VMDK_MAX_GTES_PER_GT {
            return corrupt(format!(
                "VMDK grain tables of {gtes} entries (expected 1 to {VMDK_MAX_GTES_PER_GT})"
            ));
        }
        let gd_entries = self.gd_entries().unwrap_or(u64::MAX);
        if gd_entries > VMDK_MAX_GD_ENTRIES {
            return Err((
                ReasonCode::LimitExceeded,
                format!(
                    "VMDK grain directory of {gd_entries} entries exceeds the limit of \
                     {VMDK_MAX_GD_ENTRIES}"
                ),
            ));
        }
        let subformat = self.subformat()?;
        let desc_end = self.descriptor_end_sector();
        if self.overhead < desc_end || self.overhead.checked_mul(SECTOR).is_none() {
            return corrupt(format!(
                "VMDK overHead of {} sectors overlaps the header and descriptor",
                self.overhead
            ));
        }
        // With the directory at the end, the footer gives it (checked at end of stream by
        // `VmdkFooterWalk` or the stream marker walk).
        if self.gd_offset != GD_AT_END {
            check_directory("grain directory", self.gd_offset, desc_end)?;
        }
        if self.has_rgd() {
            check_directory("redundant grain directory", self.rgd_offset, desc_end)?;
        }
        Ok(subformat)
    }
}

/// A directory must lie after the descriptor and be addressable in bytes.
fn check_directory(what: &str, sector: u64, desc_end: u64) -> Result<(), HeaderProblem> {
    if sector < desc_end || sector.checked_mul(SECTOR).is_none() {
        return Err((
            ReasonCode::Corrupt,
            format!("VMDK {what} at sector {sector} overlaps the header or descriptor"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test arithmetic on small known values
pub(crate) mod tests {
    use super::*;

    /// The header `qemu-img create -f vmdk x 100M` writes.
    pub(crate) fn qemu_sparse_header() -> VmdkHeader {
        VmdkHeader {
            version: 1,
            flags: 3,
            capacity: 204_800,
            grain_size: 128,
            desc_offset: 1,
            desc_size: 20,
            gtes_per_gt: 512,
            rgd_offset: 21,
            gd_offset: 38,
            overhead: 128,
            check_bytes: NL_CHECK_BYTES,
            compress: 0,
        }
    }

    /// Serialises a header into a 512-byte sector.
    pub(crate) fn encode(h: &VmdkHeader) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..4].copy_from_slice(VMDK4_MAGIC);
        s[4..8].copy_from_slice(&h.version.to_le_bytes());
        s[8..12].copy_from_slice(&h.flags.to_le_bytes());
        s[12..20].copy_from_slice(&h.capacity.to_le_bytes());
        s[20..28].copy_from_slice(&h.grain_size.to_le_bytes());
        s[28..36].copy_from_slice(&h.desc_offset.to_le_bytes());
        s[36..44].copy_from_slice(&h.desc_size.to_le_bytes());
        s[44..48].copy_from_slice(&h.gtes_per_gt.to_le_bytes());
        s[48..56].copy_from_slice(&h.rgd_offset.to_le_bytes());
        s[56..64].copy_from_slice(&h.gd_offset.to_le_bytes());
        s[64..72].copy_from_slice(&h.overhead.to_le_bytes());
        s[73..77].copy_from_slice(&h.check_bytes);
        s[77..79].copy_from_slice(&h.compress.to_le_bytes());
        s
    }

    #[test]
    fn test_header_roundtrip_parses() {
        let h = qemu_sparse_header();
        assert!(matches!(VmdkHeader::parse(&encode(&h)), Some(p) if p == h));
        assert!(matches!(h.check(), Ok(VmdkSubformat::MonolithicSparse)));
        assert!(matches!(h.gd_entries(), Some(4)));
    }

    /// Edits one header field.
    type Patch = fn(&mut VmdkHeader);

    #[test]
    fn test_header_bad_fields_are_refused() {
        let cases: Vec<(Patch, ReasonCode)> = vec![
            (|h| h.version = 4, ReasonCode::UnsupportedFormat),
            (|h| h.version = 0, ReasonCode::Corrupt),
            (|h| h.desc_offset = 2, ReasonCode::Corrupt),
            // Past the metadata area and the grain directories: inconsistent, not big.
            (|h| h.desc_size = 4096, ReasonCode::Corrupt),
            (|h| h.desc_size = u64::MAX, ReasonCode::Corrupt),
            // Consistent with the layout, but above the limit.
            (
                |h| {
                    h.desc_size = 4096;
                    h.rgd_offset = 4097;
                    h.gd_offset = 4114;
                    h.overhead = 4224;
                },
                ReasonCode::LimitExceeded,
            ),
            // Garbage after the magic is no future version.
            (|h| h.version = 0xdead_beef, ReasonCode::Corrupt),
            (|h| h.capacity = 0, ReasonCode::Corrupt),
            (|h| h.capacity = u64::MAX, ReasonCode::Corrupt),
            (|h| h.grain_size = 100, ReasonCode::Corrupt),
            (|h| h.grain_size = 1 << 22, ReasonCode::Corrupt),
            (|h| h.gtes_per_gt = 1024, ReasonCode::Corrupt),
            (|h| h.check_bytes = *b"\n \n\n", ReasonCode::Corrupt),
            (|h| h.compress = 1, ReasonCode::UnsupportedSubformat),
            (|h| h.gd_offset = 5, ReasonCode::Corrupt),
            (|h| h.overhead = 3, ReasonCode::Corrupt),
            (
                |h| {
                    h.capacity = 1 << 40;
                    h.grain_size = 1;
                    h.gtes_per_gt = 1;
                },
                ReasonCode::LimitExceeded,
            ),
        ];
        for (patch, code) in cases {
            let mut h = qemu_sparse_header();
            patch(&mut h);
            assert!(matches!(h.check(), Err((c, _)) if c == code), "{h:?}");
        }
    }
}
