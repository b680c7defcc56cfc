//! The VHDX inspector: the header section, region tables, metadata and BAT as they stream past.

use super::header::*;
use crate::probe::{Detection, Findings, Probe};
use crate::stream::{array, le_u16, le_u32, le_u64, Capture, EntryScanner, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

/// A region of the file that payload blocks must not overlap.
#[derive(Debug, Clone, Copy)]
pub(super) struct VhdxRegion {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) name: &'static str,
}

/// The regions payload blocks are checked against: header section, log, BAT, metadata.
pub(super) const VHDX_TRACKED_REGIONS: usize = 4;

/// What the BAT scan learnt, for the checks that need the metadata (read later).
#[derive(Debug, Default)]
pub(super) struct VhdxBatStats {
    /// The first entry with a state no payload or bitmap entry may have: (index, state).
    pub(super) first_bad_state: Option<(u64, u8)>,
    /// The first partially present block.
    pub(super) first_partial: Option<u64>,
    /// The present block with the largest file offset: (offset, index).
    pub(super) last_block: Option<(u64, u64)>,
    /// Per tracked region, the largest present-block offset below its start.
    pub(super) below: [Option<u64>; VHDX_TRACKED_REGIONS],
}

/// The metadata items Sluice reads, captured when they stream past.
#[derive(Debug, Default)]
pub(super) struct VhdxItems {
    pub(super) file_parameters: Option<Capture>,
    pub(super) virtual_disk_size: Option<Capture>,
    pub(super) logical_sector_size: Option<Capture>,
    pub(super) physical_sector_size: Option<Capture>,
    pub(super) parent_locator: Option<Capture>,
    /// Whether a parent locator item exists (captured or not).
    pub(super) has_parent_locator: bool,
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
pub(super) struct VhdxParams {
    pub(super) block_size: u64,
    pub(super) virtual_size: u64,
    pub(super) has_parent: bool,
    /// BAT entries the disk needs (qemu's `vhdx_calc_bat_entries`).
    pub(super) bat_entries: u64,
}

/// Where the probe is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VhdxState {
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
    pub(super) state: VhdxState,
    pub(super) ident: Capture,
    pub(super) headers: [Capture; 2],
    pub(super) headers_parsed: bool,
    pub(super) region_tables: [Capture; 2],
    /// Header section, log, BAT and metadata regions, once known.
    pub(super) regions: Vec<VhdxRegion>,
    pub(super) bat_region: Option<(u64, u32)>,
    pub(super) metadata_region: Option<(u64, u32)>,
    pub(super) metadata_table: Option<Capture>,
    pub(super) metadata_parsed: bool,
    pub(super) items: VhdxItems,
    pub(super) items_parsed: bool,
    pub(super) bat: Option<EntryScanner<8>>,
    pub(super) bat_stats: VhdxBatStats,
    pub(super) params: Option<VhdxParams>,
    pub(super) detection: Detection,
    pub(super) virtual_size: Option<u64>,
    pub(super) findings: Findings,
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
            let valid = h.get(head::SIGNATURE..4) == Some(b"head".as_slice())
                && vhdx_checksum_ok(h, head::CHECKSUM)
                && le_u16(h, head::VERSION) == Some(1);
            valid.then(|| le_u64(h, head::SEQUENCE_NUMBER).unwrap_or(0))
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
        let log_guid: [u8; 16] = array(h, head::LOG_GUID).unwrap_or([0; 16]);
        let log_length = le_u32(h, head::LOG_LENGTH).unwrap_or(0);
        let log_offset = le_u64(h, head::LOG_OFFSET).unwrap_or(0);
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
    pub(super) fn finish_bat(&mut self, stream_len: u64) {
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
