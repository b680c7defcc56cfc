//! `sluice serve` with its metadata in PostgreSQL (`--meta postgres`): a throwaway cluster
//! per test ([`PgCluster`]), the real binary, one import and one upload, a restart.

use std::process::Command;

use sluice_server::meta::testing_pg::PgCluster;

use super::harness::{raw_disk, FileServer, Server};
use super::imports::{assert_import_ok, image_with_data};
use super::upload::assert_upload_ok;
use crate::common::scratch;

#[test]
fn test_serve_on_postgres_imports_uploads_and_keeps_them_across_a_restart() {
    let cluster = PgCluster::start();
    let url = cluster.database("serve");
    let dir = scratch();
    image_with_data(dir.path(), "disk.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let mut server = Server::start(&["--meta", "postgres", "--meta-postgres-url", &url]);
    let imported = assert_import_ok(&server, &files, dir.path(), "disk.qcow2", "qcow2");
    assert_upload_ok(&server, &raw_disk(dir.path(), "d.raw", 8 << 20, 4), "raw");
    assert!(
        !server.data_dir.join("meta").exists(),
        "no RocksDB database beside PostgreSQL"
    );

    server.restart();
    let id = imported["id"].as_str().expect("image id");
    let again = server.get(&format!("/v2/images/{id}"));
    assert_eq!(again.status, 200, "{}", server.log_text());
    assert_eq!(again.json()["status"], "active");
    let listed = server.get("/v2/images").json();
    assert_eq!(
        listed["images"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
}

/// `--meta postgres` without a URL, or with one that does not parse, is refused before
/// anything listens; a server that is not there fails the start, naming PostgreSQL.
#[test]
fn test_serve_on_postgres_bad_config_refused_before_listening() {
    let dir = scratch();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .env_remove("SLUICE_META_POSTGRES_URL")
            .output()
            .expect("running sluice")
    };
    let port = super::harness::free_port();
    for (args, needle) in [
        (vec!["--meta", "postgres"], "meta.postgres.url".to_owned()),
        (
            vec![
                "--meta",
                "postgres",
                "--meta-postgres-url",
                "postgres://x@[bad",
            ],
            "not a PostgreSQL URL".to_owned(),
        ),
        (
            vec![
                "--meta",
                "postgres",
                "--meta-postgres-url",
                &format!("postgres://sluice@127.0.0.1:{port}/none"),
            ],
            "PostgreSQL".to_owned(),
        ),
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("sluice listening"), "{stderr}");
    }
}
