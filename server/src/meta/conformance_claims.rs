//! The claims' part of [`super::conformance_suite`]: which task [`MetaStore::claim_task`]
//! takes. The oldest task of the project with the fewest `processing` tasks (of any node);
//! never a task pinned to another node; never one of a project already at the per-project
//! cap; and under claimers racing (threads standing for nodes) each task goes to exactly one
//! of them and no project ever runs more than the cap. And [`MetaStore::queued_tasks`], the
//! counts the admission caps of a shared store read.

use std::sync::Barrier;

use super::{sample_task, testing, MetaStore, QueuedTasks, TaskLease, TaskRecord, TaskStatus};

const P1: &str = "d4d4d4d4-0000-4000-8000-0000000000a1";
const P2: &str = "d4d4d4d4-0000-4000-8000-0000000000a2";
const P3: &str = "d4d4d4d4-0000-4000-8000-0000000000a3";
const Q0: &str = "d4d4d4d4-0000-4000-8000-0000000000b0";
const Q1: &str = "d4d4d4d4-0000-4000-8000-0000000000b1";
const R1: &str = "d4d4d4d4-0000-4000-8000-0000000000c1";

fn task(id: &str, owner: &str, status: TaskStatus, created_at: i64) -> TaskRecord {
    let mut task = sample_task(id);
    task.owner = owner.to_owned();
    task.status = status;
    task.created_at = created_at;
    task
}

/// Node `node`'s claim under the cap `per_project`: the id claimed, if any.
async fn claim(store: &dyn MetaStore, node: &str, per_project: u64) -> Option<String> {
    let lease = TaskLease {
        node: node.to_owned(),
        until: 1_000,
        charged: 0,
    };
    let claimed = store
        .claim_task(&lease, per_project, 100)
        .await
        .expect("claim");
    if let Some(task) = &claimed {
        assert_eq!(
            (task.status, task.lease.as_ref()),
            (TaskStatus::Processing, Some(&lease))
        );
    }
    claimed.map(|t| t.id)
}

async fn clear(store: &dyn MetaStore) {
    for task in testing::all_tasks(store).await.expect("tasks to clear") {
        store.delete_task(&task.id).await.expect("clear task");
    }
}

/// See the module docs. Removes every task first; leaves its own in the store.
pub(super) async fn claims(store: &dyn MetaStore) {
    clear(store).await;
    for t in [
        task(P1, "p", TaskStatus::Pending, 10),
        task(P2, "p", TaskStatus::Pending, 11),
        // Another node runs one of q's imports (written without a lease: it still counts).
        task(Q0, "q", TaskStatus::Processing, 1),
        task(Q1, "q", TaskStatus::Pending, 5),
    ] {
        store.put_task(&t).await.expect("put");
    }
    // r's task has its data on node b alone.
    let mut pinned = task(R1, "r", TaskStatus::Pending, 2);
    pinned.pinned_node = Some("b".to_owned());
    store.put_task(&pinned).await.expect("put pinned");

    // Waiting: p 2, q 1, r 1; running: q 1. Each count stops at `max`.
    let queued = |owner: &'static str, max: u64| async move {
        store.queued_tasks(owner, max).await.expect("queued")
    };
    let counts = |pending, project_pending, project_processing| QueuedTasks {
        pending,
        project_pending,
        project_processing,
    };
    assert_eq!(queued("p", 10).await, counts(4, 2, 0));
    assert_eq!(queued("q", 10).await, counts(4, 1, 1));
    assert_eq!(queued("z", 10).await, counts(4, 0, 0));
    assert_eq!(queued("p", 1).await, counts(1, 1, 0));

    // p runs nothing, q one: p's oldest goes first, though q's and r's are older.
    assert_eq!(claim(store, "a", 2).await.as_deref(), Some(P1));
    // One each: the older of their oldest tasks.
    assert_eq!(claim(store, "a", 2).await.as_deref(), Some(Q1));
    // q is at the cap (2): p's next.
    assert_eq!(claim(store, "a", 2).await.as_deref(), Some(P2));
    // Both at the cap, and r's task is pinned to b: nothing for a.
    assert_eq!(claim(store, "a", 2).await, None);
    let waiting = store.get_task(R1).await.expect("get").expect("r1");
    assert_eq!(waiting.status, TaskStatus::Pending);
    // b may run it, and it keeps its pin.
    assert_eq!(claim(store, "b", 2).await.as_deref(), Some(R1));
    let pinned = store.get_task(R1).await.expect("get").expect("r1");
    assert_eq!(pinned.pinned_node.as_deref(), Some("b"));

    // The cap holds a pending task back until one of the project's imports ends.
    store
        .put_task(&task(P3, "p", TaskStatus::Pending, 12))
        .await
        .expect("put p3");
    assert_eq!(claim(store, "a", 2).await, None);
    assert_eq!(claim(store, "c", 3).await.as_deref(), Some(P3));
    let mut done = store.get_task(P1).await.expect("get").expect("p1");
    done.status = TaskStatus::Success;
    store.transition_task(&done).await.expect("p1 succeeds");
    let mut back = store.get_task(P3).await.expect("get").expect("p3");
    let read = back.lease.take();
    back.status = TaskStatus::Pending;
    assert!(store.take_back(&back, read.as_ref()).await.expect("back"));
    assert_eq!(claim(store, "a", 2).await.as_deref(), Some(P3));

    racing(store).await;
}

/// Six claimers racing over three projects of two pending tasks each, under a cap of one:
/// exactly three win, one task of each project, each task at most once. Each task is pinned
/// to its own claimer, so the two claimers of a project go for different tasks: only the
/// claims' serialisation (not the row lock) keeps the project at its cap.
async fn racing(store: &dyn MetaStore) {
    clear(store).await;
    let projects = ["s", "t", "u"];
    for (n, owner) in projects.iter().enumerate() {
        for k in 0..2 {
            let created = i64::try_from(n * 2 + k).expect("small");
            let id = format!("d4d4d4d4-0000-4000-8000-0000000001{n}{k}");
            let mut pending = task(&id, owner, TaskStatus::Pending, created);
            pending.pinned_node = Some(format!("node-{}", n * 2 + k));
            store.put_task(&pending).await.expect("put");
        }
    }
    let racers = 6;
    let barrier = Barrier::new(racers);
    let handle = tokio::runtime::Handle::current();
    let claims: Vec<Option<String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..racers)
            .map(|n| {
                let (barrier, handle) = (&barrier, &handle);
                s.spawn(move || {
                    barrier.wait();
                    handle.block_on(claim(store, &format!("node-{n}"), 1))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("racer"))
            .collect()
    });
    let mut won: Vec<String> = claims.into_iter().flatten().collect();
    won.sort();
    let before = won.len();
    won.dedup();
    assert_eq!(before, won.len(), "a task claimed twice: {won:?}");
    let mut owners = Vec::new();
    for id in &won {
        let stored = store.get_task(id).await.expect("get").expect("claimed");
        assert_eq!(stored.status, TaskStatus::Processing);
        owners.push(stored.owner);
    }
    owners.sort();
    assert_eq!(owners, projects, "one import per project at a cap of one");
    let running = testing::all_tasks(store)
        .await
        .expect("tasks")
        .into_iter()
        .filter(|t| t.status == TaskStatus::Processing)
        .count();
    assert_eq!(running, projects.len());
}
