//! Service configuration: built-in defaults, overlaid by a TOML file, overlaid by environment
//! variables and command-line flags (clap reads both; see `cli::ServeArgs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use sluice_formats::DEFAULT_MAX_VIRTUAL_SIZE;
use sluice_pipeline::ssrf::{HostEntry, Nat64Prefix, PinnedHost, GLANCE_ALLOWED_PORTS};
use sluice_pipeline::store::space::Reserve;

mod limits;
pub mod meta;
pub use limits::{LimitsArgs, LimitsConfig};
pub use meta::{MetaConfig, MetaKind};
pub mod store;

/// Hours a finished task stays visible when no TTL is configured (Glance's
/// `[task] task_time_to_live` default).
pub const DEFAULT_TASK_TTL_HOURS: u64 = 48;

/// Seconds one import may take, start to finish, by default: 24 h, generous enough for
/// 100 GiB at 10 Mbit/s, yet a stuck import frees its worker within a day.
pub const DEFAULT_IMPORT_TIMEOUT_SECS: u64 = 24 * 3600;

/// Runs a pull import (a legacy `import` task) gets by default when the nodes running it
/// die: a source that kills its node every time (a crash in conversion, memory) then fails
/// with `interrupted` after three tries instead of taking node after node down.
pub const DEFAULT_MAX_IMPORT_ATTEMPTS: u32 = 3;

/// Seconds a node's lease on a running import lasts unless renewed (it is renewed every
/// third of that): a node that dies holds its imports at most this long before another
/// node may take them back, and two renewals may fail (a database failover) before a live
/// import is given up.
pub const DEFAULT_LEASE_SECS: u64 = 30;

/// Shortest lease accepted: renewals every second at most.
pub const MIN_LEASE_SECS: u64 = 3;

/// Milliseconds a node with a free worker waits between claims on a shared metadata store
/// (PostgreSQL) when it found nothing to claim: a task received by another node, requeued by
/// a sweep, or held back by its project's cap starts within about this long. A node's own
/// submissions wake its claimer at once. One claim is one transaction of four statements,
/// so an idle node costs the database 1 claim (4 statements) per second by default.
pub const DEFAULT_CLAIM_INTERVAL_MS: u64 = 1000;

/// Shortest claim interval accepted: at most 100 claims per second from an idle node.
pub const MIN_CLAIM_INTERVAL_MS: u64 = 10;

/// Most tags on one image unless configured (Glance's `image_tag_quota` default): bounds
/// what one image record holds and what every listing of it returns.
pub const DEFAULT_IMAGE_TAG_QUOTA: usize = 128;

/// Most extra properties on one image unless configured (Glance's `image_property_quota`
/// default), for the same reason.
pub const DEFAULT_IMAGE_PROPERTY_QUOTA: usize = 128;

/// Most members (projects an image is shared with) of one image unless configured
/// (Glance's `image_member_quota` default): bounds what a member list returns.
pub const DEFAULT_IMAGE_MEMBER_QUOTA: usize = 128;

/// Bytes of a refused upload's remaining body read and dropped by default before the
/// connection closes: 1 GiB. python-glanceclient and openstacksdk send the whole body before
/// reading the answer, and report a broken pipe instead of it when the connection closes
/// under them; reading on costs only the loopback or network bandwidth (nothing is hashed or
/// stored), and beyond 1 GiB the client is better told by a closed connection.
pub const DEFAULT_UPLOAD_DISCARD_BYTES: u64 = 1 << 30;

/// Seconds spent at most reading and dropping a refused upload's body by default: 60, as
/// long as 1 GiB takes at 150 Mbit/s; a slower client gets the closed connection.
pub const DEFAULT_UPLOAD_DISCARD_SECS: u64 = 60;
/// Default time staged data waits for its `glance-direct` import: 24 hours. A client stages
/// then imports within seconds; a day covers one that stalls between the two (a client
/// retrying, an operator's pipeline run the next morning) without keeping abandoned stages,
/// which count against no quota, on the volume for longer. Glance keeps them forever.
pub const DEFAULT_STAGING_TTL_SECS: u64 = 24 * 60 * 60;

/// Everything `sluice serve` needs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address. Default `127.0.0.1:9292` (Glance's port).
    pub bind: SocketAddr,
    /// Where RocksDB metadata (`meta/`) and image files (`images/`, `tmp/`) live.
    pub data_dir: PathBuf,
    /// Import worker count: concurrent imports across all projects.
    pub workers: usize,
    /// Pending tasks waiting for a worker before `POST /v2/tasks` answers 503.
    pub queue_capacity: usize,
    /// Concurrent imports one project may run; its other tasks wait in the queue.
    pub per_project_imports: usize,
    /// Hours a finished task stays visible (`expires_at`); Glance's `task_time_to_live`.
    /// Unset, with `task_ttl_secs` unset too: [`DEFAULT_TASK_TTL_HOURS`].
    pub task_ttl_hours: Option<u64>,
    /// Seconds a finished task stays visible, for a TTL finer than hours. One layer of the
    /// configuration (the file; or environment and flags) may give the TTL in hours or in
    /// seconds, not both; a later layer's TTL replaces an earlier one's whatever the unit.
    pub task_ttl_secs: Option<u64>,
    /// Seconds between sweeps for expired tasks.
    pub sweep_interval_secs: u64,
    /// Largest virtual size accepted, in bytes; also caps the bytes an import may store
    /// (Glance's `image_size_cap`).
    pub max_virtual_size: u64,
    /// Largest request body the API reads, in bytes.
    pub max_request_body: usize,
    /// Seconds a client may take to send its request headers or body.
    pub request_timeout_secs: u64,
    /// Most tags on one image (Glance's `image_tag_quota`); more is 413.
    pub image_tag_quota: usize,
    /// Most extra properties on one image (Glance's `image_property_quota`); more is 413.
    pub image_property_quota: usize,
    /// Most members of one image (Glance's `image_member_quota`); more is 413.
    pub image_member_quota: usize,
    /// Where `import_from` may point.
    pub import: ImportFilter,
    /// Who callers are.
    pub auth: AuthConfig,
    /// Where metadata lives (`[meta]`).
    pub meta: MetaConfig,
    /// Base URL for `Location` headers and version links (default: `http://` and the
    /// address the request arrived on; never the request's `Host`).
    pub public_url: Option<String>,
    /// What imported images are converted to (Glance's `output_format`); a task's
    /// `input.output_format` overrides it. Default `none`: stored as received.
    pub conversion: Conversion,
    /// Seconds one import may take from start to finish; beyond, it fails with
    /// `import_timeout` ([`DEFAULT_IMPORT_TIMEOUT_SECS`]).
    pub import_timeout_secs: u64,
    /// Runs a pull import gets when its node dies mid-way, counting the first: a task taken
    /// back from a dead node after that many fails with `interrupted`
    /// ([`DEFAULT_MAX_IMPORT_ATTEMPTS`]).
    pub max_import_attempts: u32,
    /// This node's id in task leases; unset: the id kept in `<data_dir>/node-id` (made on
    /// first start), so each data directory is one node, the same across restarts.
    pub node_id: Option<String>,
    /// Seconds a lease on a running import lasts unless renewed ([`DEFAULT_LEASE_SECS`]).
    pub lease_secs: u64,
    /// On a shared metadata store, milliseconds between an idle node's claims
    /// ([`DEFAULT_CLAIM_INTERVAL_MS`]).
    pub claim_interval_ms: u64,
    /// Slowest source accepted, in bytes per second over `min_rate_window_secs` (curl's
    /// `--speed-limit`); slower fails with `source_too_slow`. 0 turns the check off.
    pub min_rate_bytes_per_sec: u64,
    /// The window of the minimum rate, in seconds (curl's `--speed-time`).
    pub min_rate_window_secs: u64,
    /// After refusing an upload, bytes of the rest of its body read and dropped (never
    /// hashed or stored) so that the client reads the answer instead of a broken pipe
    /// ([`DEFAULT_UPLOAD_DISCARD_BYTES`]); 0 closes at once.
    pub upload_discard_bytes: u64,
    /// After refusing an upload, seconds spent at most dropping the rest of its body
    /// ([`DEFAULT_UPLOAD_DISCARD_SECS`]).
    pub upload_discard_secs: u64,
    /// Per-project quotas (Glance's unified limits) and overrides.
    pub quotas: crate::quota::Quotas,
    /// Free space kept on the data volume: `"1GiB"`, `"512MiB"`, bytes, or `"5%"` of the
    /// volume. Below it imports are refused (507) and running ones fail with `storage_full`;
    /// below half of it every write is refused, so metadata always has room. Default: 5 %,
    /// at most 1 GiB.
    #[serde(deserialize_with = "reserve_from_str")]
    pub disk_reserve: Reserve,
    /// The interoperable import methods offered (Glance's `enabled_import_methods`):
    /// `GET /v2/info/import`, the `OpenStack-image-import-methods` header and which
    /// `POST /v2/images/{id}/import` methods are accepted ([`DEFAULT_IMPORT_METHODS`]).
    pub enabled_import_methods: Vec<ImportMethod>,
    /// Seconds staged data (`PUT /v2/images/{id}/stage`) waits for its import before it is
    /// removed and the image returns to `queued` ([`DEFAULT_STAGING_TTL_SECS`]).
    pub staging_ttl_secs: u64,
    /// Logs, metrics and health ([`crate::observe::ObserveConfig`]): `[observe]`.
    pub observe: crate::observe::ObserveConfig,
    /// Parser and unwrapping limits ([`LimitsConfig`]): `[limits]`.
    pub limits: LimitsConfig,
    /// Where image data lives ([`store::StoreConfig`]): `[store]`.
    pub store: store::StoreConfig,
}

/// The import methods offered unless configured: every method Sluice implements (in
/// Glance's default order).
pub const DEFAULT_IMPORT_METHODS: [ImportMethod; 2] =
    [ImportMethod::GlanceDirect, ImportMethod::WebDownload];

/// An interoperable import method (`method.name` of `POST /v2/images/{id}/import`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ImportMethod {
    /// The client stages the data (`PUT /v2/images/{id}/stage`); the import commits it.
    GlanceDirect,
    /// Sluice pulls `method.uri` through the import policy (SSRF rules).
    WebDownload,
}

impl ImportMethod {
    /// Glance's name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMethod::GlanceDirect => "glance-direct",
            ImportMethod::WebDownload => "web-download",
        }
    }
}

/// Reads a [`Reserve`] from its string form.
fn reserve_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<Reserve, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 9292)),
            data_dir: PathBuf::from("./sluice-data"),
            workers: 4,
            queue_capacity: 256,
            per_project_imports: 2,
            task_ttl_hours: None,
            task_ttl_secs: None,
            sweep_interval_secs: 60,
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
            max_request_body: 64 << 10,
            request_timeout_secs: 30,
            image_tag_quota: DEFAULT_IMAGE_TAG_QUOTA,
            image_property_quota: DEFAULT_IMAGE_PROPERTY_QUOTA,
            image_member_quota: DEFAULT_IMAGE_MEMBER_QUOTA,
            import: ImportFilter::default(),
            auth: AuthConfig::default(),
            meta: MetaConfig::default(),
            public_url: None,
            conversion: Conversion::None,
            import_timeout_secs: DEFAULT_IMPORT_TIMEOUT_SECS,
            max_import_attempts: DEFAULT_MAX_IMPORT_ATTEMPTS,
            node_id: None,
            lease_secs: DEFAULT_LEASE_SECS,
            claim_interval_ms: DEFAULT_CLAIM_INTERVAL_MS,
            min_rate_bytes_per_sec: sluice_pipeline::rate::DEFAULT_MIN_RATE_BYTES_PER_SEC,
            min_rate_window_secs: sluice_pipeline::rate::DEFAULT_MIN_RATE_WINDOW.as_secs(),
            upload_discard_bytes: DEFAULT_UPLOAD_DISCARD_BYTES,
            upload_discard_secs: DEFAULT_UPLOAD_DISCARD_SECS,
            quotas: crate::quota::Quotas::default(),
            disk_reserve: Reserve::default(),
            enabled_import_methods: DEFAULT_IMPORT_METHODS.to_vec(),
            staging_ttl_secs: DEFAULT_STAGING_TTL_SECS,
            observe: crate::observe::ObserveConfig::default(),
            limits: LimitsConfig::default(),
            store: store::StoreConfig::default(),
        }
    }
}

/// The format imported images are stored in (Glance's `[image_conversion] output_format`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Conversion {
    /// Store images as received.
    #[default]
    None,
    /// Convert qcow2, vmdk, vhd and vhdx images to raw.
    Raw,
    /// Convert raw images to qcow2 (other formats cannot be converted to qcow2: their
    /// imports fail with `unsupported_format`).
    Qcow2,
}

impl Conversion {
    /// The conversion's target, `None` for [`Conversion::None`].
    pub fn target(self) -> Option<sluice_formats::Target> {
        match self {
            Conversion::None => None,
            Conversion::Raw => Some(sluice_formats::Target::Raw),
            Conversion::Qcow2 => Some(sluice_formats::Target::Qcow2),
        }
    }

    /// Parses a task's `output_format` (`none`, `raw`, `qcow2`; case-insensitive).
    pub fn parse(s: &str) -> Option<Conversion> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(Conversion::None),
            "raw" => Some(Conversion::Raw),
            "qcow2" => Some(Conversion::Qcow2),
            _ => None,
        }
    }
}

/// Glance's `[import_filtering_opts]`: lists applied to `import_from` and every redirect,
/// plus the address rules of [`sluice_pipeline::ssrf`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImportFilter {
    /// Allowed URL schemes (empty: http and https).
    pub allowed_schemes: Vec<String>,
    /// Hosts allowed, even on internal addresses: names (that name only), IP addresses (a
    /// connection to that address, whatever the name), each with an optional `:PORT`
    /// (`127.0.0.1:8000`, `[::1]:8080`, `images.lab:8443`; without one, `allowed_ports`).
    /// Link-local and metadata addresses are reachable only when listed by address. With
    /// any entry, only these hosts are allowed.
    #[serde(deserialize_with = "parse_each")]
    pub allowed_hosts: Vec<HostEntry>,
    /// Hosts always refused, in the same forms (ignored when `allowed_hosts` is set).
    #[serde(deserialize_with = "parse_each")]
    pub denied_hosts: Vec<HostEntry>,
    /// Allowed ports. Default Glance's 80 and 443; empty: any port not in `denied_ports`.
    pub allowed_ports: Vec<u16>,
    /// Refused ports (ignored when `allowed_ports` is set).
    pub denied_ports: Vec<u16>,
    /// The deployment's NAT64 prefixes (RFC 6052, e.g. `2001:db8:64::/96`), besides the
    /// well-known 64:ff9b::/96: addresses in them are judged by the IPv4 address they carry.
    #[serde(deserialize_with = "parse_each")]
    pub nat64_prefixes: Vec<Nat64Prefix>,
    /// Names resolved from here instead of DNS (`images.lab=10.0.0.5`, like curl's
    /// `--resolve`); the address still goes through every rule.
    #[serde(deserialize_with = "parse_each")]
    pub resolve: Vec<PinnedHost>,
}

impl Default for ImportFilter {
    fn default() -> Self {
        ImportFilter {
            allowed_schemes: Vec::new(),
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            allowed_ports: GLANCE_ALLOWED_PORTS.to_vec(),
            denied_ports: Vec::new(),
            nat64_prefixes: Vec::new(),
            resolve: Vec::new(),
        }
    }
}

/// Parses each string of a TOML list with `T`'s `FromStr`, naming the bad entry.
fn parse_each<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// How callers are identified.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication (local use): every caller is an admin of project `admin`
    /// unless identity headers say otherwise. Binds to loopback only unless forced.
    #[default]
    None,
    /// Identity headers (`X-Project-Id`/`X-Tenant-Id`, `X-User-Id`, `X-Roles`) set by a
    /// trusted auth proxy (keystonemiddleware-style); requests without them get 401.
    Proxy,
    /// Static tokens from a file: `X-Auth-Token` maps to a project, user and roles.
    Token,
    /// `X-Auth-Token` validated with Keystone's `/v3/auth/tokens` (`auth.keystone`), as
    /// keystonemiddleware's `auth_token` does.
    Keystone,
}

/// Authentication settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The mode.
    pub mode: AuthMode,
    /// For `token` mode: a TOML file of `[[token]] token = "…", project_id = "…",
    /// user_id = "…", roles = ["member"]` entries.
    pub token_file: Option<PathBuf>,
    /// Allow `none` mode on a non-loopback address (dangerous).
    pub allow_insecure_bind: bool,
    /// For `keystone` mode: where Keystone is and Sluice's service credentials.
    pub keystone: KeystoneConfig,
}

/// Default seconds a validated token is trusted before Keystone is asked again
/// (keystonemiddleware's `token_cache_time`): also how long a revoked token may still work.
pub const DEFAULT_KEYSTONE_CACHE_SECS: u64 = 300;

/// Default number of validated tokens kept: bounds the cache's memory (an entry is well
/// under 1 KiB) while holding every token a busy cloud presents within the cache time.
pub const DEFAULT_KEYSTONE_CACHE_SIZE: usize = 10_000;

/// Default seconds one call to Keystone may take (connect to last body byte); a hung
/// Keystone then costs a caller this long and a 503, never an open door.
pub const DEFAULT_KEYSTONE_TIMEOUT_SECS: u64 = 10;

/// `[auth.keystone]`: keystonemiddleware's `[keystone_authtoken]` essentials.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeystoneConfig {
    /// Keystone's URL (`auth_url`), e.g. `http://keystone:5000/v3` (`/v3` optional).
    pub url: Option<String>,
    /// The URI clients are sent to in `WWW-Authenticate: Keystone uri="…"`
    /// (`www_authenticate_uri`); defaults to `url`.
    pub public_url: Option<String>,
    /// Sluice's service user.
    pub username: String,
    /// Its password (or `password_file`, or `SLUICE_KEYSTONE_PASSWORD`).
    pub password: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// The service user's domain (by name).
    pub user_domain_name: String,
    /// The project the service token is scoped to.
    pub project_name: String,
    /// That project's domain (by name).
    pub project_domain_name: String,
    /// Seconds a validated token is cached ([`DEFAULT_KEYSTONE_CACHE_SECS`]).
    pub cache_secs: u64,
    /// Most tokens cached ([`DEFAULT_KEYSTONE_CACHE_SIZE`]).
    pub cache_size: usize,
    /// Seconds one call to Keystone may take ([`DEFAULT_KEYSTONE_TIMEOUT_SECS`]).
    pub timeout_secs: u64,
    /// The config file read (set by [`Config::from_file`]): errors name its file and line.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Default for KeystoneConfig {
    fn default() -> Self {
        KeystoneConfig {
            url: None,
            public_url: None,
            username: String::new(),
            password: None,
            password_file: None,
            user_domain_name: "Default".into(),
            project_name: "service".into(),
            project_domain_name: "Default".into(),
            cache_secs: DEFAULT_KEYSTONE_CACHE_SECS,
            cache_size: DEFAULT_KEYSTONE_CACHE_SIZE,
            timeout_secs: DEFAULT_KEYSTONE_TIMEOUT_SECS,
            file: None,
        }
    }
}

/// The configuration could not be loaded or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Reading {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing config file {path}: {source}")]
    Parsing {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A setting is out of range or contradicts another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file over the defaults.
    ///
    /// # Errors
    /// When the file cannot be read or parsed, or gives the task TTL in both units.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Reading {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parsing {
            path: path.to_owned(),
            source,
        })?;
        config.check_task_ttl()?;
        config.auth.keystone.file = Some(path.to_owned());
        Ok(config)
    }

    /// Checks settings that cannot be expressed in types.
    ///
    /// # Errors
    /// When a setting is out of range, or no-auth mode would listen beyond loopback.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.per_project_imports == 0 || self.queue_capacity == 0 {
            return Err(ConfigError::Invalid(
                "workers, per_project_imports and queue_capacity must be at least 1".into(),
            ));
        }
        if self.lease_secs < MIN_LEASE_SECS {
            return Err(ConfigError::Invalid(format!(
                "lease_secs must be at least {MIN_LEASE_SECS}"
            )));
        }
        if self.claim_interval_ms < MIN_CLAIM_INTERVAL_MS {
            return Err(ConfigError::Invalid(format!(
                "claim_interval_ms must be at least {MIN_CLAIM_INTERVAL_MS}"
            )));
        }
        if self
            .node_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 255)
        {
            return Err(ConfigError::Invalid(
                "node_id must be 1 to 255 bytes".into(),
            ));
        }
        if self.max_import_attempts == 0 {
            return Err(ConfigError::Invalid(
                "max_import_attempts must be at least 1".into(),
            ));
        }
        if self.import_timeout_secs == 0 || self.min_rate_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "import_timeout_secs and min_rate_window_secs must be at least 1 (turn the \
                 minimum rate off with min_rate_bytes_per_sec = 0)"
                    .into(),
            ));
        }
        if self.auth.mode == AuthMode::None
            && !self.bind.ip().is_loopback()
            && !self.auth.allow_insecure_bind
        {
            return Err(ConfigError::Invalid(format!(
                "no authentication is configured, so Sluice only listens on loopback; {} is not \
                 (configure auth, or set auth.allow_insecure_bind / --allow-insecure-bind)",
                self.bind
            )));
        }
        if self.auth.mode == AuthMode::Token && self.auth.token_file.is_none() {
            return Err(ConfigError::Invalid(
                "auth mode 'token' needs auth.token_file".into(),
            ));
        }
        self.meta.validate()?;
        self.store.validate()?;
        self.check_task_ttl()
    }

    /// Refuses a TTL given both in hours and in seconds.
    fn check_task_ttl(&self) -> Result<(), ConfigError> {
        if self.task_ttl_hours.is_some() && self.task_ttl_secs.is_some() {
            return Err(ConfigError::Invalid(
                "task_ttl_hours and task_ttl_secs are both set; give the task TTL once, in \
                 hours or in seconds"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Seconds a finished task stays visible: `task_ttl_secs`, else `task_ttl_hours`, else
    /// [`DEFAULT_TASK_TTL_HOURS`] ([`Config::validate`] refuses both set).
    pub fn task_ttl(&self) -> i64 {
        let secs = match self.task_ttl_secs {
            Some(secs) => secs,
            None => self
                .task_ttl_hours
                .unwrap_or(DEFAULT_TASK_TTL_HOURS)
                .saturating_mul(3600),
        };
        i64::try_from(secs).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9999\"\nworkers = 3\n[import]\nallowed_hosts = [\"127.0.0.1\"]\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.bind.port(), 9999);
        assert_eq!(config.workers, 3);
        assert_eq!(
            config.import.allowed_hosts,
            vec!["127.0.0.1".parse::<HostEntry>().unwrap()]
        );
        assert_eq!(config.task_ttl(), 48 * 3600);
        assert_eq!(config.conversion, Conversion::None);
    }

    #[test]
    fn test_config_conversion_is_read_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "conversion = \"raw\"\n").unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap().conversion,
            Conversion::Raw
        );
        std::fs::write(&path, "conversion = \"vmdk\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parsing { .. })
        ));
    }

    #[test]
    fn test_config_task_ttl_in_hours_or_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "task_ttl_hours = 2\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().task_ttl(), 7200);
        std::fs::write(&path, "task_ttl_secs = 90\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().task_ttl(), 90);
        std::fs::write(&path, "task_ttl_hours = 0\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().task_ttl(), 0);
        let huge = Config {
            task_ttl_secs: Some(u64::MAX),
            ..Config::default()
        };
        assert_eq!(huge.task_ttl(), i64::MAX);
    }

    #[test]
    fn test_config_task_ttl_in_both_units_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "task_ttl_hours = 1\ntask_ttl_secs = 60\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Invalid(m)) if m.contains("task_ttl_hours and task_ttl_secs")
        ));
        let both = Config {
            task_ttl_hours: Some(1),
            task_ttl_secs: Some(60),
            ..Config::default()
        };
        assert!(matches!(both.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn test_config_quotas_and_import_limits_are_read_from_file() {
        use crate::quota::Limit;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "import_timeout_secs = 600\nmin_rate_bytes_per_sec = 0\n\
             [quotas]\nimage_size_total = 10240\ntasks_waiting = -1\n\
             [quotas.projects.\"9f3c\"]\nimage_size_total = 1\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.import_timeout_secs, 600);
        assert_eq!(config.min_rate_bytes_per_sec, 0);
        assert_eq!(config.min_rate_window_secs, 60);
        let other = config.quotas.for_project("other");
        assert_eq!(other.image_size_total, Limit::of(10240));
        assert_eq!(other.tasks_waiting, Limit::UNLIMITED);
        assert_eq!(other.image_count_total, Limit::UNLIMITED);
        assert_eq!(
            config.quotas.for_project("9f3c").image_size_total,
            Limit::of(1)
        );
        let defaults = Config::default().quotas.for_project("any");
        assert_eq!(defaults.tasks_waiting, Limit::of(16));
        let zero = Config {
            import_timeout_secs: 0,
            ..Config::default()
        };
        assert!(matches!(zero.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn test_config_disk_reserve_is_read_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        assert_eq!(Config::default().disk_reserve, Reserve::default());
        std::fs::write(&path, "disk_reserve = \"256MiB\"\n").unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap().disk_reserve,
            Reserve::Bytes(256 << 20)
        );
        std::fs::write(&path, "disk_reserve = \"10%\"\n").unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap().disk_reserve,
            Reserve::Percent {
                percent: 10,
                max: None
            }
        );
        std::fs::write(&path, "disk_reserve = \"lots\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parsing { source, .. }) if source.to_string().contains("disk reserve 'lots'")
        ));
    }

    #[test]
    fn test_config_import_filter_defaults_to_glance_ports() {
        assert_eq!(Config::default().import.allowed_ports, vec![80, 443]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "[import]\nallowed_hosts = [\"127.0.0.1:8000\", \"[::1]:8080\", \"Images.Lab\"]\n\
             nat64_prefixes = [\"2001:db8:64::/96\"]\nresolve = [\"images.lab=10.0.0.5\"]\n",
        )
        .unwrap();
        let import = Config::from_file(&path).unwrap().import;
        let shown: Vec<String> = import.allowed_hosts.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["127.0.0.1:8000", "[::1]:8080", "images.lab"]);
        assert_eq!(import.allowed_ports, vec![80, 443]);
        assert_eq!(import.nat64_prefixes[0].to_string(), "2001:db8:64::/96");
        assert_eq!(import.resolve[0].to_string(), "images.lab=10.0.0.5");
        std::fs::write(&path, "[import]\nallowed_ports = []\n").unwrap();
        assert!(Config::from_file(&path)
            .unwrap()
            .import
            .allowed_ports
            .is_empty());
    }

    #[test]
    fn test_config_bad_import_host_entry_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        for (entry, why) in [
            ("127.0.0.1:99999", "port"),
            ("0x7f.1", "non-canonical"),
            ("http://example.org/", "not a URL"),
        ] {
            std::fs::write(&path, format!("[import]\nallowed_hosts = [\"{entry}\"]\n")).unwrap();
            let err = Config::from_file(&path).unwrap_err().to_string();
            assert!(err.contains(entry) && err.contains(why), "{entry}: {err}");
        }
    }

    #[test]
    fn test_config_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "wrokers = 3\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parsing { .. })
        ));
    }

    #[test]
    fn test_config_no_auth_on_public_address_is_refused() {
        let config = Config {
            bind: "0.0.0.0:9292".parse().unwrap(),
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
        assert!(Config::default().validate().is_ok());
    }
}
