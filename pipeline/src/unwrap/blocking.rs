//! Unwrapping for blocking callers (`sluice inspect`, `sluice convert`): compressed streams
//! are decompressed in the caller's thread ([`super::unwrap_reader`]); an OVA, whose reader
//! pushes pieces, runs on a scoped thread feeding the caller's reader through a bounded
//! channel.

use std::io::{self, Cursor, Read};
use std::sync::mpsc;

use bytes::Bytes;
use sluice_formats::Format;

use super::ova::{read_ova, OvaEvent};
use super::{unwrap_reader, UnwrapError, UnwrapLimits};

/// Bytes peeked to recognise an OVA: one tar header.
const TAR_HEADER: usize = 512;

/// Pieces queued between the OVA thread and the caller (memory: `(capacity + 1) × 512 KiB`).
const PIECE_QUEUE: usize = 2;

/// What [`with_unwrapped`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwrapped {
    /// `gzip`, `xz`, `zstd`, `bzip2` or `ova`; `None` when the stream was passed through.
    pub name: Option<&'static str>,
    /// An OVA descriptor's facts (image properties).
    pub properties: Vec<(String, String)>,
}

/// Whether `head` starts a tar archive whose first member is an OVF descriptor.
pub fn looks_like_ova(head: &[u8]) -> bool {
    let ustar = head.get(257..262).is_some_and(|m| m == b"ustar");
    let name = head.get(..100).unwrap_or_default();
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    ustar
        && name
            .get(..end)
            .is_some_and(|n| n.to_ascii_lowercase().ends_with(b".ovf"))
}

/// Runs `consume` on `reader` unwrapped: an OVA (recognised by its first member, a `.ovf`)
/// yields its disk, a gzip/xz/zstd/bzip2 stream its decompressed bytes, anything else
/// itself. Output past `limit` bytes and broken streams fail the reads with an `io::Error`
/// carrying an [`UnwrapError`] (the chunk reader turns it into
/// [`SourceError::Unwrap`](crate::SourceError::Unwrap)).
///
/// # Errors
/// When reading the head of `reader` fails.
pub fn with_unwrapped<R: Read + Send, T>(
    mut reader: R,
    declared: Option<Format>,
    limits: UnwrapLimits,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> io::Result<(T, Unwrapped)> {
    let mut head = Vec::with_capacity(TAR_HEADER);
    (&mut reader)
        .take(u64::try_from(TAR_HEADER).unwrap_or(512))
        .read_to_end(&mut head)?;
    let is_ova = looks_like_ova(&head);
    let whole = Cursor::new(head).chain(reader);
    if !is_ova {
        let (mut unwrapped, wrapper) = unwrap_reader(whole, &limits)?;
        let out = consume(&mut unwrapped);
        let name = wrapper.map(|w| w.as_str());
        return Ok((
            out,
            Unwrapped {
                name,
                properties: Vec::new(),
            },
        ));
    }
    let (tx, rx) = mpsc::sync_channel::<Result<Bytes, UnwrapError>>(PIECE_QUEUE);
    let (out, properties) = std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut properties = Vec::new();
            let input = io::BufReader::with_capacity(1 << 20, whole);
            let read = read_ova(input, declared, &limits, &mut |event| match event {
                OvaEvent::Facts(facts) => {
                    properties = facts;
                    true
                }
                OvaEvent::Data(piece) => tx.send(Ok(piece)).is_ok(),
            });
            if let Err(e) = read {
                let _ = tx.send(Err(e));
            }
            properties
        });
        let mut pieces = PieceReader {
            rx,
            piece: Bytes::new(),
        };
        let out = consume(&mut pieces);
        // The producer stops at its next send once the receiver is gone.
        drop(pieces);
        (out, producer.join().unwrap_or_default())
    });
    Ok((
        out,
        Unwrapped {
            name: Some("ova"),
            properties,
        },
    ))
}

/// The OVA thread's pieces as a reader.
struct PieceReader {
    rx: mpsc::Receiver<Result<Bytes, UnwrapError>>,
    piece: Bytes,
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.piece.is_empty() {
            match self.rx.recv() {
                Ok(Ok(piece)) => self.piece = piece,
                Ok(Err(e)) => return Err(io::Error::other(e)),
                Err(_) => return Ok(0),
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
