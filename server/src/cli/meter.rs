//! The progress bar of `sluice convert` and `sluice inspect`: bytes read, rate and ETA (a
//! spinner when the length is not known, as for standard input), drawn on standard error
//! only when it is a terminal and no `--json` was asked for; otherwise nothing at all, so
//! that scripts and logs read only the result.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Redraws per second: smooth to the eye, negligible next to 1 MiB reads.
const REDRAWS_PER_SEC: u8 = 10;
/// The spinner's tick while the length is unknown, so that it turns even while reads block.
const SPINNER_TICK: Duration = Duration::from_millis(200);

/// Opens `path` (`-`: standard input) for reading through a progress bar; `quiet` (for
/// `--json`) draws nothing. The bar is cleared by [`finish`].
///
/// # Errors
/// When the file cannot be opened.
pub(super) fn open(path: &Path, quiet: bool) -> io::Result<(Box<dyn Read + Send>, ProgressBar)> {
    let (reader, len): (Box<dyn Read + Send>, Option<u64>) = if path.as_os_str() == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let file = File::open(path)?;
        let len = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        (Box::new(file), len)
    };
    let bar = bar(len, quiet || !io::stderr().is_terminal());
    Ok((Box::new(bar.wrap_read(reader)), bar))
}

/// Clears the bar before the summary is printed.
pub(super) fn finish(bar: &ProgressBar) {
    bar.finish_and_clear();
}

fn bar(len: Option<u64>, hidden: bool) -> ProgressBar {
    let target = if hidden {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SEC)
    };
    match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), target).with_style(
            ProgressStyle::with_template(
                "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => {
            let bar = ProgressBar::with_draw_target(None, target).with_style(
                ProgressStyle::with_template("{spinner} {binary_bytes} {binary_bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            if !hidden {
                bar.enable_steady_tick(SPINNER_TICK);
            }
            bar
        }
    }
}
