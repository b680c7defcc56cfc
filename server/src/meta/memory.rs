//! An in-memory [`MetaStore`] for tests: records and index entries in ordered maps behind one
//! mutex, nothing persisted.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::index::{self, IndexEntry};
use super::lease::{claimed, may_take_back, renewed, ClaimChoice};
use super::members::{self, AddMember, MemberRecord};
use super::query::{self, Entries, Entry, IndexSource};
use super::{
    check_task_move, plan_transition, Decision, ImageQuery, ImageRecord, ImageStatus, MetaError,
    MetaStore, SortDir, Step, TaskLease, TaskQuery, TaskRecord, TaskSummary, Timestamp, Transition,
};

/// Tasks and images keyed by id, and the secondary index entries keyed as in RocksDB
/// ([`super::keys`]), all behind one lock so every write (a record with its index entries,
/// or [`MetaStore::commit_import`]'s two records) is seen whole or not at all.
#[derive(Debug, Default)]
pub struct MemoryMeta {
    inner: Mutex<Inner>,
    /// Serialises claims, so the per-project cap counts every other claim.
    claims: Mutex<()>,
}

#[derive(Debug, Default)]
struct Inner {
    tasks: BTreeMap<String, TaskRecord>,
    images: BTreeMap<String, ImageRecord>,
    index: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Member records by [`members::member_key`].
    members: BTreeMap<Vec<u8>, MemberRecord>,
    /// The member index ([`members::member_index_key`]).
    member_index: BTreeSet<Vec<u8>>,
}

impl Inner {
    fn remove_image_members(&mut self, image: &str) {
        let (start, end) = members::image_range(image);
        let gone: Vec<String> = self
            .members
            .range(start..end)
            .map(|(_, m)| m.member_id.clone())
            .collect();
        for member in gone {
            self.remove_member(image, &member);
        }
    }

    fn remove_member(&mut self, image: &str, member: &str) -> bool {
        self.member_index
            .remove(&members::member_index_key(image, member));
        self.members
            .remove(&members::member_key(image, member))
            .is_some()
    }

    fn reindex(&mut self, stale: Vec<Vec<u8>>, fresh: Vec<IndexEntry>) {
        for key in stale {
            self.index.remove(&key);
        }
        self.index.extend(fresh);
    }

    fn put_task(&mut self, task: &TaskRecord) -> Result<(), MetaError> {
        let (stale, fresh) = index::task_change(self.tasks.get(&task.id), Some(task))?;
        self.reindex(stale, fresh);
        self.tasks.insert(task.id.clone(), task.clone());
        Ok(())
    }

    fn put_image(&mut self, image: &ImageRecord) {
        let (stale, fresh) = index::image_change(self.images.get(&image.id), Some(image));
        self.reindex(stale, fresh);
        self.images.insert(image.id.clone(), image.clone());
    }

    fn transition_image(
        &mut self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
        task: Option<&TaskRecord>,
    ) -> Result<Transition, MetaError> {
        if let Some(task) = task {
            check_task_move(self.tasks.get(&task.id), task)?;
        }
        let current = self.images.get(id).cloned();
        let done = match plan_transition(current, expected, change)? {
            Step::Answer(answer) => return Ok(answer),
            Step::Put { new, .. } => {
                self.put_image(&new);
                *new
            }
            Step::Remove(old) => {
                self.images.remove(id);
                let (stale, fresh) = index::image_change(Some(&old), None);
                self.reindex(stale, fresh);
                self.remove_image_members(id);
                old
            }
        };
        if let Some(task) = task {
            self.put_task(task)?;
        }
        Ok(Transition::Done(done))
    }
}

impl MemoryMeta {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> Result<MutexGuard<'_, Inner>, MetaError> {
        self.inner
            .lock()
            .map_err(|_| MetaError::Backend("memory store poisoned by a panic".to_owned()))
    }
}

impl IndexSource for MemoryMeta {
    fn entries(&self, start: Vec<u8>, end: Vec<u8>, dir: SortDir) -> Entries<'_> {
        Box::new(MemoryEntries {
            meta: self,
            start,
            end,
            dir,
            last: None,
        })
    }

    fn image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        Ok(self.inner()?.images.get(id).cloned())
    }
}

/// Index entries of `[start, end)` one at a time, taking the lock for each step only (so a
/// caller may write between steps, as with a RocksDB iterator), from after the last key read.
struct MemoryEntries<'m> {
    meta: &'m MemoryMeta,
    start: Vec<u8>,
    end: Vec<u8>,
    dir: SortDir,
    last: Option<Vec<u8>>,
}

impl Iterator for MemoryEntries<'_> {
    type Item = Result<Entry, MetaError>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = match self.meta.inner() {
            Ok(inner) => inner,
            Err(e) => return Some(Err(e)),
        };
        let (low, high) = match (self.dir, self.last.as_ref()) {
            (SortDir::Asc, Some(last)) => (Bound::Excluded(last), Bound::Excluded(&self.end)),
            (SortDir::Desc, Some(last)) => (Bound::Included(&self.start), Bound::Excluded(last)),
            (_, None) => (Bound::Included(&self.start), Bound::Excluded(&self.end)),
        };
        // BTreeMap::range panics on an empty or inverted range.
        let empty = match (low, high) {
            (Bound::Included(l), Bound::Excluded(h)) | (Bound::Excluded(l), Bound::Excluded(h)) => {
                l >= h
            }
            _ => false,
        };
        if empty {
            return None;
        }
        let mut range = inner.index.range::<Vec<u8>, _>((low, high));
        let (key, value) = match self.dir {
            SortDir::Asc => range.next()?,
            SortDir::Desc => range.next_back()?,
        };
        let entry: Entry = (key.clone().into(), value.clone().into());
        self.last = Some(key.clone());
        Some(Ok(entry))
    }
}

#[async_trait::async_trait]
impl MetaStore for MemoryMeta {
    async fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        self.inner()?.put_task(task)
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        Ok(self.inner()?.tasks.get(id).cloned())
    }

    async fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        let mut inner = self.inner()?;
        if let Some(old) = inner.tasks.remove(id) {
            let (stale, fresh) = index::task_change(Some(&old), None)?;
            inner.reindex(stale, fresh);
        }
        Ok(())
    }

    async fn claim_task(
        &self,
        lease: &TaskLease,
        per_project: u64,
        now: Timestamp,
    ) -> Result<Option<TaskRecord>, MetaError> {
        let _claiming = self
            .claims
            .lock()
            .map_err(|_| MetaError::Backend("memory store poisoned by a panic".to_owned()))?;
        // The index is read a step at a time (each step takes the lock); the records are
        // then read, chosen from and claimed under the one lock.
        let ids = query::unfinished_tasks(self)?;
        let mut inner = self.inner()?;
        let mut choice = ClaimChoice::new(&lease.node, per_project);
        for task in ids.iter().filter_map(|id| inner.tasks.get(id)) {
            choice.offer(task);
        }
        let Some(task) = choice
            .chosen()
            .and_then(|id| inner.tasks.get(id))
            .and_then(|t| claimed(t, lease, now))
        else {
            return Ok(None);
        };
        inner.put_task(&task)?;
        Ok(Some(task))
    }

    async fn renew_lease(
        &self,
        id: &str,
        node: &str,
        until: Timestamp,
        charged: u64,
    ) -> Result<bool, MetaError> {
        let mut inner = self.inner()?;
        match renewed(inner.tasks.get(id), node, until, charged) {
            Some(task) => inner.put_task(&task).map(|()| true),
            None => Ok(false),
        }
    }

    async fn take_back(
        &self,
        task: &TaskRecord,
        expired: Option<&TaskLease>,
    ) -> Result<bool, MetaError> {
        let mut inner = self.inner()?;
        if !may_take_back(inner.tasks.get(&task.id), task, expired) {
            return Ok(false);
        }
        inner.put_task(task).map(|()| true)
    }

    async fn expired_leases(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        query::expired_leases(self, now, max)
    }

    async fn transition_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        let mut inner = self.inner()?;
        check_task_move(inner.tasks.get(&task.id), task)?;
        inner.put_task(task)
    }

    async fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        let mut inner = self.inner()?;
        check_task_move(inner.tasks.get(&task.id), task)?;
        inner.put_task(task)?;
        inner.put_image(image);
        Ok(())
    }

    async fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        self.inner()?.put_image(image);
        Ok(())
    }

    async fn insert_image(&self, image: &ImageRecord) -> Result<bool, MetaError> {
        let mut inner = self.inner()?;
        if inner.images.contains_key(&image.id) {
            return Ok(false);
        }
        inner.put_image(image);
        Ok(true)
    }

    async fn transition_image(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
    ) -> Result<Transition, MetaError> {
        self.inner()?.transition_image(id, expected, change, None)
    }

    async fn transition_image_with_task(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
        task: &TaskRecord,
    ) -> Result<Transition, MetaError> {
        self.inner()?
            .transition_image(id, expected, change, Some(task))
    }

    async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        Ok(self.inner()?.images.get(id).cloned())
    }

    async fn image_tasks(&self, image_id: &str) -> Result<Vec<TaskRecord>, MetaError> {
        let ids = query::image_task_ids(self, image_id)?;
        let inner = self.inner()?;
        Ok(ids
            .iter()
            .filter_map(|id| inner.tasks.get(id).cloned())
            .collect())
    }

    async fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        let mut inner = self.inner()?;
        if let Some(old) = inner.images.remove(id) {
            let (stale, fresh) = index::image_change(Some(&old), None);
            inner.reindex(stale, fresh);
        }
        inner.remove_image_members(id);
        Ok(())
    }

    async fn add_member(&self, member: &MemberRecord, max: usize) -> Result<AddMember, MetaError> {
        let mut inner = self.inner()?;
        let key = members::member_key(&member.image_id, &member.member_id);
        if inner.members.contains_key(&key) {
            return Ok(AddMember::Duplicate);
        }
        let (start, end) = members::image_range(&member.image_id);
        if inner.members.range(start..end).count() >= max {
            return Ok(AddMember::Full(max));
        }
        inner.members.insert(key, member.clone());
        inner.member_index.insert(members::member_index_key(
            &member.image_id,
            &member.member_id,
        ));
        Ok(AddMember::Added)
    }

    async fn update_member(&self, member: &MemberRecord) -> Result<bool, MetaError> {
        let mut inner = self.inner()?;
        let key = members::member_key(&member.image_id, &member.member_id);
        Ok(match inner.members.get_mut(&key) {
            Some(old) => {
                old.clone_from(member);
                true
            }
            None => false,
        })
    }

    async fn get_member(
        &self,
        image: &str,
        member: &str,
    ) -> Result<Option<MemberRecord>, MetaError> {
        let key = members::member_key(image, member);
        Ok(self.inner()?.members.get(&key).cloned())
    }

    async fn image_members(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError> {
        let (start, end) = members::image_range(image);
        Ok(self
            .inner()?
            .members
            .range(start..end)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn member_images(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError> {
        let inner = self.inner()?;
        let (start, end) = members::member_range(member);
        inner
            .member_index
            .range(start..end)
            .map(|key| {
                let image = members::image_of_index_key(member, key)?;
                inner
                    .members
                    .get(&members::member_key(&image, member))
                    .cloned()
                    .ok_or_else(|| MetaError::Decoding {
                        what: "member index entry",
                        key: String::from_utf8_lossy(key).into_owned(),
                        detail: "no member record".to_owned(),
                    })
            })
            .collect()
    }

    async fn delete_member(&self, image: &str, member: &str) -> Result<bool, MetaError> {
        Ok(self.inner()?.remove_member(image, member))
    }

    async fn list_task_page(&self, query: &TaskQuery<'_>) -> Result<Vec<TaskSummary>, MetaError> {
        query::task_page(self, query)
    }

    async fn list_image_page(&self, query: &ImageQuery<'_>) -> Result<Vec<ImageRecord>, MetaError> {
        query::image_page(self, query)
    }

    async fn expired_tasks(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        query::expired_tasks(self, now, max)
    }

    async fn unfinished_tasks(&self) -> Result<Vec<String>, MetaError> {
        query::unfinished_tasks(self)
    }

    async fn scan_images(
        &self,
        owner: Option<&str>,
        visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
    ) -> Result<(), MetaError> {
        query::scan_images(self, owner, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::conformance_suite;

    #[tokio::test]
    async fn test_memory_meta_conformance_suite_passes() {
        conformance_suite(&MemoryMeta::new()).await;
    }
}
