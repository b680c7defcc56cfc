//! `GET /v2/tasks`: Glance's parameters parsed here (in its deserializer's order); the page
//! comes from the store's indexes ([`crate::meta::MetaStore::list_task_page`]): a
//! non-admin's list reads its project's partition only, an admin's every task; the default
//! order reads O(page) entries, other sort keys the partition once with a bounded top-k
//! (see [`crate::meta::query`]).

use http::Response;
use serde_json::Value;

use super::{task_stub, visible, IMPORT};
use crate::api::auth::RequestContext;
use crate::api::body::ApiBody;
use crate::api::endpoint::Query;
use crate::api::error::ApiError;
use crate::api::listing::{
    column_equals, is_uuid, page_json, param, parse_limit, SortDir, SortValue,
};
use crate::api::{now, ok_json, Api};
use crate::meta::{TaskColumn, TaskQuery, TaskSummary};

/// Columns a task list may be sorted or filtered by.
const TASK_COLUMNS: [&str; 10] = [
    "id",
    "type",
    "status",
    "owner",
    "created_at",
    "updated_at",
    "expires_at",
    "user_id",
    "request_id",
    "message",
];

/// A parsed `GET /v2/tasks` request.
#[derive(Debug)]
struct TaskListRequest {
    sort_key: TaskColumn,
    sort_dir: SortDir,
    filters: Vec<(String, String)>,
    marker: Option<String>,
    limit: usize,
}

impl TaskListRequest {
    /// Glance's deserializer order: sort direction, filters, marker format, limit.
    fn parse(query: &Query) -> Result<Self, ApiError> {
        let sort_dir = SortDir::parse(param(query, "sort_dir").unwrap_or("desc"))?;
        let mut filters = Vec::new();
        for (key, value) in query {
            match key.as_str() {
                "limit" | "marker" | "sort_key" | "sort_dir" => {}
                "status" => {
                    if !["pending", "processing", "success", "failure"].contains(&value.as_str()) {
                        return Err(ApiError::BadRequest(format!(
                            "Invalid status value: {value}"
                        )));
                    }
                    filters.push((key.clone(), value.clone()));
                }
                "type" => {
                    if value != IMPORT {
                        return Err(ApiError::BadRequest(format!("Invalid type value: {value}")));
                    }
                    filters.push((key.clone(), value.clone()));
                }
                // Other task columns filter by equality; unknown keys are ignored (Glance).
                column if TASK_COLUMNS.contains(&column) => {
                    filters.push((key.clone(), value.clone()));
                }
                _ => {}
            }
        }
        let marker = match param(query, "marker") {
            Some(m) if !is_uuid(m) => {
                return Err(ApiError::BadRequest("Invalid marker format".into()))
            }
            other => other.map(str::to_owned),
        };
        let limit = parse_limit(param(query, "limit"))?;
        let sort_key = TaskColumn::from_name(param(query, "sort_key").unwrap_or("created_at"))
            .ok_or_else(|| ApiError::BadRequest("Sort key supplied was not valid.".into()))?;
        Ok(TaskListRequest {
            sort_key,
            sort_dir,
            filters,
            marker,
            limit,
        })
    }
}

/// `GET /v2/tasks`: filters, sort (`[sort_key, created_at, id]`, one direction), keyset
/// paging after `marker`. Non-admins see only their project's tasks. Expired tasks are
/// hidden (the sweeper removes them).
pub async fn list(
    api: &Api,
    ctx: &RequestContext,
    query: Query,
) -> Result<Response<ApiBody>, ApiError> {
    let req = TaskListRequest::parse(&query)?;
    let limit = req.limit;
    let page = page(api.state.meta.as_ref(), ctx, &req).await?;

    let items = page.iter().map(|t| Value::Object(task_stub(t))).collect();
    let last_id = page.last().map(|t| t.id.as_str());
    Ok(ok_json(&page_json("tasks", items, &query, limit, last_id)))
}

/// One page of `GET /v2/tasks` from the store.
async fn page(
    meta: &dyn crate::meta::MetaStore,
    ctx: &RequestContext,
    req: &TaskListRequest,
) -> Result<Vec<TaskSummary>, ApiError> {
    let marker = match &req.marker {
        Some(id) => {
            let task = meta.get_task(id).await?.ok_or_else(|| {
                ApiError::BadRequest(format!("Invalid marker. Task {id} could not be found."))
            })?;
            if !visible(ctx, &task) {
                return Err(ApiError::TaskForbidden(id.clone()));
            }
            Some(TaskSummary::from(&task))
        }
        None => None,
    };
    let current = now();
    let filter = |t: &TaskSummary| {
        (ctx.is_admin || t.owner == ctx.project_id)
            && t.expires_at.is_none_or(|e| e > current)
            && req
                .filters
                .iter()
                .all(|(k, v)| column_equals(task_column(t, k), v))
    };
    let query = TaskQuery {
        owner: (!ctx.is_admin).then_some(ctx.project_id.as_str()),
        sort: req.sort_key,
        dir: req.sort_dir,
        after: marker.as_ref(),
        limit: req.limit,
        filter: &filter,
    };
    meta.list_task_page(&query).await.map_err(ApiError::from)
}

/// A task column's value for sorting and filtering. Timestamps compare as numbers; as
/// filters they compare against the rendered time.
fn task_column<'t>(task: &'t TaskSummary, column: &str) -> SortValue<'t> {
    let opt = |v: Option<&'t String>| v.map_or(SortValue::Null, |s| SortValue::Str(s.as_str()));
    match column {
        "id" => SortValue::Str(&task.id),
        "type" => SortValue::Str(&task.task_type),
        "status" => SortValue::Str(task.status.as_str()),
        "owner" => SortValue::Str(&task.owner),
        "created_at" => SortValue::Int(i128::from(task.created_at)),
        "updated_at" => SortValue::Int(i128::from(task.updated_at)),
        "expires_at" => task
            .expires_at
            .map_or(SortValue::Null, |e| SortValue::Int(i128::from(e))),
        "user_id" => opt(task.user_id.as_ref()),
        "request_id" => opt(task.request_id.as_ref()),
        "message" => SortValue::Str(&task.message),
        _ => SortValue::Null,
    }
}
