//! [`GuardedMeta`]: the RocksDB metadata store behind the data volume's free-space floor, so
//! a full disk refuses writes instead of aborting the service (facts measured on Debian's
//! librocksdb 7.8: `rocks.rs`, "A full disk").
//!
//! - Every write first checks free space ([`DiskSpace::check_metadata`]): below the metadata
//!   floor it is refused with [`MetaError::StorageFull`] before RocksDB sees it, so Sluice's
//!   own writes never make RocksDB meet `ENOSPC`.
//! - On a volume without room the database is opened read-only, which writes nothing: reads
//!   are served, writes refused.
//! - A write that meets `ENOSPC` anyway (the volume filled from outside between the check and
//!   the write) leaves RocksDB refusing every later write, so the handle is marked stale.
//! - Read-only or stale, the store opens itself read-write again on the first write (or
//!   [`GuardedMeta::try_writable`] call) that finds room, at most once per
//!   [`REOPEN_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use sluice_pipeline::store::space::DiskSpace;

use super::members::{AddMember, MemberRecord};
use super::rocks::{blocking, RocksMeta};
use super::{
    Decision, ImageQuery, ImageRecord, ImageStatus, MetaError, MetaStore, TaskLease, TaskQuery,
    TaskRecord, TaskSummary, Timestamp, Transition,
};

/// Least time between two attempts to open the database read-write again: an attempt on a
/// volume that is still too full costs a failed flush and an empty rotated info log.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(2);

/// The metadata store with its writes guarded by the data volume's free space.
#[derive(Debug)]
pub struct GuardedMeta {
    dir: PathBuf,
    space: Arc<DiskSpace>,
    db: RwLock<Handle>,
}

#[derive(Debug)]
struct Handle {
    rocks: RocksMeta,
    /// Whether `rocks` was opened read-write (it then holds the database's lock).
    read_write: bool,
    /// Whether writes may go to `rocks`: read-write and not stuck after an `ENOSPC`.
    writable: bool,
    /// When opening read-write was last tried.
    tried: Option<Instant>,
    /// Why the database is not writable.
    why: String,
}

impl GuardedMeta {
    /// Opens the database in `dir` read-write, or read-only when the volume (checked by
    /// `space`) has no room for what opening writes.
    ///
    /// # Errors
    /// [`MetaError::Backend`] when neither works (e.g. a new database on a full volume).
    pub fn open(dir: &Path, space: Arc<DiskSpace>) -> Result<Self, MetaError> {
        let full = match space.check_metadata() {
            Ok(()) => match RocksMeta::open(dir) {
                Ok(rocks) => {
                    return Ok(GuardedMeta {
                        dir: dir.to_path_buf(),
                        space,
                        db: RwLock::new(Handle {
                            rocks,
                            read_write: true,
                            writable: true,
                            tried: None,
                            why: String::new(),
                        }),
                    })
                }
                Err(MetaError::StorageFull(why)) => why,
                Err(e) => return Err(e),
            },
            Err(e) => e.to_string(),
        };
        tracing::error!(
            reason = %full,
            "data volume full: metadata store opened read-only; writes are refused until \
             space is freed"
        );
        let rocks = RocksMeta::open_read_only(dir)?;
        Ok(GuardedMeta {
            dir: dir.to_path_buf(),
            space,
            db: RwLock::new(Handle {
                rocks,
                read_write: false,
                writable: false,
                tried: Some(Instant::now()),
                why: full,
            }),
        })
    }

    /// Whether writes go to the database now (without checking free space).
    pub fn is_writable(&self) -> bool {
        self.read().writable
    }

    /// Opens the database read-write again when it is read-only or stale and the volume
    /// has room (at most once per [`REOPEN_INTERVAL`]); returns whether it is writable.
    pub fn try_writable(&self) -> bool {
        if self.read().writable {
            return true;
        }
        if self.space.check_metadata().is_err() {
            return false;
        }
        let mut h = self.write();
        if h.writable {
            return true;
        }
        if h.tried.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
            return false;
        }
        h.tried = Some(Instant::now());
        if h.read_write {
            // Release the stale handle's lock; a read-only handle serves reads meanwhile.
            match RocksMeta::open_read_only(&self.dir) {
                Ok(ro) => {
                    h.rocks = ro;
                    h.read_write = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reopen the metadata store");
                    return false;
                }
            }
        }
        match RocksMeta::open(&self.dir) {
            Ok(rw) => {
                h.rocks = rw;
                h.read_write = true;
                h.writable = true;
                h.why.clear();
                tracing::info!("metadata store writable again");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata store stays read-only");
                h.why = e.to_string();
                false
            }
        }
    }

    /// Runs a write on the database when the volume has room and the database is writable.
    fn guarded<T>(
        &self,
        f: impl FnOnce(&RocksMeta) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        self.space
            .check_metadata()
            .map_err(|e| MetaError::StorageFull(e.to_string()))?;
        if !self.try_writable() {
            let why = self.read().why.clone();
            return Err(MetaError::StorageFull(format!(
                "Image storage media is full: the metadata store is read-only until the data \
                 volume has room again ({why}); retry when space has been freed"
            )));
        }
        let h = self.read();
        match blocking(|| f(&h.rocks)) {
            Err(MetaError::StorageFull(why)) => {
                drop(h);
                let mut h = self.write();
                h.writable = false;
                h.why.clone_from(&why);
                tracing::error!(
                    reason = %why,
                    "metadata write met a full volume: writes are refused until space is freed"
                );
                Err(MetaError::StorageFull(why))
            }
            other => other,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Handle> {
        // A panic while holding the lock leaves a consistent handle (every field is set
        // whole), so a poisoned lock is still usable.
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Handle> {
        self.db.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl MetaStore for GuardedMeta {
    async fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        self.guarded(|r| r.put_task(task))
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        self.read().rocks.get_task(id)
    }

    async fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        self.guarded(|r| r.delete_task(id))
    }

    async fn transition_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        self.guarded(|r| r.transition_task(task))
    }

    async fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        self.guarded(|r| r.commit_import(task, image))
    }

    async fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        self.guarded(|r| r.put_image(image))
    }

    async fn insert_image(&self, image: &ImageRecord) -> Result<bool, MetaError> {
        self.guarded(|r| r.insert_image(image))
    }

    async fn transition_image(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
    ) -> Result<Transition, MetaError> {
        self.guarded(|r| r.transition_image(id, expected, change))
    }

    async fn transition_image_with_task(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
        task: &TaskRecord,
    ) -> Result<Transition, MetaError> {
        self.guarded(|r| r.transition_image_with_task(id, expected, change, task))
    }

    async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        self.read().rocks.get_image(id)
    }

    async fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        self.guarded(|r| r.delete_image(id))
    }

    async fn add_member(&self, member: &MemberRecord, max: usize) -> Result<AddMember, MetaError> {
        self.guarded(|r| r.add_member(member, max))
    }

    async fn update_member(&self, member: &MemberRecord) -> Result<bool, MetaError> {
        self.guarded(|r| r.update_member(member))
    }

    async fn get_member(
        &self,
        image: &str,
        member: &str,
    ) -> Result<Option<MemberRecord>, MetaError> {
        self.read().rocks.get_member(image, member)
    }

    async fn image_members(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError> {
        blocking(|| self.read().rocks.image_members(image))
    }

    async fn member_images(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError> {
        blocking(|| self.read().rocks.member_images(member))
    }

    async fn delete_member(&self, image: &str, member: &str) -> Result<bool, MetaError> {
        self.guarded(|r| r.delete_member(image, member))
    }

    async fn list_task_page(&self, query: &TaskQuery<'_>) -> Result<Vec<TaskSummary>, MetaError> {
        blocking(|| self.read().rocks.list_task_page(query))
    }

    async fn list_image_page(&self, query: &ImageQuery<'_>) -> Result<Vec<ImageRecord>, MetaError> {
        blocking(|| self.read().rocks.list_image_page(query))
    }

    async fn expired_tasks(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        blocking(|| self.read().rocks.expired_tasks(now, max))
    }

    async fn claim_task(
        &self,
        lease: &TaskLease,
        per_project: u64,
        now: Timestamp,
    ) -> Result<Option<TaskRecord>, MetaError> {
        self.guarded(|r| r.claim_task(lease, per_project, now))
    }

    async fn renew_lease(
        &self,
        id: &str,
        node: &str,
        until: Timestamp,
        charged: u64,
    ) -> Result<bool, MetaError> {
        self.guarded(|r| r.renew_lease(id, node, until, charged))
    }

    async fn take_back(
        &self,
        task: &TaskRecord,
        expired: Option<&TaskLease>,
    ) -> Result<bool, MetaError> {
        self.guarded(|r| r.take_back(task, expired))
    }

    async fn expired_leases(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        blocking(|| self.read().rocks.expired_leases(now, max))
    }

    async fn unfinished_tasks(&self) -> Result<Vec<String>, MetaError> {
        blocking(|| self.read().rocks.unfinished_tasks())
    }

    async fn image_tasks(&self, image_id: &str) -> Result<Vec<TaskRecord>, MetaError> {
        blocking(|| self.read().rocks.image_tasks(image_id))
    }

    async fn scan_images(
        &self,
        owner: Option<&str>,
        visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
    ) -> Result<(), MetaError> {
        blocking(|| self.read().rocks.scan_images(owner, visit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{conformance_suite, sample_task};
    use sluice_pipeline::store::space::Reserve;

    fn space(dir: &Path, reserve: Reserve) -> Arc<DiskSpace> {
        Arc::new(DiskSpace::new(dir, reserve))
    }

    #[tokio::test]
    async fn test_guarded_meta_with_room_conformance_suite_passes() {
        let dir = tempfile::tempdir().unwrap();
        let meta = GuardedMeta::open(dir.path(), space(dir.path(), Reserve::Bytes(0))).unwrap();
        assert!(meta.is_writable());
        conformance_suite(&meta).await;
    }

    #[tokio::test]
    async fn test_guarded_meta_full_volume_read_only_reads_served_writes_storage_full() {
        let dir = tempfile::tempdir().unwrap();
        let task = sample_task("00000000-0000-4000-8000-000000000006");
        RocksMeta::open(dir.path())
            .unwrap()
            .put_task(&task)
            .unwrap();
        let files = || {
            let mut v: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let before = files();
        // A reserve larger than the volume: below the floor from the start.
        let meta =
            GuardedMeta::open(dir.path(), space(dir.path(), Reserve::Bytes(u64::MAX))).unwrap();
        assert!(!meta.is_writable());
        assert!(!meta.try_writable());
        assert!(matches!(meta.get_task(&task.id).await, Ok(Some(t)) if t == task));
        assert!(matches!(crate::meta::testing::all_tasks(&meta).await, Ok(ts) if ts.len() == 1));
        let other = sample_task("00000000-0000-4000-8000-000000000007");
        assert!(matches!(
            meta.put_task(&other).await,
            Err(MetaError::StorageFull(ref m)) if m.starts_with("Image storage media is full")
        ));
        assert!(matches!(
            meta.delete_task(&task.id).await,
            Err(MetaError::StorageFull(_))
        ));
        assert_eq!(files(), before, "a read-only open writes nothing");
    }

    #[test]
    fn test_guarded_meta_new_database_on_full_volume_backend_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        assert!(matches!(
            GuardedMeta::open(&path, space(dir.path(), Reserve::Bytes(u64::MAX))),
            Err(MetaError::Backend(_))
        ));
    }
}
