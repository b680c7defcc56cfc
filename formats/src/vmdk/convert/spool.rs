//! monolithicSparse with its grain directory in a footer (`GD_AT_END`), through the plain
//! vmdk converter: the directory that places the grains arrives last, so every input byte is
//! spooled to the caller's spill area at its input offset (a bounded scratch copy, never a
//! second read of the source), and at the end of the input the footer converter
//! ([`super::footer`]) is built from the spooled head and tail and fed the spool from the
//! start: this layout costs a second read of a local copy.
//!
//! Memory: the header sector; at the end the tail window (at most
//! `ConvertLimits::vmdk_max_footer_window` bytes) while the footer is checked, then one
//! [`SPOOL_READ_LEN`] buffer plus the footer converter's bound (16 bytes per grain).
//! Spill: the whole input, at most `max_spill_bytes` (checked before each write).

use super::super::footer::window_need;
use super::super::header::VmdkHeader;
use crate::stream::{u64_of, usize_of};
use crate::support::converter::{ConvertError, ConvertLimits};
use crate::support::sink::ConvertSink;
use crate::ReasonCode;

/// Bytes of the spool read back per step of the second pass: large enough that the reads
/// stream, small enough to be a fixed cost.
const SPOOL_READ_LEN: usize = 1 << 20;

/// Spools a footer VMDK and converts it from the spool at the end.
#[derive(Debug)]
pub(super) struct VmdkFooterSpool {
    /// The header sector (already parsed and checked by the caller).
    head: Vec<u8>,
    /// Input bytes spooled so far (the header first).
    spooled: u64,
    limits: ConvertLimits,
}

impl VmdkFooterSpool {
    /// A spool for the input whose header sector is `head`.
    pub(super) fn new(head: &[u8], limits: &ConvertLimits) -> Self {
        VmdkFooterSpool {
            head: head.to_vec(),
            spooled: 0,
            limits: limits.clone(),
        }
    }

    /// Spools `data` at `pos` (bytes before what is spooled already are skipped).
    pub(super) fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        self.spool_head(sink)?;
        let skip = usize_of(self.spooled.saturating_sub(pos));
        if let Some(rest) = data.get(skip..).filter(|rest| !rest.is_empty()) {
            self.spool(pos.max(self.spooled), rest, sink)?;
        }
        Ok(())
    }

    /// Spools the header sector first (it was captured before this spool existed).
    fn spool_head(&mut self, sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        if self.spooled > 0 {
            return Ok(());
        }
        let head = std::mem::take(&mut self.head);
        let spooled = self.spool(0, &head, sink);
        self.head = head;
        spooled
    }

    fn spool(
        &mut self,
        at: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        let end = at
            .checked_add(u64_of(data.len()))
            .filter(|end| *end <= self.limits.max_spill_bytes)
            .ok_or_else(|| {
                ConvertError::image(
                    ReasonCode::LimitExceeded,
                    format!(
                        "a VMDK with its grain directory in a footer is converted from a copy \
                         of the whole input, which passes the spill limit of {} bytes \
                         (max_spill_bytes)",
                        self.limits.max_spill_bytes
                    ),
                )
            })?;
        sink.spill_write(at, data)?;
        self.spooled = end;
        Ok(())
    }

    /// The input ended after `len` bytes: builds the footer converter from the spooled tail
    /// and feeds it the spool from the start.
    pub(super) fn finish(
        &mut self,
        len: u64,
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        self.spool_head(sink)?;
        let len = len.min(self.spooled);
        // The window the header needs (the footer converter refuses one above the limit).
        let need = VmdkHeader::parse(&self.head).map_or(0, |h| window_need(&h));
        let tail_len = len.min(need.min(self.limits.vmdk_max_footer_window));
        let mut tail = vec![0u8; usize_of(tail_len)];
        sink.spill_read(len.saturating_sub(tail_len), &mut tail)?;
        let mut inner = super::footer::converter(&self.head, &tail, len, &self.limits)?;
        drop(tail);
        let mut buf = vec![0u8; SPOOL_READ_LEN.min(usize_of(len))];
        let mut pos = 0u64;
        while pos < len {
            let n = usize_of(len.saturating_sub(pos)).min(buf.len());
            let piece = buf.get_mut(..n).unwrap_or_default();
            sink.spill_read(pos, piece)?;
            inner.feed(pos, piece, sink)?;
            pos = pos.saturating_add(u64_of(n));
        }
        inner.finish(len, sink)?;
        Ok(())
    }
}
