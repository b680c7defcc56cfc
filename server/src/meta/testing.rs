//! Test support: every record of a store, read the way the service reads lists (the paged
//! queries), for tests and [`super::conformance_suite`]. The service itself never lists a
//! whole table.

use super::{
    ImageColumn, ImageQuery, ImageRange, ImageRecord, MetaError, MetaStore, SortDir, TaskColumn,
    TaskQuery, TaskRecord, TaskSummary,
};

/// Records read per page: small, so that the tests page more than once.
const PAGE: usize = 64;

/// Every task of `store`, ordered by id: [`MetaStore::list_task_page`] paged to the end, each
/// summary read back as its record (a task deleted in between is skipped).
///
/// # Errors
/// The first error of a page or a read.
pub async fn all_tasks(store: &dyn MetaStore) -> Result<Vec<TaskRecord>, MetaError> {
    let any = |_: &TaskSummary| true;
    let mut tasks = Vec::new();
    let mut after: Option<TaskSummary> = None;
    loop {
        let page = store
            .list_task_page(&TaskQuery {
                owner: None,
                sort: TaskColumn::Id,
                dir: SortDir::Asc,
                after: after.as_ref(),
                limit: PAGE,
                filter: &any,
            })
            .await?;
        for summary in &page {
            tasks.extend(store.get_task(&summary.id).await?);
        }
        match page.into_iter().last() {
            Some(last) => after = Some(last),
            None => return Ok(tasks),
        }
    }
}

/// Every image of `store`, ordered by id: [`MetaStore::list_image_page`] paged to the end.
///
/// # Errors
/// The first error of a page.
pub async fn all_images(store: &dyn MetaStore) -> Result<Vec<ImageRecord>, MetaError> {
    let any = |_: &ImageRecord| true;
    let mut images: Vec<ImageRecord> = Vec::new();
    loop {
        let page = store
            .list_image_page(&ImageQuery {
                ranges: &[ImageRange::All],
                sort: &[(ImageColumn::Id, SortDir::Asc)],
                after: images.last(),
                limit: PAGE,
                filter: &any,
            })
            .await?;
        if page.is_empty() {
            return Ok(images);
        }
        images.extend(page);
    }
}
