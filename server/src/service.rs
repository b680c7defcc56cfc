//! `sluice serve`: open the data directory, recover from any crash, start the workers, the
//! expiry sweeper and the API, and shut all of it down gracefully on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_pipeline::store::LocalStore;

use crate::config::Config;
use crate::executor::Executor;
use crate::imports::{self, REASON_INTERRUPTED};
use crate::meta::rocks::RocksMeta;
use crate::meta::{MetaStore, TaskStatus};
use crate::state::AppState;

/// Runs the service until a termination signal.
///
/// # Errors
/// When the data directory, the metadata store or the listen address cannot be opened.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let meta: Arc<dyn MetaStore> = Arc::new(
        RocksMeta::open(&config.data_dir.join("meta")).context("opening the metadata store")?,
    );
    let store = Arc::new(LocalStore::open(&config.data_dir).context("opening the image store")?);
    let executor = Executor::new(config.queue_capacity, config.per_project_imports);
    let state = AppState {
        config: Arc::new(config),
        meta,
        store,
        executor: executor.clone(),
    };
    let requeued = recover(&state).context("recovering from the previous run")?;

    let listener = tokio::net::TcpListener::bind(state.config.bind)
        .await
        .with_context(|| format!("binding {}", state.config.bind))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %state.config.data_dir.display(),
        auth = ?state.config.auth.mode,
        "sluice listening"
    );
    let workers = executor.start(&state, state.config.workers);
    for task_id in requeued {
        if let Some(task) = state.meta.get_task(&task_id)? {
            let _ = executor.submit(&task.id, &task.owner);
        }
    }
    let sweeper = tokio::spawn(sweep_expired(state.clone()));

    crate::api::serve(listener, state.clone(), shutdown_signal()).await?;
    tracing::info!("shutting down: cancelling running imports");
    executor.shutdown();
    sweeper.abort();
    for worker in workers {
        let _ = worker.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Brings the data directory back to a consistent state after a crash or `kill -9`:
/// - partial uploads in `tmp/` are deleted;
/// - tasks left `processing` fail with a message saying they were interrupted;
/// - image records without their file are dropped, and files without a record deleted;
///
/// Returns the ids of tasks still `pending`, to queue again in creation order.
pub fn recover(state: &AppState) -> anyhow::Result<Vec<String>> {
    let swept = state.store.sweep_tmp()?;
    if swept > 0 {
        tracing::warn!(
            files = swept,
            "removed partial image files left by an interrupted run"
        );
    }
    let ttl = state.config.task_ttl();
    let mut pending = Vec::new();
    let mut tasks = state.meta.list_tasks()?;
    tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    for mut task in tasks {
        match task.status {
            TaskStatus::Processing => {
                imports::fail(
                    &mut task,
                    REASON_INTERRUPTED,
                    "import interrupted: the service stopped while this task was processing; \
                     create the task again"
                        .to_owned(),
                    ttl,
                );
                state.meta.put_task(&task)?;
                tracing::warn!(task_id = %task.id, "failed a task interrupted by a restart");
            }
            TaskStatus::Pending => pending.push(task.id),
            TaskStatus::Success | TaskStatus::Failure => {}
        }
    }
    let images = state.meta.list_images()?;
    let files = state.store.list_ids()?;
    for image in &images {
        if !files.contains(&image.id) {
            tracing::error!(image_id = %image.id, "image data missing: removing its record");
            state.meta.delete_image(&image.id)?;
        }
    }
    for id in files {
        if !images.iter().any(|i| i.id == id) {
            tracing::warn!(image_id = %id, "removing image data without a record");
            state.store.delete(&id)?;
        }
    }
    Ok(pending)
}

/// Deletes tasks whose `expires_at` has passed, every `sweep_interval_secs`.
async fn sweep_expired(state: AppState) {
    let period = Duration::from_secs(state.config.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let swept = imports::meta(&state, |m| {
            let now = imports::now();
            let mut n = 0usize;
            for task in m.list_tasks()? {
                if task.expires_at.is_some_and(|at| at <= now) {
                    m.delete_task(&task.id)?;
                    n = n.saturating_add(1);
                }
            }
            Ok(n)
        })
        .await;
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "deleted expired tasks"),
            Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
        }
    }
}
