//! The claim loop of a node on a shared metadata store (the executor's module docs, "On a
//! shared metadata store"): one loop per node, not one per worker, so an idle node asks the
//! database once per interval however many workers it has.
//!
//! While a worker is free the loop claims; a claim that finds nothing waits for the first
//! of: a local submission ([`Executor::submit_capped`] wakes it), the end of a running import
//! (a worker freed), the claim interval (tasks received by other nodes, requeued by a sweep,
//! or let through by their project's cap), shutdown. With every worker busy it only waits
//! for one to finish. Each claimed task runs in its own tokio task, counted in the queue's
//! running imports (quotas, progress, cancel) like a worker's job.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice_pipeline::Progress;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{lock, Executor, Job, Running};

/// A task a node claimed from the store, for the claim loop to run.
#[derive(Debug)]
pub struct Claimed<T> {
    /// The task's id.
    pub task_id: String,
    /// Its project.
    pub owner: String,
    /// What the job is given (the claimed record).
    pub task: T,
}

/// Ends a claimed job in the queue when dropped: when the job returns, and also when it
/// panics, so that a panicking import does not hold its project's slot for ever.
struct Finish {
    executor: Executor,
    job: Job,
    stored: Option<u64>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.executor.finish_job(&self.job, self.stored);
    }
}

impl Executor {
    /// Starts the claim loop (module docs) with `workers` imports at most at once: `claim`
    /// claims the next task from the store (`None`: none may be claimed now, or the store
    /// failed, which it logs), `job(task, progress, cancel)` runs one as
    /// [`start`](Self::start)'s jobs do. Returns the loop's handle, which ends after
    /// [`shutdown`](Self::shutdown) once the running imports have ended.
    pub fn start_claiming<C, CF, J, F, T>(
        &self,
        workers: usize,
        interval: Duration,
        claim: C,
        job: J,
    ) -> Vec<JoinHandle<()>>
    where
        C: Fn() -> CF + Send + 'static,
        CF: Future<Output = Option<Claimed<T>>> + Send + 'static,
        J: Fn(T, Arc<Progress>, watch::Receiver<bool>) -> F + Send + 'static,
        F: Future<Output = Option<u64>> + Send + 'static,
        T: Send + 'static,
    {
        let exec = self.clone();
        vec![tokio::spawn(async move {
            exec.claim_loop(workers, interval, claim, job).await;
        })]
    }

    /// Counts claimed task `task_id` of `owner` as running here.
    fn start_claimed(&self, task_id: &str, owner: &str) -> Job {
        let mut q = lock(&self.inner.queue);
        let project = q.project(owner);
        project.running = project.running.saturating_add(1);
        q.running.insert(
            task_id.to_owned(),
            Running {
                owner: owner.to_owned(),
                charged: 0,
            },
        );
        Job {
            task_id: task_id.to_owned(),
            owner: owner.to_owned(),
        }
    }

    /// Wakes the claim loop: tasks may be claimable now (a sweep requeued some).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    async fn claim_loop<C, CF, J, F, T>(self, workers: usize, interval: Duration, claim: C, job: J)
    where
        C: Fn() -> CF,
        CF: Future<Output = Option<Claimed<T>>>,
        J: Fn(T, Arc<Progress>, watch::Receiver<bool>) -> F,
        F: Future<Output = Option<u64>> + Send + 'static,
    {
        let mut running = JoinSet::new();
        let mut shutdown = self.shutdown_signal();
        while !self.is_shutting_down() {
            if running.len() >= workers {
                tokio::select! {
                    _ = running.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            // Registered before the claim: a submission during it is not missed.
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(claimed) = claim().await {
                let finish = Finish {
                    executor: self.clone(),
                    job: self.start_claimed(&claimed.task_id, &claimed.owner),
                    stored: None,
                };
                let (progress, cancel) = self.register(&claimed.task_id);
                let run = job(claimed.task, progress, cancel);
                running.spawn(async move {
                    let mut finish = finish;
                    finish.stored = run.await;
                });
                continue;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(interval) => {}
                Some(_) = running.join_next() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Shutdown cancelled the running imports: let them record how they ended.
        while running.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// The loop runs at most `workers` claimed tasks at once, asks again as soon as one
    /// ends, counts them as running imports of their project meanwhile, and stops after
    /// shutdown once they ended.
    #[tokio::test]
    async fn test_claim_loop_runs_at_most_workers_and_counts_them_running() {
        let exec = Executor::claiming(4);
        let pending: Arc<Mutex<VecDeque<&'static str>>> =
            Arc::new(Mutex::new(VecDeque::from(["t1", "t2", "t3"])));
        let (release, released) = watch::channel(0usize);
        let started = Arc::new(Mutex::new(Vec::new()));
        let handles = exec.start_claiming(
            2,
            Duration::from_secs(3600),
            {
                let pending = Arc::clone(&pending);
                move || {
                    let next = lock(&pending).pop_front();
                    async move {
                        next.map(|id| Claimed {
                            task_id: id.to_owned(),
                            owner: "p".to_owned(),
                            task: id,
                        })
                    }
                }
            },
            {
                let started = Arc::clone(&started);
                move |id: &'static str, _progress, _cancel| {
                    lock(&started).push(id);
                    let mut released = released.clone();
                    async move {
                        let _ = released.wait_for(|n| *n >= 1).await;
                        Some(0)
                    }
                }
            },
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&started).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Two workers: the third task is not claimed while both run.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*lock(&started), ["t1", "t2"]);
        assert_eq!(lock(&pending).len(), 1);
        assert_eq!(exec.in_flight("p", None).running, 2);
        assert!(exec.progress("t1").is_some());
        release.send_replace(1);
        while lock(&started).len() < 3 {
            assert!(std::time::Instant::now() < deadline, "t3 never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        exec.shutdown();
        for handle in handles {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("the loop stops")
                .expect("no panic");
        }
        assert_eq!(exec.in_flight("p", None).running, 0);
        assert!(exec.progress("t3").is_none());
    }

    /// A submission wakes an idle loop at once (the interval is an hour here).
    #[tokio::test]
    async fn test_claim_loop_submission_wakes_an_idle_loop() {
        let exec = Executor::claiming(4);
        let ready = Arc::new(Mutex::new(None::<&'static str>));
        let (done_tx, mut done) = watch::channel(false);
        let _handles = exec.start_claiming(
            1,
            Duration::from_secs(3600),
            {
                let ready = Arc::clone(&ready);
                move || {
                    let next = lock(&ready).take();
                    async move {
                        next.map(|id| Claimed {
                            task_id: id.to_owned(),
                            owner: "p".to_owned(),
                            task: (),
                        })
                    }
                }
            },
            move |(), _progress, _cancel| {
                done_tx.send_replace(true);
                async { None }
            },
        );
        // Let the loop find nothing and go idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
        *lock(&ready) = Some("t1");
        exec.submit("t1", "p")
            .expect("a claiming executor takes it");
        assert_eq!(exec.load(), (0, 0), "nothing waits in the local queue");
        tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d))
            .await
            .expect("the submission woke the loop")
            .expect("open");
        exec.shutdown();
    }
}
