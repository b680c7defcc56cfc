//! raw → qcow2 on real raw images, and the round trip raw → qcow2 → raw.
//!
//! The qcow2 output, made in-process fed whole and at random splits (all must be identical),
//! must pass `qemu-img check` (no errors, no leaks), `qemu-img compare` with its source, and
//! `qemu-img info` must report qcow2 with the virtual size qemu itself gives the raw file (its
//! length rounded up to 512). Back to raw: with `qemu-img convert -O raw` always, and with
//! Sluice's own qcow2 → raw converter once it exists (until then that leg is skipped with a
//! note on stderr).

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};
use sluice_formats::convert::MemorySink;
use sluice_formats::{ConvertError, ConvertLimits, Converter, Format, ReasonCode, Target};

use crate::common::{qemu_info, raw_with_data, read, run, scratch, write_pattern};

/// The output's cluster size: 64 KiB.
const CLUSTER: u64 = 64 * 1024;

/// Converts `bytes` from `from` to `target` in pieces of the given sizes (cycled); returns
/// the output, sized to the length the converter reports.
fn convert_split(
    bytes: &[u8],
    from: Format,
    target: Target,
    sizes: &[usize],
) -> Result<Vec<u8>, ConvertError> {
    let mut conv = Converter::new(from, target, &ConvertLimits::default())?;
    let mut sink = MemorySink::new(bytes.len() + (16 << 20));
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
    assert!(out.len() as u64 <= len, "wrote past the returned length");
    out.resize(usize::try_from(len).expect("small test image"), 0);
    Ok(out)
}

/// The split cases: whole, a few fixed sizes, and random splits seeded by the image length.
fn splits(len: usize) -> Vec<(String, Vec<usize>)> {
    let mut cases: Vec<(String, Vec<usize>)> = vec![
        ("whole".into(), vec![usize::MAX]),
        ("511-byte".into(), vec![511]),
        ("65537-byte".into(), vec![65_537]),
        ("1-then-1MiB".into(), vec![1, 1 << 20]),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(len as u64);
    for round in 0..3 {
        let sizes: Vec<usize> = (0..64)
            .map(|_| match rng.gen_range(0..3) {
                0 => rng.gen_range(1..16),
                1 => rng.gen_range(1..70_000),
                _ => rng.gen_range(1..(1 << 20)),
            })
            .collect();
        cases.push((format!("random-{round}"), sizes));
    }
    cases
}

/// `qemu-img check` must pass with no leaks; its output is returned.
fn qemu_check(path: &Path) -> String {
    let out = run("qemu-img", &["check", path.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("No errors were found"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
    text
}

/// `qemu-img compare -f raw -F qcow2 RAW QCOW2` must find them identical.
fn qemu_compare(raw: &Path, qcow2: &Path) {
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw.to_str().expect("utf-8"),
            qcow2.to_str().expect("utf-8"),
        ],
    );
}

/// The raw image's virtual size as qemu sees it: its length rounded up to 512.
fn qemu_virtual_size(raw: &Path) -> u64 {
    qemu_info(raw, Some("raw")).virtual_size
}

/// Converts `raw` to qcow2 at every split (all outputs identical), writes the result next to
/// it and checks it with qemu-img; returns the qcow2 path.
fn assert_qcow2_like_qemu(raw: &Path) -> PathBuf {
    let bytes = read(raw);
    let whole =
        convert_split(&bytes, Format::Raw, Target::Qcow2, &[usize::MAX]).expect("raw → qcow2");
    assert_eq!(
        whole.len() as u64 % CLUSTER,
        0,
        "qcow2 file not cluster-aligned"
    );
    for (name, sizes) in splits(bytes.len()) {
        let split = convert_split(&bytes, Format::Raw, Target::Qcow2, &sizes).expect("raw → qcow2");
        assert!(split == whole, "{name} chunking changed the qcow2 output");
    }
    let qcow2 = raw.with_extension("sluice.qcow2");
    std::fs::write(&qcow2, &whole).expect("writing qcow2");
    qemu_check(&qcow2);
    qemu_compare(raw, &qcow2);
    let info = qemu_info(&qcow2, None);
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, qemu_virtual_size(raw));
    assert_eq!(
        info.virtual_size,
        (bytes.len() as u64).next_multiple_of(512)
    );
    qcow2
}

/// Guest clusters stored as data (`qemu-img check`'s `allocated-clusters`).
fn allocated_data_clusters(qcow2: &Path) -> u64 {
    let out = run(
        "qemu-img",
        &["check", "--output=json", qcow2.to_str().expect("utf-8")],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
    // qemu leaves the field out when no cluster is allocated.
    v["allocated-clusters"].as_u64().unwrap_or(0)
}

/// Asserts `back` is `raw` followed by zeros up to qemu's virtual size.
fn assert_same_disk(raw: &[u8], back: &[u8], virtual_size: u64) {
    assert_eq!(back.len() as u64, virtual_size, "round-trip length");
    assert!(back[..raw.len()] == *raw, "round trip changed the bytes");
    assert!(back[raw.len()..].iter().all(|b| *b == 0), "tail not zero");
}

/// qcow2 → raw: with qemu-img always, and in-process with Sluice's converter when it exists.
fn assert_round_trip(raw: &Path, qcow2: &Path) {
    let source = read(raw);
    let vsize = qemu_virtual_size(raw);
    let by_qemu = qcow2.with_extension("qemu.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qcow2.to_str().expect("utf-8"),
            by_qemu.to_str().expect("utf-8"),
        ],
    );
    assert_same_disk(&source, &read(&by_qemu), vsize);
    let image = read(qcow2);
    match convert_split(&image, Format::Qcow2, Target::Raw, &[usize::MAX]) {
        Ok(back) => {
            assert_same_disk(&source, &back, vsize);
            let split = convert_split(&image, Format::Qcow2, Target::Raw, &[4093, 65_537])
                .expect("qcow2 → raw split");
            assert!(split == back, "qcow2 → raw depends on chunking");
        }
        Err(ConvertError::Image {
            code: ReasonCode::UnsupportedFormat,
            ..
        }) => eprintln!("qcow2 → raw converter not available yet: Sluice leg skipped"),
        Err(e) => panic!("qcow2 → raw of the writer's own output failed: {e}"),
    }
}

#[test]
fn test_roundtrip_raw_with_data_cluster_multiple_passes_qemu_check() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "a.raw", 3 << 20);
    let qcow2 = assert_qcow2_like_qemu(&raw);
    assert_round_trip(&raw, &qcow2);
}

#[test]
fn test_roundtrip_raw_size_not_cluster_multiple_passes_qemu_check() {
    let dir = scratch();
    // 5 MiB + 12,800: a multiple of 512 but not of 64 KiB.
    let raw = raw_with_data(dir.path(), "b.raw", (5 << 20) + 12_800);
    let qcow2 = assert_qcow2_like_qemu(&raw);
    assert_round_trip(&raw, &qcow2);
}

#[test]
fn test_roundtrip_raw_size_not_sector_multiple_rounds_like_qemu() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "c.raw", (1 << 20) + 1000);
    let qcow2 = assert_qcow2_like_qemu(&raw);
    assert_eq!(qemu_info(&qcow2, None).virtual_size, (1 << 20) + 1024);
    assert_round_trip(&raw, &qcow2);
}

#[test]
fn test_roundtrip_raw_all_zeros_allocates_no_data_cluster() {
    let dir = scratch();
    let raw = dir.path().join("zero.raw");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(2 << 20))
        .expect("zero raw");
    let qcow2 = assert_qcow2_like_qemu(&raw);
    // header, L1 table, refcount table, refcount block: no data, no L2 table.
    assert_eq!(std::fs::metadata(&qcow2).expect("stat").len(), 4 * CLUSTER);
    assert_eq!(allocated_data_clusters(&qcow2), 0);
    assert_round_trip(&raw, &qcow2);
}

#[test]
fn test_roundtrip_raw_data_in_last_partial_cluster_is_kept() {
    let dir = scratch();
    let size = 4 * CLUSTER + 4096 + 333;
    let raw = dir.path().join("tail.raw");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(size))
        .expect("raw");
    write_pattern(&raw, 4 * CLUSTER + 100, 4096 + 233); // ends exactly at `size`
    write_pattern(&raw, CLUSTER, 10);
    assert_eq!(std::fs::metadata(&raw).expect("stat").len(), size);
    let qcow2 = assert_qcow2_like_qemu(&raw);
    // Clusters 1 and 4 hold data; header + 2 data + L2 + L1 + refcount table + block.
    assert_eq!(allocated_data_clusters(&qcow2), 2);
    assert_eq!(std::fs::metadata(&qcow2).expect("stat").len(), 7 * CLUSTER);
    assert_round_trip(&raw, &qcow2);
}

/// Through the real binary from stdin, an image whose data needs two L2 tables (each maps
/// 512 MiB): the second table and the L1 entry pointing to it must be right.
#[test]
fn test_roundtrip_cli_stdin_two_l2_tables_passes_qemu_check() {
    let dir = scratch();
    let raw = dir.path().join("big.raw");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(600 << 20))
        .expect("raw");
    for off in [0, (512 << 20) - 4096, 512 << 20, (600 << 20) - 65_536] {
        write_pattern(&raw, off, 8192.min((600 << 20) - off as usize));
    }
    let qcow2 = dir.path().join("big.qcow2");
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["convert", "--format", "raw", "--to", "qcow2", "-"])
        .arg(&qcow2)
        .stdin(std::fs::File::open(&raw).expect("open raw"))
        .output()
        .expect("running sluice");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    qemu_check(&qcow2);
    qemu_compare(&raw, &qcow2);
    assert_eq!(qemu_info(&qcow2, None).virtual_size, 600 << 20);
    let back = dir.path().join("big.back.raw");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["convert", "--to", "raw"])
        .arg(&qcow2)
        .arg(&back)
        .output()
        .expect("running sluice");
    match out.status.code() {
        Some(0) => assert!(read(&back) == read(&raw), "sluice round trip changed bytes"),
        _ if String::from_utf8_lossy(&out.stdout).contains("unsupported_format") => {
            eprintln!("qcow2 → raw converter not available yet: qemu-img leg only");
            assert_round_trip(&raw, &qcow2);
        }
        code => panic!(
            "sluice convert --to raw exited {code:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}
