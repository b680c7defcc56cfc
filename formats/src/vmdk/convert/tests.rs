//! The VMDK converter's unit tests.

#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::*;
use crate::convert::{convert_chunked, Target};
use crate::Format;

/// The tiny VMware-style stream of the probe's tests, with a real deflated grain.
fn tiny_stream(grain: &[u8]) -> Vec<u8> {
    tiny_stream_compressed(&deflate(grain, flate2::Compression::default()))
}

/// `data` as a zlib stream at `level`.
fn deflate(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// [`tiny_stream`] with `compressed` as the grain's compressed bytes, whatever they are.
fn tiny_stream_compressed(compressed: &[u8]) -> Vec<u8> {
    use super::super::header::tests::encode;
    use super::super::stream_optimized::tests::tiny_stream_header;
    let h = tiny_stream_header();
    let mut img = encode(&h);
    img.resize(4 * 512, 0);
    let mut m = vec![0u8; 12];
    m[8..12].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
    m.extend(compressed);
    m.resize(m.len().next_multiple_of(512), 0);
    let grain_sectors = m.len() / 512;
    img.extend(m);
    let marker = |n: u64, t: u32| {
        let mut m = vec![0u8; 512];
        m[..8].copy_from_slice(&n.to_le_bytes());
        m[12..16].copy_from_slice(&t.to_le_bytes());
        m
    };
    let gt_at = 4 + grain_sectors;
    img.extend(marker(4, MARKER_GT));
    let mut gt = vec![0u8; 2048];
    gt[..4].copy_from_slice(&4u32.to_le_bytes());
    img.extend(gt);
    img.extend(marker(1, MARKER_GD));
    let mut gd = vec![0u8; 512];
    gd[..4].copy_from_slice(&(gt_at as u32 + 1).to_le_bytes());
    img.extend(gd);
    img.extend(marker(1, MARKER_FOOTER));
    let mut f = h;
    f.gd_offset = (gt_at + 6) as u64;
    img.extend(encode(&f));
    img.extend(marker(0, MARKER_EOS));
    img
}

fn convert(img: &[u8], chunk: usize) -> Result<Vec<u8>, ConvertError> {
    let limits = ConvertLimits::default();
    let (mut sink, len) = convert_chunked(Format::Vmdk, Target::Raw, img, chunk, &limits)?;
    sink.output.resize(len as usize, 0);
    Ok(sink.output)
}

#[test]
fn test_vmdk_convert_tiny_stream_any_chunking_is_exact() {
    let grain: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let img = tiny_stream(&grain);
    for chunk in [1, 13, 512, 4097, img.len()] {
        assert_eq!(convert(&img, chunk).unwrap(), grain, "chunk {chunk}");
    }
}

#[test]
fn test_vmdk_convert_damaged_grain_is_corrupt() {
    let grain = vec![9u8; 65536];
    let mut img = tiny_stream(&grain);
    // Flip the adler-32 trailer's last byte (compressed data ends before the padding).
    let size = u32::from_le_bytes(img[2048 + 8..2048 + 12].try_into().unwrap()) as usize;
    img[2048 + 12 + size - 1] ^= 0xff;
    assert!(matches!(
        convert(&img, 4096),
        Err(ConvertError::Image {
            code: ReasonCode::Corrupt,
            ..
        })
    ));
}

#[test]
fn test_vmdk_convert_damaged_grain_error_does_not_depend_on_chunking() {
    use flate2::Compression;
    let pattern = |n: u32| -> Vec<u8> { (0..n).map(|i| (i * 7 % 251) as u8).collect() };
    // Grains of 128 sectors (64 KiB): one that fits, two that inflate to more (one of
    // them in stored blocks, so that its output comes in step with its input).
    let streams = [
        deflate(&pattern(65_536), Compression::default()),
        deflate(&pattern(100_000), Compression::default()),
        deflate(&pattern(70_000), Compression::none()),
    ];
    let (mut failures, mut too_large, mut corrupt_data) = (0, 0, 0);
    for (s, good) in streams.iter().enumerate() {
        // Garble one byte at a spread of places (the zlib header, block headers, data,
        // the adler-32 trailer), and cut the stream short.
        let mut damaged: Vec<Vec<u8>> = (0..8)
            .map(|k| {
                let mut d = good.clone();
                let at = (good.len() - 1) * k / 7;
                d[at] ^= 0x5a;
                d
            })
            .collect();
        damaged.push(good[..good.len() / 2].to_vec());
        damaged.push(good[..good.len() - 3].to_vec());
        for (d, bytes) in damaged.iter().enumerate() {
            let img = tiny_stream_compressed(bytes);
            let r = convert_any(&img, &ConvertLimits::default());
            if let Err(e) = &r {
                assert!(
                    matches!(
                        e,
                        ConvertError::Image {
                            code: ReasonCode::Corrupt,
                            ..
                        }
                    ),
                    "stream {s}, damage {d}: {e:?}"
                );
                failures += 1;
                let text = e.to_string();
                too_large += usize::from(text.contains("inflates to more than"));
                corrupt_data += usize::from(text.contains("does not inflate"));
            }
        }
    }
    // Not every garbled byte breaks a stream (a literal in a stored block only breaks
    // the checksum), but most do.
    assert!(failures >= 20, "{failures} failures");
    // Both verdicts on a bad grain are met, each the same for every chunking.
    assert!(
        too_large > 0 && corrupt_data > 0,
        "{too_large} too large, {corrupt_data} corrupt"
    );
}

/// Chunk sizes the chunking tests feed (besides the whole image).
const SIZES: [usize; 12] = [1, 2, 3, 7, 13, 64, 511, 512, 513, 1000, 4095, 4096];

/// Converts `img` at every size in [`SIZES`], asserting one result for all of them.
fn convert_any(img: &[u8], limits: &ConvertLimits) -> Result<Vec<u8>, ConvertError> {
    crate::convert::assert_convert_chunking_invariant(Format::Vmdk, img, limits, SIZES)
}

/// Limits with `spill` bytes of spill and `tracked` tracked entries.
fn limits(spill: u64, tracked: usize) -> ConvertLimits {
    ConvertLimits {
        max_spill_bytes: spill,
        max_tracked_entries: tracked,
        ..ConvertLimits::default()
    }
}

/// Whether `r` is a `limit_exceeded` failure.
fn is_limit(r: &Result<Vec<u8>, ConvertError>) -> bool {
    matches!(
        r,
        Err(ConvertError::Image {
            code: ReasonCode::LimitExceeded,
            ..
        })
    )
}

/// The bytes of one-sector grain `lba` in the test images.
fn grain_fill(lba: usize) -> u8 {
    lba as u8 + 1
}

/// A 16-sector monolithicSparse image (grains of one sector, grain tables of 4 entries)
/// that keeps eight grains *before* its grain directory and tables, so that converting it
/// spills them: header, descriptor, grains for LBAs 0..8 at sectors 2..10, the directory
/// at sector 10, its four tables at 11..15, and the grain for LBA 12 at sector 15.
/// Returns the image and the expected raw output.
fn data_first_sparse() -> (Vec<u8>, Vec<u8>) {
    use super::super::header::tests::{encode, qemu_sparse_header};
    let mut h = qemu_sparse_header();
    h.flags = 1;
    h.rgd_offset = 0;
    h.capacity = 16;
    h.grain_size = 1;
    h.gtes_per_gt = 4;
    h.desc_size = 1;
    h.overhead = 2;
    h.gd_offset = 10;
    let mut img = encode(&h);
    img.resize(16 * 512, 0);
    let mut out = vec![0u8; 16 * 512];
    let mut map = |lba: usize, sector: usize| {
        img[sector * 512..][..512].fill(grain_fill(lba));
        out[lba * 512..][..512].fill(grain_fill(lba));
        let at = (11 + lba / 4) * 512 + lba % 4 * 4;
        img[at..at + 4].copy_from_slice(&(sector as u32).to_le_bytes());
    };
    for lba in 0..8 {
        map(lba, 2 + lba);
    }
    map(12, 15);
    for table in 0..4u32 {
        let at = 10 * 512 + table as usize * 4;
        img[at..at + 4].copy_from_slice(&(11 + table).to_le_bytes());
    }
    (img, out)
}

#[test]
fn test_vmdk_convert_sparse_limits_do_not_depend_on_chunking() {
    let (img, expected) = data_first_sparse();
    assert_eq!(
        convert_any(&img, &ConvertLimits::default()).unwrap(),
        expected
    );
    // Every pair of limits around what the image needs: the verdict (and the error) must
    // be the same for every chunking.
    let (mut limited, mut converted) = (0, 0);
    for spill in (0..=8192).step_by(512) {
        for tracked in 0..=6 {
            match convert_any(&img, &limits(spill, tracked)) {
                Ok(out) => {
                    assert_eq!(out, expected, "spill {spill}, tracked {tracked}");
                    converted += 1;
                }
                r => {
                    assert!(is_limit(&r), "spill {spill}, tracked {tracked}: {r:?}");
                    limited += 1;
                }
            }
        }
    }
    // The sweep crosses both limits.
    assert!(
        limited > 0 && converted > 0,
        "{limited} limited, {converted} converted"
    );
}

#[test]
fn test_vmdk_convert_sparse_every_chunk_size_agrees_near_the_limits() {
    let (img, _) = data_first_sparse();
    for (spill, tracked) in [(4096, 16), (8192, 4), (8192, 8)] {
        crate::convert::assert_convert_chunking_invariant(
            Format::Vmdk,
            &img,
            &limits(spill, tracked),
            1..=600,
        )
        .ok();
    }
}

#[test]
fn test_vmdk_convert_sparse_overlapping_tables_are_corrupt_in_any_chunking() {
    use super::super::header::tests::{encode, qemu_sparse_header};
    // Tables of 512 entries (4 sectors): directory at sector 2 naming tables at sectors 3
    // and 4, which overlap; each places one grain after them.
    let mut h = qemu_sparse_header();
    h.flags = 1;
    h.rgd_offset = 0;
    h.capacity = 1024;
    h.grain_size = 1;
    h.desc_size = 1;
    h.overhead = 2;
    h.gd_offset = 2;
    let mut img = encode(&h);
    img.resize(10 * 512, 0);
    img[2 * 512..][..8].copy_from_slice(&[3, 0, 0, 0, 4, 0, 0, 0]);
    img[3 * 512..][..4].copy_from_slice(&8u32.to_le_bytes());
    img[4 * 512 + 8..][..4].copy_from_slice(&9u32.to_le_bytes());
    img[8 * 512..].fill(5);
    for img in [img.clone(), {
        // Out of directory order, without overlapping: refused as the inspector does.
        let mut i = img;
        i[2 * 512..][..8].copy_from_slice(&[7, 0, 0, 0, 3, 0, 0, 0]);
        i
    }] {
        let r = crate::convert::assert_convert_chunking_invariant(
            Format::Vmdk,
            &img,
            &ConvertLimits::default(),
            SIZES,
        );
        assert!(
            matches!(
                r,
                Err(ConvertError::Image {
                    code: ReasonCode::Corrupt,
                    ..
                })
            ),
            "{r:?}"
        );
    }
}

/// A QEMU-layout streamOptimized image (directories at the start) with a redundant and a
/// primary grain directory of three grain tables each, every table empty: header,
/// descriptor, redundant directory (sector 2) and its tables (3..6), directory (6) and its
/// tables (7..10), then the end-of-stream marker at overHead (sector 10).
fn qemu_stream_two_directories() -> Vec<u8> {
    use super::super::header::tests::{encode, qemu_sparse_header};
    let mut h = qemu_sparse_header();
    h.flags = 0x3_0003;
    h.compress = 1;
    h.capacity = 12;
    h.grain_size = 1;
    h.gtes_per_gt = 4;
    h.desc_size = 1;
    h.rgd_offset = 2;
    h.gd_offset = 6;
    h.overhead = 10;
    let mut img = encode(&h);
    img.resize(11 * 512, 0);
    for (dir, first) in [(2usize, 3u32), (6, 7)] {
        for i in 0..3u32 {
            let at = dir * 512 + i as usize * 4;
            img[at..at + 4].copy_from_slice(&(first + i).to_le_bytes());
        }
    }
    img
}

#[test]
fn test_vmdk_convert_stream_table_limit_does_not_depend_on_chunking() {
    let img = qemu_stream_two_directories();
    assert_eq!(
        convert_any(&img, &ConvertLimits::default()).unwrap(),
        vec![0u8; 12 * 512]
    );
    let results: Vec<_> = (0..=8)
        .map(|tracked| convert_any(&img, &limits(0, tracked)))
        .collect();
    assert!(results.iter().any(is_limit), "{results:?}");
    assert!(results.iter().any(Result::is_ok), "{results:?}");
}

#[test]
fn test_vmdk_convert_cut_stream_is_truncated() {
    let img = tiny_stream(&[5u8; 65536]);
    for cut in [300, 2100, img.len() - 700] {
        assert!(
            matches!(
                convert(&img[..cut], 512),
                Err(ConvertError::Image {
                    code: ReasonCode::Truncated,
                    ..
                })
            ),
            "cut {cut}"
        );
    }
}
