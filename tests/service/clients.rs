//! Unmodified OpenStack clients against the real server: the python-glanceclient CLI
//! (`glance task-create`, `task-show`, `task-list`, `image-show`, `image-download`) and
//! openstacksdk (`tests/clients/sdk_import.py`), installed from PyPI (with python-openstackclient) by
//! `scripts/setup --test` into a venv beside the build cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use super::harness::{digest, FileServer, Server};
use super::imports::image_with_data;
use crate::common::{qemu_info, read, scratch};

/// The client venv: `$SLUICE_CLIENT_VENV`, else `${XDG_CACHE_HOME:-$HOME/.cache}/sluice/venv`
/// (the path `scripts/setup --test` installs to).
fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SLUICE_CLIENT_VENV") {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    cache.join("sluice").join("venv")
}

pub(super) fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/setup --test` (installs python-glanceclient and \
         openstacksdk into {})",
        path.display(),
        venv().display()
    );
    path
}

/// `glance --os-image-url URL --os-auth-token anything ARGS`, with `HOME` in `home` (the
/// client caches schemas under `~/.glanceclient` and races with itself creating it).
pub(super) fn glance(server: &Server, home: &Path, args: &[&str]) -> Output {
    glance_command(Command::new(venv_bin("glance")), server, home, args)
}

/// [`glance`] with standard input closed: `image-create-via-import` takes an open
/// non-terminal stdin for image data (web-download refuses it; glance-direct with `--file`
/// says "You cannot use both --file and stdin"), and a closed stdin is what a terminal-less
/// caller (cron) has.
pub(super) fn glance_without_stdin(server: &Server, home: &Path, args: &[&str]) -> Output {
    let mut sh = Command::new("sh");
    sh.args(["-c", "exec \"$0\" \"$@\" <&-"])
        .arg(venv_bin("glance"));
    glance_command(sh, server, home, args)
}

fn glance_command(mut command: Command, server: &Server, home: &Path, args: &[&str]) -> Output {
    let url = format!("http://{}", server.addr);
    command
        .args(["--os-image-url", &url, "--os-auth-token", "anything"])
        .args(args)
        .env("HOME", home)
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_CLOUD")
        .output()
        .expect("running glance")
}

/// `tests/clients/sdk_upload.py`: openstacksdk `create_image(NAME, filename=SRC, …)` of a
/// `disk_format` image, then a download to `down`; `use_import` asks for the interoperable
/// import instead of an upload. The script prints one JSON object.
pub(super) fn sdk_upload(
    server: &Server,
    src: &Path,
    disk_format: &str,
    name: &str,
    down: &Path,
    use_import: bool,
) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/sdk_upload.py");
    let mut command = Command::new(venv_bin("python"));
    command
        .arg(&script)
        .arg(format!("http://{}", server.addr))
        .arg(src)
        .args([disk_format, name])
        .arg(down);
    if use_import {
        command.arg("use_import");
    }
    command
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running sdk_upload.py")
}

pub(super) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "glance {what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses glance's `| Property | Value |` table; wrapped values are joined with spaces.
pub(super) fn property_table(text: &str) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut last = String::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [key, value] = cells[..] else { continue };
        if key == "Property" {
            continue;
        }
        if key.is_empty() {
            if let Some(v) = map.get_mut(&last) {
                v.push_str(value);
            }
        } else {
            last = key.to_owned();
            map.insert(key.to_owned(), value.to_owned());
        }
    }
    map
}

#[test]
fn test_glanceclient_task_and_image_commands_work_against_sluice() {
    let dir = scratch();
    let src = image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let input = json!({
        "import_from": files.url("small.qcow2"),
        "import_from_format": "qcow2",
        "image_properties": {"name": "via-glanceclient", "disk_format": "qcow2", "container_format": "bare"}
    })
    .to_string();

    let created = glance(
        &server,
        dir.path(),
        &["task-create", "--type", "import", "--input", &input],
    );
    assert_ok(&created, "task-create");
    let table = property_table(&stdout(&created));
    assert_eq!(
        table.get("status").map(String::as_str),
        Some("pending"),
        "{table:?}"
    );
    assert_eq!(table.get("type").map(String::as_str), Some("import"));
    assert_eq!(table.get("owner").map(String::as_str), Some("admin"));
    let task_id = table.get("id").expect("id").clone();

    let done = server.wait_task(&task_id);
    assert_eq!(done["status"], "success", "{done}");

    let shown = glance(&server, dir.path(), &["task-show", &task_id]);
    assert_ok(&shown, "task-show");
    let table = property_table(&stdout(&shown));
    assert_eq!(
        table.get("status").map(String::as_str),
        Some("success"),
        "{table:?}"
    );
    assert!(
        table.get("expires_at").is_some_and(|e| e.ends_with('Z')),
        "{table:?}"
    );
    let result = table.get("result").expect("result");
    let image_id = done["result"]["image_id"].as_str().expect("image id");
    assert!(result.contains(image_id), "{result}");

    let listed = glance(&server, dir.path(), &["task-list"]);
    assert_ok(&listed, "task-list");
    assert!(stdout(&listed).contains(&task_id), "{}", stdout(&listed));

    let image = glance(&server, dir.path(), &["image-show", image_id]);
    assert_ok(&image, "image-show");
    let table = property_table(&stdout(&image));
    let md5 = digest("md5sum", &src);
    let sha512 = digest("sha512sum", &src);
    assert_eq!(table.get("checksum"), Some(&md5), "{table:?}");
    assert_eq!(
        table.get("os_hash_algo").map(String::as_str),
        Some("sha512")
    );
    assert_eq!(table.get("os_hash_value"), Some(&sha512));
    assert_eq!(table.get("size"), Some(&read(&src).len().to_string()));
    let vsize = qemu_info(&src, Some("qcow2")).virtual_size.to_string();
    assert_eq!(table.get("virtual_size"), Some(&vsize));
    assert_eq!(table.get("status").map(String::as_str), Some("active"));
    assert_eq!(
        table.get("name").map(String::as_str),
        Some("via-glanceclient")
    );

    let out_file = dir.path().join("downloaded.qcow2");
    let downloaded = glance(
        &server,
        dir.path(),
        &[
            "image-download",
            "--file",
            out_file.to_str().expect("utf-8"),
            image_id,
        ],
    );
    assert_ok(&downloaded, "image-download");
    assert!(read(&out_file) == read(&src), "downloaded bytes differ");
}

#[test]
fn test_glanceclient_unknown_task_exits_1_with_404() {
    let dir = scratch();
    let server = Server::start(&[]);
    let out = glance(
        &server,
        dir.path(),
        &["task-show", "00000000-0000-0000-0000-000000000000"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404")
            && err.contains("Could not find task 00000000-0000-0000-0000-000000000000"),
        "{err}"
    );
}

fn sdk_import(mode: &str) {
    let dir = scratch();
    let src = image_with_data(dir.path(), "small.qcow2", "qcow2", "");
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/sdk_import.py");
    let output = dir.path().join("sdk-download.qcow2");
    let name = format!("via-sdk-{mode}");
    let out = Command::new(venv_bin("python"))
        .arg(&script)
        .args([
            mode,
            &format!("http://{}", server.addr),
            &files.url("small.qcow2"),
            &name,
        ])
        .arg(&output)
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running sdk_import.py");
    assert!(
        out.status.success(),
        "sdk_import.py {mode} failed ({}):\nstdout: {}\nstderr: {}\n--- server log ---\n{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sdk_import JSON");
    let md5 = digest("md5sum", &src);
    let sha512 = digest("sha512sum", &src);
    assert_eq!(v["created_status"], "pending", "{v}");
    assert_eq!(v["task_status"], "success", "{v}");
    assert_eq!(v["task_owner"], "admin", "{v}");
    assert_eq!(v["image_name"], name.as_str());
    assert_eq!(v["image_status"], "active");
    assert_eq!(v["checksum"], md5.as_str());
    assert_eq!(v["downloaded_md5"], md5.as_str());
    assert_eq!(v["hash_algo"], "sha512");
    assert_eq!(v["hash_value"], sha512.as_str());
    assert_eq!(v["downloaded_sha512"], sha512.as_str());
    assert_eq!(v["size"], read(&src).len() as u64);
    assert_eq!(
        v["virtual_size"],
        qemu_info(&src, Some("qcow2")).virtual_size
    );
}

#[test]
fn test_openstacksdk_admin_token_imports_and_downloads() {
    sdk_import("admin_token");
}

#[test]
fn test_openstacksdk_no_auth_imports_and_downloads() {
    sdk_import("none");
}
