//! VHD (Virtual PC / Hyper-V; qemu's `vpc`): big-endian, a 512-byte footer at the end of the
//! file and, for dynamic and differencing disks, a copy of it at offset 0 followed by a
//! 1024-byte dynamic header and a block allocation table (BAT).
//!
//! - Dynamic and differencing images are recognised from the footer copy at offset 0; the
//!   dynamic header and the BAT are checked as they stream past and the footer at the end of
//!   the stream must be present and agree with the copy.
//! - A fixed image is a raw disk followed by a footer: like qemu, it is only recognised at end
//!   of stream (a footer of disk type 2 in the last 512 bytes), so even a raw disk whose last
//!   sector happens to be such a footer is a VHD.
//! - The virtual size is computed as qemu's `vpc` driver does (see [`vhd_virtual_size`]).

pub(crate) mod convert;

use crate::probe::{Detection, Findings, Probe};
use crate::stream::{be_u16, be_u32, be_u64, Capture, EntryScanner, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

/// The footer (and its copy at offset 0) is one 512-byte sector.
const VHD_FOOTER_LEN: usize = 512;
/// [`VHD_FOOTER_LEN`] as a stream offset.
const VHD_FOOTER_LEN_U64: u64 = 512;
/// The footer's cookie.
const VHD_FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// The dynamic disk header is 1024 bytes.
const VHD_DYN_HEADER_LEN: usize = 1024;
/// [`VHD_DYN_HEADER_LEN`] as a stream offset.
const VHD_DYN_HEADER_LEN_U64: u64 = 1024;
/// The dynamic disk header's cookie.
const VHD_DYN_HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// A BAT entry for a block that is not allocated.
const VHD_BAT_UNALLOCATED: u32 = 0xFFFF_FFFF;
/// VHD sectors (BAT entries count them, sizes are multiples of them) are 512 bytes.
const VHD_SECTOR: u64 = 512;

/// qemu's `VHD_MAX_SECTORS`: images larger than 2040 GiB are refused (`-EFBIG`), the
/// specification's maximum VHD size.
const VHD_MAX_SECTORS: u64 = 0xff00_0000;
/// qemu's `VHD_MAX_GEOMETRY` (65535 cylinders × 16 heads × 255 sectors): a footer with this
/// geometry cannot describe the disk, so qemu uses the footer's current size instead.
const VHD_MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// The smallest block size qemu accepts (one sector).
const VHD_MIN_BLOCK_SIZE: u32 = 512;
/// Sluice's cap on a dynamic VHD's block size: 256 MiB, 128 times the specification's 2 MiB
/// default (Hyper-V writes 2 MiB or 512 KiB, qemu 2 MiB) and the largest VHDX block size.
const VHD_MAX_BLOCK_SIZE: u32 = 256 << 20;
/// qemu refuses a BAT with more than `INT_MAX / 4` entries ("Max Table Entries too large").
const VHD_MAX_TABLE_ENTRIES: u32 = 0x1FFF_FFFF;
/// Creator applications whose images qemu sizes by their CHS geometry (qemu's
/// `vpc_ignore_current_size`, qemu 10.0): Virtual PC and qemu before `force_size`. Every other
/// creator (`win `, `qem2`, `d2v `, `CTXS`, `tap\0`, `wa\0\0`, ...) is sized by the footer's
/// current size.
const VHD_CHS_CREATORS: [&[u8; 4]; 2] = [b"vpc ", b"qemu"];

/// Field offsets in the footer.
mod footer {
    pub(super) const COOKIE: usize = 0;
    pub(super) const DATA_OFFSET: usize = 16;
    pub(super) const CREATOR_APP: usize = 28;
    pub(super) const CURRENT_SIZE: usize = 48;
    pub(super) const CYLINDERS: usize = 56;
    pub(super) const HEADS: usize = 58;
    pub(super) const SECTORS_PER_TRACK: usize = 59;
    pub(super) const DISK_TYPE: usize = 60;
    pub(super) const CHECKSUM: usize = 64;
    pub(super) const UNIQUE_ID: usize = 68;
}

/// Field offsets in the dynamic disk header.
mod dyn_header {
    pub(super) const COOKIE: usize = 0;
    pub(super) const TABLE_OFFSET: usize = 16;
    pub(super) const MAX_TABLE_ENTRIES: usize = 28;
    pub(super) const BLOCK_SIZE: usize = 32;
    pub(super) const CHECKSUM: usize = 36;
    /// The parent's name, UTF-16BE, NUL-padded.
    pub(super) const PARENT_NAME: usize = 64;
    pub(super) const PARENT_NAME_LEN: usize = 512;
}

/// A VHD's disk type (footer offset 60).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VhdDiskType {
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
    fn from_u32(v: u32) -> Self {
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
struct VhdFooter {
    data_offset: u64,
    creator_app: [u8; 4],
    current_size: u64,
    cylinders: u16,
    heads: u8,
    sectors_per_track: u8,
    disk_type: VhdDiskType,
    unique_id: [u8; 16],
    checksum_ok: bool,
}

impl VhdFooter {
    /// Parses a footer; `None` unless `buf` is 512 bytes starting with `conectix`.
    fn parse(buf: &[u8]) -> Option<Self> {
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
    fn sectors(&self) -> u64 {
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
fn vhd_virtual_size(f: &VhdFooter) -> u64 {
    f.sectors().saturating_mul(VHD_SECTOR)
}

/// VHD's checksum of a structure: the one's complement of the sum of its bytes, with the
/// checksum field at `checksum_at` read as zero.
fn vhd_checksum(buf: &[u8], checksum_at: usize) -> Option<u32> {
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
fn vhd_utf16be_name(buf: &[u8]) -> String {
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

/// Where the probe is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VhdState {
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
struct VhdLayout {
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

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::{inspect_bytes, Report};

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
}
