//! The object store: image data in any S3-compatible service (AWS S3, Ceph RGW, MinIO,
//! Garage) through `aws-sdk-s3`; the second [`Store`] implementation.
//!
//! # Layout
//! Image `id` is the object `<prefix>images/<id>`: the key follows from the id, so recovery
//! and deletes need no lookup. An object exists only once its upload completed, so a reader
//! never sees a partial image. The object `<prefix>owner` names the metadata store the
//! prefix belongs to ([`Store::claim`], `s3::owner`): one prefix, one deployment.
//!
//! # Writing
//! [`Access::Append`] writers stream a multipart upload (`s3::writer`): parts of
//! [`S3Config::part_size`] bytes, at most [`S3Config::parts_in_flight`] of them uploading
//! while the next one fills, so one writer holds at most
//! `part_size × (parts_in_flight + 1)` bytes (24 MiB by default), and all the node's
//! writers share [`S3Config::node_parts_in_flight`] upload slots and reuse each other's
//! part buffers (`s3::parts`; [`S3Config::part_memory`] is the bound). The upload starts with the
//! first full part, not in `begin`; an image smaller than one part is a single `PutObject`
//! at commit. [`Access::Positional`] writers build the image in a local scratch file (a
//! [`PartFile`](super::PartFile) under the node's free-space reserve) and upload it at
//! commit the same way.
//!
//! # No orphans
//! A writer that is aborted, dropped or fails aborts its upload. A crash leaves an
//! unfinished upload, never an object; each node notes the uploads it starts in a journal on
//! its local disk (`<scratch>/uploads/<id>`: the key before `CreateMultipartUpload`, the
//! upload id once it is answered), and [`Store::sweep`] at the next start aborts exactly
//! those (a key-only entry: that key's uploads created within [`S3Config::create_timeout`]
//! of it, the longest its `CreateMultipartUpload` may take; O(leftovers), never a listing
//! of the bucket), so one node's start never touches another node's uploads, not even a
//! later upload of the same key by a node that took the import back. Uploads of a node that never comes back are aborted by
//! any live node's periodic [`Store::sweep_abandoned`] (and any node's start-up sweep) once
//! they are older than [`S3Config::abandon_after`]: that pass asks
//! `ListMultipartUploads` under the prefix, which lists unfinished uploads only, not the
//! stored images. [`Store::delete`] also aborts unfinished uploads of its exact key.
//!
//! # Blocking
//! The store owns a small tokio runtime for its requests ([`IO_THREADS`] threads). Blocking
//! methods spawn their request there and wait on a channel (inside `block_in_place` when
//! called from a multi-threaded runtime's worker), so nothing ever calls `block_on` inside
//! a runtime, and a caller on any runtime (or none) can wait.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use super::space::{DiskSpace, Reserve};
use super::{
    check_id, Access, BoxFuture, ImageStream, ImageWriter, LocalStore, Store, StoreError,
    StoredImage,
};

#[doc(hidden)]
pub mod garage;
mod owner;
mod parts;
mod writer;

use parts::PartPool;
use writer::S3Writer;

/// Default part size: 8 MiB. S3's minimum is 5 MiB (except the last part); with the
/// default [`DEFAULT_PARTS_IN_FLIGHT`] a writer holds 24 MiB, and four concurrent imports
/// 64 MiB of part buffers ([`S3Config::part_memory`]); a part this size keeps a request's fixed cost (a few
/// ms against a remote endpoint) under a few % at ~200 MB/s. The largest image is
/// `part_size × MAX_PARTS` (78 GiB by default); raise the part size for larger images.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 << 30;
/// S3's limit on parts per upload.
pub const MAX_PARTS: u32 = 10_000;
/// Default parts uploading at once per writer: two keep the link busy while the next part
/// fills (measured: a third adds nothing against Garage on loopback, see the README).
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;
/// Most parts in flight per writer, or per node, a configuration may ask for (memory is
/// `part_size × (parts_in_flight + 1)` per import).
pub const MAX_PARTS_IN_FLIGHT: usize = 64;
/// Default parts uploading at once on one node, all writers together: four, so that two
/// imports each keep their two in flight, and any number of imports into a store that lags
/// hold `part_size × (imports + 4)` bytes of part buffers (see `s3::parts`).
pub const DEFAULT_NODE_PARTS_IN_FLIGHT: usize = 4;
/// Default age after which any node's sweep aborts an unfinished upload it did not start
/// (a node that died and never came back): a day, far longer than any import runs, and the
/// granularity of S3's own `AbortIncompleteMultipartUpload` lifecycle rule.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Default bound on one `CreateMultipartUpload` (with its retries): a third of the
/// server's default 30 s lease. The server derives the bound from its lease
/// (`lease_secs / 3`): a node that took an import back creates its upload at least two
/// thirds of a lease after the dead node's last action, so the dead node's sweep, which
/// aborts only the key's uploads created within this bound of its journal note, never
/// reaches it (the last third is the margin for clocks).
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on one attempt of any request, from its start to the first byte of the
/// answer (the part's body is sent within it): a minute, 140 KB/s for a default part. A
/// store that takes a request and never answers (seen: Garage under load, one `UploadPart`
/// of four concurrent imports) would otherwise hold its import, and its lease, for ever; a
/// timed-out attempt is retried as any transient failure (three attempts in all), then the
/// import fails with `store_error`. Raise it with the part size on a slow link.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on opening a connection to the endpoint (the SDK's own default).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// Threads of the store's own runtime: requests are I/O, the bytes are hashed elsewhere.
pub const IO_THREADS: usize = 2;

/// Where and how to reach the bucket (`[store.s3]` in the server's configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL (`https://s3.example.net`, `http://127.0.0.1:3900`); `None`: AWS's
    /// endpoint for the region.
    pub endpoint: Option<String>,
    /// Region name (Garage's default is `garage`).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Prepended to every key (`""` or ending in `/`, e.g. `sluice/`).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual-hosted
    /// (`bucket.endpoint/key`): what Garage, MinIO and most private endpoints need.
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials, if any.
    pub session_token: Option<String>,
    /// Bytes per multipart part ([`DEFAULT_PART_SIZE`]).
    pub part_size: usize,
    /// Parts uploading at once per writer ([`DEFAULT_PARTS_IN_FLIGHT`]).
    pub parts_in_flight: usize,
    /// Parts uploading at once on the node, all writers together
    /// ([`DEFAULT_NODE_PARTS_IN_FLIGHT`]).
    pub node_parts_in_flight: usize,
    /// Unfinished uploads older than this are aborted by any node's sweep
    /// ([`DEFAULT_ABANDON_AFTER`]).
    pub abandon_after: Duration,
    /// Longest a `CreateMultipartUpload` may take, retries included, before the writer
    /// gives up ([`DEFAULT_CREATE_TIMEOUT`]); also how long after a key-only journal entry
    /// the sweep counts an upload of that key as the one the entry's create made.
    pub create_timeout: Duration,
    /// Longest one attempt of a request may take until its answer starts
    /// ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Whether part and object bodies are signed (SigV4 over a SHA-256 of the body) or sent
    /// as `UNSIGNED-PAYLOAD`. Signing costs a SHA-256 pass over every byte here and another
    /// at the endpoint that checks it; over TLS it protects nothing TLS does not, so the
    /// server's configuration signs only over plain `http://` unless told otherwise (the
    /// choice the AWS SDK for Java makes by default). Headers are always signed.
    pub sign_payload: bool,
}

impl fmt::Debug for S3Config {
    /// Everything but the secret and the session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .field("node_parts_in_flight", &self.node_parts_in_flight)
            .field("abandon_after", &self.abandon_after)
            .field("request_timeout", &self.request_timeout)
            .field("sign_payload", &self.sign_payload)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Checks the values a store cannot work with.
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() {
            return Err("store.s3.bucket is empty".into());
        }
        if self.region.is_empty() {
            return Err("store.s3.region is empty".into());
        }
        if !self.prefix.is_empty() && !self.prefix.ends_with('/') {
            return Err(format!(
                "store.s3.prefix {:?} must be empty or end with '/'",
                self.prefix
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| format!("store.s3.endpoint {endpoint:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("store.s3.endpoint {endpoint:?} is not http(s)"));
            }
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            return Err("store.s3 credentials missing: set access_key_id and \
                 secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .into());
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(format!(
                "store.s3.part_size {} is outside S3's {MIN_PART_SIZE}..={MAX_PART_SIZE}",
                self.part_size
            ));
        }
        if self.create_timeout.is_zero() {
            return Err("store.s3 create timeout must be above zero".into());
        }
        if self.request_timeout.is_zero() {
            return Err("store.s3.request_timeout_secs must be above zero".into());
        }
        for (name, value) in [
            ("parts_in_flight", self.parts_in_flight),
            ("node_parts_in_flight", self.node_parts_in_flight),
        ] {
            if !(1..=MAX_PARTS_IN_FLIGHT).contains(&value) {
                return Err(format!(
                    "store.s3.{name} {value} is outside 1..={MAX_PARTS_IN_FLIGHT}"
                ));
            }
        }
        Ok(())
    }

    /// The most memory `writers` open writers hold in part buffers: one filling part each,
    /// and the parts uploading, at most `parts_in_flight` a writer and
    /// `node_parts_in_flight` in all: `part_size × (writers + min(node_parts_in_flight,
    /// writers × parts_in_flight))`.
    pub fn part_memory(&self, writers: usize) -> u64 {
        let uploading = writers
            .saturating_mul(self.parts_in_flight)
            .min(self.node_parts_in_flight);
        let parts = u64::try_from(writers.saturating_add(uploading)).unwrap_or(u64::MAX);
        u64::try_from(self.part_size)
            .unwrap_or(u64::MAX)
            .saturating_mul(parts)
    }
}

/// The client, bucket and runtime every request needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Io {
    client: Client,
    bucket: Arc<str>,
    handle: Handle,
    /// [`S3Config::sign_payload`].
    sign_payload: bool,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Io {
    /// Runs `fut` on the store's runtime and waits for it from any thread (see the module
    /// documentation); `Err` when the runtime is gone.
    fn wait<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let recv = move || {
            rx.recv()
                .map_err(|_| io::Error::other("the object store's runtime stopped"))
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(recv),
            _ => recv(),
        }
    }

    /// Runs `fut` on the store's runtime and awaits it from any runtime.
    async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        self.handle
            .spawn(fut)
            .await
            .map_err(|e| io::Error::other(format!("object store request stopped: {e}")))
    }
}

/// An S3 request's failure as an `io::Error` naming the operation and the service's code; an
/// answer without one (a `HEAD` has no body) by its HTTP status, with what that usually means.
pub(crate) fn s3_error<E>(what: &str, err: SdkError<E, HttpResponse>) -> io::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            match (e.code(), e.message().filter(|m| !m.is_empty())) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (code, _) => {
                    let hint = match status {
                        400 => ": a wrong region?",
                        403 => ": access denied, check the key id and secret",
                        404 => ": no such bucket or key",
                        _ => "",
                    };
                    match code {
                        Some(code) => format!("{code} (HTTP {status}{hint})"),
                        None => format!("HTTP {status}{hint}"),
                    }
                }
            }
        }
        // The chain of causes (`DisplayErrorContext` adds a `Debug` dump of it).
        other => super::error_chain(other),
    };
    io::Error::other(format!("{what}: {detail}"))
}

/// Image data in an S3 bucket (see the module documentation).
pub struct S3Store {
    io: Io,
    config: S3Config,
    /// `<prefix>images/`.
    images: String,
    /// Local scratch: positional writers' part files (`tmp/`), conversion spill.
    scratch: LocalStore,
    /// The upload journal, `<scratch>/uploads/`.
    journal: PathBuf,
    /// Every writer's part buffers and upload slots.
    parts: Arc<PartPool>,
    /// Owned so requests outlive any caller's runtime; shut down in the background on drop.
    runtime: Option<Runtime>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.config)
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl S3Store {
    /// A store on `config`'s bucket, with its local scratch area (and upload journal) in
    /// `scratch_dir`, kept above `reserve`. Checks the bucket answers (`HeadBucket`).
    ///
    /// # Errors
    /// [`StoreError::Opening`] when the configuration is invalid, the scratch area cannot
    /// be created or the bucket cannot be reached.
    pub fn open(
        config: S3Config,
        scratch_dir: &Path,
        reserve: Reserve,
    ) -> Result<Self, StoreError> {
        let location = PathBuf::from(format!("s3://{}/{}", config.bucket, config.prefix));
        let opening = |source| StoreError::Opening {
            path: location.clone(),
            source,
        };
        config
            .validate()
            .map_err(|e| opening(io::Error::other(e)))?;
        let scratch = LocalStore::open_with_reserve(scratch_dir, reserve)?;
        let journal = scratch_dir.join("uploads");
        std::fs::create_dir_all(&journal).map_err(|source| StoreError::Opening {
            path: journal.clone(),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("sluice-s3")
            .enable_all()
            .build()
            .map_err(opening)?;
        let io = Io {
            client: Client::from_conf(client_config(&config)),
            bucket: Arc::from(config.bucket.as_str()),
            handle: runtime.handle().clone(),
            sign_payload: config.sign_payload,
        };
        let images = format!("{}images/", config.prefix);
        let parts = PartPool::new(config.part_size, config.node_parts_in_flight);
        let store = S3Store {
            io,
            config,
            images,
            scratch,
            journal,
            parts,
            runtime: Some(runtime),
        };
        let head = store
            .io
            .client
            .head_bucket()
            .bucket(store.config.bucket.as_str())
            .send();
        store
            .io
            .wait(head)
            .and_then(|r| r.map_err(|e| s3_error("HeadBucket", e)))
            .map_err(opening)?;
        Ok(store)
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The object key of image `id`.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`].
    pub fn key(&self, id: &str) -> Result<String, StoreError> {
        check_id(id)?;
        Ok(format!("{}{id}", self.images))
    }

    /// The keys of all unfinished multipart uploads under the prefix, sorted (for
    /// operators and tests: what a sweep would look at).
    ///
    /// # Errors
    /// [`StoreError::Opening`] when they cannot be listed.
    pub fn unfinished_uploads(&self) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = self
            .list_uploads(&self.config.prefix)?
            .into_iter()
            .map(|u| u.key)
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn opening_err(&self, source: io::Error) -> StoreError {
        StoreError::Opening {
            path: PathBuf::from(format!(
                "s3://{}/{}",
                self.config.bucket, self.config.prefix
            )),
            source,
        }
    }

    /// Every unfinished upload whose key starts with `prefix` (pages of 1,000).
    fn list_uploads(&self, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut req = self
                .io
                .client
                .list_multipart_uploads()
                .bucket(&*self.io.bucket)
                .prefix(prefix);
            if let Some((key, upload)) = &markers {
                req = req.key_marker(key).upload_id_marker(upload);
            }
            let out = self
                .io
                .wait(req.send())
                .and_then(|r| r.map_err(|e| s3_error("ListMultipartUploads", e)))
                .map_err(|e| self.opening_err(e))?;
            for u in out.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    let initiated = u.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                    uploads.push(Upload {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                        initiated,
                    });
                }
            }
            match (
                out.is_truncated(),
                out.next_key_marker(),
                out.next_upload_id_marker(),
            ) {
                (Some(true), Some(key), Some(upload)) => {
                    markers = Some((key.to_owned(), upload.to_owned()));
                }
                _ => return Ok(uploads),
            }
        }
    }

    /// Aborts one upload; one that is already gone counts as aborted.
    fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        abort_upload(&self.io, key, upload_id).map_err(|e| self.opening_err(e))
    }

    /// The journal's leftovers: uploads this node started and never finished.
    fn sweep_journal(&self) -> Result<usize, StoreError> {
        let err = |source| StoreError::Opening {
            path: self.journal.clone(),
            source,
        };
        let mut removed = 0usize;
        for entry in std::fs::read_dir(&self.journal).map_err(err)? {
            let path = entry.map_err(err)?.path();
            let text = std::fs::read_to_string(&path).map_err(err)?;
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(key), Some(upload_id)) => self.abort_upload(key, upload_id)?,
                // Noted before its upload was created: abort what that create made.
                (Some(key), None) if key.starts_with(&self.config.prefix) => {
                    let noted = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map_err(err)?;
                    self.abort_uploads_of(key, noted)?;
                }
                _ => {}
            }
            std::fs::remove_file(&path).map_err(err)?;
            removed = removed.saturating_add(1);
        }
        Ok(removed)
    }

    /// Aborts the uploads of exactly `key` that were created by the time a create started at
    /// `noted` could have finished ([`S3Config::create_timeout`]): the one a crash left
    /// unnoted. A later upload of the key is another writer's: a node that took the import
    /// of this image back (a `web-download` keeps its image id from run to run), which
    /// starts at least two thirds of a lease after the crashed node's last action, later
    /// than this bound (see [`DEFAULT_CREATE_TIMEOUT`]).
    fn abort_uploads_of(&self, key: &str, noted: SystemTime) -> Result<(), StoreError> {
        // (A time past the clock's range: every upload was created by then.)
        let until = noted.checked_add(self.config.create_timeout);
        for upload in self.list_uploads(key)? {
            let created_then = match (upload.initiated, until) {
                (Some(t), Some(until)) => t <= until,
                _ => true,
            };
            if upload.key == key && created_then {
                tracing::warn!(key, "aborting a multipart upload whose id was never noted");
                self.abort_upload(&upload.key, &upload.upload_id)?;
            }
        }
        Ok(())
    }
}

/// One unfinished multipart upload.
#[derive(Debug)]
struct Upload {
    key: String,
    upload_id: String,
    initiated: Option<SystemTime>,
}

/// Aborts upload `upload_id` of `key`; `NoSuchUpload` counts as done.
pub(crate) fn abort_upload(io: &Io, key: &str, upload_id: &str) -> io::Result<()> {
    let req = io
        .client
        .abort_multipart_upload()
        .bucket(&*io.bucket)
        .key(key)
        .upload_id(upload_id)
        .send();
    match io.wait(req)? {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(s3_error("AbortMultipartUpload", e)),
    }
}

/// The SDK configuration: static credentials, the endpoint, path style; checksums only
/// where S3 requires them (the pipeline hashes every byte already; TLS protects transit).
fn client_config(config: &S3Config) -> aws_sdk_s3::Config {
    use aws_sdk_s3::config::{
        timeout::TimeoutConfig, BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let credentials = Credentials::new(
        config.access_key_id.clone(),
        config.secret_access_key.clone(),
        config.session_token.clone(),
        None,
        "sluice-config",
    );
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(config.path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT.min(config.request_timeout))
                .read_timeout(config.request_timeout)
                .build(),
        )
        .http_client(http);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder.build()
}

impl Store for S3Store {
    /// No request: the upload starts with the first full part. Only positional writers
    /// take local space (their scratch file, under the reserve).
    fn begin(&self, id: &str, access: Access) -> Result<Box<dyn ImageWriter>, StoreError> {
        let key = self.key(id)?;
        let scratch = match access {
            Access::Append => None,
            Access::Positional => Some(self.scratch.begin_part(id, access)?),
        };
        Ok(Box::new(S3Writer::new(
            self.io.clone(),
            id,
            key,
            scratch,
            &self.config,
            self.parts.join(),
            self.journal.join(id),
        )))
    }

    fn open<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn StoredImage>>, StoreError>> {
        Box::pin(async move {
            let key = self.key(id)?;
            let err = |source| StoreError::Reading {
                id: id.to_owned(),
                source,
            };
            let req = self
                .io
                .client
                .head_object()
                .bucket(&*self.io.bucket)
                .key(&key)
                .send();
            let size = match self.io.run(req).await.map_err(err)? {
                Ok(head) => head.content_length().unwrap_or(0),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                    return Ok(None)
                }
                Err(e) => return Err(err(s3_error("HeadObject", e))),
            };
            let image: Box<dyn StoredImage> = Box::new(S3Image {
                io: self.io.clone(),
                id: id.to_owned(),
                key,
                size: u64::try_from(size).unwrap_or(0),
            });
            Ok(Some(image))
        })
    }

    /// Deletes the object and aborts any unfinished upload of its key (an import still
    /// running for a deleted image then fails at commit, leaving nothing).
    fn delete(&self, id: &str) -> Result<(), StoreError> {
        let key = self.key(id)?;
        let err = |source| StoreError::Deleting {
            id: id.to_owned(),
            source,
        };
        let req = self
            .io
            .client
            .delete_object()
            .bucket(&*self.io.bucket)
            .key(&key)
            .send();
        self.io
            .wait(req)
            .map_err(err)?
            .map_err(|e| err(s3_error("DeleteObject", e)))?;
        let uploads = self.list_uploads(&key).map_err(|e| match e {
            StoreError::Opening { source, .. } => err(source),
            other => other,
        })?;
        for upload in uploads.iter().filter(|u| u.key == key) {
            abort_upload(&self.io, &upload.key, &upload.upload_id).map_err(err)?;
        }
        Ok(())
    }

    /// The object `<prefix>owner` names the owner (`s3::owner`).
    fn claim(&self, owner: &str) -> Result<(), StoreError> {
        self.claim_prefix(owner)
    }

    fn list_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .io
                .client
                .list_objects_v2()
                .bucket(&*self.io.bucket)
                .prefix(&self.images)
                .set_continuation_token(token.take())
                .send();
            let out = self
                .io
                .wait(req)
                .and_then(|r| r.map_err(|e| s3_error("ListObjectsV2", e)))
                .map_err(|e| self.opening_err(e))?;
            for object in out.contents() {
                let id = object.key().and_then(|k| k.strip_prefix(&self.images));
                if let Some(id) = id.filter(|id| check_id(id).is_ok()) {
                    ids.push(id.to_owned());
                }
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Local scratch files, then this node's journal of unfinished uploads, then uploads of
    /// any node older than [`S3Config::abandon_after`].
    fn sweep(&self) -> Result<usize, StoreError> {
        let removed = self.scratch.sweep()?;
        let removed = removed.saturating_add(self.sweep_journal()?);
        Ok(removed.saturating_add(self.sweep_abandoned()?))
    }

    /// Uploads of any node older than [`S3Config::abandon_after`] (one
    /// `ListMultipartUploads` pass under the prefix: unfinished uploads only, never the
    /// stored images).
    fn sweep_abandoned(&self) -> Result<usize, StoreError> {
        let mut removed = 0usize;
        let now = SystemTime::now();
        for upload in self.list_uploads(&self.config.prefix)? {
            let abandoned = upload
                .initiated
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= self.config.abandon_after);
            if abandoned {
                tracing::warn!(key = %upload.key, "aborting an abandoned multipart upload");
                self.abort_upload(&upload.key, &upload.upload_id)?;
                removed = removed.saturating_add(1);
            }
        }
        Ok(removed)
    }

    /// The local scratch area's `tmp/`.
    fn scratch_dir(&self) -> &Path {
        self.scratch.scratch_dir()
    }

    fn space(&self) -> &Arc<DiskSpace> {
        self.scratch.space()
    }
}

/// A committed object, its size known from `HeadObject`.
#[derive(Debug)]
struct S3Image {
    io: Io,
    id: String,
    key: String,
    size: u64,
}

impl StoredImage for S3Image {
    fn size(&self) -> u64 {
        self.size
    }

    /// One ranged `GetObject`, streamed as it arrives.
    fn read(
        self: Box<Self>,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'static, Result<ImageStream, StoreError>> {
        Box::pin(async move {
            if len == 0 {
                let empty: ImageStream = Box::new(tokio::io::empty());
                return Ok(empty);
            }
            let S3Image { io, id, key, .. } = *self;
            let last = offset.saturating_add(len).saturating_sub(1);
            let req = io
                .client
                .get_object()
                .bucket(&*io.bucket)
                .key(&key)
                .range(format!("bytes={offset}-{last}"))
                .send();
            let err = |source| StoreError::Reading {
                id: id.clone(),
                source,
            };
            let out = io
                .run(req)
                .await
                .map_err(err)?
                .map_err(|e| err(s3_error("GetObject", e)))?;
            let stream: ImageStream = Box::new(Box::pin(out.body.into_async_read()));
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests;
