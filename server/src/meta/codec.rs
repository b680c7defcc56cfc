//! Stored values: one version-marker byte, then the record as JSON (garage's `migrate.rs`
//! shape).
//!
//! The marker lets the format evolve without a flag day. The current format of each record
//! is version 1 ([`V1`]); JSON starts with `{` (0x7B), so a marker byte can never be
//! mistaken for the first byte of an unversioned document.
//!
//! # Adding a version 2
//! 1. In [`v1`], replace the re-export with frozen copies of today's structs (same fields,
//!    same serde attributes) and keep their [`Migrate`] impls there, unchanged.
//! 2. Change the records in `meta/mod.rs`, and move their `impl Migrate` here with
//!    `VERSION_MARKER = V2` and `type Previous = v1::TaskRecord` (or `ImageRecord`), writing
//!    `migrate` from the old struct.
//! 3. Values written by version 1 then decode through [`Migrate::decode_versioned`], which
//!    walks back the `Previous` chain until a marker matches, and migrate forward.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ImageRecord, MetaError, TaskRecord};

/// Version 1 of a record's encoding (the current one for tasks and images).
pub const V1: u8 = 1;

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

/// Version 1 of the records. It is the current version, so it re-exports the live structs;
/// when version 2 arrives this module gets frozen copies of them instead (see the module
/// docs).
pub mod v1 {
    pub use super::super::{ImageRecord, TaskRecord};
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
        }
    }

    fn image() -> ImageRecord {
        ImageRecord {
            id: ID.to_owned(),
            name: Some("cirros".to_owned()),
            status: "active".to_owned(),
            owner: "project-a".to_owned(),
            visibility: "private".to_owned(),
            protected: false,
            disk_format: "qcow2".to_owned(),
            container_format: "bare".to_owned(),
            size: 1 << 20,
            virtual_size: Some(1 << 30),
            checksum: "d41d8cd98f00b204e9800998ecf8427e".to_owned(),
            os_hash_algo: "sha512".to_owned(),
            os_hash_value: "cf83".to_owned(),
            min_disk: 1,
            min_ram: 64,
            tags: vec!["b".to_owned(), "a".to_owned()],
            properties: BTreeMap::from([("os_distro".to_owned(), "cirros".to_owned())]),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            task_id: Some("t".to_owned()),
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

    #[test]
    fn test_decode_image_round_trip_equal() {
        let bytes = encode(&image()).unwrap();
        assert!(matches!(decode::<ImageRecord>(ID, &bytes), Ok(i) if i == image()));
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

    #[test]
    fn test_decode_future_marker_decoding_error() {
        let mut bytes = encode(&image()).unwrap();
        if let Some(marker) = bytes.first_mut() {
            *marker = 2;
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
