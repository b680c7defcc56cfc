//! The contract between the [`Converter`](crate::Converter) and one input format's converter,
//! its limits and its errors.

use std::fmt;

use super::sink::{ConvertSink, SinkError};
use crate::ReasonCode;

/// Limits on what one conversion may hold in memory or spill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertLimits {
    /// Largest spill area in bytes (default 1 GiB); exceeding it fails the conversion with
    /// [`ReasonCode::LimitExceeded`], never exhausts disk.
    pub max_spill_bytes: u64,
    /// Most clusters/grains/blocks whose placement a converter remembers at once (mapping
    /// entries, 16 bytes each; default 4 Mi → 64 MiB worst case).
    pub max_tracked_entries: usize,
    /// Largest virtual size (the inspector's cap).
    pub max_virtual_size: u64,
    /// Largest end-of-stream window of a footer VMDK (the inspector's
    /// `Limits::vmdk_max_footer_window`).
    pub vmdk_max_footer_window: u64,
}

impl Default for ConvertLimits {
    fn default() -> Self {
        ConvertLimits {
            max_spill_bytes: 1 << 30,
            max_tracked_entries: 4 << 20,
            max_virtual_size: crate::DEFAULT_MAX_VIRTUAL_SIZE,
            vmdk_max_footer_window: crate::VMDK_MAX_FOOTER_WINDOW,
        }
    }
}

/// A conversion failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The image is broken in a way only conversion finds (a cluster pointing into metadata
    /// or past EOF, undecodable compressed data), or exceeds a limit: `code` is `corrupt`,
    /// `truncated`, `limit_exceeded`, `unsupported_format`, ...
    #[error("{message}")]
    Image {
        /// Stable reason code (the task's `reason`).
        code: ReasonCode,
        /// What is wrong, naming offsets.
        message: String,
    },
    /// The sink failed.
    #[error("writing the converted image: {0}")]
    Sink(#[from] SinkError),
}

impl ConvertError {
    /// An image error with `code`.
    pub fn image(code: ReasonCode, message: impl Into<String>) -> Self {
        ConvertError::Image {
            code,
            message: message.into(),
        }
    }
}

/// A `corrupt` image error.
pub(crate) fn corrupt(message: String) -> ConvertError {
    ConvertError::image(ReasonCode::Corrupt, message)
}

/// A `truncated` image error.
pub(crate) fn truncated(message: String) -> ConvertError {
    ConvertError::image(ReasonCode::Truncated, message)
}

/// One input format's converter. Fed contiguous pieces of the input (`pos` is the input
/// offset of `data`); the same chunking invariant as probes: output must not depend on how
/// the input was split.
pub(crate) trait FormatConverter: fmt::Debug + Send {
    /// Consumes input bytes at `pos`, emitting output writes and spills.
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError>;

    /// Input ended after `len` bytes: place what is left, check completeness, and return the
    /// output's length (the raw image's virtual size, or the qcow2 file's size).
    fn finish(&mut self, len: u64, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError>;
}
