//! Image data behind one [`Store`] trait: what the import pipeline writes, the API downloads
//! and recovery sweeps. [`LocalStore`] (a directory on the data volume) is its first
//! implementation; an object store (S3 multipart uploads) is meant to be the second, and
//! [`conformance::conformance_suite`] is what both must pass.
//!
//! # The contract
//! Every implementation keeps these promises; the conformance suite checks each one that a
//! test can observe.
//!
//! - **Ids** are 1 to [`MAX_ID_LEN`] ASCII letters, digits, `-` and `_`; any other id is
//!   [`StoreError::InvalidId`] from every method, before anything is touched.
//! - **Writing** starts with [`Store::begin`] and its [`Access`]:
//!   - [`Access::Append`]: the bytes arrive front to back ([`ImageWriter::append`]). Nothing
//!     has to be kept locally: an object store streams them as a multipart upload, its memory
//!     bounded by part size × parts in flight; the local store writes them with direct I/O.
//!   - [`Access::Positional`]: a converter writes at offsets and may read its output back
//!     (the second read of a conversion whose output came out of order). Those writers build
//!     the image in a local scratch file ([`ImageWriter::scratch`], a [`PartFile`] under the
//!     free-space reserve); an object store uploads it at commit, the local store renames it.
//! - **Before commit** a writer's data is invisible: [`Store::open`] answers `None` and
//!   [`Store::list_ids`] leaves the id out, whatever was written.
//! - **Commit** ([`ImageWriter::commit`]) is atomic and durable: once it returns `Ok`, the
//!   image reads back as exactly the bytes written (positional holes read as zeros), is
//!   listed, and survives a crash; a committed image is never replaced (a second writer for
//!   the id fails with [`StoreError::AlreadyExists`] at `begin`, or at the latest at commit,
//!   and leaves the first image as it was). On `Err`, or when a crash interrupts it, nothing
//!   is visible and the writer's data is removed (by the sweep, after a crash).
//! - **Abort** ([`ImageWriter::abort`], or dropping a writer) removes everything the writer
//!   wrote; nothing becomes visible. Committed images of other ids are untouched.
//! - **A crash** (`kill -9`, power loss) at any point leaves committed images whole and
//!   everything else invisible; [`Store::sweep`] at the next start removes the leftovers of
//!   writers that were never committed or aborted. The sweep costs O(leftovers), never
//!   O(stored images): data in flight is kept apart from committed data (the local store's
//!   `tmp/` directory; an object store's unfinished multipart uploads, which the backend lists
//!   on their own, and its local scratch). A store shared by several nodes scopes what its
//!   sweep removes to its own node (a per-node key prefix), so one node's start never aborts
//!   another node's uploads.
//! - **Delete** ([`Store::delete`]) is idempotent: after `Ok`, `open` answers `None` and the
//!   id is not listed. A reader opened before may still finish, or fail; it never sees other
//!   bytes.
//! - **Reads** ([`Store::open`], then [`StoredImage::read`] of any range inside the image)
//!   give the committed bytes.
//! - **Concurrency**: one writer per id at a time is the caller's job (the import lock in
//!   the metadata store); the local store also refuses a second writer of an id with
//!   [`StoreError::Creating`], an object store need not notice. Writers of different ids,
//!   readers and deletes run concurrently.
//!
//! # Blocking
//! Like the metadata store's, the methods block (the local store's are a few system calls,
//! an object store's wait on a request) except [`Store::open`] and [`StoredImage::read`],
//! which the download streams through the async runtime. The pipeline calls `begin` on the
//! runtime (so it must not wait on the network), the writers' methods from its lane threads
//! and `commit` from `spawn_blocking`; the server calls
//! `delete`, `sweep` and `list_ids` where it calls the metadata store. An object store
//! waits on its requests with `Handle::block_on` on the pipeline's threads and
//! `tokio::task::block_in_place` on the runtime's (the server's runtime is multi-threaded),
//! and starts its multipart upload with the first part, not in `begin`.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub mod conformance;
mod direct;
mod local;
pub mod s3;
pub mod space;

pub use direct::DIRECT_WRITE_SIZE;
pub use local::{LocalStore, PartFile, WRITEBACK_INTERVAL};
pub use s3::{S3Config, S3Store};
use space::{DiskSpace, SpaceError};

/// Longest accepted image id (a UUID is 36).
pub const MAX_ID_LEN: usize = 128;

/// A boxed future that can move between threads (what [`Store::open`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The bytes of a range of a committed image, read as they are sent.
pub type ImageStream = Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>;

/// `err` and its causes, joined by `: `, each once: a cause whose text the error before it
/// already ends with (a [`StoreError`] shows its source in its own text) is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !last.ends_with(&text) {
            out = format!("{out}: {text}");
        }
        last = text;
        cause = e.source();
    }
    out
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An image with this id is already committed.
    #[error("image '{0}' already exists in the store")]
    AlreadyExists(String),
    /// Committing (fsync, rename, directory fsync; or completing an upload) failed.
    #[error("committing image '{id}': {source}")]
    Committing {
        /// The image id.
        id: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating the part file failed (also: a writer for the id is in flight).
    #[error("creating {path}: {source}")]
    Creating {
        /// The file that could not be created.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Deleting an image failed.
    #[error("deleting image '{id}': {source}")]
    Deleting {
        /// The image id.
        id: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The id is empty, too long or has characters other than ASCII letters, digits, `-`, `_`.
    #[error("'{0}' is not a valid image id")]
    InvalidId(String),
    /// Opening or listing the store failed.
    #[error("opening store at {path}: {source}")]
    Opening {
        /// The directory (or bucket and prefix).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a committed image failed.
    #[error("reading image '{id}': {source}")]
    Reading {
        /// The image id.
        id: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Free space on the data volume is below the reserve (see [`space`]).
    #[error(transparent)]
    StorageFull(#[from] SpaceError),
    /// The writer was used against its [`Access`] (a bug of the caller).
    #[error("image '{id}': {what} is not allowed on a writer opened for {access:?} access")]
    WrongAccess {
        /// The image id.
        id: String,
        /// What was attempted.
        what: &'static str,
        /// How the writer was opened.
        access: Access,
    },
    /// A writer stage stopped unexpectedly (panic or runtime shutdown).
    #[error("the store writer stopped unexpectedly")]
    WriterStopped,
    /// Writing image data failed (disk full, I/O error).
    #[error("writing image '{id}' at offset {offset}: {source}")]
    Writing {
        /// The image id.
        id: String,
        /// Bytes already written.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
}

/// How an image will be written (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Front to back, by [`ImageWriter::append`]: streamable to an object store as it comes.
    Append,
    /// At offsets, with reads back, in a local scratch file ([`ImageWriter::scratch`]).
    Positional,
}

/// Where images live: the contract is in the module documentation.
pub trait Store: fmt::Debug + Send + Sync {
    /// Starts writing image `id`. Nothing is visible until [`ImageWriter::commit`].
    ///
    /// # Errors
    /// [`StoreError::InvalidId`]; [`StoreError::AlreadyExists`] when `id` is committed (if the
    /// store can tell without a round trip; else `commit` says so);
    /// [`StoreError::StorageFull`] when the local volume is below its reserve;
    /// [`StoreError::Creating`] when the writer's data cannot be created.
    fn begin(&self, id: &str, access: Access) -> Result<Box<dyn ImageWriter>, StoreError>;

    /// Opens committed image `id` for reading; `None` when no such image is committed.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`] or [`StoreError::Reading`].
    fn open<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn StoredImage>>, StoreError>>;

    /// Deletes committed image `id`; deleting an image that is not there succeeds.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`] or [`StoreError::Deleting`].
    fn delete(&self, id: &str) -> Result<(), StoreError>;

    /// The ids of all committed images, sorted. Costs O(stored images): for start-up
    /// recovery only.
    ///
    /// # Errors
    /// [`StoreError::Opening`] when the store cannot be listed.
    fn list_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Commits the complete local file `file` as image `id` (a staged `glance-direct`
    /// import), then removes `file`. The default copies it through an [`Access::Append`]
    /// writer (what an object store does); a store on the file's volume may move it.
    ///
    /// # Errors
    /// As [`Store::begin`] and [`ImageWriter::commit`]; [`StoreError::Reading`] when `file`
    /// cannot be read.
    fn adopt(&self, id: &str, file: &Path) -> Result<(), StoreError> {
        copy_into(self, id, file)
    }

    /// Removes what writers of an earlier run left behind (a crash); returns how many
    /// leftovers were removed. Call at start-up, before any writer begins: writers of this
    /// run in flight may be removed too. Costs O(leftovers).
    ///
    /// # Errors
    /// [`StoreError::Opening`] when the leftovers cannot be listed or removed.
    fn sweep(&self) -> Result<usize, StoreError>;

    /// Removes what writers of nodes that are gone left in a store several nodes share;
    /// returns how many leftovers were removed. Safe while this node's writers run, so a
    /// live node calls it periodically (a node that dies and never starts again has no
    /// [`Store::sweep`] of its own). A store only one node writes has nothing of others':
    /// the default removes nothing.
    ///
    /// # Errors
    /// [`StoreError::Opening`] when the leftovers cannot be listed or removed.
    fn sweep_abandoned(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Claims the store for `owner`, the metadata store whose records name its images: the
    /// first claim is kept in the store, and a later one by another owner fails, so that a
    /// node never takes another deployment's images for leftovers of its own (start-up
    /// recovery on metadata of its own deletes the images it has no record of). Call at
    /// start-up, before recovery.
    ///
    /// # Errors
    /// [`StoreError::Opening`] when another owner holds the store or the claim cannot be
    /// read or written.
    fn claim(&self, owner: &str) -> Result<(), StoreError>;

    /// The local directory for scratch data that dies with its process: a conversion's spill
    /// (unnamed files, removed by the OS when closed).
    fn scratch_dir(&self) -> &Path;

    /// Free-space checks of the local volume that holds the scratch data (and, for the local
    /// store, the images): shared with the metadata store's guard.
    fn space(&self) -> &Arc<DiskSpace>;
}

/// A shared store is a store: `&Arc<dyn Store>` (what the server's state holds) passes where
/// `&dyn Store` is taken.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn begin(&self, id: &str, access: Access) -> Result<Box<dyn ImageWriter>, StoreError> {
        (**self).begin(id, access)
    }

    fn open<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn StoredImage>>, StoreError>> {
        (**self).open(id)
    }

    fn delete(&self, id: &str) -> Result<(), StoreError> {
        (**self).delete(id)
    }

    fn list_ids(&self) -> Result<Vec<String>, StoreError> {
        (**self).list_ids()
    }

    fn adopt(&self, id: &str, file: &Path) -> Result<(), StoreError> {
        (**self).adopt(id, file)
    }

    fn sweep(&self) -> Result<usize, StoreError> {
        (**self).sweep()
    }

    fn sweep_abandoned(&self) -> Result<usize, StoreError> {
        (**self).sweep_abandoned()
    }

    fn claim(&self, owner: &str) -> Result<(), StoreError> {
        (**self).claim(owner)
    }

    fn scratch_dir(&self) -> &Path {
        (**self).scratch_dir()
    }

    fn space(&self) -> &Arc<DiskSpace> {
        (**self).space()
    }
}

/// Bytes read from an adopted file per append (what [`Store::adopt`]'s default holds).
const ADOPT_CHUNK: usize = 4 << 20;

/// [`Store::adopt`]'s default: the file's bytes through an append writer, then the file
/// removed.
///
/// # Errors
/// As [`Store::adopt`].
pub fn copy_into<S: Store + ?Sized>(store: &S, id: &str, file: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let err = |source| StoreError::Reading {
        id: id.to_owned(),
        source,
    };
    let mut input = std::fs::File::open(file).map_err(err)?;
    let mut writer = store.begin(id, Access::Append)?;
    let mut buf = vec![0u8; ADOPT_CHUNK];
    loop {
        let n = input.read(&mut buf).map_err(err)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        writer.append(chunk)?;
    }
    writer.commit()?;
    std::fs::remove_file(file).map_err(err)
}

/// An image being written (see the module documentation). Dropping it without
/// [`commit`](ImageWriter::commit) aborts it.
pub trait ImageWriter: fmt::Debug + Send {
    /// The image id.
    fn id(&self) -> &str;

    /// Bytes written so far (for positional writes: as reported through
    /// [`PartFile::wrote`]).
    fn written(&self) -> u64;

    /// Appends `data` ([`Access::Append`] writers only).
    ///
    /// # Errors
    /// [`StoreError::Writing`] naming the offset, [`StoreError::StorageFull`], or
    /// [`StoreError::WrongAccess`] on a positional writer.
    fn append(&mut self, data: &[u8]) -> Result<(), StoreError>;

    /// The local scratch file a positional writer's image is built in: write at offsets
    /// through [`PartFile::positional_handle`], checking [`PartFile::check_space`] first and
    /// reporting [`PartFile::wrote`] after. `None` for [`Access::Append`] writers.
    fn scratch(&mut self) -> Option<&mut PartFile>;

    /// Sends everything written but the commit itself (an object store's last parts), so
    /// that the [`commit`](Self::commit) which follows is one short request; nothing
    /// becomes visible. Writers with nothing to send first keep the default.
    ///
    /// # Errors
    /// [`StoreError::Committing`]; the writer is then only good to drop (which removes its
    /// data).
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Makes the image durable and visible, atomically (the contract's "Commit").
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] or [`StoreError::Committing`]; the writer's data is
    /// removed in either case.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;

    /// Removes everything written (same as dropping the writer).
    fn abort(self: Box<Self>);
}

/// A committed image opened by [`Store::open`].
pub trait StoredImage: fmt::Debug + Send {
    /// The image's length in bytes.
    fn size(&self) -> u64;

    /// A stream of the `len` bytes from `offset`, and no more (the caller keeps the range
    /// inside [`size`]).
    ///
    /// # Errors
    /// [`StoreError::Reading`].
    ///
    /// [`size`]: StoredImage::size
    fn read(
        self: Box<Self>,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'static, Result<ImageStream, StoreError>>;
}

/// Refuses ids outside the contract's alphabet and length.
///
/// # Errors
/// [`StoreError::InvalidId`].
pub(crate) fn check_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidId(id.to_owned()))
    }
}
