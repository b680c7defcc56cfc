//! `[auth] mode = "keystone"` against a real Keystone: keystone from PyPI (SQLite, Fernet)
//! served by uWSGI on a loopback port, installed by `scripts/setup --test` into
//! `~/.cache/sluice/keystone-venv` (or `$SLUICE_KEYSTONE_VENV`).
//!
//! The slow part (`db_sync`, key setup, `bootstrap`, projects and users:
//! `tests/clients/keystone_prepare.sh` and `keystone_users.py`) runs once into a template
//! directory beside the venv, reused by later runs; each test copies it and starts its own
//! uWSGI, so a test may stop its Keystone without disturbing the others.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::clients::venv_bin;
use super::harness::{free_port, http, import_input, raw_disk, FileServer, Resp, Server};
use crate::common::scratch;

/// The admin password given to `keystone-manage bootstrap`.
const ADMIN_PASSWORD: &str = "pw-admin";

/// Keystone's token lifetime in these tests (`[token] expiration`): short, so that the
/// expiry test waits little and Sluice's service token is renewed during a run.
pub(super) const TOKEN_SECS: u64 = 30;

/// Sluice's token cache time in these tests: short, so that revocation shows quickly.
const CACHE_SECS: u64 = 2;

/// How long uWSGI may take to answer its first request.
const KEYSTONE_START_DEADLINE: Duration = Duration::from_secs(120);

/// The Keystone venv: `$SLUICE_KEYSTONE_VENV`, else `~/.cache/sluice/keystone-venv`.
fn keystone_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SLUICE_KEYSTONE_VENV") {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let venv = cache.join("sluice").join("keystone-venv");
    assert!(
        venv.join("bin/uwsgi").exists() && venv.join("bin/keystone-manage").exists(),
        "{} lacks keystone or uwsgi: run `scripts/setup --test`",
        venv.display()
    );
    venv
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

/// The prepared template: its directory, the directory it was built in (its
/// `keystone.conf` names that one) and the ids `keystone_users.py` printed.
pub(super) struct Template {
    dir: PathBuf,
    built_in: String,
    pub(super) ids: Value,
}

/// The template, prepared once per Keystone version, token lifetime and fixture scripts into
/// `<venv>/../keystone-template/<key>` and reused by later runs (timed on stderr). Test
/// processes running at once each build their own and the first to rename it in wins.
pub(super) fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let venv = keystone_venv();
        let version = std::fs::read_dir(venv.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|py| {
                std::fs::read_dir(py.path().join("site-packages"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("keystone-") && n.ends_with(".dist-info"))
            .expect("keystone's dist-info in the venv");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for script in ["keystone_prepare.sh", "keystone_users.py"] {
            std::fs::read(clients_dir().join(script))
                .expect("script")
                .hash(&mut hasher);
        }
        TOKEN_SECS.hash(&mut hasher);
        let root = venv.with_file_name("keystone-template");
        let dir = root.join(format!("{version}-{:016x}", hasher.finish()));
        if let Some(t) = Template::load(&dir) {
            return t;
        }
        let started = Instant::now();
        let build = root.join(format!("build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&build);
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let out = Command::new(clients_dir().join("keystone_prepare.sh"))
            .arg(&venv)
            .arg(&build)
            .arg(&url)
            .args([ADMIN_PASSWORD, &TOKEN_SECS.to_string()])
            .output()
            .expect("running keystone_prepare.sh");
        assert!(
            out.status.success(),
            "keystone_prepare.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut keystone = Keystone::serve(&build, port);
        let out = Command::new(venv.join("bin/python"))
            .arg(clients_dir().join("keystone_users.py"))
            .args([&url, ADMIN_PASSWORD])
            .output()
            .expect("running keystone_users.py");
        assert!(
            out.status.success(),
            "keystone_users.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        keystone.stop();
        std::fs::write(build.join("ids.json"), &out.stdout).expect("ids.json");
        std::fs::write(build.join("built_in"), build.to_str().expect("utf-8")).expect("built_in");
        eprintln!("keystone template prepared in {:?}", started.elapsed());
        if std::fs::rename(&build, &dir).is_err() {
            // Another test process got there first: use its template.
            let _ = std::fs::remove_dir_all(&build);
        }
        Template::load(&dir).expect("the keystone template just prepared")
    })
}

impl Template {
    /// A complete template in `dir`, if there is one.
    fn load(dir: &Path) -> Option<Template> {
        let ids = serde_json::from_slice(&std::fs::read(dir.join("ids.json")).ok()?).ok()?;
        let built_in = std::fs::read_to_string(dir.join("built_in")).ok()?;
        Some(Template {
            dir: dir.to_owned(),
            built_in,
            ids,
        })
    }
}

/// One running Keystone (uWSGI, one process, no master: killing it stops everything).
pub(super) struct Keystone {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    pub(super) url: String,
}

impl Keystone {
    /// A Keystone of its own for one test, from the template, in `dir`.
    pub(super) fn start(dir: &Path) -> Keystone {
        let template = template();
        let conf = std::fs::read_to_string(template.dir.join("keystone.conf")).expect("conf");
        let from = template.built_in.as_str();
        let to = dir.to_str().expect("utf-8");
        for sub in ["fernet-keys", "credential-keys"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
            for entry in std::fs::read_dir(template.dir.join(sub)).expect("keys") {
                let entry = entry.expect("key");
                std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name())).expect("cp");
            }
        }
        std::fs::copy(template.dir.join("keystone.db"), dir.join("keystone.db")).expect("db");
        std::fs::write(dir.join("keystone.conf"), conf.replace(from, to)).expect("conf");
        let keystone = Keystone::serve(dir, free_port());
        keystone.move_identity_endpoints();
        keystone
    }

    /// Points the catalog's `identity` endpoints (registered by `bootstrap` at the port the
    /// template was built on) to this Keystone, as clients that look projects up
    /// (`openstack image add project`) follow the catalog.
    fn move_identity_endpoints(&self) {
        let admin = self.token("admin", "admin");
        let who = [("X-Auth-Token", admin.as_str())];
        let list = http(&self.addr(), "GET", "/v3/endpoints", &who, None);
        assert_eq!(list.status, 200, "endpoints: {}", list.text());
        let url = format!("{}/v3", self.url);
        for endpoint in list.json()["endpoints"].as_array().expect("endpoints") {
            let id = endpoint["id"].as_str().expect("id");
            let body = json!({"endpoint": {"url": url}}).to_string();
            let resp = http(
                &self.addr(),
                "PATCH",
                &format!("/v3/endpoints/{id}"),
                &who,
                Some(body.as_bytes()),
            );
            assert_eq!(resp.status, 200, "endpoint update: {}", resp.text());
        }
    }

    fn serve(dir: &Path, port: u16) -> Keystone {
        let mut k = Keystone {
            child: None,
            dir: dir.to_owned(),
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        k.resume();
        k
    }

    /// Starts uWSGI (again) on the same port and waits until `/v3` answers.
    fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("uwsgi.log"))
            .expect("uwsgi log");
        let child = Command::new(keystone_venv().join("bin/uwsgi"))
            .args(["--http-socket", &format!("127.0.0.1:{}", self.port)])
            .args(["--module", "keystone.wsgi.api:application"])
            .args(["--processes", "1", "--threads", "4", "--die-on-term"])
            .arg("--disable-logging")
            // uWSGI's http-socket closes connections after each response; saying so keeps
            // clients (keystoneauth's pool) from reusing one and being reset.
            .args(["--add-header", "Connection: close"])
            .env("OS_KEYSTONE_CONFIG_FILES", self.dir.join("keystone.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning uwsgi");
        self.child = Some(child);
        let deadline = Instant::now() + KEYSTONE_START_DEADLINE;
        let addr = format!("127.0.0.1:{}", self.port);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok()
                && http(&addr, "GET", "/v3", &[], None).status == 200
            {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "keystone did not answer on {addr}:\n{}",
            std::fs::read_to_string(self.dir.join("uwsgi.log")).unwrap_or_default()
        );
    }

    /// Kills uWSGI.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A project-scoped token for user `<project>-<role>`.
    pub(super) fn token(&self, user: &str, project: &str) -> String {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": format!("pw-{user}")}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
        let resp = http(
            &self.addr(),
            "POST",
            "/v3/auth/tokens",
            &[],
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(resp.status, 201, "token for {user}: {}", resp.text());
        resp.header("x-subject-token")
            .expect("X-Subject-Token")
            .to_owned()
    }

    /// Registers `url` as the public `image` endpoint in Keystone's catalog (what
    /// `openstack service create … image` and `openstack endpoint create … image public URL`
    /// do).
    pub(super) fn register_image_endpoint(&self, url: &str) {
        let admin = self.token("admin", "admin");
        let who = [("X-Auth-Token", admin.as_str())];
        let body = json!({"service": {"type": "image", "name": "sluice"}}).to_string();
        let resp = http(
            &self.addr(),
            "POST",
            "/v3/services",
            &who,
            Some(body.as_bytes()),
        );
        assert_eq!(resp.status, 201, "service create: {}", resp.text());
        let service_id = resp.json()["service"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let body = json!({"endpoint": {"service_id": service_id, "interface": "public",
            "url": url, "region_id": "RegionOne"}})
        .to_string();
        let resp = http(
            &self.addr(),
            "POST",
            "/v3/endpoints",
            &who,
            Some(body.as_bytes()),
        );
        assert_eq!(resp.status, 201, "endpoint create: {}", resp.text());
    }

    /// Revokes `token` (`DELETE /v3/auth/tokens` with an admin token).
    fn revoke(&self, token: &str) {
        let admin = self.token("admin", "admin");
        let resp = http(
            &self.addr(),
            "DELETE",
            "/v3/auth/tokens",
            &[("X-Auth-Token", &admin), ("X-Subject-Token", token)],
            None,
        );
        assert_eq!(resp.status, 204, "revoking: {}", resp.text());
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `sluice serve` in keystone mode against `keystone`.
pub(super) fn sluice(keystone: &Keystone, dir: &Path) -> Server {
    sluice_with(keystone, dir, &[])
}

/// [`sluice`] with more arguments.
pub(super) fn sluice_with(keystone: &Keystone, dir: &Path, extra: &[&str]) -> Server {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmode = \"keystone\"\n[auth.keystone]\nurl = \"{}/v3\"\nusername = \
             \"sluice\"\npassword = \"pw-sluice\"\nproject_name = \"service\"\ncache_secs = \
             {CACHE_SECS}\ntimeout_secs = 5\n",
            keystone.url
        ),
    )
    .expect("sluice.toml");
    let mut args = vec!["--config", config.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    Server::start(&args)
}

pub(super) fn as_token(token: &str) -> [(&'static str, &str); 1] {
    [("X-Auth-Token", token)]
}

/// Polls a task with `token` until it is final.
fn wait_task(server: &Server, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let resp = server.req("GET", &format!("/v2/tasks/{id}"), &as_token(token), None);
        assert_eq!(resp.status, 200, "task {id}: {}", resp.text());
        let task = resp.json();
        if matches!(task["status"].as_str(), Some("success" | "failure")) {
            return task;
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("task {id} not final:\n{}", server.log_text());
}

fn assert_unauthorized(resp: &Resp, keystone: &Keystone) {
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(
        resp.header("www-authenticate"),
        Some(format!("Keystone uri=\"{}/v3\"", keystone.url).as_str())
    );
}

#[test]
fn test_keystone_tokens_roles_revocation_and_expiry() {
    let dir = scratch();
    let keystone = Keystone::start(&dir.path().join("keystone"));
    let files = scratch();
    let disk = raw_disk(files.path(), "disk.raw", 4 << 20, 4);
    let file_server = FileServer::start(files.path());
    let server = sluice(&keystone, dir.path());

    // A member imports, lists, shows and downloads.
    let member = keystone.token("alpha-member", "alpha");
    let task = server.create_task_as(
        import_input(&file_server.url("disk.raw"), "raw", "via-keystone"),
        &as_token(&member),
    );
    let task = wait_task(&server, &member, task["id"].as_str().expect("id"));
    assert_eq!(task["status"], "success", "{task}");
    let image_id = task["result"]["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();
    let list = server.req("GET", "/v2/images", &as_token(&member), None);
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["images"][0]["id"], image_id.as_str());
    let show = server.req(
        "GET",
        &format!("/v2/images/{image_id}"),
        &as_token(&member),
        None,
    );
    assert_eq!(show.json()["owner"], template().ids["projects"]["alpha"]);
    let file = server.req(
        "GET",
        &format!("/v2/images/{image_id}/file"),
        &as_token(&member),
        None,
    );
    assert_eq!(file.status, 200);
    assert_eq!(file.body, std::fs::read(&disk).expect("disk"));

    // A reader of the same project reads but cannot write; another project sees nothing.
    let reader = keystone.token("alpha-reader", "alpha");
    let show = server.req(
        "GET",
        &format!("/v2/images/{image_id}"),
        &as_token(&reader),
        None,
    );
    assert_eq!(show.status, 200, "{}", show.text());
    let create = server.req(
        "POST",
        "/v2/images",
        &as_token(&reader),
        Some(b"{\"name\":\"r\"}"),
    );
    assert_eq!(create.status, 403, "{}", create.text());
    let patch = server.req(
        "DELETE",
        &format!("/v2/images/{image_id}"),
        &as_token(&reader),
        None,
    );
    assert_eq!(patch.status, 403, "{}", patch.text());
    let other = keystone.token("beta-member", "beta");
    let show = server.req(
        "GET",
        &format!("/v2/images/{image_id}"),
        &as_token(&other),
        None,
    );
    assert_eq!(show.status, 404, "{}", show.text());

    // No token, a made-up token: 401 naming Keystone.
    assert_unauthorized(&server.req("GET", "/v2/images", &[], None), &keystone);
    assert_unauthorized(
        &server.req("GET", "/v2/images", &as_token("gAAAAAmadeup"), None),
        &keystone,
    );

    // Revoked: 401 once the cache time has passed.
    keystone.revoke(&member);
    thread::sleep(Duration::from_secs(CACHE_SECS + 1));
    assert_unauthorized(
        &server.req("GET", "/v2/images", &as_token(&member), None),
        &keystone,
    );

    // Expired: the reader's token (already validated and cached) stops working at its
    // expiry, while tokens issued meanwhile (and Sluice's renewed service token) work.
    let expiry = Instant::now() + Duration::from_secs(TOKEN_SECS + 1);
    while Instant::now() < expiry {
        thread::sleep(Duration::from_secs(1));
    }
    assert_unauthorized(
        &server.req("GET", "/v2/images", &as_token(&reader), None),
        &keystone,
    );
    let fresh = keystone.token("alpha-reader", "alpha");
    let list = server.req("GET", "/v2/images", &as_token(&fresh), None);
    assert_eq!(list.status, 200, "{}\n{}", list.text(), server.log_text());
}

#[test]
fn test_keystone_down_gives_503_and_recovers() {
    let dir = scratch();
    let mut keystone = Keystone::start(&dir.path().join("keystone"));
    let server = sluice(&keystone, dir.path());
    let first = keystone.token("alpha-member", "alpha");
    let second = keystone.token("alpha-member", "alpha");
    assert_eq!(
        server
            .req("GET", "/v2/images", &as_token(&first), None)
            .status,
        200
    );

    keystone.stop();
    let resp = server.req("GET", "/v2/images", &as_token(&second), None);
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("retry-after").is_some());
    let resp = server.req(
        "POST",
        "/v2/images",
        &as_token(&second),
        Some(b"{\"name\":\"x\"}"),
    );
    assert_eq!(
        resp.status,
        503,
        "never allowed while Keystone is down: {}",
        resp.text()
    );

    keystone.resume();
    let resp = server.req("GET", "/v2/images", &as_token(&second), None);
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), server.log_text());
}

#[test]
fn test_keystone_openstack_cli_and_sdk_with_clouds_yaml() {
    let dir = scratch();
    let keystone = Keystone::start(&dir.path().join("keystone"));
    let server = sluice(&keystone, dir.path());
    let files = scratch();
    let disk = raw_disk(files.path(), "disk.raw", 1 << 20, 2);
    // Cloud `ks` names Sluice with `image_endpoint_override`; `ks-catalog` has only
    // Keystone, so it finds Sluice through `OS_IMAGE_ENDPOINT_OVERRIDE` (the README's way for
    // the `openstack` CLI) or, once registered, in the catalog.
    let auth = format!(
        "    auth:\n      auth_url: {}/v3\n      username: alpha-member\n      password: \
         pw-alpha-member\n      project_name: alpha\n      user_domain_name: Default\n      \
         project_domain_name: Default\n",
        keystone.url
    );
    let clouds = dir.path().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  ks:\n    identity_api_version: 3\n    image_endpoint_override: \
             http://{}\n{auth}  ks-catalog:\n    identity_api_version: 3\n    region_name: \
             RegionOne\n{auth}",
            server.addr
        ),
    )
    .expect("clouds.yaml");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    // `cloud` from clouds.yaml, or (None) the credentials in `env`.
    let run_openstack = |cloud: Option<&str>, env: &[(&str, String)], args: &[&str]| {
        Command::new(venv_bin("openstack"))
            .args(cloud.map(|c| ["--os-cloud", c]).into_iter().flatten())
            .args(args)
            .env("OS_CLIENT_CONFIG_FILE", &clouds)
            .env("HOME", &home)
            .env_remove("OS_AUTH_URL")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("running openstack")
    };
    let openstack_in = |cloud: Option<&str>, env: &[(&str, String)], args: &[&str]| {
        let out = run_openstack(cloud, env, args);
        assert!(
            out.status.success(),
            "openstack {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let openstack = |args: &[&str]| openstack_in(Some("ks"), &[], args);
    let created: Value = serde_json::from_str(&openstack(&[
        "image",
        "create",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        disk.to_str().expect("utf-8"),
        "-f",
        "json",
        "cli-image",
    ]))
    .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let listed = openstack(&["image", "list", "-f", "json"]);
    assert!(listed.contains(&id), "{listed}");
    let shown: Value =
        serde_json::from_str(&openstack(&["image", "show", "-f", "json", &id])).expect("json");
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["owner"], template().ids["projects"]["alpha"]);
    let saved = dir.path().join("saved.raw");
    openstack(&[
        "image",
        "save",
        "--file",
        saved.to_str().expect("utf-8"),
        &id,
    ]);
    assert_eq!(
        std::fs::read(&saved).expect("saved"),
        std::fs::read(&disk).expect("disk")
    );

    // openstacksdk with the same clouds.yaml.
    let script = "import openstack, sys\nconn = openstack.connect(cloud='ks')\n\
                  print(','.join(i.id for i in conn.image.images()))";
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("HOME", &home)
        .output()
        .expect("running the sdk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Not in the catalog yet: credentials in the environment find no image service, unless
    // `OS_IMAGE_ENDPOINT_OVERRIDE` says where it is; once registered, the catalog does.
    let mut env: Vec<(&str, String)> = [
        ("OS_AUTH_URL", format!("{}/v3", keystone.url)),
        ("OS_IDENTITY_API_VERSION", "3".to_owned()),
        ("OS_USERNAME", "alpha-member".to_owned()),
        ("OS_PASSWORD", "pw-alpha-member".to_owned()),
        ("OS_PROJECT_NAME", "alpha".to_owned()),
        ("OS_USER_DOMAIN_NAME", "Default".to_owned()),
        ("OS_PROJECT_DOMAIN_NAME", "Default".to_owned()),
    ]
    .into();
    let list = ["image", "list", "-f", "json"];
    let unregistered = run_openstack(None, &env, &list);
    assert!(
        !unregistered.status.success(),
        "found without a catalog entry"
    );
    let mut overridden = env.clone();
    overridden.push((
        "OS_IMAGE_ENDPOINT_OVERRIDE",
        format!("http://{}", server.addr),
    ));
    let listed = openstack_in(None, &overridden, &list);
    assert!(listed.contains(&id), "{listed}");
    keystone.register_image_endpoint(&format!("http://{}", server.addr));
    env.push(("OS_REGION_NAME", "RegionOne".to_owned()));
    for (cloud, env) in [(None, &env[..]), (Some("ks-catalog"), &[][..])] {
        let listed = openstack_in(cloud, env, &list);
        assert!(listed.contains(&id), "{cloud:?}: {listed}");
    }
}

/// `sluice serve` with `args`; it must exit non-zero before listening. Returns its stderr.
fn refused_at_start(args: &[&str]) -> String {
    let dir = scratch();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_KEYSTONE_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("running sluice serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "sluice started: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    stderr
}

#[test]
fn test_auth_configuration_is_checked_before_listening() {
    let dir = scratch();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\ntoken = \"a\"\nproject_id = \"p\"\nuser_id = \"u\"\n\n[[token]]\ntoken = \
         \"b\"\nproject_id = \"\"\nuser_id = \"u\"\n",
    )
    .expect("tokens");
    let path = tokens.to_str().expect("utf-8");
    let err = refused_at_start(&["--auth", "token", "--token-file", path]);
    assert!(err.contains(path) && err.contains("line 7"), "{err}");

    let err = refused_at_start(&["--auth", "keystone"]);
    assert!(err.contains("auth.keystone.url"), "{err}");
    let err = refused_at_start(&[
        "--auth",
        "keystone",
        "--keystone-url",
        "http://127.0.0.1:1/v3",
    ]);
    assert!(err.contains("auth.keystone.username"), "{err}");

    // In a config file: the error names the file and the key's line (or its table's), and a
    // URL's credentials are not echoed.
    let config = dir.path().join("sluice.toml");
    let path = config.to_str().expect("utf-8");
    std::fs::write(
        &config,
        "[auth]\nmode = \"keystone\"\n\n[auth.keystone]\nurl = \"ftp://sluice:s3cret@keystone/v3\"\n",
    )
    .expect("config");
    let err = refused_at_start(&["--config", path]);
    assert!(err.contains(&format!("{path} line 5")), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    std::fs::write(
        &config,
        "[auth]\nmode = \"keystone\"\n\n[auth.keystone]\nurl = \"http://127.0.0.1:1/v3\"\n\
         password = \"pw\"\ntimeout_secs = 0\n",
    )
    .expect("config");
    let err = refused_at_start(&["--config", path]);
    assert!(
        err.contains("auth.keystone.username")
            && err.contains(&format!(
                "not set in {path}, whose [auth.keystone] is at line 4"
            )),
        "{err}"
    );
    std::fs::write(
        &config,
        "[auth]\nmode = \"keystone\"\n\n[auth.keystone]\nurl = \"http://127.0.0.1:1/v3\"\n\
         username = \"sluice\"\npassword = \"pw\"\ntimeout_secs = 0\n",
    )
    .expect("config");
    let err = refused_at_start(&["--config", path]);
    assert!(
        err.contains("auth.keystone.timeout_secs") && err.contains(&format!("{path} line 8")),
        "{err}"
    );
}
