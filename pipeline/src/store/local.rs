//! The local image store: a directory with `images/` (committed images, one file per image
//! id) and `tmp/` (imports in progress, `<id>.part`); the first [`Store`] implementation.
//!
//! An image appears under `images/` only by `rename` after its data was fsynced, so a reader
//! never sees a partial file there; a crash leaves at most a `tmp/*.part` file, which
//! [`Store::sweep`] removes at startup. Appended images are written with direct I/O (see the
//! `direct` module), positional ones through the page cache, flushed and dropped behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::direct::{DirectAppender, DIRECT_WRITE_SIZE};
use super::space::{DiskSpace, Reserve, SPACE_CHECK_INTERVAL};
use super::{
    check_id, Access, BoxFuture, ImageStream, ImageWriter, Store, StoreError, StoredImage,
};

/// Suffix of files being written in `tmp/`.
const PART_SUFFIX: &str = ".part";

/// A directory of committed images plus a scratch area for imports in progress.
#[derive(Clone, Debug)]
pub struct LocalStore {
    images: PathBuf,
    tmp: PathBuf,
    space: Arc<DiskSpace>,
}

impl LocalStore {
    /// Opens (creating when missing) the store rooted at `dir`, keeping the default
    /// [`Reserve`] free.
    ///
    /// # Errors
    /// [`StoreError::Opening`] when the directories cannot be created.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_reserve(dir, Reserve::default())
    }

    /// Opens (creating when missing) the store rooted at `dir`; imports are refused, and
    /// running ones fail, rather than take free space on its volume below `reserve`.
    ///
    /// # Errors
    /// [`StoreError::Opening`] when the directories cannot be created.
    pub fn open_with_reserve(dir: impl AsRef<Path>, reserve: Reserve) -> Result<Self, StoreError> {
        let root = dir.as_ref();
        let images = root.join("images");
        let tmp = root.join("tmp");
        for d in [&images, &tmp] {
            fs::create_dir_all(d).map_err(|source| StoreError::Opening {
                path: d.clone(),
                source,
            })?;
        }
        Ok(LocalStore {
            images,
            tmp,
            space: Arc::new(DiskSpace::new(root, reserve)),
        })
    }

    /// Tests: [`LocalStore::open_with_reserve`] on a volume whose free space is `free`
    /// ([`DiskSpace::with_fake_free`]).
    #[cfg(test)]
    pub(crate) fn open_with_fake_free(
        dir: &Path,
        reserve: Reserve,
        free: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Self, StoreError> {
        let store = Self::open_with_reserve(dir, reserve)?;
        Ok(LocalStore {
            space: Arc::new(DiskSpace::with_fake_free(dir, reserve, free)),
            ..store
        })
    }

    /// Starts writing image `id` to `tmp/<id>.part`: [`Store::begin`] without the box.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`], [`StoreError::AlreadyExists`], [`StoreError::StorageFull`]
    /// (free space is below the reserve), or [`StoreError::Creating`] (also when a part file
    /// for `id` exists: one import per id at a time).
    pub fn begin_part(&self, id: &str, access: Access) -> Result<PartFile, StoreError> {
        check_id(id)?;
        let target = self.images.join(id);
        if target.exists() {
            return Err(StoreError::AlreadyExists(id.to_owned()));
        }
        self.space.check_import(SPACE_CHECK_INTERVAL)?;
        let path = self.tmp.join(format!("{id}{PART_SUFFIX}"));
        // Readable too: a conversion whose output could not be hashed in order reads it back.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| StoreError::Creating {
                path: path.clone(),
                source,
            })?;
        Ok(PartFile {
            id: id.to_owned(),
            path,
            target,
            access,
            file: Some(file),
            written: 0,
            flushed: 0,
            writeback: None,
            direct: None,
            direct_tried: false,
            space: Arc::clone(&self.space),
            space_checked_upto: SPACE_CHECK_INTERVAL,
            committed: false,
        })
    }

    /// Where image `id` is (or would be) stored.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`].
    pub fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        check_id(id)?;
        Ok(self.images.join(id))
    }
}

impl Store for LocalStore {
    fn begin(&self, id: &str, access: Access) -> Result<Box<dyn ImageWriter>, StoreError> {
        Ok(Box::new(self.begin_part(id, access)?))
    }

    fn open<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn StoredImage>>, StoreError>> {
        Box::pin(async move {
            let path = self.path(id)?;
            let err = |source| StoreError::Reading {
                id: id.to_owned(),
                source,
            };
            let file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(err(e)),
            };
            let size = file.metadata().await.map_err(err)?.len();
            let image: Box<dyn StoredImage> = Box::new(LocalImage {
                id: id.to_owned(),
                file,
                size,
            });
            Ok(Some(image))
        })
    }

    fn delete(&self, id: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path(id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Deleting {
                id: id.to_owned(),
                source,
            }),
        }
    }

    fn list_ids(&self) -> Result<Vec<String>, StoreError> {
        let err = |source| StoreError::Opening {
            path: self.images.clone(),
            source,
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.images).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            if let Some(name) = name.to_str() {
                if check_id(name).is_ok() {
                    ids.push(name.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// A rename when `file` is on the store's volume (fsynced, then the directory), else
    /// the default copy.
    fn adopt(&self, id: &str, file: &Path) -> Result<(), StoreError> {
        let target = self.path(id)?;
        if target.exists() {
            return Err(StoreError::AlreadyExists(id.to_owned()));
        }
        let err = |source| StoreError::Committing {
            id: id.to_owned(),
            source,
        };
        File::open(file).and_then(|f| f.sync_all()).map_err(err)?;
        match fs::rename(file, &target) {
            Ok(()) => File::open(&self.images)
                .and_then(|d| d.sync_all())
                .map_err(err),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                crate::store::copy_into(self, id, file)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Nothing to claim: the directory is in the node's data directory, beside its metadata,
    /// and goes with it.
    fn claim(&self, _owner: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Removes every file in `tmp/` (imports interrupted by a crash).
    fn sweep(&self) -> Result<usize, StoreError> {
        let err = |source| StoreError::Opening {
            path: self.tmp.clone(),
            source,
        };
        let mut removed = 0usize;
        for entry in fs::read_dir(&self.tmp).map_err(err)? {
            let entry = entry.map_err(err)?;
            fs::remove_file(entry.path()).map_err(err)?;
            removed = removed.saturating_add(1);
        }
        Ok(removed)
    }

    /// `tmp/`: spill files of conversions go here (unnamed, so nothing is left behind).
    fn scratch_dir(&self) -> &Path {
        &self.tmp
    }

    fn space(&self) -> &Arc<DiskSpace> {
        &self.space
    }
}

/// A committed image file, open.
#[derive(Debug)]
struct LocalImage {
    id: String,
    file: tokio::fs::File,
    size: u64,
}

impl StoredImage for LocalImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(
        self: Box<Self>,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'static, Result<ImageStream, StoreError>> {
        Box::pin(async move {
            let LocalImage { id, mut file, .. } = *self;
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))
                    .await
                    .map_err(|source| StoreError::Reading { id, source })?;
            }
            let stream: ImageStream = Box::new(file.take(len));
            Ok(stream)
        })
    }
}

/// An image being written under `tmp/`: the local store's [`ImageWriter`], and the local
/// scratch file of any store's positional writers. Dropping it without committing removes
/// the file.
#[derive(Debug)]
pub struct PartFile {
    id: String,
    path: PathBuf,
    /// Where the image goes at commit.
    target: PathBuf,
    access: Access,
    file: Option<File>,
    written: u64,
    /// Bytes up to which writeback has been started.
    flushed: u64,
    /// The early-writeback thread, if one is running (at most one at a time).
    writeback: Option<std::thread::JoinHandle<()>>,
    /// Set by [`PartFile::use_direct_io`]: appends bypass the page cache.
    direct: Option<DirectAppender>,
    /// Whether an append writer already tried direct I/O (on its first append).
    direct_tried: bool,
    /// The volume's free-space checks.
    space: Arc<DiskSpace>,
    /// Bytes that may be written before free space is checked again.
    space_checked_upto: u64,
    committed: bool,
}

/// Writeback of a part file is started every this many bytes (one at a time), so the kernel writes the image
/// to disk while the import streams instead of all at once in the final `fdatasync`: with
/// 24 GiB of RAM the dirty-page thresholds would otherwise let a whole multi-GiB image sit in
/// the page cache (measured: a 2 GiB import spent 1.1 s in its commit fsync without this).
/// Written pages are then dropped from the page cache (see `start_writeback`).
pub const WRITEBACK_INTERVAL: u64 = 16 << 20;

impl PartFile {
    /// Makes the appends of [`PartFile::write_all`] bypass the page cache (see the `direct`
    /// module), when the file system supports direct I/O and nothing was written yet; returns
    /// whether they will. Only for images written from start to end by `write_all`: not with
    /// a [`positional_handle`](PartFile::positional_handle). An [`Access::Append`] writer
    /// calls it on its first [`ImageWriter::append`].
    pub fn use_direct_io(&mut self) -> bool {
        if self.direct.is_none() && self.written == 0 && self.file.is_some() {
            self.direct = DirectAppender::open(&self.path);
        }
        self.direct.is_some()
    }

    /// Appends `data` (blocking; call from a blocking thread).
    ///
    /// # Errors
    /// [`StoreError::Writing`] naming the offset, or [`StoreError::StorageFull`] (see
    /// [`PartFile::check_space`]).
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.check_space(u64::try_from(data.len()).unwrap_or(u64::MAX))?;
        let err = |offset, source| StoreError::Writing {
            id: self.id.clone(),
            offset,
            source,
        };
        if let Some(direct) = &mut self.direct {
            direct.append(data).map_err(|e| err(self.written, e))?;
            self.written = self
                .written
                .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| err(self.written, io::Error::other("part closed")))?;
        file.write_all(data).map_err(|e| err(self.written, e))?;
        self.wrote(u64::try_from(data.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// A second handle on the part file (readable and writable) for positional writes: a
    /// converter's output goes to offsets, not appended. Report the bytes written through it
    /// with [`PartFile::wrote`] so early writeback keeps up.
    ///
    /// # Errors
    /// [`StoreError::Writing`] when the descriptor cannot be duplicated.
    pub fn positional_handle(&self) -> Result<File, StoreError> {
        let err = |source| StoreError::Writing {
            id: self.id.clone(),
            offset: self.written,
            source,
        };
        self.file
            .as_ref()
            .ok_or_else(|| err(io::Error::other("part closed")))?
            .try_clone()
            .map_err(err)
    }

    /// Refuses `upcoming` more bytes when they could take the volume's free space below the
    /// reserve. Free space is read once per [`SPACE_CHECK_INTERVAL`] bytes: each check asks
    /// room for the bytes until the next check plus what direct I/O may still hold in its
    /// buffer, so between checks the import cannot eat into the reserve. Call before
    /// writing through a [`positional_handle`](PartFile::positional_handle).
    ///
    /// # Errors
    /// [`StoreError::StorageFull`].
    pub fn check_space(&mut self, upcoming: u64) -> Result<(), StoreError> {
        let next = self.written.saturating_add(upcoming);
        if next <= self.space_checked_upto {
            return Ok(());
        }
        let buffered = if self.direct.is_some() {
            u64::try_from(DIRECT_WRITE_SIZE).unwrap_or(u64::MAX)
        } else {
            0
        };
        let ahead = upcoming
            .saturating_add(SPACE_CHECK_INTERVAL)
            .saturating_add(buffered);
        self.space.check_import(ahead)?;
        self.space_checked_upto = next.saturating_add(SPACE_CHECK_INTERVAL);
        Ok(())
    }

    /// Refuses `bytes` more written on the part file's volume beside it (a conversion's spill
    /// file in the store's scratch directory) when they could take free space below the
    /// reserve. The caller checks once per [`SPACE_CHECK_INTERVAL`] bytes, asking room until
    /// its next check, as [`PartFile::check_space`] does for the part file.
    ///
    /// # Errors
    /// [`StoreError::StorageFull`].
    pub fn check_room(&self, bytes: u64) -> Result<(), StoreError> {
        Ok(self.space.check_import(bytes)?)
    }

    /// Records `len` more bytes written (by [`PartFile::write_all`] or through a
    /// [`positional_handle`](PartFile::positional_handle)), starting early writeback every
    /// [`WRITEBACK_INTERVAL`] bytes.
    pub fn wrote(&mut self, len: u64) {
        self.written = self.written.saturating_add(len);
        let pending = self.written.saturating_sub(self.flushed);
        let idle = self.writeback.as_ref().is_none_or(|t| t.is_finished());
        if pending >= WRITEBACK_INTERVAL && idle {
            if let Some(file) = &self.file {
                self.writeback = start_writeback(file, self.written);
            }
            self.flushed = self.written;
        }
    }

    /// Bytes written so far (for positional writes: the sum of their lengths, see
    /// [`PartFile::wrote`]).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The image id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Makes the part durable and visible as `images/<id>`: fsync the file, rename it, fsync
    /// the directory. Blocking; call from a blocking thread. On error the part file is
    /// removed.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] or [`StoreError::Committing`].
    pub fn commit(mut self) -> Result<(), StoreError> {
        let id = self.id.clone();
        if self.target.exists() {
            return Err(StoreError::AlreadyExists(id));
        }
        let err = |source| StoreError::Committing {
            id: id.clone(),
            source,
        };
        let file = self
            .file
            .take()
            .ok_or_else(|| err(io::Error::other("part closed")))?;
        if let Some(direct) = self.direct.take() {
            // The last direct write was padded to the alignment.
            direct.finish().map_err(err)?;
            file.set_len(self.written).map_err(err)?;
        }
        file.sync_all().map_err(err)?;
        drop(file);
        fs::rename(&self.path, &self.target).map_err(err)?;
        self.committed = true;
        let images = self.target.parent().unwrap_or(Path::new("."));
        File::open(images).and_then(|d| d.sync_all()).map_err(|e| {
            // Not durable, so not committed: nothing may stay visible (the contract).
            if let Err(removing) = fs::remove_file(&self.target) {
                tracing::warn!(path = %self.target.display(), error = %removing,
                    "removing an image whose commit failed");
            }
            err(e)
        })
    }

    /// Waits for the early writeback running now, if any.
    #[cfg(test)]
    fn wait_writeback(&mut self) {
        if let Some(t) = self.writeback.take() {
            t.join().unwrap();
        }
    }
}

impl ImageWriter for PartFile {
    fn id(&self) -> &str {
        &self.id
    }

    fn written(&self) -> u64 {
        self.written
    }

    /// Appends with direct I/O where the file system allows it (tried on the first append).
    fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.access != Access::Append {
            return Err(StoreError::WrongAccess {
                id: self.id.clone(),
                what: "append",
                access: self.access,
            });
        }
        if !self.direct_tried {
            self.direct_tried = true;
            if !self.use_direct_io() {
                tracing::debug!(
                    image_id = %self.id,
                    "direct I/O unavailable; writing through the page cache"
                );
            }
        }
        self.write_all(data)
    }

    fn scratch(&mut self) -> Option<&mut PartFile> {
        (self.access == Access::Positional).then_some(self)
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        PartFile::commit(*self)
    }

    fn abort(self: Box<Self>) {
        drop(self);
    }
}

/// Starts an `fdatasync` of `file` on a helper thread, so the kernel writes what is already
/// in the page cache while the import goes on streaming, then drops the pages of the first
/// `upto` bytes from the page cache (`POSIX_FADV_DONTNEED`). Durability still comes from the
/// `fdatasync` at commit; a failure here only loses the overlap, so it is logged and ignored.
///
/// Dropping behind keeps an import's page-cache footprint near [`WRITEBACK_INTERVAL`]
/// instead of the image's size, so a stream of large imports does not evict everything else
/// cached on the host. It is also faster here: on these VMs, page-cache pages taken from
/// memory never touched before cost several times more to fill than recycled ones. Without
/// it, each further 2 GiB import after the first spent 4.4–6.4 s of system CPU instead of
/// 2.0 s and its throughput fell from ~0.9 to ~0.6 of the hashing ceiling; with it, four
/// imports in a row all took 2.3–2.5 s of system CPU (`benches/import_bench.py`).
fn start_writeback(file: &File, upto: u64) -> Option<std::thread::JoinHandle<()>> {
    let clone = match file.try_clone() {
        Ok(clone) => clone,
        Err(e) => {
            tracing::debug!(error = %e, "cannot start early writeback");
            return None;
        }
    };
    std::thread::Builder::new()
        .name("sluice-writeback".into())
        .spawn(move || {
            crate::background::lower_priority();
            if let Err(e) = clone.sync_data() {
                tracing::debug!(error = %e, "early writeback failed; the commit will retry");
            }
            // Drop-behind: the bytes up to `upto` are on disk now, so their pages can go.
            // Only clean pages are dropped; a failure only costs memory.
            let len = std::num::NonZeroU64::new(upto);
            if let Err(e) = rustix::fs::fadvise(&clone, 0, len, rustix::fs::Advice::DontNeed) {
                tracing::debug!(error = %e, "cannot drop the written pages from the page cache");
            }
        })
        .ok()
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            self.file.take();
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "removing part file");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::space::SpaceError;
    use crate::store::MAX_ID_LEN;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn test_local_store_conformance_suite_passes() {
        let (dir, store) = store();
        crate::store::conformance::conformance_suite(&store).await;
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert_eq!(count(&dir.path().join("images")), 0);
    }

    #[test]
    fn test_store_commit_moves_part_into_images() {
        let (dir, store) = store();
        let mut part = store.begin_part("img-1", Access::Append).unwrap();
        part.append(b"hello ").unwrap();
        part.append(b"world").unwrap();
        assert_eq!(part.written(), 11);
        assert!(dir.path().join("tmp/img-1.part").exists());
        assert!(!dir.path().join("images/img-1").exists());
        part.commit().unwrap();
        let path = store.path("img-1").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world");
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert_eq!(store.list_ids().unwrap(), vec!["img-1".to_owned()]);
    }

    #[test]
    fn test_store_dropped_part_is_removed() {
        let (dir, store) = store();
        let mut part = store.begin_part("a", Access::Append).unwrap();
        part.append(b"x").unwrap();
        drop(part);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        store.begin("b", Access::Positional).unwrap().abort();
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert_eq!(count(&dir.path().join("images")), 0);
    }

    #[test]
    fn test_store_bad_ids_are_refused() {
        let (_dir, store) = store();
        for id in ["", "../x", "a/b", ".", "a b", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(
                matches!(
                    store.begin(id, Access::Append),
                    Err(StoreError::InvalidId(_))
                ),
                "{id}"
            );
        }
        assert!(matches!(store.path(".."), Err(StoreError::InvalidId(_))));
    }

    #[test]
    fn test_store_existing_image_is_not_overwritten() {
        let (_dir, store) = store();
        store.begin("a", Access::Append).unwrap().commit().unwrap();
        assert!(matches!(
            store.begin("a", Access::Append),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn test_store_concurrent_part_for_same_id_is_refused() {
        let (_dir, store) = store();
        let _first = store.begin("a", Access::Append).unwrap();
        assert!(matches!(
            store.begin("a", Access::Positional),
            Err(StoreError::Creating { .. })
        ));
    }

    #[test]
    fn test_store_sweep_tmp_removes_leftovers() {
        let (dir, store) = store();
        fs::write(dir.path().join("tmp/crashed.part"), b"junk").unwrap();
        fs::write(dir.path().join("tmp/other"), b"junk").unwrap();
        assert_eq!(store.sweep().unwrap(), 2);
        assert_eq!(count(&dir.path().join("tmp")), 0);
    }

    /// Bytes of `path` resident in the page cache, by util-linux's `fincore`.
    fn resident(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn test_store_written_pages_leave_the_page_cache_behind_writeback() {
        let (dir, store) = store();
        let mut part = store.begin_part("big", Access::Append).unwrap();
        let piece = vec![0x5au8; 1 << 20];
        let total = 4 * WRITEBACK_INTERVAL;
        for _ in 0..total / (1 << 20) {
            part.append(&piece).unwrap();
        }
        part.wait_writeback();
        let path = dir.path().join("tmp/big.part");
        // At least the first interval was written back and dropped.
        let cached = resident(&path);
        assert!(
            cached <= total - WRITEBACK_INTERVAL,
            "{cached} of {total} bytes still cached"
        );
        part.commit().unwrap();
        let committed = store.path("big").unwrap();
        assert_eq!(fs::metadata(committed).unwrap().len(), total);
    }

    /// Pattern bytes that differ between neighbouring 4 KiB blocks.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn test_store_direct_appends_round_trip_every_length() {
        let (dir, store) = store();
        let big = DIRECT_WRITE_SIZE;
        for (n, len) in [
            0,
            1,
            4095,
            4096,
            4097,
            big - 1,
            big,
            big + 1,
            2 * big + 12_345,
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("img-{n}");
            let data = pattern(len);
            let mut part = store.begin_part(&id, Access::Append).unwrap();
            assert!(part.use_direct_io(), "{}", dir.path().display());
            for piece in data.chunks(100_003) {
                part.append(piece).unwrap();
            }
            assert_eq!(part.written(), len as u64);
            part.commit().unwrap();
            let path = store.path(&id).unwrap();
            // Written around the page cache: nothing of it is cached until read.
            assert_eq!(resident(&path), 0, "length {len}");
            assert_eq!(fs::read(&path).unwrap(), data, "length {len}");
        }
    }

    #[test]
    fn test_store_append_writer_writes_around_the_page_cache() {
        let (_dir, store) = store();
        let data = pattern(2 * DIRECT_WRITE_SIZE + 4097);
        let mut writer = store.begin("a", Access::Append).unwrap();
        for piece in data.chunks(524_288) {
            writer.append(piece).unwrap();
        }
        writer.commit().unwrap();
        let path = store.path("a").unwrap();
        assert_eq!(resident(&path), 0);
        assert!(fs::read(&path).unwrap() == data);
    }

    #[test]
    fn test_store_direct_io_is_refused_once_written() {
        let (_dir, store) = store();
        let mut part = store.begin_part("a", Access::Append).unwrap();
        part.write_all(b"buffered").unwrap();
        assert!(!part.use_direct_io());
        part.write_all(b" still").unwrap();
        part.commit().unwrap();
        assert_eq!(
            fs::read(store.path("a").unwrap()).unwrap(),
            b"buffered still"
        );
    }

    #[test]
    fn test_store_dropped_direct_part_is_removed() {
        let (dir, store) = store();
        let mut part = store.begin_part("a", Access::Append).unwrap();
        assert!(part.use_direct_io());
        part.append(&pattern(DIRECT_WRITE_SIZE + 1)).unwrap();
        drop(part);
        assert_eq!(count(&dir.path().join("tmp")), 0);
        assert_eq!(count(&dir.path().join("images")), 0);
    }

    #[test]
    fn test_store_below_reserve_begin_storage_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_with_reserve(dir.path(), Reserve::Bytes(u64::MAX)).unwrap();
        assert!(matches!(
            store.begin("a", Access::Append),
            Err(StoreError::StorageFull(SpaceError {
                what: "reserve",
                ..
            }))
        ));
        assert_eq!(count(&dir.path().join("tmp")), 0);
    }

    #[test]
    fn test_store_delete_is_idempotent() {
        let (_dir, store) = store();
        store.begin("a", Access::Append).unwrap().commit().unwrap();
        store.delete("a").unwrap();
        store.delete("a").unwrap();
        assert!(store.list_ids().unwrap().is_empty());
    }
}
