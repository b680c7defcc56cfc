//! The fixed qcow2 header (cluster 0, big-endian) and its checks, and the legacy QCOW v1
//! header. Field offsets follow `docs/interop/qcow2.rst` in QEMU.

use crate::stream::{be_u32, be_u64};

use super::limits::{
    QCOW2_MAX_CLUSTER_BITS, QCOW2_MAX_L1_BYTES, QCOW2_MAX_PLAUSIBLE_VERSION,
    QCOW2_MAX_REFCOUNT_ORDER, QCOW2_MAX_REFCOUNT_TABLE_BYTES, QCOW2_MAX_SNAPSHOTS,
    QCOW2_MIN_CLUSTER_BITS, QCOW2_MIN_EXTENDED_L2_CLUSTER_BITS,
};

/// `QFI\xfb`, shared by QCOW v1 and qcow2.
pub(crate) const QCOW_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Byte offsets of the header fields.
pub(crate) mod off {
    /// u32 version.
    pub(crate) const VERSION: usize = 4;
    /// u64 offset of the backing file name (0: none).
    pub(crate) const BACKING_FILE_OFFSET: usize = 8;
    /// u32 length of the backing file name.
    pub(crate) const BACKING_FILE_SIZE: usize = 16;
    /// u32 log2 of the cluster size.
    pub(crate) const CLUSTER_BITS: usize = 20;
    /// u64 virtual size in bytes.
    pub(crate) const SIZE: usize = 24;
    /// u32 encryption method.
    pub(crate) const CRYPT_METHOD: usize = 32;
    /// u32 entries in the active L1 table.
    pub(crate) const L1_SIZE: usize = 36;
    /// u64 offset of the active L1 table.
    pub(crate) const L1_TABLE_OFFSET: usize = 40;
    /// u64 offset of the refcount table.
    pub(crate) const REFCOUNT_TABLE_OFFSET: usize = 48;
    /// u32 clusters of the refcount table.
    pub(crate) const REFCOUNT_TABLE_CLUSTERS: usize = 56;
    /// u32 number of internal snapshots.
    pub(crate) const NB_SNAPSHOTS: usize = 60;
    /// u64 offset of the snapshot table.
    pub(crate) const SNAPSHOTS_OFFSET: usize = 64;
    /// u64 incompatible feature bits (v3).
    pub(crate) const INCOMPATIBLE_FEATURES: usize = 72;
    /// u64 compatible feature bits (v3).
    pub(crate) const COMPATIBLE_FEATURES: usize = 80;
    /// u64 autoclear feature bits (v3).
    pub(crate) const AUTOCLEAR_FEATURES: usize = 88;
    /// u32 log2 of the refcount width in bits (v3).
    pub(crate) const REFCOUNT_ORDER: usize = 96;
    /// u32 header length (v3).
    pub(crate) const HEADER_LENGTH: usize = 100;
    /// u8 compression type (v3, present when `header_length` > 104).
    pub(crate) const COMPRESSION_TYPE: usize = 104;

    /// QCOW v1: u64 virtual size in bytes (after the u32 mtime at 20).
    pub(crate) const V1_SIZE: usize = 24;
}

/// Length of the version 2 header; extensions start here.
pub(crate) const QCOW2_V2_HEADER_LEN: u32 = 72;

/// Smallest version 3 header (up to and including `header_length`).
pub(crate) const QCOW2_V3_MIN_HEADER_LEN: u32 = 104;

/// Length of the QCOW v1 header.
pub(crate) const QCOW_V1_HEADER_LEN: usize = 48;

/// Incompatible feature bits (v3).
pub(crate) mod incompat {
    /// Refcounts may be stale (lazy refcounts); data is intact.
    pub(crate) const DIRTY: u64 = 1 << 0;
    /// QEMU found the metadata inconsistent and marked the image.
    pub(crate) const CORRUPT: u64 = 1 << 1;
    /// Guest data lives in an external data file.
    pub(crate) const DATA_FILE: u64 = 1 << 2;
    /// `compression_type` is not deflate.
    pub(crate) const COMPRESSION_TYPE: u64 = 1 << 3;
    /// 128-bit L2 entries with subcluster bitmaps.
    pub(crate) const EXTENDED_L2: u64 = 1 << 4;
    /// Every bit this probe understands.
    pub(crate) const KNOWN: u64 = DIRTY | CORRUPT | DATA_FILE | COMPRESSION_TYPE | EXTENDED_L2;
}

/// Autoclear bit 1: the external data file is a valid raw image on its own.
pub(crate) const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// `compression_type` values.
pub(crate) const COMPRESSION_DEFLATE: u8 = 0;
/// Zstandard compression (needs incompatible bit 3).
pub(crate) const COMPRESSION_ZSTD: u8 = 1;

/// The decoded fixed header of a version 2 or 3 image; version 2 images get the version 3
/// fields' implied values (no features, 16-bit refcounts, 72-byte header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Qcow2Header {
    /// 2 or 3.
    pub(crate) version: u32,
    /// Where the backing file name lives (0: no backing file).
    pub(crate) backing_file_offset: u64,
    /// Backing file name length.
    pub(crate) backing_file_size: u32,
    /// log2 of the cluster size.
    pub(crate) cluster_bits: u32,
    /// Virtual size in bytes, as stored.
    pub(crate) size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub(crate) crypt_method: u32,
    /// Active L1 table entries.
    pub(crate) l1_size: u32,
    /// Active L1 table offset.
    pub(crate) l1_table_offset: u64,
    /// Refcount table offset.
    pub(crate) refcount_table_offset: u64,
    /// Refcount table length in clusters.
    pub(crate) refcount_table_clusters: u32,
    /// Internal snapshots.
    pub(crate) nb_snapshots: u32,
    /// Snapshot table offset.
    pub(crate) snapshots_offset: u64,
    /// Incompatible feature bits.
    pub(crate) incompatible_features: u64,
    /// Compatible feature bits.
    pub(crate) compatible_features: u64,
    /// Autoclear feature bits.
    pub(crate) autoclear_features: u64,
    /// log2 of the refcount width in bits.
    pub(crate) refcount_order: u32,
    /// Header length; extensions follow it.
    pub(crate) header_length: u32,
    /// 0 deflate, 1 zstd.
    pub(crate) compression_type: u8,
}

impl Qcow2Header {
    /// Decodes a version 2 or 3 header from the captured bytes; `None` when too short for its
    /// version (a v2 header needs 72 bytes, v3 104, or 105 with a compression type).
    pub(crate) fn parse(b: &[u8]) -> Option<Self> {
        let version = be_u32(b, off::VERSION)?;
        let mut h = Qcow2Header {
            version,
            backing_file_offset: be_u64(b, off::BACKING_FILE_OFFSET)?,
            backing_file_size: be_u32(b, off::BACKING_FILE_SIZE)?,
            cluster_bits: be_u32(b, off::CLUSTER_BITS)?,
            size: be_u64(b, off::SIZE)?,
            crypt_method: be_u32(b, off::CRYPT_METHOD)?,
            l1_size: be_u32(b, off::L1_SIZE)?,
            l1_table_offset: be_u64(b, off::L1_TABLE_OFFSET)?,
            refcount_table_offset: be_u64(b, off::REFCOUNT_TABLE_OFFSET)?,
            refcount_table_clusters: be_u32(b, off::REFCOUNT_TABLE_CLUSTERS)?,
            nb_snapshots: be_u32(b, off::NB_SNAPSHOTS)?,
            snapshots_offset: be_u64(b, off::SNAPSHOTS_OFFSET)?,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: QCOW2_V2_HEADER_LEN,
            compression_type: COMPRESSION_DEFLATE,
        };
        if version >= 3 {
            h.incompatible_features = be_u64(b, off::INCOMPATIBLE_FEATURES)?;
            h.compatible_features = be_u64(b, off::COMPATIBLE_FEATURES)?;
            h.autoclear_features = be_u64(b, off::AUTOCLEAR_FEATURES)?;
            h.refcount_order = be_u32(b, off::REFCOUNT_ORDER)?;
            h.header_length = be_u32(b, off::HEADER_LENGTH)?;
            // The field exists only in headers longer than its offset; shorter ones imply
            // deflate (QEMU reads it the same way).
            if u64::from(h.header_length) > off::COMPRESSION_TYPE as u64 {
                h.compression_type = *b.get(off::COMPRESSION_TYPE)?;
            }
        }
        Some(h)
    }

    /// Whether extended (128-bit) L2 entries are in use.
    pub(crate) fn extended_l2(&self) -> bool {
        self.incompatible_features & incompat::EXTENDED_L2 != 0
    }

    /// Whether the image stores its data in an external file (incompatible bit 2 or the
    /// raw-external autoclear bit).
    pub(crate) fn data_file_flagged(&self) -> bool {
        self.incompatible_features & incompat::DATA_FILE != 0
            || self.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0
    }

    /// The guest-visible size as `qemu-img info` reports it: QEMU keeps whole 512-byte sectors
    /// (`total_sectors = size / 512`), so a stored size of 1000 shows as 512.
    pub(crate) fn virtual_size(&self) -> u64 {
        self.size & !511
    }
}

/// What captured header bytes hold, decided once for the inspector and the converter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Qcow2Kind {
    /// No QCOW magic.
    NotQcow,
    /// Legacy QCOW version 1 (refused by both; the inspector reads its size).
    V1,
    /// A qcow2 v2 or v3 header, parsed (its fields still need [`check`]).
    Qcow2(Box<Qcow2Header>),
}

/// Classifies the captured header `b` (all of [`QCOW2_HEADER_CAPTURE`] bytes, or fewer at end
/// of stream): the magic, the version, and whether the header is whole.
///
/// # Errors
/// A cut-short header (`truncated`, placed at end of stream), version 0 (`corrupt`), a
/// version above 3 (`unknown_feature`).
///
/// [`QCOW2_HEADER_CAPTURE`]: super::limits::QCOW2_HEADER_CAPTURE
pub(crate) fn classify(b: &[u8]) -> Result<Qcow2Kind, HeaderProblem> {
    use crate::ReasonCode as R;
    if !b.starts_with(&QCOW_MAGIC) {
        return Ok(Qcow2Kind::NotQcow);
    }
    let short = || HeaderProblem {
        code: R::Truncated,
        at: u64::MAX,
        message: format!(
            "qcow2 header is cut short: the stream ends after {} bytes",
            b.len()
        ),
    };
    match be_u32(b, off::VERSION).ok_or_else(short)? {
        1 => Ok(Qcow2Kind::V1),
        2 | 3 => Qcow2Header::parse(b)
            .map(|h| Qcow2Kind::Qcow2(Box::new(h)))
            .ok_or_else(short),
        0 => Err(problem(
            R::Corrupt,
            off::VERSION,
            "qcow2 header has version 0".to_owned(),
        )),
        v if v <= QCOW2_MAX_PLAUSIBLE_VERSION => Err(problem(
            R::UnknownFeature,
            off::VERSION,
            format!("qcow2 version {v} is newer than the versions 2 and 3 Sluice understands"),
        )),
        v => Err(problem(
            R::Corrupt,
            off::VERSION,
            format!(
                "qcow2 version {v} is no qcow2 version: the bytes after the magic are not a header"
            ),
        )),
    }
}

/// A header problem, with the reason code it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderProblem {
    /// Which stable code.
    pub(crate) code: crate::ReasonCode,
    /// Header offset of the field at fault (orders findings deterministically).
    pub(crate) at: u64,
    /// The message.
    pub(crate) message: String,
}

fn problem(code: crate::ReasonCode, at: usize, message: String) -> HeaderProblem {
    HeaderProblem {
        code,
        at: at as u64,
        message,
    }
}

/// Sizes derived from a header whose cluster size and table geometry are sound, so its
/// tables can be walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Qcow2Layout {
    /// log2 of the cluster size (9..=21).
    pub(crate) cluster_bits: u32,
    /// Cluster size in bytes.
    pub(crate) cluster_size: u64,
    /// Whether L2 entries are 128-bit.
    pub(crate) extended_l2: bool,
    /// Entries per L2 table.
    pub(crate) l2_entries: u64,
}

impl Qcow2Layout {
    /// Whether `offset` is a multiple of the cluster size.
    pub(crate) fn aligned(&self, offset: u64) -> bool {
        offset & self.cluster_size.saturating_sub(1) == 0
    }
}

/// Checks every header field; returns the problems found and, when the cluster size is
/// sound, the layout needed to walk the tables (tables whose own fields are bad are dropped
/// by the caller using [`TableChecks`]).
pub(crate) fn check(h: &Qcow2Header) -> (Vec<HeaderProblem>, Option<Qcow2Layout>, TableChecks) {
    use crate::ReasonCode as R;
    let mut p = Vec::new();
    let mut tables = TableChecks::default();

    if !(QCOW2_MIN_CLUSTER_BITS..=QCOW2_MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
        p.push(problem(
            R::Corrupt,
            off::CLUSTER_BITS,
            format!(
                "qcow2 cluster_bits {} is outside {QCOW2_MIN_CLUSTER_BITS}..={QCOW2_MAX_CLUSTER_BITS} \
                 (QEMU supports 512-byte to 2 MiB clusters)",
                h.cluster_bits
            ),
        ));
    }
    let incompat_bits = h.incompatible_features;
    let unknown = incompat_bits & !incompat::KNOWN;
    if unknown != 0 {
        p.push(problem(
            R::UnknownFeature,
            off::INCOMPATIBLE_FEATURES,
            format!("qcow2 image uses unknown incompatible feature bits {unknown:#x}"),
        ));
    }
    if incompat_bits & incompat::CORRUPT != 0 {
        p.push(problem(
            R::Corrupt,
            off::INCOMPATIBLE_FEATURES,
            "qcow2 image is marked corrupt by QEMU (incompatible feature bit 1)".to_owned(),
        ));
    }
    match h.crypt_method {
        0 => {}
        1 => p.push(problem(
            R::Encrypted,
            off::CRYPT_METHOD,
            "qcow2 image is encrypted (legacy AES, crypt_method 1)".to_owned(),
        )),
        2 => p.push(problem(
            R::Encrypted,
            off::CRYPT_METHOD,
            "qcow2 image is encrypted (LUKS, crypt_method 2)".to_owned(),
        )),
        m => p.push(problem(
            R::Encrypted,
            off::CRYPT_METHOD,
            format!("qcow2 image declares unknown encryption method {m}"),
        )),
    }
    if h.version >= 3 {
        if h.header_length < QCOW2_V3_MIN_HEADER_LEN || h.header_length % 8 != 0 {
            p.push(problem(
                R::Corrupt,
                off::HEADER_LENGTH,
                format!(
                    "qcow2 v3 header_length {} is not a multiple of 8 of at least {QCOW2_V3_MIN_HEADER_LEN}",
                    h.header_length
                ),
            ));
        } else if h.cluster_bits <= QCOW2_MAX_CLUSTER_BITS
            && u64::from(h.header_length) > 1u64 << h.cluster_bits
        {
            p.push(problem(
                R::Corrupt,
                off::HEADER_LENGTH,
                format!(
                    "qcow2 header_length {} exceeds the {}-byte cluster",
                    h.header_length,
                    1u64 << h.cluster_bits
                ),
            ));
        }
        if h.refcount_order > QCOW2_MAX_REFCOUNT_ORDER {
            p.push(problem(
                R::Corrupt,
                off::REFCOUNT_ORDER,
                format!(
                    "qcow2 refcount_order {} is above {QCOW2_MAX_REFCOUNT_ORDER} (64-bit refcounts)",
                    h.refcount_order
                ),
            ));
        }
        let bit3 = incompat_bits & incompat::COMPRESSION_TYPE != 0;
        match h.compression_type {
            COMPRESSION_DEFLATE if bit3 => p.push(problem(
                R::Corrupt,
                off::COMPRESSION_TYPE,
                "qcow2 compression type bit is set but the compression type is deflate".to_owned(),
            )),
            COMPRESSION_ZSTD if !bit3 => p.push(problem(
                R::Corrupt,
                off::COMPRESSION_TYPE,
                "qcow2 compression type is zstd but incompatible feature bit 3 is clear".to_owned(),
            )),
            COMPRESSION_DEFLATE | COMPRESSION_ZSTD => {}
            t => p.push(problem(
                R::UnknownFeature,
                off::COMPRESSION_TYPE,
                format!("qcow2 compression type {t} is unknown (0 deflate, 1 zstd)"),
            )),
        }
        if h.extended_l2() && h.cluster_bits < QCOW2_MIN_EXTENDED_L2_CLUSTER_BITS {
            p.push(problem(
                R::Corrupt,
                off::CLUSTER_BITS,
                format!(
                    "qcow2 extended L2 entries need clusters of at least 16 KiB, not 2^{}",
                    h.cluster_bits
                ),
            ));
        }
    }
    if h.size > i64::MAX as u64 {
        p.push(problem(
            R::Corrupt,
            off::SIZE,
            format!("qcow2 virtual size {} is above 2^63 - 1", h.size),
        ));
    }

    // Everything below needs a sound cluster size.
    if !(QCOW2_MIN_CLUSTER_BITS..=QCOW2_MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
        return (p, None, tables);
    }
    let cluster_size = 1u64 << h.cluster_bits;
    let entry_bits = if h.extended_l2() { 4 } else { 3 };
    let l2_entries = cluster_size >> entry_bits;
    let layout = Qcow2Layout {
        cluster_bits: h.cluster_bits,
        cluster_size,
        extended_l2: h.extended_l2(),
        l2_entries,
    };

    // Active L1 table: big enough for the virtual size, within QEMU's limit, placed sanely.
    let l1_bytes = u64::from(h.l1_size).saturating_mul(8);
    let bytes_per_l1_entry = cluster_size.saturating_mul(l2_entries);
    let needed = h
        .size
        .checked_div(bytes_per_l1_entry)
        .unwrap_or(u64::MAX)
        .saturating_add(u64::from(
            h.size.checked_rem(bytes_per_l1_entry).unwrap_or(0) != 0,
        ));
    if l1_bytes > QCOW2_MAX_L1_BYTES && needed.saturating_mul(8) <= QCOW2_MAX_L1_BYTES {
        // Over QEMU's limit, but not because the disk is big: the header contradicts itself.
        p.push(problem(
            R::Corrupt,
            off::L1_SIZE,
            format!(
                "qcow2 L1 table has {} entries, beyond QEMU's {QCOW2_MAX_L1_BYTES}-byte limit, \
                 but the virtual size {} needs only {needed}",
                h.l1_size, h.size
            ),
        ));
    } else if l1_bytes > QCOW2_MAX_L1_BYTES {
        p.push(problem(
            R::LimitExceeded,
            off::L1_SIZE,
            format!(
                "qcow2 L1 table of {} entries exceeds QEMU's {QCOW2_MAX_L1_BYTES}-byte limit",
                h.l1_size
            ),
        ));
    } else if needed > u64::from(h.l1_size) {
        p.push(problem(
            R::Corrupt,
            off::L1_SIZE,
            format!(
                "qcow2 L1 table has {} entries but the virtual size {} needs {needed}",
                h.l1_size, h.size
            ),
        ));
    } else if let Some(problem) = table_placement(
        &layout,
        "L1 table",
        off::L1_TABLE_OFFSET,
        h.l1_table_offset,
        l1_bytes,
    ) {
        p.push(problem);
    } else if h.l1_size > 0 {
        tables.l1 = Some((h.l1_table_offset, u64::from(h.l1_size)));
    }

    // Refcount table.
    let rt_bytes = u64::from(h.refcount_table_clusters).saturating_mul(cluster_size);
    if h.refcount_table_clusters == 0 {
        p.push(problem(
            R::Corrupt,
            off::REFCOUNT_TABLE_CLUSTERS,
            "qcow2 image has no refcount table (refcount_table_clusters is 0)".to_owned(),
        ));
    } else if rt_bytes > QCOW2_MAX_REFCOUNT_TABLE_BYTES {
        tables.over_limit.push(OverLimit {
            field: off::REFCOUNT_TABLE_CLUSTERS as u64,
            end: h.refcount_table_offset.saturating_add(rt_bytes),
            what: format!(
                "qcow2 refcount table of {} clusters at {:#x}",
                h.refcount_table_clusters, h.refcount_table_offset
            ),
            limit: format!("QEMU's {QCOW2_MAX_REFCOUNT_TABLE_BYTES}-byte limit"),
        });
    } else if let Some(problem) = table_placement(
        &layout,
        "refcount table",
        off::REFCOUNT_TABLE_OFFSET,
        h.refcount_table_offset,
        rt_bytes,
    ) {
        p.push(problem);
    } else {
        tables.refcount = Some((h.refcount_table_offset, rt_bytes / 8));
    }

    // Snapshot table: entries are variable-length, at least 40 bytes each.
    if h.nb_snapshots > QCOW2_MAX_SNAPSHOTS {
        tables.over_limit.push(OverLimit {
            field: off::NB_SNAPSHOTS as u64,
            end: h
                .snapshots_offset
                .saturating_add(u64::from(h.nb_snapshots).saturating_mul(40)),
            what: format!(
                "qcow2 table of {} snapshots at {:#x}",
                h.nb_snapshots, h.snapshots_offset
            ),
            limit: format!("QEMU's limit of {QCOW2_MAX_SNAPSHOTS} snapshots"),
        });
    } else if let Some(problem) = table_placement(
        &layout,
        "snapshot table",
        off::SNAPSHOTS_OFFSET,
        h.snapshots_offset,
        u64::from(h.nb_snapshots).saturating_mul(40),
    ) {
        p.push(problem);
    } else if h.nb_snapshots > 0 {
        tables.snapshots = Some((h.snapshots_offset, h.nb_snapshots));
    }

    (p, Some(layout), tables)
}

/// The tables whose header fields passed their checks: `(offset, entries)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableChecks {
    /// Tables above a QEMU limit whose verdict waits for the file's length: within the file
    /// the image is consistent but too big (`limit_exceeded`); past its end the header
    /// contradicts the file (`corrupt`).
    pub(crate) over_limit: Vec<OverLimit>,
    /// Active L1 table: offset and entries.
    pub(crate) l1: Option<(u64, u64)>,
    /// Refcount table: offset and entries.
    pub(crate) refcount: Option<(u64, u64)>,
    /// Snapshot table: offset and number of snapshots.
    pub(crate) snapshots: Option<(u64, u32)>,
}

/// A table above a limit, judged once the stream reaches its end or ends before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OverLimit {
    /// Header offset of the field at fault.
    pub(crate) field: u64,
    /// The byte after the table's last byte.
    pub(crate) end: u64,
    /// The table, for messages ("qcow2 refcount table of 4096 clusters at 0x1000").
    pub(crate) what: String,
    /// The limit it is above, for messages.
    pub(crate) limit: String,
}

/// A table must start on a cluster boundary, outside the header cluster when it is not
/// empty, and end below 2^63 (QEMU's `qcow2_validate_table`).
pub(crate) fn table_placement(
    layout: &Qcow2Layout,
    what: &str,
    field: usize,
    offset: u64,
    bytes: u64,
) -> Option<HeaderProblem> {
    use crate::ReasonCode as R;
    if !layout.aligned(offset) {
        return Some(problem(
            R::Corrupt,
            field,
            format!(
                "qcow2 {what} offset {offset:#x} is not aligned to the {}-byte cluster",
                layout.cluster_size
            ),
        ));
    }
    if bytes > 0 && offset < layout.cluster_size {
        return Some(problem(
            R::Corrupt,
            field,
            format!("qcow2 {what} offset {offset:#x} points into the header cluster"),
        ));
    }
    if offset
        .checked_add(bytes)
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Some(problem(
            R::Corrupt,
            field,
            format!("qcow2 {what} at {offset:#x} ends beyond the largest file offset"),
        ));
    }
    None
}

/// The legacy QCOW v1 header: only what a rejection message and the virtual size need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QcowV1Header {
    /// Virtual size in bytes, as stored (offset 24, after the u32 mtime).
    pub(crate) size: u64,
    /// Where the backing file name lives (0: none).
    pub(crate) backing_file_offset: u64,
}

impl QcowV1Header {
    /// Decodes the v1 fields; `None` when too short.
    pub(crate) fn parse(b: &[u8]) -> Option<Self> {
        Some(QcowV1Header {
            size: be_u64(b, off::V1_SIZE)?,
            backing_file_offset: be_u64(b, off::BACKING_FILE_OFFSET)?,
        })
    }
}
