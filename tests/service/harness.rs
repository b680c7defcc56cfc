//! The service test harness: the real `sluice serve` binary on a free loopback port with its
//! own data directory, a tiny HTTP file server that hands it images (and can stall or cut a
//! body short), a minimal blocking HTTP/1.1 client, and task polling.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long the server may take to answer `GET /versions` after it starts.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a task may take to reach a final state (small images, debug build).
const TASK_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between polls.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Socket timeout for one API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

// ---- HTTP client -------------------------------------------------------------------------

/// One HTTP response, read whole (`Connection: close`).
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// For an error response: Glance's JSON error `message` up to webob's `<br />` trailer.
    pub fn error_message(&self) -> String {
        let v = self.json();
        let msg = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error body without a message: {v}"));
        msg.split("<br />").next().unwrap_or("").to_owned()
    }
}

/// Sends one request to `addr` and reads the whole response.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(HTTP_TIMEOUT))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    // Like openstacksdk, ask for JSON (errors are plain text otherwise, as Glance's).
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        head.push_str("Accept: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        let has_type = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !has_type {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("writing request");
    // The body goes out while the answer is read, as from a client's socket: a server that
    // answers early (a refused upload) and then closes under this `Connection: close` request
    // leaves the rest unsent, and the answer is what counts. A write that fails without any
    // answer fails the request.
    let mut raw = Vec::new();
    let (read, written) = thread::scope(|scope| {
        let writer = body.map(|b| {
            let mut out = stream.try_clone().expect("cloning the stream");
            scope.spawn(move || out.write_all(b))
        });
        let read = (&stream).read_to_end(&mut raw);
        let written = writer.map(|w| w.join().expect("body writer"));
        (read, written)
    });
    let reset = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    };
    match (&read, &written) {
        (Err(e), _) if !reset(e) || raw.is_empty() => {
            panic!("{method} {path}: reading response: {e} (writing body: {written:?})")
        }
        (_, Some(Err(e))) if raw.is_empty() => panic!("{method} {path}: writing body: {e}"),
        _ => {}
    }
    parse_response(&raw, method == "HEAD").unwrap_or_else(|| {
        panic!(
            "{method} {path}: unparsable response {:?} (writing body: {written:?})",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_response(raw: &[u8], head_only: bool) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---- identities --------------------------------------------------------------------------

/// Identity headers for a non-admin member of `project` (no-auth mode honours them).
pub fn member(project: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Project-Id", project),
        ("X-User-Id", "user-of-project"),
        ("X-Roles", "member,reader"),
    ]
}

/// No identity headers: no-auth mode's admin of project `admin`.
pub const ADMIN: &[(&str, &str)] = &[];

// ---- the sluice server -------------------------------------------------------------------

/// A running `sluice serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The data directory (inside `_scratch` unless given).
    pub data_dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    _scratch: tempfile::TempDir,
}

/// Runs `sluice serve ARGS` on the data directory `data_dir` and expects it to refuse to
/// start: returns what it wrote on stderr. Panics when it exits 0, or still runs after
/// [`STARTUP_DEADLINE`] (it was not refused: it is killed first).
pub fn refused_start(data_dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sluice serve");
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for sluice serve") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL_INTERVAL);
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("reading stderr");
    match status {
        Some(status) if !status.success() => err,
        _ => panic!("sluice serve {args:?} was not refused ({status:?}):\n{err}"),
    }
}

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl Server {
    /// Starts `sluice serve EXTRA` on a fresh data directory, allowing imports from exactly
    /// `127.0.0.1:<port>` of each [`FileServer`] this test (thread) started before; without
    /// one, the default policy applies (public hosts on ports 80 and 443).
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(None, extra)
    }

    /// Starts `sluice serve` like [`Server::start`], on the data directory `data_dir` (e.g.
    /// on a small volume) instead of a fresh one.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(Some(data_dir), extra)
    }

    fn start_with(data_dir: Option<&Path>, extra: &[&str]) -> Server {
        let scratch = tempfile::Builder::new()
            .prefix("sluice-service-")
            .tempdir()
            .expect("scratch dir");
        let data_dir = data_dir.map_or_else(|| scratch.path().join("data"), Path::to_path_buf);
        let mut args: Vec<String> = Vec::new();
        for port in FILE_SERVER_PORTS.with(|ports| ports.borrow().clone()) {
            args.push("--allow-import-host".into());
            args.push(format!("127.0.0.1:{port}"));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log = scratch.path().join("server.log");
        let mut server = Server {
            child: None,
            addr: String::new(),
            data_dir,
            args,
            log,
            _scratch: scratch,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            self.addr = format!("127.0.0.1:{port}");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("serve")
                .args(["--bind", &self.addr])
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(&self.args)
                .env("SLUICE_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawning sluice serve");
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return,
                Err(e) => {
                    last_err = e;
                    self.kill9();
                }
            }
        }
        panic!(
            "sluice serve did not start: {last_err}\n--- log ---\n{}",
            self.log_text()
        );
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}"));
                }
            }
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let req = format!(
                    "GET /versions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut raw = Vec::new();
                    let _ = s.read_to_end(&mut raw);
                    if raw.starts_with(b"HTTP/1.1 200") {
                        return Ok(());
                    }
                }
            }
            thread::sleep(POLL_INTERVAL);
        }
        Err("GET /versions never answered 200".into())
    }

    /// What the server logged (stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the server process is still running (it has not exited or aborted).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's process id (`None` after [`Server::kill9`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on unix
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and flags (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Creates a queued image as the default (admin) caller: `POST /v2/images` with `name`,
    /// `disk_format` and `container_format: bare`; asserts 201 and returns the id.
    pub fn create_image(&self, name: &str, disk_format: &str) -> String {
        let body = serde_json::json!({
            "name": name, "disk_format": disk_format, "container_format": "bare"});
        let resp = self.req(
            "POST",
            "/v2/images",
            ADMIN,
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.json()["id"].as_str().expect("id").to_owned()
    }

    /// One request with identity headers.
    pub fn req(&self, method: &str, path: &str, who: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        http(&self.addr, method, path, who, body)
    }

    /// `GET path` as admin.
    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, ADMIN, None)
    }

    /// `PUT /v2/images/{id}/file` of `data` as the default (admin) caller.
    pub fn put_file(&self, id: &str, data: &[u8]) -> Resp {
        self.req(
            "PUT",
            &format!("/v2/images/{id}/file"),
            &[("Content-Type", "application/octet-stream")],
            Some(data),
        )
    }

    /// `POST /v2/tasks` with `body` as `who`.
    pub fn post_task(&self, body: &Value, who: &[(&str, &str)]) -> Resp {
        let bytes = serde_json::to_vec(body).expect("json");
        self.req("POST", "/v2/tasks", who, Some(&bytes))
    }

    /// Creates an import task as `who` and returns its body; panics unless 201.
    pub fn create_task_as(&self, input: Value, who: &[(&str, &str)]) -> Value {
        let resp = self.post_task(&json!({"type": "import", "input": input}), who);
        assert_eq!(
            resp.status,
            201,
            "POST /v2/tasks: {}\n--- log ---\n{}",
            resp.text(),
            self.log_text()
        );
        resp.json()
    }

    /// Creates an import task as admin.
    pub fn create_task(&self, input: Value) -> Value {
        self.create_task_as(input, ADMIN)
    }

    /// Polls `GET /v2/tasks/{id}` (as admin) until `success` or `failure`; returns that body.
    pub fn wait_task(&self, id: &str) -> Value {
        let deadline = Instant::now() + TASK_DEADLINE;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let resp = self.get(&format!("/v2/tasks/{id}"));
            assert_eq!(resp.status, 200, "GET task {id}: {}", resp.text());
            last = resp.json();
            match last["status"].as_str() {
                Some("success") | Some("failure") => return last,
                Some("pending") | Some("processing") => {}
                other => panic!("task {id} has status {other:?}: {last}"),
            }
            thread::sleep(POLL_INTERVAL);
        }
        panic!(
            "task {id} not final after {TASK_DEADLINE:?}: {last}\n--- log ---\n{}",
            self.log_text()
        );
    }

    /// Runs an import task as admin to `success` (panics otherwise, with the server's log);
    /// returns the id of the image it made.
    pub fn import_ok(&self, input: Value) -> String {
        let task = self.create_task(input);
        let done = self.wait_task(task["id"].as_str().expect("task id"));
        assert_eq!(done["status"], "success", "{done}\n{}", self.log_text());
        done["result"]["image_id"]
            .as_str()
            .expect("image id")
            .to_owned()
    }

    /// Files (recursively) under `data_dir/sub`.
    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir.join(sub), &mut out);
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An import task input: `import_from` on `files`, declared `fmt` in both places.
pub fn import_input(url: &str, fmt: &str, name: &str) -> Value {
    json!({
        "import_from": url,
        "import_from_format": fmt,
        "image_properties": {"name": name, "disk_format": fmt, "container_format": "bare"}
    })
}

// ---- the image file server ---------------------------------------------------------------

/// What the file server does with one file.
#[derive(Clone, Copy, Debug)]
pub enum Serve {
    /// Send it whole.
    Whole,
    /// Announce the full length, send this many bytes, then hold the connection open until
    /// the file server is dropped (a stalled source).
    StallAfter(usize),
    /// Announce the full length, send this many bytes, then close (a body cut short).
    CloseAfter(usize),
    /// Announce the full length, then send one byte per interval (a trickle) until the whole
    /// file is sent, the client goes away or the file server is dropped.
    Trickle(Duration),
    /// Answer `302 Found` with this `Location` (the file need not exist).
    RedirectTo(&'static str),
}

thread_local! {
    /// Ports of the file servers started by the current test (libtest runs each test on its
    /// own thread): [`Server::start`] allows imports from exactly these, on 127.0.0.1.
    static FILE_SERVER_PORTS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

struct FilesShared {
    dir: PathBuf,
    rules: Mutex<HashMap<String, Serve>>,
    stopping: AtomicBool,
    stalled: AtomicUsize,
    requests: AtomicUsize,
    /// Request targets (path and query) in the order they arrived.
    log: Mutex<Vec<String>>,
}

/// A small HTTP/1.1 server for the files of one directory on 127.0.0.1 (thread per
/// connection; `GET` and `HEAD`; 404 for missing files).
pub struct FileServer {
    /// Its port.
    pub port: u16,
    shared: Arc<FilesShared>,
}

impl FileServer {
    /// Serves `dir`.
    pub fn start(dir: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("file server bind");
        let port = listener.local_addr().expect("addr").port();
        FILE_SERVER_PORTS.with(|ports| ports.borrow_mut().push(port));
        let shared = Arc::new(FilesShared {
            dir: dir.to_owned(),
            rules: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            stalled: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                thread::spawn(move || serve_conn(conn, &s));
            }
        });
        FileServer { port, shared }
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Sets how `name` is served.
    pub fn set(&self, name: &str, how: Serve) {
        self.shared
            .rules
            .lock()
            .expect("rules")
            .insert(name.to_owned(), how);
    }

    /// Connections currently held open by [`Serve::StallAfter`].
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The targets (`/name?query`) requested so far, in order.
    pub fn request_log(&self) -> Vec<String> {
        self.shared.log.lock().expect("log").clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_conn(conn: TcpStream, s: &FilesShared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    s.requests.fetch_add(1, Ordering::SeqCst);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    s.log.lock().expect("log").push(path.to_owned());
    let name = path.trim_start_matches('/').split('?').next().unwrap_or("");
    let mut conn = conn;
    let rule = s.rules.lock().expect("rules").get(name).copied();
    if let Some(Serve::RedirectTo(location)) = rule {
        let _ = write!(
            conn,
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let file = (!name.contains("..") && !name.is_empty())
        .then(|| std::fs::read(s.dir.join(name)).ok())
        .flatten();
    let Some(data) = file else {
        let body = b"not found\n";
        let _ = write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(body);
        return;
    };
    let how = rule.unwrap_or(Serve::Whole);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    if conn.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    match how {
        Serve::Whole | Serve::RedirectTo(_) => {
            let _ = conn.write_all(&data);
        }
        Serve::CloseAfter(n) => {
            let _ = conn.write_all(&data[..n.min(data.len())]);
            let _ = conn.flush();
            let _ = conn.shutdown(Shutdown::Both);
        }
        Serve::StallAfter(n) => {
            let _ = conn.write_all(&data[..n.min(data.len())]);
            let _ = conn.flush();
            s.stalled.fetch_add(1, Ordering::SeqCst);
            while !s.stopping.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            s.stalled.fetch_sub(1, Ordering::SeqCst);
        }
        Serve::Trickle(every) => {
            for byte in data.chunks(1) {
                if s.stopping.load(Ordering::SeqCst)
                    || conn.write_all(byte).is_err()
                    || conn.flush().is_err()
                {
                    return;
                }
                thread::sleep(every);
            }
        }
    }
}

// ---- images and checks -------------------------------------------------------------------

/// A raw disk of `size` bytes with `chunks` blocks of 64 KiB pattern data spread over it.
pub fn raw_disk(dir: &Path, name: &str, size: u64, chunks: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("creating raw file");
    f.set_len(size).expect("set_len");
    drop(f);
    for i in 0..chunks {
        let off = (size / chunks * i) & !0xffff;
        crate::common::write_pattern(&path, off, 65_536);
    }
    path
}

/// `md5sum` / `sha512sum` of a file (hex).
pub fn digest(tool: &str, path: &Path) -> String {
    let out = crate::common::run(tool, &[path.to_str().expect("utf-8")]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

/// Asserts the data directory holds no image file and no partial upload.
pub fn assert_no_files(server: &Server) {
    let images = server.files_under("images");
    let tmp = server.files_under("tmp");
    assert!(
        images.is_empty() && tmp.is_empty(),
        "files left behind: images {images:?} tmp {tmp:?}"
    );
}

/// Asserts `GET /v2/images` (as admin) lists nothing.
pub fn assert_no_images(server: &Server) {
    let list = server.get("/v2/images").json();
    assert_eq!(
        list["images"].as_array().map(Vec::len),
        Some(0),
        "images exist: {list}"
    );
}
