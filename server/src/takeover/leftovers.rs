//! What a dead run of an import may have left in the image store (issue #13): a node that
//! committed an image to the store and died before recording it leaves an object that no
//! record names. In an embedded store start-up recovery removes every such object; in a
//! shared store nothing may list the store against the records (another node's commit may
//! be in flight), so the runs that could have left one are named instead:
//!
//! - a legacy `import` task stores each run under its own image id, derived from the task
//!   id and the attempt ([`attempt_image_id`]): an earlier run's id that has no image record
//!   is a leftover;
//! - an interoperable import (`api_image_import`) stores under its image's id: while the
//!   image is not `active` and still carries the task's import lock, what is stored under
//!   it is an earlier run's.
//!
//! A task's next run removes its earlier runs' leftovers before it pulls
//! ([`remove_leftovers`]: otherwise an interoperable import would find its key taken), and
//! the take-back that ends a task for good removes them all.

use sluice_pipeline::store::Store;

use crate::imports::API_IMAGE_IMPORT;
use crate::meta::{ImageStatus, MetaError, MetaStore, TaskRecord, LOCK_PROPERTY};

/// The namespace of [`attempt_image_id`]'s name-based UUIDs (a random UUID, fixed forever:
/// changing it would orphan the leftovers of runs before the change).
const ATTEMPT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5d1c_e3a4_6f0b_4b8e_9c2d_71a4_e0f3_b615);

/// The image id that run `attempt` (1 for the first) of legacy import task `task_id` stores
/// its image under: a name-based UUID (version 5) of both, so that whoever takes the task
/// back knows which keys earlier runs may have written, and no two runs share one.
pub fn attempt_image_id(task_id: &str, attempt: u32) -> String {
    let name = format!("{task_id}/{attempt}");
    uuid::Uuid::new_v5(&ATTEMPT_NAMESPACE, name.as_bytes()).to_string()
}

/// Removes from `store` what runs `1..=runs` of `task` may have committed without recording
/// (the module docs); returns the ids it removed an object under (or found none to remove:
/// a store's delete of a missing key succeeds). A store that fails to delete is logged and
/// the rest goes on: a legacy run's leftover then stays until an operator removes it, an
/// interoperable import's makes its next run fail with the store's reason.
///
/// # Errors
/// A metadata error (nothing more removed).
pub async fn remove_leftovers(
    meta: &dyn MetaStore,
    store: &dyn Store,
    task: &TaskRecord,
    runs: u32,
) -> Result<Vec<String>, MetaError> {
    let mut candidates = Vec::new();
    if task.task_type == API_IMAGE_IMPORT {
        let image_id = task.input.get("image_id").and_then(|v| v.as_str());
        if let Some(image_id) = image_id.filter(|_| runs > 0) {
            let image = meta.get_image(image_id).await?;
            let unfinished = image.is_some_and(|image| {
                image.status != ImageStatus::Active
                    && image.properties.get(LOCK_PROPERTY) == Some(&task.id)
            });
            if unfinished {
                candidates.push(image_id.to_owned());
            }
        }
    } else {
        for attempt in 1..=runs {
            let id = attempt_image_id(&task.id, attempt);
            if meta.get_image(&id).await?.is_none() {
                candidates.push(id);
            }
        }
    }
    let mut removed = Vec::new();
    for id in candidates {
        match store.delete(&id) {
            Ok(()) => removed.push(id),
            Err(e) => {
                tracing::warn!(task_id = %task.id, image_id = %id, error = %e, "removing what an earlier run of the task may have stored failed");
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use sluice_pipeline::store::s3::garage;
    use sluice_pipeline::store::space::Reserve;
    use sluice_pipeline::store::{Access, S3Store};

    use super::*;
    use crate::meta::memory::MemoryMeta;
    use crate::meta::{sample_image, sample_task};

    fn put(store: &dyn Store, id: &str) {
        let mut writer = store.begin(id, Access::Append).unwrap();
        writer.append(b"left").unwrap();
        writer.commit().unwrap();
    }

    #[test]
    fn test_attempt_image_id_is_stable_distinct_and_a_uuid() {
        let task = "00000000-0000-4000-8000-000000000001";
        let first = attempt_image_id(task, 1);
        assert_eq!(first, attempt_image_id(task, 1));
        assert_ne!(first, attempt_image_id(task, 2));
        assert_ne!(
            first,
            attempt_image_id("00000000-0000-4000-8000-000000000002", 1)
        );
        let parsed = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
    }

    /// In the object store: a legacy task's earlier runs' objects without a record go, one
    /// with a record stays; an interoperable import's object goes while its image is not
    /// active under the task's lock, and stays once another task locks it or it is active.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_remove_leftovers_removes_only_unrecorded_runs_objects() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = garage::shared().config();
        config.prefix = format!("leftovers-{}/", uuid::Uuid::new_v4());
        let store = S3Store::open(config, dir.path(), Reserve::Bytes(0)).unwrap();
        let meta = MemoryMeta::new();

        let mut legacy = sample_task("00000000-0000-4000-8000-000000000011");
        legacy.task_type = "import".to_owned();
        let runs: Vec<String> = (1..=3).map(|a| attempt_image_id(&legacy.id, a)).collect();
        for id in &runs {
            put(&store, id);
        }
        // Run 2 was recorded (as if its task record was lost, not its image).
        meta.put_image(&sample_image(&runs[1])).await.unwrap();
        let removed = remove_leftovers(&meta, &store, &legacy, 2).await.unwrap();
        assert_eq!(removed, [runs[0].clone()]);
        let kept = store.list_ids().unwrap();
        let mut expected = vec![runs[1].clone(), runs[2].clone()];
        expected.sort();
        assert_eq!(kept, expected, "recorded and later runs stay");

        let mut api = sample_task("00000000-0000-4000-8000-000000000012");
        api.task_type = API_IMAGE_IMPORT.to_owned();
        let mut image = sample_image("00000000-0000-4000-8000-000000000013");
        api.input = serde_json::json!({ "image_id": image.id });
        image.status = ImageStatus::Importing;
        image
            .properties
            .insert(LOCK_PROPERTY.into(), api.id.clone());
        meta.put_image(&image).await.unwrap();
        put(&store, &image.id);
        assert!(remove_leftovers(&meta, &store, &api, 0)
            .await
            .unwrap()
            .is_empty());
        assert!(
            store.open(&image.id).await.unwrap().is_some(),
            "no earlier run"
        );
        assert_eq!(
            remove_leftovers(&meta, &store, &api, 1).await.unwrap(),
            [image.id.clone()]
        );
        assert!(store.open(&image.id).await.unwrap().is_none());

        put(&store, &image.id);
        image
            .properties
            .insert(LOCK_PROPERTY.into(), "another-task".into());
        meta.put_image(&image).await.unwrap();
        assert!(remove_leftovers(&meta, &store, &api, 1)
            .await
            .unwrap()
            .is_empty());
        image
            .properties
            .insert(LOCK_PROPERTY.into(), api.id.clone());
        image.status = ImageStatus::Active;
        meta.put_image(&image).await.unwrap();
        assert!(remove_leftovers(&meta, &store, &api, 1)
            .await
            .unwrap()
            .is_empty());
        assert!(store.open(&image.id).await.unwrap().is_some());
        for id in store.list_ids().unwrap() {
            store.delete(&id).unwrap();
        }
    }
}
