//! Three `sluice serve` nodes on loopback sharing one PostgreSQL database (a throwaway
//! [`PgCluster`]) and one Garage prefix, each with its own data directory and node id
//! (issue #13, "Many nodes"): images made through one node are served and deleted through
//! another at once. The take-over of a dead node's work is in `cluster_takeover`, the real
//! OpenStack clients against another node in `cluster_clients`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use sluice_pipeline::store::{Access, S3Store, Store};
use sluice_server::config::MIN_LEASE_SECS;
use sluice_server::meta::postgres::PgMeta;
use sluice_server::meta::testing_pg::PgCluster;
use sluice_server::meta::{ImageRecord, MetaStore, TaskRecord, TaskStatus};
use sluice_server::takeover;

use super::harness::{digest, import_input, raw_disk, refused_start, FileServer, Server, ADMIN};
use super::s3::{object, s3_setup};
use crate::common::{read, scratch};

/// The nodes' ids (`--node-id`), in the order of [`Cluster::nodes`].
pub(super) const NODE_IDS: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Lease of a running import: the shortest accepted, so a dead node's import is taken back
/// within seconds.
pub(super) const LEASE_SECS: u64 = MIN_LEASE_SECS;

/// Seconds between two sweeps of a node (expired leases among them): the shortest.
const SWEEP_INTERVAL_SECS: u64 = 1;

/// How long a state the test waits for (a lease, an upload in the bucket) may take.
pub(super) const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// Connections of the test's own view into the database.
const PROBE_POOL: usize = 2;

/// The nodes and what they share, plus the test's own views into the bucket and the
/// database. Fields drop in order: the nodes stop before PostgreSQL does.
pub(super) struct Cluster {
    /// The nodes, `NODE_IDS[i]` at `nodes[i]`.
    pub nodes: Vec<Server>,
    /// The test's own store on the nodes' prefix.
    pub probe: S3Store,
    meta: PgMeta,
    rt: tokio::runtime::Runtime,
    pg: PgCluster,
    /// The nodes' configuration file.
    pub config: PathBuf,
}

impl Cluster {
    /// Starts PostgreSQL and the three nodes (one after the other: each applies the schema
    /// migrations at start), their configuration in `dir`; imports are allowed from the
    /// file servers this test started before.
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, "")
    }

    /// [`Cluster::start`] with `s3_extra` (TOML lines) added to the nodes' `[store.s3]`.
    pub fn start_with(dir: &Path, s3_extra: &str) -> Cluster {
        let pg = PgCluster::start();
        let url = pg.database("cluster");
        let (_config, s3_file, probe) = s3_setup(dir);
        let s3 = std::fs::read_to_string(&s3_file).expect("s3 config");
        let toml = format!(
            "sweep_interval_secs = {SWEEP_INTERVAL_SECS}\nlease_secs = {LEASE_SECS}\n{s3}{s3_extra}\
             [meta]\nkind = \"postgres\"\n[meta.postgres]\nurl = \"{url}\"\n"
        );
        let file = dir.join("cluster.toml");
        std::fs::write(&file, toml).expect("cluster config");
        let config = file.to_str().expect("utf-8");
        let nodes = NODE_IDS
            .iter()
            .map(|id| Server::start(&["--config", config, "--node-id", id]))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let meta = rt
            .block_on(PgMeta::open(&url, PROBE_POOL))
            .expect("the test's view of the database");
        Cluster {
            nodes,
            probe,
            meta,
            rt,
            pg,
            config: file,
        }
    }

    /// Task `id` as stored (with its attempts and lease, which the API does not show).
    pub fn task(&self, id: &str) -> TaskRecord {
        self.rt
            .block_on(self.meta.get_task(id))
            .expect("reading the task")
            .unwrap_or_else(|| panic!("no task {id}"))
    }

    /// Asks node `node` for the interoperable import of image `id` by `method` (the
    /// request's `method` object; 202); returns the import's task id (the image's import
    /// lock).
    pub fn import(&self, node: usize, id: &str, method: serde_json::Value) -> String {
        let body = serde_json::json!({ "method": method });
        let resp = self.nodes[node].req(
            "POST",
            &format!("/v2/images/{id}/import"),
            ADMIN,
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(resp.status, 202, "{}", resp.text());
        let image = self.image(id);
        image
            .properties
            .get(sluice_server::meta::LOCK_PROPERTY)
            .cloned()
            .unwrap_or_else(|| panic!("no import lock on {image:?}"))
    }

    /// Image `id` as stored (with its writer lease, which the API does not show).
    pub fn image(&self, id: &str) -> ImageRecord {
        self.rt
            .block_on(self.meta.get_image(id))
            .expect("reading the image")
            .unwrap_or_else(|| panic!("no image {id}"))
    }

    /// Returns image `id` to `queued` as a sweep whose clock is past the image's writer
    /// lease would ([`takeover::take_back_writer`], its object removed from the bucket),
    /// whether or not its writer still runs.
    pub fn take_back_writer(&self, id: &str) {
        let image = self.image(id);
        let until = image.writer.as_ref().expect("a writer lease").until;
        let sweeper = takeover::writer_lease("test-sweeper", until, LEASE_SECS);
        let taken = self
            .rt
            .block_on(takeover::take_back_writer(
                &self.meta,
                &self.probe,
                &image,
                &sweeper,
                until,
            ))
            .expect("taking the image back");
        assert!(taken, "{image:?}");
    }

    /// Commits a few bytes to the bucket as image `id`, as a node that committed an import
    /// and died before recording it leaves them.
    pub fn leave_object(&self, id: &str) {
        let mut writer = self.probe.begin(id, Access::Append).expect("begin");
        writer.append(b"left by a dead run").expect("append");
        writer.commit().expect("commit");
    }

    /// The index of the node holding the lease of task `id` once it runs.
    pub fn holder(&self, id: &str) -> usize {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            let task = self.task(id);
            if let (TaskStatus::Processing, Some(lease)) = (task.status, &task.lease) {
                return NODE_IDS
                    .iter()
                    .position(|n| *n == lease.node)
                    .unwrap_or_else(|| panic!("lease held by an unknown node: {task:?}"));
            }
            assert!(Instant::now() < deadline, "task never ran: {task:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a multipart upload is open in the bucket (an import is writing).
    pub fn wait_upload_started(&self) {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        while self.uploads().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no multipart upload started\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The keys of the unfinished multipart uploads under the prefix.
    pub fn uploads(&self) -> Vec<String> {
        self.probe.unfinished_uploads().expect("listing uploads")
    }

    /// The ids of the images stored in the bucket, sorted.
    pub fn objects(&self) -> Vec<String> {
        self.probe.list_ids().expect("listing objects")
    }

    /// The indexes of the nodes whose log has a line holding every one of `needles`, once
    /// per such line.
    pub fn logged(&self, needles: &[&str]) -> Vec<usize> {
        let mut found = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let text = node.log_text();
            let lines = text
                .lines()
                .filter(|l| needles.iter().all(|n| l.contains(n)));
            found.extend(lines.map(|_| i));
        }
        found
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (id, node) in NODE_IDS.iter().zip(&self.nodes) {
            all.push_str(&format!("--- {id} ---\n{}", node.log_text()));
        }
        all
    }
}

/// An image `made` through node `made`, from the bytes of `source`.
struct Made {
    id: String,
    source: PathBuf,
    made: usize,
}

/// `PUT /v2/images/{id}/file` with `data` through `node`; asserts 204.
pub(super) fn put_file(node: &Server, id: &str, data: &[u8]) {
    let resp = node.put_file(id, data);
    assert_eq!(resp.status, 204, "{}\n{}", resp.text(), node.log_text());
}

/// Asserts `node` shows image `id` `active` with the size and hashes of `source`, and
/// serves exactly its bytes.
pub(super) fn assert_served(node: &Server, id: &str, source: &Path) {
    let resp = node.get(&format!("/v2/images/{id}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let image = resp.json();
    let bytes = read(source);
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["size"], bytes.len() as u64, "{image}");
    assert_eq!(image["checksum"], digest("md5sum", source), "{image}");
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["os_hash_value"], digest("sha512sum", source));
    let down = node.get(&format!("/v2/images/{id}/file"));
    assert_eq!(down.status, 200, "{}", down.text());
    assert!(down.body == bytes, "bytes of {id} served differ");
}

/// The ids `GET /v2/images` lists through `node`.
pub(super) fn listed(node: &Server, query: &str) -> BTreeSet<String> {
    let list = node.get(&format!("/v2/images{query}")).json();
    let images = list["images"].as_array().expect("images");
    images
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Pull imports and uploads spread over the three nodes; every image is at once listed,
/// shown with its hashes and downloadable through every node, deleted through a node that
/// did not make it, then gone from every node and from the bucket.
#[test]
fn test_cluster_images_made_through_one_node_served_and_deleted_through_another() {
    let dir = scratch();
    let pulls: Vec<PathBuf> = (0..3u64)
        .map(|i| raw_disk(dir.path(), &format!("pull-{i}.raw"), (3 + i) << 20, 3))
        .collect();
    let files = FileServer::start(dir.path());
    let cluster = Cluster::start(dir.path());
    let nodes = &cluster.nodes;

    // One pull import posted to each node.
    let tasks: Vec<String> = (0..3)
        .map(|i| {
            let name = format!("pull-{i}.raw");
            let task = nodes[i].create_task(import_input(&files.url(&name), "raw", &name));
            task["id"].as_str().expect("task id").to_owned()
        })
        .collect();
    // One upload per node: created through node i, its body sent through node i + 1.
    let mut images = Vec::new();
    for i in 0..3 {
        let source = raw_disk(
            dir.path(),
            &format!("up-{i}.raw"),
            (6 << 20) + 4321 * (i as u64 + 1),
            2,
        );
        let id = nodes[i].create_image(&format!("up-{i}"), "raw");
        put_file(&nodes[(i + 1) % 3], &id, &read(&source));
        images.push(Made {
            id,
            source,
            made: i,
        });
    }
    // Each task followed through a node it was not posted to.
    for (i, task) in tasks.iter().enumerate() {
        let done = nodes[(i + 2) % 3].wait_task(task);
        assert_eq!(done["status"], "success", "{done}\n{}", cluster.logs());
        images.push(Made {
            id: done["result"]["image_id"]
                .as_str()
                .expect("image id")
                .to_owned(),
            source: pulls[i].clone(),
            made: i,
        });
    }

    let ids: BTreeSet<String> = images.iter().map(|m| m.id.clone()).collect();
    assert_eq!(cluster.objects().into_iter().collect::<BTreeSet<_>>(), ids);
    for node in nodes {
        assert_eq!(listed(node, ""), ids, "{}", node.log_text());
        for m in &images {
            assert_served(node, &m.id, &m.source);
        }
    }

    for m in &images {
        let deleter = &nodes[(m.made + 1) % 3];
        let resp = deleter.req("DELETE", &format!("/v2/images/{}", m.id), ADMIN, None);
        assert_eq!(resp.status, 204, "{}", resp.text());
        for node in nodes {
            let gone = node.get(&format!("/v2/images/{}", m.id));
            assert_eq!(gone.status, 404, "{} after delete: {}", m.id, gone.text());
        }
        assert!(
            object(&cluster.probe, &m.id).is_none(),
            "object of {} left",
            m.id
        );
    }
    for node in nodes {
        assert!(listed(node, "").is_empty());
    }
    assert!(cluster.objects().is_empty(), "{:?}", cluster.objects());
    assert!(cluster.uploads().is_empty(), "{:?}", cluster.uploads());
}

/// One prefix, one metadata store: a node with metadata of its own (its start would delete
/// every image it has no record of) and a node of another PostgreSQL database (another
/// deployment), each given the cluster's `[store]`, refuse to start and delete nothing.
#[test]
fn test_cluster_prefix_refused_to_a_rocksdb_node_and_to_another_database() {
    let dir = scratch();
    let cluster = Cluster::start(dir.path());
    let source = raw_disk(dir.path(), "kept.raw", 3 << 20, 2);
    let id = cluster.nodes[0].create_image("kept", "raw");
    put_file(&cluster.nodes[1], &id, &read(&source));
    let config = cluster.config.to_str().expect("utf-8");
    let other = cluster.pg.database("other");
    // The cluster's owner first, then the refused node's own: itself, or the other database.
    for (name, extra, deployments) in [
        ("rocksdb", vec!["--meta", "rocksdb"], 1),
        ("other", vec!["--meta-postgres-url", &other], 2),
    ] {
        let mut args = vec!["--config", config];
        args.extend(extra);
        let log = refused_start(&dir.path().join(name), &args);
        let err = log
            .lines()
            .find(|l| l.starts_with("sluice serve: "))
            .unwrap_or_else(|| panic!("no error in {log}"));
        assert!(err.contains("claiming the image store"), "{err}");
        let owner = "belongs to another metadata store (the nodes of PostgreSQL deployment ";
        assert!(err.contains(owner), "{err}");
        assert_eq!(
            err.matches("PostgreSQL deployment ").count(),
            deployments,
            "{err}"
        );
        assert_eq!(
            err.contains("whose metadata is its own)"),
            deployments == 1,
            "{err}"
        );
    }
    assert_eq!(
        cluster.probe.list_ids().expect("list"),
        std::slice::from_ref(&id)
    );
    for node in &cluster.nodes {
        assert_served(node, &id, &source);
    }
}
