//! The leases' part of [`super::conformance_suite`]: [`MetaStore::claim_task`] takes the
//! oldest `pending` task (never a `processing` or final one), counts the attempt and records
//! the lease; of two claimers racing one task exactly one wins; [`MetaStore::renew_lease`]
//! extends only its holder's lease, and refuses once the task left `processing`;
//! [`MetaStore::expired_leases`] lists exactly the `processing` tasks whose lease ended;
//! [`MetaStore::take_back`] writes only over the very lease it read.

use std::sync::Barrier;

use super::{sample_task, testing, MetaError, MetaStore, TaskLease, TaskRecord, TaskStatus};

const OLD: &str = "c3c3c3c3-0000-4000-8000-00000000000a";
const NEW: &str = "c3c3c3c3-0000-4000-8000-00000000000b";
const RUNNING: &str = "c3c3c3c3-0000-4000-8000-00000000000c";
const DONE: &str = "c3c3c3c3-0000-4000-8000-00000000000d";
const RACED: &str = "c3c3c3c3-0000-4000-8000-00000000000e";
/// No per-project cap: these claims are about leases (the cap has its own part).
const NO_CAP: u64 = u64::MAX;

fn lease(node: &str, until: i64) -> TaskLease {
    TaskLease {
        node: node.to_owned(),
        until,
        charged: 0,
    }
}

fn task(id: &str, status: TaskStatus, created_at: i64) -> TaskRecord {
    let mut task = sample_task(id);
    task.status = status;
    task.created_at = created_at;
    task
}

/// See the module docs. Removes every task first; leaves its own in the store.
pub(super) async fn leases(store: &dyn MetaStore) {
    for task in testing::all_tasks(store).await.expect("tasks to clear") {
        store.delete_task(&task.id).await.expect("clear task");
    }
    assert_eq!(
        store
            .claim_task(&lease("a", 100), NO_CAP, 10)
            .await
            .expect("claim"),
        None,
        "nothing pending"
    );

    // Oldest pending first; processing (even without a lease) and final tasks are skipped.
    store
        .put_task(&task(RUNNING, TaskStatus::Processing, 1))
        .await
        .expect("put processing");
    store
        .put_task(&task(DONE, TaskStatus::Failure, 2))
        .await
        .expect("put failure");
    store
        .put_task(&task(NEW, TaskStatus::Pending, 30))
        .await
        .expect("put new");
    let mut old = task(OLD, TaskStatus::Pending, 20);
    old.attempts = 2;
    store.put_task(&old).await.expect("put old");
    let first = store
        .claim_task(&lease("a", 100), NO_CAP, 10)
        .await
        .expect("claim first")
        .expect("a pending task");
    let mut expected = old.clone();
    expected.status = TaskStatus::Processing;
    expected.lease = Some(lease("a", 100));
    expected.attempts = 3;
    expected.updated_at = 10;
    assert_eq!(first, expected);
    assert_eq!(store.get_task(OLD).await.expect("get"), Some(expected));
    let second = store
        .claim_task(&lease("b", 90), NO_CAP, 11)
        .await
        .expect("claim second")
        .expect("another pending task");
    assert_eq!((second.id.as_str(), second.attempts), (NEW, 1));
    assert_eq!(
        store
            .claim_task(&lease("a", 100), NO_CAP, 12)
            .await
            .expect("claim"),
        None
    );

    // Renewal: the holder extends; another node, a final task, a missing one are refused.
    assert!(store
        .renew_lease(OLD, "a", 200, 5 << 20)
        .await
        .expect("renew"));
    assert!(!store.renew_lease(OLD, "b", 300, 0).await.expect("renew"));
    assert!(!store
        .renew_lease(RUNNING, "a", 300, 0)
        .await
        .expect("renew"));
    assert!(!store.renew_lease(DONE, "a", 300, 0).await.expect("renew"));
    assert!(!store.renew_lease(RACED, "a", 300, 0).await.expect("renew"));
    let held = store.get_task(OLD).await.expect("get").expect("task");
    let charged = TaskLease {
        charged: 5 << 20,
        ..lease("a", 200)
    };
    assert_eq!(
        held.lease,
        Some(charged),
        "the run's charge is in its lease"
    );
    assert_eq!(held.updated_at, 10, "a renewal is not a visible change");

    // Expiry: NEW (90) then OLD (200), soonest first, only those at or before `now`;
    // RUNNING holds no lease, so nothing says it is dead.
    assert_eq!(
        store.expired_leases(89, 10).await.expect("expired"),
        Vec::<String>::new()
    );
    assert_eq!(store.expired_leases(90, 10).await.expect("expired"), [NEW]);
    assert_eq!(
        store.expired_leases(1_000, 10).await.expect("expired"),
        [NEW, OLD]
    );
    assert_eq!(
        store.expired_leases(1_000, 1).await.expect("expired"),
        [NEW]
    );
    // A finished task leaves the lease index, and its lease cannot be renewed.
    let mut finished = second.clone();
    finished.status = TaskStatus::Success;
    store
        .transition_task(&finished)
        .await
        .expect("processing becomes success");
    assert_eq!(
        store.expired_leases(1_000, 10).await.expect("expired"),
        [OLD]
    );
    assert!(!store.renew_lease(NEW, "b", 300, 0).await.expect("renew"));

    // Two claimers racing one pending task: exactly one wins, and holds the lease.
    store
        .put_task(&task(RACED, TaskStatus::Pending, 40))
        .await
        .expect("put raced");
    let barrier = Barrier::new(2);
    let handle = tokio::runtime::Handle::current();
    let claims: Vec<Option<TaskRecord>> = std::thread::scope(|s| {
        let racers: Vec<_> = ["x", "y"]
            .into_iter()
            .map(|node| {
                let (barrier, handle) = (&barrier, &handle);
                s.spawn(move || {
                    barrier.wait();
                    handle
                        .block_on(store.claim_task(&lease(node, 500), NO_CAP, 20))
                        .expect("racing claim")
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .collect()
    });
    let winners: Vec<&TaskRecord> = claims.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    let winner = winners.first().expect("one winner");
    assert_eq!(winner.id, RACED);
    assert_eq!(
        store.get_task(RACED).await.expect("get raced").as_ref(),
        Some(*winner)
    );
    let loser = if winner.lease.as_ref().map(|l| l.node.as_str()) == Some("x") {
        "y"
    } else {
        "x"
    };
    assert!(!store
        .renew_lease(RACED, loser, 900, 0)
        .await
        .expect("renew"));

    // Take-back: only while the lease read is still the stored one, only to pending or
    // failure without a lease; then the task can be claimed again (one more attempt).
    let mut back = store.get_task(OLD).await.expect("get").expect("old");
    let read = back.lease.take();
    back.status = TaskStatus::Pending;
    assert!(!store
        .take_back(&back, Some(&lease("a", 100)))
        .await
        .expect("stale take-back"));
    let mut leased = back.clone();
    leased.lease = Some(lease("z", 1));
    assert!(!store
        .take_back(&leased, read.as_ref())
        .await
        .expect("take-back keeping a lease"));
    assert!(store
        .take_back(&back, read.as_ref())
        .await
        .expect("take-back"));
    assert!(!store
        .take_back(&back, read.as_ref())
        .await
        .expect("second take-back"));
    assert_eq!(
        store.expired_leases(1_000, 10).await.expect("expired"),
        [RACED]
    );
    let again = store
        .claim_task(&lease("b", 600), NO_CAP, 30)
        .await
        .expect("claim again")
        .expect("the task taken back");
    assert_eq!((again.id.as_str(), again.attempts), (OLD, 4));
    // A processing task written without a lease is taken back by `None`; a final one never.
    let mut failed = task(RUNNING, TaskStatus::Failure, 1);
    failed.message = "interrupted".to_owned();
    assert!(store.take_back(&failed, None).await.expect("take-back"));
    assert_eq!(store.get_task(RUNNING).await.expect("get"), Some(failed));
    let mut done = task(DONE, TaskStatus::Pending, 2);
    done.attempts = 0;
    assert!(!store
        .take_back(&done, None)
        .await
        .expect("take-back of final"));

    // Only the run holding the lease may finish the task: OLD is now attempt 4 on node b.
    let mut stale = again.clone();
    stale.lease = Some(lease("a", 600));
    stale.status = TaskStatus::Success;
    assert!(matches!(
        store.transition_task(&stale).await,
        Err(MetaError::TaskRefused { .. })
    ));
    let mut earlier = again.clone();
    earlier.attempts = 3;
    earlier.status = TaskStatus::Failure;
    assert!(matches!(
        store.transition_task(&earlier).await,
        Err(MetaError::TaskRefused { .. })
    ));
    let mut holder = again.clone();
    holder.lease = Some(lease("b", 1));
    holder.status = TaskStatus::Success;
    store
        .transition_task(&holder)
        .await
        .expect("the holder finishes, whatever its copy says of the lease's end");

    // A run whose task was taken back to pending cannot fail it either.
    let raced = store.get_task(RACED).await.expect("get").expect("raced");
    let mut requeued = raced.clone();
    requeued.lease = None;
    requeued.status = TaskStatus::Pending;
    assert!(store
        .take_back(&requeued, raced.lease.as_ref())
        .await
        .expect("take back raced"));
    let mut late = raced.clone();
    late.status = TaskStatus::Failure;
    assert!(matches!(
        store.transition_task(&late).await,
        Err(MetaError::TaskRefused { .. })
    ));
    assert_eq!(
        store.get_task(RACED).await.expect("get").map(|t| t.status),
        Some(TaskStatus::Pending)
    );
}
