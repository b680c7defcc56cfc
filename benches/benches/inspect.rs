//! Inspection throughput over a large raw and a large qcow2 image, fed in 64 KiB, 1 MiB and
//! 4 MiB chunks, next to sha512 and memcpy over the same bytes in the same run.
//!
//! The acceptance bar is "inspection at least 10× faster than sha512 over the same bytes":
//! after the criterion groups, a summary measured in this run prints one line per image,
//! `<image>: inspect/sha512 ratio = N.Nx`, taken at the slowest chunk size.
//!
//! Run: `cargo bench -p sluice-benches --bench inspect` (see benches/README.md).
//! `SLUICE_BENCH_BYTES` sets the image data size (default 1 GiB; 2 MiB in test mode, i.e.
//! `cargo test --benches` or `cargo bench -- --test`). `SLUICE_BENCH_SUMMARY_ONLY=1` skips
//! criterion and prints only the summary.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use sha2::{Digest, Sha512};
use sluice_formats::{Format, Inspector, Limits, Progress, Report};

/// Default image data size: 1 GiB, large enough that per-stream setup is noise and the
/// images dwarf the CPU caches.
const DEFAULT_BYTES: usize = 1 << 30;
/// Image data size in test mode: a few qcow2 clusters' worth, quick to make and to hash in a
/// debug build.
const TEST_MODE_BYTES: usize = 2 << 20;
/// The chunk sizes the inspector is fed with.
const CHUNKS: [usize; 3] = [64 << 10, 1 << 20, 4 << 20];
/// Chunk size for sha512 and memcpy (their speed does not depend on it in this range).
const REFERENCE_CHUNK: usize = 1 << 20;
/// The acceptance bar: inspection at least this many times faster than sha512.
const REQUIRED_RATIO: f64 = 10.0;
/// Timed repetitions per measurement in the summary (the fastest counts).
const SUMMARY_REPS: usize = 3;

/// One benchmark image held in memory.
struct Image {
    /// Short name used in benchmark ids and the summary.
    name: &'static str,
    /// The format it is declared as.
    format: Format,
    /// The image file's bytes.
    bytes: Vec<u8>,
}

/// Whether this run is criterion's test mode (each benchmark once), not a measurement.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test" || a == "--list")
}

/// Image data size from `SLUICE_BENCH_BYTES` (rounded down to whole 64 KiB clusters).
fn data_size() -> usize {
    let size = match std::env::var("SLUICE_BENCH_BYTES") {
        Ok(v) => v
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("SLUICE_BENCH_BYTES={v:?} is not a byte count")),
        Err(_) if test_mode() => TEST_MODE_BYTES,
        Err(_) => DEFAULT_BYTES,
    };
    (size & !0xffff).max(1 << 16)
}

/// Non-zero pseudo-random bytes (xorshift64*): every qcow2 cluster is allocated and nothing
/// in the data looks like a format's magic.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d) | 0x0101_0101_0101_0101;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word.to_le_bytes()[..take]);
    }
    out
}

/// A scratch directory removed on drop (no tempfile dependency needed).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the bench scratch directory");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `qemu-img convert -O qcow2` of `raw` (default options: v3, 64 KiB clusters), read back.
fn qcow2_from(raw: &[u8], dir: &Path) -> Vec<u8> {
    let src = dir.join("data.raw");
    let dst = dir.join("data.qcow2");
    std::fs::write(&src, raw).expect("writing the raw source");
    let out = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("running qemu-img (install qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&src);
    std::fs::read(&dst).expect("reading the qcow2 image")
}

/// Builds the raw and qcow2 images over the same `size` bytes of data.
fn images(size: usize) -> Vec<Image> {
    let started = Instant::now();
    let raw = pseudo_random(size);
    let dir = ScratchDir::new();
    let qcow2 = qcow2_from(&raw, &dir.0);
    eprintln!(
        "bench images: raw {} bytes, qcow2 {} bytes (made in {:.1?})",
        raw.len(),
        qcow2.len(),
        started.elapsed()
    );
    vec![
        Image {
            name: "raw",
            format: Format::Raw,
            bytes: raw,
        },
        Image {
            name: "qcow2",
            format: Format::Qcow2,
            bytes: qcow2,
        },
    ]
}

/// Inspects `bytes` declared as `format`, fed in `chunk`-byte pieces, like the import path.
fn inspect(bytes: &[u8], format: Format, chunk: usize) -> Report {
    let mut inspector = Inspector::new(Some(format), Limits::default());
    for piece in bytes.chunks(chunk) {
        if let Progress::Rejected(_) = inspector.feed(piece) {
            break;
        }
    }
    inspector.finish()
}

/// sha512 over `bytes`, updated chunk by chunk.
fn sha512(bytes: &[u8]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    for piece in bytes.chunks(REFERENCE_CHUNK) {
        hasher.update(piece);
    }
    hasher.finalize().into()
}

/// Copies `bytes` chunk by chunk into `buf` (one chunk long), as a pipeline copy would.
fn memcpy(bytes: &[u8], buf: &mut [u8]) {
    for piece in bytes.chunks(REFERENCE_CHUNK) {
        buf[..piece.len()].copy_from_slice(piece);
        black_box(&mut *buf);
    }
}

/// A human chunk-size label: `64KiB`, `1MiB`, `4MiB`.
fn chunk_label(chunk: usize) -> String {
    if chunk >= 1 << 20 {
        format!("{}MiB", chunk >> 20)
    } else {
        format!("{}KiB", chunk >> 10)
    }
}

/// The benchmark is only meaningful over an image the inspector reads to the end and
/// accepts as what it is: a rejection stops early and would flatter the numbers.
fn assert_accepted(image: &Image) {
    for chunk in CHUNKS {
        let report = inspect(&image.bytes, image.format, chunk);
        assert!(
            report.is_accepted() && report.format == image.format && report.complete,
            "the {} bench image is not accepted as {} in {} chunks: {:?}",
            image.name,
            image.format,
            chunk_label(chunk),
            report
        );
    }
}

/// The criterion groups: per image, inspect at each chunk size, sha512 and memcpy.
fn criterion_groups(c: &mut Criterion, images: &[Image]) {
    for image in images {
        let mut group = c.benchmark_group(image.name);
        group
            .throughput(Throughput::Bytes(image.bytes.len() as u64))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(5));
        for chunk in CHUNKS {
            group.bench_function(format!("inspect/{}", chunk_label(chunk)), |b| {
                b.iter(|| black_box(inspect(black_box(&image.bytes), image.format, chunk)));
            });
        }
        group.bench_function("sha512", |b| {
            b.iter(|| black_box(sha512(black_box(&image.bytes))));
        });
        let mut buf = vec![0u8; REFERENCE_CHUNK];
        group.bench_function("memcpy", |b| {
            b.iter(|| memcpy(black_box(&image.bytes), &mut buf));
        });
        group.finish();
    }
}

/// The fastest of `reps` runs of `f`, in seconds.
fn fastest(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Bytes per second as `N.NN GB/s` (decimal, like most throughput tables) and `GiB/s`.
fn rate(bytes: usize, secs: f64) -> String {
    let per_sec = bytes as f64 / secs;
    format!(
        "{:8.2} GB/s ({:7.2} GiB/s, {:.0} bytes/s)",
        per_sec / 1e9,
        per_sec / f64::from(1u32 << 30),
        per_sec
    )
}

/// Measures inspect (each chunk size), sha512 and memcpy over each image in this run and
/// prints the throughputs and the inspect/sha512 ratio; returns whether every ratio meets
/// [`REQUIRED_RATIO`].
fn summary(images: &[Image], reps: usize) -> bool {
    let mut ok = true;
    println!();
    println!("== inspection throughput summary (fastest of {reps}, same run) ==");
    for image in images {
        let len = image.bytes.len();
        println!("{} image: {len} bytes", image.name);
        let mut slowest: Option<(usize, f64)> = None;
        for chunk in CHUNKS {
            let secs = fastest(reps, || {
                black_box(inspect(black_box(&image.bytes), image.format, chunk));
            });
            println!(
                "  inspect {:>6} chunks {}",
                chunk_label(chunk),
                rate(len, secs)
            );
            if slowest.is_none_or(|(_, s)| secs > s) {
                slowest = Some((chunk, secs));
            }
        }
        let sha = fastest(reps, || {
            black_box(sha512(black_box(&image.bytes)));
        });
        println!("  sha512                {}", rate(len, sha));
        let mut buf = vec![0u8; REFERENCE_CHUNK];
        let copy = fastest(reps, || memcpy(black_box(&image.bytes), &mut buf));
        println!("  memcpy                {}", rate(len, copy));
        if let Some((chunk, secs)) = slowest {
            let ratio = sha / secs;
            let verdict = if ratio >= REQUIRED_RATIO {
                "ok"
            } else {
                ok = false;
                "BELOW TARGET"
            };
            println!(
                "{}: inspect/sha512 ratio = {ratio:.1}x (slowest chunk size {}; target >= {REQUIRED_RATIO:.0}x: {verdict})",
                image.name,
                chunk_label(chunk)
            );
        }
    }
    ok
}

fn main() {
    let test = test_mode();
    let images = images(data_size());
    for image in &images {
        assert_accepted(image);
    }
    if std::env::var_os("SLUICE_BENCH_SUMMARY_ONLY").is_none() {
        let mut c = Criterion::default().configure_from_args();
        criterion_groups(&mut c, &images);
        c.final_summary();
    }
    let listing = std::env::args().any(|a| a == "--list");
    if !listing {
        // Below-target ratios are reported, not fatal: timing depends on the machine's load.
        let _ = summary(&images, if test { 1 } else { SUMMARY_REPS });
    }
}
