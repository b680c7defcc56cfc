//! The progress bar of `sluice convert` and `sluice inspect`: drawn on a terminal (a pty made
//! by `script`), absent when standard error is not one or with `--json`.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{raw_with_data, scratch};

/// Size of the image read: several 1 MiB reads, so that the bar is drawn more than once.
const IMAGE_SIZE: u64 = 64 << 20;

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("running sluice")
}

/// `sluice ARGS` on a pseudo-terminal (`script -qec`), all its output as the terminal got it.
fn sluice_on_terminal(args: &[&str], dir: &Path) -> String {
    let command = std::iter::once(env!("CARGO_BIN_EXE_sluice"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .output()
        .expect("running script");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn test_convert_and_inspect_draw_a_progress_bar_on_a_terminal() {
    let dir = scratch();
    let src = raw_with_data(dir.path(), "in.raw", IMAGE_SIZE);
    let src = src.to_str().expect("utf-8");
    let out = dir.path().join("out.qcow2");
    let out = out.to_str().expect("utf-8");
    for args in [
        &["convert", "--to", "qcow2", src, out][..],
        &["inspect", "--format", "raw", src][..],
    ] {
        let shown = sluice_on_terminal(args, dir.path());
        assert!(shown.contains("/64.00 MiB"), "{args:?}: {shown:?}");
        assert!(shown.contains("MiB/s"), "{args:?}: {shown:?}");
        assert!(shown.contains("ETA"), "{args:?}: {shown:?}");
    }
}

#[test]
fn test_convert_and_inspect_are_quiet_off_a_terminal_and_with_json() {
    let dir = scratch();
    let src = raw_with_data(dir.path(), "in.raw", IMAGE_SIZE);
    let src = src.to_str().expect("utf-8");
    let out = dir.path().join("out.qcow2");
    let out = out.to_str().expect("utf-8");
    for args in [
        &["convert", "--to", "qcow2", src, out][..],
        &["inspect", "--format", "raw", src][..],
    ] {
        let piped = sluice(args);
        assert!(piped.status.success(), "{args:?}: {piped:?}");
        assert!(piped.stderr.is_empty(), "{args:?}: {piped:?}");
    }
    // `--json` on a terminal: one JSON line, no bar.
    let shown = sluice_on_terminal(&["inspect", "--json", "--format", "raw", src], dir.path());
    assert!(!shown.contains("MiB/s"), "{shown:?}");
    let line = shown.trim_end();
    assert!(
        line.starts_with('{') && line.ends_with('}') && !line.contains('\n'),
        "{shown:?}"
    );
}
