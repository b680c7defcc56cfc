//! Tasks whose node is provably dead, taken back (issue #13, "Many nodes"): start-up
//! recovery acts on them, and only on them.
//!
//! Provably dead means: in an embedded store (RocksDB, one process per data directory by
//! RocksDB's lock) every `processing` task found at start-up is this process's, from before
//! its crash; in a shared store (PostgreSQL) only a `processing` task whose lease ended
//! ([`MetaStore::expired_leases`]). A `processing` task without a lease in a shared store is
//! never touched: nothing proves its node dead.
//!
//! A pull import (a legacy `import` task, or an interoperable `web-download` one: the source
//! is a URL any node can read again) goes back to `pending` to start again from its source,
//! until it has had [`Config::max_import_attempts`] runs; then, like every other task (whose
//! data arrived in a request body or a stage on the dead node), it fails with
//! `interrupted`. A `web-download`'s image stays `importing` under the task's import lock
//! meanwhile (the next run takes it again, as [`imports`] does after a restart); the last
//! take-back returns it to `queued`, as a failed import does. Each take-back
//! is a compare-and-swap on the lease as read ([`MetaStore::take_back`]), so two nodes
//! recovering at once, or a holder renewing meanwhile, never both win.
//!
//! Images a dead node was receiving (a body upload, a stage) are taken back the same way,
//! on their writer lease (`writers.rs`: [`hold_fence`], [`sweep_writers_once`]); complete
//! stages on a node whose heartbeat ended, with the import waiting for them, by
//! [`sweep_dead_stages_once`] (`stages.rs`).
//!
//! [`Config::max_import_attempts`]: crate::config::Config::max_import_attempts

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_pipeline::store::Store;
use tokio::sync::watch;

use crate::config::Config;
use crate::imports::{self, REASON_INTERRUPTED};
use crate::meta::{MetaError, MetaStore, TaskRecord, TaskStatus, Timestamp};

mod fence;
mod leftovers;
mod stages;
mod writers;

pub use fence::{LeaseFence, Watch};
pub use leftovers::{attempt_image_id, remove_leftovers};
pub use stages::{heartbeat_secs, sweep_dead_stages_once};
pub use writers::{sweep_writers_once, take_back_writer, writer_lease};

/// The legacy task type whose source is a URL: it can start again on any node.
const PULL_IMPORT: &str = "import";

/// The `method.name` of an interoperable import whose source is a URL (Glance's).
const WEB_DOWNLOAD: &str = "web-download";

/// The file in the data directory holding the node id when none is configured.
const NODE_ID_FILE: &str = "node-id";

/// This node's id in leases: `node_id` from the configuration, else the id kept in
/// `<data_dir>/node-id`, made (a random UUID) on first start. A data directory is one
/// node: its `tmp/` and staging are its own, and after a crash the same directory comes
/// back as the same node. When the file can be neither read nor written (a full volume) a
/// fresh id serves this run: its leases then look like another node's, which only delays
/// their take-back until they run out.
pub fn node_id(config: &Config) -> String {
    if let Some(id) = &config.node_id {
        return id.clone();
    }
    let path = config.data_dir.join(NODE_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Err(e) = std::fs::write(&path, format!("{id}\n")) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the node id: using one for this run");
    }
    id
}

/// Keeps the lease of `fence` while its holder works (a task's lease while its import runs, an
/// image's writer lease while its body or stage arrives): renews it every third of its
/// `lease_secs`, then reads back the other nodes' charges when the fence watches them
/// ([`LeaseFence::watching`]), until the returned receiver is dropped. Returns a cancel
/// signal that follows `shutdown` and also fires, with the flag set, when a renewal finds
/// the lease lost (the task or image was taken back, finished or deleted): the holder must
/// then stop and write nothing. A renewal that fails (the database is away) is retried at
/// the next tick; the lease runs out if it stays away.
pub fn hold_fence(
    fence: LeaseFence,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, Arc<AtomicBool>) {
    let (tx, rx) = watch::channel(false);
    let lost = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&lost);
    let lease_secs = fence.lease_secs();
    let held = fence.name();
    let every = Duration::from_secs((lease_secs / 3).max(1));
    let secs = i64::try_from(lease_secs).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the claim (the admission) just wrote a full lease.
        tick.tick().await;
        let mut shutdown_open = true;
        loop {
            tokio::select! {
                // Ends when the holder drops its receiver (it finished).
                () = tx.closed() => return,
                // (The `Ref` of `wait_for` is dropped inside: it is not `Send`.)
                r = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) }, if shutdown_open => match r {
                    Ok(()) => {
                        tx.send_replace(true);
                        return;
                    }
                    Err(_) => shutdown_open = false,
                },
                _ = tick.tick() => {
                    let until = imports::now().saturating_add(secs);
                    match fence.renew(until).await {
                        Ok(true) => fence.read_others().await,
                        Ok(false) => {
                            tracing::warn!(lease = %held, "lease lost: another node took it back; stopping");
                            flag.store(true, Ordering::SeqCst);
                            tx.send_replace(true);
                            return;
                        }
                        Err(e) => tracing::warn!(lease = %held, error = %e, "lease renewal failed; retrying"),
                    }
                }
            }
        }
    });
    (rx, lost)
}

/// What [`take_back`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakenBack {
    /// Back to `pending`: queue it again.
    Requeued,
    /// Failed with `interrupted`.
    Interrupted,
    /// Someone else moved it first (its holder renewed, or another node took it back).
    Lost,
}

/// Whether `task` is provably dead, read from `meta` at `now` (see the module docs).
pub fn is_dead(meta: &dyn MetaStore, task: &TaskRecord, now: Timestamp) -> bool {
    task.status == TaskStatus::Processing
        && (!meta.is_shared() || task.lease.as_ref().is_some_and(|l| l.until <= now))
}

/// Whether `task` pulls from a URL, so another node can run it again from its source: a
/// legacy `import` task or a `web-download` interoperable import (a `glance-direct` one's
/// data is staged on the node that died).
fn is_pull(task: &TaskRecord) -> bool {
    task.task_type == PULL_IMPORT
        || (task.task_type == imports::API_IMAGE_IMPORT
            && task
                .input
                .pointer("/import_req/method/name")
                .and_then(serde_json::Value::as_str)
                == Some(WEB_DOWNLOAD))
}

/// `task` as it is taken back: `pending` without its lease when it is a pull import with
/// runs left (of `max_attempts`), else failed with `interrupted` (expiring after `ttl`).
pub fn taken_back(task: &TaskRecord, max_attempts: u32, ttl: i64) -> TaskRecord {
    let mut back = task.clone();
    back.lease = None;
    let pull = is_pull(task);
    if pull && task.attempts < max_attempts {
        back.status = TaskStatus::Pending;
        back.updated_at = imports::now();
        return back;
    }
    let message = if pull {
        let again = if task.task_type == PULL_IMPORT {
            "create the task again"
        } else {
            "import the image again"
        };
        format!(
            "import interrupted: the service running it stopped during each of its {} runs; \
             {again}",
            task.attempts
        )
    } else {
        // A `glance-direct` import: its data was staged on the node that stopped.
        "import interrupted: the service running it stopped while this task was processing, \
         and the image's staged data was on that service; stage the image again, then import \
         it"
        .to_owned()
    };
    imports::fail(&mut back, REASON_INTERRUPTED, message, ttl);
    back
}

/// Takes `task` (as read) back if it is provably dead at `now`.
///
/// # Errors
/// A metadata error ([`MetaError::StorageFull`] on a full volume: try again later).
pub async fn take_back(
    meta: &dyn MetaStore,
    store: &dyn Store,
    task: &TaskRecord,
    now: Timestamp,
    max_attempts: u32,
    ttl: i64,
) -> Result<TakenBack, MetaError> {
    if !is_dead(meta, task, now) {
        return Ok(TakenBack::Lost);
    }
    let back = taken_back(task, max_attempts, ttl);
    if !meta.take_back(&back, task.lease.as_ref()).await? {
        return Ok(TakenBack::Lost);
    }
    if back.status == TaskStatus::Pending {
        return Ok(TakenBack::Requeued);
    }
    // Final: no later run will clear what this task's runs left (`leftovers.rs`). A failure
    // is only logged, as the release's is: the task is already final.
    if let Err(e) = remove_leftovers(meta, store, task, task.attempts).await {
        tracing::warn!(task_id = %task.id, error = %e, "looking for what the task's runs left failed");
    }
    release_image_of(meta, task).await;
    Ok(TakenBack::Interrupted)
}

/// The image an interrupted interoperable import (`glance-direct`, or a `web-download`
/// after its last run) was filling goes back to `queued`, as when such an import fails, instead of staying
/// `importing` under the lock of a task that will never run again. A failure here is only
/// logged: the task is already final, and deleting the image still works.
async fn release_image_of(meta: &dyn MetaStore, task: &TaskRecord) {
    if task.task_type != imports::API_IMAGE_IMPORT {
        return;
    }
    let Some(image_id) = task.input.get("image_id").and_then(|v| v.as_str()) else {
        return;
    };
    if let Err(e) = imports::release_image(meta, &task.id, image_id).await {
        tracing::warn!(task_id = %task.id, image_id, error = %e, "returning the image of an interrupted import to queued failed");
    }
}

/// Expired leases read per pass of [`sweep_once`]: bounds the sweep's memory whatever the
/// number of nodes that died at once; the rest waits for the next sweep.
pub const SWEEP_BATCH: usize = 1000;

/// One pass of the periodic sweep of a shared store: takes back every task whose lease ran
/// out by `now` (at most [`SWEEP_BATCH`]); returns the ids back in `pending` (any node's
/// claim loop takes them). An
/// embedded store has nothing to sweep: its leases are this live process's.
///
/// # Errors
/// The first metadata error.
pub async fn sweep_once(
    meta: &dyn MetaStore,
    store: &dyn Store,
    now: Timestamp,
    max_attempts: u32,
    ttl: i64,
) -> Result<Vec<String>, MetaError> {
    let mut requeued = Vec::new();
    if !meta.is_shared() {
        return Ok(requeued);
    }
    for id in meta.expired_leases(now, SWEEP_BATCH).await? {
        let Some(task) = meta.get_task(&id).await? else {
            continue;
        };
        match take_back(meta, store, &task, now, max_attempts, ttl).await? {
            TakenBack::Requeued => {
                tracing::warn!(task_id = %id, attempts = task.attempts, "lease ran out: import queued again");
                requeued.push(id);
            }
            TakenBack::Interrupted => {
                tracing::warn!(task_id = %id, "lease ran out: task failed as interrupted")
            }
            TakenBack::Lost => {}
        }
    }
    Ok(requeued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::memory::MemoryMeta;
    use crate::meta::postgres::PgMeta;
    use crate::meta::testing_pg::PgCluster;
    use crate::meta::{sample_task, ImageStatus, TaskLease, LOCK_PROPERTY};

    const TTL: i64 = 3600;

    /// An image store in a temporary directory, for take-backs that find nothing to remove.
    fn scratch_store() -> (tempfile::TempDir, sluice_pipeline::store::LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = sluice_pipeline::store::LocalStore::open(dir.path()).unwrap();
        (dir, store)
    }

    /// Commits a few bytes as image `id`, as a run that died before recording it would.
    fn commit(store: &dyn Store, id: &str) {
        let mut writer = store
            .begin(id, sluice_pipeline::store::Access::Append)
            .unwrap();
        writer.append(b"left").unwrap();
        writer.commit().unwrap();
    }

    fn processing(n: u32, task_type: &str, lease: Option<(&str, Timestamp)>) -> TaskRecord {
        let mut task = sample_task(&format!("00000000-0000-4000-8000-{n:012}"));
        task.task_type = task_type.to_owned();
        task.status = TaskStatus::Processing;
        task.attempts = 1;
        task.lease = lease.map(|(node, until)| TaskLease {
            node: node.to_owned(),
            until,
            charged: 0,
        });
        task
    }

    /// The images its runs stored without recording them stay while the task has runs to
    /// go (the next run removes them) and go with its last take-back.
    #[tokio::test]
    async fn test_take_back_pull_import_requeued_until_attempts_then_interrupted() {
        let (_dir, store) = scratch_store();
        let meta = MemoryMeta::new();
        let mut task = processing(1, PULL_IMPORT, None);
        meta.put_task(&task).await.unwrap();
        let runs = [attempt_image_id(&task.id, 1), attempt_image_id(&task.id, 2)];
        commit(&store, &runs[0]);
        assert_eq!(
            take_back(&meta, &store, &task, 0, 2, TTL).await.unwrap(),
            TakenBack::Requeued
        );
        let back = meta.get_task(&task.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.attempts), (TaskStatus::Pending, 1));
        assert_eq!(store.list_ids().unwrap(), [runs[0].clone()]);
        // The second run dies too: that was the last one.
        task.attempts = 2;
        meta.put_task(&task).await.unwrap();
        commit(&store, &runs[1]);
        assert_eq!(
            take_back(&meta, &store, &task, 0, 2, TTL).await.unwrap(),
            TakenBack::Interrupted
        );
        assert!(
            store.list_ids().unwrap().is_empty(),
            "both runs' images removed"
        );
        let failed = meta.get_task(&task.id).await.unwrap().unwrap();
        assert_eq!(failed.status, TaskStatus::Failure);
        assert_eq!(failed.reason.as_deref(), Some(REASON_INTERRUPTED));
        assert!(
            failed.message.contains("each of its 2 runs"),
            "{}",
            failed.message
        );
    }

    #[tokio::test]
    async fn test_take_back_interoperable_import_interrupted_not_requeued() {
        let (_dir, store) = scratch_store();
        let meta = MemoryMeta::new();
        let task = processing(2, imports::API_IMAGE_IMPORT, None);
        meta.put_task(&task).await.unwrap();
        assert_eq!(
            take_back(&meta, &store, &task, 0, 3, TTL).await.unwrap(),
            TakenBack::Interrupted
        );
        let failed = meta.get_task(&task.id).await.unwrap().unwrap();
        assert_eq!(failed.reason.as_deref(), Some(REASON_INTERRUPTED));
        assert!(
            failed
                .message
                .contains("stage the image again, then import it"),
            "{}",
            failed.message
        );
    }

    /// The image an interrupted interoperable import held goes back to `queued` with its
    /// lock dropped, as after a failed import; an image locked by another task is left alone.
    #[tokio::test]
    async fn test_take_back_interoperable_import_returns_its_image_to_queued() {
        let (_dir, store) = scratch_store();
        let meta = MemoryMeta::new();
        let mut task = processing(11, imports::API_IMAGE_IMPORT, None);
        let mut other = processing(12, imports::API_IMAGE_IMPORT, None);
        for (t, image_id, holder) in [
            (
                &mut task,
                "img-mine",
                "00000000-0000-4000-8000-000000000011",
            ),
            (&mut other, "img-theirs", "someone-else"),
        ] {
            t.input = serde_json::json!({ "image_id": image_id });
            meta.put_task(t).await.unwrap();
            let mut image = crate::meta::sample_image(image_id);
            image.status = ImageStatus::Importing;
            (image.properties).insert(LOCK_PROPERTY.to_owned(), holder.to_owned());
            meta.put_image(&image).await.unwrap();
        }
        for t in [&task, &other] {
            assert_eq!(
                take_back(&meta, &store, t, 0, 3, TTL).await.unwrap(),
                TakenBack::Interrupted
            );
        }
        let mine = meta.get_image("img-mine").await.unwrap().unwrap();
        assert_eq!(mine.status, ImageStatus::Queued);
        assert!(!mine.properties.contains_key(LOCK_PROPERTY), "{mine:?}");
        let theirs = meta.get_image("img-theirs").await.unwrap().unwrap();
        assert_eq!(theirs.status, ImageStatus::Importing);
    }

    /// A `web-download` whose node died starts again from its URL, counted like a legacy
    /// import: back to `pending` with its image still `importing` under the task's lock;
    /// after its last run, `interrupted`, what the run stored without recording it removed,
    /// and the image back to `queued`.
    #[tokio::test]
    async fn test_take_back_web_download_requeued_until_attempts_then_image_queued() {
        let (_dir, store) = scratch_store();
        let meta = MemoryMeta::new();
        const WEB_IMAGE: &str = "00000000-0000-4000-8000-0000000000e1";
        let mut task = processing(13, imports::API_IMAGE_IMPORT, None);
        task.input = serde_json::json!({
            "image_id": WEB_IMAGE,
            "import_req": {"method": {"name": "web-download", "uri": "http://h/x"}},
        });
        meta.put_task(&task).await.unwrap();
        let mut image = crate::meta::sample_image(WEB_IMAGE);
        image.status = ImageStatus::Importing;
        (image.properties).insert(LOCK_PROPERTY.to_owned(), task.id.clone());
        meta.put_image(&image).await.unwrap();
        assert_eq!(
            take_back(&meta, &store, &task, 0, 2, TTL).await.unwrap(),
            TakenBack::Requeued
        );
        let back = meta.get_task(&task.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.lease), (TaskStatus::Pending, None));
        let waiting = meta.get_image(WEB_IMAGE).await.unwrap().unwrap();
        assert_eq!(waiting.status, ImageStatus::Importing);
        assert_eq!(waiting.properties.get(LOCK_PROPERTY), Some(&task.id));
        // The second run dies too, after its commit: that was the last one.
        task.attempts = 2;
        meta.put_task(&task).await.unwrap();
        commit(&store, WEB_IMAGE);
        assert_eq!(
            take_back(&meta, &store, &task, 0, 2, TTL).await.unwrap(),
            TakenBack::Interrupted
        );
        let failed = meta.get_task(&task.id).await.unwrap().unwrap();
        assert_eq!(failed.reason.as_deref(), Some(REASON_INTERRUPTED));
        assert!(
            failed.message.contains("each of its 2 runs"),
            "{}",
            failed.message
        );
        let released = meta.get_image(WEB_IMAGE).await.unwrap().unwrap();
        assert_eq!(released.status, ImageStatus::Queued);
        assert!(
            store.open(WEB_IMAGE).await.unwrap().is_none(),
            "its object removed"
        );
        assert!(!released.properties.contains_key(LOCK_PROPERTY));
    }

    /// In a shared store only an ended lease proves a node dead: another node's running
    /// lease and a task without a lease are left alone; a stale read loses to a renewal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_take_back_shared_store_only_expired_leases() {
        let (_dir, store) = scratch_store();
        let cluster = PgCluster::start();
        let meta = PgMeta::open(&cluster.database("takeover"), 2)
            .await
            .unwrap();
        let live = processing(3, PULL_IMPORT, Some(("node-b", 1_000)));
        let unleased = processing(4, PULL_IMPORT, None);
        let dead = processing(5, PULL_IMPORT, Some(("node-c", 100)));
        let renewed = processing(6, PULL_IMPORT, Some(("node-d", 100)));
        for task in [&live, &unleased, &dead, &renewed] {
            meta.put_task(task).await.unwrap();
        }
        assert!(meta
            .renew_lease(&renewed.id, "node-d", 2_000, 0)
            .await
            .unwrap());
        let now = 500;
        assert_eq!(
            meta.expired_leases(now, 10).await.unwrap(),
            [dead.id.as_str()]
        );
        for (task, expected) in [
            (&live, TakenBack::Lost),
            (&unleased, TakenBack::Lost),
            (&dead, TakenBack::Requeued),
            // Read before the renewal: its lease is no longer the stored one.
            (&renewed, TakenBack::Lost),
        ] {
            assert_eq!(
                take_back(&meta, &store, task, now, 3, TTL).await.unwrap(),
                expected,
                "{}",
                task.id
            );
        }
        for task in [&live, &unleased, &renewed] {
            let stored = meta.get_task(&task.id).await.unwrap().unwrap();
            assert_eq!(stored.status, TaskStatus::Processing, "{}", task.id);
        }
        let back = meta.get_task(&dead.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.lease), (TaskStatus::Pending, None));
    }

    /// A running import's lease is renewed while it runs; once another node takes the task
    /// back the next renewal finds it lost, and the run is told to stop.
    #[tokio::test]
    async fn test_hold_fence_renews_a_task_lease_then_stops_the_run_when_taken_back() {
        let meta: Arc<dyn MetaStore> = Arc::new(MemoryMeta::new());
        let start = imports::now();
        let task = processing(7, PULL_IMPORT, Some(("node-a", start)));
        meta.put_task(&task).await.unwrap();
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let fence = LeaseFence::task(
            Arc::clone(&meta),
            task.id.clone(),
            "node-a".to_owned(),
            crate::config::MIN_LEASE_SECS,
        );
        let (mut cancel, lost) = hold_fence(fence, shutdown);
        let until = async || {
            let stored = meta.get_task(&task.id).await.unwrap().unwrap();
            stored.lease.map(|l| l.until).unwrap_or_default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while until().await <= start {
            assert!(std::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!*cancel.borrow() && !lost.load(Ordering::SeqCst));
        let read = meta.get_task(&task.id).await.unwrap().unwrap();
        let mut back = taken_back(&read, 3, TTL);
        back.lease = None;
        assert!(meta.take_back(&back, read.lease.as_ref()).await.unwrap());
        tokio::time::timeout(Duration::from_secs(10), cancel.wait_for(|stop| *stop))
            .await
            .expect("the run is told to stop")
            .unwrap();
        assert!(lost.load(Ordering::SeqCst));
    }

    /// The sweep of a shared store takes back exactly the tasks whose lease ran out; an
    /// embedded store's sweep touches nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_sweep_once_takes_back_only_expired_leases() {
        let (_dir, store) = scratch_store();
        let cluster = PgCluster::start();
        let meta = PgMeta::open(&cluster.database("sweep"), 2).await.unwrap();
        let live = processing(8, PULL_IMPORT, Some(("node-b", 1_000)));
        let dead_pull = processing(9, PULL_IMPORT, Some(("node-c", 100)));
        let dead_interop = processing(10, imports::API_IMAGE_IMPORT, Some(("node-c", 100)));
        for task in [&live, &dead_pull, &dead_interop] {
            meta.put_task(task).await.unwrap();
        }
        let requeued = sweep_once(&meta, &store, 500, 3, TTL).await.unwrap();
        assert_eq!(requeued, [dead_pull.id.as_str()]);
        let status = async |t: &TaskRecord| meta.get_task(&t.id).await.unwrap().unwrap().status;
        assert_eq!(status(&live).await, TaskStatus::Processing);
        assert_eq!(status(&dead_pull).await, TaskStatus::Pending);
        assert_eq!(status(&dead_interop).await, TaskStatus::Failure);
        assert_eq!(
            sweep_once(&meta, &store, 500, 3, TTL).await.unwrap(),
            Vec::<String>::new()
        );

        let embedded = MemoryMeta::new();
        embedded.put_task(&dead_pull).await.unwrap();
        assert!(sweep_once(&embedded, &store, 500, 3, TTL)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            status_of(&embedded, &dead_pull).await,
            TaskStatus::Processing
        );
    }

    async fn status_of(meta: &dyn MetaStore, task: &TaskRecord) -> TaskStatus {
        meta.get_task(&task.id).await.unwrap().unwrap().status
    }
}
