//! [`conformance_suite`]: the [`Store`] contract (module documentation of [`super`]) as one
//! test function, run against [`LocalStore`](super::LocalStore) in its tests and meant for
//! every later implementation (an object store runs it against a test bucket).

// A test suite: an out-of-range index or an overflow here is a failed check, like a panic.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::os::unix::fs::FileExt;

use tokio::io::AsyncReadExt;

use super::{Access, Store, StoreError};

/// Ids the suite commits; the store must hold none of them (nor `conformance-crashed*`)
/// when the suite starts.
const IDS: [&str; 6] = [
    "conformance-append",
    "conformance-positional",
    "conformance-aborted",
    "conformance-dropped",
    "conformance-twice",
    "conformance-empty",
];

/// Bytes that differ between neighbouring blocks, so a misplaced range shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8 ^ seed)
        .collect()
}

/// The committed bytes of `id` from `offset`, `len` long; `None` when not committed.
async fn read(store: &dyn Store, id: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
    let image = store.open(id).await.expect("open")?;
    assert!(
        offset.saturating_add(len) <= image.size(),
        "{id}: range past the image"
    );
    let mut stream = image.read(offset, len).await.expect("read");
    let mut bytes = vec![0u8; usize::try_from(len).expect("range fits in memory")];
    stream.read_exact(&mut bytes).await.expect("read range");
    Some(bytes)
}

/// The whole committed image `id`; `None` when not committed.
async fn read_all(store: &dyn Store, id: &str) -> Option<Vec<u8>> {
    let size = store.open(id).await.expect("open")?.size();
    read(store, id, 0, size).await
}

/// Behaviour every [`Store`] must show, each promise of the contract that a test can
/// observe: ids are checked; nothing written is visible (open, list) before commit; commit
/// makes exactly the written bytes readable, whole and by range, for appended and positional
/// writers alike (holes read as zeros, a positional writer reads its output back); a
/// committed image is never replaced; abort and drop leave nothing, and neither does a failed
/// commit; delete is idempotent; the sweep removes a writer's leftovers and keeps committed
/// images; writers keep to their [`Access`]. `store` must hold none of the suite's ids
/// (`conformance-*`) and no writer of an earlier run. Writers block (see the contract), so
/// a store whose methods wait on the network runs this on a multi-threaded runtime.
///
/// Crash behaviour (`kill -9` in the middle of a write, then [`Store::sweep`]) needs a
/// process to kill: the service tests do that through the real binary.
///
/// # Panics
/// When the store misbehaves (this is a test suite).
pub async fn conformance_suite(store: &dyn Store) {
    let [append_id, positional_id, aborted_id, dropped_id, twice_id, empty_id] = IDS;

    // Ids outside the alphabet are refused by every method.
    for bad in ["", "../x", "a/b", "a b", "é"] {
        assert!(
            matches!(
                store.begin(bad, Access::Append),
                Err(StoreError::InvalidId(_))
            ),
            "begin {bad:?}"
        );
        assert!(
            matches!(store.delete(bad), Err(StoreError::InvalidId(_))),
            "delete {bad:?}"
        );
        assert!(
            matches!(store.open(bad).await, Err(StoreError::InvalidId(_))),
            "open {bad:?}"
        );
    }
    let long = "x".repeat(super::MAX_ID_LEN.saturating_add(1));
    assert!(matches!(
        store.begin(&long, Access::Append),
        Err(StoreError::InvalidId(_))
    ));

    // Missing images: open answers None, delete succeeds, nothing is listed.
    for id in IDS {
        assert!(
            store.open(id).await.expect("open missing").is_none(),
            "{id}"
        );
        store.delete(id).expect("delete missing");
    }
    let listed = |store: &dyn Store, id: &str| {
        store
            .list_ids()
            .expect("list")
            .iter()
            .any(|listed| listed == id)
    };

    // Appended: invisible until commit, then exactly the bytes, whole and by range.
    let data = pattern(3 * super::DIRECT_WRITE_SIZE / 2 + 12_345, 1);
    let mut writer = store
        .begin(append_id, Access::Append)
        .expect("begin append");
    assert_eq!(writer.id(), append_id);
    assert!(writer.scratch().is_none(), "append writers have no scratch");
    for piece in data.chunks(100_003) {
        writer.append(piece).expect("append");
    }
    assert_eq!(writer.written(), data.len() as u64);
    assert!(store.open(append_id).await.expect("open").is_none());
    assert!(!listed(store, append_id));
    writer.commit().expect("commit append");
    assert!(read_all(store, append_id).await.expect("committed") == data);
    let image = store
        .open(append_id)
        .await
        .expect("open")
        .expect("committed");
    assert_eq!(image.size(), data.len() as u64);
    for (offset, len) in [
        (0usize, 1usize),
        (4095, 2),
        (1 << 20, 70_000),
        (data.len() - 1, 1),
    ] {
        let got = read(store, append_id, offset as u64, len as u64).await;
        assert!(
            got.as_deref() == data.get(offset..offset + len),
            "range {offset}+{len}"
        );
    }
    assert!(listed(store, append_id));

    // Positional: writes at offsets with a hole, read back before commit, invisible until it.
    let mut writer = store
        .begin(positional_id, Access::Positional)
        .expect("begin positional");
    assert!(matches!(
        writer.append(b"x"),
        Err(StoreError::WrongAccess { .. })
    ));
    let head = pattern(10_000, 2);
    let tail = pattern(5_000, 3);
    let tail_at = 1u64 << 20;
    let len = tail_at + tail.len() as u64;
    {
        let scratch = writer.scratch().expect("positional writers have scratch");
        let file = scratch.positional_handle().expect("handle");
        for (offset, bytes) in [(tail_at, &tail), (0, &head)] {
            scratch.check_space(bytes.len() as u64).expect("space");
            file.write_all_at(bytes, offset).expect("write_at");
            scratch.wrote(bytes.len() as u64);
        }
        file.set_len(len).expect("set_len");
        let mut back = vec![0u8; head.len()];
        file.read_exact_at(&mut back, 0).expect("read back");
        assert!(back == head, "a positional writer reads its output back");
    }
    assert_eq!(writer.written(), (head.len() + tail.len()) as u64);
    assert!(store.open(positional_id).await.expect("open").is_none());
    assert!(!listed(store, positional_id));
    writer.commit().expect("commit positional");
    let mut want = vec![0u8; usize::try_from(len).expect("small")];
    want[..head.len()].copy_from_slice(&head);
    want[tail_at as usize..].copy_from_slice(&tail);
    assert!(read_all(store, positional_id).await.expect("committed") == want);

    // An empty image is an image.
    store
        .begin(empty_id, Access::Append)
        .expect("begin empty")
        .commit()
        .expect("commit empty");
    let empty = store
        .open(empty_id)
        .await
        .expect("open")
        .expect("committed");
    assert_eq!(empty.size(), 0);

    // A committed image is never replaced: refused at begin or at the latest at commit,
    // and the first image stays as it was.
    store
        .begin(twice_id, Access::Append)
        .and_then(|mut w| {
            w.append(b"first")?;
            w.commit()
        })
        .expect("first commit");
    let second = store.begin(twice_id, Access::Append).and_then(|mut w| {
        w.append(b"second!")?;
        w.commit()
    });
    assert!(
        matches!(second, Err(StoreError::AlreadyExists(_))),
        "{second:?}"
    );
    assert!(read_all(store, twice_id).await.expect("committed") == b"first");

    // Abort and drop leave nothing; the id can be written afresh.
    let mut writer = store.begin(aborted_id, Access::Append).expect("begin");
    writer.append(&pattern(70_000, 4)).expect("append");
    writer.abort();
    let mut writer = store.begin(dropped_id, Access::Positional).expect("begin");
    if let Some(scratch) = writer.scratch() {
        let file = scratch.positional_handle().expect("handle");
        file.write_all_at(b"gone", 4096).expect("write_at");
        scratch.wrote(4);
    }
    drop(writer);
    for id in [aborted_id, dropped_id] {
        assert!(store.open(id).await.expect("open").is_none(), "{id}");
        assert!(!listed(store, id), "{id}");
        let mut again = store.begin(id, Access::Append).expect("begin again");
        again.append(b"again").expect("append");
        again.commit().expect("commit again");
        assert!(read_all(store, id).await.expect("committed") == b"again");
    }

    // Commits, aborts, drops and the refused commit above left nothing for the sweep.
    assert_eq!(store.sweep().expect("sweep after clean writes"), 0);

    // The sweep removes a writer's leftovers and keeps committed data. A crash is a writer
    // that is neither committed nor aborted nor dropped: forgotten (its handles leak, in a
    // test). Both kinds of writer, with data written.
    let mut leftover = store
        .begin("conformance-crashed", Access::Append)
        .expect("begin");
    leftover.append(&pattern(10_000, 5)).expect("append");
    std::mem::forget(leftover);
    let mut leftover = store
        .begin("conformance-crashed-positional", Access::Positional)
        .expect("begin");
    if let Some(scratch) = leftover.scratch() {
        let file = scratch.positional_handle().expect("handle");
        file.write_all_at(b"left", 8192).expect("write_at");
        scratch.wrote(4);
    }
    std::mem::forget(leftover);
    // How many leftovers there are depends on the store (an object store may have buffered
    // these few bytes in memory only); that none are left after it does not.
    store.sweep().expect("sweep");
    for id in ["conformance-crashed", "conformance-crashed-positional"] {
        assert!(store.open(id).await.expect("open").is_none(), "{id}");
        assert!(!listed(store, id), "{id}");
    }
    assert_eq!(store.sweep().expect("second sweep"), 0);
    assert!(read_all(store, append_id).await.expect("kept") == data);

    // Delete: idempotent, and the image is gone from open and list.
    for id in IDS {
        store.delete(id).expect("delete");
        store.delete(id).expect("delete again");
        assert!(store.open(id).await.expect("open").is_none(), "{id}");
        assert!(!listed(store, id), "{id}");
    }
}
