//! Tasks claimed with leases (issue #13, "Many nodes"): a node claims a `pending` task with
//! [`super::MetaStore::claim_task`], renews its lease while the import runs
//! ([`super::MetaStore::renew_lease`]), and a lease that ran out
//! ([`super::MetaStore::expired_leases`]) marks a task whose node stopped renewing.
//!
//! The decisions every store shares live here; each store runs them under its own
//! serialisation of the task's writes (one mutex, the id's write stripe, a row lock).

use std::collections::HashMap;

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
    /// The bytes the run had charged to its project's `image_size_total` at its last renewal:
    /// what the other nodes count as in flight for the project (0 before the first charge,
    /// and in records written before charges were shared).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub charged: u64,
}

/// Whether a charge is nothing (left out of a stored record).
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Choices one claim makes at most: a chosen task that moved before it was locked (deleted,
/// failed) makes the claim choose again; bounded, so that a record disagreeing with its
/// index entry cannot keep a claim going round. The claimer polls again anyway.
pub(crate) const CLAIM_TRIES: usize = 4;

/// Which task [`super::MetaStore::claim_task`] takes, for the embedded stores (PostgreSQL
/// asks the same in SQL): offered every unfinished task, it chooses the oldest `pending`
/// task that `node` may run ([`may_run_on`]) of the project with the fewest `processing`
/// tasks, skipping projects with `per_project` processing already; among projects with as
/// many, the one whose task is oldest. So a free worker goes to the project that has the
/// fewest running anywhere, and a project never runs more than its share at once.
#[derive(Debug)]
pub struct ClaimChoice<'a> {
    node: &'a str,
    per_project: u64,
    /// `processing` tasks per project.
    running: HashMap<String, u64>,
    /// Per project, the oldest pending task `node` may run: `(created_at, id)`.
    heads: HashMap<String, (Timestamp, String)>,
}

impl<'a> ClaimChoice<'a> {
    /// A choice for `node` under the per-project cap `per_project`.
    pub fn new(node: &'a str, per_project: u64) -> Self {
        ClaimChoice {
            node,
            per_project,
            running: HashMap::new(),
            heads: HashMap::new(),
        }
    }

    /// Counts `task` (any unfinished task, in any order).
    pub fn offer(&mut self, task: &TaskRecord) {
        match task.status {
            TaskStatus::Processing => {
                let n = self.running.entry(task.owner.clone()).or_default();
                *n = n.saturating_add(1);
            }
            TaskStatus::Pending if may_run_on(task, self.node) => {
                let head = (task.created_at, task.id.clone());
                self.heads
                    .entry(task.owner.clone())
                    .and_modify(|h| {
                        if head < *h {
                            *h = head.clone();
                        }
                    })
                    .or_insert(head);
            }
            _ => {}
        }
    }

    /// The id of the task to claim, if any may be.
    pub fn chosen(&self) -> Option<&str> {
        self.heads
            .iter()
            .map(|(owner, (created, id))| {
                let running = self.running.get(owner).copied().unwrap_or(0);
                (running, *created, id.as_str())
            })
            .filter(|(running, _, _)| *running < self.per_project)
            .min()
            .map(|(_, _, id)| id)
    }
}

/// Counts of [`super::MetaStore::queued_tasks`], each at most the `max` asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuedTasks {
    /// `pending` tasks of every project.
    pub pending: u64,
    /// `pending` tasks of the project asked about.
    pub project_pending: u64,
    /// `processing` tasks of the project asked about, on every node.
    pub project_processing: u64,
}

impl QueuedTasks {
    /// Counts `task` for project `owner`, no count beyond `max`.
    pub(crate) fn count(&mut self, task: &TaskRecord, owner: &str, max: u64) {
        let bump = |n: &mut u64| *n = n.saturating_add(1).min(max);
        match task.status {
            TaskStatus::Pending => {
                bump(&mut self.pending);
                if task.owner == owner {
                    bump(&mut self.project_pending);
                }
            }
            TaskStatus::Processing if task.owner == owner => bump(&mut self.project_processing),
            _ => {}
        }
    }
}

/// Whether `node` may run `task`: it is pinned to no node, or to `node`.
pub fn may_run_on(task: &TaskRecord, node: &str) -> bool {
    task.pinned_node
        .as_deref()
        .is_none_or(|pinned| pinned == node)
}

/// `task` claimed: `processing`, holding `lease`, one more attempt, changed at `now`; `None`
/// when `task` is not `pending` (another claimer or a sweep moved it first) or is pinned to
/// another node than the lease's.
pub(crate) fn claimed(task: &TaskRecord, lease: &TaskLease, now: Timestamp) -> Option<TaskRecord> {
    if task.status != TaskStatus::Pending || !may_run_on(task, &lease.node) {
        return None;
    }
    let mut claimed = task.clone();
    claimed.status = TaskStatus::Processing;
    claimed.lease = Some(lease.clone());
    claimed.attempts = task.attempts.saturating_add(1);
    claimed.updated_at = now;
    Some(claimed)
}

/// `current` with its lease extended to `until` and its charge set to `charged`, if it is
/// `processing` and `node` holds its lease; `None` when the lease is lost (or the task
/// gone). `updated_at` is left alone: a renewal is not a change a client sees.
pub(crate) fn renewed(
    current: Option<&TaskRecord>,
    node: &str,
    until: Timestamp,
    charged: u64,
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
        charged,
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
