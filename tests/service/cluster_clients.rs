//! The real OpenStack clients against the cluster (`cluster::Cluster`, issue #13): what
//! node A imported, python-glanceclient and openstacksdk list and download through node B.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::clients::{assert_ok, glance, stdout, venv_bin};
use super::cluster::Cluster;
use super::harness::{digest, import_input, FileServer};
use super::imports::image_with_data;
use crate::common::{read, scratch};

#[test]
fn test_cluster_glanceclient_and_openstacksdk_on_node_b_see_what_node_a_imported() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let cluster = Cluster::start(dir.path());
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let task = a.create_task(import_input(&files.url("small.qcow2"), "qcow2", "from-a"));
    let done = a.wait_task(task["id"].as_str().expect("task id"));
    assert_eq!(done["status"], "success", "{done}\n{}", cluster.logs());
    let id = done["result"]["image_id"].as_str().expect("image id");
    let (md5, sha512) = (digest("md5sum", &src), digest("sha512sum", &src));

    let list = glance(b, dir.path(), &["image-list"]);
    assert_ok(&list, "image-list");
    assert!(stdout(&list).contains(id), "{}", stdout(&list));
    assert!(stdout(&list).contains("from-a"), "{}", stdout(&list));
    let by_glance = dir.path().join("glance.qcow2");
    let down = glance(
        b,
        dir.path(),
        &[
            "image-download",
            "--file",
            by_glance.to_str().expect("utf-8"),
            id,
        ],
    );
    assert_ok(&down, "image-download");
    assert!(
        read(&by_glance) == read(&src),
        "glance downloaded other bytes"
    );

    let by_sdk = dir.path().join("sdk.qcow2");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/sdk_list_download.py");
    let out = Command::new(venv_bin("python"))
        .arg(&script)
        .arg(format!("http://{}", b.addr))
        .arg(id)
        .arg(&by_sdk)
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running sdk_list_download.py");
    assert!(
        out.status.success(),
        "sdk_list_download.py failed ({}):\nstdout: {}\nstderr: {}\n{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("sdk_list_download JSON");
    assert_eq!(v["listed"], serde_json::json!([id]), "{v}");
    assert_eq!(v["image_status"], "active", "{v}");
    assert_eq!(v["checksum"], md5.as_str());
    assert_eq!(v["downloaded_md5"], md5.as_str());
    assert_eq!(v["hash_algo"], "sha512");
    assert_eq!(v["hash_value"], sha512.as_str());
    assert_eq!(v["downloaded_sha512"], sha512.as_str());
    assert_eq!(v["size"], read(&src).len() as u64);
}
