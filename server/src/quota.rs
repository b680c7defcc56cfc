//! Per-project quotas as Glance's unified limits (oslo.limit's flat model): the limits, each
//! project's usage, the checks, and Glance's messages.
//!
//! | resource | counts | checked |
//! |---|---|---|
//! | `image_size_total` (MiB) | bytes of the project's images, plus what its running imports will store (announced length, bytes received, and for conversion to raw the virtual size from the header) | at `POST /v2/tasks` (usage over the limit: 413), when the import starts, and as it runs (failure `quota_exceeded`) |
//! | `image_count_total` | the project's images, plus its legacy import tasks not yet final (an interoperable import, an upload or a stage fills an image that counts already) | at `POST /v2/tasks` and `POST /v2/images` (413; check and write under the project's [`Reservation`]) and when a legacy import starts |
//! | `image_count_uploading` | the project's imports waiting or running, and its uploads and stages in flight (on a shared store: on every node, its images under a writer lease) | at `POST /v2/tasks`, `PUT …/file` and `PUT …/stage` (413) |
//! | `image_stage_total` (MiB) | bytes staged for `glance-direct` imports: complete stages until imported, discarded or expired, and stages streaming in ([`crate::staging::StagingArea`]'s ledger) | at `PUT /v2/images/{id}/stage` (announced length: 413) and as the stage's bytes arrive (413) |
//! | `tasks_waiting` | the project's tasks waiting for a worker | at `POST /v2/tasks` (503, retry later) |
//!
//! As in oslo.limit, a resource is over its limit when `usage + delta > limit`, and the
//! refusal lists every resource over (sorted by name) in oslo.limit's words:
//! `Project P is over a limit for [Resource image_count_total is over limit of 1 due to
//! current usage 1 and delta 1]`, inside Glance's `LimitExceeded` text. Byte counts are
//! compared exactly and shown in MiB rounded up. Limits are `-1` for unlimited (Keystone's
//! convention).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use sluice_pipeline::ingest::Admission;

use crate::api::error::ApiError;
use crate::executor::{Executor, InFlight, Refused, SubmitCaps, UploadSlot};
use crate::imports;
use crate::meta::ProjectUsage;
use crate::state::AppState;

mod cluster;
mod count;
mod stage;

pub use cluster::{admit_queued, watch};
use cluster::{admit_upload_cluster, read_charged_elsewhere};

pub use count::{Admissions, Reservation};

/// Reason code of a task refused by a quota when it starts or while it runs.
pub const REASON_QUOTA_EXCEEDED: &str = "quota_exceeded";

/// `image_size_total` is counted in MiB, as Glance's (`units.Mi`).
pub const MIB: u64 = 1 << 20;

/// Default cap on the tasks one project may have waiting: 16. A sixteenth of the default
/// `queue_capacity` (256), so one project cannot fill the shared queue, yet enough to keep
/// `per_project_imports` workers busy between a client's polls.
pub const DEFAULT_TASKS_WAITING: u64 = 16;

/// Glance's `LimitExceeded` text (`glance/common/exception.py`), which wraps oslo.limit's.
const GLANCE_LIMIT_EXCEEDED: &str = "The request returned a 413 Request Entity Too Large. This \
                                     generally means that rate limiting or a quota threshold \
                                     was breached.\n\nThe response body:\n";

/// A limit: a count, or unlimited (`-1` in TOML and flags, as Keystone's limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Limit(Option<u64>);

impl Limit {
    /// No limit.
    pub const UNLIMITED: Limit = Limit(None);

    /// A limit of `n`.
    pub const fn of(n: u64) -> Limit {
        Limit(Some(n))
    }

    /// The limit, `None` when unlimited.
    pub fn get(self) -> Option<u64> {
        self.0
    }
}

impl TryFrom<i64> for Limit {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        match n {
            -1 => Ok(Limit::UNLIMITED),
            n => u64::try_from(n)
                .map(Limit::of)
                .map_err(|_| format!("a limit is a count >= 0, or -1 for unlimited; not {n}")),
        }
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: i64 = s
            .trim()
            .parse()
            .map_err(|_| format!("a limit is a count >= 0, or -1 for unlimited; not {s:?}"))?;
        Limit::try_from(n)
    }
}

/// The `[quotas]` table: deployment defaults and per-project overrides.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// MiB of images per project (Glance's `image_size_total`). Default unlimited.
    pub image_size_total: Limit,
    /// Images per project, counting legacy import tasks in flight (`image_count_total`). Default
    /// unlimited.
    pub image_count_total: Limit,
    /// Imports waiting or running per project (`image_count_uploading`). Default unlimited:
    /// `tasks_waiting` plus `per_project_imports` bound it already.
    pub image_count_uploading: Limit,
    /// MiB of staged data per project (Glance's `image_stage_total`). Default unlimited, as
    /// the other sizes: the free-space reserve keeps the volume safe, and stages expire
    /// after `staging_ttl_secs`.
    pub image_stage_total: Limit,
    /// Tasks per project waiting for a worker ([`DEFAULT_TASKS_WAITING`]); `queue_capacity`
    /// stays the bound of the shared queue.
    pub tasks_waiting: Limit,
    /// Overrides by project id: `[quotas.projects."<project id>"]`.
    pub projects: BTreeMap<String, QuotaOverrides>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            image_size_total: Limit::UNLIMITED,
            image_count_total: Limit::UNLIMITED,
            image_count_uploading: Limit::UNLIMITED,
            image_stage_total: Limit::UNLIMITED,
            tasks_waiting: Limit::of(DEFAULT_TASKS_WAITING),
            projects: BTreeMap::new(),
        }
    }
}

/// One project's overrides (Keystone's project limits); absent keys keep the default.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaOverrides {
    /// See [`Quotas::image_size_total`].
    pub image_size_total: Option<Limit>,
    /// See [`Quotas::image_count_total`].
    pub image_count_total: Option<Limit>,
    /// See [`Quotas::image_count_uploading`].
    pub image_count_uploading: Option<Limit>,
    /// See [`Quotas::image_stage_total`].
    pub image_stage_total: Option<Limit>,
    /// See [`Quotas::tasks_waiting`].
    pub tasks_waiting: Option<Limit>,
}

/// One project's limits: the defaults with its overrides applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectLimits {
    /// MiB.
    pub image_size_total: Limit,
    /// Images.
    pub image_count_total: Limit,
    /// Imports in flight.
    pub image_count_uploading: Limit,
    /// MiB staged.
    pub image_stage_total: Limit,
    /// Tasks waiting.
    pub tasks_waiting: Limit,
}

impl ProjectLimits {
    /// Whether any limit needs the project's stored images (else they are not read: the
    /// scan is skipped for unlimited projects).
    fn counts_stored(&self) -> bool {
        self.image_size_total.get().is_some() || self.image_count_total.get().is_some()
    }
}

/// The project's stored usage, read only when `limits` count it.
async fn stored_usage(
    state: &AppState,
    project: &str,
    limits: &ProjectLimits,
) -> Result<ProjectUsage, crate::meta::MetaError> {
    if !limits.counts_stored() {
        return Ok(ProjectUsage::default());
    }
    state.meta.project_usage(project).await
}

impl Quotas {
    /// The limits of `project`.
    pub fn for_project(&self, project: &str) -> ProjectLimits {
        let o = self.projects.get(project).cloned().unwrap_or_default();
        ProjectLimits {
            image_size_total: o.image_size_total.unwrap_or(self.image_size_total),
            image_count_total: o.image_count_total.unwrap_or(self.image_count_total),
            image_count_uploading: o
                .image_count_uploading
                .unwrap_or(self.image_count_uploading),
            image_stage_total: o.image_stage_total.unwrap_or(self.image_stage_total),
            tasks_waiting: o.tasks_waiting.unwrap_or(self.tasks_waiting),
        }
    }
}

/// One resource over its limit (oslo.limit's `OverLimitInfo`), in the limit's units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// `image_size_total`, …
    pub resource: &'static str,
    /// The limit.
    pub limit: u64,
    /// Usage before the request.
    pub usage: u64,
    /// What the request adds.
    pub delta: u64,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Resource {} is over limit of {} due to current usage {} and delta {}",
            self.resource, self.limit, self.usage, self.delta
        )
    }
}

/// A project over one or more limits (oslo.limit's `ProjectOverLimit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectOverLimit {
    /// The project.
    pub project: String,
    /// Every resource over its limit, by name.
    pub over: Vec<OverLimit>,
}

impl fmt::Display for ProjectOverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.over.iter().map(ToString::to_string).collect();
        write!(
            f,
            "Project {} is over a limit for [{}]",
            self.project,
            list.join(", ")
        )
    }
}

impl ProjectOverLimit {
    /// Glance's full text: `LimitExceeded` around oslo.limit's message (the 413's explanation
    /// and the failed task's message).
    pub fn glance_message(&self) -> String {
        format!("{GLANCE_LIMIT_EXCEEDED}{self}")
    }
}

/// Collects the resources over their limits, in oslo.limit's (sorted) order.
#[derive(Debug, Default)]
struct Enforcer {
    over: Vec<OverLimit>,
}

impl Enforcer {
    /// A count: over when `usage + delta > limit`.
    fn count(&mut self, resource: &'static str, limit: Limit, usage: u64, delta: u64) {
        if let Some(limit) = limit.get() {
            if usage.saturating_add(delta) > limit {
                self.over.push(OverLimit {
                    resource,
                    limit,
                    usage,
                    delta,
                });
            }
        }
    }

    /// `image_size_total`: bytes compared exactly against the limit in MiB; shown in MiB
    /// rounded up (so a refusal always reads as over).
    fn bytes(&mut self, limit: Limit, usage: u64, delta: u64) {
        self.mib("image_size_total", limit, usage, delta);
    }

    /// A resource counted in MiB (`image_size_total`, `image_stage_total`), as
    /// [`Enforcer::bytes`].
    fn mib(&mut self, resource: &'static str, limit: Limit, usage: u64, delta: u64) {
        if let Some(limit) = limit.get() {
            if usage.saturating_add(delta) > limit.saturating_mul(MIB) {
                self.over.push(OverLimit {
                    resource,
                    limit,
                    usage: usage.div_ceil(MIB),
                    delta: delta.div_ceil(MIB),
                });
            }
        }
    }

    fn finish(mut self, project: &str) -> Result<(), ProjectOverLimit> {
        if self.over.is_empty() {
            return Ok(());
        }
        self.over.sort_by_key(|o| o.resource);
        Err(ProjectOverLimit {
            project: project.to_owned(),
            over: self.over,
        })
    }
}

/// The check at `POST /v2/tasks`, before the task is stored: one more image (beside the
/// project's images and the `future_images` its legacy import tasks not yet final will make)
/// and one more upload must fit; the stored bytes must not be over the limit already
/// (Glance's delta 0).
///
/// # Errors
/// Every resource over its limit.
pub fn check_create(
    project: &str,
    limits: &ProjectLimits,
    stored: &ProjectUsage,
    in_flight: &InFlight,
    future_images: u64,
) -> Result<(), ProjectOverLimit> {
    let uploading = in_flight.waiting.saturating_add(in_flight.running);
    let mut e = Enforcer::default();
    e.count(
        "image_count_total",
        limits.image_count_total,
        stored.images.saturating_add(future_images),
        1,
    );
    e.count(
        "image_count_uploading",
        limits.image_count_uploading,
        uploading,
        1,
    );
    e.bytes(
        limits.image_size_total,
        stored.image_bytes.saturating_add(in_flight.charged),
        0,
    );
    e.finish(project)
}

/// The check when an import starts (usage may have changed since it was queued): its image
/// must fit beside the project's images and the images its *running* legacy imports will
/// make (`running_others`; waiting ones are checked when they start). An import into an
/// existing image (`adds_image` false: an interoperable import, whose record is already
/// counted) is not checked against `image_count_total`, as Glance's `import_image`.
///
/// # Errors
/// Every resource over its limit.
pub fn check_start(
    project: &str,
    limits: &ProjectLimits,
    stored: &ProjectUsage,
    others: &InFlight,
    adds_image: Option<u64>,
) -> Result<(), ProjectOverLimit> {
    let mut e = Enforcer::default();
    if let Some(running_others) = adds_image {
        e.count(
            "image_count_total",
            limits.image_count_total,
            stored.images.saturating_add(running_others),
            1,
        );
    }
    e.bytes(
        limits.image_size_total,
        stored.image_bytes.saturating_add(others.charged),
        0,
    );
    e.finish(project)
}

/// The project's reservation when it has an `image_count_total` limit (module `count`).
async fn reserve(state: &AppState, project: &str, limits: &ProjectLimits) -> Reservation {
    match limits.image_count_total.get() {
        Some(_) => state.admissions.reserve(project).await,
        None => Reservation::none(),
    }
}

/// The images the project's legacy import tasks not yet final will make, when
/// `image_count_total` counts them.
async fn future_images(
    state: &AppState,
    project: &str,
    limits: &ProjectLimits,
    asking: Option<&str>,
) -> Result<count::FutureImages, crate::meta::MetaError> {
    if limits.image_count_total.get().is_none() {
        return Ok(count::FutureImages::default());
    }
    count::future_images(state, project, asking).await
}

/// `POST /v2/tasks`: refuses (413, Glance's message) a task the project's quotas do not
/// allow. Call after validation, and keep the returned reservation until the task is stored
/// and queued (or refused), so that a racing request counts it.
///
/// # Errors
/// [`ApiError::LimitExceeded`], or an internal error when the metadata cannot be read.
pub async fn admit_task(state: &AppState, project: &str) -> Result<Reservation, ApiError> {
    let limits = state.config.quotas.for_project(project);
    let reservation = reserve(state, project, &limits).await;
    // Tasks before images: a task committing its image in between is counted twice for a
    // moment, never missed.
    let future = future_images(state, project, &limits, None).await?;
    read_charged_elsewhere(state, project, &limits).await?;
    let stored = stored_usage(state, project, &limits).await?;
    let in_flight = state.executor.in_flight(project, None);
    check_create(project, &limits, &stored, &in_flight, future.all())
        .map_err(|over| ApiError::LimitExceeded(over.glance_message()))?;
    Ok(reservation)
}

/// `POST /v2/images`: one more image must fit under `image_count_total` (Glance's
/// `enforce_image_count_total`, delta 1), counting the project's images and the images its
/// legacy import tasks not yet final will make. Keep the returned reservation until the
/// record is written.
///
/// # Errors
/// [`ApiError::LimitExceeded`] with Glance's text, or an internal error when the metadata
/// cannot be read.
pub async fn admit_image(state: &AppState, project: &str) -> Result<Reservation, ApiError> {
    let limits = state.config.quotas.for_project(project);
    if limits.image_count_total.get().is_none() {
        return Ok(Reservation::none());
    }
    let reservation = reserve(state, project, &limits).await;
    let future = future_images(state, project, &limits, None).await?;
    let stored = stored_usage(state, project, &limits).await?;
    let mut e = Enforcer::default();
    e.count(
        "image_count_total",
        limits.image_count_total,
        stored.images.saturating_add(future.all()),
        1,
    );
    e.finish(project)
        .map_err(|over| ApiError::LimitExceeded(over.glance_message()))?;
    Ok(reservation)
}

/// `POST /v2/images/{id}/import`: refuses (413, Glance's text) a project whose stored bytes
/// are over `image_size_total` already (Glance's `enforce_image_size_total`, delta 0, before
/// the image is even read). The bytes the import will store are charged as they arrive.
///
/// # Errors
/// [`ApiError::LimitExceeded`], or an internal error when the metadata cannot be read.
pub async fn admit_import(state: &AppState, project: &str) -> Result<(), ApiError> {
    let limits = state.config.quotas.for_project(project);
    if limits.image_size_total.get().is_none() {
        return Ok(());
    }
    read_charged_elsewhere(state, project, &limits).await?;
    let stored = stored_usage(state, project, &limits).await?;
    let in_flight = state.executor.in_flight(project, None);
    let mut e = Enforcer::default();
    e.bytes(
        limits.image_size_total,
        stored.image_bytes.saturating_add(in_flight.charged),
        0,
    );
    e.finish(project)
        .map_err(|over| ApiError::LimitExceeded(over.glance_message()))
}

/// Queues a stored task under its project's caps (`tasks_waiting`, and
/// `image_count_uploading` again, atomically with other requests); on a shared store only
/// wakes this node's claim loop ([`admit_queued`] checked the caps).
///
/// # Errors
/// [`ApiError::QueueFull`] (503) for the shared queue, [`ApiError::ProjectQueueFull`] (503)
/// for the project's share, [`ApiError::LimitExceeded`] (413) for `image_count_uploading`.
pub fn submit(state: &AppState, task_id: &str, project: &str) -> Result<(), ApiError> {
    let limits = state.config.quotas.for_project(project);
    let caps = SubmitCaps {
        waiting: limits.tasks_waiting.get(),
        in_flight: limits.image_count_uploading.get(),
    };
    state
        .executor
        .submit_capped(task_id, project, caps)
        .map_err(|refused| match refused {
            Refused::QueueFull(full) => ApiError::QueueFull(full.0),
            Refused::ProjectQueueFull(waiting) => ApiError::ProjectQueueFull {
                project: project.to_owned(),
                waiting,
            },
            Refused::InFlight(uploading) => uploading_over(project, &limits, uploading),
        })
}

/// The 413 for a project with `uploading` imports in flight, at its `image_count_uploading`.
fn uploading_over(project: &str, limits: &ProjectLimits, uploading: u64) -> ApiError {
    let mut e = Enforcer::default();
    e.count(
        "image_count_uploading",
        limits.image_count_uploading,
        uploading,
        1,
    );
    match e.finish(project) {
        Err(over) => ApiError::LimitExceeded(over.glance_message()),
        Ok(()) => ApiError::Internal("in-flight cap without a limit".into()),
    }
}

/// A running import's quota: checked when it starts, then charged by the pipeline as it
/// learns what the import will store ([`Admission`]).
#[derive(Debug)]
pub struct ImportQuota {
    executor: Executor,
    task_id: String,
    project: String,
    limit: Limit,
    /// The project's stored bytes when the import started…
    stored: u64,
    /// …and the executor's committed counter just before they were read.
    committed: u64,
    /// A stage's `image_stage_total` claim ([`ImportQuota::start_stage`]).
    stage: Option<stage::StageQuota>,
}

impl ImportQuota {
    /// Checks the project's quotas for task `task_id` (running) and returns its admission;
    /// `adds_image` as [`check_start`]'s.
    ///
    /// # Errors
    /// A reason code and message for the task: [`REASON_QUOTA_EXCEEDED`] with Glance's text
    /// when the project is over a limit, `internal_error` when its usage cannot be read.
    pub async fn start(
        state: &AppState,
        task_id: &str,
        project: &str,
        adds_image: bool,
    ) -> Result<ImportQuota, (String, String)> {
        let limits = state.config.quotas.for_project(project);
        let unreadable = |e: crate::meta::MetaError| {
            (
                imports::REASON_INTERNAL.to_owned(),
                format!("reading the project's usage failed: {e}"),
            )
        };
        // Read before the images: an import committing in between is counted twice (a
        // moment's over-count), never missed.
        read_charged_elsewhere(state, project, &limits)
            .await
            .map_err(unreadable)?;
        let committed = state.executor.in_flight(project, Some(task_id)).committed;
        let running_others = match adds_image {
            true => Some(
                future_images(state, project, &limits, Some(task_id))
                    .await
                    .map_err(unreadable)?
                    .processing,
            ),
            false => None,
        };
        let stored = stored_usage(state, project, &limits)
            .await
            .map_err(unreadable)?;
        let others = state.executor.in_flight(project, Some(task_id));
        check_start(project, &limits, &stored, &others, running_others)
            .map_err(|over| (REASON_QUOTA_EXCEEDED.to_owned(), over.glance_message()))?;
        Ok(ImportQuota {
            executor: state.executor.clone(),
            task_id: task_id.to_owned(),
            project: project.to_owned(),
            limit: limits.image_size_total,
            stored: stored.image_bytes,
            committed,
            stage: None,
        })
    }
}

impl ImportQuota {
    /// Admits a direct upload of image `image_id` (`PUT /v2/images/{id}/file`) for
    /// `project`, announcing `announced` bytes, as Glance's upload checks: one more upload
    /// must fit `image_count_uploading` (delta 1, atomically with other uploads and tasks),
    /// and the announced bytes `image_size_total`. The upload counts as an import in flight
    /// until the returned slot is dropped; the quota charges it as its bytes arrive.
    ///
    /// # Errors
    /// [`ApiError::LimitExceeded`] (413, Glance's text); an internal error when the
    /// project's usage cannot be read.
    pub async fn start_upload(
        state: &AppState,
        image_id: &str,
        project: &str,
        announced: Option<u64>,
    ) -> Result<(ImportQuota, UploadSlot), ApiError> {
        let limits = state.config.quotas.for_project(project);
        admit_upload_cluster(state, project, &limits).await?;
        let slot = state
            .executor
            .start_upload(image_id, project, limits.image_count_uploading.get())
            .map_err(|refused| match refused {
                Refused::InFlight(uploading) => uploading_over(project, &limits, uploading),
                other => ApiError::Internal(other.to_string()),
            })?;
        read_charged_elsewhere(state, project, &limits).await?;
        let committed = state.executor.in_flight(project, Some(image_id)).committed;
        let stored = stored_usage(state, project, &limits).await?;
        let others = state.executor.in_flight(project, Some(image_id));
        let mut e = Enforcer::default();
        e.bytes(
            limits.image_size_total,
            stored.image_bytes.saturating_add(others.charged),
            announced.unwrap_or(0),
        );
        e.finish(project)
            .map_err(|over| ApiError::LimitExceeded(over.glance_message()))?;
        let quota = ImportQuota {
            executor: state.executor.clone(),
            task_id: image_id.to_owned(),
            project: project.to_owned(),
            limit: limits.image_size_total,
            stored: stored.image_bytes,
            committed,
            stage: None,
        };
        Ok((quota, slot))
    }
}

impl ImportQuota {
    /// The project the import or upload is charged to.
    pub fn project(&self) -> &str {
        &self.project
    }
}

impl Admission for ImportQuota {
    fn charge(&self, bytes: u64) -> Result<(), String> {
        if let Some(stage) = &self.stage {
            stage.charge(&self.project, bytes)?;
        }
        self.executor
            .try_charge(&self.task_id, bytes, |others| {
                let stored = self
                    .stored
                    .saturating_add(others.committed.saturating_sub(self.committed));
                let mut e = Enforcer::default();
                e.bytes(self.limit, stored.saturating_add(others.charged), bytes);
                e.finish(&self.project)
            })
            .map_err(|over| over.glance_message())
    }
}

#[cfg(test)]
mod tests;
