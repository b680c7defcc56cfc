//! One import task, start to finish: every state change of the task, the pull through the
//! pipeline, and the single atomic write that makes the image visible.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_formats::{Format, Limits};
use sluice_pipeline::http::{HttpConfig, HttpSource};
use sluice_pipeline::ingest::ingest_as;
use sluice_pipeline::rate::{MinRate, RateGuard};
use sluice_pipeline::ssrf::ImportPolicy;
use sluice_pipeline::{IngestError, Ingested, Progress};
use tokio::sync::watch;

use crate::api::tasks::UriUse;
use crate::config::{Config, Conversion};
use crate::meta::{
    ImageRecord, ImageStatus, MetaError, MetaStore, TaskRecord, TaskStatus, Timestamp,
};
use crate::properties::{ImageProperties, PropertyLimits, Visibility};
use crate::state::AppState;
use crate::unwrapping::Unwrapping;

mod api_image;
mod glance_direct;

pub use api_image::{cancel_for_deleted, API_IMAGE_IMPORT, LOCK_PROPERTY};

/// Reason code of a task whose input cannot be imported.
pub const REASON_INVALID_INPUT: &str = "invalid_input";
/// Reason code of a task cut short by a shutdown or crash.
pub const REASON_INTERRUPTED: &str = "interrupted";
/// Reason code of a failure on Sluice's side (metadata store).
pub const REASON_INTERNAL: &str = "internal_error";
/// Reason code of an import that did not finish within `import_timeout_secs`.
pub const REASON_IMPORT_TIMEOUT: &str = "import_timeout";
/// Reason code of an import stopped because the data volume is below its reserve.
pub const REASON_STORAGE_FULL: &str = "storage_full";
/// Pause between attempts to record a task's final state on a full volume.
const SAVE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Glance `disk_format`s that carry no inspectable structure of their own: checked as raw.
pub(crate) const OPAQUE_DISK_FORMATS: [&str; 3] = ["ami", "ari", "aki"];

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The import policy `import_from` URLs (and their redirects) must pass.
pub fn import_policy(config: &Config) -> ImportPolicy {
    let f = &config.import;
    let defaults = ImportPolicy::default();
    ImportPolicy {
        allowed_schemes: if f.allowed_schemes.is_empty() {
            defaults.allowed_schemes
        } else {
            f.allowed_schemes.clone()
        },
        allowed_hosts: f.allowed_hosts.clone(),
        denied_hosts: f.denied_hosts.clone(),
        allowed_ports: f.allowed_ports.clone(),
        denied_ports: f.denied_ports.clone(),
        nat64_prefixes: f.nat64_prefixes.clone(),
        pinned_hosts: f.resolve.clone(),
    }
}

/// What an import task's `input` asks for, validated.
#[derive(Debug)]
struct ImportInput {
    url: String,
    declared: Format,
    disk_format: String,
    properties: ImageProperties,
    /// Sluice's `output_format`: overrides the server's `conversion` for this task.
    output_format: Option<Conversion>,
}

/// The `input` key of Sluice's per-task conversion choice (an additive extension).
pub const OUTPUT_FORMAT_KEY: &str = "output_format";

/// Parses a task's `input.output_format`: absent or null means the server's setting.
///
/// # Errors
/// A message for the task (or a 400) when it is not one of `raw`, `qcow2`, `none`.
pub fn parse_output_format(input: &Value) -> Result<Option<Conversion>, String> {
    match input.get(OUTPUT_FORMAT_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Conversion::parse(s)
            .map(Some)
            .ok_or_else(|| format!("output_format '{s}' is not one of 'raw', 'qcow2', 'none'")),
        Some(_) => Err("output_format must be a string: 'raw', 'qcow2' or 'none'".to_owned()),
    }
}

/// Marks a task failed (`reason`, `message`), with its expiry.
pub fn fail(task: &mut TaskRecord, reason: &str, message: String, ttl_secs: i64) {
    let at = now();
    task.status = TaskStatus::Failure;
    task.message = message;
    task.reason = Some(reason.to_owned());
    task.result = None;
    task.updated_at = at;
    task.expires_at = Some(at.saturating_add(ttl_secs));
}

/// Runs one queued task to a final state. Never panics on bad input; every outcome is
/// written to the task. Returns the size of the image it stored, if it did (for the
/// project's quota).
///
/// The import has `import_timeout_secs` from here to its last byte: then it is cancelled
/// like a shutdown would, and fails with [`REASON_IMPORT_TIMEOUT`].
pub async fn run(
    state: &AppState,
    task_id: &str,
    progress: Arc<Progress>,
    cancel: watch::Receiver<bool>,
) -> Option<u64> {
    let ttl = state.config.task_ttl();
    let Some(mut task) = meta(state, {
        let id = task_id.to_owned();
        move |m| m.get_task(&id)
    })
    .await
    .ok()
    .flatten() else {
        tracing::warn!(task_id, "queued task vanished before it ran");
        return None;
    };
    // Only a pending task may start (a requeued one may have finished meanwhile).
    if !task.status.can_become(TaskStatus::Processing) {
        return None;
    }
    task.status = TaskStatus::Processing;
    task.updated_at = now();
    if let Err(e) = save(state, &task).await {
        tracing::error!(task_id, error = %e, "cannot mark task processing");
        if let MetaError::StorageFull(why) = e {
            // The worker has taken the task off the queue: fail it (recorded once space is
            // freed) rather than leave it `pending` with nobody to run it.
            fail(
                &mut task,
                REASON_STORAGE_FULL,
                format!("{why}; create the task again once space has been freed"),
                ttl,
            );
            save_final(state, &task).await;
        }
        return None;
    }
    tracing::info!(task_id, owner = %task.owner, "import started");

    let timeout = Duration::from_secs(state.config.import_timeout_secs);
    let (cancel, timed_out) = with_deadline(cancel, timeout);
    if task.task_type == API_IMAGE_IMPORT {
        let outcome = api_image::run(state, &task, &progress, cancel).await;
        let outcome = deadline_outcome(outcome, &timed_out, timeout);
        return api_image::finish(state, task, outcome).await;
    }
    let outcome = match parse_input(&task.input, &PropertyLimits::of(&state.config)) {
        Ok(input) => import(state, &task, input, &progress, cancel).await,
        Err(message) => Err((REASON_INVALID_INPUT.to_owned(), message)),
    };
    let outcome = deadline_outcome(outcome, &timed_out, timeout);
    match outcome {
        Ok((image, unwrapped)) => {
            let at = now();
            task.status = TaskStatus::Success;
            let mut result = serde_json::json!({ "image_id": image.id });
            if let Some(wrapper) = unwrapped {
                // Sluice's addition: the compression removed in the stream.
                result["unwrapped"] = wrapper.into();
            }
            task.result = Some(result);
            task.message = String::new();
            task.reason = None;
            task.updated_at = at;
            task.expires_at = Some(at.saturating_add(ttl));
            let committed = meta(state, {
                let (task, image) = (task.clone(), image.clone());
                move |m| m.commit_import(&task, &image)
            })
            .await;
            match committed {
                Ok(()) => {
                    tracing::info!(task_id, image_id = %image.id, size = ?image.size, "import succeeded");
                    return image.size;
                }
                Err(e) => {
                    tracing::error!(task_id, error = %e, "cannot record the imported image");
                    let _ = state.store.delete(&image.id);
                    let reason = if matches!(e, MetaError::StorageFull(_)) {
                        REASON_STORAGE_FULL
                    } else {
                        REASON_INTERNAL
                    };
                    fail(
                        &mut task,
                        reason,
                        format!("recording the image failed: {e}"),
                        ttl,
                    );
                    save_final(state, &task).await;
                }
            }
        }
        Err((reason, message)) => {
            tracing::info!(task_id, %reason, %message, "import failed");
            fail(&mut task, &reason, message, ttl);
            save_final(state, &task).await;
        }
    }
    None
}

/// An import's outcome, or [`REASON_IMPORT_TIMEOUT`] when it failed because its deadline
/// passed.
fn deadline_outcome<T>(
    outcome: Result<T, (String, String)>,
    timed_out: &AtomicBool,
    timeout: Duration,
) -> Result<T, (String, String)> {
    match outcome {
        Err(_) if timed_out.load(Ordering::SeqCst) => Err((
            REASON_IMPORT_TIMEOUT.to_owned(),
            format!(
                "import did not finish within {} s (import_timeout_secs); nothing was stored",
                timeout.as_secs()
            ),
        )),
        other => other,
    }
}

/// A cancel signal that turns `true` when `shutdown` does or when `timeout` has passed (then
/// the flag is set first): the import's deadline.
pub(crate) fn with_deadline(
    mut shutdown: watch::Receiver<bool>,
    timeout: Duration,
) -> (watch::Receiver<bool>, Arc<AtomicBool>) {
    let (tx, rx) = watch::channel(false);
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&timed_out);
    tokio::spawn(async move {
        tokio::select! {
            // Ends when the import drops its receiver (it finished first).
            () = tx.closed() => {}
            r = shutdown.wait_for(|stop| *stop) => {
                if r.is_ok() {
                    tx.send_replace(true);
                }
            }
            () = tokio::time::sleep(timeout) => {
                flag.store(true, Ordering::SeqCst);
                tx.send_replace(true);
            }
        }
    });
    (rx, timed_out)
}

/// Pulls, inspects, hashes and stores the image; returns its record (not yet written) and
/// the compression wrapper removed, if any.
async fn import(
    state: &AppState,
    task: &TaskRecord,
    input: ImportInput,
    progress: &Progress,
    cancel: watch::Receiver<bool>,
) -> Result<(ImageRecord, Option<&'static str>), (String, String)> {
    let image_id = uuid::Uuid::new_v4().to_string();
    let pulled = Pull {
        url: &input.url,
        uri_use: UriUse::LegacyTask,
        declared: input.declared,
        disk_format: &input.disk_format,
        output_format: input.output_format,
        image_id: &image_id,
        unwrap: Unwrapping::of(input.properties.container_format.as_deref()),
    };
    let ingested = pull(state, task, pulled, progress, cancel).await?;
    Ok((
        image_record(task, &image_id, &input, &ingested),
        ingested.unwrapped,
    ))
}

/// What one pull from a URL into the store needs to know.
struct Pull<'a> {
    /// The source.
    url: &'a str,
    /// How a policy refusal of the URL is worded.
    uri_use: UriUse,
    /// The format the source is inspected as.
    declared: Format,
    /// The image's `disk_format` (opaque formats are never converted).
    disk_format: &'a str,
    /// A conversion overriding the server's `conversion` setting.
    output_format: Option<Conversion>,
    /// The image id the data is stored under.
    image_id: &'a str,
    /// What is unwrapped in the stream (by the image's `container_format`).
    unwrap: Unwrapping,
}

/// Pulls `pulled.url` through the pipeline (quota, minimum rate, inspection, conversion,
/// hashing) into the store under `pulled.image_id`.
async fn pull(
    state: &AppState,
    task: &TaskRecord,
    pulled: Pull<'_>,
    progress: &Progress,
    mut cancel: watch::Receiver<bool>,
) -> Result<Ingested, (String, String)> {
    let config = &state.config;
    // An interoperable import fills an image whose record already counts.
    let adds_image = task.task_type != API_IMAGE_IMPORT;
    let quota = crate::quota::ImportQuota::start(state, &task.id, &task.owner, adds_image).await?;
    let policy = import_policy(config);
    let http = HttpConfig::default();
    let opened = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => {
            return Err((REASON_INTERRUPTED.to_owned(), failure_message(&IngestError::Cancelled)));
        }
        opened = HttpSource::open(pulled.url, &policy, &http) => opened,
    };
    let source = opened.map_err(|e| {
        (
            "source_error".to_owned(),
            crate::api::tasks::source_failure(pulled.uri_use, &e),
        )
    })?;
    let source = RateGuard::new(
        source,
        MinRate {
            bytes_per_sec: config.min_rate_bytes_per_sec,
            window: Duration::from_secs(config.min_rate_window_secs),
        },
    );
    let limits = Limits {
        max_virtual_size: config.max_virtual_size,
        ..Limits::default()
    };
    let opened = tokio::select! {
        biased;
        () = cancelled(&mut cancel) => Err(IngestError::Cancelled),
        r = pulled.unwrap.open(source, limits.max_virtual_size, pulled.declared) => {
            r.map_err(IngestError::Source)
        }
    };
    let source = opened.map_err(|e| (e.reason_code().to_owned(), failure_message(&e)))?;
    // Opaque formats (kernels, ramdisks, AMIs) are stored as they are; `ingest_as` also
    // leaves ISO and images already in the target alone.
    let target = if OPAQUE_DISK_FORMATS.contains(&pulled.disk_format) {
        None
    } else {
        pulled.output_format.unwrap_or(config.conversion).target()
    };
    ingest_as(
        source,
        pulled.declared,
        target,
        limits,
        &state.store,
        pulled.image_id,
        progress,
        cancel,
        &quota,
    )
    .await
    .map_err(|e| (e.reason_code().to_owned(), failure_message(&e)))
}

/// The format an image of `disk_format` is inspected as: its own, or raw for the opaque
/// formats (kernels, ramdisks, AMIs).
///
/// # Errors
/// A message when Sluice cannot import that format.
pub fn declared_format(disk_format: &str) -> Result<Format, String> {
    if OPAQUE_DISK_FORMATS.contains(&disk_format) {
        return Ok(Format::Raw);
    }
    disk_format
        .parse::<Format>()
        .map_err(|_| format!("disk_format '{disk_format}' is not a disk format Sluice can import"))
}

/// Resolves when `cancel` turns `true`; never when its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The task message for a failed ingest: the inspector's own words for a rejection.
fn failure_message(e: &IngestError) -> String {
    match e {
        IngestError::Rejected(report) => {
            let msgs: Vec<&str> = report.reasons.iter().map(|r| r.message.as_str()).collect();
            if msgs.is_empty() {
                "image rejected by format inspection".to_owned()
            } else {
                msgs.join("; ")
            }
        }
        IngestError::Cancelled => {
            "import interrupted: the service is shutting down; create the task again".to_owned()
        }
        other => other.to_string(),
    }
}

/// Parses a task's `input` when the task runs: the fields Glance requires (missing ones fail
/// the task with Glance's messages) and the image properties, checked again as at create time
/// (the quotas may have changed since).
fn parse_input(input: &Value, limits: &PropertyLimits) -> Result<ImportInput, String> {
    let obj = input
        .as_object()
        .ok_or_else(|| "Task input must be an object".to_owned())?;
    let url = obj
        .get("import_from")
        .and_then(Value::as_str)
        .ok_or_else(|| "Input does not contain 'import_from' field".to_owned())?
        .to_owned();
    let from_format = obj
        .get("import_from_format")
        .and_then(Value::as_str)
        .ok_or_else(|| "Input does not contain 'import_from_format' field".to_owned())?
        .to_ascii_lowercase();
    let properties = obj
        .get("image_properties")
        .ok_or_else(|| "Input does not contain 'image_properties' field".to_owned())?
        .as_object()
        .ok_or_else(|| "'image_properties' must be an object".to_owned())?;
    let properties = ImageProperties::parse(properties, limits).map_err(|e| e.to_string())?;
    let disk_format = properties
        .disk_format
        .clone()
        .unwrap_or_else(|| from_format.clone());
    if disk_format != from_format {
        return Err(format!(
            "import_from_format '{from_format}' does not match image_properties.disk_format '{disk_format}'"
        ));
    }
    let declared = if OPAQUE_DISK_FORMATS.contains(&from_format.as_str()) {
        Format::Raw
    } else {
        from_format.parse::<Format>().map_err(|_| {
            format!("import_from_format '{from_format}' is not a disk format Sluice can import")
        })?
    };
    let output_format = parse_output_format(input)?;
    Ok(ImportInput {
        url,
        declared,
        disk_format,
        properties,
        output_format,
    })
}

/// Builds the image record from the task's parsed `image_properties` and what was stored.
fn image_record(
    task: &TaskRecord,
    image_id: &str,
    input: &ImportInput,
    ingested: &Ingested,
) -> ImageRecord {
    let props = &input.properties;
    let at = now();
    let mut record = ImageRecord {
        id: image_id.to_owned(),
        name: props.name.clone(),
        status: ImageStatus::Active,
        // Another project only when an admin asked for it (checked at create time).
        owner: props.owner.clone().unwrap_or_else(|| task.owner.clone()),
        visibility: props
            .visibility
            .unwrap_or(Visibility::Shared)
            .as_str()
            .to_owned(),
        protected: props.protected.unwrap_or(false),
        // A converted image is a bare disk in the target format (as Glance's conversion).
        disk_format: Some(if ingested.converted {
            ingested.format.to_string()
        } else {
            input.disk_format.clone()
        }),
        container_format: Some(match &props.container_format {
            Some(requested) if !ingested.converted => requested.clone(),
            _ => "bare".to_owned(),
        }),
        size: Some(ingested.size),
        virtual_size: ingested.report.virtual_size,
        checksum: Some(ingested.md5_hex.clone()),
        os_hash_algo: Some("sha512".to_owned()),
        os_hash_value: Some(ingested.sha512_hex.clone()),
        min_disk: props.min_disk.unwrap_or(0),
        min_ram: props.min_ram.unwrap_or(0),
        tags: props.tags.clone(),
        properties: props.extra.clone(),
        created_at: at,
        updated_at: at,
        task_id: Some(task.id.clone()),
    };
    crate::unwrapping::apply(&mut record, ingested);
    record
}

/// Runs a metadata call off the async runtime (RocksDB writes fsync).
pub async fn meta<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn MetaStore) -> Result<T, MetaError> + Send + 'static,
) -> Result<T, MetaError> {
    let store = Arc::clone(&state.meta);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| MetaError::Backend(format!("metadata call panicked: {e}")))?
}

/// Writes a status change of `task` through the compare-and-swap
/// ([`MetaStore::transition_task`]): a task another writer has moved on is not overwritten.
async fn save(state: &AppState, task: &TaskRecord) -> Result<(), MetaError> {
    let task = task.clone();
    meta(state, move |m| m.transition_task(&task)).await
}

/// Records a task's final state; on a full volume keeps trying in the background (every
/// [`SAVE_RETRY_INTERVAL`]), so the task does not stay `processing` once space is freed.
async fn save_final(state: &AppState, task: &TaskRecord) {
    match save(state, task).await {
        Ok(()) => {}
        Err(MetaError::StorageFull(_)) => {
            tracing::error!(
                task_id = %task.id,
                "data volume full: the task's final state is recorded once space is freed"
            );
            let (state, task) = (state.clone(), task.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SAVE_RETRY_INTERVAL).await;
                    match save(&state, &task).await {
                        Ok(()) => return,
                        Err(MetaError::StorageFull(_)) => {}
                        Err(e) => {
                            tracing::error!(task_id = %task.id, error = %e, "cannot mark task failed");
                            return;
                        }
                    }
                }
            });
        }
        Err(e) => tracing::error!(task_id = %task.id, error = %e, "cannot mark task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Result<ImportInput, String> {
        parse_input(&v, &PropertyLimits::of(&Config::default()))
    }

    #[test]
    fn test_parse_input_missing_fields_name_them_like_glance() {
        let e =
            input(serde_json::json!({"import_from": "http://x/y", "import_from_format": "qcow2"}))
                .unwrap_err();
        assert_eq!(e, "Input does not contain 'image_properties' field");
        let e = input(serde_json::json!({"import_from": "http://x/y", "image_properties": {}}))
            .unwrap_err();
        assert_eq!(e, "Input does not contain 'import_from_format' field");
    }

    #[test]
    fn test_parse_input_format_disagreement_is_refused() {
        let e = input(serde_json::json!({
            "import_from": "http://x/y", "import_from_format": "qcow2",
            "image_properties": {"disk_format": "raw"}
        }))
        .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn test_parse_input_opaque_formats_are_checked_as_raw() {
        let i = input(serde_json::json!({
            "import_from": "http://x/y", "import_from_format": "ami",
            "image_properties": {"disk_format": "ami"}
        }))
        .unwrap();
        assert_eq!(i.declared, Format::Raw);
        assert_eq!(i.disk_format, "ami");
    }

    #[test]
    fn test_parse_input_output_format_is_validated() {
        let base = |v: Value| {
            serde_json::json!({
                "import_from": "http://x/y", "import_from_format": "qcow2",
                "image_properties": {}, "output_format": v
            })
        };
        let i = input(base(Value::from("RAW"))).unwrap();
        assert_eq!(i.output_format, Some(Conversion::Raw));
        let i = input(base(Value::Null)).unwrap();
        assert_eq!(i.output_format, None);
        let e = input(base(Value::from("vmdk"))).unwrap_err();
        assert!(e.contains("output_format 'vmdk'"), "{e}");
        assert!(input(base(Value::from(3))).is_err());
    }
}
