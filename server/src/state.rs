//! What every request handler and worker shares.

use std::sync::Arc;

use sluice_pipeline::store::Store;

use crate::config::Config;
use crate::executor::Executor;
use crate::meta::MetaStore;
use crate::staging::StagingArea;

/// Shared service state; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// Task and image metadata.
    pub meta: Arc<dyn MetaStore>,
    /// Image data.
    pub store: Arc<dyn Store>,
    /// Staged data of `glance-direct` imports.
    pub staging: Arc<StagingArea>,
    /// The import queue and workers.
    pub executor: Executor,
    /// Per-project reservations of requests that add an image (`image_count_total`).
    pub admissions: Arc<crate::quota::Admissions>,
}
