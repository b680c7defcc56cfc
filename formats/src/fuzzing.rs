//! Harness bodies for the fuzz targets in `fuzz/`, kept here so the targets are one-liners
//! and the same code runs in unit tests on the stable toolchain.
//!
//! Every harness inspects the input and then checks [`check_report`], a set of properties
//! that hold for any input whatever the probes conclude (an accepted report has no reasons,
//! a declared format that was accepted is the detected one, ...). A violated property panics,
//! which libFuzzer reports as a crash, exactly like a panic inside a probe.

use crate::{inspect_bytes, Format, Inspector, Limits, Report, Verdict};

/// The fuzz targets in `fuzz/fuzz_targets/` and the format each one declares (`None`:
/// detection only). `buf_independent` is the differential target and is not listed here.
pub const DECLARED_TARGETS: [(&str, Option<Format>); 8] = [
    ("inspect_any", None),
    ("inspect_qcow2", Some(Format::Qcow2)),
    ("inspect_vmdk", Some(Format::Vmdk)),
    ("inspect_vhd", Some(Format::Vhd)),
    ("inspect_vhdx", Some(Format::Vhdx)),
    ("inspect_iso", Some(Format::Iso)),
    ("inspect_gpt", Some(Format::Gpt)),
    ("inspect_raw", Some(Format::Raw)),
];

/// Inspects `data` whole with no declared format and checks the report; must never panic.
pub fn inspect(data: &[u8]) {
    inspect_as(None, data);
}

/// Inspects `data` whole, declared as `declared`, and checks the report's invariants.
///
/// # Panics
/// When a probe panics or the report breaks an invariant of [`check_report`].
pub fn inspect_as(declared: Option<Format>, data: &[u8]) -> Report {
    let report = inspect_bytes(data, declared, Limits::default());
    check_report(data.len(), declared, &report);
    report
}

/// Inspects `data[1..]` declared as the format selected by `data[0]`; must never panic.
pub fn inspect_declared(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let declared = Format::ALL
        .get(
            usize::from(selector)
                .checked_rem(Format::ALL.len())
                .unwrap_or(0),
        )
        .copied();
    inspect_as(declared, rest);
}

/// Properties every report must have, whatever the bytes (`len`: the stream's length).
///
/// # Panics
/// With a message naming the broken property.
pub fn check_report(len: usize, declared: Option<Format>, report: &Report) {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    assert_eq!(
        report.declared, declared,
        "report names another declared format"
    );
    assert_eq!(
        report.verdict == Verdict::Accept,
        report.reasons.is_empty(),
        "accept must mean no reasons, reject at least one: {report:?}"
    );
    assert!(
        report.formats.contains(&report.format),
        "detected format missing from the matched formats: {report:?}"
    );
    assert!(
        report.bytes_inspected <= len,
        "inspected {} bytes of a {len}-byte stream",
        report.bytes_inspected
    );
    if report.complete {
        assert_eq!(
            report.bytes_inspected, len,
            "complete report left bytes unread"
        );
    } else {
        assert_eq!(report.verdict, Verdict::Reject, "only a rejection is early");
    }
    for reason in &report.reasons {
        assert!(
            !reason.message.is_empty(),
            "{} without a message",
            reason.code
        );
    }
    if report.is_accepted() {
        assert!(
            report.virtual_size.is_some(),
            "accepted {} image without a virtual size",
            report.format
        );
        if let Some(d) = declared {
            let fits =
                report.format == d || (d == Format::Raw && report.format.is_partition_table());
            assert!(fits, "declared {d} accepted as {}", report.format);
        }
    }
}

/// Feeds `data` split at the given chunk sizes (cycled; 0 is read as 1) and returns the report.
pub fn inspect_chunked(data: &[u8], declared: Option<Format>, sizes: &[usize]) -> Report {
    let mut inspector = Inspector::new(declared, Limits::default());
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        let size = sizes
            .get(i.checked_rem(sizes.len()).unwrap_or(0))
            .copied()
            .unwrap_or(1)
            .max(1);
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        let _ = inspector.feed(chunk);
        rest = after;
        i = i.wrapping_add(1);
    }
    inspector.finish()
}

/// The differential target: the first bytes of `data` choose chunk sizes and the declared
/// format, the rest is the image; the report must equal the one for the image fed whole.
///
/// Layout: byte 0 = `s << 3 | n`: `n % 8` (at least 1) chunk sizes follow, one byte each (0 is
/// read as 1), cycled; `s` = 0 declares nothing, `s` = k declares `Format::ALL[k - 1]` (a
/// value past the end declares nothing).
///
/// # Panics
/// When the two reports differ: that is the bug this target exists to find. Also when the
/// whole-stream report breaks an invariant of [`check_report`].
pub fn buf_independent(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(control % 8).max(1);
    let declared = usize::from(control >> 3)
        .checked_sub(1)
        .and_then(|k| Format::ALL.get(k).copied());
    let Some((sizes, image)) = rest.split_at_checked(count.min(rest.len())) else {
        return;
    };
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b).max(1)).collect();
    let whole = inspect_as(declared, image);
    let split = inspect_chunked(image, declared, &sizes);
    assert_eq!(whole, split, "report depends on chunking (sizes {sizes:?})");
}

/// Sectors of the fixed prefix [`vmdk_footer`] puts before the fuzzer's bytes: a
/// monolithicSparse header with its grain directory at the end and a descriptor, padded to
/// `overHead` (8 sectors, so grains, tables and footer come from the input).
const VMDK_FOOTER_PREFIX_SECTORS: u64 = 8;

/// The fixed prefix of [`vmdk_footer`]: 2 MiB disk, 64 KiB grains, 512-entry tables.
pub fn vmdk_footer_prefix() -> Vec<u8> {
    let mut s = vec![0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = at
            .checked_add(bytes.len())
            .and_then(|end| s.get_mut(at..end))
        {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, b"KDMV");
    put(4, &1u32.to_le_bytes()); // version
    put(8, &1u32.to_le_bytes()); // flags: newline test
    put(12, &4096u64.to_le_bytes()); // capacity (sectors)
    put(20, &128u64.to_le_bytes()); // grain size (sectors)
    put(28, &1u64.to_le_bytes()); // descriptor offset
    put(36, &6u64.to_le_bytes()); // descriptor size
    put(44, &512u32.to_le_bytes()); // entries per grain table
    put(56, &u64::MAX.to_le_bytes()); // gdOffset: GD_AT_END
    put(64, &VMDK_FOOTER_PREFIX_SECTORS.to_le_bytes()); // overHead
    put(73, b"\n \r\n");
    s.extend_from_slice(
        b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
          createType=\"monolithicSparse\"\nRW 4096 SPARSE \"f.vmdk\"\n",
    );
    s.resize(512 * 8, 0);
    s
}

/// The VMDK footer path: [`vmdk_footer_prefix`] then `data[1..]` as the rest of the file
/// (grains, tables, directory, footer); `data[0]` picks a chunk size. The report must keep
/// [`check_report`]'s invariants and not depend on chunking.
///
/// # Panics
/// When a probe panics, an invariant breaks, or chunking changes the report.
pub fn vmdk_footer(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut image = vmdk_footer_prefix();
    image.extend_from_slice(rest);
    let whole = inspect_as(Some(Format::Vmdk), &image);
    let chunk = usize::from(control).saturating_mul(61).max(1);
    let split = inspect_chunked(&image, Some(Format::Vmdk), &[chunk, 1, 4096]);
    assert_eq!(whole, split, "report depends on chunking (chunk {chunk})");
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::ReasonCode;

    /// The checked-in seed of the `vmdk_footer` target reaches the accept path: a fuzzer
    /// starting from it explores the footer checks, not the header's refusals.
    #[test]
    fn test_vmdk_footer_seed_is_accepted_in_any_chunking() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/vmdk_footer/seed-two-grains"
        );
        let seed = std::fs::read(path).unwrap();
        vmdk_footer(&seed);
        let mut image = vmdk_footer_prefix();
        image.extend_from_slice(&seed[1..]);
        let report = inspect_as(Some(Format::Vmdk), &image);
        assert!(report.is_accepted(), "{:?}", report.reasons);
        // A grain placed in its own grain table (sector 264) is refused.
        let mut bad = seed.clone();
        bad[1 + 256 * 512..][..4].copy_from_slice(&264u32.to_le_bytes());
        image.truncate(8 * 512);
        image.extend_from_slice(&bad[1..]);
        assert!(inspect_as(Some(Format::Vmdk), &image).has_reason(ReasonCode::Corrupt));
    }

    /// Small inputs that reach each probe's first checks: each format's magic at its offset.
    fn probing_inputs() -> Vec<(&'static str, Vec<u8>)> {
        let at = |offset: usize, magic: &[u8], len: usize| {
            let mut v = vec![0u8; len.max(offset + magic.len())];
            v[offset..offset + magic.len()].copy_from_slice(magic);
            v
        };
        let mut lcg = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..65_536)
            .map(|_| {
                lcg = lcg
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (lcg >> 56) as u8
            })
            .collect();
        let mut gpt = at(512, b"EFI PART", 64 * 1024);
        gpt[510..512].copy_from_slice(&[0x55, 0xaa]);
        gpt[446 + 4] = 0xee; // protective MBR partition type
        vec![
            ("empty", Vec::new()),
            ("one byte", vec![0x51]),
            ("one sector of zeros", vec![0; 512]),
            ("one decision step of zeros", vec![0; 4096]),
            ("noise", noise),
            ("qcow2 magic", at(0, b"QFI\xfb\0\0\0\x03", 4096)),
            ("qcow2 magic truncated", b"QFI\xfb\0\0".to_vec()),
            ("vmdk sparse magic", at(0, b"KDMV\x01\0\0\0", 4096)),
            (
                "vmdk descriptor",
                b"# Disk DescriptorFile\nversion=1\n".to_vec(),
            ),
            ("vhd footer copy", at(0, b"conectix", 1024)),
            ("vhdx file identifier", at(0, b"vhdxfile", 256 * 1024)),
            (
                "iso primary volume descriptor",
                at(32 * 1024 + 1, b"CD001", 40 * 1024),
            ),
            ("gpt header", gpt),
            ("gzip magic", at(0, &[0x1f, 0x8b, 0x08], 4096)),
        ]
    }

    #[test]
    fn test_fuzzing_declared_targets_probing_inputs_do_not_panic() {
        for (name, input) in probing_inputs() {
            for (target, declared) in DECLARED_TARGETS {
                let report = inspect_as(declared, &input);
                assert!(
                    matches!(report.verdict, Verdict::Accept | Verdict::Reject),
                    "{target} on {name}"
                );
            }
            inspect(&input);
            inspect_declared(&input);
        }
    }

    #[test]
    fn test_fuzzing_buf_independent_probing_inputs_agree() {
        for (_, input) in probing_inputs() {
            for control in [0x01u8, 0x03, 0x07, 0x0b, 0x13, 0xff] {
                let mut data = vec![control, 1, 7, 200, 0, 255, 64, 3];
                data.extend_from_slice(&input);
                buf_independent(&data);
            }
        }
    }

    #[test]
    fn test_fuzzing_buf_independent_control_byte_selects_declared_format() {
        // Control 0x11 = declared Format::ALL[1] (qcow2), one chunk size; zeros are raw.
        let mut data = vec![0x11u8, 9];
        data.extend_from_slice(&[0u8; 4096]);
        buf_independent(&data);
        let report = inspect_as(Format::ALL.get(1).copied(), &[0u8; 4096]);
        assert!(matches!(report.declared, Some(Format::Qcow2)));
        assert!(report.has_reason(ReasonCode::FormatMismatch));
    }

    #[test]
    fn test_fuzzing_short_inputs_empty_or_control_only_return() {
        buf_independent(&[]);
        buf_independent(&[0x07]);
        buf_independent(&[0x07, 1, 2]);
        inspect_declared(&[]);
        let report = inspect_as(None, &[]);
        assert!(report.has_reason(ReasonCode::Empty));
    }

    #[test]
    #[should_panic(expected = "accept must mean no reasons")]
    fn test_fuzzing_check_report_accept_with_reasons_panics() {
        let mut report = inspect_as(Some(Format::Raw), &[0u8; 4096]);
        report.verdict = Verdict::Accept;
        report.reasons = vec![crate::Reason::new(ReasonCode::Corrupt, "made up")];
        check_report(4096, Some(Format::Raw), &report);
    }

    #[test]
    #[should_panic(expected = "declared qcow2 accepted as raw")]
    fn test_fuzzing_check_report_declared_mismatch_accepted_panics() {
        let mut report = inspect_as(None, &[0u8; 4096]);
        report.declared = Some(Format::Qcow2);
        check_report(4096, Some(Format::Qcow2), &report);
    }

    /// Every checked-in seed (and crash reproducer) under `fuzz/corpus/<target>/` replays
    /// through its target's harness: a fixed crash stays fixed without the nightly toolchain.
    #[test]
    fn test_fuzzing_seed_corpus_replays_without_panic() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0usize;
        let targets = DECLARED_TARGETS
            .iter()
            .map(|&(name, declared)| (name, Some(declared)))
            .chain(std::iter::once(("buf_independent", None)));
        for (target, declared) in targets {
            let dir = corpus.join(target);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("reading seed corpus {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("reading seed");
                match declared {
                    Some(declared) => {
                        inspect_as(declared, &data);
                    }
                    None => buf_independent(&data),
                }
                replayed += 1;
            }
        }
        assert!(
            replayed >= 20,
            "only {replayed} seeds found under {}",
            corpus.display()
        );
    }
}

/// Largest output or spill the round-trip harness's in-memory sinks accept, beyond the
/// input's own length: the qcow2 metadata of a fuzz-sized input (header, L2, L1, refcount
/// table and block) is 5 clusters of 64 KiB; 1 MiB leaves room.
const ROUNDTRIP_SINK_SLACK: usize = 1 << 20;

/// Runs `data` through a fresh converter `from` → `target` in `chunk`-byte pieces into a
/// [`MemorySink`](crate::convert::MemorySink); returns the whole output (trailing holes as
/// zeros).
fn roundtrip_convert(
    from: Format,
    target: crate::Target,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, crate::ConvertError> {
    let limits = crate::ConvertLimits::default();
    let mut converter = crate::Converter::new(from, target, &limits)?;
    let mut sink = crate::convert::MemorySink::new(data.len().saturating_add(ROUNDTRIP_SINK_SLACK));
    for piece in data.chunks(chunk.max(1)) {
        converter.feed(piece, &mut sink)?;
    }
    let len = converter.finish(&mut sink)?;
    let mut output = sink.output;
    let len = usize::try_from(len).map_err(|_| {
        crate::ConvertError::image(crate::ReasonCode::LimitExceeded, "output too long")
    })?;
    assert!(
        output.len() <= len,
        "converter wrote past the length it returned"
    );
    output.resize(len, 0);
    Ok(output)
}

/// The round trip raw → qcow2 → raw. `data[0]` picks the chunk size (`× 257`, so 1 to
/// 65,535 bytes) the rest (the raw image) is fed in; the qcow2 output must equal the one made
/// from the image fed whole, be accepted by the [`Inspector`] as qcow2 with the virtual size
/// qemu gives the raw image (its length rounded up to 512), and, once the qcow2 → raw converter
/// exists (until then it is refused as `unsupported_format` and that leg is skipped), convert
/// back to the raw image followed by zeros up to that virtual size.
///
/// # Panics
/// When any of those properties fails, or a converter fails on valid input.
pub fn roundtrip_raw_qcow2(data: &[u8]) {
    let Some((&control, raw)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control).saturating_mul(257).max(1);
    let qcow2 = roundtrip_convert(Format::Raw, crate::Target::Qcow2, raw, chunk)
        .unwrap_or_else(|e| panic!("raw → qcow2 failed: {e}"));
    let whole = roundtrip_convert(Format::Raw, crate::Target::Qcow2, raw, usize::MAX)
        .unwrap_or_else(|e| panic!("raw → qcow2 failed: {e}"));
    assert!(qcow2 == whole, "qcow2 output depends on chunking ({chunk})");
    let virtual_size = u64::try_from(raw.len())
        .unwrap_or(u64::MAX)
        .next_multiple_of(512);
    let report = inspect_bytes(&qcow2, Some(Format::Qcow2), Limits::default());
    check_report(qcow2.len(), Some(Format::Qcow2), &report);
    assert!(
        report.is_accepted() || raw.is_empty(),
        "qcow2 output refused: {:?}",
        report.reasons
    );
    assert_eq!(
        report.virtual_size,
        Some(virtual_size),
        "qcow2 virtual size"
    );
    match roundtrip_convert(Format::Qcow2, crate::Target::Raw, &qcow2, chunk) {
        Ok(back) => {
            let (head, tail) = back.split_at_checked(raw.len()).unwrap_or_else(|| {
                panic!(
                    "raw output of {} bytes, input had {}",
                    back.len(),
                    raw.len()
                )
            });
            assert!(head == raw, "raw → qcow2 → raw changed the bytes");
            assert!(
                tail.iter().all(|b| *b == 0),
                "non-zero bytes past the input"
            );
            assert_eq!(
                u64::try_from(back.len()).unwrap_or(u64::MAX),
                virtual_size,
                "raw output length"
            );
        }
        Err(crate::ConvertError::Image {
            code: crate::ReasonCode::UnsupportedFormat,
            ..
        }) => {}
        Err(e) => panic!("qcow2 → raw failed on the writer's own output: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod roundtrip_tests {
    use super::*;

    #[test]
    fn test_fuzzing_roundtrip_raw_qcow2_small_inputs_hold() {
        roundtrip_raw_qcow2(&[]);
        roundtrip_raw_qcow2(&[0]);
        for len in [1usize, 511, 512, 1000, 65_535, 65_536, 65_537, 200_000] {
            let mut image: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            for control in [0u8, 1, 3, 255] {
                let mut data = vec![control];
                data.extend_from_slice(&image);
                roundtrip_raw_qcow2(&data);
            }
            image.fill(0);
            let mut data = vec![17u8];
            data.extend_from_slice(&image);
            roundtrip_raw_qcow2(&data);
        }
    }
}

/// Largest output or spill offset the format → raw conversion harnesses' sinks accept: fuzz
/// inputs are small, and writes past this fail as sink errors (not panics).
const CONVERT_FUZZ_SINK_LEN: usize = 4 << 20;

/// Converts `data` from `format` to raw, fed whole and in `chunk`-byte pieces (`chunk` is
/// `data[0] × 31`): with small limits, then with tight ones also picked by `data[0]`
/// (`512 × (data[0] mod 16)` spill bytes, `data[0] / 16` tracked entries) so that inputs land
/// on both sides of each limit. Each pair of runs must agree: success or failure, the reason
/// code and message of an image error, and the output bytes.
///
/// # Panics
/// When the converter panics or its result depends on the chunking.
fn convert_to_raw_checked(format: Format, data: &[u8]) {
    let Some((&control, image)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control).saturating_mul(31).max(1);
    let small = crate::ConvertLimits {
        max_spill_bytes: 1 << 20,
        max_tracked_entries: 4096,
        ..crate::ConvertLimits::default()
    };
    check_convert_chunking(format, image, chunk, &small);
    let tight = crate::ConvertLimits {
        max_spill_bytes: u64::from(control % 16).saturating_mul(512),
        max_tracked_entries: usize::from(control / 16),
        ..crate::ConvertLimits::default()
    };
    check_convert_chunking(format, image, chunk, &tight);
}

/// Converts `image` whole and in `chunk`-byte pieces with `limits`; see
/// [`convert_to_raw_checked`].
///
/// # Panics
/// When the converter panics or the two runs disagree.
fn check_convert_chunking(
    format: Format,
    image: &[u8],
    chunk: usize,
    limits: &crate::ConvertLimits,
) {
    let run = |size: usize| -> (Result<u64, crate::ConvertError>, Vec<u8>) {
        let mut sink = crate::convert::MemorySink::new(CONVERT_FUZZ_SINK_LEN);
        let result = crate::Converter::new(format, crate::Target::Raw, limits).and_then(|mut c| {
            for piece in image.chunks(size.max(1)) {
                c.feed(piece, &mut sink)?;
            }
            c.finish(&mut sink)
        });
        (result, sink.output)
    };
    let (whole, whole_out) = run(image.len());
    let (split, split_out) = run(chunk);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{format} output length depends on chunking ({chunk})");
            let n = usize::try_from(*a).unwrap_or(usize::MAX);
            let trim = |v: &[u8]| v.get(..n.min(v.len())).unwrap_or(&[]).to_vec();
            let (mut x, mut y) = (trim(&whole_out), trim(&split_out));
            let longest = x.len().max(y.len());
            x.resize(longest, 0);
            y.resize(longest, 0);
            assert!(x == y, "{format} output depends on chunking ({chunk})");
        }
        // Converter errors must agree in code and message (the message names the failing
        // structure and its offset: the same image must be refused for the same reason).
        (
            Err(a @ crate::ConvertError::Image { .. }),
            Err(b @ crate::ConvertError::Image { .. }),
        ) => {
            assert!(
                a == b,
                "{format} conversion verdict depends on chunking ({chunk}, {limits:?}): \
                 {whole:?} vs {split:?}"
            );
        }
        // The harness's bounded sink failed in one run at least: not the image's verdict.
        (Err(_), Err(_)) => {}
        _ => panic!(
            "{format} conversion result depends on chunking ({chunk}, {limits:?}): {whole:?} vs \
             {split:?}"
        ),
    }
}

/// vmdk → raw: `data[0]` picks the chunk size (`× 31`) and the tight limits, the rest is the
/// image (see `convert_to_raw_checked`). Never panics unless the result depends on chunking.
pub fn convert_vmdk(data: &[u8]) {
    convert_to_raw_checked(Format::Vmdk, data);
}

/// vhd → raw, as [`convert_vmdk`].
pub fn convert_vhd(data: &[u8]) {
    convert_to_raw_checked(Format::Vhd, data);
}

/// vhdx → raw, as [`convert_vmdk`].
pub fn convert_vhdx(data: &[u8]) {
    convert_to_raw_checked(Format::Vhdx, data);
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod convert_to_raw_tests {
    use super::*;

    #[test]
    fn test_fuzzing_convert_to_raw_short_and_magic_inputs_do_not_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![vec![], vec![3], vec![3, b'K', b'D']];
        let mut vmdk = vec![1u8; 4097];
        vmdk[1..5].copy_from_slice(b"KDMV");
        inputs.push(vmdk);
        let mut vhd = vec![0u8; 2049];
        vhd[1..9].copy_from_slice(b"conectix");
        inputs.push(vhd);
        let mut vhdx = vec![0u8; 4097];
        vhdx[1..9].copy_from_slice(b"vhdxfile");
        inputs.push(vhdx);
        for input in &inputs {
            convert_vmdk(input);
            convert_vhd(input);
            convert_vhdx(input);
        }
    }

    /// Every file of the converter targets' corpora replays through its harness (whole and
    /// chunked, small and tight limits): the seeds are real images after a control byte.
    #[test]
    fn test_fuzzing_convert_corpus_replays_without_panic() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0usize;
        for (target, format) in [
            ("convert_qcow2", Format::Qcow2),
            ("convert_vmdk", Format::Vmdk),
            ("convert_vhd", Format::Vhd),
            ("convert_vhdx", Format::Vhdx),
        ] {
            let dir = corpus.join(target);
            for entry in std::fs::read_dir(&dir).unwrap() {
                let data = std::fs::read(entry.unwrap().path()).unwrap();
                convert_to_raw_checked(format, &data);
                replayed += 1;
            }
        }
        assert!(replayed >= 9, "only {replayed} converter seeds");
    }
}

/// qcow2 → raw, as [`convert_vmdk`]: `data[0]` picks the chunk size (`× 31`), the rest is the
/// image, converted with small limits (not the tight ones) into a sink bounded to
/// `CONVERT_FUZZ_SINK_LEN`. Never panics unless the result depends on chunking.
pub fn convert_qcow2(data: &[u8]) {
    convert_to_raw_checked(Format::Qcow2, data);
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod convert_qcow2_tests {
    use super::*;

    #[test]
    fn test_fuzzing_convert_qcow2_short_and_magic_inputs_do_not_panic() {
        convert_qcow2(&[]);
        convert_qcow2(&[3]);
        convert_qcow2(&[3, b'Q', b'F', b'I', 0xfb]);
        let mut header = vec![0u8; 4097];
        header[1..5].copy_from_slice(b"QFI\xfb");
        header[5..9].copy_from_slice(&3u32.to_be_bytes());
        header[21..25].copy_from_slice(&9u32.to_be_bytes());
        convert_qcow2(&header);
    }
}
