//! The list queries of [`super::PgMeta`], with `query.rs`'s semantics and costs: the query's
//! partitions (`WHERE owner = …`, `visibility = …`, or every row) are read through their
//! `(partition, created_at, id)` indexes by a cursor, [`BATCH`] rows per round trip.
//!
//! - Index order: one ordered scan per partition, merged by PostgreSQL (`MergeAppend`),
//!   starting after the marker (a row comparison on `(created_at, id)`); reading stops at
//!   the `limit`-th row the filter accepts. An image in two partitions comes twice, adjacent,
//!   and is kept once.
//! - Any other sort: every row of the partitions once, keeping the best `limit` rows after
//!   the marker in the query's own order ([`TopK`]), so the order is exactly Rust's.

use std::cmp::Ordering;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::{decode, pg_error};
use crate::meta::query::{ImageColumn, ImageRange, SortDir, TaskColumn};
use crate::meta::{ImageQuery, ImageRecord, MetaError, TaskQuery, TaskSummary};

/// Rows fetched per round trip of a list's cursor: a page (≤ 1,000 rows, the API's cap)
/// usually takes one or two, while a cursor over a large partition holds at most this many
/// records (~1 KiB each) in memory at once.
const BATCH: i32 = 256;

/// The best `limit` rows seen so far, in `cmp` order (a sorted vector: `limit` is small).
struct TopK<'c, R> {
    rows: Vec<R>,
    limit: usize,
    cmp: &'c (dyn Fn(&R, &R) -> Ordering + Sync),
}

impl<R> TopK<'_, R> {
    fn offer(&mut self, row: R) {
        let at = self
            .rows
            .partition_point(|r| (self.cmp)(r, &row) != Ordering::Greater);
        if at < self.limit {
            self.rows.insert(at, row);
            self.rows.truncate(self.limit);
        }
    }
}

fn direction(dir: SortDir) -> &'static str {
    match dir {
        SortDir::Asc => "ASC",
        SortDir::Desc => "DESC",
    }
}

/// Streams the rows of `sql` through a cursor, calling `each` until it returns `false`.
async fn stream(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    each: &mut (dyn FnMut(&tokio_postgres::Row) -> Result<bool, MetaError> + Send),
) -> Result<(), MetaError> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| pg_error("starting a list", &e))?;
    let portal = tx
        .bind(sql, params)
        .await
        .map_err(|e| pg_error("opening a list", &e))?;
    loop {
        let rows = tx
            .query_portal(&portal, BATCH)
            .await
            .map_err(|e| pg_error("reading a list", &e))?;
        for row in &rows {
            if !each(row)? {
                return Ok(());
            }
        }
        if rows.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            return Ok(());
        }
    }
}

/// Answers a [`TaskQuery`].
///
/// # Errors
/// A database error, or a row that does not decode.
pub(super) async fn task_page(
    client: &mut Client,
    query: &TaskQuery<'_>,
) -> Result<Vec<TaskSummary>, MetaError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut wheres = Vec::new();
    if let Some(owner) = &query.owner {
        params.push(owner);
        wheres.push(format!("owner = ${}", params.len()));
    }
    let marker = query.after.map(|m| (m.created_at, m.id.as_str()));
    let index_order = query.sort == TaskColumn::CreatedAt;
    let mut order = String::new();
    if index_order {
        let dir = direction(query.dir);
        if let Some((at, id)) = &marker {
            params.push(at);
            params.push(id);
            let op = if query.dir == SortDir::Asc { ">" } else { "<" };
            wheres.push(format!(
                "(created_at, id) {op} (${}, ${})",
                params.len().saturating_sub(1),
                params.len()
            ));
        }
        order = format!(" ORDER BY created_at {dir}, id {dir}");
    }
    let filter = if wheres.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wheres.join(" AND "))
    };
    let sql = format!("SELECT id, summary FROM tasks{filter}{order}");
    let cmp = |a: &TaskSummary, b: &TaskSummary| query.compare(a, b);
    let mut top = TopK {
        rows: Vec::new(),
        limit: query.limit,
        cmp: &cmp,
    };
    let mut page = Vec::new();
    stream(client, &sql, &params, &mut |row| {
        let task: TaskSummary = decode("task", row, "summary")?;
        if !(query.filter)(&task) {
            return Ok(true);
        }
        if index_order {
            page.push(task);
            return Ok(page.len() < query.limit);
        }
        if query
            .after
            .is_none_or(|m| query.compare(&task, m) == Ordering::Greater)
        {
            top.offer(task);
        }
        Ok(true)
    })
    .await?;
    Ok(if index_order { page } else { top.rows })
}

/// Answers an [`ImageQuery`].
///
/// # Errors
/// A database error, or a row that does not decode.
pub(super) async fn image_page(
    client: &mut Client,
    query: &ImageQuery<'_>,
) -> Result<Vec<ImageRecord>, MetaError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let index_dir = match query.sort {
        [(ImageColumn::CreatedAt, a), (ImageColumn::Id, b), ..] if a == b => Some(*a),
        _ => None,
    };
    let marker = query.after.map(|m| (m.created_at, m.id.as_str()));
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut marker_sql = String::new();
    if let (Some(dir), Some((at, id))) = (index_dir, &marker) {
        params.push(at);
        params.push(id);
        let op = if dir == SortDir::Asc { ">" } else { "<" };
        marker_sql = format!(" AND (created_at, id) {op} ($1, $2)");
    }
    let order = index_dir.map(|dir| {
        let dir = direction(dir);
        format!(" ORDER BY created_at {dir}, id {dir}")
    });
    let mut partitions = Vec::new();
    for range in query.ranges {
        partitions.push(match range {
            ImageRange::All => "TRUE".to_owned(),
            ImageRange::Owner(owner) => {
                params.push(owner);
                format!("owner = ${}", params.len())
            }
            ImageRange::Visibility(visibility) => {
                params.push(visibility);
                format!("visibility = ${}", params.len())
            }
        });
    }
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let sql = match &order {
        // One ordered index scan per partition, merged.
        Some(order) => {
            let scans: Vec<String> = partitions
                .iter()
                .map(|p| {
                    format!(
                        "(SELECT id, created_at, record FROM images WHERE {p}{marker_sql}{order})"
                    )
                })
                .collect();
            format!(
                "SELECT id, record FROM ({}) AS p{order}",
                scans.join(" UNION ALL ")
            )
        }
        // Every row of the partitions once (a bitmap OR of their indexes).
        None => format!(
            "SELECT id, record FROM images WHERE {}",
            partitions
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
    };
    let cmp = |a: &ImageRecord, b: &ImageRecord| query.compare(a, b);
    let mut top = TopK {
        rows: Vec::new(),
        limit: query.limit,
        cmp: &cmp,
    };
    let mut page: Vec<ImageRecord> = Vec::new();
    let mut last_id: Option<String> = None;
    stream(client, &sql, &params, &mut |row| {
        if index_dir.is_some() {
            // An image in two partitions comes twice, adjacent in index order.
            let id: String = row.get(0);
            if last_id.as_deref() == Some(id.as_str()) {
                return Ok(true);
            }
            last_id = Some(id);
        }
        let image: ImageRecord = decode("image", row, "record")?;
        if !(query.filter)(&image) {
            return Ok(true);
        }
        if index_dir.is_some() {
            page.push(image);
            return Ok(page.len() < query.limit);
        }
        if query
            .after
            .is_none_or(|m| query.compare(&image, m) == Ordering::Greater)
        {
            top.offer(image);
        }
        Ok(true)
    })
    .await?;
    Ok(if index_dir.is_some() { page } else { top.rows })
}

/// [`crate::meta::MetaStore::scan_images`]: the owner's partition (or every image) by
/// creation, through a cursor.
///
/// # Errors
/// A database or decoding error, or the first error of `visit`.
pub(super) async fn scan_images(
    client: &mut Client,
    owner: Option<&str>,
    visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
) -> Result<(), MetaError> {
    let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match &owner {
        Some(owner) => (
            "SELECT id, record FROM images WHERE owner = $1 ORDER BY created_at, id",
            vec![owner],
        ),
        None => (
            "SELECT id, record FROM images ORDER BY created_at, id",
            vec![],
        ),
    };
    stream(client, sql, &params, &mut |row| {
        visit(decode("image", row, "record")?)?;
        Ok(true)
    })
    .await
}
