//! `image_count_total` counted exactly: an import into an image that exists (web-download,
//! an upload) is not a future image for `POST /v2/tasks`, the task's start or `POST
//! /v2/images`; and requests racing for the last image of a project's limit never all pass
//! (the check and the task or record it admits are one reservation).

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::{json, Value};

use super::harness::{import_input, member, raw_disk, FileServer, Resp, Serve, Server};
use crate::common::scratch;

/// Requests racing in [`test_quota_count_total_racing_creates_admit_exactly_the_limit`].
const RACERS: usize = 8;

fn post(server: &Server, path: &str, who: &[(&str, &str)], body: &Value) -> Resp {
    server.req("POST", path, who, Some(body.to_string().as_bytes()))
}

fn create_raw(server: &Server, who: &[(&str, &str)]) -> Resp {
    let body = json!({"name": "c", "disk_format": "raw", "container_format": "bare"});
    post(server, "/v2/images", who, &body)
}

fn created_id(resp: &Resp) -> String {
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["id"].as_str().expect("id").to_owned()
}

/// A web-download into a new queued image of `who`, stalled mid-body; returns the image id.
fn stalled_web_download(server: &Server, files: &FileServer, who: &[(&str, &str)]) -> String {
    let id = created_id(&create_raw(server, who));
    let body = json!({"method": {"name": "web-download", "uri": files.url("stall.raw")}});
    let resp = post(server, &format!("/v2/images/{id}/import"), who, &body);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let before = files.stalled();
    while files.stalled() == before {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    id
}

#[test]
fn test_quota_count_total_import_into_an_existing_image_is_not_a_future_image() {
    let dir = scratch();
    raw_disk(dir.path(), "stall.raw", 4 << 20, 4);
    raw_disk(dir.path(), "ok.raw", 1 << 20, 1);
    let files = FileServer::start(dir.path());
    files.set("stall.raw", Serve::StallAfter(1 << 20));
    let server = Server::start(&["--quota-image-count-total", "2"]);

    // One image, its web-download in flight: a legacy task still fits (1 + 1 <= 2), when it
    // is created and when it starts.
    let p1 = member("p1");
    stalled_web_download(&server, &files, &p1);
    let task = server.create_task_as(import_input(&files.url("ok.raw"), "raw", "t"), &p1);
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "success", "{done}");

    // One image, its web-download in flight: one more image record fits.
    let p2 = member("p2");
    stalled_web_download(&server, &files, &p2);
    created_id(&create_raw(&server, &p2));

    // One image, its upload in flight: one more image record fits.
    let p3 = member("p3");
    let id = created_id(&create_raw(&server, &p3));
    let mut upload = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\nX-Project-Id: p3\r\nX-Roles: member\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        4 << 20
    );
    upload.write_all(head.as_bytes()).expect("head");
    upload.write_all(&[0u8; 64 << 10]).expect("some body");
    while server.get(&format!("/v2/images/{id}")).json()["status"] != "saving" {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    created_id(&create_raw(&server, &p3));
    // Now at the limit: the next one is refused.
    assert_eq!(create_raw(&server, &p3).status, 413);
    drop(upload);
}

#[test]
fn test_quota_count_total_racing_creates_admit_exactly_the_limit() {
    let dir = scratch();
    raw_disk(dir.path(), "stall.raw", 4 << 20, 4);
    let files = FileServer::start(dir.path());
    files.set("stall.raw", Serve::StallAfter(1 << 20));
    let server = Arc::new(Server::start(&["--quota-image-count-total", "1"]));
    let url = files.url("stall.raw");
    for round in 0..3 {
        let project: &'static str = ["r0", "r1", "r2"][round];
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let (server, barrier, url) =
                    (Arc::clone(&server), Arc::clone(&barrier), url.clone());
                thread::spawn(move || {
                    let who = member(project);
                    barrier.wait();
                    if i % 2 == 0 {
                        let body =
                            json!({"type": "import", "input": import_input(&url, "raw", "r")});
                        server.post_task(&body, &who).status
                    } else {
                        create_raw(&server, &who).status
                    }
                })
            })
            .collect();
        let statuses: Vec<u16> = racers
            .into_iter()
            .map(|t| t.join().expect("racer"))
            .collect();
        let admitted = statuses.iter().filter(|s| **s == 201).count();
        assert_eq!(admitted, 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 413),
            "{statuses:?}"
        );
    }
}
