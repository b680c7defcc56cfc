//! The VMDK inspector's unit tests.

#![allow(clippy::arithmetic_side_effects)] // test arithmetic on small known values

use super::header::tests::{encode, qemu_sparse_header};
use super::inspect::*;
use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Limits, ReasonCode};

fn probe(bytes: &[u8], chunk: usize) -> VmdkProbe {
    let mut p = VmdkProbe::new(&Limits::default());
    let mut tail = Tail::new();
    for (i, c) in bytes.chunks(chunk.max(1)).enumerate() {
        if p.wants((i * chunk) as u64) {
            p.feed((i * chunk) as u64, c);
        }
        tail.feed(c);
    }
    p.finish(&tail);
    p
}

fn codes(p: &VmdkProbe) -> Vec<ReasonCode> {
    p.findings().iter().map(|r| r.code).collect()
}

/// A QEMU-like 100 MiB monolithicSparse image without data: header, descriptor, RGD and
/// GD with their tables, padded to overHead.
fn sparse_image(descriptor: &str) -> Vec<u8> {
    let h = qemu_sparse_header();
    let mut img = encode(&h);
    img.extend_from_slice(descriptor.as_bytes());
    img.resize(128 * 512, 0);
    for (gd, first_gt) in [(21usize, 22u32), (38, 39)] {
        for i in 0..4u32 {
            let at = gd * 512 + i as usize * 4;
            img[at..at + 4].copy_from_slice(&(first_gt + 4 * i).to_le_bytes());
        }
    }
    img
}

const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
createType=\"monolithicSparse\"\nRW 204800 SPARSE \"x.vmdk\"\nddb.adapterType = \"ide\"\n";

#[test]
fn test_probe_sparse_image_is_accepted() {
    let img = sparse_image(DESCRIPTOR);
    for chunk in [1, 511, 4096, img.len()] {
        let p = probe(&img, chunk);
        assert!(matches!(p.detection(), Detection::Yes(Format::Vmdk)));
        assert!(p.findings().is_empty(), "{:?}", p.findings());
        assert!(matches!(p.virtual_size(), Some(104_857_600)));
    }
}

#[test]
fn test_probe_external_extent_is_refused() {
    let d = DESCRIPTOR.replace("\"x.vmdk\"", "\"/etc/passwd\"");
    assert!(codes(&probe(&sparse_image(&d), 4096)).contains(&ReasonCode::ExternalExtent));
    let d = DESCRIPTOR.replace(
        "RW 204800 SPARSE \"x.vmdk\"\n",
        "RW 204800 SPARSE \"x.vmdk\"\nRW 2048 FLAT \"y\" 0\n",
    );
    assert!(codes(&probe(&sparse_image(&d), 4096)).contains(&ReasonCode::ExternalExtent));
}

#[test]
fn test_probe_parent_is_backing_file() {
    let d = DESCRIPTOR.replace("parentCID=ffffffff", "parentCID=12345678");
    assert!(codes(&probe(&sparse_image(&d), 4096)).contains(&ReasonCode::BackingFile));
}

#[test]
fn test_probe_text_descriptor_is_vmdk_and_refused() {
    let text = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n\
RW 2048 FLAT \"/etc/passwd\" 0\n";
    for chunk in [1, 3, 4096] {
        let p = probe(text, chunk);
        assert!(matches!(p.detection(), Detection::Yes(Format::Vmdk)));
        let c = codes(&p);
        assert!(c.contains(&ReasonCode::UnsupportedSubformat));
        assert!(c.contains(&ReasonCode::ExternalExtent));
    }
}

#[test]
fn test_probe_random_bytes_are_not_vmdk() {
    let p = probe(b"hello world\nversion=1\n", 4);
    assert!(matches!(p.detection(), Detection::No));
    let p = probe(&[0u8; 4096], 4096);
    assert!(matches!(p.detection(), Detection::No));
    assert!(!p.wants(4096));
}

/// A consistent legacy VMDK3 (`COWD`) header sector (QEMU's `VMDK3Header`, after the magic),
/// for a disk of `sectors` sectors with 512-sector grains and 4096-entry tables.
fn cowd_header(sectors: u32) -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[..4].copy_from_slice(b"COWD");
    s[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
    s[8..12].copy_from_slice(&3u32.to_le_bytes()); // flags
    s[12..16].copy_from_slice(&sectors.to_le_bytes()); // disk_sectors
    s[16..20].copy_from_slice(&512u32.to_le_bytes()); // granularity (sectors per grain)
    s[20..24].copy_from_slice(&4u32.to_le_bytes()); // l1dir_offset (sectors)
    let l1 = sectors.div_ceil(512 * 4096);
    s[24..28].copy_from_slice(&l1.to_le_bytes()); // l1dir_size (entries)
    s
}

#[test]
fn test_probe_cowd_consistent_header_is_unsupported_format() {
    let img = cowd_header(1 << 21);
    let c = codes(&probe(&img, 512));
    assert!(c.contains(&ReasonCode::UnsupportedFormat), "{c:?}");
    assert!(!c.contains(&ReasonCode::Corrupt), "{c:?}");
}

#[test]
fn test_probe_cowd_magic_followed_by_garbage_is_corrupt() {
    let mut garbage = vec![0u8; 512];
    garbage[..4].copy_from_slice(b"COWD");
    let mut seed = 0x9e37_79b9u32;
    for b in &mut garbage[4..] {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (seed >> 24) as u8;
    }
    let zeros = {
        let mut z = vec![0u8; 512];
        z[..4].copy_from_slice(b"COWD");
        z
    };
    let bad_granularity = {
        let mut h = cowd_header(1 << 21);
        h[16..20].copy_from_slice(&3u32.to_le_bytes());
        h
    };
    let short_directory = {
        let mut h = cowd_header(1 << 24);
        h[24..28].copy_from_slice(&1u32.to_le_bytes());
        h
    };
    for img in [garbage, zeros, bad_granularity, short_directory] {
        let c = codes(&probe(&img, 512));
        assert!(c.contains(&ReasonCode::Corrupt), "{c:?}");
        assert!(!c.contains(&ReasonCode::UnsupportedFormat), "{c:?}");
    }
}

#[test]
fn test_probe_short_header_is_truncated() {
    let img = sparse_image(DESCRIPTOR);
    assert!(codes(&probe(&img[..100], 7)).contains(&ReasonCode::Truncated));
}

#[test]
fn test_probe_hostile_bytes_never_panic() {
    let mut img = sparse_image(DESCRIPTOR);
    let mut seed = 0x1234_5678u32;
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let at = (seed as usize >> 8) % 2048;
        img[at] = (seed >> 3) as u8;
        let _ = probe(&img, 333);
    }
}

/// Randomly damaged images must give the same findings however they are split.
#[test]
fn test_probe_mutated_images_are_chunking_invariant() {
    let mut sparse = sparse_image(DESCRIPTOR);
    // One allocated grain at sector 128 in both tables, and its data.
    for gt in [22usize, 39] {
        sparse[gt * 512..gt * 512 + 4].copy_from_slice(&128u32.to_le_bytes());
    }
    sparse.resize(256 * 512, 0x5a);
    let (_, stream) = super::stream_optimized::tests::tiny_stream();
    let mut seed = 0x9e37_79b9u32;
    for base in [sparse, stream] {
        for round in 0..150 {
            let mut img = base.clone();
            for _ in 0..(round % 4 + 1) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let at = (seed as usize >> 4) % img.len().min(24 * 512);
                let at = if round % 3 == 0 {
                    img.len() - 1 - at % 1536
                } else {
                    at
                };
                img[at] = (seed >> 20) as u8;
            }
            let whole = probe(&img, img.len());
            for chunk in [1, 3, 64, 511, 4096] {
                let split = probe(&img, chunk);
                assert_eq!(
                    split.findings(),
                    whole.findings(),
                    "round {round} chunk {chunk}"
                );
                assert_eq!(split.detection(), whole.detection());
                assert_eq!(split.virtual_size(), whole.virtual_size());
            }
        }
    }
}

#[test]
fn test_probe_long_text_descriptor_is_chunking_invariant() {
    let mut text = String::from("# Disk DescriptorFile\nversion=1\n");
    while text.len() < 3000 {
        text.push_str("# padding comment line\n");
    }
    text.push_str("createType=\"monolithicSparse\"\nRW 2048 FLAT \"/etc/shadow\" 0\n");
    let whole = probe(text.as_bytes(), text.len());
    assert!(whole
        .findings()
        .iter()
        .any(|r| r.message.contains("/etc/shadow")));
    for chunk in [1, 7, 2047, 2049, 4096] {
        let split = probe(text.as_bytes(), chunk);
        assert_eq!(split.findings(), whole.findings(), "chunk {chunk}");
    }
}
