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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
            max_tracked_tables: 1 << 20,
            verify_compressed_clusters: true,
        }
    }
}
