//! What the inspector concludes: the detected format, the virtual size and a verdict with reasons.

use std::fmt;

use serde::Serialize;

use crate::Format;

/// A stable, machine-readable reason for rejecting an image.
///
/// The `snake_case` names (`as_str`) are part of Sluice's API: tasks carry them in their
/// `reason` field and `sluice inspect --json` prints them. Messages are not stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The image references a backing file or parent (qcow2, differencing VHD/VHDX, VMDK delta).
    BackingFile,
    /// A compressed or archived wrapper (gzip, xz, zstd, bzip2, zip, tar).
    Compressed,
    /// Header fields out of range or metadata tables inconsistent.
    Corrupt,
    /// The image needs a replay or repair step before its data can be trusted (VHDX log).
    Dirty,
    /// qcow2 external data file.
    DataFile,
    /// Less than one 512-byte sector of data.
    Empty,
    /// Encrypted content (qcow2 encryption, LUKS).
    Encrypted,
    /// A VMDK extent that is not the file itself (host paths, FLAT/VMFS extents).
    ExternalExtent,
    /// The detected format differs from the declared one.
    FormatMismatch,
    /// Image metadata larger than an inspector limit allows.
    LimitExceeded,
    /// Content valid as two formats at once (polyglot).
    MultipleFormats,
    /// The virtual size is above the configured cap.
    SizeCap,
    /// The file ends before data or metadata it references.
    Truncated,
    /// qcow2 incompatible feature bits that Sluice does not understand.
    UnknownFeature,
    /// A recognised format that Sluice does not ingest (QCOW v1, QED, VDI).
    UnsupportedFormat,
    /// A VMDK createType other than monolithicSparse or streamOptimized.
    UnsupportedSubformat,
}

impl ReasonCode {
    /// The stable `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::BackingFile => "backing_file",
            ReasonCode::Compressed => "compressed",
            ReasonCode::Corrupt => "corrupt",
            ReasonCode::DataFile => "data_file",
            ReasonCode::Dirty => "dirty",
            ReasonCode::Empty => "empty",
            ReasonCode::Encrypted => "encrypted",
            ReasonCode::ExternalExtent => "external_extent",
            ReasonCode::FormatMismatch => "format_mismatch",
            ReasonCode::LimitExceeded => "limit_exceeded",
            ReasonCode::MultipleFormats => "multiple_formats",
            ReasonCode::SizeCap => "size_cap",
            ReasonCode::Truncated => "truncated",
            ReasonCode::UnknownFeature => "unknown_feature",
            ReasonCode::UnsupportedFormat => "unsupported_format",
            ReasonCode::UnsupportedSubformat => "unsupported_subformat",
        }
    }
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
