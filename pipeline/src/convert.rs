//! Blocking one-pass conversion of a byte stream into a local file: the [`Inspector`] and the
//! [`Converter`] see the same chunks, the output goes to a sparse file through [`FileSink`].
//!
//! Used by `sluice convert`; the same sink serves any caller that converts into a file.
//!
//! # Which converter
//! The first [`SNIFF_BYTES`] bytes (one inspector decision step) are held back, so that the
//! inspector's verdict on them comes first: a backing file or a compressed wrapper is refused
//! as such, not as an unsupported conversion. Then the converter is made for the declared
//! format, or else for the format those bytes show when inspected on their own, and fed them
//! (an unsupported pair, e.g. ISO or qcow2 → qcow2, fails there). At the end the inspector's verdict on the whole stream must name the same
//! disk (raw, GPT and MBR are one), else the conversion fails: a fixed VHD (footer at the end)
//! or an ISO (descriptors at 32 KiB) undeclared cannot be told from raw by their first bytes,
//! so they are refused with a message asking to declare the format (ISO: never converted).
//!
//! # Memory
//! One read buffer of `chunk` bytes + the head buffer ([`SNIFF_BYTES`]) +
//! the inspector's bound + the converter's (each converter states its own formula). Spill goes
//! to an unnamed temporary file next to the output, bounded by
//! [`ConvertLimits::max_spill_bytes`] (the converters check it first; the sink refuses past it
//! too).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sluice_formats::is_zero;
use sluice_formats::{
    ConvertError, ConvertLimits, ConvertSink, Converter, Format, Inspector, Limits, Progress,
    Reason, ReasonCode, Report, SinkError, Target, DECISION_STEP,
};

use crate::{SourceError, MAX_CHUNK};

/// Bytes held back before the converter is made: one inspector decision step (4 KiB), so
/// refusals visible in it come first. Inspected on their own when no format is declared: they
/// show the magic of every format Sluice converts except a
/// fixed VHD's footer, which is at the end (see the module documentation).
pub const SNIFF_BYTES: usize = DECISION_STEP as usize;

/// All-zero blocks of this size (at this alignment) written past everything written before
/// are skipped: the output file is fresh, so they are holes that read as zeros.
const HOLE_BLOCK: u64 = 4096;

/// A [`ConvertSink`] over an output file (positional writes; zero blocks stay holes) and an
/// unnamed spill file created in `spill_dir` on first use (removed by the OS when dropped).
#[derive(Debug)]
pub struct FileSink {
    out: File,
    /// End of the furthest bytes actually written: zero blocks past it are skipped.
    high_water: u64,
    spill: Option<File>,
    spill_dir: PathBuf,
    max_spill: u64,
    /// End of the furthest bytes spilled.
    spilled: u64,
}

impl FileSink {
    /// A sink writing into `out`, which must be empty (fresh): regions never written read as
    /// zeros. Spill goes to a temporary file in `spill_dir`, at most `max_spill` bytes.
    pub fn new(out: File, spill_dir: impl Into<PathBuf>, max_spill: u64) -> Self {
        FileSink {
            out,
            high_water: 0,
            spill: None,
            spill_dir: spill_dir.into(),
            max_spill,
            spilled: 0,
        }
    }

    /// Sets the output's final length (so trailing holes exist) and returns the file.
    ///
    /// # Errors
    /// When the file cannot be resized.
    pub fn finish(self, len: u64) -> io::Result<File> {
        self.out.set_len(len)?;
        Ok(self.out)
    }

    /// Bytes of spill area used so far.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    fn write_run(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        if data.is_empty() {
            return Ok(());
        }
        self.out
            .write_all_at(data, offset)
            .map_err(|e| SinkError(format!("writing the output at offset {offset}: {e}")))?;
        let end = offset.saturating_add(len64(data));
        self.high_water = self.high_water.max(end);
        Ok(())
    }
}

impl ConvertSink for FileSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        if offset < self.high_water {
            // Rewriting written bytes: write everything, zeros included.
            return self.write_run(offset, data);
        }
        // Fresh region: write runs of blocks holding data, skip all-zero aligned blocks.
        let mut rest = data;
        let mut at = offset;
        let mut run_start: Option<(u64, usize)> = None; // (offset, index into data)
        let mut index = 0usize;
        while !rest.is_empty() {
            let to_boundary = HOLE_BLOCK.saturating_sub(at % HOLE_BLOCK);
            let take = usize::try_from(to_boundary)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let (block, after) = rest.split_at(take);
            if is_zero(block) {
                if let Some((start, from)) = run_start.take() {
                    let run = data.get(from..index).unwrap_or(&[]);
                    self.write_run(start, run)?;
                }
            } else if run_start.is_none() {
                run_start = Some((at, index));
            }
            at = at.saturating_add(len64(block));
            index = index.saturating_add(take);
            rest = after;
        }
        if let Some((start, from)) = run_start {
            self.write_run(start, data.get(from..).unwrap_or(&[]))?;
        }
        Ok(())
    }

    fn spill_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = offset
            .checked_add(len64(data))
            .filter(|end| *end <= self.max_spill)
            .ok_or_else(|| {
                SinkError(format!(
                    "spill write at {offset} exceeds the spill limit of {} bytes",
                    self.max_spill
                ))
            })?;
        let spill = match &mut self.spill {
            Some(file) => file,
            none => none.insert(tempfile::tempfile_in(&self.spill_dir).map_err(|e| {
                SinkError(format!(
                    "creating a spill file in {}: {e}",
                    self.spill_dir.display()
                ))
            })?),
        };
        spill
            .write_all_at(data, offset)
            .map_err(|e| SinkError(format!("writing the spill file at {offset}: {e}")))?;
        self.spilled = self.spilled.max(end);
        Ok(())
    }

    fn spill_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SinkError> {
        let end = offset.checked_add(len64(buf));
        match (&self.spill, end) {
            (Some(file), Some(end)) if end <= self.spilled => file
                .read_exact_at(buf, offset)
                .map_err(|e| SinkError(format!("reading the spill file at {offset}: {e}"))),
            _ => Err(SinkError(format!(
                "spill read at {offset} past the {} bytes spilled",
                self.spilled
            ))),
        }
    }
}

/// A finished conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertOutcome {
    /// The inspector's report on the whole input (accepted).
    pub report: Report,
    /// The format the input was converted from.
    pub from: Format,
    /// The output format.
    pub target: Target,
    /// The output file's length in bytes.
    pub output_len: u64,
    /// Input bytes read.
    pub input_len: u64,
    /// Spill area used, in bytes.
    pub spilled: u64,
}

/// Why a conversion failed; the output file is removed in every case.
#[derive(Debug, thiserror::Error)]
pub enum ConvertFailure {
    /// The inspector refused the image (its report names the reasons).
    #[error("image refused: {}", .0.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))]
    Refused(Box<Report>),
    /// The image is broken in a way conversion found, or exceeds a conversion limit, or the
    /// pair of formats is not converted.
    #[error("{code}: {message}")]
    Image {
        /// Stable reason code.
        code: ReasonCode,
        /// What is wrong.
        message: String,
    },
    /// Reading the input failed, or the chunk size is out of range.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Creating or writing the output or spill file failed.
    #[error("{0}")]
    Output(String),
}

impl ConvertFailure {
    /// The reasons to show for a failure that is the image's (refusal or conversion error);
    /// empty for I/O failures.
    pub fn reasons(&self) -> Vec<Reason> {
        match self {
            ConvertFailure::Refused(report) => report.reasons.clone(),
            ConvertFailure::Image { code, message } => vec![Reason::new(*code, message.clone())],
            ConvertFailure::Source(SourceError::Unwrap(e)) => e
                .reason()
                .map(|code| Reason::new(code, e.to_string()))
                .into_iter()
                .collect(),
            ConvertFailure::Source(_) | ConvertFailure::Output(_) => Vec::new(),
        }
    }

    /// Whether the image is at fault (refused or broken), rather than I/O or usage.
    pub fn is_image_fault(&self) -> bool {
        match self {
            ConvertFailure::Refused(_) | ConvertFailure::Image { .. } => true,
            ConvertFailure::Source(SourceError::Unwrap(e)) => e.is_image_fault(),
            ConvertFailure::Source(_) | ConvertFailure::Output(_) => false,
        }
    }
}

impl From<ConvertError> for ConvertFailure {
    fn from(e: ConvertError) -> Self {
        match e {
            ConvertError::Image { code, message } => ConvertFailure::Image { code, message },
            ConvertError::Sink(SinkError(message)) => ConvertFailure::Output(message),
        }
    }
}

/// Converts `reader` (read once, front to back, never seeking) to `target` in `out_path`,
/// inspecting the same bytes under `limits`; the converter is bounded by `convert_limits`.
/// Stops reading as soon as the inspector refuses. On any failure the output file is removed.
///
/// `out_path` is created (or truncated) and must be a regular file; spill goes to an unnamed
/// temporary file in its directory.
///
/// # Errors
/// See [`ConvertFailure`].
pub fn convert_reader(
    reader: impl Read,
    declared: Option<Format>,
    target: Target,
    limits: Limits,
    convert_limits: &ConvertLimits,
    out_path: &Path,
    chunk: usize,
) -> Result<ConvertOutcome, ConvertFailure> {
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(SourceError::BadChunkSize(chunk).into());
    }
    if let Ok(meta) = std::fs::metadata(out_path) {
        if !meta.is_file() {
            return Err(ConvertFailure::Output(format!(
                "{} exists and is not a regular file",
                out_path.display()
            )));
        }
    }
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out_path)
        .map_err(|e| ConvertFailure::Output(format!("creating {}: {e}", out_path.display())))?;
    let spill_dir = match out_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let sink = FileSink::new(out, spill_dir, convert_limits.max_spill_bytes);
    let run = Run {
        declared,
        target,
        limits,
        convert_limits,
        chunk,
    };
    let result = run.drive(reader, sink);
    if result.is_err() {
        // Leave nothing behind; the file may already be gone, which is fine.
        let _ = std::fs::remove_file(out_path);
    }
    result
}

/// One conversion's settings.
struct Run<'a> {
    declared: Option<Format>,
    target: Target,
    limits: Limits,
    convert_limits: &'a ConvertLimits,
    chunk: usize,
}

impl Run<'_> {
    fn drive(
        &self,
        mut reader: impl Read,
        mut sink: FileSink,
    ) -> Result<ConvertOutcome, ConvertFailure> {
        let mut inspector = Inspector::new(self.declared, self.limits.clone());
        let mut converter: Option<(Format, Converter)> = None;
        let mut head: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; self.chunk];
        while let Some(data) =
            crate::source::read_chunk(&mut reader, &mut buf, inspector.position())?
        {
            if let Progress::Rejected(report) = inspector.feed(data) {
                return Err(ConvertFailure::Refused(Box::new(report.clone())));
            }
            match &mut converter {
                Some((_, conv)) => conv.feed(data, &mut sink)?,
                None => {
                    let room = SNIFF_BYTES.saturating_sub(head.len()).min(data.len());
                    let (into_head, rest) = data.split_at(room);
                    head.extend_from_slice(into_head);
                    if head.len() == SNIFF_BYTES {
                        let (format, mut conv) = self.choose(&head)?;
                        conv.feed(&head, &mut sink)?;
                        conv.feed(rest, &mut sink)?;
                        head = Vec::new();
                        converter = Some((format, conv));
                    }
                }
            }
        }
        let input_len = inspector.position();
        let report = inspector.finish();
        if !report.is_accepted() {
            return Err(ConvertFailure::Refused(Box::new(report)));
        }
        let (from, conv) = match converter {
            Some(c) => c,
            None => {
                let (format, mut conv) = self.choose(&head)?;
                conv.feed(&head, &mut sink)?;
                (format, conv)
            }
        };
        if !same_disk(from, report.format, self.target) {
            // The whole stream is another format than its first bytes showed.
            Converter::new(report.format, self.target, self.convert_limits)?;
            return Err(ConvertFailure::Image {
                code: ReasonCode::FormatMismatch,
                message: format!(
                    "the image is {detected}, which shows only at its end, after conversion as \
                     {from} began: declare the format ({detected}) to convert it",
                    detected = report.format
                ),
            });
        }
        // An ISO shows only at 32 KiB: converted as raw from its first bytes, it is named as
        // what it is.
        let from = if from == Format::Raw && report.format == Format::Iso {
            Format::Iso
        } else {
            from
        };
        let output_len = conv.finish(&mut sink)?;
        let spilled = sink.spilled();
        sink.finish(output_len)
            .map_err(|e| ConvertFailure::Output(format!("setting the output's length: {e}")))?;
        Ok(ConvertOutcome {
            report,
            from,
            target: self.target,
            output_len,
            input_len,
            spilled,
        })
    }

    /// The declared format, or else the one the first bytes show (inspected on their own),
    /// and its converter.
    fn choose(&self, head: &[u8]) -> Result<(Format, Converter), ConvertFailure> {
        let format = match self.declared {
            Some(format) => format,
            None => sluice_formats::inspect_bytes(head, None, self.limits.clone()).format,
        };
        let conv = Converter::new(format, self.target, self.convert_limits)?;
        Ok((format, conv))
    }
}

/// Whether two formats describe the same bytes for conversion to `target`: raw, GPT and MBR
/// disks are all converted as raw, and so is an ISO to raw (identity).
fn same_disk(a: Format, b: Format, target: Target) -> bool {
    let raw = |f: Format| {
        matches!(f, Format::Raw | Format::Gpt | Format::Mbr)
            || (f == Format::Iso && target == Target::Raw)
    };
    a == b || (raw(a) && raw(b))
}

fn len64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 | 1).collect()
    }

    #[test]
    fn test_file_sink_zero_blocks_stay_holes_and_bytes_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = FileSink::new(File::create(&path).unwrap(), dir.path(), 1 << 20);
        let mut data = vec![0u8; 1 << 20];
        data[5000..5010].copy_from_slice(&[7; 10]);
        data[(1 << 20) - 1] = 9;
        sink.write_at(100, &data).unwrap();
        sink.write_at(50, &[3; 60]).unwrap(); // overlaps written bytes: written as is
        sink.finish(8 << 20).unwrap();
        let got = std::fs::read(&path).unwrap();
        let mut want = vec![0u8; 8 << 20];
        want[100..100 + (1 << 20)].copy_from_slice(&data);
        want[50..110].copy_from_slice(&[3; 60]);
        assert_eq!(got, want);
        // Two 4 KiB blocks hold data; the rest of the 8 MiB is holes.
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 <= 64 * 1024);
    }

    #[test]
    fn test_file_sink_spill_round_trips_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let out = File::create(dir.path().join("out")).unwrap();
        let mut sink = FileSink::new(out, dir.path(), 1000);
        sink.spill_write(10, &[5; 100]).unwrap();
        let mut buf = [0u8; 50];
        sink.spill_read(40, &mut buf).unwrap();
        assert_eq!(buf, [5; 50]);
        assert!(sink.spill_read(100, &mut buf).is_err());
        assert!(sink.spill_write(990, &[1; 11]).is_err());
        assert_eq!(sink.spilled(), 110);
    }

    #[test]
    fn test_convert_reader_raw_to_raw_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let mut data = vec![0u8; 300_000];
        data[..7000].copy_from_slice(&pattern(7000));
        let done = convert_reader(
            &data[..],
            None,
            Target::Raw,
            Limits::default(),
            &ConvertLimits::default(),
            &out,
            1000,
        )
        .unwrap();
        assert!(matches!(done.from, Format::Raw));
        assert_eq!(done.output_len, 300_000);
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }

    #[test]
    fn test_convert_reader_raw_to_qcow2_reports_qcow2_length() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.qcow2");
        let data = pattern(200_000);
        let done = convert_reader(
            &data[..],
            Some(Format::Raw),
            Target::Qcow2,
            Limits::default(),
            &ConvertLimits::default(),
            &out,
            4096,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), done.output_len);
        let report = sluice_formats::inspect_bytes(
            &std::fs::read(&out).unwrap(),
            Some(Format::Qcow2),
            Limits::default(),
        );
        assert!(report.is_accepted(), "{:?}", report.reasons);
        assert_eq!(report.virtual_size, Some(200_192));
    }

    #[test]
    fn test_convert_reader_refusal_removes_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let mut data = vec![0x1f, 0x8b, 0x08];
        data.resize(100_000, 0);
        let err = convert_reader(
            &data[..],
            None,
            Target::Raw,
            Limits::default(),
            &ConvertLimits::default(),
            &out,
            65536,
        )
        .unwrap_err();
        assert!(matches!(&err, ConvertFailure::Refused(r) if r.has_reason(ReasonCode::Compressed)));
        assert!(!out.exists());
    }

    #[test]
    fn test_convert_reader_output_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let err = convert_reader(
            &[1u8; 4096][..],
            None,
            Target::Raw,
            Limits::default(),
            &ConvertLimits::default(),
            dir.path(),
            4096,
        )
        .unwrap_err();
        assert!(matches!(err, ConvertFailure::Output(_)));
        assert!(dir.path().is_dir());
    }

    #[test]
    fn test_convert_reader_short_undeclared_stream_is_sniffed_at_end() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let data = pattern(1000);
        let done = convert_reader(
            &data[..],
            None,
            Target::Raw,
            Limits::default(),
            &ConvertLimits::default(),
            &out,
            7,
        )
        .unwrap();
        assert!(matches!(done.from, Format::Raw));
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }
}
