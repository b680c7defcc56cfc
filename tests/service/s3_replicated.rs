//! `sluice serve` on a replicated object store, what the S3 store is for past one machine: a
//! three-node Garage cluster keeping three copies ([`GarageCluster`]; a write needs two
//! nodes, a read two), Sluice talking to the first node's endpoint. One storage node dies
//! (`kill -9`): uploads and pull imports still succeed, everything stored before and after
//! is served whole, and the second node's endpoint serves the same bytes (the copies are
//! there, not only on the node Sluice talks to). A second node dies: the store has lost its
//! quorum, and an upload fails within its request timeouts with 503 `store_error`, its image
//! `queued`, never `active` with part of its data.

use std::time::{Duration, Instant};

use sluice_pipeline::store::s3::garage::GarageCluster;
use sluice_pipeline::store::space::Reserve;
use sluice_pipeline::store::S3Store;

use super::cluster::{assert_served, put_file};
use super::harness::{import_input, raw_disk, FileServer, Server};
use super::s3::{object, s3_setup_on};
use crate::common::read;

/// How long an upload into a store without quorum may take to fail: its request timeout
/// (set to 5 s below) times the attempts, with room for a loaded machine.
const NO_QUORUM_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn test_s3_replicated_store_serves_and_takes_imports_with_a_node_dead_refuses_without_quorum() {
    let dir = tempfile::tempdir().expect("dir");
    let garage = GarageCluster::start();
    let (config, file, _probe) = s3_setup_on(dir.path(), garage.nodes[0].config());
    // Before the server: it allows imports from the file servers started so far.
    let files = FileServer::start(dir.path());
    let server = Server::start(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--s3-request-timeout-secs",
        "5",
    ]);
    // Each spans two parts of the smallest size, so every import is a multipart upload.
    let before = raw_disk(dir.path(), "before.raw", (7 << 20) + 111, 5);
    let pulled = raw_disk(dir.path(), "pulled.raw", (9 << 20) + 222, 6);
    let after = raw_disk(dir.path(), "after.raw", (6 << 20) + 333, 4);

    let first = server.create_image("before", "raw");
    put_file(&server, &first, &read(&before));

    garage.nodes[2].kill();
    let second = server.import_ok(import_input(&files.url("pulled.raw"), "raw", "pulled"));
    let third = server.create_image("after", "raw");
    put_file(&server, &third, &read(&after));

    // The other live node's endpoint, same bucket and prefix: its own store.
    let mut elsewhere = config.clone();
    elsewhere.endpoint = Some(garage.nodes[1].endpoint.clone());
    let elsewhere = S3Store::open(elsewhere, &dir.path().join("elsewhere"), Reserve::Bytes(0))
        .expect("a store on the second node");
    for (id, source) in [(&first, &before), (&second, &pulled), (&third, &after)] {
        assert_served(&server, id, source);
        assert!(
            object(&elsewhere, id).expect("object through the second node") == read(source),
            "the second node serves other bytes for {id}"
        );
    }

    garage.nodes[1].kill();
    let lost = server.create_image("no-quorum", "raw");
    let started = Instant::now();
    let resp = server.req(
        "PUT",
        &format!("/v2/images/{lost}/file"),
        &[("Content-Type", "application/octet-stream")],
        Some(&read(&after)),
    );
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.json()["reason"], "store_error", "{}", resp.text());
    assert!(
        started.elapsed() < NO_QUORUM_DEADLINE,
        "{:?}",
        started.elapsed()
    );
    let image = server.get(&format!("/v2/images/{lost}")).json();
    assert_eq!(image["status"], "queued", "{image}");
    assert!(image["checksum"].is_null(), "{image}");
    // No data to serve (Glance's answer for an image without data: 204).
    let down = server.get(&format!("/v2/images/{lost}/file"));
    assert_eq!(down.status, 204, "{}", down.text());
}
