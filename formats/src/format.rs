//! The formats Sluice recognises.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A disk-image, partition-table, filesystem or wrapper format that the inspector can recognise.
///
/// The string forms (`as_str`) are Glance's `disk_format` names where Glance has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// bzip2 stream (`BZh`).
    Bzip2,
    /// A GUID partition table behind a protective MBR (qemu-img calls this `raw`).
    Gpt,
    /// gzip stream.
    Gzip,
    /// ISO 9660 or UDF filesystem image (qemu-img calls this `raw`).
    Iso,
    /// LUKS encrypted volume.
    Luks,
    /// A classic MBR partition table (qemu-img calls this `raw`).
    Mbr,
    /// Legacy QCOW version 1.
    Qcow,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
    /// QEMU enhanced disk.
    Qed,
    /// No recognised structure: the bytes are the disk.
    Raw,
    /// POSIX ustar archive (also OVA).
    Tar,
    /// VirtualBox disk image.
    Vdi,
    /// Virtual PC / Hyper-V VHD (qemu's `vpc`).
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// VMware VMDK (sparse extent or text descriptor).
    Vmdk,
    /// xz stream.
    Xz,
    /// zip archive.
    Zip,
    /// Zstandard frame.
    Zstd,
}

impl Format {
    /// Every format, in the order reports list them.
    pub const ALL: [Format; 18] = [
        Format::Raw,
        Format::Qcow2,
        Format::Qcow,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Iso,
        Format::Gpt,
        Format::Mbr,
        Format::Vdi,
        Format::Qed,
        Format::Luks,
        Format::Gzip,
        Format::Xz,
        Format::Zstd,
        Format::Bzip2,
        Format::Zip,
        Format::Tar,
    ];

    /// The lower-case name used in reports, the CLI and Glance's `disk_format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Bzip2 => "bzip2",
            Format::Gpt => "gpt",
            Format::Gzip => "gzip",
            Format::Iso => "iso",
            Format::Luks => "luks",
            Format::Mbr => "mbr",
            Format::Qcow => "qcow",
            Format::Qcow2 => "qcow2",
            Format::Qed => "qed",
            Format::Raw => "raw",
            Format::Tar => "tar",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Xz => "xz",
            Format::Zip => "zip",
            Format::Zstd => "zstd",
        }
    }

    /// The name `qemu-img info` reports for an image of this format.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Gpt | Format::Mbr | Format::Iso | Format::Raw => "raw",
            Format::Vhd => "vpc",
            other => other.as_str(),
        }
    }

    /// Whether this is a partition table, which lives inside a raw disk (declared `raw` covers it).
    pub fn is_partition_table(self) -> bool {
        matches!(self, Format::Gpt | Format::Mbr)
    }

    /// Whether this is a compression or archive wrapper rather than a disk image.
    pub fn is_wrapper(self) -> bool {
        matches!(
            self,
            Format::Bzip2 | Format::Gzip | Format::Tar | Format::Xz | Format::Zip | Format::Zstd
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a format name Sluice does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown disk format '{0}'")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Parses a format name; accepts qemu's `vpc` for VHD.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if lower == "vpc" {
            return Ok(Format::Vhd);
        }
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == lower)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
        assert_eq!("VPC".parse::<Format>(), Ok(Format::Vhd));
        assert!("ploop".parse::<Format>().is_err());
    }
}
