//! `kill -9` at random points of every way data comes in — `PUT /file`, `PUT /stage`,
//! web-download, the glance-direct commit and the legacy task import — then a restart, and one
//! checker ([`assert_consistent`]) that walks the data directory, the staging area and the API.
//!
//! Each round starts one operation of each kind on one server, lets every body or source get
//! to a random byte offset (a client that stops sending, a source that stalls), kills the
//! server after a random delay, restarts it on the same data directory and checks the
//! invariants; rounds accumulate images, so earlier rounds' images are checked again after
//! every crash. The random points come from one seeded RNG: the seed is printed, and
//! `SLUICE_CRASH_SEED=N` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::harness::{digest, import_input, raw_disk, FileServer, Resp, Serve, Server, ADMIN};
use super::imports::image_with_data;
use crate::common::{read, scratch};

/// Rounds of (start every kind of operation, kill, restart, check): 5 operations each, about
/// 1 s per round in a debug build.
const ROUNDS: usize = 10;
/// The longest random delay between starting the operations and the kill.
const MAX_KILL_DELAY_MS: u64 = 250;
/// Size of the raw bodies of uploads and stages.
const BODY_LEN: usize = 6 << 20;
/// How long the checker waits for tasks requeued by recovery, and for imports of stages.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Image statuses that say "data was arriving": none may survive a restart.
const TRANSIENT: [&str; 2] = ["saving", "importing"];

/// A random cut of a body or source of `len` bytes: one time in four the whole of it (the
/// kill then falls in the commit or after it), else a uniform offset.
fn random_cut(rng: &mut StdRng, len: usize) -> usize {
    if rng.gen_ratio(1, 4) {
        len
    } else {
        rng.gen_range(0..len)
    }
}

/// The seed: `SLUICE_CRASH_SEED` when set, else from the clock.
fn seed() -> u64 {
    std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn import(server: &Server, id: &str, method: Value) -> Resp {
    let body = json!({ "method": method });
    server.req(
        "POST",
        &format!("/v2/images/{id}/import"),
        ADMIN,
        Some(body.to_string().as_bytes()),
    )
}

/// Starts `PUT /v2/images/{id}/{what}` announcing `body.len()` bytes and sending the first
/// `sent` of them on a detached thread, which then holds the connection until the server
/// dies (a client stopped mid-body; with `sent == body.len()`, one waiting for its answer).
fn put_partial(server: &Server, id: &str, what: &str, body: &[u8], sent: usize) {
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "PUT /v2/images/{id}/{what} HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let part = body[..sent].to_vec();
    thread::spawn(move || {
        if s.write_all(head.as_bytes()).is_ok() && s.write_all(&part).is_ok() {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut sink);
        }
    });
}

/// A file the file server serves (a hard link of `src` under a fresh name), stalling after
/// `offset` bytes unless `offset` is the whole file.
fn serve_cut(files: &FileServer, dir: &Path, src: &Path, name: &str, offset: usize) -> String {
    std::fs::hard_link(src, dir.join(name)).expect("link");
    if offset < read(src).len() {
        files.set(name, Serve::StallAfter(offset));
    }
    files.url(name)
}

/// What the rounds of one test started: for the checker's questions.
#[derive(Default)]
struct Started {
    /// Names of the files served with a stall (served whole after the kill).
    stalled: Vec<String>,
}

/// Starts one operation of each kind at random points; returns what to unstall afterwards.
fn start_round(
    server: &Server,
    files: &FileServer,
    dir: &Path,
    rng: &mut StdRng,
    round: usize,
    raw: &[u8],
    qcow2: &Path,
) -> Started {
    let mut started = Started::default();
    let qcow2_len = read(qcow2).len();

    // A complete stage, then its glance-direct commit: killed around the commit.
    let direct = server.create_image(&format!("direct-{round}"), "qcow2");
    let resp = server.req(
        "PUT",
        &format!("/v2/images/{direct}/stage"),
        &[("Content-Type", "application/octet-stream")],
        Some(&read(qcow2)),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());

    // PUT /file and PUT /stage cut at random offsets.
    let upload = server.create_image(&format!("upload-{round}"), "raw");
    let cut = random_cut(rng, raw.len());
    println!("round {round}: upload sends {cut} of {} bytes", raw.len());
    put_partial(server, &upload, "file", raw, cut);
    let stage = server.create_image(&format!("stage-{round}"), "raw");
    let cut = random_cut(rng, raw.len());
    println!("round {round}: stage sends {cut} of {} bytes", raw.len());
    put_partial(server, &stage, "stage", raw, cut);

    // web-download and a legacy task, their sources stalling at random offsets.
    let web = server.create_image(&format!("web-{round}"), "qcow2");
    let cut = random_cut(rng, qcow2_len);
    println!("round {round}: web-download source stalls at {cut} of {qcow2_len}");
    let name = format!("web-{round}.qcow2");
    let url = serve_cut(files, dir, qcow2, &name, cut);
    started.stalled.push(name);
    let resp = import(server, &web, json!({"name": "web-download", "uri": url}));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let cut = random_cut(rng, qcow2_len);
    println!("round {round}: task source stalls at {cut} of {qcow2_len}");
    let name = format!("task-{round}.qcow2");
    let url = serve_cut(files, dir, qcow2, &name, cut);
    started.stalled.push(name);
    server.create_task(import_input(&url, "qcow2", &format!("task-{round}")));

    let resp = import(server, &direct, json!({"name": "glance-direct"}));
    assert_eq!(resp.status, 202, "{}", resp.text());
    started
}

/// Every file under `dir` (recursively), as paths relative to `root`.
fn files_in(root: &Path, dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(dir), &mut out);
    out.into_iter()
        .map(|p| p.strip_prefix(root).expect("under root").to_path_buf())
        .collect()
}

fn file_names(root: &Path, dir: &str) -> BTreeSet<String> {
    files_in(root, dir)
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect()
}

/// Waits until no task is `pending` or `processing` (recovery requeues pending ones); returns
/// every task.
fn settled_tasks(server: &Server) -> Vec<Value> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let tasks = server.get("/v2/tasks?limit=1000").json()["tasks"]
            .as_array()
            .expect("tasks")
            .clone();
        let open = tasks
            .iter()
            .filter(|t| matches!(t["status"].as_str(), Some("pending" | "processing")))
            .count();
        if open == 0 {
            return tasks;
        }
        assert!(
            Instant::now() < deadline,
            "{open} tasks never finished: {tasks:?}\n{}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the checker found: the `uploading` images (complete stages) by id with the md5 their
/// import must give, and how many images and tasks ended how (printed, to show what the
/// random points reached).
#[derive(Default)]
struct Found {
    uploading: BTreeMap<String, String>,
    outcomes: BTreeMap<String, usize>,
}

/// The invariants after a crash and restart (module documentation).
fn assert_consistent(server: &Server) -> Found {
    let root = &server.data_dir;
    let tasks = settled_tasks(server);
    let images = server.get("/v2/images?limit=1000").json()["images"]
        .as_array()
        .expect("images")
        .clone();
    let log = || server.log_text();

    // Nothing in flight is left on disk.
    for dir in ["tmp", "staging/tmp"] {
        let left = files_in(root, dir);
        assert!(left.is_empty(), "partial data left in {dir}: {left:?}");
    }
    let stored = file_names(root, "images");
    let staged = file_names(root, "staging/images");
    let markers: BTreeSet<String> = file_names(root, "staging/sealed")
        .into_iter()
        .map(|n| {
            n.strip_suffix(".json")
                .unwrap_or_else(|| panic!("a partial marker left: {n}"))
                .to_owned()
        })
        .collect();
    assert_eq!(staged, markers, "staged data and markers disagree");

    let mut by_id = BTreeMap::new();
    let mut found = Found::default();
    for img in &images {
        let id = img["id"].as_str().expect("id").to_owned();
        let status = img["status"].as_str().expect("status");
        assert!(!TRANSIENT.contains(&status), "stuck image {img}\n{}", log());
        match status {
            "active" | "deactivated" => {
                assert!(stored.contains(&id), "{status} image without data: {img}");
                let path = root.join("images").join(&id);
                assert_eq!(img["size"], read(&path).len() as u64, "{img}");
                assert_eq!(
                    img["checksum"],
                    digest("md5sum", &path),
                    "partial data: {img}"
                );
                assert!(!staged.contains(&id), "an active image still staged: {img}");
            }
            "queued" => {
                assert!(!stored.contains(&id), "queued image with data: {img}");
                assert!(!staged.contains(&id), "queued image with a stage: {img}");
                for key in ["size", "checksum", "os_hash_value", "virtual_size"] {
                    assert_eq!(img[key], Value::Null, "queued image keeps {key}: {img}");
                }
            }
            "uploading" => {
                assert!(staged.contains(&id), "uploading without a stage: {img}");
                assert!(!stored.contains(&id), "uploading image with data: {img}");
                let marker: Value = serde_json::from_slice(&read(
                    &root.join("staging/sealed").join(format!("{id}.json")),
                ))
                .expect("marker");
                let data = root.join("staging/images").join(&id);
                assert_eq!(marker["size"], read(&data).len() as u64, "{marker}");
                assert_eq!(marker["md5_hex"], digest("md5sum", &data), "{marker}");
                found.uploading.insert(id.clone(), digest("md5sum", &data));
            }
            other => panic!("unexpected status {other}: {img}"),
        }
        *found.outcomes.entry(format!("image {status}")).or_default() += 1;
        by_id.insert(id, img.clone());
    }
    // Nothing on disk that no record names.
    for id in &stored {
        assert!(by_id.contains_key(id), "orphan image data {id}\n{}", log());
    }
    for id in &staged {
        assert!(by_id.contains_key(id), "orphan stage {id}\n{}", log());
    }
    // Every task final; the ones the crash caught say so; successes name an active image.
    for task in &tasks {
        match task["status"].as_str() {
            Some("success") => {
                let full = server
                    .get(&format!("/v2/tasks/{}", task["id"].as_str().expect("id")))
                    .json();
                let image_id = full["result"]["image_id"].as_str().expect("image id");
                let img = &by_id[image_id];
                assert_eq!(img["status"], "active", "{full} made {img}");
            }
            Some("failure") => {
                let full = server
                    .get(&format!("/v2/tasks/{}", task["id"].as_str().expect("id")))
                    .json();
                assert_eq!(full["reason"], "interrupted", "{full}\n{}", log());
            }
            other => panic!("task not final: {other:?} {task}"),
        }
        let outcome = format!(
            "{} task {}",
            task["type"].as_str().unwrap_or("?"),
            task["status"].as_str().unwrap_or("?")
        );
        *found.outcomes.entry(outcome).or_default() += 1;
    }
    found
}

#[test]
fn test_crash_kill_9_at_random_points_of_every_way_in_leaves_a_consistent_store() {
    let seed = seed();
    println!("SLUICE_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = scratch();
    let d = dir.path();
    let raw = read(&raw_disk(d, "body.raw", BODY_LEN as u64, 6));
    let qcow2 = image_with_data(d, "src.qcow2", "qcow2", "");
    let files = FileServer::start(d);
    let mut server = Server::start(&[]);
    for round in 0..ROUNDS {
        let started = start_round(&server, &files, d, &mut rng, round, &raw, &qcow2);
        let delay = rng.gen_range(0..=MAX_KILL_DELAY_MS);
        println!("round {round}: kill -9 after {delay} ms");
        thread::sleep(Duration::from_millis(delay));
        server.kill9();
        // Pending tasks are requeued after the restart: let their sources send.
        for name in &started.stalled {
            files.set(name, Serve::Whole);
        }
        server.restart();
        let found = assert_consistent(&server);
        println!("round {round}: after the restart {:?}", found.outcomes);
        // Staged data is still importable: import it (which also keeps rounds independent).
        for (id, md5) in &found.uploading {
            let resp = import(&server, id, json!({"name": "glance-direct"}));
            assert_eq!(resp.status, 202, "{}", resp.text());
            let deadline = Instant::now() + SETTLE_DEADLINE;
            loop {
                let img = server.get(&format!("/v2/images/{id}")).json();
                if img["status"] == "active" {
                    assert_eq!(img["checksum"], md5.as_str(), "{img}");
                    break;
                }
                assert!(Instant::now() < deadline, "stage never imported: {img}");
                thread::sleep(Duration::from_millis(25));
            }
        }
        assert!(assert_consistent(&server).uploading.is_empty());
    }
    println!("SLUICE_CRASH_SEED={seed}: {ROUNDS} rounds consistent");
}
