//! Claims and leases in PostgreSQL ([`super::MetaStore::claim_task`],
//! [`super::MetaStore::renew_lease`], [`super::MetaStore::expired_leases`], and the images'
//! [`super::MetaStore::expired_writers`]).
//!
//! A claim is one transaction. It first takes [`CLAIM_LOCK`] (`pg_advisory_xact_lock`), so
//! the claims of all nodes run one after another: the per-project cap is then exact (a
//! claim counts every earlier claim's `processing` task), where row locks alone would let
//! two nodes each see a project below its cap and both start one. A claim happens once per
//! import (an import runs for seconds to hours), and the locked part is one indexed read
//! and one row write: 2–4 ms a claim measured here with 2,000 tasks pending (PostgreSQL 15,
//! loopback), so about 250 claims a second for the whole cluster, far above the rate at
//! which imports that take seconds each can end. Then [`CHOOSE`] picks
//! the task ([`lease::ClaimChoice`] in SQL), the row is locked (`FOR UPDATE`: a transition
//! racing the claim waits or wins), the shared [`lease::claimed`] decides, and the task is
//! written in the same transaction. (The claimed record is computed in Rust, not by an
//! `UPDATE … WHERE id = (SELECT …)`, because the task is stored as its JSON; the row lock
//! makes the two the same.)

use deadpool_postgres::{GenericClient, Transaction};

use super::{locked_task, pg_error, to_i64, write_task};
use crate::meta::lease::{self, QueuedTasks, TaskLease, CLAIM_TRIES};
use crate::meta::{MetaError, TaskRecord, Timestamp, FORGET_NODES_AFTER};

/// `pg_advisory_xact_lock` key serialising claims across nodes (`b"sluicecl"` as a
/// big-endian integer, beside the migrations' `b"sluicemg"`).
const CLAIM_LOCK: i64 = 0x736c_7569_6365_636c;

/// The task a claim by node `$1` under the per-project cap `$2` takes:
/// [`lease::ClaimChoice`]'s order exactly. The projects with pending tasks come from a skip
/// scan of `tasks_pending_by_owner` (one index probe per project, not a read of every pending
/// task); per project, its oldest pending task the node may run (the same index, in order)
/// and its processing count (`tasks_processing_by_owner`); the project with the fewest below
/// the cap wins, the oldest task among equals. So a claim costs O(projects waiting), however
/// many tasks each has queued.
const CHOOSE: &str = "WITH RECURSIVE owners(owner) AS (
        (SELECT owner FROM tasks WHERE status = 'pending' ORDER BY owner LIMIT 1)
        UNION ALL
        SELECT (SELECT t.owner FROM tasks t WHERE t.status = 'pending' AND t.owner > o.owner
                ORDER BY t.owner LIMIT 1)
        FROM owners o WHERE o.owner IS NOT NULL
    )
    SELECT h.id FROM owners o
    CROSS JOIN LATERAL (
        SELECT t.id, t.created_at FROM tasks t
        WHERE t.status = 'pending' AND t.owner = o.owner
            AND (t.pinned_node IS NULL OR t.pinned_node = $1)
        ORDER BY t.created_at, t.id LIMIT 1
    ) h
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM tasks r WHERE r.status = 'processing' AND r.owner = o.owner
    ) r
    WHERE o.owner IS NOT NULL AND r.n < $2
    ORDER BY r.n, h.created_at, h.id
    LIMIT 1";

/// [`super::MetaStore::claim_task`] in `tx`.
pub(super) async fn claim(
    tx: &Transaction<'_>,
    held: &TaskLease,
    per_project: u64,
    now: Timestamp,
) -> Result<Option<TaskRecord>, MetaError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
        .await
        .map_err(|e| pg_error("taking the claim lock", &e))?;
    let cap = i64::try_from(per_project).unwrap_or(i64::MAX);
    for _ in 0..CLAIM_TRIES {
        let row = tx
            .query_opt(CHOOSE, &[&held.node, &cap])
            .await
            .map_err(|e| pg_error("choosing a pending task", &e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.get(0);
        let current = locked_task(tx, &id).await?;
        // A task that moved since the choice (deleted, failed) is not claimed: choose again.
        if let Some(task) = current.and_then(|t| lease::claimed(&t, held, now)) {
            write_task(tx, &task).await?;
            return Ok(Some(task));
        }
    }
    Ok(None)
}

/// [`super::MetaStore::renew_lease`] in `tx`.
pub(super) async fn renew(
    tx: &Transaction<'_>,
    id: &str,
    node: &str,
    until: Timestamp,
    charged: u64,
) -> Result<bool, MetaError> {
    let current = locked_task(tx, id).await?;
    match lease::renewed(current.as_ref(), node, until, charged) {
        Some(task) => write_task(tx, &task).await.map(|()| true),
        None => Ok(false),
    }
}

/// [`super::MetaStore::take_back`] in `tx`.
pub(super) async fn take_back(
    tx: &Transaction<'_>,
    task: &TaskRecord,
    expired: Option<&TaskLease>,
) -> Result<bool, MetaError> {
    let current = locked_task(tx, &task.id).await?;
    if !lease::may_take_back(current.as_ref(), task, expired) {
        return Ok(false);
    }
    write_task(tx, task).await.map(|()| true)
}

/// [`super::MetaStore::expired_leases`]: a range of the `tasks_by_lease` index.
pub(super) async fn expired(
    client: &impl GenericClient,
    now: Timestamp,
    max: usize,
) -> Result<Vec<String>, MetaError> {
    ids_up_to(
        client,
        "SELECT id FROM tasks
             WHERE status = 'processing' AND lease_until IS NOT NULL AND lease_until <= $1
             ORDER BY lease_until, id LIMIT $2",
        now,
        max,
        "reading expired leases",
    )
    .await
}

/// Runs `sql`, which selects ids for the time `$1` and the row limit `$2`; `what` names the
/// read in its error.
async fn ids_up_to(
    client: &impl GenericClient,
    sql: &str,
    now: Timestamp,
    max: usize,
    what: &str,
) -> Result<Vec<String>, MetaError> {
    let rows = client
        .query(sql, &[&now, &to_i64(max)])
        .await
        .map_err(|e| pg_error(what, &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// [`super::MetaStore::expired_writers`]: a range of the `images_by_writer` index (only
/// images `saving` or `uploading` under a writer lease have a `writer_until`).
pub(super) async fn expired_writers(
    client: &impl GenericClient,
    now: Timestamp,
    max: usize,
) -> Result<Vec<String>, MetaError> {
    ids_up_to(
        client,
        "SELECT id FROM images
             WHERE writer_until IS NOT NULL AND writer_until <= $1
             ORDER BY writer_until, id LIMIT $2",
        now,
        max,
        "reading expired writer leases",
    )
    .await
}

/// [`super::MetaStore::writing_images`]: at most `max` rows of the
/// `images_writing_by_owner` partial index.
pub(super) async fn writing_images(
    client: &impl GenericClient,
    owner: &str,
    max: u64,
) -> Result<u64, MetaError> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let row = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM images
             WHERE owner = $1 AND writer_until IS NOT NULL LIMIT $2) w",
            &[&owner, &max],
        )
        .await
        .map_err(|e| pg_error("counting the images being written", &e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// [`super::MetaStore::beat`]: one row per node, and the rows of nodes gone for
/// [`FORGET_NODES_AFTER`] that no image is staged on deleted.
pub(super) async fn beat(
    client: &impl GenericClient,
    node: &str,
    until: Timestamp,
) -> Result<(), MetaError> {
    client
        .execute(
            "INSERT INTO nodes (id, alive_until) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET alive_until = $2",
            &[&node, &until],
        )
        .await
        .map_err(|e| pg_error("writing this node's heartbeat", &e))?;
    let forget = until.saturating_sub(FORGET_NODES_AFTER);
    client
        .execute(
            "DELETE FROM nodes n WHERE n.alive_until <= $1
             AND NOT EXISTS (SELECT 1 FROM images i WHERE i.staged_on = n.id)",
            &[&forget],
        )
        .await
        .map_err(|e| pg_error("forgetting the nodes long gone", &e))?;
    Ok(())
}

/// [`super::MetaStore::dead_stages`]: the rows of the `images_by_stage_node` index whose node's
/// heartbeat ended.
pub(super) async fn dead_stages(
    client: &impl GenericClient,
    now: Timestamp,
    max: usize,
) -> Result<Vec<String>, MetaError> {
    ids_up_to(
        client,
        "SELECT i.id FROM images i JOIN nodes n ON n.id = i.staged_on
             WHERE i.staged_on IS NOT NULL AND n.alive_until <= $1
             ORDER BY i.id LIMIT $2",
        now,
        max,
        "reading the stages of dead nodes",
    )
    .await
}

/// [`super::MetaStore::staged_elsewhere`]: the project's stages streaming in under another
/// node's writer lease (rows of `images_writing_by_owner`) and its complete stages on
/// another node (rows of `images_staged_by_owner`).
pub(super) async fn staged_elsewhere(
    client: &impl GenericClient,
    owner: &str,
    node: &str,
) -> Result<u64, MetaError> {
    let sql = "SELECT
        (SELECT coalesce(sum((record->'writer'->>'charged')::bigint), 0)::bigint
            FROM images WHERE owner = $1 AND writer_until IS NOT NULL
            AND record->>'status' = 'uploading'
            AND (record->'writer'->>'node') IS DISTINCT FROM $2),
        (SELECT coalesce(sum((record->>'staged_bytes')::bigint), 0)::bigint
            FROM images WHERE owner = $1 AND staged_on IS NOT NULL AND staged_on <> $2)";
    two_sums(
        client,
        sql,
        owner,
        node,
        "summing the stages of other nodes",
    )
    .await
}

/// [`super::MetaStore::charged_elsewhere`]: the charges in the leases of the project's
/// `processing` tasks and of its images being written (the rows of the partial indexes
/// `tasks_processing_by_owner` and `images_writing_by_owner`) whose holder is not `node`.
pub(super) async fn charged_elsewhere(
    client: &impl GenericClient,
    owner: &str,
    node: &str,
) -> Result<u64, MetaError> {
    let sql = "SELECT
        (SELECT coalesce(sum((record->'lease'->>'charged')::bigint), 0)::bigint
            FROM tasks WHERE status = 'processing' AND owner = $1
            AND (record->'lease'->>'node') IS DISTINCT FROM $2),
        (SELECT coalesce(sum((record->'writer'->>'charged')::bigint), 0)::bigint
            FROM images WHERE owner = $1 AND writer_until IS NOT NULL
            AND (record->'writer'->>'node') IS DISTINCT FROM $2)";
    two_sums(
        client,
        sql,
        owner,
        node,
        "summing the charges of other nodes' imports",
    )
    .await
}

/// Runs `sql`, which selects two `bigint` sums for project `$1` and node `$2`, and adds them;
/// `what` names the read in its error.
async fn two_sums(
    client: &impl GenericClient,
    sql: &str,
    owner: &str,
    node: &str,
    what: &str,
) -> Result<u64, MetaError> {
    let row = client
        .query_one(sql, &[&owner, &node])
        .await
        .map_err(|e| pg_error(what, &e))?;
    let sum = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(sum(0).saturating_add(sum(1)))
}

/// [`super::MetaStore::queued_tasks`]: three counts, each stopping at `max` rows of a partial
/// index (`tasks_pending`, `tasks_pending_by_owner`, `tasks_processing_by_owner`).
pub(super) async fn queued(
    client: &impl GenericClient,
    owner: &str,
    max: u64,
) -> Result<QueuedTasks, MetaError> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let row = client
        .query_one(
            "SELECT
                (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'pending'
                    LIMIT $2) a),
                (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'pending'
                    AND owner = $1 LIMIT $2) b),
                (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'processing'
                    AND owner = $1 LIMIT $2) c)",
            &[&owner, &max],
        )
        .await
        .map_err(|e| pg_error("counting queued tasks", &e))?;
    let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(QueuedTasks {
        pending: count(0),
        project_pending: count(1),
        project_processing: count(2),
    })
}
