//! Compressed sources unwrapped in the stream: gzip, xz, zstd and bzip2, recognised by the
//! magic at the head of the stream and decompressed on a background thread
//! ([`Unwrapped`], in front of the ingest) or in the caller's thread ([`unwrap_reader`], the
//! CLI).
//!
//! ```text
//!   source ──Bytes──▶ Unwrapped ──[INPUT_CHANNEL_CAPACITY]──▶ sluice-unwrap thread
//!   (socket)            ▲                                     (crate decoder, pieces of
//!                       └─────────[OUTPUT_CHANNEL_CAPACITY]──── OUTPUT_CHUNK bytes)
//! ```
//!
//! What comes out is an image like any other: the ingest inspects, converts, hashes and
//! stores it, and its size cap and the project quota count the *decompressed* bytes. The
//! decoder stops by itself once its output passes the cap it is given, and otherwise runs at
//! most the output channel ahead of the ingest, so a bomb costs its cap, not the disk. A
//! wrapper found inside the decompressed stream is refused (`compressed`: nested wrappers);
//! one found inside a disk image stays the inspector's business (also `compressed`).
//!
//! # Crates
//! Measured on this machine (2 shared cores, load 9) decompressing a 256 MiB image (half
//! binaries, half zeros) from memory: gzip with flate2 on zlib-rs 227–246 MB/s vs 164–213
//! MB/s on its default miniz_oxide (so zlib-rs); xz with liblzma (the maintained successor of
//! xz2; xz2 is unmaintained) 30 MB/s (`xz -dc` took longer in the same run); zstd with the
//! `zstd` crate (libzstd, already used for qcow2 clusters) 851 MB/s; bzip2 with the `bzip2`
//! crate on its pure-Rust libbz2-rs-sys backend 7 MB/s (`bzip2 -dc`: 5 MB/s).
//!
//! # Memory
//! Input `(INPUT_CHANNEL_CAPACITY + 1) × source chunk`, output
//! `(OUTPUT_CHANNEL_CAPACITY + 1) × OUTPUT_CHUNK`, plus the decoder: gzip a 32 KiB window,
//! bzip2 at most 900 kB blocks (~3.6 MiB), xz and zstd at most [`MAX_DECODER_MEMORY`].

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use bytes::{Bytes, BytesMut};
use sluice_formats::ReasonCode;

mod blocking;
mod limits;
pub(crate) mod ova;
mod source;
mod tar;

pub use blocking::{looks_like_ova, with_unwrapped, Unwrapped as UnwrappedReader};
pub use limits::{
    UnwrapLimits, MAX_DECODER_MEMORY, MAX_DESCRIPTOR, MAX_EXTENSION, MAX_MANIFEST, MAX_OVA_MEMBERS,
};
pub use source::Unwrapped;

/// Bytes at the head of a stream that decide whether it is wrapped (bzip2 needs its `BZh`
/// level digit and the 6-byte block magic after it).
pub const MAGIC_LEN: usize = 10;

/// Largest piece of decompressed output handed on at once: the HTTP source's largest chunk
/// ([`HTTP_MAX_CHUNK`](crate::http::HTTP_MAX_CHUNK)), so the ingest's memory formula holds.
pub const OUTPUT_CHUNK: usize = 512 << 10;

/// Read-ahead of the CLI's compressed input (the service's input arrives in chunks).
const READER_BUFFER: usize = 1 << 20;

/// A compression wrapper Sluice unwraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wrapper {
    /// bzip2 (`BZh1`..`BZh9`, several streams as pbzip2 writes).
    Bzip2,
    /// gzip (RFC 1952, several members as pigz writes).
    Gzip,
    /// xz (several streams).
    Xz,
    /// Zstandard (several frames; skippable frames skipped).
    Zstd,
}

impl Wrapper {
    /// The name used in messages and task results: `bzip2`, `gzip`, `xz`, `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Wrapper::Bzip2 => "bzip2",
            Wrapper::Gzip => "gzip",
            Wrapper::Xz => "xz",
            Wrapper::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// bzip2 block magic (BCD digits of pi) and end-of-stream magic (sqrt pi), after `BZh1`..`BZh9`.
const BZIP2_BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
const BZIP2_EOS_MAGIC: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];

/// The wrapper whose magic starts `head` (the inspector's magic numbers for the same
/// wrappers), if any. `head` should hold [`MAGIC_LEN`] bytes unless the stream is shorter.
pub fn detect(head: &[u8]) -> Option<Wrapper> {
    let bzip2 = head.starts_with(b"BZh")
        && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d))
        && head
            .get(4..10)
            .is_some_and(|m| m == BZIP2_BLOCK_MAGIC || m == BZIP2_EOS_MAGIC);
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Some(Wrapper::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Wrapper::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Wrapper::Zstd)
    } else if bzip2 {
        Some(Wrapper::Bzip2)
    } else {
        None
    }
}

/// Why unwrapping failed. Messages name the wrapper.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    /// The compressed stream is not valid (bad header, checksum, block, trailing garbage).
    #[error("{wrapper} stream is corrupt after {offset} decompressed bytes: {detail}")]
    Corrupt {
        /// The wrapper.
        wrapper: Wrapper,
        /// Decompressed bytes produced before the error.
        offset: u64,
        /// The decoder's words.
        detail: String,
    },
    /// The stream asks for more decoder memory than [`MAX_DECODER_MEMORY`].
    #[error(
        "{wrapper} stream needs more than {limit} bytes of decoder memory \
         (limits.max_decoder_memory): {detail}"
    )]
    DecoderMemory {
        /// The wrapper.
        wrapper: Wrapper,
        /// The limit.
        limit: u64,
        /// The decoder's words.
        detail: String,
    },
    /// The decompressed stream starts with another wrapper.
    #[error(
        "{outer} stream holds a {inner} stream: nested compression is refused; unpack it and \
         import the disk image inside"
    )]
    Nested {
        /// The wrapper inside.
        inner: Wrapper,
        /// The wrapper outside.
        outer: Wrapper,
    },
    /// An OVA refused: not a one-disk OVA Sluice reads, or broken (the message says how).
    #[error("{message}")]
    Ova {
        /// Stable reason code.
        code: ReasonCode,
        /// What is wrong, naming the OVA member or descriptor part.
        message: String,
    },
    /// The unwrapping thread stopped without a result (a bug).
    #[error("the {0} unwrapping thread stopped unexpectedly")]
    Stopped(&'static str),
    /// The decompressed stream passed the image size limit.
    #[error("{wrapper} stream decompresses to more than {limit} bytes, the image size limit")]
    TooLarge {
        /// The wrapper.
        wrapper: Wrapper,
        /// The limit.
        limit: u64,
    },
    /// The compressed stream ends before its end marker.
    #[error("{wrapper} stream is truncated: it ends after {offset} decompressed bytes")]
    Truncated {
        /// The wrapper.
        wrapper: Wrapper,
        /// Decompressed bytes produced before the end.
        offset: u64,
    },
}

impl UnwrapError {
    /// The stable reason code: `corrupt` (corrupt or truncated), `compressed` (nested),
    /// `limit_exceeded` (decoder memory), `size_cap`, or `internal_error`.
    pub fn reason_code(&self) -> &'static str {
        self.reason().map_or("internal_error", ReasonCode::as_str)
    }

    /// The inspector's reason code for this failure; `None` for [`UnwrapError::Stopped`].
    pub fn reason(&self) -> Option<ReasonCode> {
        match self {
            UnwrapError::Corrupt { .. } | UnwrapError::Truncated { .. } => {
                Some(ReasonCode::Corrupt)
            }
            UnwrapError::DecoderMemory { .. } => Some(ReasonCode::LimitExceeded),
            UnwrapError::Nested { .. } => Some(ReasonCode::Compressed),
            UnwrapError::Ova { code, .. } => Some(*code),
            UnwrapError::Stopped(_) => None,
            UnwrapError::TooLarge { .. } => Some(ReasonCode::SizeCap),
        }
    }

    /// Whether the image is at fault (everything but [`UnwrapError::Stopped`]).
    pub fn is_image_fault(&self) -> bool {
        self.reason().is_some()
    }
}

/// The decoder of `wrapper` over `input`, within `limits.max_decoder_memory`.
fn decoder<'a>(
    wrapper: Wrapper,
    input: impl BufRead + 'a,
    limits: &UnwrapLimits,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match wrapper {
        Wrapper::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Wrapper::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Wrapper::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                limits.max_decoder_memory,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Wrapper::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)?;
            d.window_log_max(limits.zstd_window_log_max())?;
            Box::new(d)
        }
    })
}

/// Decompressed output in pieces of at most [`OUTPUT_CHUNK`] bytes, checked against a limit
/// and for a nested wrapper at its head.
pub(crate) struct Decompressor<'a> {
    wrapper: Wrapper,
    decoder: Box<dyn Read + 'a>,
    produced: u64,
    limit: u64,
    max_decoder_memory: u64,
}

impl<'a> Decompressor<'a> {
    /// Decompresses `input` as `wrapper`, failing once the output passes
    /// `limits.max_output` bytes.
    pub(crate) fn new(
        wrapper: Wrapper,
        input: impl BufRead + 'a,
        limits: &UnwrapLimits,
    ) -> Result<Self, UnwrapError> {
        let decoder = decoder(wrapper, input, limits).map_err(|e| UnwrapError::Corrupt {
            wrapper,
            offset: 0,
            detail: e.to_string(),
        })?;
        Ok(Decompressor {
            wrapper,
            decoder,
            produced: 0,
            limit: limits.max_output,
            max_decoder_memory: limits.max_decoder_memory,
        })
    }

    /// The next piece of output (filled up to [`OUTPUT_CHUNK`] unless the stream ends);
    /// `None` at the end of the compressed stream.
    pub(crate) fn next_piece(&mut self) -> Result<Option<Bytes>, UnwrapError> {
        let mut buf = BytesMut::zeroed(OUTPUT_CHUNK);
        let mut filled = 0usize;
        while let Some(space) = buf.get_mut(filled..).filter(|s| !s.is_empty()) {
            match self.decoder.read(space) {
                Ok(0) => break,
                Ok(n) => filled = filled.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.decode_error(&e, filled)),
            }
        }
        if filled == 0 {
            return Ok(None);
        }
        buf.truncate(filled);
        let first = self.produced == 0;
        self.produced = self
            .produced
            .saturating_add(u64::try_from(filled).unwrap_or(u64::MAX));
        if self.produced > self.limit {
            return Err(UnwrapError::TooLarge {
                wrapper: self.wrapper,
                limit: self.limit,
            });
        }
        if first {
            if let Some(inner) = detect(buf.get(..MAGIC_LEN.min(filled)).unwrap_or_default()) {
                return Err(UnwrapError::Nested {
                    inner,
                    outer: self.wrapper,
                });
            }
        }
        Ok(Some(buf.freeze()))
    }

    fn decode_error(&self, e: &io::Error, filled: usize) -> UnwrapError {
        let wrapper = self.wrapper;
        let offset = self
            .produced
            .saturating_add(u64::try_from(filled).unwrap_or(u64::MAX));
        let detail = e.to_string();
        if e.kind() == io::ErrorKind::UnexpectedEof {
            UnwrapError::Truncated { wrapper, offset }
        } else if detail.to_ascii_lowercase().contains("memory") {
            UnwrapError::DecoderMemory {
                wrapper,
                limit: self.max_decoder_memory,
                detail,
            }
        } else {
            UnwrapError::Corrupt {
                wrapper,
                offset,
                detail,
            }
        }
    }
}

/// `reader` with any wrapper at its head decompressed (output failing past
/// `limits.max_output` bytes with
/// [`UnwrapError::TooLarge`]), and the wrapper found. Errors of the decompression are
/// `io::Error`s carrying an [`UnwrapError`] (`io::Error::downcast` recovers it; the
/// CLI's chunk reader turns it into [`SourceError::Unwrap`](crate::SourceError::Unwrap)).
///
/// # Errors
/// When reading the head fails, or the decoder cannot be set up.
pub fn unwrap_reader<'a>(
    mut reader: impl Read + 'a,
    limits: &UnwrapLimits,
) -> io::Result<(Box<dyn Read + 'a>, Option<Wrapper>)> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    (&mut reader)
        .take(u64::try_from(MAGIC_LEN).unwrap_or(u64::MAX))
        .read_to_end(&mut head)?;
    let wrapper = detect(&head);
    let whole = io::Cursor::new(head).chain(reader);
    let Some(wrapper) = wrapper else {
        return Ok((Box::new(whole), None));
    };
    let dec = Decompressor::new(
        wrapper,
        BufReader::with_capacity(READER_BUFFER, whole),
        limits,
    )
    .map_err(io::Error::other)?;
    Ok((
        Box::new(UnwrapRead {
            dec,
            piece: Bytes::new(),
        }),
        Some(wrapper),
    ))
}

/// The reader [`unwrap_reader`] returns for a wrapped stream.
struct UnwrapRead<'a> {
    dec: Decompressor<'a>,
    piece: Bytes,
}

impl Read for UnwrapRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.piece.is_empty() {
            match self.dec.next_piece().map_err(io::Error::other)? {
                Some(piece) => self.piece = piece,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len());
        let taken = self.piece.split_to(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(&taken);
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]
mod tests;
