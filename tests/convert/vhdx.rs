//! vhdx → raw conversion on real images made by `qemu-img` (dynamic and fixed, 1, 8 and 32 MiB
//! blocks, virtual sizes that are not a whole number of blocks, an image past 4 GiB whose BAT
//! interleaves a sector-bitmap entry): output equal to `qemu-img convert -O raw`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sluice_formats::convert::{ConvertSink, MemorySink, SinkError};
use sluice_formats::{ConvertLimits, Converter, Format, Target};

use super::vmdk::{
    assert_converts_like_qemu, assert_cuts_are_truncated, convert_chunked, qemu_raw,
};
use crate::common::*;

fn vhdx_with_data(dir: &Path, name: &str, opts: &str, size: u64) -> PathBuf {
    let raw = raw_with_data(dir, &format!("{name}.raw"), size);
    qemu_img_convert(&raw, &dir.join(name), "vhdx", opts)
}

/// Where qemu puts the BAT region (after the 1 MiB header section and the 1 MiB log).
const QEMU_BAT_OFFSET: usize = 2 << 20;

/// 20 MiB + 3 sectors: not a whole number of 1, 8 or 32 MiB blocks.
const ODD_SIZE: u64 = (20 << 20) + 3 * 512;

#[test]
fn test_convert_vhdx_dynamic_matches_qemu() {
    let dir = scratch();
    for bs in ["1M", "8M", "32M"] {
        let opts = format!("subformat=dynamic,block_size={bs}");
        let path = vhdx_with_data(dir.path(), &format!("d{bs}.vhdx"), &opts, ODD_SIZE);
        assert_converts_like_qemu(&path, Format::Vhdx, "vhdx");
    }
    let large = vhdx_with_data(dir.path(), "l.vhdx", "block_size=8M", 72 << 20);
    assert_converts_like_qemu(&large, Format::Vhdx, "vhdx");
    let empty = qemu_img_create(dir.path(), "e.vhdx", "vhdx", "", "10M");
    assert_converts_like_qemu(&empty, Format::Vhdx, "vhdx");
}

#[test]
fn test_convert_vhdx_fixed_matches_qemu() {
    let dir = scratch();
    for bs in ["1M", "8M", "32M"] {
        let opts = format!("subformat=fixed,block_size={bs}");
        let path = vhdx_with_data(dir.path(), &format!("f{bs}.vhdx"), &opts, ODD_SIZE);
        assert_converts_like_qemu(&path, Format::Vhdx, "vhdx");
    }
}

#[test]
fn test_convert_vhdx_small_image_byte_by_byte_matches_qemu() {
    let dir = scratch();
    let path = vhdx_with_data(dir.path(), "s.vhdx", "block_size=1M", (1 << 20) + 512);
    let bytes = read(&path);
    let out = convert_chunked(&bytes, Format::Vhdx, &[1], &ConvertLimits::default())
        .expect("byte-by-byte conversion");
    assert!(out == qemu_raw(&path, "vhdx"), "byte by byte differs");
}

#[test]
fn test_convert_vhdx_cut_images_are_truncated() {
    let dir = scratch();
    for (name, opts) in [("d.vhdx", "block_size=1M"), ("f.vhdx", "subformat=fixed")] {
        let path = vhdx_with_data(dir.path(), name, opts, ODD_SIZE);
        let bytes = read(&path);
        // qemu's layout: the BAT region at 2 MiB; block 0's file offset in bits 20..63.
        let entry = u64::from_le_bytes(bytes[QEMU_BAT_OFFSET..][..8].try_into().unwrap());
        let block0 = (entry & !0xf_ffff) as usize;
        assert!(
            entry & 7 == 6 && block0 >= 4 << 20,
            "block 0 entry {entry:#x}"
        );
        // Inside the header section, the log, the BAT, the metadata region, the first block.
        let mut cuts = vec![
            100,
            3 << 19,
            (2 << 20) + 100,
            (3 << 20) + 100,
            block0 + 4097,
        ];
        if name == "d.vhdx" {
            // One byte short of the last block (qemu writes dynamic blocks whole; a fixed
            // image's last block extends past the virtual size, which qemu never reads).
            cuts.push(bytes.len() - 1);
        }
        assert_cuts_are_truncated(&path, Format::Vhdx, &cuts);
    }
}

/// Output to a (sparse) file, spill in memory: for outputs too large to hold.
struct FileSink {
    out: File,
    spill: MemorySink,
}

impl ConvertSink for FileSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.out
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.out.write_all(data))
            .map_err(|e| SinkError(e.to_string()))
    }

    fn spill_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.spill.spill_write(offset, data)
    }

    fn spill_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SinkError> {
        self.spill.spill_read(offset, buf)
    }
}

/// Whether two files hold the same bytes, read 1 MiB at a time.
fn same_files(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn test_convert_vhdx_past_4_gib_skips_sector_bitmap_entries() {
    // 1 MiB blocks, 512-byte sectors: chunk_ratio 4096, so payload blocks from 4 GiB on sit
    // one BAT entry later (entry 4096 is a sector bitmap).
    let dir = scratch();
    let size = (4 << 30) + (3 << 20) + 512;
    let path = vhdx_with_data(dir.path(), "big.vhdx", "block_size=1M", size);
    let bytes = read(&path);
    let out_path = dir.path().join("big.out");
    let mut sink = FileSink {
        out: File::create(&out_path).unwrap(),
        spill: MemorySink::new(1 << 30),
    };
    let mut conv = Converter::new(Format::Vhdx, Target::Raw, &ConvertLimits::default()).unwrap();
    for chunk in bytes.chunks(1 << 20) {
        conv.feed(chunk, &mut sink).unwrap();
    }
    let len = conv.finish(&mut sink).unwrap();
    assert_eq!(len, qemu_info(&path, Some("vhdx")).virtual_size);
    sink.out.set_len(len).unwrap();
    let expected = path.with_extension("qemu.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            path.to_str().unwrap(),
            expected.to_str().unwrap(),
        ],
    );
    assert!(same_files(&out_path, &expected), "differs from qemu-img");
}
