//! A task's `progress` object: while `processing`, bytes in and out, the rate over the last
//! seconds and the ETA ([`Progress`]); while `pending`, the task's place in the queue
//! ([`QueuePosition`]). Every key is always present (null when not known), so that a client
//! reads one shape.

use serde_json::{json, Value};
use sluice_pipeline::Progress;

use crate::api::Api;
use crate::executor::QueuePosition;
use crate::meta::{TaskRecord, TaskStatus};

/// The live `progress` of `task` while it waits (its queue place) or runs (its counters);
/// `None` once it is final, while pending but not queued (being requeued at start; on a
/// shared store, always: it waits in the database), and on a shared store while another
/// node runs it (the counters are that node's).
pub(super) fn live_json(api: &Api, task: &TaskRecord) -> Option<Value> {
    let executor = &api.state.executor;
    match task.status {
        TaskStatus::Processing => match executor.progress(&task.id) {
            Some(progress) => Some(running_json(&progress)),
            None if api.state.meta.is_shared() => None,
            None => Some(running_json(&Progress::default())),
        },
        TaskStatus::Pending => executor.queue_position(&task.id).map(queued_json),
        TaskStatus::Success | TaskStatus::Failure => None,
    }
}

/// The `progress` of a running task.
fn running_json(p: &Progress) -> Value {
    let s = p.snapshot();
    json!({
        "bytes_received": s.received,
        "bytes_total": s.total,
        "bytes_stored": s.stored,
        "rate_bytes_per_sec": s.rate,
        "eta_secs": s.eta_secs,
        "queue_position": null,
        "queue_waiting": null,
    })
}

/// The `progress` of a waiting task.
fn queued_json(place: QueuePosition) -> Value {
    json!({
        "bytes_received": 0,
        "bytes_total": null,
        "bytes_stored": 0,
        "rate_bytes_per_sec": null,
        "eta_secs": null,
        "queue_position": place.position,
        "queue_waiting": place.waiting,
    })
}
