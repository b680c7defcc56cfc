//! Command-line interface: argument parsing and the subcommands.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_formats::{Format, Limits, Report, Verdict, DEFAULT_MAX_VIRTUAL_SIZE};
use sluice_pipeline::inspect_reader;

/// Exit status for an accepted image.
const EXIT_ACCEPT: u8 = 0;
/// Exit status for a rejected image.
const EXIT_REJECT: u8 = 1;
/// Exit status for a usage or I/O error (clap uses the same for bad arguments).
const EXIT_ERROR: u8 = 2;

/// Read size for `inspect`: large enough for full speed, small enough to be irrelevant to RSS.
const INSPECT_CHUNK: usize = 1 << 20;

/// Sluice: import VM disk images safely, in one streaming pass.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a disk image (file or `-` for stdin) as a stream and judge whether it is safe.
    ///
    /// Exit status: 0 accept, 1 reject, 2 usage or I/O error.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The format the image claims to be (Glance's disk_format: raw, qcow2, vmdk, vhd, vhdx,
    /// iso, ...). Without it the format is detected.
    #[arg(long = "format", value_name = "DECLARED")]
    declared: Option<Format>,
    /// Reject images whose virtual size exceeds this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_VIRTUAL_SIZE)]
    max_virtual_size: u64,
    /// Print exactly one JSON object on stdout instead of a human report.
    #[arg(long)]
    json: bool,
    /// The image to read, or `-` for standard input. It is read once, front to back.
    path: PathBuf,
}

/// Parses the command line, runs the subcommand and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => match inspect(&args) {
            Ok(Verdict::Accept) => ExitCode::from(EXIT_ACCEPT),
            Ok(Verdict::Reject) => ExitCode::from(EXIT_REJECT),
            Err(e) => {
                eprintln!("sluice inspect: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

fn inspect(args: &InspectArgs) -> anyhow::Result<Verdict> {
    let reader: Box<dyn Read> = if args.path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", args.path.display()))?;
        Box::new(file)
    };
    let limits = Limits {
        max_virtual_size: args.max_virtual_size,
        ..Limits::default()
    };
    let report = inspect_reader(reader, args.declared, limits, INSPECT_CHUNK)?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_human(&mut out, &report)?;
    }
    out.flush()?;
    Ok(report.verdict)
}

fn write_human(out: &mut impl Write, report: &Report) -> io::Result<()> {
    writeln!(out, "format:        {}", report.format)?;
    if report.formats.len() > 1 {
        let all: Vec<&str> = report.formats.iter().map(|f| f.as_str()).collect();
        writeln!(out, "matched:       {}", all.join(", "))?;
    }
    if let Some(declared) = report.declared {
        writeln!(out, "declared:      {declared}")?;
    }
    match report.virtual_size {
        Some(size) => writeln!(out, "virtual size:  {size} bytes ({})", human_size(size))?,
        None => writeln!(out, "virtual size:  unknown")?,
    }
    let verdict = match report.verdict {
        Verdict::Accept => "accept",
        Verdict::Reject => "reject",
    };
    let when = if report.complete {
        "after the whole stream"
    } else {
        "early"
    };
    writeln!(
        out,
        "verdict:       {verdict} ({when}, {} bytes read)",
        report.bytes_inspected
    )?;
    for reason in &report.reasons {
        writeln!(out, "  - {}: {}", reason.code, reason.message)?;
    }
    Ok(())
}

/// Formats a byte count with a binary unit, e.g. `1.0 GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_human_size_uses_binary_units() {
        assert_eq!(human_size(512), "512.0 B");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
        assert_eq!(human_size(3 << 19), "1.5 MiB");
    }
}
