//! The contract between the [`Inspector`](crate::Inspector) and one format's recogniser.

use crate::stream::Tail;
use crate::{Format, Reason, ReasonCode};

/// Whether a probe has recognised its format in the bytes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detection {
    /// Not decided yet: the probe needs more bytes (or end of stream).
    Pending,
    /// The stream is not this probe's format. Final.
    No,
    /// The stream has this format's structure. Final; findings may still be added.
    Yes(Format),
}

/// One format's streaming recogniser and safety checker.
///
/// The inspector calls [`Probe::feed`] with contiguous pieces of the stream and [`Probe::finish`]
/// once at end of stream. A probe only ever answers for the bytes it has been fed: its state
/// after bytes `0..n` must not depend on how those bytes were split (the chunking invariant).
/// A probe must never panic and must bound its memory by named limits.
pub(crate) trait Probe: std::fmt::Debug + Send {
    /// The formats this probe can report (its possible `Detection::Yes` values).
    fn candidates(&self) -> &'static [Format];

    /// Feeds the bytes at absolute stream offset `pos`.
    fn feed(&mut self, pos: u64, data: &[u8]);

    /// Signals end of stream; `tail` holds the stream's length and last bytes. After this
    /// [`Probe::detection`] must not be `Pending`.
    fn finish(&mut self, tail: &Tail);

    /// What the probe has concluded so far.
    fn detection(&self) -> Detection;

    /// Whether bytes beyond `pos` can still change this probe's answers. The inspector stops
    /// feeding a probe that says no (a fast path for large images).
    fn wants(&self, pos: u64) -> bool;

    /// The guest-visible size, once known.
    fn virtual_size(&self) -> Option<u64>;

    /// Problems found so far. Only counted when the probe's detection is `Yes`.
    fn findings(&self) -> &[Reason];
}

/// At most this many findings are kept per probe, one per reason code: a hostile table can
/// repeat the same defect millions of times, and the first occurrence names it.
const MAX_FINDINGS: usize = 16;

/// The findings of one probe: the first message per reason code, bounded.
#[derive(Debug, Default)]
pub(crate) struct Findings(Vec<Reason>);

impl Findings {
    /// Records a finding unless one with the same code is already recorded.
    pub(crate) fn push(&mut self, code: ReasonCode, message: impl Into<String>) {
        if self.0.len() < MAX_FINDINGS && !self.has(code) {
            self.0.push(Reason::new(code, message));
        }
    }

    /// Whether a finding with `code` was recorded.
    pub(crate) fn has(&self, code: ReasonCode) -> bool {
        self.0.iter().any(|r| r.code == code)
    }

    /// All findings, in the order found.
    pub(crate) fn as_slice(&self) -> &[Reason] {
        &self.0
    }
}
