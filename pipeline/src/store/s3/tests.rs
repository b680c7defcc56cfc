//! The S3 store against a real Garage node ([`super::garage`]).

use std::time::Duration;

use super::garage;
use super::*;
use crate::store::conformance::conformance_suite;

/// A store on the shared Garage under a fresh prefix, with scratch in `dir`.
fn store(dir: &Path, tune: impl FnOnce(&mut S3Config)) -> S3Store {
    let mut config = garage::shared().config();
    tune(&mut config);
    S3Store::open(config, dir, Reserve::Bytes(0)).unwrap()
}

/// Bytes that differ between neighbouring blocks.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_conformance_on_garage() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    conformance_suite(&store).await;
    assert!(store.unfinished_uploads().unwrap().is_empty());
}

/// The suite from a current-thread runtime too (what `#[tokio::test]` gives): waits must
/// not need the caller's runtime.
#[tokio::test]
async fn test_s3_store_conformance_on_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    conformance_suite(&store).await;
}

/// Several parts, several in flight, and ranges across part boundaries; bodies signed
/// (Garage checks each part's SHA-256 against the signed one), where the conformance suite
/// sends them unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_multipart_append_reads_back_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |c| {
        c.parts_in_flight = 3;
        c.sign_payload = true;
    });
    let mut small = store.begin("small", Access::Append).unwrap();
    small.append(b"one signed PutObject").unwrap();
    small.commit().unwrap();
    assert_eq!(store.open("small").await.unwrap().unwrap().size(), 20);
    let data = pattern(4 * MIN_PART_SIZE + 1234);
    let mut writer = store.begin("multi", Access::Append).unwrap();
    for piece in data.chunks(1 << 20) {
        writer.append(piece).unwrap();
    }
    writer.commit().unwrap();
    let image = store.open("multi").await.unwrap().unwrap();
    assert_eq!(image.size(), data.len() as u64);
    for (offset, len) in [
        (0, data.len()),
        (MIN_PART_SIZE - 10, 20),
        (3 * MIN_PART_SIZE, 5 << 20),
    ] {
        let image = store.open("multi").await.unwrap().unwrap();
        let mut stream = image.read(offset as u64, len as u64).await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut got)
            .await
            .unwrap();
        assert!(got == data[offset..offset + len], "{offset}+{len}");
    }
    assert!(store.unfinished_uploads().unwrap().is_empty());
}

/// Writers share the node's upload slots (one here, so every part waits for the one before
/// it, whichever writer sent it) and its part buffers: a sent part's buffer is kept for the
/// next part while a writer is open (at most one per writer and slot), and freed with the
/// last writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_writers_share_one_node_slot_and_reuse_part_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path(), |c| {
        c.parts_in_flight = 2;
        c.node_parts_in_flight = 1;
    }));
    let data = pattern(3 * MIN_PART_SIZE + 77);
    let mut first = store.begin("first", Access::Append).unwrap();
    first.append(&data).unwrap();
    first.flush().unwrap();
    assert_eq!(store.parts.free(), 2, "four parts sent, two buffers kept");
    let racing: Vec<_> = ["second", "third"]
        .into_iter()
        .map(|id| {
            let (store, data) = (Arc::clone(&store), data.clone());
            std::thread::spawn(move || {
                let mut writer = store.begin(id, Access::Append).unwrap();
                for piece in data.chunks(1 << 20) {
                    writer.append(piece).unwrap();
                }
                writer.commit().unwrap();
            })
        })
        .collect();
    for thread in racing {
        thread.join().unwrap();
    }
    first.commit().unwrap();
    assert_eq!(store.parts.free(), 0, "the last writer frees them");
    for id in ["first", "second", "third"] {
        let image = store.open(id).await.unwrap().unwrap();
        let mut stream = image.read(0, data.len() as u64).await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut got)
            .await
            .unwrap();
        assert!(got == data, "{id}");
    }
    assert!(store.unfinished_uploads().unwrap().is_empty());
}

/// An aborted writer that had parts uploading leaves no object and no upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_abort_mid_upload_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let mut writer = store.begin("aborted", Access::Append).unwrap();
    writer.append(&pattern(3 * MIN_PART_SIZE)).unwrap();
    assert_eq!(
        store.unfinished_uploads().unwrap().len(),
        1,
        "an upload is running"
    );
    writer.abort();
    assert!(store.unfinished_uploads().unwrap().is_empty());
    assert!(store.open("aborted").await.unwrap().is_none());
    assert_eq!(store.sweep().unwrap(), 0);
}

/// A crash (the writer forgotten) leaves an upload the next sweep aborts from the node's
/// journal; a second node's sweep leaves a fresh upload of the first node alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_sweep_aborts_own_leftovers_only() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = store(one.path(), |_| {});
    let config = first.config().clone();
    let second = S3Store::open(config.clone(), two.path(), Reserve::Bytes(0)).unwrap();
    let mut writer = first.begin("crashed", Access::Append).unwrap();
    writer.append(&pattern(MIN_PART_SIZE + 1)).unwrap();
    std::mem::forget(writer);
    assert_eq!(first.unfinished_uploads().unwrap().len(), 1);
    assert_eq!(
        second.sweep().unwrap(),
        0,
        "another node's live upload is not touched"
    );
    assert_eq!(first.unfinished_uploads().unwrap().len(), 1);
    drop(first);
    let restarted = S3Store::open(config, one.path(), Reserve::Bytes(0)).unwrap();
    assert_eq!(restarted.sweep().unwrap(), 1);
    assert!(restarted.unfinished_uploads().unwrap().is_empty());
    assert!(restarted.open("crashed").await.unwrap().is_none());
}

/// A crash between creating an upload and noting its id leaves only the entry written
/// before the create (the key alone): the next sweep aborts that key's uploads, and only that
/// key's (found by a `kill -9` in `tests/service/cluster_takeover.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_sweep_aborts_upload_created_before_its_id_was_noted() {
    let (dir, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = store(dir.path(), |_| {});
    let config = first.config().clone();
    let second = S3Store::open(config.clone(), two.path(), Reserve::Bytes(0)).unwrap();
    let mut other = second.begin("other-live", Access::Append).unwrap();
    other.append(&pattern(MIN_PART_SIZE + 1)).unwrap();
    let key = first.key("crashed").unwrap();
    std::fs::write(first.journal.join("crashed"), format!("{key}\n")).unwrap();
    let req = (first.io.client.create_multipart_upload())
        .bucket(&*first.io.bucket)
        .key(&key)
        .send();
    first.io.wait(req).unwrap().unwrap();
    assert_eq!(first.unfinished_uploads().unwrap().len(), 2);
    let restarted = S3Store::open(config, dir.path(), Reserve::Bytes(0)).unwrap();
    assert_eq!(restarted.sweep_journal().unwrap(), 1);
    let left = restarted.unfinished_uploads().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("other-live"), "{left:?}");
    other.abort();
}

/// A key-only journal entry covers only the upload its create could have made, one
/// created within `create_timeout` of the note: a later upload of the same key (another
/// node that took the import of this image back while this one was down) is left alone by
/// this node's sweep, and completes (issue #13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_sweep_key_only_entry_spares_a_later_upload_of_the_key() {
    let (dir, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = store(dir.path(), |c| c.create_timeout = Duration::from_secs(1));
    let config = first.config().clone();
    let key = first.key("retaken").unwrap();
    std::fs::write(first.journal.join("retaken"), format!("{key}\n")).unwrap();
    let req = (first.io.client.create_multipart_upload())
        .bucket(&*first.io.bucket)
        .key(&key)
        .send();
    first.io.wait(req).unwrap().unwrap();
    // Past the window (and S3's whole-second timestamps) before the other node starts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = S3Store::open(config.clone(), two.path(), Reserve::Bytes(0)).unwrap();
    let mut taker = second.begin("retaken", Access::Append).unwrap();
    let data = pattern(MIN_PART_SIZE + 1);
    taker.append(&data).unwrap();
    assert_eq!(first.unfinished_uploads().unwrap().len(), 2);
    drop(first);
    let restarted = S3Store::open(config, dir.path(), Reserve::Bytes(0)).unwrap();
    assert_eq!(restarted.sweep_journal().unwrap(), 1);
    assert_eq!(restarted.unfinished_uploads().unwrap().len(), 1);
    taker.commit().expect("the later upload survived the sweep");
    let stored = restarted.open("retaken").await.unwrap().expect("object");
    assert_eq!(stored.size(), data.len() as u64);
    assert!(restarted.unfinished_uploads().unwrap().is_empty());
    restarted.delete("retaken").unwrap();
}

/// Uploads older than `abandon_after` (a node that never came back) are aborted by any
/// node's sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_sweep_aborts_abandoned_uploads_of_other_nodes() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = store(one.path(), |_| {});
    let mut config = first.config().clone();
    let mut writer = first.begin("abandoned", Access::Append).unwrap();
    writer.append(&pattern(MIN_PART_SIZE)).unwrap();
    std::mem::forget(writer);
    config.abandon_after = Duration::ZERO;
    let other = S3Store::open(config, two.path(), Reserve::Bytes(0)).unwrap();
    assert_eq!(other.sweep().unwrap(), 1);
    assert!(other.unfinished_uploads().unwrap().is_empty());
}

/// The pass every live node runs periodically: another node's upload older than
/// `abandon_after` is aborted; a young one (this node's import in flight) is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_sweep_abandoned_aborts_only_uploads_older_than_abandon_after() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = store(one.path(), |_| {});
    let mut writer = first.begin("in-flight", Access::Append).unwrap();
    writer.append(&pattern(MIN_PART_SIZE)).unwrap();
    assert_eq!(
        first.sweep_abandoned().unwrap(),
        0,
        "a young upload is kept"
    );
    assert_eq!(first.unfinished_uploads().unwrap().len(), 1);
    let mut config = first.config().clone();
    config.abandon_after = Duration::ZERO;
    let other = S3Store::open(config, two.path(), Reserve::Bytes(0)).unwrap();
    assert_eq!(other.sweep_abandoned().unwrap(), 1);
    assert!(other.unfinished_uploads().unwrap().is_empty());
    assert!(writer.commit().is_err(), "its upload was aborted");
    assert!(first.open("in-flight").await.unwrap().is_none());
}

/// Deleting an image while its upload runs aborts the upload: the commit then fails and
/// nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_delete_during_upload_aborts_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let mut writer = store.begin("deleted", Access::Append).unwrap();
    writer.append(&pattern(2 * MIN_PART_SIZE)).unwrap();
    store.delete("deleted").unwrap();
    assert!(writer.commit().is_err());
    assert!(store.unfinished_uploads().unwrap().is_empty());
    assert!(store.open("deleted").await.unwrap().is_none());
}

/// A valid configuration (nothing is contacted).
fn sample_config() -> S3Config {
    S3Config {
        endpoint: Some("http://127.0.0.1:3900".into()),
        region: "garage".into(),
        bucket: "images".into(),
        prefix: "sluice/".into(),
        path_style: true,
        access_key_id: "GK1".into(),
        secret_access_key: "s3cr3t".into(),
        session_token: None,
        part_size: DEFAULT_PART_SIZE,
        parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
        node_parts_in_flight: DEFAULT_NODE_PARTS_IN_FLIGHT,
        abandon_after: DEFAULT_ABANDON_AFTER,
        create_timeout: DEFAULT_CREATE_TIMEOUT,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        sign_payload: true,
    }
}

/// Changes one value of a configuration.
type Spoil = fn(&mut S3Config);

#[test]
fn test_s3_config_bad_values_refused() {
    let good = sample_config();
    assert!(good.validate().is_ok());
    let cases: [(&str, Spoil); 9] = [
        ("bucket", |c| c.bucket.clear()),
        ("prefix", |c| c.prefix = "no-slash".into()),
        ("endpoint", |c| c.endpoint = Some("ftp://x".into())),
        ("part_size", |c| c.part_size = 1 << 20),
        ("credentials", |c| c.secret_access_key.clear()),
        ("create timeout", |c| c.create_timeout = Duration::ZERO),
        ("store.s3.parts_in_flight 0", |c| c.parts_in_flight = 0),
        ("node_parts_in_flight 65", |c| c.node_parts_in_flight = 65),
        ("request_timeout_secs", |c| {
            c.request_timeout = Duration::ZERO
        }),
    ];
    for (what, spoil) in cases {
        let mut config = good.clone();
        spoil(&mut config);
        let err = config.validate().unwrap_err();
        assert!(err.contains(what), "{what}: {err}");
    }
    assert!(!format!("{good:?}").contains("s3cr3t"));
}

#[test]
fn test_s3_config_part_memory_counts_one_filling_part_per_writer_and_the_node_slots() {
    let config = sample_config();
    assert_eq!(
        config.part_memory(1),
        24 << 20,
        "one writer: 1 filling + 2 sending"
    );
    assert_eq!(config.part_memory(2), 48 << 20, "two: 2 + 4");
    assert_eq!(config.part_memory(4), 64 << 20, "four: 4 + the node's 4");
}

/// The first claim of a prefix is kept: the same owner again (a restart, another store on
/// the prefix) is fine, another owner is refused and names the holder, and the marker sits
/// beside the images, never among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_s3_store_claim_keeps_the_first_owner_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path().join("a").as_path(), |_| {});
    let mut writer = store.begin("kept", Access::Append).unwrap();
    writer.append(b"an image").unwrap();
    writer.commit().unwrap();
    store.claim("node a").unwrap();
    store.claim("node a").unwrap();
    let config = store.config().clone();
    let again = S3Store::open(config, &dir.path().join("b"), Reserve::Bytes(0)).unwrap();
    again.claim("node a").unwrap();
    let err = again.claim("node b").unwrap_err().to_string();
    assert!(
        err.contains("belongs to another metadata store (node a;"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}owner", store.config().prefix)),
        "{err}"
    );
    assert_eq!(store.list_ids().unwrap(), ["kept"]);
    assert!(store.open("owner").await.unwrap().is_none());
}
