//! `GET /v2/images`: Glance's parameters (filters, both sort syntaxes, marker, limit) parsed
//! here; the page comes from the store's indexes ([`crate::meta::MetaStore::list_image_page`]).
//!
//! Which index partitions a caller's list reads (every image it may see is in one of them;
//! the filter then applies the visibility rules exactly):
//!
//! | caller    | `visibility` | partitions                                  |
//! |-----------|--------------|---------------------------------------------|
//! | non-admin | (none)       | own project, `public` (+ memberships)       |
//! | non-admin | `all`        | own project, `public`, `community` (+ memberships) |
//! | non-admin | `public`, `community` | that visibility                    |
//! | non-admin | `shared`     | own project (+ memberships)                 |
//! | non-admin | `private`    | own project                                 |
//! | admin     | (none), `all`| every image                                 |
//! | admin     | one value    | that visibility                             |
//!
//! (+ memberships): images shared with the caller's project are listed by `member_status`
//! (`pending`, `accepted`, `rejected` or `all`; default `accepted`, as Glance). The caller's
//! memberships are one range of the member index; their images (in none of the partitions
//! read: another project's, `shared`) are read by id, filtered, and merged into the page in
//! the list's order: O(page + memberships), never the whole `shared` partition.
//!
//! The default order (`created_at` then `id`, descending, or both ascending) reads
//! O(page) entries; other orders read the partitions once with a bounded top-k (see
//! [`crate::meta::query`]).

use std::cmp::Ordering;
use std::collections::HashSet;

use http::Response;

use super::{image_json, visible, VISIBILITIES};
use crate::api::auth::RequestContext;
use crate::api::body::ApiBody;
use crate::api::endpoint::Query;
use crate::api::error::ApiError;
use crate::api::isotime::{parse_isotime, IsoTime};
use crate::api::listing::{
    column_equals, page_json, param, params, parse_limit, SortDir, SortValue,
};
use crate::api::{ok_json, Api};
use crate::meta::{ImageColumn, ImageQuery, ImageRange, ImageRecord, MemberStatus};

/// Image sort keys (Glance's `SUPPORTED_SORT_KEYS`).
const SORT_KEYS: [&str; 8] = [
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
];

/// A parsed `GET /v2/images` request.
#[derive(Debug)]
struct ImageListRequest {
    sort: Vec<(ImageColumn, SortDir)>,
    marker: Option<String>,
    limit: usize,
    filters: Vec<Filter>,
    /// The `visibility` filter (`None`: everything visible except others' community images).
    visibility: Option<String>,
    hidden: bool,
    /// The `member_status` filter (`None`: `all`).
    member_status: Option<MemberStatus>,
}

/// One image list filter.
#[derive(Debug)]
enum Filter {
    /// A base column (or an extra property) equal to one of these values.
    In(String, Vec<String>),
    /// The image has every one of these tags.
    Tags(Vec<String>),
    /// `size >= n`.
    SizeMin(u64),
    /// `size <= n`.
    SizeMax(u64),
    /// `protected` equals.
    Protected(bool),
    /// `created_at` or `updated_at` compared with an instant.
    Time(TimeColumn, TimeOp, IsoTime),
}

/// The image times a list can be filtered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeColumn {
    CreatedAt,
    UpdatedAt,
}

impl TimeColumn {
    fn of(self, image: &ImageRecord) -> IsoTime {
        IsoTime::from_timestamp(match self {
            TimeColumn::CreatedAt => image.created_at,
            TimeColumn::UpdatedAt => image.updated_at,
        })
    }
}

/// The operators of the time filters (Glance's `evaluate_filter_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeOp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
    Neq,
}

impl TimeOp {
    fn parse(op: &str) -> Option<TimeOp> {
        match op {
            "eq" => Some(TimeOp::Eq),
            "gt" => Some(TimeOp::Gt),
            "gte" => Some(TimeOp::Gte),
            "lt" => Some(TimeOp::Lt),
            "lte" => Some(TimeOp::Lte),
            "neq" => Some(TimeOp::Neq),
            _ => None,
        }
    }

    /// Whether a column that compares to the filter's instant as `ordering` passes.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            TimeOp::Eq => ordering.is_eq(),
            TimeOp::Gt => ordering.is_gt(),
            TimeOp::Gte => ordering.is_ge(),
            TimeOp::Lt => ordering.is_lt(),
            TimeOp::Lte => ordering.is_le(),
            TimeOp::Neq => ordering.is_ne(),
        }
    }
}

/// Columns that accept Glance's `in:` and `eq:` operators.
const OPERATOR_COLUMNS: [&str; 5] = ["id", "name", "status", "container_format", "disk_format"];

impl ImageListRequest {
    fn parse(query: &Query) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::BadRequest(m);
        let limit = parse_limit(param(query, "limit"))?;
        let marker = param(query, "marker").map(str::to_owned);
        let sort = parse_sort(query)?;
        let mut filters = Vec::new();
        let mut visibility = None;
        let mut hidden = false;
        let mut member_status = Some(MemberStatus::Accepted);
        for (key, value) in query {
            match key.as_str() {
                "limit" | "marker" | "sort" | "sort_key" | "sort_dir" => {}
                "member_status" => {
                    member_status = match value.as_str() {
                        "all" => None,
                        v => Some(
                            MemberStatus::parse(v)
                                .ok_or_else(|| bad(format!("Invalid status: {v}")))?,
                        ),
                    };
                }
                "changes-since" => {
                    return Err(bad(
                        "The 'changes-since' filter is no longer available on v2.".into(),
                    ))
                }
                "visibility" => {
                    if value != "all" && !VISIBILITIES.contains(&value.as_str()) {
                        return Err(bad(format!("Invalid visibility value: {value}")));
                    }
                    visibility = Some(value.clone());
                }
                "os_hidden" => hidden = parse_bool(key, value)?,
                "protected" => filters.push(Filter::Protected(parse_bool(key, value)?)),
                "tag" => filters.push(Filter::Tags(vec![value.clone()])),
                "size_min" | "size_max" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| bad(format!("Invalid value for {key}: {value}")))?;
                    filters.push(if key == "size_min" {
                        Filter::SizeMin(n)
                    } else {
                        Filter::SizeMax(n)
                    });
                }
                column if OPERATOR_COLUMNS.contains(&column) => {
                    filters.push(Filter::In(key.clone(), parse_operator(value)?));
                }
                "created_at" | "updated_at" => {
                    let column = if key == "created_at" {
                        TimeColumn::CreatedAt
                    } else {
                        TimeColumn::UpdatedAt
                    };
                    let (op, at) = parse_time_filter(key, value)?;
                    filters.push(Filter::Time(column, op, at));
                }
                _ => filters.push(Filter::In(key.clone(), vec![value.clone()])),
            }
        }
        Ok(ImageListRequest {
            sort,
            marker,
            limit,
            filters,
            visibility,
            hidden,
            member_status,
        })
    }

    /// `shared`: the images shared with the caller's project with the `member_status` asked.
    fn matches(&self, ctx: &RequestContext, shared: &HashSet<String>, image: &ImageRecord) -> bool {
        let shared_with_caller = image.visibility == "shared" && shared.contains(&image.id);
        if self.hidden || !(visible(ctx, image) || shared_with_caller) {
            return false;
        }
        let visibility_ok = match self.visibility.as_deref() {
            None => image.visibility != "community" || image.owner == ctx.project_id,
            Some("all") => true,
            Some(v) => image.visibility == v,
        };
        visibility_ok
            && self.filters.iter().all(|f| match f {
                Filter::In(column, values) => values
                    .iter()
                    .any(|v| column_equals(image_column(image, column), v)),
                Filter::Tags(tags) => tags.iter().all(|t| image.tags.contains(t)),
                // A null size (a queued image) matches neither, as SQL's comparisons.
                Filter::SizeMin(n) => image.size.is_some_and(|s| s >= *n),
                Filter::SizeMax(n) => image.size.is_some_and(|s| s <= *n),
                Filter::Protected(p) => image.protected == *p,
                Filter::Time(column, op, at) => op.accepts(column.of(image).cmp(at)),
            })
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "Invalid value for {key}: {value}. It must be 'true' or 'false'."
        ))),
    }
}

/// `in:a,"b,c"` → `[a, b,c]`; `eq:x` and plain `x` → `[x]`.
fn parse_operator(value: &str) -> Result<Vec<String>, ApiError> {
    let Some((op, rest)) = value.split_once(':') else {
        return Ok(vec![value.to_owned()]);
    };
    match op {
        "eq" => Ok(vec![rest.to_owned()]),
        "in" => split_quoted(rest),
        _ => Err(ApiError::BadRequest(format!(
            "Unable to filter on a unknown operator '{op}'."
        ))),
    }
}

/// A time filter's value (Glance's `split_filter_op`): `<op>:<ISO 8601 time>`, or a bare
/// time meaning `eq`.
///
/// # Errors
/// 400 naming the operator when it is not one of `gt, gte, lt, lte, eq, neq`, or naming the
/// value when the time does not parse ([`parse_isotime`]).
fn parse_time_filter(key: &str, value: &str) -> Result<(TimeOp, IsoTime), ApiError> {
    if let Some(at) = parse_isotime(value.trim()) {
        return Ok((TimeOp::Eq, at));
    }
    // A prefix that cannot be an operator (`2026-11-24T17` of a malformed bare time) is
    // reported as a bad time, not as an unknown operator.
    let (op, time) = match value.split_once(':') {
        Some((op, time)) if op.bytes().all(|b| b.is_ascii_alphabetic()) => (op, time),
        _ => ("eq", value),
    };
    let op = TimeOp::parse(op).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Unable to filter on a unknown operator '{op}'. The operators of {key} are gt, \
             gte, lt, lte, eq and neq."
        ))
    })?;
    let time = time.trim();
    let at = parse_isotime(time).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Invalid value '{time}' for parameter '{key}': it must be an ISO 8601 time such as \
             2026-11-24T17:28:21Z, optionally after an operator and a colon (gt:, gte:, lt:, \
             lte:, eq:, neq:)."
        ))
    })?;
    Ok((op, at))
}

/// Splits a comma-separated list whose items may be double-quoted (to contain commas).
fn split_quoted(text: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in text.chars() {
        match c {
            '"' if quoted => quoted = false,
            '"' if current.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
                was_quoted = false;
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(ApiError::BadRequest(
            "Invalid filter value: the quotes are not closed.".into(),
        ));
    }
    out.push(current);
    Ok(out)
}

/// The sort keys and directions, from `sort=k:dir,…` or `sort_key`/`sort_dir`, with
/// Glance's tiebreakers `created_at` and `id` (descending) appended.
fn parse_sort(query: &Query) -> Result<Vec<(ImageColumn, SortDir)>, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let check_key = |key: &str| -> Result<ImageColumn, ApiError> {
        match ImageColumn::from_name(key) {
            Some(column) => Ok(column),
            None => Err(bad(format!(
                "Invalid sort key: {key}. It must be one of the following: {}.",
                SORT_KEYS.join(", ")
            ))),
        }
    };
    let new_syntax = param(query, "sort");
    let keys: Vec<&str> = params(query, "sort_key").collect();
    let dirs: Vec<&str> = params(query, "sort_dir").collect();
    let mut sort: Vec<(ImageColumn, SortDir)> = Vec::new();
    if let Some(spec) = new_syntax {
        if !keys.is_empty() || !dirs.is_empty() {
            return Err(bad("Old and new sorting syntax cannot be combined".into()));
        }
        for item in spec.split(',') {
            let (key, dir) = match item.split_once(':') {
                Some((k, d)) => (k.trim(), SortDir::parse(d.trim())?),
                None => (item.trim(), SortDir::Desc),
            };
            sort.push((check_key(key)?, dir));
        }
    } else {
        let dirs: Vec<SortDir> = dirs
            .iter()
            .map(|d| SortDir::parse(d))
            .collect::<Result<_, _>>()?;
        let keys: Vec<&str> = if keys.is_empty() {
            vec!["created_at"]
        } else {
            keys
        };
        if dirs.len() > 1 && dirs.len() != keys.len() {
            return Err(bad(
                "Number of sort dirs does not match the number of sort keys".into(),
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            let dir = match dirs.as_slice() {
                [] => SortDir::Desc,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(SortDir::Desc),
            };
            sort.push((check_key(key)?, dir));
        }
    }
    for tiebreak in [ImageColumn::CreatedAt, ImageColumn::Id] {
        if !sort.iter().any(|(k, _)| *k == tiebreak) {
            sort.push((tiebreak, SortDir::Desc));
        }
    }
    Ok(sort)
}

/// A nullable text column.
fn text(value: Option<&str>) -> SortValue<'_> {
    value.map_or(SortValue::Null, SortValue::Str)
}

/// An image column (base field or extra property) for sorting and filtering.
fn image_column<'i>(image: &'i ImageRecord, column: &str) -> SortValue<'i> {
    match column {
        "id" => SortValue::Str(&image.id),
        "name" => image
            .name
            .as_deref()
            .map_or(SortValue::Null, SortValue::Str),
        "status" => SortValue::Str(image.status.as_str()),
        "visibility" => SortValue::Str(&image.visibility),
        "owner" => SortValue::Str(&image.owner),
        "container_format" => text(image.container_format.as_deref()),
        "disk_format" => text(image.disk_format.as_deref()),
        "checksum" => text(image.checksum.as_deref()),
        "os_hash_algo" => text(image.os_hash_algo.as_deref()),
        "os_hash_value" => text(image.os_hash_value.as_deref()),
        "size" => image
            .size
            .map_or(SortValue::Null, |v| SortValue::Int(i128::from(v))),
        "virtual_size" => image
            .virtual_size
            .map_or(SortValue::Null, |v| SortValue::Int(i128::from(v))),
        "min_disk" => SortValue::Int(i128::from(image.min_disk)),
        "min_ram" => SortValue::Int(i128::from(image.min_ram)),
        "protected" => SortValue::Bool(image.protected),
        "created_at" => SortValue::Int(i128::from(image.created_at)),
        "updated_at" => SortValue::Int(i128::from(image.updated_at)),
        property => image
            .properties
            .get(property)
            .map_or(SortValue::Null, |v| SortValue::Str(v)),
    }
}

/// The index partitions holding every image `ctx` may list with this `visibility` filter
/// (the table in the module docs).
fn ranges<'c>(ctx: &'c RequestContext, visibility: Option<&'c str>) -> Vec<ImageRange<'c>> {
    let own = ImageRange::Owner(&ctx.project_id);
    match (ctx.is_admin, visibility) {
        (true, None | Some("all")) => vec![ImageRange::All],
        (true, Some(v)) => vec![ImageRange::Visibility(v)],
        (false, None) => vec![own, ImageRange::Visibility("public")],
        (false, Some("all")) => vec![
            own,
            ImageRange::Visibility("public"),
            ImageRange::Visibility("community"),
        ],
        (false, Some(v @ ("public" | "community"))) => vec![ImageRange::Visibility(v)],
        (false, Some(_)) => vec![own],
    }
}

/// The ids of the images shared with the caller's project whose member status is `status`
/// (`None`: any); none for admins, who see every image anyway, and none for a `visibility`
/// filter that excludes `shared` images.
async fn shared_with(
    meta: &dyn crate::meta::MetaStore,
    ctx: &RequestContext,
    status: Option<MemberStatus>,
    visibility: Option<&str>,
) -> Result<HashSet<String>, ApiError> {
    if ctx.is_admin || !matches!(visibility, None | Some("all" | "shared")) {
        return Ok(HashSet::new());
    }
    Ok(meta
        .member_images(&ctx.project_id)
        .await?
        .into_iter()
        .filter(|m| status.is_none_or(|s| m.status == s))
        .map(|m| m.image_id)
        .collect())
}

/// `GET /v2/images`.
pub async fn list(
    api: &Api,
    ctx: &RequestContext,
    query: Query,
) -> Result<Response<ApiBody>, ApiError> {
    let req = ImageListRequest::parse(&query)?;
    let limit = req.limit;
    let page = page(api.state.meta.as_ref(), ctx, &req).await?;

    let items = page.iter().map(image_json).collect();
    let last_id = page.last().map(|i| i.id.as_str());
    Ok(ok_json(&page_json("images", items, &query, limit, last_id)))
}

/// One page of `GET /v2/images`: the caller's partitions from the store, plus the images shared
/// with the caller's project.
async fn page(
    meta: &dyn crate::meta::MetaStore,
    ctx: &RequestContext,
    req: &ImageListRequest,
) -> Result<Vec<ImageRecord>, ApiError> {
    let visibility = req.visibility.as_deref();
    let shared = shared_with(meta, ctx, req.member_status, visibility).await?;
    let marker = match &req.marker {
        Some(id) => Some(
            meta.get_image(id)
                .await?
                .filter(|i| visible(ctx, i) || shared.contains(&i.id))
                .ok_or_else(|| ApiError::BadRequest(format!("No image found with ID {id}")))?,
        ),
        None => None,
    };
    let filter = |image: &ImageRecord| req.matches(ctx, &shared, image);
    let ranges = ranges(ctx, visibility);
    let query = ImageQuery {
        ranges: &ranges,
        sort: &req.sort,
        after: marker.as_ref(),
        limit: req.limit,
        filter: &filter,
    };
    let mut page = meta.list_image_page(&query).await?;
    if shared.is_empty() {
        return Ok(page);
    }
    // The images shared with the caller: another project's, so in no partition read.
    for id in &shared {
        let Some(image) = meta.get_image(id).await? else {
            continue;
        };
        let after_marker = marker
            .as_ref()
            .is_none_or(|m| query.compare(&image, m).is_gt());
        if image.owner != ctx.project_id && after_marker && filter(&image) {
            page.push(image);
        }
    }
    page.sort_by(|a, b| query.compare(a, b));
    page.truncate(req.limit);
    Ok(page)
}
