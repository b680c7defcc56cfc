//! Roles as Glance's secure-RBAC default policies, cell by cell, through the real binary:
//! every role (reader, member, admin, and `_member_`, which Sluice does not know) × every
//! action × the caller's own project, another project's private image and another project's
//! community image, once with `--auth proxy` (identity headers), once with `--auth token`
//! (a token file) and once with `--auth keystone` (tokens of a real Keystone, `keystone.rs`).
//! Plus the task path's image properties: refused at `POST /v2/tasks` as
//! `PATCH` refuses them, before the source is fetched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{import_input, raw_disk, FileServer, Resp, Server};
use super::keystone::{self, Keystone};
use crate::common::scratch;

/// How long a Keystone token is used before a fresh one is asked for: well within the test
/// Keystone's token lifetime (`keystone::TOKEN_SECS`).
const KEYSTONE_TOKEN_REUSE: Duration = Duration::from_secs(keystone::TOKEN_SECS / 2);

/// How long the fixture's imports may take (small raw images, debug build).
const IMPORTS_DEADLINE: Duration = Duration::from_secs(120);

/// The caller's project.
const OWN: &str = "project-a";
/// Another project.
const OTHER: &str = "project-b";

/// The roles of the table, as sent (`_member_` is Keystone's legacy role: no rights here).
const ROLES: [&str; 4] = ["reader", "member", "admin", "_member_"];

/// How callers identify themselves.
#[derive(Clone, Copy, Debug)]
enum Auth {
    Proxy,
    Token,
    Keystone,
}

/// A caller: project and one role name.
#[derive(Clone, Copy, Debug)]
struct Who {
    project: &'static str,
    role: &'static str,
}

impl Who {
    fn token(self) -> String {
        format!("tok-{}-{}", self.project, self.role)
    }

    /// The request headers that identify this caller in `auth` mode.
    fn headers(self, auth: Auth) -> Vec<(String, String)> {
        match auth {
            Auth::Proxy => vec![
                ("X-Project-Id".into(), self.project.into()),
                ("X-User-Id".into(), format!("user-{}", self.role)),
                ("X-Roles".into(), self.role.into()),
            ],
            Auth::Token => vec![("X-Auth-Token".into(), self.token())],
            Auth::Keystone => unreachable!("Keystone callers' headers come from Setup::headers"),
        }
    }
}

const fn who(project: &'static str, role: &'static str) -> Who {
    Who { project, role }
}

/// Administrator of the caller's project (sets up and checks).
const ADMIN: Who = who(OWN, "admin");

/// A token file with a token for every caller the tests use.
fn write_token_file(path: &Path) {
    let mut text = String::new();
    for project in [OWN, OTHER] {
        for role in ROLES {
            let w = who(project, role);
            writeln!(
                text,
                "[[token]]\ntoken = \"{}\"\nproject_id = \"{project}\"\nuser_id = \"user-{role}\"\nroles = [\"{role}\"]\n",
                w.token()
            )
            .expect("formatting");
        }
    }
    std::fs::write(path, text).expect("writing the token file");
}

/// A server in one auth mode, a file server with one small raw image, and the scratch
/// directory holding both.
struct Setup {
    auth: Auth,
    server: Server,
    files: FileServer,
    /// With [`Auth::Keystone`]: the Keystone and the tokens it issued (by caller), with when.
    keystone: Option<(Keystone, KeystoneTokens)>,
    _dir: tempfile::TempDir,
}

/// Keystone tokens by caller (project, role), with when each was issued.
type KeystoneTokens = RefCell<HashMap<(&'static str, &'static str), (String, Instant)>>;

impl Setup {
    fn start(auth: Auth, extra: &[&str]) -> Setup {
        let dir = scratch();
        raw_disk(dir.path(), "small.raw", 1 << 20, 2);
        let files = FileServer::start(dir.path());
        let tokens = dir.path().join("tokens.toml");
        write_token_file(&tokens);
        let tokens = tokens.to_str().expect("utf-8").to_owned();
        let mut args: Vec<&str> = match auth {
            Auth::Proxy => vec!["--auth", "proxy"],
            Auth::Token => vec!["--auth", "token", "--token-file", &tokens],
            Auth::Keystone => vec![],
        };
        args.extend_from_slice(extra);
        let (server, keystone) = if let Auth::Keystone = auth {
            let keystone = Keystone::start(&dir.path().join("keystone"));
            let server = keystone::sluice_with(&keystone, dir.path(), &args);
            (server, Some((keystone, RefCell::default())))
        } else {
            (Server::start(&args), None)
        };
        Setup {
            auth,
            server,
            files,
            keystone,
            _dir: dir,
        }
    }

    /// A project's id as callers and member lists name it: Keystone's id of `alpha` (for
    /// [`OWN`]) or `beta` (for [`OTHER`]) with Keystone, the name itself otherwise.
    fn project_id(&self, project: &'static str) -> String {
        if self.keystone.is_none() {
            return project.to_owned();
        }
        let name = if project == OWN { "alpha" } else { "beta" };
        keystone::template().ids["projects"][name]
            .as_str()
            .expect("project id")
            .to_owned()
    }

    /// The headers identifying `caller`: with Keystone, a token of user `<project>-<role>`
    /// (reused for [`KEYSTONE_TOKEN_REUSE`]).
    fn headers(&self, caller: Who) -> Vec<(String, String)> {
        let Some((keystone, tokens)) = &self.keystone else {
            return caller.headers(self.auth);
        };
        let key = (caller.project, caller.role);
        let mut tokens = tokens.borrow_mut();
        let fresh = tokens
            .get(&key)
            .is_some_and(|(_, at)| at.elapsed() < KEYSTONE_TOKEN_REUSE);
        if !fresh {
            let project = if caller.project == OWN {
                "alpha"
            } else {
                "beta"
            };
            let token = keystone.token(&format!("{project}-{}", caller.role), project);
            tokens.insert(key, (token, Instant::now()));
        }
        vec![("X-Auth-Token".into(), tokens[&key].0.clone())]
    }

    fn call(&self, method: &str, path: &str, caller: Who, body: Option<&Value>) -> Resp {
        let owned = self.headers(caller);
        let mut headers: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if method == "PATCH" {
            headers.push((
                "Content-Type",
                "application/openstack-images-v2.1-json-patch",
            ));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).expect("json"));
        self.server.req(method, path, &headers, bytes.as_deref())
    }

    /// `POST /v2/tasks` importing the small image with these image properties.
    fn post_import(&self, caller: Who, properties: Value) -> Resp {
        let mut input = import_input(&self.files.url("small.raw"), "raw", "policy");
        if let (Some(props), Value::Object(extra)) =
            (input["image_properties"].as_object_mut(), properties)
        {
            props.extend(extra);
        }
        self.call(
            "POST",
            "/v2/tasks",
            caller,
            Some(&json!({"type": "import", "input": input})),
        )
    }

    /// Polls the tasks (as admin) until each is final; returns their bodies, in order.
    fn wait_tasks(&self, ids: &[String]) -> Vec<Value> {
        let deadline = Instant::now() + IMPORTS_DEADLINE;
        let mut done: Vec<Option<Value>> = vec![None; ids.len()];
        while done.iter().any(Option::is_none) {
            assert!(
                Instant::now() < deadline,
                "imports not final in time\n--- log ---\n{}",
                self.server.log_text()
            );
            for (id, slot) in ids.iter().zip(done.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let resp = self.call("GET", &format!("/v2/tasks/{id}"), ADMIN, None);
                assert_eq!(resp.status, 200, "GET task: {}", resp.text());
                let task = resp.json();
                if matches!(task["status"].as_str(), Some("success" | "failure")) {
                    *slot = Some(task);
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        done.into_iter().flatten().collect()
    }
}

/// The images one role acts on, and the tasks that made them.
struct Images {
    own: String,
    other: String,
    community: String,
    own_task: String,
    other_task: String,
}

/// Imports, for each role, an image of the caller's project (shared), one of the other
/// project (shared: invisible to the caller) and one of the other project (community).
fn import_images(s: &Setup) -> Vec<Images> {
    let mut ids = Vec::new();
    for _ in ROLES {
        for (owner, props) in [
            (OWN, json!({})),
            (OTHER, json!({})),
            (OTHER, json!({"visibility": "community"})),
        ] {
            let resp = s.post_import(who(owner, "member"), props);
            assert_eq!(resp.status, 201, "fixture import: {}", resp.text());
            ids.push(resp.json()["id"].as_str().expect("id").to_owned());
        }
    }
    let tasks = s.wait_tasks(&ids);
    let image = |t: &Value| {
        assert_eq!(t["status"], "success", "fixture import failed: {t}");
        t["result"]["image_id"]
            .as_str()
            .expect("image id")
            .to_owned()
    };
    tasks
        .chunks(3)
        .map(|c| Images {
            own: image(&c[0]),
            other: image(&c[1]),
            community: image(&c[2]),
            own_task: c[0]["id"].as_str().expect("id").to_owned(),
            other_task: c[1]["id"].as_str().expect("id").to_owned(),
        })
        .collect()
}

/// What a cell expects: a status, and for a 403 the policy its message names (`None`: the
/// task-visibility 403, "Forbidden to get task …").
#[derive(Clone, Copy, Debug)]
struct Expect(u16, Option<&'static str>);

const OK: Expect = Expect(200, None);
const CREATED: Expect = Expect(201, None);
const NO_CONTENT: Expect = Expect(204, None);
const NOT_FOUND: Expect = Expect(404, None);
const TASK_FORBIDDEN: Expect = Expect(403, None);

const fn denied(policy: &'static str) -> Expect {
    Expect(403, Some(policy))
}

/// What a row acts on.
#[derive(Clone, Copy, Debug)]
enum On {
    Collection,
    OwnImage,
    OtherImage,
    CommunityImage,
    OwnTask,
    OtherTask,
}

/// One row of the table: an action on a target, and what each of [`ROLES`] gets.
struct Row {
    method: &'static str,
    /// The path, with `{id}` for the target's id.
    path: &'static str,
    on: On,
    /// The body, given the other project's id.
    body: fn(&str) -> Option<Value>,
    expect: [Expect; 4],
}

fn no_body(_: &str) -> Option<Value> {
    None
}

fn rename(_: &str) -> Option<Value> {
    Some(json!([{"op": "replace", "path": "/name", "value": "renamed"}]))
}

fn publicize(_: &str) -> Option<Value> {
    Some(json!([{"op": "replace", "path": "/visibility", "value": "public"}]))
}

fn add_other(other: &str) -> Option<Value> {
    Some(json!({"member": other}))
}

fn accept(_: &str) -> Option<Value> {
    Some(json!({"status": "accepted"}))
}

fn communitize(_: &str) -> Option<Value> {
    Some(json!([{"op": "replace", "path": "/visibility", "value": "community"}]))
}

/// The table. Columns: reader, member, admin, `_member_`. A caller whose roles cannot
/// perform an action at all gets 403 before anything is looked up; one that may perform it
/// gets 404 for an image it cannot see and 403 for one it sees but may not change (Glance).
#[rustfmt::skip]
fn table() -> Vec<Row> {
    use On::*;
    fn row(
        method: &'static str,
        path: &'static str,
        on: On,
        body: fn(&str) -> Option<Value>,
        expect: [Expect; 4],
    ) -> Row {
        Row { method, path, on, body, expect }
    }
    let gi = denied("get_image");
    let mi = denied("modify_image");
    let di = denied("delete_image");
    let dl = denied("download_image");
    let am = denied("add_member");
    let gms = denied("get_members");
    let mm = denied("modify_member");
    let dm = denied("delete_member");
    vec![
        row("POST", "/v2/tasks", Collection, no_body, [denied("add_task"), CREATED, CREATED, denied("add_task")]),
        row("GET", "/v2/tasks", Collection, no_body, [OK, OK, OK, denied("get_tasks")]),
        row("GET", "/v2/tasks/{id}", OwnTask, no_body, [OK, OK, OK, denied("get_task")]),
        row("GET", "/v2/tasks/{id}", OtherTask, no_body, [TASK_FORBIDDEN, TASK_FORBIDDEN, OK, denied("get_task")]),
        row("GET", "/v2/images", Collection, no_body, [OK, OK, OK, denied("get_images")]),
        row("GET", "/v2/images/{id}", OwnImage, no_body, [OK, OK, OK, gi]),
        row("GET", "/v2/images/{id}", OtherImage, no_body, [NOT_FOUND, NOT_FOUND, OK, gi]),
        row("GET", "/v2/images/{id}", CommunityImage, no_body, [OK, OK, OK, gi]),
        row("GET", "/v2/images/{id}/tasks", OwnImage, no_body, [OK, OK, OK, gi]),
        row("GET", "/v2/images/{id}/tasks", OtherImage, no_body, [NOT_FOUND, NOT_FOUND, OK, gi]),
        row("GET", "/v2/images/{id}/tasks", CommunityImage, no_body, [OK, OK, OK, gi]),
        row("GET", "/v2/images/{id}/file", OwnImage, no_body, [dl, OK, OK, dl]),
        row("GET", "/v2/images/{id}/file", OtherImage, no_body, [dl, NOT_FOUND, OK, dl]),
        row("GET", "/v2/images/{id}/file", CommunityImage, no_body, [dl, OK, OK, dl]),
        row("PATCH", "/v2/images/{id}", OwnImage, rename, [mi, OK, OK, mi]),
        row("PATCH", "/v2/images/{id}", OtherImage, rename, [mi, NOT_FOUND, OK, mi]),
        row("PATCH", "/v2/images/{id}", CommunityImage, rename, [mi, mi, OK, mi]),
        row("PUT", "/v2/images/{id}/tags/blue", OwnImage, no_body, [mi, NO_CONTENT, NO_CONTENT, mi]),
        row("PUT", "/v2/images/{id}/tags/blue", OtherImage, no_body, [mi, NOT_FOUND, NO_CONTENT, mi]),
        row("PUT", "/v2/images/{id}/tags/blue", CommunityImage, no_body, [mi, mi, NO_CONTENT, mi]),
        row("DELETE", "/v2/images/{id}/tags/blue", OwnImage, no_body, [mi, NO_CONTENT, NO_CONTENT, mi]),
        row("DELETE", "/v2/images/{id}/tags/blue", OtherImage, no_body, [mi, NOT_FOUND, NO_CONTENT, mi]),
        row("DELETE", "/v2/images/{id}/tags/blue", CommunityImage, no_body, [mi, mi, NO_CONTENT, mi]),
        row("GET", "/v2/images/{id}/members", OwnImage, no_body, [OK, OK, OK, gms]),
        row("GET", "/v2/images/{id}/members", OtherImage, no_body, [NOT_FOUND, NOT_FOUND, OK, gms]),
        row("POST", "/v2/images/{id}/members", OwnImage, add_other, [am, OK, OK, am]),
        row("POST", "/v2/images/{id}/members", OtherImage, add_other, [am, NOT_FOUND, OK, am]),
        row("GET", "/v2/images/{id}/members/project-b", OwnImage, no_body, [NOT_FOUND, OK, OK, denied("get_member")]),
        row("PUT", "/v2/images/{id}/members/project-b", OwnImage, accept, [mm, mm, OK, mm]),
        row("DELETE", "/v2/images/{id}/members/project-b", OwnImage, no_body, [dm, NO_CONTENT, NO_CONTENT, dm]),
        row("PATCH", "/v2/images/{id}", OwnImage, publicize, [mi, denied("publicize_image"), OK, mi]),
        row("PATCH", "/v2/images/{id}", OwnImage, communitize, [mi, OK, OK, mi]),
        row("DELETE", "/v2/images/{id}", OwnImage, no_body, [di, NO_CONTENT, NO_CONTENT, di]),
        row("DELETE", "/v2/images/{id}", OtherImage, no_body, [di, NOT_FOUND, NO_CONTENT, di]),
        row("DELETE", "/v2/images/{id}", CommunityImage, no_body, [di, di, NO_CONTENT, di]),
    ]
}

/// Runs the whole table in one auth mode; collects every wrong cell, then fails once.
fn run_table(auth: Auth) {
    let s = Setup::start(auth, &[]);
    let images = import_images(&s);
    let other = s.project_id(OTHER);
    let mut wrong = Vec::new();
    let mut refused_deletes = Vec::new();
    for row in table() {
        for ((role, expect), imgs) in ROLES.iter().zip(row.expect).zip(&images) {
            let caller = who(OWN, role);
            let id = match row.on {
                On::Collection => "",
                On::OwnImage => &imgs.own,
                On::OtherImage => &imgs.other,
                On::CommunityImage => &imgs.community,
                On::OwnTask => &imgs.own_task,
                On::OtherTask => &imgs.other_task,
            };
            let path = row.path.replace("{id}", id).replace(OTHER, &other);
            // The create row posts a real import (the body needs the file server's URL).
            let resp = if row.method == "POST" && row.path == "/v2/tasks" {
                s.post_import(caller, json!({}))
            } else {
                s.call(row.method, &path, caller, (row.body)(&other).as_ref())
            };
            let cell = format!("{auth:?} {role:>8} {} {path} ({:?})", row.method, row.on);
            if resp.status != expect.0 {
                wrong.push(format!(
                    "{cell}: {} (expected {}): {}",
                    resp.status,
                    expect.0,
                    resp.text()
                ));
                continue;
            }
            if expect.0 == 403 {
                let want = match expect.1 {
                    Some(policy) => format!("You are not authorized to complete {policy} action."),
                    None => format!("Forbidden to get task {id}"),
                };
                if resp.error_message() != want {
                    wrong.push(format!(
                        "{cell}: message {:?}, expected {want:?}",
                        resp.error_message()
                    ));
                }
            }
            if row.method == "DELETE"
                && expect.0 >= 400
                && !row.path.contains("tags")
                && !row.path.contains("members")
            {
                refused_deletes.push(id.to_owned());
            }
        }
    }
    // A refused delete left the image in place.
    for id in refused_deletes {
        let resp = s.call("GET", &format!("/v2/images/{id}"), ADMIN, None);
        if resp.status != 200 {
            wrong.push(format!(
                "{auth:?}: image {id} is gone after a refused delete"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong cells:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn test_policy_role_table_proxy_auth() {
    run_table(Auth::Proxy);
}

#[test]
fn test_policy_role_table_token_auth() {
    run_table(Auth::Token);
}

#[test]
fn test_policy_role_table_keystone_auth() {
    run_table(Auth::Keystone);
}

#[test]
fn test_policy_implied_roles_admin_member_reader() {
    // Keystone's default chain (admin ⊃ member ⊃ reader), for a proxy that sends only the
    // prior role: `member` alone reads, `admin` alone writes anywhere.
    let s = Setup::start(Auth::Proxy, &[]);
    let member_only = who(OWN, "member");
    assert_eq!(s.call("GET", "/v2/tasks", member_only, None).status, 200);
    assert_eq!(s.call("GET", "/v2/images", member_only, None).status, 200);
    let resp = s.post_import(who(OTHER, "member"), json!({}));
    assert_eq!(resp.status, 201, "{}", resp.text());
    let task = s.wait_tasks(&[resp.json()["id"].as_str().expect("id").to_owned()]);
    let image = task[0]["result"]["image_id"].as_str().expect("image id");
    let resp = s.call(
        "PATCH",
        &format!("/v2/images/{image}"),
        ADMIN,
        publicize("").as_ref(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["visibility"], "public");
}

// ---- the task path's image properties ----------------------------------------------------

/// `POST /v2/tasks` with `props` as a member: refused with `status` and `message`, no task
/// left, and the source never fetched.
fn assert_task_refused(s: &Setup, props: Value, status: u16, message: &str) {
    let before = s.files.requests();
    let resp = s.post_import(who(OWN, "member"), props.clone());
    let shown = props.to_string();
    let shown = shown.get(..120).unwrap_or(&shown);
    assert_eq!(resp.status, status, "{shown}: {}", resp.text());
    assert_eq!(resp.error_message(), message, "{shown}");
    let tasks = s.call("GET", "/v2/tasks", ADMIN, None).json();
    assert_eq!(tasks["tasks"], json!([]), "a refused create left a task");
    assert_eq!(s.files.requests(), before, "the source was fetched");
}

#[test]
fn test_member_task_with_public_visibility_is_403_before_fetching() {
    let s = Setup::start(Auth::Proxy, &[]);
    assert_task_refused(
        &s,
        json!({"visibility": "public"}),
        403,
        "You are not authorized to complete publicize_image action.",
    );
    // The same member may still make an image community (Glance's communitize_image).
    let resp = s.post_import(who(OWN, "member"), json!({"visibility": "community"}));
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[test]
fn test_task_reserved_and_read_only_properties_are_403() {
    let s = Setup::start(Auth::Proxy, &[]);
    for (key, message) in [
        ("direct_url", "Attribute 'direct_url' is read-only."),
        ("checksum", "Attribute 'checksum' is read-only."),
        ("size", "Attribute 'size' is read-only."),
        ("status", "Attribute 'status' is read-only."),
        ("os_hash_value", "Attribute 'os_hash_value' is read-only."),
        ("locations", "Attribute 'locations' is reserved."),
        ("location", "Attribute 'location' is reserved."),
        ("deleted", "Attribute 'deleted' is reserved."),
        (
            "os_glance_import_task",
            "Attribute 'os_glance_import_task' is reserved.",
        ),
    ] {
        assert_task_refused(&s, json!({ key: "x" }), 403, message);
    }
    assert_task_refused(
        &s,
        json!({"owner": OTHER}),
        403,
        "You are not authorized to complete add_image action.",
    );
}

#[test]
fn test_task_property_limits_are_enforced() {
    let s = Setup::start(Auth::Proxy, &[]);
    let long_name = "n".repeat(60_000);
    let resp = s.post_import(who(OWN, "member"), json!({"name": long_name}));
    assert_eq!(
        resp.status,
        400,
        "{}",
        &resp.text()[..200.min(resp.text().len())]
    );
    assert!(resp.error_message().ends_with("is too long (in name)"));
    let tags: Vec<String> = (0..3000).map(|i| format!("t{i}")).collect();
    assert_task_refused(
        &s,
        json!({ "tags": tags }),
        413,
        "The limit has been exceeded on the number of allowed image tags. Attempted: 3000, Maximum: 128",
    );
    let props: serde_json::Map<String, Value> =
        (0..4000).map(|i| (format!("p{i}"), json!("v"))).collect();
    assert_task_refused(
        &s,
        Value::Object(props),
        413,
        "The limit has been exceeded on the number of allowed image properties. Attempted: 4000, Maximum: 128",
    );
    assert_task_refused(
        &s,
        json!({ "k".repeat(256): "v" }),
        400,
        "Custom property should not be greater than 255 characters.",
    );
}

#[test]
fn test_task_property_quotas_are_configurable() {
    let s = Setup::start(
        Auth::Proxy,
        &["--image-tag-quota", "2", "--image-property-quota", "1"],
    );
    assert_task_refused(
        &s,
        json!({"tags": ["a", "b", "c"]}),
        413,
        "The limit has been exceeded on the number of allowed image tags. Attempted: 3, Maximum: 2",
    );
    assert_task_refused(
        &s,
        json!({"os_distro": "x", "os_version": "y"}),
        413,
        "The limit has been exceeded on the number of allowed image properties. Attempted: 2, Maximum: 1",
    );
    let resp = s.post_import(
        who(OWN, "member"),
        json!({"tags": ["a", "b"], "os_distro": "x"}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[test]
fn test_admin_task_properties_become_the_image_record() {
    // What the executor builds from the parsed properties: another owner (admins only),
    // public, protected, tags (a set), extra properties.
    let s = Setup::start(Auth::Proxy, &[]);
    let resp = s.post_import(
        ADMIN,
        json!({
            "owner": OTHER, "visibility": "public", "protected": true, "min_ram": 512,
            "tags": ["a", "b", "a"], "os_distro": "debian"
        }),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let task = s.wait_tasks(&[resp.json()["id"].as_str().expect("id").to_owned()]);
    assert_eq!(task[0]["status"], "success", "{}", task[0]);
    let id = task[0]["result"]["image_id"].as_str().expect("image id");
    let image = s.call(
        "GET",
        &format!("/v2/images/{id}"),
        who(OTHER, "reader"),
        None,
    );
    assert_eq!(image.status, 200, "{}", image.text());
    let image = image.json();
    assert_eq!(image["owner"], OTHER);
    assert_eq!(image["visibility"], "public");
    assert_eq!(image["protected"], true);
    assert_eq!(image["min_ram"], 512);
    assert_eq!(image["tags"], json!(["a", "b"]));
    assert_eq!(image["os_distro"], "debian");
}
