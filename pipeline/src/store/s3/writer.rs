//! [`S3Writer`]: one image's multipart upload, its memory bounded by
//! `part_size × (parts_in_flight + 1)` (the parts uploading plus the one filling), and the
//! node's by its [`PartPool`](super::parts::PartPool).

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::parts::Member;
use super::{abort_upload, s3_error, Io, S3Config, MAX_PARTS};
use crate::store::{Access, ImageWriter, PartFile, StoreError};

/// An image being written to the bucket (see the parent module).
#[derive(Debug)]
pub(crate) struct S3Writer {
    io: Io,
    id: String,
    key: String,
    access: Access,
    /// Positional writers' local file, uploaded at commit.
    scratch: Option<PartFile>,
    part_size: usize,
    parts_in_flight: usize,
    /// The node's part buffers and upload slots.
    parts: Member,
    /// [`S3Config::create_timeout`].
    create_timeout: Duration,
    /// The part filling (appends; the tail of a positional image at commit).
    buf: Vec<u8>,
    /// The multipart upload's id, once the first part went out.
    upload: Option<String>,
    /// This writer's entry in the node's upload journal (written when the upload starts).
    journal: PathBuf,
    /// Parts uploaded, in order.
    done: Vec<CompletedPart>,
    /// Parts uploading, oldest first; never more than `parts_in_flight`.
    in_flight: VecDeque<JoinHandle<io::Result<CompletedPart>>>,
    /// Number of the next part (S3 numbers them from 1).
    next_part: u32,
    written: u64,
    /// Everything but the commit is sent ([`ImageWriter::flush`]).
    flushed: bool,
    /// Committed or cleaned up: nothing is left for `Drop`.
    finished: bool,
}

impl S3Writer {
    /// A writer of `key` that has sent nothing yet; positional when given a scratch file.
    pub(crate) fn new(
        io: Io,
        id: &str,
        key: String,
        scratch: Option<PartFile>,
        config: &S3Config,
        parts: Member,
        journal: PathBuf,
    ) -> Self {
        S3Writer {
            io,
            id: id.to_owned(),
            key,
            // Positional writers build the image in their scratch file.
            access: if scratch.is_some() {
                Access::Positional
            } else {
                Access::Append
            },
            scratch,
            part_size: config.part_size,
            parts_in_flight: config.parts_in_flight,
            parts,
            create_timeout: config.create_timeout,
            buf: Vec::new(),
            upload: None,
            journal,
            done: Vec::new(),
            in_flight: VecDeque::new(),
            next_part: 1,
            written: 0,
            flushed: false,
            finished: false,
        }
    }

    fn writing_err(&self, source: io::Error) -> StoreError {
        StoreError::Writing {
            id: self.id.clone(),
            offset: self.written,
            source,
        }
    }

    /// Adds `data` to the filling part, sending each part that fills.
    fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf = self.parts.pool().take();
            }
            let room = self.part_size.saturating_sub(self.buf.len());
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = rest;
            if self.buf.len() >= self.part_size {
                self.send_part()?;
            }
        }
        Ok(())
    }

    /// Starts the upload (and its journal entry) when this is the first part.
    fn start_upload(&mut self) -> io::Result<String> {
        if let Some(upload) = &self.upload {
            return Ok(upload.clone());
        }
        // The key is noted before the upload exists: a crash between its creation and the
        // note of its id below leaves this entry, and the sweep aborts the key's uploads.
        std::fs::write(&self.journal, format!("{}\n", self.key))?;
        // Bounded: the sweep counts only uploads created within this bound of the note as
        // this one (a later upload of the key is another node's, see `abort_uploads_of`).
        let bound = TimeoutConfig::builder()
            .operation_timeout(self.create_timeout)
            .build();
        let req = self
            .io
            .client
            .create_multipart_upload()
            .bucket(&*self.io.bucket)
            .key(&self.key)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::new().timeout_config(bound))
            .send();
        let out = self
            .io
            .wait(req)?
            .map_err(|e| s3_error("CreateMultipartUpload", e))?;
        let upload = out
            .upload_id()
            .ok_or_else(|| io::Error::other("CreateMultipartUpload: no upload id"))?
            .to_owned();
        self.upload = Some(upload.clone());
        // Its id, noted before any part is sent, in place of the key-only entry (one rename:
        // the entry is always one of the two).
        let noting = self.journal.with_extension("new");
        std::fs::write(&noting, format!("{}\n{upload}\n", self.key))?;
        std::fs::rename(&noting, &self.journal)?;
        Ok(upload)
    }

    /// Sends the filling part, first waiting for a slot among the parts in flight.
    fn send_part(&mut self) -> io::Result<()> {
        let upload = self.start_upload()?;
        if self.next_part > MAX_PARTS {
            return Err(io::Error::other(format!(
                "the image is larger than S3's {MAX_PARTS} parts of {} bytes \
                 (raise store.s3.part_size)",
                self.part_size
            )));
        }
        while self.in_flight.len() >= self.parts_in_flight {
            self.finish_oldest()?;
        }
        let body = self.seal()?;
        let number = i32::try_from(self.next_part).unwrap_or(i32::MAX);
        self.next_part = self.next_part.saturating_add(1);
        let req = self
            .io
            .client
            .upload_part()
            .bucket(&*self.io.bucket)
            .key(&self.key)
            .upload_id(upload)
            .part_number(number)
            .body(ByteStream::from(body));
        let sign = self.io.sign_payload;
        let task = self.io.handle.spawn(async move {
            let out = if sign {
                req.send().await
            } else {
                req.customize().disable_payload_signing().send().await
            };
            let out = out.map_err(|e| s3_error("UploadPart", e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build())
        });
        self.in_flight.push_back(task);
        Ok(())
    }

    /// The filling part as a request body, once a node slot is free (see [`PartPool`](super::parts::PartPool)).
    fn seal(&mut self) -> io::Result<Bytes> {
        let slot = self
            .io
            .wait(self.parts.pool().slots().acquire_owned())?
            .map_err(|_| io::Error::other("the store's part slots are closed"))?;
        Ok(self.parts.pool().seal(std::mem::take(&mut self.buf), slot))
    }

    /// Waits for the oldest part in flight.
    fn finish_oldest(&mut self) -> io::Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = self
                .io
                .wait(task)?
                .map_err(|e| io::Error::other(format!("UploadPart stopped: {e}")))??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Whether the key already holds an object.
    fn exists(&self) -> io::Result<bool> {
        let req = self
            .io
            .client
            .head_object()
            .bucket(&*self.io.bucket)
            .key(&self.key)
            .send();
        match self.io.wait(req)? {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(s3_error("HeadObject", e)),
        }
    }

    /// A positional writer's scratch file, pushed as parts (the last one stays filling).
    fn push_scratch(&mut self) -> io::Result<()> {
        let Some(scratch) = self.scratch.as_ref() else {
            return Ok(());
        };
        let file = scratch
            .positional_handle()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let len = file.metadata()?.len();
        let mut chunk = vec![0u8; self.part_size];
        let mut offset = 0u64;
        while offset < len {
            let n = usize::try_from(len.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            let piece = chunk.get_mut(..n).unwrap_or_default();
            file.read_exact_at(piece, offset)?;
            self.push(piece)?;
            offset = offset.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
        Ok(())
    }

    /// Sends what is left before the commit request: a positional writer's scratch file,
    /// and once a multipart upload is open, the filling part and every part in flight (an
    /// image smaller than one part waits for its single `PutObject` at commit).
    fn send_rest(&mut self) -> io::Result<()> {
        if self.flushed {
            return Ok(());
        }
        self.push_scratch()?;
        if self.upload.is_some() {
            if !self.buf.is_empty() {
                self.send_part()?;
            }
            while !self.in_flight.is_empty() {
                self.finish_oldest()?;
            }
        }
        self.flushed = true;
        Ok(())
    }

    /// The commit without the cleanup of a failure.
    fn try_commit(&mut self) -> Result<(), StoreError> {
        let id = self.id.clone();
        let err = |source| StoreError::Committing {
            id: id.clone(),
            source,
        };
        if self.exists().map_err(err)? {
            return Err(StoreError::AlreadyExists(self.id.clone()));
        }
        self.send_rest().map_err(err)?;
        let Some(upload) = self.upload.clone() else {
            // Smaller than one part: a single request.
            let body = self.seal().map_err(err)?;
            let req = self
                .io
                .client
                .put_object()
                .bucket(&*self.io.bucket)
                .key(&self.key)
                .body(ByteStream::from(body));
            let sign = self.io.sign_payload;
            let req = async move {
                if sign {
                    req.send().await
                } else {
                    req.customize().disable_payload_signing().send().await
                }
            };
            self.io
                .wait(req)
                .map_err(err)?
                .map_err(|e| err(s3_error("PutObject", e)))?;
            return Ok(());
        };
        let parts = std::mem::take(&mut self.done);
        let req = self
            .io
            .client
            .complete_multipart_upload()
            .bucket(&*self.io.bucket)
            .key(&self.key)
            .upload_id(&upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send();
        self.io
            .wait(req)
            .map_err(err)?
            .map_err(|e| err(s3_error("CompleteMultipartUpload", e)))?;
        self.upload = None;
        if let Err(e) = std::fs::remove_file(&self.journal) {
            // The next sweep finds the upload gone (NoSuchUpload) and drops the entry.
            tracing::warn!(image_id = %self.id, error = %e, "removing an upload journal entry");
        }
        Ok(())
    }

    /// Stops the parts in flight and aborts the upload; what cannot be aborted now stays in
    /// the journal for the next sweep.
    fn clean_up(&mut self) {
        self.finished = true;
        self.parts.pool().give(std::mem::take(&mut self.buf));
        for task in std::mem::take(&mut self.in_flight) {
            task.abort();
            let _ = self.io.wait(task);
        }
        if let Some(upload) = self.upload.take() {
            match abort_upload(&self.io, &self.key, &upload) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.journal);
                }
                Err(e) => tracing::warn!(image_id = %self.id, error = %e,
                    "aborting a multipart upload; the next sweep retries"),
            }
        }
        // A positional writer's scratch file is removed when it drops.
        self.scratch = None;
    }
}

impl ImageWriter for S3Writer {
    fn id(&self) -> &str {
        &self.id
    }

    fn written(&self) -> u64 {
        match &self.scratch {
            Some(scratch) => scratch.written(),
            None => self.written,
        }
    }

    fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.access != Access::Append {
            return Err(StoreError::WrongAccess {
                id: self.id.clone(),
                what: "append",
                access: self.access,
            });
        }
        if let Err(e) = self.push(data) {
            let err = self.writing_err(e);
            self.clean_up();
            return Err(err);
        }
        self.written = self
            .written
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    fn scratch(&mut self) -> Option<&mut PartFile> {
        self.scratch.as_mut()
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let sent = self.send_rest();
        sent.map_err(|source| StoreError::Committing {
            id: self.id.clone(),
            source,
        })
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let result = self.try_commit();
        if result.is_ok() {
            self.finished = true;
        }
        // On success only the scratch file is left (removed as it drops); on failure the
        // upload is aborted too.
        self.clean_up();
        result
    }

    fn abort(mut self: Box<Self>) {
        self.clean_up();
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.finished {
            self.clean_up();
        }
    }
}
