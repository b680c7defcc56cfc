//! Stored values: one version-marker byte, then the record as JSON (garage's `migrate.rs`
//! shape).
//!
//! The marker lets the format evolve without a flag day. Tasks are at version 1 ([`V1`]);
//! images at version 2 ([`V2`]: a status enum, and nulls for what a `queued` image does not
//! have yet). JSON starts with `{` (0x7B), so a marker byte can never be mistaken for the
//! first byte of an unversioned document.
//!
//! # Adding a version
//! 1. In the module of the current version (e.g. [`v1`] for tasks), replace the re-export
//!    with a frozen copy of today's struct (same fields, same serde attributes) and keep its
//!    [`Migrate`] impl there, unchanged.
//! 2. Change the record in `meta/mod.rs`, and give it an `impl Migrate` here with the next
//!    `VERSION_MARKER` and `type Previous` = the frozen struct, writing `migrate` from it
//!    (as [`v1::ImageRecord`] → [`ImageRecord`] below).
//! 3. Values written by an older version then decode through [`Migrate::decode_versioned`],
//!    which walks back the `Previous` chain until a marker matches, and migrate forward.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ImageRecord, ImageStatus, MetaError, TaskRecord};

/// Version 1 of a record's encoding (the current one for tasks).
pub const V1: u8 = 1;
/// Version 2 (the current one for images).
pub const V2: u8 = 2;

/// A stored format of a record, with the format it replaced.
pub trait Migrate: Serialize + DeserializeOwned {
    /// The first byte of every value written in this format.
    const VERSION_MARKER: u8;
    /// The format this one replaced ([`NoPrevious`] for the first).
    type Previous: Migrate;

    /// Converts a value of the previous format.
    fn migrate(previous: Self::Previous) -> Self;

    /// Decodes `bytes` written in this format or any earlier one.
    ///
    /// # Errors
    /// A description of the problem when the marker is missing or unknown, or the body is not
    /// this format's JSON.
    fn decode_versioned(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            None => Err("empty value".to_owned()),
            Some((&marker, body)) if marker == Self::VERSION_MARKER => serde_json::from_slice(body)
                .map_err(|e| format!("version {marker} body is not valid: {e}")),
            Some((&marker, _)) if marker > Self::VERSION_MARKER => Err(format!(
                "version marker {marker} is newer than this build knows ({})",
                Self::VERSION_MARKER
            )),
            Some(_) => Self::Previous::decode_versioned(bytes).map(Self::migrate),
        }
    }
}

/// The end of a `Previous` chain: no value ever decodes as it.
#[derive(Debug, Serialize, Deserialize)]
pub enum NoPrevious {}

impl Migrate for NoPrevious {
    const VERSION_MARKER: u8 = 0;
    type Previous = NoPrevious;

    fn migrate(previous: Self::Previous) -> Self {
        previous
    }

    fn decode_versioned(bytes: &[u8]) -> Result<Self, String> {
        match bytes.first() {
            Some(marker) => Err(format!("unknown version marker {marker}")),
            None => Err("empty value".to_owned()),
        }
    }
}

/// Version 1 of the records: the current version of tasks (re-exported), and the frozen
/// image record written before images had statuses other than `active`.
pub mod v1 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    pub use super::super::TaskRecord;
    use super::super::Timestamp;

    /// An image as version 1 stored it: always `active` with its data committed; empty
    /// strings for unknown formats and hashes. Frozen: never change it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ImageRecord {
        /// UUID4.
        pub id: String,
        /// Display name.
        pub name: Option<String>,
        /// Always `active` in practice.
        pub status: String,
        /// Owning project.
        pub owner: String,
        /// Visibility.
        pub visibility: String,
        /// Whether deletion is refused.
        pub protected: bool,
        /// Stored format.
        pub disk_format: String,
        /// Container format.
        pub container_format: String,
        /// Stored bytes.
        pub size: u64,
        /// Guest-visible size.
        pub virtual_size: Option<u64>,
        /// md5 hex.
        pub checksum: String,
        /// `sha512`.
        pub os_hash_algo: String,
        /// sha512 hex.
        pub os_hash_value: String,
        /// Minimum disk in GiB.
        pub min_disk: u64,
        /// Minimum RAM in MiB.
        pub min_ram: u64,
        /// Tags.
        pub tags: Vec<String>,
        /// Extra properties.
        pub properties: BTreeMap<String, String>,
        /// Creation time.
        pub created_at: Timestamp,
        /// Last change.
        pub updated_at: Timestamp,
        /// The task that imported it.
        pub task_id: Option<String>,
    }
}

impl Migrate for v1::TaskRecord {
    const VERSION_MARKER: u8 = V1;
    type Previous = NoPrevious;

    fn migrate(previous: Self::Previous) -> Self {
        match previous {}
    }
}

impl Migrate for v1::ImageRecord {
    const VERSION_MARKER: u8 = V1;
    type Previous = NoPrevious;

    fn migrate(previous: Self::Previous) -> Self {
        match previous {}
    }
}

impl Migrate for ImageRecord {
    const VERSION_MARKER: u8 = V2;
    type Previous = v1::ImageRecord;

    /// Version 1 stored only images whose data was committed (`active`): the status maps by
    /// name (anything else it could hold reads as `active`, which it was), and its empty
    /// strings become nulls.
    fn migrate(old: v1::ImageRecord) -> Self {
        let status = ImageStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == old.status)
            .unwrap_or(ImageStatus::Active);
        let text = |s: String| (!s.is_empty()).then_some(s);
        ImageRecord {
            id: old.id,
            name: old.name,
            status,
            owner: old.owner,
            visibility: old.visibility,
            protected: old.protected,
            disk_format: text(old.disk_format),
            container_format: text(old.container_format),
            size: status.has_data().then_some(old.size),
            virtual_size: old.virtual_size,
            checksum: text(old.checksum),
            os_hash_algo: text(old.os_hash_algo),
            os_hash_value: text(old.os_hash_value),
            min_disk: old.min_disk,
            min_ram: old.min_ram,
            tags: old.tags,
            properties: old.properties,
            created_at: old.created_at,
            updated_at: old.updated_at,
            task_id: old.task_id,
            writer: None,
            staged_on: None,
            staged_bytes: 0,
        }
    }
}

/// A record as the store keeps it: its current format plus what errors need to name it.
pub trait Record: Migrate {
    /// What the record is, for errors: `task` or `image`.
    const WHAT: &'static str;

    /// The record's id (the key it is stored under).
    fn id(&self) -> &str;
}

impl Record for TaskRecord {
    const WHAT: &'static str = "task";

    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for ImageRecord {
    const WHAT: &'static str = "image";

    fn id(&self) -> &str {
        &self.id
    }
}

/// Encodes a record: its version marker, then its JSON.
///
/// # Errors
/// [`MetaError::Backend`] if serde_json refuses the record (not expected: every map in the
/// records has string keys).
pub fn encode<T: Record>(record: &T) -> Result<Vec<u8>, MetaError> {
    let mut out = vec![T::VERSION_MARKER];
    serde_json::to_writer(&mut out, record)
        .map_err(|e| MetaError::Backend(format!("encoding {} {}: {e}", T::WHAT, record.id())))?;
    Ok(out)
}

/// Decodes the value stored under the record id `key_id`, and checks that the record's own id
/// is that id.
///
/// # Errors
/// [`MetaError::Decoding`] naming the record for an empty value, an unknown marker, a body
/// that is not the marker's JSON, or a record stored under another id.
pub fn decode<T: Record>(key_id: &str, bytes: &[u8]) -> Result<T, MetaError> {
    let decoding = |detail: String| MetaError::Decoding {
        what: T::WHAT,
        key: key_id.to_owned(),
        detail,
    };
    let record = T::decode_versioned(bytes).map_err(decoding)?;
    if record.id() != key_id {
        return Err(decoding(format!(
            "record has id '{}' but is stored under '{key_id}'",
            record.id()
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::TaskStatus;
    use super::*;

    const ID: &str = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";

    fn task() -> TaskRecord {
        TaskRecord {
            id: ID.to_owned(),
            task_type: "import".to_owned(),
            status: TaskStatus::Processing,
            input: serde_json::json!({"import_from": "https://example.org/a.qcow2"}),
            result: None,
            owner: "project-a".to_owned(),
            message: String::new(),
            reason: None,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_005,
            expires_at: None,
            request_id: Some("req-1".to_owned()),
            user_id: None,
            lease: None,
            attempts: 0,
            pinned_node: None,
        }
    }

    fn image() -> ImageRecord {
        ImageRecord {
            id: ID.to_owned(),
            name: Some("cirros".to_owned()),
            status: ImageStatus::Active,
            owner: "project-a".to_owned(),
            visibility: "private".to_owned(),
            protected: false,
            disk_format: Some("qcow2".to_owned()),
            container_format: Some("bare".to_owned()),
            size: Some(1 << 20),
            virtual_size: Some(1 << 30),
            checksum: Some("d41d8cd98f00b204e9800998ecf8427e".to_owned()),
            os_hash_algo: Some("sha512".to_owned()),
            os_hash_value: Some("cf83".to_owned()),
            min_disk: 1,
            min_ram: 64,
            tags: vec!["b".to_owned(), "a".to_owned()],
            properties: BTreeMap::from([("os_distro".to_owned(), "cirros".to_owned())]),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            task_id: Some("t".to_owned()),
            writer: None,
            staged_on: None,
            staged_bytes: 0,
        }
    }

    #[test]
    fn test_encode_task_starts_with_marker_then_json() {
        let bytes = encode(&task()).unwrap();
        assert!(matches!(bytes.split_first(), Some((&V1, body)) if body.first() == Some(&b'{')));
        const { assert!(<TaskRecord as Migrate>::VERSION_MARKER == V1) };
    }

    #[test]
    fn test_decode_task_round_trip_equal() {
        let bytes = encode(&task()).unwrap();
        assert!(matches!(decode::<TaskRecord>(ID, &bytes), Ok(t) if t == task()));
    }

    /// A task written before leases (no `lease`, no `attempts`) reads as never claimed; a
    /// leased one round-trips.
    #[test]
    fn test_decode_task_without_lease_fields_defaults() {
        let mut old = serde_json::to_value(task()).unwrap();
        let fields = old.as_object_mut().unwrap();
        assert!(fields.remove("attempts").is_some());
        assert!(!fields.contains_key("lease"), "no lease, not serialised");
        let mut bytes = vec![V1];
        bytes.extend(serde_json::to_vec(&old).unwrap());
        assert!(matches!(decode::<TaskRecord>(ID, &bytes), Ok(t) if t == task()));
        let mut leased = task();
        leased.lease = Some(super::super::TaskLease {
            node: "node-a".to_owned(),
            until: 1_700_000_060,
            charged: 7 << 20,
        });
        leased.attempts = 2;
        let bytes = encode(&leased).unwrap();
        assert!(matches!(decode::<TaskRecord>(ID, &bytes), Ok(t) if t == leased));
    }

    #[test]
    fn test_decode_image_round_trip_equal() {
        let bytes = encode(&image()).unwrap();
        assert!(matches!(decode::<ImageRecord>(ID, &bytes), Ok(i) if i == image()));
    }

    /// An image written before writer leases has no `writer` (the serde default, and the
    /// field is not written when empty); a leased one round-trips.
    #[test]
    fn test_decode_image_writer_lease_defaults_and_round_trips() {
        let fields = serde_json::to_value(image()).unwrap();
        assert!(!fields.as_object().unwrap().contains_key("writer"));
        let mut leased = image();
        leased.status = ImageStatus::Saving;
        leased.writer = Some(super::super::WriterLease {
            node: "node-a".to_owned(),
            upload: "u".to_owned(),
            until: 1_700_000_060,
            charged: 7 << 20,
        });
        let bytes = encode(&leased).unwrap();
        assert!(matches!(decode::<ImageRecord>(ID, &bytes), Ok(i) if i == leased));
    }

    #[test]
    fn test_decode_garbage_body_decoding_error_names_record() {
        let mut bytes = encode(&task()).unwrap();
        bytes.truncate(bytes.len() / 2);
        let err = decode::<TaskRecord>(ID, &bytes);
        assert!(matches!(
            err,
            Err(MetaError::Decoding { what: "task", ref key, ref detail })
                if key == ID && detail.contains("version 1")
        ));
    }

    #[test]
    fn test_decode_empty_value_decoding_error() {
        assert!(matches!(
            decode::<ImageRecord>(ID, b""),
            Err(MetaError::Decoding { what: "image", ref detail, .. }) if detail == "empty value"
        ));
    }

    #[test]
    fn test_decode_unmarked_json_decoding_error() {
        let json = serde_json::to_vec(&task()).unwrap();
        assert!(matches!(
            decode::<TaskRecord>(ID, &json),
            Err(MetaError::Decoding { ref detail, .. }) if detail.contains("newer")
        ));
    }

    #[test]
    fn test_decode_marker_zero_decoding_error() {
        let mut bytes = encode(&task()).unwrap();
        if let Some(marker) = bytes.first_mut() {
            *marker = 0;
        }
        assert!(matches!(
            decode::<TaskRecord>(ID, &bytes),
            Err(MetaError::Decoding { ref detail, .. }) if detail == "unknown version marker 0"
        ));
    }

    /// A value as version 1 wrote it (the live struct of that version, byte for byte).
    fn v1_image_bytes() -> Vec<u8> {
        let mut bytes = vec![V1];
        bytes.extend_from_slice(
            br#"{"id":"6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b","name":"cirros","status":"active","owner":"project-a","visibility":"private","protected":false,"disk_format":"qcow2","container_format":"","size":1048576,"virtual_size":1073741824,"checksum":"d41d8cd98f00b204e9800998ecf8427e","os_hash_algo":"sha512","os_hash_value":"cf83","min_disk":1,"min_ram":64,"tags":["b","a"],"properties":{"os_distro":"cirros"},"created_at":1700000000,"updated_at":1700000000,"task_id":"t"}"#,
        );
        bytes
    }

    #[test]
    fn test_decode_v1_image_migrates_to_v2_with_nulls() {
        let mut want = image();
        want.container_format = None;
        assert!(matches!(decode::<ImageRecord>(ID, &v1_image_bytes()), Ok(i) if i == want));
        // Written back, it is version 2.
        let bytes = encode(&want).unwrap();
        assert_eq!(bytes.first(), Some(&V2));
        assert!(matches!(decode::<ImageRecord>(ID, &bytes), Ok(i) if i == want));
    }

    #[test]
    fn test_decode_v2_image_statuses_round_trip() {
        for status in ImageStatus::ALL {
            let mut queued = image();
            queued.status = status;
            (queued.size, queued.checksum, queued.disk_format) = (None, None, None);
            let bytes = encode(&queued).unwrap();
            let body = std::str::from_utf8(bytes.get(1..).unwrap()).unwrap();
            assert!(body.contains(&format!("\"status\":\"{status}\"")), "{body}");
            assert!(matches!(decode::<ImageRecord>(ID, &bytes), Ok(i) if i == queued));
        }
    }

    #[test]
    fn test_decode_future_marker_decoding_error() {
        let mut bytes = encode(&image()).unwrap();
        if let Some(marker) = bytes.first_mut() {
            *marker = 3;
        }
        assert!(matches!(
            decode::<ImageRecord>(ID, &bytes),
            Err(MetaError::Decoding { ref detail, .. }) if detail.contains("newer")
        ));
    }

    #[test]
    fn test_decode_task_as_image_decoding_error() {
        let bytes = encode(&task()).unwrap();
        assert!(matches!(
            decode::<ImageRecord>(ID, &bytes),
            Err(MetaError::Decoding { what: "image", .. })
        ));
    }

    #[test]
    fn test_decode_id_mismatch_decoding_error() {
        let bytes = encode(&task()).unwrap();
        assert!(matches!(
            decode::<TaskRecord>("other", &bytes),
            Err(MetaError::Decoding { ref key, ref detail, .. })
                if key == "other" && detail.contains(ID)
        ));
    }
}
