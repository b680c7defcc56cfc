//! Command-line interface: argument parsing and the subcommands.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_formats::{
    ConvertLimits, Format, Limits, Report, Target, Verdict, DEFAULT_MAX_VIRTUAL_SIZE,
};
use sluice_pipeline::convert::{convert_reader, ConvertFailure, ConvertOutcome};
use sluice_pipeline::inspect_reader;
use sluice_pipeline::store::error_chain;
use sluice_pipeline::unwrap::{with_unwrapped, UnwrapLimits, UnwrappedReader};

mod meter;
mod serve;

use serve::{serve, ServeArgs};

/// Exit status for an accepted image.
const EXIT_ACCEPT: u8 = 0;
/// Exit status for a rejected image.
const EXIT_REJECT: u8 = 1;
/// Exit status for a usage or I/O error (clap uses the same for bad arguments).
const EXIT_ERROR: u8 = 2;

/// The environment variable holding the Keystone service user's password.
const KEYSTONE_PASSWORD_ENV: &str = "SLUICE_KEYSTONE_PASSWORD";

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
    /// Run the import service (Glance v2 Tasks and Images API) until SIGTERM/SIGINT.
    ///
    /// Settings come from built-in defaults, then `--config FILE` (TOML), then these flags
    /// and their environment variables.
    Serve(Box<ServeArgs>),
    /// Inspect a disk image (file or `-` for stdin) as a stream and judge whether it is safe.
    ///
    /// Exit status: 0 accept, 1 reject, 2 usage or I/O error.
    Inspect(InspectArgs),
    /// Convert a disk image (file or `-` for stdin) to raw or qcow2 in one streaming pass,
    /// inspecting the same bytes: refuses what `inspect` refuses.
    ///
    /// Exit status: 0 converted, 1 image refused or broken, 2 usage or I/O error.
    Convert(ConvertArgs),
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
        Command::Serve(args) => match serve(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice serve: {}", report(&e));
                ExitCode::from(EXIT_ERROR)
            }
        },
        Command::Convert(args) => convert(&args),
        Command::Inspect(args) => match inspect(&args) {
            Ok(Verdict::Accept) => ExitCode::from(EXIT_ACCEPT),
            Ok(Verdict::Reject) => ExitCode::from(EXIT_REJECT),
            Err(e) => {
                eprintln!("sluice inspect: {}", report(&e));
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

/// `err` and its causes, each once ([`error_chain`]).
fn report(err: &anyhow::Error) -> String {
    error_chain(err.as_ref())
}

fn inspect(args: &InspectArgs) -> anyhow::Result<Verdict> {
    let (reader, bar) = meter::open(&args.path, args.json)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", args.path.display()))?;
    let limits = Limits {
        max_virtual_size: args.max_virtual_size,
        ..Limits::default()
    };
    // A compressed image or an OVA is inspected as the image inside (README, "Compressed
    // images and OVA").
    let unwrapped = with_unwrapped(
        reader,
        args.declared,
        UnwrapLimits::capped(args.max_virtual_size),
        |r| inspect_reader(r, args.declared, limits, INSPECT_CHUNK),
    );
    meter::finish(&bar);
    let (report, unwrapped) =
        unwrapped.map_err(|e| anyhow::anyhow!("reading {}: {e}", args.path.display()))?;
    let report = report?;
    let mut out = io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        add_unwrapped(&mut value, &unwrapped);
        serde_json::to_writer(&mut out, &value)?;
        writeln!(out)?;
    } else {
        write_unwrapped(&mut out, &unwrapped)?;
        write_human(&mut out, &report)?;
    }
    out.flush()?;
    Ok(report.verdict)
}

/// Read size for `convert`.
const CONVERT_CHUNK: usize = 1 << 20;

/// The output format of `sluice convert`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ConvertTo {
    /// A raw disk image (sparse: zero blocks are holes).
    Raw,
    /// qcow2 v3, 64 KiB clusters, zero clusters unallocated (from raw input only).
    Qcow2,
}

impl From<ConvertTo> for Target {
    fn from(t: ConvertTo) -> Self {
        match t {
            ConvertTo::Raw => Target::Raw,
            ConvertTo::Qcow2 => Target::Qcow2,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ConvertArgs {
    /// The format the image claims to be. Without it the format is detected from the first
    /// 4 KiB (a fixed VHD, whose footer is at the end, must be declared).
    #[arg(long = "format", value_name = "DECLARED")]
    declared: Option<Format>,
    /// The output format.
    #[arg(long = "to", value_enum)]
    to: ConvertTo,
    /// Refuse images whose virtual size exceeds this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_VIRTUAL_SIZE)]
    max_virtual_size: u64,
    /// Largest temporary spill area (data that arrives before the metadata placing it), in
    /// bytes; kept in an unnamed file next to OUT.
    #[arg(long, value_name = "BYTES", default_value_t = ConvertLimits::default().max_spill_bytes)]
    max_spill_bytes: u64,
    /// Print exactly one JSON object on stdout instead of a summary.
    #[arg(long)]
    json: bool,
    /// The image to read, or `-` for standard input. It is read once, front to back.
    input: PathBuf,
    /// The output file (created or replaced; removed again if the conversion fails).
    output: PathBuf,
}

/// `sluice convert`: exit 0 converted, 1 refused or broken image, 2 usage or I/O error.
fn convert(args: &ConvertArgs) -> ExitCode {
    if same_file(&args.input, &args.output) {
        eprintln!(
            "sluice convert: the output {} is the input",
            args.output.display()
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let (reader, bar) = match meter::open(&args.input, args.json) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("sluice convert: opening {}: {e}", args.input.display());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let limits = Limits {
        max_virtual_size: args.max_virtual_size,
        ..Limits::default()
    };
    let convert_limits = ConvertLimits {
        max_spill_bytes: args.max_spill_bytes,
        max_virtual_size: args.max_virtual_size,
        ..ConvertLimits::default()
    };
    let converted = with_unwrapped(
        reader,
        args.declared,
        UnwrapLimits::capped(args.max_virtual_size),
        |r| {
            convert_reader(
                r,
                args.declared,
                args.to.into(),
                limits,
                &convert_limits,
                &args.output,
                CONVERT_CHUNK,
            )
        },
    );
    meter::finish(&bar);
    let (result, unwrapped) = match converted {
        Ok(converted) => converted,
        Err(e) => {
            eprintln!("sluice convert: reading {}: {e}", args.input.display());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let status = match &result {
        Ok(_) => EXIT_ACCEPT,
        Err(failure) if failure.is_image_fault() => EXIT_REJECT,
        Err(failure) => {
            eprintln!("sluice convert: {failure}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let printed = if args.json {
        write_convert_json(args, &result, &unwrapped)
    } else {
        write_convert_human(args, &result, &unwrapped)
    };
    match printed {
        Ok(()) => ExitCode::from(status),
        Err(e) => {
            eprintln!("sluice convert: writing the summary: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Whether `output` exists and is the file `input` names (`-`: whatever stdin is), which
/// creating the output would truncate before it is read.
fn same_file(input: &std::path::Path, output: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let input = if input.as_os_str() == "-" {
        std::path::Path::new("/dev/stdin")
    } else {
        input
    };
    match (std::fs::metadata(input), std::fs::metadata(output)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Raw => "raw",
        Target::Qcow2 => "qcow2",
    }
}

/// One JSON object: `converted`, then `from`/`to`/`output`/`output_size`/`virtual_size` on
/// success or `reasons` (code and message) on failure, and the inspector's `report` when any.
fn write_convert_json(
    args: &ConvertArgs,
    result: &Result<ConvertOutcome, ConvertFailure>,
    unwrapped: &UnwrappedReader,
) -> io::Result<()> {
    let mut value = match result {
        Ok(done) => serde_json::json!({
            "converted": true,
            "from": done.from,
            "to": target_name(done.target),
            "output": args.output.display().to_string(),
            "output_size": done.output_len,
            "input_size": done.input_len,
            "virtual_size": done.report.virtual_size,
            "spilled": done.spilled,
            "report": done.report,
        }),
        Err(failure) => serde_json::json!({
            "converted": false,
            "to": target_name(args.to.into()),
            "reasons": failure.reasons(),
            "report": match failure {
                ConvertFailure::Refused(report) => serde_json::to_value(report)?,
                _ => serde_json::Value::Null,
            },
        }),
    };
    add_unwrapped(&mut value, unwrapped);
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, &value)?;
    writeln!(out)?;
    out.flush()
}

fn write_convert_human(
    args: &ConvertArgs,
    result: &Result<ConvertOutcome, ConvertFailure>,
    unwrapped: &UnwrappedReader,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    write_unwrapped(&mut out, unwrapped)?;
    match result {
        Ok(done) => {
            writeln!(
                out,
                "converted:     {} -> {}",
                done.from,
                target_name(done.target)
            )?;
            if let Some(size) = done.report.virtual_size {
                writeln!(out, "virtual size:  {size} bytes ({})", human_size(size))?;
            }
            writeln!(
                out,
                "output:        {} ({} bytes, {} read)",
                args.output.display(),
                done.output_len,
                done.input_len
            )?;
        }
        Err(failure) => {
            writeln!(out, "refused:       not converted, no output written")?;
            for reason in failure.reasons() {
                writeln!(out, "  - {}: {}", reason.code, reason.message)?;
            }
        }
    }
    out.flush()
}

/// Adds what was unwrapped to a JSON summary: `"unwrapped"` (the wrapper or `ova`) and, for
/// an OVA, `"properties"` (the descriptor's facts).
fn add_unwrapped(value: &mut serde_json::Value, unwrapped: &UnwrappedReader) {
    if let Some(name) = unwrapped.name {
        value["unwrapped"] = name.into();
    }
    if !unwrapped.properties.is_empty() {
        value["properties"] = unwrapped
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
}

fn write_unwrapped(out: &mut impl Write, unwrapped: &UnwrappedReader) -> io::Result<()> {
    if let Some(name) = unwrapped.name {
        writeln!(out, "unwrapped:     {name}")?;
    }
    for (key, value) in &unwrapped.properties {
        writeln!(out, "property:      {key}={value}")?;
    }
    Ok(())
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
mod tests;
