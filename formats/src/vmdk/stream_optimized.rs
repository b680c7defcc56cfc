//! The streamOptimized marker chain and footer.
//!
//! From `overHead` sectors on, a streamOptimized extent is a chain of markers, each starting
//! on a sector boundary:
//! - grain marker `{u64 lba, u32 size, size bytes of deflate data}`, padded to 512 bytes;
//! - metadata marker `{u64 numSectors, u32 0, u32 type, 496 zero bytes}` followed by
//!   `numSectors` of table: type 0 end of stream, 1 grain table, 2 grain directory, 3 footer.
//!
//! When the header's `gdOffset` is `GD_AT_END` the directory is found through the footer: the
//! last 1536 bytes must be a footer marker, a footer (a copy of the header with the real
//! `gdOffset`) and an end-of-stream marker. The walk keeps one 16-byte marker and at most one
//! table scanner: no memory per grain.

use super::header::{VmdkHeader, GD_AT_END, SECTOR, VMDK4_MAGIC};
use crate::probe::PlacedFindings;
use crate::stream::{intersect, le_u32, le_u64, EntryScanner, Tail, TAIL_LEN};
use crate::ReasonCode;

/// Metadata marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Bytes of a marker the walk reads: `{u64, u32 size, u32 type}`.
const MARKER_HEAD: usize = 16;
/// Bytes of a grain marker before its compressed data: `{u64 lba, u32 size}`.
const GRAIN_MARKER_LEN: u64 = 12;

/// A compressed grain may be at most twice the grain size: QEMU reads two grains' worth of
/// bytes for one compressed grain and refuses a larger size (`vmdk_read_extent`).
const VMDK_MAX_COMPRESSED_GRAIN_FACTOR: u64 = 2;

/// The table after a metadata marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmdkTableKind {
    GrainTable,
    GrainDirectory,
}

/// Where the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalkState {
    /// Reading the marker at `next`.
    Running,
    /// Reached an end-of-stream marker at this byte.
    Ended(u64),
    /// A marker was invalid (already reported); the rest cannot be located.
    Broken,
}

/// The forward walk over a streamOptimized marker chain.
#[derive(Debug)]
pub(crate) struct VmdkMarkerWalk {
    next: u64,
    head: [u8; MARKER_HEAD],
    have: usize,
    state: WalkState,
    table: Option<(VmdkTableKind, u64, EntryScanner<4>)>,
    capacity: u64,
    grain_size: u64,
    max_compressed: u64,
    gtes: u64,
    gd_entries: u64,
    overhead: u64,
    zero_grain: bool,
    /// Sector of the last grain directory's data.
    gd_data: Option<u64>,
    /// Byte of the footer marker.
    footer_marker: Option<u64>,
}

impl VmdkMarkerWalk {
    /// A walk for a header that passed [`VmdkHeader::check`] as streamOptimized.
    pub(crate) fn new(h: &VmdkHeader) -> Option<Self> {
        Some(VmdkMarkerWalk {
            next: h.overhead.checked_mul(SECTOR)?,
            head: [0; MARKER_HEAD],
            have: 0,
            state: WalkState::Running,
            table: None,
            capacity: h.capacity,
            grain_size: h.grain_size,
            max_compressed: h
                .grain_size
                .checked_mul(SECTOR)?
                .checked_mul(VMDK_MAX_COMPRESSED_GRAIN_FACTOR)?,
            gtes: u64::from(h.gtes_per_gt),
            gd_entries: h.gd_entries()?,
            overhead: h.overhead,
            zero_grain: h.zero_grain(),
            gd_data: None,
            footer_marker: None,
        })
    }

    /// Whether the walk still needs bytes.
    pub(crate) fn is_running(&self) -> bool {
        self.state == WalkState::Running || self.table.is_some()
    }

    /// Feeds stream bytes at `pos`.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let data_end = pos.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        loop {
            self.feed_table(pos, data, data_end, findings);
            if self.state != WalkState::Running {
                return;
            }
            let have = u64::try_from(self.have).unwrap_or(u64::MAX);
            let want = u64::try_from(MARKER_HEAD).unwrap_or(u64::MAX);
            let from = self.next.saturating_add(have);
            let Some((_, part)) = intersect(pos, data, from, self.next.saturating_add(want)) else {
                return;
            };
            let end = self.have.saturating_add(part.len());
            if let Some(dst) = self.head.get_mut(self.have..end) {
                dst.copy_from_slice(part);
            }
            self.have = end;
            if self.have < MARKER_HEAD {
                return;
            }
            self.have = 0;
            self.step(findings);
        }
    }

    fn feed_table(&mut self, pos: u64, data: &[u8], data_end: u64, findings: &mut PlacedFindings) {
        let Some((kind, marker, scanner)) = self.table.as_mut() else {
            return;
        };
        let (kind, marker) = (*kind, *marker);
        let marker_sector = marker.checked_div(SECTOR).unwrap_or(0);
        let (overhead, zero_grain) = (self.overhead, self.zero_grain);
        let start = marker.saturating_add(SECTOR);
        scanner.feed(pos, data, |index, entry| {
            let sector = u64::from(u32::from_le_bytes(*entry));
            if sector == 0 || (kind == VmdkTableKind::GrainTable && zero_grain && sector == 1) {
                return;
            }
            if sector < overhead || sector >= marker_sector {
                let at = start.saturating_add(index.saturating_add(1).saturating_mul(4));
                let what = match kind {
                    VmdkTableKind::GrainTable => "grain table",
                    VmdkTableKind::GrainDirectory => "grain directory",
                };
                findings.push_with(ReasonCode::Corrupt, at, || {
                    format!(
                        "VMDK stream {what} at byte {start} entry {index} points to sector \
                         {sector}, outside the data before it"
                    )
                });
            }
        });
        if scanner.end() <= data_end {
            self.table = None;
        }
    }

    /// Decides the marker in `head`, at `next`.
    fn step(&mut self, findings: &mut PlacedFindings) {
        let at = self.next;
        let val = le_u64(&self.head, 0).unwrap_or(0);
        let size = u64::from(le_u32(&self.head, 8).unwrap_or(0));
        let kind = le_u32(&self.head, 12).unwrap_or(0);
        let broken = |findings: &mut PlacedFindings, message: String| {
            findings.push_with(ReasonCode::Corrupt, at, || message);
            WalkState::Broken
        };
        if size != 0 {
            if val >= self.capacity || val.checked_rem(self.grain_size) != Some(0) {
                self.state = broken(
                    findings,
                    format!(
                        "VMDK grain marker at byte {at} has LBA {val}, which is not a grain \
                         start within the capacity of {} sectors",
                        self.capacity
                    ),
                );
                return;
            }
            if size > self.max_compressed {
                self.state = broken(
                    findings,
                    format!(
                        "VMDK grain marker at byte {at} declares {size} compressed bytes, more \
                         than {VMDK_MAX_COMPRESSED_GRAIN_FACTOR} grains"
                    ),
                );
                return;
            }
            self.advance(
                at.saturating_add(GRAIN_MARKER_LEN).saturating_add(size),
                findings,
            );
            return;
        }
        match kind {
            MARKER_EOS if val == 0 => self.state = WalkState::Ended(at),
            MARKER_GT | MARKER_GD => {
                let (table_kind, entries) = if kind == MARKER_GT {
                    (VmdkTableKind::GrainTable, self.gtes)
                } else {
                    (VmdkTableKind::GrainDirectory, self.gd_entries)
                };
                // Tables fill whole sectors: 512 entries of 4 bytes are 4 sectors.
                let sectors = entries.saturating_mul(4).div_ceil(SECTOR);
                if val != sectors {
                    self.state = broken(
                        findings,
                        format!(
                            "VMDK stream marker at byte {at} declares a table of {val} sectors, \
                             expected {sectors}"
                        ),
                    );
                    return;
                }
                let start = at.saturating_add(SECTOR);
                if let Some(scanner) = EntryScanner::new(start, entries) {
                    self.table = Some((table_kind, at, scanner));
                }
                if table_kind == VmdkTableKind::GrainDirectory {
                    self.gd_data = start.checked_div(SECTOR);
                }
                self.advance(start.saturating_add(val.saturating_mul(SECTOR)), findings);
            }
            MARKER_FOOTER if val == 1 => {
                self.footer_marker = Some(at);
                self.advance(at.saturating_add(2 * SECTOR), findings);
            }
            _ => {
                self.state = broken(
                    findings,
                    format!(
                        "VMDK stream marker at byte {at} is invalid (type {kind}, {val} sectors)"
                    ),
                );
            }
        }
    }

    /// Moves to the marker at `end` rounded up to a sector.
    fn advance(&mut self, end: u64, findings: &mut PlacedFindings) {
        match end.checked_next_multiple_of(SECTOR) {
            Some(next) if next > self.next => self.next = next,
            _ => {
                let at = self.next;
                findings.push_with(ReasonCode::Corrupt, at, || {
                    format!("VMDK stream marker at byte {at} overflows the stream")
                });
                self.state = WalkState::Broken;
            }
        }
    }

    /// At end of stream. `footer` says whether the header defers the directory to the footer
    /// (`gdOffset` = `GD_AT_END`), in which case the chain must end with footer and EOS.
    pub(crate) fn finish(
        &self,
        header: &VmdkHeader,
        tail: &Tail,
        footer: bool,
        findings: &mut PlacedFindings,
    ) {
        let len = tail.stream_len();
        match self.state {
            WalkState::Running => {
                let clean_end = self.next == len && self.have == 0;
                if footer || !clean_end {
                    let next = self.next;
                    findings.push_with(ReasonCode::Truncated, len, || {
                        format!(
                            "VMDK stream ends at byte {len} inside its marker chain (next \
                             marker expected at byte {next})"
                        )
                    });
                }
            }
            WalkState::Ended(eos) if footer => {
                if let Err(problem) = self.check_footer(header, tail, eos) {
                    findings.push_with(ReasonCode::Corrupt, len, || {
                        format!("bad VMDK footer chain: {problem}")
                    });
                }
            }
            WalkState::Ended(_) | WalkState::Broken => {}
        }
    }

    /// The footer checks of oslo.utils and QEMU, plus the chain's own positions.
    fn check_footer(&self, main: &VmdkHeader, tail: &Tail, eos: u64) -> Result<(), String> {
        let len = tail.stream_len();
        let last = tail.last(TAIL_LEN);
        let (Some(marker), Some(footer), Some(eos_marker)) = (
            last.get(..512),
            last.get(512..1024),
            last.get(1024..TAIL_LEN),
        ) else {
            return Err("image too short for footer and end-of-stream markers".into());
        };
        let tail_start = len.saturating_sub(u64::try_from(TAIL_LEN).unwrap_or(u64::MAX));
        if le_u32(marker, 8) != Some(0)
            || le_u32(marker, 12) != Some(MARKER_FOOTER)
            || marker.get(16..).is_some_and(|p| p.iter().any(|&b| b != 0))
        {
            return Err(format!("no footer marker at byte {tail_start}"));
        }
        if eos_marker.iter().any(|&b| b != 0) {
            return Err("the last sector is not an end-of-stream marker".into());
        }
        if self.footer_marker != Some(tail_start) || eos.saturating_add(SECTOR) != len {
            return Err("the marker chain does not end with footer and end-of-stream".into());
        }
        if footer.get(..4) != Some(VMDK4_MAGIC.as_slice()) {
            return Err("footer has no KDMV magic".into());
        }
        let f = VmdkHeader::parse(footer).ok_or("footer is short")?;
        let same = f.version == main.version
            && f.flags == main.flags
            && f.capacity == main.capacity
            && f.grain_size == main.grain_size
            && f.desc_offset == main.desc_offset
            && f.desc_size == main.desc_size
            && f.gtes_per_gt == main.gtes_per_gt
            && f.compress == main.compress;
        if !same {
            return Err("footer header differs from the main header".into());
        }
        if f.gd_offset == GD_AT_END {
            return Err("footer gdOffset is GD_AT_END too".into());
        }
        match self.gd_data {
            Some(gd) if gd == f.gd_offset => Ok(()),
            Some(gd) => Err(format!(
                "footer gdOffset {} is not the stream's grain directory at sector {gd}",
                f.gd_offset
            )),
            None => Err("the stream has no grain directory marker".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test arithmetic on small known values
pub(crate) mod tests {
    use super::super::header::tests::{encode, qemu_sparse_header};
    use super::*;

    /// The header of [`tiny_stream`]: streamOptimized, 128 sectors, overHead 4, grain
    /// directory at the end.
    pub(crate) fn tiny_stream_header() -> VmdkHeader {
        let mut h = qemu_sparse_header();
        h.flags = 0x3_0001;
        h.compress = 1;
        h.version = 3;
        h.capacity = 128;
        h.desc_size = 1;
        h.overhead = 4;
        h.rgd_offset = 0;
        h.gd_offset = GD_AT_END;
        h
    }

    /// A tiny VMware-style stream: header, overHead 4, one grain, GT, GD, footer, EOS.
    pub(crate) fn tiny_stream() -> (VmdkHeader, Vec<u8>) {
        let h = tiny_stream_header();
        let mut img = encode(&h);
        img.resize(4 * 512, 0);
        let marker = |n: u64, t: u32| {
            let mut m = vec![0u8; 512];
            m[..8].copy_from_slice(&n.to_le_bytes());
            m[12..16].copy_from_slice(&t.to_le_bytes());
            m
        };
        // Grain for LBA 0 at sector 4: 20 "compressed" bytes.
        let mut grain = vec![0u8; 512];
        grain[8..12].copy_from_slice(&20u32.to_le_bytes());
        img.extend(grain);
        // GT at sector 5 (data 6..10) naming the grain at sector 4.
        img.extend(marker(4, MARKER_GT));
        let mut gt = vec![0u8; 2048];
        gt[..4].copy_from_slice(&4u32.to_le_bytes());
        img.extend(gt);
        // GD at sector 10 (data 11) naming the GT at sector 6.
        img.extend(marker(1, MARKER_GD));
        let mut gd = vec![0u8; 512];
        gd[..4].copy_from_slice(&6u32.to_le_bytes());
        img.extend(gd);
        img.extend(marker(1, MARKER_FOOTER));
        let mut f = h;
        f.gd_offset = 11;
        img.extend(encode(&f));
        img.extend(marker(0, MARKER_EOS));
        (h, img)
    }

    fn run(h: &VmdkHeader, img: &[u8], chunk: usize) -> PlacedFindings {
        let mut w = VmdkMarkerWalk::new(h).unwrap();
        let mut f = PlacedFindings::default();
        let mut tail = Tail::new();
        for (i, c) in img.chunks(chunk).enumerate() {
            w.feed((i * chunk) as u64, c, &mut f);
            tail.feed(c);
        }
        w.finish(h, &tail, true, &mut f);
        f
    }

    #[test]
    fn test_marker_walk_tiny_stream_is_clean() {
        let (h, img) = tiny_stream();
        for chunk in [1, 5, 512, img.len()] {
            assert!(run(&h, &img, chunk).as_slice().is_empty(), "chunk {chunk}");
        }
    }

    #[test]
    fn test_marker_walk_bad_lba_is_corrupt() {
        let (h, mut img) = tiny_stream();
        img[4 * 512..4 * 512 + 8].copy_from_slice(&1u64.to_le_bytes());
        let f = run(&h, &img, 512);
        assert!(matches!(f.as_slice().first(), Some(r) if r.code == ReasonCode::Corrupt));
    }

    #[test]
    fn test_marker_walk_damaged_footer_is_corrupt() {
        let (h, mut img) = tiny_stream();
        let gd = img.len() - 1024 + 56;
        img[gd..gd + 8].copy_from_slice(&12u64.to_le_bytes());
        let f = run(&h, &img, 512);
        assert!(
            matches!(f.as_slice().first(), Some(r) if r.code == ReasonCode::Corrupt && r.message.contains("footer"))
        );
    }

    #[test]
    fn test_marker_walk_cut_stream_is_truncated() {
        let (h, img) = tiny_stream();
        let f = run(&h, &img[..img.len() - 700], 512);
        assert!(matches!(f.as_slice().first(), Some(r) if r.code == ReasonCode::Truncated));
    }
}
