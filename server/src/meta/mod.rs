//! Task and image metadata behind a trait with no RocksDB types in its signatures.
//!
//! Three implementations: [`rocks::RocksMeta`] (the embedded default),
//! [`postgres::PgMeta`] (shared by the nodes of a cluster) and [`memory::MemoryMeta`]
//! (tests); all pass [`conformance_suite`].
//! Every state change of an import is one atomic write: [`MetaStore::put_task`] alone, or
//! [`MetaStore::commit_import`] for the task and its new image together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod codec;
mod conformance;
mod conformance_charges;
mod conformance_claims;
mod conformance_leases;
mod conformance_tasks;
mod conformance_writers;
pub mod guarded;
pub mod index;
pub mod keys;
pub mod lease;
pub mod members;
pub mod memory;
pub mod postgres;
pub mod query;
pub mod rocks;
mod store;
pub mod testing;
pub mod testing_pg;
pub mod writer;

pub use lease::{QueuedTasks, TaskLease};
pub use members::{AddMember, MemberRecord, MemberStatus};
pub use query::{ImageColumn, ImageQuery, ImageRange, SortDir, TaskColumn, TaskQuery, TaskSummary};
pub use store::MetaStore;
pub use writer::WriterLease;

/// Seconds since the Unix epoch (UTC). Rendered as `YYYY-MM-DDTHH:MM:SSZ` by the API.
pub type Timestamp = i64;

/// Seconds after its heartbeat ended that a shared store forgets a node holding no stage
/// (one row per node id ever used would otherwise stay for good): a day, far past any
/// lease, heartbeat or sweep (see [`MetaStore::beat`]).
pub const FORGET_NODES_AFTER: Timestamp = 24 * 3600;

/// A task's status; transitions are exactly pending → processing → success | failure, and
/// pending → failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted, waiting for a worker.
    Pending,
    /// A worker is importing.
    Processing,
    /// Finished; `result.image_id` names the image. Terminal.
    Success,
    /// Finished without an image; `message` says why. Terminal.
    Failure,
}

impl TaskStatus {
    /// Whether a task may move from `self` to `next`.
    pub fn can_become(self, next: TaskStatus) -> bool {
        matches!(
            (self, next),
            (TaskStatus::Pending, TaskStatus::Processing)
                | (TaskStatus::Pending, TaskStatus::Failure)
                | (TaskStatus::Processing, TaskStatus::Success)
                | (TaskStatus::Processing, TaskStatus::Failure)
        )
    }

    /// Whether the status is final.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Success | TaskStatus::Failure)
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Processing => "processing",
            TaskStatus::Success => "success",
            TaskStatus::Failure => "failure",
        }
    }
}

/// A stored task (Glance's task table row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// UUID4, lower-case hyphenated.
    pub id: String,
    /// `import` (the only type Sluice runs).
    pub task_type: String,
    /// Current status.
    pub status: TaskStatus,
    /// The `input` object exactly as the client sent it.
    pub input: serde_json::Value,
    /// `{"image_id": …}` on success, else `None`.
    pub result: Option<serde_json::Value>,
    /// The project that created the task.
    pub owner: String,
    /// Failure explanation, `""` otherwise.
    pub message: String,
    /// The stable reason code of a failure (inspector codes, or `source_error`, `interrupted`…).
    pub reason: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Set on reaching a final status: `updated_at + ttl`.
    pub expires_at: Option<Timestamp>,
    /// `req-<uuid>` of the creating request.
    pub request_id: Option<String>,
    /// The creating user, when known.
    pub user_id: Option<String>,
    /// Who runs the task and until when: set by [`MetaStore::claim_task`], extended by
    /// [`MetaStore::renew_lease`]. `None` for a task never claimed, and for records written
    /// before leases existed (the serde default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<TaskLease>,
    /// How many times a node claimed the task (0 for records written before leases).
    #[serde(default)]
    pub attempts: u32,
    /// The only node that may claim the task, when its data is on that node alone (a
    /// `glance-direct` import: the stage is in the receiving node's data directory); `None`
    /// (any node) for pull imports and records written before pinning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_node: Option<String>,
}

/// An image's status: Glance's statuses that Sluice stores, with Glance's transitions
/// (`glance/domain/__init__.py`, `Image.valid_state_targets`) in [`ImageStatus::can_become`].
///
/// `deleted` is never stored (deletion removes the record), `killed` is never reached (a
/// failed upload or import returns the image to `queued`, as Glance's modern paths do), and
/// `pending_delete` needs Glance's `delayed_delete`, which Sluice does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// A record without data: created by `POST /v2/images`, or back after a failed upload or
    /// import.
    Queued,
    /// Data arriving through `PUT /v2/images/{id}/file`.
    Saving,
    /// Data being staged (`PUT /v2/images/{id}/stage`).
    Uploading,
    /// An import is writing the image's data.
    Importing,
    /// Data committed; readable.
    Active,
    /// Data kept, download refused to non-admins (`…/actions/deactivate`).
    Deactivated,
}

impl ImageStatus {
    /// Every status, in Glance's schema order.
    pub const ALL: [ImageStatus; 6] = [
        ImageStatus::Queued,
        ImageStatus::Saving,
        ImageStatus::Active,
        ImageStatus::Uploading,
        ImageStatus::Importing,
        ImageStatus::Deactivated,
    ];

    /// Whether an image may move from `self` to `next` (Glance's transitions among the
    /// statuses Sluice stores). Staying in the same status is not a transition: a change
    /// that keeps the status is always allowed.
    pub fn can_become(self, next: ImageStatus) -> bool {
        use ImageStatus as S;
        self == next
            || matches!(
                (self, next),
                (
                    S::Queued,
                    S::Saving | S::Uploading | S::Importing | S::Active
                ) | (S::Saving, S::Active | S::Queued)
                    | (S::Uploading, S::Importing | S::Queued)
                    | (S::Importing, S::Active | S::Queued)
                    | (S::Active, S::Deactivated)
                    | (S::Deactivated, S::Active)
            )
    }

    /// Whether the image's data is committed (`active`, `deactivated`): recovery drops a
    /// record in such a status whose data is missing.
    pub fn has_data(self) -> bool {
        matches!(self, ImageStatus::Active | ImageStatus::Deactivated)
    }

    /// Whether data is on its way in (`saving`, `uploading`, `importing`): a crash leaves
    /// nothing usable, so recovery returns the image to `queued`.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ImageStatus::Saving | ImageStatus::Uploading | ImageStatus::Importing
        )
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Queued => "queued",
            ImageStatus::Saving => "saving",
            ImageStatus::Uploading => "uploading",
            ImageStatus::Importing => "importing",
            ImageStatus::Active => "active",
            ImageStatus::Deactivated => "deactivated",
        }
    }
}

impl std::fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The image property holding the import lock: the id of the import task (Glance's). Set
/// and cleared by the image's transitions, with its status.
pub const LOCK_PROPERTY: &str = "os_glance_import_task";

/// A stored image (version 2 of its encoding, `codec.rs`). Fields that describe data are
/// `None` until data is committed (Glance's nulls for a `queued` image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// UUID, lower-case hyphenated.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Current status; changed only through [`MetaStore::transition_image`].
    pub status: ImageStatus,
    /// Owning project.
    pub owner: String,
    /// `public`, `private`, `shared` or `community`.
    pub visibility: String,
    /// Whether deletion is refused.
    pub protected: bool,
    /// Format of the data (`qcow2`, `raw`, …); may be unset while `queued`.
    pub disk_format: Option<String>,
    /// `bare`, `ovf`, …; may be unset while `queued`.
    pub container_format: Option<String>,
    /// Stored bytes, once data is committed.
    pub size: Option<u64>,
    /// Guest-visible size from the inspector.
    pub virtual_size: Option<u64>,
    /// md5 hex of the stored bytes (Glance's `checksum`).
    pub checksum: Option<String>,
    /// `sha512`, once data is committed.
    pub os_hash_algo: Option<String>,
    /// sha512 hex of the stored bytes.
    pub os_hash_value: Option<String>,
    /// Minimum disk in GiB.
    pub min_disk: u64,
    /// Minimum RAM in MiB.
    pub min_ram: u64,
    /// Tags, unique, in insertion order.
    pub tags: Vec<String>,
    /// Extra properties (string values, as Glance).
    pub properties: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The task that imported it.
    pub task_id: Option<String>,
    /// The upload writing the image's body or stage and until when (`saving`, `uploading`:
    /// [`writer`]); dropped when the image leaves those statuses, and when the body ends.
    /// `None` for records written before writer leases (the serde default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterLease>,
    /// The node whose data directory holds the image's complete stage (`uploading`, its
    /// `PUT …/stage` done): the node its `glance-direct` import runs on, whichever node
    /// received the import, and whose death the sweep of a shared store watches for
    /// (`takeover::sweep_dead_stages_once`). Dropped when the image leaves `uploading`;
    /// `None` for records written before stages were placed (the serde default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_on: Option<String>,
    /// The bytes of that complete stage: what it counts towards its project's
    /// `image_stage_total` on the other nodes. Dropped with [`ImageRecord::staged_on`].
    #[serde(default, skip_serializing_if = "lease::is_zero")]
    pub staged_bytes: u64,
}

impl ImageRecord {
    /// Forgets what described data the image no longer has (Glance clears `size` and
    /// `virtual_size` when an image returns to `queued`; the hashes go with them).
    pub fn forget_data(&mut self) {
        self.size = None;
        self.virtual_size = None;
        self.checksum = None;
        self.os_hash_algo = None;
        self.os_hash_value = None;
    }
}

/// What one project's images hold (for its quotas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectUsage {
    /// Images owned by the project.
    pub images: u64,
    /// Their stored bytes (`size`).
    pub image_bytes: u64,
}

/// What the change of a [`MetaStore::transition_image`] decides, having seen the current
/// record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write the record as the change left it.
    Write,
    /// Remove the record (`DELETE /v2/images/{id}`).
    Delete,
    /// Write nothing (the caller refused the change, or there was nothing to do).
    Keep,
}

/// What [`MetaStore::transition_image`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// Written: the record as stored now (for [`Decision::Delete`], as it was).
    Done(ImageRecord),
    /// Nothing written: the change decided [`Decision::Keep`]; the record as it is.
    Kept(ImageRecord),
    /// Nothing written: the image's status was not one of those expected; the record as
    /// found.
    Refused(ImageRecord),
    /// No image has that id.
    Missing,
}

/// A metadata store failed (I/O, corruption, a value it cannot decode).
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A stored value could not be decoded.
    #[error("decoding {what} {key}: {detail}")]
    Decoding {
        /// `task` or `image`.
        what: &'static str,
        /// The record's id.
        key: String,
        /// What went wrong.
        detail: String,
    },
    /// The backend failed.
    #[error("metadata backend: {0}")]
    Backend(String),
    /// A write refused because the data volume is full (below the metadata floor), or that
    /// met `ENOSPC`; reads still work. The message says how much is free.
    #[error("{0}")]
    StorageFull(String),
    /// A change asked for a status change Glance does not allow, or changed the record's id
    /// (a bug of the caller; nothing was written).
    #[error("image {id}: {detail}")]
    InvalidChange {
        /// The image.
        id: String,
        /// What was wrong, e.g. "status active cannot become queued".
        detail: String,
    },
    /// A task status change the stored task does not allow: another writer moved it first
    /// (a worker and a sweep), or it is gone. Nothing was written.
    #[error("task {id}: {detail}")]
    TaskRefused {
        /// The task.
        id: String,
        /// What was refused, e.g. "status failure cannot become success".
        detail: String,
    },
}

/// What a store does for [`MetaStore::transition_image`] once it holds the id's write lock
/// and has read `current`.
#[derive(Debug)]
pub(crate) enum Step {
    /// Write nothing; answer this.
    Answer(Transition),
    /// Replace `old` by `new`.
    Put {
        /// The stored record.
        old: ImageRecord,
        /// Its replacement (boxed: the two records make this variant twice the others).
        new: Box<ImageRecord>,
    },
    /// Remove the record.
    Remove(ImageRecord),
}

/// The part of [`MetaStore::transition_task`] every store shares: whether the stored task
/// (`current`) may become `task.status`, written by the run that holds its lease (when it
/// has one: [`lease::lost_by`]).
///
/// # Errors
/// [`MetaError::TaskRefused`].
pub(crate) fn check_task_move(
    current: Option<&TaskRecord>,
    task: &TaskRecord,
) -> Result<(), MetaError> {
    let refused = |detail: String| {
        Err(MetaError::TaskRefused {
            id: task.id.clone(),
            detail,
        })
    };
    match current {
        None => refused("no such task".to_owned()),
        Some(old) if !old.status.can_become(task.status) => refused(format!(
            "status {} cannot become {}",
            old.status.as_str(),
            task.status.as_str()
        )),
        Some(old) if lease::lost_by(old, task) => refused(format!(
            "attempt {} lost its lease: attempt {} holds it",
            task.attempts, old.attempts
        )),
        Some(_) => Ok(()),
    }
}

/// The part of [`MetaStore::transition_image`] every store shares: the status check, the
/// change, and the check of what it changed.
///
/// # Errors
/// [`MetaError::InvalidChange`].
pub(crate) fn plan_transition(
    current: Option<ImageRecord>,
    expected: &[ImageStatus],
    change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
) -> Result<Step, MetaError> {
    let Some(old) = current else {
        return Ok(Step::Answer(Transition::Missing));
    };
    if !expected.contains(&old.status) {
        return Ok(Step::Answer(Transition::Refused(old)));
    }
    let mut new = old.clone();
    match change(&mut new) {
        Decision::Keep => Ok(Step::Answer(Transition::Kept(old))),
        Decision::Delete => Ok(Step::Remove(old)),
        Decision::Write => {
            let invalid = |detail: String| MetaError::InvalidChange {
                id: old.id.clone(),
                detail,
            };
            if new.id != old.id {
                return Err(invalid(format!(
                    "a change may not set the id to {}",
                    new.id
                )));
            }
            if !old.status.can_become(new.status) {
                return Err(invalid(format!(
                    "status {} cannot become {}",
                    old.status, new.status
                )));
            }
            // The writer lease lives only while the body or stage arrives, a stage's place
            // while it waits for its import.
            if !writer::is_written(new.status) {
                new.writer = None;
            }
            if new.status != ImageStatus::Uploading {
                new.staged_on = None;
                new.staged_bytes = 0;
            }
            Ok(Step::Put {
                old,
                new: Box::new(new),
            })
        }
    }
}

/// Behaviour every [`MetaStore`] must show; run against each implementation in its tests
/// (garage's `db/test.rs`). `store` must start empty.
///
/// Covers, for tasks and images alike: missing ids read as `None` and delete as `Ok`; put then
/// get returns the record unchanged; a put with an existing id replaces it; lists are ordered
/// by id whatever the insertion order; delete removes exactly one record. Plus: tasks and
/// images with the same id are independent, and [`MetaStore::commit_import`] writes (or
/// replaces) both its task and its image. Then the list queries (`conformance.rs`): pages
/// against a reference sort for every scope, sort, direction, marker and limit, also after
/// replacements that change indexed fields and after deletions. And the image transitions:
/// [`MetaStore::insert_image`] never replaces, [`MetaStore::transition_image`] answers
/// missing, refused and kept without writing, writes and deletes with the indexes, refuses
/// forbidden status changes, and of two threads racing one transition exactly one wins.
/// Then claims and leases of tasks, and the writer leases of images
/// (`conformance_writers.rs`: the expired ones, a renewal or a second sweep racing a
/// take-back), and the other nodes' charges (`conformance_charges.rs`).
///
/// # Panics
/// When the store misbehaves (this is a test suite).
pub async fn conformance_suite(store: &dyn MetaStore) {
    const A: &str = "3f0a7c1e-0000-4000-8000-00000000000a";
    const B: &str = "7b2d9e4f-0000-4000-8000-00000000000b";
    const C: &str = "c5e8a1b3-0000-4000-8000-00000000000c";
    const D: &str = "e9f1b2c4-0000-4000-8000-00000000000d";

    // An empty store: nothing listed, missing ids read as None, deleting them is Ok.
    assert_eq!(
        testing::all_tasks(store).await.expect("list empty tasks"),
        vec![]
    );
    assert_eq!(
        testing::all_images(store).await.expect("list empty images"),
        vec![]
    );
    assert_eq!(store.get_task(A).await.expect("get missing task"), None);
    assert_eq!(store.get_image(A).await.expect("get missing image"), None);
    store.delete_task(A).await.expect("delete missing task");
    store.delete_image(A).await.expect("delete missing image");

    // Tasks: put/get, overwrite, order, delete.
    let task_b = sample_task(B);
    store.put_task(&task_b).await.expect("put task");
    assert_eq!(
        store.get_task(B).await.expect("get task"),
        Some(task_b.clone())
    );
    assert_eq!(store.get_task(A).await.expect("get other task"), None);
    let mut task_b2 = task_b.clone();
    task_b2.status = TaskStatus::Failure;
    task_b2.message = "qcow2 image references backing file '/etc/passwd'".to_owned();
    task_b2.reason = Some("backing_file".to_owned());
    task_b2.updated_at = task_b.updated_at.saturating_add(7);
    task_b2.expires_at = Some(task_b2.updated_at.saturating_add(3600));
    store.put_task(&task_b2).await.expect("overwrite task");
    assert_eq!(
        store.get_task(B).await.expect("get overwritten task"),
        Some(task_b2.clone())
    );
    for id in [D, A, C] {
        store
            .put_task(&sample_task(id))
            .await
            .expect("put more tasks");
    }
    let ids: Vec<String> = testing::all_tasks(store)
        .await
        .expect("list tasks")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, [A, B, C, D]);
    assert_eq!(
        testing::all_tasks(store).await.expect("list tasks").get(1),
        Some(&task_b2)
    );
    store.delete_task(C).await.expect("delete task");
    assert_eq!(store.get_task(C).await.expect("get deleted task"), None);
    let ids: Vec<String> = testing::all_tasks(store)
        .await
        .expect("list tasks after delete")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, [A, B, D]);
    assert_eq!(
        testing::all_images(store)
            .await
            .expect("images unaffected by tasks"),
        vec![]
    );

    // Images: put/get, overwrite, order, delete; a task and an image may share an id.
    let image_c = sample_image(C);
    store.put_image(&image_c).await.expect("put image");
    assert_eq!(
        store.get_image(C).await.expect("get image"),
        Some(image_c.clone())
    );
    let mut image_c2 = image_c.clone();
    image_c2.name = Some("renamed ✓".to_owned());
    image_c2.protected = true;
    image_c2.tags.push("gold".to_owned());
    image_c2
        .properties
        .insert("hw_disk_bus".to_owned(), "virtio".to_owned());
    store.put_image(&image_c2).await.expect("overwrite image");
    assert_eq!(
        store.get_image(C).await.expect("get overwritten image"),
        Some(image_c2.clone())
    );
    for id in [B, D, A] {
        store
            .put_image(&sample_image(id))
            .await
            .expect("put more images");
    }
    let ids: Vec<String> = testing::all_images(store)
        .await
        .expect("list images")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, [A, B, C, D]);
    store.delete_image(A).await.expect("delete image");
    assert_eq!(store.get_image(A).await.expect("get deleted image"), None);
    assert_eq!(
        store.get_task(A).await.expect("task with image's id kept"),
        Some(sample_task(A))
    );
    store.delete_image(A).await.expect("delete image twice");

    // commit_import writes the task (replacing the processing one) and the new image.
    let mut processing = sample_task(D);
    processing.status = TaskStatus::Processing;
    store
        .put_task(&processing)
        .await
        .expect("put processing task");
    let new_image_id = "f0f0f0f0-0000-4000-8000-0000000000ff";
    let mut success = processing.clone();
    success.status = TaskStatus::Success;
    success.result = Some(serde_json::json!({ "image_id": new_image_id }));
    success.expires_at = Some(success.updated_at.saturating_add(172_800));
    let mut image = sample_image(new_image_id);
    image.task_id = Some(D.to_owned());
    store
        .commit_import(&success, &image)
        .await
        .expect("commit import");
    assert_eq!(
        store.get_task(D).await.expect("get committed task"),
        Some(success)
    );
    assert_eq!(
        store
            .get_image(new_image_id)
            .await
            .expect("get committed image"),
        Some(image)
    );
    assert_eq!(
        testing::all_tasks(store)
            .await
            .expect("list after commit")
            .len(),
        3
    );
    assert_eq!(
        testing::all_images(store)
            .await
            .expect("list after commit")
            .len(),
        4
    );

    // Compare-and-swap transitions, creation with a chosen id, racing writers.
    conformance::transitions(store).await;
    conformance_tasks::transitions(store).await;

    // The list queries, on the store emptied again.
    for task in testing::all_tasks(store).await.expect("tasks to clear") {
        store.delete_task(&task.id).await.expect("clear task");
    }
    for image in testing::all_images(store).await.expect("images to clear") {
        store.delete_image(&image.id).await.expect("clear image");
    }
    conformance::lists(store).await;

    // Image members, and their removal with their image.
    members::conformance(store).await;

    // Claims, renewals and expired leases (clears the tasks first).
    conformance_leases::leases(store).await;

    // Which task a claim takes: fairness, pinning, the cap, racing claimers.
    conformance_claims::claims(store).await;

    // Writer leases of images: the expired ones, renewals and take-backs racing (clears the
    // images first).
    conformance_writers::writers(store).await;

    // What the other nodes' imports have charged to a project (clears both first).
    conformance_charges::charges(store).await;
}

/// A plausible pending import task with id `id` (for tests and [`conformance_suite`]).
pub fn sample_task(id: &str) -> TaskRecord {
    TaskRecord {
        id: id.to_owned(),
        task_type: "import".to_owned(),
        status: TaskStatus::Pending,
        input: serde_json::json!({
            "import_from": "https://example.org/cirros.qcow2",
            "import_from_format": "qcow2",
            "image_properties": { "name": "cirros", "disk_format": "qcow2" },
        }),
        result: None,
        owner: "0b5c2f1e9d8a4c7b8e6f5a4b3c2d1e0f".to_owned(),
        message: String::new(),
        reason: None,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        expires_at: None,
        request_id: Some(format!("req-{id}")),
        user_id: Some("admin".to_owned()),
        lease: None,
        attempts: 0,
        pinned_node: None,
    }
}

/// A plausible active image with id `id` (for tests and [`conformance_suite`]).
pub fn sample_image(id: &str) -> ImageRecord {
    ImageRecord {
        id: id.to_owned(),
        name: Some("cirros".to_owned()),
        status: ImageStatus::Active,
        owner: "0b5c2f1e9d8a4c7b8e6f5a4b3c2d1e0f".to_owned(),
        visibility: "private".to_owned(),
        protected: false,
        disk_format: Some("qcow2".to_owned()),
        container_format: Some("bare".to_owned()),
        size: Some(21_692_416),
        virtual_size: Some(117_440_512),
        checksum: Some("c36c8d0d5a3b4e2f1a0b9c8d7e6f5a4b".to_owned()),
        os_hash_algo: Some("sha512".to_owned()),
        os_hash_value: Some("ab".repeat(64)),
        min_disk: 0,
        min_ram: 0,
        tags: vec!["cirros".to_owned(), "test".to_owned()],
        properties: BTreeMap::from([("os_distro".to_owned(), "cirros".to_owned())]),
        created_at: 1_700_000_100,
        updated_at: 1_700_000_100,
        task_id: None,
        writer: None,
        staged_on: None,
        staged_bytes: 0,
    }
}
