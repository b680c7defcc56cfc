//! Admission control during an import: the pipeline tells the caller, as the import goes,
//! how many bytes it will store at least, and the caller (the server's quota) may stop it.
//!
//! The estimate is the largest of: the source's announced length, the bytes received so
//! far, and, for a conversion to raw, the virtual size as soon as the inspector reads it from
//! the header: a tiny qcow2 declaring 1 TiB is refused after its first KiBs, not after
//! writing and hashing 1 TiB of zeros.

/// Decides whether an import may go on storing `bytes`.
pub trait Admission: Send + Sync {
    /// The import will store at least `bytes` (an estimate that only grows; called whenever
    /// it grows).
    ///
    /// # Errors
    /// A message fit for the task (e.g. Glance's "… is over limit …") when the import must
    /// stop; the ingest then fails with [`IngestError::QuotaExceeded`](super::IngestError).
    fn charge(&self, bytes: u64) -> Result<(), String>;
}

/// No admission control: every import may store what it brings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unlimited;

impl Admission for Unlimited {
    fn charge(&self, _bytes: u64) -> Result<(), String> {
        Ok(())
    }
}

/// An import's running charge: asks the [`Admission`] only when the estimate grows.
pub(super) struct Charge<'a> {
    admission: &'a dyn Admission,
    charged: u64,
    /// Whether the stored image will be the virtual disk (conversion to raw).
    stores_virtual_size: bool,
}

impl<'a> Charge<'a> {
    /// A charge of nothing yet.
    pub(super) fn new(admission: &'a dyn Admission, stores_virtual_size: bool) -> Self {
        Charge {
            admission,
            charged: 0,
            stores_virtual_size,
        }
    }

    /// Raises the charge to `bytes` if that is more.
    pub(super) fn at_least(&mut self, bytes: u64) -> Result<(), super::IngestError> {
        if bytes > self.charged {
            self.admission
                .charge(bytes)
                .map_err(super::IngestError::QuotaExceeded)?;
            self.charged = bytes;
        }
        Ok(())
    }

    /// Raises the charge after a chunk: `received` bytes so far, and the virtual size when
    /// the inspector knows it and the image is stored as the virtual disk.
    pub(super) fn after_chunk(
        &mut self,
        received: u64,
        virtual_size: Option<u64>,
    ) -> Result<(), super::IngestError> {
        let disk = if self.stores_virtual_size {
            virtual_size.unwrap_or(0)
        } else {
            0
        };
        self.at_least(received.max(disk))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use std::process::Command;
    use std::sync::Mutex;

    use bytes::Bytes;
    use sluice_formats::{Format, Limits, Target};
    use tokio::sync::watch;

    use super::*;
    use crate::ingest::{ingest_as, IngestError, IngestRequest, Progress};
    use crate::source::{ChunkSource, MemorySource, SourceError};
    use crate::store::{LocalStore, Store};

    /// Refuses any charge above `limit` bytes; records every charge.
    struct Quota {
        limit: u64,
        charges: Mutex<Vec<u64>>,
    }

    impl Quota {
        fn new(limit: u64) -> Self {
            Quota {
                limit,
                charges: Mutex::new(Vec::new()),
            }
        }
    }

    impl Admission for Quota {
        fn charge(&self, bytes: u64) -> Result<(), String> {
            self.charges.lock().unwrap().push(bytes);
            if bytes > self.limit {
                Err(format!("{bytes} is over limit of {}", self.limit))
            } else {
                Ok(())
            }
        }
    }

    /// A memory source that does not announce its length.
    struct Unannounced(MemorySource);

    impl ChunkSource for Unannounced {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
            self.0.next_chunk().await
        }

        fn content_length(&self) -> Option<u64> {
            None
        }
    }

    fn files_in(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn test_admission_tiny_qcow2_of_1_tib_to_raw_is_refused_at_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("big.qcow2");
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("1T")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let bytes = std::fs::read(&image).unwrap();
        let store = LocalStore::open(dir.path().join("store")).unwrap();
        let quota = Quota::new(1 << 30);
        let progress = Progress::default();
        let source = Unannounced(MemorySource::new(Bytes::from(bytes.clone()), 4096));
        let err = ingest_as(
            source,
            IngestRequest::new("big", Format::Qcow2, Limits::default())
                .converting(Some(Target::Raw))
                .admitted_by(&quota),
            &store,
            &progress,
            watch::channel(false).1,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, IngestError::QuotaExceeded(_)), "{err}");
        assert_eq!(err.reason_code(), "quota_exceeded");
        // Refused on the first chunk holding the header, long before the end of the file.
        assert_eq!(progress.received(), 4096);
        assert!(bytes.len() > 4096 * 8);
        assert_eq!(*quota.charges.lock().unwrap().last().unwrap(), 1 << 40);
        assert_eq!(files_in(store.scratch_dir()), 0);

        // Stored as received (no conversion), the same file costs only its own bytes.
        let quota = Quota::new(1 << 30);
        let source = MemorySource::new(Bytes::from(bytes.clone()), 4096);
        let done = ingest_as(
            source,
            IngestRequest::new("small", Format::Qcow2, Limits::default()).admitted_by(&quota),
            &store,
            &Progress::default(),
            watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!(done.size, bytes.len() as u64);
        assert_eq!(
            *quota.charges.lock().unwrap(),
            vec![bytes.len() as u64],
            "announced length, charged once"
        );
    }

    #[tokio::test]
    async fn test_admission_unannounced_stream_stops_when_stored_bytes_pass_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let quota = Quota::new(100_000);
        let progress = Progress::default();
        let source = Unannounced(MemorySource::new(Bytes::from(vec![0u8; 1 << 20]), 65_536));
        let err = ingest_as(
            source,
            IngestRequest::new("raw", Format::Raw, Limits::default()).admitted_by(&quota),
            &store,
            &progress,
            watch::channel(false).1,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, IngestError::QuotaExceeded(_)), "{err}");
        assert_eq!(progress.received(), 131_072);
        assert_eq!(*quota.charges.lock().unwrap(), vec![65_536, 131_072]);
        assert_eq!(files_in(store.scratch_dir()), 0);
        assert_eq!(files_in(&dir.path().join("images")), 0);
    }

    #[tokio::test]
    async fn test_admission_announced_length_over_the_limit_fetches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let progress = Progress::default();
        let err = ingest_as(
            MemorySource::new(Bytes::from(vec![0u8; 1 << 20]), 65_536),
            IngestRequest::new("raw", Format::Raw, Limits::default())
                .admitted_by(&Quota::new(1000)),
            &store,
            &progress,
            watch::channel(false).1,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, IngestError::QuotaExceeded(_)), "{err}");
        assert_eq!(progress.received(), 0);
        assert_eq!(files_in(store.scratch_dir()), 0);
    }
}
