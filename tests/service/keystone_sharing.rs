//! Image sharing between two Keystone projects with the unmodified clients, authenticated
//! through a real Keystone (see `keystone.rs`): project alpha's member shares an image with
//! `openstack image add project`, project beta's member accepts it with
//! `openstack image set --accept`, `glance member-list` shows it accepted, and beta
//! downloads the same bytes but can neither modify nor delete the image (403, as Glance).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::clients::venv_bin;
use super::harness::{raw_disk, Server};
use super::keystone::{as_token, sluice, template, Keystone};
use crate::common::scratch;

/// Runs `program args` (an OpenStack client from the test venv) with `HOME` in `home`, no
/// `OS_*` from the environment but `env`, and a closed stdin.
fn client(program: &str, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(venv_bin(program));
    for (key, _) in std::env::vars() {
        if key.starts_with("OS_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("running an OpenStack client")
}

fn ok(out: Output, what: &str, server: &Server) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn test_keystone_share_accept_member_list_download_but_no_writes() {
    let dir = scratch();
    let keystone = Keystone::start(&dir.path().join("keystone"));
    let server = sluice(&keystone, dir.path());
    keystone.register_image_endpoint(&format!("http://{}", server.addr));
    let disk = raw_disk(dir.path(), "disk.raw", 1 << 20, 2);
    let beta = template().ids["projects"]["beta"]
        .as_str()
        .expect("beta's id")
        .to_owned();

    // One clouds.yaml with a cloud per project; Sluice is found in Keystone's catalog.
    let cloud = |project: &str| {
        format!(
            "  {project}:\n    identity_api_version: 3\n    region_name: RegionOne\n    \
             auth:\n      auth_url: {url}/v3\n      username: {project}-member\n      \
             password: pw-{project}-member\n      project_name: {project}\n      \
             user_domain_name: Default\n      project_domain_name: Default\n",
            url = keystone.url
        )
    };
    let clouds = dir.path().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!("clouds:\n{}{}", cloud("alpha"), cloud("beta")),
    )
    .expect("clouds.yaml");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let clouds_env = [("OS_CLIENT_CONFIG_FILE", clouds.to_str().expect("utf-8"))];
    let openstack = |project: &str, args: &[&str]| {
        let mut all = vec!["--os-cloud", project];
        all.extend_from_slice(args);
        client("openstack", &home, &clouds_env, &all)
    };

    let created: Value = serde_json::from_str(&ok(
        openstack(
            "alpha",
            &[
                "image",
                "create",
                "--disk-format",
                "raw",
                "--container-format",
                "bare",
                "--shared",
                "--file",
                disk.to_str().expect("utf-8"),
                "-f",
                "json",
                "shared-via-keystone",
            ],
        ),
        "image create",
        &server,
    ))
    .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["visibility"], "shared", "{created}");

    let added: Value = serde_json::from_str(&ok(
        openstack(
            "alpha",
            &["image", "add", "project", "-f", "json", &id, &beta],
        ),
        "image add project",
        &server,
    ))
    .expect("json");
    assert_eq!(added["status"], "pending", "{added}");
    ok(
        openstack("beta", &["image", "set", "--accept", &id]),
        "image set --accept",
        &server,
    );

    // glanceclient, with its own Keystone options (no clouds.yaml), finds Sluice in the
    // catalog too.
    let glance = client(
        "glance",
        &home,
        &[],
        &[
            "--os-auth-url",
            &format!("{}/v3", keystone.url),
            "--os-username",
            "alpha-member",
            "--os-password",
            "pw-alpha-member",
            "--os-project-name",
            "alpha",
            "--os-user-domain-name",
            "Default",
            "--os-project-domain-name",
            "Default",
            "--os-region-name",
            "RegionOne",
            "member-list",
            "--image-id",
            &id,
        ],
    );
    let members = ok(glance, "glance member-list", &server);
    let row = members
        .lines()
        .find(|l| l.contains(&beta))
        .unwrap_or_else(|| panic!("beta not in member-list:\n{members}"));
    assert!(row.contains(&id) && row.contains("accepted"), "{members}");

    // Beta lists and downloads the image: the same bytes.
    let listed = ok(
        openstack("beta", &["image", "list", "-f", "value", "-c", "ID"]),
        "image list",
        &server,
    );
    assert!(listed.lines().any(|l| l == id), "{listed}");
    let saved = dir.path().join("saved.raw");
    ok(
        openstack(
            "beta",
            &[
                "image",
                "save",
                "--file",
                saved.to_str().expect("utf-8"),
                &id,
            ],
        ),
        "image save",
        &server,
    );
    assert_eq!(
        std::fs::read(&saved).expect("saved"),
        std::fs::read(&disk).expect("disk")
    );

    // Beta may not modify or delete it: the CLI fails, the API says 403 as Glance does.
    let set = openstack("beta", &["image", "set", "--name", "mine", &id]);
    assert!(!set.status.success(), "beta renamed alpha's image");
    let delete = openstack("beta", &["image", "delete", &id]);
    assert!(!delete.status.success(), "beta deleted alpha's image");
    let token = keystone.token("beta-member", "beta");
    let path = format!("/v2/images/{id}");
    let patch = server.req(
        "PATCH",
        &path,
        &[
            ("X-Auth-Token", token.as_str()),
            (
                "Content-Type",
                "application/openstack-images-v2.1-json-patch",
            ),
        ],
        Some(br#"[{"op":"replace","path":"/name","value":"mine"}]"#),
    );
    assert_eq!(patch.status, 403, "{}", patch.text());
    let delete = server.req("DELETE", &path, &as_token(&token), None);
    assert_eq!(delete.status, 403, "{}", delete.text());
    let shown = server.req("GET", &path, &as_token(&token), None);
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(shown.json()["name"], "shared-via-keystone");
    assert_eq!(shown.json()["status"], "active");
}
