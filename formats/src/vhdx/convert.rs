//! Streaming conversion, vhdx to raw (not implemented yet: refused as unsupported).

use crate::convert::{ConvertError, ConvertLimits, FormatConverter};
use crate::ReasonCode;

/// The vhdx to raw converter.
///
/// # Errors
/// Always [`ReasonCode::UnsupportedFormat`] until the converter lands.
pub(crate) fn converter(_limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Err(ConvertError::image(
        ReasonCode::UnsupportedFormat,
        "conversion vhdx to raw is not implemented yet",
    ))
}
