//! The embedded [`MetaStore`]: one RocksDB database in a directory. No RocksDB type leaves
//! this module; its errors become [`MetaError::Backend`] naming the operation.
//!
//! Durability: every write (a single put or delete, or [`MetaStore::commit_import`]'s task and
//! image together) is one `WriteBatch` written with `WriteOptions::set_sync(true)`, so the
//! WAL is fsynced before the call returns and a crash after `Ok` never loses it. Metadata
//! writes are a handful per import, so the fsync per write costs nothing that matters.
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

use std::path::{Path, PathBuf};

use rocksdb::{
    Direction, IteratorMode, LogLevel, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::codec::{self, Record};
use super::keys::Table;
use super::{ImageRecord, MetaError, MetaStore, TaskRecord};

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

/// Metadata in a RocksDB database.
#[derive(Debug)]
pub struct RocksMeta {
    db: DB,
    path: PathBuf,
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
        Ok(Self {
            db,
            path: dir.to_path_buf(),
        })
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
        Ok(Self {
            db,
            path: dir.to_path_buf(),
        })
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

    fn put<T: Record>(&self, table: Table, record: &T) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        batch.put(table.key(record.id()), codec::encode(record)?);
        self.write(&format!("{} {}", T::WHAT, record.id()), batch)
    }

    fn get<T: Record>(&self, table: Table, id: &str) -> Result<Option<T>, MetaError> {
        let value = self
            .db
            .get_pinned(table.key(id))
            .map_err(|e| MetaError::Backend(format!("reading {} {id}: {e}", T::WHAT)))?;
        value.map(|bytes| codec::decode(id, &bytes)).transpose()
    }

    fn delete<T: Record>(&self, table: Table, id: &str) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        batch.delete(table.key(id));
        self.write(&format!("deletion of {} {id}", T::WHAT), batch)
    }

    /// Every record of `table` in key (= id) order: an iterator from the table's min key,
    /// bounded above by its max key, stopping at the first key outside the prefix.
    fn scan<T: Record>(&self, table: Table) -> Result<Vec<T>, MetaError> {
        let min = table.min_key();
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(table.max_key());
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&min, Direction::Forward), options);
        let mut records = Vec::new();
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
            records.push(codec::decode(id, &value)?);
        }
        Ok(records)
    }
}

/// A RocksDB error while `doing`: `ENOSPC` becomes [`MetaError::StorageFull`], anything
/// else [`MetaError::Backend`].
fn rocks_error(doing: &str, e: rocksdb::Error) -> MetaError {
    classify_error(doing, e.into_string())
}

/// [`rocks_error`] on RocksDB's message.
fn classify_error(doing: &str, text: String) -> MetaError {
    if text.contains(ENOSPC_TEXT) {
        MetaError::StorageFull(format!(
            "Image storage media is full: {doing}: {text}; retry when space has been freed"
        ))
    } else {
        MetaError::Backend(format!("{doing}: {text}"))
    }
}

impl MetaStore for RocksMeta {
    fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        self.put(Table::Tasks, task)
    }

    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        self.get(Table::Tasks, id)
    }

    fn list_tasks(&self) -> Result<Vec<TaskRecord>, MetaError> {
        self.scan(Table::Tasks)
    }

    fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        self.delete::<TaskRecord>(Table::Tasks, id)
    }

    fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        batch.put(Table::Tasks.key(&task.id), codec::encode(task)?);
        batch.put(Table::Images.key(&image.id), codec::encode(image)?);
        self.write(
            &format!("import of task {} with image {}", task.id, image.id),
            batch,
        )
    }

    fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        self.put(Table::Images, image)
    }

    fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        self.get(Table::Images, id)
    }

    fn list_images(&self) -> Result<Vec<ImageRecord>, MetaError> {
        self.scan(Table::Images)
    }

    fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        self.delete::<ImageRecord>(Table::Images, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{conformance_suite, sample_image, sample_task};

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn test_rocks_meta_conformance_suite_passes() {
        let dir = scratch();
        conformance_suite(&RocksMeta::open(dir.path()).unwrap());
    }

    #[test]
    fn test_rocks_meta_open_missing_dir_created() {
        let dir = scratch();
        let path = dir.path().join("a").join("meta");
        let store = RocksMeta::open(&path).unwrap();
        assert!(store.path() == path);
        assert!(path.join("CURRENT").is_file());
    }

    #[test]
    fn test_rocks_meta_reopen_data_survives() {
        let dir = scratch();
        let task = sample_task("00000000-0000-4000-8000-000000000001");
        let image = sample_image("00000000-0000-4000-8000-0000000000a1");
        let gone = sample_task("00000000-0000-4000-8000-000000000002");
        {
            let store = RocksMeta::open(dir.path()).unwrap();
            store.put_task(&gone).unwrap();
            store.commit_import(&task, &image).unwrap();
            store.delete_task(&gone.id).unwrap();
        }
        let store = RocksMeta::open(dir.path()).unwrap();
        assert!(matches!(store.get_task(&task.id), Ok(Some(t)) if t == task));
        assert!(matches!(store.get_image(&image.id), Ok(Some(i)) if i == image));
        assert!(matches!(store.get_task(&gone.id), Ok(None)));
        assert!(matches!(store.list_tasks(), Ok(ts) if ts == vec![task.clone()]));
    }

    #[test]
    fn test_rocks_meta_open_locked_backend_error() {
        let dir = scratch();
        let _first = RocksMeta::open(dir.path()).unwrap();
        assert!(matches!(
            RocksMeta::open(dir.path()),
            Err(MetaError::Backend(_))
        ));
    }

    #[test]
    fn test_rocks_meta_open_on_file_backend_error() {
        let dir = scratch();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a database").unwrap();
        assert!(matches!(RocksMeta::open(&file), Err(MetaError::Backend(_))));
    }

    #[test]
    fn test_rocks_meta_read_only_reads_and_refuses_writes() {
        let dir = scratch();
        let task = sample_task("00000000-0000-4000-8000-000000000004");
        RocksMeta::open(dir.path())
            .unwrap()
            .put_task(&task)
            .unwrap();
        let before = std::fs::read_dir(dir.path()).unwrap().count();
        let store = RocksMeta::open_read_only(dir.path()).unwrap();
        assert!(matches!(store.get_task(&task.id), Ok(Some(t)) if t == task));
        assert!(matches!(
            store.put_task(&sample_task("00000000-0000-4000-8000-000000000005")),
            Err(MetaError::Backend(_))
        ));
        // Nothing written: not even an info log rotated.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
        let missing = dir.path().join("none");
        assert!(matches!(
            RocksMeta::open_read_only(&missing),
            Err(MetaError::Backend(_))
        ));
    }

    #[test]
    fn test_rocks_classify_error_enospc_is_storage_full() {
        let e = classify_error(
            "writing task x",
            "IO error: No space left on device: While appending to file: 000004.log".into(),
        );
        assert!(matches!(e, MetaError::StorageFull(ref m) if m.contains("writing task x")));
        let e = classify_error("writing task x", "IO error: EIO".into());
        assert!(matches!(e, MetaError::Backend(_)));
    }

    #[test]
    fn test_rocks_meta_corrupt_task_value_decoding_error() {
        let dir = scratch();
        let store = RocksMeta::open(dir.path()).unwrap();
        let id = "00000000-0000-4000-8000-000000000003";
        store
            .db
            .put(Table::Tasks.key(id), b"\x01{\"id\": truncated")
            .unwrap();
        assert!(matches!(
            store.get_task(id),
            Err(MetaError::Decoding { what: "task", ref key, .. }) if key == id
        ));
        assert!(matches!(
            store.list_tasks(),
            Err(MetaError::Decoding { what: "task", ref key, .. }) if key == id
        ));
        // The image table is untouched by the corrupt task.
        assert!(matches!(store.list_images(), Ok(is) if is.is_empty()));
    }

    #[test]
    fn test_rocks_meta_corrupt_image_marker_decoding_error() {
        let dir = scratch();
        let store = RocksMeta::open(dir.path()).unwrap();
        let image = sample_image("00000000-0000-4000-8000-0000000000a2");
        store.put_image(&image).unwrap();
        let mut bytes = codec::encode(&image).unwrap();
        if let Some(marker) = bytes.first_mut() {
            *marker = 0xEE;
        }
        store.db.put(Table::Images.key(&image.id), bytes).unwrap();
        assert!(matches!(
            store.get_image(&image.id),
            Err(MetaError::Decoding { what: "image", ref detail, .. }) if detail.contains("238")
        ));
    }

    #[test]
    fn test_rocks_meta_non_utf8_key_decoding_error() {
        let dir = scratch();
        let store = RocksMeta::open(dir.path()).unwrap();
        let mut key = Table::Images.min_key();
        key.push(0xFF);
        store.db.put(key, b"\x01{}").unwrap();
        assert!(matches!(
            store.list_images(),
            Err(MetaError::Decoding { what: "image", ref detail, .. }) if detail.contains("UTF-8")
        ));
    }
}
