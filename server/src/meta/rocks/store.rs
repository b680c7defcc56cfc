//! [`MetaStore`] for [`RocksMeta`]: each call runs the blocking operation of the same name,
//! writes and scans through [`blocking`] (an fsync or a range read may take milliseconds),
//! point reads directly (microseconds).

use super::super::members::{AddMember, MemberRecord};
use super::super::{
    Decision, ImageQuery, ImageRecord, ImageStatus, MetaError, MetaStore, TaskLease, TaskQuery,
    TaskRecord, TaskSummary, Timestamp, Transition,
};
use super::{blocking, RocksMeta};

#[async_trait::async_trait]
impl MetaStore for RocksMeta {
    async fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        blocking(|| RocksMeta::put_task(self, task))
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        RocksMeta::get_task(self, id)
    }

    async fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        blocking(|| RocksMeta::delete_task(self, id))
    }

    async fn transition_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        blocking(|| RocksMeta::transition_task(self, task))
    }

    async fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        blocking(|| RocksMeta::commit_import(self, task, image))
    }

    async fn transition_image_with_task(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
        task: &TaskRecord,
    ) -> Result<Transition, MetaError> {
        blocking(|| RocksMeta::transition_image_with_task(self, id, expected, change, task))
    }

    async fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        blocking(|| RocksMeta::put_image(self, image))
    }

    async fn insert_image(&self, image: &ImageRecord) -> Result<bool, MetaError> {
        blocking(|| RocksMeta::insert_image(self, image))
    }

    async fn transition_image(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
    ) -> Result<Transition, MetaError> {
        blocking(|| RocksMeta::transition_image(self, id, expected, change))
    }

    async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        RocksMeta::get_image(self, id)
    }

    async fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        blocking(|| RocksMeta::delete_image(self, id))
    }

    async fn list_task_page(&self, query: &TaskQuery<'_>) -> Result<Vec<TaskSummary>, MetaError> {
        blocking(|| RocksMeta::list_task_page(self, query))
    }

    async fn list_image_page(&self, query: &ImageQuery<'_>) -> Result<Vec<ImageRecord>, MetaError> {
        blocking(|| RocksMeta::list_image_page(self, query))
    }

    async fn expired_tasks(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        blocking(|| RocksMeta::expired_tasks(self, now, max))
    }

    async fn claim_task(
        &self,
        lease: &TaskLease,
        per_project: u64,
        now: Timestamp,
    ) -> Result<Option<TaskRecord>, MetaError> {
        blocking(|| RocksMeta::claim_task(self, lease, per_project, now))
    }

    async fn renew_lease(
        &self,
        id: &str,
        node: &str,
        until: Timestamp,
        charged: u64,
    ) -> Result<bool, MetaError> {
        blocking(|| RocksMeta::renew_lease(self, id, node, until, charged))
    }

    async fn take_back(
        &self,
        task: &TaskRecord,
        expired: Option<&TaskLease>,
    ) -> Result<bool, MetaError> {
        blocking(|| RocksMeta::take_back(self, task, expired))
    }

    async fn expired_leases(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        blocking(|| RocksMeta::expired_leases(self, now, max))
    }

    async fn unfinished_tasks(&self) -> Result<Vec<String>, MetaError> {
        blocking(|| RocksMeta::unfinished_tasks(self))
    }

    async fn image_tasks(&self, image_id: &str) -> Result<Vec<TaskRecord>, MetaError> {
        blocking(|| RocksMeta::image_tasks(self, image_id))
    }

    async fn scan_images(
        &self,
        owner: Option<&str>,
        visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
    ) -> Result<(), MetaError> {
        blocking(|| RocksMeta::scan_images(self, owner, visit))
    }

    async fn add_member(&self, member: &MemberRecord, max: usize) -> Result<AddMember, MetaError> {
        blocking(|| RocksMeta::add_member(self, member, max))
    }

    async fn update_member(&self, member: &MemberRecord) -> Result<bool, MetaError> {
        blocking(|| RocksMeta::update_member(self, member))
    }

    async fn get_member(
        &self,
        image: &str,
        member: &str,
    ) -> Result<Option<MemberRecord>, MetaError> {
        RocksMeta::get_member(self, image, member)
    }

    async fn image_members(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError> {
        blocking(|| RocksMeta::image_members(self, image))
    }

    async fn member_images(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError> {
        blocking(|| RocksMeta::member_images(self, member))
    }

    async fn delete_member(&self, image: &str, member: &str) -> Result<bool, MetaError> {
        blocking(|| RocksMeta::delete_member(self, image, member))
    }
}
