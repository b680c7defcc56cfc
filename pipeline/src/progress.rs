//! Live counters of one import, shared between the pipeline and whoever reports progress:
//! bytes in (from the source) and out (written to the store), the source's announced length,
//! and a rate over the last seconds with the ETA it gives.
//!
//! The rate is measured over [`RATE_WINDOW`]: the pipeline records a sample of the bytes
//! received at most once per [`SAMPLE_INTERVAL`] (one clock read per chunk, a lock once a
//! second), and a reader divides the bytes received since the newest sample at least a
//! window old (else the start) by the time since. A stalled source therefore shows a rate
//! falling towards zero and no ETA, not its last good speed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Span the rate is measured over: long enough to smooth TCP bursts and the pipeline's
/// batching, short enough that a slowdown shows within seconds.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Least time between two samples: bounds the samples kept to `RATE_WINDOW / SAMPLE_INTERVAL
/// + 2` and the sampling cost to one short lock a second.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept: enough that one is always at least a window old once the import is.
const MAX_SAMPLES: usize = 12;

/// One reading of a [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Bytes received from the source.
    pub received: u64,
    /// The length the source announced, when it did.
    pub total: Option<u64>,
    /// Bytes written to the store (after conversion, when converting).
    pub stored: u64,
    /// Bytes received per second over the last [`RATE_WINDOW`] (since the start while the
    /// import is younger); `None` in its first millisecond.
    pub rate: Option<u64>,
    /// Seconds left at `rate`, when the total is known and data is flowing.
    pub eta_secs: Option<u64>,
}

/// Live counters of one import, shared with whoever reports progress.
#[derive(Debug)]
pub struct Progress {
    received: AtomicU64,
    /// `u64::MAX`: unknown.
    total: AtomicU64,
    /// Shared with the pipeline's store-writing thread.
    stored: Arc<AtomicU64>,
    started: Instant,
    /// Milliseconds since `started` of the newest sample.
    sampled_ms: AtomicU64,
    /// `(milliseconds since started, bytes received)`, oldest first; starts with `(0, 0)`.
    samples: Mutex<VecDeque<(u64, u64)>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            received: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
            stored: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            sampled_ms: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::from([(0, 0)])),
        }
    }
}

impl Progress {
    /// Bytes received from the source so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The length the source announced, when it did.
    pub fn total(&self) -> Option<u64> {
        let t = self.total.load(Ordering::Relaxed);
        (t != u64::MAX).then_some(t)
    }

    /// Bytes written to the store so far (after conversion, when converting).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// The counters read together, the rate and ETA computed from the same bytes received.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.elapsed_ms();
        let received = self.received();
        let total = self.total();
        let rate = self.rate_at(now, received);
        let eta_secs = match (total, rate) {
            (Some(total), Some(rate)) if rate > 0 => {
                Some(total.saturating_sub(received).div_ceil(rate))
            }
            _ => None,
        };
        Snapshot {
            received,
            total,
            stored: self.stored(),
            rate,
            eta_secs,
        }
    }

    /// Bytes received per second over the last [`RATE_WINDOW`] before `now` (since the start
    /// while the import is younger), `received` being the count at `now`; `None` in the
    /// import's first millisecond.
    fn rate_at(&self, now: u64, received: u64) -> Option<u64> {
        let (at, base) = {
            let samples = self.lock_samples();
            let window = u64::try_from(RATE_WINDOW.as_millis()).unwrap_or(u64::MAX);
            samples
                .iter()
                .rev()
                .find(|(t, _)| now.saturating_sub(*t) >= window)
                .or_else(|| samples.front())
                .copied()?
        };
        let span = now.saturating_sub(at);
        if span == 0 {
            return None;
        }
        let bytes = u128::from(received.saturating_sub(base));
        let per_sec = bytes.saturating_mul(1000).checked_div(u128::from(span))?;
        u64::try_from(per_sec).ok()
    }

    pub(crate) fn set_total(&self, total: Option<u64>) {
        self.total
            .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn set_received(&self, n: u64) {
        self.received.store(n, Ordering::Relaxed);
        let now = self.elapsed_ms();
        let last = self.sampled_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(SAMPLE_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= interval
            && self
                .sampled_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut samples = self.lock_samples();
            samples.push_back((now, n));
            while samples.len() > MAX_SAMPLES {
                samples.pop_front();
            }
        }
    }

    /// The counter of bytes stored, for the thread that writes them.
    pub(crate) fn stored_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.stored)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock_samples(&self) -> MutexGuard<'_, VecDeque<(u64, u64)>> {
        // Every critical section is a push or a read: a poisoned lock holds consistent data.
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_progress_rate_and_eta_follow_the_bytes_received() {
        let p = Progress::default();
        p.set_total(Some(1_000_000));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.snapshot().eta_secs, None, "nothing received yet");
        std::thread::sleep(Duration::from_millis(50));
        p.set_received(100_000);
        let s = p.snapshot();
        let rate = s.rate.expect("rate");
        assert!(rate > 0, "{s:?}");
        assert_eq!(s.eta_secs, Some(900_000u64.div_ceil(rate)));
    }

    #[test]
    fn test_progress_without_total_has_no_eta() {
        let p = Progress::default();
        std::thread::sleep(Duration::from_millis(5));
        p.set_received(10);
        let s = p.snapshot();
        assert!(s.rate.is_some());
        assert_eq!(s.eta_secs, None);
    }
}
