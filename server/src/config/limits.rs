//! `[limits]`: the limits of the image parsers and of unwrapping that an operator may tune.
//! Each key's default is the named constant that gives its reason (`sluice_formats::limits`,
//! `sluice_pipeline::unwrap`); each refusal message names its key (`limits.KEY`).
//! Defaults < TOML < environment and flags ([`LimitsArgs`], flattened into `sluice serve`).

use serde::Deserialize;
use sluice_formats::{
    ConvertLimits, Limits, QCOW2_MAX_BITMAP_CLUSTERS, QCOW2_MAX_PENDING_COMPRESSED,
    VMDK_MAX_FOOTER_WINDOW,
};
use sluice_pipeline::unwrap::{
    UnwrapLimits, MAX_DECODER_MEMORY, MAX_DESCRIPTOR, MAX_EXTENSION, MAX_MANIFEST, MAX_OVA_MEMBERS,
};

/// The `[limits]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest end-of-stream window held for a VMDK whose grain directory is in a footer,
    /// in bytes ([`VMDK_MAX_FOOTER_WINDOW`]).
    pub vmdk_max_footer_window: u64,
    /// Most compressed qcow2 clusters remembered ahead of the stream by the inspection's
    /// compressed-cluster check ([`QCOW2_MAX_PENDING_COMPRESSED`]).
    pub qcow2_max_pending_compressed: usize,
    /// Most host clusters of a qcow2 file tracked to find data placed inside metadata
    /// ([`QCOW2_MAX_BITMAP_CLUSTERS`]).
    pub qcow2_max_bitmap_clusters: u64,
    /// Whether compressed qcow2 clusters are inflated during inspection (default on).
    pub verify_compressed_clusters: bool,
    /// Decoder memory an xz or zstd stream may ask for, in bytes ([`MAX_DECODER_MEMORY`]).
    pub max_decoder_memory: u64,
    /// Largest OVF descriptor, in bytes ([`MAX_DESCRIPTOR`]).
    pub ova_max_descriptor: u64,
    /// Largest OVA manifest, in bytes ([`MAX_MANIFEST`]).
    pub ova_max_manifest: u64,
    /// Most members of an OVA ([`MAX_OVA_MEMBERS`]).
    pub ova_max_members: u64,
    /// Largest tar extension header (pax, GNU long name), in bytes ([`MAX_EXTENSION`]).
    pub tar_max_extension: u64,
    /// Largest spill area of one conversion on import, in bytes (`ConvertLimits`' default,
    /// 1 GiB): data placed late, and the whole input of a footer VMDK.
    pub max_spill_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            vmdk_max_footer_window: VMDK_MAX_FOOTER_WINDOW,
            qcow2_max_pending_compressed: QCOW2_MAX_PENDING_COMPRESSED,
            qcow2_max_bitmap_clusters: QCOW2_MAX_BITMAP_CLUSTERS,
            verify_compressed_clusters: true,
            max_decoder_memory: MAX_DECODER_MEMORY,
            ova_max_descriptor: MAX_DESCRIPTOR,
            ova_max_manifest: MAX_MANIFEST,
            ova_max_members: MAX_OVA_MEMBERS,
            tar_max_extension: MAX_EXTENSION,
            max_spill_bytes: ConvertLimits::default().max_spill_bytes,
        }
    }
}

impl LimitsConfig {
    /// The inspector's limits, with the virtual size capped at `max_virtual_size`.
    pub fn format_limits(&self, max_virtual_size: u64) -> Limits {
        Limits {
            max_virtual_size,
            verify_compressed_clusters: self.verify_compressed_clusters,
            qcow2_max_pending_compressed: self.qcow2_max_pending_compressed,
            qcow2_max_bitmap_clusters: self.qcow2_max_bitmap_clusters,
            vmdk_max_footer_window: self.vmdk_max_footer_window,
            ..Limits::default()
        }
    }

    /// The unwrapping's limits, with output capped at `max_output` bytes.
    pub fn unwrap_limits(&self, max_output: u64) -> UnwrapLimits {
        UnwrapLimits {
            max_output,
            max_decoder_memory: self.max_decoder_memory,
            ova_max_descriptor: self.ova_max_descriptor,
            ova_max_manifest: self.ova_max_manifest,
            tar_max_extension: self.tar_max_extension,
            ova_max_members: self.ova_max_members,
        }
    }
}

/// The `[limits]` keys as `sluice serve` flags and `SLUICE_*` environment variables.
#[derive(Debug, Default, clap::Args)]
pub struct LimitsArgs {
    /// `limits.vmdk_max_footer_window` [default: 16 MiB].
    #[arg(long, env = "SLUICE_VMDK_MAX_FOOTER_WINDOW", value_name = "BYTES")]
    vmdk_max_footer_window: Option<u64>,
    /// `limits.qcow2_max_pending_compressed` [default: 262144].
    #[arg(long, env = "SLUICE_QCOW2_MAX_PENDING_COMPRESSED", value_name = "N")]
    qcow2_max_pending_compressed: Option<usize>,
    /// `limits.qcow2_max_bitmap_clusters` [default: 67108864].
    #[arg(long, env = "SLUICE_QCOW2_MAX_BITMAP_CLUSTERS", value_name = "N")]
    qcow2_max_bitmap_clusters: Option<u64>,
    /// `limits.verify_compressed_clusters` [default: true].
    #[arg(long, env = "SLUICE_VERIFY_COMPRESSED_CLUSTERS", value_name = "BOOL")]
    verify_compressed_clusters: Option<bool>,
    /// `limits.max_decoder_memory` [default: 128 MiB].
    #[arg(long, env = "SLUICE_MAX_DECODER_MEMORY", value_name = "BYTES")]
    max_decoder_memory: Option<u64>,
    /// `limits.ova_max_descriptor` [default: 1 MiB].
    #[arg(long, env = "SLUICE_OVA_MAX_DESCRIPTOR", value_name = "BYTES")]
    ova_max_descriptor: Option<u64>,
    /// `limits.ova_max_manifest` [default: 64 KiB].
    #[arg(long, env = "SLUICE_OVA_MAX_MANIFEST", value_name = "BYTES")]
    ova_max_manifest: Option<u64>,
    /// `limits.ova_max_members` [default: 1024].
    #[arg(long, env = "SLUICE_OVA_MAX_MEMBERS", value_name = "N")]
    ova_max_members: Option<u64>,
    /// `limits.tar_max_extension` [default: 64 KiB].
    #[arg(long, env = "SLUICE_TAR_MAX_EXTENSION", value_name = "BYTES")]
    tar_max_extension: Option<u64>,
    /// `limits.max_spill_bytes` [default: 1 GiB].
    #[arg(long, env = "SLUICE_MAX_SPILL_BYTES", value_name = "BYTES")]
    max_spill_bytes: Option<u64>,
}

impl LimitsArgs {
    /// Overlays the values given on `limits`.
    pub fn apply(self, limits: &mut LimitsConfig) {
        fn set<T>(given: Option<T>, key: &mut T) {
            if let Some(v) = given {
                *key = v;
            }
        }
        set(
            self.vmdk_max_footer_window,
            &mut limits.vmdk_max_footer_window,
        );
        set(
            self.qcow2_max_pending_compressed,
            &mut limits.qcow2_max_pending_compressed,
        );
        set(
            self.qcow2_max_bitmap_clusters,
            &mut limits.qcow2_max_bitmap_clusters,
        );
        set(
            self.verify_compressed_clusters,
            &mut limits.verify_compressed_clusters,
        );
        set(self.max_decoder_memory, &mut limits.max_decoder_memory);
        set(self.ova_max_descriptor, &mut limits.ova_max_descriptor);
        set(self.ova_max_manifest, &mut limits.ova_max_manifest);
        set(self.ova_max_members, &mut limits.ova_max_members);
        set(self.tar_max_extension, &mut limits.tar_max_extension);
        set(self.max_spill_bytes, &mut limits.max_spill_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_limits_config_defaults_are_the_named_constants() {
        let l = LimitsConfig::default();
        assert_eq!(
            l.format_limits(1 << 30),
            Limits {
                max_virtual_size: 1 << 30,
                ..Limits::default()
            }
        );
        assert_eq!(l.unwrap_limits(7), UnwrapLimits::capped(7));
    }

    #[test]
    fn test_limits_section_is_read_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "[limits]\nvmdk_max_footer_window = 4096\nverify_compressed_clusters = false\n\
             ova_max_members = 8\n",
        )
        .unwrap();
        let config = crate::config::Config::from_file(&path).unwrap();
        assert_eq!(config.limits.vmdk_max_footer_window, 4096);
        assert!(!config.limits.verify_compressed_clusters);
        assert_eq!(config.limits.ova_max_members, 8);
        assert_eq!(config.limits.max_decoder_memory, MAX_DECODER_MEMORY);
        std::fs::write(&path, "[limits]\nno_such_limit = 1\n").unwrap();
        assert!(crate::config::Config::from_file(&path).is_err());
    }

    #[test]
    fn test_limits_args_override_only_what_is_given() {
        let mut l = LimitsConfig {
            ova_max_manifest: 5,
            ..LimitsConfig::default()
        };
        LimitsArgs {
            max_decoder_memory: Some(1 << 20),
            verify_compressed_clusters: Some(false),
            ..LimitsArgs::default()
        }
        .apply(&mut l);
        assert_eq!(l.max_decoder_memory, 1 << 20);
        assert!(!l.verify_compressed_clusters);
        assert_eq!(l.ova_max_manifest, 5);
        assert_eq!(l.vmdk_max_footer_window, VMDK_MAX_FOOTER_WINDOW);
    }
}
