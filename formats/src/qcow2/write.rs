//! Streaming conversion, raw to qcow2 (not implemented yet: refused as unsupported).

use crate::convert::{ConvertError, ConvertLimits, FormatConverter};
use crate::ReasonCode;

/// The raw to qcow2 converter.
///
/// # Errors
/// Always [`ReasonCode::UnsupportedFormat`] until the converter lands.
pub(crate) fn converter(_limits: &ConvertLimits) -> Result<Box<dyn FormatConverter>, ConvertError> {
    Err(ConvertError::image(
        ReasonCode::UnsupportedFormat,
        "conversion raw to qcow2 is not implemented yet",
    ))
}
