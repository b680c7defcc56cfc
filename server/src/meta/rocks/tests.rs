use super::*;
use crate::meta::testing::{all_images, all_tasks};
use crate::meta::{conformance_suite, sample_image, sample_task};

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test]
async fn test_rocks_meta_conformance_suite_passes() {
    let dir = scratch();
    conformance_suite(&RocksMeta::open(dir.path()).unwrap()).await;
}

#[test]
fn test_rocks_meta_open_missing_dir_created() {
    let dir = scratch();
    let path = dir.path().join("a").join("meta");
    let store = RocksMeta::open(&path).unwrap();
    assert!(store.path() == path);
    assert!(path.join("CURRENT").is_file());
}

#[tokio::test]
async fn test_rocks_meta_reopen_data_survives() {
    let dir = scratch();
    let mut task = sample_task("00000000-0000-4000-8000-000000000001");
    task.status = crate::meta::TaskStatus::Success;
    let image = sample_image("00000000-0000-4000-8000-0000000000a1");
    let gone = sample_task("00000000-0000-4000-8000-000000000002");
    {
        let store = RocksMeta::open(dir.path()).unwrap();
        store.put_task(&gone).unwrap();
        let mut processing = task.clone();
        processing.status = crate::meta::TaskStatus::Processing;
        store.put_task(&processing).unwrap();
        store.commit_import(&task, &image).unwrap();
        store.delete_task(&gone.id).unwrap();
    }
    let store = RocksMeta::open(dir.path()).unwrap();
    assert!(matches!(store.get_task(&task.id), Ok(Some(t)) if t == task));
    assert!(matches!(store.get_image(&image.id), Ok(Some(i)) if i == image));
    assert!(matches!(store.get_task(&gone.id), Ok(None)));
    assert!(matches!(all_tasks(&store).await, Ok(ts) if ts == vec![task.clone()]));
}

#[test]
fn test_rocks_meta_open_locked_backend_error() {
    let dir = scratch();
    let _first = RocksMeta::open(dir.path()).unwrap();
    assert!(matches!(
        RocksMeta::open(dir.path()),
        Err(MetaError::Backend(_))
    ));
}

#[test]
fn test_rocks_meta_open_on_file_backend_error() {
    let dir = scratch();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a database").unwrap();
    assert!(matches!(RocksMeta::open(&file), Err(MetaError::Backend(_))));
}

#[test]
fn test_rocks_meta_read_only_reads_and_refuses_writes() {
    let dir = scratch();
    let task = sample_task("00000000-0000-4000-8000-000000000004");
    RocksMeta::open(dir.path())
        .unwrap()
        .put_task(&task)
        .unwrap();
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    let store = RocksMeta::open_read_only(dir.path()).unwrap();
    assert!(matches!(store.get_task(&task.id), Ok(Some(t)) if t == task));
    assert!(matches!(
        store.put_task(&sample_task("00000000-0000-4000-8000-000000000005")),
        Err(MetaError::Backend(_))
    ));
    // Nothing written: not even an info log rotated.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
    let missing = dir.path().join("none");
    assert!(matches!(
        RocksMeta::open_read_only(&missing),
        Err(MetaError::Backend(_))
    ));
}

#[test]
fn test_rocks_classify_error_enospc_is_storage_full() {
    let e = classify_error(
        "writing task x",
        "IO error: No space left on device: While appending to file: 000004.log".into(),
    );
    assert!(matches!(e, MetaError::StorageFull(ref m) if m.contains("writing task x")));
    let e = classify_error("writing task x", "IO error: EIO".into());
    assert!(matches!(e, MetaError::Backend(_)));
}

#[tokio::test]
async fn test_rocks_meta_corrupt_task_value_decoding_error() {
    let dir = scratch();
    let store = RocksMeta::open(dir.path()).unwrap();
    let id = "00000000-0000-4000-8000-000000000003";
    store
        .db
        .put(Table::Tasks.key(id), b"\x01{\"id\": truncated")
        .unwrap();
    assert!(matches!(
        store.get_task(id),
        Err(MetaError::Decoding { what: "task", ref key, .. }) if key == id
    ));
    // Rebuilding the indexes reads every record: it stops at the corrupt one.
    assert!(matches!(
        store.rebuild(Table::Tasks, index::task_entries),
        Err(MetaError::Decoding { what: "task", ref key, .. }) if key == id
    ));
    // The image table is untouched by the corrupt task.
    assert!(matches!(all_images(&store).await, Ok(is) if is.is_empty()));
}

#[test]
fn test_rocks_meta_corrupt_image_marker_decoding_error() {
    let dir = scratch();
    let store = RocksMeta::open(dir.path()).unwrap();
    let image = sample_image("00000000-0000-4000-8000-0000000000a2");
    store.put_image(&image).unwrap();
    let mut bytes = codec::encode(&image).unwrap();
    if let Some(marker) = bytes.first_mut() {
        *marker = 0xEE;
    }
    store.db.put(Table::Images.key(&image.id), bytes).unwrap();
    assert!(matches!(
        store.get_image(&image.id),
        Err(MetaError::Decoding { what: "image", ref detail, .. }) if detail.contains("238")
    ));
}

#[test]
fn test_rocks_meta_non_utf8_key_decoding_error() {
    let dir = scratch();
    let store = RocksMeta::open(dir.path()).unwrap();
    let mut key = Table::Images.min_key();
    key.push(0xFF);
    store.db.put(key, b"\x01{}").unwrap();
    assert!(matches!(
        store.rebuild(Table::Images, |image| Ok(index::image_entries(image))),
        Err(MetaError::Decoding { what: "image", ref detail, .. }) if detail.contains("UTF-8")
    ));
}

/// A store written before the indexes existed: records only, no index version.
fn pre_index_store(dir: &Path, tasks: &[TaskRecord], images: &[ImageRecord]) {
    let store = RocksMeta::open(dir).unwrap();
    let mut batch = WriteBatch::default();
    batch.delete_range(INDEX_PREFIX, &keys::prefix_end(INDEX_PREFIX));
    batch.delete(SCHEMA_KEY);
    for task in tasks {
        batch.put(Table::Tasks.key(&task.id), codec::encode(task).unwrap());
    }
    for image in images {
        batch.put(Table::Images.key(&image.id), codec::encode(image).unwrap());
    }
    store.write("a pre-index store", batch).unwrap();
}

#[test]
fn test_rocks_meta_open_without_index_version_rebuilds_indexes() {
    let dir = scratch();
    let tasks: Vec<TaskRecord> = (0..2500u32)
        .map(|n| {
            let mut task = sample_task(&format!("00000000-0000-4000-8000-{n:012}"));
            task.created_at = i64::from(n);
            task.owner = if n % 2 == 0 { "pa" } else { "pb" }.to_owned();
            task
        })
        .collect();
    let mut image = sample_image("00000000-0000-4000-8000-0000000000a1");
    image.visibility = "public".to_owned();
    pre_index_store(dir.path(), &tasks, std::slice::from_ref(&image));

    let store = RocksMeta::open(dir.path()).unwrap();
    let any = |_: &TaskSummary| true;
    let page = store
        .list_task_page(&TaskQuery {
            owner: Some("pb"),
            sort: crate::meta::TaskColumn::CreatedAt,
            dir: SortDir::Desc,
            after: None,
            limit: 2,
            filter: &any,
        })
        .unwrap();
    let ids: Vec<&str> = page.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "00000000-0000-4000-8000-000000002499",
            "00000000-0000-4000-8000-000000002497"
        ]
    );
    assert_eq!(store.unfinished_tasks().unwrap().len(), 2500);
    let all = |_: &ImageRecord| true;
    let images = store
        .list_image_page(&ImageQuery {
            ranges: &[crate::meta::ImageRange::Visibility("public")],
            sort: &[
                (crate::meta::ImageColumn::CreatedAt, SortDir::Desc),
                (crate::meta::ImageColumn::Id, SortDir::Desc),
            ],
            after: None,
            limit: 5,
            filter: &all,
        })
        .unwrap();
    assert_eq!(images, vec![image]);
    assert!(matches!(store.db.get(SCHEMA_KEY), Ok(Some(v)) if v == [INDEX_VERSION]));
}

#[test]
fn test_rocks_meta_open_old_index_version_drops_stale_entries() {
    let dir = scratch();
    let task = sample_task("00000000-0000-4000-8000-000000000001");
    {
        let store = RocksMeta::open(dir.path()).unwrap();
        store.put_task(&task).unwrap();
        // An entry of a task that no longer exists, under an older layout.
        let ghost =
            crate::meta::index::task_entries(&sample_task("00000000-0000-4000-8000-000000000002"))
                .unwrap();
        let mut batch = WriteBatch::default();
        for (key, value) in ghost {
            batch.put(key, value);
        }
        batch.put(SCHEMA_KEY, [0]);
        store.write("an old layout", batch).unwrap();
    }
    let store = RocksMeta::open(dir.path()).unwrap();
    assert_eq!(store.unfinished_tasks().unwrap(), vec![task.id]);
}

#[test]
fn test_rocks_meta_open_newer_index_version_backend_error() {
    let dir = scratch();
    {
        let store = RocksMeta::open(dir.path()).unwrap();
        store
            .db
            .put(SCHEMA_KEY, [INDEX_VERSION.saturating_add(1)])
            .unwrap();
    }
    assert!(matches!(
        RocksMeta::open(dir.path()),
        Err(MetaError::Backend(m)) if m.contains("newer")
    ));
}
