//! Test support: a throwaway PostgreSQL cluster from Debian's packages (`postgresql-15`,
//! installed by `scripts/setup --test`): `initdb` in a fresh directory, `pg_ctl start` on a
//! free loopback port, stopped (`-m immediate`) and removed when the [`PgCluster`] drops. Not
//! the system service. `initdb` refuses root, so as root (CI) every command runs as Debian's
//! `postgres` user through `runuser`, and the directory is given to that user.
//!
//! Used by the metadata conformance tests and the service tests; any test may call
//! [`PgCluster::start`] and then [`PgCluster::database`] for a database of its own.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where Debian's `postgresql-15` puts `initdb` and `pg_ctl` (not on `PATH`).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The cluster's superuser (trust authentication on loopback only).
const SUPERUSER: &str = "sluice";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a cluster.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or does not start (this is test support).
    pub fn start() -> PgCluster {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sluice-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the cluster directory");
        // Root owns what root creates: the directory tells who runs the tests.
        let as_postgres = std::fs::metadata(&dir).is_ok_and(|m| m.uid() == 0);
        let mut cluster = PgCluster {
            dir,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .expect("running chown");
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        cluster.port = free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            cluster.port,
            path_str(&cluster.dir)
        );
        let log = cluster.dir.join("log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        cluster
    }

    /// The URL of database `name` in this cluster, created empty now (`name`: letters,
    /// digits, `_`).
    ///
    /// # Panics
    /// When the database cannot be created.
    pub fn database(&self, name: &str) -> String {
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        drop(out);
        self.url(name)
    }

    /// The URL of database `name` (which must exist).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let program = Path::new(PG_BIN).join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if self.port != 0 {
            let program = Path::new(PG_BIN).join("pg_ctl");
            let mut command = if self.as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program);
                c
            } else {
                Command::new(&program)
            };
            let _ = command
                .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(path: &Path) -> &str {
    // The directory is built from temp_dir() and ASCII names.
    path.to_str().unwrap_or_default()
}

/// A loopback port nobody listens on now (the kernel's choice; released for the cluster).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}
