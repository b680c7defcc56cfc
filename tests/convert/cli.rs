//! `sluice convert` through the real binary: exit status (0 converted, 1 refused or broken,
//! 2 usage or I/O error), files and stdin, refusals leaving no output, `--json`, and qcow2
//! output that `qemu-img check` accepts.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{qemu_img_create, qemu_info, raw_with_data, read, run, scratch};

/// Exit status of a converted image.
const EXIT_OK: i32 = 0;
/// Exit status of a refused or broken image.
const EXIT_REFUSED: i32 = 1;
/// Exit status of a usage or I/O error.
const EXIT_ERROR: i32 = 2;

/// Runs `sluice convert ARGS` with stdin from `stdin` (or empty).
fn sluice_convert(args: &[&str], stdin: Option<&Path>) -> Output {
    let input = match stdin {
        Some(path) => Stdio::from(File::open(path).expect("opening stdin file")),
        None => Stdio::null(),
    };
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("convert")
        .args(args)
        .stdin(input)
        .output()
        .expect("running sluice")
}

/// The exit status (no signal).
fn code(out: &Output) -> i32 {
    out.status.code().expect("sluice killed by a signal")
}

/// stdout parsed as one JSON object on one line.
fn json(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "expected one line of JSON, got {text:?} (stderr {})",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The reason codes of a failed conversion's JSON.
fn codes(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["code"].as_str().expect("code").to_owned())
        .collect()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn test_cli_convert_raw_file_to_raw_is_identical_and_sparse() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "in.raw", 16 << 20);
    let out_path = dir.path().join("out.raw");
    let out = sluice_convert(&["--json", "--to", "raw", arg(&raw), arg(&out_path)], None);
    assert_eq!(
        code(&out),
        EXIT_OK,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["converted"], true);
    assert_eq!(v["from"], "raw");
    assert_eq!(v["to"], "raw");
    assert_eq!(v["output_size"], 16 << 20);
    assert_eq!(v["virtual_size"], 16 << 20);
    assert!(read(&out_path) == read(&raw), "raw → raw changed bytes");
    // Zero blocks stay holes: 4 pattern runs of 64 KiB, far less than 16 MiB on disk.
    let on_disk = std::fs::metadata(&out_path).expect("stat").blocks() * 512;
    assert!(on_disk <= 1 << 20, "{on_disk} bytes allocated");
}

/// An ISO 9660 image of a small directory, made by genisoimage.
fn genisoimage(dir: &Path) -> std::path::PathBuf {
    let content = dir.join("content");
    std::fs::create_dir_all(&content).expect("mkdir");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(content.join("data.bin"), data).expect("writing the ISO's file");
    let iso = dir.join("disc.iso");
    run(
        "genisoimage",
        &["-quiet", "-J", "-R", "-o", arg(&iso), arg(&content)],
    );
    iso
}

#[test]
fn test_cli_convert_iso_to_raw_declared_or_detected_is_identity() {
    let dir = scratch();
    let iso = genisoimage(dir.path());
    for declared in [Some("iso"), None] {
        let out_path = dir.path().join("out.raw");
        let mut args = vec!["--json", "--to", "raw"];
        if let Some(format) = declared {
            args.extend(["--format", format]);
        }
        args.extend([arg(&iso), arg(&out_path)]);
        let out = sluice_convert(&args, None);
        assert_eq!(
            code(&out),
            EXIT_OK,
            "declared {declared:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json(&out)["from"], "iso", "declared {declared:?}");
        assert!(read(&out_path) == read(&iso), "ISO → raw changed bytes");
        std::fs::remove_file(&out_path).expect("removing the output");
    }
}

#[test]
fn test_cli_convert_stdin_to_raw_is_identical_with_summary() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "in.raw", (3 << 20) + 512);
    let out_path = dir.path().join("out.raw");
    let out = sluice_convert(&["--to", "raw", "-", arg(&out_path)], Some(&raw));
    assert_eq!(
        code(&out),
        EXIT_OK,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("converted:     raw -> raw"), "{text}");
    assert!(
        read(&out_path) == read(&raw),
        "stdin raw → raw changed bytes"
    );
}

#[test]
fn test_cli_convert_stdin_pipe_to_qcow2_passes_qemu_check() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "in.raw", (7 << 20) + 4096);
    let out_path = dir.path().join("out.qcow2");
    // A real pipe (not a file on stdin): nothing may seek.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["convert", "--json", "--format", "raw", "--to", "qcow2", "-"])
        .arg(&out_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = read(&raw);
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("waiting");
    writer.join().expect("writer").expect("feeding stdin");
    assert_eq!(code(&out), EXIT_OK);
    let v = json(&out);
    assert_eq!(v["to"], "qcow2");
    assert_eq!(
        v["output_size"].as_u64(),
        Some(std::fs::metadata(&out_path).expect("stat").len())
    );
    let check = run("qemu-img", &["check", arg(&out_path)]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("No errors were found"));
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            arg(&raw),
            arg(&out_path),
        ],
    );
    let info = qemu_info(&out_path, None);
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, (7 << 20) + 4096);
}

#[test]
fn test_cli_convert_backing_file_qcow2_is_refused_without_output() {
    let dir = scratch();
    let base = qemu_img_create(dir.path(), "base.qcow2", "qcow2", "", "4M");
    let overlay = qemu_img_create(
        dir.path(),
        "overlay.qcow2",
        "qcow2",
        &format!("backing_file={},backing_fmt=qcow2", arg(&base)),
        "4M",
    );
    for (declared, stdin) in [(Some("qcow2"), false), (None, true)] {
        let out_path = dir.path().join("out.raw");
        let mut args = vec!["--json", "--to", "raw"];
        if let Some(d) = declared {
            args.extend(["--format", d]);
        }
        args.extend([if stdin { "-" } else { arg(&overlay) }, arg(&out_path)]);
        let out = sluice_convert(&args, stdin.then_some(overlay.as_path()));
        assert_eq!(code(&out), EXIT_REFUSED);
        let v = json(&out);
        assert_eq!(v["converted"], false);
        assert!(codes(&v).contains(&"backing_file".to_owned()), "{v}");
        assert_eq!(v["report"]["verdict"], "reject");
        assert!(!out_path.exists(), "refused conversion left an output file");
    }
    // The human summary names the code and the message.
    let out_path = dir.path().join("out2.raw");
    let out = sluice_convert(&["--to", "raw", arg(&overlay), arg(&out_path)], None);
    assert_eq!(code(&out), EXIT_REFUSED);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backing_file: "), "{text}");
    assert!(text.contains("base.qcow2"), "{text}");
    assert!(!out_path.exists());
}

#[test]
fn test_cli_convert_qcow2_to_qcow2_is_unsupported() {
    let dir = scratch();
    let img = qemu_img_create(dir.path(), "a.qcow2", "qcow2", "", "1M");
    let out_path = dir.path().join("out.qcow2");
    let out = sluice_convert(
        &["--json", "--to", "qcow2", arg(&img), arg(&out_path)],
        None,
    );
    assert_eq!(code(&out), EXIT_REFUSED);
    assert_eq!(codes(&json(&out)), ["unsupported_format"]);
    assert!(!out_path.exists());
}

#[test]
fn test_cli_convert_undeclared_fixed_vhd_asks_for_the_format() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "in.raw", 2 << 20);
    let vhd = dir.path().join("fixed.vhd");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed",
            arg(&raw),
            arg(&vhd),
        ],
    );
    let out_path = dir.path().join("out.raw");
    let out = sluice_convert(&["--json", "--to", "raw", arg(&vhd), arg(&out_path)], None);
    assert_eq!(code(&out), EXIT_REFUSED);
    let v = json(&out);
    assert_eq!(codes(&v), ["format_mismatch"]);
    assert!(
        v["reasons"][0]["message"]
            .as_str()
            .expect("message")
            .contains("declare the format (vhd)"),
        "{v}"
    );
    assert!(!out_path.exists());
}

#[test]
fn test_cli_convert_usage_and_io_errors_exit_2() {
    let dir = scratch();
    let out_path = dir.path().join("out.raw");
    // No --to.
    let out = sluice_convert(&["-", arg(&out_path)], None);
    assert_eq!(code(&out), EXIT_ERROR);
    // Unknown target.
    let out = sluice_convert(&["--to", "vmdk", "-", arg(&out_path)], None);
    assert_eq!(code(&out), EXIT_ERROR);
    // Missing input file.
    let missing = dir.path().join("missing.raw");
    let out = sluice_convert(&["--to", "raw", arg(&missing), arg(&out_path)], None);
    assert_eq!(code(&out), EXIT_ERROR);
    assert!(!out_path.exists());
    // Output is a directory: refused before anything is written, directory untouched.
    let raw = raw_with_data(dir.path(), "in.raw", 1 << 20);
    let out = sluice_convert(&["--to", "raw", arg(&raw), arg(dir.path())], None);
    assert_eq!(code(&out), EXIT_ERROR);
    assert!(dir.path().is_dir());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    // Output is the input (by path or as stdin): refused, the input left intact.
    let before = read(&raw);
    let out = sluice_convert(&["--to", "raw", arg(&raw), arg(&raw)], None);
    assert_eq!(code(&out), EXIT_ERROR);
    let out = sluice_convert(&["--to", "qcow2", "-", arg(&raw)], Some(&raw));
    assert_eq!(code(&out), EXIT_ERROR);
    assert!(read(&raw) == before, "input damaged");
}

#[test]
fn test_cli_convert_empty_stdin_is_refused_as_empty() {
    let dir = scratch();
    let out_path = dir.path().join("out.qcow2");
    let out = sluice_convert(&["--json", "--to", "qcow2", "-", arg(&out_path)], None);
    assert_eq!(code(&out), EXIT_REFUSED);
    assert!(codes(&json(&out)).contains(&"empty".to_owned()));
    assert!(!out_path.exists());
}

#[test]
fn test_cli_convert_64g_virtual_qcow2_from_stdin_stays_under_128mib_rss() {
    // Acceptance of the conversion issue: a 64 GiB-virtual qcow2 holding 2 GiB of data,
    // converted from a pipe, peaks under 128 MiB. Peak RSS comes from GNU time's `%M` (KiB).
    let dir = scratch();
    let src = qemu_img_create(dir.path(), "big.qcow2", "qcow2", "", "64G");
    let p = src.to_str().expect("utf-8");
    let mut args = vec!["-f".to_owned(), "qcow2".to_owned()];
    for i in 0..32u64 {
        args.push("-c".into());
        args.push(format!("write -P {} {}G 64M", i + 1, i * 2));
    }
    args.push(p.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("qemu-io", &args);
    let out = dir.path().join("big.raw");
    let status = Command::new("/usr/bin/time")
        .args([
            "-f",
            "%M",
            env!("CARGO_BIN_EXE_sluice"),
            "convert",
            "--format",
            "qcow2",
        ])
        .args(["--to", "raw", "-", out.to_str().expect("utf-8")])
        .stdin(File::open(&src).expect("opening the image"))
        .output()
        .expect("running /usr/bin/time (package `time`, installed by scripts/setup --test)");
    assert_eq!(status.status.code(), Some(EXIT_OK), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    let peak_kib: u64 = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stderr:?}"));
    assert!(peak_kib < 128 << 10, "peak RSS {peak_kib} KiB");
    assert_eq!(std::fs::metadata(&out).expect("output").len(), 64 << 30);
    run(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "qcow2",
            out.to_str().expect("utf-8"),
            p,
        ],
    );
}
