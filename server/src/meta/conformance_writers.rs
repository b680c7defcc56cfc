//! The writer leases' part of [`super::conformance_suite`]: [`MetaStore::expired_writers`]
//! lists exactly the images being written (`saving`, `uploading`) whose writer lease ended,
//! soonest first, at most the number asked; [`MetaStore::writing_images`] counts a project's
//! leased ones; a transition out of those statuses drops the
//! lease; and the compare-and-swap of a take-back ([`writer::seize`] run by
//! [`MetaStore::transition_image`], then [`writer::release`]) writes only over the very lease
//! it read: of two sweeps racing one image, or of a renewal racing a take-back, exactly one
//! writes.

use std::sync::Barrier;

use super::writer::{self, WriterLease};
use super::{sample_image, testing, Decision, ImageRecord, ImageStatus, MetaStore, Transition};

const SAVING: &str = "d4d4d4d4-0000-4000-8000-00000000000a";
const UPLOADING: &str = "d4d4d4d4-0000-4000-8000-00000000000b";
const LIVE: &str = "d4d4d4d4-0000-4000-8000-00000000000c";
const UNLEASED: &str = "d4d4d4d4-0000-4000-8000-00000000000d";
const ACTIVE: &str = "d4d4d4d4-0000-4000-8000-00000000000e";
/// The statuses a writer holds.
const WRITTEN: [ImageStatus; 2] = [ImageStatus::Saving, ImageStatus::Uploading];
/// When the sweeps of this part run.
const NOW: i64 = 500;

fn lease(upload: &str, until: i64) -> WriterLease {
    WriterLease {
        node: "node-a".to_owned(),
        upload: upload.to_owned(),
        until,
        charged: 0,
    }
}

/// The sweeping node's lease of a take-back.
fn sweeper() -> WriterLease {
    WriterLease {
        node: "node-s".to_owned(),
        upload: "sweep".to_owned(),
        until: NOW + 300,
        charged: 0,
    }
}

fn image(id: &str, status: ImageStatus, writer: Option<WriterLease>) -> ImageRecord {
    let mut image = sample_image(id);
    image.status = status;
    image.forget_data();
    image.writer = writer;
    image
}

/// A change a sweep or a renewal runs on an image being written.
type Change<'a> = &'a (dyn Fn(&mut ImageRecord) -> Decision + Sync);

/// Runs `change` on image `id` as a sweep or a renewal would.
async fn change(store: &dyn MetaStore, id: &str, change: Change<'_>) -> Transition {
    store
        .transition_image(id, &WRITTEN, &mut |image| change(image))
        .await
        .expect("writer transition")
}

/// See the module docs. Removes every image first; leaves its own in the store.
pub(super) async fn writers(store: &dyn MetaStore) {
    for image in testing::all_images(store).await.expect("images to clear") {
        store.delete_image(&image.id).await.expect("clear image");
    }
    let expired = async |now: i64, max: usize| {
        store
            .expired_writers(now, max)
            .await
            .expect("expired writers")
    };
    assert!(expired(NOW, 10).await.is_empty(), "nothing leased");

    // Only images being written under a lease that ended, soonest first.
    for record in [
        image(SAVING, ImageStatus::Saving, Some(lease("u1", 100))),
        image(UPLOADING, ImageStatus::Uploading, Some(lease("u2", 50))),
        image(LIVE, ImageStatus::Saving, Some(lease("u3", 1_000))),
        // Written before writer leases: nothing proves its writer dead.
        image(UNLEASED, ImageStatus::Saving, None),
        // A lease left on an image no longer written is not one.
        image(ACTIVE, ImageStatus::Active, Some(lease("u4", 10))),
    ] {
        store.put_image(&record).await.expect("put image");
    }
    assert_eq!(expired(NOW, 10).await, [UPLOADING, SAVING]);
    assert_eq!(expired(NOW, 1).await, [UPLOADING]);
    // The project's images being written: every leased one, live or not, up to `max`.
    let owner = sample_image(SAVING).owner;
    let writing = async |owner: &str, max: u64| {
        store
            .writing_images(owner, max)
            .await
            .expect("writing images")
    };
    assert_eq!(writing(&owner, 10).await, 3);
    assert_eq!(writing(&owner, 2).await, 2);
    assert_eq!(writing("another-project", 10).await, 0);
    assert_eq!(expired(50, 10).await, [UPLOADING], "ended at `now` counts");
    assert!(expired(49, 10).await.is_empty());
    assert_eq!(
        store
            .get_image(SAVING)
            .await
            .expect("get")
            .expect("stored")
            .writer,
        Some(lease("u1", 100)),
        "the lease round-trips"
    );

    // A renewal by the holding upload moves the lease out of the expired range; another
    // upload's renewal writes nothing; a take-back of the lease as read before the renewal
    // writes nothing either.
    let renewed = change(store, SAVING, &|i| {
        writer::renew(i, &lease("u1", 0), 2_000, 0)
    })
    .await;
    assert!(matches!(renewed, Transition::Done(ref i) if i.writer == Some(lease("u1", 2_000))));
    let foreign = change(store, SAVING, &|i| {
        writer::renew(i, &lease("u9", 0), 3_000, 0)
    })
    .await;
    assert!(matches!(foreign, Transition::Kept(_)), "{foreign:?}");
    assert_eq!(expired(NOW, 10).await, [UPLOADING]);
    let stale = change(store, SAVING, &|i| {
        writer::seize(i, &lease("u1", 100), &sweeper(), NOW)
    })
    .await;
    assert!(matches!(stale, Transition::Kept(ref i) if i.status == ImageStatus::Saving));

    // The take-back of the lease as read: first held by the sweeper (still being written,
    // its lease now the sweeper's), then given back: queued, without the lease, out of the
    // range.
    let seized = change(store, UPLOADING, &|i| {
        writer::seize(i, &lease("u2", 50), &sweeper(), NOW)
    })
    .await;
    assert!(
        matches!(seized, Transition::Done(ref i) if i.status == ImageStatus::Uploading && i.writer == Some(sweeper())),
        "{seized:?}"
    );
    assert!(
        expired(NOW, 10).await.is_empty(),
        "the sweeper's lease is live"
    );
    let back = change(store, UPLOADING, &|i| writer::release(i, &sweeper(), NOW)).await;
    assert!(
        matches!(back, Transition::Done(ref i) if i.status == ImageStatus::Queued && i.writer.is_none()),
        "{back:?}"
    );
    assert!(expired(NOW, 10).await.is_empty());

    // Leaving `saving` drops the lease, whatever the change did with it.
    let activated = store
        .transition_image(LIVE, &[ImageStatus::Saving], &mut |i| {
            i.status = ImageStatus::Active;
            Decision::Write
        })
        .await
        .expect("activate");
    assert!(matches!(activated, Transition::Done(ref i) if i.writer.is_none()));
    assert_eq!(
        expired(i64::MAX, 10).await,
        [SAVING],
        "only the renewed one is left"
    );

    races(store).await;
}

/// Two sweeps racing the take-back of one dead writer's image, then a renewal racing a
/// take-back: exactly one writes, every time.
async fn races(store: &dyn MetaStore) {
    let read = lease("u1", 100);
    let by = sweeper();
    let take_back = |i: &mut ImageRecord| writer::seize(i, &read, &by, NOW);
    let renew = |i: &mut ImageRecord| writer::renew(i, &read, 2_000, 0);
    let racers: [[Change<'_>; 2]; 2] = [[&take_back, &take_back], [&renew, &take_back]];
    for (kind, pair) in racers.iter().enumerate() {
        for n in 0..10u32 {
            let id = format!("e5e5e5e5-0000-4000-8000-{kind:04}{n:08}");
            let record = image(&id, ImageStatus::Saving, Some(read.clone()));
            assert!(store.insert_image(&record).await.expect("insert racer"));
            let barrier = Barrier::new(2);
            let handle = tokio::runtime::Handle::current();
            let outcomes: Vec<Transition> = std::thread::scope(|s| {
                let threads: Vec<_> = pair
                    .iter()
                    .map(|racer| {
                        let (id, barrier, handle) = (&id, &barrier, &handle);
                        s.spawn(move || {
                            barrier.wait();
                            handle.block_on(change(store, id, *racer))
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().expect("racer panicked"))
                    .collect()
            });
            let won: Vec<&ImageRecord> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Transition::Done(i) => Some(i),
                    _ => None,
                })
                .collect();
            assert_eq!(won.len(), 1, "{outcomes:?}");
            let stored = store.get_image(&id).await.expect("get").expect("stored");
            assert_eq!(&stored, won[0], "the winner's write stands");
            let consistent = stored.status == ImageStatus::Saving
                && (stored.writer == Some(sweeper()) || stored.writer == Some(lease("u1", 2_000)));
            assert!(consistent, "{stored:?}");
            store.delete_image(&id).await.expect("clear racer");
        }
    }
}
