//! Tasks claimed with leases (issue #13, "Many nodes"): a node claims a `pending` task with
//! [`super::MetaStore::claim_task`], renews its lease while the import runs
//! ([`super::MetaStore::renew_lease`]), and a lease that ran out
//! ([`super::MetaStore::expired_leases`]) marks a task whose node stopped renewing.
//!
//! The decisions every store shares live here; each store runs them under its own
//! serialisation of the task's writes (one mutex, the id's write stripe, a row lock).

use serde::{Deserialize, Serialize};

use super::{TaskRecord, TaskStatus, Timestamp};

/// A node's claim on a `processing` task: the node runs it until `until` unless it renews
/// the lease first. A lease that ran out belongs to a node that stopped renewing (dead, or
/// cut off from the database), which is what lets another node take the task over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLease {
    /// The holder's node id (stable per node: its configuration or data directory).
    pub node: String,
    /// When the lease ends, unless renewed.
    pub until: Timestamp,
}

/// `task` claimed: `processing`, holding `lease`, one more attempt, changed at `now`; `None`
/// when `task` is not `pending` (another claimer or a sweep moved it first).
pub(crate) fn claimed(task: &TaskRecord, lease: &TaskLease, now: Timestamp) -> Option<TaskRecord> {
    if task.status != TaskStatus::Pending {
        return None;
    }
    let mut claimed = task.clone();
    claimed.status = TaskStatus::Processing;
    claimed.lease = Some(lease.clone());
    claimed.attempts = task.attempts.saturating_add(1);
    claimed.updated_at = now;
    Some(claimed)
}

/// `current` with its lease extended to `until`, if it is `processing` and `node` holds its
/// lease; `None` when the lease is lost (or the task gone). `updated_at` is left alone: a
/// renewal is not a change a client sees.
pub(crate) fn renewed(
    current: Option<&TaskRecord>,
    node: &str,
    until: Timestamp,
) -> Option<TaskRecord> {
    let task = current?;
    let holds = task.status == TaskStatus::Processing
        && task.lease.as_ref().is_some_and(|l| l.node == node);
    if !holds {
        return None;
    }
    let mut renewed = task.clone();
    renewed.lease = Some(TaskLease {
        node: node.to_owned(),
        until,
    });
    Some(renewed)
}

/// Whether [`super::MetaStore::take_back`] may write `task` over `current`: `current` is
/// `processing` and holds exactly `expired` (a renewal or a new claim since changed it),
/// and `task` is the same task going back to `pending` or to `failure`, without a lease.
pub(crate) fn may_take_back(
    current: Option<&TaskRecord>,
    task: &TaskRecord,
    expired: Option<&TaskLease>,
) -> bool {
    current.is_some_and(|c| {
        c.id == task.id && c.status == TaskStatus::Processing && c.lease.as_ref() == expired
    }) && matches!(task.status, TaskStatus::Pending | TaskStatus::Failure)
        && task.lease.is_none()
}

/// Whether `task`, a worker's final write, comes from a run that no longer holds the lease
/// of the stored task `current`: `current` is `processing` under a lease and `task` names
/// another node or another attempt (the task was taken back and claimed again), or `task`
/// was leased and `current` is no longer `processing` (taken back to `pending`). Such a
/// write is refused, so a node that lost its lease can never finish a task that is another
/// run's. Claims and take-backs have their own checks; other moves are not concerned.
pub(crate) fn lost_by(current: &TaskRecord, task: &TaskRecord) -> bool {
    if !task.status.is_final() {
        return false;
    }
    match (current.lease.as_ref(), task.lease.as_ref()) {
        (Some(held), _) if current.status == TaskStatus::Processing => {
            task.lease.as_ref().map(|l| l.node.as_str()) != Some(held.node.as_str())
                || task.attempts != current.attempts
        }
        (_, Some(_)) => current.status != TaskStatus::Processing,
        _ => false,
    }
}

/// When the lease of `task` ends, if it is in the lease index: `processing` with a lease.
pub(crate) fn indexed_until(task: &TaskRecord) -> Option<Timestamp> {
    match (&task.lease, task.status) {
        (Some(lease), TaskStatus::Processing) => Some(lease.until),
        _ => None,
    }
}
