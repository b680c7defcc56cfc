//! Bounded chunk queues from the ingest task (async) to a stage thread (blocking: a hasher,
//! the store writer, the converter) that wake each side in bursts instead of per chunk.
//!
//! With a per-chunk channel the stages of an upload run in lockstep once a hasher is the
//! bottleneck: each chunk the hasher takes frees one slot, which wakes the runtime thread
//! (an `epoll_wait` return, often the other idle runtime worker too), which reads one more
//! frame, fills the slot and sleeps again. A [`LaneSender`] blocked on a full queue is woken
//! here only once the queue has drained to half its capacity, and then refills it in one go;
//! a [`LaneReceiver`] that ran dry is woken only once `batch` chunks are queued (or the
//! sender is gone). The bound is a bounded channel's: at most `capacity` chunks queued, plus
//! the one the stage works on.
//!
//! Measured on 2 GiB raw uploads over loopback (`benches/upload_bench.py`, 2 cores): the
//! runtime threads' context switches went from ~10,500–11,400 to ~6,200–8,600 per GiB and the
//! store writer's from ~1,300–1,800 to ~750–850, and the idle time of the two cores during
//! an upload from 0.7–1.1 to 0.55–0.66 s/GiB; the ratio to the floor went from 0.67–0.68 to
//! 0.67–0.73 (two runs each, same conditions). What did not help, measured
//! the same way: hash queues of 32 chunks instead of 8, a write queue of 32, hyper reads of
//! 1–2 MiB instead of 408 KiB (`max_buf_size`), and hashing threads at nice 0.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// Chunks queued before a stage that is not the bottleneck (the store writer, the converter)
/// is woken: it then handles them in one go. A quarter of the queue (`WRITE_CHANNEL_CAPACITY`
/// 8) so the sender never waits on it. Memory is unchanged (the queue's bound).
pub(crate) const LANE_WAKE_BATCH: usize = 2;

/// The receiving stage has stopped (its [`LaneReceiver`] was dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the receiving stage has stopped")]
pub(crate) struct LaneClosed;

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The receiver sleeps here while the queue is empty.
    filled: Condvar,
    /// The sender awaits this while the queue is full.
    drained: Notify,
    capacity: usize,
    /// The waiting sender is woken when the queue is down to this many chunks.
    refill_at: usize,
    /// The sleeping receiver is woken when this many chunks are queued.
    batch: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    receiver_sleeping: bool,
    sender_waiting: bool,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue of at most `capacity` chunks (at least 1) whose receiver is woken from sleep once
/// `batch` chunks are queued (clamped to `1..=capacity`) and whose sender is woken from a full
/// queue once it is down to half (module docs).
pub(crate) fn channel(capacity: usize, batch: usize) -> (LaneSender, LaneReceiver) {
    let capacity = capacity.max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity),
            ..State::default()
        }),
        filled: Condvar::new(),
        drained: Notify::new(),
        capacity,
        refill_at: capacity / 2,
        batch: batch.clamp(1, capacity),
    });
    (
        LaneSender {
            shared: Arc::clone(&shared),
        },
        LaneReceiver { shared },
    )
}

/// The ingest task's end of a lane.
#[derive(Debug)]
pub(crate) struct LaneSender {
    shared: Arc<Shared>,
}

impl LaneSender {
    /// Queues `chunk`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`LaneClosed`] when the receiver is gone (the chunk is dropped).
    pub(crate) async fn send(&self, chunk: Bytes) -> Result<(), LaneClosed> {
        let mut chunk = Some(chunk);
        loop {
            // Created before the check: a wake-up between the check and the await is kept as
            // a permit, not lost.
            let drained = self.shared.drained.notified();
            {
                let mut state = self.shared.lock();
                if state.receiver_gone {
                    return Err(LaneClosed);
                }
                if state.queue.len() < self.shared.capacity {
                    if let Some(chunk) = chunk.take() {
                        state.queue.push_back(chunk);
                    }
                    if state.receiver_sleeping && state.queue.len() >= self.shared.batch {
                        state.receiver_sleeping = false;
                        drop(state);
                        self.shared.filled.notify_one();
                    }
                    return Ok(());
                }
                state.sender_waiting = true;
            }
            drained.await;
        }
    }
}

impl Drop for LaneSender {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.filled.notify_one();
    }
}

/// The stage thread's end of a lane.
#[derive(Debug)]
pub(crate) struct LaneReceiver {
    shared: Arc<Shared>,
}

impl LaneReceiver {
    /// The next chunk, blocking the calling thread while the queue is empty; `None` once the
    /// sender is gone and the queue is empty. Never call it from an async task.
    pub(crate) fn blocking_recv(&mut self) -> Option<Bytes> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        loop {
            if let Some(chunk) = state.queue.pop_front() {
                if state.sender_waiting && state.queue.len() <= shared.refill_at {
                    state.sender_waiting = false;
                    drop(state);
                    shared.drained.notify_one();
                }
                return Some(chunk);
            }
            if state.sender_gone {
                return None;
            }
            state.receiver_sleeping = true;
            while state.receiver_sleeping && !state.sender_gone {
                state = shared
                    .filled
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.receiver_sleeping = false;
        }
    }
}

impl Drop for LaneReceiver {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.queue)
        };
        // Free the chunks outside the lock, then let a waiting sender see the lane closed.
        drop(queued);
        self.shared.drained.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn chunk(i: u8) -> Bytes {
        Bytes::from(vec![i; 3])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_lane_delivers_every_chunk_in_order_then_ends() {
        for batch in [1, 3, 8] {
            let (tx, mut rx) = channel(4, batch);
            let consumer = std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(c) = rx.blocking_recv() {
                    got.push(c[0]);
                }
                got
            });
            for i in 0..200u8 {
                tx.send(chunk(i)).await.unwrap();
            }
            drop(tx);
            let got = tokio::task::spawn_blocking(move || consumer.join().unwrap())
                .await
                .unwrap();
            assert_eq!(got, (0..200u8).collect::<Vec<_>>(), "batch {batch}");
        }
    }

    #[tokio::test]
    async fn test_lane_full_queue_waits_until_half_drained() {
        let (tx, mut rx) = channel(4, 1);
        for i in 0..4 {
            tx.send(chunk(i)).await.unwrap();
        }
        let mut blocked = std::pin::pin!(tx.send(chunk(4)));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut blocked)
                .await
                .is_err(),
            "a full queue took another chunk"
        );
        // One taken: still above half, the sender sleeps on; two taken: it is woken.
        assert_eq!(rx.blocking_recv().unwrap()[0], 0);
        assert_eq!(rx.blocking_recv().unwrap()[0], 1);
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap();
        for want in 2..5 {
            assert_eq!(rx.blocking_recv().unwrap()[0], want);
        }
    }

    #[tokio::test]
    async fn test_lane_receiver_gone_fails_a_waiting_sender() {
        let (tx, rx) = channel(2, 1);
        tx.send(chunk(0)).await.unwrap();
        tx.send(chunk(1)).await.unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(rx);
        });
        assert_eq!(tx.send(chunk(2)).await, Err(LaneClosed));
        assert_eq!(tx.send(chunk(3)).await, Err(LaneClosed));
        dropper.join().unwrap();
    }

    #[tokio::test]
    async fn test_lane_batched_receiver_gets_a_short_tail_at_the_end() {
        let (tx, mut rx) = channel(8, 4);
        let consumer = std::thread::spawn(move || {
            let mut got = 0;
            while rx.blocking_recv().is_some() {
                got += 1;
            }
            got
        });
        for i in 0..2 {
            tx.send(chunk(i)).await.unwrap();
        }
        drop(tx);
        let got = tokio::task::spawn_blocking(move || consumer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(got, 2);
    }
}
