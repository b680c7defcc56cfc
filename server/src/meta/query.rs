//! List queries answered from the secondary indexes ([`super::keys::Index`]), shared by every
//! [`super::MetaStore`] implementation through the small [`IndexSource`] trait.
//!
//! # What a page costs
//!
//! A query names the index partitions that hold every record it may return (a project's
//! tasks; a project's images plus the `public` ones; …), a sort, an optional marker, a limit
//! and a filter. Each partition is in (created_at, id) order, so:
//!
//! - **Index order** (the default sort, `created_at` then `id` in one direction; for images
//!   also `sort_key=created_at&sort_dir=…` when the `id` tiebreaker has the same direction):
//!   the partitions are read from the marker on (a seek), merged, and reading stops at the
//!   `limit`-th record the filter accepts. Cost: O(limit + records skipped by the filter)
//!   entries read, whatever the store holds; memory O(limit). Tasks need no record read at
//!   all: their index values are [`TaskSummary`]s, every column a list shows, sorts or
//!   filters by. Images cost one point read per entry.
//! - **Any other sort** (`sort_key=status`, `sort=name:asc`, …): every entry of the query's
//!   partitions is read once and the filter applied, keeping only the best `limit` rows in a
//!   bounded heap (top-k). Cost: O(records in the caller's partitions) reads, never other
//!   projects' private records; memory O(limit) rows.
//! - **Admins** (every task, every image) use the unpartitioned indexes: O(page) in index
//!   order, a scan of everything otherwise.
//!
//! Expired tasks not yet swept and records the filter refuses are read and skipped, so a
//! filter that matches little costs up to the whole partition. The expiry sweeper
//! ([`super::MetaStore::expired_tasks`]) reads only expired entries, in bounded batches.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use super::keys::{self, Index};
use super::{ImageRecord, MetaError, TaskRecord, TaskStatus, Timestamp};

/// A sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortDir {
    /// Ascending.
    Asc,
    /// Descending (the API's default).
    Desc,
}

impl SortDir {
    /// Applies the direction to an ascending comparison.
    pub fn apply(self, ordering: Ordering) -> Ordering {
        match self {
            SortDir::Asc => ordering,
            SortDir::Desc => ordering.reverse(),
        }
    }
}

/// What a task list shows, sorts and filters by: a task without its `input` and `result`
/// (which may be tens of kilobytes). Stored as the value of the task indexes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task's id.
    pub id: String,
    /// `import`.
    pub task_type: String,
    /// Current status.
    pub status: TaskStatus,
    /// The owning project.
    pub owner: String,
    /// Failure explanation, `""` otherwise.
    pub message: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When a finished task expires.
    pub expires_at: Option<Timestamp>,
    /// `req-<uuid>` of the creating request.
    pub request_id: Option<String>,
    /// The creating user.
    pub user_id: Option<String>,
}

impl From<&TaskRecord> for TaskSummary {
    fn from(task: &TaskRecord) -> Self {
        TaskSummary {
            id: task.id.clone(),
            task_type: task.task_type.clone(),
            status: task.status,
            owner: task.owner.clone(),
            message: task.message.clone(),
            created_at: task.created_at,
            updated_at: task.updated_at,
            expires_at: task.expires_at,
            request_id: task.request_id.clone(),
            user_id: task.user_id.clone(),
        }
    }
}

/// A task column a list may be sorted by (Glance: any column of the task table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskColumn {
    /// `id`.
    Id,
    /// `type`.
    Type,
    /// `status`.
    Status,
    /// `owner`.
    Owner,
    /// `created_at`.
    CreatedAt,
    /// `updated_at`.
    UpdatedAt,
    /// `expires_at` (nulls first when ascending).
    ExpiresAt,
    /// `user_id`.
    UserId,
    /// `request_id`.
    RequestId,
    /// `message`.
    Message,
}

impl TaskColumn {
    /// The column named `name` in the API.
    pub fn from_name(name: &str) -> Option<TaskColumn> {
        Some(match name {
            "id" => TaskColumn::Id,
            "type" => TaskColumn::Type,
            "status" => TaskColumn::Status,
            "owner" => TaskColumn::Owner,
            "created_at" => TaskColumn::CreatedAt,
            "updated_at" => TaskColumn::UpdatedAt,
            "expires_at" => TaskColumn::ExpiresAt,
            "user_id" => TaskColumn::UserId,
            "request_id" => TaskColumn::RequestId,
            "message" => TaskColumn::Message,
            _ => return None,
        })
    }

    /// Compares two tasks by this column, ascending.
    pub fn compare(self, a: &TaskSummary, b: &TaskSummary) -> Ordering {
        match self {
            TaskColumn::Id => a.id.cmp(&b.id),
            TaskColumn::Type => a.task_type.cmp(&b.task_type),
            TaskColumn::Status => a.status.as_str().cmp(b.status.as_str()),
            TaskColumn::Owner => a.owner.cmp(&b.owner),
            TaskColumn::CreatedAt => a.created_at.cmp(&b.created_at),
            TaskColumn::UpdatedAt => a.updated_at.cmp(&b.updated_at),
            TaskColumn::ExpiresAt => a.expires_at.cmp(&b.expires_at),
            TaskColumn::UserId => a.user_id.cmp(&b.user_id),
            TaskColumn::RequestId => a.request_id.cmp(&b.request_id),
            TaskColumn::Message => a.message.cmp(&b.message),
        }
    }
}

/// An image column a list may be sorted by (Glance's `SUPPORTED_SORT_KEYS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageColumn {
    /// `name` (nulls first when ascending).
    Name,
    /// `status`.
    Status,
    /// `container_format`.
    ContainerFormat,
    /// `disk_format`.
    DiskFormat,
    /// `size`.
    Size,
    /// `id`.
    Id,
    /// `created_at`.
    CreatedAt,
    /// `updated_at`.
    UpdatedAt,
}

impl ImageColumn {
    /// The column named `name` in the API.
    pub fn from_name(name: &str) -> Option<ImageColumn> {
        Some(match name {
            "name" => ImageColumn::Name,
            "status" => ImageColumn::Status,
            "container_format" => ImageColumn::ContainerFormat,
            "disk_format" => ImageColumn::DiskFormat,
            "size" => ImageColumn::Size,
            "id" => ImageColumn::Id,
            "created_at" => ImageColumn::CreatedAt,
            "updated_at" => ImageColumn::UpdatedAt,
            _ => return None,
        })
    }

    /// Compares two images by this column, ascending.
    pub fn compare(self, a: &ImageRecord, b: &ImageRecord) -> Ordering {
        match self {
            ImageColumn::Name => a.name.cmp(&b.name),
            ImageColumn::Status => a.status.as_str().cmp(b.status.as_str()),
            ImageColumn::ContainerFormat => a.container_format.cmp(&b.container_format),
            ImageColumn::DiskFormat => a.disk_format.cmp(&b.disk_format),
            ImageColumn::Size => a.size.cmp(&b.size),
            ImageColumn::Id => a.id.cmp(&b.id),
            ImageColumn::CreatedAt => a.created_at.cmp(&b.created_at),
            ImageColumn::UpdatedAt => a.updated_at.cmp(&b.updated_at),
        }
    }
}

/// One page of tasks: `GET /v2/tasks` after its parameters are parsed.
pub struct TaskQuery<'q> {
    /// `Some(project)`: only that project's tasks (non-admins); `None`: every task.
    pub owner: Option<&'q str>,
    /// The sort column; the order is `[sort, created_at, id]`, all in `dir` (Glance's).
    pub sort: TaskColumn,
    /// The direction of every sort column.
    pub dir: SortDir,
    /// The marker: the page starts strictly after this task in the order.
    pub after: Option<&'q TaskSummary>,
    /// Most tasks returned.
    pub limit: usize,
    /// Which tasks of the partition to return (expiry, column filters).
    pub filter: &'q (dyn Fn(&TaskSummary) -> bool + Sync),
}

impl TaskQuery<'_> {
    /// The total order of the list.
    pub fn compare(&self, a: &TaskSummary, b: &TaskSummary) -> Ordering {
        [self.sort, TaskColumn::CreatedAt, TaskColumn::Id]
            .into_iter()
            .map(|column| self.dir.apply(column.compare(a, b)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

/// One index partition of images a query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageRange<'a> {
    /// Every image (admins).
    All,
    /// The images of one project.
    Owner(&'a str),
    /// The images of one visibility, every project's.
    Visibility(&'a str),
}

/// One page of images: `GET /v2/images` after its parameters are parsed.
pub struct ImageQuery<'q> {
    /// The partitions to read: every image the filter may accept must be in at least one of
    /// them (an image in several is returned once).
    pub ranges: &'q [ImageRange<'q>],
    /// Sort columns and directions, ending with a unique column (`id`).
    pub sort: &'q [(ImageColumn, SortDir)],
    /// The marker: the page starts strictly after this image in the order.
    pub after: Option<&'q ImageRecord>,
    /// Most images returned.
    pub limit: usize,
    /// Which images of the partitions to return (visibility rules, filters).
    pub filter: &'q (dyn Fn(&ImageRecord) -> bool + Sync),
}

impl ImageQuery<'_> {
    /// The total order of the list.
    pub fn compare(&self, a: &ImageRecord, b: &ImageRecord) -> Ordering {
        self.sort
            .iter()
            .map(|(column, dir)| dir.apply(column.compare(a, b)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }

    /// The direction when the order is the indexes' (created_at, then id, one direction).
    fn index_order(&self) -> Option<SortDir> {
        match self.sort {
            [(ImageColumn::CreatedAt, a), (ImageColumn::Id, b), ..] if a == b => Some(*a),
            _ => None,
        }
    }
}

/// An index entry: key and value.
pub type Entry = (Box<[u8]>, Box<[u8]>);

/// Entries in key order or its reverse.
pub type Entries<'s> = Box<dyn Iterator<Item = Result<Entry, MetaError>> + 's>;

/// What the queries need from a store: ordered reads of a key range, and images by id, all
/// from one consistent view where the store has one (RocksDB: a snapshot).
pub trait IndexSource {
    /// The entries with keys in `[start, end)`, ascending (`Asc`) or descending.
    fn entries(&self, start: Vec<u8>, end: Vec<u8>, dir: SortDir) -> Entries<'_>;

    /// The image `id`.
    ///
    /// # Errors
    /// As [`super::MetaStore::get_image`].
    fn image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError>;
}

/// Answers a [`TaskQuery`] (see the module docs for the cost).
///
/// # Errors
/// A backend error, or an index value that does not decode.
pub fn task_page(
    source: &dyn IndexSource,
    query: &TaskQuery<'_>,
) -> Result<Vec<TaskSummary>, MetaError> {
    let (index, partition) = match query.owner {
        Some(owner) => (Index::TasksByOwner, owner),
        None => (Index::TasksByCreation, ""),
    };
    let load = |_: &[u8], value: &[u8]| decode_summary(value).map(Some);
    let cmp = |a: &TaskSummary, b: &TaskSummary| query.compare(a, b);
    let marker = query.after.map(|m| keys::position(m.created_at, &m.id));
    let parts = [(index, partition)];
    if query.sort == TaskColumn::CreatedAt {
        let rows = merged(source, &parts, query.dir, marker.as_deref());
        in_index_order(rows, load, query.filter, query.limit)
    } else {
        let rows = merged(source, &parts, SortDir::Asc, None);
        top_k(rows, load, query.filter, query.after, &cmp, query.limit)
    }
}

/// Answers an [`ImageQuery`] (see the module docs for the cost).
///
/// # Errors
/// A backend error, or a record or key that does not decode.
pub fn image_page(
    source: &dyn IndexSource,
    query: &ImageQuery<'_>,
) -> Result<Vec<ImageRecord>, MetaError> {
    let parts: Vec<(Index, &str)> = query
        .ranges
        .iter()
        .map(|range| match *range {
            ImageRange::All => (Index::ImagesByCreation, ""),
            ImageRange::Owner(owner) => (Index::ImagesByOwner, owner),
            ImageRange::Visibility(visibility) => (Index::ImagesByVisibility, visibility),
        })
        .collect();
    let load = |position: &[u8], _: &[u8]| source.image(&position_id(position)?);
    let cmp = |a: &ImageRecord, b: &ImageRecord| query.compare(a, b);
    match query.index_order() {
        Some(dir) => {
            let marker = query.after.map(|m| keys::position(m.created_at, &m.id));
            let rows = merged(source, &parts, dir, marker.as_deref());
            in_index_order(rows, load, query.filter, query.limit)
        }
        None => {
            let rows = merged(source, &parts, SortDir::Asc, None);
            top_k(rows, load, query.filter, query.after, &cmp, query.limit)
        }
    }
}

/// The ids of tasks whose `expires_at` is at or before `now`, soonest first, at most `max`.
///
/// # Errors
/// A backend error, or a key that does not decode.
pub fn expired_tasks(
    source: &dyn IndexSource,
    now: Timestamp,
    max: usize,
) -> Result<Vec<String>, MetaError> {
    // Every position at `now` or earlier sorts before the first position of `now + 1`.
    let first_later = keys::position(now.saturating_add(1), "");
    let (start, end) = Index::TasksByExpiry.range("", None, Some(&first_later));
    ids_in(source, Index::TasksByExpiry, start, end, max)
}

/// The ids of `processing` tasks whose lease ended at or before `now`, soonest first, at
/// most `max` ([`Index::TasksByLease`], read up to `now` only).
///
/// # Errors
/// A backend error, or a key that does not decode.
pub fn expired_leases(
    source: &dyn IndexSource,
    now: Timestamp,
    max: usize,
) -> Result<Vec<String>, MetaError> {
    let first_later = keys::position(now.saturating_add(1), "");
    let (start, end) = Index::TasksByLease.range("", None, Some(&first_later));
    ids_in(source, Index::TasksByLease, start, end, max)
}

/// Offers the ids of `pending` and `processing` tasks, oldest first, to `take` until it
/// takes one (returns `Some`), reading the unfinished index only as far as that: the claim
/// of the embedded stores, where `take` re-reads the task under its write lock.
///
/// # Errors
/// A backend or decoding error, or the first error of `take`.
pub fn first_unfinished<T>(
    source: &dyn IndexSource,
    take: &mut dyn FnMut(&str) -> Result<Option<T>, MetaError>,
) -> Result<Option<T>, MetaError> {
    let index = Index::TasksUnfinished;
    let (start, end) = index.range("", None, None);
    for entry in source.entries(start, end, SortDir::Asc) {
        let (key, _) = entry?;
        let id = position_id(index.position_of("", &key).unwrap_or_default())?;
        if let Some(taken) = take(&id)? {
            return Ok(Some(taken));
        }
    }
    Ok(None)
}

/// The ids of `pending` and `processing` tasks, oldest first.
///
/// # Errors
/// A backend error, or a key that does not decode.
pub fn unfinished_tasks(source: &dyn IndexSource) -> Result<Vec<String>, MetaError> {
    let (start, end) = Index::TasksUnfinished.range("", None, None);
    ids_in(source, Index::TasksUnfinished, start, end, usize::MAX)
}

/// The ids of the tasks of image `image_id` ([`Index::TasksByImage`]), by creation: reads
/// only that image's entries.
///
/// # Errors
/// A backend or decoding error.
pub fn image_task_ids(source: &dyn IndexSource, image_id: &str) -> Result<Vec<String>, MetaError> {
    let index = Index::TasksByImage;
    let (start, end) = index.range(image_id, None, None);
    let mut ids = Vec::new();
    for entry in source.entries(start, end, SortDir::Asc) {
        let (key, _) = entry?;
        ids.push(position_id(
            index.position_of(image_id, &key).unwrap_or_default(),
        )?);
    }
    Ok(ids)
}

/// Calls `visit` with every image of `owner`, or every image, by creation.
///
/// # Errors
/// A backend or decoding error, or the first error `visit` returns.
pub fn scan_images(
    source: &dyn IndexSource,
    owner: Option<&str>,
    visit: &mut dyn FnMut(ImageRecord) -> Result<(), MetaError>,
) -> Result<(), MetaError> {
    let (index, partition) = match owner {
        Some(owner) => (Index::ImagesByOwner, owner),
        None => (Index::ImagesByCreation, ""),
    };
    let (start, end) = index.range(partition, None, None);
    for entry in source.entries(start, end, SortDir::Asc) {
        let (key, _) = entry?;
        let position = index.position_of(partition, &key).unwrap_or_default();
        if let Some(image) = source.image(&position_id(position)?)? {
            visit(image)?;
        }
    }
    Ok(())
}

/// Encodes a task summary as an index value (JSON; the index version covers its format).
///
/// # Errors
/// [`MetaError::Backend`] if serde_json refuses it (not expected).
pub fn encode_summary(summary: &TaskSummary) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(summary)
        .map_err(|e| MetaError::Backend(format!("encoding task summary {}: {e}", summary.id)))
}

fn decode_summary(value: &[u8]) -> Result<TaskSummary, MetaError> {
    serde_json::from_slice(value).map_err(|e| MetaError::Decoding {
        what: "task index entry",
        key: String::from_utf8_lossy(value.get(..64).unwrap_or(value)).into_owned(),
        detail: e.to_string(),
    })
}

fn utf8_id(what: &'static str, id: &[u8]) -> Result<String, MetaError> {
    std::str::from_utf8(id)
        .map(str::to_owned)
        .map_err(|_| MetaError::Decoding {
            what,
            key: String::from_utf8_lossy(id).into_owned(),
            detail: "key is not UTF-8".to_owned(),
        })
}

/// The record id of an index position.
fn position_id(position: &[u8]) -> Result<String, MetaError> {
    let (_, id) = keys::split_position(position).ok_or_else(|| MetaError::Decoding {
        what: "index entry",
        key: String::from_utf8_lossy(position).into_owned(),
        detail: "position shorter than its timestamp".to_owned(),
    })?;
    utf8_id("index entry", id)
}

fn ids_in(
    source: &dyn IndexSource,
    index: Index,
    start: Vec<u8>,
    end: Vec<u8>,
    max: usize,
) -> Result<Vec<String>, MetaError> {
    let mut ids = Vec::new();
    for entry in source.entries(start, end, SortDir::Asc).take(max) {
        let (key, _) = entry?;
        ids.push(position_id(
            index.position_of("", &key).unwrap_or_default(),
        )?);
    }
    Ok(ids)
}

/// A position (timestamp bytes, id) and the entry's value.
type Positioned = (Vec<u8>, Box<[u8]>);

/// The entries of several partitions merged by position in `dir`, each position once,
/// starting strictly after `marker` (in `dir`).
fn merged<'s>(
    source: &'s dyn IndexSource,
    parts: &[(Index, &str)],
    dir: SortDir,
    marker: Option<&[u8]>,
) -> Merge<'s> {
    let streams = parts
        .iter()
        .map(|&(index, partition)| {
            let (after, before) = match dir {
                SortDir::Asc => (marker, None),
                SortDir::Desc => (None, marker),
            };
            let (start, end) = index.range(partition, after, before);
            let prefix_len = index.partition_prefix(partition).len();
            (source.entries(start, end, dir), prefix_len, None)
        })
        .collect();
    Merge { streams, dir }
}

/// A k-way merge of ordered index streams (a query reads at most four partitions).
struct Merge<'s> {
    /// Each stream, the length of its partition prefix, and its next entry.
    streams: Vec<(Entries<'s>, usize, Option<Positioned>)>,
    dir: SortDir,
}

impl Iterator for Merge<'_> {
    type Item = Result<Positioned, MetaError>;

    fn next(&mut self) -> Option<Self::Item> {
        for (stream, prefix_len, head) in &mut self.streams {
            if head.is_none() {
                match stream.next() {
                    Some(Ok((key, value))) => {
                        let position = key.get(*prefix_len..).unwrap_or_default().to_vec();
                        *head = Some((position, value));
                    }
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
        }
        let dir = self.dir;
        let best = self
            .streams
            .iter()
            .filter_map(|(_, _, head)| head.as_ref().map(|(p, _)| p))
            .min_by(|a, b| dir.apply(a.cmp(b)))?
            .clone();
        let mut out = None;
        for (_, _, head) in &mut self.streams {
            if head.as_ref().is_some_and(|(p, _)| *p == best) {
                // The same record in several partitions (a project's public image) once.
                out = head.take().or(out);
            }
        }
        out.map(Ok)
    }
}

/// Reads rows in index order until `limit` of them pass `filter`.
fn in_index_order<R>(
    rows: Merge<'_>,
    load: impl Fn(&[u8], &[u8]) -> Result<Option<R>, MetaError>,
    filter: &dyn Fn(&R) -> bool,
    limit: usize,
) -> Result<Vec<R>, MetaError> {
    let mut page = Vec::new();
    if limit == 0 {
        return Ok(page);
    }
    for row in rows {
        let (position, value) = row?;
        if let Some(row) = load(&position, &value)? {
            if filter(&row) {
                page.push(row);
                if page.len() >= limit {
                    break;
                }
            }
        }
    }
    Ok(page)
}

/// A row ordered by the query's comparison (for the bounded heap).
struct Ranked<'c, R> {
    row: R,
    cmp: &'c dyn Fn(&R, &R) -> Ordering,
}

impl<R> PartialEq for Ranked<'_, R> {
    fn eq(&self, other: &Self) -> bool {
        (self.cmp)(&self.row, &other.row).is_eq()
    }
}

impl<R> Eq for Ranked<'_, R> {}

impl<R> PartialOrd for Ranked<'_, R> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<R> Ord for Ranked<'_, R> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.cmp)(&self.row, &other.row)
    }
}

/// Reads every row, keeping the first `limit` after `after` in `cmp` order that pass
/// `filter`: a max-heap of at most `limit + 1` rows.
fn top_k<R>(
    rows: Merge<'_>,
    load: impl Fn(&[u8], &[u8]) -> Result<Option<R>, MetaError>,
    filter: &dyn Fn(&R) -> bool,
    after: Option<&R>,
    cmp: &dyn Fn(&R, &R) -> Ordering,
    limit: usize,
) -> Result<Vec<R>, MetaError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut heap = BinaryHeap::new();
    for row in rows {
        let (position, value) = row?;
        let Some(row) = load(&position, &value)? else {
            continue;
        };
        if !filter(&row) || after.is_some_and(|m| cmp(&row, m) != Ordering::Greater) {
            continue;
        }
        if heap.len() >= limit
            && heap
                .peek()
                .is_some_and(|worst: &Ranked<'_, R>| cmp(&row, &worst.row) != Ordering::Less)
        {
            continue;
        }
        heap.push(Ranked { row, cmp });
        if heap.len() > limit {
            heap.pop();
        }
    }
    Ok(heap.into_sorted_vec().into_iter().map(|r| r.row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_image_index_order_needs_same_direction_tiebreaker() {
        let filter = |_: &ImageRecord| true;
        let query = |sort: &'static [(ImageColumn, SortDir)]| ImageQuery {
            ranges: &[],
            sort,
            after: None,
            limit: 1,
            filter: &filter,
        };
        use ImageColumn::{CreatedAt, Id, Name};
        use SortDir::{Asc, Desc};
        assert_eq!(
            query(&[(CreatedAt, Desc), (Id, Desc)]).index_order(),
            Some(Desc)
        );
        assert_eq!(
            query(&[(CreatedAt, Asc), (Id, Asc)]).index_order(),
            Some(Asc)
        );
        assert_eq!(query(&[(CreatedAt, Asc), (Id, Desc)]).index_order(), None);
        assert_eq!(
            query(&[(Name, Asc), (CreatedAt, Desc), (Id, Desc)]).index_order(),
            None
        );
    }
}
