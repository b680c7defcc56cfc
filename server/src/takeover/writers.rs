//! Images whose writer is provably dead: a node that died (or lost the database for longer
//! than a lease) while it received an image's body (`saving`) or stage (`uploading`).
//!
//! The receiving node holds a writer lease on the image record ([`WriterLease`]) from the
//! admission of the body, renews it every third of `lease_secs` while the body arrives
//! ([`super::hold_fence`]) and drops it when the body ends. In a shared store, every node's sweep
//! ([`sweep_writers_once`]) returns an image whose writer lease ran out to `queued`, as a
//! failed upload does ([`take_back_writer`]), in three steps: a compare-and-swap on the
//! lease as read puts the sweeping node's own lease in its place ([`writer::seize`]: the
//! image stays `saving`, so no new upload can start); the image's object is deleted, in
//! case the dead node committed it to the store but died before recording it (its own fence,
//! [`super::LeaseFence`], keeps it from committing once its lease has run out); then the
//! sweeper gives the image back ([`writer::release`]). A sweeper that dies in between leaves
//! a lease that runs out in turn. The dead node's unfinished upload is aborted by
//! [`Store::sweep_abandoned`]; a partial stage is the dead node's own file, removed by its
//! next start. An embedded store has nothing to sweep: every writer in it is this live
//! process's, and start-up recovery returns what a crash left.
//!
//! [`Store::sweep_abandoned`]: sluice_pipeline::store::Store::sweep_abandoned

use sluice_pipeline::store::Store;

use super::SWEEP_BATCH;
use crate::meta::writer::{self, WriterLease};
use crate::meta::{ImageRecord, ImageStatus, MetaError, MetaStore, Timestamp, Transition};

/// The statuses an image has while a writer holds it.
pub(super) const WRITTEN: [ImageStatus; 2] = [ImageStatus::Saving, ImageStatus::Uploading];

/// A new writer lease for an upload by `node` admitted at `now`: a fresh upload id, ending
/// `lease_secs` later.
pub fn writer_lease(node: &str, now: Timestamp, lease_secs: u64) -> WriterLease {
    WriterLease {
        node: node.to_owned(),
        upload: uuid::Uuid::new_v4().to_string(),
        until: now.saturating_add(i64::try_from(lease_secs).unwrap_or(i64::MAX)),
        charged: 0,
    }
}

/// Takes `image` (as read) back to `queued` if its writer lease ended by `now` (the module
/// docs): seized under `sweeper` (this node's lease, from [`writer_lease`]) with a
/// compare-and-swap on the lease as read, so a renewal since, or another node's take-back,
/// makes it write nothing; the object of a `saving` image deleted from `store`; then given
/// back. Returns whether it gave the image back. A delete that fails leaves the image
/// seized: the next sweep after `sweeper` runs out tries again.
///
/// # Errors
/// A metadata error.
pub async fn take_back_writer(
    meta: &dyn MetaStore,
    store: &dyn Store,
    image: &ImageRecord,
    sweeper: &WriterLease,
    now: Timestamp,
) -> Result<bool, MetaError> {
    let Some(expired) = image.writer.as_ref() else {
        return Ok(false);
    };
    let seized = meta
        .transition_image(&image.id, &WRITTEN, &mut |current| {
            writer::seize(current, expired, sweeper, now)
        })
        .await?;
    let Transition::Done(seized) = seized else {
        return Ok(false);
    };
    if seized.status == ImageStatus::Saving {
        if let Err(e) = store.delete(&image.id) {
            tracing::warn!(image_id = %image.id, error = %e, "removing what a dead upload may have stored failed; the sweep tries again");
            return Ok(false);
        }
    }
    let back = meta
        .transition_image(&image.id, &WRITTEN, &mut |current| {
            writer::release(current, sweeper, now)
        })
        .await?;
    Ok(matches!(back, Transition::Done(_)))
}

/// One pass of the periodic sweep of a shared store by node `node`: returns to `queued`
/// every image whose writer lease ran out by `now` (at most [`SWEEP_BATCH`]), removing from
/// `store` what their dead uploads may have committed ([`take_back_writer`], holding each
/// image under a lease of `lease_secs` meanwhile); returns their ids. An embedded store has
/// nothing to sweep (the module docs).
///
/// # Errors
/// The first metadata error.
pub async fn sweep_writers_once(
    meta: &dyn MetaStore,
    store: &dyn Store,
    node: &str,
    lease_secs: u64,
    now: Timestamp,
) -> Result<Vec<String>, MetaError> {
    let mut requeued = Vec::new();
    if !meta.is_shared() {
        return Ok(requeued);
    }
    for id in meta.expired_writers(now, SWEEP_BATCH).await? {
        let Some(image) = meta.get_image(&id).await? else {
            continue;
        };
        let sweeper = writer_lease(node, now, lease_secs);
        if take_back_writer(meta, store, &image, &sweeper, now).await? {
            let node = image.writer.as_ref().map_or("", |w| w.node.as_str());
            tracing::warn!(image_id = %id, status = %image.status, node, "writer lease ran out: image back to queued (its upload's node stopped renewing)");
            requeued.push(id);
        }
    }
    Ok(requeued)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_pipeline::store::s3::garage;
    use sluice_pipeline::store::space::Reserve;
    use sluice_pipeline::store::{Access, LocalStore, S3Store};

    use super::*;
    use crate::meta::memory::MemoryMeta;
    use crate::meta::postgres::PgMeta;
    use crate::meta::sample_image;
    use crate::meta::testing_pg::PgCluster;
    use crate::takeover::LeaseFence;

    fn written(n: u32, status: ImageStatus, writer: Option<(&str, Timestamp)>) -> ImageRecord {
        let mut image = sample_image(&format!("00000000-0000-4000-8000-{n:012}"));
        image.status = status;
        image.forget_data();
        image.writer = writer.map(|(node, until)| WriterLease {
            node: node.to_owned(),
            upload: format!("upload-{n}"),
            until,
            charged: 0,
        });
        image
    }

    /// The sweep of a shared store returns exactly the images whose writer lease ran out to
    /// `queued`; a live writer's image and one written before writer leases stay; an
    /// embedded store's sweep touches nothing. The object a dead upload committed to the
    /// object store before it died (before recording it) is deleted, so the image's next
    /// upload, on another node, commits under the same key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_sweep_writers_once_requeues_only_expired_writers_and_removes_their_objects() {
        let cluster = PgCluster::start();
        let meta = PgMeta::open(&cluster.database("writers"), 2).await.unwrap();
        let (dir_c, dir_s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut config = garage::shared().config();
        config.prefix = format!("writers-{}/", uuid::Uuid::new_v4());
        let dead_node = S3Store::open(config.clone(), dir_c.path(), Reserve::Bytes(0)).unwrap();
        let sweeping = S3Store::open(config, dir_s.path(), Reserve::Bytes(0)).unwrap();
        let live = written(1, ImageStatus::Saving, Some(("node-b", 1_000)));
        let unleased = written(2, ImageStatus::Saving, None);
        let dead_file = written(3, ImageStatus::Saving, Some(("node-c", 100)));
        let dead_stage = written(4, ImageStatus::Uploading, Some(("node-c", 200)));
        for image in [&live, &unleased, &dead_file, &dead_stage] {
            meta.put_image(image).await.unwrap();
        }
        // Node C committed the body of `dead_file` and died before recording it.
        let put = |store: &S3Store, id: &str, byte: u8| {
            let mut writer = store.begin(id, Access::Append).unwrap();
            writer.append(&[byte; 4096]).unwrap();
            writer.commit().unwrap();
        };
        put(&dead_node, &dead_file.id, 1);
        put(&dead_node, &live.id, 2);

        let requeued = sweep_writers_once(&meta, &sweeping, "node-s", 30, 500)
            .await
            .unwrap();
        assert_eq!(requeued, [dead_file.id.as_str(), dead_stage.id.as_str()]);
        let stored = async |i: &ImageRecord| meta.get_image(&i.id).await.unwrap().unwrap();
        assert_eq!(stored(&live).await, live);
        assert_eq!(stored(&unleased).await, unleased);
        for dead in [&dead_file, &dead_stage] {
            let back = stored(dead).await;
            assert_eq!(
                (back.status, back.writer, back.updated_at),
                (ImageStatus::Queued, None, 500)
            );
        }
        assert!(
            sweeping.open(&dead_file.id).await.unwrap().is_none(),
            "the dead upload's object is gone"
        );
        assert!(
            sweeping.open(&live.id).await.unwrap().is_some(),
            "a live writer's object stays"
        );
        put(&sweeping, &dead_file.id, 3);
        assert!(sweep_writers_once(&meta, &sweeping, "node-s", 30, 500)
            .await
            .unwrap()
            .is_empty());

        let embedded = MemoryMeta::new();
        embedded.put_image(&dead_file).await.unwrap();
        assert!(sweep_writers_once(&embedded, &sweeping, "node-s", 30, 500)
            .await
            .unwrap()
            .is_empty());
        let kept = embedded.get_image(&dead_file.id).await.unwrap().unwrap();
        assert_eq!(kept.status, ImageStatus::Saving);
        assert!(sweeping.open(&dead_file.id).await.unwrap().is_some());
        for id in [&dead_file.id, &live.id] {
            sweeping.delete(id).unwrap();
        }
    }

    /// A sweeper that seized a dead writer's image and died before giving it back holds it
    /// only until its own lease runs out: the next sweep takes it back from the sweeper.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_sweep_writers_once_takes_back_from_a_sweeper_that_died() {
        let cluster = PgCluster::start();
        let meta = PgMeta::open(&cluster.database("sweeper_died"), 2)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let dead = written(6, ImageStatus::Saving, Some(("node-c", 100)));
        meta.put_image(&dead).await.unwrap();
        let sweeper = writer_lease("node-s", 500, 30);
        let seized = meta
            .transition_image(&dead.id, &WRITTEN, &mut |i| {
                writer::seize(i, dead.writer.as_ref().unwrap(), &sweeper, 500)
            })
            .await
            .unwrap();
        assert!(matches!(seized, Transition::Done(_)));
        assert!(
            sweep_writers_once(&meta, &store, "node-t", 30, 529)
                .await
                .unwrap()
                .is_empty(),
            "the sweeper's lease is live"
        );
        let requeued = sweep_writers_once(&meta, &store, "node-t", 30, 530)
            .await
            .unwrap();
        assert_eq!(requeued, [dead.id.as_str()]);
        let back = meta.get_image(&dead.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.writer), (ImageStatus::Queued, None));
    }

    /// An upload's writer lease is renewed while it runs; once a sweep takes the image back
    /// the next renewal finds it lost, and the upload is told to stop.
    #[tokio::test]
    async fn test_hold_fence_renews_a_writer_lease_then_stops_the_upload_when_taken_back() {
        let meta: Arc<dyn MetaStore> = Arc::new(MemoryMeta::new());
        let start = crate::imports::now();
        let image = written(5, ImageStatus::Saving, Some(("node-a", start)));
        meta.put_image(&image).await.unwrap();
        let held = image.writer.clone().unwrap();
        let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let fence = LeaseFence::writer(
            Arc::clone(&meta),
            image.id.clone(),
            held,
            crate::config::MIN_LEASE_SECS,
        );
        let (mut cancel, lost) = crate::takeover::hold_fence(fence, shutdown);
        let until = async || {
            let stored = meta.get_image(&image.id).await.unwrap().unwrap();
            stored.writer.map(|l| l.until).unwrap_or_default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while until().await <= start {
            assert!(std::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!*cancel.borrow() && !lost.load(Ordering::SeqCst));
        // A sweep whose clock is past the renewed lease takes it back.
        let read = meta.get_image(&image.id).await.unwrap().unwrap();
        let after = read.writer.as_ref().unwrap().until;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let sweeper = writer_lease("node-s", after, 30);
        let taken = take_back_writer(meta.as_ref(), &store, &read, &sweeper, after);
        assert!(taken.await.unwrap());
        tokio::time::timeout(Duration::from_secs(10), cancel.wait_for(|stop| *stop))
            .await
            .expect("the upload is told to stop")
            .unwrap();
        assert!(lost.load(Ordering::SeqCst));
        let back = meta.get_image(&image.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.writer), (ImageStatus::Queued, None));
    }
}
