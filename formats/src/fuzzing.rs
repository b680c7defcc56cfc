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

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::ReasonCode;

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
