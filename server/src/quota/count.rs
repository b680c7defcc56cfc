//! `image_count_total` counted exactly. The images a project will have are its image records
//! plus its legacy import tasks not yet final (each makes one image when it commits; an
//! interoperable import, an upload or a stage fills a record that already counts). And a
//! request that adds an image (`POST /v2/tasks`, `POST /v2/images`) checks and writes under
//! its project's [`Reservation`], so two requests racing for the last image of the limit
//! cannot both pass (check-then-act).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::imports::API_IMAGE_IMPORT;
use crate::meta::{MetaError, TaskStatus};
use crate::state::AppState;

/// One lock per project with a request adding an image in flight (entries go with their
/// last holder).
#[derive(Debug, Default)]
pub struct Admissions {
    projects: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Admissions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // A few plain map operations per critical section: a poisoned lock holds a
        // consistent map.
        self.projects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for `project`'s reservation: held until the returned guard is dropped.
    pub async fn reserve(self: &Arc<Self>, project: &str) -> Reservation {
        let lock = Arc::clone(self.map().entry(project.to_owned()).or_default());
        let guard = lock.lock_owned().await;
        Reservation {
            admissions: Some(Arc::clone(self)),
            project: project.to_owned(),
            guard: Some(guard),
        }
    }
}

/// A project's right to check its `image_count_total` and write what the check admitted
/// (a task, an image record) before another request of the project checks.
#[derive(Debug)]
pub struct Reservation {
    admissions: Option<Arc<Admissions>>,
    project: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Reservation {
    /// A reservation that holds nothing (a project without a count limit).
    pub fn none() -> Reservation {
        Reservation {
            admissions: None,
            project: String::new(),
            guard: None,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(admissions) = &self.admissions else {
            return;
        };
        let mut map = admissions.map();
        // The map's Arc and this guard's: nobody else holds or waits for the lock.
        if map
            .get(&self.project)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            map.remove(&self.project);
        }
        drop(map);
        self.guard.take();
    }
}

/// The project's legacy import tasks not yet final, other than `asking`: each will make an
/// image. O(unfinished tasks of every project), bounded by `queue_capacity` plus the
/// workers (an index; never every task).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FutureImages {
    /// Waiting for a worker.
    pub pending: u64,
    /// Running.
    pub processing: u64,
}

impl FutureImages {
    /// Pending and processing.
    pub fn all(self) -> u64 {
        self.pending.saturating_add(self.processing)
    }
}

/// [`FutureImages`] of `project`.
///
/// # Errors
/// When the metadata cannot be read.
pub async fn future_images(
    state: &AppState,
    project: &str,
    asking: Option<&str>,
) -> Result<FutureImages, MetaError> {
    let m = state.meta.as_ref();
    let mut future = FutureImages::default();
    for id in m.unfinished_tasks().await? {
        if Some(id.as_str()) == asking {
            continue;
        }
        let Some(task) = m.get_task(&id).await? else {
            continue;
        };
        if task.owner != project || task.task_type == API_IMAGE_IMPORT {
            continue;
        }
        match task.status {
            TaskStatus::Pending => future.pending = future.pending.saturating_add(1),
            TaskStatus::Processing => future.processing = future.processing.saturating_add(1),
            TaskStatus::Success | TaskStatus::Failure => {}
        }
    }
    Ok(future)
}
