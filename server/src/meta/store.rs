//! The [`MetaStore`] trait: every call the service makes on its metadata, whichever store
//! holds it.

use super::writer;
use super::{
    AddMember, Decision, ImageQuery, ImageRecord, ImageStatus, MemberRecord, MetaError,
    ProjectUsage, QueuedTasks, TaskLease, TaskQuery, TaskRecord, TaskSummary, Timestamp,
    Transition,
};

/// The metadata store. Implementations are cheap to share (`Arc<dyn MetaStore>`); every call
/// is async (a network round trip for PostgreSQL; the embedded stores run theirs inline, see
/// `rocks/store.rs`). Closures passed in (`transition_image`'s change, `scan_images`'s visit)
/// are synchronous and run inside the call, between its read and its write.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces a task (one atomic write).
    async fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError>;
    /// Reads a task.
    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError>;
    /// Removes a task (expiry).
    async fn delete_task(&self, id: &str) -> Result<(), MetaError>;
    /// The compare-and-swap of a task's status: writes `task` if the stored task with its id
    /// may become `task.status` ([`TaskStatus::can_become`](super::TaskStatus::can_become)), atomically with every other
    /// write of that id, so two writers (a worker and a sweep) cannot overwrite each other.
    ///
    /// # Errors
    /// [`MetaError::TaskRefused`] when the task is missing or its status may not become
    /// `task.status` (nothing written); a backend, decoding or full-volume error.
    async fn transition_task(&self, task: &TaskRecord) -> Result<(), MetaError>;
    /// Writes a task and a new image in one atomic batch (an import's success); the task's
    /// status change is checked as [`MetaStore::transition_task`]'s.
    ///
    /// # Errors
    /// As [`MetaStore::transition_task`].
    async fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError>;
    /// [`MetaStore::transition_image`] and [`MetaStore::transition_task`] in one atomic write
    /// (an interoperable import's end): the task is checked first, then the image; when the
    /// image's change writes, `task` is written in the same batch, else neither is.
    ///
    /// # Errors
    /// As the two; nothing is written on any error.
    async fn transition_image_with_task(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
        task: &TaskRecord,
    ) -> Result<Transition, MetaError>;
    /// Inserts or replaces an image, whatever is stored (imports, recovery, tests). Changes of
    /// existing images go through [`MetaStore::transition_image`].
    async fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError>;
    /// Inserts `image` unless an image with its id exists (`POST /v2/images` with a
    /// caller-chosen id); returns whether it was inserted. Atomic with every other write of
    /// that id.
    async fn insert_image(&self, image: &ImageRecord) -> Result<bool, MetaError>;
    /// The one compare-and-swap of an image: atomically reads image `id`, checks that its
    /// status is one of `expected`, lets `change` edit a copy and decide, and writes (or
    /// removes) the record with its index entries. Writers of one id are serialised, so two
    /// racing transitions never both see the old status: the second sees the first's result.
    /// `change` is called at most once, only when the status is expected.
    ///
    /// # Errors
    /// [`MetaError::InvalidChange`] when `change` moved the status where
    /// [`ImageStatus::can_become`] forbids, or changed the id (nothing written); a backend,
    /// decoding or full-volume error.
    async fn transition_image(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
    ) -> Result<Transition, MetaError>;
    /// Reads an image.
    async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError>;
    /// Removes an image record.
    async fn delete_image(&self, id: &str) -> Result<(), MetaError>;

    /// One page of tasks, from the indexes ([`query`](super::query) says what it costs).
    async fn list_task_page(&self, query: &TaskQuery<'_>) -> Result<Vec<TaskSummary>, MetaError>;
    /// One page of images, from the indexes ([`query`](super::query) says what it costs).
    async fn list_image_page(&self, query: &ImageQuery<'_>) -> Result<Vec<ImageRecord>, MetaError>;
    /// The ids of tasks whose `expires_at` is at or before `now`, soonest first, at most
    /// `max` (reads only those entries of the expiry index).
    async fn expired_tasks(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError>;
    /// The ids of `pending` and `processing` tasks, oldest first (start-up recovery).
    async fn unfinished_tasks(&self) -> Result<Vec<String>, MetaError>;
    /// Claims a `pending` task for `lease.node`: moves it to `processing` holding `lease`,
    /// counts the attempt, sets `updated_at` to `now`, and returns it as stored; `None` when
    /// no task may be claimed. Which task ([`lease::ClaimChoice`](super::lease::ClaimChoice)): among the pending tasks
    /// not pinned to another node ([`TaskRecord::pinned_node`]), the oldest of the project
    /// with the fewest `processing` tasks (of every node), skipping projects that have
    /// `per_project` processing already; ties go to the oldest task. Claims are serialised
    /// (a mutex; PostgreSQL: an advisory lock), so the cap holds under racing nodes, and
    /// each claim is atomic with every other write of the task, so of claimers racing
    /// (threads or nodes) each task goes to exactly one.
    ///
    /// The embedded stores answer by reading every unfinished task (the service does not
    /// call it there: one process owns an embedded store and queues in memory); PostgreSQL
    /// reads the partial indexes of pending and processing tasks.
    ///
    /// # Errors
    /// A backend, decoding or full-volume error (nothing claimed).
    async fn claim_task(
        &self,
        lease: &TaskLease,
        per_project: u64,
        now: Timestamp,
    ) -> Result<Option<TaskRecord>, MetaError>;
    /// Extends the lease of task `id` to `until`, with the bytes its run has `charged` so
    /// far ([`TaskLease::charged`]), if `node` holds it and the task is still `processing`;
    /// `false` (nothing written) when the lease was lost: another node holds it, the task
    /// reached a final status or went back to `pending`, or it is gone.
    ///
    /// # Errors
    /// A backend, decoding or full-volume error.
    async fn renew_lease(
        &self,
        id: &str,
        node: &str,
        until: Timestamp,
        charged: u64,
    ) -> Result<bool, MetaError>;
    /// Takes a `processing` task back from a holder that is provably dead: writes `task`
    /// (the same task, `pending` to run again or `failure`, without a lease) if the stored
    /// task is `processing` and its lease is still exactly `expired` (as read; `None` for a
    /// task written without one). A renewal or a new claim since makes it refuse: `false`,
    /// nothing written. The one way back from `processing` to `pending`.
    ///
    /// # Errors
    /// A backend, decoding or full-volume error.
    async fn take_back(
        &self,
        task: &TaskRecord,
        expired: Option<&TaskLease>,
    ) -> Result<bool, MetaError>;
    /// Whether other processes share this store (PostgreSQL). An embedded store is opened by
    /// one process only (RocksDB's lock on its directory), so every lease in it is that
    /// process's, and after a restart every `processing` task in it is provably dead. A
    /// store is shared exactly when it has a [`MetaStore::deployment`].
    fn is_shared(&self) -> bool {
        self.deployment().is_some()
    }
    /// The id that tells this shared store from every other (PostgreSQL: a UUID drawn once
    /// per database), for the image store's claim (`Store::claim`); `None` for an embedded
    /// store, which is its node's alone.
    fn deployment(&self) -> Option<&str> {
        None
    }
    /// The ids of `processing` tasks whose lease ended at or before `now`, soonest first, at
    /// most `max`: one range of a lease index (only `processing` tasks with a lease are in
    /// it), never a scan of the tasks.
    ///
    /// # Errors
    /// A backend error, or an index entry that does not decode.
    async fn expired_leases(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError>;
    /// The ids of images being written (`saving`, `uploading`) whose writer lease
    /// ([`ImageRecord::writer`]) ended at or before `now`, soonest first, at most `max`.
    ///
    /// This default reads every image (the embedded stores, where the service never asks:
    /// every writer in them is this live process's, and start-up recovery handles a crash);
    /// PostgreSQL reads one range of a partial index of the leased images.
    ///
    /// # Errors
    /// A backend or decoding error.
    async fn expired_writers(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        let mut ended = Vec::new();
        self.scan_images(None, &mut |image| {
            if let Some(until) = writer::indexed_until(&image).filter(|until| *until <= now) {
                ended.push((until, image.id));
            }
            Ok(())
        })
        .await?;
        ended.sort_unstable();
        ended.truncate(max);
        Ok(ended.into_iter().map(|(_, id)| id).collect())
    }
    /// Images of `owner` being written now, on any node (`saving` or `uploading` under a
    /// writer lease: uploads and stages in flight), counted up to `max`: what a project's
    /// `image_count_uploading` counts beside its tasks on a shared store.
    ///
    /// # Errors
    /// A backend or decoding error.
    async fn writing_images(&self, owner: &str, max: u64) -> Result<u64, MetaError> {
        let mut n = 0u64;
        self.scan_images(Some(owner), &mut |image| {
            if writer::indexed_until(&image).is_some() {
                n = n.saturating_add(1).min(max);
            }
            Ok(())
        })
        .await?;
        Ok(n)
    }
    /// Records that `node` is alive until `until` (its sweep renews it every
    /// `sweep_interval_secs`): what tells the stages of a dead node from a live one's
    /// ([`MetaStore::dead_stages`]). A shared store also forgets the nodes whose heartbeat
    /// ended [`FORGET_NODES_AFTER`](crate::meta::FORGET_NODES_AFTER) before `until` and that hold no stage (a node that comes
    /// back beats again). An embedded store has one node, the live process that opened it:
    /// nothing to record.
    ///
    /// # Errors
    /// A backend error.
    async fn beat(&self, _node: &str, _until: Timestamp) -> Result<(), MetaError> {
        Ok(())
    }
    /// The ids of `uploading` images whose complete stage ([`ImageRecord::staged_on`]) is on
    /// a node whose heartbeat ([`MetaStore::beat`]) ended at or before `now`, at most `max`.
    /// A node that never beat is not known to be dead. An embedded store's one node is alive:
    /// none.
    ///
    /// # Errors
    /// A backend error.
    async fn dead_stages(&self, _now: Timestamp, _max: usize) -> Result<Vec<String>, MetaError> {
        Ok(Vec::new())
    }
    /// The bytes `owner` has staged on other nodes than `node`, for its `image_stage_total`:
    /// its stages streaming in under another node's writer lease (what they received at their
    /// last renewal, [`WriterLease::charged`](super::WriterLease::charged)) and its complete
    /// stages on another node ([`ImageRecord::staged_bytes`]).
    ///
    /// This default reads the project's images (the embedded stores, where the service does
    /// not ask); PostgreSQL sums the rows of two partial indexes.
    ///
    /// # Errors
    /// A backend or decoding error.
    async fn staged_elsewhere(&self, owner: &str, node: &str) -> Result<u64, MetaError> {
        let mut sum = 0u64;
        self.scan_images(Some(owner), &mut |image| {
            if image.status != super::ImageStatus::Uploading {
                return Ok(());
            }
            let bytes = match (&image.writer, &image.staged_on) {
                (Some(lease), _) if lease.node != node => lease.charged,
                (None, Some(on)) if on != node => image.staged_bytes,
                _ => 0,
            };
            sum = sum.saturating_add(bytes);
            Ok(())
        })
        .await?;
        Ok(sum)
    }
    /// The bytes charged to `owner`'s `image_size_total` by imports and uploads running on
    /// other nodes than `node`: the sum of the charges in the leases of its `processing`
    /// tasks and of its images being written ([`TaskLease::charged`],
    /// [`WriterLease::charged`](super::WriterLease::charged)), as of their last renewals.
    ///
    /// This default reads every unfinished task and the project's images (the embedded
    /// stores, where the service does not ask: every import in them is this process's);
    /// PostgreSQL sums the rows of two partial indexes.
    ///
    /// # Errors
    /// A backend or decoding error.
    async fn charged_elsewhere(&self, owner: &str, node: &str) -> Result<u64, MetaError> {
        let mut sum = 0u64;
        for id in self.unfinished_tasks().await? {
            let Some(task) = self.get_task(&id).await? else {
                continue;
            };
            match &task.lease {
                Some(lease)
                    if task.owner == owner
                        && task.status == super::TaskStatus::Processing
                        && lease.node != node =>
                {
                    sum = sum.saturating_add(lease.charged);
                }
                _ => {}
            }
        }
        self.scan_images(Some(owner), &mut |image| {
            if let Some(lease) = image.writer.as_ref() {
                if writer::indexed_until(&image).is_some() && lease.node != node {
                    sum = sum.saturating_add(lease.charged);
                }
            }
            Ok(())
        })
        .await?;
        Ok(sum)
    }
    /// The tasks of image `image_id` ([`index::task_image_id`](super::index::task_image_id)), oldest first: one range of
    /// the tasks-by-image index, so O(tasks of that image).
    async fn image_tasks(&self, image_id: &str) -> Result<Vec<TaskRecord>, MetaError>;
    /// Calls `visit` with every image of `owner` (a range of the owner index), or with every
    /// image when `owner` is `None`, by creation; stops at `visit`'s first error.
    async fn scan_images(
        &self,
        owner: Option<&str>,
        visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
    ) -> Result<(), MetaError>;
    /// Adds `member` unless its project already is a member of the image or the image has
    /// `max` members already; atomic with the other member writes of the image.
    ///
    /// # Errors
    /// A backend error ([`MetaError::StorageFull`] on a full volume).
    async fn add_member(&self, member: &MemberRecord, max: usize) -> Result<AddMember, MetaError>;
    /// Overwrites an existing member (its status); `false` when there is no such member.
    ///
    /// # Errors
    /// A backend error.
    async fn update_member(&self, member: &MemberRecord) -> Result<bool, MetaError>;
    /// Member `member` of image `image`, if any.
    ///
    /// # Errors
    /// A backend error, or a record that does not decode.
    async fn get_member(
        &self,
        image: &str,
        member: &str,
    ) -> Result<Option<MemberRecord>, MetaError>;
    /// The members of `image`, by member id (one key range).
    ///
    /// # Errors
    /// A backend error, or a record that does not decode.
    async fn image_members(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError>;
    /// The memberships of project `member`, by image id (one key range of the member index).
    ///
    /// # Errors
    /// A backend error, or a record that does not decode.
    async fn member_images(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError>;
    /// Removes a member and its index entry; `false` when there was none.
    ///
    /// # Errors
    /// A backend error.
    async fn delete_member(&self, image: &str, member: &str) -> Result<bool, MetaError>;
    /// What the images owned by `owner` hold: a range of the owner index
    /// ([`MetaStore::scan_images`]).
    async fn project_usage(&self, owner: &str) -> Result<ProjectUsage, MetaError> {
        let mut usage = ProjectUsage::default();
        self.scan_images(Some(owner), &mut |image| {
            usage.images = usage.images.saturating_add(1);
            usage.image_bytes = usage.image_bytes.saturating_add(image.size.unwrap_or(0));
            Ok(())
        })
        .await?;
        Ok(usage)
    }
    /// What waits and runs, for the admission caps on a shared store: the `pending` tasks of
    /// every project, and `owner`'s `pending` and `processing` tasks (of every node), each
    /// counted up to `max` (a count stops at the cap it is checked against).
    ///
    /// This default reads every unfinished task (the embedded stores, where the service does
    /// not ask: their queue is in memory); PostgreSQL counts from its partial indexes.
    ///
    /// # Errors
    /// A backend or decoding error.
    async fn queued_tasks(&self, owner: &str, max: u64) -> Result<QueuedTasks, MetaError> {
        let mut counts = QueuedTasks::default();
        for id in self.unfinished_tasks().await? {
            if let Some(task) = self.get_task(&id).await? {
                counts.count(&task, owner, max);
            }
        }
        Ok(counts)
    }
}
