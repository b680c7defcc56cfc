//! Named bounds on what a qcow2 header may make the probe believe or walk. Most are QEMU's own
//! limits (`block/qcow2.h`): an image beyond them does not open in QEMU, so refusing it costs
//! nothing and keeps the probe's work bounded independently of the file size.

/// Highest version read as a future qcow2 (`unknown_feature`) rather than garbage after the
/// magic (`corrupt`): QEMU has used versions 1 to 3 in twenty years, so a version above 15 is
/// not a format QEMU will write but bytes that merely start with `QFI\xfb`.
pub(crate) const QCOW2_MAX_PLAUSIBLE_VERSION: u32 = 15;

/// Smallest cluster: 512 bytes (QEMU's `MIN_CLUSTER_BITS`).
pub(crate) const QCOW2_MIN_CLUSTER_BITS: u32 = 9;

/// Largest cluster: 2 MiB (QEMU's `MAX_CLUSTER_BITS`).
pub(crate) const QCOW2_MAX_CLUSTER_BITS: u32 = 21;

/// Extended L2 entries split a cluster into 32 subclusters of at least 512 bytes, so QEMU
/// requires 16 KiB clusters or larger with them.
pub(crate) const QCOW2_MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;

/// Refcounts are at most 64 bits wide (`refcount_order` ≤ 6, QEMU and the spec).
pub(crate) const QCOW2_MAX_REFCOUNT_ORDER: u32 = 6;

/// Largest active or snapshot L1 table: 32 MiB (QEMU's `QCOW_MAX_L1_SIZE`), i.e. 4 Mi entries.
pub(crate) const QCOW2_MAX_L1_BYTES: u64 = 32 << 20;

/// Largest refcount table: 8 MiB (QEMU's `QCOW_MAX_REFTABLE_SIZE`).
pub(crate) const QCOW2_MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;

/// Most internal snapshots (QEMU's `QCOW_MAX_SNAPSHOTS`).
pub(crate) const QCOW2_MAX_SNAPSHOTS: u32 = 65_536;

/// Largest snapshot table: 64 MiB (QEMU's `QCOW_MAX_SNAPSHOTS_SIZE`, 1 KiB per snapshot).
pub(crate) const QCOW2_MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;

/// Largest extra data of one snapshot table entry: 1 KiB (QEMU's
/// `QCOW_MAX_SNAPSHOT_EXTRA_DATA`).
pub(crate) const QCOW2_MAX_SNAPSHOT_EXTRA_DATA: u32 = 1024;

/// Longest backing file name: 1023 bytes (the spec; QEMU refuses longer names).
pub(crate) const QCOW2_MAX_BACKING_FILE_NAME: u32 = 1023;

/// At most this many bytes of a name-carrying header extension (external data file, backing
/// format) are kept for the rejection message; the rest is skipped, not stored.
pub(crate) const QCOW2_MAX_EXTENSION_NAME: usize = 1023;

/// Bytes captured for the header: the version 3 header up to and including
/// `compression_type` and its padding (the QEMU `QCowHeader` struct). Version 2 uses the first
/// 72 of them, QCOW v1 the first 48; extensions are walked as they stream past, not captured.
pub(crate) const QCOW2_HEADER_CAPTURE: usize = 112;
