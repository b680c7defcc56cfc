//! `/healthcheck`, as Glance's healthcheck middleware (oslo.middleware): `200 OK` when the
//! service can take imports, `503` with the reasons when the metadata store fails or the
//! data volume is below its disk reserve. `?detail` adds a JSON report for admins (others
//! get the plain answer). It answers before authentication, so load balancers need no
//! token.

use std::sync::{Arc, OnceLock};

use http::{Request, Response, StatusCode};
use serde_json::json;
use sluice_pipeline::store::space::StorageState;

use crate::api::{Api, ApiBody};
use crate::meta::guarded::GuardedMeta;
use crate::state::AppState;

/// A task id no task has (ids are UUIDs): reading it proves the metadata store answers.
const PROBE_TASK_ID: &str = "healthcheck-probe";

/// The guarded metadata store of this process, whose writability the health check reports
/// (set once by `service::run`; without it, writable means readable).
static GUARDED: OnceLock<Arc<GuardedMeta>> = OnceLock::new();

/// Reports `meta`'s writability in the health check and `/metrics`.
pub fn watch_meta(meta: Arc<GuardedMeta>) {
    let _ = GUARDED.set(meta);
}

/// The metadata store's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaHealth {
    /// Whether a read succeeds.
    pub readable: bool,
    /// Whether writes go through (not read-only after a full volume).
    pub writable: bool,
    /// Why a read failed.
    pub error: Option<String>,
}

/// Reads from the metadata store now.
pub async fn meta_health(state: &AppState) -> MetaHealth {
    let read = state.meta.get_task(PROBE_TASK_ID).await;
    let readable = read.is_ok();
    let writable = readable && GUARDED.get().is_none_or(|g| g.is_writable());
    MetaHealth {
        readable,
        writable,
        error: read.err().map(|e| e.to_string()),
    }
}

/// `GET /healthcheck[?detail]`.
pub async fn response<B>(api: &Api, request: &Request<B>, request_id: &str) -> Response<ApiBody> {
    let state = &api.state;
    let space = state.store.space();
    let storage = space.state();
    let meta = meta_health(state).await;
    let mut reasons = Vec::new();
    if storage != StorageState::Ok {
        reasons.push((
            "DiskSpace",
            format!("disk reserve reached: data volume {}", storage.as_str()),
        ));
    }
    if !meta.readable {
        let why = meta.error.clone().unwrap_or_default();
        reasons.push((
            "MetadataStore",
            format!("metadata store unavailable: {why}"),
        ));
    } else if !meta.writable {
        reasons.push(("MetadataStore", "metadata store read-only".to_owned()));
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if wants_detail(request.uri().query()) && is_admin(api, request, request_id).await {
        let probe = space.probe().ok();
        let (waiting, running) = super::metrics::import_load(state).await;
        let body = json!({
            "detailed": true,
            "status": if reasons.is_empty() { "OK" } else { "UNAVAILABLE" },
            "reasons": reasons
                .iter()
                .map(|(class, reason)| json!({"class": class, "reason": reason}))
                .collect::<Vec<_>>(),
            "storage": {
                "state": storage.as_str(),
                "free_bytes": probe.map(|p| p.free),
                "size_bytes": probe.map(|p| p.total),
                "reserve_bytes": probe.map(|p| space.thresholds(p).0),
            },
            "metadata_store": {
                "readable": meta.readable,
                "writable": meta.writable,
            },
            "imports": {
                "waiting": waiting,
                "running": running,
                "workers": state.config.workers,
            },
        });
        return crate::api::body::json_response(status, &body);
    }
    let text = if reasons.is_empty() {
        "OK".to_owned()
    } else {
        reasons
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    crate::api::body::text_response(status, text)
}

/// Whether the query asks for the detailed report (`?detail`, `?detail=…`).
fn wants_detail(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("detail"))
    })
}

/// Whether the request's caller authenticates as an admin.
async fn is_admin<B>(api: &Api, request: &Request<B>, request_id: &str) -> bool {
    api.auth
        .authenticate(request.headers(), request_id)
        .await
        .is_ok_and(|ctx| ctx.is_admin)
}
