//! The import executor: a bounded queue, a fixed pool of workers, a per-project limit on
//! concurrent imports, and the state changes of each task.
//!
//! Imports run on the shared tokio runtime but hash on dedicated threads (see
//! `sluice_pipeline::hash`), so API requests keep getting runtime time while imports run.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use crate::imports;
use crate::state::AppState;

/// A task waiting for a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    task_id: String,
    owner: String,
}

/// Live progress of one running import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskProgress {
    /// Bytes received from the source so far.
    pub bytes_received: u64,
    /// The source's announced length, when it sent one.
    pub bytes_total: Option<u64>,
}

/// The queue is full; the client should retry later (HTTP 503).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the import queue is full ({0} tasks waiting); retry later")]
pub struct QueueFull(pub usize);

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Job>,
    running: HashMap<String, usize>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    capacity: usize,
    per_project: usize,
    wake: Notify,
    progress: Mutex<HashMap<String, Arc<sluice_pipeline::Progress>>>,
    shutdown: watch::Sender<bool>,
}

/// Handle to the executor; cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    inner: Arc<Inner>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the executor's
/// structures stay consistent because every critical section is a few plain assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Executor {
    /// An executor with room for `capacity` waiting tasks and `per_project` concurrent imports
    /// per project. Workers start with [`Executor::start`].
    pub fn new(capacity: usize, per_project: usize) -> Self {
        let (shutdown, _) = watch::channel(false);
        Executor {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                capacity,
                per_project,
                wake: Notify::new(),
                progress: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    /// Queues a pending task.
    ///
    /// # Errors
    /// [`QueueFull`] when `capacity` tasks are already waiting.
    pub fn submit(&self, task_id: &str, owner: &str) -> Result<(), QueueFull> {
        let mut q = lock(&self.inner.queue);
        if q.waiting.len() >= self.inner.capacity {
            return Err(QueueFull(q.waiting.len()));
        }
        q.waiting.push_back(Job {
            task_id: task_id.to_owned(),
            owner: owner.to_owned(),
        });
        drop(q);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Progress of a running import, if it is running.
    pub fn progress(&self, task_id: &str) -> Option<TaskProgress> {
        let map = lock(&self.inner.progress);
        map.get(task_id).map(|p| TaskProgress {
            bytes_received: p.received(),
            bytes_total: p.total(),
        })
    }

    /// Starts `workers` worker tasks on the current runtime.
    pub fn start(&self, state: &AppState, workers: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|_| {
                let exec = self.clone();
                let state = state.clone();
                tokio::spawn(async move { exec.worker(state).await })
            })
            .collect()
    }

    /// Asks workers to stop taking jobs and running imports to cancel (their tasks fail
    /// with "interrupted"); the caller then awaits the worker handles.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.wake.notify_waiters();
    }

    /// A receiver that turns `true` on shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Takes the first waiting job whose project is below its concurrency limit.
    fn take_job(&self) -> Option<Job> {
        let mut q = lock(&self.inner.queue);
        let per_project = self.inner.per_project;
        let Queue { waiting, running } = &mut *q;
        let idx = waiting
            .iter()
            .position(|j| running.get(&j.owner).copied().unwrap_or(0) < per_project)?;
        let job = waiting.remove(idx)?;
        *running.entry(job.owner.clone()).or_insert(0) += 1;
        Some(job)
    }

    fn finish_job(&self, job: &Job) {
        let mut q = lock(&self.inner.queue);
        if let Some(n) = q.running.get_mut(&job.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                q.running.remove(&job.owner);
            }
        }
        drop(q);
        lock(&self.inner.progress).remove(&job.task_id);
        // A job of this project may now be runnable: let every idle worker look.
        self.inner.wake.notify_waiters();
    }

    async fn worker(self, state: AppState) {
        loop {
            if self.is_shutting_down() {
                return;
            }
            let notified = self.inner.wake.notified();
            let Some(job) = self.take_job() else {
                notified.await;
                continue;
            };
            let progress = Arc::new(sluice_pipeline::Progress::default());
            lock(&self.inner.progress).insert(job.task_id.clone(), Arc::clone(&progress));
            imports::run(&state, &job.task_id, progress, self.shutdown_signal()).await;
            self.finish_job(&job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executor_full_queue_is_refused() {
        let exec = Executor::new(2, 1);
        exec.submit("a", "p").unwrap();
        exec.submit("b", "p").unwrap();
        assert_eq!(exec.submit("c", "p"), Err(QueueFull(2)));
    }

    #[test]
    fn test_executor_project_limit_lets_other_projects_pass() {
        let exec = Executor::new(8, 1);
        exec.submit("a1", "a").unwrap();
        exec.submit("a2", "a").unwrap();
        exec.submit("b1", "b").unwrap();
        let first = exec.take_job().unwrap();
        assert_eq!(first.task_id, "a1");
        // Project a is at its limit: b1 overtakes a2.
        let second = exec.take_job().unwrap();
        assert_eq!(second.task_id, "b1");
        assert!(exec.take_job().is_none());
        exec.finish_job(&first);
        assert_eq!(exec.take_job().unwrap().task_id, "a2");
    }
}
