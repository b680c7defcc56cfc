//! The list queries' part of [`super::conformance_suite`]: every page a store answers equals
//! what sorting all records by the query's own comparison gives, across owners,
//! visibilities, sort columns, directions, markers and limits; and replacing a record
//! (changing an indexed field) or deleting it updates every list at once.

use super::{
    sample_image, sample_task, ImageColumn, ImageQuery, ImageRange, ImageRecord, ImageStatus,
    MetaStore, SortDir, TaskColumn, TaskQuery, TaskRecord, TaskStatus, TaskSummary,
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

fn check_task_pages(store: &dyn MetaStore, all: &[TaskRecord]) {
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
                    (2, &any as &dyn Fn(&TaskSummary) -> bool),
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
                        let page = store.list_task_page(&query).expect("task page");
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
    assert_eq!(store.list_task_page(&none).expect("limit 0"), vec![]);
}

fn check_image_pages(store: &dyn MetaStore, all: &[ImageRecord]) {
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
                (3, &any as &dyn Fn(&ImageRecord) -> bool),
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
                    let page = store.list_image_page(&query).expect("image page");
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

fn scanned(store: &dyn MetaStore, owner: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    store
        .scan_images(owner, &mut |image| {
            ids.push(image.id);
            Ok(())
        })
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
pub fn lists(store: &dyn MetaStore) {
    let mut all_tasks = tasks();
    for task in &all_tasks {
        store.put_task(task).expect("put task");
    }
    let mut all_images = images();
    for image in &all_images {
        store.put_image(image).expect("put image");
    }
    check_task_pages(store, &all_tasks);
    check_image_pages(store, &all_images);

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
        store.expired_tasks(1_999, 10).expect("none due"),
        Vec::<String>::new()
    );
    assert_eq!(
        store.expired_tasks(2_008, 10).expect("due"),
        expiring(2_008, &all_tasks)
    );
    assert_eq!(store.expired_tasks(9_999, 2).expect("at most 2").len(), 2);
    let unfinished = |all: &[TaskRecord]| -> Vec<String> {
        let mut open: Vec<&TaskRecord> = all.iter().filter(|t| !t.status.is_final()).collect();
        open.sort_by_key(|t| (t.created_at, t.id.clone()));
        open.into_iter().map(|t| t.id.clone()).collect()
    };
    assert_eq!(
        store.unfinished_tasks().expect("unfinished"),
        unfinished(&all_tasks)
    );

    // Replacing tasks changes every indexed field at once: owner, creation, status, expiry.
    for task in all_tasks.iter_mut().take(4) {
        task.owner = if task.owner == PA { PB } else { PA }.to_owned();
        task.created_at += 3;
        task.status = TaskStatus::Failure;
        task.expires_at = Some(1_500);
        store.put_task(task).expect("replace task");
    }
    check_task_pages(store, &all_tasks);
    assert_eq!(
        store.expired_tasks(1_500, 20).expect("moved expiry"),
        expiring(1_500, &all_tasks)
    );
    assert_eq!(
        store.unfinished_tasks().expect("after replace"),
        unfinished(&all_tasks)
    );

    // Deleting removes a task from every list.
    for gone in all_tasks.drain(..5) {
        store.delete_task(&gone.id).expect("delete task");
    }
    check_task_pages(store, &all_tasks);
    assert_eq!(
        store.expired_tasks(9_999, 20).expect("after delete"),
        expiring(9_999, &all_tasks)
    );
    assert_eq!(
        store.unfinished_tasks().expect("after delete"),
        unfinished(&all_tasks)
    );

    // Images: the owner scan, then replacements moving visibility and owner, then deletion.
    let of = |owner: &str, all: &[ImageRecord]| {
        sorted_ids(all.iter().filter(|i| i.owner == owner).map(|i| &i.id))
    };
    assert_eq!(
        sorted_ids(scanned(store, Some(PA)).iter()),
        of(PA, &all_images)
    );
    assert_eq!(
        sorted_ids(scanned(store, None).iter()),
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
        store.put_image(image).expect("replace image");
    }
    check_image_pages(store, &all_images);
    assert_eq!(
        sorted_ids(scanned(store, Some(PB)).iter()),
        of(PB, &all_images)
    );
    for gone in all_images.drain(3..7) {
        store.delete_image(&gone.id).expect("delete image");
    }
    check_image_pages(store, &all_images);
    assert_eq!(
        sorted_ids(scanned(store, None).iter()),
        sorted_ids(all_images.iter().map(|i| &i.id))
    );

    // commit_import indexes both records.
    let mut task = sample_task(&id(900));
    task.owner = PB.to_owned();
    task.status = TaskStatus::Success;
    task.expires_at = Some(1_600);
    let mut image = sample_image(&id(901));
    image.owner = PB.to_owned();
    image.visibility = "community".to_owned();
    store.commit_import(&task, &image).expect("commit import");
    all_tasks.push(task);
    all_images.push(image);
    check_task_pages(store, &all_tasks);
    check_image_pages(store, &all_images);
    assert_eq!(
        store.expired_tasks(1_600, 20).expect("committed"),
        expiring(1_600, &all_tasks)
    );
}
