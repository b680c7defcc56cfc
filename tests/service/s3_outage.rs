//! `sluice serve` on Garage when the object store goes away between two requests: Sluice
//! reaches Garage through a TCP relay of the test's own that can cut every connection and
//! refuse new ones (what a store outage looks like from the node). An upload then fails with
//! 503 and the reason `store_error`, the image stays `queued` with nothing stored, and once the
//! store is back the same image takes its upload; a `glance-direct` import fails the same way.
//! A store that takes requests and never answers costs an upload its request timeout.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::harness::{raw_disk, Server, ADMIN};
use super::s3::{object, s3_setup};
use crate::common::read;
use sluice_pipeline::store::S3Store;

/// A TCP relay to `upstream` that can be cut: while cut, it closes every open connection and
/// every new one at once; while hung, it takes every new connection's requests and never
/// answers (a store that accepts work and stalls).
struct Relay {
    addr: String,
    cut: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (flag, stall, conns) = (Arc::clone(&cut), Arc::clone(&hang), Arc::clone(&open));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                if stall.load(Ordering::SeqCst) {
                    if let Ok(clone) = client.try_clone() {
                        conns.lock().expect("relay").push(clone);
                    }
                    thread::spawn(move || {
                        let mut client = client;
                        let mut buf = [0u8; 64 << 10];
                        while let Ok(1..) = client.read(&mut buf) {}
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for s in [&client, &server] {
                    if let Ok(clone) = s.try_clone() {
                        conns.lock().expect("relay").push(clone);
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    thread::spawn(move || {
                        let mut buf = [0u8; 64 << 10];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay {
            addr,
            cut,
            hang,
            open,
        }
    }

    /// Drops the open connections (a pooled one would bypass a change of mode).
    fn drop_open(&self) {
        for s in self.open.lock().expect("relay").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Takes every request and answers none (`true`), or relays again.
    fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
        self.drop_open();
    }

    /// Cuts every connection and refuses new ones (`true`), or lets them through again.
    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.drop_open();
        }
    }
}

/// The S3 test setup with the server's endpoint pointed at a [`Relay`] to Garage: the
/// relay, the configuration file, and a store that reaches Garage directly.
fn relayed_setup(dir: &Path) -> (Relay, PathBuf, S3Store) {
    let (config, file, probe) = s3_setup(dir);
    let endpoint = config.endpoint.clone().expect("endpoint");
    let relay = Relay::start(endpoint.trim_start_matches("http://").to_owned());
    let text = std::fs::read_to_string(&file).expect("config");
    let relayed = text.replace(&endpoint, &format!("http://{}", relay.addr));
    assert_ne!(relayed, text, "the endpoint is in the config");
    std::fs::write(&file, relayed).expect("config");
    (relay, file, probe)
}

#[test]
fn test_s3_serve_store_away_upload_is_503_store_error_image_queued_then_uploads() {
    let dir = tempfile::tempdir().expect("dir");
    let (relay, file, probe) = relayed_setup(dir.path());
    let server = Server::start(&["--config", file.to_str().expect("utf-8")]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 12 << 20, 4));
    let id = server.create_image("outage", "raw");
    let put = || server.put_file(&id, &raw);

    relay.set_cut(true);
    let resp = put();
    assert_eq!(resp.status, 503, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["reason"], "store_error", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("The image store failed (store_error)"),
        "{body}"
    );
    assert!(
        !message.contains(&relay.addr),
        "the store's address stays in the log"
    );
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "queued", "{image}");

    relay.set_cut(false);
    assert!(object(&probe, &id).is_none(), "nothing stored");
    let resp = put();
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert!(object(&probe, &id).expect("object") == raw);
}

/// A store that takes requests and never answers (seen once from Garage under load: one
/// `UploadPart` of four concurrent imports, its import `processing` for ever) costs an upload
/// its request timeout and retries, not the import: with a 1 s timeout the upload fails
/// with 503 `store_error` well within the client's own 30 s, the image stays `queued`, and
/// once the store answers again the same image takes its upload. Without the timeout the
/// `PUT` waits for ever (the harness's 30 s socket timeout fails the test).
#[test]
fn test_s3_serve_store_that_never_answers_upload_is_503_store_error_then_uploads() {
    let dir = tempfile::tempdir().expect("dir");
    let (relay, file, probe) = relayed_setup(dir.path());
    let server = Server::start(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--s3-request-timeout-secs",
        "1",
    ]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 1 << 20, 4));
    let id = server.create_image("stalled", "raw");
    let put = || server.put_file(&id, &raw);

    relay.set_hang(true);
    let started = std::time::Instant::now();
    let resp = put();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.json()["reason"], "store_error", "{}", resp.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "queued", "{image}");

    relay.set_hang(false);
    let resp = put();
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert!(object(&probe, &id).expect("object") == raw);
}

/// A stage lands in the node's own data directory, so it succeeds while the object store is
/// away; its `glance-direct` import then fails with `store_error` (and says to stage again),
/// the image is `queued` again as after any failed import (Glance's), and once the store is
/// back a new stage and import make it `active`.
#[test]
fn test_s3_serve_store_away_glance_direct_import_fails_store_error_then_imports() {
    let dir = tempfile::tempdir().expect("dir");
    let (relay, file, probe) = relayed_setup(dir.path());
    let server = Server::start(&["--config", file.to_str().expect("utf-8")]);
    let raw = read(&raw_disk(dir.path(), "d.raw", 6 << 20, 4));
    let id = server.create_image("outage-stage", "raw");
    let stage = || {
        let resp = server.req(
            "PUT",
            &format!("/v2/images/{id}/stage"),
            &[("Content-Type", "application/octet-stream")],
            Some(&raw),
        );
        assert_eq!(resp.status, 204, "{}", resp.text());
    };
    let task_ids = || -> Vec<String> {
        let tasks = server.get(&format!("/v2/images/{id}/tasks")).json();
        tasks["tasks"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let import = || {
        let before = task_ids();
        let body = serde_json::json!({"method": {"name": "glance-direct"}}).to_string();
        let resp = server.req(
            "POST",
            &format!("/v2/images/{id}/import"),
            ADMIN,
            Some(body.as_bytes()),
        );
        assert_eq!(resp.status, 202, "{}", resp.text());
        let new = task_ids().into_iter().find(|t| !before.contains(t));
        server.wait_task(&new.expect("the import's task"))
    };

    relay.set_cut(true);
    stage();
    let failed = import();
    assert_eq!(
        (&failed["status"], &failed["reason"]),
        (
            &serde_json::json!("failure"),
            &serde_json::json!("store_error")
        ),
        "{failed}"
    );
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("stage the image again")),
        "{failed}"
    );
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "queued", "{image}");

    relay.set_cut(false);
    stage();
    let done = import();
    assert_eq!(done["status"], "success", "{done}");
    assert!(object(&probe, &id).expect("object") == raw);
}
