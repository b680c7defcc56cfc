//! monolithicSparse VMDKs with their grain directory at the end (`gdOffset` = `GD_AT_END`)
//! and a footer, built here to VMware's layout (qemu-img cannot write it): header and
//! descriptor, grains after `overHead`, then the grain table, the grain directory, a footer
//! marker, the footer (the header with the real `gdOffset`) and an end-of-stream marker.
//! `qemu-img convert -O raw` must read every built image as the data it was built from.

use std::path::Path;

use sluice_formats::convert::MemorySink;
use sluice_formats::{
    ConvertLimits, Converter, Format, ReasonCode, Target, VMDK_FOOTER_TAIL_BYTES,
};

use crate::common::*;

const SECTOR: usize = 512;
/// `gdOffset` meaning "in the footer".
const GD_AT_END: u64 = u64::MAX;
/// 64 KiB grains (VMware's default), 512 entries per table.
const GRAIN_SECTORS: u64 = 128;
const GTES: u32 = 512;
/// Header, 20-sector descriptor, padding: grains start at 64 KiB.
const OVERHEAD: u64 = 128;
/// 2 MiB disk: 32 grains, one grain table.
const CAPACITY: u64 = 4096;

/// A footer VMDK: `grains` (guest grain index, fill byte) stored in order after `overHead`.
pub(crate) struct FooterVmdk {
    pub(crate) bytes: Vec<u8>,
    /// Sector of the grain table and of the grain directory.
    pub(crate) gt: u64,
    pub(crate) gd: u64,
    /// The raw disk it holds.
    pub(crate) raw: Vec<u8>,
}

/// A `KDMV` header sector (flags: newline detection; no redundant directory).
fn header(gd_offset: u64) -> Vec<u8> {
    let mut s = vec![0u8; SECTOR];
    s[..4].copy_from_slice(b"KDMV");
    s[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
    s[8..12].copy_from_slice(&1u32.to_le_bytes()); // flags: valid newline test
    s[12..20].copy_from_slice(&CAPACITY.to_le_bytes());
    s[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    s[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor offset
    s[36..44].copy_from_slice(&20u64.to_le_bytes()); // descriptor size
    s[44..48].copy_from_slice(&GTES.to_le_bytes());
    s[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset
    s[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    s[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    s[73..77].copy_from_slice(b"\n \r\n");
    s
}

/// A metadata marker sector `{numSectors, size 0, type}`.
fn marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut s = vec![0u8; SECTOR];
    s[..8].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&kind.to_le_bytes());
    s
}

impl FooterVmdk {
    pub(crate) fn build(grains: &[(u64, u8)]) -> Self {
        let mut bytes = header(GD_AT_END);
        let descriptor = format!(
            "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
             createType=\"monolithicSparse\"\n\n# Extent description\n\
             RW {CAPACITY} SPARSE \"footer.vmdk\"\n\nddb.virtualHWVersion = \"4\"\n\
             ddb.adapterType = \"ide\"\n"
        );
        bytes.extend_from_slice(descriptor.as_bytes());
        bytes.resize(OVERHEAD as usize * SECTOR, 0);
        let mut raw = vec![0u8; CAPACITY as usize * SECTOR];
        let grain_len = GRAIN_SECTORS as usize * SECTOR;
        let mut table = vec![0u8; GTES as usize * 4];
        for &(index, fill) in grains {
            let sector = (bytes.len() / SECTOR) as u32;
            table[index as usize * 4..][..4].copy_from_slice(&sector.to_le_bytes());
            let data: Vec<u8> = (0..grain_len).map(|i| fill ^ (i % 251) as u8).collect();
            raw[index as usize * grain_len..][..grain_len].copy_from_slice(&data);
            bytes.extend_from_slice(&data);
        }
        let gt = (bytes.len() / SECTOR) as u64;
        bytes.extend_from_slice(&table);
        let gd = (bytes.len() / SECTOR) as u64;
        let mut directory = vec![0u8; SECTOR];
        directory[..4].copy_from_slice(&(gt as u32).to_le_bytes());
        bytes.extend_from_slice(&directory);
        bytes.extend_from_slice(&marker(1, 3)); // footer marker
        bytes.extend_from_slice(&header(gd)); // footer
        bytes.extend_from_slice(&marker(0, 0)); // end of stream
        FooterVmdk { bytes, gt, gd, raw }
    }

    /// Writes a little-endian u32 at sector `sector`, entry `index`.
    pub(crate) fn put_entry(&mut self, sector: u64, index: usize, value: u32) {
        let at = sector as usize * SECTOR + index * 4;
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn write(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("footer.vmdk");
        std::fs::write(&path, &self.bytes).expect("writing the footer VMDK");
        path
    }
}

/// The three grains the accepted image holds: first, middle, last.
pub(crate) const GRAINS: [(u64, u8); 3] = [(0, 0x11), (5, 0x55), (31, 0xf1)];

#[test]
fn test_vmdk_footer_monolithic_sparse_is_accepted_and_qemu_reads_what_was_built() {
    let dir = scratch();
    let img = FooterVmdk::build(&GRAINS);
    let path = img.write(dir.path());
    // What qemu-img reads from it is the disk it was built from.
    let raw = dir.path().join("footer.raw");
    run(
        "qemu-img",
        &["convert", "-f", "vmdk", "-O", "raw", arg(&path), arg(&raw)],
    );
    assert!(read(&raw) == img.raw, "qemu-img reads another disk");
    let report = assert_accepts_like_qemu(&path, Format::Vmdk, "vmdk");
    assert_eq!(report.virtual_size, Some(CAPACITY * 512));
}

/// Converts `bytes` with the footer converter (head and tail read up front, then one pass
/// in `chunk`-byte pieces) and returns the raw output.
fn convert_footer(bytes: &[u8], chunk: usize) -> Result<Vec<u8>, sluice_formats::ConvertError> {
    let tail_len = (VMDK_FOOTER_TAIL_BYTES as usize).min(bytes.len());
    let mut conv = Converter::vmdk_footer(
        &bytes[..SECTOR],
        &bytes[bytes.len() - tail_len..],
        bytes.len() as u64,
        &ConvertLimits::default(),
    )?;
    let mut sink = MemorySink::new(64 << 20);
    for piece in bytes.chunks(chunk) {
        conv.feed(piece, &mut sink)?;
    }
    let len = conv.finish(&mut sink)?;
    sink.output.resize(len as usize, 0);
    Ok(sink.output)
}

#[test]
fn test_vmdk_footer_converts_to_what_qemu_img_reads_in_any_chunking() {
    let dir = scratch();
    let img = FooterVmdk::build(&GRAINS);
    let path = img.write(dir.path());
    let raw = dir.path().join("footer.raw");
    run(
        "qemu-img",
        &["convert", "-f", "vmdk", "-O", "raw", arg(&path), arg(&raw)],
    );
    let qemu = read(&raw);
    for chunk in [1usize, 511, 4096, 65_537, img.bytes.len()] {
        assert!(
            convert_footer(&img.bytes, chunk).expect("converting") == qemu,
            "chunks of {chunk}: output differs from qemu-img's"
        );
    }
}

#[test]
fn test_vmdk_footer_converter_refuses_a_grain_in_metadata() {
    let mut img = FooterVmdk::build(&GRAINS);
    let gt = img.gt as u32;
    img.put_entry(img.gt, 7, gt);
    let err = convert_footer(&img.bytes, 4096).expect_err("a grain in its table");
    assert!(matches!(
        err,
        sluice_formats::ConvertError::Image {
            code: ReasonCode::Corrupt,
            ..
        }
    ));
}

#[test]
fn test_vmdk_footer_grain_into_its_grain_table_is_corrupt() {
    let mut img = FooterVmdk::build(&GRAINS);
    let gt = img.gt as u32;
    img.put_entry(img.gt, 7, gt);
    let report = assert_rejects(&img.bytes, Some(Format::Vmdk), ReasonCode::Corrupt);
    assert!(
        report.reasons[0].message.contains("metadata"),
        "{:?}",
        report.reasons
    );
}

#[test]
fn test_vmdk_footer_grain_into_the_header_area_is_corrupt() {
    let mut img = FooterVmdk::build(&GRAINS);
    img.put_entry(img.gt, 7, 2);
    assert_rejects(&img.bytes, Some(Format::Vmdk), ReasonCode::Corrupt);
}

#[test]
fn test_vmdk_footer_table_past_the_footer_is_corrupt() {
    let mut img = FooterVmdk::build(&GRAINS);
    let gd = img.gd;
    img.put_entry(gd, 0, (gd + 10) as u32);
    assert_rejects(&img.bytes, Some(Format::Vmdk), ReasonCode::Corrupt);
}

#[test]
fn test_vmdk_footer_missing_is_corrupt() {
    let img = FooterVmdk::build(&GRAINS);
    let cut = &img.bytes[..img.bytes.len() - SECTOR];
    assert_rejects(cut, Some(Format::Vmdk), ReasonCode::Corrupt);
}

/// Converts `bytes` with the converter every VMDK gets (`Converter::new`), which spools this
/// layout to its spill area and converts it from there at the end, in `chunk`-byte pieces.
fn convert_spooled(
    bytes: &[u8],
    chunk: usize,
    limits: &ConvertLimits,
) -> Result<Vec<u8>, sluice_formats::ConvertError> {
    let mut conv = Converter::new(Format::Vmdk, Target::Raw, limits)?;
    let mut sink = MemorySink::new(64 << 20);
    for piece in bytes.chunks(chunk) {
        conv.feed(piece, &mut sink)?;
    }
    let len = conv.finish(&mut sink)?;
    sink.output.resize(len as usize, 0);
    Ok(sink.output)
}

#[test]
fn test_vmdk_footer_plain_converter_spools_and_converts_like_qemu_img() {
    let dir = scratch();
    let img = FooterVmdk::build(&GRAINS);
    let path = img.write(dir.path());
    let raw = dir.path().join("footer.raw");
    run(
        "qemu-img",
        &["convert", "-f", "vmdk", "-O", "raw", arg(&path), arg(&raw)],
    );
    let qemu = read(&raw);
    for chunk in [1usize, 511, 4096, 65_537, img.bytes.len()] {
        let out = convert_spooled(&img.bytes, chunk, &ConvertLimits::default());
        assert!(
            out.as_ref().is_ok_and(|out| *out == qemu),
            "chunks of {chunk}: {:?}",
            out.map(|o| o.len())
        );
    }
}

#[test]
fn test_vmdk_footer_plain_converter_spool_past_the_spill_limit_is_limit_exceeded() {
    let img = FooterVmdk::build(&GRAINS);
    let limits = ConvertLimits {
        max_spill_bytes: img.bytes.len() as u64 - 1,
        ..ConvertLimits::default()
    };
    let err = convert_spooled(&img.bytes, 4096, &limits).expect_err("spool over the limit");
    assert!(
        matches!(
            &err,
            sluice_formats::ConvertError::Image { code: ReasonCode::LimitExceeded, message }
                if message.contains("max_spill_bytes")
        ),
        "{err:?}"
    );
}

#[test]
fn test_vmdk_footer_plain_converter_refuses_a_grain_in_metadata_at_the_end() {
    let mut img = FooterVmdk::build(&GRAINS);
    let gt = img.gt as u32;
    img.put_entry(img.gt, 7, gt);
    let err = convert_spooled(&img.bytes, 4096, &ConvertLimits::default())
        .expect_err("a grain in its table");
    assert!(
        matches!(
            err,
            sluice_formats::ConvertError::Image {
                code: ReasonCode::Corrupt,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn test_vmdk_footer_sluice_convert_gives_what_qemu_img_gives() {
    let dir = scratch();
    let img = FooterVmdk::build(&GRAINS);
    let path = img.write(dir.path());
    let qemu = dir.path().join("footer.qemu.raw");
    run(
        "qemu-img",
        &["convert", "-f", "vmdk", "-O", "raw", arg(&path), arg(&qemu)],
    );
    for declared in [&["--format", "vmdk"][..], &[]] {
        let out = dir.path().join("footer.sluice.raw");
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("convert")
            .args(declared)
            .args(["--to", "raw", arg(&path), arg(&out)])
            .output()
            .expect("running sluice");
        assert!(
            status.status.success(),
            "{declared:?}: {}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
        assert!(
            read(&out) == read(&qemu),
            "{declared:?}: output differs from qemu-img's"
        );
    }
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
