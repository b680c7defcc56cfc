//! The embedded [`super::MetaStore`]: one RocksDB database in a directory. No RocksDB type leaves
//! this module; its errors become [`MetaError::Backend`] naming the operation.
//!
//! Durability: every write (a single put or delete, or [`super::MetaStore::commit_import`]'s task and
//! image together) is one `WriteBatch` written with `WriteOptions::set_sync(true)`, so the
//! WAL is fsynced before the call returns and a crash after `Ok` never loses it. Metadata
//! writes are a handful per import, so the fsync per write costs nothing that matters.
//!
//! Indexes: a write reads the record it replaces and, in the same batch, deletes that
//! record's index entries and puts the new ones ([`super::index`]). Writers of one id are
//! serialised by a striped lock so two racing writes cannot both miss each other's entries.
//! Queries run on a snapshot. A store without [`keys::SCHEMA_KEY`] (written before the
//! indexes existed) or with an older layout has its indexes rebuilt on open.
//!
//! # A full disk
//! Debian's librocksdb 7.8 keeps its assertions. Measured on a full 64 MiB volume: the data
//! files (WAL, SST, MANIFEST) report `ENOSPC` as an error, but the *info log* (`LOG`) is
//! written through a `WritableFileWriter` too, and the second append after a failed one trips
//! `assert(sync_without_flush_called_)` in `AssertFalseAndGetStatusForPrevError` and aborts
//! the process: at run time when the error handler logs the WAL's `ENOSPC`, at open when
//! `LogAndApply` logs. So the info log is kept at [`LogLevel::Header`] (nothing is logged
//! after open; errors reach Sluice's own log instead), which makes both surface as errors.
//! An `ENOSPC` on the WAL is sticky (every later write fails the same way, even after space
//! is freed, until the database is opened again), and a read-write open needs space to
//! flush the replayed WAL; a read-only open writes nothing at all. `guarded.rs` builds on
//! these facts: it refuses writes before RocksDB meets `ENOSPC`, opens read-only when the
//! volume is full, and opens again read-write once there is room.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{
    Direction, IteratorMode, LogLevel, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch,
    WriteOptions, DB,
};

use super::codec::{self, Record};
use super::index::{self, IndexEntry};
use super::keys::{self, Table, INDEX_PREFIX, INDEX_VERSION, SCHEMA_KEY};
use super::lease::{claimed, may_take_back, renewed, ClaimChoice, CLAIM_TRIES};
use super::members::{AddMember, MemberRecord};
use super::query::{self, Entries, IndexSource};
use super::{
    check_task_move, plan_transition, Decision, ImageQuery, ImageRecord, ImageStatus, MetaError,
    SortDir, Step, TaskLease, TaskQuery, TaskRecord, TaskSummary, Timestamp, Transition,
};

/// File descriptors RocksDB may keep open. A metadata DB holds few SST files; bounding this
/// keeps the service's descriptor budget for sockets and image files (RocksDB's default, -1,
/// is unlimited).
const MAX_OPEN_FILES: i32 = 64;
/// Info logs (`LOG`, `LOG.old.*`) kept in the directory; the default (1000) fills disks.
const KEEP_LOG_FILE_NUM: usize = 3;
/// Size at which the info log rolls over (1 MiB), so the kept logs stay small.
const MAX_LOG_FILE_SIZE: usize = 1 << 20;
/// Memtable size (8 MiB instead of 64 MiB): records are ~1 KiB, so this is thousands of
/// writes between flushes, and it bounds memory and replay time after a crash.
const WRITE_BUFFER_SIZE: usize = 8 << 20;
/// WAL size that forces a flush (64 MiB), bounding the log replayed on open.
const MAX_TOTAL_WAL_SIZE: u64 = 64 << 20;
/// Space preallocated for the MANIFEST (64 KiB instead of 4 MiB): it records only flushes
/// and compactions here, and preallocated space counts as used on a small volume.
const MANIFEST_PREALLOCATION: usize = 64 << 10;
/// The text of `ENOSPC` in RocksDB's I/O error messages (`strerror`).
const ENOSPC_TEXT: &str = "No space left on device";
/// Locks serialising writers of the same id (by hash). Writes take microseconds plus an
/// fsync; 64 stripes make two concurrent writes of different ids rarely wait for each other.
const WRITE_LOCK_STRIPES: usize = 64;
/// Records per batch while rebuilding indexes on open: bounds the batch's memory (~1,000
/// summaries) without paying an fsync per record.
const REBUILD_BATCH: usize = 1000;

/// Metadata in a RocksDB database.
#[derive(Debug)]
pub struct RocksMeta {
    db: DB,
    path: PathBuf,
    locks: Vec<Mutex<()>>,
    /// Serialises claims, so the per-project cap counts every other claim.
    claims: Mutex<()>,
}

impl RocksMeta {
    /// Opens the database in `dir`, creating it (and `dir`) if missing.
    ///
    /// # Errors
    /// [`MetaError::Backend`] if RocksDB cannot open it (another process holds its lock, the
    /// path is not a directory, the files are corrupt, …).
    /// [`MetaError::StorageFull`] when the volume has no room for what opening writes.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let mut options = Self::options();
        options.create_if_missing(true);
        let db = DB::open(&options, dir)
            .map_err(|e| rocks_error(&format!("opening RocksDB in {}", dir.display()), e))?;
        let store = Self::with_db(db, dir);
        store.ensure_indexes()?;
        Ok(store)
    }

    fn with_db(db: DB, dir: &Path) -> Self {
        Self {
            db,
            path: dir.to_path_buf(),
            locks: (0..WRITE_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            claims: Mutex::new(()),
        }
    }

    /// Opens the existing database in `dir` for reading only: RocksDB writes nothing (not
    /// even its info log), so this works on a full volume. Writes then fail with
    /// [`MetaError::Backend`].
    ///
    /// # Errors
    /// [`MetaError::Backend`] if there is no database in `dir` or RocksDB cannot read it.
    pub fn open_read_only(dir: &Path) -> Result<Self, MetaError> {
        let db = DB::open_for_read_only(&Self::options(), dir, false).map_err(|e| {
            rocks_error(
                &format!("opening RocksDB in {} read-only", dir.display()),
                e,
            )
        })?;
        let store = Self::with_db(db, dir);
        // Rebuilding indexes writes; a read-only store serves what its indexes hold until
        // the volume has room and it is opened read-write again.
        if !store.indexes_current()? {
            tracing::warn!(
                "metadata indexes are missing or old: lists are incomplete until the data \
                 volume has room to rebuild them"
            );
        }
        Ok(store)
    }

    /// The options of every open (see the module docs, "A full disk", for the log level).
    fn options() -> Options {
        let mut options = Options::default();
        options.set_max_open_files(MAX_OPEN_FILES);
        options.set_keep_log_file_num(KEEP_LOG_FILE_NUM);
        options.set_max_log_file_size(MAX_LOG_FILE_SIZE);
        options.set_log_level(LogLevel::Header);
        options.set_write_buffer_size(WRITE_BUFFER_SIZE);
        options.set_max_total_wal_size(MAX_TOTAL_WAL_SIZE);
        options.set_manifest_preallocation_size(MANIFEST_PREALLOCATION);
        options
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `batch` atomically and durably (see the module docs).
    fn write(&self, what: &str, batch: WriteBatch) -> Result<(), MetaError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| rocks_error(&format!("writing {what}"), e))
    }

    /// Locks the write stripes of `ids` (each once, in stripe order, so two writers never
    /// wait for each other in a cycle).
    fn lock(&self, ids: &[&str]) -> Result<Vec<MutexGuard<'_, ()>>, MetaError> {
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        let mut stripes: Vec<usize> = ids
            .iter()
            .map(|id| {
                let hash = usize::try_from(hasher.hash_one(id)).unwrap_or_default();
                hash % WRITE_LOCK_STRIPES
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .filter_map(|n| self.locks.get(n))
            .map(|lock| {
                lock.lock()
                    .map_err(|_| MetaError::Backend("write lock poisoned by a panic".to_owned()))
            })
            .collect()
    }

    fn get<T: Record>(&self, table: Table, id: &str) -> Result<Option<T>, MetaError> {
        let value = self
            .db
            .get_pinned(table.key(id))
            .map_err(|e| MetaError::Backend(format!("reading {} {id}: {e}", T::WHAT)))?;
        value.map(|bytes| codec::decode(id, &bytes)).transpose()
    }

    /// Adds to `batch` the change of one record from `old` to `new` (either may be absent):
    /// the stale index entries out, the record, the fresh entries in.
    fn change<T: Record>(
        batch: &mut WriteBatch,
        table: Table,
        id: &str,
        new: Option<&T>,
        (stale, fresh): (Vec<Vec<u8>>, Vec<IndexEntry>),
    ) -> Result<(), MetaError> {
        for key in stale {
            batch.delete(key);
        }
        match new {
            Some(record) => batch.put(table.key(id), codec::encode(record)?),
            None => batch.delete(table.key(id)),
        }
        for (key, value) in fresh {
            batch.put(key, value);
        }
        Ok(())
    }

    fn task_change(&self, batch: &mut WriteBatch, task: &TaskRecord) -> Result<(), MetaError> {
        let old: Option<TaskRecord> = self.get(Table::Tasks, &task.id)?;
        let entries = index::task_change(old.as_ref(), Some(task))?;
        Self::change(batch, Table::Tasks, &task.id, Some(task), entries)
    }

    /// [`Self::task_change`] if the stored task may become `task.status` (the caller holds
    /// the task's write lock).
    fn task_move(&self, batch: &mut WriteBatch, task: &TaskRecord) -> Result<(), MetaError> {
        let old: Option<TaskRecord> = self.get(Table::Tasks, &task.id)?;
        check_task_move(old.as_ref(), task)?;
        let entries = index::task_change(old.as_ref(), Some(task))?;
        Self::change(batch, Table::Tasks, &task.id, Some(task), entries)
    }

    /// [`super::MetaStore::transition_image`], with `task`'s move in the same batch when given.
    fn transition(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn FnMut(&mut ImageRecord) -> Decision + Send),
        task: Option<&TaskRecord>,
    ) -> Result<Transition, MetaError> {
        let ids: Vec<&str> = std::iter::once(id)
            .chain(task.map(|t| t.id.as_str()))
            .collect();
        let _locked = self.lock(&ids)?;
        let mut batch = WriteBatch::default();
        if let Some(task) = task {
            // Checked first: a refused task leaves the image untouched (the batch is dropped).
            self.task_move(&mut batch, task)?;
        }
        let current = self.get::<ImageRecord>(Table::Images, id)?;
        let done = match plan_transition(current, expected, change)? {
            Step::Answer(answer) => return Ok(answer),
            Step::Put { old, new } => {
                let entries = index::image_change(Some(&old), Some(&new));
                Self::change(&mut batch, Table::Images, id, Some(&*new), entries)?;
                *new
            }
            Step::Remove(old) => {
                let entries = index::image_change(Some(&old), None);
                Self::change::<ImageRecord>(&mut batch, Table::Images, id, None, entries)?;
                self.delete_image_members(&mut batch, id)?;
                old
            }
        };
        self.write(&format!("transition of image {id}"), batch)?;
        Ok(Transition::Done(done))
    }

    fn image_change(&self, batch: &mut WriteBatch, image: &ImageRecord) -> Result<(), MetaError> {
        let old: Option<ImageRecord> = self.get(Table::Images, &image.id)?;
        let entries = index::image_change(old.as_ref(), Some(image));
        Self::change(batch, Table::Images, &image.id, Some(image), entries)
    }

    /// Calls `visit` with every record of `table` in key (= id) order: an iterator from the
    /// table's min key, bounded above by its max key, stopping at the first key outside it.
    fn for_each<T: Record>(
        &self,
        table: Table,
        mut visit: impl FnMut(T) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let min = table.min_key();
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(table.max_key());
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&min, Direction::Forward), options);
        for item in iter {
            let (key, value) =
                item.map_err(|e| MetaError::Backend(format!("scanning {}s: {e}", T::WHAT)))?;
            let Some(id) = table.id_of(&key) else {
                break;
            };
            let id = std::str::from_utf8(id).map_err(|_| MetaError::Decoding {
                what: T::WHAT,
                key: String::from_utf8_lossy(id).into_owned(),
                detail: "key is not UTF-8".to_owned(),
            })?;
            visit(codec::decode(id, &value)?)?;
        }
        Ok(())
    }

    /// Whether the index layout on disk is this build's.
    ///
    /// # Errors
    /// [`MetaError::Backend`] when the version cannot be read or is newer than this build's.
    fn indexes_current(&self) -> Result<bool, MetaError> {
        let version = self
            .db
            .get(SCHEMA_KEY)
            .map_err(|e| MetaError::Backend(format!("reading the index version: {e}")))?;
        match version.as_deref() {
            Some([v]) if *v == INDEX_VERSION => Ok(true),
            Some([v]) if *v > INDEX_VERSION => Err(MetaError::Backend(format!(
                "the metadata indexes have layout {v}, newer than this build's \
                 ({INDEX_VERSION}): use a newer sluice"
            ))),
            _ => Ok(false),
        }
    }

    /// Builds the indexes from the records unless [`SCHEMA_KEY`] says they are current.
    ///
    /// # Errors
    /// A backend or decoding error, or a layout newer than this build's.
    fn ensure_indexes(&self) -> Result<(), MetaError> {
        if self.indexes_current()? {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.delete_range(INDEX_PREFIX, &keys::prefix_end(INDEX_PREFIX));
        self.write("removal of stale index entries", batch)?;
        let tasks = self.rebuild(Table::Tasks, index::task_entries)?;
        let images = self.rebuild(Table::Images, |image| Ok(index::image_entries(image)))?;
        let mut batch = WriteBatch::default();
        batch.put(SCHEMA_KEY, [INDEX_VERSION]);
        self.write("index version", batch)?;
        tracing::info!(tasks, images, "built the metadata indexes");
        Ok(())
    }

    /// Writes the index entries of every record of `table`, [`REBUILD_BATCH`] records per
    /// write; returns how many records there were.
    fn rebuild<T: Record>(
        &self,
        table: Table,
        entries: impl Fn(&T) -> Result<Vec<IndexEntry>, MetaError>,
    ) -> Result<usize, MetaError> {
        let mut batch = WriteBatch::default();
        let (mut records, mut pending) = (0usize, 0usize);
        self.for_each(table, |record: T| {
            for (key, value) in entries(&record)? {
                batch.put(key, value);
            }
            records = records.saturating_add(1);
            pending = pending.saturating_add(1);
            if pending >= REBUILD_BATCH {
                self.write("rebuilt index entries", std::mem::take(&mut batch))?;
                pending = 0;
            }
            Ok(())
        })?;
        self.write("rebuilt index entries", batch)?;
        Ok(records)
    }

    /// Overwrites task `id`'s stored value with bytes that do not decode (its index entries
    /// stay): for tests of what reads a record and what does not.
    #[cfg(test)]
    pub(crate) fn corrupt_for_tests(&self, id: &str) {
        self.db
            .put(Table::Tasks.key(id), b"\x01{\"id\": truncated")
            .expect("corrupting a task");
    }

    /// A consistent view for one query.
    fn snapshot(&self) -> SnapshotSource<'_> {
        SnapshotSource {
            snapshot: self.db.snapshot(),
        }
    }
}

/// Queries read one RocksDB snapshot: the entries and the records they lead to agree.
struct SnapshotSource<'a> {
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl IndexSource for SnapshotSource<'_> {
    fn entries(&self, start: Vec<u8>, end: Vec<u8>, dir: SortDir) -> Entries<'_> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(start);
        options.set_iterate_upper_bound(end);
        let mode = match dir {
            SortDir::Asc => IteratorMode::Start,
            SortDir::Desc => IteratorMode::End,
        };
        Box::new(
            self.snapshot
                .iterator_opt(mode, options)
                .map(|item| item.map_err(|e| MetaError::Backend(format!("reading an index: {e}")))),
        )
    }

    fn image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        let value = self
            .snapshot
            .get_pinned(Table::Images.key(id))
            .map_err(|e| MetaError::Backend(format!("reading image {id}: {e}")))?;
        value.map(|bytes| codec::decode(id, &bytes)).transpose()
    }
}

/// A RocksDB error while `doing`: `ENOSPC` becomes [`MetaError::StorageFull`], anything
/// else [`MetaError::Backend`].
fn rocks_error(doing: &str, e: rocksdb::Error) -> MetaError {
    classify_error(doing, e.into_string())
}

/// [`rocks_error`] on RocksDB's message.
/// Runs `f`, which may block for a while (a write's fsync, a scan of an index range), without
/// stalling the other tasks of a runtime worker: on the multi-threaded runtime through
/// [`tokio::task::block_in_place`] (the worker's queue moves to another thread; no `'static`
/// bound, so borrowed queries and closures need no copies), elsewhere (a current-thread
/// runtime, as in unit tests, or no runtime) directly. Point reads skip this: they take a few
/// microseconds from the block cache, less than the hand-off.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn classify_error(doing: &str, text: String) -> MetaError {
    if text.contains(ENOSPC_TEXT) {
        MetaError::StorageFull(format!(
            "Image storage media is full: {doing}: {text}; retry when space has been freed"
        ))
    } else {
        MetaError::Backend(format!("{doing}: {text}"))
    }
}

/// The store's operations as blocking calls, one per [`super::MetaStore`] method and documented
/// there; `store.rs` implements the async trait with them, and [`super::guarded`] wraps them.
impl RocksMeta {
    /// [`super::MetaStore::put_task`], blocking.
    pub fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        let _locked = self.lock(&[&task.id])?;
        let mut batch = WriteBatch::default();
        self.task_change(&mut batch, task)?;
        self.write(&format!("task {}", task.id), batch)
    }

    /// [`super::MetaStore::get_task`], blocking.
    pub fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        self.get(Table::Tasks, id)
    }

    /// [`super::MetaStore::delete_task`], blocking.
    pub fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        let _locked = self.lock(&[id])?;
        let old: Option<TaskRecord> = self.get(Table::Tasks, id)?;
        let entries = index::task_change(old.as_ref(), None)?;
        let mut batch = WriteBatch::default();
        Self::change::<TaskRecord>(&mut batch, Table::Tasks, id, None, entries)?;
        self.write(&format!("deletion of task {id}"), batch)
    }

    /// [`super::MetaStore::transition_task`], blocking.
    pub fn transition_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        let _locked = self.lock(&[&task.id])?;
        let mut batch = WriteBatch::default();
        self.task_move(&mut batch, task)?;
        self.write(&format!("task {}", task.id), batch)
    }

    /// [`super::MetaStore::claim_task`], blocking, under the claim mutex: the unfinished
    /// tasks from a snapshot, the choice among them ([`ClaimChoice`]), the chosen task
    /// re-read and claimed under its write lock; one that moved since the snapshot (deleted,
    /// failed) makes the claim choose again.
    pub fn claim_task(
        &self,
        lease: &TaskLease,
        per_project: u64,
        now: Timestamp,
    ) -> Result<Option<TaskRecord>, MetaError> {
        let _claiming = self
            .claims
            .lock()
            .map_err(|_| MetaError::Backend("claim lock poisoned by a panic".to_owned()))?;
        for _ in 0..CLAIM_TRIES {
            let mut choice = ClaimChoice::new(&lease.node, per_project);
            for id in query::unfinished_tasks(&self.snapshot())? {
                if let Some(task) = self.get::<TaskRecord>(Table::Tasks, &id)? {
                    choice.offer(&task);
                }
            }
            let Some(id) = choice.chosen() else {
                return Ok(None);
            };
            let _locked = self.lock(&[id])?;
            let current: Option<TaskRecord> = self.get(Table::Tasks, id)?;
            if let Some(task) = current.as_ref().and_then(|t| claimed(t, lease, now)) {
                self.put_task_locked(current.as_ref(), &task)?;
                return Ok(Some(task));
            }
        }
        Ok(None)
    }

    /// [`super::MetaStore::renew_lease`], blocking.
    pub fn renew_lease(
        &self,
        id: &str,
        node: &str,
        until: Timestamp,
        charged: u64,
    ) -> Result<bool, MetaError> {
        let _locked = self.lock(&[id])?;
        let current: Option<TaskRecord> = self.get(Table::Tasks, id)?;
        match renewed(current.as_ref(), node, until, charged) {
            Some(task) => self.put_task_locked(current.as_ref(), &task).map(|()| true),
            None => Ok(false),
        }
    }

    /// [`super::MetaStore::take_back`], blocking.
    pub fn take_back(
        &self,
        task: &TaskRecord,
        expired: Option<&TaskLease>,
    ) -> Result<bool, MetaError> {
        let _locked = self.lock(&[&task.id])?;
        let current: Option<TaskRecord> = self.get(Table::Tasks, &task.id)?;
        if !may_take_back(current.as_ref(), task, expired) {
            return Ok(false);
        }
        self.put_task_locked(current.as_ref(), task).map(|()| true)
    }

    /// Replaces `old` (read under the id's write lock, which the caller holds) by `task`.
    fn put_task_locked(
        &self,
        old: Option<&TaskRecord>,
        task: &TaskRecord,
    ) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        let entries = index::task_change(old, Some(task))?;
        Self::change(&mut batch, Table::Tasks, &task.id, Some(task), entries)?;
        self.write(&format!("task {}", task.id), batch)
    }

    /// [`super::MetaStore::expired_leases`], blocking.
    pub fn expired_leases(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        query::expired_leases(&self.snapshot(), now, max)
    }

    /// [`super::MetaStore::commit_import`], blocking.
    pub fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        let _locked = self.lock(&[&task.id, &image.id])?;
        let mut batch = WriteBatch::default();
        self.task_move(&mut batch, task)?;
        self.image_change(&mut batch, image)?;
        self.write(
            &format!("import of task {} with image {}", task.id, image.id),
            batch,
        )
    }

    /// [`super::MetaStore::put_image`], blocking.
    pub fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        let _locked = self.lock(&[&image.id])?;
        let mut batch = WriteBatch::default();
        self.image_change(&mut batch, image)?;
        self.write(&format!("image {}", image.id), batch)
    }

    /// [`super::MetaStore::insert_image`], blocking.
    pub fn insert_image(&self, image: &ImageRecord) -> Result<bool, MetaError> {
        let _locked = self.lock(&[&image.id])?;
        if self.get::<ImageRecord>(Table::Images, &image.id)?.is_some() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let entries = index::image_change(None, Some(image));
        Self::change(&mut batch, Table::Images, &image.id, Some(image), entries)?;
        self.write(&format!("new image {}", image.id), batch)?;
        Ok(true)
    }

    /// [`super::MetaStore::transition_image`], blocking.
    pub fn transition_image(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn FnMut(&mut ImageRecord) -> Decision + Send),
    ) -> Result<Transition, MetaError> {
        self.transition(id, expected, change, None)
    }

    /// [`super::MetaStore::transition_image_with_task`], blocking.
    pub fn transition_image_with_task(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn FnMut(&mut ImageRecord) -> Decision + Send),
        task: &TaskRecord,
    ) -> Result<Transition, MetaError> {
        self.transition(id, expected, change, Some(task))
    }

    /// [`super::MetaStore::get_image`], blocking.
    pub fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        self.get(Table::Images, id)
    }

    /// [`super::MetaStore::delete_image`], blocking.
    pub fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        let _locked = self.lock(&[id])?;
        let old: Option<ImageRecord> = self.get(Table::Images, id)?;
        let entries = index::image_change(old.as_ref(), None);
        let mut batch = WriteBatch::default();
        Self::change::<ImageRecord>(&mut batch, Table::Images, id, None, entries)?;
        self.delete_image_members(&mut batch, id)?;
        self.write(&format!("deletion of image {id}"), batch)
    }

    /// [`super::MetaStore::add_member`], blocking.
    pub fn add_member(&self, member: &MemberRecord, max: usize) -> Result<AddMember, MetaError> {
        self.add_member_impl(member, max)
    }

    /// [`super::MetaStore::update_member`], blocking.
    pub fn update_member(&self, member: &MemberRecord) -> Result<bool, MetaError> {
        self.update_member_impl(member)
    }

    /// [`super::MetaStore::get_member`], blocking.
    pub fn get_member(&self, image: &str, member: &str) -> Result<Option<MemberRecord>, MetaError> {
        self.get_member_impl(image, member)
    }

    /// [`super::MetaStore::image_members`], blocking.
    pub fn image_members(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError> {
        self.image_members_impl(image)
    }

    /// [`super::MetaStore::member_images`], blocking.
    pub fn member_images(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError> {
        self.member_images_impl(member)
    }

    /// [`super::MetaStore::delete_member`], blocking.
    pub fn delete_member(&self, image: &str, member: &str) -> Result<bool, MetaError> {
        self.delete_member_impl(image, member)
    }

    /// [`super::MetaStore::list_task_page`], blocking.
    pub fn list_task_page(&self, query: &TaskQuery<'_>) -> Result<Vec<TaskSummary>, MetaError> {
        query::task_page(&self.snapshot(), query)
    }

    /// [`super::MetaStore::list_image_page`], blocking.
    pub fn list_image_page(&self, query: &ImageQuery<'_>) -> Result<Vec<ImageRecord>, MetaError> {
        query::image_page(&self.snapshot(), query)
    }

    /// [`super::MetaStore::expired_tasks`], blocking.
    pub fn expired_tasks(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        query::expired_tasks(&self.snapshot(), now, max)
    }

    /// [`super::MetaStore::unfinished_tasks`], blocking.
    pub fn unfinished_tasks(&self) -> Result<Vec<String>, MetaError> {
        query::unfinished_tasks(&self.snapshot())
    }

    /// [`super::MetaStore::image_tasks`], blocking.
    pub fn image_tasks(&self, image_id: &str) -> Result<Vec<TaskRecord>, MetaError> {
        let mut tasks = Vec::new();
        for id in query::image_task_ids(&self.snapshot(), image_id)? {
            // A task deleted since the snapshot is simply not listed.
            if let Some(task) = self.get(Table::Tasks, &id)? {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// [`super::MetaStore::scan_images`], blocking.
    pub fn scan_images(
        &self,
        owner: Option<&str>,
        visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
    ) -> Result<(), MetaError> {
        query::scan_images(&self.snapshot(), owner, visit)
    }
}

mod members;
mod store;

#[cfg(test)]
mod tests;
