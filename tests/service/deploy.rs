//! `deploy/`: every metric the Grafana dashboard queries exists in the real server's
//! `/metrics`, and the systemd unit passes `systemd-analyze verify`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::{http, import_input, raw_disk, FileServer, Server, ADMIN};
use super::observe::parse_metrics;
use crate::common::scratch;

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The `sluice_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("sluice_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn test_dashboard_queries_name_only_metrics_in_metrics() {
    let path = deploy_dir().join("grafana/sluice-dashboard.json");
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("reading the dashboard"))
            .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a target's expr").to_owned())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:?}");

    // One import and one upload so that every family has samples (none has before).
    let dir = scratch();
    raw_disk(dir.path(), "d.raw", 1 << 20, 2);
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("d.raw"), "raw", "d"));
    let done = server.wait_task(task["id"].as_str().expect("id"));
    assert_eq!(done["status"], "success", "{done}");
    // And one upload.
    let body = br#"{"name": "up", "disk_format": "raw", "container_format": "bare"}"#;
    let created = server.req("POST", "/v2/images", ADMIN, Some(body));
    assert_eq!(created.status, 201, "{}", created.text());
    let image = created.json()["id"].as_str().expect("id").to_owned();
    let put = server.req(
        "PUT",
        &format!("/v2/images/{image}/file"),
        &[("Content-Type", "application/octet-stream")],
        Some(&[1u8; 512]),
    );
    assert_eq!(put.status, 204, "{}", put.text());
    // The import is counted right after its task turns final: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, exposed) = loop {
        let text = http(&server.addr, "GET", "/metrics", &[], None).text();
        let exposed: HashSet<String> = parse_metrics(&text)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        if exposed.contains("sluice_imports_total") || Instant::now() > deadline {
            break (text, exposed);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "a query without a Sluice metric: {expr}");
        for name in names {
            assert!(
                exposed.contains(&name),
                "dashboard query {expr:?} names {name}, not in /metrics:\n{text}"
            );
        }
    }
}

#[test]
fn test_systemd_unit_and_its_secrets_drop_in_pass_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/sluice.service"))
        .expect("reading the unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/sluice serve"),
        "{unit}"
    );
    // `verify` checks that the binary exists: point the unit at the one just built.
    let dir = scratch();
    let copy = dir.path().join("sluice.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sluice", env!("CARGO_BIN_EXE_sluice")),
    )
    .expect("writing the unit");
    // The secrets drop-in, where systemd looks for it beside the unit.
    let drop_ins = dir.path().join("sluice.service.d");
    std::fs::create_dir(&drop_ins).expect("drop-in dir");
    let secrets = deploy_dir().join("systemd/sluice.service.d/secrets.conf");
    std::fs::copy(&secrets, drop_ins.join("secrets.conf")).expect("copying the drop-in");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (scripts/setup --test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("sluice.service"), "{stderr}");
    let drop_in = std::fs::read_to_string(&secrets).expect("reading the drop-in");
    for option in [
        "EnvironmentFile=",
        "LoadCredential=tokens.toml:",
        "SLUICE_TOKEN_FILE=",
    ] {
        assert!(drop_in.contains(option), "drop-in option {option} missing");
    }
    for option in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(option), "hardening option {option} missing");
    }
}
