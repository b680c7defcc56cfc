//! Streaming conversion, vhd to raw.
//!
//! - **Fixed**: the data is a raw disk followed by a 512-byte footer, recognised only at the
//!   end. Every byte is written in place as it arrives except the last 512 seen so far, held
//!   back until the end of the stream shows whether they are the footer. The output length is
//!   the footer's virtual size as qemu computes it ([`super::vhd_virtual_size`]: CHS geometry
//!   for creators `vpc ` and `qemu`, the current size otherwise). Bytes between that size and
//!   the footer (none in images qemu or Hyper-V write) may have been written past the returned
//!   length: the caller sizes the output to the returned length.
//! - **Dynamic**: footer copy at 0, dynamic header, BAT, then blocks of a sector bitmap and
//!   data. Each allocated block's data is copied to `index × block_size` as it streams past;
//!   unallocated blocks stay holes. Like qemu's `vpc` driver (whose bitmap lookup is compiled
//!   out), the sector bitmap is not consulted: a data sector reads as what the file holds.
//!   Blocks arriving before the BAT (a layout no writer produces) are spilled. Each BAT entry
//!   is handled after the bytes before it, so what is spilled and tracked (and whether a
//!   limit is hit) depends only on the bytes.
//!
//! Memory: 512 bytes held back, a 1024-byte dynamic header, and the
//! [`Placer`](crate::support::placer::Placer)'s bound: at most `max_tracked_entries` blocks
//! pending. Spill: only the bytes where a block may lie before the BAT, between the footer
//! copy and the dynamic header and between the dynamic header and the BAT, at most
//! `max_spill_bytes` (none for qemu's and Hyper-V's layouts, where they are adjacent).

use super::header::{
    dyn_header, vhd_virtual_size, VhdDiskType, VhdFooter, VHD_BAT_UNALLOCATED,
    VHD_DYN_HEADER_COOKIE, VHD_DYN_HEADER_LEN, VHD_DYN_HEADER_LEN_U64, VHD_FOOTER_LEN,
    VHD_FOOTER_LEN_U64, VHD_MAX_BLOCK_SIZE, VHD_MAX_SECTORS, VHD_MAX_TABLE_ENTRIES,
    VHD_MIN_BLOCK_SIZE, VHD_SECTOR,
};
use crate::stream::u64_of;
use crate::stream::{be_u32, be_u64, slice_at, Capture, EntryScanner};
use crate::support::converter::{corrupt, truncated};
use crate::support::converter::{ConvertError, ConvertLimits, FormatConverter};
use crate::support::placer::{write_nonzero, Placer};
use crate::support::sink::ConvertSink;
use crate::ReasonCode;

/// The vhd to raw converter.
///
/// # Errors
/// Never at construction; see [`ConvertError`] while feeding.
pub(crate) fn converter(limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Ok(Box::new(VhdConverter {
        limits: limits.clone(),
        head: Capture::new(0, VHD_FOOTER_LEN),
        state: VhdConvertState::Head,
    }))
}

/// Where the converter is.
#[derive(Debug)]
enum VhdConvertState {
    /// Waiting for the first sector.
    Head,
    /// No footer copy at offset 0: a fixed disk (checked at the end).
    Fixed(VhdFixed),
    /// A dynamic disk.
    Dynamic(Box<VhdDynamic>),
}

/// The vhd to raw converter.
#[derive(Debug)]
struct VhdConverter {
    limits: ConvertLimits,
    head: Capture,
    state: VhdConvertState,
}

impl FormatConverter for VhdConverter {
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if matches!(self.state, VhdConvertState::Head) {
            // Nothing is written before the first sector is in: it decides the layout.
            if !self.head.feed(pos, data) {
                return Ok(());
            }
            self.state = match VhdFooter::parse(self.head.bytes()) {
                Some(f) => VhdConvertState::Dynamic(Box::new(VhdDynamic::new(&f, &self.limits)?)),
                None => {
                    // The first sector is data: write it, then the rest of this chunk.
                    let mut fixed = VhdFixed::default();
                    fixed.feed(0, self.head.bytes(), sink)?;
                    let skip = usize::try_from(VHD_FOOTER_LEN_U64.saturating_sub(pos))
                        .unwrap_or(usize::MAX);
                    let rest = data.get(skip..).unwrap_or(&[]);
                    fixed.feed(VHD_FOOTER_LEN_U64.max(pos), rest, sink)?;
                    self.state = VhdConvertState::Fixed(fixed);
                    return Ok(());
                }
            };
        }
        match &mut self.state {
            VhdConvertState::Head => Ok(()),
            VhdConvertState::Fixed(f) => f.feed(pos, data, sink),
            VhdConvertState::Dynamic(d) => d.feed(pos, data, sink),
        }
    }

    fn finish(&mut self, len: u64, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        match &mut self.state {
            VhdConvertState::Head => Err(truncated(format!(
                "VHD image of {len} bytes is shorter than its {VHD_FOOTER_LEN}-byte footer"
            ))),
            VhdConvertState::Fixed(f) => f.finish(len, &self.limits),
            VhdConvertState::Dynamic(d) => d.finish(len, sink),
        }
    }
}

/// A fixed disk: data in place, the last 512 bytes held back.
#[derive(Debug, Default)]
struct VhdFixed {
    /// The last bytes seen (at most 512 once more have arrived), starting at `held_at`.
    held: Vec<u8>,
    held_at: u64,
}

impl VhdFixed {
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.held.is_empty() {
            self.held_at = pos;
        }
        if data.len() >= VHD_FOOTER_LEN {
            write_nonzero(sink, self.held_at, &self.held)?;
            let (body, last) = data.split_at(data.len().saturating_sub(VHD_FOOTER_LEN));
            write_nonzero(sink, pos, body)?;
            self.held.clear();
            self.held.extend_from_slice(last);
            self.held_at = pos.saturating_add(u64_of(body.len()));
            return Ok(());
        }
        self.held.extend_from_slice(data);
        let excess = self.held.len().saturating_sub(VHD_FOOTER_LEN);
        if excess > 0 {
            if let Some(out) = self.held.get(..excess) {
                write_nonzero(sink, self.held_at, out)?;
            }
            self.held.drain(..excess);
            self.held_at = self.held_at.saturating_add(u64_of(excess));
        }
        Ok(())
    }

    fn finish(&mut self, len: u64, limits: &ConvertLimits) -> Result<u64, ConvertError> {
        let footer = VhdFooter::parse(&self.held).ok_or_else(|| {
            ConvertError::image(
                ReasonCode::UnsupportedFormat,
                "VHD image has no footer in its last 512 bytes",
            )
        })?;
        if footer.disk_type != VhdDiskType::Fixed {
            return Err(corrupt(
                "VHD footer at end of stream is not a fixed disk's, and there is no footer copy \
                 at offset 0"
                    .into(),
            ));
        }
        check_sectors(&footer, limits)?;
        let size = vhd_virtual_size(&footer);
        let data = len.saturating_sub(VHD_FOOTER_LEN_U64);
        if size > data {
            return Err(truncated(format!(
                "fixed VHD declares {size} bytes but holds only {data} bytes before its footer"
            )));
        }
        Ok(size)
    }
}

/// qemu's size limit and Sluice's cap on the virtual size.
fn check_sectors(f: &VhdFooter, limits: &ConvertLimits) -> Result<(), ConvertError> {
    let sectors = f.sectors();
    if sectors > VHD_MAX_SECTORS {
        return Err(corrupt(format!(
            "VHD virtual size of {sectors} sectors exceeds the format's maximum of \
             {VHD_MAX_SECTORS} sectors"
        )));
    }
    let size = vhd_virtual_size(f);
    if size > limits.max_virtual_size {
        return Err(ConvertError::image(
            ReasonCode::LimitExceeded,
            format!(
                "VHD virtual size of {size} bytes exceeds the limit of {} bytes",
                limits.max_virtual_size
            ),
        ));
    }
    Ok(())
}

/// A dynamic disk's structures, in stream order.
#[derive(Debug)]
enum VhdDynPart {
    /// Collecting the dynamic header.
    Header(Capture),
    /// Scanning the BAT.
    Bat(EntryScanner<4>),
    /// Every block is known.
    Data,
}

/// A dynamic disk being converted.
#[derive(Debug)]
struct VhdDynamic {
    part: VhdDynPart,
    virtual_size: u64,
    data_offset: u64,
    bat_offset: u64,
    bat_end: u64,
    block_size: u64,
    bitmap_size: u64,
    placer: Placer,
    /// One past the last input byte of any block.
    data_end: u64,
}

impl VhdDynamic {
    fn new(f: &VhdFooter, limits: &ConvertLimits) -> Result<Self, ConvertError> {
        match f.disk_type {
            VhdDiskType::Dynamic => {}
            VhdDiskType::Differencing => {
                return Err(ConvertError::image(
                    ReasonCode::BackingFile,
                    "differencing VHD references a parent image",
                ))
            }
            VhdDiskType::Fixed | VhdDiskType::Other(_) => {
                return Err(corrupt(
                    "VHD footer copy at offset 0 is not a dynamic disk's".into(),
                ))
            }
        }
        check_sectors(f, limits)?;
        if f.data_offset < VHD_FOOTER_LEN_U64 || f.data_offset == u64::MAX {
            return Err(corrupt(format!(
                "VHD dynamic header offset {} overlaps the footer copy at offset 0",
                f.data_offset
            )));
        }
        Ok(VhdDynamic {
            part: VhdDynPart::Header(Capture::new(f.data_offset, VHD_DYN_HEADER_LEN)),
            virtual_size: vhd_virtual_size(f),
            data_offset: f.data_offset,
            bat_offset: 0,
            bat_end: 0,
            block_size: 0,
            bitmap_size: 0,
            placer: Placer::new(limits, "VHD"),
            data_end: 0,
        })
    }

    /// Checks the dynamic header and starts the BAT scan.
    fn on_header(&mut self, h: &[u8]) -> Result<(), ConvertError> {
        let at = self.data_offset;
        if h.get(dyn_header::COOKIE..8) != Some(VHD_DYN_HEADER_COOKIE.as_slice()) {
            return Err(corrupt(format!(
                "VHD has no dynamic header (cxsparse) at offset {at}"
            )));
        }
        let (Some(bat_offset), Some(entries), Some(block_size)) = (
            be_u64(h, dyn_header::TABLE_OFFSET),
            be_u32(h, dyn_header::MAX_TABLE_ENTRIES),
            be_u32(h, dyn_header::BLOCK_SIZE),
        ) else {
            return Err(truncated(format!("VHD dynamic header at {at} is short")));
        };
        if !block_size.is_power_of_two()
            || !(VHD_MIN_BLOCK_SIZE..=VHD_MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(corrupt(format!(
                "VHD block size {block_size} is not a power of two from {VHD_MIN_BLOCK_SIZE} to \
                 {VHD_MAX_BLOCK_SIZE}"
            )));
        }
        if entries > VHD_MAX_TABLE_ENTRIES {
            return Err(corrupt(format!(
                "VHD block allocation table has {entries} entries, more than qemu's limit of \
                 {VHD_MAX_TABLE_ENTRIES}"
            )));
        }
        let block_size = u64::from(block_size);
        if u64::from(entries).saturating_mul(block_size) < self.virtual_size {
            return Err(corrupt(format!(
                "VHD block allocation table of {entries} blocks of {block_size} bytes covers less \
                 than the virtual size of {} bytes",
                self.virtual_size
            )));
        }
        let header_end = at.saturating_add(VHD_DYN_HEADER_LEN_U64);
        if bat_offset < header_end {
            return Err(corrupt(format!(
                "VHD block allocation table at offset {bat_offset} does not follow the dynamic \
                 header (which ends at {header_end})"
            )));
        }
        let scanner = EntryScanner::<4>::new(bat_offset, u64::from(entries)).ok_or_else(|| {
            corrupt(format!(
                "VHD block allocation table at offset {bat_offset} overflows"
            ))
        })?;
        self.bat_offset = bat_offset;
        self.bat_end = scanner.end();
        self.block_size = block_size;
        // qemu: ((block_size / (8 * 512)) + 511) & ~511.
        self.bitmap_size =
            (block_size / (8 * VHD_SECTOR)).saturating_add(VHD_SECTOR - 1) & !(VHD_SECTOR - 1);
        self.part = VhdDynPart::Bat(scanner);
        Ok(())
    }

    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let data_end = pos.saturating_add(u64_of(data.len()));
        // Events are handled in stream order, each after the data before it: the header where
        // it ends, then each BAT entry where it ends.
        let mut at = pos;
        if let VhdDynPart::Header(cap) = &mut self.part {
            if cap.feed(pos, data) {
                let (h, header_end) = (cap.bytes().to_vec(), cap.end());
                self.feed_data(at, slice_at(pos, data, at, header_end), sink)?;
                at = header_end;
                self.on_header(&h)?;
            }
        }
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        let mut bat_done = false;
        if let VhdDynPart::Bat(scanner) = &mut self.part {
            scanner.feed(pos, data, |index, entry| {
                let sector = u32::from_be_bytes(*entry);
                if sector != VHD_BAT_UNALLOCATED {
                    blocks.push((index, u64::from(sector)));
                }
            });
            bat_done = scanner.is_done(data_end);
        }
        for (index, sector) in blocks {
            let entry_end = self
                .bat_offset
                .saturating_add(index.saturating_add(1).saturating_mul(4));
            self.feed_data(at, slice_at(pos, data, at, entry_end), sink)?;
            at = entry_end;
            self.place_block(index, sector, sink)?;
        }
        if bat_done {
            self.part = VhdDynPart::Data;
        }
        self.feed_data(at, slice_at(pos, data, at, data_end), sink)?;
        if bat_done && self.placer.spilled_bytes() > 0 {
            self.placer.forget_spill();
        }
        Ok(())
    }

    /// Copies placed blocks out of input `[at, at + data.len())`, spilling its bytes where a
    /// block may lie before the BAT: between the footer copy and the dynamic header, and
    /// between the dynamic header and the BAT (once the header is read).
    fn feed_data(
        &mut self,
        at: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let header_end = self.data_offset.saturating_add(VHD_DYN_HEADER_LEN_U64);
        // `bat_offset` is 0 until the header is read: an empty range.
        let spill = [
            (VHD_FOOTER_LEN_U64, self.data_offset),
            (header_end, self.bat_offset),
        ];
        self.placer.feed(at, data, &spill, sink)
    }

    /// BAT entry `index` names the block whose bitmap is at `sector`.
    fn place_block(
        &mut self,
        index: u64,
        sector: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let output = index.saturating_mul(self.block_size);
        if output >= self.virtual_size {
            return Ok(());
        }
        let start = sector.saturating_mul(VHD_SECTOR);
        let input = start.saturating_add(self.bitmap_size);
        let len = self
            .block_size
            .min(self.virtual_size.saturating_sub(output));
        let end = input.saturating_add(len);
        let hits = |s: u64, e: u64| start < e && s < end;
        if hits(0, VHD_FOOTER_LEN_U64)
            || hits(
                self.data_offset,
                self.data_offset.saturating_add(VHD_DYN_HEADER_LEN_U64),
            )
            || hits(self.bat_offset, self.bat_end)
        {
            return Err(corrupt(format!(
                "VHD block {index} at offset {start} overlaps the image's metadata"
            )));
        }
        self.data_end = self.data_end.max(
            start
                .saturating_add(self.bitmap_size)
                .saturating_add(self.block_size),
        );
        self.placer.place(input, len, output, sink)
    }

    fn finish(&mut self, len: u64, _sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        match self.part {
            VhdDynPart::Header(_) => {
                return Err(truncated(format!(
                    "VHD stream ends at {len} before its dynamic header at offset {}",
                    self.data_offset
                )))
            }
            VhdDynPart::Bat(_) => {
                return Err(truncated(format!(
                    "VHD stream ends at {len} before the end of its block allocation table at {}",
                    self.bat_end
                )))
            }
            VhdDynPart::Data => {}
        }
        let needed = self.data_end.saturating_add(VHD_FOOTER_LEN_U64);
        if needed > len || self.placer.first_pending().is_some() {
            return Err(truncated(format!(
                "VHD data ends at offset {} but the stream holds only {len} bytes (including \
                 the 512-byte footer)",
                self.data_end
            )));
        }
        Ok(self.virtual_size)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::super::header::{footer, VHD_FOOTER_COOKIE};
    use super::*;
    use crate::convert::{assert_convert_chunking_invariant, convert_chunked, Target};
    use crate::Format;

    fn convert(img: &[u8], chunk: usize) -> Result<Vec<u8>, ConvertError> {
        let limits = ConvertLimits::default();
        let (mut sink, len) = convert_chunked(Format::Vhd, Target::Raw, img, chunk, &limits)?;
        sink.output.resize(len as usize, 0);
        Ok(sink.output)
    }

    /// Block size of the dynamic test image: 4 KiB, whose sector bitmap is one sector.
    const BLOCK: usize = 4096;

    /// A dynamic VHD with the dynamic header at `header_at`, a BAT of 256 entries at
    /// `bat_at`, and block `i` (bitmap and data) at `blocks[i]`, followed by the footer.
    /// Returns the image and the expected raw output.
    fn dynamic_image(header_at: usize, bat_at: usize, blocks: [usize; 3]) -> (Vec<u8>, Vec<u8>) {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(VHD_FOOTER_COOKIE);
        f[footer::DATA_OFFSET..][..8].copy_from_slice(&(header_at as u64).to_be_bytes());
        f[footer::CREATOR_APP..][..4].copy_from_slice(b"win ");
        f[footer::CURRENT_SIZE..][..8].copy_from_slice(&(3 * BLOCK as u64).to_be_bytes());
        f[footer::DISK_TYPE..][..4].copy_from_slice(&3u32.to_be_bytes());
        let len = blocks.iter().max().unwrap().max(&bat_at) + 512 + BLOCK;
        let mut img = vec![0u8; len];
        img[..512].copy_from_slice(&f);
        let h = &mut img[header_at..header_at + VHD_DYN_HEADER_LEN];
        h[..8].copy_from_slice(VHD_DYN_HEADER_COOKIE);
        h[dyn_header::TABLE_OFFSET..][..8].copy_from_slice(&(bat_at as u64).to_be_bytes());
        h[dyn_header::MAX_TABLE_ENTRIES..][..4].copy_from_slice(&256u32.to_be_bytes());
        h[dyn_header::BLOCK_SIZE..][..4].copy_from_slice(&(BLOCK as u32).to_be_bytes());
        img[bat_at..bat_at + 1024].fill(0xff);
        let mut out = vec![0u8; 3 * BLOCK];
        for (i, at) in blocks.into_iter().enumerate() {
            img[bat_at + 4 * i..][..4].copy_from_slice(&(at as u32 / 512).to_be_bytes());
            img[at + 512..at + 512 + BLOCK].fill(i as u8 + 1);
            out[i * BLOCK..(i + 1) * BLOCK].fill(i as u8 + 1);
        }
        img.extend_from_slice(&f);
        (img, out)
    }

    /// Blocks before the dynamic header, between it and the BAT, and after the BAT: footer
    /// copy (0), block 0 (512), dynamic header (5120), block 1 (6144), BAT (10752), block 2
    /// (11776), footer (16384).
    fn dynamic_blocks_around_metadata() -> (Vec<u8>, Vec<u8>) {
        dynamic_image(5120, 10752, [512, 6144, 11776])
    }

    /// qemu's layout: footer copy, dynamic header (512), BAT (1536), blocks after it.
    fn dynamic_qemu_layout() -> (Vec<u8>, Vec<u8>) {
        dynamic_image(512, 1536, [2560, 7168, 11776])
    }

    /// Chunk sizes the chunking tests feed (besides the whole image).
    const SIZES: [usize; 12] = [1, 2, 3, 7, 13, 64, 511, 512, 513, 1000, 4095, 4096];

    fn limits(spill: u64, tracked: usize) -> ConvertLimits {
        ConvertLimits {
            max_spill_bytes: spill,
            max_tracked_entries: tracked,
            ..ConvertLimits::default()
        }
    }

    /// Sweeps both limits over `img`: every pair gives one result for every chunking, the
    /// expected output or `limit_exceeded`. Returns how many pairs failed and converted.
    fn sweep(img: &[u8], expected: &[u8]) -> (usize, usize) {
        let any = |l: &ConvertLimits| assert_convert_chunking_invariant(Format::Vhd, img, l, SIZES);
        assert_eq!(any(&ConvertLimits::default()).unwrap(), expected);
        let (mut limited, mut converted) = (0, 0);
        for spill in (0..=16384).step_by(1024) {
            for tracked in 0..=3 {
                match any(&limits(spill, tracked)) {
                    Ok(out) => {
                        assert_eq!(out, expected, "spill {spill}, tracked {tracked}");
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
    fn test_vhd_convert_dynamic_limits_do_not_depend_on_chunking() {
        let (img, expected) = dynamic_blocks_around_metadata();
        let (limited, converted) = sweep(&img, &expected);
        assert!(
            limited > 0 && converted > 0,
            "{limited} limited, {converted} converted"
        );
    }

    #[test]
    fn test_vhd_convert_qemu_layout_never_spills() {
        // Nothing precedes the BAT but metadata: no spill limit, however small, is hit.
        let (img, expected) = dynamic_qemu_layout();
        assert_eq!(
            assert_convert_chunking_invariant(Format::Vhd, &img, &limits(0, 3), SIZES).unwrap(),
            expected
        );
        let (limited, converted) = sweep(&img, &expected);
        assert!(
            limited > 0 && converted > 0,
            "{limited} limited, {converted} converted"
        );
    }

    #[test]
    fn test_vhd_convert_dynamic_every_chunk_size_agrees_near_the_limits() {
        let (img, _) = dynamic_blocks_around_metadata();
        for (spill, tracked) in [(8192, 16), (16384, 1), (1 << 20, 2)] {
            assert_convert_chunking_invariant(Format::Vhd, &img, &limits(spill, tracked), 1..=600)
                .ok();
        }
    }

    #[test]
    fn test_vhd_convert_fixed_holds_back_footer_in_any_chunking() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut img = data.clone();
        // The probe's footer for a fixed disk of 4096 bytes, creator "win " (current size).
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(VHD_FOOTER_COOKIE);
        f[28..32].copy_from_slice(b"win ");
        f[48..56].copy_from_slice(&4096u64.to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        img.extend(f);
        for chunk in [1, 7, 511, 512, 513, 4097, img.len()] {
            assert_eq!(convert(&img, chunk).unwrap(), data, "chunk {chunk}");
        }
        assert!(matches!(
            convert(&img[..4000], 512),
            Err(ConvertError::Image {
                code: ReasonCode::UnsupportedFormat,
                ..
            })
        ));
    }
}
