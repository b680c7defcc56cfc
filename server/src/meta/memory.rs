//! An in-memory [`MetaStore`] for tests: two maps behind mutexes, nothing persisted.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{ImageRecord, MetaError, MetaStore, TaskRecord};

/// Tasks and images in two ordered maps keyed by id. [`MetaStore::commit_import`] holds both
/// locks (always tasks first, then images) so readers never see half of it.
#[derive(Debug, Default)]
pub struct MemoryMeta {
    tasks: Mutex<BTreeMap<String, TaskRecord>>,
    images: Mutex<BTreeMap<String, ImageRecord>>,
}

impl MemoryMeta {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tasks(&self) -> Result<MutexGuard<'_, BTreeMap<String, TaskRecord>>, MetaError> {
        self.tasks
            .lock()
            .map_err(|_| MetaError::Backend("memory task map poisoned by a panic".to_owned()))
    }

    fn images(&self) -> Result<MutexGuard<'_, BTreeMap<String, ImageRecord>>, MetaError> {
        self.images
            .lock()
            .map_err(|_| MetaError::Backend("memory image map poisoned by a panic".to_owned()))
    }
}

impl MetaStore for MemoryMeta {
    fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        self.tasks()?.insert(task.id.clone(), task.clone());
        Ok(())
    }

    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        Ok(self.tasks()?.get(id).cloned())
    }

    fn list_tasks(&self) -> Result<Vec<TaskRecord>, MetaError> {
        Ok(self.tasks()?.values().cloned().collect())
    }

    fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        self.tasks()?.remove(id);
        Ok(())
    }

    fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        let mut tasks = self.tasks()?;
        let mut images = self.images()?;
        tasks.insert(task.id.clone(), task.clone());
        images.insert(image.id.clone(), image.clone());
        Ok(())
    }

    fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        self.images()?.insert(image.id.clone(), image.clone());
        Ok(())
    }

    fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        Ok(self.images()?.get(id).cloned())
    }

    fn list_images(&self) -> Result<Vec<ImageRecord>, MetaError> {
        Ok(self.images()?.values().cloned().collect())
    }

    fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        self.images()?.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::conformance_suite;

    #[test]
    fn test_memory_meta_conformance_suite_passes() {
        conformance_suite(&MemoryMeta::new());
    }
}
