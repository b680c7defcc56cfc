//! Self-fencing before the store commit: an import whose right to write its image is held
//! elsewhere (the server's leases) proves it still holds it right before the commit makes
//! the image visible, so a writer that lost that right (cut off from the database past its
//! lease, while another node took the work back) never completes its upload over another
//! writer's object.

use crate::store::BoxFuture;

/// Asked once, after every byte is sent and right before the store commit, whether the
/// import may still make its image visible.
pub trait Fence: Send + Sync {
    /// Proves the right to commit for long enough to do it (the server renews its lease).
    ///
    /// # Errors
    /// A message fit for the task when it cannot be proved; the ingest then aborts its own
    /// upload (it never deletes the image's key, which may be another writer's now) and
    /// fails with [`IngestError::Fenced`](super::IngestError::Fenced).
    fn confirm(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// No fence: the caller is the only possible writer (a single node, a fresh id per run).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unfenced;

impl Fence for Unfenced {
    fn confirm(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
