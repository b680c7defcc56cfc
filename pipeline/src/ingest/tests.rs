use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha512;

use sluice_formats::ConvertSink;

use super::*;

#[test]
fn test_reason_code_stalled_source_is_source_too_slow() {
    let stalled = IngestError::Source(SourceError::IdleTimeout {
        offset: 4096,
        secs: 60,
    });
    assert_eq!(stalled.reason_code(), "source_too_slow");
}
use crate::hash::Digests;
use crate::source::MemorySource;
use crate::store::{LocalStore, Store};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` bytes: pattern data in the first and last 64 KiB, zeros between.
fn sparse_disk(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for (i, b) in data[..65_536].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    for (i, b) in data[len - 65_536..].iter_mut().enumerate() {
        *b = (i % 241) as u8 | 2;
    }
    data
}

fn never_cancel() -> watch::Receiver<bool> {
    watch::channel(false).1
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

async fn run(
    data: Vec<u8>,
    declared: Format,
    target: Option<Target>,
    store: &dyn Store,
) -> Result<Ingested, IngestError> {
    ingest_as(
        MemorySource::new(Bytes::from(data), 65_537),
        IngestRequest::new("img", declared, Limits::default()).converting(target),
        store,
        &Progress::default(),
        never_cancel(),
    )
    .await
}

#[test]
fn test_conversion_for_skips_iso_and_images_already_in_the_target() {
    assert_eq!(conversion_for(Format::Qcow2, None), None);
    assert_eq!(conversion_for(Format::Iso, Some(Target::Raw)), None);
    assert_eq!(conversion_for(Format::Iso, Some(Target::Qcow2)), None);
    assert_eq!(conversion_for(Format::Gpt, Some(Target::Raw)), None);
    assert_eq!(conversion_for(Format::Qcow2, Some(Target::Qcow2)), None);
    assert_eq!(
        conversion_for(Format::Vmdk, Some(Target::Raw)),
        Some(Target::Raw)
    );
    assert_eq!(
        conversion_for(Format::Raw, Some(Target::Qcow2)),
        Some(Target::Qcow2)
    );
}

#[tokio::test]
async fn test_ingest_as_qcow2_to_raw_stores_and_hashes_qemu_img_output() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let disk = sparse_disk(8 << 20);
    std::fs::write(&raw, &disk).unwrap();
    let qcow2 = dir.path().join("src.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        qcow2.to_str().unwrap(),
    ]);
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let done = run(
        std::fs::read(&qcow2).unwrap(),
        Format::Qcow2,
        Some(Target::Raw),
        &store,
    )
    .await
    .unwrap();
    assert!(done.converted);
    assert!(matches!(done.format, Format::Raw));
    assert!(matches!(done.report.format, Format::Qcow2));
    assert_eq!(done.size, disk.len() as u64);
    assert!(std::fs::read(store.path("img").unwrap()).unwrap() == disk);
    // The hole between the two data blocks is hashed as zeros.
    assert_eq!(done.md5_hex, hex(&Md5::digest(&disk)));
    assert_eq!(done.sha512_hex, hex(&Sha512::digest(&disk)));
    assert_eq!(files_in(store.scratch_dir()), 0);
}

#[tokio::test]
async fn test_ingest_as_raw_to_qcow2_hashes_output_by_second_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let disk = sparse_disk(4 << 20);
    let done = run(disk.clone(), Format::Raw, Some(Target::Qcow2), &store)
        .await
        .unwrap();
    let stored = std::fs::read(store.path("img").unwrap()).unwrap();
    assert!(matches!(done.format, Format::Qcow2));
    assert_eq!(done.size, stored.len() as u64);
    assert_eq!(done.md5_hex, hex(&Md5::digest(&stored)));
    assert_eq!(done.sha512_hex, hex(&Sha512::digest(&stored)));
    let report = sluice_formats::inspect_bytes(&stored, Some(Format::Qcow2), Limits::default());
    assert!(report.is_accepted(), "{:?}", report.reasons);
    assert_eq!(report.virtual_size, Some(4 << 20));
    assert_eq!(files_in(store.scratch_dir()), 0);
}

#[tokio::test]
async fn test_ingest_as_iso_with_target_is_stored_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let err = run(vec![7u8; 100_000], Format::Iso, Some(Target::Raw), &store)
        .await
        .unwrap_err();
    // Not converted: the inspector's verdict (no ISO structure) is the only failure.
    assert!(matches!(err, IngestError::Rejected(_)), "{err}");
}

#[tokio::test]
async fn test_ingest_as_rejection_while_converting_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let mut data = vec![0x1f, 0x8b, 0x08];
    data.resize(1 << 20, 0);
    let err = run(data, Format::Raw, Some(Target::Qcow2), &store)
        .await
        .unwrap_err();
    assert_eq!(err.reason_code(), "compressed");
    assert_eq!(files_in(&dir.path().join("tmp")), 0);
    assert_eq!(files_in(&dir.path().join("images")), 0);
}

#[tokio::test]
async fn test_ingest_as_unsupported_pair_fails_before_creating_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let err = run(vec![1u8; 4096], Format::Vmdk, Some(Target::Qcow2), &store)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        IngestError::Convert {
            code: ReasonCode::UnsupportedFormat,
            ..
        }
    ));
    assert_eq!(files_in(&dir.path().join("tmp")), 0);
}

/// Runs `f` with a sink over a fresh part file on a blocking thread (the sink drives the
/// hash lanes' channels with `Handle::block_on`).
async fn with_sink(
    in_order: bool,
    f: impl FnOnce(&mut HashingSink) + Send + 'static,
    input: Vec<u8>,
) -> (Vec<u8>, Digests, Hashed, bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let part = store.begin("s", Access::Positional).unwrap();
    let runtime = tokio::runtime::Handle::current();
    let tmp = store.scratch_dir().to_path_buf();
    let (finished, still) = tokio::task::spawn_blocking(move || {
        let abort = Arc::new(AtomicBool::new(false));
        let mut sink = HashingSink::new(part, &tmp, 1 << 20, in_order, runtime, abort).unwrap();
        let mut conv = Converter::new(Format::Raw, Target::Raw, &ConvertLimits::default()).unwrap();
        for chunk in input.chunks(1000) {
            conv.feed(chunk, &mut sink).unwrap();
        }
        f(&mut sink);
        let still = sink.hashing_in_order();
        (sink.finish(conv).unwrap(), still)
    })
    .await
    .unwrap();
    finished.writer.commit().unwrap();
    let bytes = std::fs::read(store.path("s").unwrap()).unwrap();
    (bytes, finished.digests, finished.hashed, still)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_hashing_sink_in_order_output_is_hashed_once() {
    let input = sparse_disk(300_000);
    let (bytes, digests, hashed, in_order) = with_sink(true, |_| {}, input.clone()).await;
    assert!(in_order);
    assert!(matches!(hashed, Hashed::InOrder));
    assert!(bytes == input);
    assert_eq!(digests.md5_hex, hex(&Md5::digest(&input)));
    assert_eq!(digests.sha512_hex, hex(&Sha512::digest(&input)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_hashing_sink_write_before_hash_position_falls_back_to_second_read() {
    let input = sparse_disk(300_000);
    let rewrite = |sink: &mut HashingSink| {
        sink.write_at(100, b"late").unwrap();
    };
    let (bytes, digests, hashed, in_order) = with_sink(true, rewrite, input.clone()).await;
    let mut want = input;
    want[100..104].copy_from_slice(b"late");
    assert!(!in_order);
    assert!(matches!(hashed, Hashed::SecondRead(_)));
    assert!(bytes == want);
    assert_eq!(digests.md5_hex, hex(&Md5::digest(&want)));
    assert_eq!(digests.sha512_hex, hex(&Sha512::digest(&want)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_hashing_sink_spill_below_the_reserve_is_storage_full() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let reserve = 64 << 20;
    let free = Arc::new(AtomicU64::new(1 << 30));
    let store = LocalStore::open_with_fake_free(
        dir.path(),
        crate::store::space::Reserve::Bytes(reserve),
        Arc::clone(&free),
    )
    .unwrap();
    let part = store.begin("s", Access::Positional).unwrap();
    let runtime = tokio::runtime::Handle::current();
    let tmp = store.scratch_dir().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let abort = Arc::new(AtomicBool::new(false));
        let mut sink = HashingSink::new(part, &tmp, 16 << 20, true, runtime, abort).unwrap();
        let data = vec![7u8; MIB];
        sink.spill_write(0, &data).unwrap();
        // The volume fills up (someone else wrote): free space is now the reserve.
        free.store(reserve, Ordering::Relaxed);
        // Within the MiB after the last check: not checked again.
        sink.spill_write(1 << 20, &data[..MIB / 2]).unwrap();
        // Past it: checked, refused as the output's writes are.
        let err = sink.spill_write(3 << 19, &data).unwrap_err();
        assert!(matches!(
            sink.lane_error(ConvertError::Sink(err)),
            LaneError::Store(StoreError::StorageFull(_))
        ));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn test_ingest_as_progress_counts_bytes_in_and_bytes_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let disk = sparse_disk(4 << 20);
    for (id, target) in [("as-is", None), ("converted", Some(Target::Qcow2))] {
        let progress = Progress::default();
        let done = ingest_as(
            MemorySource::new(Bytes::from(disk.clone()), 65_537),
            IngestRequest::new(id, Format::Raw, Limits::default()).converting(target),
            &store,
            &progress,
            never_cancel(),
        )
        .await
        .unwrap();
        let seen = progress.snapshot();
        assert_eq!(seen.received, disk.len() as u64, "{id}");
        assert_eq!(seen.total, Some(disk.len() as u64), "{id}");
        // What went out: the image as received, or the converter's output (its writes; the
        // file may be longer where nothing was written).
        if target.is_none() {
            assert_eq!(seen.stored, done.size, "{id}");
        } else {
            assert!(
                seen.stored > 0 && seen.stored <= done.size,
                "{id}: {seen:?} {done:?}"
            );
        }
    }
}
