//! Compressed clusters checked during inspection: each compressed extent an L2 entry names
//! ahead of the stream is inflated when its bytes stream past, and must give exactly one
//! cluster ([`Codec`], the converter's own decoder). One that does not is `corrupt`.
//!
//! Extents that lie before the L2 entry naming them streamed past before they were known and
//! are not checked in one pass (QEMU writes L2 tables before their data); conversion still
//! checks them. The verdict depends only on the bytes: an extent is tracked when the stream has
//! passed its entry's end, whatever the chunking, and its finding is placed at its offset.
//!
//! Memory: at most `Limits::qcow2_max_pending_compressed` (default
//! [`QCOW2_MAX_PENDING_COMPRESSED`](crate::QCOW2_MAX_PENDING_COMPRESSED)) extents ahead of the stream (a B-tree
//! entry of 16 bytes each, about 32 bytes with overhead: ≤ 8 MiB), one cluster of output, and
//! a window holding the extents being collected (at most 2 clusters and a sector, the largest
//! extent, plus what one chunk adds). CPU: every distinct extent is inflated once into one
//! cluster, so at most the virtual size of output in all, as a conversion does (see the
//! README's measurement).

use std::collections::BTreeMap;

use super::codec::Codec;
use crate::probe::PlacedFindings;
use crate::stream::{u64_of, usize_of};
use crate::ReasonCode;

/// The compressed-cluster check of one image (see the module documentation).
pub(crate) struct CompressedCheck {
    codec: Codec,
    cluster_size: usize,
    /// Extents ahead of (or partly in) the stream: start → end.
    pending: BTreeMap<u64, u64>,
    /// Bytes of the stream from `window_start`, while an extent is being collected.
    window: Vec<u8>,
    window_start: u64,
    /// The decompressed cluster.
    out: Vec<u8>,
    limit_hit: bool,
    /// Most extents pending (`Limits::qcow2_max_pending_compressed`).
    max_pending: usize,
}

impl std::fmt::Debug for CompressedCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedCheck")
            .field("pending", &self.pending.len())
            .field("window", &self.window.len())
            .finish_non_exhaustive()
    }
}

impl CompressedCheck {
    /// A check for clusters of `cluster_size` bytes compressed with zstd (`zstd`) or deflate;
    /// `None` when the decoder cannot be made.
    /// At most `max_pending` extents are remembered ahead of the stream.
    pub(crate) fn new(cluster_size: u64, zstd: bool, max_pending: usize) -> Option<Self> {
        Some(CompressedCheck {
            codec: Codec::new(zstd).ok()?,
            cluster_size: usize::try_from(cluster_size).ok()?,
            pending: BTreeMap::new(),
            window: Vec::new(),
            window_start: 0,
            out: Vec::new(),
            limit_hit: false,
            max_pending,
        })
    }

    /// Whether extents are still waiting for their bytes.
    pub(crate) fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The L2 entry ending at `entry_end` (at `at`) names compressed data `[start, end)`.
    pub(crate) fn note(
        &mut self,
        at: u64,
        entry_end: u64,
        start: u64,
        end: u64,
        findings: &mut PlacedFindings,
    ) {
        if start < entry_end || end <= start || self.limit_hit {
            return;
        }
        if self.pending.len() >= self.max_pending && !self.pending.contains_key(&start) {
            self.limit_hit = true;
            findings.push_with(ReasonCode::LimitExceeded, at, || {
                format!(
                    "qcow2 image names more than {} compressed clusters ahead of the stream \
                     (limits.qcow2_max_pending_compressed)",
                    self.max_pending
                )
            });
            return;
        }
        let slot = self.pending.entry(start).or_insert(end);
        *slot = (*slot).max(end);
    }

    /// Feeds stream bytes at `pos`: collects and inflates the extents they hold.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8], findings: &mut PlacedFindings) {
        let data_end = pos.saturating_add(u64_of(data.len()));
        while let Some((&start, &end)) = self.pending.first_key_value() {
            if start >= data_end {
                break;
            }
            if self.window.is_empty() && start >= pos && end <= data_end {
                // Whole in this chunk: inflate it in place.
                let input = data
                    .get(usize_of(start.saturating_sub(pos))..usize_of(end.saturating_sub(pos)))
                    .unwrap_or(&[]);
                self.check(start, input, findings);
                self.pending.pop_first();
                continue;
            }
            if self.window.is_empty() {
                self.window_start = start;
            }
            let have = self.window_start.saturating_add(u64_of(self.window.len()));
            let upto = end.min(data_end);
            if have < upto {
                let from = usize_of(have.max(pos).saturating_sub(pos));
                let to = usize_of(upto.saturating_sub(pos));
                self.window
                    .extend_from_slice(data.get(from..to).unwrap_or(&[]));
            }
            if end > data_end {
                break;
            }
            let window = std::mem::take(&mut self.window);
            let from = usize_of(start.saturating_sub(self.window_start));
            let to = usize_of(end.saturating_sub(self.window_start));
            self.check(start, window.get(from..to).unwrap_or(&[]), findings);
            self.pending.pop_first();
            self.window = window;
            // Keep what the next extent needs (it may start in the last sector read).
            match self.pending.first_key_value() {
                Some((&next, _)) if next < upto => {
                    let drop = usize_of(next.saturating_sub(self.window_start));
                    self.window.drain(..drop.min(self.window.len()));
                    self.window_start = next;
                }
                _ => self.window.clear(),
            }
        }
    }

    /// End of stream at `len`: extents cut by it are inflated from what exists, the rest
    /// zero-filled, as QEMU reads past the end of the file (their ends are `truncated`
    /// findings of the walk already when no byte of their last sector exists).
    pub(crate) fn finish(&mut self, len: u64, findings: &mut PlacedFindings) {
        while let Some((start, end)) = self.pending.pop_first() {
            if start >= len {
                continue;
            }
            let mut input = std::mem::take(&mut self.window);
            let from = usize_of(start.saturating_sub(self.window_start));
            input.drain(..from.min(input.len()));
            self.window_start = start;
            input.resize(usize_of(end.saturating_sub(start)), 0);
            self.check(start, &input, findings);
            self.window = input;
        }
        self.window = Vec::new();
    }

    fn check(&mut self, start: u64, input: &[u8], findings: &mut PlacedFindings) {
        if self.out.len() != self.cluster_size {
            self.out.resize(self.cluster_size, 0);
        }
        if let Err(m) = self.codec.decompress(input, &mut self.out) {
            findings.push_with(ReasonCode::Corrupt, start, || {
                format!(
                    "qcow2 compressed cluster at {start:#x} does not inflate to one cluster: {m}"
                )
            });
        }
    }
}
