//! A full data volume: the real server on a 64 MiB loop-mounted ext4 volume, filled from
//! inside (imports, then large task bodies from an ordinary project) and from outside (`dd`
//! until `ENOSPC`), then `kill -9` and a restart on the full volume. The server must keep
//! running, serve reads, refuse writes with 507 and a clear message, lose nothing, leave
//! nothing half-written, never abort, and take writes again by itself once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{digest, import_input, member, raw_disk, FileServer, Serve, Server};
use crate::common::{run, scratch};

/// Size of the test volume: small enough to fill in a second, large enough for ext4.
const VOLUME_SIZE: &str = "64M";
/// How long the server may take to accept writes again after space is freed.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// A loop-mounted ext4 volume, unmounted when dropped.
struct Volume {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Volume {
    fn new() -> Volume {
        let dir = scratch();
        let image = dir.path().join("volume.ext4");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let image_s = image.to_str().expect("utf-8");
        run("truncate", &["-s", VOLUME_SIZE, image_s]);
        run("mkfs.ext4", &["-q", "-F", image_s]);
        run(
            "mount",
            &["-o", "loop", image_s, mnt.to_str().expect("utf-8")],
        );
        Volume { mnt, _dir: dir }
    }

    /// Bytes an unprivileged writer may still use (`df`'s "Avail").
    fn avail(&self) -> u64 {
        let out = run(
            "df",
            &["-B1", "--output=avail", self.mnt.to_str().expect("utf-8")],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }

    /// Writes zeros into files `name-N` on the volume until it stays full: `dd` stops at
    /// `ENOSPC`, and is run again while space reappears (RocksDB deletes a WAL after a
    /// background flush). Returns the files.
    fn fill(&self, name: &str) -> Vec<PathBuf> {
        let mut written = Vec::new();
        for n in 0..20 {
            let path = self.mnt.join(format!("{name}-{n}"));
            // dd fails with ENOSPC by design: its status is not checked.
            let _ = Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", path.display()))
                .args(["bs=64K", "status=none"])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("running dd");
            let _ = Command::new("sync").status();
            written.push(path);
            thread::sleep(Duration::from_secs(1));
            if self.avail() == 0 {
                return written;
            }
        }
        panic!("the volume never stayed full");
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// `POST /v2/tasks` as `who`; returns the status and body.
fn post(server: &Server, input: Value, who: &[(&str, &str)]) -> (u16, Value) {
    let resp = server.post_task(&json!({"type": "import", "input": input}), who);
    let status = resp.status;
    (status, resp.json())
}

/// Asserts a 507 whose message says the storage is full.
fn assert_storage_full(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 507, "{what}: {body}");
    assert_eq!(body["code"], "507 Insufficient Storage", "{what}: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Image storage media is full")),
        "{what}: {body}"
    );
}

/// Asserts nothing half-written: no partial upload, every listed image has its data and
/// downloads as recorded, and the images of `expected` (id → sha512 of the source) are there.
fn assert_intact(server: &Server, expected: &[(String, String)]) {
    let tmp = server.files_under("tmp");
    assert!(tmp.is_empty(), "partial uploads left: {tmp:?}");
    let list = server.get("/v2/images").json();
    let images = list["images"].as_array().expect("images");
    for image in images {
        let id = image["id"].as_str().expect("id");
        assert!(
            server.data_dir.join("images").join(id).is_file(),
            "image {id} listed without data"
        );
    }
    for (id, sha) in expected {
        let resp = server.get(&format!("/v2/images/{id}/file"));
        assert_eq!(resp.status, 200, "download {id}: {}", resp.text());
        let got = {
            use sha2_hex::hex_sha512;
            hex_sha512(&resp.body)
        };
        assert_eq!(&got, sha, "image {id} content");
    }
}

/// sha512 of bytes via `sha512sum` (the test crate has no hashing dependency).
mod sha2_hex {
    use std::io::Write;
    use std::process::{Command, Stdio};

    pub fn hex_sha512(data: &[u8]) -> String {
        let mut child = Command::new("sha512sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha512sum");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(data)
            .expect("feeding sha512sum");
        let out = child.wait_with_output().expect("sha512sum output");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("digest")
            .to_owned()
    }
}

/// Asserts the server is alive and its log shows no abort.
fn assert_alive(server: &mut Server, when: &str) {
    let log = server.log_text();
    assert!(
        server.is_running(),
        "server died {when}\n--- log ---\n{log}"
    );
    assert!(
        !log.contains("Assertion") && !log.contains("Aborted") && !log.contains("panicked"),
        "abort or panic in the log {when}\n--- log ---\n{log}"
    );
}

fn wait_until(what: &str, server: &Server, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {RECOVERY_DEADLINE:?}\n--- log ---\n{}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn import_ok(server: &Server, url: &str, name: &str) -> String {
    let (status, task) = post(server, import_input(url, "raw", name), &member("p1"));
    assert_eq!(status, 201, "{task}");
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "success", "{done}");
    done["result"]["image_id"]
        .as_str()
        .expect("image id")
        .to_owned()
}

fn sha(path: &Path) -> String {
    digest("sha512sum", path)
}

#[test]
fn test_full_volume_kill9_restart_serves_reads_refuses_writes_recovers() {
    let volume = Volume::new();
    let files_dir = scratch();
    let small = raw_disk(files_dir.path(), "small.raw", 1 << 20, 4);
    let files = FileServer::start(files_dir.path());
    let data_dir = volume.mnt.join("data");
    // Task bodies fill the volume below; under load they wait longer for a worker, so the
    // per-project waiting cap (a different refusal, tested in `quotas`) is lifted here.
    let mut server = Server::start_in(&data_dir, &["--quota-tasks-waiting", "-1"]);

    // Images committed before the volume fills must survive everything below.
    let mut kept = vec![(
        import_ok(&server, &files.url("small.raw"), "kept"),
        sha(&small),
    )];

    // From inside, by image data: an image that fits, then one that would cross the reserve.
    let room = volume.avail();
    let fits = (room.saturating_sub(16 << 20)) & !0xffff;
    let big = raw_disk(files_dir.path(), "big.raw", fits, 8);
    // Dense: all-zero blocks of a raw image are stored as holes and would take no room.
    crate::common::write_pattern(&big, 0, usize::try_from(fits).expect("fits in memory"));
    kept.push((import_ok(&server, &files.url("big.raw"), "big"), sha(&big)));
    let (status, task) = post(
        &server,
        import_input(&files.url("big.raw"), "raw", "too-big"),
        &member("p1"),
    );
    assert_eq!(status, 201, "{task}");
    let failed = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(failed["status"], "failure", "{failed}");
    assert_eq!(failed["reason"], "storage_full", "{failed}");
    assert_intact(&server, &kept);

    // From inside, by metadata: large task bodies from an ordinary project until refused.
    let pad = "p".repeat(60_000);
    let mut refused = None;
    for _ in 0..2_000 {
        let mut input = import_input(&files.url("missing.raw"), "raw", "pad");
        input["image_properties"]["pad"] = json!(pad);
        let (status, body) = post(&server, input, &member("p2"));
        if status != 201 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("task bodies never refused");
    assert_storage_full(status, &body, "task body below the reserve");
    assert_alive(&mut server, "after filling the volume from inside");

    // From outside: a file written until ENOSPC.
    let fillers = volume.fill("filler");
    let (status, body) = post(
        &server,
        import_input(&files.url("small.raw"), "raw", "x"),
        &member("p1"),
    );
    assert_storage_full(status, &body, "task on a full volume");
    let patch = server.req(
        "PATCH",
        &format!("/v2/images/{}", kept[0].0),
        &[(
            "Content-Type",
            "application/openstack-images-v2.1-json-patch",
        )],
        Some(br#"[{"op": "replace", "path": "/name", "value": "renamed"}]"#),
    );
    assert_storage_full(patch.status, &patch.json(), "PATCH on a full volume");
    assert_alive(&mut server, "after filling the volume from outside");

    // kill -9 and restart on the full volume: it starts, serves reads, refuses writes.
    server.restart();
    assert_alive(&mut server, "after a restart on a full volume");
    assert_eq!(server.get("/v2/tasks").status, 200);
    assert_intact(&server, &kept);
    let (status, body) = post(
        &server,
        import_input(&files.url("small.raw"), "raw", "x"),
        &member("p1"),
    );
    assert_storage_full(status, &body, "task after a restart on a full volume");

    // Space freed: writes are taken again without a restart.
    for filler in &fillers {
        std::fs::remove_file(filler).expect("removing the filler");
    }
    let _ = Command::new("sync").status();
    wait_until("the server taking tasks again", &server, || {
        server
            .post_task(
                &json!({"type": "import", "input": import_input(&files.url("small.raw"), "raw", "after")}),
                &member("p1"),
            )
            .status
            == 201
    });
    kept.push((
        import_ok(&server, &files.url("small.raw"), "again"),
        sha(&small),
    ));
    let patch = server.req(
        "PATCH",
        &format!("/v2/images/{}", kept[0].0),
        &[(
            "Content-Type",
            "application/openstack-images-v2.1-json-patch",
        )],
        Some(br#"[{"op": "replace", "path": "/name", "value": "renamed"}]"#),
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    // Every task reaches a final state: none is left processing by the full volume.
    wait_until("every task final", &server, || {
        let list = server.get("/v2/tasks?limit=1000").json();
        list["tasks"].as_array().is_some_and(|ts| {
            ts.iter()
                .all(|t| t["status"] == "success" || t["status"] == "failure")
        })
    });
    assert_intact(&server, &kept);
    assert_alive(&mut server, "after recovering");
}

/// A task that reaches a worker while the volume is full (so it cannot even be marked
/// `processing`) must not be dropped from the queue and left `pending` for ever: it ends
/// `failure` (`storage_full`) once space is freed, and the next import works.
#[test]
fn test_full_volume_task_taken_while_full_becomes_final_once_space_is_freed() {
    let volume = Volume::new();
    let files_dir = scratch();
    raw_disk(files_dir.path(), "slow.raw", 1 << 20, 4);
    let small = raw_disk(files_dir.path(), "small.raw", 1 << 20, 4);
    let files = FileServer::start(files_dir.path());
    files.set("slow.raw", Serve::Trickle(Duration::from_millis(500)));
    let data_dir = volume.mnt.join("data");
    // One worker, held by a trickling source until the minimum rate fails it.
    let server = Server::start_in(
        &data_dir,
        &[
            "--workers",
            "1",
            "--min-rate-bytes-per-sec",
            "1000",
            "--min-rate-window-secs",
            "3",
        ],
    );
    let (status, slow) = post(
        &server,
        import_input(&files.url("slow.raw"), "raw", "slow"),
        &member("p1"),
    );
    assert_eq!(status, 201, "{slow}");
    let slow_id = slow["id"].as_str().expect("id").to_owned();
    wait_until("the slow import to start", &server, || {
        server.get(&format!("/v2/tasks/{slow_id}")).json()["status"] == "processing"
    });
    let (status, queued) = post(
        &server,
        import_input(&files.url("small.raw"), "raw", "queued"),
        &member("p1"),
    );
    assert_eq!(status, 201, "{queued}");
    let queued_id = queued["id"].as_str().expect("id").to_owned();

    // The volume fills while the second task waits; the slow import then fails and the
    // worker takes the second task on a full volume.
    let fill = volume.fill("outside");
    thread::sleep(Duration::from_secs(8));
    for path in &fill {
        let _ = std::fs::remove_file(path);
    }

    for id in [&slow_id, &queued_id] {
        wait_until("every task to become final", &server, || {
            let task = server.get(&format!("/v2/tasks/{id}")).json();
            task["status"] == "failure" || task["status"] == "success"
        });
    }
    let id = import_ok(&server, &files.url("small.raw"), "after");
    assert_intact(&server, &[(id, sha(&small))]);
}

/// Reserve of the health check test: a quarter of the volume, so the metadata floor (half of
/// it) leaves room to land between the two.
const HEALTH_RESERVE: &str = "16MiB";

#[test]
fn test_healthcheck_503_while_disk_reserve_reached_200_once_freed() {
    let volume = Volume::new();
    let server = Server::start_in(
        &volume.mnt.join("data"),
        &["--disk-reserve", HEALTH_RESERVE],
    );
    let health = || {
        let resp = super::harness::http(&server.addr, "GET", "/healthcheck", &[], None);
        (resp.status, resp.text())
    };
    assert_eq!(health(), (200, "OK".to_owned()));
    // Leave 12 MiB: below the 16 MiB reserve, above the 8 MiB metadata floor.
    let filler = volume.mnt.join("filler");
    let keep = 12 << 20;
    let len = volume.avail().saturating_sub(keep);
    run(
        "fallocate",
        &["-l", &len.to_string(), filler.to_str().expect("utf-8")],
    );
    wait_until("503 from /healthcheck", &server, || {
        let (status, text) = health();
        status == 503 && text.contains("disk reserve reached")
    });
    let detail = super::harness::http(&server.addr, "GET", "/healthcheck?detail", &[], None);
    assert_eq!(detail.status, 503, "{}", detail.text());
    assert_eq!(
        detail.json()["storage"]["state"],
        "low",
        "{}",
        detail.text()
    );
    std::fs::remove_file(&filler).expect("removing the filler");
    wait_until("200 from /healthcheck", &server, || health().0 == 200);
    assert_eq!(health(), (200, "OK".to_owned()));
}

#[test]
fn test_healthcheck_503_while_metadata_store_read_only_200_once_freed_without_a_write() {
    let volume = Volume::new();
    let mut server = Server::start_in(&volume.mnt.join("data"), &[]);
    let health = |server: &Server| {
        let resp = super::harness::http(&server.addr, "GET", "/healthcheck", &[], None);
        (resp.status, resp.text())
    };
    assert_eq!(health(&server), (200, "OK".to_owned()));
    // A restart on a full volume opens the metadata store read-only: a real failed store.
    let fillers = volume.fill("filler");
    server.restart();
    let (status, text) = health(&server);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("metadata store read-only"), "{text}");
    // Space freed, and nothing writes: the store is found writable again by itself (a load
    // balancer that took the node out on the 503 sends it nothing else).
    for filler in fillers {
        std::fs::remove_file(filler).expect("removing a filler");
    }
    wait_until("200 from /healthcheck", &server, || {
        health(&server).0 == 200
    });
    assert_eq!(health(&server), (200, "OK".to_owned()));
    let resp = server.req(
        "POST",
        "/v2/images",
        &member("p1"),
        Some(b"{\"name\":\"after\"}"),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
}
