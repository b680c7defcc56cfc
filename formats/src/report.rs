//! What the inspector concludes: the detected format, the virtual size and a verdict with reasons.

use std::fmt;

use serde::Serialize;

use crate::Format;

/// Defines [`ReasonCode`] from one table: variant, stable name, meaning. The variants' docs,
/// [`ReasonCode::as_str`], [`ReasonCode::meaning`] and [`ReasonCode::ALL`] all come from it,
/// and README's reason-code table is checked against it (`UPDATE=1` regenerates it).
macro_rules! reason_codes {
    ($($variant:ident => $name:literal, $meaning:literal;)*) => {
        /// A stable, machine-readable reason for rejecting an image.
        ///
        /// The `snake_case` names (`as_str`) are part of Sluice's API: tasks carry them in
        /// their `reason` field and `sluice inspect --json` prints them. Messages are not
        /// stable.
        ///
        /// One rule decides between two codes: header values inconsistent with each other or
        /// with the file are [`ReasonCode::Corrupt`]; consistent values above a configured
        /// limit are [`ReasonCode::LimitExceeded`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ReasonCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ReasonCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The stable `snake_case` name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ReasonCode::$variant => $name,)*
                }
            }

            /// What the code means (README's reason-code table).
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(ReasonCode::$variant => $meaning,)*
                }
            }
        }
    };
}

// Variant order is the enum's order (`Ord`: findings at one offset are listed by it).
reason_codes! {
    BackingFile => "backing_file",
        "qcow2 backing file, differencing VHD, VHDX with a parent, VMDK delta (parentCID)";
    Compressed => "compressed", "a compression or archive wrapper (gzip, xz, zstd, bzip2, zip, tar)";
    Corrupt => "corrupt",
        "header values inconsistent with each other or with the file: fields out of range, \
         tables unaligned, overlapping or outside the file, data placed inside metadata, bad \
         checksums, compressed data that does not inflate, bad VMDK marker or footer chain, a \
         format's magic followed by garbage";
    Dirty => "dirty", "VHDX log that must be replayed first";
    DataFile => "data_file",
        "qcow2 external data file (incompatible bit 2, raw-external bit or the extension)";
    Empty => "empty", "less than one 512-byte sector";
    Encrypted => "encrypted", "qcow2 encryption, LUKS";
    ExternalExtent => "external_extent",
        "a VMDK extent other than the file itself: FLAT/VMFS/ZERO extents, paths, several \
         extents (CVE-2022-47951)";
    FormatMismatch => "format_mismatch",
        "detected ≠ declared; declared `raw` covers gpt/mbr disks, and safety checks still run \
         on a \"raw\" that is something else (CVE-2024-40767)";
    LimitExceeded => "limit_exceeded",
        "consistent metadata larger than a configured or QEMU limit (L1 ≤ 32 MiB, refcount \
         table ≤ 8 MiB, 65,536 snapshots, spill area, …)";
    MultipleFormats => "multiple_formats",
        "valid as two formats at once (e.g. ISO with a qcow2 header in its system area); \
         ISO+GPT/MBR hybrids and fixed VHDs holding a partitioned disk are fine";
    SizeCap => "size_cap", "virtual size above the cap (default 1 TiB)";
    Truncated => "truncated", "the stream ends before data or metadata it references";
    UnknownFeature => "unknown_feature",
        "qcow2 incompatible feature bits or versions Sluice does not understand";
    UnsupportedFormat => "unsupported_format",
        "recognised but not ingested: QCOW v1, QED, VDI, VMDK3 (COWD) whose header is consistent";
    UnsupportedSubformat => "unsupported_subformat",
        "VMDK createType missing or not monolithicSparse/streamOptimized";
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason for a rejection: a stable code and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The stable code.
    pub code: ReasonCode,
    /// A human-readable explanation, e.g. "qcow2 image references backing file '/etc/passwd'".
    pub message: String,
}

impl Reason {
    /// Builds a reason.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Reason {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Whether the image may be ingested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Safe to ingest as the detected format.
    Accept,
    /// Must not be ingested; see the reasons.
    Reject,
}

/// The inspector's conclusion about one stream.
///
/// A report is a pure function of the bytes and the configuration: feeding the same bytes in
/// different chunkings gives an identical report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The detected format (the declared one when it matched; `raw` when nothing matched).
    pub format: Format,
    /// Every format whose structure matched, in `Format::ALL` order (two or more: a polyglot).
    pub formats: Vec<Format>,
    /// The declared format the stream was checked against, if any.
    pub declared: Option<Format>,
    /// The guest-visible disk size in bytes, when known.
    pub virtual_size: Option<u64>,
    /// Accept or reject.
    pub verdict: Verdict,
    /// Why the image is rejected (empty when accepted).
    pub reasons: Vec<Reason>,
    /// How many bytes had been inspected when the verdict was reached.
    pub bytes_inspected: u64,
    /// Whether the verdict was reached at end of stream (`false`: rejected early).
    pub complete: bool,
}

impl Report {
    /// Whether the image was accepted.
    pub fn is_accepted(&self) -> bool {
        self.verdict == Verdict::Accept
    }

    /// Whether any reason carries `code`.
    pub fn has_reason(&self, code: ReasonCode) -> bool {
        self.reasons.iter().any(|r| r.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's reason-code table, generated from [`ReasonCode::ALL`].
    fn readme_table() -> String {
        let mut t = String::from("| code | meaning |\n|---|---|\n");
        for code in ReasonCode::ALL {
            t.push_str(&format!("| `{}` | {} |\n", code.as_str(), code.meaning()));
        }
        t
    }

    #[test]
    fn test_reason_code_names_match_serde() {
        for code in ReasonCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    /// The README's table is this crate's table; `UPDATE=1` rewrites it.
    #[test]
    fn test_reason_code_readme_table_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme
            .find("| code | meaning |")
            .expect("README has the reason-code table");
        let len = readme[start..]
            .find("\n\n")
            .expect("the table ends with a blank line")
            + 1;
        let table = readme_table();
        if std::env::var_os("UPDATE").is_some() {
            let updated = format!("{}{}{}", &readme[..start], table, &readme[start + len..]);
            std::fs::write(path, updated).unwrap();
            return;
        }
        assert_eq!(
            &readme[start..start + len],
            table,
            "README's reason-code table differs from ReasonCode (UPDATE=1 regenerates it)"
        );
    }
}
