//! VHDX (Hyper-V): little-endian, a 1 MiB header section (file identifier, two headers, two
//! region tables) followed, anywhere after 1 MiB, by the log, the metadata region and the block
//! allocation table (BAT).
//!
//! The header section is captured as it streams past. The region table names the BAT and
//! metadata regions; the metadata table (64 KiB) is captured when it streams past, then the few
//! small metadata items Sluice needs. qemu writes the BAT *before* the metadata, so BAT entries
//! are checked as they stream past without knowing the block size: per-entry checks that need
//! no metadata are made at once and a few aggregates (largest payload offset, first invalid
//! state, ...) are kept for the checks completed at end of stream.

pub(crate) mod convert;

use crate::probe::{Detection, Findings, Probe};
use crate::stream::{array, le_u16, le_u32, le_u64, Capture, EntryScanner, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

/// One mebibyte: the alignment of every structure after the header section.
const MIB: u64 = 1 << 20;
/// The file identifier's signature at offset 0.
const VHDX_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// The two headers, 4 KiB each (the CRC covers all 4 KiB).
const VHDX_HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// The size a header's checksum covers.
const VHDX_HEADER_LEN: usize = 4 << 10;
/// The two region tables, 64 KiB each (the CRC covers all 64 KiB).
const VHDX_REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// The size of a region table and of the metadata table.
const VHDX_TABLE_LEN: usize = 64 << 10;
/// [`VHDX_TABLE_LEN`] as a stream length.
const VHDX_TABLE_LEN_U64: u64 = 64 << 10;
/// The header section (file identifier, headers, region tables) is the first 1 MiB.
const VHDX_HEADER_SECTION_END: u64 = MIB;
/// The specification's maximum number of region table entries.
const VHDX_MAX_REGION_ENTRIES: u32 = 2047;
/// The specification's maximum number of metadata table entries (64 KiB minus the 32-byte
/// header, in 32-byte entries).
const VHDX_MAX_METADATA_ENTRIES: u16 = 2047;
/// The specification's maximum length of one metadata item.
const VHDX_MAX_METADATA_ITEM_LEN: u32 = 1 << 20;
/// Sluice reads a parent locator (only to name the parent in a message) when it is at most
/// 64 KiB; a locator is a few short UTF-16 paths, and a longer one is still refused as a parent.
const VHDX_MAX_PARENT_LOCATOR_LEN: u32 = 64 << 10;
/// Block sizes allowed by the specification and qemu (`VHDX_BLOCK_SIZE_MIN`/`_MAX`).
const VHDX_MIN_BLOCK_SIZE: u32 = 1 << 20;
/// See [`VHDX_MIN_BLOCK_SIZE`].
const VHDX_MAX_BLOCK_SIZE: u32 = 256 << 20;
/// The specification's (and qemu's `VHDX_MAX_IMAGE_SIZE`) maximum virtual size: 64 TiB.
const VHDX_MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Sectors covered by one sector-bitmap block (qemu's `VHDX_MAX_SECTORS_PER_BLOCK`, 2^23): the
/// chunk ratio is this × logical sector size / block size.
const VHDX_SECTORS_PER_BITMAP: u64 = 1 << 23;
/// Bits 20..63 of a BAT entry: the block's file offset (a multiple of 1 MiB).
const VHDX_BAT_OFFSET_MASK: u64 = 0xFFFF_FFFF_FFF0_0000;
/// Bits 0..2 of a BAT entry: the block's state.
const VHDX_BAT_STATE_MASK: u64 = 7;

/// Payload block states (MS-VHDX 2.5.1.1; 5 is the pre-1.0 "unmapped" that qemu also accepts).
mod state {
    pub(super) const NOT_PRESENT: u8 = 0;
    pub(super) const UNDEFINED: u8 = 1;
    pub(super) const ZERO: u8 = 2;
    pub(super) const UNMAPPED: u8 = 3;
    pub(super) const UNMAPPED_V095: u8 = 5;
    pub(super) const FULLY_PRESENT: u8 = 6;
    pub(super) const PARTIALLY_PRESENT: u8 = 7;
}

/// {2DC27766-F623-4200-9D64-115E9BFD4A08}: the BAT region.
const VHDX_BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
/// {8B7CA206-4790-4B9A-B8FE-575F050F886E}: the metadata region.
const VHDX_METADATA_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
/// {CAA16737-FA36-4D43-B3B6-33F0AA44E76B}: File Parameters (block size, flags).
const VHDX_FILE_PARAMETERS_GUID: [u8; 16] = [
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
];
/// {2FA54224-CD1B-4876-B211-5DBED83BF4B8}: Virtual Disk Size.
const VHDX_VIRTUAL_DISK_SIZE_GUID: [u8; 16] = [
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
];
/// {BECA12AB-B2E6-4523-93EF-C309E000C746}: Page 83 data (a SCSI identifier).
const VHDX_PAGE83_GUID: [u8; 16] = [
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
];
/// {8141BF1D-A96F-4709-BA47-F233A8FAAB5F}: Logical Sector Size.
const VHDX_LOGICAL_SECTOR_SIZE_GUID: [u8; 16] = [
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
];
/// {CDA348C7-445D-4471-9CC9-E9885251C556}: Physical Sector Size.
const VHDX_PHYSICAL_SECTOR_SIZE_GUID: [u8; 16] = [
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56,
];
/// {A8D35F2D-B30B-454D-ABF7-D3D84834AB0C}: Parent Locator (differencing disks).
const VHDX_PARENT_LOCATOR_GUID: [u8; 16] = [
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
];

/// Field offsets in a header.
mod header {
    pub(super) const SIGNATURE: usize = 0;
    pub(super) const CHECKSUM: usize = 4;
    pub(super) const SEQUENCE_NUMBER: usize = 8;
    pub(super) const LOG_GUID: usize = 48;
    pub(super) const VERSION: usize = 66;
    pub(super) const LOG_LENGTH: usize = 68;
    pub(super) const LOG_OFFSET: usize = 72;
}

/// Field offsets in a region table.
mod region {
    pub(super) const SIGNATURE: usize = 0;
    pub(super) const CHECKSUM: usize = 4;
    pub(super) const ENTRY_COUNT: usize = 8;
    pub(super) const ENTRIES: usize = 16;
    pub(super) const ENTRY_LEN: usize = 32;
    pub(super) const E_FILE_OFFSET: usize = 16;
    pub(super) const E_LENGTH: usize = 24;
    pub(super) const E_FLAGS: usize = 28;
    /// Flag bit: a reader that does not know the region must refuse the file.
    pub(super) const REQUIRED: u32 = 1;
}

/// Field offsets in the metadata table.
mod metadata {
    pub(super) const SIGNATURE: &[u8; 8] = b"metadata";
    pub(super) const ENTRY_COUNT: usize = 10;
    pub(super) const ENTRIES: usize = 32;
    pub(super) const ENTRY_LEN: usize = 32;
    pub(super) const E_OFFSET: usize = 16;
    pub(super) const E_LENGTH: usize = 20;
    pub(super) const E_FLAGS: usize = 24;
    /// Flag bit: a reader that does not know the item must refuse the file.
    pub(super) const IS_REQUIRED: u32 = 4;
    /// Items live after the 64 KiB table.
    pub(super) const MIN_ITEM_OFFSET: u32 = 64 << 10;
    /// File Parameters flag: the disk is a differencing disk.
    pub(super) const HAS_PARENT: u32 = 2;
}

/// CRC-32C, the checksum of VHDX headers, region tables and log entries.
const VHDX_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Whether `buf`'s CRC-32C, computed with the 4-byte checksum at `at` zeroed, equals that field.
fn vhdx_checksum_ok(buf: &[u8], at: usize) -> bool {
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
fn vhdx_guid(g: &[u8; 16]) -> String {
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
fn vhdx_utf16le(buf: &[u8]) -> String {
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
fn vhdx_parent_path(loc: &[u8]) -> Option<String> {
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

/// A region of the file that payload blocks must not overlap.
#[derive(Debug, Clone, Copy)]
struct VhdxRegion {
    start: u64,
    end: u64,
    name: &'static str,
}

/// The regions payload blocks are checked against: header section, log, BAT, metadata.
const VHDX_TRACKED_REGIONS: usize = 4;

/// What the BAT scan learnt, for the checks that need the metadata (read later).
#[derive(Debug, Default)]
struct VhdxBatStats {
    /// The first entry with a state no payload or bitmap entry may have: (index, state).
    first_bad_state: Option<(u64, u8)>,
    /// The first partially present block.
    first_partial: Option<u64>,
    /// The present block with the largest file offset: (offset, index).
    last_block: Option<(u64, u64)>,
    /// Per tracked region, the largest present-block offset below its start.
    below: [Option<u64>; VHDX_TRACKED_REGIONS],
}

/// The metadata items Sluice reads, captured when they stream past.
#[derive(Debug, Default)]
struct VhdxItems {
    file_parameters: Option<Capture>,
    virtual_disk_size: Option<Capture>,
    logical_sector_size: Option<Capture>,
    physical_sector_size: Option<Capture>,
    parent_locator: Option<Capture>,
    /// Whether a parent locator item exists (captured or not).
    has_parent_locator: bool,
}

impl VhdxItems {
    fn all(&mut self) -> impl Iterator<Item = &mut Capture> {
        [
            self.file_parameters.as_mut(),
            self.virtual_disk_size.as_mut(),
            self.logical_sector_size.as_mut(),
            self.physical_sector_size.as_mut(),
            self.parent_locator.as_mut(),
        ]
        .into_iter()
        .flatten()
    }
}

/// The disk parameters, once the metadata items are read.
#[derive(Debug, Clone, Copy)]
struct VhdxParams {
    block_size: u64,
    virtual_size: u64,
    has_parent: bool,
    /// BAT entries the disk needs (qemu's `vhdx_calc_bat_entries`).
    bat_entries: u64,
}

/// Where the probe is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VhdxState {
    /// Collecting the header section (file identifier, headers, region tables).
    HeaderSection,
    /// Waiting for the metadata table, the metadata items and the end of the BAT.
    Regions,
    /// Everything needed was read, or a structural error ended the walk.
    Done,
}

/// Recognises VHDX images and checks headers, region tables, metadata and BAT.
#[derive(Debug)]
pub(crate) struct VhdxProbe {
    state: VhdxState,
    ident: Capture,
    headers: [Capture; 2],
    headers_parsed: bool,
    region_tables: [Capture; 2],
    /// Header section, log, BAT and metadata regions, once known.
    regions: Vec<VhdxRegion>,
    bat_region: Option<(u64, u32)>,
    metadata_region: Option<(u64, u32)>,
    metadata_table: Option<Capture>,
    metadata_parsed: bool,
    items: VhdxItems,
    items_parsed: bool,
    bat: Option<EntryScanner<8>>,
    bat_stats: VhdxBatStats,
    params: Option<VhdxParams>,
    detection: Detection,
    virtual_size: Option<u64>,
    findings: Findings,
}

impl VhdxProbe {
    pub(crate) fn new(_limits: &Limits) -> Self {
        let [h1, h2] = VHDX_HEADER_OFFSETS;
        let [r1, r2] = VHDX_REGION_TABLE_OFFSETS;
        VhdxProbe {
            state: VhdxState::HeaderSection,
            ident: Capture::new(0, VHDX_SIGNATURE.len()),
            headers: [
                Capture::new(h1, VHDX_HEADER_LEN),
                Capture::new(h2, VHDX_HEADER_LEN),
            ],
            headers_parsed: false,
            region_tables: [
                Capture::new(r1, VHDX_TABLE_LEN),
                Capture::new(r2, VHDX_TABLE_LEN),
            ],
            regions: Vec::new(),
            bat_region: None,
            metadata_region: None,
            metadata_table: None,
            metadata_parsed: false,
            items: VhdxItems::default(),
            items_parsed: false,
            bat: None,
            bat_stats: VhdxBatStats::default(),
            params: None,
            detection: Detection::Pending,
            virtual_size: None,
            findings: Findings::default(),
        }
    }

    /// Records a structural error that ends the walk.
    fn stop(&mut self, code: ReasonCode, message: impl Into<String>) {
        self.findings.push(code, message);
        self.state = VhdxState::Done;
    }

    /// Chooses the active header (highest valid sequence number, as qemu does) and checks it.
    fn parse_headers(&mut self) {
        self.headers_parsed = true;
        let parse = |c: &Capture| {
            let h = c.bytes();
            let valid = h.get(header::SIGNATURE..4) == Some(b"head".as_slice())
                && vhdx_checksum_ok(h, header::CHECKSUM)
                && le_u16(h, header::VERSION) == Some(1);
            valid.then(|| le_u64(h, header::SEQUENCE_NUMBER).unwrap_or(0))
        };
        let [c1, c2] = &self.headers;
        let active = match (parse(c1), parse(c2)) {
            (None, None) => {
                self.stop(
                    ReasonCode::Corrupt,
                    "neither VHDX header (at 64 KiB and 128 KiB) has a valid signature, \
                     version and CRC-32C checksum",
                );
                return;
            }
            (Some(_), None) => c1,
            (None, Some(_)) => c2,
            (Some(s1), Some(s2)) if s1 > s2 => c1,
            (Some(s1), Some(s2)) if s2 > s1 => c2,
            _ if c1.bytes() == c2.bytes() => c1,
            _ => {
                self.stop(
                    ReasonCode::Corrupt,
                    "the two VHDX headers differ but have the same sequence number",
                );
                return;
            }
        };
        let h = active.bytes();
        let log_guid: [u8; 16] = array(h, header::LOG_GUID).unwrap_or([0; 16]);
        let log_length = le_u32(h, header::LOG_LENGTH).unwrap_or(0);
        let log_offset = le_u64(h, header::LOG_OFFSET).unwrap_or(0);
        if log_guid != [0; 16] {
            self.findings.push(
                ReasonCode::Dirty,
                format!(
                    "VHDX log must be replayed before import (active header's log GUID is {})",
                    vhdx_guid(&log_guid)
                ),
            );
        }
        self.regions.push(VhdxRegion {
            start: 0,
            end: VHDX_HEADER_SECTION_END,
            name: "the header section",
        });
        if log_length > 0 {
            let length = u64::from(log_length);
            if log_offset % MIB != 0 || length % MIB != 0 || log_offset < VHDX_HEADER_SECTION_END {
                self.stop(
                    ReasonCode::Corrupt,
                    format!(
                        "VHDX log region ({length} bytes at offset {log_offset}) is not 1 MiB \
                         aligned after the header section"
                    ),
                );
                return;
            }
            self.regions.push(VhdxRegion {
                start: log_offset,
                end: log_offset.saturating_add(length),
                name: "the log",
            });
        }
    }

    /// Checks the region tables and sets up the metadata capture and the BAT scan.
    fn parse_region_tables(&mut self) {
        let [t1, t2] = &self.region_tables;
        let valid = |t: &Capture| {
            t.bytes().get(region::SIGNATURE..4) == Some(b"regi".as_slice())
                && vhdx_checksum_ok(t.bytes(), region::CHECKSUM)
        };
        if !valid(t1) {
            self.stop(
                ReasonCode::Corrupt,
                "VHDX region table at 192 KiB has an invalid signature or CRC-32C checksum",
            );
            return;
        }
        if !valid(t2) {
            self.findings.push(
                ReasonCode::Corrupt,
                "VHDX backup region table at 256 KiB has an invalid signature or CRC-32C checksum",
            );
        }
        // Both tables have been checked: keep the first, free their buffers.
        let [t1, _] = std::mem::replace(
            &mut self.region_tables,
            [Capture::new(0, 0), Capture::new(0, 0)],
        );
        let table = t1.bytes();
        let count = le_u32(table, region::ENTRY_COUNT).unwrap_or(u32::MAX);
        if count > VHDX_MAX_REGION_ENTRIES {
            self.stop(
                ReasonCode::Corrupt,
                format!(
                    "VHDX region table has {count} entries, more than the maximum of \
                     {VHDX_MAX_REGION_ENTRIES}"
                ),
            );
            return;
        }
        let mut seen: Vec<(u64, u64)> = self.regions.iter().map(|r| (r.start, r.end)).collect();
        for i in 0..usize::try_from(count).unwrap_or(0) {
            let Some(e) = i
                .checked_mul(region::ENTRY_LEN)
                .and_then(|o| o.checked_add(region::ENTRIES))
            else {
                return;
            };
            let field = |off: usize| e.saturating_add(off);
            let (Some(guid), Some(offset), Some(length), Some(flags)) = (
                array::<16>(table, e),
                le_u64(table, field(region::E_FILE_OFFSET)),
                le_u32(table, field(region::E_LENGTH)),
                le_u32(table, field(region::E_FLAGS)),
            ) else {
                return;
            };
            let end = offset.saturating_add(u64::from(length));
            if offset % MIB != 0 || u64::from(length) % MIB != 0 || offset < VHDX_HEADER_SECTION_END
            {
                self.stop(
                    ReasonCode::Corrupt,
                    format!(
                        "VHDX region {} ({length} bytes at offset {offset}) is not 1 MiB \
                         aligned after the header section",
                        vhdx_guid(&guid)
                    ),
                );
                return;
            }
            if seen.iter().any(|&(s, e2)| offset < e2 && s < end) {
                self.stop(
                    ReasonCode::Corrupt,
                    format!(
                        "VHDX region {} at offset {offset} overlaps another region or the log",
                        vhdx_guid(&guid)
                    ),
                );
                return;
            }
            seen.push((offset, end));
            let slot = if guid == VHDX_BAT_GUID {
                &mut self.bat_region
            } else if guid == VHDX_METADATA_GUID {
                &mut self.metadata_region
            } else {
                if flags & region::REQUIRED != 0 {
                    self.findings.push(
                        ReasonCode::UnknownFeature,
                        format!(
                            "VHDX region table has a required region {} that Sluice does not \
                             know",
                            vhdx_guid(&guid)
                        ),
                    );
                }
                continue;
            };
            if slot.is_some() {
                self.stop(
                    ReasonCode::Corrupt,
                    format!("VHDX region table lists region {} twice", vhdx_guid(&guid)),
                );
                return;
            }
            *slot = Some((offset, length));
        }
        let (Some((bat_offset, bat_length)), Some((meta_offset, meta_length))) =
            (self.bat_region, self.metadata_region)
        else {
            self.stop(
                ReasonCode::Corrupt,
                "VHDX region table lacks the BAT or the metadata region",
            );
            return;
        };
        for (start, length, name) in [
            (bat_offset, bat_length, "the block allocation table"),
            (meta_offset, meta_length, "the metadata region"),
        ] {
            self.regions.push(VhdxRegion {
                start,
                end: start.saturating_add(u64::from(length)),
                name,
            });
        }
        if u64::from(meta_length) < VHDX_TABLE_LEN_U64 {
            self.stop(
                ReasonCode::Corrupt,
                format!("VHDX metadata region of {meta_length} bytes cannot hold its table"),
            );
            return;
        }
        self.metadata_table = Some(Capture::new(meta_offset, VHDX_TABLE_LEN));
        self.bat = EntryScanner::new(bat_offset, u64::from(bat_length / 8));
        self.state = VhdxState::Regions;
    }

    /// Checks the metadata table and sets up the captures of the items Sluice reads.
    fn parse_metadata_table(&mut self) {
        self.metadata_parsed = true;
        let (Some((meta_offset, meta_length)), Some(table)) = (
            self.metadata_region,
            self.metadata_table.replace(Capture::new(0, 0)),
        ) else {
            return;
        };
        let table = table.bytes();
        if table.get(..8) != Some(metadata::SIGNATURE.as_slice()) {
            self.stop(
                ReasonCode::Corrupt,
                format!("VHDX metadata table at offset {meta_offset} has no 'metadata' signature"),
            );
            return;
        }
        let count = le_u16(table, metadata::ENTRY_COUNT).unwrap_or(u16::MAX);
        if count > VHDX_MAX_METADATA_ENTRIES {
            self.stop(
                ReasonCode::Corrupt,
                format!(
                    "VHDX metadata table has {count} entries, more than the maximum of \
                     {VHDX_MAX_METADATA_ENTRIES}"
                ),
            );
            return;
        }
        /// The items Sluice reads: GUID, name, bytes needed.
        const KNOWN: [([u8; 16], &str, u32); 6] = [
            (VHDX_FILE_PARAMETERS_GUID, "File Parameters", 8),
            (VHDX_VIRTUAL_DISK_SIZE_GUID, "Virtual Disk Size", 8),
            (VHDX_PAGE83_GUID, "Page 83 Data", 16),
            (VHDX_LOGICAL_SECTOR_SIZE_GUID, "Logical Sector Size", 4),
            (VHDX_PHYSICAL_SECTOR_SIZE_GUID, "Physical Sector Size", 4),
            (VHDX_PARENT_LOCATOR_GUID, "Parent Locator", 0),
        ];
        let mut found: [Option<(u32, u32)>; 6] = [None; 6];
        for i in 0..usize::from(count) {
            let Some(e) = i
                .checked_mul(metadata::ENTRY_LEN)
                .and_then(|o| o.checked_add(metadata::ENTRIES))
            else {
                return;
            };
            let field = |off: usize| e.saturating_add(off);
            let (Some(guid), Some(offset), Some(length), Some(flags)) = (
                array::<16>(table, e),
                le_u32(table, field(metadata::E_OFFSET)),
                le_u32(table, field(metadata::E_LENGTH)),
                le_u32(table, field(metadata::E_FLAGS)),
            ) else {
                return;
            };
            let Some(k) = KNOWN.iter().position(|(g, _, _)| *g == guid) else {
                if flags & metadata::IS_REQUIRED != 0 {
                    self.findings.push(
                        ReasonCode::UnknownFeature,
                        format!(
                            "VHDX metadata has a required item {} that Sluice does not know",
                            vhdx_guid(&guid)
                        ),
                    );
                }
                continue;
            };
            let name = KNOWN.get(k).map_or("", |(_, n, _)| *n);
            let in_region =
                u64::from(offset).saturating_add(u64::from(length)) <= u64::from(meta_length);
            if length > VHDX_MAX_METADATA_ITEM_LEN
                || (length > 0 && (offset < metadata::MIN_ITEM_OFFSET || !in_region))
            {
                self.stop(
                    ReasonCode::Corrupt,
                    format!(
                        "VHDX metadata item {name} ({length} bytes at offset {offset}) lies \
                         outside the metadata region's item area"
                    ),
                );
                return;
            }
            let Some(slot) = found.get_mut(k) else {
                return;
            };
            if slot.is_some() {
                self.stop(
                    ReasonCode::Corrupt,
                    format!("VHDX metadata lists the {name} item twice"),
                );
                return;
            }
            *slot = Some((offset, length));
        }
        let mut captures: [Option<Capture>; 6] = Default::default();
        for (k, ((_, name, need), item)) in KNOWN.iter().zip(found).enumerate() {
            let Some((offset, length)) = item else {
                if *need > 0 {
                    self.stop(
                        ReasonCode::Corrupt,
                        format!("VHDX metadata lacks the required {name} item"),
                    );
                    return;
                }
                continue;
            };
            if length < *need {
                self.stop(
                    ReasonCode::Corrupt,
                    format!("VHDX metadata item {name} is {length} bytes, less than {need}"),
                );
                return;
            }
            let take = if *need > 0 {
                *need
            } else if length <= VHDX_MAX_PARENT_LOCATOR_LEN {
                length
            } else {
                0
            };
            let (Ok(take), Some(slot)) = (usize::try_from(take), captures.get_mut(k)) else {
                continue;
            };
            if take > 0 {
                *slot = Some(Capture::new(
                    meta_offset.saturating_add(u64::from(offset)),
                    take,
                ));
            }
        }
        let [file_parameters, virtual_disk_size, _page83, logical, physical, parent] = captures;
        self.items = VhdxItems {
            file_parameters,
            virtual_disk_size,
            logical_sector_size: logical,
            physical_sector_size: physical,
            has_parent_locator: found.get(5).is_some_and(Option::is_some),
            parent_locator: parent,
        };
    }

    /// Reads the metadata items: block size, virtual size, sector sizes, parent.
    fn parse_items(&mut self) {
        self.items_parsed = true;
        let read32 = |c: &Option<Capture>| c.as_ref().and_then(|c| le_u32(c.bytes(), 0));
        let (Some(block_size), Some(flags), Some(size), Some(logical), Some(physical)) = (
            read32(&self.items.file_parameters),
            self.items
                .file_parameters
                .as_ref()
                .and_then(|c| le_u32(c.bytes(), 4)),
            self.items
                .virtual_disk_size
                .as_ref()
                .and_then(|c| le_u64(c.bytes(), 0)),
            read32(&self.items.logical_sector_size),
            read32(&self.items.physical_sector_size),
        ) else {
            return;
        };
        let has_parent = flags & metadata::HAS_PARENT != 0;
        if has_parent {
            let parent = self
                .items
                .parent_locator
                .as_ref()
                .and_then(|c| vhdx_parent_path(c.bytes()));
            let message = match (parent, self.items.has_parent_locator) {
                (Some(p), _) => format!("differencing VHDX references parent image '{p}'"),
                (None, true) => "differencing VHDX references a parent image".to_owned(),
                (None, false) => {
                    "VHDX has the HasParent flag (a differencing disk) but no parent locator"
                        .to_owned()
                }
            };
            self.findings.push(ReasonCode::BackingFile, message);
        }
        if !block_size.is_power_of_two()
            || !(VHDX_MIN_BLOCK_SIZE..=VHDX_MAX_BLOCK_SIZE).contains(&block_size)
        {
            self.stop(
                ReasonCode::Corrupt,
                format!("VHDX block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
            );
            return;
        }
        for (what, v) in [("logical", logical), ("physical", physical)] {
            if v != 512 && v != 4096 {
                self.stop(
                    ReasonCode::Corrupt,
                    format!("VHDX {what} sector size {v} is neither 512 nor 4096"),
                );
                return;
            }
        }
        if size == 0 || size > VHDX_MAX_VIRTUAL_SIZE {
            self.stop(
                ReasonCode::Corrupt,
                format!("VHDX virtual disk size {size} is not between 1 byte and 64 TiB"),
            );
            return;
        }
        // qemu: total_sectors = virtual_disk_size >> log2(logical sector size).
        let logical = u64::from(logical);
        let virtual_size = size
            .checked_div(logical)
            .map_or(0, |n| n.saturating_mul(logical));
        self.virtual_size = Some(virtual_size);
        let block_size = u64::from(block_size);
        // 2^23 × 4096 / 1 MiB at most: no overflow, never zero (block size ≤ 256 MiB).
        let chunk_ratio = VHDX_SECTORS_PER_BITMAP
            .saturating_mul(logical)
            .checked_div(block_size)
            .unwrap_or(1)
            .max(1);
        let data_blocks = size.div_ceil(block_size);
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        let bat_entries = if has_parent {
            bitmap_blocks.saturating_mul(chunk_ratio.saturating_add(1))
        } else {
            data_blocks.saturating_add(
                data_blocks
                    .saturating_sub(1)
                    .checked_div(chunk_ratio)
                    .unwrap_or(0),
            )
        };
        let bat_capacity = self.bat_region.map_or(0, |(_, len)| u64::from(len) / 8);
        if bat_entries > bat_capacity {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "VHDX block allocation table holds {bat_capacity} entries but the disk \
                     needs {bat_entries}"
                ),
            );
        }
        self.params = Some(VhdxParams {
            block_size,
            virtual_size,
            has_parent,
            bat_entries,
        });
    }

    /// Checks one BAT entry; what needs the block size is kept in `stats` for later.
    fn on_bat_entry(
        regions: &[VhdxRegion],
        stats: &mut VhdxBatStats,
        findings: &mut Findings,
        index: u64,
        entry: u64,
    ) {
        let st = u8::try_from(entry & VHDX_BAT_STATE_MASK).unwrap_or(u8::MAX);
        match st {
            state::NOT_PRESENT
            | state::UNDEFINED
            | state::ZERO
            | state::UNMAPPED
            | state::UNMAPPED_V095 => return,
            state::FULLY_PRESENT => {}
            state::PARTIALLY_PRESENT => {
                stats.first_partial.get_or_insert(index);
            }
            _ => {
                stats.first_bad_state.get_or_insert((index, st));
                return;
            }
        }
        let offset = entry & VHDX_BAT_OFFSET_MASK;
        if stats.last_block.is_none_or(|(o, _)| offset > o) {
            stats.last_block = Some((offset, index));
        }
        for (r, below) in regions.iter().zip(stats.below.iter_mut()) {
            if offset >= r.start && offset < r.end {
                findings.push(
                    ReasonCode::Corrupt,
                    format!(
                        "VHDX BAT entry {index} places a block at offset {offset}, inside {}",
                        r.name
                    ),
                );
            } else if offset < r.start {
                *below = Some(below.map_or(offset, |b| b.max(offset)));
            }
        }
    }

    /// End-of-stream checks that need both the BAT scan and the metadata.
    fn finish_bat(&mut self, stream_len: u64) {
        let Some(p) = self.params else {
            return;
        };
        if let Some((index, st)) = self.bat_stats.first_bad_state {
            if index < p.bat_entries {
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!("VHDX BAT entry {index} has the invalid state {st}"),
                );
            }
        }
        if let Some(index) = self.bat_stats.first_partial {
            if !p.has_parent {
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!(
                        "VHDX BAT entry {index} is partially present, which only a \
                         differencing disk may be"
                    ),
                );
            }
        }
        for (r, below) in self.regions.iter().zip(self.bat_stats.below) {
            if let Some(start) = below {
                if start.saturating_add(p.block_size) > r.start {
                    self.findings.push(
                        ReasonCode::Corrupt,
                        format!(
                            "VHDX block at offset {start} ({} bytes) overlaps {}",
                            p.block_size, r.name
                        ),
                    );
                }
            }
        }
        if let Some((offset, index)) = self.bat_stats.last_block {
            // Like qemu, the last block may exist only partially in the file.
            let done = index.saturating_mul(p.block_size);
            let length = if done < p.virtual_size {
                p.block_size.min(p.virtual_size.saturating_sub(done))
            } else {
                p.block_size
            };
            let end = offset.saturating_add(length);
            if end > stream_len {
                self.findings.push(
                    ReasonCode::Truncated,
                    format!(
                        "VHDX block of BAT entry {index} ends at offset {end} but the stream holds \
                         only {stream_len} bytes"
                    ),
                );
            }
        }
    }
}

impl VhdxProbe {
    /// Whether structures are still expected.
    fn active(&self) -> bool {
        self.detection == Detection::Pending
            || (self.detection == Detection::Yes(Format::Vhdx) && self.state != VhdxState::Done)
    }

    /// Collects and checks the structures, in stream order.
    fn feed_structures(&mut self, pos: u64, data: &[u8]) {
        if self.detection == Detection::Pending {
            if !self.ident.feed(pos, data) {
                return;
            }
            if self.ident.bytes() == VHDX_SIGNATURE {
                self.detection = Detection::Yes(Format::Vhdx);
            } else {
                self.detection = Detection::No;
                return;
            }
        }
        if self.state == VhdxState::HeaderSection {
            let [h1, h2] = &mut self.headers;
            let headers_done = h1.feed(pos, data) & h2.feed(pos, data);
            if headers_done && !self.headers_parsed {
                self.parse_headers();
            }
            if self.state != VhdxState::HeaderSection {
                return;
            }
            let [t1, t2] = &mut self.region_tables;
            if t1.feed(pos, data) & t2.feed(pos, data) && self.headers_parsed {
                self.parse_region_tables();
            }
        }
        if self.state == VhdxState::Regions {
            if let Some(t) = self.metadata_table.as_mut() {
                if t.feed(pos, data) && !self.metadata_parsed {
                    self.parse_metadata_table();
                }
            }
            let mut all = self.metadata_parsed;
            for item in self.items.all() {
                all &= item.feed(pos, data);
            }
            if all && !self.items_parsed && self.state == VhdxState::Regions {
                self.parse_items();
            }
            if let Some(scanner) = self.bat.as_mut() {
                let regions = &self.regions;
                let stats = &mut self.bat_stats;
                let findings = &mut self.findings;
                scanner.feed(pos, data, |index, entry| {
                    Self::on_bat_entry(regions, stats, findings, index, u64::from_le_bytes(*entry));
                });
            }
            let end = pos.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
            if self.items_parsed && self.bat.as_ref().is_none_or(|s| s.is_done(end)) {
                self.state = VhdxState::Done;
            }
        }
    }
}

impl Probe for VhdxProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Vhdx]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        self.feed_structures(pos, data);
    }

    fn finish(&mut self, tail: &Tail) {
        if self.detection == Detection::Pending {
            self.detection = Detection::No;
        }
        if self.detection != Detection::Yes(Format::Vhdx) {
            return;
        }
        let len = tail.stream_len();
        let missing = match self.state {
            VhdxState::HeaderSection => Some("its header section (1 MiB)".to_owned()),
            VhdxState::Regions => {
                let end = |c: &Option<Capture>| c.as_ref().map_or(0, Capture::end);
                if !self
                    .metadata_table
                    .as_ref()
                    .is_some_and(Capture::is_complete)
                {
                    Some(format!(
                        "its metadata table (ending at {})",
                        end(&self.metadata_table)
                    ))
                } else if !self.items_parsed {
                    Some("its metadata items".to_owned())
                } else {
                    let bat_end = self.bat.as_ref().map_or(0, EntryScanner::end);
                    Some(format!(
                        "the end of its block allocation table at {bat_end}"
                    ))
                }
            }
            VhdxState::Done => None,
        };
        if let Some(what) = missing {
            self.findings.push(
                ReasonCode::Truncated,
                format!("VHDX stream ends at {len} before {what}"),
            );
            return;
        }
        self.finish_bat(len);
    }

    fn detection(&self) -> Detection {
        self.detection
    }

    /// True while structures are expected (a fixed VHD's footer comes from the tail).
    fn wants(&self, _pos: u64) -> bool {
        self.active()
    }

    fn virtual_size(&self) -> Option<u64> {
        self.virtual_size
    }

    fn findings(&self) -> &[Reason] {
        self.findings.as_slice()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::{inspect_bytes, Report};

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
                h[header::SEQUENCE_NUMBER..][..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                h[header::VERSION..][..2].copy_from_slice(&1u16.to_le_bytes());
                seal(h, header::CHECKSUM);
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
            img[m + metadata::ENTRY_COUNT..][..2]
                .copy_from_slice(&(items.len() as u16).to_le_bytes());
            let mut next = 64 << 10;
            for (i, (guid, data, flags)) in items.iter().enumerate() {
                let e = m + metadata::ENTRIES + i * metadata::ENTRY_LEN;
                img[e..e + 16].copy_from_slice(guid);
                img[e + metadata::E_OFFSET..][..4].copy_from_slice(&(next as u32).to_le_bytes());
                img[e + metadata::E_LENGTH..][..4]
                    .copy_from_slice(&(data.len() as u32).to_le_bytes());
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
}
