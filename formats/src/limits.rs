//! Explicit limits on what an image may make the inspector hold or believe.

/// One tebibyte: the default cap on an image's virtual size.
pub const DEFAULT_MAX_VIRTUAL_SIZE: u64 = 1 << 40;

/// Limits applied while inspecting one stream.
///
/// Every allocation driven by a header value is compared with one of these first; exceeding
/// one rejects the image with [`ReasonCode::LimitExceeded`](crate::ReasonCode::LimitExceeded)
/// (or `SizeCap` for the virtual size), never a large allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest acceptable virtual size in bytes (policy; default 1 TiB).
    pub max_virtual_size: u64,
    /// Most metadata tables (qcow2 L2 tables, VMDK grain tables) whose positions the inspector
    /// remembers so it can check them as they stream past. Each costs 8 bytes. Default 1 Mi
    /// (8 MiB), enough for a 1 TiB qcow2 with 4 KiB clusters or any VMDK up to 32 TiB.
    pub max_tracked_tables: usize,
    /// Whether compressed qcow2 clusters are inflated during inspection, each of which must
    /// give exactly one cluster (default on; the CPU it costs is measured in README). Off,
    /// only conversion finds undecodable clusters.
    pub verify_compressed_clusters: bool,
    /// Most compressed qcow2 clusters named ahead of the stream that the compressed-cluster
    /// check remembers (about 32 bytes each; default [`QCOW2_MAX_PENDING_COMPRESSED`]); more is
    /// `limit_exceeded` (config key `limits.qcow2_max_pending_compressed`).
    pub qcow2_max_pending_compressed: usize,
    /// Most host clusters of a qcow2 file whose metadata/data use is tracked to find data
    /// placed inside metadata (2 bits each; default [`QCOW2_MAX_BITMAP_CLUSTERS`]); clusters
    /// beyond are not checked (config key `limits.qcow2_max_bitmap_clusters`).
    pub qcow2_max_bitmap_clusters: u64,
    /// Largest end-of-stream window held for a VMDK whose grain directory is in a footer
    /// (default [`VMDK_MAX_FOOTER_WINDOW`]); more is `limit_exceeded` (config key
    /// `limits.vmdk_max_footer_window`).
    pub vmdk_max_footer_window: u64,
}

/// Most compressed qcow2 extents remembered ahead of the stream: 256 Ki (a B-tree entry of
/// about 32 bytes each: ≤ 8 MiB). QEMU writes each L2 table before its data, so it has at most one table's entries
/// ahead (32 Ki with 2 MiB clusters).
pub const QCOW2_MAX_PENDING_COMPRESSED: usize = 256 << 10;

/// Most host clusters tracked by the qcow2 cluster bitmaps: 64 Mi (two 8 MiB bitmaps), the
/// clusters of a 4 TiB file with 64 KiB clusters: a hostile reference costs at most 16 MiB.
pub const QCOW2_MAX_BITMAP_CLUSTERS: u64 = 1 << 26;

/// Largest end-of-stream window held for a footer VMDK: 16 MiB, the directory and tables of
/// a 256 GiB disk with VMware's 64 KiB grains (4 bytes per grain).
pub const VMDK_MAX_FOOTER_WINDOW: u64 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
            max_tracked_tables: 1 << 20,
            verify_compressed_clusters: true,
            qcow2_max_pending_compressed: QCOW2_MAX_PENDING_COMPRESSED,
            qcow2_max_bitmap_clusters: QCOW2_MAX_BITMAP_CLUSTERS,
            vmdk_max_footer_window: VMDK_MAX_FOOTER_WINDOW,
        }
    }
}
