//! The periodic sweep every node runs (`sweep_interval_secs`): leases that ran out, expired
//! tasks, uploads abandoned by nodes that are gone, expired stages.

use std::sync::Arc;
use std::time::Duration;

use crate::imports;
use crate::meta::{MetaError, MetaStore, Timestamp};
use crate::state::AppState;
use crate::takeover;

/// Takes back tasks whose lease ran out and returns to `queued` images whose writer lease
/// ran out (a shared store: [`takeover::sweep_once`], [`takeover::sweep_writers_once`]), deletes
/// tasks whose `expires_at` has passed, aborts uploads abandoned by nodes that are gone
/// ([`sweep_abandoned`]), and deletes staged data older than `staging_ttl_secs`, every
/// `sweep_interval_secs`. On a shared store it first renews this node's heartbeat, and returns
/// to `queued` the images staged on nodes whose heartbeat ended
/// ([`takeover::sweep_dead_stages_once`]).
pub(super) async fn sweep_expired(state: AppState) {
    let period = Duration::from_secs(state.config.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(period);
    let node = state.config.node_id.as_deref().unwrap_or_default();
    let alive = takeover::heartbeat_secs(state.config.sweep_interval_secs, state.config.lease_secs);
    let alive = i64::try_from(alive).unwrap_or(i64::MAX);
    loop {
        tick.tick().await;
        // This node is alive (a shared store's sweeps tell its stages from a dead node's).
        if let Err(e) = state
            .meta
            .beat(node, imports::now().saturating_add(alive))
            .await
        {
            tracing::error!(error = %e, "writing this node's heartbeat failed");
        }
        let (now, max, ttl) = (
            imports::now(),
            state.config.max_import_attempts,
            state.config.task_ttl(),
        );
        match takeover::sweep_once(state.meta.as_ref(), state.store.as_ref(), now, max, ttl).await {
            // Back to `pending` in the shared store, where any node's claim loop finds
            // them; this node's looks at once.
            Ok(requeued) if !requeued.is_empty() => state.executor.wake(),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "lease sweep failed"),
        }
        // Images whose writer (a body upload or a stage) stopped renewing: back to `queued`.
        let writers = takeover::sweep_writers_once(
            state.meta.as_ref(),
            state.store.as_ref(),
            node,
            state.config.lease_secs,
            imports::now(),
        );
        if let Err(e) = writers.await {
            tracing::error!(error = %e, "writer lease sweep failed");
        }
        let stages =
            takeover::sweep_dead_stages_once(state.meta.as_ref(), node, imports::now(), ttl);
        if let Err(e) = stages.await {
            tracing::error!(error = %e, "sweep of dead nodes' stages failed");
        }
        let swept = sweep_expired_once(state.meta.as_ref(), imports::now()).await;
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "deleted expired tasks"),
            Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
        }
        sweep_abandoned(&state).await;
        let ttl = state.config.staging_ttl_secs;
        let expired = (state.staging)
            .expire(state.meta.as_ref(), ttl, imports::now())
            .await;
        match expired {
            Ok(0) => {}
            Ok(n) => tracing::info!(stages = n, "removed expired staged data"),
            Err(e) => tracing::error!(error = %e, "staging expiry sweep failed"),
        }
    }
}

/// Removes what writers of nodes that are gone left in a shared image store
/// ([`Store::sweep_abandoned`](sluice_pipeline::store::Store::sweep_abandoned): an object store's unfinished uploads older than
/// `abandon_after_secs`), so a node that dies and never starts again leaves no upload behind.
async fn sweep_abandoned(state: &AppState) {
    let store = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || store.sweep_abandoned()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!(
            uploads = n,
            "aborted unfinished uploads abandoned by nodes that did not come back"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "abandoned upload sweep failed"),
        Err(e) => tracing::error!(error = %e, "abandoned upload sweep panicked"),
    }
}

/// Expired task ids read per batch: bounds the sweeper's memory (36-byte ids) whatever the
/// number of tasks expiring at once, while reading the expiry index in few passes.
const SWEEP_BATCH: usize = 1000;

/// Deletes every task whose `expires_at` is at or before `now`, reading only the expiry
/// index, `SWEEP_BATCH` ids at a time; returns how many were deleted.
///
/// # Errors
/// The first metadata error (the tasks deleted before it stay deleted).
pub async fn sweep_expired_once(meta: &dyn MetaStore, now: Timestamp) -> Result<usize, MetaError> {
    let mut deleted = 0usize;
    loop {
        let due = meta.expired_tasks(now, SWEEP_BATCH).await?;
        for id in &due {
            meta.delete_task(id).await?;
            deleted = deleted.saturating_add(1);
        }
        if due.len() < SWEEP_BATCH {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::memory::MemoryMeta;
    use crate::meta::rocks::RocksMeta;
    use crate::meta::{sample_task, TaskRecord, TaskStatus};

    fn task(n: u32, status: TaskStatus, expires_at: Option<Timestamp>) -> TaskRecord {
        let mut task = sample_task(&format!("00000000-0000-4000-8000-{n:012}"));
        task.status = status;
        task.expires_at = expires_at;
        task
    }

    #[tokio::test]
    async fn test_sweep_expired_once_deletes_due_tasks_in_batches() {
        let meta = MemoryMeta::new();
        let due = u32::try_from(SWEEP_BATCH).unwrap() * 2 + 5;
        for n in 0..due {
            meta.put_task(&task(n, TaskStatus::Failure, Some(100 + i64::from(n % 7))))
                .await
                .unwrap();
        }
        meta.put_task(&task(9_000, TaskStatus::Success, Some(107)))
            .await
            .unwrap();
        meta.put_task(&task(9_001, TaskStatus::Pending, None))
            .await
            .unwrap();
        assert!(matches!(sweep_expired_once(&meta, 106).await, Ok(n) if n == due as usize));
        let left: Vec<String> = crate::meta::testing::all_tasks(&meta)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(
            left,
            [
                "00000000-0000-4000-8000-000000009000",
                "00000000-0000-4000-8000-000000009001"
            ]
        );
        assert!(matches!(sweep_expired_once(&meta, 107).await, Ok(1)));
        assert!(matches!(sweep_expired_once(&meta, 107).await, Ok(0)));
    }

    /// The sweeper reads only expired tasks: another task whose record cannot be decoded
    /// (today's full scan stopped at it, so nothing ever expired again) is not read.
    #[tokio::test]
    async fn test_sweep_expired_once_skips_unexpired_records() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RocksMeta::open(dir.path()).unwrap();
        meta.put_task(&task(1, TaskStatus::Failure, Some(100)))
            .unwrap();
        let broken = task(2, TaskStatus::Failure, Some(500));
        meta.put_task(&broken).unwrap();
        meta.corrupt_for_tests(&broken.id);
        assert!(matches!(sweep_expired_once(&meta, 200).await, Ok(1)));
        assert!(matches!(
            meta.get_task(&task(1, TaskStatus::Failure, None).id),
            Ok(None)
        ));
    }
}
