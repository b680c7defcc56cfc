//! The quotas across nodes (issue #13): on a shared store (PostgreSQL) every node counts what
//! the others hold. The caps on waiting and running work are counted from the database before
//! a task, an upload or a stage is admitted ([`admit_queued`], `admit_upload_cluster`); the
//! bytes of `image_size_total` and `image_stage_total` in flight on other nodes are read from
//! their leases and records into this node's executor and staging ledger, at admission and
//! after each lease renewal of a running import, upload or stage ([`watch`]). An embedded
//! store has one node: nothing here reads anything.

use super::{uploading_over, Limit, ProjectLimits};
use crate::api::error::ApiError;
use crate::meta::QueuedTasks;
use crate::state::AppState;

/// What a running import, upload (or, with `stage`, stage) of `project` reads back after
/// each lease renewal ([`crate::takeover::LeaseFence::watching`]): on a shared store, the
/// other nodes' charges when the project's `image_size_total` is limited, and their stages
/// when its `image_stage_total` is; nothing on one node (its executor and ledger hold every
/// charge).
pub fn watch(state: &AppState, project: &str, stage: bool) -> crate::takeover::Watch {
    let mut watch = crate::takeover::Watch::default();
    if !state.meta.is_shared() {
        return watch;
    }
    let limits = state.config.quotas.for_project(project);
    if limits.image_size_total.get().is_some() {
        watch.charges = Some(project.to_owned());
    }
    if stage && limits.image_stage_total.get().is_some() {
        watch.stages = Some((
            project.to_owned(),
            std::sync::Arc::clone(state.staging.ledger()),
        ));
    }
    watch
}

/// On a shared store, when `limits` cap `image_size_total`: reads what the project's imports
/// and uploads on other nodes have charged (from their leases, as of their last renewals)
/// into the executor, so that the check that follows counts them beside this node's.
pub(super) async fn read_charged_elsewhere(
    state: &AppState,
    project: &str,
    limits: &ProjectLimits,
) -> Result<(), crate::meta::MetaError> {
    if limits.image_size_total.get().is_none() || !state.meta.is_shared() {
        return Ok(());
    }
    let node = state.config.node_id.as_deref().unwrap_or_default();
    let bytes = state.meta.charged_elsewhere(project, node).await?;
    state.executor.set_charged_elsewhere(project, bytes);
    Ok(())
}

/// On a shared store (PostgreSQL), before a new task is written: refuses it when the tasks
/// waiting on every node reach `queue_capacity` (503), the project's reach `tasks_waiting`
/// (503), or the project's imports waiting and running on every node, with the uploads
/// running here, reach `image_count_uploading` (413). Counted before the task is written, so
/// that no node can have claimed a task that is then refused; racing requests may each pass
/// (the caps are soft by the requests in flight). An embedded store checks the same caps
/// atomically in [`super::submit`] instead.
///
/// # Errors
/// [`ApiError::QueueFull`], [`ApiError::ProjectQueueFull`], [`ApiError::LimitExceeded`], or
/// an internal error when the metadata cannot be read.
pub async fn admit_queued(state: &AppState, project: &str) -> Result<(), ApiError> {
    if !state.meta.is_shared() {
        return Ok(());
    }
    let limits = state.config.quotas.for_project(project);
    let capacity = u64::try_from(state.config.queue_capacity).unwrap_or(u64::MAX);
    let (waiting_cap, in_flight_cap) = (
        limits.tasks_waiting.get(),
        limits.image_count_uploading.get(),
    );
    let max = [waiting_cap, in_flight_cap]
        .into_iter()
        .flatten()
        .fold(capacity, u64::max);
    let queued = state.meta.queued_tasks(project, max).await?;
    if queued.pending >= capacity {
        return Err(ApiError::QueueFull(
            usize::try_from(queued.pending).unwrap_or(usize::MAX),
        ));
    }
    if waiting_cap.is_some_and(|cap| queued.project_pending >= cap) {
        return Err(ApiError::ProjectQueueFull {
            project: project.to_owned(),
            waiting: queued.project_pending,
        });
    }
    match in_flight_cap {
        Some(cap) => cluster_uploading(state, project, &limits, cap, &queued).await,
        None => Ok(()),
    }
}

/// Refuses (413) a project whose tasks waiting and running (`queued`, counted up to at least
/// `cap`) and images being written, on every node, reach its `image_count_uploading` `cap`.
async fn cluster_uploading(
    state: &AppState,
    project: &str,
    limits: &ProjectLimits,
    cap: u64,
    queued: &QueuedTasks,
) -> Result<(), ApiError> {
    let in_flight = queued
        .project_pending
        .saturating_add(queued.project_processing)
        .saturating_add(state.meta.writing_images(project, cap).await?);
    if in_flight >= cap {
        return Err(uploading_over(project, limits, in_flight));
    }
    Ok(())
}

/// On a shared store, before an upload or a stage is admitted: refuses it (413) when the
/// project's imports waiting and running and its images being written, on every node, reach
/// `image_count_uploading`. Soft by the requests in flight, as [`admit_queued`]; this node's
/// own count is exact ([`crate::executor::Executor::start_upload`]).
///
/// # Errors
/// [`ApiError::LimitExceeded`], or an internal error when the metadata cannot be read.
pub(super) async fn admit_upload_cluster(
    state: &AppState,
    project: &str,
    limits: &ProjectLimits,
) -> Result<(), ApiError> {
    let Some(cap) = limits.image_count_uploading.get() else {
        return Ok(());
    };
    if !state.meta.is_shared() {
        return Ok(());
    }
    let queued = state.meta.queued_tasks(project, cap).await?;
    cluster_uploading(state, project, limits, cap, &queued).await
}

/// On a shared store, when `limit` caps `image_stage_total`: reads what the project has staged
/// on other nodes into the ledger, so that the check that follows counts it.
pub(super) async fn read_staged_elsewhere(
    state: &AppState,
    project: &str,
    limit: Limit,
) -> Result<(), crate::meta::MetaError> {
    if limit.get().is_none() || !state.meta.is_shared() {
        return Ok(());
    }
    let node = state.config.node_id.as_deref().unwrap_or_default();
    let bytes = state.meta.staged_elsewhere(project, node).await?;
    state.staging.ledger().set_elsewhere(project, bytes);
    Ok(())
}
