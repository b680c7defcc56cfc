//! Complete stages on a node that died (issue #13, "Many nodes"): a `glance-direct` stage
//! lives in the data directory of the node that received it ([`ImageRecord::staged_on`]
//! names it), so when that node dies and does not come back, its images would wait in
//! `uploading` for ever (the stage's expiry runs on that node only), and an import of one
//! accepted meanwhile would wait for ever for that node's claim.
//!
//! Every node of a shared store writes a heartbeat at each sweep ([`MetaStore::beat`]); a
//! node whose heartbeat ended is dead. The sweep of a live node returns each image staged on
//! a dead node to `queued` (as the stage's expiry does: the data is gone with its node) and
//! fails the import waiting for it with `interrupted`, in one atomic write, under a
//! compare-and-swap on the image's stage node and import lock as read: a node that was only
//! cut off and claims the import meanwhile keeps it (its claim makes the task `processing`,
//! which this sweep never overwrites).
//!
//! [`ImageRecord::staged_on`]: crate::meta::ImageRecord::staged_on

use super::SWEEP_BATCH;
use crate::imports::{self, REASON_INTERRUPTED};
use crate::meta::{
    Decision, ImageStatus, MetaError, MetaStore, TaskStatus, Timestamp, Transition, LOCK_PROPERTY,
};

/// How long a heartbeat written at each sweep lasts: three sweeps, and at least a lease, so
/// that a node is taken for dead only once it missed several sweeps in a row.
pub fn heartbeat_secs(sweep_interval_secs: u64, lease_secs: u64) -> u64 {
    sweep_interval_secs.saturating_mul(3).max(lease_secs)
}

/// One pass over the stages of dead nodes (at most [`SWEEP_BATCH`]), by the sweep of live
/// node `node` at `now`; failed imports expire after `ttl`. Returns how many images went back
/// to `queued`. An embedded store has nothing to sweep: its one node is alive.
///
/// # Errors
/// The first metadata error (a [`MetaError::TaskRefused`] is not one: another writer moved
/// the task first, and the image is left alone).
pub async fn sweep_dead_stages_once(
    meta: &dyn MetaStore,
    node: &str,
    now: Timestamp,
    ttl: i64,
) -> Result<usize, MetaError> {
    let mut released = 0usize;
    if !meta.is_shared() {
        return Ok(released);
    }
    for id in meta.dead_stages(now, SWEEP_BATCH).await? {
        let Some(image) = meta.get_image(&id).await? else {
            continue;
        };
        let Some(dead) = image.staged_on.clone() else {
            continue;
        };
        if dead == node || image.status != ImageStatus::Uploading {
            continue;
        }
        let lock = image.properties.get(LOCK_PROPERTY).cloned();
        let waiting = match &lock {
            Some(task_id) => meta.get_task(task_id).await?,
            None => None,
        };
        if waiting
            .as_ref()
            .is_some_and(|t| t.status == TaskStatus::Processing)
        {
            // Claimed: its node is alive after all, or its lease sweep will end it.
            continue;
        }
        let mut change = |image: &mut crate::meta::ImageRecord| {
            if image.staged_on.as_deref() != Some(dead.as_str())
                || image.properties.get(LOCK_PROPERTY) != lock.as_ref()
            {
                return Decision::Keep;
            }
            image.status = ImageStatus::Queued;
            image.properties.remove(LOCK_PROPERTY);
            image.forget_data();
            image.updated_at = now;
            Decision::Write
        };
        let expected = [ImageStatus::Uploading];
        let outcome = match waiting.filter(|t| t.status == TaskStatus::Pending) {
            Some(mut task) => {
                let message = format!(
                    "import interrupted: the service holding the image's staged data \
                     ({dead}) stopped and did not come back; stage the image again"
                );
                imports::fail(&mut task, REASON_INTERRUPTED, message, ttl);
                meta.transition_image_with_task(&id, &expected, &mut change, &task)
                    .await
            }
            None => meta.transition_image(&id, &expected, &mut change).await,
        };
        match outcome {
            Ok(Transition::Done(_)) => {
                tracing::warn!(image = %id, node = %dead, "stage on a dead node: image back to queued");
                released = released.saturating_add(1);
            }
            Ok(_) | Err(MetaError::TaskRefused { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::postgres::PgMeta;
    use crate::meta::testing_pg::PgCluster;
    use crate::meta::{
        sample_image, sample_task, ImageRecord, TaskLease, TaskRecord, FORGET_NODES_AFTER,
    };

    const TTL: i64 = 3600;

    /// Image `n`, `uploading` with its stage on `node`, locked by `lock` if given.
    fn staged(n: u32, node: &str, lock: Option<&str>) -> ImageRecord {
        let mut image = sample_image(&format!("00000000-0000-4000-8000-{n:012}"));
        image.status = ImageStatus::Uploading;
        image.staged_on = Some(node.to_owned());
        if let Some(task) = lock {
            image
                .properties
                .insert(LOCK_PROPERTY.to_owned(), task.to_owned());
        }
        image
    }

    /// The `glance-direct` import `n` of `image`, in `status`, pinned to `node`.
    fn import(n: u32, image: &ImageRecord, status: TaskStatus, node: &str) -> TaskRecord {
        let mut task = sample_task(&format!("10000000-0000-4000-8000-{n:012}"));
        task.task_type = imports::API_IMAGE_IMPORT.to_owned();
        task.input = serde_json::json!({"image_id": image.id});
        task.status = status;
        task.pinned_node = Some(node.to_owned());
        if status == TaskStatus::Processing {
            task.lease = Some(TaskLease {
                node: node.to_owned(),
                until: 10_000,
                charged: 0,
            });
        }
        task
    }

    /// Only images staged on a node whose heartbeat ended go back to `queued`, with the
    /// import waiting for them failed; a live node's, an unknown node's, one whose import was
    /// claimed, and (for the dead node's own sweep) its own are left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_sweep_dead_stages_only_a_dead_nodes_with_their_waiting_imports() {
        let cluster = PgCluster::start();
        let meta = PgMeta::open(&cluster.database("dead_stages"), 2)
            .await
            .unwrap();
        meta.beat("node-dead", 100).await.unwrap();
        meta.beat("node-live", 10_000).await.unwrap();
        let waiting = import(
            1,
            &staged(2, "node-dead", None),
            TaskStatus::Pending,
            "node-dead",
        );
        let claimed = import(
            2,
            &staged(4, "node-dead", None),
            TaskStatus::Processing,
            "node-dead",
        );
        let alone = staged(1, "node-dead", None);
        let with_import = staged(2, "node-dead", Some(&waiting.id));
        let live = staged(3, "node-live", None);
        let running = staged(4, "node-dead", Some(&claimed.id));
        let unknown = staged(5, "node-never-beat", None);
        for image in [&alone, &with_import, &live, &running, &unknown] {
            meta.put_image(image).await.unwrap();
        }
        for task in [&waiting, &claimed] {
            meta.put_task(task).await.unwrap();
        }
        let ids = |images: &[&ImageRecord]| -> Vec<String> {
            images.iter().map(|i| i.id.clone()).collect()
        };
        assert_eq!(
            meta.dead_stages(200, 10).await.unwrap(),
            ids(&[&alone, &with_import, &running])
        );
        assert_eq!(
            meta.dead_stages(99, 10).await.unwrap(),
            Vec::<String>::new()
        );

        // The dead node's own sweep: it is alive after all.
        assert_eq!(
            sweep_dead_stages_once(&meta, "node-dead", 200, TTL)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            sweep_dead_stages_once(&meta, "node-live", 200, TTL)
                .await
                .unwrap(),
            2
        );
        for (image, status) in [
            (&alone, ImageStatus::Queued),
            (&with_import, ImageStatus::Queued),
            (&live, ImageStatus::Uploading),
            (&running, ImageStatus::Uploading),
            (&unknown, ImageStatus::Uploading),
        ] {
            let stored = meta.get_image(&image.id).await.unwrap().unwrap();
            assert_eq!(stored.status, status, "{}", image.id);
            if status == ImageStatus::Queued {
                assert_eq!(stored.staged_on, None);
                assert!(!stored.properties.contains_key(LOCK_PROPERTY));
                assert_eq!(stored.updated_at, 200);
            }
        }
        let failed = meta.get_task(&waiting.id).await.unwrap().unwrap();
        assert_eq!(failed.status, TaskStatus::Failure);
        assert_eq!(failed.reason.as_deref(), Some(REASON_INTERRUPTED));
        assert!(failed.message.contains("node-dead"), "{}", failed.message);
        let still = meta.get_task(&claimed.id).await.unwrap().unwrap();
        assert_eq!(still.status, TaskStatus::Processing);
        assert_eq!(
            meta.dead_stages(200, 10).await.unwrap(),
            ids(&[&running]),
            "released images leave the index"
        );
        // Once its heartbeat is renewed, a node's stages are not dead any more.
        meta.beat("node-dead", 10_000).await.unwrap();
        assert_eq!(
            meta.dead_stages(200, 10).await.unwrap(),
            Vec::<String>::new()
        );
    }

    /// A node gone for a day is forgotten at the next heartbeat of any node, unless an image
    /// is still staged on it: its stages stay known dead. Seen through `dead_stages`, which
    /// lists only the stages of nodes it knows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_beat_forgets_only_nodes_gone_a_day_that_hold_no_stage() {
        let cluster = PgCluster::start();
        let meta = PgMeta::open(&cluster.database("forget_nodes"), 2)
            .await
            .unwrap();
        for node in ["node-gone", "node-holding", "node-recent"] {
            meta.beat(node, 100).await.unwrap();
        }
        let held = staged(1, "node-holding", None);
        meta.put_image(&held).await.unwrap();
        // node-recent's heartbeat ends a second less than a day before node-live's.
        meta.beat("node-recent", 102).await.unwrap();
        meta.beat("node-live", 100 + FORGET_NODES_AFTER + 1)
            .await
            .unwrap();
        let (gone, recent) = (staged(2, "node-gone", None), staged(3, "node-recent", None));
        meta.put_image(&gone).await.unwrap();
        meta.put_image(&recent).await.unwrap();
        let now = 200 + FORGET_NODES_AFTER;
        assert_eq!(
            meta.dead_stages(now, 10).await.unwrap(),
            vec![held.id.clone(), recent.id.clone()],
            "node-gone is forgotten, the others are still known dead"
        );
    }
}
