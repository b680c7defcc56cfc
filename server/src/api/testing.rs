//! Test harness: an [`Api`] over [`MemoryMeta`], a [`LocalStore`] in a temporary directory
//! and an [`Executor`] with no workers (tasks stay `pending`), driven in-process.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sluice_pipeline::store::{Access, LocalStore};

use crate::api::Api;
use crate::config::{Config, ImportFilter};
use crate::executor::Executor;
use crate::meta::memory::MemoryMeta;
use crate::meta::{ImageRecord, ImageStatus, MetaStore, TaskRecord, TaskStatus};
use crate::state::AppState;

/// Project of the default (admin) caller in these tests.
pub const ADMIN_PROJECT: &str = "1f1f1f1f2e2e3d3d4c4c5b5b6a6a7979";

/// The source URL the recordings use; allowed by the harness's import filter.
pub const SOURCE: &str = "http://127.0.0.1:18080/small.qcow2";

/// An API plus what keeps its state alive.
pub struct Harness {
    pub api: Api,
    /// Holds the store directory until the harness is dropped.
    _dir: tempfile::TempDir,
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The error message without webob's trailer.
    pub fn message(&self) -> String {
        let json = self.json();
        let message = json["message"].as_str().unwrap_or_default();
        message
            .split("<br />")
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    /// Default config (auth `none`), imports allowed from 127.0.0.1 on ports 80, 443, 18080.
    pub fn new() -> Harness {
        Self::with_config(|_| {})
    }

    /// With a tweaked config.
    pub fn with_config(tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            import: ImportFilter {
                allowed_hosts: vec!["127.0.0.1".parse().unwrap()],
                allowed_ports: vec![80, 443, 18080],
                ..ImportFilter::default()
            },
            queue_capacity: 8,
            ..Config::default()
        };
        tweak(&mut config);
        let store = LocalStore::open(dir.path()).unwrap();
        let state = AppState {
            executor: Executor::new(config.queue_capacity, config.per_project_imports),
            admissions: Default::default(),
            config: Arc::new(config),
            meta: Arc::new(MemoryMeta::new()),
            store: Arc::new(store),
            staging: Arc::new(
                crate::staging::StagingArea::open(dir.path(), Default::default()).unwrap(),
            ),
        };
        Harness {
            api: Api::new(state).unwrap(),
            _dir: dir,
        }
    }

    /// The metadata store.
    pub fn meta(&self) -> &dyn MetaStore {
        &*self.api.state.meta
    }

    /// Sends a request as the default caller (admin of [`ADMIN_PROJECT`]).
    pub async fn call(&self, method: Method, path: &str, body: &[u8]) -> Reply {
        self.call_as(method, path, &admin(), body).await
    }

    /// Sends a request with these headers.
    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        // Like openstacksdk, ask for JSON errors unless the test chooses its own `Accept`.
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            request = request.header("accept", "application/json");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let response = self.api.handle(request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `POST /v2/tasks` with a JSON body as `headers`' caller.
    pub async fn create_task_as(&self, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut all = headers.to_vec();
        all.push(("content-type", "application/json"));
        self.call_as(
            Method::POST,
            "/v2/tasks",
            &all,
            &serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// Stores an image record and, when `data` is given, its data (replacing both).
    pub async fn insert_image(&self, image: &ImageRecord, data: Option<&[u8]>) {
        self.meta().put_image(image).await.unwrap();
        if let Some(data) = data {
            let store = &self.api.state.store;
            // The store never replaces committed data: delete it first.
            store.delete(&image.id).unwrap();
            let mut writer = store.begin(&image.id, Access::Append).unwrap();
            writer.append(data).unwrap();
            writer.commit().unwrap();
        }
    }

    /// Whether the store holds committed data for image `id`.
    pub fn has_data(&self, id: &str) -> bool {
        self.api
            .state
            .store
            .list_ids()
            .unwrap()
            .iter()
            .any(|stored| stored == id)
    }
}

/// Identity headers: admin of [`ADMIN_PROJECT`].
pub fn admin() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-project-id", ADMIN_PROJECT),
        ("x-user-id", "a0a0a0a0b1b1c2c2d3d3e4e4f5f5f6f6"),
        ("x-roles", "admin,member"),
    ]
}

/// Identity headers: a member (non-admin) of `project`.
pub fn member(project: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-project-id", project),
        ("x-user-id", "u-member"),
        ("x-roles", "member,reader"),
    ]
}

/// The body of the recordings' successful import.
pub fn import_body() -> Value {
    serde_json::json!({
        "type": "import",
        "input": {
            "import_from": SOURCE,
            "import_from_format": "qcow2",
            "image_properties": {"name": "x", "disk_format": "qcow2", "container_format": "bare"}
        }
    })
}

/// A task record as a worker would leave it.
pub fn task_record(id: &str, owner: &str, status: TaskStatus, created_at: i64) -> TaskRecord {
    TaskRecord {
        id: id.to_owned(),
        task_type: "import".into(),
        status,
        input: serde_json::json!({"import_from": SOURCE}),
        result: None,
        owner: owner.to_owned(),
        message: String::new(),
        reason: None,
        created_at,
        updated_at: created_at,
        expires_at: None,
        request_id: Some("req-x".into()),
        user_id: Some("u".into()),
        lease: None,
        attempts: 0,
        pinned_node: None,
    }
}

/// An active image record.
pub fn image_record(id: &str, owner: &str, name: &str, size: u64, created_at: i64) -> ImageRecord {
    ImageRecord {
        id: id.to_owned(),
        name: Some(name.to_owned()),
        status: ImageStatus::Active,
        owner: owner.to_owned(),
        visibility: "shared".into(),
        protected: false,
        disk_format: Some("raw".into()),
        container_format: Some("bare".into()),
        size: Some(size),
        virtual_size: Some(size),
        checksum: Some("2b22e47a1241758b66841255ee675057".into()),
        os_hash_algo: Some("sha512".into()),
        os_hash_value: Some("ab".repeat(64)),
        min_disk: 0,
        min_ram: 0,
        tags: Vec::new(),
        properties: BTreeMap::new(),
        created_at,
        updated_at: created_at,
        task_id: None,
        writer: None,
        staged_on: None,
        staged_bytes: 0,
    }
}

/// A UUID-shaped id whose last digits are `n` (sortable in tests).
pub fn uuid_n(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}
