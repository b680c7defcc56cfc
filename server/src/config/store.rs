//! `[store]`: where image data lives, a local directory (the default) or an S3 bucket, with
//! the flags and environment variables that override the file, and [`open`], which opens
//! the configured store before the service listens.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_pipeline::store::s3::{
    DEFAULT_ABANDON_AFTER, DEFAULT_CREATE_TIMEOUT, DEFAULT_NODE_PARTS_IN_FLIGHT,
    DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE, DEFAULT_REQUEST_TIMEOUT,
};
use sluice_pipeline::store::space::Reserve;
use sluice_pipeline::store::{LocalStore, S3Config, S3Store, Store, StoreError};

use super::ConfigError;

/// The S3 store's local scratch area (positional writers, conversion spill, its upload
/// journal) under the data directory.
pub const S3_SCRATCH_DIR: &str = "s3-scratch";

/// Which store holds image data.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `<data_dir>/images/`.
    #[default]
    Local,
    /// An S3-compatible bucket (`[store.s3]`).
    S3,
}

/// `[store]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `local` (default) or `s3`.
    pub kind: StoreKind,
    /// The bucket, for `kind = "s3"`.
    pub s3: S3Section,
}

/// `[store.s3]` (see `sluice_pipeline::store::s3` for what each value does).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint URL; unset: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Region [default: `us-east-1`].
    pub region: String,
    /// Bucket name (required).
    pub bucket: String,
    /// Key prefix, `""` or ending in `/`.
    pub prefix: String,
    /// Path-style addressing [default: true, what Garage, MinIO and Ceph RGW expect].
    pub path_style: bool,
    /// Access key id (or `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (or `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Session token (or `AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// Bytes per part ([`DEFAULT_PART_SIZE`]).
    pub part_size: usize,
    /// Parts uploading at once per import ([`DEFAULT_PARTS_IN_FLIGHT`]).
    pub parts_in_flight: usize,
    /// Parts uploading at once on this node, all imports together
    /// ([`DEFAULT_NODE_PARTS_IN_FLIGHT`]).
    pub node_parts_in_flight: usize,
    /// Seconds after which any node's sweep aborts an unfinished upload
    /// ([`DEFAULT_ABANDON_AFTER`]).
    pub abandon_after_secs: u64,
    /// Seconds one attempt of a request to the store may take until its answer starts,
    /// the part's body included ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout_secs: u64,
    /// Sign request bodies (SHA-256 in SigV4) [default: only over plain `http://`; TLS
    /// already protects a body over `https://`].
    pub sign_payload: Option<bool>,
}

impl std::fmt::Debug for S3Section {
    /// The secret and the session token are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Section")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .field("node_parts_in_flight", &self.node_parts_in_flight)
            .field("abandon_after_secs", &self.abandon_after_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("sign_payload", &self.sign_payload)
            .finish_non_exhaustive()
    }
}

impl Default for S3Section {
    fn default() -> Self {
        S3Section {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: true,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            node_parts_in_flight: DEFAULT_NODE_PARTS_IN_FLIGHT,
            abandon_after_secs: DEFAULT_ABANDON_AFTER.as_secs(),
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT.as_secs(),
            sign_payload: None,
        }
    }
}

/// Flags and environment variables of `[store]` (flattened into `sluice serve`'s). The
/// credentials come from the file or `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN`, never from flags (a command line is visible to every local user).
#[derive(Debug, Default, clap::Args)]
pub struct StoreArgs {
    /// Where image data lives: `local` (the data directory) or `s3` [default: local].
    #[arg(long = "store", env = "SLUICE_STORE", value_enum)]
    kind: Option<StoreKind>,
    /// S3 endpoint URL [default: AWS's for the region].
    #[arg(long, env = "SLUICE_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1].
    #[arg(long, env = "SLUICE_S3_REGION")]
    s3_region: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "SLUICE_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// Key prefix in the bucket (`""` or ending in `/`) [default: none].
    #[arg(long, env = "SLUICE_S3_PREFIX")]
    s3_prefix: Option<String>,
    /// Path-style addressing (`true`/`false`) [default: true].
    #[arg(long, env = "SLUICE_S3_PATH_STYLE", value_name = "BOOL")]
    s3_path_style: Option<bool>,
    /// Bytes per multipart part [default: 8 MiB].
    #[arg(long, env = "SLUICE_S3_PART_SIZE", value_name = "BYTES")]
    s3_part_size: Option<usize>,
    /// Parts uploading at once per import [default: 2].
    #[arg(long, env = "SLUICE_S3_PARTS_IN_FLIGHT", value_name = "N")]
    s3_parts_in_flight: Option<usize>,
    /// Parts uploading at once on this node, all imports together [default: 4].
    #[arg(long, env = "SLUICE_S3_NODE_PARTS_IN_FLIGHT", value_name = "N")]
    s3_node_parts_in_flight: Option<usize>,
    /// Seconds one attempt of a store request may take until its answer starts [default: 60].
    #[arg(long, env = "SLUICE_S3_REQUEST_TIMEOUT_SECS", value_name = "SECS")]
    s3_request_timeout_secs: Option<u64>,
    /// Sign request bodies (`true`/`false`) [default: only over plain http://].
    #[arg(long, env = "SLUICE_S3_SIGN_PAYLOAD", value_name = "BOOL")]
    s3_sign_payload: Option<bool>,
}

/// The environment variables read for credentials (the AWS SDKs' names).
const ENV_CREDENTIALS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

impl StoreArgs {
    /// Overlays the flags given, and the credentials in the environment, on `store`.
    ///
    /// # Errors
    /// When a credential variable is not UTF-8.
    pub fn apply(self, store: &mut StoreConfig) -> Result<(), ConfigError> {
        if let Some(v) = self.kind {
            store.kind = v;
        }
        let s3 = &mut store.s3;
        if let Some(v) = self.s3_endpoint {
            s3.endpoint = Some(v);
        }
        for (given, field) in [
            (self.s3_region, &mut s3.region),
            (self.s3_bucket, &mut s3.bucket),
            (self.s3_prefix, &mut s3.prefix),
        ] {
            if let Some(v) = given {
                *field = v;
            }
        }
        if let Some(v) = self.s3_path_style {
            s3.path_style = v;
        }
        if let Some(v) = self.s3_part_size {
            s3.part_size = v;
        }
        if let Some(v) = self.s3_parts_in_flight {
            s3.parts_in_flight = v;
        }
        if let Some(v) = self.s3_node_parts_in_flight {
            s3.node_parts_in_flight = v;
        }
        if let Some(v) = self.s3_request_timeout_secs {
            s3.request_timeout_secs = v;
        }
        if let Some(v) = self.s3_sign_payload {
            s3.sign_payload = Some(v);
        }
        let [id, secret, token] = ENV_CREDENTIALS;
        for (name, field) in [
            (id, &mut s3.access_key_id),
            (secret, &mut s3.secret_access_key),
            (token, &mut s3.session_token),
        ] {
            if let Some(v) = std::env::var_os(name) {
                *field = Some(
                    v.into_string()
                        .map_err(|_| ConfigError::Invalid(format!("{name} is not valid UTF-8")))?,
                );
            }
        }
        Ok(())
    }
}

impl StoreConfig {
    /// The S3 store's settings.
    pub fn s3_config(&self) -> S3Config {
        let s3 = &self.s3;
        S3Config {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            path_style: s3.path_style,
            access_key_id: s3.access_key_id.clone().unwrap_or_default(),
            secret_access_key: s3.secret_access_key.clone().unwrap_or_default(),
            session_token: s3.session_token.clone(),
            part_size: s3.part_size,
            parts_in_flight: s3.parts_in_flight,
            node_parts_in_flight: s3.node_parts_in_flight,
            abandon_after: Duration::from_secs(s3.abandon_after_secs),
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            request_timeout: Duration::from_secs(s3.request_timeout_secs),
            sign_payload: s3.sign_payload.unwrap_or_else(|| {
                s3.endpoint.as_deref().is_some_and(|e| {
                    e.get(..7)
                        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
                })
            }),
        }
    }

    /// Checks the settings of the kind chosen (without contacting anything).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            StoreKind::Local => Ok(()),
            StoreKind::S3 => self.s3_config().validate().map_err(ConfigError::Invalid),
        }
    }
}

/// Opens the configured store: the data directory, or the bucket (checked with a request)
/// with its scratch area in `<data_dir>/s3-scratch`; an upload's
/// `CreateMultipartUpload` is bounded by [`create_timeout`] of `lease_secs`.
///
/// # Errors
/// When the directory cannot be created or the bucket cannot be reached.
pub fn open(
    config: &StoreConfig,
    data_dir: &Path,
    reserve: Reserve,
    lease_secs: u64,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.kind {
        StoreKind::Local => Arc::new(LocalStore::open_with_reserve(data_dir, reserve)?),
        StoreKind::S3 => {
            let mut s3 = config.s3_config();
            s3.create_timeout = create_timeout(lease_secs);
            Arc::new(S3Store::open(s3, &data_dir.join(S3_SCRATCH_DIR), reserve)?)
        }
    })
}

/// The bound on one `CreateMultipartUpload` under leases of `lease_secs`: a third of a
/// lease (one second with the shortest lease). A node that dies right after asking for an
/// upload renewed its lease at most a third of a lease before, so another node takes the
/// import back at least two thirds of a lease after that ask; the dead node's start-up
/// sweep aborts only uploads of the key created within this bound of its journal note,
/// which leaves the taker's upload alone with a third of a lease to spare for clock skew
/// between the nodes and the object store (see [`S3Config::create_timeout`]).
pub fn create_timeout(lease_secs: u64) -> Duration {
    Duration::from_secs((lease_secs / 3).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn test_store_config_s3_is_read_from_file() {
        let config: Config = toml::from_str(
            r#"
            [store]
            kind = "s3"
            [store.s3]
            endpoint = "http://127.0.0.1:3900"
            region = "garage"
            bucket = "images"
            prefix = "sluice/"
            access_key_id = "GK1"
            secret_access_key = "s3cr3t"
            part_size = 16777216
            parts_in_flight = 3
            "#,
        )
        .unwrap();
        assert_eq!(config.store.kind, StoreKind::S3);
        let s3 = config.store.s3_config();
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.part_size, 16 << 20);
        assert_eq!(s3.parts_in_flight, 3);
        assert!(s3.path_style);
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn test_store_config_s3_signs_payload_over_plain_http_only_unless_told() {
        let mut section = StoreConfig::default();
        for (endpoint, told, signs) in [
            (Some("http://127.0.0.1:3900"), None, true),
            (Some("HTTP://garage:3900"), None, true),
            (Some("https://s3.example.net"), None, false),
            (None, None, false),
            (Some("http://127.0.0.1:3900"), Some(false), false),
            (Some("https://s3.example.net"), Some(true), true),
        ] {
            section.s3.endpoint = endpoint.map(str::to_owned);
            section.s3.sign_payload = told;
            assert_eq!(
                section.s3_config().sign_payload,
                signs,
                "{endpoint:?} {told:?}"
            );
        }
    }

    #[test]
    fn test_store_config_s3_without_bucket_or_credentials_is_refused() {
        let mut config = Config::default();
        config.store.kind = StoreKind::S3;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("bucket"), "{err}");
        config.store.s3.bucket = "images".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("credentials"), "{err}");
        config.store.s3.part_size = 1 << 20;
        config.store.s3.access_key_id = Some("id".into());
        config.store.s3.secret_access_key = Some("secret".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("part_size"), "{err}");
    }

    #[test]
    fn test_store_config_local_is_the_default() {
        assert_eq!(Config::default().store.kind, StoreKind::Local);
        Config::default().validate().unwrap();
    }
}
