//! Test support: a real S3 server, one Garage node per test process (sqlite metadata,
//! `replication_factor = 1`, one `layout assign` + `layout apply`, one bucket and one key)
//! on loopback ports in a temporary directory. Tests share it and keep apart by key prefix
//! ([`Garage::config`] gives each caller a fresh one). [`GarageCluster`] starts three nodes
//! that keep three copies of everything, for the tests of a storage node's loss.
//!
//! The binary is `$SLUICE_GARAGE`, else `~/.cache/sluice/garage/bin/garage`, which
//! `scripts/setup --test` installs (`cargo install garage --locked --root …`). Garage runs
//! under a small shell that kills it, and removes its directory, when the test process
//! exits (its end of a pipe closes), so no server outlives the tests.

// Test support: a failure to start the server is a failed test.
#![allow(clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{
    S3Config, DEFAULT_ABANDON_AFTER, DEFAULT_CREATE_TIMEOUT, DEFAULT_NODE_PARTS_IN_FLIGHT,
    DEFAULT_PARTS_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT, MIN_PART_SIZE,
};

/// How long Garage may take to answer after it starts (seconds here; generous for a loaded
/// CI machine).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The node's RPC secret (loopback only, a throwaway node).
const RPC_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The bucket every test uses.
pub const BUCKET: &str = "sluice-test";
/// Garage's region name.
pub const REGION: &str = "garage";
/// The key imported into Garage (Garage's format: `GK` + 24 hex digits, a 64-hex secret).
pub const ACCESS_KEY_ID: &str = "GK0123456789abcdef01234567";
/// The key's secret.
pub const SECRET_ACCESS_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A running Garage node (see the module documentation).
#[derive(Debug)]
pub struct Garage {
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The node's directory (configuration, metadata, data).
    pub dir: PathBuf,
    /// The `garage` binary.
    pub binary: PathBuf,
    /// The node's RPC address, `127.0.0.1:PORT`.
    rpc: String,
    /// Held open: when the test process exits (or the node is dropped) it closes, and the
    /// shell stops Garage.
    _lifeline: Mutex<ChildStdin>,
}

/// The Garage of this test process, started on first use.
///
/// # Panics
/// When the binary is missing or the node does not come up.
pub fn shared() -> &'static Garage {
    static GARAGE: OnceLock<Garage> = OnceLock::new();
    GARAGE.get_or_init(Garage::start)
}

/// The `garage` binary the tests use.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_GARAGE") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    cache.join("sluice/garage/bin/garage")
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Garage {
    /// One node keeping one copy of everything, its bucket and key made.
    fn start() -> Garage {
        let garage = Garage::spawn(1);
        let node = garage.node_id();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.make_bucket();
        garage
    }

    /// Starts a node of a cluster keeping `replication` copies, not yet in any layout.
    fn spawn(replication: u8) -> Garage {
        let binary = binary();
        assert!(
            binary.exists(),
            "{} is missing: run `scripts/setup --test` (or set SLUICE_GARAGE)",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("sluice-garage-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let (rpc, s3) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{dir}/meta\"\n\
             data_dir = \"{dir}/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = {replication}\n\
             compression_level = \"none\"\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{RPC_SECRET}\"\n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("garage.toml"), config).expect("garage.toml");
        let log = std::fs::File::create(dir.join("garage.log")).expect("garage.log");
        // `read` returns when our end of stdin closes (the test process exited, or the
        // node was dropped): then stop Garage and remove its directory. The pid file is
        // for [`Garage::kill`].
        let script = "\"$0\" -c \"$1/garage.toml\" server & pid=$!; echo $pid > \"$1/pid\"; \
                      read -r _; kill $pid; wait $pid; rm -rf \"$1\"";
        let mut shell = Command::new("sh")
            .args(["-c", script])
            .arg(&binary)
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting garage");
        let lifeline = shell.stdin.take().expect("stdin");
        // The shell is reaped by init once it exits with the test process.
        std::mem::forget(shell);
        let garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            dir,
            binary,
            rpc: format!("127.0.0.1:{rpc}"),
            _lifeline: Mutex::new(lifeline),
        };
        garage.wait_for(s3);
        garage
    }

    /// The node's id (its public key).
    fn node_id(&self) -> String {
        let node = self.cli(&["node", "id", "-q"]);
        node.split('@').next().unwrap_or_default().trim().to_owned()
    }

    /// Makes the tests' bucket and imports their key, with read and write on it.
    fn make_bucket(&self) {
        self.cli(&["bucket", "create", BUCKET]);
        self.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "sluice-test",
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
        ]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            ACCESS_KEY_ID,
        ]);
    }

    /// Kills the node at once (`SIGKILL`), as a machine that dies.
    ///
    /// # Panics
    /// When its process id is unknown or the signal cannot be sent.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).expect("garage's pid file");
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -9 {pid} failed");
    }

    /// Waits until the S3 port accepts connections.
    fn wait_for(&self, port: u16) {
        let deadline = Instant::now()
            .checked_add(START_DEADLINE)
            .expect("deadline");
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage did not listen on {port}:\n{}", self.log());
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
    }

    /// Runs `garage <args>` against the node (retrying while it is still starting) and
    /// returns its standard output.
    ///
    /// # Panics
    /// When the command keeps failing.
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now()
            .checked_add(START_DEADLINE)
            .expect("deadline");
        loop {
            let out = Command::new(&self.binary)
                .arg("-c")
                .arg(self.dir.join("garage.toml"))
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .expect("running garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() >= deadline {
                panic!(
                    "garage {args:?} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A configuration for this node under a prefix no other caller gets, with the
    /// smallest part size (so a few MiB exercise multipart uploads).
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: REGION.to_owned(),
            bucket: BUCKET.to_owned(),
            prefix: format!("t-{}/", unique()),
            path_style: true,
            access_key_id: ACCESS_KEY_ID.to_owned(),
            secret_access_key: SECRET_ACCESS_KEY.to_owned(),
            session_token: None,
            part_size: MIN_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            node_parts_in_flight: DEFAULT_NODE_PARTS_IN_FLIGHT,
            abandon_after: DEFAULT_ABANDON_AFTER,
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            // What a TLS endpoint gets by default; signed bodies have their own test.
            sign_payload: false,
        }
    }
}

/// Three Garage nodes that keep three copies of every object (`replication_factor = 3`,
/// Garage's default consistent mode: a write needs two of them, a read two), one per zone,
/// each with its own S3 endpoint; the bucket and key as [`shared`]'s. Its own, not shared:
/// its tests kill nodes.
#[derive(Debug)]
pub struct GarageCluster {
    /// The nodes; any of them answers S3 requests for the whole cluster.
    pub nodes: Vec<Garage>,
}

impl GarageCluster {
    /// Starts the three nodes, connects them, gives the layout its three zones and makes
    /// the bucket.
    ///
    /// # Panics
    /// When the binary is missing or the cluster does not come up.
    pub fn start() -> GarageCluster {
        let nodes: Vec<Garage> = (0..3).map(|_| Garage::spawn(3)).collect();
        let ids: Vec<String> = nodes.iter().map(Garage::node_id).collect();
        let (first, rest) = nodes.split_first().expect("three nodes");
        for (node, id) in rest.iter().zip(ids.iter().skip(1)) {
            first.cli(&["node", "connect", &format!("{id}@{}", node.rpc)]);
        }
        for (zone, id) in ["dc1", "dc2", "dc3"].into_iter().zip(&ids) {
            first.cli(&["layout", "assign", "-z", zone, "-c", "1G", id]);
        }
        first.cli(&["layout", "apply", "--version", "1"]);
        first.make_bucket();
        GarageCluster { nodes }
    }
}

/// A string unique within this machine's test runs (process id and a counter).
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}
