//! Streaming conversion, vhdx to raw.
//!
//! The structures are read by the VHDX probe ([`VhdxProbe`]), fed every chunk: header section,
//! region table, metadata table and items (block size, virtual size, logical sector size).
//! The converter scans the BAT itself as it streams past. qemu writes the BAT *before* the
//! metadata region, so the block size may be unknown when BAT entries arrive: present entries
//! are then remembered and placed once the metadata region has streamed past.
//!
//! BAT layout (as qemu's `vhdx_block_translate`): payload block `i` is BAT entry
//! `i + i / chunk_ratio`, a sector-bitmap entry follows every `chunk_ratio` payload entries,
//! with `chunk_ratio = 2^23 × logical sector size / block size`. Payload states 0 (not
//! present), 1 (undefined), 2 (zero), 3 and 5 (unmapped) read as zeros: holes. State 6 (fully
//! present) places the block's bytes at file offset `entry & !(1 MiB - 1)` at guest offset
//! `i × block_size`, the last block cut at the virtual size. State 7 (partially present, only
//! valid in differencing disks) is refused. The output's length is the virtual size as
//! `qemu-img info` reports it (the disk size rounded down to logical sectors).
//!
//! Blocks are copied by the [`Placer`] as they stream past; blocks arriving before the BAT
//! entry or metadata that places them are spilled, except bytes inside the header section,
//! the log, the BAT and the metadata region, where no block may lie. Each chunk is handled
//! piece by piece, split at those regions' boundaries and after each present BAT entry, so
//! what is spilled and tracked (and whether a limit is hit) depends only on the bytes.
//!
//! Memory: the probe's captures (two 4 KiB headers, two 64 KiB region tables and the 64 KiB
//! metadata table, each freed once parsed, at most a 64 KiB parent locator and 24 bytes of
//! items) + `16 × min(present BAT entries read before the metadata region's end,
//! max_tracked_entries)` bytes of remembered entries + the [`Placer`]'s bound (at most
//! `max_tracked_entries` pending blocks). Spill: the bytes outside those regions that arrive
//! before the whole BAT and the metadata region are read, at most `max_spill_bytes` (then
//! `limit_exceeded`); none for qemu's and Hyper-V's layouts (blocks after all metadata).

use super::header::{
    state, VHDX_BAT_OFFSET_MASK, VHDX_BAT_STATE_MASK, VHDX_HEADER_SECTION_END,
    VHDX_SECTORS_PER_BITMAP,
};
use super::inspect::{VhdxProbe, VhdxState};
use crate::probe::Probe;
use crate::stream::u64_of;
use crate::stream::{le_u32, slice_at, EntryScanner};
use crate::support::converter::{corrupt, truncated};
use crate::support::converter::{ConvertError, ConvertLimits, FormatConverter};
use crate::support::placer::Placer;
use crate::support::sink::ConvertSink;
use crate::{Limits, ReasonCode};

/// The vhdx to raw converter.
///
/// # Errors
/// Never at construction; see [`ConvertError`] while feeding.
pub(crate) fn converter(limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Ok(Box::new(VhdxConverter {
        limits: limits.clone(),
        probe: VhdxProbe::new(&Limits::default()),
        bat: None,
        waiting: Vec::new(),
        layout: None,
        placer: Placer::new(limits, "VHDX"),
        data_end: 0,
    }))
}

/// What places payload blocks, from the metadata items.
#[derive(Debug, Clone, Copy)]
struct VhdxLayout {
    block_size: u64,
    virtual_size: u64,
    chunk_ratio: u64,
    /// BAT entries the disk uses; later ones are never read (as qemu).
    bat_entries: u64,
}

/// The vhdx to raw converter.
#[derive(Debug)]
struct VhdxConverter {
    limits: ConvertLimits,
    /// Reads and checks every structure but the BAT's placements.
    probe: VhdxProbe,
    /// The BAT scan, once the region table is read.
    bat: Option<EntryScanner<8>>,
    /// Present BAT entries `(index, entry)` read before the metadata items.
    waiting: Vec<(u64, u64)>,
    layout: Option<VhdxLayout>,
    placer: Placer,
    /// One past the last input byte of any block placed.
    data_end: u64,
}

impl VhdxConverter {
    /// The probe's first finding, as a conversion error.
    fn probe_error(&self) -> Result<(), ConvertError> {
        match self.probe.findings.as_slice().first() {
            Some(r) => Err(ConvertError::image(r.code, r.message.clone())),
            None => Ok(()),
        }
    }

    /// The layout, once the probe has read the metadata items.
    fn read_layout(&mut self) -> Result<Option<VhdxLayout>, ConvertError> {
        let Some(p) = self.probe.params else {
            return Ok(None);
        };
        if p.virtual_size > self.limits.max_virtual_size {
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "VHDX virtual size of {} bytes exceeds the limit of {} bytes",
                    p.virtual_size, self.limits.max_virtual_size
                ),
            ));
        }
        // The probe has checked it is 512 or 4096.
        let logical = self
            .probe
            .items
            .logical_sector_size
            .as_ref()
            .and_then(|c| le_u32(c.bytes(), 0))
            .ok_or_else(|| corrupt("VHDX logical sector size is unreadable".into()))?;
        // 2^23 × 4096 / 1 MiB at most, at least 2^23 × 512 / 256 MiB = 16.
        let chunk_ratio = VHDX_SECTORS_PER_BITMAP
            .saturating_mul(u64::from(logical))
            .checked_div(p.block_size)
            .unwrap_or(1)
            .max(1);
        Ok(Some(VhdxLayout {
            block_size: p.block_size,
            virtual_size: p.virtual_size,
            chunk_ratio,
            bat_entries: p.bat_entries,
        }))
    }

    /// BAT entry `index` (state 6, fully present) is known with its layout: place its block.
    fn place_entry(
        &mut self,
        l: VhdxLayout,
        index: u64,
        entry: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let group = l.chunk_ratio.saturating_add(1);
        // Every `chunk_ratio + 1`-th entry is a sector bitmap (unused without a parent).
        if index >= l.bat_entries || index.saturating_add(1).checked_rem(group) == Some(0) {
            return Ok(());
        }
        let block = index.saturating_sub(index.checked_div(group).unwrap_or(0));
        let Some(output) = block
            .checked_mul(l.block_size)
            .filter(|o| *o < l.virtual_size)
        else {
            return Ok(());
        };
        let input = entry & VHDX_BAT_OFFSET_MASK;
        if input < VHDX_HEADER_SECTION_END {
            return Err(corrupt(format!(
                "VHDX BAT entry {index} places a block at offset {input}, inside the header \
                 section"
            )));
        }
        let len = l.block_size.min(l.virtual_size.saturating_sub(output));
        self.data_end = self.data_end.max(input.saturating_add(len));
        self.placer.place(input, len, output, sink)
    }

    /// Whether every placement is known once `end` bytes are in.
    fn placements_known(&self, end: u64) -> bool {
        self.layout.is_some() && self.bat.as_ref().is_some_and(|s| s.is_done(end))
    }

    /// The first offset after `at` where the bytes change kind: the end of the header
    /// section, or the start or end of the log, the BAT or the metadata region.
    fn next_boundary(&self, at: u64) -> u64 {
        if at < VHDX_HEADER_SECTION_END {
            return VHDX_HEADER_SECTION_END;
        }
        self.probe
            .regions
            .iter()
            .flat_map(|r| [r.start, r.end])
            .filter(|&b| b > at)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Whether `at` is in the header section, the log, the BAT or the metadata region: where
    /// no block may lie, so nothing is spilled.
    fn in_region(&self, at: u64) -> bool {
        at < VHDX_HEADER_SECTION_END
            || self
                .probe
                .regions
                .iter()
                .any(|r| r.start <= at && at < r.end)
    }

    /// Whether `at` is in the BAT region.
    fn in_bat(&self, at: u64) -> bool {
        self.probe.bat_region.is_some_and(|(offset, length)| {
            offset <= at && at < offset.saturating_add(u64::from(length))
        })
    }

    /// Feeds `[at, at + data.len())`, all of it inside the BAT region: each present (or
    /// partially present) entry is handled where it ends, after the bytes before it.
    fn feed_bat(
        &mut self,
        at: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let Some((offset, _)) = self.probe.bat_region else {
            return self.feed_piece(at, data, true, sink);
        };
        let mut entries: Vec<(u64, u64)> = Vec::new();
        if let Some(scanner) = self.bat.as_mut() {
            scanner.feed(at, data, |index, entry| {
                let entry = u64::from_le_bytes(*entry);
                let st = u8::try_from(entry & VHDX_BAT_STATE_MASK).unwrap_or(u8::MAX);
                // Holes; invalid states are the probe's finding at the end.
                if st == state::FULLY_PRESENT || st == state::PARTIALLY_PRESENT {
                    entries.push((index, entry));
                }
            });
        }
        let mut cur = at;
        for (index, entry) in entries {
            let end = offset.saturating_add(index.saturating_add(1).saturating_mul(8));
            self.feed_piece(cur, slice_at(at, data, cur, end), true, sink)?;
            cur = end;
            self.on_entry(index, entry, sink)?;
        }
        let end = at.saturating_add(u64_of(data.len()));
        self.feed_piece(cur, slice_at(at, data, cur, end), true, sink)
    }

    /// A present or partially present BAT entry: placed, or remembered until the layout is
    /// known.
    fn on_entry(
        &mut self,
        index: u64,
        entry: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if entry & VHDX_BAT_STATE_MASK == u64::from(state::PARTIALLY_PRESENT) {
            return Err(corrupt(format!(
                "VHDX BAT entry {index} is partially present, which only a differencing disk \
                 may be"
            )));
        }
        if let Some(l) = self.layout {
            return self.place_entry(l, index, entry, sink);
        }
        let max = self.limits.max_tracked_entries;
        if self.waiting.len() >= max {
            return Err(ConvertError::image(
                ReasonCode::LimitExceeded,
                format!(
                    "VHDX image has more than {max} present blocks before its metadata (BAT \
                     entry {index})"
                ),
            ));
        }
        self.waiting.push((index, entry));
        Ok(())
    }

    /// Feeds `[at, at + data.len())`, holding no boundary of [`Self::next_boundary`] nor BAT
    /// entry event past its start: the probe reads the structures, placed blocks are copied,
    /// and outside the regions the bytes are spilled while placements are unknown. At the end
    /// of the metadata region the layout is read and the remembered entries placed.
    fn feed_piece(
        &mut self,
        at: u64,
        data: &[u8],
        in_region: bool,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = at.saturating_add(u64_of(data.len()));
        // 1. Structures: the probe reads them (and refuses what the inspector refuses).
        self.probe.feed(at, data);
        self.probe_error()?;
        if self.probe.detection == crate::probe::Detection::No {
            return Err(ConvertError::image(
                ReasonCode::UnsupportedFormat,
                "the image has no VHDX file identifier",
            ));
        }
        if self.bat.is_none() {
            if let (Some((offset, length)), true) = (
                self.probe.bat_region,
                self.probe.state != VhdxState::HeaderSection,
            ) {
                self.bat = Some(
                    EntryScanner::new(offset, u64::from(length / 8))
                        .ok_or_else(|| corrupt(format!("VHDX BAT at offset {offset} overflows")))?,
                );
            }
        }
        // 2. Data: copy placed blocks; spill while placements are unknown.
        let spill: &[(u64, u64)] = if in_region || self.placements_known(at) {
            &[]
        } else {
            &[(0, u64::MAX)]
        };
        self.placer.feed(at, data, spill, sink)?;
        // 3. The layout, at a point fixed by the bytes alone: the metadata region's end.
        let metadata_read = self
            .probe
            .metadata_region
            .is_some_and(|(offset, length)| end >= offset.saturating_add(u64::from(length)));
        if self.layout.is_none() && metadata_read {
            self.apply_layout(sink)?;
        }
        if self.placements_known(end) && self.placer.spilled_bytes() > 0 {
            self.placer.forget_spill();
        }
        Ok(())
    }

    /// Reads the layout from the probe's metadata items and places the remembered entries.
    fn apply_layout(&mut self, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        self.layout = self.read_layout()?;
        if let Some(l) = self.layout {
            for (index, entry) in std::mem::take(&mut self.waiting) {
                self.place_entry(l, index, entry, sink)?;
            }
        }
        Ok(())
    }
}

impl FormatConverter for VhdxConverter {
    /// Feeds the chunk piece by piece, split at the header section's end and at region
    /// boundaries (and, inside the BAT, at present entries): every decision is then taken at
    /// an offset fixed by the bytes, whatever the chunking.
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let end = pos.saturating_add(u64_of(data.len()));
        let mut at = pos;
        while at < end {
            let next = self.next_boundary(at).min(end);
            let piece = slice_at(pos, data, at, next);
            if self.in_bat(at) {
                self.feed_bat(at, piece, sink)?;
            } else {
                let in_region = self.in_region(at);
                self.feed_piece(at, piece, in_region, sink)?;
            }
            at = next;
        }
        Ok(())
    }

    fn finish(&mut self, len: u64, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        self.probe_error()?;
        let missing = match self.probe.state {
            VhdxState::HeaderSection => Some("its header section (1 MiB)".to_owned()),
            VhdxState::Regions => Some(format!(
                "its metadata and the end of its block allocation table at {}",
                self.bat.as_ref().map_or(0, EntryScanner::end)
            )),
            VhdxState::Done => None,
        };
        if let Some(what) = missing {
            return Err(truncated(format!(
                "VHDX stream ends at {len} before {what}"
            )));
        }
        if self.layout.is_none() {
            // The stream ends inside the metadata region, after its items.
            self.apply_layout(sink)?;
        }
        let Some(l) = self.layout else {
            return Err(corrupt("VHDX metadata items are unreadable".into()));
        };
        if !self.placements_known(len) {
            return Err(truncated(format!(
                "VHDX stream ends at {len} before the end of its block allocation table"
            )));
        }
        // The probe's end-of-stream checks: invalid states, blocks overlapping metadata.
        self.probe.finish_bat(len);
        self.probe_error()?;
        if let Some((input, output)) = self.placer.first_pending() {
            return Err(truncated(format!(
                "VHDX stream ends at {len} but the block for output offset {output} is at \
                 offset {input} (blocks up to offset {})",
                self.data_end
            )));
        }
        Ok(l.virtual_size)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::super::header::{
        head, metadata, region, VHDX_BAT_GUID, VHDX_CRC, VHDX_FILE_PARAMETERS_GUID,
        VHDX_HEADER_LEN, VHDX_HEADER_OFFSETS, VHDX_LOGICAL_SECTOR_SIZE_GUID, VHDX_METADATA_GUID,
        VHDX_PAGE83_GUID, VHDX_PHYSICAL_SECTOR_SIZE_GUID, VHDX_REGION_TABLE_OFFSETS,
        VHDX_SIGNATURE, VHDX_TABLE_LEN, VHDX_VIRTUAL_DISK_SIZE_GUID,
    };
    use super::*;
    use crate::convert::{Converter, MemorySink, SinkError, Target};
    use crate::Format;

    const M: usize = 1 << 20;

    /// A hand-laid VHDX: regions and blocks anywhere (1 MiB aligned), blocks filled with a
    /// pattern derived from their BAT index.
    struct Layout {
        file_len: usize,
        meta_at: usize,
        bat_at: usize,
        block_size: u32,
        virtual_size: u64,
        /// `(BAT index, raw entry)`.
        entries: Vec<(usize, u64)>,
    }

    fn seal(buf: &mut [u8], at: usize) {
        buf[at..at + 4].fill(0);
        let crc = VHDX_CRC.checksum(buf);
        buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    fn fill(index: usize) -> u8 {
        (index % 200) as u8 + 1
    }

    impl Layout {
        fn build(&self) -> Vec<u8> {
            let mut img = vec![0u8; self.file_len];
            img[..8].copy_from_slice(VHDX_SIGNATURE);
            for (i, at) in VHDX_HEADER_OFFSETS.iter().enumerate() {
                let h = &mut img[*at as usize..*at as usize + VHDX_HEADER_LEN];
                h[..4].copy_from_slice(b"head");
                h[head::SEQUENCE_NUMBER..][..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                h[head::VERSION..][..2].copy_from_slice(&1u16.to_le_bytes());
                seal(h, head::CHECKSUM);
            }
            for at in VHDX_REGION_TABLE_OFFSETS {
                let t = &mut img[at as usize..at as usize + VHDX_TABLE_LEN];
                t[..4].copy_from_slice(b"regi");
                t[region::ENTRY_COUNT..][..4].copy_from_slice(&2u32.to_le_bytes());
                for (i, (guid, offset)) in [
                    (VHDX_METADATA_GUID, self.meta_at),
                    (VHDX_BAT_GUID, self.bat_at),
                ]
                .iter()
                .enumerate()
                {
                    let e = region::ENTRIES + i * region::ENTRY_LEN;
                    t[e..e + 16].copy_from_slice(guid);
                    t[e + region::E_FILE_OFFSET..][..8]
                        .copy_from_slice(&(*offset as u64).to_le_bytes());
                    t[e + region::E_LENGTH..][..4].copy_from_slice(&(M as u32).to_le_bytes());
                    t[e + region::E_FLAGS..][..4].copy_from_slice(&1u32.to_le_bytes());
                }
                seal(t, region::CHECKSUM);
            }
            let m = self.meta_at;
            img[m..m + 8].copy_from_slice(metadata::SIGNATURE);
            let items: Vec<([u8; 16], Vec<u8>)> = vec![
                (
                    VHDX_FILE_PARAMETERS_GUID,
                    [self.block_size.to_le_bytes(), 0u32.to_le_bytes()].concat(),
                ),
                (
                    VHDX_VIRTUAL_DISK_SIZE_GUID,
                    self.virtual_size.to_le_bytes().to_vec(),
                ),
                (VHDX_PAGE83_GUID, vec![7; 16]),
                (VHDX_LOGICAL_SECTOR_SIZE_GUID, 512u32.to_le_bytes().to_vec()),
                (
                    VHDX_PHYSICAL_SECTOR_SIZE_GUID,
                    4096u32.to_le_bytes().to_vec(),
                ),
            ];
            img[m + metadata::ENTRY_COUNT..][..2]
                .copy_from_slice(&(items.len() as u16).to_le_bytes());
            let mut next = 64 << 10;
            for (i, (guid, data)) in items.iter().enumerate() {
                let e = m + metadata::ENTRIES + i * metadata::ENTRY_LEN;
                img[e..e + 16].copy_from_slice(guid);
                img[e + metadata::E_OFFSET..][..4].copy_from_slice(&(next as u32).to_le_bytes());
                img[e + metadata::E_LENGTH..][..4]
                    .copy_from_slice(&(data.len() as u32).to_le_bytes());
                img[e + metadata::E_FLAGS..][..4].copy_from_slice(&4u32.to_le_bytes());
                img[m + next..m + next + data.len()].copy_from_slice(data);
                next += data.len();
            }
            for &(index, entry) in &self.entries {
                img[self.bat_at + 8 * index..][..8].copy_from_slice(&entry.to_le_bytes());
                if entry & 7 == 6 {
                    let at = (entry & VHDX_BAT_OFFSET_MASK) as usize;
                    let end = (at + self.block_size as usize).min(img.len());
                    img[at..end].fill(fill(index));
                }
            }
            img
        }
    }

    fn present(offset: usize) -> u64 {
        offset as u64 | 6
    }

    /// Records output writes (for images whose output is too large to hold).
    #[derive(Default)]
    struct RecordingSink {
        writes: Vec<(u64, Vec<u8>)>,
        spill: MemorySink,
    }

    impl ConvertSink for RecordingSink {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            self.writes.push((offset, data.to_vec()));
            Ok(())
        }
        fn spill_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            self.spill.max_len = 1 << 30;
            self.spill.spill_write(offset, data)
        }
        fn spill_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SinkError> {
            self.spill.spill_read(offset, buf)
        }
    }

    fn convert_into(
        img: &[u8],
        chunk: usize,
        limits: &ConvertLimits,
        sink: &mut dyn ConvertSink,
    ) -> Result<u64, ConvertError> {
        let mut conv = Converter::new(Format::Vhdx, Target::Raw, limits)?;
        for c in img.chunks(chunk) {
            conv.feed(c, sink)?;
        }
        conv.finish(sink)
    }

    fn convert(img: &[u8], chunk: usize) -> Result<Vec<u8>, ConvertError> {
        let mut sink = MemorySink::new(64 << 20);
        let len = convert_into(img, chunk, &ConvertLimits::default(), &mut sink)?;
        sink.output.resize(len as usize, 0);
        Ok(sink.output)
    }

    /// Three blocks of 1 MiB, the last cut at 2.5 MiB, the second a hole.
    fn three_blocks(meta_at: usize, bat_at: usize, blocks: [usize; 2]) -> Layout {
        Layout {
            file_len: blocks[0].max(blocks[1]).max(meta_at).max(bat_at) + M,
            meta_at,
            bat_at,
            block_size: M as u32,
            virtual_size: (5 * M / 2) as u64,
            entries: vec![(0, present(blocks[0])), (1, 2), (2, present(blocks[1]))],
        }
    }

    fn expected_three() -> Vec<u8> {
        let mut out = vec![0u8; 5 * M / 2];
        out[..M].fill(fill(0));
        out[2 * M..].fill(fill(2));
        out
    }

    #[test]
    fn test_vhdx_convert_metadata_first_any_chunking_is_exact() {
        let img = three_blocks(M, 2 * M, [3 * M, 4 * M]).build();
        for chunk in [4093, 65536, M, img.len()] {
            assert_eq!(
                convert(&img, chunk).unwrap(),
                expected_three(),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn test_vhdx_convert_bat_before_metadata_is_exact() {
        // qemu's order: BAT, then metadata, then blocks in reverse order.
        let img = three_blocks(3 * M, 2 * M, [5 * M, 4 * M]).build();
        for chunk in [1000, 4097, M, img.len()] {
            assert_eq!(
                convert(&img, chunk).unwrap(),
                expected_three(),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn test_vhdx_convert_data_before_metadata_is_spilled_and_placed() {
        // Blocks at 1 MiB and 2 MiB, BAT at 3 MiB, metadata at 4 MiB: both blocks spilled.
        let img = three_blocks(4 * M, 3 * M, [M, 2 * M]).build();
        for chunk in [4097, M, img.len()] {
            assert_eq!(
                convert(&img, chunk).unwrap(),
                expected_three(),
                "chunk {chunk}"
            );
        }
        let small = ConvertLimits {
            max_spill_bytes: M as u64,
            ..ConvertLimits::default()
        };
        let mut sink = MemorySink::new(64 << 20);
        assert!(matches!(
            convert_into(&img, 4097, &small, &mut sink),
            Err(ConvertError::Image {
                code: ReasonCode::LimitExceeded,
                ..
            })
        ));
    }

    /// Converts `img` with both limits swept around what it needs: every pair gives one
    /// result for every chunking, `expected` or `limit_exceeded`. Returns how many pairs failed
    /// and converted.
    fn sweep(img: &[u8], expected: &[u8]) -> (usize, usize) {
        let sizes = [4093, M - 1, 3 * M + 5];
        let (mut limited, mut converted) = (0, 0);
        for spill in [0, M, 2 * M - 1, 2 * M] {
            for tracked in 0..=2 {
                let limits = ConvertLimits {
                    max_spill_bytes: spill as u64,
                    max_tracked_entries: tracked,
                    ..ConvertLimits::default()
                };
                let r = crate::convert::assert_convert_chunking_invariant(
                    Format::Vhdx,
                    img,
                    &limits,
                    sizes,
                );
                match r {
                    Ok(out) => {
                        assert!(out == expected, "spill {spill}, tracked {tracked}");
                        converted += 1;
                    }
                    Err(ConvertError::Image {
                        code: ReasonCode::LimitExceeded,
                        ..
                    }) => limited += 1,
                    Err(e) => panic!("spill {spill}, tracked {tracked}: {e:?}"),
                }
            }
        }
        (limited, converted)
    }

    #[test]
    fn test_vhdx_convert_limits_do_not_depend_on_chunking() {
        for (name, layout) in [
            // Blocks, then the BAT, then the metadata: both blocks spilled.
            ("data first", three_blocks(4 * M, 3 * M, [M, 2 * M])),
            // Metadata, a block, the BAT, a block: one block spilled.
            (
                "data before the BAT",
                three_blocks(M, 3 * M, [2 * M, 4 * M]),
            ),
            // qemu's order: BAT entries wait for the metadata, nothing is spilled.
            ("qemu", three_blocks(3 * M, 2 * M, [5 * M, 4 * M])),
        ] {
            let (limited, converted) = sweep(&layout.build(), &expected_three());
            assert!(
                limited > 0 && converted > 0,
                "{name}: {limited} limited, {converted} converted"
            );
        }
    }

    #[test]
    fn test_vhdx_convert_small_chunks_agree_near_the_spill_limit() {
        let img = three_blocks(4 * M, 3 * M, [M, 2 * M]).build();
        let limits = ConvertLimits {
            max_spill_bytes: M as u64,
            ..ConvertLimits::default()
        };
        crate::convert::assert_convert_chunking_invariant(Format::Vhdx, &img, &limits, [7, 512])
            .ok();
    }

    #[test]
    fn test_vhdx_convert_skips_sector_bitmap_entries() {
        // chunk_ratio = 2^23 × 512 / 1 MiB = 4096: entry 4096 is a sector bitmap, and
        // payload block 4096 is entry 4097.
        let layout = Layout {
            file_len: 6 * M,
            meta_at: 3 * M,
            bat_at: 2 * M,
            block_size: M as u32,
            virtual_size: (4096 * M) as u64 + 512,
            entries: vec![
                (0, present(4 * M)),
                (4096, 6 | (5 << 20)),
                (4097, present(5 * M)),
            ],
        };
        let img = layout.build();
        let mut sink = RecordingSink::default();
        let len = convert_into(&img, 65536, &ConvertLimits::default(), &mut sink).unwrap();
        assert_eq!(len, 4096 * M as u64 + 512);
        // Block 0 from entry 0; block 4096 (entry 4097) cut at the virtual size; nothing of
        // the sector bitmap entry 4096.
        let mut covered = [0usize; 2];
        for (offset, data) in &sink.writes {
            let (slot, value, end) = if *offset < M as u64 {
                (0, fill(0), M as u64)
            } else {
                (1, fill(4097), len)
            };
            assert!(
                *offset >= slot as u64 * 4096 * M as u64,
                "write at {offset}"
            );
            assert!(*offset + data.len() as u64 <= end, "write at {offset}");
            assert!(data.iter().all(|b| *b == value), "write at {offset}");
            covered[slot] += data.len();
        }
        assert_eq!(covered, [M, 512]);
    }

    #[test]
    fn test_vhdx_convert_partially_present_is_corrupt() {
        let mut layout = three_blocks(M, 2 * M, [3 * M, 4 * M]);
        layout.entries[1] = (1, (4 * M) as u64 | 7);
        assert!(matches!(
            convert(&layout.build(), M),
            Err(ConvertError::Image {
                code: ReasonCode::Corrupt,
                ..
            })
        ));
    }

    #[test]
    fn test_vhdx_convert_cut_image_is_truncated() {
        let img = three_blocks(3 * M, 2 * M, [4 * M, 5 * M]).build();
        for cut in [
            100,
            300 << 10,
            2 * M + 10,
            3 * M + 100,
            4 * M + 5,
            5 * M + 100,
        ] {
            let r = convert(&img[..cut], 4097);
            assert!(
                matches!(
                    r,
                    Err(ConvertError::Image {
                        code: ReasonCode::Truncated,
                        ..
                    })
                ),
                "cut {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn test_vhdx_convert_not_vhdx_is_refused() {
        assert!(convert(&[0u8; 5000], 512).is_err());
    }
}
