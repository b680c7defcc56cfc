//! Dedicated threads for the per-byte work of an import (hashing, writing), run at a lower
//! scheduling priority so that heavy imports never starve the API: a request handler that
//! wakes up on the async runtime preempts them at once instead of waiting its turn among
//! several busy hashing threads.

use tokio::sync::oneshot;

/// The niceness of import threads. Under Linux's CFS a nice-10 thread weighs about a tenth
/// of a nice-0 one, so runtime threads (nice 0) get the CPU when they need it while imports
/// still use every idle cycle.
pub const BACKGROUND_NICE: i32 = 10;

/// A thread started by [`spawn`]; [`Background::join`] yields its result.
#[derive(Debug)]
pub(crate) struct Background<T> {
    rx: oneshot::Receiver<T>,
}

impl<T> Background<T> {
    /// Waits for the thread's result; `None` if it panicked.
    pub(crate) async fn join(self) -> Option<T> {
        self.rx.await.ok()
    }
}

/// Starts `f` on a new thread named `name` at [`BACKGROUND_NICE`].
///
/// # Errors
/// When the thread cannot be created.
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Background<T>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            // The receiver may be gone (the import was abandoned): nothing to report then.
            let _ = tx.send(f());
        })?;
    Ok(Background { rx })
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]; failure only costs latency.
pub(crate) fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
        tracing::debug!(error = %e, "cannot lower an import thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_background_thread_runs_niced_and_returns() {
        let nice = spawn("test-bg", || {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .unwrap()
        .join()
        .await;
        assert_eq!(nice, Some(BACKGROUND_NICE));
    }

    #[tokio::test]
    async fn test_background_thread_panic_is_none() {
        let r: Option<()> = spawn("test-bg-panic", || panic!("boom"))
            .unwrap()
            .join()
            .await;
        assert_eq!(r, None);
    }
}
