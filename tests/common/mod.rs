//! Helpers shared by every end-to-end test: running real tools, making images, inspecting
//! them in-process and through the `sluice` binary, and the chunking invariant.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};
use sluice_formats::fuzzing::inspect_chunked;
use sluice_formats::{Format, Limits, ReasonCode, Report};

/// A scratch directory for one test's images, removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-test-")
        .tempdir()
        .expect("creating a scratch directory")
}

/// Runs `program` with `args` and panics with its output unless it succeeds. A missing tool
/// fails the test: the setup script installs every tool the tests use.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed? see scripts/setup): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `qemu-img create -f FMT [-o OPTS] PATH SIZE` in `dir`; returns the image path.
pub fn qemu_img_create(dir: &Path, name: &str, fmt: &str, opts: &str, size: &str) -> PathBuf {
    let path = dir.join(name);
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["create", "-q", "-f", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([p, size]);
    run("qemu-img", &args);
    path
}

/// Writes `len` bytes of a recognisable non-zero pattern at `offset` of a raw file (created
/// or extended as needed), so converted and sparse images carry real data.
pub fn write_pattern(path: &Path, offset: u64, len: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("opening raw file");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_add(offset).wrapping_mul(2_654_435_761) as u8 | 1)
        .collect();
    f.write_all(&data).expect("write");
}

/// A raw file of `size` bytes with pattern data at a few offsets.
pub fn raw_with_data(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("creating raw file");
    f.set_len(size).expect("set_len");
    for off in [0, size / 3, size / 2, size.saturating_sub(70_000)] {
        write_pattern(&path, off & !511, 65_536.min(size as usize));
    }
    path
}

/// `qemu-img convert -O FMT [-o OPTS] SRC DST`; returns DST.
pub fn qemu_img_convert(src: &Path, dst: &Path, fmt: &str, opts: &str) -> PathBuf {
    let mut args = vec!["convert", "-O", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([src.to_str().expect("utf-8"), dst.to_str().expect("utf-8")]);
    run("qemu-img", &args);
    dst.to_path_buf()
}

/// What `qemu-img info` says about an image.
#[derive(Debug, PartialEq, Eq)]
pub struct QemuInfo {
    /// qemu's format name (`raw`, `qcow2`, `vpc`, ...).
    pub format: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
}

/// `qemu-img info --output=json [-f FMT] PATH`.
pub fn qemu_info(path: &Path, fmt: Option<&str>) -> QemuInfo {
    let mut args = vec!["info", "--output=json"];
    if let Some(f) = fmt {
        args.extend(["-f", f]);
    }
    args.push(path.to_str().expect("utf-8"));
    let out = run("qemu-img", &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    QemuInfo {
        format: v["format"].as_str().expect("format").to_owned(),
        virtual_size: v["virtual-size"].as_u64().expect("virtual-size"),
    }
}

/// Inspects bytes in-process (fed whole) with an optional declared format.
pub fn inspect(bytes: &[u8], declared: Option<Format>) -> Report {
    sluice_formats::inspect_bytes(bytes, declared, Limits::default())
}

/// Reads a whole file (test images are small on disk even when their virtual size is large).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Feeding `bytes` whole, byte by byte (when small), in fixed odd and aligned sizes, and at
/// random splits must give identical reports; returns that report.
pub fn assert_chunking_invariant(bytes: &[u8], declared: Option<Format>) -> Report {
    let whole = inspect(bytes, declared);
    let mut cases: Vec<(String, Vec<usize>)> = vec![
        ("7-byte".into(), vec![7]),
        ("511-byte".into(), vec![511]),
        ("4096-byte".into(), vec![4096]),
        ("65537-byte".into(), vec![65_537]),
        ("1-then-1MiB".into(), vec![1, 1 << 20]),
    ];
    if bytes.len() <= 4 << 20 {
        cases.push(("byte-by-byte".into(), vec![1]));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(bytes.len() as u64);
    for round in 0..4 {
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
        let split = inspect_chunked(bytes, declared, &sizes);
        assert_eq!(whole, split, "{name} chunking changed the report");
    }
    whole
}

/// Runs `sluice inspect --json [ARGS] -` with `bytes` on stdin; returns (exit code, JSON).
pub fn sluice_inspect_stdin(bytes: &[u8], args: &[&str]) -> (i32, serde_json::Value) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("inspect")
        .arg("--json")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = bytes.to_vec();
    // Feed from a thread: sluice may stop reading early (a rejection) and close the pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("waiting for sluice");
    writer.join().expect("writer thread");
    let code = out.status.code().expect("exit code");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sluice printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, json)
}

/// Asserts an accepted image: detected `format`, virtual size equal to qemu-img's, and the
/// chunking invariant. `qemu_fmt` forces qemu's format probe (`-f`).
pub fn assert_accepts_like_qemu(path: &Path, format: Format, qemu_fmt: &str) -> Report {
    let bytes = read(path);
    let report = assert_chunking_invariant(&bytes, Some(format));
    assert!(
        report.is_accepted(),
        "{} rejected: {:?}",
        path.display(),
        report.reasons
    );
    assert_eq!(report.format, format);
    let info = qemu_info(path, Some(qemu_fmt));
    assert_eq!(info.format, format.qemu_name());
    assert_eq!(
        report.virtual_size,
        Some(info.virtual_size),
        "virtual size of {} differs from qemu-img's",
        path.display()
    );
    let undeclared = inspect(&bytes, None);
    assert!(undeclared.is_accepted(), "{:?}", undeclared.reasons);
    assert_eq!(undeclared.format, format);
    report
}

/// Asserts that `bytes` declared as `declared` are rejected with `code`, in-process (with the
/// chunking invariant) and through `sluice inspect --json -` (exit status 1).
pub fn assert_rejects(bytes: &[u8], declared: Option<Format>, code: ReasonCode) -> Report {
    let report = assert_chunking_invariant(bytes, declared);
    assert!(
        report.has_reason(code),
        "expected {code}, got {:?} (format {})",
        report.reasons,
        report.format
    );
    let mut args: Vec<String> = Vec::new();
    if let Some(d) = declared {
        args.push("--format".into());
        args.push(d.as_str().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, json) = sluice_inspect_stdin(bytes, &args);
    assert_eq!(status, 1, "sluice inspect should exit 1 on reject: {json}");
    assert_eq!(json["verdict"], "reject");
    let codes: Vec<&str> = json["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["code"].as_str().expect("code"))
        .collect();
    assert!(codes.contains(&code.as_str()), "CLI reasons {codes:?}");
    report
}

/// A raw file with data converted to VMDK with `opts`.
pub fn vmdk_with_data(dir: &Path, name: &str, opts: &str, size: u64) -> PathBuf {
    let raw = raw_with_data(dir, &format!("{name}.raw"), size);
    qemu_img_convert(&raw, &dir.join(name), "vmdk", opts)
}

/// A VMware-style streamOptimized image made by Debian's VMDKstream module.
pub fn vmdkstream(dir: &Path, name: &str, size: u64) -> PathBuf {
    let raw = raw_with_data(dir, &format!("{name}.raw"), size);
    let out = dir.join(name);
    let script = format!(
        "import VMDKstream; VMDKstream.convert_to_stream({:?}, {:?})",
        raw.to_str().expect("utf-8"),
        out.to_str().expect("utf-8")
    );
    // The system interpreter: the module is a Debian package (python3-vmdkstream).
    run("/usr/bin/python3", &["-c", &script]);
    out
}

/// A LUKS-encrypted qcow2 of `size` (qemu-img size syntax), secret `123456`.
pub fn qcow2_luks(dir: &Path, name: &str, size: &str) -> PathBuf {
    let path = dir.join(name);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "--object",
            "secret,id=sec0,data=123456",
            "-f",
            "qcow2",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0",
            path.to_str().expect("utf-8"),
            size,
        ],
    );
    path
}

/// A qcow2 whose backing file is `/etc/passwd` (raw); its size is the backing file's unless
/// `size` (qemu-img syntax) is given.
pub fn qcow2_backed_by_passwd(dir: &Path, name: &str, size: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let p = path.to_str().expect("utf-8");
    let mut args = vec![
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        p,
    ];
    args.extend(size);
    run("qemu-img", &args);
    path
}

/// The compressors Sluice unwraps (the tool, and the extension it writes).
pub const WRAPPERS: [(&str, &str); 4] = [
    ("gzip", "gz"),
    ("xz", "xz"),
    ("zstd", "zst"),
    ("bzip2", "bz2"),
];

/// `src` compressed by `tool` into `src.EXT` (the original kept).
pub fn wrap(src: &Path, tool: &str, ext: &str) -> PathBuf {
    let out = PathBuf::from(format!("{}.{ext}", src.display()));
    let cmd = format!(
        "{tool} -c -q {} > {}",
        src.to_str().expect("utf-8"),
        out.to_str().expect("utf-8")
    );
    run("sh", &["-c", &cmd]);
    out
}
