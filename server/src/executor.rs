//! The import executor: a bounded queue, a fixed pool of workers shared fairly between
//! projects, a per-project limit on concurrent imports and on waiting tasks, the bytes each
//! running import has charged to its project's quota, and the state changes of each task.
//!
//! # Fairness
//! Waiting tasks are queued per project, and a free worker serves the project with work
//! waiting that was *served least recently* (projects never served yet first, in the order
//! they arrived), skipping projects at their `per_project_imports` limit. With every project
//! waiting this is plain round-robin over projects; a project that keeps its queue full
//! delays another project's import by at most the imports already running, one worker slot.
//! Round-robin rather than deficit round-robin: an import's cost is not known when it is
//! dispatched (the source may not even announce a length), and running imports cannot be
//! preempted, so a deficit could only be charged after the fact; the deadline and the minimum
//! rate bound how long any one turn can take instead.
//!
//! Imports run on the shared tokio runtime but hash on dedicated threads (see
//! `sluice_pipeline::hash`), so API requests keep getting runtime time while imports run.
//!
//! # On a shared metadata store
//! With PostgreSQL the queue is the store's `pending` tasks, not this process's memory
//! ([`Executor::claiming`], `claiming.rs`): one claim loop per node takes tasks with
//! `claim_task` whenever a worker is free, whichever node received them; the store applies
//! the fairness above across nodes (the project with the fewest imports running anywhere
//! first) and the `per_project_imports` cap. A submission then only wakes the claim loop,
//! and the local queue stays empty: waiting tasks have no queue position here, and the
//! waiting caps are checked against the store before the task is written
//! (`quota::admit_queued`).
//!
//! # What it runs
//! The executor knows tasks only by id and owner: the workers hand each task to the job
//! function given to [`Executor::start`] (the server's `imports::run`), with the task's
//! [`Progress`] and cancel signal. It names neither the service state nor the imports, so
//! the modules form a DAG: `imports` → `state` → `executor`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_pipeline::Progress;
use tokio::sync::{watch, Notify};

mod claiming;
mod position;

pub use claiming::Claimed;
pub use position::QueuePosition;

/// A task waiting for a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    task_id: String,
    owner: String,
}

/// The queue is full; the client should retry later (HTTP 503).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the import queue is full ({0} tasks waiting); retry later")]
pub struct QueueFull(pub usize);

/// Why [`Executor::submit_capped`] refused a task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The project has this many imports in flight (waiting or running), its limit.
    #[error("the project has {0} imports in flight")]
    InFlight(u64),
    /// The project has this many tasks waiting, its limit.
    #[error("the project has {0} tasks waiting")]
    ProjectQueueFull(u64),
    /// The shared queue is full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
}

/// Per-project caps checked atomically when a task is queued (`None`: no cap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitCaps {
    /// Most tasks of the project waiting for a worker.
    pub waiting: Option<u64>,
    /// Most imports of the project waiting or running.
    pub in_flight: Option<u64>,
}

/// What a project has in the executor right now (for its quotas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Tasks waiting for a worker.
    pub waiting: u64,
    /// Imports running (counting the one asking, when a running import asks).
    pub running: u64,
    /// Bytes charged by the running imports (other than the one asking): this node's, plus,
    /// on a shared store, the other nodes' as last read ([`Executor::set_charged_elsewhere`]).
    pub charged: u64,
    /// Bytes stored by this project's imports that finished while the project had work in
    /// the executor: a running import's snapshot of the stored usage plus the growth of this
    /// counter since the snapshot is the stored usage now.
    pub committed: u64,
}

/// One project's share of the executor; dropped when it has nothing waiting or running.
#[derive(Debug, Default)]
struct Project {
    waiting: VecDeque<String>,
    running: u64,
    /// The value of `Queue::turns` when the project last got a worker (0: never).
    last_served: u64,
    /// The value of `Queue::arrivals` when the project became active (ties among projects
    /// never served).
    arrived: u64,
    /// See [`InFlight::committed`].
    committed: u64,
    /// Direct uploads running (they need no worker: the request carries the bytes).
    uploading: u64,
}

impl Project {
    /// Whether the project has nothing waiting or running (its entry can go).
    fn is_idle(&self) -> bool {
        self.running == 0 && self.uploading == 0 && self.waiting.is_empty()
    }
}

/// A running import's owner and charge.
#[derive(Debug)]
struct Running {
    owner: String,
    charged: u64,
}

#[derive(Debug, Default)]
struct Queue {
    projects: HashMap<String, Project>,
    running: HashMap<String, Running>,
    waiting: usize,
    turns: u64,
    arrivals: u64,
    /// Per project, what its imports on other nodes have charged, as last read from the
    /// shared store; only projects with a charge there.
    elsewhere: HashMap<String, u64>,
}

impl Queue {
    /// The project's entry, created (as the latest arrival) when it has none.
    fn project(&mut self, owner: &str) -> &mut Project {
        let arrivals = &mut self.arrivals;
        self.projects.entry(owner.to_owned()).or_insert_with(|| {
            *arrivals = arrivals.saturating_add(1);
            Project {
                arrived: *arrivals,
                ..Project::default()
            }
        })
    }

    fn in_flight(&self, owner: &str, asking: Option<&str>) -> InFlight {
        let elsewhere = self.elsewhere.get(owner).copied().unwrap_or(0);
        let Some(p) = self.projects.get(owner) else {
            return InFlight {
                charged: elsewhere,
                ..InFlight::default()
            };
        };
        let charged = self
            .running
            .iter()
            .filter(|(id, r)| r.owner == owner && Some(id.as_str()) != asking)
            .fold(elsewhere, |sum, (_, r)| sum.saturating_add(r.charged));
        InFlight {
            waiting: u64::try_from(p.waiting.len()).unwrap_or(u64::MAX),
            running: p.running.saturating_add(p.uploading),
            charged,
            committed: p.committed,
        }
    }
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    capacity: usize,
    per_project: usize,
    /// Tasks come from the shared store's claims, not from `queue` (see the module docs).
    claiming: bool,
    wake: Notify,
    /// The live counters of each running import and upload.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    /// The cancel signal of each running import ([`Executor::cancel`], shutdown).
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
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
        Self::with_mode(capacity, per_project, false)
    }

    /// An executor whose workers claim their tasks from a shared metadata store (module
    /// docs, "On a shared metadata store"): start it with
    /// [`start_claiming`](Self::start_claiming).
    pub fn claiming(per_project: usize) -> Self {
        Self::with_mode(1, per_project, true)
    }

    fn with_mode(capacity: usize, per_project: usize, claiming: bool) -> Self {
        let (shutdown, _) = watch::channel(false);
        Executor {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                capacity,
                per_project,
                claiming,
                wake: Notify::new(),
                progress: Mutex::new(HashMap::new()),
                cancels: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    /// Queues a pending task with no per-project cap (tasks admitted before a restart).
    ///
    /// # Errors
    /// [`QueueFull`] when `capacity` tasks are already waiting.
    pub fn submit(&self, task_id: &str, owner: &str) -> Result<(), QueueFull> {
        self.submit_capped(task_id, owner, SubmitCaps::default())
            .map_err(|e| match e {
                Refused::QueueFull(full) => full,
                // No caps were given.
                Refused::InFlight(n) | Refused::ProjectQueueFull(n) => {
                    QueueFull(usize::try_from(n).unwrap_or(usize::MAX))
                }
            })
    }

    /// Queues a pending task unless the shared queue or the project's `caps` are full. A
    /// claiming executor only wakes its claim loop: the task is already in the store, where
    /// any node claims it (the caller checked the caps against the store).
    ///
    /// # Errors
    /// See [`Refused`].
    pub fn submit_capped(
        &self,
        task_id: &str,
        owner: &str,
        caps: SubmitCaps,
    ) -> Result<(), Refused> {
        if self.inner.claiming {
            self.inner.wake.notify_one();
            return Ok(());
        }
        let mut q = lock(&self.inner.queue);
        if q.waiting >= self.inner.capacity {
            return Err(QueueFull(q.waiting).into());
        }
        let now = q.in_flight(owner, None);
        if caps.waiting.is_some_and(|cap| now.waiting >= cap) {
            return Err(Refused::ProjectQueueFull(now.waiting));
        }
        let in_flight = now.waiting.saturating_add(now.running);
        if caps.in_flight.is_some_and(|cap| in_flight >= cap) {
            return Err(Refused::InFlight(in_flight));
        }
        q.project(owner).waiting.push_back(task_id.to_owned());
        q.waiting = q.waiting.saturating_add(1);
        drop(q);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// What `owner` has in the executor; `asking` (a running import of `owner`) leaves its
    /// own charge out.
    pub fn in_flight(&self, owner: &str, asking: Option<&str>) -> InFlight {
        lock(&self.inner.queue).in_flight(owner, asking)
    }

    /// Raises the bytes running import `task_id` has charged to its project to `bytes`, if
    /// `check` (given what the project's *other* imports hold) allows it; atomic with respect
    /// to the other imports' charges.
    ///
    /// # Errors
    /// `check`'s error; the charge is then unchanged.
    pub fn try_charge<E>(
        &self,
        task_id: &str,
        bytes: u64,
        check: impl FnOnce(&InFlight) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = lock(&self.inner.queue);
        let Some(owner) = q.running.get(task_id).map(|r| r.owner.clone()) else {
            // Not a running import (a test calling the pipeline directly): nothing to track.
            return Ok(());
        };
        check(&q.in_flight(&owner, Some(task_id)))?;
        if let Some(r) = q.running.get_mut(task_id) {
            r.charged = r.charged.max(bytes);
        }
        Ok(())
    }

    /// Records what `owner`'s imports and uploads on other nodes have charged, as just read
    /// from the shared store ([`crate::meta::MetaStore::charged_elsewhere`]): counted in
    /// [`InFlight::charged`] until the next reading.
    pub fn set_charged_elsewhere(&self, owner: &str, bytes: u64) {
        let mut q = lock(&self.inner.queue);
        if bytes == 0 {
            q.elsewhere.remove(owner);
        } else {
            q.elsewhere.insert(owner.to_owned(), bytes);
        }
    }

    /// The bytes running import (task id) or upload (image id) `id` has charged so far; 0
    /// when it does not run here.
    pub fn charged(&self, id: &str) -> u64 {
        lock(&self.inner.queue)
            .running
            .get(id)
            .map_or(0, |r| r.charged)
    }

    /// Tasks waiting in the queue and imports running now (for `/metrics`).
    pub fn load(&self) -> (usize, usize) {
        let q = lock(&self.inner.queue);
        (q.waiting, q.running.len())
    }

    /// The live counters of a running import (by task id) or upload (by image id).
    pub fn progress(&self, id: &str) -> Option<Arc<Progress>> {
        lock(&self.inner.progress).get(id).cloned()
    }

    /// Starts `workers` worker tasks on the current runtime, each running one task at a time
    /// through `job(task_id, progress, cancel)`, which resolves to the bytes the task stored
    /// (for the project's quota), if it stored any. `cancel` turns `true` on
    /// [`cancel`](Self::cancel) and [`shutdown`](Self::shutdown).
    pub fn start<J, F>(&self, workers: usize, job: J) -> Vec<tokio::task::JoinHandle<()>>
    where
        J: Fn(String, Arc<Progress>, watch::Receiver<bool>) -> F + Clone + Send + 'static,
        F: Future<Output = Option<u64>> + Send + 'static,
    {
        (0..workers)
            .map(|_| {
                let exec = self.clone();
                let job = job.clone();
                tokio::spawn(async move { exec.worker(job).await })
            })
            .collect()
    }

    /// Asks workers to stop taking jobs and running imports to cancel (their tasks fail
    /// with "interrupted"); the caller then awaits the worker handles.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        for cancel in lock(&self.inner.cancels).values() {
            cancel.send_replace(true);
        }
        self.inner.wake.notify_waiters();
    }

    /// Stops running import `task_id` (its image was deleted): the import ends as on
    /// shutdown, and the task decides how to word it. Returns whether it was running.
    pub fn cancel(&self, task_id: &str) -> bool {
        lock(&self.inner.cancels)
            .get(task_id)
            .is_some_and(|cancel| {
                cancel.send_replace(true);
                true
            })
    }

    /// A receiver that turns `true` on shutdown (for uploads, which run outside the
    /// workers).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Takes the next job: from the least recently served project with a task waiting and
    /// room under its concurrency limit (module docs, "Fairness").
    fn take_job(&self) -> Option<Job> {
        let mut q = lock(&self.inner.queue);
        let per_project = u64::try_from(self.inner.per_project).unwrap_or(u64::MAX);
        let owner = q
            .projects
            .iter()
            .filter(|(_, p)| !p.waiting.is_empty() && p.running < per_project)
            .min_by_key(|(_, p)| (p.last_served, p.arrived))
            .map(|(owner, _)| owner.clone())?;
        q.turns = q.turns.saturating_add(1);
        let turn = q.turns;
        let project = q.projects.get_mut(&owner)?;
        let task_id = project.waiting.pop_front()?;
        project.running = project.running.saturating_add(1);
        project.last_served = turn;
        q.waiting = q.waiting.saturating_sub(1);
        q.running.insert(
            task_id.clone(),
            Running {
                owner: owner.clone(),
                charged: 0,
            },
        );
        Some(Job { task_id, owner })
    }

    /// Ends a job; `stored` is the size of the image it committed, if it did.
    fn finish_job(&self, job: &Job, stored: Option<u64>) {
        let mut q = lock(&self.inner.queue);
        q.running.remove(&job.task_id);
        if let Some(p) = q.projects.get_mut(&job.owner) {
            p.running = p.running.saturating_sub(1);
            p.committed = p.committed.saturating_add(stored.unwrap_or(0));
            if p.is_idle() {
                q.projects.remove(&job.owner);
            }
        }
        drop(q);
        lock(&self.inner.progress).remove(&job.task_id);
        lock(&self.inner.cancels).remove(&job.task_id);
        // A job of this project may now be runnable: let every idle worker look.
        self.inner.wake.notify_waiters();
    }

    /// Counts a direct upload of image `image_id` as an import running for `owner` (its
    /// quotas and charges, not a worker) unless the project has `in_flight_cap` imports
    /// waiting or running already; the slot ends when the returned guard is dropped.
    ///
    /// # Errors
    /// [`Refused::InFlight`] at the cap.
    pub fn start_upload(
        &self,
        image_id: &str,
        owner: &str,
        in_flight_cap: Option<u64>,
    ) -> Result<UploadSlot, Refused> {
        let mut q = lock(&self.inner.queue);
        let now = q.in_flight(owner, None);
        let in_flight = now.waiting.saturating_add(now.running);
        if in_flight_cap.is_some_and(|cap| in_flight >= cap) {
            return Err(Refused::InFlight(in_flight));
        }
        let project = q.project(owner);
        project.uploading = project.uploading.saturating_add(1);
        q.running.insert(
            image_id.to_owned(),
            Running {
                owner: owner.to_owned(),
                charged: 0,
            },
        );
        drop(q);
        let progress = Arc::new(Progress::default());
        lock(&self.inner.progress).insert(image_id.to_owned(), Arc::clone(&progress));
        Ok(UploadSlot {
            executor: self.clone(),
            image_id: image_id.to_owned(),
            owner: owner.to_owned(),
            stored: 0,
            progress,
        })
    }

    /// The live counters and the cancel signal of job `task_id`, starting now.
    fn register(&self, task_id: &str) -> (Arc<Progress>, watch::Receiver<bool>) {
        let progress = Arc::new(Progress::default());
        lock(&self.inner.progress).insert(task_id.to_owned(), Arc::clone(&progress));
        let (cancel, cancelled) = watch::channel(false);
        lock(&self.inner.cancels).insert(task_id.to_owned(), cancel);
        if self.is_shutting_down() {
            // Shutdown began before the signal was registered.
            self.cancel(task_id);
        }
        (progress, cancelled)
    }

    async fn worker<J, F>(self, job_fn: J)
    where
        J: Fn(String, Arc<Progress>, watch::Receiver<bool>) -> F,
        F: Future<Output = Option<u64>>,
    {
        loop {
            if self.is_shutting_down() {
                return;
            }
            let notified = self.inner.wake.notified();
            let Some(job) = self.take_job() else {
                notified.await;
                continue;
            };
            let (progress, cancelled) = self.register(&job.task_id);
            let stored = job_fn(job.task_id.clone(), progress, cancelled).await;
            self.finish_job(&job, stored);
        }
    }
}

/// A direct upload counted by the executor ([`Executor::start_upload`]); ends when dropped.
#[derive(Debug)]
pub struct UploadSlot {
    executor: Executor,
    image_id: String,
    owner: String,
    stored: u64,
    progress: Arc<Progress>,
}

impl UploadSlot {
    /// The upload's live counters, as [`Executor::progress`] shows them.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The upload stored `bytes`: they count as committed for the project's running imports
    /// once the slot ends (see [`InFlight::committed`]).
    pub fn stored(&mut self, bytes: u64) {
        self.stored = bytes;
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut q = lock(&self.executor.inner.queue);
        q.running.remove(&self.image_id);
        if let Some(p) = q.projects.get_mut(&self.owner) {
            p.uploading = p.uploading.saturating_sub(1);
            p.committed = p.committed.saturating_add(self.stored);
            if p.is_idle() {
                q.projects.remove(&self.owner);
            }
        }
        drop(q);
        lock(&self.executor.inner.progress).remove(&self.image_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executor_upload_slots_count_as_imports_in_flight_without_a_worker() {
        let exec = Executor::new(8, 1);
        exec.submit("a1", "a").unwrap();
        let mut up = exec.start_upload("img1", "a", Some(2)).unwrap();
        assert_eq!(
            exec.start_upload("img2", "a", Some(2)).unwrap_err(),
            Refused::InFlight(2)
        );
        // The upload takes no worker slot: the project's task still runs.
        let job = exec.take_job().unwrap();
        assert_eq!(job.task_id, "a1");
        exec.finish_job(&job, None);
        // Its charge counts against the project's other imports.
        let other = exec.start_upload("img3", "a", None).unwrap();
        exec.try_charge("img1", 70, |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(exec.in_flight("a", Some("img3")).charged, 70);
        up.stored(70);
        drop(up);
        let now = exec.in_flight("a", Some("img3"));
        assert_eq!((now.running, now.charged, now.committed), (1, 0, 70));
        drop(other);
        assert_eq!(exec.in_flight("a", None), InFlight::default());
    }

    #[test]
    fn test_executor_upload_progress_is_shown_while_the_slot_lives() {
        let exec = Executor::new(8, 1);
        let slot = exec.start_upload("img1", "a", None).unwrap();
        let shown = exec.progress("img1").unwrap();
        assert!(std::ptr::eq(shown.as_ref(), slot.progress()));
        drop(slot);
        assert!(exec.progress("img1").is_none());
    }

    #[test]
    fn test_executor_cancel_reaches_only_a_running_import() {
        let exec = Executor::new(2, 1);
        let (tx, rx) = watch::channel(false);
        lock(&exec.inner.cancels).insert("a".into(), tx);
        assert!(!exec.cancel("b"));
        assert!(!*rx.borrow());
        assert!(exec.cancel("a"));
        assert!(*rx.borrow());
    }

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
        exec.finish_job(&first, None);
        assert_eq!(exec.take_job().unwrap().task_id, "a2");
    }

    #[test]
    fn test_executor_project_with_full_queue_delays_another_by_one_slot_at_most() {
        let exec = Executor::new(8, 1);
        for id in ["a1", "a2", "a3"] {
            exec.submit(id, "a").unwrap();
        }
        let running = exec.take_job().unwrap();
        assert_eq!(running.task_id, "a1");
        exec.submit("b1", "b").unwrap();
        exec.finish_job(&running, None);
        assert_eq!(exec.take_job().unwrap().task_id, "b1");
    }

    #[test]
    fn test_executor_projects_take_turns_round_robin() {
        let exec = Executor::new(16, 4);
        for id in ["a1", "a2", "a3"] {
            exec.submit(id, "a").unwrap();
        }
        for id in ["b1", "b2"] {
            exec.submit(id, "b").unwrap();
        }
        exec.submit("c1", "c").unwrap();
        let order: Vec<String> = std::iter::from_fn(|| exec.take_job())
            .map(|j| j.task_id)
            .collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
    }

    #[test]
    fn test_executor_project_caps_refuse_only_that_project() {
        let exec = Executor::new(4, 1);
        let caps = SubmitCaps {
            waiting: Some(2),
            in_flight: None,
        };
        exec.submit_capped("a1", "a", caps).unwrap();
        let a1 = exec.take_job().unwrap();
        exec.submit_capped("a2", "a", caps).unwrap();
        exec.submit_capped("a3", "a", caps).unwrap();
        assert_eq!(
            exec.submit_capped("a4", "a", caps),
            Err(Refused::ProjectQueueFull(2))
        );
        exec.submit_capped("b1", "b", caps).unwrap();
        let in_flight = SubmitCaps {
            waiting: None,
            in_flight: Some(3),
        };
        assert_eq!(
            exec.submit_capped("a4", "a", in_flight),
            Err(Refused::InFlight(3))
        );
        exec.finish_job(&a1, None);
        exec.submit_capped("a4", "a", in_flight).unwrap();
        assert_eq!(exec.submit("x", "x"), Err(QueueFull(4)));
        assert_eq!(
            exec.in_flight("a", None),
            InFlight {
                waiting: 3,
                ..InFlight::default()
            }
        );
    }

    #[test]
    fn test_executor_charges_are_checked_against_the_other_imports_of_the_project() {
        let exec = Executor::new(8, 2);
        for id in ["a1", "a2"] {
            exec.submit(id, "a").unwrap();
        }
        let a1 = exec.take_job().unwrap();
        let a2 = exec.take_job().unwrap();
        let limit = |bytes: u64| {
            move |f: &InFlight| (f.charged + bytes <= 100).then_some(()).ok_or(f.charged)
        };
        assert_eq!(exec.try_charge("a1", 60, limit(60)), Ok(()));
        assert_eq!(exec.try_charge("a2", 50, limit(50)), Err(60));
        assert_eq!(exec.try_charge("a2", 40, limit(40)), Ok(()));
        // a1 commits its 60 bytes: they move from charged to committed.
        exec.finish_job(&a1, Some(60));
        let now = exec.in_flight("a", Some("a2"));
        assert_eq!((now.running, now.charged, now.committed), (1, 0, 60));
        exec.finish_job(&a2, None);
        assert_eq!(exec.in_flight("a", None), InFlight::default());
    }

    #[test]
    fn test_executor_charges_elsewhere_count_until_read_again() {
        let exec = Executor::new(8, 2);
        exec.submit("a1", "a").unwrap();
        let a1 = exec.take_job().unwrap();
        // Other nodes' imports of project `a` hold 70 bytes; of an idle project, 5.
        exec.set_charged_elsewhere("a", 70);
        exec.set_charged_elsewhere("idle", 5);
        assert_eq!(exec.in_flight("idle", None).charged, 5);
        let limit = |bytes: u64| {
            move |f: &InFlight| (f.charged + bytes <= 100).then_some(()).ok_or(f.charged)
        };
        assert_eq!(exec.try_charge("a1", 40, limit(40)), Err(70));
        assert_eq!(exec.try_charge("a1", 30, limit(30)), Ok(()));
        assert_eq!(exec.charged("a1"), 30);
        assert_eq!(exec.in_flight("a", None).charged, 100);
        // Read again: the other nodes' imports finished.
        exec.set_charged_elsewhere("a", 0);
        assert_eq!(exec.try_charge("a1", 90, limit(90)), Ok(()));
        exec.finish_job(&a1, None);
        assert_eq!(exec.in_flight("a", None), InFlight::default());
        assert_eq!(exec.charged("a1"), 0);
    }
}
