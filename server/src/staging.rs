//! The staging area of `glance-direct` imports: data staged by `PUT /v2/images/{id}/stage`
//! waits here, already inspected, hashed and converted, until `POST /v2/images/{id}/import`
//! commits it (a rename into the store's `images/`) or it expires.
//!
//! Layout, under `<data_dir>/staging/`: a [`LocalStore`] of its own (`tmp/<id>.part` while a
//! stage streams, `images/<id>` once its data is on disk) and `sealed/<id>.json`, the marker
//! of a complete stage: what the stage stored (size, digests, format, virtual size) and when.
//! The marker is written (fsynced, renamed, directory fsynced) only after the data is
//! committed, so a marker always names complete data; data without a marker is a stage cut
//! short and is removed. Recovery after a crash does not sweep `images/` or `sealed/`: a
//! complete stage stays importable across a restart.
//!
//! What each project has staged is counted in the area's [`Ledger`] (the usage of Glance's
//! `image_stage_total`): a stage is claimed when its body is admitted, charged as it arrives,
//! and stops counting when it is discarded or promoted (or, cut short, when its claim ends).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_formats::{Format, Report, Verdict};
use sluice_pipeline::store::space::Reserve;
use sluice_pipeline::store::{LocalStore, Store, StoreError};
use sluice_pipeline::Ingested;

use crate::meta::{
    Decision, ImageStatus, MetaError, MetaStore, TaskStatus, Timestamp, Transition, LOCK_PROPERTY,
};

mod ledger;

pub use ledger::{Ledger, StageClaim};

/// Suffix of a marker file.
const MARKER_SUFFIX: &str = ".json";

/// What a complete stage stored: the fields the image gets when the stage is imported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Bytes staged (the converted output's when converted).
    pub size: u64,
    /// MD5 of the staged bytes (Glance `checksum`).
    pub md5_hex: String,
    /// SHA-512 of the staged bytes (Glance `os_hash_value`).
    pub sha512_hex: String,
    /// The guest-visible size, when known.
    pub virtual_size: Option<u64>,
    /// The format of the staged bytes (Sluice's format name).
    pub format: String,
    /// Whether the stage converted the data (the server's `conversion` setting).
    pub converted: bool,
    /// When the stage completed.
    pub staged_at: Timestamp,
    /// What the stage unwrapped (`ova`, `gzip`, ...; markers of older stages have none).
    #[serde(default)]
    pub unwrapped: Option<String>,
    /// Properties the unwrapping found (an OVA's OVF facts), applied at import.
    #[serde(default)]
    pub properties: Vec<(String, String)>,
}

impl Staged {
    /// What a stage that ended with `ingested` at `at` stored.
    pub fn of(ingested: &Ingested, at: Timestamp) -> Staged {
        Staged {
            size: ingested.size,
            md5_hex: ingested.md5_hex.clone(),
            sha512_hex: ingested.sha512_hex.clone(),
            virtual_size: ingested.report.virtual_size,
            format: ingested.format.to_string(),
            converted: ingested.converted,
            staged_at: at,
            unwrapped: ingested.unwrapped.map(str::to_owned),
            properties: ingested.properties.clone(),
        }
    }

    /// The data as the import commits it: an accepted report of the staged format.
    pub fn into_ingested(self) -> Ingested {
        let format = self.format.parse().unwrap_or(Format::Raw);
        Ingested {
            size: self.size,
            md5_hex: self.md5_hex,
            sha512_hex: self.sha512_hex,
            report: Report {
                format,
                formats: vec![format],
                declared: Some(format),
                virtual_size: self.virtual_size,
                verdict: Verdict::Accept,
                reasons: Vec::new(),
                bytes_inspected: self.size,
                complete: true,
            },
            format,
            converted: self.converted,
            // Unwrapped when it was staged: the import applies what that found.
            unwrapped: self.unwrapped.as_deref().and_then(unwrapped_name),
            properties: self.properties,
        }
    }
}

/// The static name of what a stage unwrapped, as [`Ingested::unwrapped`] holds it.
fn unwrapped_name(name: &str) -> Option<&'static str> {
    ["ova", "gzip", "xz", "zstd", "bzip2"]
        .into_iter()
        .find(|known| *known == name)
}

/// The staging area (module documentation).
#[derive(Debug)]
pub struct StagingArea {
    store: LocalStore,
    sealed: PathBuf,
    ledger: Arc<Ledger>,
}

impl StagingArea {
    /// Opens (creating when missing) `<data_dir>/staging`, keeping `reserve` free on its
    /// volume as the image store does.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(data_dir: &Path, reserve: Reserve) -> Result<StagingArea, StoreError> {
        let root = data_dir.join("staging");
        let store = LocalStore::open_with_reserve(&root, reserve)?;
        let sealed = root.join("sealed");
        fs::create_dir_all(&sealed).map_err(|source| StoreError::Opening {
            path: sealed.clone(),
            source,
        })?;
        Ok(StagingArea {
            store,
            sealed,
            ledger: Arc::default(),
        })
    }

    /// What each project has staged (module documentation).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The store a stage streams into (`ingest_as` writes `tmp/<id>.part`, then commits it
    /// to the staging area's `images/<id>`).
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    fn marker(&self, id: &str) -> Result<PathBuf, StoreError> {
        // `path` checks the id, so a marker name is always a plain file name.
        self.store.path(id)?;
        Ok(self.sealed.join(format!("{id}{MARKER_SUFFIX}")))
    }

    /// Marks the committed stage of `id` complete. Blocking (fsyncs).
    ///
    /// # Errors
    /// When the marker cannot be written.
    pub fn seal(&self, id: &str, staged: &Staged) -> io::Result<()> {
        let marker = self.marker(id).map_err(io::Error::other)?;
        let part = self.sealed.join(format!("{id}{MARKER_SUFFIX}.part"));
        let text = serde_json::to_vec(staged).map_err(io::Error::other)?;
        let mut file = File::create(&part)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&part, &marker)?;
        File::open(&self.sealed)?.sync_all()
    }

    /// The complete stage of `id`, if there is one (its marker and its data).
    pub fn staged(&self, id: &str) -> Option<Staged> {
        let marker = self.marker(id).ok()?;
        let text = fs::read(marker).ok()?;
        let staged: Staged = serde_json::from_slice(&text).ok()?;
        let data = self.store.path(id).ok()?;
        data.exists().then_some(staged)
    }

    /// Removes the stage of `id`, complete or not (marker first, so a crash in between
    /// leaves data without a marker: a cut-short stage), and stops counting it.
    /// `Ok(false)` when there was none.
    ///
    /// # Errors
    /// When a file exists but cannot be removed.
    pub fn discard(&self, id: &str) -> Result<bool, StoreError> {
        let marker = self.marker(id)?;
        self.ledger.remove(id);
        let had_marker = match fs::remove_file(&marker) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(StoreError::Deleting {
                    id: id.to_owned(),
                    source,
                })
            }
        };
        let had_data = self.store.path(id)?.exists();
        self.store.delete(id)?;
        Ok(had_data || had_marker)
    }

    /// Hands the complete stage of `id` to `into` as its committed image
    /// ([`Store::adopt`]: one rename when `into` is the local store on the same volume), and
    /// drops its marker. Blocking.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when `into` has the image; what `adopt` fails with.
    pub fn promote(&self, id: &str, into: &dyn Store) -> Result<(), StoreError> {
        into.adopt(id, &self.store.path(id)?)?;
        if let Err(e) = self.discard(id) {
            tracing::warn!(image = %id, "removing a promoted stage's marker failed: {e}");
        }
        Ok(())
    }

    /// Every complete stage, sorted by id (for recovery and the expiry sweep).
    ///
    /// # Errors
    /// When the staging area cannot be listed.
    pub fn sealed(&self) -> Result<Vec<(String, Staged)>, StoreError> {
        let mut out = Vec::new();
        for id in self.store.list_ids()? {
            if let Some(staged) = self.staged(&id) {
                out.push((id, staged));
            }
        }
        Ok(out)
    }

    /// Removes what a crash left: partial stages (`tmp/`), committed data without a marker,
    /// and markers without data. Returns how many stages were removed.
    ///
    /// # Errors
    /// When the staging area cannot be listed or a file removed.
    pub fn sweep_incomplete(&self) -> Result<usize, StoreError> {
        let mut removed = self.store.sweep()?;
        for id in self.store.list_ids()? {
            if self.staged(&id).is_none() {
                self.discard(&id)?;
                removed = removed.saturating_add(1);
            }
        }
        let err = |source| StoreError::Opening {
            path: self.sealed.clone(),
            source,
        };
        for entry in fs::read_dir(&self.sealed).map_err(err)? {
            let path = entry.map_err(err)?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(MARKER_SUFFIX))
                .map(str::to_owned);
            let complete = id.as_deref().is_some_and(|id| self.staged(id).is_some());
            if !complete {
                fs::remove_file(&path).map_err(err)?;
                removed = removed.saturating_add(1);
            }
        }
        Ok(removed)
    }

    /// Removes every complete stage whose image (in `meta`) is gone or `queued` again, and
    /// every complete stage older than `ttl_secs` at `now` whose image
    /// waits for no import, and returns its image (still `uploading`) to `queued`; returns
    /// how many were removed. An image whose lock names a pending or running import keeps
    /// its stage: the import takes it. Its file operations (a listing of the area, unlinks)
    /// run inline: the area holds a few entries, and the sweeper is a background task.
    ///
    /// # Errors
    /// When the staging area cannot be listed or the metadata read or written.
    pub async fn expire(
        &self,
        meta: &dyn MetaStore,
        ttl_secs: u64,
        now: Timestamp,
    ) -> anyhow::Result<usize> {
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let mut removed = 0usize;
        for (id, staged) in self.sealed()? {
            let gone = if staged.staged_at.saturating_add(ttl) > now {
                discard_orphan(self, meta, &id).await?
            } else {
                expire_one(self, meta, &id, now).await?
            };
            if gone {
                removed = removed.saturating_add(1);
            }
        }
        Ok(removed)
    }
}

/// Removes the stage of image `id`, however young, when nothing can import it any more: the
/// image is gone, or `queued` again (its stage was given up elsewhere: a live node's sweep
/// took this node for dead, `takeover::sweep_dead_stages_once`); whether it was removed.
async fn discard_orphan(
    area: &StagingArea,
    meta: &dyn MetaStore,
    id: &str,
) -> anyhow::Result<bool> {
    let orphan = meta
        .get_image(id)
        .await?
        .is_none_or(|image| image.status == ImageStatus::Queued);
    if orphan {
        area.discard(id)?;
        tracing::info!(image = %id, "staged data no image waits for removed");
    }
    Ok(orphan)
}

/// Expires the stage of image `id` unless a live import waits for it; whether it was
/// removed ([`StagingArea::expire`]).
async fn expire_one(
    area: &StagingArea,
    meta: &dyn MetaStore,
    id: &str,
    now: Timestamp,
) -> anyhow::Result<bool> {
    let Some(image) = meta.get_image(id).await? else {
        area.discard(id)?;
        return Ok(true);
    };
    let lock = image.properties.get(LOCK_PROPERTY).cloned();
    if let Some(task_id) = &lock {
        let live = meta
            .get_task(task_id)
            .await?
            .is_some_and(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Processing));
        if live {
            return Ok(false);
        }
    }
    let requeued = meta
        .transition_image(id, &[ImageStatus::Uploading], &mut |image| {
            if image.properties.get(LOCK_PROPERTY) != lock.as_ref() {
                return Decision::Keep;
            }
            image.status = ImageStatus::Queued;
            image.properties.remove(LOCK_PROPERTY);
            image.forget_data();
            image.updated_at = now;
            Decision::Write
        })
        .await;
    match requeued {
        Ok(Transition::Done(_) | Transition::Missing) => {}
        Ok(Transition::Kept(_)) => return Ok(false),
        // Importing (the import took it meanwhile) or queued by someone else.
        Ok(Transition::Refused(image)) if image.status == ImageStatus::Importing => {
            return Ok(false)
        }
        Ok(Transition::Refused(_)) => {}
        Err(MetaError::StorageFull(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    area.discard(id)?;
    tracing::info!(image = %id, "staged data expired: image back to queued");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(at: Timestamp) -> Staged {
        Staged {
            size: 4,
            md5_hex: "m".into(),
            sha512_hex: "s".into(),
            virtual_size: Some(4),
            format: "raw".into(),
            converted: false,
            staged_at: at,
            unwrapped: None,
            properties: Vec::new(),
        }
    }

    #[test]
    fn test_staged_marker_keeps_the_unwrapping_and_reads_older_markers() {
        let ova = Staged {
            unwrapped: Some("ova".into()),
            properties: vec![("ovf_cpus".into(), "2".into())],
            ..staged(1)
        };
        let back: Staged = serde_json::from_str(&serde_json::to_string(&ova).unwrap()).unwrap();
        let ingested = back.into_ingested();
        assert_eq!(ingested.unwrapped, Some("ova"));
        assert_eq!(ingested.properties, vec![("ovf_cpus".into(), "2".into())]);
        let older = r#"{"size":4,"md5_hex":"m","sha512_hex":"s","virtual_size":4,
            "format":"raw","converted":false,"staged_at":1}"#;
        let older: Staged = serde_json::from_str(older).unwrap();
        assert_eq!(older, staged(1));
    }

    #[test]
    fn test_staging_sealed_stage_survives_sweep_unsealed_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path(), Reserve::Bytes(0)).unwrap();
        let path = |id: &str| area.store().path(id).unwrap();
        fs::write(path("a"), b"data").unwrap();
        area.seal("a", &staged(7)).unwrap();
        fs::write(path("b"), b"cut short").unwrap();
        fs::write(area.sealed.join("c.json"), b"{}").unwrap();
        fs::write(area.store().scratch_dir().join("d.part"), b"partial").unwrap();

        assert_eq!(area.sweep_incomplete().unwrap(), 3);
        assert_eq!(area.sealed().unwrap(), vec![("a".to_owned(), staged(7))]);
        assert!(!path("b").exists());
    }

    #[test]
    fn test_staging_promote_moves_data_and_drops_marker() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path(), Reserve::Bytes(0)).unwrap();
        let images = LocalStore::open_with_reserve(dir.path(), Reserve::Bytes(0)).unwrap();
        fs::write(area.store().path("a").unwrap(), b"data").unwrap();
        area.seal("a", &staged(1)).unwrap();
        area.promote("a", &images).unwrap();
        assert_eq!(fs::read(images.path("a").unwrap()).unwrap(), b"data");
        assert_eq!(area.staged("a"), None);
        assert!(area.sealed().unwrap().is_empty());
        assert!(!area.discard("a").unwrap());
    }

    #[tokio::test]
    async fn test_staging_expire_requeues_old_stages_unless_an_import_waits_drops_orphans() {
        use crate::meta::{memory::MemoryMeta, sample_image, sample_task};
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path(), Reserve::Bytes(0)).unwrap();
        let meta = MemoryMeta::new();
        let task = sample_task("t");
        meta.put_task(&task).await.unwrap();
        for (id, lock) in [("old", None), ("waited", Some("t")), ("young", None)] {
            let mut image = sample_image(id);
            image.status = ImageStatus::Uploading;
            if let Some(task_id) = lock {
                image
                    .properties
                    .insert(LOCK_PROPERTY.into(), task_id.into());
            }
            meta.put_image(&image).await.unwrap();
        }
        // Young, but its image went back to `queued` elsewhere, or is gone.
        let mut requeued = sample_image("requeued");
        requeued.status = ImageStatus::Queued;
        meta.put_image(&requeued).await.unwrap();
        let stages = [
            ("old", 10),
            ("waited", 10),
            ("young", 95),
            ("orphan", 10),
            ("requeued", 95),
            ("young-orphan", 95),
        ];
        for (id, at) in stages {
            fs::write(area.store().path(id).unwrap(), b"data").unwrap();
            area.seal(id, &staged(at)).unwrap();
        }

        assert_eq!(area.expire(&meta, 60, 100).await.unwrap(), 4);
        let mut left: Vec<String> = area.sealed().unwrap().into_iter().map(|s| s.0).collect();
        left.sort();
        assert_eq!(left, ["waited", "young"]);
        let old = meta.get_image("old").await.unwrap().unwrap();
        assert_eq!((old.status, old.updated_at), (ImageStatus::Queued, 100));
        let waited = meta.get_image("waited").await.unwrap().unwrap();
        assert_eq!(waited.status, ImageStatus::Uploading);
    }
}
