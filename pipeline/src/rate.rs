//! The minimum transfer rate of an import's source, like curl's `--speed-limit` and
//! `--speed-time`: a source that delivers fewer than `bytes_per_sec × window` bytes during a
//! window fails with [`SourceError::TooSlow`] (reason `source_too_slow`), so a trickle of one
//! byte a second cannot hold an import worker for ever.
//!
//! The guard wraps any [`ChunkSource`] and runs on a timer, not on chunk arrival: a source
//! that sends nothing at all trips it at the end of the window just the same.
//!
//! Only time spent *waiting for the source* counts towards a window. While the import is
//! busy downstream (hashing gigabytes of zeros a tiny qcow2 maps, a slow disk), the socket is
//! not read and the source cannot be blamed for it; those pauses stop the clock.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::source::{ChunkSource, SourceError};

/// Default minimum rate: 1 KiB/s. A dial-up line does more; a deliberate trickle does less.
pub const DEFAULT_MIN_RATE_BYTES_PER_SEC: u64 = 1024;

/// Default window over which the rate is measured: 60 s, curl's usual `--speed-time` and as
/// long as the HTTP source's idle timeout, so that a brief network hiccup never fails an
/// import.
pub const DEFAULT_MIN_RATE_WINDOW: Duration = Duration::from_secs(60);

/// The minimum rate a source must keep up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second; 0 turns the guard off.
    pub bytes_per_sec: u64,
    /// The window the rate is averaged over (source-waiting time); zero turns the guard off.
    pub window: Duration,
}

impl Default for MinRate {
    fn default() -> Self {
        MinRate {
            bytes_per_sec: DEFAULT_MIN_RATE_BYTES_PER_SEC,
            window: DEFAULT_MIN_RATE_WINDOW,
        }
    }
}

impl MinRate {
    /// Whether the guard checks anything.
    fn enabled(&self) -> bool {
        self.bytes_per_sec > 0 && !self.window.is_zero()
    }

    /// Bytes a window must deliver: `bytes_per_sec × window`, rounded down to whole bytes.
    fn bytes_per_window(&self) -> u64 {
        let millis = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        self.bytes_per_sec.saturating_mul(millis) / 1000
    }
}

/// The current window's tally (kept apart from the source so that it can be updated while a
/// read of the source is pending).
#[derive(Debug, Default)]
struct Window {
    /// Time spent waiting for the source in this window.
    waited: Duration,
    /// Bytes received in this window.
    received: u64,
    /// Bytes received before this window.
    offset: u64,
}

impl Window {
    /// Ends the window if its time is up: fails when it fell short of the rate, else starts
    /// the next one.
    fn close_if_elapsed(&mut self, rate: &MinRate) -> Result<(), SourceError> {
        if self.waited < rate.window {
            return Ok(());
        }
        if self.received < rate.bytes_per_window() {
            return Err(SourceError::TooSlow {
                received: self.received,
                window_secs: rate.window.as_secs(),
                min_bytes_per_sec: rate.bytes_per_sec,
                offset: self.offset,
            });
        }
        self.offset = self.offset.saturating_add(self.received);
        self.received = 0;
        self.waited = Duration::ZERO;
        Ok(())
    }
}

/// A [`ChunkSource`] that fails with [`SourceError::TooSlow`] when `inner` falls below a
/// [`MinRate`] over a window.
#[derive(Debug)]
pub struct RateGuard<S> {
    inner: S,
    rate: MinRate,
    window: Window,
}

impl<S: ChunkSource> RateGuard<S> {
    /// Guards `inner` with `rate`.
    pub fn new(inner: S, rate: MinRate) -> Self {
        RateGuard {
            inner,
            rate,
            window: Window::default(),
        }
    }
}

impl<S: ChunkSource> ChunkSource for RateGuard<S> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        if !self.rate.enabled() {
            return self.inner.next_chunk().await;
        }
        let rate = self.rate;
        let window = &mut self.window;
        // One read of the source, kept across window boundaries (never dropped half-way).
        let mut read = std::pin::pin!(self.inner.next_chunk());
        loop {
            let started = Instant::now();
            let left = rate.window.saturating_sub(window.waited);
            tokio::select! {
                biased;
                chunk = &mut read => {
                    window.waited = window.waited.saturating_add(started.elapsed());
                    let chunk = chunk?;
                    let Some(chunk) = chunk else {
                        // End of stream: a short last window is no fault.
                        return Ok(None);
                    };
                    let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                    window.received = window.received.saturating_add(n);
                    window.close_if_elapsed(&rate)?;
                    return Ok(Some(chunk));
                }
                () = tokio::time::sleep(left) => {
                    window.waited = rate.window;
                    window.close_if_elapsed(&rate)?;
                }
            }
        }
    }

    fn content_length(&self) -> Option<u64> {
        self.inner.content_length()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A source that yields each chunk after its delay (virtual time), then ends.
    struct Timed(VecDeque<(Duration, usize)>);

    impl ChunkSource for Timed {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
            match self.0.pop_front() {
                Some((delay, len)) => {
                    tokio::time::sleep(delay).await;
                    Ok(Some(Bytes::from(vec![7u8; len])))
                }
                None => Ok(None),
            }
        }

        fn content_length(&self) -> Option<u64> {
            None
        }
    }

    /// A source that never sends anything.
    struct Silent;

    impl ChunkSource for Silent {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
            std::future::pending().await
        }

        fn content_length(&self) -> Option<u64> {
            Some(100)
        }
    }

    fn rate(bytes_per_sec: u64, window_secs: u64) -> MinRate {
        MinRate {
            bytes_per_sec,
            window: Duration::from_secs(window_secs),
        }
    }

    /// Reads `source` to the end; returns the bytes read and the virtual time it took.
    async fn drain(mut source: impl ChunkSource) -> (Result<u64, SourceError>, Duration) {
        let start = Instant::now();
        let mut total = 0u64;
        loop {
            match source.next_chunk().await {
                Ok(Some(c)) => total += c.len() as u64,
                Ok(None) => return (Ok(total), start.elapsed()),
                Err(e) => return (Err(e), start.elapsed()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn test_rate_guard_one_byte_a_second_fails_at_the_window_end() {
        let trickle = Timed((0..1000).map(|_| (Duration::from_secs(1), 1)).collect());
        let (result, took) = drain(RateGuard::new(trickle, rate(1024, 10))).await;
        assert!(
            matches!(
                result,
                Err(SourceError::TooSlow {
                    received: 9..=10,
                    window_secs: 10,
                    min_bytes_per_sec: 1024,
                    offset: 0
                })
            ),
            "{result:?}"
        );
        assert_eq!(took, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn test_rate_guard_silent_source_fails_on_the_timer() {
        let (result, took) = drain(RateGuard::new(Silent, rate(1, 5))).await;
        assert!(
            matches!(result, Err(SourceError::TooSlow { received: 0, .. })),
            "{result:?}"
        );
        assert_eq!(took, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn test_rate_guard_source_at_the_rate_passes() {
        // 1 KiB every second for 30 s: exactly the rate, window after window.
        let steady = Timed((0..30).map(|_| (Duration::from_secs(1), 1024)).collect());
        let (result, _) = drain(RateGuard::new(steady, rate(1024, 10))).await;
        assert_eq!(result.unwrap(), 30 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn test_rate_guard_stall_after_a_fast_start_fails_in_the_next_window() {
        let chunks = [(Duration::ZERO, 1 << 20), (Duration::from_secs(3600), 1)];
        let (result, took) = drain(RateGuard::new(Timed(chunks.into()), rate(1024, 10))).await;
        assert!(
            matches!(
                result,
                Err(SourceError::TooSlow {
                    received: 0,
                    offset: 1_048_576,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(took, Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn test_rate_guard_time_spent_downstream_does_not_count() {
        let mut guard = RateGuard::new(
            Timed((0..5).map(|_| (Duration::from_millis(100), 2048)).collect()),
            rate(1024, 1),
        );
        while let Some(_chunk) = guard.next_chunk().await.unwrap() {
            // The consumer takes an hour per chunk: the source is not to blame.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn test_rate_guard_zero_rate_is_off() {
        let trickle = Timed((0..3).map(|_| (Duration::from_secs(3600), 1)).collect());
        let (result, _) = drain(RateGuard::new(trickle, rate(0, 1))).await;
        assert_eq!(result.unwrap(), 3);
    }
}
