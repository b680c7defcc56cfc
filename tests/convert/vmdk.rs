//! vmdk → raw conversion on real images: QEMU's monolithicSparse and streamOptimized, and
//! VMware-style streamOptimized (grain tables, directory and footer at the end) made by
//! Debian's `python3-vmdkstream`. The converter's output must equal `qemu-img convert -O raw`
//! byte for byte, however the input is split. The helpers here are shared by the vhd and vhdx
//! conversion tests.

use std::path::Path;

use rand::{Rng, SeedableRng};
use sluice_formats::convert::MemorySink;
use sluice_formats::{ConvertError, ConvertLimits, Converter, Format, ReasonCode, Target};

use crate::common::*;

/// Converts `bytes` fed in pieces of the given sizes (cycled); returns the raw output, sized
/// to the length the converter reports.
pub fn convert_chunked(
    bytes: &[u8],
    format: Format,
    sizes: &[usize],
    limits: &ConvertLimits,
) -> Result<Vec<u8>, ConvertError> {
    let mut conv = Converter::new(format, Target::Raw, limits)?;
    let mut sink = MemorySink::new(1 << 30);
    let mut rest = bytes;
    let mut i = 0usize;
    while !rest.is_empty() {
        let size = sizes[i % sizes.len()].max(1).min(rest.len());
        let (chunk, after) = rest.split_at(size);
        conv.feed(chunk, &mut sink)?;
        rest = after;
        i += 1;
    }
    let len = conv.finish(&mut sink)?;
    let mut out = sink.output;
    assert!(
        out.len() as u64 <= len,
        "converter wrote {} bytes past the image's end at {len}",
        out.len() as u64 - len
    );
    out.resize(usize::try_from(len).expect("small test image"), 0);
    Ok(out)
}

/// `qemu-img convert -f QEMU_FMT -O raw PATH` read back.
pub fn qemu_raw(path: &Path, qemu_fmt: &str) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            qemu_fmt,
            "-O",
            "raw",
            path.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
        ],
    );
    read(&out)
}

/// The image converts to exactly qemu's raw output fed whole, at 1 MiB, at 4097 bytes, at
/// random splits and (for small images) byte by byte.
pub fn assert_converts_like_qemu(path: &Path, format: Format, qemu_fmt: &str) {
    let bytes = read(path);
    let expected = qemu_raw(path, qemu_fmt);
    let limits = ConvertLimits::default();
    let mut cases: Vec<(String, Vec<usize>)> = vec![
        ("whole".into(), vec![bytes.len()]),
        ("1MiB".into(), vec![1 << 20]),
        ("4097-byte".into(), vec![4097]),
    ];
    if bytes.len() <= 1 << 20 {
        cases.push(("byte-by-byte".into(), vec![1]));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(bytes.len() as u64);
    for round in 0..3 {
        let sizes: Vec<usize> = (0..64)
            .map(|_| match rng.gen_range(0..3) {
                0 => rng.gen_range(1..16),
                1 => rng.gen_range(1..8192),
                _ => rng.gen_range(1..(1 << 20)),
            })
            .collect();
        cases.push((format!("random-{round}"), sizes));
    }
    for (name, sizes) in cases {
        let out = convert_chunked(&bytes, format, &sizes, &limits)
            .unwrap_or_else(|e| panic!("{} ({name}): {e:?}", path.display()));
        assert_eq!(
            out.len(),
            expected.len(),
            "{} ({name}) length",
            path.display()
        );
        assert!(
            out == expected,
            "{} ({name}) differs from qemu-img",
            path.display()
        );
    }
}

/// Cutting the image at each of `cuts` fails the conversion as truncated.
pub fn assert_cuts_are_truncated(path: &Path, format: Format, cuts: &[usize]) {
    let bytes = read(path);
    for &cut in cuts {
        let Err(err) = convert_chunked(&bytes[..cut], format, &[4096], &ConvertLimits::default())
        else {
            panic!(
                "{} cut at {cut} of {} converted",
                path.display(),
                bytes.len()
            );
        };
        assert!(
            matches!(
                err,
                ConvertError::Image {
                    code: ReasonCode::Truncated,
                    ..
                }
            ),
            "{} cut at {cut}: {err:?}",
            path.display()
        );
    }
}

const STREAM: &str = "subformat=streamOptimized";

#[test]
fn test_convert_vmdk_qemu_stream_optimized_matches_qemu() {
    let dir = scratch();
    let small = vmdk_with_data(dir.path(), "s.vmdk", STREAM, 8 << 20);
    assert_converts_like_qemu(&small, Format::Vmdk, "vmdk");
    // Spans two grain tables (32 MiB each) and ends with a partial grain.
    let large = vmdk_with_data(dir.path(), "l.vmdk", STREAM, (40 << 20) + 3 * 512);
    assert_converts_like_qemu(&large, Format::Vmdk, "vmdk");
}

#[test]
fn test_convert_vmdk_vmware_stream_with_footer_matches_qemu() {
    let dir = scratch();
    let small = vmdkstream(dir.path(), "v.vmdk", 8 << 20);
    assert_converts_like_qemu(&small, Format::Vmdk, "vmdk");
    let large = vmdkstream(dir.path(), "vl.vmdk", 40 << 20);
    assert_converts_like_qemu(&large, Format::Vmdk, "vmdk");
}

#[test]
fn test_convert_vmdk_monolithic_sparse_matches_qemu() {
    let dir = scratch();
    let small = vmdk_with_data(dir.path(), "s.vmdk", "", 8 << 20);
    assert_converts_like_qemu(&small, Format::Vmdk, "vmdk");
    let large = vmdk_with_data(dir.path(), "l.vmdk", "", (40 << 20) + 3 * 512);
    assert_converts_like_qemu(&large, Format::Vmdk, "vmdk");
    let zeroed = vmdk_with_data(dir.path(), "z.vmdk", "zeroed_grain=on", 8 << 20);
    assert_converts_like_qemu(&zeroed, Format::Vmdk, "vmdk");
}

#[test]
fn test_convert_vmdk_empty_images_are_all_holes() {
    let dir = scratch();
    for (name, opts) in [("e.vmdk", ""), ("es.vmdk", STREAM)] {
        let path = qemu_img_create(dir.path(), name, "vmdk", opts, "10M");
        assert_converts_like_qemu(&path, Format::Vmdk, "vmdk");
    }
}

#[test]
fn test_convert_vmdk_cut_images_are_truncated() {
    let dir = scratch();
    for (name, opts) in [("s.vmdk", STREAM), ("m.vmdk", "")] {
        let path = vmdk_with_data(dir.path(), name, opts, 8 << 20);
        let len = read(&path).len();
        // Inside the header, inside the metadata, on a sector boundary amid the data, one
        // byte short. (QEMU's stream cut right after its last grain still holds every grain
        // its directory names: QEMU reads it, and so does Sluice.)
        let middle = (len / 2) & !511;
        let last = if opts == STREAM {
            // Inside the first grain's compressed data (the marker chain starts at overHead).
            let overhead = u64::from_le_bytes(read(&path)[64..72].try_into().unwrap());
            overhead as usize * 512 + 20
        } else {
            len - 1
        };
        assert_cuts_are_truncated(&path, Format::Vmdk, &[100, 3000, middle, last]);
    }
    let path = vmdkstream(dir.path(), "v.vmdk", 8 << 20);
    let len = read(&path).len();
    // Before the footer marker, inside the footer, without the end-of-stream marker.
    assert_cuts_are_truncated(&path, Format::Vmdk, &[len - 1536, len - 700, len - 512]);
}

#[test]
fn test_convert_vmdk_damaged_grain_is_corrupt() {
    let dir = scratch();
    let path = vmdk_with_data(dir.path(), "s.vmdk", STREAM, 8 << 20);
    let mut bytes = read(&path);
    // The first grain marker is at overHead (header offset 64, in sectors); its deflate data
    // starts 12 bytes in (after the LBA and size), past the 2-byte zlib header.
    let overhead = u64::from_le_bytes(bytes[64..72].try_into().unwrap()) as usize * 512;
    let size = u32::from_le_bytes(bytes[overhead + 8..overhead + 12].try_into().unwrap()) as usize;
    assert!(size > 40);
    for b in &mut bytes[overhead + 14..overhead + 40] {
        *b ^= 0x5a;
    }
    let Err(err) = convert_chunked(&bytes, Format::Vmdk, &[4097], &ConvertLimits::default()) else {
        panic!("a damaged grain converted");
    };
    assert!(
        matches!(
            err,
            ConvertError::Image {
                code: ReasonCode::Corrupt,
                ..
            }
        ),
        "{err:?}"
    );
}
