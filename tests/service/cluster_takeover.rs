//! A node of the cluster (`cluster::Cluster`) killed with `kill -9` in the middle of its
//! work (issue #13, "Many nodes"): its pull import is taken back once its lease runs out
//! and finished by another node, exactly once, leaving no orphan object or upload; its body
//! upload does not leave the image `saving` for good (the writer lease on the image runs
//! out and a live node's sweep returns it to `queued`); its `web-download` starts again from
//! its URL on another node, up to `max_import_attempts` runs.
//!
//! The take-back asserted here is today's: a node's periodic sweep (or start-up recovery)
//! moves the expired task back to `pending` with a compare-and-swap on the lease and queues
//! it on the node that won; what the tests check (one more run, on a live node, one image,
//! two requests to the source) holds as well when nodes claim pending tasks from the store.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use sluice_pipeline::store::s3::MIN_PART_SIZE;
use sluice_server::meta::TaskStatus;
use sluice_server::takeover;

use super::cluster::{assert_served, listed, put_file, Cluster, LEASE_SECS, SETTLE_DEADLINE};
use super::harness::{import_input, raw_disk, FileServer, Serve, ADMIN};
use super::s3::object;
use crate::common::{read, scratch};

/// The slow source's size: three parts, so the import surely opens a multipart upload.
const SOURCE_SIZE: u64 = 12 << 20;

/// Bytes the slow source sends before it stalls: more than one part.
const SENT_BEFORE_STALL: usize = 7 << 20;

/// The slow source.
const SLOW: &str = "slow.raw";

/// A cluster importing [`SLOW`] from a source that stalls after [`SENT_BEFORE_STALL`]
/// bytes, once a multipart upload of it is open: the cluster, the source, the task id and
/// the index of the node running it.
fn stalled_import(dir: &Path, name: &str) -> (Cluster, FileServer, String, usize) {
    stalled_import_with(dir, name, "")
}

/// [`stalled_import`] with `s3_extra` in the nodes' `[store.s3]`.
fn stalled_import_with(
    dir: &Path,
    name: &str,
    s3_extra: &str,
) -> (Cluster, FileServer, String, usize) {
    raw_disk(dir, SLOW, SOURCE_SIZE, 6);
    let files = FileServer::start(dir);
    files.set(SLOW, Serve::StallAfter(SENT_BEFORE_STALL));
    let cluster = Cluster::start_with(dir, s3_extra);
    let task = cluster.nodes[0].create_task(import_input(&files.url(SLOW), "raw", name));
    let id = task["id"].as_str().expect("task id").to_owned();
    let holder = cluster.holder(&id);
    cluster.wait_upload_started();
    (cluster, files, id, holder)
}

/// The checks after a dead node's import was finished by another: one run more than the
/// first, started by exactly one node that is not `dead`; one image named `name`, served by
/// every live node; the source asked twice; no object but the image's; and once the dead
/// node is back (its start aborts the upload it left), no unfinished upload and nothing in
/// its scratch area.
fn assert_finished_once(
    cluster: &mut Cluster,
    files: &FileServer,
    source: &Path,
    task_id: &str,
    dead: usize,
    name: &str,
) {
    let live = (dead + 1) % 3;
    let done = cluster.nodes[live].wait_task(task_id);
    assert_eq!(done["status"], "success", "{done}\n{}", cluster.logs());
    let stored = cluster.task(task_id);
    assert_eq!(
        (stored.status, stored.attempts),
        (TaskStatus::Success, 2),
        "{}",
        cluster.logs()
    );
    let second = cluster.logged(&["import started", task_id, "attempt=2"]);
    assert_eq!(second.len(), 1, "{second:?}\n{}", cluster.logs());
    assert_ne!(second[0], dead);
    assert!(
        cluster.logged(&["attempt=3", task_id]).is_empty(),
        "{}",
        cluster.logs()
    );

    let image_id = done["result"]["image_id"].as_str().expect("image id");
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != dead {
            assert_served(node, image_id, source);
            let named = listed(node, &format!("?name={name}"));
            assert_eq!(named.len(), 1, "{named:?}");
        }
    }
    let requests: Vec<String> = files
        .request_log()
        .into_iter()
        .filter(|r| r.starts_with(&format!("/{SLOW}")))
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(cluster.objects(), [image_id]);

    cluster.nodes[dead].restart();
    assert!(
        cluster.uploads().is_empty(),
        "{:?} (image {image_id})\n{}",
        cluster.uploads(),
        cluster.logs()
    );
    let scratch = cluster.nodes[dead].files_under("s3-scratch");
    assert!(scratch.is_empty(), "{scratch:?}");
    assert_eq!(cluster.objects(), [image_id]);
}

/// Its first run also left an object it never recorded (as a node that dies between its
/// commit and its record does): the next run removes it.
#[test]
fn test_cluster_kill_9_of_the_importing_node_another_node_finishes_the_import() {
    let dir = scratch();
    let (mut cluster, files, task_id, holder) = stalled_import(dir.path(), "survivor");
    files.set(SLOW, Serve::Whole);
    cluster.leave_object(&takeover::attempt_image_id(&task_id, 1));
    cluster.nodes[holder].kill9();
    assert_finished_once(
        &mut cluster,
        &files,
        &dir.path().join(SLOW),
        &task_id,
        holder,
        "survivor",
    );
    // Taken back by exactly one live node's sweep.
    let taken = cluster.logged(&["lease ran out", &task_id]);
    assert_eq!(taken.len(), 1, "{taken:?}\n{}", cluster.logs());
}

/// Asks node `node` for a `web-download` of `url` into image `id` (202); returns the
/// import's task id (the image's import lock).
fn web_download(cluster: &Cluster, node: usize, id: &str, url: &str) -> String {
    cluster.import(
        node,
        id,
        serde_json::json!({"name": "web-download", "uri": url}),
    )
}

/// Waits until task `id` runs its `attempt`th run; returns the index of the node running it.
fn running_attempt(cluster: &Cluster, id: &str, attempt: u32) -> usize {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let task = cluster.task(id);
        if let (TaskStatus::Processing, Some(lease)) = (task.status, &task.lease) {
            if task.attempts == attempt {
                return super::cluster::NODE_IDS
                    .iter()
                    .position(|n| *n == lease.node)
                    .expect("a known node");
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {attempt} never started: {task:?}\n{}",
            cluster.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The requests the file server had for [`SLOW`].
fn slow_requests(files: &FileServer) -> usize {
    let asked = files.request_log().into_iter();
    asked.filter(|r| r.starts_with(&format!("/{SLOW}"))).count()
}

/// A `web-download` whose node is killed mid-import starts again from its URL on another
/// node once the lease runs out (the same task, its second run, under the same import
/// lock) and ends `active` with the source's checksum and hash: one object, and no
/// unfinished upload once the dead node is back. The dead run had also committed its
/// object (as a node that dies between its commit and its record does): the next run
/// removes it, rather than fail to write its key.
#[test]
fn test_cluster_kill_9_mid_web_download_another_node_finishes_it_from_the_url() {
    let dir = scratch();
    let source = raw_disk(dir.path(), SLOW, SOURCE_SIZE, 6);
    let files = FileServer::start(dir.path());
    files.set(SLOW, Serve::StallAfter(SENT_BEFORE_STALL));
    let mut cluster = Cluster::start(dir.path());
    let id = cluster.nodes[0].create_image("web", "raw");
    let task_id = web_download(&cluster, 0, &id, &files.url(SLOW));
    let holder = running_attempt(&cluster, &task_id, 1);
    cluster.wait_upload_started();
    files.set(SLOW, Serve::Whole);
    cluster.leave_object(&id);
    cluster.nodes[holder].kill9();
    let live = (holder + 1) % 3;
    wait_status(&cluster, live, &id, "active");
    let done = cluster.nodes[live].wait_task(&task_id);
    assert_eq!(done["status"], "success", "{done}\n{}", cluster.logs());
    let stored = cluster.task(&task_id);
    assert_eq!((stored.status, stored.attempts), (TaskStatus::Success, 2));
    let image = cluster.image(&id);
    assert!(
        !image
            .properties
            .contains_key(sluice_server::meta::LOCK_PROPERTY),
        "{image:?}"
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != holder {
            assert_served(node, &id, &source);
        }
    }
    assert_eq!(slow_requests(&files), 2);
    assert_eq!(cluster.objects(), [id.as_str()]);
    cluster.nodes[holder].restart();
    assert!(
        cluster.uploads().is_empty(),
        "{:?}\n{}",
        cluster.uploads(),
        cluster.logs()
    );
    assert_eq!(cluster.objects(), [id.as_str()]);
    assert_served(&cluster.nodes[holder], &id, &source);
}

/// The run taken back goes through the same SSRF guard as the first: a source that now
/// redirects to the cloud metadata address is refused (`source_error`, naming the
/// allow-list), and the image goes back to `queued` with nothing stored.
#[test]
fn test_cluster_web_download_taken_back_is_ssrf_checked_again() {
    let dir = scratch();
    raw_disk(dir.path(), SLOW, SOURCE_SIZE, 6);
    let files = FileServer::start(dir.path());
    files.set(SLOW, Serve::StallAfter(SENT_BEFORE_STALL));
    let mut cluster = Cluster::start(dir.path());
    let id = cluster.nodes[0].create_image("moved", "raw");
    let task_id = web_download(&cluster, 0, &id, &files.url(SLOW));
    let holder = running_attempt(&cluster, &task_id, 1);
    // The first run has the stalled source (its upload is open) before the source moves.
    cluster.wait_upload_started();
    files.set(
        SLOW,
        Serve::RedirectTo("http://169.254.169.254/latest/meta-data/"),
    );
    cluster.nodes[holder].kill9();
    let live = (holder + 1) % 3;
    let done = cluster.nodes[live].wait_task(&task_id);
    assert_eq!(done["status"], "failure", "{done}\n{}", cluster.logs());
    assert_eq!(done["reason"], "source_error", "{done}");
    let message = done["message"].as_str().unwrap_or("");
    assert!(
        message.contains("169.254.169.254 is not on the import allow-list"),
        "{done}"
    );
    assert_eq!(cluster.task(&task_id).attempts, 2);
    wait_status(&cluster, live, &id, "queued");
    assert!(cluster.objects().is_empty(), "{:?}", cluster.objects());
}

/// A `web-download` whose every run dies with its node (a source that always stalls, each
/// holder killed) is not retried for ever: after `max_import_attempts` (3) runs it fails
/// `interrupted` and its image is back to `queued`, importable again.
#[test]
fn test_cluster_web_download_every_run_killed_interrupted_after_max_attempts() {
    let dir = scratch();
    raw_disk(dir.path(), SLOW, SOURCE_SIZE, 6);
    let files = FileServer::start(dir.path());
    files.set(SLOW, Serve::StallAfter(SENT_BEFORE_STALL));
    let mut cluster = Cluster::start(dir.path());
    let id = cluster.nodes[0].create_image("doomed", "raw");
    let task_id = web_download(&cluster, 0, &id, &files.url(SLOW));
    let mut killed = Vec::new();
    for attempt in 1..=3 {
        let holder = running_attempt(&cluster, &task_id, attempt);
        let image = cluster.image(&id);
        assert_eq!(
            image.status,
            sluice_server::meta::ImageStatus::Importing,
            "run {attempt}: {image:?}"
        );
        // Killed once the run has reached the source, not between its claim and its request.
        let deadline = Instant::now() + SETTLE_DEADLINE;
        while slow_requests(&files) < attempt as usize {
            assert!(
                Instant::now() < deadline,
                "run {attempt} never asked the source"
            );
            thread::sleep(Duration::from_millis(20));
        }
        cluster.nodes[holder].kill9();
        killed.push(holder);
    }
    // Every node is dead; the first one back takes the last run back, and gives up.
    cluster.nodes[killed[0]].restart();
    let failed = cluster.nodes[killed[0]].wait_task(&task_id);
    assert_eq!(failed["status"], "failure", "{failed}\n{}", cluster.logs());
    assert_eq!(failed["reason"], "interrupted", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or("")
            .contains("each of its 3 runs"),
        "{failed}"
    );
    assert_eq!(cluster.task(&task_id).attempts, 3);
    wait_status(&cluster, killed[0], &id, "queued");
    let image = cluster.image(&id);
    assert!(
        !image
            .properties
            .contains_key(sluice_server::meta::LOCK_PROPERTY),
        "{image:?}"
    );
    assert_eq!(slow_requests(&files), 3);
    for &i in &killed[1..] {
        cluster.nodes[i].restart();
    }
    assert!(cluster.uploads().is_empty(), "{:?}", cluster.uploads());
    assert!(cluster.objects().is_empty(), "{:?}", cluster.objects());
    files.set(SLOW, Serve::Whole);
    web_download(&cluster, 1, &id, &files.url(SLOW));
    wait_status(&cluster, 2, &id, "active");
}

/// Seconds after which an unfinished upload counts as abandoned in
/// [`test_cluster_dead_node_never_back_its_upload_aborted_by_a_live_nodes_sweep`]: longer
/// than any upload of the test runs, short enough to wait for.
const ABANDON_AFTER_SECS: u64 = 6;

/// The node running an import dies and never comes back: the multipart upload it left is
/// aborted by a live node's periodic sweep once older than `abandon_after_secs`, not only
/// by some node's next start.
#[test]
fn test_cluster_dead_node_never_back_its_upload_aborted_by_a_live_nodes_sweep() {
    let dir = scratch();
    let extra = format!("abandon_after_secs = {ABANDON_AFTER_SECS}\n");
    let (mut cluster, files, task_id, holder) = stalled_import_with(dir.path(), "orphan", &extra);
    files.set(SLOW, Serve::Whole);
    cluster.nodes[holder].kill9();
    let done = cluster.nodes[(holder + 1) % 3].wait_task(&task_id);
    assert_eq!(done["status"], "success", "{done}\n{}", cluster.logs());
    let image_id = done["result"]["image_id"].as_str().expect("image id");
    let deadline = Instant::now() + Duration::from_secs(ABANDON_AFTER_SECS) + SETTLE_DEADLINE;
    while !cluster.uploads().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dead node's upload was never aborted: {:?}\n{}",
            cluster.uploads(),
            cluster.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cluster.objects(), [image_id]);
    assert!(!cluster.nodes[holder].is_running());
}

/// Every node dies while one runs an import; once its lease has run out, the two others
/// start at the same moment and both find the dead task: exactly one takes it back and
/// runs it.
#[test]
fn test_cluster_two_nodes_racing_to_take_back_a_dead_task_run_it_once() {
    let dir = scratch();
    let (mut cluster, files, task_id, holder) = stalled_import(dir.path(), "raced");
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    for &i in &others {
        cluster.nodes[i].kill9();
    }
    cluster.nodes[holder].kill9();
    files.set(SLOW, Serve::Whole);
    let until = cluster.task(&task_id).lease.expect("lease").until;
    while sluice_server::imports::now() <= until {
        thread::sleep(Duration::from_millis(100));
    }
    thread::scope(|s| {
        for (i, node) in cluster.nodes.iter_mut().enumerate() {
            if i != holder {
                s.spawn(move || node.restart());
            }
        }
    });
    assert_finished_once(
        &mut cluster,
        &files,
        &dir.path().join(SLOW),
        &task_id,
        holder,
        "raced",
    );
    let taken = cluster.logged(&["queued again", &task_id]);
    assert_eq!(taken.len(), 1, "{taken:?}\n{}", cluster.logs());
}

/// Bytes of the body upload killed mid-way: three parts.
const UPLOAD_SIZE: u64 = 16 << 20;

/// Starts `PUT /v2/images/{id}/file` of `data` through `node` and sends three parts of it;
/// returns the connection (held open) once the upload is open in the bucket.
fn upload_partly(cluster: &Cluster, node: usize, id: &str, data: &[u8]) -> TcpStream {
    let s = send_partly(cluster, node, &format!("/v2/images/{id}/file"), data);
    cluster.wait_upload_started();
    s
}

/// Starts `PUT {path}` of `data` through `node` and sends three parts of it; returns the
/// connection, held open.
fn send_partly(cluster: &Cluster, node: usize, path: &str, data: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(&cluster.nodes[node].addr).expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&data[..3 * MIN_PART_SIZE])
        .expect("part of the body");
    s
}

/// Waits until image `id` is `want` through `node`, for several leases and sweeps.
pub(super) fn wait_status(cluster: &Cluster, node: usize, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10 * LEASE_SECS);
    loop {
        let image = cluster.nodes[node].get(&format!("/v2/images/{id}")).json();
        if image["status"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "image left {} (waiting for {want})\n{}",
            image["status"],
            cluster.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// What holds today when the node receiving a body upload dies: no other node shows the
/// image `active` or serves data for it; the dead node's start aborts the upload it left
/// (no object, no unfinished upload); an operator can delete the image through another
/// node.
#[test]
fn test_cluster_kill_9_mid_upload_leaves_no_object_and_the_image_deletable_elsewhere() {
    let dir = scratch();
    let mut cluster = Cluster::start(dir.path());
    let data = read(&raw_disk(dir.path(), "up.raw", UPLOAD_SIZE, 4));
    let id = cluster.nodes[0].create_image("cut", "raw");
    let conn = upload_partly(&cluster, 1, &id, &data);
    cluster.nodes[1].kill9();
    drop(conn);
    for i in [0, 2] {
        let image = cluster.nodes[i].get(&format!("/v2/images/{id}")).json();
        assert_ne!(image["status"], "active", "{image}");
        let down = cluster.nodes[i].get(&format!("/v2/images/{id}/file"));
        assert_ne!(down.status, 200, "{}", down.text());
    }
    cluster.nodes[1].restart();
    assert!(cluster.uploads().is_empty(), "{:?}", cluster.uploads());
    assert!(object(&cluster.probe, &id).is_none(), "object left");
    let resp = cluster.nodes[2].req("DELETE", &format!("/v2/images/{id}"), ADMIN, None);
    assert_eq!(resp.status, 204, "{}", resp.text());
    for node in &cluster.nodes {
        assert!(listed(node, "").is_empty());
    }
    assert!(cluster.objects().is_empty());
}

/// The node receiving a body upload dies and never comes back: the image does not stay
/// `saving` for good. Like after a single node's restart, it goes back to `queued` once the
/// dead node's writer lease on it has run out (a live node's sweep), and takes a new upload
/// through another node.
#[test]
fn test_cluster_kill_9_mid_upload_image_back_to_queued_and_uploadable_elsewhere() {
    let dir = scratch();
    let mut cluster = Cluster::start(dir.path());
    let source = raw_disk(dir.path(), "up.raw", UPLOAD_SIZE, 4);
    let data = read(&source);
    let id = cluster.nodes[0].create_image("cut", "raw");
    let conn = upload_partly(&cluster, 1, &id, &data);
    cluster.nodes[1].kill9();
    drop(conn);
    wait_status(&cluster, 2, &id, "queued");
    let taken = cluster.logged(&["writer lease ran out", &id]);
    assert_eq!(taken.len(), 1, "{taken:?}\n{}", cluster.logs());
    put_file(&cluster.nodes[2], &id, &data);
    assert_served(&cluster.nodes[0], &id, &source);
    cluster.nodes[1].restart();
    assert!(cluster.uploads().is_empty(), "{:?}", cluster.uploads());
    assert_eq!(cluster.objects(), [id.as_str()]);
}

/// The node receiving a glance-direct stage dies and never comes back: the image goes back
/// from `uploading` to `queued` once the dead node's writer lease runs out, and is staged
/// and imported through another node. A complete stage holds no writer lease: its image
/// stays `uploading` on a live node, leases and sweeps later, until its import. The dead
/// node's partial stage is its own file, removed by its next start.
#[test]
fn test_cluster_kill_9_mid_stage_image_back_to_queued_and_staged_elsewhere() {
    let dir = scratch();
    let mut cluster = Cluster::start(dir.path());
    let source = raw_disk(dir.path(), "st.raw", UPLOAD_SIZE, 4);
    let data = read(&source);
    let id = cluster.nodes[0].create_image("cut-stage", "raw");
    let conn = send_partly(&cluster, 1, &format!("/v2/images/{id}/stage"), &data);
    let deadline = Instant::now() + SETTLE_DEADLINE;
    while cluster.nodes[1].files_under("staging").is_empty() {
        assert!(
            Instant::now() < deadline,
            "stage never started\n{}",
            cluster.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        cluster.image(&id).writer.is_some(),
        "{:?}",
        cluster.image(&id)
    );
    cluster.nodes[1].kill9();
    drop(conn);
    wait_status(&cluster, 2, &id, "queued");

    let staged = cluster.nodes[2].req(
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        Some(&data),
    );
    assert_eq!(staged.status, 204, "{}", staged.text());
    let waiting = cluster.image(&id);
    assert_eq!(
        (waiting.status, waiting.writer),
        (sluice_server::meta::ImageStatus::Uploading, None)
    );
    // Past a lease and several sweeps, the complete stage still waits for its import.
    thread::sleep(Duration::from_secs(2 * LEASE_SECS + 1));
    let image = cluster.nodes[0].get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "uploading", "{image}");
    let body = serde_json::json!({"method": {"name": "glance-direct"}});
    let import = cluster.nodes[2].req(
        "POST",
        &format!("/v2/images/{id}/import"),
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(import.status, 202, "{}", import.text());
    wait_status(&cluster, 0, &id, "active");
    assert_served(&cluster.nodes[0], &id, &source);

    cluster.nodes[1].restart();
    let left = cluster.nodes[1].files_under("staging");
    assert!(left.is_empty(), "{left:?}");
    assert!(cluster.uploads().is_empty(), "{:?}", cluster.uploads());
    assert_eq!(cluster.objects(), [id.as_str()]);
}

/// A node whose writer lease on the image it receives was taken back (as when it could not
/// renew it for a whole lease and another node's sweep returned the image to `queued`):
/// its next renewal finds the lease lost, and the upload stops, answers 409, and writes
/// nothing (the image stays `queued`, its unfinished upload is aborted, no object); the image
/// then takes a new upload through another node.
#[test]
fn test_cluster_upload_whose_writer_lease_was_taken_back_stops_and_writes_nothing() {
    let dir = scratch();
    let cluster = Cluster::start(dir.path());
    let source = raw_disk(dir.path(), "lost.raw", UPLOAD_SIZE, 4);
    let data = read(&source);
    let id = cluster.nodes[0].create_image("lost", "raw");
    let mut conn = upload_partly(&cluster, 1, &id, &data);
    cluster.take_back_writer(&id);
    conn.set_read_timeout(Some(SETTLE_DEADLINE))
        .expect("timeout");
    let mut answer = vec![0u8; 8192];
    let n = conn.read(&mut answer).expect("an answer");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(
        text.starts_with("HTTP/1.1 409"),
        "{text}\n{}",
        cluster.logs()
    );
    assert!(text.contains("lost its hold on the image"), "{text}");
    drop(conn);
    let stopped = cluster.logged(&["lease lost", &id]);
    assert_eq!(stopped, [1], "{}", cluster.logs());
    let image = cluster.image(&id);
    assert_eq!(
        (image.status, image.writer, image.size),
        (sluice_server::meta::ImageStatus::Queued, None, None)
    );
    let deadline = Instant::now() + SETTLE_DEADLINE;
    while !cluster.uploads().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", cluster.uploads());
        thread::sleep(Duration::from_millis(100));
    }
    assert!(cluster.objects().is_empty(), "{:?}", cluster.objects());

    put_file(&cluster.nodes[2], &id, &data);
    assert_served(&cluster.nodes[0], &id, &source);
    assert_eq!(cluster.objects(), [id.as_str()]);
}
