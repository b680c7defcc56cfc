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
//!
//! # Indexes
//!
//! Secondary index entries live under `x/`, one [`Index`] tag byte each, then a partition
//! (the indexed text: an owner, a visibility, or nothing) with its length in front, then a
//! *position*: a timestamp as 8 order-preserving big-endian bytes followed by the record id.
//!
//! | index                      | tag | partition  | position          | value            |
//! |----------------------------|-----|------------|-------------------|------------------|
//! | tasks by owner             | `o` | owner      | created_at, id    | the task summary |
//! | every task                 | `c` | (empty)    | created_at, id    | the task summary |
//! | tasks by expiry            | `e` | (empty)    | expires_at, id    | (empty)          |
//! | unfinished tasks           | `u` | (empty)    | created_at, id    | (empty)          |
//! | tasks by image             | `i` | image id   | created_at, id    | (empty)          |
//! | leased `processing` tasks  | `l` | (empty)    | lease end, id     | (empty)          |
//! | images by owner            | `O` | owner      | created_at, id    | (empty)          |
//! | images by visibility       | `V` | visibility | created_at, id    | (empty)          |
//! | every image                | `C` | (empty)    | created_at, id    | (empty)          |
//!
//! So one partition, iterated forwards or backwards, is in (created_at, id) order, ascending
//! or descending: the default order of both lists. The length prefix (4 bytes, big-endian)
//! keeps one partition from being a prefix of another (`ab` and `abc`), whatever bytes an
//! owner holds. [`SCHEMA_KEY`] holds [`INDEX_VERSION`]; a store without it (written before
//! the indexes existed) rebuilds them on open.

/// Prefix of task records.
pub const TASK_PREFIX: &[u8] = b"t/";
/// Prefix of image records.
pub const IMAGE_PREFIX: &[u8] = b"i/";

/// Prefix of every secondary index entry.
pub const INDEX_PREFIX: &[u8] = b"x/";
/// The key holding the version of the index layout (one byte).
pub const SCHEMA_KEY: &[u8] = b"m/index-version";
/// The index layout this build writes: bump it when an index's keys or values change, so
/// that stores written before rebuild their indexes on open (3: the lease index).
pub const INDEX_VERSION: u8 = 3;

/// Length of a position's timestamp part.
const TIMESTAMP_LEN: usize = 8;
/// Length of a partition's length prefix.
const PARTITION_LEN_LEN: usize = 4;

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

/// A secondary index (see the module docs for the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    /// Tasks of one owner by creation; values are task summaries.
    TasksByOwner,
    /// Every task by creation; values are task summaries.
    TasksByCreation,
    /// Tasks with an `expires_at`, by it.
    TasksByExpiry,
    /// Tasks `pending` or `processing`, by creation.
    TasksUnfinished,
    /// `processing` tasks holding a lease, by the lease's end.
    TasksByLease,
    /// Tasks of one image (`api_image_import`'s `input.image_id`, or the image an `import`
    /// task made), by creation.
    TasksByImage,
    /// Images of one owner by creation.
    ImagesByOwner,
    /// Images of one visibility by creation.
    ImagesByVisibility,
    /// Every image by creation.
    ImagesByCreation,
}

impl Index {
    /// The tag byte after [`INDEX_PREFIX`].
    fn tag(self) -> u8 {
        match self {
            Index::TasksByOwner => b'o',
            Index::TasksByCreation => b'c',
            Index::TasksByExpiry => b'e',
            Index::TasksUnfinished => b'u',
            Index::TasksByImage => b'i',
            Index::TasksByLease => b'l',
            Index::ImagesByOwner => b'O',
            Index::ImagesByVisibility => b'V',
            Index::ImagesByCreation => b'C',
        }
    }

    /// The common prefix of every key of `partition` (`""` for unpartitioned indexes).
    pub fn partition_prefix(self, partition: &str) -> Vec<u8> {
        // An owner is at most a header's length; longer text cannot reach the store.
        let len = u32::try_from(partition.len()).unwrap_or(u32::MAX);
        let mut key = Vec::with_capacity(
            INDEX_PREFIX
                .len()
                .saturating_add(1 + PARTITION_LEN_LEN)
                .saturating_add(partition.len()),
        );
        key.extend_from_slice(INDEX_PREFIX);
        key.push(self.tag());
        key.extend_from_slice(&len.to_be_bytes());
        key.extend_from_slice(partition.as_bytes());
        key
    }

    /// The key of the entry of record `id` at time `at` in `partition`.
    pub fn key(self, partition: &str, at: i64, id: &str) -> Vec<u8> {
        let mut key = self.partition_prefix(partition);
        key.extend_from_slice(&position(at, id));
        key
    }

    /// The keys of `partition` as `[start, end)`, narrowed to positions strictly after
    /// `after` when iterating forwards, or strictly before `before` backwards.
    pub fn range(
        self,
        partition: &str,
        after: Option<&[u8]>,
        before: Option<&[u8]>,
    ) -> (Vec<u8>, Vec<u8>) {
        let prefix = self.partition_prefix(partition);
        let start = match after {
            // The smallest key greater than prefix + after.
            Some(pos) => [prefix.as_slice(), pos, &[0]].concat(),
            None => prefix.clone(),
        };
        let end = match before {
            Some(pos) => [prefix.as_slice(), pos].concat(),
            None => prefix_end(&prefix),
        };
        (start, end)
    }

    /// The position (timestamp bytes and id) of a key of this index in `partition`.
    pub fn position_of<'k>(self, partition: &str, key: &'k [u8]) -> Option<&'k [u8]> {
        key.strip_prefix(self.partition_prefix(partition).as_slice())
    }
}

/// The every-key-after bound of a prefix: the prefix with trailing 0xFF bytes dropped and the
/// last byte incremented. Every prefix here starts with a table or index prefix, which has no
/// 0xFF byte, so the result is never empty.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xFF) {
        end.pop();
    }
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

/// A position: `at` as order-preserving big-endian bytes (sign bit flipped), then `id`.
pub fn position(at: i64, id: &str) -> Vec<u8> {
    let mut pos = Vec::with_capacity(TIMESTAMP_LEN.saturating_add(id.len()));
    pos.extend_from_slice(&(u64::from_be_bytes(at.to_be_bytes()) ^ (1 << 63)).to_be_bytes());
    pos.extend_from_slice(id.as_bytes());
    pos
}

/// The timestamp and id bytes of a position.
pub fn split_position(pos: &[u8]) -> Option<(i64, &[u8])> {
    let (at, id) = pos.split_at_checked(TIMESTAMP_LEN)?;
    let at = u64::from_be_bytes(at.try_into().ok()?) ^ (1 << 63);
    Some((i64::from_be_bytes(at.to_be_bytes()), id))
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

    #[test]
    fn test_position_order_equals_time_then_id_order() {
        let mut items = [
            (i64::MIN, "b"),
            (-1, "a"),
            (0, "a"),
            (0, "ab"),
            (0, "b"),
            (1_700_000_000, "0"),
            (i64::MAX, ""),
        ];
        let mut positions: Vec<Vec<u8>> = items.iter().map(|(at, id)| position(*at, id)).collect();
        positions.sort_unstable();
        items.sort_unstable();
        let back: Vec<(i64, &[u8])> = positions.iter().filter_map(|p| split_position(p)).collect();
        let want: Vec<(i64, &[u8])> = items.iter().map(|(at, id)| (*at, id.as_bytes())).collect();
        assert!(back == want);
    }

    #[test]
    fn test_index_partitions_never_overlap() {
        let ab = Index::TasksByOwner.key("ab", 5, ID);
        let abc = Index::TasksByOwner.key("abc", 5, ID);
        let (start, end) = Index::TasksByOwner.range("ab", None, None);
        assert!(start <= ab && ab < end);
        assert!(!(start <= abc && abc < end));
        let image = Index::ImagesByOwner.key("ab", 5, ID);
        assert!(!(start <= image && image < end));
        assert!(!ab.starts_with(Table::Tasks.prefix()) && !ab.starts_with(Table::Images.prefix()));
    }

    #[test]
    fn test_index_range_after_and_before_exclude_the_marker() {
        let keys: Vec<Vec<u8>> = (0..4)
            .map(|n| Index::ImagesByVisibility.key("public", n, ID))
            .collect();
        let marker = position(1, ID);
        let (start, end) = Index::ImagesByVisibility.range("public", Some(&marker), None);
        let after: Vec<usize> = (0..4)
            .filter(|&n| start <= keys[n] && keys[n] < end)
            .collect();
        assert_eq!(after, [2, 3]);
        let (start, end) = Index::ImagesByVisibility.range("public", None, Some(&marker));
        let before: Vec<usize> = (0..4)
            .filter(|&n| start <= keys[n] && keys[n] < end)
            .collect();
        assert_eq!(before, [0]);
        assert!(matches!(
            Index::ImagesByVisibility.position_of("public", &keys[1]),
            Some(p) if p == marker.as_slice()
        ));
    }

    #[test]
    fn test_prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(b"x/a\xff\xff"), b"x/b".to_vec());
        assert_eq!(prefix_end(b"t/"), b"t0".to_vec());
    }
}
