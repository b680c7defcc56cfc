//! Who the prefix belongs to: the object `<prefix>owner`, naming the metadata store whose
//! records name the prefix's images ([`Store::claim`](super::Store::claim)).
//!
//! A node whose metadata is its own (RocksDB) deletes at start every object under
//! `<prefix>images/` that it has no record of (the image a crash committed without its
//! record). Pointed at a prefix that another deployment uses, that would delete every image
//! of the other; the marker turns the mistake into a refusal to start.

use std::io;

use aws_sdk_s3::primitives::ByteStream;

use super::{s3_error, S3Store};
use crate::store::StoreError;

/// The marker's name under the prefix (beside `images/`, so never an image id).
const OWNER_KEY: &str = "owner";

impl S3Store {
    /// [`Store::claim`](super::Store::claim): reads the marker; writes `owner` when there is
    /// none (`If-None-Match: *`, then read back, so of two first claims racing one fails).
    pub(super) fn claim_prefix(&self, owner: &str) -> Result<(), StoreError> {
        let key = format!("{}{OWNER_KEY}", self.config.prefix);
        let found = match self.read_owner(&key)? {
            Some(found) => found,
            None => {
                let put = self
                    .io
                    .client
                    .put_object()
                    .bucket(&*self.io.bucket)
                    .key(&key)
                    .if_none_match("*")
                    .content_type("text/plain")
                    .body(ByteStream::from(format!("{owner}\n").into_bytes()))
                    .send();
                match self.io.wait(put).map_err(|e| self.opening_err(e))? {
                    Ok(_) => {}
                    // 412: another node's first claim came first; read what it wrote.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {}
                    Err(e) => return Err(self.opening_err(s3_error("PutObject", e))),
                }
                self.read_owner(&key)?.unwrap_or_default()
            }
        };
        tracing::info!(key, owner = %found, "the image store's owner");
        if found == owner {
            return Ok(());
        }
        Err(self.opening_err(io::Error::other(format!(
            "this prefix belongs to another metadata store ({found}; the object {key} says so), \
             not to this node's ({owner}): a prefix holds the images of one metadata store, \
             since a node whose metadata is its own deletes at start every image it has no \
             record of. Give this node a prefix of its own; or, only if no node of the other \
             store will run on this prefix again, delete {key}"
        ))))
    }

    /// The marker's text, trimmed; `None` when there is no marker.
    fn read_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        let get = self
            .io
            .client
            .get_object()
            .bucket(&*self.io.bucket)
            .key(key)
            .send();
        let out = match self.io.wait(get).map_err(|e| self.opening_err(e))? {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.opening_err(s3_error("GetObject", e))),
        };
        let body = self
            .io
            .wait(out.body.collect())
            .map_err(|e| self.opening_err(e))?
            .map_err(|e| self.opening_err(io::Error::other(format!("GetObject {key}: {e}"))))?;
        let text = String::from_utf8_lossy(&body.into_bytes())
            .trim()
            .to_owned();
        Ok(Some(text))
    }
}
