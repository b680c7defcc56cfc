//! Glance's `image_stage_total` for `PUT /v2/images/{id}/stage`: the bytes a project has
//! staged (complete stages waiting for their import, and stages streaming in) must stay
//! within its limit. Counted by the staging area's [`Ledger`](crate::staging::Ledger);
//! checked when a stage is admitted (with its announced length: Glance checks delta 0, which
//! would let one stage pass the limit by its whole size) and as its bytes arrive.

use super::{Enforcer, ImportQuota, Limit};
use crate::api::error::ApiError;
use crate::staging::StageClaim;
use crate::state::AppState;

/// The resource's name in oslo.limit's messages.
const RESOURCE: &str = "image_stage_total";

/// A stage's claim on its project's `image_stage_total`.
#[derive(Debug)]
pub(super) struct StageQuota {
    claim: StageClaim,
    limit: Limit,
}

impl StageQuota {
    /// Raises the stage's charge to `bytes` unless that takes `project` over its limit.
    pub(super) fn charge(&self, project: &str, bytes: u64) -> Result<(), String> {
        self.claim
            .charge(bytes, |others| {
                let mut e = Enforcer::default();
                e.mib(RESOURCE, self.limit, others, bytes);
                e.finish(project)
            })
            .map_err(|over| over.glance_message())
    }
}

impl ImportQuota {
    /// Admits a stage of image `image_id` (`PUT /v2/images/{id}/stage`) for `project`
    /// announcing `announced` bytes: the checks of an upload ([`ImportQuota::start_upload`]),
    /// then `image_stage_total` (the project's staged bytes plus the announced ones). The
    /// stage counts against it from now on: as its bytes arrive, then, once
    /// [`ImportQuota::stage_sealed`], until the stage is imported, discarded or expires.
    ///
    /// # Errors
    /// [`ApiError::LimitExceeded`] (413, Glance's text); an internal error when the
    /// project's usage cannot be read.
    pub async fn start_stage(
        state: &AppState,
        image_id: &str,
        project: &str,
        announced: Option<u64>,
    ) -> Result<(ImportQuota, crate::executor::UploadSlot), ApiError> {
        let (mut quota, slot) = Self::start_upload(state, image_id, project, announced).await?;
        let limit = state.config.quotas.for_project(project).image_stage_total;
        super::cluster::read_staged_elsewhere(state, project, limit).await?;
        let delta = announced.unwrap_or(0);
        let claim = state
            .staging
            .ledger()
            .claim(image_id, project, delta, |others| {
                let mut e = Enforcer::default();
                e.mib(RESOURCE, limit, others, delta);
                e.finish(project)
            })
            .map_err(|over| ApiError::LimitExceeded(over.glance_message()))?;
        quota.stage = Some(StageQuota { claim, limit });
        Ok((quota, slot))
    }

    /// The stage is complete and sealed with `bytes`: they count until the stage goes.
    pub fn stage_sealed(&self, bytes: u64) {
        if let Some(stage) = &self.stage {
            stage.claim.seal(bytes);
        }
    }
}
