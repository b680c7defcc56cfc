//! Observability of the real server: request ids in responses and log lines, the access log,
//! `--log-format json`, no escape codes in a redirected log, `/metrics` parsed by the
//! Prometheus project's own Python parser with counters matching what the test did, and
//! `/healthcheck` without a token.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::clients::venv_bin;
use super::harness::{http, import_input, member, raw_disk, FileServer, Server};
use crate::common::scratch;

/// How long after its task turns final an import may take to show in `/metrics`.
const COUNT_DEADLINE: Duration = Duration::from_secs(10);

/// A request id a client chose.
const CLIENT_ID: &str = "req-0f5e1c9a-2b4d-4e6f-8a1b-3c5d7e9f1a2b";

/// Parses an OpenMetrics exposition with `prometheus_client.openmetrics.parser` (installed in
/// the test venv by `scripts/setup --test`); returns every sample as (name, labels, value).
pub fn parse_metrics(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for fam in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in fam.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the venv's python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing the exposition");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, HashMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("parser output");
    parsed
}

/// The sum of the samples named `name` whose labels include `labels`.
pub fn sample(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// The log lines naming `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn test_request_id_in_response_and_every_log_line_of_the_request() {
    let server = Server::start(&[]);
    // A valid id given by the client is kept.
    let mut who = member("p-logs");
    who.push(("X-OpenStack-Request-ID", CLIENT_ID));
    let resp = server.req("GET", "/v2/images/does-not-exist", &who, None);
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.header("x-openstack-request-id"), Some(CLIENT_ID));
    // An invalid one is replaced.
    let resp = server.req(
        "GET",
        "/v2/images",
        &[("X-OpenStack-Request-ID", "req-<script>")],
        None,
    );
    let fresh = resp
        .header("x-openstack-request-id")
        .expect("id")
        .to_owned();
    assert!(fresh.starts_with("req-") && fresh.len() == 40, "{fresh}");

    // A handler's own log line carries the id too.
    let created = server.req(
        "POST",
        "/v2/images",
        &member("p-logs"),
        Some(br#"{"name": "x", "disk_format": "raw", "container_format": "bare"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let image = created.json()["id"].as_str().expect("id").to_owned();
    let delete_id = "req-7d3c2b1a-0f9e-4d8c-9b7a-6f5e4d3c2b1a";
    let mut who = member("p-logs");
    who.push(("X-OpenStack-Request-ID", delete_id));
    let resp = server.req("DELETE", &format!("/v2/images/{image}"), &who, None);
    assert_eq!(resp.status, 204, "{}", resp.text());

    let log = server.log_text();
    let deleted = lines_with(&log, "image deleted");
    assert!(
        deleted.len() == 1 && deleted[0].contains(delete_id),
        "{deleted:?}\n{log}"
    );
    let access = lines_with(&log, CLIENT_ID);
    assert!(
        access.iter().any(|l| l.contains("sluice::access")
            && l.contains("route=\"GET /v2/images/{id}\"")
            && l.contains("status=404")
            && l.contains("project=p-logs")
            && l.contains("duration_ms=")
            && l.contains("bytes=")),
        "no access line for {CLIENT_ID}:\n{log}"
    );
    assert!(
        lines_with(&log, &fresh)
            .iter()
            .any(|l| l.contains("sluice::access") && l.contains("status=200")),
        "no access line for {fresh}:\n{log}"
    );
    assert!(!log.contains("<script>"), "{log}");
}

#[test]
fn test_log_redirected_to_file_has_no_escape_codes() {
    let server = Server::start(&[]);
    let _ = server.get("/v2/images");
    let log = server.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log:\n{log:?}"
    );
    assert!(log.contains("sluice listening"), "{log}");
}

#[test]
fn test_log_format_json_lines_parse_and_carry_request_id() {
    let server = Server::start(&["--log-format", "json"]);
    let mut who = member("p-json");
    who.push(("X-OpenStack-Request-ID", CLIENT_ID));
    let _ = server.req("GET", "/v2/tasks", &who, None);
    let log = server.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "sluice listening"),
        "{log}"
    );
    let access = lines
        .iter()
        .find(|l| l["target"] == "sluice::access" && l["span"]["request_id"] == CLIENT_ID)
        .unwrap_or_else(|| panic!("no JSON access line for {CLIENT_ID}:\n{log}"));
    assert_eq!(access["route"], "GET /v2/tasks", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["method"], "GET", "{access}");
    assert_eq!(access["span"]["project"], "p-json", "{access}");
    assert!(access["duration_ms"].is_u64(), "{access}");
}

#[test]
fn test_metrics_parse_and_count_imports_by_outcome_reason_and_bytes() {
    let dir = scratch();
    let size = 3 << 20;
    raw_disk(dir.path(), "ok.raw", size, 4);
    raw_disk(dir.path(), "fake.qcow2", 1 << 20, 1);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let who = member("p-metrics");
    let before = parse_metrics(&http(&server.addr, "GET", "/metrics", &[], None).text());
    assert_eq!(sample(&before, "sluice_imports_total", &[]), 0.0);

    let mut reasons = Vec::new();
    for (file, fmt) in [
        ("ok.raw", "raw"),
        ("missing.raw", "raw"),
        ("fake.qcow2", "qcow2"),
    ] {
        let task = server.create_task_as(import_input(&files.url(file), fmt, file), &who);
        let done = server.wait_task(task["id"].as_str().expect("id"));
        reasons.push((
            done["status"].as_str().expect("status").to_owned(),
            done["reason"].clone(),
        ));
    }
    assert_eq!(reasons[0].0, "success", "{reasons:?}");
    // One direct upload of 64 KiB.
    let body = br#"{"name": "up", "disk_format": "raw", "container_format": "bare"}"#;
    let created = server.req("POST", "/v2/images", &who, Some(body));
    assert_eq!(created.status, 201, "{}", created.text());
    let image = created.json()["id"].as_str().expect("id").to_owned();
    let mut headers = who.clone();
    headers.push(("Content-Type", "application/octet-stream"));
    let data = vec![7u8; 65_536];
    let put = server.req(
        "PUT",
        &format!("/v2/images/{image}/file"),
        &headers,
        Some(&data),
    );
    assert_eq!(put.status, 204, "{}", put.text());

    // A task is counted right after its final state is written: poll briefly.
    let deadline = Instant::now() + COUNT_DEADLINE;
    let (text, after) = loop {
        let resp = http(&server.addr, "GET", "/metrics", &[], None);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(
            resp.header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{:?}",
            resp.headers
        );
        let text = resp.text();
        let after = parse_metrics(&text);
        if sample(&after, "sluice_imports_total", &[]) >= 3.0 || Instant::now() > deadline {
            break (text, after);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        sample(
            &after,
            "sluice_imports_total",
            &[("outcome", "success"), ("reason", "none")]
        ),
        1.0,
        "{text}"
    );
    for (status, reason) in &reasons[1..] {
        assert_eq!(status, "failure", "{reasons:?}");
        let reason = reason.as_str().expect("a failed task's reason");
        let expected = reasons.iter().filter(|(_, r)| r == reason).count() as f64;
        assert_eq!(
            sample(
                &after,
                "sluice_imports_total",
                &[("outcome", "failure"), ("reason", reason)]
            ),
            expected,
            "{reason}: {text}"
        );
    }
    assert_eq!(sample(&after, "sluice_imports_total", &[]), 3.0, "{text}");
    assert_eq!(
        sample(&after, "sluice_import_stored_bytes_total", &[]),
        size as f64
    );
    let received = sample(&after, "sluice_import_received_bytes_total", &[]);
    assert!(
        received >= size as f64 && received <= (size + (1 << 20)) as f64,
        "{received}: {text}"
    );
    assert_eq!(
        sample(
            &after,
            "sluice_import_duration_seconds_count",
            &[("format", "raw"), ("conversion", "none")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&after, "sluice_uploads_total", &[("kind", "file")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &after,
            "sluice_upload_stored_bytes_total",
            &[("kind", "file")]
        ),
        65_536.0,
        "{text}"
    );
    assert_eq!(sample(&after, "sluice_import_queue_depth", &[]), 0.0);
    assert!(sample(&after, "sluice_store_free_bytes", &[]) > 0.0);
    assert_eq!(sample(&after, "sluice_metadata_store_up", &[]), 1.0);
    assert_eq!(
        sample(
            &after,
            "sluice_http_requests_total",
            &[("route", "POST /v2/tasks"), ("status", "201")]
        ),
        3.0,
        "{text}"
    );
    assert!(
        sample(
            &after,
            "sluice_http_request_duration_seconds_count",
            &[("route", "GET /v2/tasks/{id}")]
        ) >= 3.0,
        "{text}"
    );
    // No label holds an id or a project.
    assert!(!text.contains("p-metrics"), "{text}");
    let tasks = server.req("GET", "/v2/tasks", &who, None).json();
    for task in tasks["tasks"].as_array().expect("tasks") {
        let id = task["id"].as_str().expect("id");
        assert!(!text.contains(id), "{id} in /metrics:\n{text}");
    }
}

#[test]
fn test_healthcheck_answers_without_token_detail_for_admins_only() {
    let server = Server::start(&["--auth", "proxy"]);
    let resp = http(&server.addr, "GET", "/healthcheck", &[], None);
    assert_eq!((resp.status, resp.text().as_str()), (200, "OK"));
    assert!(resp.header("x-openstack-request-id").is_some());
    // The API itself still needs identity headers.
    assert_eq!(
        http(&server.addr, "GET", "/v2/images", &[], None).status,
        401
    );
    let metrics = http(&server.addr, "GET", "/metrics", &[], None);
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    // Polls answered 200 are not info lines of the access log; the API's requests are.
    let log = server.log_text();
    let access = |route: &str| {
        log.lines()
            .any(|l| l.contains("sluice::access") && l.contains(&format!("route=\"{route}\"")))
    };
    assert!(
        !access("GET /healthcheck") && !access("GET /metrics"),
        "{log}"
    );
    assert!(access("GET /v2/images"), "{log}");
    let admin = [
        ("X-Project-Id", "ops"),
        ("X-User-Id", "u"),
        ("X-Roles", "admin"),
    ];
    let detail = http(&server.addr, "GET", "/healthcheck?detail", &admin, None);
    assert_eq!(detail.status, 200, "{}", detail.text());
    let body = detail.json();
    assert_eq!(body["detailed"], true, "{body}");
    assert_eq!(body["storage"]["state"], "ok", "{body}");
    assert_eq!(body["metadata_store"]["writable"], true, "{body}");
    assert!(
        body["storage"]["free_bytes"]
            .as_u64()
            .is_some_and(|f| f > 0),
        "{body}"
    );
    // A member, or nobody, gets the plain answer.
    for who in [member("p1"), Vec::new()] {
        let plain = http(&server.addr, "GET", "/healthcheck?detail", &who, None);
        assert_eq!(
            (plain.status, plain.text().as_str()),
            (200, "OK"),
            "{who:?}"
        );
    }
}

#[test]
fn test_observe_bind_serves_metrics_and_health_apart_from_the_api() {
    let port = super::harness::free_port();
    let observe = format!("127.0.0.1:{port}");
    let server = Server::start(&["--observe-bind", &observe]);
    let health = http(&observe, "GET", "/healthcheck", &[], None);
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
    let metrics = http(&observe, "GET", "/metrics", &[], None);
    assert_eq!(metrics.status, 200);
    assert!(!parse_metrics(&metrics.text()).is_empty());
    assert_eq!(http(&observe, "GET", "/v2/images", &[], None).status, 404);
    // Not on the API's address any more.
    assert_eq!(server.get("/metrics").status, 404);
    assert_eq!(server.get("/healthcheck").status, 404);
}
