//! serde_json against simd-json on the API's real bodies: a task create body, an image PATCH
//! body and a 1,000-image list page (built by the server's own `image_json`), each parsed
//! and serialised.
//!
//! Parsing is measured into `serde_json::Value` (what the handlers use; simd-json's serde
//! path) and into simd-json's own `OwnedValue` (its best case). simd-json parses in place, so
//! its timings include copying the immutable request body into a mutable buffer, as the API
//! would have to. After criterion, a summary (best of 5 runs of 200 iterations each) prints
//! the simd-json/serde_json time ratio per body and operation; below 1 means simd-json is
//! faster.
//!
//! ```sh
//! cargo bench -p sluice-benches --bench json
//! ```

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use serde_json::{json, Value};
use sluice_server::api::images::image_json;
use sluice_server::meta::sample_image;

/// The bodies: (name, bytes).
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let task = json!({
        "type": "import",
        "input": {
            "import_from": "https://cloud-images.example.org/noble/current/noble-server-cloudimg-amd64.img",
            "import_from_format": "qcow2",
            "image_properties": {
                "name": "ubuntu-24.04-server-cloudimg-amd64",
                "disk_format": "qcow2",
                "container_format": "bare",
                "visibility": "private",
                "min_disk": 8,
                "min_ram": 512,
                "tags": ["ubuntu", "noble", "lts"],
                "os_distro": "ubuntu",
                "os_version": "24.04",
                "hw_disk_bus": "virtio",
                "hw_scsi_model": "virtio-scsi",
                "hw_qemu_guest_agent": "yes"
            }
        }
    });
    let patch = json!([
        {"op": "replace", "path": "/name", "value": "ubuntu-24.04-server (2026-11-24)"},
        {"op": "add", "path": "/os_admin_user", "value": "ubuntu"},
        {"op": "add", "path": "/hw_rng_model", "value": "virtio"},
        {"op": "replace", "path": "/min_disk", "value": 10},
        {"op": "remove", "path": "/hw_scsi_model"},
        {"op": "add", "path": "/tags/-", "value": "gold"}
    ]);
    let images: Vec<Value> = (0..1000u32)
        .map(|n| {
            let mut image = sample_image(&format!("{n:08x}-0000-4000-8000-000000000000"));
            image.name = Some(format!("image-{n}"));
            image_json(&image)
        })
        .collect();
    let page = json!({
        "images": images,
        "first": "/v2/images?limit=1000",
        "schema": "/v2/schemas/images",
        "next": "/v2/images?limit=1000&marker=000003e7-0000-4000-8000-000000000000",
    });
    [
        ("task create", task),
        ("image patch", patch),
        ("1000-image page", page),
    ]
    .into_iter()
    .map(|(name, value)| {
        (
            name,
            serde_json::to_vec(&value).expect("serialising a body"),
        )
    })
    .collect()
}

fn serde_parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("serde_json parses")
}

fn simd_parse_serde(bytes: &[u8]) -> Value {
    let mut buf = bytes.to_vec();
    simd_json::serde::from_slice(&mut buf).expect("simd-json parses")
}

fn simd_parse_owned(bytes: &[u8]) -> simd_json::OwnedValue {
    let mut buf = bytes.to_vec();
    simd_json::to_owned_value(&mut buf).expect("simd-json parses")
}

fn serde_write(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serde_json writes")
}

fn simd_write(value: &Value) -> Vec<u8> {
    simd_json::serde::to_vec(value).expect("simd-json writes")
}

/// Whether this run is criterion's test mode (each benchmark once), not a measurement.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test" || a == "--list")
}

/// Best time of 5 runs of `iters` calls, in nanoseconds per call.
fn best_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let bodies = bodies();
    let mut criterion = Criterion::default().configure_from_args();
    for (name, bytes) in &bodies {
        let value = serde_parse(bytes);
        assert_eq!(
            simd_parse_serde(bytes),
            value,
            "{name}: simd-json disagrees"
        );
        let mut group = criterion.benchmark_group(*name);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("parse serde_json", |b| {
            b.iter(|| serde_parse(black_box(bytes)))
        });
        group.bench_function("parse simd-json (serde Value)", |b| {
            b.iter(|| simd_parse_serde(black_box(bytes)))
        });
        group.bench_function("parse simd-json (OwnedValue)", |b| {
            b.iter(|| simd_parse_owned(black_box(bytes)))
        });
        group.bench_function("write serde_json", |b| {
            b.iter(|| serde_write(black_box(&value)))
        });
        group.bench_function("write simd-json", |b| {
            b.iter(|| simd_write(black_box(&value)))
        });
        group.finish();
    }
    criterion.final_summary();
    if test_mode() {
        return;
    }
    println!("\nsummary (best of 5 x 200 calls; ratio = simd-json / serde_json time)");
    for (name, bytes) in &bodies {
        let value = serde_parse(bytes);
        let iters = 200;
        let parse = best_ns(iters, || drop(black_box(serde_parse(black_box(bytes)))));
        let simd = best_ns(iters, || {
            drop(black_box(simd_parse_serde(black_box(bytes))))
        });
        let owned = best_ns(iters, || {
            drop(black_box(simd_parse_owned(black_box(bytes))))
        });
        let write = best_ns(iters, || drop(black_box(serde_write(black_box(&value)))));
        let simd_write_ns = best_ns(iters, || drop(black_box(simd_write(black_box(&value)))));
        println!(
            "{name} ({} bytes): parse serde_json {:.1} us, simd-json {:.1} us ({:.2}), \
             simd-json OwnedValue {:.1} us ({:.2}); write serde_json {:.1} us, simd-json \
             {:.1} us ({:.2})",
            bytes.len(),
            parse / 1e3,
            simd / 1e3,
            simd / parse,
            owned / 1e3,
            owned / parse,
            write / 1e3,
            simd_write_ns / 1e3,
            simd_write_ns / write,
        );
    }
}
