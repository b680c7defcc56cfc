//! The secondary index entries of each record ([`super::keys::Index`]). A store writes them
//! with the record, and removes the entries of the record it replaces or deletes, in the same
//! atomic write, so records and indexes never disagree.

use super::keys::Index;
use super::query::{encode_summary, TaskSummary};
use super::{ImageRecord, MetaError, TaskRecord, TaskStatus};

/// An index key and its value.
pub type IndexEntry = (Vec<u8>, Vec<u8>);

/// The index entries of `task`.
///
/// # Errors
/// [`MetaError::Backend`] if its summary cannot be encoded (not expected).
pub fn task_entries(task: &TaskRecord) -> Result<Vec<IndexEntry>, MetaError> {
    let summary = encode_summary(&TaskSummary::from(task))?;
    let mut entries = vec![
        (
            Index::TasksByOwner.key(&task.owner, task.created_at, &task.id),
            summary.clone(),
        ),
        (
            Index::TasksByCreation.key("", task.created_at, &task.id),
            summary,
        ),
    ];
    if let Some(at) = task.expires_at {
        entries.push((Index::TasksByExpiry.key("", at, &task.id), Vec::new()));
    }
    if matches!(task.status, TaskStatus::Pending | TaskStatus::Processing) {
        entries.push((
            Index::TasksUnfinished.key("", task.created_at, &task.id),
            Vec::new(),
        ));
    }
    if let Some(until) = super::lease::indexed_until(task) {
        entries.push((Index::TasksByLease.key("", until, &task.id), Vec::new()));
    }
    if let Some(image_id) = task_image_id(task) {
        entries.push((
            Index::TasksByImage.key(image_id, task.created_at, &task.id),
            Vec::new(),
        ));
    }
    Ok(entries)
}

/// The image a task is about (Glance's `tasks.image_id`): an `api_image_import`'s
/// `input.image_id`, else the image an `import` task made (`result.image_id`).
pub fn task_image_id(task: &TaskRecord) -> Option<&str> {
    task.input
        .get("image_id")
        .or_else(|| task.result.as_ref().and_then(|r| r.get("image_id")))
        .and_then(serde_json::Value::as_str)
}

/// The index entries of `image`.
pub fn image_entries(image: &ImageRecord) -> Vec<IndexEntry> {
    vec![
        (
            Index::ImagesByOwner.key(&image.owner, image.created_at, &image.id),
            Vec::new(),
        ),
        (
            Index::ImagesByVisibility.key(&image.visibility, image.created_at, &image.id),
            Vec::new(),
        ),
        (
            Index::ImagesByCreation.key("", image.created_at, &image.id),
            Vec::new(),
        ),
    ]
}

/// The index keys of `old` (to delete) and the entries of `new` (to write), for a change of
/// one task from `old` to `new` (either may be absent).
///
/// # Errors
/// As [`task_entries`].
pub fn task_change(
    old: Option<&TaskRecord>,
    new: Option<&TaskRecord>,
) -> Result<(Vec<Vec<u8>>, Vec<IndexEntry>), MetaError> {
    let stale = match old {
        Some(task) => task_entries(task)?.into_iter().map(|(k, _)| k).collect(),
        None => Vec::new(),
    };
    let fresh = match new {
        Some(task) => task_entries(task)?,
        None => Vec::new(),
    };
    Ok((stale, fresh))
}

/// [`task_change`] for images.
pub fn image_change(
    old: Option<&ImageRecord>,
    new: Option<&ImageRecord>,
) -> (Vec<Vec<u8>>, Vec<IndexEntry>) {
    let stale = old
        .map(|image| image_entries(image).into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    let fresh = new.map(image_entries).unwrap_or_default();
    (stale, fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{sample_image, sample_task};

    const ID: &str = "5d4c3b2a-0000-4000-8000-000000000001";

    #[test]
    fn test_task_entries_expiry_and_unfinished_by_status() {
        let mut task = sample_task(ID);
        assert_eq!(task_entries(&task).unwrap().len(), 3);
        task.status = TaskStatus::Failure;
        task.expires_at = Some(1_700_100_000);
        let keys: Vec<Vec<u8>> = task_entries(&task)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(keys.contains(&Index::TasksByExpiry.key("", 1_700_100_000, ID)));
        assert!(!keys.contains(&Index::TasksUnfinished.key("", task.created_at, ID)));
    }

    #[test]
    fn test_image_change_moves_visibility_entry() {
        let old = sample_image(ID);
        let mut new = old.clone();
        new.visibility = "public".to_owned();
        let (stale, fresh) = image_change(Some(&old), Some(&new));
        let private = Index::ImagesByVisibility.key("private", old.created_at, ID);
        let public = Index::ImagesByVisibility.key("public", old.created_at, ID);
        assert!(stale.contains(&private));
        assert!(fresh.iter().any(|(k, _)| *k == public));
        assert!(!fresh.iter().any(|(k, _)| *k == private));
    }
}
