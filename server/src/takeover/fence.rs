//! Self-fencing (issue #13): an import or upload makes its image visible in the store only
//! once it has just renewed its lease. A node cut off from the database keeps working while
//! its renewals fail; once its lease runs out another node may take the work back and write
//! the same object key (a `web-download` or a body upload writes `images/<image id>`). The
//! holder therefore renews right before the store commit ([`LeaseFence`], the pipeline's
//! [`Fence`]) and commits only if the renewal succeeded quickly enough to leave most of a
//! lease for the commit (one short request: everything else is sent before); otherwise its
//! own unfinished upload is aborted and the key is left alone.
//!
//! Each renewal also writes what the holder has charged to its project's `image_size_total`
//! so far ([`LeaseFence::charging`]), so that the other nodes count it; and a holder whose
//! project has that limit on a shared store reads back after each renewal what the other
//! nodes' imports of the project charged ([`LeaseFence::watching`]), so that its own charges
//! are checked against theirs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_pipeline::ingest::Fence;
use sluice_pipeline::store::BoxFuture;

use super::writers::WRITTEN;
use crate::executor::Executor;
use crate::imports;
use crate::meta::writer::{self, WriterLease};
use crate::meta::{MetaError, MetaStore, Timestamp, Transition};
use crate::staging::Ledger;

/// The lease a holder renews: a task's (imports) or an image's writer lease (body uploads).
#[derive(Clone, Debug)]
enum Held {
    /// Task `id`, held by `node`.
    Task { id: String, node: String },
    /// The writer lease `lease` on image `image_id`.
    Writer {
        image_id: String,
        lease: WriterLease,
    },
}

/// A holder's lease, renewed on demand: by the renewal loop ([`super::hold_fence`]) and right
/// before a store commit (its [`Fence`] implementation).
#[derive(Clone)]
pub struct LeaseFence {
    meta: Arc<dyn MetaStore>,
    held: Held,
    lease_secs: u64,
    /// Where the holder's charge is counted (by its task or image id), if it charges any.
    executor: Option<Executor>,
    /// What the renewal loop reads back.
    watched: Watch,
}

/// What a holder's renewal loop reads back from the shared store after each renewal, for the
/// checks of its own charges ([`LeaseFence::watching`]).
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// The project whose other nodes' charges (`image_size_total`) go to the executor of
    /// [`LeaseFence::charging`].
    pub charges: Option<String>,
    /// The project whose other nodes' stages (`image_stage_total`) go to this ledger.
    pub stages: Option<(String, Arc<Ledger>)>,
}

impl std::fmt::Debug for LeaseFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseFence")
            .field("held", &self.held)
            .field("lease_secs", &self.lease_secs)
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl LeaseFence {
    /// The lease of task `id` held by `node`, lasting `lease_secs` from each renewal.
    pub fn task(meta: Arc<dyn MetaStore>, id: String, node: String, lease_secs: u64) -> Self {
        LeaseFence {
            meta,
            held: Held::Task { id, node },
            lease_secs,
            executor: None,
            watched: Watch::default(),
        }
    }

    /// The writer lease `lease` on image `image_id`, lasting `lease_secs` from each renewal.
    pub fn writer(
        meta: Arc<dyn MetaStore>,
        image_id: String,
        lease: WriterLease,
        lease_secs: u64,
    ) -> Self {
        LeaseFence {
            meta,
            held: Held::Writer { image_id, lease },
            lease_secs,
            executor: None,
            watched: Watch::default(),
        }
    }

    /// This fence with each renewal writing the bytes the holder has charged so far, as
    /// `executor` counts them for its task id (imports) or image id (uploads).
    #[must_use]
    pub fn charging(mut self, executor: &Executor) -> Self {
        self.executor = Some(executor.clone());
        self
    }

    /// This fence with the renewal loop reading back, after each renewal, what `watch` names:
    /// given on a shared store for the limits a project has (see [`crate::quota::watch`]).
    #[must_use]
    pub fn watching(mut self, watch: Watch) -> Self {
        self.watched = watch;
        self
    }

    /// The holder's id in the executor: its task's or its image's.
    fn id(&self) -> &str {
        match &self.held {
            Held::Task { id, .. } => id,
            Held::Writer { image_id, .. } => image_id,
        }
    }

    /// The holder's node.
    fn node(&self) -> &str {
        match &self.held {
            Held::Task { node, .. } => node,
            Held::Writer { lease, .. } => &lease.node,
        }
    }

    /// Reads what the other nodes' imports and stages of the watched projects hold and hands
    /// it to the executor and the ledger ([`LeaseFence::watching`]); a read that fails keeps
    /// the last figure.
    pub async fn read_others(&self) {
        if let (Some(executor), Some(project)) = (&self.executor, &self.watched.charges) {
            match self.meta.charged_elsewhere(project, self.node()).await {
                Ok(bytes) => executor.set_charged_elsewhere(project, bytes),
                Err(e) => {
                    tracing::warn!(lease = %self.name(), error = %e, "reading other nodes' charges failed")
                }
            }
        }
        if let Some((project, ledger)) = &self.watched.stages {
            match self.meta.staged_elsewhere(project, self.node()).await {
                Ok(bytes) => ledger.set_elsewhere(project, bytes),
                Err(e) => {
                    tracing::warn!(lease = %self.name(), error = %e, "reading other nodes' stages failed")
                }
            }
        }
    }

    /// Seconds the lease lasts from each renewal.
    pub fn lease_secs(&self) -> u64 {
        self.lease_secs
    }

    /// The lease's name in logs (`task <id>`, `image <id>`).
    pub fn name(&self) -> String {
        match &self.held {
            Held::Task { id, .. } => format!("task {id}"),
            Held::Writer { image_id, .. } => format!("image {image_id}"),
        }
    }

    /// Extends the lease to `until`; `Ok(false)` when it is no longer held (taken back,
    /// finished or deleted).
    ///
    /// # Errors
    /// A metadata error (the database is away): nothing is proved.
    pub async fn renew(&self, until: Timestamp) -> Result<bool, MetaError> {
        let charged = self.executor.as_ref().map_or(0, |e| e.charged(self.id()));
        match &self.held {
            Held::Task { id, node } => self.meta.renew_lease(id, node, until, charged).await,
            Held::Writer { image_id, lease } => {
                let renewed = self
                    .meta
                    .transition_image(image_id, &WRITTEN, &mut |image| {
                        writer::renew(image, lease, until, charged)
                    })
                    .await?;
                Ok(matches!(renewed, Transition::Done(_)))
            }
        }
    }

    /// Longest a renewal before a commit may take: a third of a lease, which leaves the
    /// commit (one request) at least the rest of the lease just renewed, less a second of
    /// timestamp rounding.
    fn renewal_bound(&self) -> Duration {
        Duration::from_secs((self.lease_secs / 3).max(1))
    }
}

impl Fence for LeaseFence {
    fn confirm(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let started = Instant::now();
            let secs = i64::try_from(self.lease_secs).unwrap_or(i64::MAX);
            let until = imports::now().saturating_add(secs);
            let refused = match self.renew(until).await {
                Ok(true) if started.elapsed() <= self.renewal_bound() => return Ok(()),
                Ok(true) => format!(
                    "renewing its lease took {:.1} s, too long to leave time for the commit",
                    started.elapsed().as_secs_f64()
                ),
                Ok(false) => "its lease was lost: another node took the work back".to_owned(),
                Err(e) => format!("its lease could not be renewed ({e})"),
            };
            tracing::warn!(lease = %self.name(), %refused, "store commit refused: nothing made visible");
            Err(format!(
                "import interrupted before its commit: {refused}; nothing was stored"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_formats::{Format, Limits};
    use sluice_pipeline::ingest::{ingest_as, IngestRequest};
    use sluice_pipeline::source::MemorySource;
    use sluice_pipeline::store::s3::{garage, MIN_PART_SIZE};
    use sluice_pipeline::store::space::Reserve;
    use sluice_pipeline::store::{Access, S3Store, Store};
    use sluice_pipeline::{IngestError, Progress};
    use tokio::sync::watch;

    use super::*;
    use crate::meta::postgres::PgMeta;
    use crate::meta::testing_pg::PgCluster;
    use crate::meta::{sample_image, sample_task, ImageStatus, TaskLease, TaskStatus};
    use crate::takeover::{sweep_once, sweep_writers_once, writer_lease};

    const LEASE_SECS: u64 = crate::config::MIN_LEASE_SECS;

    /// An image store in a temporary directory, for sweeps that find nothing to remove.
    fn scratch_store() -> (tempfile::TempDir, sluice_pipeline::store::LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = sluice_pipeline::store::LocalStore::open(dir.path()).unwrap();
        (dir, store)
    }

    async fn pg(cluster: &PgCluster, name: &str) -> Arc<dyn MetaStore> {
        Arc::new(PgMeta::open(&cluster.database(name), 2).await.unwrap())
    }

    /// A task `processing` under `node`'s lease ending at `until`.
    fn leased_task(n: u32, node: &str, until: Timestamp) -> crate::meta::TaskRecord {
        let mut task = sample_task(&format!("00000000-0000-4000-8000-{n:012}"));
        task.task_type = "import".to_owned();
        task.status = TaskStatus::Processing;
        task.attempts = 1;
        task.lease = Some(TaskLease {
            node: node.to_owned(),
            until,
            charged: 0,
        });
        task
    }

    /// The holder of a task lease that ran out and was taken back by another node's sweep
    /// is refused its commit; one whose lease ran out but was not taken back yet still holds
    /// it, renews it before the commit (a take-back read before that renewal then loses), and
    /// commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_lease_fence_task_taken_back_refuses_commit_unclaimed_renews() {
        let (_dir, store) = scratch_store();
        let cluster = PgCluster::start();
        let meta = pg(&cluster, "fence_task").await;
        let taken = leased_task(1, "node-a", 100);
        let late = leased_task(2, "node-a", 100);
        for task in [&taken, &late] {
            meta.put_task(task).await.unwrap();
        }
        let fence = |t: &crate::meta::TaskRecord| {
            LeaseFence::task(Arc::clone(&meta), t.id.clone(), "node-a".into(), LEASE_SECS)
        };
        let late_fence = fence(&late);
        late_fence.confirm().await.expect("still held: renewed");
        let renewed = meta.get_task(&late.id).await.unwrap().unwrap();
        assert!(renewed.lease.unwrap().until > imports::now());

        let requeued = sweep_once(meta.as_ref(), &store, imports::now(), 3, 3600)
            .await
            .unwrap();
        assert_eq!(requeued, [taken.id.as_str()], "the renewed one stays");
        let refused = fence(&taken).confirm().await.unwrap_err();
        assert!(refused.contains("lease was lost"), "{refused}");
        let other = LeaseFence::task(Arc::clone(&meta), late.id.clone(), "node-b".into(), 3);
        assert!(other.confirm().await.is_err(), "another node's lease");
    }

    /// A body upload whose writer lease was taken back (the image returned to `queued` by a
    /// sweep) is refused its commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_lease_fence_writer_taken_back_refuses_commit() {
        let cluster = PgCluster::start();
        let meta = pg(&cluster, "fence_writer").await;
        let mut image = sample_image("00000000-0000-4000-8000-000000000003");
        image.status = ImageStatus::Saving;
        image.forget_data();
        let lease = writer_lease("node-a", 0, 100);
        image.writer = Some(lease.clone());
        meta.put_image(&image).await.unwrap();
        let fence = LeaseFence::writer(Arc::clone(&meta), image.id.clone(), lease, LEASE_SECS);
        let (_dir, store) = scratch_store();
        assert_eq!(
            sweep_writers_once(meta.as_ref(), &store, "node-s", LEASE_SECS, imports::now())
                .await
                .unwrap(),
            [image.id.as_str()]
        );
        let refused = fence.confirm().await.unwrap_err();
        assert!(refused.contains("lease was lost"), "{refused}");
    }

    /// The case the fence exists for: node A's lease ran out and node B took the
    /// `web-download` back and is writing the same key. A's ingest, every byte sent, is
    /// refused at its commit: it aborts its own upload, leaves B's alone and makes no
    /// object; B's upload then completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_lease_fence_lost_lease_aborts_own_upload_and_spares_the_taker() {
        let cluster = PgCluster::start();
        let meta = pg(&cluster, "fence_ingest").await;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut config = garage::shared().config();
        config.prefix = format!("fence-{}/", uuid::Uuid::new_v4());
        let store_a = S3Store::open(config.clone(), dir_a.path(), Reserve::Bytes(0)).unwrap();
        let store_b = S3Store::open(config, dir_b.path(), Reserve::Bytes(0)).unwrap();
        let task = leased_task(4, "node-a", 100);
        meta.put_task(&task).await.unwrap();
        sweep_once(meta.as_ref(), &store_b, imports::now(), 3, 3600)
            .await
            .unwrap();
        let image_id = "00000000-0000-4000-8000-0000000000aa";
        let data = vec![7u8; 2 * MIN_PART_SIZE + 5];
        let mut taker = store_b.begin(image_id, Access::Append).unwrap();
        taker.append(&data).unwrap();

        let fence = LeaseFence::task(Arc::clone(&meta), task.id.clone(), "node-a".into(), 3);
        let request =
            IngestRequest::new(image_id, Format::Raw, Limits::default()).fenced_by(&fence);
        let source = MemorySource::new(Bytes::from(data.clone()), 1 << 20);
        let (_tx, cancel) = watch::channel(false);
        let progress = Progress::default();
        let outcome = ingest_as(source, request, &store_a, &progress, cancel).await;
        assert!(
            matches!(&outcome, Err(IngestError::Fenced(m)) if m.contains("lease was lost")),
            "{outcome:?}"
        );
        assert_eq!(outcome.unwrap_err().reason_code(), "interrupted");
        assert!(store_a.open(image_id).await.unwrap().is_none(), "no object");
        assert_eq!(store_a.unfinished_uploads().unwrap().len(), 1, "B's only");
        taker.commit().expect("the taker's upload was left alone");
        let stored = store_b.open(image_id).await.unwrap().expect("B's object");
        assert_eq!(stored.size(), data.len() as u64);
        assert!(store_b.unfinished_uploads().unwrap().is_empty());
        store_b.delete(image_id).unwrap();
    }
}
