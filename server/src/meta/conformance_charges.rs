//! The charges' part of [`super::conformance_suite`]: [`MetaStore::charged_elsewhere`] sums
//! the charges in the leases of a project's `processing` tasks and of its images being
//! written, leaving out those of the node asking, of other projects, and of leases on work
//! that no longer runs (a final task, an image no longer written);
//! [`MetaStore::staged_elsewhere`] sums a project's stages streaming in and complete on
//! other nodes.

use super::writer::WriterLease;
use super::{sample_image, sample_task, testing, ImageStatus, MetaStore, TaskLease, TaskStatus};

const PROJECT: &str = "charges-project";
const OTHER: &str = "charges-other";

/// Task `n` of `owner` in `status`, leased by `node` with `charged` bytes.
fn task(n: u32, owner: &str, status: TaskStatus, node: &str, charged: u64) -> super::TaskRecord {
    let mut task = sample_task(&format!("e5e5e5e5-0000-4000-8000-{n:012}"));
    task.owner = owner.to_owned();
    task.status = status;
    task.lease = Some(TaskLease {
        node: node.to_owned(),
        until: 1_000,
        charged,
    });
    task
}

/// Image `n` of `owner` in `status`, written by `node` with `charged` bytes.
fn image(n: u32, owner: &str, status: ImageStatus, node: &str, charged: u64) -> super::ImageRecord {
    let mut image = sample_image(&format!("f6f6f6f6-0000-4000-8000-{n:012}"));
    image.owner = owner.to_owned();
    image.status = status;
    image.writer = Some(WriterLease {
        node: node.to_owned(),
        upload: format!("upload-{n}"),
        until: 1_000,
        charged,
    });
    image
}

/// Image `n` of `owner`, `uploading` with its complete stage of `bytes` on `node`.
fn complete_stage(n: u32, owner: &str, node: &str, bytes: u64) -> super::ImageRecord {
    let mut image = image(n, owner, ImageStatus::Uploading, node, 0);
    image.writer = None;
    image.staged_on = Some(node.to_owned());
    image.staged_bytes = bytes;
    image
}

/// See the module docs. Removes every task and image first, and its own at the end.
pub(super) async fn charges(store: &dyn MetaStore) {
    for task in testing::all_tasks(store).await.expect("tasks to clear") {
        store.delete_task(&task.id).await.expect("clear task");
    }
    for image in testing::all_images(store).await.expect("images to clear") {
        store.delete_image(&image.id).await.expect("clear image");
    }
    let sum = async |owner: &str, node: &str| {
        store
            .charged_elsewhere(owner, node)
            .await
            .expect("charged elsewhere")
    };
    assert_eq!(sum(PROJECT, "a").await, 0, "nothing running");

    let tasks = [
        task(1, PROJECT, TaskStatus::Processing, "a", 1),
        task(2, PROJECT, TaskStatus::Processing, "b", 2),
        // A final task's lease is left over, not a charge.
        task(3, PROJECT, TaskStatus::Failure, "b", 4),
        task(4, OTHER, TaskStatus::Processing, "b", 8),
    ];
    for t in &tasks {
        store.put_task(t).await.expect("put task");
    }
    let images = [
        image(1, PROJECT, ImageStatus::Saving, "a", 16),
        image(2, PROJECT, ImageStatus::Uploading, "b", 32),
        // An image no longer written holds no charge.
        image(3, PROJECT, ImageStatus::Active, "b", 64),
        image(4, OTHER, ImageStatus::Saving, "a", 128),
        complete_stage(5, PROJECT, "b", 256),
        complete_stage(6, PROJECT, "a", 512),
    ];
    for i in &images {
        store.put_image(i).await.expect("put image");
    }
    assert_eq!(sum(PROJECT, "a").await, 2 + 32);
    assert_eq!(sum(PROJECT, "b").await, 1 + 16);
    assert_eq!(sum(PROJECT, "c").await, 1 + 2 + 16 + 32);
    assert_eq!(sum(OTHER, "a").await, 8);
    assert_eq!(sum(OTHER, "b").await, 128);
    assert_eq!(sum("nobody", "c").await, 0);
    let staged = async |owner: &str, node: &str| {
        store
            .staged_elsewhere(owner, node)
            .await
            .expect("staged elsewhere")
    };
    assert_eq!(staged(PROJECT, "a").await, 32 + 256);
    assert_eq!(staged(PROJECT, "b").await, 512);
    assert_eq!(staged(PROJECT, "c").await, 32 + 256 + 512);
    assert_eq!(staged(OTHER, "b").await, 0, "a body upload is no stage");

    // A renewal reports the run's charge so far.
    assert!(store
        .renew_lease(&tasks[1].id, "b", 2_000, 1 << 40)
        .await
        .expect("renew"));
    assert_eq!(sum(PROJECT, "a").await, (1 << 40) + 32);

    for t in &tasks {
        store.delete_task(&t.id).await.expect("delete task");
    }
    for i in &images {
        store.delete_image(&i.id).await.expect("delete image");
    }
}
