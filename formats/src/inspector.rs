//! The top-level streaming inspector: every probe sees every chunk; one verdict comes out.

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Limits, Reason, ReasonCode, Report, Verdict};

/// Early verdicts are only taken at multiples of this many stream bytes (and at end of
/// stream), so that a report never depends on how the caller chunked the stream: the probes'
/// state after a whole number of steps is a function of the bytes alone.
///
/// 4 KiB: a qcow2 backing file or a gzip wrapper is refused after the first 4 KiB.
pub const DECISION_STEP: u64 = 4096;

/// The smallest image worth ingesting: one 512-byte sector.
const MIN_IMAGE_SIZE: u64 = 512;

/// What [`Inspector::feed`] concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress<'a> {
    /// No verdict yet: feed more bytes, or call [`Inspector::finish`] at end of stream.
    NeedMore,
    /// The image is rejected already; the caller may stop reading.
    Rejected(&'a Report),
}

/// A sans-I/O streaming inspector for one untrusted image.
///
/// Feed it the stream in chunks of any size with [`feed`](Inspector::feed), then call
/// [`finish`](Inspector::finish) at end of stream. It rejects as soon as the bytes allow (a
/// qcow2 backing file is known from the header) and decides at the latest at `finish`.
///
/// # Memory
/// The inspector never holds the image. Its memory is bounded by the sum of the probes' fixed
/// regions (the largest are the VMDK descriptor, at most 1 MiB, and the VHDX header and
/// metadata regions, 64 KiB each, plus a 1.5 KiB tail window: [`INSPECTOR_FIXED_BOUND`])
/// plus 8 bytes per tracked metadata table (at most [`Limits::max_tracked_tables`]).
///
/// ```
/// use sluice_formats::{Format, Inspector, Limits, Progress};
///
/// let mut inspector = Inspector::new(Some(Format::Raw), Limits::default());
/// let disk = vec![0u8; 1 << 20];
/// for chunk in disk.chunks(64 * 1024) {
///     assert_eq!(inspector.feed(chunk), Progress::NeedMore);
/// }
/// let report = inspector.finish();
/// assert!(report.is_accepted());
/// assert_eq!(report.format, Format::Raw);
/// assert_eq!(report.virtual_size, Some(1 << 20));
/// ```
#[derive(Debug)]
pub struct Inspector {
    declared: Option<Format>,
    limits: Limits,
    probes: Vec<Box<dyn Probe>>,
    tail: Tail,
    pos: u64,
    decided: Option<Report>,
}

/// An upper bound on the inspector's own buffers, independent of the image (bytes): the VMDK
/// descriptor (1 MiB), the VHDX regions (4 × 64 KiB), ISO descriptors (64 KiB), headers and
/// the tail window, rounded up. Tracked tables add `8 × Limits::max_tracked_tables`.
pub const INSPECTOR_FIXED_BOUND: usize = 2 << 20;

impl Inspector {
    /// An inspector that checks the stream against `declared` (when given) under `limits`.
    pub fn new(declared: Option<Format>, limits: Limits) -> Self {
        let probes = crate::probes(&limits);
        Inspector {
            declared,
            limits,
            probes,
            tail: Tail::new(),
            pos: 0,
            decided: None,
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The virtual size the declared format's header gave, as soon as a probe has recognised
    /// the declared format (for qcow2, VMDK, dynamic VHD and VHDX: from the first KiBs);
    /// `None` before that, without a declared format, and for formats whose size is only
    /// known at end of stream (raw, ISO, fixed VHD). For admission control (a quota can
    /// refuse an import before its bytes arrive), not a verdict: the size is checked against
    /// the limits again in the final [`Report`].
    pub fn virtual_size(&self) -> Option<u64> {
        let declared = self.declared?;
        self.probes
            .iter()
            .find(|p| p.detection() == Detection::Yes(declared))
            .and_then(|p| p.virtual_size())
    }

    /// Feeds the next chunk of the stream (any size, including empty).
    ///
    /// Returns [`Progress::Rejected`] once the image is known to be unacceptable; later calls
    /// return the same report and ignore their bytes.
    pub fn feed(&mut self, chunk: &[u8]) -> Progress<'_> {
        if self.decided.is_some() {
            return self.progress();
        }
        self.tail.feed(chunk);
        let mut rest = chunk;
        while !rest.is_empty() {
            let live: Vec<usize> = self.live_probes();
            let to_step = DECISION_STEP.saturating_sub(self.pos % DECISION_STEP);
            if live.is_empty() && to_step == DECISION_STEP {
                // No probe wants more bytes and the verdict at this step boundary was already
                // taken: nothing can change before end of stream, so skip the rest.
                self.pos = self
                    .pos
                    .saturating_add(u64::try_from(rest.len()).unwrap_or(u64::MAX));
                break;
            }
            let take = usize::try_from(to_step)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let (piece, after) = rest.split_at(take);
            for i in live {
                if let Some(probe) = self.probes.get_mut(i) {
                    probe.feed(self.pos, piece);
                }
            }
            self.pos = self
                .pos
                .saturating_add(u64::try_from(take).unwrap_or(u64::MAX));
            rest = after;
            if self.pos % DECISION_STEP == 0 {
                if let Some(report) = self.early_verdict() {
                    self.decided = Some(report);
                    return self.progress();
                }
            }
        }
        Progress::NeedMore
    }

    /// Signals end of stream and returns the final report.
    ///
    /// After an early rejection this returns that rejection unchanged.
    pub fn finish(mut self) -> Report {
        if let Some(report) = self.decided.take() {
            return report;
        }
        for probe in &mut self.probes {
            probe.finish(&self.tail);
        }
        self.verdict(true)
    }

    fn progress(&self) -> Progress<'_> {
        match &self.decided {
            Some(report) => Progress::Rejected(report),
            None => Progress::NeedMore,
        }
    }

    fn live_probes(&self) -> Vec<usize> {
        self.probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.detection() != Detection::No && p.wants(self.pos))
            .map(|(i, _)| i)
            .collect()
    }

    /// A rejection that no further bytes can undo, if there is one yet.
    fn early_verdict(&self) -> Option<Report> {
        let report = self.verdict(false);
        (report.verdict == Verdict::Reject).then_some(report)
    }

    /// Combines the probes' answers. With `at_eof` false, only conclusions that more bytes
    /// cannot change are drawn (the caller acts only on rejections).
    fn verdict(&self, at_eof: bool) -> Report {
        let matched: Vec<(Format, &dyn Probe)> = self
            .probes
            .iter()
            .filter_map(|p| match p.detection() {
                Detection::Yes(f) => Some((f, p.as_ref())),
                _ => None,
            })
            .collect();
        let pending = |f: Format| {
            self.probes
                .iter()
                .any(|p| p.detection() == Detection::Pending && probe_may_be(p.as_ref(), f))
        };
        let formats: Vec<Format> = Format::ALL
            .into_iter()
            .filter(|f| matched.iter().any(|(m, _)| m == f))
            .collect();
        let reduced = reduce(&formats);

        let mut reasons: Vec<Reason> = Vec::new();
        if reduced.len() > 1 {
            let names: Vec<&str> = reduced.iter().map(|f| f.as_str()).collect();
            reasons.push(Reason::new(
                ReasonCode::MultipleFormats,
                format!(
                    "content is valid as more than one format: {}",
                    names.join(", ")
                ),
            ));
        }
        let primary = reduced.first().copied().unwrap_or(Format::Raw);
        if let Some(declared) = self.declared {
            if let Some(reason) = mismatch(declared, primary, &reduced, at_eof, &pending) {
                reasons.push(reason);
            }
        }
        for (_, probe) in &matched {
            reasons.extend(probe.findings().iter().cloned());
        }

        let stream_len = self.pos;
        let virtual_size = match primary {
            Format::Raw | Format::Iso | Format::Gpt | Format::Mbr => at_eof.then_some(stream_len),
            _ => matched
                .iter()
                .find(|(f, _)| *f == primary)
                .and_then(|(_, p)| p.virtual_size()),
        };
        if let Some(size) = virtual_size {
            if size > self.limits.max_virtual_size {
                reasons.push(Reason::new(
                    ReasonCode::SizeCap,
                    format!(
                        "virtual size {size} bytes exceeds the limit of {} bytes",
                        self.limits.max_virtual_size
                    ),
                ));
            }
        }
        if at_eof && primary == Format::Raw && stream_len < MIN_IMAGE_SIZE {
            reasons.push(Reason::new(
                ReasonCode::Empty,
                format!("image holds {stream_len} bytes, less than one 512-byte sector"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        reasons.retain(|r| seen.insert((r.code, r.message.clone())));

        Report {
            format: primary,
            formats: if formats.is_empty() {
                vec![Format::Raw]
            } else {
                formats
            },
            declared: self.declared,
            virtual_size,
            verdict: if reasons.is_empty() {
                Verdict::Accept
            } else {
                Verdict::Reject
            },
            reasons,
            bytes_inspected: self.pos,
            complete: at_eof,
        }
    }
}

/// Whether a pending probe could still turn out to be `format`.
fn probe_may_be(probe: &dyn Probe, format: Format) -> bool {
    probe.candidates().contains(&format)
}

/// Folds formats that legitimately coexist: a partition table inside an ISO hybrid or a fixed
/// VHD is content, not a second container. Returns the formats in `Format::ALL` order.
fn reduce(formats: &[Format]) -> Vec<Format> {
    let hosts_partition_table = formats
        .iter()
        .any(|f| matches!(f, Format::Iso | Format::Vhd));
    formats
        .iter()
        .copied()
        .filter(|f| !(hosts_partition_table && f.is_partition_table()))
        .collect()
}

/// The format-mismatch reason, when the detected format cannot be the declared one.
fn mismatch(
    declared: Format,
    primary: Format,
    reduced: &[Format],
    at_eof: bool,
    pending: &dyn Fn(Format) -> bool,
) -> Option<Reason> {
    let detected = |f: Format| f == declared || (declared == Format::Raw && f.is_partition_table());
    let reason = || {
        let message = if at_eof || !reduced.is_empty() {
            format!("image declared as {declared} is {primary}")
        } else {
            format!("image declared as {declared} does not have the {declared} structure")
        };
        Some(Reason::new(ReasonCode::FormatMismatch, message))
    };
    if declared == Format::Raw {
        // A raw declaration fits unstructured bytes and partitioned disks, nothing else; a
        // match can only be undone by absorption into an ISO or VHD, which is not raw either.
        return match reduced.first() {
            Some(f) if !detected(*f) => reason(),
            _ => None,
        };
    }
    if reduced.iter().any(|f| detected(*f)) {
        return None;
    }
    if at_eof || !pending(declared) {
        reason()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{ConvertLimits, Converter, MemorySink, Target};

    /// A qcow2 image of a `virtual_size`-byte raw disk of zeros, written by the converter.
    fn qcow2_of_zeros(virtual_size: usize) -> Vec<u8> {
        let mut sink = MemorySink::new(8 << 20);
        let mut conv =
            Converter::new(Format::Raw, Target::Qcow2, &ConvertLimits::default()).unwrap();
        conv.feed(&vec![0u8; virtual_size], &mut sink).unwrap();
        let len = conv.finish(&mut sink).unwrap();
        sink.output.resize(usize::try_from(len).unwrap(), 0);
        sink.output
    }

    #[test]
    fn test_inspector_virtual_size_known_from_the_header() {
        let image = qcow2_of_zeros(3 << 20);
        let mut inspector = Inspector::new(Some(Format::Qcow2), Limits::default());
        assert_eq!(inspector.virtual_size(), None);
        let (head, rest) = image.split_at(usize::try_from(DECISION_STEP).unwrap());
        assert_eq!(inspector.feed(head), Progress::NeedMore);
        assert_eq!(inspector.virtual_size(), Some(3 << 20));
        assert_eq!(inspector.feed(rest), Progress::NeedMore);
        assert_eq!(inspector.finish().virtual_size, Some(3 << 20));
    }

    #[test]
    fn test_inspector_virtual_size_unknown_for_raw_and_undeclared_streams() {
        let mut raw = Inspector::new(Some(Format::Raw), Limits::default());
        assert_eq!(raw.feed(&[0u8; 8192]), Progress::NeedMore);
        assert_eq!(raw.virtual_size(), None);
        let mut undeclared = Inspector::new(None, Limits::default());
        assert_eq!(
            undeclared.feed(&qcow2_of_zeros(1 << 20)),
            Progress::NeedMore
        );
        assert_eq!(undeclared.virtual_size(), None);
    }
}
