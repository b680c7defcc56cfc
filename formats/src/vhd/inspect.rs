//! The VHD inspector: footer copy, dynamic header and BAT as they stream past, the footer at
//! the end.

use super::header::*;
use crate::probe::{Detection, Findings, Probe};
use crate::stream::{be_u32, be_u64, Capture, EntryScanner, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

/// Where the probe is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VhdState {
    /// Collecting the first sector.
    Footer,
    /// No footer copy at offset 0: a fixed VHD or nothing, decided from the tail at finish.
    MaybeFixed,
    /// A dynamic or differencing VHD waiting for its dynamic header.
    DynHeader,
    /// Scanning the BAT as it streams past.
    Bat,
    /// Every structure before the data has been seen (or an error stopped the walk).
    Done,
}

/// The layout of a dynamic VHD, from its dynamic header.
#[derive(Debug, Clone, Copy)]
pub(super) struct VhdLayout {
    /// The dynamic header's offset (footer field).
    data_offset: u64,
    /// The BAT: `[bat_offset, bat_end)`.
    bat_offset: u64,
    bat_end: u64,
    /// Bytes of one block's sector bitmap (qemu: `block_size / 4096` rounded up to a sector).
    bitmap_size: u64,
    block_size: u64,
}

impl VhdLayout {
    /// The metadata structure a block `[start, end)` overlaps, if any.
    fn overlap(&self, start: u64, end: u64) -> Option<&'static str> {
        let hits = |s: u64, e: u64| start < e && s < end;
        if hits(0, VHD_FOOTER_LEN_U64) {
            Some("the footer copy at offset 0")
        } else if hits(
            self.data_offset,
            self.data_offset.saturating_add(VHD_DYN_HEADER_LEN_U64),
        ) {
            Some("the dynamic header")
        } else if hits(self.bat_offset, self.bat_end) {
            Some("the block allocation table")
        } else {
            None
        }
    }
}

/// Recognises VHD images (dynamic, differencing and fixed) and checks their metadata.
#[derive(Debug)]
pub(crate) struct VhdProbe {
    state: VhdState,
    head: Capture,
    footer: Option<VhdFooter>,
    dyn_header: Option<Capture>,
    layout: Option<VhdLayout>,
    bat: Option<EntryScanner<4>>,
    /// One past the last byte of metadata or data the BAT references (qemu's
    /// `free_data_block_offset`).
    data_end: u64,
    detection: Detection,
    virtual_size: Option<u64>,
    findings: Findings,
}

impl VhdProbe {
    pub(crate) fn new(_limits: &Limits) -> Self {
        VhdProbe {
            state: VhdState::Footer,
            head: Capture::new(0, VHD_FOOTER_LEN),
            footer: None,
            dyn_header: None,
            layout: None,
            bat: None,
            data_end: 0,
            detection: Detection::Pending,
            virtual_size: None,
            findings: Findings::default(),
        }
    }

    /// Checks the footer copy at offset 0 of a dynamic or differencing image.
    fn on_head_footer(&mut self) {
        let Some(f) = VhdFooter::parse(self.head.bytes()) else {
            self.state = VhdState::MaybeFixed;
            return;
        };
        self.detection = Detection::Yes(Format::Vhd);
        self.state = VhdState::Done;
        self.check_footer(&f, "at offset 0");
        match f.disk_type {
            VhdDiskType::Dynamic | VhdDiskType::Differencing => {}
            VhdDiskType::Fixed => {
                self.findings.push(
                    ReasonCode::Corrupt,
                    "VHD footer copy at offset 0 declares a fixed disk, which has no such copy",
                );
                self.footer = Some(f);
                return;
            }
            VhdDiskType::Other(t) => {
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!("VHD disk type {t} is not fixed (2), dynamic (3) or differencing (4)"),
                );
                self.footer = Some(f);
                return;
            }
        }
        if f.data_offset < VHD_FOOTER_LEN_U64 {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "VHD dynamic header offset {} overlaps the footer copy at offset 0",
                    f.data_offset
                ),
            );
        } else if f.data_offset == u64::MAX {
            self.findings.push(
                ReasonCode::Corrupt,
                "dynamic VHD footer has no dynamic header offset",
            );
        } else {
            self.dyn_header = Some(Capture::new(f.data_offset, VHD_DYN_HEADER_LEN));
            self.state = VhdState::DynHeader;
        }
        self.footer = Some(f);
    }

    /// Checks that apply to any footer: checksum and size.
    fn check_footer(&mut self, f: &VhdFooter, where_: &str) {
        if !f.checksum_ok {
            self.findings.push(
                ReasonCode::Corrupt,
                format!("VHD footer {where_} has an invalid checksum"),
            );
        }
        let sectors = f.sectors();
        if sectors > VHD_MAX_SECTORS {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "VHD virtual size of {sectors} sectors exceeds the format's maximum of \
                     {VHD_MAX_SECTORS} sectors (2040 GiB)"
                ),
            );
        }
        self.virtual_size = Some(vhd_virtual_size(f));
    }

    /// Checks the dynamic header and sets up the BAT scan.
    fn on_dyn_header(&mut self) {
        self.state = VhdState::Done;
        let (Some(cap), Some(f)) = (self.dyn_header.as_ref(), self.footer.as_ref()) else {
            return;
        };
        let h = cap.bytes();
        let data_offset = cap.start();
        if f.disk_type == VhdDiskType::Differencing {
            let has_cookie = h.get(dyn_header::COOKIE..8) == Some(VHD_DYN_HEADER_COOKIE.as_slice());
            let name = h
                .get(dyn_header::PARENT_NAME..dyn_header::PARENT_NAME + dyn_header::PARENT_NAME_LEN)
                .filter(|_| has_cookie)
                .map(vhd_utf16be_name)
                .unwrap_or_default();
            let message = if name.is_empty() {
                "differencing VHD references a parent image".to_owned()
            } else {
                format!("differencing VHD references parent image '{name}'")
            };
            self.findings.push(ReasonCode::BackingFile, message);
        }
        if h.get(dyn_header::COOKIE..8) != Some(VHD_DYN_HEADER_COOKIE.as_slice()) {
            self.findings.push(
                ReasonCode::Corrupt,
                format!("VHD has no dynamic header (cxsparse) at offset {data_offset}"),
            );
            return;
        }
        if vhd_checksum(h, dyn_header::CHECKSUM) != be_u32(h, dyn_header::CHECKSUM) {
            self.findings.push(
                ReasonCode::Corrupt,
                "VHD dynamic header has an invalid checksum",
            );
        }
        let (Some(bat_offset), Some(entries), Some(block_size)) = (
            be_u64(h, dyn_header::TABLE_OFFSET),
            be_u32(h, dyn_header::MAX_TABLE_ENTRIES),
            be_u32(h, dyn_header::BLOCK_SIZE),
        ) else {
            return;
        };
        if !block_size.is_power_of_two() || block_size < VHD_MIN_BLOCK_SIZE {
            self.findings.push(
                ReasonCode::Corrupt,
                format!("VHD block size {block_size} is not a power of two of at least 512"),
            );
            return;
        }
        if block_size > VHD_MAX_BLOCK_SIZE {
            self.findings.push(
                ReasonCode::LimitExceeded,
                format!(
                    "VHD block size {block_size} exceeds Sluice's limit of {VHD_MAX_BLOCK_SIZE}"
                ),
            );
            return;
        }
        if entries > VHD_MAX_TABLE_ENTRIES {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "VHD block allocation table has {entries} entries, more than qemu's limit \
                     of {VHD_MAX_TABLE_ENTRIES}"
                ),
            );
            return;
        }
        let block_size = u64::from(block_size);
        let covered = u64::from(entries).saturating_mul(block_size);
        let virtual_size = vhd_virtual_size(f);
        if covered < virtual_size {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "VHD block allocation table of {entries} blocks of {block_size} bytes \
                     covers less than the virtual size of {virtual_size} bytes"
                ),
            );
            return;
        }
        let header_end = data_offset.saturating_add(VHD_DYN_HEADER_LEN_U64);
        if bat_offset < header_end {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "VHD block allocation table at offset {bat_offset} does not follow the \
                     dynamic header (which ends at {header_end})"
                ),
            );
            return;
        }
        let Some(scanner) = EntryScanner::<4>::new(bat_offset, u64::from(entries)) else {
            self.findings.push(
                ReasonCode::Corrupt,
                format!("VHD block allocation table at offset {bat_offset} overflows"),
            );
            return;
        };
        let bat_end = scanner.end();
        // qemu: ((block_size / (8 * 512)) + 511) & ~511.
        let bitmap_size =
            (block_size / (8 * VHD_SECTOR)).saturating_add(VHD_SECTOR - 1) & !(VHD_SECTOR - 1);
        self.layout = Some(VhdLayout {
            data_offset,
            bat_offset,
            bat_end,
            bitmap_size,
            block_size,
        });
        self.data_end = bat_end.saturating_add(VHD_SECTOR - 1) & !(VHD_SECTOR - 1);
        self.bat = Some(scanner);
        self.state = VhdState::Bat;
    }

    /// Checks one BAT entry.
    fn on_bat_entry(
        layout: &VhdLayout,
        data_end: &mut u64,
        findings: &mut Findings,
        index: u64,
        entry: u32,
    ) {
        if entry == VHD_BAT_UNALLOCATED {
            return;
        }
        let start = u64::from(entry).saturating_mul(VHD_SECTOR);
        let end = start
            .saturating_add(layout.bitmap_size)
            .saturating_add(layout.block_size);
        if let Some(what) = layout.overlap(start, end) {
            findings.push(
                ReasonCode::Corrupt,
                format!("VHD block {index} at offset {start} overlaps {what}"),
            );
        }
        *data_end = (*data_end).max(end);
    }

    /// End-of-stream checks of a dynamic or differencing image.
    fn finish_dynamic(&mut self, tail: &Tail) {
        let len = tail.stream_len();
        match self.state {
            VhdState::DynHeader => {
                if self.footer.as_ref().map(|f| f.disk_type) == Some(VhdDiskType::Differencing) {
                    self.findings.push(
                        ReasonCode::BackingFile,
                        "differencing VHD references a parent image",
                    );
                }
                let at = self.dyn_header.as_ref().map_or(0, Capture::start);
                self.findings.push(
                    ReasonCode::Truncated,
                    format!("VHD stream ends at {len} before its dynamic header at offset {at}"),
                );
                return;
            }
            VhdState::Bat => {
                let end = self.layout.map_or(0, |l| l.bat_end);
                self.findings.push(
                    ReasonCode::Truncated,
                    format!(
                        "VHD stream ends at {len} before the end of its block allocation table \
                         at {end}"
                    ),
                );
                return;
            }
            _ => {}
        }
        if self.layout.is_none() {
            return;
        }
        let needed = self.data_end.saturating_add(VHD_FOOTER_LEN_U64);
        if needed > len {
            self.findings.push(
                ReasonCode::Truncated,
                format!(
                    "VHD data ends at offset {} but the stream holds only {len} bytes \
                     (including the 512-byte footer)",
                    self.data_end
                ),
            );
            return;
        }
        let Some(end_footer) = VhdFooter::parse(tail.last(VHD_FOOTER_LEN)) else {
            self.findings.push(
                ReasonCode::Truncated,
                "VHD stream does not end with the VHD footer",
            );
            return;
        };
        if !end_footer.checksum_ok {
            self.findings.push(
                ReasonCode::Corrupt,
                "VHD footer at end of stream has an invalid checksum",
            );
        }
        if let Some(head) = &self.footer {
            let field = if head.disk_type != end_footer.disk_type {
                Some("disk type")
            } else if head.current_size != end_footer.current_size {
                Some("current size")
            } else if (head.cylinders, head.heads, head.sectors_per_track)
                != (
                    end_footer.cylinders,
                    end_footer.heads,
                    end_footer.sectors_per_track,
                )
            {
                Some("geometry")
            } else if head.creator_app != end_footer.creator_app {
                Some("creator application")
            } else if head.data_offset != end_footer.data_offset {
                Some("data offset")
            } else if head.unique_id != end_footer.unique_id {
                Some("unique id")
            } else {
                None
            };
            if let Some(field) = field {
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!(
                        "VHD footer at end of stream differs from the copy at offset 0 ({field})"
                    ),
                );
            }
        }
    }

    /// End-of-stream decision for a stream without a footer copy at offset 0.
    fn finish_maybe_fixed(&mut self, tail: &Tail) {
        let len = tail.stream_len();
        let Some(f) = (len >= VHD_FOOTER_LEN_U64)
            .then(|| VhdFooter::parse(tail.last(VHD_FOOTER_LEN)))
            .flatten()
        else {
            self.detection = Detection::No;
            return;
        };
        self.detection = Detection::Yes(Format::Vhd);
        self.check_footer(&f, "at end of stream");
        match f.disk_type {
            VhdDiskType::Fixed => {
                let data = len.saturating_sub(VHD_FOOTER_LEN_U64);
                let size = vhd_virtual_size(&f);
                if size > data {
                    self.findings.push(
                        ReasonCode::Truncated,
                        format!(
                            "fixed VHD declares {size} bytes but holds only {data} bytes before \
                             its footer"
                        ),
                    );
                }
            }
            other => {
                // qemu refuses this ("invalid VPC image"); other readers might follow the
                // footer, so it is neither safely raw nor a usable VHD.
                let t = match other {
                    VhdDiskType::Dynamic => 3,
                    VhdDiskType::Differencing => 4,
                    VhdDiskType::Other(t) => t,
                    VhdDiskType::Fixed => 2,
                };
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!(
                        "VHD footer at end of stream declares disk type {t} but there is no \
                         footer copy at offset 0"
                    ),
                );
            }
        }
    }
}

impl VhdProbe {
    /// Collects and checks the structures before the data, in stream order.
    fn feed_structures(&mut self, pos: u64, data: &[u8]) {
        if self.state == VhdState::Footer {
            if !self.head.feed(pos, data) {
                return;
            }
            self.on_head_footer();
        }
        if self.state == VhdState::DynHeader {
            let done = self.dyn_header.as_mut().is_some_and(|c| c.feed(pos, data));
            if !done {
                return;
            }
            self.on_dyn_header();
        }
        if self.state == VhdState::Bat {
            let (Some(scanner), Some(layout)) = (self.bat.as_mut(), self.layout.as_ref()) else {
                self.state = VhdState::Done;
                return;
            };
            let data_end = &mut self.data_end;
            let findings = &mut self.findings;
            scanner.feed(pos, data, |index, entry| {
                Self::on_bat_entry(
                    layout,
                    data_end,
                    findings,
                    index,
                    u32::from_be_bytes(*entry),
                );
            });
            let data_len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if scanner.is_done(pos.saturating_add(data_len)) {
                self.state = VhdState::Done;
            }
        }
    }

    /// Whether structures are still expected.
    fn active(&self) -> bool {
        matches!(
            self.state,
            VhdState::Footer | VhdState::DynHeader | VhdState::Bat
        )
    }
}

impl Probe for VhdProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Vhd]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        self.feed_structures(pos, data);
    }

    fn finish(&mut self, tail: &Tail) {
        match self.state {
            VhdState::Footer => {
                // Shorter than one sector: neither a footer copy nor a footer fits.
                self.detection = Detection::No;
            }
            VhdState::MaybeFixed => self.finish_maybe_fixed(tail),
            VhdState::DynHeader | VhdState::Bat | VhdState::Done => self.finish_dynamic(tail),
        }
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
