//! Streaming conversion, vmdk to raw (not implemented yet: refused as unsupported).

use crate::convert::{ConvertError, ConvertLimits, FormatConverter};
use crate::ReasonCode;

/// The vmdk to raw converter.
///
/// # Errors
/// Always [`ReasonCode::UnsupportedFormat`] until the converter lands.
pub(crate) fn converter(_limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Err(ConvertError::image(
        ReasonCode::UnsupportedFormat,
        "conversion vmdk to raw is not implemented yet",
    ))
}
