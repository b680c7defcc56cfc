//! `sluice serve`: its flags (each also an environment variable), overlaid on the
//! configuration file, and the runtime it serves from.

use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_pipeline::ssrf::{HostEntry, Nat64Prefix, PinnedHost};
use sluice_pipeline::store::space::Reserve;

use crate::config::{AuthMode, Config, ConfigError, Conversion, ImportMethod, MetaKind};
use crate::quota::Limit;

use super::KEYSTONE_PASSWORD_ENV;

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    /// TOML configuration file (see README, "Running the service").
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:9292].
    #[arg(long, env = "SLUICE_BIND", value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// Data directory for metadata and images [default: ./sluice-data].
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Concurrent imports across all projects [default: 4].
    #[arg(long, env = "SLUICE_WORKERS")]
    workers: Option<usize>,
    /// Concurrent imports per project [default: 2].
    #[arg(long, env = "SLUICE_PER_PROJECT_IMPORTS")]
    per_project_imports: Option<usize>,
    /// Hours a finished task stays visible [default: 48]. Replaces a TTL from the config
    /// file, in either unit.
    #[arg(long, env = "SLUICE_TASK_TTL_HOURS", value_name = "HOURS")]
    task_ttl_hours: Option<u64>,
    /// Seconds a finished task stays visible, instead of hours. Replaces a TTL from the
    /// config file, in either unit; not together with --task-ttl-hours.
    #[arg(long, env = "SLUICE_TASK_TTL_SECS", value_name = "SECS")]
    task_ttl_secs: Option<u64>,
    /// Largest virtual (and stored) image size in bytes [default: 1 TiB].
    #[arg(long, env = "SLUICE_MAX_VIRTUAL_SIZE", value_name = "BYTES")]
    max_virtual_size: Option<u64>,
    /// Most tags on one image (Glance's `image_tag_quota`) [default: 128].
    #[arg(long, env = "SLUICE_IMAGE_TAG_QUOTA", value_name = "N")]
    image_tag_quota: Option<usize>,
    /// Most extra properties on one image (Glance's `image_property_quota`) [default: 128].
    #[arg(long, env = "SLUICE_IMAGE_PROPERTY_QUOTA", value_name = "N")]
    image_property_quota: Option<usize>,
    /// Most members of one image (Glance's `image_member_quota`) [default: 128].
    #[arg(long, env = "SLUICE_IMAGE_MEMBER_QUOTA", value_name = "N")]
    image_member_quota: Option<usize>,
    /// Allow imports from this host: a name (that name only), an IP address (whatever name
    /// resolves to it), either with an optional `:PORT` (`127.0.0.1:8000`, `[::1]:8080`,
    /// `images.lab:8443`; without one, the allowed ports). Link-local and metadata addresses
    /// need the address itself. Repeatable; with any given, only these hosts are allowed;
    /// replaces the config file's list.
    #[arg(
        long = "allow-import-host",
        env = "SLUICE_ALLOW_IMPORT_HOSTS",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    allow_import_hosts: Vec<HostEntry>,
    /// Refuse imports from this host (forms as --allow-import-host). Repeatable; replaces the
    /// config file's list.
    #[arg(
        long = "deny-import-host",
        env = "SLUICE_DENY_IMPORT_HOSTS",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    deny_import_hosts: Vec<HostEntry>,
    /// Allow imports only from these ports. Repeatable; replaces the config file's list
    /// [default: 80, 443].
    #[arg(
        long = "allow-import-port",
        env = "SLUICE_ALLOW_IMPORT_PORTS",
        value_delimiter = ','
    )]
    allow_import_ports: Vec<u16>,
    /// Refuse imports from these ports (when no allowed ports are set). Repeatable.
    #[arg(
        long = "deny-import-port",
        env = "SLUICE_DENY_IMPORT_PORTS",
        value_delimiter = ','
    )]
    deny_import_ports: Vec<u16>,
    /// A NAT64 prefix of this deployment (RFC 6052, e.g. `2001:db8:64::/96`): addresses in it
    /// are judged by the IPv4 address they carry. Repeatable.
    #[arg(
        long = "import-nat64-prefix",
        env = "SLUICE_IMPORT_NAT64_PREFIXES",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    import_nat64_prefixes: Vec<Nat64Prefix>,
    /// Resolve NAME to ADDRESS for imports instead of asking DNS (like curl's --resolve);
    /// the address still goes through every rule. Repeatable.
    #[arg(
        long = "import-resolve",
        env = "SLUICE_IMPORT_RESOLVE",
        value_delimiter = ',',
        value_name = "NAME=ADDRESS"
    )]
    import_resolve: Vec<PinnedHost>,
    /// How callers are identified [default: none].
    #[arg(long, env = "SLUICE_AUTH", value_enum)]
    auth: Option<AuthMode>,
    /// Token file for `--auth token`.
    #[arg(long, env = "SLUICE_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Keystone for `--auth keystone` (`auth.keystone.url`); the service user's password may
    /// come from `SLUICE_KEYSTONE_PASSWORD` (never a flag: flags show in `ps`).
    #[arg(long, env = "SLUICE_KEYSTONE_URL", value_name = "URL")]
    keystone_url: Option<String>,
    /// The metadata store (`meta.kind`) [default: rocksdb].
    #[arg(long, env = "SLUICE_META", value_enum)]
    meta: Option<MetaKind>,
    /// PostgreSQL for `--meta postgres` (`meta.postgres.url`); it holds a password, so prefer
    /// the environment variable (flags show in `ps`).
    #[arg(
        long,
        env = "SLUICE_META_POSTGRES_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    meta_postgres_url: Option<String>,
    /// Most PostgreSQL connections of this node (`meta.postgres.pool_size`).
    #[arg(long, env = "SLUICE_META_POSTGRES_POOL_SIZE", value_name = "N")]
    meta_postgres_pool_size: Option<usize>,
    /// Allow `--auth none` on a non-loopback address.
    #[arg(long, env = "SLUICE_ALLOW_INSECURE_BIND")]
    allow_insecure_bind: bool,
    /// Convert imported images to this format while they stream in (Glance's
    /// `output_format`); a task's `input.output_format` overrides it. ISO is never converted
    /// [default: none].
    #[arg(long, env = "SLUICE_CONVERSION", value_enum)]
    conversion: Option<Conversion>,
    /// Interoperable import methods offered (Glance's `enabled_import_methods`). Repeatable;
    /// replaces the config file's list [default: glance-direct,web-download].
    #[arg(
        long = "enabled-import-method",
        env = "SLUICE_ENABLED_IMPORT_METHODS",
        value_delimiter = ',',
        value_enum
    )]
    enabled_import_methods: Vec<ImportMethod>,
    /// Seconds one import may take, start to finish, before it fails with `import_timeout`
    /// [default: 86400].
    #[arg(long, env = "SLUICE_IMPORT_TIMEOUT_SECS", value_name = "SECS")]
    import_timeout_secs: Option<u64>,
    /// Runs a pull import gets when its node dies mid-way; after that many it fails with
    /// `interrupted` [default: 3].
    #[arg(long, env = "SLUICE_MAX_IMPORT_ATTEMPTS", value_name = "N")]
    max_import_attempts: Option<u32>,
    /// This node's id in task leases [default: the id kept in DATA_DIR/node-id].
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// Seconds a lease on a running import lasts unless renewed [default: 30].
    #[arg(long, env = "SLUICE_LEASE_SECS", value_name = "SECS")]
    lease_secs: Option<u64>,
    /// On PostgreSQL, milliseconds between an idle node's claims of pending tasks
    /// [default: 1000].
    #[arg(long, env = "SLUICE_CLAIM_INTERVAL_MS", value_name = "MS")]
    claim_interval_ms: Option<u64>,
    /// Slowest source accepted, in bytes/s over --min-rate-window-secs; slower fails with
    /// `source_too_slow` (like curl's --speed-limit); 0 turns it off [default: 1024].
    #[arg(long, env = "SLUICE_MIN_RATE_BYTES_PER_SEC", value_name = "BYTES")]
    min_rate_bytes_per_sec: Option<u64>,
    /// The window of the minimum rate, in seconds (like curl's --speed-time) [default: 60].
    #[arg(long, env = "SLUICE_MIN_RATE_WINDOW_SECS", value_name = "SECS")]
    min_rate_window_secs: Option<u64>,
    /// After refusing an upload, bytes of the rest of its body read and dropped so that the
    /// client sees the answer rather than a broken pipe [default: 1073741824].
    #[arg(long, env = "SLUICE_UPLOAD_DISCARD_BYTES", value_name = "BYTES")]
    upload_discard_bytes: Option<u64>,
    /// After refusing an upload, seconds spent at most reading and dropping the rest of its
    /// body [default: 60].
    #[arg(long, env = "SLUICE_UPLOAD_DISCARD_SECS", value_name = "SECS")]
    upload_discard_secs: Option<u64>,
    /// Seconds staged data waits for its `glance-direct` import before it is removed and
    /// the image returns to `queued` [default: 86400].
    #[arg(long, env = "SLUICE_STAGING_TTL_SECS", value_name = "SECS")]
    staging_ttl_secs: Option<u64>,
    /// Default per-project quota: MiB of images (Glance's `image_size_total`); -1 unlimited
    /// [default: -1]. Per-project overrides live in the config file.
    #[arg(
        long,
        env = "SLUICE_QUOTA_IMAGE_SIZE_TOTAL",
        value_name = "MIB",
        allow_hyphen_values = true
    )]
    quota_image_size_total: Option<Limit>,
    /// Default per-project quota: images, legacy import tasks in flight included
    /// (`image_count_total`);
    /// -1 unlimited [default: -1].
    #[arg(
        long,
        env = "SLUICE_QUOTA_IMAGE_COUNT_TOTAL",
        value_name = "N",
        allow_hyphen_values = true
    )]
    quota_image_count_total: Option<Limit>,
    /// Default per-project quota: imports waiting or running (`image_count_uploading`); -1
    /// unlimited [default: -1].
    #[arg(
        long,
        env = "SLUICE_QUOTA_IMAGE_COUNT_UPLOADING",
        value_name = "N",
        allow_hyphen_values = true
    )]
    quota_image_count_uploading: Option<Limit>,
    /// Default per-project quota: MiB of staged data waiting for its `glance-direct` import
    /// (Glance's `image_stage_total`); -1 unlimited [default: -1].
    #[arg(
        long,
        env = "SLUICE_QUOTA_IMAGE_STAGE_TOTAL",
        value_name = "MIB",
        allow_hyphen_values = true
    )]
    quota_image_stage_total: Option<Limit>,
    /// Default per-project cap on tasks waiting for a worker; -1 unlimited [default: 16].
    #[arg(
        long,
        env = "SLUICE_QUOTA_TASKS_WAITING",
        value_name = "N",
        allow_hyphen_values = true
    )]
    quota_tasks_waiting: Option<Limit>,
    /// Free space kept on the data volume: a size (`1GiB`, `512MiB`, bytes) or a percentage
    /// of the volume (`5%`). Below it imports are refused; below half of it every write
    /// [default: 5%, at most 1GiB].
    #[arg(long, env = "SLUICE_DISK_RESERVE", value_name = "SIZE|PERCENT")]
    disk_reserve: Option<Reserve>,
    /// Log line format on stderr: `text` or `json` (one object per line) [default: text].
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum)]
    log_format: Option<crate::observe::LogFormat>,
    /// A separate listen address for `/metrics` and `/healthcheck` (then not served on
    /// `--bind`) [default: none: both are served on `--bind`].
    #[arg(long, env = "SLUICE_OBSERVE_BIND", value_name = "ADDR:PORT")]
    observe_bind: Option<std::net::SocketAddr>,
    /// The `[limits]` keys.
    #[command(flatten)]
    limits: crate::config::LimitsArgs,
    #[command(flatten)]
    store: crate::config::store::StoreArgs,
}

impl ServeArgs {
    /// The configuration: file (or defaults) overlaid with the flags given.
    pub(super) fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.bind {
            c.bind = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        if let Some(v) = self.per_project_imports {
            c.per_project_imports = v;
        }
        match (self.task_ttl_hours, self.task_ttl_secs) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--task-ttl-hours (SLUICE_TASK_TTL_HOURS) and --task-ttl-secs \
                     (SLUICE_TASK_TTL_SECS) are both given; give the task TTL once"
                        .into(),
                )
                .into())
            }
            (None, None) => {}
            (hours, secs) => {
                c.task_ttl_hours = hours;
                c.task_ttl_secs = secs;
            }
        }
        if let Some(v) = self.max_virtual_size {
            c.max_virtual_size = v;
        }
        // A list given by flags or environment replaces the file's (or the default).
        replace_if_given(&mut c.import.allowed_hosts, self.allow_import_hosts);
        replace_if_given(&mut c.import.denied_hosts, self.deny_import_hosts);
        replace_if_given(&mut c.import.allowed_ports, self.allow_import_ports);
        replace_if_given(&mut c.import.denied_ports, self.deny_import_ports);
        replace_if_given(&mut c.import.nat64_prefixes, self.import_nat64_prefixes);
        replace_if_given(&mut c.import.resolve, self.import_resolve);
        if let Some(v) = self.image_tag_quota {
            c.image_tag_quota = v;
        }
        if let Some(v) = self.image_member_quota {
            c.image_member_quota = v;
        }
        if let Some(v) = self.image_property_quota {
            c.image_property_quota = v;
        }
        if let Some(v) = self.auth {
            c.auth.mode = v;
        }
        if let Some(v) = self.token_file {
            c.auth.token_file = Some(v);
        }
        c.auth.allow_insecure_bind |= self.allow_insecure_bind;
        if let Some(v) = self.keystone_url {
            c.auth.keystone.url = Some(v);
        }
        if let Some(v) = self.meta {
            c.meta.kind = v;
        }
        if let Some(v) = self.meta_postgres_url {
            c.meta.postgres.url = Some(v);
        }
        if let Some(v) = self.meta_postgres_pool_size {
            c.meta.postgres.pool_size = v;
        }
        if let Some(v) = std::env::var_os(KEYSTONE_PASSWORD_ENV) {
            c.auth.keystone.password = Some(
                v.into_string()
                    .map_err(|_| anyhow::anyhow!("{KEYSTONE_PASSWORD_ENV} is not valid UTF-8"))?,
            );
        }
        if let Some(v) = self.conversion {
            c.conversion = v;
        }
        replace_if_given(&mut c.enabled_import_methods, self.enabled_import_methods);
        if let Some(v) = self.import_timeout_secs {
            c.import_timeout_secs = v;
        }
        if let Some(v) = self.max_import_attempts {
            c.max_import_attempts = v;
        }
        if let Some(v) = self.node_id {
            c.node_id = Some(v);
        }
        if let Some(v) = self.lease_secs {
            c.lease_secs = v;
        }
        if let Some(v) = self.claim_interval_ms {
            c.claim_interval_ms = v;
        }
        if let Some(v) = self.min_rate_bytes_per_sec {
            c.min_rate_bytes_per_sec = v;
        }
        if let Some(v) = self.min_rate_window_secs {
            c.min_rate_window_secs = v;
        }
        if let Some(v) = self.upload_discard_bytes {
            c.upload_discard_bytes = v;
        }
        if let Some(v) = self.upload_discard_secs {
            c.upload_discard_secs = v;
        }
        if let Some(v) = self.staging_ttl_secs {
            c.staging_ttl_secs = v;
        }
        let q = &mut c.quotas;
        for (flag, limit) in [
            (self.quota_image_size_total, &mut q.image_size_total),
            (self.quota_image_count_total, &mut q.image_count_total),
            (
                self.quota_image_count_uploading,
                &mut q.image_count_uploading,
            ),
            (self.quota_image_stage_total, &mut q.image_stage_total),
            (self.quota_tasks_waiting, &mut q.tasks_waiting),
        ] {
            if let Some(v) = flag {
                *limit = v;
            }
        }
        if let Some(v) = self.disk_reserve {
            c.disk_reserve = v;
        }
        if let Some(v) = self.log_format {
            c.observe.log_format = v;
        }
        if let Some(v) = self.observe_bind {
            c.observe.bind = Some(v);
        }
        self.limits.apply(&mut c.limits);
        self.store.apply(&mut c.store)?;
        c.validate()?;
        Ok(c)
    }
}

/// Replaces `list` with `given` unless nothing was given.
fn replace_if_given<T>(list: &mut Vec<T>, given: Vec<T>) {
    if !given.is_empty() {
        *list = given;
    }
}

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    crate::observe::init_logging(config.observe.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()?;
    runtime.block_on(crate::service::run(config))
}
