//! Unmodified OpenStack clients uploading to Sluice (`PUT /v2/images/{id}/file`): the
//! `openstack` CLI (`image create --file`, then `image save`), python-glanceclient
//! (`image-create --file --progress`, `image-upload`) and openstacksdk
//! (`create_image(..., use_import=False)`), and what each prints for a refused upload.

use std::path::Path;
use std::process::{Command, Output};

use super::clients::{glance, property_table, sdk_upload, stdout, venv_bin};
use super::harness::{digest, raw_disk, Server};
use super::imports::image_with_data;
use crate::common::{qcow2_backed_by_passwd, read, scratch};

/// `openstack --os-auth-type none --os-endpoint URL ARGS`, with `HOME` in `home`.
pub(super) fn openstack(server: &Server, home: &Path, args: &[&str]) -> Output {
    let url = format!("http://{}", server.addr);
    Command::new(venv_bin("openstack"))
        .args(["--os-auth-type", "none", "--os-endpoint", &url])
        .args(args)
        .env("HOME", home)
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_CLOUD")
        .output()
        .expect("running openstack")
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_openstack_image_create_file_then_save_gives_identical_bytes() {
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);
    for (path, fmt) in [
        (image_with_data(d, "os.qcow2", "qcow2", ""), "qcow2"),
        (raw_disk(d, "os.raw", 8 << 20, 4), "raw"),
    ] {
        let p = path.to_str().expect("utf-8");
        let name = format!("via-openstack-{fmt}");
        let created = openstack(
            &server,
            d,
            &[
                "image",
                "create",
                "--disk-format",
                fmt,
                "--container-format",
                "bare",
                "--file",
                p,
                &name,
                "-f",
                "json",
            ],
        );
        assert_success(&created, "openstack image create");
        let v: serde_json::Value = serde_json::from_slice(&created.stdout).expect("json");
        assert_eq!(v["status"], "active", "{v}");
        assert_eq!(v["checksum"], digest("md5sum", &path).as_str(), "{v}");
        let id = v["id"].as_str().expect("id");
        let image = server.get(&format!("/v2/images/{id}")).json();
        assert_eq!(image["os_hash_value"], digest("sha512sum", &path).as_str());
        let saved = d.join(format!("saved.{fmt}"));
        let out = openstack(
            &server,
            d,
            &[
                "image",
                "save",
                "--file",
                saved.to_str().expect("utf-8"),
                id,
            ],
        );
        assert_success(&out, "openstack image save");
        assert!(read(&saved) == read(&path), "saved bytes differ");
    }
}

#[test]
fn test_glanceclient_image_create_file_progress_and_image_upload() {
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);
    let src = image_with_data(d, "gc.qcow2", "qcow2", "");
    let p = src.to_str().expect("utf-8");
    let out = glance(
        &server,
        d,
        &[
            "image-create",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "--name",
            "via-glance",
            "--file",
            p,
            "--progress",
        ],
    );
    assert_success(&out, "glance image-create --file --progress");
    let table = property_table(&stdout(&out));
    assert_eq!(
        table.get("status").map(String::as_str),
        Some("active"),
        "{table:?}"
    );
    assert_eq!(table.get("checksum"), Some(&digest("md5sum", &src)));
    assert_eq!(table.get("os_hash_value"), Some(&digest("sha512sum", &src)));

    // Created through the API: `glance image-create` without `--file` uploads its stdin
    // when stdin is not a terminal.
    let body =
        serde_json::json!({"name": "later", "disk_format": "qcow2", "container_format": "bare"});
    let created = server.req("POST", "/v2/images", &[], Some(body.to_string().as_bytes()));
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let out = glance(&server, d, &["image-upload", "--file", p, &id]);
    assert_success(&out, "glance image-upload");
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["checksum"], digest("md5sum", &src).as_str());
}

#[test]
fn test_openstacksdk_create_image_without_import_uploads() {
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);
    let src = image_with_data(d, "sdk.qcow2", "qcow2", "");
    let out = sdk_upload(
        &server,
        &src,
        "qcow2",
        "via-sdk-upload",
        &d.join("sdk-down.qcow2"),
        false,
    );
    assert_success(&out, "sdk_upload.py");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let md5 = digest("md5sum", &src);
    assert_eq!(v["image_status"], "active", "{v}");
    assert_eq!(v["checksum"], md5.as_str());
    assert_eq!(v["downloaded_md5"], md5.as_str());
    assert_eq!(v["hash_value"], digest("sha512sum", &src).as_str());
    assert_eq!(v["size"], read(&src).len() as u64);
}

#[test]
fn test_clients_print_the_refusal_of_a_hostile_upload() {
    // A backing-file qcow2 followed by 64 MiB: the clients are still sending when refused.
    let dir = scratch();
    let d = dir.path();
    let server = Server::start(&[]);
    let mut bytes = read(&qcow2_backed_by_passwd(d, "b.qcow2", Some("1G")));
    bytes.resize(bytes.len() + (64 << 20), 0);
    let bad = d.join("bad.qcow2");
    std::fs::write(&bad, &bytes).expect("write");
    let p = bad.to_str().expect("utf-8");
    let out = glance(
        &server,
        d,
        &[
            "image-create",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "--name",
            "bad",
            "--file",
            p,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 415") && err.contains("(backing_file)") && err.contains("/etc/passwd"),
        "{err}"
    );
    let out = openstack(
        &server,
        d,
        &[
            "image",
            "create",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "--file",
            p,
            "bad",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("415"), "{err}");
    assert!(!err.to_ascii_lowercase().contains("broken pipe"), "{err}");
}
