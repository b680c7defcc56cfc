//! `[meta]`: where task and image metadata live — the embedded RocksDB database under
//! `data_dir` (the default), or a PostgreSQL database shared by the nodes of a cluster.

use std::str::FromStr;

use serde::Deserialize;

use super::ConfigError;
pub use crate::meta::postgres::DEFAULT_POOL_SIZE;

/// Which metadata store the service opens.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetaKind {
    /// RocksDB in `data_dir/meta` (one node).
    #[default]
    Rocksdb,
    /// PostgreSQL at `meta.postgres.url` (any number of nodes).
    Postgres,
}

/// `[meta]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    /// The store.
    pub kind: MetaKind,
    /// For `kind = "postgres"`.
    pub postgres: PostgresConfig,
}

/// `[meta.postgres]`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (it holds a password: give it in the
    /// file or `SLUICE_META_POSTGRES_URL`, not as a flag, which `ps` shows).
    pub url: Option<String>,
    /// Most connections this node keeps ([`DEFAULT_POOL_SIZE`]).
    pub pool_size: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never in logs.
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl MetaConfig {
    /// Refuses a PostgreSQL store without a URL that parses, or with no connections.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kind != MetaKind::Postgres {
            return Ok(());
        }
        let Some(url) = &self.postgres.url else {
            return Err(ConfigError::Invalid(
                "meta.kind 'postgres' needs meta.postgres.url (or SLUICE_META_POSTGRES_URL)".into(),
            ));
        };
        if let Err(e) = tokio_postgres::Config::from_str(url) {
            return Err(ConfigError::Invalid(format!(
                "meta.postgres.url is not a PostgreSQL URL: {e}"
            )));
        }
        if self.postgres.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "meta.postgres.pool_size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn test_meta_config_postgres_from_toml_parses_and_validates() {
        let config: Config = toml::from_str(
            "[meta]\nkind = \"postgres\"\n[meta.postgres]\n\
             url = \"postgres://sluice:secret@db:5432/sluice\"\npool_size = 8\n",
        )
        .unwrap();
        assert_eq!(config.meta.kind, MetaKind::Postgres);
        assert_eq!(config.meta.postgres.pool_size, 8);
        config.meta.validate().unwrap();
        assert!(!format!("{:?}", config.meta).contains("secret"));
    }

    #[test]
    fn test_meta_config_default_is_rocksdb_with_default_pool() {
        let config = Config::default();
        assert_eq!(config.meta.kind, MetaKind::Rocksdb);
        assert_eq!(config.meta.postgres.pool_size, DEFAULT_POOL_SIZE);
        config.meta.validate().unwrap();
    }

    #[test]
    fn test_meta_config_postgres_without_url_or_bad_url_or_no_pool_invalid() {
        let mut meta = MetaConfig {
            kind: MetaKind::Postgres,
            ..MetaConfig::default()
        };
        assert!(matches!(meta.validate(), Err(ConfigError::Invalid(m)) if m.contains("url")));
        meta.postgres.url = Some("postgres://x@[bad".into());
        assert!(matches!(meta.validate(), Err(ConfigError::Invalid(m)) if m.contains("URL")));
        meta.postgres.url = Some("postgres://x@db/sluice".into());
        meta.postgres.pool_size = 0;
        assert!(matches!(meta.validate(), Err(ConfigError::Invalid(m)) if m.contains("pool")));
    }
}
