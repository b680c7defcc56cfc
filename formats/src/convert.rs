//! Sans-I/O streaming converters: fed the same chunks as the [`Inspector`](crate::Inspector),
//! they emit writes of the output image at output offsets, never holding the image.
//!
//! Data that arrives before the metadata that places it (a qcow2 L2 table after its data
//! clusters, all metadata at the end) is *spilled* to a bounded area the caller provides and
//! placed when the metadata arrives. Regions the converter never writes read as zeros: the
//! caller's output is a sparse file, so zero clusters stay holes.
//!
//! The caller (the pipeline, `sluice convert`, tests) implements [`ConvertSink`]; the
//! converters only decide what goes where.

pub use crate::support::converter::{ConvertError, ConvertLimits};
#[doc(hidden)]
pub use crate::support::sink::MemorySink;
pub use crate::support::sink::{ConvertSink, SinkError};

use crate::support::converter::FormatConverter;
use crate::{Format, ReasonCode};

/// How many bytes from the end of the input [`Converter::vmdk_footer`] needs with the default
/// limits: the largest end-of-stream window the inspector holds for that layout
/// ([`ConvertLimits::vmdk_max_footer_window`] otherwise).
pub const VMDK_FOOTER_TAIL_BYTES: u64 = crate::VMDK_MAX_FOOTER_WINDOW;

/// The output format of a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A raw disk image.
    Raw,
    /// qcow2 v3, 64 KiB clusters, zero clusters unallocated (input must be raw).
    Qcow2,
}

/// A streaming converter from `from` to `target`.
///
/// Run it *behind* an [`Inspector`](crate::Inspector) that checked the same bytes: the
/// converter trusts no header either, but safety verdicts (backing files, extents) are the
/// inspector's job.
#[derive(Debug)]
pub struct Converter {
    inner: Box<dyn FormatConverter>,
    pos: u64,
}

impl Converter {
    /// A converter for input in `from` producing `target`.
    ///
    /// # Errors
    /// [`ReasonCode::UnsupportedFormat`] for pairs Sluice does not convert.
    pub fn new(from: Format, target: Target, limits: &ConvertLimits) -> Result<Self, ConvertError> {
        let inner: Box<dyn FormatConverter> = match (from, target) {
            // Partition tables live inside a raw disk, and an ISO's bytes are its disc: the
            // bytes are the disk (ISO to raw is identity; ISO to qcow2 is not offered).
            (Format::Raw | Format::Gpt | Format::Mbr | Format::Iso, Target::Raw) => {
                Box::new(RawPassthrough)
            }
            (Format::Raw | Format::Gpt | Format::Mbr, Target::Qcow2) => {
                crate::qcow2::write::converter(limits)?
            }
            (Format::Qcow2, Target::Raw) => crate::qcow2::convert::converter(limits)?,
            (Format::Vmdk, Target::Raw) => crate::vmdk::convert::converter(limits)?,
            (Format::Vhd, Target::Raw) => crate::vhd::convert::converter(limits)?,
            (Format::Vhdx, Target::Raw) => crate::vhdx::convert::converter(limits)?,
            _ => {
                return Err(ConvertError::image(
                    ReasonCode::UnsupportedFormat,
                    format!("conversion from {from} to {target:?} is not supported"),
                ))
            }
        };
        Ok(Converter { inner, pos: 0 })
    }

    /// A converter to raw for a monolithicSparse VMDK whose grain directory is in a footer
    /// at the end (`GD_AT_END`): the directory must be known before the data, so the caller
    /// reads the input twice: `head` is its first 512 bytes, `tail` its last
    /// `min(len, VMDK_FOOTER_TAIL_BYTES)` bytes, `len` its length; then the whole input is
    /// fed from the start as usual.
    ///
    /// # Errors
    /// What the inspector refuses in this layout (`corrupt`, `truncated`,
    /// `limit_exceeded`), or input that is not this layout (`unsupported_subformat`).
    pub fn vmdk_footer(
        head: &[u8],
        tail: &[u8],
        len: u64,
        limits: &ConvertLimits,
    ) -> Result<Self, ConvertError> {
        let inner = crate::vmdk::convert::footer::converter(head, tail, len, limits)?;
        Ok(Converter { inner, pos: 0 })
    }

    /// Feeds the next input chunk.
    ///
    /// # Errors
    /// See [`ConvertError`]; after an error the converter must not be fed again.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut dyn ConvertSink) -> Result<(), ConvertError> {
        self.inner.feed(self.pos, chunk, sink)?;
        self.pos = self
            .pos
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// Ends the input; returns the output's length.
    ///
    /// # Errors
    /// See [`ConvertError`].
    pub fn finish(mut self, sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        self.inner.finish(self.pos, sink)
    }
}

/// Raw input to raw output: every byte in place.
#[derive(Debug)]
struct RawPassthrough;

impl FormatConverter for RawPassthrough {
    fn feed(
        &mut self,
        pos: u64,
        data: &[u8],
        sink: &mut dyn ConvertSink,
    ) -> Result<(), ConvertError> {
        if data.is_empty() {
            return Ok(());
        }
        sink.write_at(pos, data).map_err(ConvertError::Sink)
    }

    fn finish(&mut self, len: u64, _sink: &mut dyn ConvertSink) -> Result<u64, ConvertError> {
        Ok(len)
    }
}

/// Test helper: converts `bytes` from `from` to `target`, fed in `chunk`-byte pieces, into a
/// [`MemorySink`] of up to 64 MiB; returns the sink and the output length `finish` reported.
#[cfg(test)]
pub(crate) fn convert_chunked(
    from: Format,
    target: Target,
    bytes: &[u8],
    chunk: usize,
    limits: &ConvertLimits,
) -> Result<(MemorySink, u64), ConvertError> {
    let mut conv = Converter::new(from, target, limits)?;
    let mut sink = MemorySink::new(64 << 20);
    for piece in bytes.chunks(chunk.max(1)) {
        conv.feed(piece, &mut sink)?;
    }
    let len = conv.finish(&mut sink)?;
    Ok((sink, len))
}

/// Test helper: converts `bytes` from `from` to raw with `limits`, whole and in pieces of every
/// size in `sizes`, and asserts that every run gives the same result: the same output
/// (trailing holes as zeros), or the same image error (code and message). Returns that result.
#[cfg(test)]
pub(crate) fn assert_convert_chunking_invariant(
    from: Format,
    bytes: &[u8],
    limits: &ConvertLimits,
    sizes: impl IntoIterator<Item = usize>,
) -> Result<Vec<u8>, ConvertError> {
    let run = |chunk: usize| {
        convert_chunked(from, Target::Raw, bytes, chunk, limits).map(|(mut sink, len)| {
            sink.output
                .resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            sink.output
        })
    };
    let whole = run(bytes.len());
    for chunk in sizes {
        let split = run(chunk);
        assert!(
            split == whole,
            "{from} conversion depends on chunking ({limits:?}): whole {:?}, chunks of {chunk} \
             {:?}",
            whole.as_ref().map(Vec::len),
            split.as_ref().map(Vec::len),
        );
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_converter_raw_passthrough_places_every_byte() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut conv = Converter::new(Format::Raw, Target::Raw, &ConvertLimits::default()).unwrap();
        let mut sink = MemorySink::new(1 << 20);
        for chunk in data.chunks(777) {
            conv.feed(chunk, &mut sink).unwrap();
        }
        assert_eq!(conv.finish(&mut sink).unwrap(), 10_000);
        assert_eq!(sink.output, data);
    }

    #[test]
    fn test_converter_iso_to_raw_is_identity() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut conv = Converter::new(Format::Iso, Target::Raw, &ConvertLimits::default()).unwrap();
        let mut sink = MemorySink::new(1 << 20);
        for chunk in data.chunks(4096) {
            conv.feed(chunk, &mut sink).unwrap();
        }
        assert_eq!(conv.finish(&mut sink).unwrap(), 40_000);
        assert_eq!(sink.output, data);
    }

    #[test]
    fn test_converter_iso_to_qcow2_is_unsupported() {
        let err =
            Converter::new(Format::Iso, Target::Qcow2, &ConvertLimits::default()).unwrap_err();
        assert!(matches!(
            err,
            ConvertError::Image {
                code: ReasonCode::UnsupportedFormat,
                ..
            }
        ));
    }
}
