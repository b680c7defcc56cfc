//! The list queries' part of [`super::conformance_suite`]: every page a store answers equals
//! what sorting all records by the query's own comparison gives, across owners,
//! visibilities, sort columns, directions, markers and limits; and replacing a record
//! (changing an indexed field) or deleting it updates every list at once.

use std::sync::Barrier;

use super::{
    sample_image, sample_task, Decision, ImageColumn, ImageQuery, ImageRange, ImageRecord,
    ImageStatus, MetaError, MetaStore, SortDir, TaskColumn, TaskQuery, TaskRecord, TaskStatus,
    TaskSummary, Transition,
};

const PA: &str = "project-a";
const PB: &str = "project-b";

fn id(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// What a task page must be: the owner's (or every) task the filter accepts, after the
/// marker, in the query's order.
fn expected_tasks(all: &[TaskRecord], query: &TaskQuery<'_>) -> Vec<TaskSummary> {
    let mut rows: Vec<TaskSummary> = all
        .iter()
        .filter(|t| query.owner.is_none_or(|o| t.owner == o))
        .map(TaskSummary::from)
        .filter(|t| (query.filter)(t))
        .filter(|t| query.after.is_none_or(|m| query.compare(t, m).is_gt()))
        .collect();
    rows.sort_by(|a, b| query.compare(a, b));
    rows.truncate(query.limit);
    rows
}

fn expected_images(all: &[ImageRecord], query: &ImageQuery<'_>) -> Vec<ImageRecord> {
    let in_range = |image: &ImageRecord| {
        query.ranges.iter().any(|range| match *range {
            ImageRange::All => true,
            ImageRange::Owner(owner) => image.owner == owner,
            ImageRange::Visibility(v) => image.visibility == v,
        })
    };
    let mut rows: Vec<ImageRecord> = all
        .iter()
        .filter(|i| in_range(i) && (query.filter)(i))
        .filter(|i| query.after.is_none_or(|m| query.compare(i, m).is_gt()))
        .cloned()
        .collect();
    rows.sort_by(|a, b| query.compare(a, b));
    rows.truncate(query.limit);
    rows
}

/// Tasks of two projects; several share a `created_at` (ties broken by id).
fn tasks() -> Vec<TaskRecord> {
    (1..=12u32)
        .map(|n| {
            let mut task = sample_task(&id(n * 7 % 13));
            task.owner = if n % 3 == 0 { PB } else { PA }.to_owned();
            task.created_at = 1_000 + i64::from(n / 2);
            task.updated_at = 5_000 - i64::from(n);
            if n % 4 == 0 {
                task.status = TaskStatus::Failure;
                task.message = format!("failure {n}");
                task.expires_at = Some(2_000 + i64::from(n));
            } else if n % 4 == 1 {
                task.status = TaskStatus::Processing;
            }
            task
        })
        .collect()
}

/// Images of two projects in every visibility; several share a `created_at`.
fn images() -> Vec<ImageRecord> {
    let visibilities = ["private", "public", "community", "shared"];
    (1..=12u32)
        .map(|n| {
            let mut image = sample_image(&id(100 + n * 5 % 12));
            image.owner = if n % 2 == 0 { PB } else { PA }.to_owned();
            image.visibility = visibilities[n as usize % 4].to_owned();
            image.created_at = 1_000 + i64::from(n / 3);
            image.name = (n % 5 != 0).then(|| format!("name-{}", n % 4));
            // Every third image is queued: no size yet (nulls sort first, as in SQL).
            image.size = (n % 3 != 0).then(|| u64::from(n % 3) * 100);
            if image.size.is_none() {
                image.status = ImageStatus::Queued;
            }
            image
        })
        .collect()
}

async fn check_task_pages(store: &dyn MetaStore, all: &[TaskRecord]) {
    let any = |_: &TaskSummary| true;
    let failed = |t: &TaskSummary| t.status == TaskStatus::Failure;
    for owner in [Some(PA), Some(PB), Some("nobody"), None] {
        for sort in [
            TaskColumn::CreatedAt,
            TaskColumn::Status,
            TaskColumn::ExpiresAt,
        ] {
            for dir in [SortDir::Desc, SortDir::Asc] {
                for (limit, filter) in [
                    (2, &any as &(dyn Fn(&TaskSummary) -> bool + Sync)),
                    (5, &failed),
                    (100, &any),
                ] {
                    // Walk every page by marker, checking each against the reference.
                    let mut after: Option<TaskSummary> = None;
                    for _ in 0..20 {
                        let query = TaskQuery {
                            owner,
                            sort,
                            dir,
                            after: after.as_ref(),
                            limit,
                            filter,
                        };
                        let page = store.list_task_page(&query).await.expect("task page");
                        let want = expected_tasks(all, &query);
                        assert_eq!(
                            page, want,
                            "tasks {owner:?} {sort:?} {dir:?} limit {limit} after {after:?}"
                        );
                        match page.last() {
                            Some(last) if page.len() == limit => after = Some(last.clone()),
                            _ => break,
                        }
                    }
                }
            }
        }
    }
    let none = TaskQuery {
        owner: None,
        sort: TaskColumn::CreatedAt,
        dir: SortDir::Desc,
        after: None,
        limit: 0,
        filter: &any,
    };
    assert_eq!(store.list_task_page(&none).await.expect("limit 0"), vec![]);
}

async fn check_image_pages(store: &dyn MetaStore, all: &[ImageRecord]) {
    use ImageColumn::{CreatedAt, Id, Name, Size};
    use SortDir::{Asc, Desc};
    let any = |_: &ImageRecord| true;
    let sized = |i: &ImageRecord| i.size.is_some_and(|s| s > 0);
    let scopes: [&[ImageRange<'_>]; 5] = [
        &[ImageRange::Owner(PA), ImageRange::Visibility("public")],
        &[
            ImageRange::Owner(PB),
            ImageRange::Visibility("public"),
            ImageRange::Visibility("community"),
        ],
        &[ImageRange::Visibility("community")],
        &[ImageRange::All],
        &[ImageRange::Owner("nobody")],
    ];
    let sorts: [&[(ImageColumn, SortDir)]; 4] = [
        &[(CreatedAt, Desc), (Id, Desc)],
        &[(CreatedAt, Asc), (Id, Asc)],
        &[(CreatedAt, Asc), (Id, Desc)],
        &[(Name, Asc), (Size, Desc), (CreatedAt, Desc), (Id, Desc)],
    ];
    for ranges in scopes {
        for sort in sorts {
            for (limit, filter) in [
                (3, &any as &(dyn Fn(&ImageRecord) -> bool + Sync)),
                (2, &sized),
                (100, &any),
            ] {
                let mut after: Option<ImageRecord> = None;
                for _ in 0..20 {
                    let query = ImageQuery {
                        ranges,
                        sort,
                        after: after.as_ref(),
                        limit,
                        filter,
                    };
                    let page = store.list_image_page(&query).await.expect("image page");
                    let want = expected_images(all, &query);
                    let ids =
                        |v: &[ImageRecord]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
                    assert_eq!(
                        ids(&page),
                        ids(&want),
                        "images {ranges:?} {sort:?} limit {limit} after {:?}",
                        after.as_ref().map(|a| &a.id)
                    );
                    assert_eq!(page, want);
                    match page.last() {
                        Some(last) if page.len() == limit => after = Some(last.clone()),
                        _ => break,
                    }
                }
            }
        }
    }
}

async fn scanned(store: &dyn MetaStore, owner: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    store
        .scan_images(owner, &mut |image| {
            ids.push(image.id);
            Ok(())
        })
        .await
        .expect("scan images");
    ids
}

fn sorted_ids<'r>(ids: impl Iterator<Item = &'r String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.cloned().collect();
    ids.sort();
    ids
}

/// The list queries on an empty store (see the module docs).
///
/// # Panics
/// When the store misbehaves.
pub async fn lists(store: &dyn MetaStore) {
    let mut all_tasks = tasks();
    for task in &all_tasks {
        store.put_task(task).await.expect("put task");
    }
    let mut all_images = images();
    for image in &all_images {
        store.put_image(image).await.expect("put image");
    }
    check_task_pages(store, &all_tasks).await;
    check_image_pages(store, &all_images).await;

    // Expiry and unfinished tasks.
    let expiring = |now: i64, all: &[TaskRecord]| -> Vec<String> {
        let mut due: Vec<&TaskRecord> = all
            .iter()
            .filter(|t| t.expires_at.is_some_and(|at| at <= now))
            .collect();
        due.sort_by_key(|t| (t.expires_at, t.id.clone()));
        due.into_iter().map(|t| t.id.clone()).collect()
    };
    assert_eq!(
        store.expired_tasks(1_999, 10).await.expect("none due"),
        Vec::<String>::new()
    );
    assert_eq!(
        store.expired_tasks(2_008, 10).await.expect("due"),
        expiring(2_008, &all_tasks)
    );
    assert_eq!(
        store
            .expired_tasks(9_999, 2)
            .await
            .expect("at most 2")
            .len(),
        2
    );
    let unfinished = |all: &[TaskRecord]| -> Vec<String> {
        let mut open: Vec<&TaskRecord> = all.iter().filter(|t| !t.status.is_final()).collect();
        open.sort_by_key(|t| (t.created_at, t.id.clone()));
        open.into_iter().map(|t| t.id.clone()).collect()
    };
    assert_eq!(
        store.unfinished_tasks().await.expect("unfinished"),
        unfinished(&all_tasks)
    );

    // Replacing tasks changes every indexed field at once: owner, creation, status, expiry.
    for task in all_tasks.iter_mut().take(4) {
        task.owner = if task.owner == PA { PB } else { PA }.to_owned();
        task.created_at += 3;
        task.status = TaskStatus::Failure;
        task.expires_at = Some(1_500);
        store.put_task(task).await.expect("replace task");
    }
    check_task_pages(store, &all_tasks).await;
    assert_eq!(
        store.expired_tasks(1_500, 20).await.expect("moved expiry"),
        expiring(1_500, &all_tasks)
    );
    assert_eq!(
        store.unfinished_tasks().await.expect("after replace"),
        unfinished(&all_tasks)
    );

    // Deleting removes a task from every list.
    for gone in all_tasks.drain(..5) {
        store.delete_task(&gone.id).await.expect("delete task");
    }
    check_task_pages(store, &all_tasks).await;
    assert_eq!(
        store.expired_tasks(9_999, 20).await.expect("after delete"),
        expiring(9_999, &all_tasks)
    );
    assert_eq!(
        store.unfinished_tasks().await.expect("after delete"),
        unfinished(&all_tasks)
    );

    // Images: the owner scan, then replacements moving visibility and owner, then deletion.
    let of = |owner: &str, all: &[ImageRecord]| {
        sorted_ids(all.iter().filter(|i| i.owner == owner).map(|i| &i.id))
    };
    assert_eq!(
        sorted_ids(scanned(store, Some(PA)).await.iter()),
        of(PA, &all_images)
    );
    assert_eq!(
        sorted_ids(scanned(store, None).await.iter()),
        sorted_ids(all_images.iter().map(|i| &i.id))
    );
    for image in all_images.iter_mut().take(5) {
        image.visibility = if image.visibility == "public" {
            "private"
        } else {
            "public"
        }
        .to_owned();
        image.owner = if image.owner == PA { PB } else { PA }.to_owned();
        image.created_at -= 1;
        store.put_image(image).await.expect("replace image");
    }
    check_image_pages(store, &all_images).await;
    assert_eq!(
        sorted_ids(scanned(store, Some(PB)).await.iter()),
        of(PB, &all_images)
    );
    for gone in all_images.drain(3..7) {
        store.delete_image(&gone.id).await.expect("delete image");
    }
    check_image_pages(store, &all_images).await;
    assert_eq!(
        sorted_ids(scanned(store, None).await.iter()),
        sorted_ids(all_images.iter().map(|i| &i.id))
    );

    // commit_import indexes both records.
    let mut task = sample_task(&id(900));
    task.owner = PB.to_owned();
    task.status = TaskStatus::Processing;
    store.put_task(&task).await.expect("put processing task");
    task.status = TaskStatus::Success;
    task.expires_at = Some(1_600);
    let mut image = sample_image(&id(901));
    image.owner = PB.to_owned();
    image.visibility = "community".to_owned();
    store
        .commit_import(&task, &image)
        .await
        .expect("commit import");
    all_tasks.push(task);
    all_images.push(image);
    check_task_pages(store, &all_tasks).await;
    check_image_pages(store, &all_images).await;
    assert_eq!(
        store.expired_tasks(1_600, 20).await.expect("committed"),
        expiring(1_600, &all_tasks)
    );
}

/// The transitions' part of [`super::conformance_suite`] (see there).
pub(super) async fn transitions(store: &dyn MetaStore) {
    const Q: &str = "a1a1a1a1-0000-4000-8000-00000000000a";
    let mut queued = sample_image(Q);
    queued.status = ImageStatus::Queued;
    (
        queued.size,
        queued.checksum,
        queued.os_hash_algo,
        queued.os_hash_value,
    ) = (None, None, None, None);

    // insert_image: only when the id is free.
    assert!(store.insert_image(&queued).await.expect("insert new image"));
    let mut other = queued.clone();
    other.name = Some("another".to_owned());
    assert!(!store.insert_image(&other).await.expect("insert taken id"));
    assert_eq!(
        store.get_image(Q).await.expect("get inserted"),
        Some(queued.clone())
    );

    // Missing, refused and kept write nothing; the change runs only for an expected status.
    let mut calls = 0;
    let mut to_saving = |image: &mut ImageRecord| {
        calls += 1;
        image.status = ImageStatus::Saving;
        Decision::Write
    };
    let missing = "a1a1a1a1-0000-4000-8000-0000000000ff";
    assert_eq!(
        store
            .transition_image(missing, &ImageStatus::ALL, &mut to_saving)
            .await
            .expect("transition of a missing image"),
        Transition::Missing
    );
    assert_eq!(
        store
            .transition_image(Q, &[ImageStatus::Active], &mut to_saving)
            .await
            .expect("refused transition"),
        Transition::Refused(queued.clone())
    );
    assert_eq!(calls, 0, "change called for a refused transition");
    let kept = store
        .transition_image(Q, &[ImageStatus::Queued], &mut |image| {
            image.name = Some("not written".to_owned());
            Decision::Keep
        })
        .await
        .expect("kept transition");
    assert_eq!(kept, Transition::Kept(queued.clone()));
    assert_eq!(
        store.get_image(Q).await.expect("get kept"),
        Some(queued.clone())
    );

    // A forbidden status change or a changed id is an error, and nothing is written.
    let mut deactivate = |image: &mut ImageRecord| {
        image.status = ImageStatus::Deactivated;
        Decision::Write
    };
    let mut rename = |image: &mut ImageRecord| {
        image.id = missing.to_owned();
        Decision::Write
    };
    let invalid: [&mut (dyn FnMut(&mut ImageRecord) -> Decision + Send); 2] =
        [&mut deactivate, &mut rename];
    for change in invalid {
        assert!(matches!(
            store.transition_image(Q, &[ImageStatus::Queued], change).await,
            Err(MetaError::InvalidChange { ref id, .. }) if id == Q
        ));
    }
    assert_eq!(
        store.get_image(Q).await.expect("get after invalid"),
        Some(queued.clone())
    );
    assert_eq!(
        store
            .get_image(missing)
            .await
            .expect("no image under new id"),
        None
    );

    // A write moves the status and the index entries together.
    let done = store
        .transition_image(Q, &[ImageStatus::Queued], &mut |image| {
            image.status = ImageStatus::Saving;
            image.visibility = "public".to_owned();
            Decision::Write
        })
        .await
        .expect("transition");
    let Transition::Done(saving) = done else {
        panic!("queued → saving not done: {done:?}");
    };
    assert_eq!(saving.status, ImageStatus::Saving);
    assert_eq!(
        store.get_image(Q).await.expect("get saving"),
        Some(saving.clone())
    );
    async fn public(store: &dyn MetaStore) -> Vec<String> {
        let any = |_: &ImageRecord| true;
        store
            .list_image_page(&ImageQuery {
                ranges: &[ImageRange::Visibility("public")],
                sort: &[
                    (ImageColumn::CreatedAt, SortDir::Desc),
                    (ImageColumn::Id, SortDir::Desc),
                ],
                after: None,
                limit: 10,
                filter: &any,
            })
            .await
            .expect("public page")
            .into_iter()
            .map(|i| i.id)
            .collect()
    }
    assert_eq!(public(store).await, [Q]);

    // A delete removes the record and its entries.
    let deleted = store
        .transition_image(Q, &ImageStatus::ALL, &mut |_| Decision::Delete)
        .await
        .expect("delete transition");
    assert_eq!(deleted, Transition::Done(saving));
    assert_eq!(store.get_image(Q).await.expect("get deleted"), None);
    assert!(public(store).await.is_empty());

    // Two threads racing queued → saving on one image: exactly one wins, every time.
    for n in 0..20u32 {
        let id = format!("b2b2b2b2-0000-4000-8000-{n:012}");
        let mut image = queued.clone();
        image.id.clone_from(&id);
        assert!(store.insert_image(&image).await.expect("insert racer"));
        let barrier = Barrier::new(2);
        let handle = tokio::runtime::Handle::current();
        let outcomes: Vec<Transition> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        handle
                            .block_on(store.transition_image(
                                &id,
                                &[ImageStatus::Queued],
                                &mut |image| {
                                    image.status = ImageStatus::Saving;
                                    Decision::Write
                                },
                            ))
                            .expect("racing transition")
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("racer panicked"))
                .collect()
        });
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, Transition::Done(_)))
            .count();
        let lost = outcomes
            .iter()
            .filter(|o| matches!(o, Transition::Refused(i) if i.status == ImageStatus::Saving))
            .count();
        assert_eq!((won, lost), (1, 1), "{outcomes:?}");
        store.delete_image(&id).await.expect("clear racer");
    }
}
