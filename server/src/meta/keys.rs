//! Every key of the metadata store, built in one place (the shape of tikv's `keys` module).
//!
//! A key is a two-byte table prefix followed by the record's id as its UTF-8 bytes:
//!
//! | table  | prefix | key                  |
//! |--------|--------|----------------------|
//! | tasks  | `t/`   | `t/<task uuid>`      |
//! | images | `i/`   | `i/<image uuid>`     |
//!
//! Ids are kept as their text bytes rather than packed to 16 binary bytes: the trait takes
//! any `&str` (a lookup of a malformed id must simply miss), and for lower-case hyphenated
//! UUIDs byte order equals string order, so a prefix scan returns records ordered by id.
//! A later secondary index (e.g. by owner) gets its own prefix here.

/// Prefix of task records.
pub const TASK_PREFIX: &[u8] = b"t/";
/// Prefix of image records.
pub const IMAGE_PREFIX: &[u8] = b"i/";

/// One table of the store: the set of keys that share a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Task records.
    Tasks,
    /// Image records.
    Images,
}

impl Table {
    /// The key prefix of the table.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Table::Tasks => TASK_PREFIX,
            Table::Images => IMAGE_PREFIX,
        }
    }

    /// The key of the record with `id`.
    pub fn key(self, id: &str) -> Vec<u8> {
        let prefix = self.prefix();
        let mut key = Vec::with_capacity(prefix.len().saturating_add(id.len()));
        key.extend_from_slice(prefix);
        key.extend_from_slice(id.as_bytes());
        key
    }

    /// The smallest key of the table (inclusive start of a scan): the bare prefix.
    pub fn min_key(self) -> Vec<u8> {
        self.prefix().to_vec()
    }

    /// The first key after the table (exclusive end of a scan): the prefix with its last byte
    /// incremented. Every prefix ends in `/` (0x2F), so the increment never overflows.
    pub fn max_key(self) -> Vec<u8> {
        let mut key = self.prefix().to_vec();
        if let Some(last) = key.last_mut() {
            *last = last.saturating_add(1);
        }
        key
    }

    /// The id bytes of `key` if it belongs to this table.
    pub fn id_of(self, key: &[u8]) -> Option<&[u8]> {
        key.strip_prefix(self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b9e8f4a-3c1d-4e5f-8a7b-6c5d4e3f2a1b";

    #[test]
    fn test_key_task_id_prefixed() {
        let key = Table::Tasks.key(ID);
        assert!(key.starts_with(b"t/"));
        assert!(matches!(key.get(2..), Some(rest) if rest == ID.as_bytes()));
    }

    #[test]
    fn test_key_image_id_prefixed() {
        let key = Table::Images.key(ID);
        assert!(matches!(key.strip_prefix(b"i/"), Some(rest) if rest == ID.as_bytes()));
    }

    #[test]
    fn test_key_tables_distinct_prefixes() {
        assert!(Table::Tasks.key(ID) != Table::Images.key(ID));
        assert!(!Table::Tasks.prefix().starts_with(Table::Images.prefix()));
        assert!(!Table::Images.prefix().starts_with(Table::Tasks.prefix()));
    }

    #[test]
    fn test_range_keys_bracket_every_key_of_table() {
        for table in [Table::Tasks, Table::Images] {
            let (min, max) = (table.min_key(), table.max_key());
            for id in [
                "",
                "0",
                ID,
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "\u{10FFFF}",
            ] {
                let key = table.key(id);
                assert!(min <= key && key < max, "{table:?} {id:?}");
            }
        }
    }

    #[test]
    fn test_range_keys_exclude_other_table() {
        let image = Table::Images.key(ID);
        assert!(!(Table::Tasks.min_key() <= image && image < Table::Tasks.max_key()));
        let task = Table::Tasks.key(ID);
        assert!(!(Table::Images.min_key() <= task && task < Table::Images.max_key()));
    }

    #[test]
    fn test_max_key_prefix_last_byte_incremented() {
        assert!(matches!(Table::Tasks.max_key().as_slice(), b"t0"));
        assert!(matches!(Table::Images.max_key().as_slice(), b"i0"));
    }

    #[test]
    fn test_key_order_equals_id_order() {
        let mut ids = [ID, "00000000-0000-0000-0000-000000000000", "f", "a-b", "a"];
        let mut keys: Vec<Vec<u8>> = ids.iter().map(|id| Table::Tasks.key(id)).collect();
        ids.sort_unstable();
        keys.sort_unstable();
        let back: Vec<&[u8]> = keys.iter().filter_map(|k| Table::Tasks.id_of(k)).collect();
        let want: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
        assert!(back == want);
    }

    #[test]
    fn test_id_of_foreign_key_none() {
        assert!(Table::Tasks.id_of(&Table::Images.key(ID)).is_none());
        assert!(
            matches!(Table::Images.id_of(&Table::Images.key(ID)), Some(id) if id == ID.as_bytes())
        );
    }
}
