//! Claims and leases in PostgreSQL ([`super::MetaStore::claim_task`],
//! [`super::MetaStore::renew_lease`], [`super::MetaStore::expired_leases`]).
//!
//! A claim is one transaction: `SELECT … WHERE status = 'pending' ORDER BY created_at, id
//! LIMIT 1 FOR UPDATE SKIP LOCKED` (the `tasks_pending` index) locks the oldest pending task
//! no other transaction holds, the shared [`lease::claimed`] decides, and the task is written
//! in the same transaction. Racing nodes therefore never wait for each other's row and never
//! take the same task: a loser skips the locked row and takes the next, or finds none. (The
//! claimed record is computed in Rust, not by an `UPDATE … WHERE id = (SELECT …)`, because the
//! task is stored as its JSON; the row lock makes the two the same.)

use deadpool_postgres::{GenericClient, Transaction};

use super::{decode, locked_task, pg_error, to_i64, write_task};
use crate::meta::lease::{self, TaskLease};
use crate::meta::{MetaError, TaskRecord, Timestamp};

/// [`super::MetaStore::claim_task`] in `tx`.
pub(super) async fn claim(
    tx: &Transaction<'_>,
    held: &TaskLease,
    now: Timestamp,
) -> Result<Option<TaskRecord>, MetaError> {
    let row = tx
        .query_opt(
            "SELECT id, record FROM tasks WHERE status = 'pending'
             ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .map_err(|e| pg_error("claiming a pending task", &e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let current: TaskRecord = decode("task", &row, "record")?;
    let Some(task) = lease::claimed(&current, held, now) else {
        // The status column said pending; a record that disagrees is not claimed.
        return Ok(None);
    };
    write_task(tx, &task).await?;
    Ok(Some(task))
}

/// [`super::MetaStore::renew_lease`] in `tx`.
pub(super) async fn renew(
    tx: &Transaction<'_>,
    id: &str,
    node: &str,
    until: Timestamp,
) -> Result<bool, MetaError> {
    let current = locked_task(tx, id).await?;
    match lease::renewed(current.as_ref(), node, until) {
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
    let rows = client
        .query(
            "SELECT id FROM tasks
             WHERE status = 'processing' AND lease_until IS NOT NULL AND lease_until <= $1
             ORDER BY lease_until, id LIMIT $2",
            &[&now, &to_i64(max)],
        )
        .await
        .map_err(|e| pg_error("reading expired leases", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
