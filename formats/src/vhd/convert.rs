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
//!   Blocks arriving before the BAT (a layout no writer produces) are spilled.
//!
//! Memory: 512 bytes held back, a 1024-byte dynamic header, and the
//! [`Placer`](crate::vmdk::convert::Placer)'s bound: at most `max_tracked_entries` blocks
//! pending. Spill: only bytes after the BAT's start that arrive before the BAT is complete,
//! at most `max_spill_bytes`.

use super::{
    dyn_header, vhd_virtual_size, VhdDiskType, VhdFooter, VHD_BAT_UNALLOCATED,
    VHD_DYN_HEADER_COOKIE, VHD_DYN_HEADER_LEN, VHD_DYN_HEADER_LEN_U64, VHD_FOOTER_LEN,
    VHD_FOOTER_LEN_U64, VHD_MAX_BLOCK_SIZE, VHD_MAX_SECTORS, VHD_MAX_TABLE_ENTRIES,
    VHD_MIN_BLOCK_SIZE, VHD_SECTOR,
};
use crate::convert::{corrupt, truncated};
use crate::convert::{ConvertError, ConvertLimits, ConvertSink, FormatConverter};
use crate::stream::u64_of;
use crate::stream::{be_u32, be_u64, Capture, EntryScanner};
use crate::vmdk::convert::{write_nonzero, Placer};
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
        if let VhdDynPart::Header(cap) = &mut self.part {
            if cap.feed(pos, data) {
                let h = cap.bytes().to_vec();
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
            self.place_block(index, sector, sink)?;
        }
        if bat_done {
            self.part = VhdDynPart::Data;
        }
        let spill_from = match self.part {
            VhdDynPart::Header(_) => Some(VHD_FOOTER_LEN_U64),
            VhdDynPart::Bat(_) => Some(self.bat_offset),
            VhdDynPart::Data => None,
        };
        self.placer.feed(pos, data, spill_from, sink)?;
        if spill_from.is_none() && self.placer.spilled_bytes() > 0 {
            self.placer.forget_spill();
        }
        Ok(())
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
    use super::super::VHD_FOOTER_COOKIE;
    use super::*;
    use crate::convert::{convert_chunked, Target};
    use crate::Format;

    fn convert(img: &[u8], chunk: usize) -> Result<Vec<u8>, ConvertError> {
        let limits = ConvertLimits::default();
        let (mut sink, len) = convert_chunked(Format::Vhd, Target::Raw, img, chunk, &limits)?;
        sink.output.resize(len as usize, 0);
        Ok(sink.output)
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
