//! `/metrics`: the Prometheus exposition (OpenMetrics text) of imports, HTTP requests, the
//! import queue, the data volume and the metadata store, with `prometheus-client`.
//!
//! One process-wide registry ([`global`]): counters and histograms are updated where things
//! happen (an import ends, a response is sent); gauges of state (queue depth, free space,
//! metadata store health) are read when `/metrics` is scraped. Every label value comes from
//! a fixed set Sluice chooses (route templates, status codes, reason codes, format names):
//! never an id, a project or anything else a client chooses.

use std::sync::LazyLock;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::api::ApiBody;
use crate::state::AppState;

/// The exposition's media type (OpenMetrics 1.0, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest reason code kept as a label value; longer (never written by Sluice) is `other`.
const MAX_REASON_LEN: usize = 40;

/// HTTP latency buckets: 1 ms doubling to ~33 s (16 buckets), from a `GET` of a task to a
/// long upload's response.
const HTTP_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 16);
/// Import duration buckets: 0.1 s doubling to ~29 h (21 buckets), up to past the default
/// import timeout (24 h).
const IMPORT_DURATION_BUCKETS: (f64, f64, u16) = (0.1, 2.0, 21);
/// Import throughput buckets: 64 KiB/s doubling to 4 GiB/s (17 buckets), a slow source to
/// a local NVMe volume.
const IMPORT_THROUGHPUT_BUCKETS: (f64, f64, u16) = (65_536.0, 2.0, 17);

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route template (`GET /v2/images/{id}`), `unmatched` for no endpoint.
    route: &'static str,
    /// The response status.
    status: u16,
}

/// Labels of the HTTP latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// Labels of a finished import.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImportLabels {
    /// `success` or `failure`.
    outcome: &'static str,
    /// The task's reason code (`none` on success).
    reason: String,
}

/// Labels of the import duration and throughput histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    /// The declared disk format (`other` when not one Sluice knows).
    format: &'static str,
    /// The conversion (`none`, `raw`, `qcow2`).
    conversion: &'static str,
}

/// What a client sent image data with.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum UploadKind {
    /// `PUT /v2/images/{id}/file`.
    File,
    /// `PUT /v2/images/{id}/stage`.
    Stage,
}

impl UploadKind {
    /// The label value: `file`, `stage`.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadKind::File => "file",
            UploadKind::Stage => "stage",
        }
    }
}

/// Label of the upload counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadLabels {
    /// [`UploadKind::as_str`].
    kind: &'static str,
}

/// A finished import, as counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Whether it succeeded.
    pub success: bool,
    /// The failure's reason code.
    pub reason: Option<String>,
    /// The declared format's name ([`format_label`]).
    pub format: &'static str,
    /// The conversion's name.
    pub conversion: &'static str,
    /// Bytes received from the source.
    pub received: u64,
    /// Bytes of the stored image (0 when none was stored).
    pub stored: u64,
}

/// Every metric Sluice exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    imports: Family<ImportLabels, Counter>,
    import_duration: Family<FormatLabels, Histogram, fn() -> Histogram>,
    import_throughput: Family<FormatLabels, Histogram, fn() -> Histogram>,
    received_bytes: Counter,
    stored_bytes: Counter,
    uploads: Family<UploadLabels, Counter>,
    upload_bytes: Family<UploadLabels, Counter>,
    queue_depth: Gauge,
    workers_busy: Gauge,
    workers: Gauge,
    store_free: Gauge,
    store_size: Gauge,
    store_reserve: Gauge,
    storage_state: Family<StateLabels, Gauge>,
    meta_up: Gauge,
    meta_writable: Gauge,
}

/// Label of the storage state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn http_histogram() -> Histogram {
    let (start, factor, n) = HTTP_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

fn import_duration_histogram() -> Histogram {
    let (start, factor, n) = IMPORT_DURATION_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

fn import_throughput_histogram() -> Histogram {
    let (start, factor, n) = IMPORT_THROUGHPUT_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (at zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            imports: Family::default(),
            import_duration: Family::new_with_constructor(
                import_duration_histogram as fn() -> Histogram,
            ),
            import_throughput: Family::new_with_constructor(
                import_throughput_histogram as fn() -> Histogram,
            ),
            received_bytes: Counter::default(),
            stored_bytes: Counter::default(),
            uploads: Family::default(),
            upload_bytes: Family::default(),
            queue_depth: Gauge::default(),
            workers_busy: Gauge::default(),
            workers: Gauge::default(),
            store_free: Gauge::default(),
            store_size: Gauge::default(),
            store_reserve: Gauge::default(),
            storage_state: Family::default(),
            meta_up: Gauge::default(),
            meta_writable: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "sluice_http_requests",
            "HTTP requests answered, by route template and status",
            m.http_requests.clone(),
        );
        r.register(
            "sluice_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head), by route template",
            m.http_duration.clone(),
        );
        r.register(
            "sluice_imports",
            "Import tasks finished, by outcome and failure reason code",
            m.imports.clone(),
        );
        r.register(
            "sluice_import_duration_seconds",
            "Time an import task ran, by declared format and conversion",
            m.import_duration.clone(),
        );
        r.register(
            "sluice_import_throughput_bytes_per_second",
            "Bytes received per second of an import task, by declared format and conversion",
            m.import_throughput.clone(),
        );
        r.register(
            "sluice_import_received_bytes",
            "Bytes import tasks received from their sources",
            m.received_bytes.clone(),
        );
        r.register(
            "sluice_import_stored_bytes",
            "Bytes of images import tasks stored",
            m.stored_bytes.clone(),
        );
        r.register(
            "sluice_uploads",
            "Uploads (file) and stages (stage) stored, by kind",
            m.uploads.clone(),
        );
        r.register(
            "sluice_upload_stored_bytes",
            "Bytes of image data uploads (file) and stages (stage) stored, by kind",
            m.upload_bytes.clone(),
        );
        r.register(
            "sluice_import_queue_depth",
            "Import tasks waiting for a worker",
            m.queue_depth.clone(),
        );
        r.register(
            "sluice_import_workers_busy",
            "Import workers running a task",
            m.workers_busy.clone(),
        );
        r.register(
            "sluice_import_workers",
            "Import workers configured",
            m.workers.clone(),
        );
        r.register(
            "sluice_store_free_bytes",
            "Bytes an unprivileged writer may still use on the data volume",
            m.store_free.clone(),
        );
        r.register(
            "sluice_store_size_bytes",
            "Size of the data volume",
            m.store_size.clone(),
        );
        r.register(
            "sluice_store_reserve_bytes",
            "Free space kept on the data volume (disk_reserve): below it imports are refused",
            m.store_reserve.clone(),
        );
        r.register(
            "sluice_store_state",
            "Data volume state: 1 for the current one of ok, low (below the reserve), full",
            m.storage_state.clone(),
        );
        r.register(
            "sluice_metadata_store_up",
            "1 when the metadata store (RocksDB) answers reads",
            m.meta_up.clone(),
        );
        r.register(
            "sluice_metadata_store_writable",
            "1 when the metadata store (RocksDB) takes writes",
            m.meta_writable.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts an answered HTTP request.
    pub fn http_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an upload or stage that stored `bytes`.
    pub fn upload_stored(&self, kind: UploadKind, bytes: u64) {
        let labels = UploadLabels {
            kind: kind.as_str(),
        };
        self.uploads.get_or_create(&labels).inc();
        self.upload_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// Counts a finished import that ran for `elapsed`.
    pub fn import_finished(&self, outcome: &ImportOutcome, elapsed: Duration) {
        let reason = match &outcome.reason {
            None => "none".to_owned(),
            Some(r) if is_reason_code(r) => r.clone(),
            Some(_) => "other".to_owned(),
        };
        let label = if outcome.success {
            "success"
        } else {
            "failure"
        };
        self.imports
            .get_or_create(&ImportLabels {
                outcome: label,
                reason,
            })
            .inc();
        self.received_bytes.inc_by(outcome.received);
        self.stored_bytes.inc_by(outcome.stored);
        let labels = FormatLabels {
            format: outcome.format,
            conversion: outcome.conversion,
        };
        let secs = elapsed.as_secs_f64();
        self.import_duration.get_or_create(&labels).observe(secs);
        if secs > 0.0 && outcome.received > 0 {
            // Precision loss above 2^53 bytes is irrelevant to a histogram bucket.
            #[allow(clippy::cast_precision_loss)]
            let rate = outcome.received as f64 / secs;
            self.import_throughput.get_or_create(&labels).observe(rate);
        }
    }

    /// The exposition, with the gauges of state read from `state` now.
    pub async fn encode(&self, state: &AppState) -> String {
        let (waiting, running) = import_load(state).await;
        self.queue_depth.set(gauge_value(waiting));
        self.workers_busy.set(gauge_value(running));
        self.workers.set(gauge_value(state.config.workers));
        let space = state.store.space();
        if let Ok(now) = space.probe() {
            self.store_free.set(gauge_value(now.free));
            self.store_size.set(gauge_value(now.total));
            self.store_reserve.set(gauge_value(space.thresholds(now).0));
        }
        let current = space.state();
        for s in [
            sluice_pipeline::store::space::StorageState::Ok,
            sluice_pipeline::store::space::StorageState::Low,
            sluice_pipeline::store::space::StorageState::Full,
        ] {
            self.storage_state
                .get_or_create(&StateLabels { state: s.as_str() })
                .set(i64::from(s == current));
        }
        let meta = super::health::meta_health(state).await;
        self.meta_up.set(i64::from(meta.readable));
        self.meta_writable.set(i64::from(meta.writable));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A gauge's value for a count or size (saturating at `i64::MAX`).
fn gauge_value<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Whether `reason` looks like one of Sluice's reason codes (`[a-z0-9_]`, short): anything
/// else is counted as `other`, so a label never holds free text.
fn is_reason_code(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= MAX_REASON_LEN
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The label of a declared disk format: its name when Sluice knows it, else `other`.
pub fn format_label(declared: Option<&str>) -> &'static str {
    declared
        .and_then(|f| f.parse::<sluice_formats::Format>().ok())
        .map_or("other", sluice_formats::Format::as_str)
}

/// `GET /metrics`.
pub async fn response(state: &AppState) -> Response<ApiBody> {
    let text = global().encode(state).await;
    let mut response = crate::api::body::text_response(StatusCode::OK, text);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// Import tasks waiting for a worker and imports running on this node. On a shared store
/// (PostgreSQL) the queue is the cluster's: the tasks `pending` on every node, read from the
/// store (at most `queue_capacity`, the most any node accepts); this node's own count if the
/// store cannot be read. Running imports are this node's either way.
pub(crate) async fn import_load(state: &AppState) -> (usize, usize) {
    let (waiting, running) = state.executor.load();
    if !state.meta.is_shared() {
        return (waiting, running);
    }
    let max = u64::try_from(state.config.queue_capacity).unwrap_or(u64::MAX);
    match state.meta.queued_tasks("", max).await {
        Ok(queued) => (
            usize::try_from(queued.pending).unwrap_or(usize::MAX),
            running,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the cluster's waiting tasks");
            (waiting, running)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reason_label_never_free_text() {
        assert!(is_reason_code("backing_file"));
        assert!(!is_reason_code("Backing file: /etc/passwd"));
        assert!(!is_reason_code(&"a".repeat(MAX_REASON_LEN + 1)));
    }

    #[test]
    fn test_format_label_unknown_is_other() {
        assert_eq!(format_label(Some("qcow2")), "qcow2");
        assert_eq!(format_label(Some("my-own-format")), "other");
        assert_eq!(format_label(None), "other");
    }
}
