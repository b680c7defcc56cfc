//! Image sharing with the unmodified python-glanceclient CLI against the real server in
//! `--auth token` mode (three projects, one token each): project A uploads a `shared`
//! image and adds project B (`glance member-create`), B accepts (`member-update`), A lists
//! the members (`member-list`); B lists, downloads and reads the image but cannot update
//! or delete it; project C, not a member, does not see it. The same flow with openstacksdk
//! (`tests/clients/sdk_share.py`: `add_member`, `update_member`, `members`, `stores`).
//! `openstack image add project` and `image set --accept` resolve projects through
//! Keystone, so they belong with the Keystone fixture.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use super::clients::{assert_ok, property_table, stdout, venv_bin};
use super::harness::{raw_disk, Server};
use crate::common::{read, scratch};

/// The projects of the test and their tokens.
const PROJECTS: [(&str, &str); 3] = [
    ("tok-a", "project-a"),
    ("tok-b", "project-b"),
    ("tok-c", "project-c"),
];

/// A token file giving each project's token the `member` role.
fn write_tokens(path: &Path) {
    let mut text = String::new();
    for (token, project) in PROJECTS {
        writeln!(
            text,
            "[[token]]\ntoken = \"{token}\"\nproject_id = \"{project}\"\nuser_id = \"user-{project}\"\nroles = [\"member\", \"reader\"]\n"
        )
        .expect("formatting");
    }
    std::fs::write(path, text).expect("writing the token file");
}

/// `glance --os-image-url URL --os-auth-token TOKEN ARGS` with `HOME` in `home`.
fn glance_as(server: &Server, home: &Path, token: &str, args: &[&str]) -> Output {
    Command::new(venv_bin("glance"))
        .args(["--os-image-url", &format!("http://{}", server.addr)])
        .args(["--os-auth-token", token])
        .args(args)
        .env("HOME", home)
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_CLOUD")
        .output()
        .expect("running glance")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn test_glanceclient_shares_an_image_member_downloads_but_cannot_change_it() {
    let dir = scratch();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens);
    let tokens = tokens.to_string_lossy().into_owned();
    let server = Server::start(&["--auth", "token", "--token-file", &tokens]);
    let disk = raw_disk(dir.path(), "disk.raw", 4 << 20, 4);
    let disk_arg = disk.to_string_lossy().into_owned();
    let glance = |token: &str, args: &[&str]| glance_as(&server, &home, token, args);

    let created = glance(
        "tok-a",
        &[
            "image-create",
            "--name",
            "shared-disk",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--visibility",
            "shared",
            "--file",
            &disk_arg,
        ],
    );
    assert_ok(&created, "image-create");
    let image = property_table(&stdout(&created));
    let id = image.get("id").expect("image id").clone();
    assert_eq!(image.get("status").map(String::as_str), Some("active"));

    // Not shared yet: B does not see it.
    let hidden = glance("tok-b", &["image-show", &id]);
    assert!(!hidden.status.success(), "{}", stdout(&hidden));

    let added = glance("tok-a", &["member-create", &id, "project-b"]);
    assert_ok(&added, "member-create");
    assert!(stdout(&added).contains("pending"), "{}", stdout(&added));
    // Pending: B sees it by id, but its image list shows only accepted images.
    assert_ok(
        &glance("tok-b", &["image-show", &id]),
        "image-show as pending member",
    );
    assert!(!stdout(&glance("tok-b", &["image-list"])).contains(&id));

    // The owner cannot accept for B; B can.
    let by_owner = glance("tok-a", &["member-update", &id, "project-b", "accepted"]);
    assert!(!by_owner.status.success(), "{}", stdout(&by_owner));
    let accepted = glance("tok-b", &["member-update", &id, "project-b", "accepted"]);
    assert_ok(&accepted, "member-update");

    let members = glance("tok-a", &["member-list", "--image-id", &id]);
    assert_ok(&members, "member-list");
    let text = stdout(&members);
    assert!(
        text.lines()
            .any(|l| l.contains(&id) && l.contains("project-b") && l.contains("accepted")),
        "{text}"
    );

    let listed = glance("tok-b", &["image-list"]);
    assert_ok(&listed, "image-list as member");
    assert!(stdout(&listed).contains(&id), "{}", stdout(&listed));

    let down = dir.path().join("down.raw");
    let down_arg = down.to_string_lossy().into_owned();
    let downloaded = glance("tok-b", &["image-download", "--file", &down_arg, &id]);
    assert_ok(&downloaded, "image-download as member");
    assert!(read(&down) == read(&disk), "the member's download differs");

    let update = glance("tok-b", &["image-update", "--name", "mine", &id]);
    assert!(
        stderr(&update).contains("not authorized to complete modify_image"),
        "{}",
        stderr(&update)
    );
    let delete = glance("tok-b", &["image-delete", &id]);
    assert!(
        !delete.status.success() && stderr(&delete).contains("not permitted to delete"),
        "{}",
        stderr(&delete)
    );
    let still = glance("tok-a", &["image-show", &id]);
    assert_ok(
        &still,
        "image-show by the owner after the member's attempts",
    );
    assert_eq!(
        property_table(&stdout(&still))
            .get("name")
            .map(String::as_str),
        Some("shared-disk")
    );

    // C is no member: no image, no members.
    assert!(!glance("tok-c", &["image-show", &id]).status.success());
    assert!(!stdout(&glance("tok-c", &["image-list"])).contains(&id));
}

#[test]
fn test_openstacksdk_shares_an_image_member_downloads_but_cannot_change_it() {
    let dir = scratch();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens);
    let tokens = tokens.to_string_lossy().into_owned();
    let server = Server::start(&["--auth", "token", "--token-file", &tokens]);
    let disk = raw_disk(dir.path(), "disk.raw", 2 << 20, 2);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/sdk_share.py");
    let out = Command::new(venv_bin("python"))
        .arg(&script)
        .arg(format!("http://{}", server.addr))
        .arg(&disk)
        .args(["tok-a", "tok-b", "project-b"])
        .env("HOME", dir.path())
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running sdk_share.py");
    assert_ok(&out, "sdk_share.py");
    let got: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(got["stores"], serde_json::json!([["local", true]]));
    assert_eq!(got["added"], "pending");
    assert_eq!(got["accepted"], "accepted");
    assert_eq!(
        got["members"],
        serde_json::json!([["project-b", "accepted"]])
    );
    assert_eq!(got["member_lists_it"], true);
    assert_eq!(got["download"], 2 << 20);
    assert_eq!(got["patch"], 403);
    assert_eq!(got["delete"], 403);
    assert_eq!(got["name_after"], "sdk-shared");
}
