//! Wiring for Sluice's one-pass ingest: sources that produce chunks ([`http::HttpSource`]
//! guarded by the [`ssrf::ImportPolicy`], an upload's request body [`body::BodySource`],
//! [`source::FileSource`], [`source::MemorySource`]),
//! the fan-out of those chunks to the [`sluice_formats`] inspector, the digests
//! ([`hash::Checksummer`]) and a [`store::Store`] (the [`store::LocalStore`] today), driven
//! by [`ingest::ingest`].
//!
//! ```
//! use sluice_formats::{Format, Limits};
//! use sluice_pipeline::inspect_reader;
//!
//! let disk = vec![0u8; 4096];
//! let report = inspect_reader(&disk[..], Some(Format::Raw), Limits::default(), 1024).unwrap();
//! assert!(report.is_accepted());
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]

use std::io::Read;

use sluice_formats::{Format, Inspector, Limits, Reason, ReasonCode, Report, Verdict};

mod background;
pub mod body;
pub mod convert;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod http;
pub mod ingest;
mod lane;
pub mod progress;
pub mod rate;
pub mod redact;
pub mod source;
pub mod ssrf;
pub mod store;
pub mod unwrap;

pub use ingest::{ingest, IngestError, IngestRequest, Ingested, Progress};
pub use source::{ChunkSource, SourceError, MAX_CHUNK};

/// Streams `reader` through an [`Inspector`] in chunks of `chunk_size` bytes, never seeking,
/// and stops reading as soon as the image is rejected.
///
/// Memory: one buffer of `chunk_size` bytes plus the inspector's bound.
///
/// # Errors
/// [`SourceError`] when the chunk size is out of range or a read fails.
pub fn inspect_reader(
    mut reader: impl Read,
    declared: Option<Format>,
    limits: Limits,
    chunk_size: usize,
) -> Result<Report, SourceError> {
    if chunk_size == 0 || chunk_size > MAX_CHUNK {
        return Err(SourceError::BadChunkSize(chunk_size));
    }
    let mut inspector = Inspector::new(declared, limits);
    let mut buf = vec![0u8; chunk_size];
    loop {
        match source::read_chunk(&mut reader, &mut buf, inspector.position()) {
            Ok(Some(chunk)) => {
                if let sluice_formats::Progress::Rejected(_) = inspector.feed(chunk) {
                    break;
                }
            }
            Ok(None) => break,
            // A broken compressed stream (an `unwrap::unwrap_reader`) is the image's fault.
            Err(SourceError::Unwrap(e)) if e.is_image_fault() => {
                let mut report = inspector.finish();
                report.verdict = Verdict::Reject;
                report.complete = false;
                // What was not decompressed is not an empty image.
                report.reasons.retain(|r| r.code != ReasonCode::Empty);
                if let Some(code) = e.reason() {
                    report.reasons.insert(0, Reason::new(code, e.to_string()));
                }
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(inspector.finish())
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn test_inspect_reader_read_error_names_offset() {
        let err = inspect_reader(FailingReader, None, Limits::default(), 512).unwrap_err();
        assert!(matches!(err, SourceError::ReadingChunk { offset: 0, .. }));
    }

    #[test]
    fn test_inspect_reader_zero_chunk_is_refused() {
        let err = inspect_reader(&[][..], None, Limits::default(), 0).unwrap_err();
        assert!(matches!(err, SourceError::BadChunkSize(0)));
    }

    #[test]
    fn test_inspect_reader_stops_reading_after_rejection() {
        // A gzip stream followed by a lot of data: only the first decision step is read.
        let mut data = vec![0x1f, 0x8b, 0x08];
        data.resize(1 << 20, 0);
        let mut cursor = io::Cursor::new(&data);
        let report = inspect_reader(&mut cursor, None, Limits::default(), 4096).unwrap();
        assert!(!report.is_accepted());
        assert_eq!(cursor.position(), 4096);
    }
}
