//! monolithicSparse with its grain directory in a footer, to raw: the caller gives the
//! footer's end of the file up front (a second read of the stored input, or a bounded
//! scratch copy), the converter checks it as the inspector does and then places every grain
//! as the stream passes it, in one forward pass with nothing spilled.
//!
//! Memory: 16 bytes per allocated grain (at most `max_tracked_entries`). Spill: none.

use super::super::footer::footer_grains;
use crate::stream::{intersect, u64_of};
use crate::support::converter::{ConvertError, ConvertLimits, FormatConverter};
use crate::support::placer::write_nonzero;
use crate::support::sink::ConvertSink;

/// Converts a footer VMDK whose grains are known up front (see the module documentation).
#[derive(Debug)]
pub(crate) struct VmdkFooterConverter {
    /// `(host offset, guest offset)`, by host offset.
    grains: Vec<(u64, u64)>,
    /// Grains before this one are placed whole.
    next: usize,
    grain_len: u64,
    virtual_size: u64,
}

/// The converter for the input whose first sector is `head`, last bytes `tail`, length
/// `len`.
///
/// # Errors
/// The footer, directory, tables or grains fail the inspector's checks, or there are more
/// grains than `max_tracked_entries`.
pub(crate) fn converter(
    head: &[u8],
    tail: &[u8],
    len: u64,
    limits: &ConvertLimits,
) -> Result<Box<dyn FormatConverter>, ConvertError> {
    let (h, grains) = footer_grains(
        head,
        tail,
        len,
        limits.max_tracked_entries,
        limits.vmdk_max_footer_window,
    )
    .map_err(|(code, message)| ConvertError::image(code, message))?;
    let virtual_size = h
        .virtual_size()
        .filter(|v| *v <= limits.max_virtual_size)
        .ok_or_else(|| {
            ConvertError::image(
                crate::ReasonCode::LimitExceeded,
                format!(
                    "VMDK virtual size exceeds the limit of {} bytes",
                    limits.max_virtual_size
                ),
            )
        })?;
    Ok(Box::new(VmdkFooterConverter {
        grains,
        next: 0,
        grain_len: h.grain_size.saturating_mul(512),
        virtual_size,
    }))
}

impl FormatConverter for VmdkFooterConverter {
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let data_end = pos.saturating_add(u64_of(data.len()));
        let mut whole = true;
        for (k, &(host, guest)) in self.grains.iter().enumerate().skip(self.next) {
            if host >= data_end {
                break;
            }
            let end = host.saturating_add(self.grain_len);
            if let Some((rel, part)) = intersect(pos, data, host, end) {
                let out = guest.saturating_add(rel);
                let room =
                    usize::try_from(self.virtual_size.saturating_sub(out)).unwrap_or(usize::MAX);
                write_nonzero(sink, out, part.get(..room.min(part.len())).unwrap_or(part))?;
            }
            if whole && end <= data_end {
                self.next = k.saturating_add(1);
            } else {
                whole = false;
            }
        }
        Ok(())
    }

    fn finish(&mut self, _len: u64, _sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        Ok(self.virtual_size)
    }
}
