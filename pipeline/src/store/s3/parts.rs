//! [`PartPool`]: the node's part buffers, shared by every writer of one store.
//!
//! Two things a writer of its own cannot do:
//! - **A node-wide bound.** At most [`S3Config::node_parts_in_flight`] parts upload at once
//!   across all writers (each writer also keeps its own [`S3Config::parts_in_flight`]), so
//!   a store that lags holds `part_size × (writers + node_parts_in_flight)` bytes, not
//!   `part_size × writers × (parts_in_flight + 1)`. A slot is taken only to send a part,
//!   never while one fills, so a slow client holds its one filling buffer and no slot:
//!   writers wait for slots in arrival order, and only the store's speed decides how long.
//! - **Reuse.** A sent part's buffer comes back when its request ends (the body is a
//!   [`Bytes`] that owns the buffer) and fills again, instead of each part being fresh
//!   pages from the allocator (jemalloc serves 8 MiB allocations from an arena that
//!   unmaps them on free, so every new part page-faulted 8 MiB in). Returned buffers stay
//!   while any writer is open, at most one per open writer and slot; the last writer to
//!   close frees them.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The part buffers of one store (see the module documentation).
#[derive(Debug)]
pub(crate) struct PartPool {
    part_size: usize,
    /// One permit per part that may upload at once on this node.
    slots: Arc<Semaphore>,
    /// [`S3Config::node_parts_in_flight`].
    node_parts: usize,
    state: Mutex<Idle>,
}

/// What the pool holds between parts.
#[derive(Debug, Default)]
struct Idle {
    /// Writers open (holders of a [`Member`]).
    writers: usize,
    /// Emptied buffers of `part_size` capacity.
    free: Vec<Vec<u8>>,
}

impl PartPool {
    /// A pool of `part_size` buffers, `node_parts` of them uploading at most.
    pub(crate) fn new(part_size: usize, node_parts: usize) -> Arc<Self> {
        Arc::new(PartPool {
            part_size,
            slots: Arc::new(Semaphore::new(node_parts)),
            node_parts,
            state: Mutex::new(Idle::default()),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Idle> {
        // A panic elsewhere leaves a list of buffers, which is still a list of buffers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A writer's membership: buffers are kept for reuse while any is held.
    pub(crate) fn join(self: &Arc<Self>) -> Member {
        let mut idle = self.idle();
        idle.writers = idle.writers.saturating_add(1);
        drop(idle);
        Member(Arc::clone(self))
    }

    /// The node's upload slots: an owned permit of this semaphore goes with each part sent.
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }

    /// An empty buffer of `part_size` capacity.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.idle()
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.part_size))
    }

    /// Keeps `buf` for the next part while writers are open and the pool is not full.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.part_size {
            return;
        }
        let mut idle = self.idle();
        if idle.writers > 0 && idle.free.len() < idle.writers.saturating_add(self.node_parts) {
            buf.clear();
            idle.free.push(buf);
        }
    }

    /// `buf` as a request body that holds `slot` and returns the buffer here once the last
    /// reference to it is dropped (the request ended, retries included).
    pub(crate) fn seal(self: &Arc<Self>, buf: Vec<u8>, slot: OwnedSemaphorePermit) -> Bytes {
        Bytes::from_owner(Sealed {
            buf,
            pool: Arc::clone(self),
            _slot: slot,
        })
    }

    /// Buffers waiting for reuse (for tests).
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.idle().free.len()
    }
}

/// Held by an open writer (see [`PartPool::join`]).
#[derive(Debug)]
pub(crate) struct Member(Arc<PartPool>);

impl Member {
    /// The pool this writer belongs to.
    pub(crate) fn pool(&self) -> &Arc<PartPool> {
        &self.0
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut idle = self.0.idle();
        idle.writers = idle.writers.saturating_sub(1);
        if idle.writers == 0 {
            idle.free = Vec::new();
        }
    }
}

/// A part being sent: its buffer and its node slot, both released when the body drops.
struct Sealed {
    buf: Vec<u8>,
    pool: Arc<PartPool>,
    _slot: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_while_writers_are_open_and_go_with_the_last() {
        let pool = PartPool::new(16, 2);
        let writer = pool.join();
        let mut buf = pool.take();
        assert_eq!(buf.capacity(), 16);
        buf.extend_from_slice(b"part one");
        let ptr = buf.as_ptr();
        let slot = pool.slots().try_acquire_owned().unwrap();
        let body = pool.seal(buf, slot);
        assert_eq!(&body[..], b"part one");
        assert_eq!(pool.slots().available_permits(), 1, "the part holds a slot");
        let retry = body.clone();
        drop(body);
        assert_eq!(pool.free(), 0, "a clone still holds the buffer");
        drop(retry);
        assert_eq!(pool.slots().available_permits(), 2);
        assert_eq!(pool.free(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same buffer fills again");
        pool.give(again);
        drop(writer);
        assert_eq!(pool.free(), 0, "the last writer frees the buffers");
    }

    #[test]
    fn keeps_at_most_one_buffer_per_writer_and_slot() {
        let pool = PartPool::new(8, 1);
        let _writer = pool.join();
        for _ in 0..5 {
            pool.give(Vec::with_capacity(8));
        }
        assert_eq!(pool.free(), 2);
        pool.give(Vec::with_capacity(9));
        assert_eq!(pool.free(), 2, "a buffer of another size is not kept");
    }

    #[test]
    fn a_part_sent_after_the_last_writer_closed_is_freed() {
        let pool = PartPool::new(8, 1);
        let writer = pool.join();
        let slot = pool.slots().try_acquire_owned().unwrap();
        let body = pool.seal(pool.take(), slot);
        drop(writer);
        drop(body);
        assert_eq!(pool.free(), 0);
        assert_eq!(pool.slots().available_permits(), 1);
    }
}
