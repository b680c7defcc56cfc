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

/// Findings kept by where their evidence lies: one per reason code, the one at the lowest stream
/// offset (ties broken by message), listed by offset then code.
///
/// For probes that walk several structures over the same bytes (qcow2's refcount and L1
/// tables, VMDK's grain directory and tables): within one chunk the walkers discover their
/// evidence in an order that depends on the chunking, and first-wins [`Findings`] would make
/// the report depend on it too. Choosing by offset keeps it a function of the bytes alone.
#[derive(Debug, Default)]
pub(crate) struct PlacedFindings {
    best: std::collections::BTreeMap<ReasonCode, (u64, String)>,
    /// `best` as reasons, by offset then code.
    list: Vec<Reason>,
}

impl PlacedFindings {
    /// Records a finding whose evidence is at stream offset `at` (`u64::MAX` for findings
    /// made at end of stream).
    pub(crate) fn push(&mut self, code: ReasonCode, at: u64, message: impl Into<String>) {
        let message = message.into();
        self.push_with(code, at, || message);
    }

    /// Like [`Self::push`], building the message only when it may be kept (a hostile table
    /// can repeat one defect millions of times).
    pub(crate) fn push_with(
        &mut self,
        code: ReasonCode,
        at: u64,
        message: impl FnOnce() -> String,
    ) {
        if self.best.get(&code).is_some_and(|(old, _)| *old < at) {
            return;
        }
        let message = message();
        let better = self
            .best
            .get(&code)
            .is_none_or(|(old_at, old)| (at, &message) < (*old_at, old));
        if better {
            self.best.insert(code, (at, message));
            let mut placed: Vec<(u64, ReasonCode, &String)> =
                self.best.iter().map(|(c, (a, m))| (*a, *c, m)).collect();
            placed.sort_by_key(|(a, c, _)| (*a, *c));
            self.list = placed
                .into_iter()
                .map(|(_, c, m)| Reason::new(c, m.clone()))
                .collect();
        }
    }

    /// All findings, by offset then code.
    pub(crate) fn as_slice(&self) -> &[Reason] {
        &self.list
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(f: &PlacedFindings) -> Vec<(ReasonCode, &str)> {
        f.as_slice()
            .iter()
            .map(|r| (r.code, r.message.as_str()))
            .collect()
    }

    #[test]
    fn test_placed_findings_keep_lowest_offset_per_code_whatever_the_order() {
        let pushes = [
            (ReasonCode::Corrupt, 900, "late corrupt"),
            (ReasonCode::Truncated, 500, "truncated"),
            (ReasonCode::Corrupt, 100, "early corrupt"),
            (ReasonCode::Corrupt, 100, "a tie, smaller message"),
            (ReasonCode::LimitExceeded, 100, "limit"),
        ];
        let expected = vec![
            (ReasonCode::Corrupt, "a tie, smaller message"),
            (ReasonCode::LimitExceeded, "limit"),
            (ReasonCode::Truncated, "truncated"),
        ];
        let mut forward = PlacedFindings::default();
        for (code, at, message) in pushes {
            forward.push(code, at, message);
        }
        let mut backward = PlacedFindings::default();
        for (code, at, message) in pushes.into_iter().rev() {
            backward.push(code, at, message);
        }
        assert_eq!(listed(&forward), expected);
        assert_eq!(listed(&backward), expected);
    }

    #[test]
    fn test_placed_findings_build_no_message_that_cannot_be_kept() {
        let mut f = PlacedFindings::default();
        f.push(ReasonCode::Corrupt, 10, "first");
        f.push_with(ReasonCode::Corrupt, 11, || unreachable!("not kept"));
        assert_eq!(listed(&f), vec![(ReasonCode::Corrupt, "first")]);
    }
}
