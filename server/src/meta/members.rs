//! Image members (Glance's `image_members` table): which projects an image of visibility
//! `shared` is shared with, and whether each accepted it.
//!
//! Two keys per member, written and deleted together in one atomic write:
//!
//! | key                                           | value             |
//! |-----------------------------------------------|-------------------|
//! | `p/` len(image id) image id, member id        | the member record |
//! | `q/` len(member id) member id, image id       | (empty)           |
//!
//! (lengths as 4 big-endian bytes, so one id is never a prefix of another), so an image's
//! members and a project's shared images are each one key range, never a scan.

use serde::{Deserialize, Serialize};

use super::{MetaError, Timestamp};

/// Prefix of the member records, by image.
pub const MEMBER_PREFIX: &[u8] = b"p/";
/// Prefix of the member index, by member project.
pub const MEMBER_INDEX_PREFIX: &[u8] = b"q/";

/// A member's answer to the sharing (Glance's `ImageMembership.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Shared, not answered yet (a new member's status).
    Pending,
    /// The member lists the image.
    Accepted,
    /// The member declined it.
    Rejected,
}

impl MemberStatus {
    /// Every status, in Glance's order.
    pub const ALL: [MemberStatus; 3] = [
        MemberStatus::Pending,
        MemberStatus::Accepted,
        MemberStatus::Rejected,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Rejected => "rejected",
        }
    }

    /// The status an API name stands for.
    pub fn parse(name: &str) -> Option<MemberStatus> {
        MemberStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One project an image is shared with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The shared image.
    pub image_id: String,
    /// The project it is shared with.
    pub member_id: String,
    /// The member's answer.
    pub status: MemberStatus,
    /// When the member was added.
    pub created_at: Timestamp,
    /// When the status last changed.
    pub updated_at: Timestamp,
}

/// What [`super::MetaStore::add_member`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddMember {
    /// The member was written.
    Added,
    /// The project already is a member of the image (nothing written).
    Duplicate,
    /// The image already has this many members, the most allowed (nothing written).
    Full(usize),
}

fn len_prefixed(prefix: &[u8], first: &str, second: &str) -> Vec<u8> {
    let len = u32::try_from(first.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(
        prefix
            .len()
            .saturating_add(4)
            .saturating_add(first.len())
            .saturating_add(second.len()),
    );
    key.extend_from_slice(prefix);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(first.as_bytes());
    key.extend_from_slice(second.as_bytes());
    key
}

/// The key of the record of `member` on `image`.
pub fn member_key(image: &str, member: &str) -> Vec<u8> {
    len_prefixed(MEMBER_PREFIX, image, member)
}

/// The index key of `member` on `image`.
pub fn member_index_key(image: &str, member: &str) -> Vec<u8> {
    len_prefixed(MEMBER_INDEX_PREFIX, member, image)
}

/// `[start, end)` of the member records of `image`.
pub fn image_range(image: &str) -> (Vec<u8>, Vec<u8>) {
    range_of(len_prefixed(MEMBER_PREFIX, image, ""))
}

/// `[start, end)` of the index entries of `member`.
pub fn member_range(member: &str) -> (Vec<u8>, Vec<u8>) {
    range_of(len_prefixed(MEMBER_INDEX_PREFIX, member, ""))
}

/// The image id of an index key of `member`'s range.
pub fn image_of_index_key(member: &str, key: &[u8]) -> Result<String, MetaError> {
    let start = len_prefixed(MEMBER_INDEX_PREFIX, member, "");
    key.strip_prefix(start.as_slice())
        .and_then(|id| String::from_utf8(id.to_vec()).ok())
        .ok_or_else(|| MetaError::Decoding {
            what: "member index key",
            key: String::from_utf8_lossy(key).into_owned(),
            detail: "not in the member's range".to_owned(),
        })
}

/// A prefix's range: every key starting with it (a prefix never ends in 0xff here: the ids
/// are UTF-8, whose bytes are never 0xff, and an empty id ends in a length byte below it).
fn range_of(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.clone();
    end.push(0xff);
    (prefix, end)
}

/// A member record's stored bytes.
///
/// # Errors
/// [`MetaError::Backend`] if it cannot be encoded (it always can).
pub fn encode(member: &MemberRecord) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(member).map_err(|e| MetaError::Backend(format!("encoding member: {e}")))
}

/// A member record from its stored bytes.
///
/// # Errors
/// [`MetaError::Decoding`] naming the key.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<MemberRecord, MetaError> {
    serde_json::from_slice(bytes).map_err(|e| MetaError::Decoding {
        what: "member",
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

/// The part of the conformance suite about members.
pub async fn conformance(store: &dyn super::MetaStore) {
    const I1: &str = "11111111-0000-4000-8000-000000000001";
    const I2: &str = "22222222-0000-4000-8000-000000000002";
    let member = |image: &str, project: &str| MemberRecord {
        image_id: image.to_owned(),
        member_id: project.to_owned(),
        status: MemberStatus::Pending,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    };
    assert_eq!(store.get_member(I1, "b").await.expect("get missing"), None);
    assert_eq!(store.image_members(I1).await.expect("no members"), vec![]);
    let b1 = member(I1, "b");
    assert_eq!(
        store.add_member(&b1, 2).await.expect("add"),
        AddMember::Added
    );
    assert_eq!(
        store.add_member(&b1, 2).await.expect("dup"),
        AddMember::Duplicate
    );
    // A project id that is a prefix of another stays apart from it.
    assert_eq!(
        store
            .add_member(&member(I1, "bb"), 2)
            .await
            .expect("add bb"),
        AddMember::Added
    );
    assert_eq!(
        store.add_member(&member(I1, "c"), 2).await.expect("full"),
        AddMember::Full(2)
    );
    assert_eq!(
        store.add_member(&member(I2, "b"), 2).await.expect("add I2"),
        AddMember::Added
    );
    let ids = |v: Vec<MemberRecord>| -> Vec<(String, String)> {
        v.into_iter().map(|m| (m.image_id, m.member_id)).collect()
    };
    assert_eq!(
        ids(store.image_members(I1).await.expect("members")),
        [(I1.into(), "b".into()), (I1.into(), "bb".into())]
    );
    assert_eq!(
        ids(store.member_images("b").await.expect("shared with b")),
        [(I1.into(), "b".into()), (I2.into(), "b".into())]
    );
    assert_eq!(
        ids(store.member_images("bb").await.expect("shared with bb")),
        [(I1.into(), "bb".into())]
    );
    let mut accepted = b1.clone();
    accepted.status = MemberStatus::Accepted;
    accepted.updated_at = 1_700_000_009;
    assert!(store.update_member(&accepted).await.expect("update"));
    assert!(!store
        .update_member(&member(I2, "zz"))
        .await
        .expect("update missing"));
    assert_eq!(
        store.get_member(I1, "b").await.expect("get"),
        Some(accepted)
    );
    assert!(store.delete_member(I1, "b").await.expect("delete"));
    assert!(!store.delete_member(I1, "b").await.expect("delete again"));
    assert_eq!(
        ids(store.member_images("b").await.expect("after delete")),
        [(I2.into(), "b".into())]
    );
    // Deleting an image deletes its members, index entries included.
    store
        .put_image(&super::sample_image(I2))
        .await
        .expect("put image");
    store.delete_image(I2).await.expect("delete image");
    assert_eq!(store.image_members(I2).await.expect("gone"), vec![]);
    assert_eq!(store.member_images("b").await.expect("index gone"), vec![]);
    // So does a transition that deletes the image (the API's DELETE).
    store
        .put_image(&super::sample_image(I1))
        .await
        .expect("put image");
    let deleted = store
        .transition_image(I1, &super::ImageStatus::ALL, &mut |_| {
            super::Decision::Delete
        })
        .await
        .expect("delete by transition");
    assert!(matches!(deleted, super::Transition::Done(_)));
    assert_eq!(store.image_members(I1).await.expect("gone"), vec![]);
    assert_eq!(store.member_images("bb").await.expect("index gone"), vec![]);
}
