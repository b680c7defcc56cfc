//! Partition tables: classic MBR and GPT behind a protective MBR.
//!
//! Both live inside a raw disk (qemu-img reports `raw`), so the inspector takes the stream
//! length as the virtual size; this probe only checks that the table is well formed and fits
//! in the stream.
//!
//! * MBR (sector 0): `55 AA` at 510, four 16-byte entries at 446 (boot flag, start CHS, type,
//!   end CHS, LE u32 start LBA, LE u32 sector count). A FAT volume boot record carries the same
//!   signature and is not a partition table. The entry checks are oslo.utils'
//!   `check_mbr_partitions`: boot flags 0x00/0x80; a protective (type 0xEE) entry only alone,
//!   in slot 0, starting at CHS 0/0/2 and LBA 1; at least one partition.
//! * GPT (UEFI 2.x §5.3): header `EFI PART` at LBA 1 (512- or 4096-byte sectors) with a CRC32
//!   over its `header_size` bytes; a partition entry array with its own CRC32; every partition
//!   inside the usable LBAs; a backup header at the LBA the primary names, which must exist.

use crc::{Crc, Digest, CRC_32_ISO_HDLC};

use crate::probe::{Detection, Findings, Probe};
use crate::stream::{intersect, le_u16, le_u32, le_u64, Capture, Tail};
use crate::{Format, Reason, ReasonCode};

/// The MBR is sector 0.
const MBR_LEN: usize = 512;
/// Offset of the MBR boot signature `55 AA` (LE u16 0xAA55).
const MBR_SIGNATURE_OFFSET: usize = 510;
/// The MBR boot signature as a little-endian u16.
const MBR_SIGNATURE: u16 = 0xAA55;
/// Offset of the first MBR partition entry.
const MBR_ENTRIES_OFFSET: usize = 446;
/// Size of one MBR partition entry.
const MBR_ENTRY_LEN: usize = 16;
/// Number of primary MBR partition entries.
const MBR_ENTRY_COUNT: usize = 4;
/// The MBR addresses 512-byte sectors.
const MBR_SECTOR: u64 = 512;
/// MBR partition type of a GPT protective entry.
const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xEE;
/// The start CHS (head, sector, cylinder bytes) a protective entry must carry: LBA 1.
const MBR_PROTECTIVE_START_CHS: [u8; 3] = [0x00, 0x02, 0x00];
/// Offset of a FAT boot sector's number-of-FATs byte (BPB).
const FAT_NUM_FATS_OFFSET: usize = 0x10;
/// Offset of a FAT boot sector's media descriptor byte (BPB).
const FAT_MEDIA_OFFSET: usize = 0x15;
/// FAT media descriptor of a fixed disk; with two FATs, oslo takes sector 0 for a FAT VBR.
const FAT_MEDIA_FIXED_DISK: u8 = 0xF8;

/// The GPT header signature.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Logical sector sizes whose LBA 1 is searched for a GPT header, in order.
const GPT_SECTOR_SIZES: [u64; 2] = [512, 4096];
/// The smallest GPT header (UEFI: `HeaderSize` ≥ 92).
const GPT_HEADER_MIN_LEN: u32 = 92;
/// Offset of the header CRC32, zeroed while the CRC is computed.
const GPT_HEADER_CRC_OFFSET: usize = 16;
/// The smallest partition entry (UEFI: 128 × 2^n bytes).
const GPT_ENTRY_MIN_LEN: u32 = 128;
/// The largest partition entry array the probe scans: 1 MiB, 8192 entries of 128 bytes. Tools
/// write 16 KiB (128 entries; UEFI's minimum) or a little more (xorriso: 248); Linux refuses
/// arrays it cannot allocate in one piece. The array is hashed as it streams past, never held.
const GPT_MAX_ENTRY_ARRAY_LEN: u64 = 1 << 20;
/// The bytes of each partition entry the probe reads: type GUID, unique GUID, first and last
/// LBA (the rest are attributes and the name).
const GPT_ENTRY_HEAD: usize = 48;

/// The CRC32 of GPT headers and entry arrays (the zlib / IEEE 802.3 polynomial).
static GPT_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// The fields of a GPT header that the probe uses (UEFI 2.x table 5-5, all LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GptHeader {
    /// Logical sector size the header was found with.
    sector: u64,
    /// LBA of this header.
    my_lba: u64,
    /// LBA of the other header (backup for the primary).
    alternate_lba: u64,
    /// First LBA partitions may use.
    first_usable: u64,
    /// Last LBA partitions may use.
    last_usable: u64,
    /// LBA of the partition entry array.
    entries_lba: u64,
    /// Number of partition entries.
    entry_count: u32,
    /// Size of one entry in bytes.
    entry_len: u32,
    /// CRC32 of the entry array.
    entries_crc: u32,
}

impl GptHeader {
    /// Parses and checks a header sector `h` (starting with the signature) read at LBA
    /// `expected_lba`; the error names the defect.
    fn parse(h: &[u8], sector: u64, expected_lba: u64) -> Result<Self, String> {
        let header_len = le_u32(h, 12).ok_or("GPT header is cut short")?;
        if header_len < GPT_HEADER_MIN_LEN || u64::from(header_len) > sector {
            return Err(format!(
                "GPT header size {header_len} is outside {GPT_HEADER_MIN_LEN}..={sector}"
            ));
        }
        let header = h
            .get(..usize::try_from(header_len).map_err(|_| "GPT header size overflows")?)
            .ok_or("GPT header is cut short")?;
        let stored = le_u32(header, GPT_HEADER_CRC_OFFSET).ok_or("GPT header is cut short")?;
        let mut digest = GPT_CRC.digest();
        digest.update(header.get(..GPT_HEADER_CRC_OFFSET).unwrap_or(&[]));
        digest.update(&[0; 4]);
        digest.update(header.get(GPT_HEADER_CRC_OFFSET + 4..).unwrap_or(&[]));
        let computed = digest.finalize();
        if stored != computed {
            return Err(format!(
                "GPT header at LBA {expected_lba} has CRC32 {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let field = |off: usize| le_u64(header, off).ok_or("GPT header is cut short");
        let parsed = GptHeader {
            sector,
            my_lba: field(24)?,
            alternate_lba: field(32)?,
            first_usable: field(40)?,
            last_usable: field(48)?,
            entries_lba: field(72)?,
            entry_count: le_u32(header, 80).ok_or("GPT header is cut short")?,
            entry_len: le_u32(header, 84).ok_or("GPT header is cut short")?,
            entries_crc: le_u32(header, 88).ok_or("GPT header is cut short")?,
        };
        parsed.check(expected_lba)?;
        Ok(parsed)
    }

    /// Checks the header's fields against each other.
    fn check(&self, expected_lba: u64) -> Result<(), String> {
        if self.my_lba != expected_lba {
            return Err(format!(
                "GPT header at LBA {expected_lba} says it is at LBA {}",
                self.my_lba
            ));
        }
        if self.first_usable > self.last_usable {
            return Err(format!(
                "GPT first usable LBA {} is after last usable LBA {}",
                self.first_usable, self.last_usable
            ));
        }
        // Primary and backup headers lie outside the usable area, on opposite sides.
        let (low, high) = if expected_lba == 1 {
            (1, self.alternate_lba)
        } else {
            (self.alternate_lba, self.my_lba)
        };
        if low >= self.first_usable || high <= self.last_usable {
            return Err(format!(
                "GPT headers at LBAs {low} and {high} are not outside the usable LBAs {}..={}",
                self.first_usable, self.last_usable
            ));
        }
        if self.entry_len < GPT_ENTRY_MIN_LEN || !self.entry_len.is_power_of_two() {
            return Err(format!(
                "GPT partition entry size {} is not 128 × 2^n bytes",
                self.entry_len
            ));
        }
        let array_len = self.array_len();
        if array_len > GPT_MAX_ENTRY_ARRAY_LEN {
            // Reported as limit_exceeded by the caller.
            return Ok(());
        }
        // The array lies between the header and the usable area (primary) or between the
        // usable area and the header (backup).
        let array_sectors = array_len.div_ceil(self.sector);
        let array_end = self.entries_lba.checked_add(array_sectors);
        let inside = if expected_lba == 1 {
            self.entries_lba > 1 && array_end.is_some_and(|end| end <= self.first_usable)
        } else {
            self.entries_lba > self.last_usable && array_end.is_some_and(|end| end <= self.my_lba)
        };
        if !inside {
            return Err(format!(
                "GPT partition entry array at LBA {} ({array_len} bytes) overlaps the header or \
                 the usable LBAs {}..={}",
                self.entries_lba, self.first_usable, self.last_usable
            ));
        }
        Ok(())
    }

    /// Bytes in the partition entry array.
    fn array_len(&self) -> u64 {
        u64::from(self.entry_count).saturating_mul(u64::from(self.entry_len))
    }
}

/// The partition entry array, hashed and checked entry by entry as it streams past.
#[derive(Clone)]
struct GptEntryScan {
    start: u64,
    len: u64,
    entry_len: u64,
    /// Bytes of the array seen so far.
    seen: u64,
    /// The head of the entry being read.
    head: [u8; GPT_ENTRY_HEAD],
    crc: Digest<'static, u32>,
}

impl std::fmt::Debug for GptEntryScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GptEntryScan")
            .field("start", &self.start)
            .field("len", &self.len)
            .field("entry_len", &self.entry_len)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl GptEntryScan {
    fn new(header: &GptHeader) -> Option<Self> {
        Some(GptEntryScan {
            start: header.entries_lba.checked_mul(header.sector)?,
            len: header.array_len(),
            entry_len: u64::from(header.entry_len),
            seen: 0,
            head: [0; GPT_ENTRY_HEAD],
            crc: GPT_CRC.digest(),
        })
    }

    fn is_done(&self) -> bool {
        self.seen >= self.len
    }

    /// Feeds stream bytes; calls `f(index, head)` for each entry they complete.
    fn feed(&mut self, pos: u64, data: &[u8], mut f: impl FnMut(u64, &[u8; GPT_ENTRY_HEAD])) {
        let end = self.start.saturating_add(self.len);
        let Some((rel, mut part)) = intersect(pos, data, self.start, end) else {
            return;
        };
        if rel != self.seen {
            // A gap, which contiguous feeding never produces.
            return;
        }
        self.crc.update(part);
        while !part.is_empty() {
            let Some(in_entry) = self.seen.checked_rem(self.entry_len) else {
                return;
            };
            let left_in_entry = self.entry_len.saturating_sub(in_entry);
            let take = usize::try_from(left_in_entry)
                .unwrap_or(usize::MAX)
                .min(part.len());
            let (piece, rest) = part.split_at(take);
            let at = usize::try_from(in_entry).unwrap_or(usize::MAX);
            if at < GPT_ENTRY_HEAD {
                let n = GPT_ENTRY_HEAD.saturating_sub(at).min(piece.len());
                if let (Some(dst), Some(src)) =
                    (self.head.get_mut(at..at.saturating_add(n)), piece.get(..n))
                {
                    dst.copy_from_slice(src);
                }
            }
            self.seen = self
                .seen
                .saturating_add(u64::try_from(take).unwrap_or(u64::MAX));
            if self.seen.checked_rem(self.entry_len) == Some(0) {
                let index = self.seen.checked_div(self.entry_len).unwrap_or(0);
                f(index.saturating_sub(1), &self.head);
            }
            part = rest;
        }
    }
}

/// What the GPT/MBR probe is reading next.
#[derive(Debug)]
enum GptState {
    /// Sector 0.
    Mbr,
    /// A candidate GPT header at LBA 1 for the given sector size.
    Header { sector: u64 },
    /// The primary partition entry array.
    Entries(Box<GptEntryScan>),
    /// Nothing more to read before end of stream.
    Done,
}

/// Recognises MBR and GPT partition tables (oslo's `gpt` inspector, split in two formats).
#[derive(Debug)]
pub(crate) struct GptProbe {
    state: GptState,
    /// The region being captured: sector 0, then a candidate GPT header sector.
    capture: Capture,
    detection: Detection,
    /// The primary GPT header, once checked.
    header: Option<GptHeader>,
    /// The MBR partition reaching furthest: (1-based slot, end in bytes).
    mbr_end: Option<(usize, u64)>,
    findings: Findings,
}

impl GptProbe {
    pub(crate) fn new() -> Self {
        GptProbe {
            state: GptState::Mbr,
            capture: Capture::new(0, MBR_LEN),
            detection: Detection::Pending,
            header: None,
            mbr_end: None,
            findings: Findings::default(),
        }
    }

    /// Classifies sector 0 and checks its partition entries.
    fn read_mbr(&mut self) -> GptState {
        let mbr = self.capture.bytes();
        let is_fat = mbr.get(FAT_NUM_FATS_OFFSET) == Some(&2)
            && mbr.get(FAT_MEDIA_OFFSET) == Some(&FAT_MEDIA_FIXED_DISK);
        if le_u16(mbr, MBR_SIGNATURE_OFFSET) != Some(MBR_SIGNATURE) || is_fat {
            self.detection = Detection::No;
            return GptState::Done;
        }
        let mut problems: Vec<String> = Vec::new();
        let mut used = Vec::new();
        let mut protective = Vec::new();
        let mut mbr_end: Option<(usize, u64)> = None;
        for slot in 0..MBR_ENTRY_COUNT {
            let off = MBR_ENTRIES_OFFSET.saturating_add(slot.saturating_mul(MBR_ENTRY_LEN));
            let Some(entry) = mbr.get(off..off.saturating_add(MBR_ENTRY_LEN)) else {
                continue;
            };
            let boot = entry.first().copied().unwrap_or(0);
            let kind = entry.get(4).copied().unwrap_or(0);
            let start = le_u32(entry, 8).unwrap_or(0);
            let sectors = le_u32(entry, 12).unwrap_or(0);
            if boot != 0x00 && boot != 0x80 {
                problems.push(format!(
                    "MBR partition entry {slot} has invalid boot flag {boot:#04x}"
                ));
            }
            if kind == 0 {
                continue;
            }
            used.push(slot);
            if kind == MBR_TYPE_GPT_PROTECTIVE {
                protective.push(slot);
                if entry.get(1..4) != Some(&MBR_PROTECTIVE_START_CHS[..]) || start != 1 {
                    problems.push(format!(
                        "GPT protective MBR entry {slot} does not start at LBA 1 (CHS 0/0/2), \
                         but at LBA {start}"
                    ));
                }
                continue;
            }
            let end = u64::from(start)
                .checked_add(u64::from(sectors))
                .and_then(|s| s.checked_mul(MBR_SECTOR));
            if let Some(end) = end {
                if mbr_end.is_none_or(|(_, e)| end > e) {
                    mbr_end = Some((slot, end));
                }
            }
        }
        if !protective.is_empty() && used != [0] {
            problems.push(format!(
                "GPT protective MBR must hold one partition, in slot 0; used slots are {used:?}"
            ));
        }
        if used.is_empty() {
            problems.push("MBR has no partitions defined".to_owned());
        }
        for problem in problems {
            self.findings.push(ReasonCode::Corrupt, problem);
        }
        if protective.is_empty() {
            self.detection = Detection::Yes(Format::Mbr);
            self.mbr_end = mbr_end;
            GptState::Done
        } else {
            self.detection = Detection::Yes(Format::Gpt);
            self.start_header(0)
        }
    }

    /// Starts capturing LBA 1 for the `i`-th candidate sector size, if any is left.
    fn start_header(&mut self, i: usize) -> GptState {
        match GPT_SECTOR_SIZES.get(i) {
            Some(&sector) => {
                // Both sector sizes are small constants.
                let len = usize::try_from(sector).unwrap_or(MBR_LEN);
                self.capture = Capture::new(sector, len);
                GptState::Header { sector }
            }
            None => {
                self.findings.push(
                    ReasonCode::Corrupt,
                    "protective MBR (type 0xEE) but no GPT header at LBA 1",
                );
                GptState::Done
            }
        }
    }

    /// Checks the captured candidate header at LBA 1.
    fn read_header(&mut self, sector: u64) -> GptState {
        let bytes = self.capture.bytes();
        if !bytes.starts_with(GPT_SIGNATURE) {
            let next = GPT_SECTOR_SIZES
                .iter()
                .position(|&s| s == sector)
                .map_or(usize::MAX, |i| i.saturating_add(1));
            return self.start_header(next);
        }
        let header = match GptHeader::parse(bytes, sector, 1) {
            Ok(header) => header,
            Err(problem) => {
                self.findings.push(ReasonCode::Corrupt, problem);
                return GptState::Done;
            }
        };
        self.header = Some(header);
        if header.array_len() > GPT_MAX_ENTRY_ARRAY_LEN {
            self.findings.push(
                ReasonCode::LimitExceeded,
                format!(
                    "GPT partition entry array of {} entries of {} bytes exceeds the limit of \
                     {GPT_MAX_ENTRY_ARRAY_LEN} bytes",
                    header.entry_count, header.entry_len
                ),
            );
            return GptState::Done;
        }
        match GptEntryScan::new(&header) {
            Some(scan) if !scan.is_done() => GptState::Entries(Box::new(scan)),
            Some(scan) => self.finish_entries(&scan),
            None => {
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!(
                        "GPT partition entry array LBA {} is beyond any byte offset",
                        header.entries_lba
                    ),
                );
                GptState::Done
            }
        }
    }

    /// Checks the entry array's CRC once all of it has streamed past.
    fn finish_entries(&mut self, scan: &GptEntryScan) -> GptState {
        let computed = scan.crc.clone().finalize();
        if let Some(header) = self.header {
            if computed != header.entries_crc {
                self.findings.push(
                    ReasonCode::Corrupt,
                    format!(
                        "GPT partition entry array has CRC32 {computed:#010x}, header says {:#010x}",
                        header.entries_crc
                    ),
                );
            }
        }
        GptState::Done
    }

    /// Checks one partition entry against the usable LBAs.
    fn check_entry(findings: &mut Findings, header: &GptHeader, index: u64, head: &[u8]) {
        if head.get(..16).is_some_and(|t| t.iter().all(|&b| b == 0)) {
            return; // Unused entry.
        }
        let first = le_u64(head, 32).unwrap_or(0);
        let last = le_u64(head, 40).unwrap_or(0);
        if first > last || first < header.first_usable || last > header.last_usable {
            findings.push(
                ReasonCode::Corrupt,
                format!(
                    "GPT partition {} spans LBAs {first}..={last}, outside the usable LBAs {}..={}",
                    index.saturating_add(1),
                    header.first_usable,
                    header.last_usable
                ),
            );
        }
    }

    /// At end of stream: the backup header must exist where the primary says.
    fn check_backup(&mut self, header: &GptHeader, tail: &Tail) {
        let len = tail.stream_len();
        let backup_end = header
            .alternate_lba
            .checked_add(1)
            .and_then(|l| l.checked_mul(header.sector));
        let Some(backup_end) = backup_end.filter(|&end| end <= len) else {
            self.findings.push(
                ReasonCode::Truncated,
                format!(
                    "GPT backup header at LBA {} lies past the end of the image ({len} bytes)",
                    header.alternate_lba
                ),
            );
            return;
        };
        // Verify the backup when its sector is still in the tail window.
        let from_end = len.saturating_sub(backup_end.saturating_sub(header.sector));
        let Ok(from_end) = usize::try_from(from_end) else {
            return;
        };
        let window = tail.last(from_end);
        if window.len() < from_end {
            return;
        }
        let backup = window
            .get(..usize::try_from(header.sector).unwrap_or(usize::MAX))
            .unwrap_or(&[]);
        let problem = if backup.starts_with(GPT_SIGNATURE) {
            GptHeader::parse(backup, header.sector, header.alternate_lba)
                .err()
                .map(|p| format!("GPT backup header is damaged: {p}"))
        } else {
            Some(format!(
                "GPT backup header is missing at LBA {}",
                header.alternate_lba
            ))
        };
        if let Some(problem) = problem {
            self.findings.push(ReasonCode::Corrupt, problem);
        }
    }
}

impl Probe for GptProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Gpt, Format::Mbr]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        loop {
            let next = match &mut self.state {
                GptState::Mbr => {
                    if !self.capture.feed(pos, data) {
                        return;
                    }
                    self.read_mbr()
                }
                GptState::Header { sector } => {
                    let sector = *sector;
                    if !self.capture.feed(pos, data) {
                        return;
                    }
                    self.read_header(sector)
                }
                GptState::Entries(scan) => {
                    let (findings, header) = (&mut self.findings, self.header);
                    scan.feed(pos, data, |i, head| {
                        if let Some(h) = &header {
                            Self::check_entry(findings, h, i, head);
                        }
                    });
                    if !scan.is_done() {
                        return;
                    }
                    let scan = scan.clone();
                    self.finish_entries(&scan)
                }
                GptState::Done => return,
            };
            self.state = next;
        }
    }

    fn finish(&mut self, tail: &Tail) {
        let len = tail.stream_len();
        match std::mem::replace(&mut self.state, GptState::Done) {
            GptState::Mbr => self.detection = Detection::No,
            GptState::Header { sector } if sector == MBR_SECTOR => {
                self.findings.push(
                    ReasonCode::Truncated,
                    format!("image ends ({len} bytes) before the GPT header at LBA 1"),
                );
            }
            GptState::Header { .. } => {
                self.findings.push(
                    ReasonCode::Corrupt,
                    "protective MBR (type 0xEE) but no GPT header at LBA 1",
                );
            }
            GptState::Entries(scan) => {
                self.findings.push(
                    ReasonCode::Truncated,
                    format!(
                        "image ends ({len} bytes) inside the GPT partition entry array at byte {}",
                        scan.start
                    ),
                );
            }
            GptState::Done => {}
        }
        if let Some(header) = self.header {
            self.check_backup(&header, tail);
        }
        if let Some((slot, end)) = self.mbr_end {
            if end > len {
                self.findings.push(
                    ReasonCode::Truncated,
                    format!(
                        "MBR partition {slot} ends at byte {end}, past the end of the image \
                         ({len} bytes)"
                    ),
                );
            }
        }
    }

    fn detection(&self) -> Detection {
        self.detection
    }

    fn wants(&self, _pos: u64) -> bool {
        !matches!(self.state, GptState::Done)
    }

    fn virtual_size(&self) -> Option<u64> {
        None
    }

    fn findings(&self) -> &[Reason] {
        self.findings.as_slice()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test builders compute small fixed offsets
mod tests {
    use super::*;

    /// Offsets inside a GPT header (UEFI table 5-5).
    const HDR_SIZE: usize = 12;
    const HDR_MY_LBA: usize = 24;
    const HDR_ALTERNATE: usize = 32;
    const HDR_FIRST_USABLE: usize = 40;
    const HDR_LAST_USABLE: usize = 48;
    const HDR_ENTRIES_LBA: usize = 72;
    const HDR_ENTRY_COUNT: usize = 80;
    const HDR_ENTRY_LEN: usize = 84;
    const HDR_ENTRIES_CRC: usize = 88;
    /// Entries per array, as sgdisk and parted write.
    const ENTRIES: u64 = 128;

    fn put_u32(buf: &mut [u8], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(buf: &mut [u8], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A GPT disk of `sectors` sectors of `sector` bytes with partitions (first, last LBA),
    /// laid out as sgdisk does, with valid CRCs.
    struct GptDisk {
        sector: usize,
        bytes: Vec<u8>,
    }

    impl GptDisk {
        fn new(sector: usize, sectors: u64, parts: &[(u64, u64)]) -> Self {
            let mut bytes = vec![0u8; sector * sectors as usize];
            // Protective MBR.
            let e = MBR_ENTRIES_OFFSET;
            bytes[e + 1..e + 4].copy_from_slice(&MBR_PROTECTIVE_START_CHS);
            bytes[e + 4] = MBR_TYPE_GPT_PROTECTIVE;
            put_u32(&mut bytes, e + 8, 1);
            put_u32(&mut bytes, e + 12, (sectors - 1) as u32);
            bytes[510] = 0x55;
            bytes[511] = 0xAA;
            let array_sectors = (ENTRIES * 128).div_ceil(sector as u64);
            let first_usable = 2 + array_sectors;
            let last_usable = sectors - 2 - array_sectors;
            let mut disk = GptDisk { sector, bytes };
            for (i, (first, last)) in parts.iter().enumerate() {
                let at = disk.entries_at(2) + i * 128;
                disk.bytes[at] = 0xAF; // any non-zero type GUID
                put_u64(&mut disk.bytes, at + 32, *first);
                put_u64(&mut disk.bytes, at + 40, *last);
            }
            let backup_entries = last_usable + 1;
            let (from, to) = (
                disk.entries_at(2),
                disk.entries_at(2) + (ENTRIES * 128) as usize,
            );
            let array = disk.bytes[from..to].to_vec();
            let b = disk.entries_at(backup_entries);
            disk.bytes[b..b + array.len()].copy_from_slice(&array);
            for (my, alt, entries) in [(1, sectors - 1, 2), (sectors - 1, 1, backup_entries)] {
                let h = my as usize * sector;
                disk.bytes[h..h + 8].copy_from_slice(GPT_SIGNATURE);
                put_u32(&mut disk.bytes, h + 8, 0x0001_0000);
                put_u32(&mut disk.bytes, h + HDR_SIZE, 92);
                put_u64(&mut disk.bytes, h + HDR_MY_LBA, my);
                put_u64(&mut disk.bytes, h + HDR_ALTERNATE, alt);
                put_u64(&mut disk.bytes, h + HDR_FIRST_USABLE, first_usable);
                put_u64(&mut disk.bytes, h + HDR_LAST_USABLE, last_usable);
                put_u64(&mut disk.bytes, h + HDR_ENTRIES_LBA, entries);
                put_u32(&mut disk.bytes, h + HDR_ENTRY_COUNT, ENTRIES as u32);
                put_u32(&mut disk.bytes, h + HDR_ENTRY_LEN, 128);
            }
            disk.seal();
            disk
        }

        fn entries_at(&self, lba: u64) -> usize {
            lba as usize * self.sector
        }

        fn primary(&self) -> usize {
            self.sector
        }

        /// Recomputes both headers' array and header CRCs after a patch.
        fn seal(&mut self) {
            let sectors = (self.bytes.len() / self.sector) as u64;
            for lba in [1, sectors - 1] {
                let h = lba as usize * self.sector;
                if &self.bytes[h..h + 8] != GPT_SIGNATURE {
                    continue;
                }
                let entries = u64::from_le_bytes(
                    self.bytes[h + HDR_ENTRIES_LBA..h + HDR_ENTRIES_LBA + 8]
                        .try_into()
                        .unwrap(),
                );
                let a = self.entries_at(entries);
                let crc = GPT_CRC.checksum(&self.bytes[a..a + (ENTRIES * 128) as usize]);
                put_u32(&mut self.bytes, h + HDR_ENTRIES_CRC, crc);
                put_u32(&mut self.bytes, h + GPT_HEADER_CRC_OFFSET, 0);
                let crc = GPT_CRC.checksum(&self.bytes[h..h + 92]);
                put_u32(&mut self.bytes, h + GPT_HEADER_CRC_OFFSET, crc);
            }
        }
    }

    /// An MBR disk of `len` bytes with entries (slot, boot flag, type, start LBA, sectors).
    fn mbr_disk(len: usize, entries: &[(usize, u8, u8, u32, u32)]) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        bytes[510] = 0x55;
        bytes[511] = 0xAA;
        for &(slot, boot, kind, start, sectors) in entries {
            let e = MBR_ENTRIES_OFFSET + slot * MBR_ENTRY_LEN;
            bytes[e] = boot;
            bytes[e + 4] = kind;
            put_u32(&mut bytes, e + 8, start);
            put_u32(&mut bytes, e + 12, sectors);
        }
        bytes
    }

    fn run(bytes: &[u8], chunk: usize) -> GptProbe {
        let mut probe = GptProbe::new();
        let mut tail = Tail::new();
        let mut pos = 0u64;
        for piece in bytes.chunks(chunk) {
            if probe.wants(pos) {
                probe.feed(pos, piece);
            }
            tail.feed(piece);
            pos += piece.len() as u64;
        }
        probe.finish(&tail);
        probe
    }

    /// The probe's findings, the same for every chunking.
    fn codes(bytes: &[u8]) -> (Detection, Vec<ReasonCode>) {
        let mut seen = None;
        for chunk in [1, 7, 512, 4096, 1 << 20] {
            let probe = run(bytes, chunk);
            let got = (
                probe.detection(),
                probe.findings().iter().map(|r| r.code).collect::<Vec<_>>(),
            );
            if let Some(prev) = &seen {
                assert_eq!(prev, &got, "chunk size {chunk} changed the result");
            }
            seen = Some(got);
        }
        seen.unwrap()
    }

    #[test]
    fn test_gpt_valid_512_disk_is_accepted() {
        let disk = GptDisk::new(512, 2048, &[(34, 1000), (1001, 2014)]);
        assert!(matches!(
            codes(&disk.bytes),
            (Detection::Yes(Format::Gpt), c) if c.is_empty()
        ));
    }

    #[test]
    fn test_gpt_valid_4096_disk_is_accepted() {
        let disk = GptDisk::new(4096, 64, &[(6, 57)]);
        assert!(matches!(
            codes(&disk.bytes),
            (Detection::Yes(Format::Gpt), c) if c.is_empty()
        ));
    }

    #[test]
    fn test_gpt_header_crc_damaged_is_corrupt() {
        let mut disk = GptDisk::new(512, 2048, &[(34, 1000)]);
        let crc = disk.primary() + GPT_HEADER_CRC_OFFSET;
        disk.bytes[crc] ^= 0xFF;
        assert!(
            matches!(codes(&disk.bytes), (Detection::Yes(Format::Gpt), c) if c == [ReasonCode::Corrupt])
        );
    }

    #[test]
    fn test_gpt_entry_array_crc_damaged_is_corrupt() {
        let mut disk = GptDisk::new(512, 2048, &[(34, 1000)]);
        let name = disk.entries_at(2) + 56;
        disk.bytes[name] = b'x';
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_gpt_partition_outside_usable_is_corrupt() {
        let disk = GptDisk::new(512, 2048, &[(34, 2047)]);
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_gpt_first_usable_after_last_is_corrupt() {
        let mut disk = GptDisk::new(512, 2048, &[]);
        for h in [disk.primary(), 2047 * 512] {
            put_u64(&mut disk.bytes, h + HDR_FIRST_USABLE, 2040);
            put_u64(&mut disk.bytes, h + HDR_LAST_USABLE, 100);
        }
        disk.seal();
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_gpt_huge_entry_array_is_limit_exceeded() {
        let mut disk = GptDisk::new(512, 2048, &[]);
        let h = disk.primary();
        put_u32(&mut disk.bytes, h + HDR_ENTRY_COUNT, u32::MAX);
        disk.seal();
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::LimitExceeded]));
    }

    #[test]
    fn test_gpt_odd_entry_size_is_corrupt() {
        let mut disk = GptDisk::new(512, 2048, &[]);
        let h = disk.primary();
        put_u32(&mut disk.bytes, h + HDR_ENTRY_LEN, 100);
        disk.seal();
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_gpt_disk_cut_short_is_truncated() {
        let disk = GptDisk::new(512, 2048, &[(34, 1000)]);
        let cut = &disk.bytes[..600 * 512];
        assert!(
            matches!(codes(cut), (Detection::Yes(Format::Gpt), c) if c == [ReasonCode::Truncated])
        );
        let cut = &disk.bytes[..700];
        assert!(matches!(codes(cut), (_, c) if c == [ReasonCode::Truncated]));
        let cut = &disk.bytes[..4096];
        assert!(matches!(codes(cut), (_, c) if c == [ReasonCode::Truncated]));
    }

    #[test]
    fn test_gpt_backup_header_damaged_is_corrupt() {
        let mut disk = GptDisk::new(512, 2048, &[(34, 1000)]);
        let backup_crc = 2047 * 512 + GPT_HEADER_CRC_OFFSET;
        disk.bytes[backup_crc] ^= 1;
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::Corrupt]));
        disk.bytes[2047 * 512] = 0;
        assert!(matches!(codes(&disk.bytes), (_, c) if c == [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_gpt_protective_without_header_is_corrupt() {
        let mut disk = GptDisk::new(512, 2048, &[]);
        disk.bytes[512] = 0;
        assert!(
            matches!(codes(&disk.bytes), (Detection::Yes(Format::Gpt), c) if c == [ReasonCode::Corrupt])
        );
    }

    #[test]
    fn test_mbr_two_partitions_is_accepted() {
        let bytes = mbr_disk(
            8 << 20,
            &[(0, 0x80, 0x83, 2048, 6144), (1, 0, 0x83, 8192, 8192)],
        );
        assert!(matches!(codes(&bytes), (Detection::Yes(Format::Mbr), c) if c.is_empty()));
    }

    #[test]
    fn test_mbr_bad_boot_flag_is_corrupt() {
        let bytes = mbr_disk(1 << 20, &[(0, 0x81, 0x83, 100, 10)]);
        assert!(
            matches!(codes(&bytes), (Detection::Yes(Format::Mbr), c) if c == [ReasonCode::Corrupt])
        );
    }

    #[test]
    fn test_mbr_protective_in_slot_1_is_corrupt() {
        let mut bytes = mbr_disk(1 << 20, &[(1, 0, MBR_TYPE_GPT_PROTECTIVE, 1, 2047)]);
        let chs = MBR_ENTRIES_OFFSET + MBR_ENTRY_LEN + 1;
        bytes[chs..chs + 3].copy_from_slice(&MBR_PROTECTIVE_START_CHS);
        assert!(
            matches!(codes(&bytes), (Detection::Yes(Format::Gpt), c) if c.contains(&ReasonCode::Corrupt))
        );
    }

    #[test]
    fn test_mbr_protective_with_second_partition_is_corrupt() {
        let disk = GptDisk::new(512, 2048, &[]);
        let mut bytes = disk.bytes.clone();
        let e = MBR_ENTRIES_OFFSET + MBR_ENTRY_LEN;
        bytes[e + 4] = 0x83;
        assert!(matches!(codes(&bytes), (_, c) if c == [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_mbr_no_partitions_is_corrupt() {
        let bytes = mbr_disk(1 << 20, &[]);
        assert!(
            matches!(codes(&bytes), (Detection::Yes(Format::Mbr), c) if c == [ReasonCode::Corrupt])
        );
    }

    #[test]
    fn test_mbr_partition_past_end_is_truncated() {
        let bytes = mbr_disk(1 << 20, &[(0, 0, 0x83, 2048, 10)]);
        assert!(matches!(codes(&bytes), (_, c) if c == [ReasonCode::Truncated]));
        let bytes = mbr_disk(1 << 20, &[(0, 0, 0x83, u32::MAX, u32::MAX)]);
        assert!(matches!(codes(&bytes), (_, c) if c == [ReasonCode::Truncated]));
    }

    #[test]
    fn test_mbr_fat_boot_sector_is_not_mbr() {
        let mut bytes = mbr_disk(1 << 20, &[]);
        bytes[FAT_NUM_FATS_OFFSET] = 2;
        bytes[FAT_MEDIA_OFFSET] = FAT_MEDIA_FIXED_DISK;
        assert!(matches!(codes(&bytes), (Detection::No, c) if c.is_empty()));
    }

    #[test]
    fn test_mbr_without_signature_or_short_is_not_mbr() {
        assert!(matches!(codes(&[0u8; 4096]), (Detection::No, _)));
        let bytes = mbr_disk(1 << 20, &[(0, 0, 0x83, 1, 10)]);
        assert!(matches!(codes(&bytes[..511]), (Detection::No, _)));
    }

    proptest::proptest! {
        /// Any patch of a valid GPT disk's first sectors gives the same answer under any
        /// chunking, without panicking.
        #[test]
        fn test_gpt_patched_header_any_chunking_is_consistent(
            patches in proptest::collection::vec((0usize..2048, proptest::num::u8::ANY), 1..16),
            chunk in 1usize..700,
        ) {
            let mut disk = GptDisk::new(512, 256, &[(40, 200)]);
            for (at, v) in patches {
                disk.bytes[at] = v;
            }
            let whole = run(&disk.bytes, disk.bytes.len());
            let split = run(&disk.bytes, chunk);
            proptest::prop_assert_eq!(whole.detection(), split.detection());
            proptest::prop_assert_eq!(whole.findings(), split.findings());
        }
    }
}
