//! `sluice serve`: open the data directory, recover from any crash, start the workers, the
//! expiry sweeper and the API, and shut all of it down gracefully on SIGTERM/SIGINT.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_pipeline::store::space::StorageState;
use sluice_pipeline::store::Store;

use crate::config::{Config, MetaKind};
use crate::executor::Executor;
use crate::imports;
use crate::meta::guarded::GuardedMeta;
use crate::meta::postgres::PgMeta;
use crate::meta::{
    Decision, ImageStatus, MetaError, MetaStore, TaskRecord, TaskStatus, Transition,
};
use crate::staging::StagingArea;
use crate::state::AppState;
use crate::takeover::{self, TakenBack};

mod sweep;

use sweep::sweep_expired;

/// How often the data volume's free space is checked in the background: a read-only
/// metadata store becomes writable, and recovery writes refused at start-up are made, at
/// most this long after space is freed.
const STORAGE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Runs the service until a termination signal.
///
/// # Errors
/// When the data directory, the metadata store or the listen address cannot be opened.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    config.validate()?;
    // The token file and `auth.keystone` are checked before anything is opened or listens.
    crate::api::Authenticator::from_config(&config.auth).context("auth configuration")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    config.node_id = Some(takeover::node_id(&config));
    let store: Arc<dyn Store> = crate::config::store::open(
        &config.store,
        &config.data_dir,
        config.disk_reserve,
        config.lease_secs,
    )
    .context("opening the image store")?;
    // Partial imports go first: on a full volume they are the room that opening the
    // metadata store read-write needs.
    sweep_tmp(store.as_ref())?;
    let (meta, guarded) = open_meta(&config, &store).await?;
    store
        .claim(&store_owner(&config, meta.as_ref()))
        .context("claiming the image store")?;
    let staging = Arc::new(
        StagingArea::open(&config.data_dir, config.disk_reserve)
            .context("opening the staging area")?,
    );
    if let Some(guarded) = &guarded {
        crate::observe::health::watch_meta(Arc::clone(guarded));
    }
    // On a shared store the queue is the store's pending tasks, claimed by every node.
    let executor = if meta.is_shared() {
        Executor::claiming(config.per_project_imports)
    } else {
        Executor::new(config.queue_capacity, config.per_project_imports)
    };
    let state = AppState {
        config: Arc::new(config),
        meta,
        store,
        staging,
        executor: executor.clone(),
        admissions: Default::default(),
    };
    let recovery = recover(&state)
        .await
        .context("recovering from the previous run")?;

    let listener = tokio::net::TcpListener::bind(state.config.bind)
        .await
        .with_context(|| format!("binding {}", state.config.bind))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %state.config.data_dir.display(),
        auth = ?state.config.auth.mode,
        "sluice listening"
    );
    let workers = start_workers(&state);
    let watcher = tokio::spawn(watch_storage(state.clone(), guarded, recovery));
    let sweeper = tokio::spawn(sweep_expired(state.clone()));

    let stop = {
        let executor = executor.clone();
        async move {
            shutdown_signal().await;
            // Before the connections drain: an upload in flight then stops at once and its
            // client gets the answer (503, Retry-After) rather than a closed connection.
            tracing::info!("shutting down: cancelling running imports and uploads");
            executor.shutdown();
        }
    };
    let observer = match state.config.observe.bind {
        Some(addr) => Some(crate::observe::spawn_server(addr, state.clone()).await?),
        None => None,
    };
    crate::api::serve(listener, state.clone(), stop).await?;
    if let Some(observer) = observer {
        observer.abort();
    }
    sweeper.abort();
    watcher.abort();
    for worker in workers {
        let _ = worker.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the import workers: claiming from the shared store (PostgreSQL), or taking from
/// the in-memory queue (embedded store). Returns the handles to await after shutdown.
fn start_workers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let (workers, executor) = (state.config.workers, state.executor.clone());
    if !state.meta.is_shared() {
        let state = state.clone();
        return executor.start(workers, move |task_id: String, progress, cancel| {
            let state = state.clone();
            async move {
                let started = std::time::Instant::now();
                let stored = imports::run(&state, &task_id, Arc::clone(&progress), cancel).await;
                crate::observe::count_import(&state, &task_id, &progress, stored, started).await;
                stored
            }
        });
    }
    let interval = Duration::from_millis(state.config.claim_interval_ms);
    let claim = {
        let state = state.clone();
        move || {
            let state = state.clone();
            async move { imports::claim_next(&state).await }
        }
    };
    let state = state.clone();
    executor.start_claiming(
        workers,
        interval,
        claim,
        move |task: TaskRecord, progress, cancel| {
            let state = state.clone();
            async move {
                let started = std::time::Instant::now();
                let task_id = task.id.clone();
                let stored =
                    imports::run_claimed(&state, task, Arc::clone(&progress), cancel).await;
                crate::observe::count_import(&state, &task_id, &progress, stored, started).await;
                stored
            }
        },
    )
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Opens the configured metadata store (`[meta] kind`): RocksDB under the data volume's
/// free-space guard (returned too, for the storage watcher and the health check), or
/// PostgreSQL, migrated.
///
/// # Errors
/// When the store cannot be opened.
async fn open_meta(
    config: &Config,
    store: &Arc<dyn Store>,
) -> anyhow::Result<(Arc<dyn MetaStore>, Option<Arc<GuardedMeta>>)> {
    match config.meta.kind {
        MetaKind::Rocksdb => {
            let guarded = Arc::new(
                GuardedMeta::open(&config.data_dir.join("meta"), Arc::clone(store.space()))
                    .context("opening the metadata store")?,
            );
            Ok((guarded.clone(), Some(guarded)))
        }
        MetaKind::Postgres => {
            let pg = &config.meta.postgres;
            let url = pg.url.as_deref().unwrap_or_default();
            let meta = PgMeta::open(url, pg.pool_size)
                .await
                .context("opening the metadata store (PostgreSQL)")?;
            Ok((Arc::new(meta), None))
        }
    }
}

/// Removes partial imports left in the store (`tmp/`) by an interrupted run.
fn sweep_tmp(store: &dyn Store) -> anyhow::Result<()> {
    let swept = store.sweep()?;
    if swept > 0 {
        tracing::warn!(
            files = swept,
            "removed partial image files left by an interrupted run"
        );
    }
    Ok(())
}

/// What start-up recovery found, and what it could not write yet because the data volume
/// is full (made by the storage watcher once there is room).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Tasks still pending, to queue again in creation order.
    pub pending: Vec<String>,
    /// Tasks interrupted while processing (provably dead: [`takeover::is_dead`]) not taken
    /// back yet.
    pub interrupted: Vec<String>,
    /// Image records whose committed data is missing (`active` or `deactivated` without a
    /// file), not removed yet.
    pub dataless: Vec<String>,
    /// Images left `saving`, `uploading` or `importing` by the crash, not back to `queued`
    /// yet.
    pub unfinished_images: Vec<String>,
}

impl Recovery {
    /// Whether metadata writes are still to do.
    fn has_writes(&self) -> bool {
        !self.interrupted.is_empty()
            || !self.dataless.is_empty()
            || !self.unfinished_images.is_empty()
    }
}

/// Whom the image store belongs to ([`Store::claim`]): the nodes of one shared database, or
/// this node alone when its metadata is its own (its recovery deletes the images it has no
/// record of, so no other node may use the store).
fn store_owner(config: &Config, meta: &dyn MetaStore) -> String {
    match meta.deployment() {
        Some(id) => format!("the nodes of PostgreSQL deployment {id}"),
        None => {
            let node = config.node_id.as_deref().unwrap_or_default();
            format!("node {node}, whose metadata is its own")
        }
    }
}

/// Brings the data directory back to a consistent state after a crash or `kill -9`:
/// - partial uploads in `tmp/` are deleted (before any metadata write: on a full volume
///   they are what makes room);
/// - tasks left `processing` whose node is provably dead (every one in an embedded store;
///   in a shared one, those whose lease ended: [`takeover`]) are taken back: a pull import
///   is queued again to start from its source (up to `max_import_attempts` runs), any other
///   fails with a message saying it was interrupted;
/// - images by status: a `queued` image never had data and stays as it is; one left
///   `saving`, `uploading` or `importing` was receiving data when the service died, so it
///   goes back to `queued` (Glance's state after a failed upload or import) and whatever it
///   had written is deleted; an `active` or `deactivated` image whose data file is missing
///   lost committed data (removed from outside, or a disk fault) and its record is dropped,
///   since it could never be downloaded again;
/// - files without an image that has committed data are deleted;
/// - stages: partial ones (and data without its completion marker) are deleted; a complete
///   stage of an `uploading` image is kept, so the image stays `uploading` and importable;
///   every other stage is deleted (an `uploading` image without one goes back to `queued`).
/// - on a metadata store other nodes share, the image part is skipped: only this node's
///   stages are sorted out (`shared_stage_recovery`), since no image is provably dead at
///   start; an image whose upload or stage died with its node goes back to `queued` once its
///   writer lease runs out, by any node's periodic sweep
///   ([`takeover::sweep_writers_once`]).
///
/// Metadata writes refused because the volume is full are left in the returned
/// [`Recovery`] for [`finish_recovery`]; reads need no room, so the service still starts.
///
/// # Errors
/// When the store or the metadata cannot be read, or a write fails for another reason.
pub async fn recover(state: &AppState) -> anyhow::Result<Recovery> {
    sweep_tmp(state.store.as_ref())?;
    let cut_short = state.staging.sweep_incomplete()?;
    if cut_short > 0 {
        tracing::warn!(
            stages = cut_short,
            "removed stages cut short by an interrupted run"
        );
    }
    let sealed: HashMap<String, u64> = state
        .staging
        .sealed()?
        .into_iter()
        .map(|(id, staged)| (id, staged.size))
        .collect();
    let mut staged = HashSet::new();
    let mut recovery = Recovery::default();
    // Only unfinished tasks (an index, oldest first), never every task.
    let now = imports::now();
    for id in state.meta.unfinished_tasks().await? {
        let Some(task) = state.meta.get_task(&id).await? else {
            continue;
        };
        match task.status {
            // Only the provably dead: never another live node's import.
            TaskStatus::Processing if takeover::is_dead(state.meta.as_ref(), &task, now) => {
                recovery.interrupted.push(task.id)
            }
            TaskStatus::Processing => {}
            TaskStatus::Pending => recovery.pending.push(task.id),
            TaskStatus::Success | TaskStatus::Failure => {}
        }
    }
    if state.meta.is_shared() {
        shared_stage_recovery(state, &sealed).await?;
        finish_recovery(state, &mut recovery).await?;
        return Ok(recovery);
    }
    // One image record at a time; only ids are kept.
    let files: HashSet<String> = state.store.list_ids()?.into_iter().collect();
    let mut recorded = HashSet::new();
    state
        .meta
        .scan_images(None, &mut |image| {
            match image.status {
                ImageStatus::Queued => {}
                // A complete stage stays importable across the restart.
                ImageStatus::Uploading if sealed.contains_key(&image.id) => {
                    let size = sealed.get(&image.id).copied().unwrap_or(0);
                    state.staging.ledger().enter(&image.id, &image.owner, size);
                    staged.insert(image.id);
                }
                s if s.is_transient() => recovery.unfinished_images.push(image.id),
                _ if files.contains(&image.id) => {
                    recorded.insert(image.id);
                }
                _ => recovery.dataless.push(image.id),
            }
            Ok(())
        })
        .await?;
    for id in files.difference(&recorded) {
        tracing::warn!(image_id = %id, "removing image data without a committed record");
        state.store.delete(id)?;
    }
    for id in sealed.keys().filter(|id| !staged.contains(*id)) {
        tracing::warn!(image_id = %id, "removing staged data of an image that no longer waits for it");
        state.staging.discard(id)?;
    }
    finish_recovery(state, &mut recovery).await?;
    Ok(recovery)
}

/// Recovery's image part on a metadata store other nodes share: nothing is known to be dead.
/// An image left `saving`/`uploading`/`importing` may be another live node's upload, a
/// record without data in this node's store may have its data on another node, and an
/// object without a committed record may be one another node is committing; so no image
/// record and no image data is touched here. An image left `saving` or `uploading` by a
/// node that died goes back to `queued` once its writer lease runs out (every node's sweep:
/// [`takeover::sweep_writers_once`]); one left `importing` follows its task's lease
/// ([`takeover::sweep_once`]). Stages are
/// this node's own files: a complete one of an image still `uploading` is kept, every other
/// one is deleted, as in [`recover`].
///
/// # Errors
/// When the metadata cannot be read or a stage cannot be deleted.
async fn shared_stage_recovery(
    state: &AppState,
    sealed: &HashMap<String, u64>,
) -> anyhow::Result<()> {
    tracing::info!("metadata store shared with other nodes: unfinished images are left to the sweeps of expired leases; only this node's stages are sorted out at start");
    for (id, size) in sealed {
        match state.meta.get_image(id).await? {
            Some(image) if image.status == ImageStatus::Uploading => {
                state.staging.ledger().enter(id, &image.owner, *size);
            }
            _ => {
                tracing::warn!(image_id = %id, "removing staged data of an image that no longer waits for it");
                state.staging.discard(id)?;
            }
        }
    }
    Ok(())
}

/// Makes the metadata writes of [`recover`] still to do, keeping those the full volume
/// refuses.
///
/// # Errors
/// When a write fails for a reason other than a full volume.
pub async fn finish_recovery(state: &AppState, recovery: &mut Recovery) -> anyhow::Result<()> {
    let ttl = state.config.task_ttl();
    let mut interrupted = Vec::new();
    for id in std::mem::take(&mut recovery.interrupted) {
        let Some(task) = state.meta.get_task(&id).await? else {
            continue;
        };
        let (now, max) = (imports::now(), state.config.max_import_attempts);
        match takeover::take_back(
            state.meta.as_ref(),
            state.store.as_ref(),
            &task,
            now,
            max,
            ttl,
        )
        .await
        {
            Ok(TakenBack::Requeued) => {
                tracing::warn!(task_id = %id, attempts = task.attempts, "import interrupted by a restart: queued again, to start from its source");
                recovery.pending.push(id);
            }
            Ok(TakenBack::Interrupted) => {
                tracing::warn!(task_id = %id, "failed a task interrupted by a restart")
            }
            // Another writer moved it meanwhile: its word stands.
            Ok(TakenBack::Lost) => {}
            Err(MetaError::StorageFull(_)) => interrupted.push(id),
            Err(e) => return Err(e.into()),
        }
    }
    recovery.interrupted = interrupted;
    let mut dataless = Vec::new();
    for id in std::mem::take(&mut recovery.dataless) {
        match state.meta.delete_image(&id).await {
            Ok(()) => {
                tracing::error!(image_id = %id, "image data missing: removed its record")
            }
            Err(MetaError::StorageFull(_)) => dataless.push(id),
            Err(e) => return Err(e.into()),
        }
    }
    recovery.dataless = dataless;
    let mut unfinished = Vec::new();
    for id in std::mem::take(&mut recovery.unfinished_images) {
        match requeue_image(state.meta.as_ref(), &id).await {
            Ok(Transition::Done(image)) => {
                tracing::warn!(image_id = %id, "image back to queued: its data was still arriving when the service stopped");
                debug_assert_eq!(image.status, ImageStatus::Queued);
            }
            Ok(_) => {}
            Err(MetaError::StorageFull(_)) => unfinished.push(id),
            Err(e) => return Err(e.into()),
        }
    }
    recovery.unfinished_images = unfinished;
    if recovery.has_writes() {
        tracing::error!(
            interrupted = recovery.interrupted.len(),
            dataless = recovery.dataless.len(),
            unfinished_images = recovery.unfinished_images.len(),
            "data volume full: recovery writes deferred until space is freed"
        );
    }
    Ok(())
}

/// Returns an image left `saving`, `uploading` or `importing` to `queued`, without what
/// described its data.
///
/// # Errors
/// A metadata error.
async fn requeue_image(meta: &dyn MetaStore, id: &str) -> Result<Transition, MetaError> {
    let at = imports::now();
    meta.transition_image(
        id,
        &[
            ImageStatus::Saving,
            ImageStatus::Uploading,
            ImageStatus::Importing,
        ],
        &mut |image| {
            image.status = ImageStatus::Queued;
            image.forget_data();
            image.updated_at = at;
            Decision::Write
        },
    )
    .await
}

/// Every [`STORAGE_POLL_INTERVAL`]: reads the data volume's free space (logging changes of
/// state), makes the metadata store writable again once there is room, then finishes
/// recovery and queues the pending tasks again (in creation order) — right away when the
/// service starts with room.
async fn watch_storage(state: AppState, meta: Option<Arc<GuardedMeta>>, mut recovery: Recovery) {
    let mut tick = tokio::time::interval(STORAGE_POLL_INTERVAL);
    loop {
        tick.tick().await;
        let writable = tokio::task::spawn_blocking({
            let (space, meta) = (Arc::clone(state.store.space()), meta.clone());
            move || space.state() != StorageState::Full && meta.is_none_or(|m| m.try_writable())
        })
        .await
        .unwrap_or(false);
        if !writable {
            continue;
        }
        if recovery.has_writes() {
            if let Err(e) = finish_recovery(&state, &mut recovery).await {
                tracing::error!(error = %e, "finishing recovery failed");
            }
        }
        for task_id in std::mem::take(&mut recovery.pending) {
            match state.meta.get_task(&task_id).await {
                Ok(Some(task)) if task.status == TaskStatus::Pending => {
                    let _ = state.executor.submit(&task.id, &task.owner);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(task_id, error = %e, "cannot queue a pending task"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::memory::MemoryMeta;
    use crate::meta::{sample_image, sample_task, ImageRecord, TaskRecord, Timestamp};

    fn task(n: u32, status: TaskStatus, expires_at: Option<Timestamp>) -> TaskRecord {
        let mut task = sample_task(&format!("00000000-0000-4000-8000-{n:012}"));
        task.status = status;
        task.expires_at = expires_at;
        task
    }

    /// A state on a scratch directory with an in-memory metadata store.
    fn scratch_state(dir: &std::path::Path) -> AppState {
        let config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        AppState {
            executor: Executor::new(config.queue_capacity, config.per_project_imports),
            admissions: Default::default(),
            config: Arc::new(config),
            meta: Arc::new(MemoryMeta::new()),
            store: Arc::new(sluice_pipeline::store::LocalStore::open(dir).unwrap()),
            staging: Arc::new(StagingArea::open(dir, Default::default()).unwrap()),
        }
    }

    /// Commits `data` as image `id`'s data through the store.
    fn commit_data(state: &AppState, id: &str, data: &[u8]) {
        let mut writer = state
            .store
            .begin(id, sluice_pipeline::store::Access::Append)
            .unwrap();
        writer.append(data).unwrap();
        writer.commit().unwrap();
    }

    fn image(n: u32, status: ImageStatus) -> ImageRecord {
        let mut image = sample_image(&format!("00000000-0000-4000-8000-{n:012}"));
        image.status = status;
        image
    }

    /// After a crash, in an embedded store every `processing` task is this node's and
    /// provably dead: a pull import goes back to `pending` (queued again) to start from its
    /// source; an interoperable import (its data may have come from a stage) fails
    /// `interrupted`; a pull import out of runs fails too.
    #[tokio::test]
    async fn test_recover_processing_pull_import_requeued_others_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let state = scratch_state(dir.path());
        let mut pull = task(1, TaskStatus::Processing, None);
        pull.attempts = 1;
        let mut interop = task(2, TaskStatus::Processing, None);
        interop.task_type = imports::API_IMAGE_IMPORT.to_owned();
        let mut spent = task(3, TaskStatus::Processing, None);
        spent.attempts = state.config.max_import_attempts;
        for t in [&pull, &interop, &spent] {
            state.meta.put_task(t).await.unwrap();
        }
        let recovery = recover(&state).await.unwrap();
        assert_eq!(recovery.pending, [pull.id.clone()]);
        let get = async |t: &TaskRecord| state.meta.get_task(&t.id).await.unwrap().unwrap();
        let again = get(&pull).await;
        assert_eq!((again.status, again.attempts), (TaskStatus::Pending, 1));
        for t in [&interop, &spent] {
            let failed = get(t).await;
            assert_eq!(failed.status, TaskStatus::Failure, "{}", t.id);
            assert_eq!(failed.reason.as_deref(), Some(imports::REASON_INTERRUPTED));
        }
    }

    #[tokio::test]
    async fn test_recover_images_by_status_queued_kept_unfinished_requeued_lost_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = scratch_state(dir.path());
        let mut queued = image(1, ImageStatus::Queued);
        queued.forget_data();
        let with_file = |image: &ImageRecord| commit_data(&state, &image.id, b"data");
        // Saving whose data was committed just before the crash (file, no record update),
        // importing with nothing written, uploading: all back to queued, files gone.
        let saving = image(2, ImageStatus::Saving);
        with_file(&saving);
        let importing = image(3, ImageStatus::Importing);
        let uploading = image(4, ImageStatus::Uploading);
        let active = image(5, ImageStatus::Active);
        with_file(&active);
        let deactivated = image(6, ImageStatus::Deactivated);
        with_file(&deactivated);
        let lost = image(7, ImageStatus::Active);
        with_file(&queued);
        for image in [
            &queued,
            &saving,
            &importing,
            &uploading,
            &active,
            &deactivated,
            &lost,
        ] {
            state.meta.put_image(image).await.unwrap();
        }
        let orphan = "00000000-0000-4000-8000-000000000099";
        commit_data(&state, orphan, b"x");

        let recovery = recover(&state).await.unwrap();
        assert!(!recovery.has_writes(), "{recovery:?}");
        let get = async |image: &ImageRecord| state.meta.get_image(&image.id).await.unwrap();
        assert_eq!(get(&queued).await, Some(queued.clone()));
        for unfinished in [&saving, &importing, &uploading] {
            let now = get(unfinished).await.unwrap();
            assert_eq!(now.status, ImageStatus::Queued, "{}", unfinished.id);
            assert_eq!((now.size, now.checksum.as_deref()), (None, None));
            assert_eq!(now.name, unfinished.name);
        }
        assert_eq!(get(&active).await, Some(active.clone()));
        assert_eq!(get(&deactivated).await, Some(deactivated.clone()));
        assert_eq!(get(&lost).await, None);
        assert_eq!(
            state.store.list_ids().unwrap(),
            vec![active.id.clone(), deactivated.id.clone()]
        );
    }

    /// On a metadata store other nodes share (PostgreSQL), a restarting node touches nothing
    /// that may be another live node's: an image `saving` through another node, an active
    /// image whose data is not in this node's store, an object without a committed record
    /// (another node's commit in flight).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_recover_on_shared_meta_leaves_other_nodes_images_and_data_alone() {
        let cluster = crate::meta::testing_pg::PgCluster::start();
        let meta = PgMeta::open(&cluster.database("recover"), 2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut state = scratch_state(dir.path());
        state.meta = Arc::new(meta);
        let saving = image(2, ImageStatus::Saving);
        let elsewhere = image(5, ImageStatus::Active);
        for image in [&saving, &elsewhere] {
            state.meta.put_image(image).await.unwrap();
        }
        let committing = "00000000-0000-4000-8000-000000000099";
        commit_data(&state, committing, b"x");

        let recovery = recover(&state).await.unwrap();
        assert!(!recovery.has_writes(), "{recovery:?}");
        for image in [&saving, &elsewhere] {
            let now = state.meta.get_image(&image.id).await.unwrap();
            assert_eq!(now.as_ref(), Some(image), "{}", image.id);
        }
        assert_eq!(state.store.list_ids().unwrap(), vec![committing.to_owned()]);
    }

    #[tokio::test]
    async fn test_recover_complete_stage_kept_uploading_others_removed() {
        use crate::staging::Staged;
        let dir = tempfile::tempdir().unwrap();
        let state = scratch_state(dir.path());
        let staged = Staged {
            size: 4,
            md5_hex: "m".into(),
            sha512_hex: "s".into(),
            virtual_size: Some(4),
            format: "raw".into(),
            converted: false,
            staged_at: 1,
            unwrapped: None,
            properties: Vec::new(),
        };
        let stage = |image: &ImageRecord, sealed: bool| {
            let path = state.staging.store().path(&image.id).unwrap();
            std::fs::write(path, b"data").unwrap();
            if sealed {
                state.staging.seal(&image.id, &staged).unwrap();
            }
        };
        let mut kept = image(1, ImageStatus::Uploading);
        kept.forget_data();
        stage(&kept, true);
        let cut_short = image(2, ImageStatus::Uploading);
        stage(&cut_short, false);
        let importing = image(3, ImageStatus::Importing);
        stage(&importing, true);
        for image in [&kept, &cut_short, &importing] {
            state.meta.put_image(image).await.unwrap();
        }

        let recovery = recover(&state).await.unwrap();
        assert!(!recovery.has_writes(), "{recovery:?}");
        let status = async |image: &ImageRecord| {
            state
                .meta
                .get_image(&image.id)
                .await
                .unwrap()
                .unwrap()
                .status
        };
        assert_eq!(status(&kept).await, ImageStatus::Uploading);
        assert_eq!(status(&cut_short).await, ImageStatus::Queued);
        assert_eq!(status(&importing).await, ImageStatus::Queued);
        assert_eq!(
            state.staging.sealed().unwrap(),
            vec![(kept.id.clone(), staged)]
        );
        assert_eq!(
            state.staging.store().list_ids().unwrap(),
            vec![kept.id.clone()]
        );
    }
}
