//! The CPU cost of checking compressed qcow2 clusters during inspection: a qcow2 written by
//! `qemu-img convert -c` inspected with `Limits::verify_compressed_clusters` on (the
//! default: every compressed cluster is inflated) and off, in the same run, and sha512 over
//! the same file for scale.
//!
//! Prints `compressed qcow2: inspect with check / without = N.Nx` (how many times longer
//! the check makes inspection) and the throughputs.
//!
//! Run: `cargo bench -p sluice-benches --bench inspect_compressed`. `SLUICE_BENCH_BYTES` sets
//! the raw data size (default 256 MiB; 2 MiB in test mode, `cargo test --benches`).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha512};
use sluice_formats::{Format, Inspector, Limits, Progress, Report};

/// Default raw data size: 256 MiB (4096 compressed 64 KiB clusters).
const DEFAULT_BYTES: usize = 256 << 20;
/// Raw data size in test mode.
const TEST_MODE_BYTES: usize = 2 << 20;
/// Chunk size the inspector is fed with (the import path's).
const CHUNK: usize = 1 << 20;
/// Timed repetitions per measurement (the fastest counts).
const REPS: usize = 3;

/// Whether this run is criterion-style test mode (`cargo test --benches`).
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test" || a == "--list")
}

/// Compressible data, like a filesystem's: words from a small vocabulary, in a
/// pseudo-random order (about 3:1 with deflate).
fn compressible(len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"sluice ",
        b"qcow2 ",
        b"cluster ",
        b"deflate ",
        b"0123456789 ",
        b"image\n",
        b"glance ",
        b"\x00\x00\x00\x00 ",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = WORDS[(state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 61) as usize];
        out.extend_from_slice(word);
    }
    out.truncate(len);
    out
}

/// `qemu-img convert -c -O qcow2` of `raw`, read back.
fn compressed_qcow2(raw: &[u8]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the bench scratch directory");
    let (src, dst) = (dir.join("data.raw"), dir.join("data.qcow2"));
    std::fs::write(&src, raw).expect("writing the raw source");
    let out = Command::new("qemu-img")
        .args(["convert", "-c", "-O", "qcow2"])
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("running qemu-img (install qemu-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&dst).expect("reading the qcow2 image");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// Inspects `bytes` as qcow2 with or without the compressed-cluster check.
fn inspect(bytes: &[u8], verify: bool) -> Report {
    let limits = Limits {
        verify_compressed_clusters: verify,
        ..Limits::default()
    };
    let mut inspector = Inspector::new(Some(Format::Qcow2), limits);
    for piece in bytes.chunks(CHUNK) {
        if let Progress::Rejected(_) = inspector.feed(piece) {
            break;
        }
    }
    inspector.finish()
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let test = test_mode();
    let size = match std::env::var("SLUICE_BENCH_BYTES") {
        Ok(v) => v.parse().expect("SLUICE_BENCH_BYTES is a byte count"),
        Err(_) if test => TEST_MODE_BYTES,
        Err(_) => DEFAULT_BYTES,
    };
    let image = compressed_qcow2(&compressible(size));
    for verify in [true, false] {
        let report = inspect(&image, verify);
        assert!(report.is_accepted() && report.complete, "{report:?}");
    }
    let reps = if test { 1 } else { REPS };
    let with = fastest(reps, || {
        black_box(inspect(black_box(&image), true));
    });
    let without = fastest(reps, || {
        black_box(inspect(black_box(&image), false));
    });
    let sha = fastest(reps, || {
        black_box(Sha512::digest(black_box(&image)));
    });
    let mib = |secs: f64| image.len() as f64 / secs / f64::from(1u32 << 20);
    println!(
        "compressed qcow2: {} bytes of data, {} bytes of image",
        size,
        image.len()
    );
    println!("  inspect with check     {:9.1} MiB/s of image", mib(with));
    println!(
        "  inspect without check  {:9.1} MiB/s of image",
        mib(without)
    );
    println!("  sha512                 {:9.1} MiB/s of image", mib(sha));
    println!(
        "compressed qcow2: inspect with check / without = {:.1}x; with check / sha512 = {:.2}x",
        with / without,
        with / sha
    );
}
