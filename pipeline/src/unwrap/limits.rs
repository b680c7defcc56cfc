//! The limits of one unwrapping: what a compressed stream or an OVA may make Sluice hold or
//! produce. Each has a named default with its reason; the service reads them from its
//! `[limits]` configuration, and each refusal names its key.

/// Decoder memory an xz or zstd stream may ask for (xz dictionary, zstd window): 128 MiB
/// covers every `xz` preset (`-9`: 64 MiB dictionary, 65 MiB to decode) and is zstd's own
/// default window limit (2^27, what `zstd -d` accepts without `--memory`); larger custom
/// settings are refused as `limit_exceeded` rather than allocated.
pub const MAX_DECODER_MEMORY: u64 = 128 << 20;

/// Largest OVF descriptor read: VMware's and VirtualBox's are 5–50 KiB; 1 MiB is ample and
/// bounds what is parsed in memory.
pub const MAX_DESCRIPTOR: u64 = 1 << 20;

/// Largest manifest read (one line per member, ~100 bytes each).
pub const MAX_MANIFEST: u64 = 64 << 10;

/// Largest pax extended header or GNU long name accepted: names are at most 4 KiB on Linux
/// (`PATH_MAX`); 64 KiB leaves room for other pax records without letting a header allocate
/// what its size field says.
pub const MAX_EXTENSION: u64 = 64 << 10;

/// Most tar members an OVA may hold: the DMTF layout has a descriptor, a manifest, a
/// certificate and the disks (VMware and VirtualBox write 3–5); 1,024 leaves room for any
/// appliance while bounding how long a stream of empty members keeps an import busy.
pub const MAX_OVA_MEMBERS: u64 = 1024;

/// The limits of one unwrapping (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwrapLimits {
    /// Most bytes the unwrapped stream may produce: the image size cap (`size_cap` beyond).
    pub max_output: u64,
    /// Decoder memory an xz or zstd stream may ask for ([`MAX_DECODER_MEMORY`];
    /// `limits.max_decoder_memory`).
    pub max_decoder_memory: u64,
    /// Largest OVF descriptor ([`MAX_DESCRIPTOR`]; `limits.ova_max_descriptor`).
    pub ova_max_descriptor: u64,
    /// Largest OVA manifest ([`MAX_MANIFEST`]; `limits.ova_max_manifest`).
    pub ova_max_manifest: u64,
    /// Largest tar extension header ([`MAX_EXTENSION`]; `limits.tar_max_extension`).
    pub tar_max_extension: u64,
    /// Most members of an OVA ([`MAX_OVA_MEMBERS`]; `limits.ova_max_members`).
    pub ova_max_members: u64,
}

impl UnwrapLimits {
    /// The default limits with output capped at `max_output` bytes.
    pub fn capped(max_output: u64) -> Self {
        UnwrapLimits {
            max_output,
            max_decoder_memory: MAX_DECODER_MEMORY,
            ova_max_descriptor: MAX_DESCRIPTOR,
            ova_max_manifest: MAX_MANIFEST,
            tar_max_extension: MAX_EXTENSION,
            ova_max_members: MAX_OVA_MEMBERS,
        }
    }

    /// The zstd window log allowed by `max_decoder_memory` (`log2`, within zstd's range).
    pub(crate) fn zstd_window_log_max(&self) -> u32 {
        let log = 63u32.saturating_sub(self.max_decoder_memory.max(1).leading_zeros());
        log.clamp(10, 31)
    }
}
