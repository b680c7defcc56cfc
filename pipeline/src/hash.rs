//! Stored-image digests (md5 `checksum`, sha512 `os_hash_value`) computed off the async
//! runtime, one blocking thread per digest so the two run in parallel.
//!
//! Each digest is the slowest per-byte step of an import, so each gets its own thread and is
//! fed through a bounded queue (`crate::lane`, which wakes the sender only when the
//! queue is half empty): a slow hasher back-pressures the sender instead of buffering the
//! image. The digests are OpenSSL's: on this machine kind md5 runs at 752 MB/s and sha512
//! at 807 MB/s per core, against 638 and 605 for the RustCrypto crates
//! (`shared/reference/machine-notes.md`), and sha512 sets the import's ceiling.

use bytes::Bytes;
use openssl::hash::{Hasher, MessageDigest};

use crate::background::{self, Background};
use crate::lane::{self, LaneSender};

/// Chunks queued per hasher. Memory bound of the queues:
/// `2 hashers × (HASH_CHANNEL_CAPACITY + 1 in progress) × max chunk size`; the chunks are
/// shared `Bytes` handles, so with the store writer they pin the same buffers.
pub const HASH_CHANNEL_CAPACITY: usize = 8;

/// The digests of every byte fed, in lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// MD5 (Glance's `checksum`), 32 hex digits.
    pub md5_hex: String,
    /// SHA-512 (Glance's `os_hash_value` with `os_hash_algo` sha512), 128 hex digits.
    pub sha512_hex: String,
}

/// A hashing thread stopped before `finish`: it panicked, OpenSSL failed, or the runtime is
/// shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the {0} hashing thread stopped unexpectedly")]
pub struct HashError(pub &'static str);

/// Computes md5 and sha512 of a stream of chunks on two blocking threads.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sluice_pipeline::hash::Checksummer;
///
/// let sums = Checksummer::start();
/// sums.update(bytes::Bytes::from_static(b"abc")).await.unwrap();
/// let digests = sums.finish().await.unwrap();
/// assert_eq!(digests.md5_hex, "900150983cd24fb0d6963f7d28e17f72");
/// # }
/// ```
#[derive(Debug)]
pub struct Checksummer {
    md5: Lane,
    sha512: Lane,
}

#[derive(Debug)]
struct Lane {
    name: &'static str,
    tx: LaneSender,
    handle: Option<Background<Option<String>>>,
}

impl Lane {
    fn start(name: &'static str, kind: MessageDigest) -> Lane {
        // A hasher that ran dry is woken by the next chunk: it sets the pace.
        let (tx, mut rx) = lane::channel(HASH_CHANNEL_CAPACITY, 1);
        let handle = background::spawn(name, move || {
            // OpenSSL fails here only on allocation failure or a disabled digest; an empty
            // result is then reported by `finish` as a stopped hasher.
            let mut hasher = Hasher::new(kind).ok()?;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk).ok()?;
            }
            Some(hex(&hasher.finish().ok()?))
        })
        .ok();
        Lane { name, tx, handle }
    }

    async fn finish(self) -> Result<String, HashError> {
        drop(self.tx);
        let result = match self.handle {
            Some(handle) => handle.join().await.flatten(),
            None => None,
        };
        result.ok_or(HashError(self.name))
    }
}

impl Checksummer {
    /// Starts both hashers, each on its own low-priority thread (see `background`). A
    /// hasher whose thread cannot be created reports [`HashError`] at `update` or `finish`.
    pub fn start() -> Self {
        Checksummer {
            md5: Lane::start("md5", MessageDigest::md5()),
            sha512: Lane::start("sha512", MessageDigest::sha512()),
        }
    }

    /// Queues `chunk` for both hashers, waiting while either queue is full.
    ///
    /// # Errors
    /// [`HashError`] when a hashing thread has stopped.
    pub async fn update(&self, chunk: Bytes) -> Result<(), HashError> {
        self.md5
            .tx
            .send(chunk.clone())
            .await
            .map_err(|_| HashError(self.md5.name))?;
        self.sha512
            .tx
            .send(chunk)
            .await
            .map_err(|_| HashError(self.sha512.name))
    }

    /// Ends the streams and returns the digests once both threads are done.
    ///
    /// # Errors
    /// [`HashError`] when a hashing thread panicked.
    pub async fn finish(self) -> Result<Digests, HashError> {
        let Checksummer { md5, sha512 } = self;
        let (md5_hex, sha512_hex) = tokio::join!(md5.finish(), sha512.finish());
        Ok(Digests {
            md5_hex: md5_hex?,
            sha512_hex: sha512_hex?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use md5::Md5;
    use sha2::{Digest, Sha512};

    use super::*;

    #[tokio::test]
    async fn test_checksummer_empty_stream_gives_known_digests() {
        let d = Checksummer::start().finish().await.unwrap();
        assert_eq!(d.md5_hex, "d41d8cd98f00b204e9800998ecf8427e");
        assert!(d.sha512_hex.starts_with("cf83e1357eefb8bdf1542850d66d8007"));
        assert_eq!(d.sha512_hex.len(), 128);
    }

    #[tokio::test]
    async fn test_checksummer_chunking_does_not_change_digests() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let whole = Checksummer::start();
        whole.update(Bytes::from(data.clone())).await.unwrap();
        let whole = whole.finish().await.unwrap();
        let split = Checksummer::start();
        for chunk in data.chunks(777) {
            split.update(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let split = split.finish().await.unwrap();
        assert_eq!(whole, split);
        assert_eq!(whole.md5_hex, hex(&Md5::digest(&data)));
        assert_eq!(whole.sha512_hex, hex(&Sha512::digest(&data)));
    }

    #[test]
    fn test_hex_formats_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
