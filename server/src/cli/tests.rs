use super::*;
use crate::config::Config;
use crate::quota::Limit;
use sluice_pipeline::store::StoreError;

/// `sluice serve <args>` parsed into its configuration.
fn serve_config(args: &[&str]) -> anyhow::Result<Config> {
    let cli = Cli::try_parse_from(["sluice", "serve"].iter().chain(args))?;
    match cli.command {
        Command::Serve(serve) => serve.into_config(),
        other => panic!("not serve: {other:?}"),
    }
}

#[test]
fn test_serve_import_flags_parse_entries_and_replace_file_lists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("import.toml");
    std::fs::write(
        &file,
        "[import]\nallowed_hosts = [\"images.lab\"]\nallowed_ports = [8080]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let c = serve_config(&["--config", file]).unwrap();
    assert_eq!(c.import.allowed_ports, vec![8080]);
    let c = serve_config(&[
        "--config",
        file,
        "--allow-import-host",
        "127.0.0.1:8000,[::1]:8080",
        "--import-resolve",
        "images.lab=10.0.0.5",
        "--import-nat64-prefix",
        "2001:db8:64::/96",
    ])
    .unwrap();
    let hosts: Vec<String> = c
        .import
        .allowed_hosts
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(hosts, ["127.0.0.1:8000", "[::1]:8080"]);
    assert_eq!(c.import.allowed_ports, vec![8080]);
    assert_eq!(c.import.resolve.len(), 1);
    assert_eq!(c.import.nat64_prefixes.len(), 1);
    let err = serve_config(&["--allow-import-host", "127.0.0.1:http"]).unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:http"), "{err}");
}

#[test]
fn test_serve_task_ttl_flag_replaces_file_ttl_in_other_unit() {
    let dir = tempfile::tempdir().unwrap();
    let hours = dir.path().join("hours.toml");
    std::fs::write(&hours, "task_ttl_hours = 1\n").unwrap();
    let hours = hours.to_str().unwrap();
    let secs = dir.path().join("secs.toml");
    std::fs::write(&secs, "task_ttl_secs = 5\n").unwrap();
    let secs = secs.to_str().unwrap();

    assert_eq!(serve_config(&["--config", hours]).unwrap().task_ttl(), 3600);
    let c = serve_config(&["--config", hours, "--task-ttl-secs", "30"]).unwrap();
    assert_eq!((c.task_ttl(), c.task_ttl_hours), (30, None));
    let c = serve_config(&["--config", secs, "--task-ttl-hours", "2"]).unwrap();
    assert_eq!((c.task_ttl(), c.task_ttl_secs), (7200, None));
    assert_eq!(
        serve_config(&["--task-ttl-secs", "7"]).unwrap().task_ttl(),
        7
    );
}

#[test]
fn test_serve_task_ttl_both_flags_refused() {
    let err = serve_config(&["--task-ttl-hours", "1", "--task-ttl-secs", "60"]);
    assert!(
        matches!(&err, Err(e) if e.to_string().contains("--task-ttl-hours")),
        "{err:?}"
    );
}

#[test]
fn test_serve_quota_and_rate_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.toml");
    std::fs::write(
        &file,
        "min_rate_window_secs = 5\n[quotas]\nimage_size_total = 100\ntasks_waiting = 4\n",
    )
    .unwrap();
    let c = serve_config(&[
        "--config",
        file.to_str().unwrap(),
        "--quota-image-size-total",
        "-1",
        "--quota-image-count-total",
        "3",
        "--quota-image-stage-total",
        "7",
        "--import-timeout-secs",
        "9",
        "--min-rate-bytes-per-sec",
        "0",
    ])
    .unwrap();
    assert_eq!(c.quotas.image_size_total, Limit::UNLIMITED);
    assert_eq!(c.quotas.image_count_total, Limit::of(3));
    assert_eq!(c.quotas.image_stage_total, Limit::of(7));
    assert_eq!(c.quotas.tasks_waiting, Limit::of(4));
    assert_eq!(
        (
            c.import_timeout_secs,
            c.min_rate_bytes_per_sec,
            c.min_rate_window_secs
        ),
        (9, 0, 5)
    );
    assert!(serve_config(&["--quota-tasks-waiting", "-3"]).is_err());
}

#[test]
fn test_serve_upload_discard_bounds_from_file_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("u.toml");
    std::fs::write(
        &file,
        "upload_discard_bytes = 0
upload_discard_secs = 7
",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let c = serve_config(&["--config", path]).unwrap();
    assert_eq!((c.upload_discard_bytes, c.upload_discard_secs), (0, 7));
    let c = serve_config(&["--config", path, "--upload-discard-bytes", "4096"]).unwrap();
    assert_eq!((c.upload_discard_bytes, c.upload_discard_secs), (4096, 7));
    let c = serve_config(&[]).unwrap();
    assert_eq!(c.upload_discard_bytes, 1 << 30);
}

#[test]
fn test_serve_staging_ttl_from_file_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "staging_ttl_secs = 60\n").unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(serve_config(&[]).unwrap().staging_ttl_secs, 86_400);
    let c = serve_config(&["--config", path]).unwrap();
    assert_eq!(c.staging_ttl_secs, 60);
    let c = serve_config(&["--config", path, "--staging-ttl-secs", "5"]).unwrap();
    assert_eq!(c.staging_ttl_secs, 5);
}

#[test]
fn test_serve_image_quotas_from_file_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quotas.toml");
    std::fs::write(&file, "image_tag_quota = 5\nimage_property_quota = 6\n").unwrap();
    let file = file.to_str().unwrap();
    let c = serve_config(&[]).unwrap();
    assert_eq!((c.image_tag_quota, c.image_property_quota), (128, 128));
    let c = serve_config(&["--config", file]).unwrap();
    assert_eq!((c.image_tag_quota, c.image_property_quota), (5, 6));
    let c = serve_config(&["--config", file, "--image-tag-quota", "7"]).unwrap();
    assert_eq!((c.image_tag_quota, c.image_property_quota), (7, 6));
}

#[test]
fn test_serve_image_member_quota_from_file_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("members.toml");
    std::fs::write(&file, "image_member_quota = 3\n").unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(serve_config(&[]).unwrap().image_member_quota, 128);
    let c = serve_config(&["--config", file]).unwrap();
    assert_eq!(c.image_member_quota, 3);
    let c = serve_config(&["--config", file, "--image-member-quota", "9"]).unwrap();
    assert_eq!(c.image_member_quota, 9);
}

#[test]
fn test_human_size_uses_binary_units() {
    assert_eq!(human_size(512), "512.0 B");
    assert_eq!(human_size(1 << 30), "1.0 GiB");
    assert_eq!(human_size(3 << 19), "1.5 MiB");
}

#[test]
fn test_serve_observe_settings_from_file_then_flags() {
    use crate::observe::LogFormat;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "[observe]\nlog_format = \"json\"\nbind = \"127.0.0.1:9293\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let c = serve_config(&[]).unwrap();
    assert_eq!(
        (c.observe.log_format, c.observe.bind),
        (LogFormat::Text, None)
    );
    let c = serve_config(&["--config", path]).unwrap();
    assert_eq!(c.observe.log_format, LogFormat::Json);
    assert_eq!(c.observe.bind, Some("127.0.0.1:9293".parse().unwrap()));
    let c = serve_config(&[
        "--config",
        path,
        "--log-format",
        "text",
        "--observe-bind",
        "127.0.0.1:9400",
    ])
    .unwrap();
    assert_eq!(c.observe.log_format, LogFormat::Text);
    assert_eq!(c.observe.bind, Some("127.0.0.1:9400".parse().unwrap()));
    std::fs::write(&file, "[observe]\nlog_format = \"xml\"\n").unwrap();
    assert!(serve_config(&["--config", path]).is_err());
}

#[test]
fn test_serve_max_import_attempts_default_file_flag_zero_refused() {
    assert_eq!(
        serve_config(&[]).unwrap().max_import_attempts,
        crate::config::DEFAULT_MAX_IMPORT_ATTEMPTS
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.toml");
    std::fs::write(&file, "max_import_attempts = 5\n").unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(
        serve_config(&["--config", path])
            .unwrap()
            .max_import_attempts,
        5
    );
    let c = serve_config(&["--config", path, "--max-import-attempts", "1"]).unwrap();
    assert_eq!(c.max_import_attempts, 1);
    assert!(serve_config(&["--max-import-attempts", "0"]).is_err());
}

#[test]
fn test_serve_help_names_the_default_import_methods() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let serve = cli.find_subcommand_mut("serve").expect("serve");
    let help = serve.render_help().to_string();
    let line = help
        .lines()
        .skip_while(|l| !l.contains("--enabled-import-method"))
        .find(|l| l.contains("[default:"))
        .expect("a default for --enabled-import-method");
    let methods: Vec<&str> = crate::config::DEFAULT_IMPORT_METHODS
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert!(
        line.contains(&format!("[default: {}]", methods.join(","))),
        "{line}"
    );
}

/// A cause whose text its error already ends with (a `StoreError` shows its source) is
/// printed once; contexts above it are all kept.
#[test]
fn test_report_prints_each_cause_once() {
    let store = StoreError::Opening {
        path: "s3://b/".into(),
        source: std::io::Error::other("HeadBucket: HTTP 403"),
    };
    let err = anyhow::Error::new(store).context("opening the image store");
    assert_eq!(
        report(&err),
        "opening the image store: opening store at s3://b/: HeadBucket: HTTP 403"
    );
    let plain = anyhow::anyhow!("inner").context("middle").context("outer");
    assert_eq!(report(&plain), "outer: middle: inner");
}
