//! Image members in RocksDB ([`crate::meta::members`]'s keys): each write is one batch
//! holding the record and its index entry, under the write lock of the image id.

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::RocksMeta;
use crate::meta::members::{self, AddMember, MemberRecord};
use crate::meta::MetaError;

/// Key-value pairs read from RocksDB.
type Pairs = Vec<(Box<[u8]>, Box<[u8]>)>;

impl RocksMeta {
    /// The `(key, value)` pairs in `[start, end)`, ascending.
    fn member_range(&self, (start, end): (Vec<u8>, Vec<u8>)) -> Result<Pairs, MetaError> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end);
        self.db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), options)
            .map(|item| item.map_err(|e| MetaError::Backend(format!("reading members: {e}"))))
            .collect()
    }

    fn read_member(&self, image: &str, member: &str) -> Result<Option<MemberRecord>, MetaError> {
        let key = members::member_key(image, member);
        let value = self
            .db
            .get_pinned(&key)
            .map_err(|e| MetaError::Backend(format!("reading member {member} of {image}: {e}")))?;
        value.map(|bytes| members::decode(&key, &bytes)).transpose()
    }

    /// See [`crate::meta::MetaStore::add_member`].
    pub(super) fn add_member_impl(
        &self,
        member: &MemberRecord,
        max: usize,
    ) -> Result<AddMember, MetaError> {
        let (image, project) = (&member.image_id, &member.member_id);
        let _locked = self.lock(&[image])?;
        if self.read_member(image, project)?.is_some() {
            return Ok(AddMember::Duplicate);
        }
        if self.member_range(members::image_range(image))?.len() >= max {
            return Ok(AddMember::Full(max));
        }
        let mut batch = WriteBatch::default();
        batch.put(
            members::member_key(image, project),
            members::encode(member)?,
        );
        batch.put(members::member_index_key(image, project), []);
        self.write(&format!("member {project} of image {image}"), batch)?;
        Ok(AddMember::Added)
    }

    /// See [`crate::meta::MetaStore::update_member`].
    pub(super) fn update_member_impl(&self, member: &MemberRecord) -> Result<bool, MetaError> {
        let (image, project) = (&member.image_id, &member.member_id);
        let _locked = self.lock(&[image])?;
        if self.read_member(image, project)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put(
            members::member_key(image, project),
            members::encode(member)?,
        );
        self.write(&format!("member {project} of image {image}"), batch)?;
        Ok(true)
    }

    /// See [`crate::meta::MetaStore::get_member`].
    pub(super) fn get_member_impl(
        &self,
        image: &str,
        member: &str,
    ) -> Result<Option<MemberRecord>, MetaError> {
        self.read_member(image, member)
    }

    /// See [`crate::meta::MetaStore::image_members`].
    pub(super) fn image_members_impl(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError> {
        self.member_range(members::image_range(image))?
            .iter()
            .map(|(key, value)| members::decode(key, value))
            .collect()
    }

    /// See [`crate::meta::MetaStore::member_images`]. An index entry whose record was
    /// deleted since the range was read is skipped.
    pub(super) fn member_images_impl(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError> {
        let mut out = Vec::new();
        for (key, _) in self.member_range(members::member_range(member))? {
            let image = members::image_of_index_key(member, &key)?;
            if let Some(record) = self.read_member(&image, member)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// See [`crate::meta::MetaStore::delete_member`].
    pub(super) fn delete_member_impl(&self, image: &str, member: &str) -> Result<bool, MetaError> {
        let _locked = self.lock(&[image])?;
        if self.read_member(image, member)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete(members::member_key(image, member));
        batch.delete(members::member_index_key(image, member));
        self.write(
            &format!("removal of member {member} of image {image}"),
            batch,
        )?;
        Ok(true)
    }

    /// Adds to `batch` the removal of every member of `image` (with the image's deletion;
    /// the caller holds the image's write lock).
    pub(super) fn delete_image_members(
        &self,
        batch: &mut WriteBatch,
        image: &str,
    ) -> Result<(), MetaError> {
        for member in self.image_members_impl(image)? {
            batch.delete(members::member_key(image, &member.member_id));
            batch.delete(members::member_index_key(image, &member.member_id));
        }
        Ok(())
    }
}
