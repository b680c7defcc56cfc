//! `sluice serve` with `[store] kind = "s3"` against a real Garage node (the shared fixture
//! of `sluice_pipeline::store::s3::garage`): imports, uploads, downloads whole and by range,
//! deletes, and a `kill -9` mid-upload leaving no object and no unfinished upload.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_pipeline::store::s3::{garage, MIN_PART_SIZE};
use sluice_pipeline::store::space::Reserve;
use sluice_pipeline::store::{S3Config, S3Store, Store};

use super::harness::{import_input, raw_disk, refused_start, FileServer, Server, ADMIN};
use crate::common::read;

/// How long an upload may take to reach the bucket, or a detached upload to settle.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// A fresh prefix on the shared Garage, the TOML that points `sluice serve` at it (in
/// `dir`), and a store of the test's own to look into the bucket.
pub(super) fn s3_setup(dir: &Path) -> (S3Config, std::path::PathBuf, S3Store) {
    s3_setup_on(dir, garage::shared().config())
}

/// [`s3_setup`] on `config` (another Garage than the shared one).
pub(super) fn s3_setup_on(dir: &Path, config: S3Config) -> (S3Config, std::path::PathBuf, S3Store) {
    let toml = format!(
        "[store]\nkind = \"s3\"\n[store.s3]\nendpoint = \"{}\"\nregion = \"{}\"\n\
         bucket = \"{}\"\nprefix = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\n\
         secret_access_key = \"{}\"\npart_size = {}\n",
        config.endpoint.as_deref().expect("endpoint"),
        config.region,
        config.bucket,
        config.prefix,
        config.access_key_id,
        config.secret_access_key,
        MIN_PART_SIZE,
    );
    let file = dir.join("sluice.toml");
    std::fs::write(&file, toml).expect("config");
    let probe =
        S3Store::open(config.clone(), &dir.join("probe"), Reserve::Bytes(0)).expect("probe store");
    (config, file, probe)
}

fn start(config_file: &Path) -> Server {
    Server::start(&["--config", config_file.to_str().expect("utf-8")])
}

fn image(server: &Server, id: &str) -> Value {
    server.get(&format!("/v2/images/{id}")).json()
}

/// The committed object of `id`, read through the test's own store.
pub(super) fn object(probe: &S3Store, id: &str) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let image = probe.open(id).await.expect("open")?;
        let size = image.size();
        let mut stream = image.read(0, size).await.expect("read");
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes)
            .await
            .expect("read object");
        Some(bytes)
    })
}

#[test]
fn test_s3_serve_import_upload_range_download_and_delete_go_through_the_bucket() {
    let dir = tempfile::tempdir().expect("dir");
    let (_config, file, probe) = s3_setup(dir.path());
    let raw_path = raw_disk(dir.path(), "disk.raw", 12 << 20, 6);
    let files = FileServer::start(dir.path());
    let server = start(&file);

    // A task import lands in the bucket as one multipart object.
    let pulled = server.import_ok(import_input(&files.url("disk.raw"), "raw", "pulled"));
    let raw = read(&raw_path);
    assert!(
        object(&probe, &pulled).expect("object") == raw,
        "imported object differs"
    );

    // An upload, downloaded whole and by range.
    let id = &server.create_image("s3", "raw");
    let mut data = raw.clone();
    data.truncate((11 << 20) + 4321);
    let resp = server.put_file(id, &data);
    assert_eq!(resp.status, 204, "{}\n{}", resp.text(), server.log_text());
    assert_eq!(image(&server, id)["status"], "active");
    let whole = server.get(&format!("/v2/images/{id}/file"));
    assert_eq!(whole.status, 200);
    assert!(whole.body == data, "downloaded bytes differ");
    let (from, to) = (MIN_PART_SIZE - 100, MIN_PART_SIZE + 99);
    let ranged = server.req(
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", &format!("bytes={from}-{to}"))],
        None,
    );
    assert_eq!(ranged.status, 206, "{}", ranged.text());
    assert!(ranged.body == data[from..=to], "ranged bytes differ");
    assert!(probe.unfinished_uploads().expect("uploads").is_empty());

    // Deleting the image deletes the object.
    for id in [id, &pulled] {
        let resp = server.req("DELETE", &format!("/v2/images/{id}"), ADMIN, None);
        assert_eq!(resp.status, 204, "{}", resp.text());
        assert!(object(&probe, id).is_none(), "object of {id} left behind");
    }
    assert!(probe.list_ids().expect("list").is_empty());
}

#[test]
fn test_s3_serve_kill_9_mid_upload_then_restart_leaves_no_object_and_no_upload() {
    let dir = tempfile::tempdir().expect("dir");
    let (_config, file, probe) = s3_setup(dir.path());
    let mut server = start(&file);
    let raw = read(&raw_disk(dir.path(), "d.raw", 16 << 20, 4));
    let id = &server.create_image("s3", "raw");
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        raw.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&raw[..3 * MIN_PART_SIZE])
        .expect("part of the body");
    let deadline = Instant::now() + SETTLE_DEADLINE;
    while probe.unfinished_uploads().expect("uploads").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the multipart upload never started\n{}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    server.kill9();
    drop(s);
    server.restart();
    assert!(
        probe.unfinished_uploads().expect("uploads").is_empty(),
        "unfinished upload left\n{}",
        server.log_text()
    );
    assert!(object(&probe, id).is_none(), "object left behind");
    let img = image(&server, id);
    assert_eq!(img["status"], "queued", "{img}");
    let resp = server.put_file(id, &raw);
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert!(object(&probe, id).expect("object") == raw);
}

/// A bucket that is not there, or a wrong secret, stops `sluice serve` before it listens,
/// saying which (a `HEAD` answer has no error body: the status says it), once.
#[test]
fn test_s3_serve_unreachable_bucket_is_refused_before_listening() {
    let dir = tempfile::tempdir().expect("dir");
    let (config, file, _probe) = s3_setup(dir.path());
    let text = std::fs::read_to_string(&file).expect("config");
    let wrong_secret = format!("secret_access_key = \"{}0\"", config.secret_access_key);
    for (wrong, says) in [
        (
            text.replace(garage::BUCKET, "no-such-bucket"),
            "HeadBucket: NotFound (HTTP 404: no such bucket or key)",
        ),
        (
            text.replace(
                &format!("secret_access_key = \"{}\"", config.secret_access_key),
                &wrong_secret,
            ),
            "HeadBucket: HTTP 403: access denied, check the key id and secret",
        ),
    ] {
        assert_ne!(wrong, text);
        std::fs::write(&file, wrong).expect("config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("sluice serve");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("opening the image store"), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(err.matches("HeadBucket").count(), 1, "{err}");
    }
}

/// A node whose metadata is its own deletes at start every object it has no record of (a
/// crash's commit without its record). A second such node pointed at a prefix the first one
/// uses must refuse to start rather than delete the first one's images; the first one
/// restarts on its own prefix as before.
#[test]
fn test_s3_serve_second_node_with_metadata_of_its_own_on_a_used_prefix_refuses_and_deletes_nothing()
{
    let dir = tempfile::tempdir().expect("dir");
    let (_config, file, probe) = s3_setup(dir.path());
    let mut first = start(&file);
    let id = &first.create_image("kept", "raw");
    let data = vec![0x5a_u8; 3 << 20];
    let resp = first.put_file(id, &data);
    assert_eq!(resp.status, 204, "{}", resp.text());

    let config = file.to_str().expect("utf-8");
    let err = refused_start(&dir.path().join("second"), &["--config", config]);
    assert!(err.contains("claiming the image store"), "{err}");
    assert!(
        err.contains("belongs to another metadata store (node "),
        "{err}"
    );
    assert!(
        object(&probe, id).as_deref() == Some(&data[..]),
        "the second node deleted the first one's image"
    );

    first.restart();
    let whole = first.get(&format!("/v2/images/{id}/file"));
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert!(whole.body == data, "downloaded bytes differ");
}
