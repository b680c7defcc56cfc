//! cli inspection tests on real images, through the real `sluice` binary.
//!
//! Exit status (0 accept, 1 reject, 2 usage or I/O error), the `--json` contract (exactly one
//! object with format, virtual_size, verdict, reasons), path and stdin giving the same report,
//! the human report, `--max-virtual-size`, and peak memory over 4 GiB streams.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use serde_json::Value;

use crate::common::{qemu_img_create, raw_with_data, run, scratch};

/// Exit status of an accepted image.
const EXIT_ACCEPT: i32 = 0;
/// Exit status of a rejected image.
const EXIT_REJECT: i32 = 1;
/// Exit status of a usage or I/O error.
const EXIT_ERROR: i32 = 2;

/// Size of the stream in the peak-memory tests: 4 GiB, far above any buffer the CLI may hold.
const BIG_STREAM: u64 = 4 << 30;
/// The bound on `sluice inspect`'s peak resident set over a stream of any length.
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Runs `sluice ARGS` with stdin from `stdin` (or empty) and returns its output.
fn sluice(args: &[&str], stdin: Option<&Path>) -> Output {
    let input = match stdin {
        Some(path) => Stdio::from(File::open(path).expect("opening stdin file")),
        None => Stdio::null(),
    };
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(input)
        .output()
        .expect("running sluice")
}

/// The exit status, which must exist (no signal).
fn code(out: &Output) -> i32 {
    out.status.code().expect("sluice killed by a signal")
}

/// Parses stdout as exactly one JSON object followed by one newline.
fn one_json_object(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "expected one line of JSON, got {text:?}"
    );
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let first = values
        .next()
        .expect("no JSON on stdout")
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"));
    assert!(values.next().is_none(), "more than one JSON value: {text}");
    assert!(first.is_object(), "JSON is not an object: {first}");
    for field in ["format", "virtual_size", "verdict", "reasons"] {
        assert!(first.get(field).is_some(), "JSON lacks {field}: {first}");
    }
    first
}

/// The reason codes of a JSON report.
fn codes(json: &Value) -> Vec<String> {
    json["reasons"]
        .as_array()
        .expect("reasons is an array")
        .iter()
        .map(|r| r["code"].as_str().expect("code is a string").to_owned())
        .collect()
}

/// `path` as `&str` for argument lists.
fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A 1 MiB raw disk with pattern data, and a tar archive of it (an archive Sluice refuses: only gzip/xz/zstd/bzip2
/// streams and OVAs are unwrapped, see `convert::unwrap`).
fn raw_and_tar(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = raw_with_data(dir, "disk.raw", 1 << 20);
    let tar = dir.join("disk.tar");
    run("tar", &["-cf", arg(&tar), "-C", arg(dir), "disk.raw"]);
    (raw, tar)
}

#[test]
fn test_cli_raw_file_json_accepts_exit_0() {
    let dir = scratch();
    let (raw, _) = raw_and_tar(dir.path());
    let out = sluice(&["inspect", "--json", arg(&raw)], None);
    assert!(matches!(code(&out), EXIT_ACCEPT), "{out:?}");
    let json = one_json_object(&out);
    assert_eq!(json["format"], "raw");
    assert_eq!(json["verdict"], "accept");
    assert_eq!(json["virtual_size"], 1 << 20);
    assert!(matches!(json["reasons"].as_array(), Some(r) if r.is_empty()));
}

#[test]
fn test_cli_tar_file_json_rejects_exit_1() {
    let dir = scratch();
    let (_, tar) = raw_and_tar(dir.path());
    let out = sluice(&["inspect", "--json", arg(&tar)], None);
    assert!(matches!(code(&out), EXIT_REJECT), "{out:?}");
    let json = one_json_object(&out);
    assert_eq!(json["format"], "tar");
    assert_eq!(json["verdict"], "reject");
    assert!(codes(&json).contains(&"compressed".to_owned()), "{json}");
}

#[test]
fn test_cli_declared_qcow2_raw_file_rejects_format_mismatch() {
    let dir = scratch();
    let (raw, _) = raw_and_tar(dir.path());
    let out = sluice(&["inspect", "--json", "--format", "qcow2", arg(&raw)], None);
    assert!(matches!(code(&out), EXIT_REJECT), "{out:?}");
    let json = one_json_object(&out);
    assert_eq!(json["declared"], "qcow2");
    assert!(
        codes(&json).contains(&"format_mismatch".to_owned()),
        "{json}"
    );
}

#[test]
fn test_cli_missing_file_exits_2() {
    let dir = scratch();
    let missing = dir.path().join("no-such-image.qcow2");
    for json in [true, false] {
        let mut args = vec!["inspect"];
        if json {
            args.push("--json");
        }
        args.push(arg(&missing));
        let out = sluice(&args, None);
        assert!(matches!(code(&out), EXIT_ERROR), "{out:?}");
        assert!(out.stdout.is_empty(), "error printed a report: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no-such-image.qcow2"), "{stderr}");
    }
}

#[test]
fn test_cli_unknown_format_value_exits_2() {
    let dir = scratch();
    let (raw, _) = raw_and_tar(dir.path());
    let out = sluice(&["inspect", "--json", "--format", "ploop", arg(&raw)], None);
    assert!(matches!(code(&out), EXIT_ERROR), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ploop"));
}

#[test]
fn test_cli_missing_path_exits_2() {
    for args in [&["inspect", "--json"][..], &["inspect"][..]] {
        let out = sluice(args, None);
        assert!(matches!(code(&out), EXIT_ERROR), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn test_cli_path_and_stdin_same_json() {
    let dir = scratch();
    let (raw, tar) = raw_and_tar(dir.path());
    let qcow2 = qemu_img_create(dir.path(), "disk.qcow2", "qcow2", "", "64M");
    let vmdk = qemu_img_create(dir.path(), "disk.vmdk", "vmdk", "", "64M");
    for (path, declared) in [
        (&raw, None),
        (&raw, Some("raw")),
        (&tar, None),
        (&qcow2, Some("qcow2")),
        (&vmdk, None),
    ] {
        let mut args = vec!["inspect", "--json"];
        if let Some(d) = declared {
            args.extend(["--format", d]);
        }
        let from_path = sluice(&[&args[..], &[arg(path)]].concat(), None);
        let from_stdin = sluice(&[&args[..], &["-"]].concat(), Some(path));
        assert_eq!(code(&from_path), code(&from_stdin), "{}", path.display());
        assert!(matches!(code(&from_path), EXIT_ACCEPT | EXIT_REJECT));
        assert_eq!(
            one_json_object(&from_path),
            one_json_object(&from_stdin),
            "{} read from its path and from stdin",
            path.display()
        );
    }
}

#[test]
fn test_cli_human_output_names_verdict_and_reasons() {
    let dir = scratch();
    let (raw, tar) = raw_and_tar(dir.path());

    let out = sluice(&["inspect", arg(&raw)], None);
    assert!(matches!(code(&out), EXIT_ACCEPT));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "human output is JSON"
    );
    assert!(
        text.contains("verdict:") && text.contains("accept"),
        "{text}"
    );
    assert!(text.contains("raw") && text.contains("1048576"), "{text}");

    let out = sluice(&["inspect", arg(&tar)], None);
    assert!(matches!(code(&out), EXIT_REJECT));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains("verdict:") && text.contains("reject"),
        "{text}"
    );
    assert!(text.contains("compressed"), "reasons missing: {text}");
}

#[test]
fn test_cli_max_virtual_size_below_image_rejects_size_cap() {
    let dir = scratch();
    let (raw, _) = raw_and_tar(dir.path());
    let out = sluice(
        &["inspect", "--json", "--max-virtual-size", "4096", arg(&raw)],
        None,
    );
    assert!(matches!(code(&out), EXIT_REJECT), "{out:?}");
    let json = one_json_object(&out);
    assert_eq!(json["verdict"], "reject");
    assert_eq!(codes(&json), vec!["size_cap".to_owned()]);

    // The cap is inclusive: an image of exactly the cap is accepted.
    let out = sluice(
        &[
            "inspect",
            "--json",
            "--max-virtual-size",
            "1048576",
            arg(&raw),
        ],
        None,
    );
    assert!(matches!(code(&out), EXIT_ACCEPT), "{out:?}");
}

#[test]
fn test_cli_max_virtual_size_not_a_number_exits_2() {
    let dir = scratch();
    let (raw, _) = raw_and_tar(dir.path());
    let out = sluice(
        &["inspect", "--json", "--max-virtual-size", "1T", arg(&raw)],
        None,
    );
    assert!(matches!(code(&out), EXIT_ERROR), "{out:?}");
}

/// What one streamed inspection produced.
struct Streamed {
    code: i32,
    json: Value,
    peak_rss_kib: u64,
}

/// The child's peak resident set (`VmHWM`) in KiB, from `/proc/<pid>/status`.
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .expect("reading /proc/<pid>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM (process gone?):\n{status}"));
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM value")
}

/// Runs `sluice inspect --json ARGS -`, writes the whole of `file` to its stdin, reads its
/// peak RSS while it waits for more (all input consumed, stdin still open: the inspection is
/// done, only `finish` and printing remain), then closes stdin and collects the report.
fn inspect_stream(file: &Path, args: &[&str]) -> Streamed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["inspect", "--json"])
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sluice");
    let mut stdin: ChildStdin = child.stdin.take().expect("stdin");
    let mut source = File::open(file).expect("opening the stream source");
    let copied = io::copy(&mut source, &mut stdin).and_then(|n| stdin.flush().map(|()| n));
    let peak = match copied {
        Ok(n) => {
            assert_eq!(n, std::fs::metadata(file).expect("metadata").len());
            // Let sluice drain the last pipe buffer before sampling.
            std::thread::sleep(std::time::Duration::from_millis(100));
            peak_rss_kib(&child)
        }
        // sluice stopped reading: a rejection. Report what it said below.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => panic!("writing to sluice: {e}"),
    };
    drop(stdin);
    let out = child.wait_with_output().expect("waiting for sluice");
    eprintln!("sluice inspect of {}: peak RSS {peak} KiB", file.display());
    let code = code(&out);
    let json = one_json_object(&out);
    assert!(
        peak > 0,
        "sluice stopped reading early (exit {code}): {json}"
    );
    Streamed {
        code,
        json,
        peak_rss_kib: peak,
    }
}

#[test]
fn test_cli_raw_4gib_stdin_peak_rss_under_64mib() {
    let dir = scratch();
    // Sparse: `truncate`-like set_len plus 64 KiB of pattern at four offsets; reads fast.
    let raw = raw_with_data(dir.path(), "big.raw", BIG_STREAM);
    let streamed = inspect_stream(&raw, &["--format", "raw"]);
    assert!(matches!(streamed.code, EXIT_ACCEPT), "{}", streamed.json);
    assert_eq!(streamed.json["virtual_size"], BIG_STREAM);
    assert!(
        streamed.peak_rss_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {} KiB over a 4 GiB raw stream",
        streamed.peak_rss_kib
    );
}

#[test]
fn test_cli_qcow2_4gib_preallocated_stdin_peak_rss_under_64mib() {
    let dir = scratch();
    // Every L2 table allocated and every cluster mapped: a 4 GiB (sparse) file that is all
    // qcow2 metadata and data clusters, streamed through a pipe.
    let qcow2 = qemu_img_create(
        dir.path(),
        "big.qcow2",
        "qcow2",
        "preallocation=metadata",
        "4G",
    );
    let streamed = inspect_stream(&qcow2, &["--format", "qcow2"]);
    assert!(matches!(streamed.code, EXIT_ACCEPT), "{}", streamed.json);
    assert_eq!(streamed.json["format"], "qcow2");
    assert_eq!(streamed.json["virtual_size"], BIG_STREAM);
    assert!(
        streamed.peak_rss_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {} KiB over a 4 GiB qcow2 stream",
        streamed.peak_rss_kib
    );
}
