//! Which host clusters hold metadata and which hold guest data: two bitmaps of the file's
//! clusters, grown to the highest cluster referenced. A cluster in both is `corrupt` (an L2
//! entry pointing data into the header, an L1 or L2 table, the refcount table or a block, the
//! snapshot table or a snapshot's L1 table). Compressed extents share clusters with each other
//! legitimately; only metadata against data is a conflict.
//!
//! Checked once, at end of stream, when every reference is known: references arrive in both
//! orders (a refcount block named after the L2 entry pointing into it), and a verdict taken
//! at the end does not depend on chunking.
//!
//! Memory: 2 bits per host cluster up to the highest one referenced, at most
//! `Limits::qcow2_max_bitmap_clusters` clusters (default
//! [`QCOW2_MAX_BITMAP_CLUSTERS`](crate::QCOW2_MAX_BITMAP_CLUSTERS), 2 × 8 MiB). Clusters
//! beyond are not checked (by default, with 512-byte clusters, past 32 GiB of file). A 1 TiB image with QEMU's default
//! 64 KiB clusters has 16 Mi clusters: 2 × 2 MiB = 4 MiB.

use crate::stream::{u64_of, usize_of};

/// The two bitmaps (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct ClusterMap {
    cluster_bits: u32,
    meta: Vec<u64>,
    data: Vec<u64>,
    /// Most clusters tracked (at least 1).
    max_clusters: u64,
}

impl ClusterMap {
    /// An empty map for clusters of `2^cluster_bits` bytes, tracking at most `max_clusters`.
    pub(crate) fn new(cluster_bits: u32, max_clusters: u64) -> Self {
        ClusterMap {
            cluster_bits,
            meta: Vec::new(),
            data: Vec::new(),
            max_clusters: max_clusters.max(1),
        }
    }

    /// Host bytes `[start, end)` hold metadata.
    pub(crate) fn mark_meta(&mut self, start: u64, end: u64) {
        let (bits, max) = (self.cluster_bits, self.max_clusters);
        mark(&mut self.meta, bits, max, start, end);
    }

    /// Host bytes `[start, end)` hold guest data.
    pub(crate) fn mark_data(&mut self, start: u64, end: u64) {
        let (bits, max) = (self.cluster_bits, self.max_clusters);
        mark(&mut self.data, bits, max, start, end);
    }

    /// The host offset of the first cluster that holds both.
    pub(crate) fn first_conflict(&self) -> Option<u64> {
        let (word, both) = self
            .meta
            .iter()
            .zip(&self.data)
            .map(|(m, d)| m & d)
            .enumerate()
            .find(|(_, both)| *both != 0)?;
        let index = u64_of(word)
            .checked_mul(64)?
            .checked_add(u64::from(both.trailing_zeros()))?;
        index.checked_shl(self.cluster_bits)
    }

    /// Bytes the bitmaps hold (tests check the README's figures with it).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> usize {
        self.meta
            .capacity()
            .saturating_add(self.data.capacity())
            .saturating_mul(8)
    }
}

/// Sets the bits of the clusters overlapping `[start, end)`, clipped to the bound.
fn mark(bits: &mut Vec<u64>, cluster_bits: u32, max_clusters: u64, start: u64, end: u64) {
    if end <= start {
        return;
    }
    let first = start >> cluster_bits;
    let last = (end.saturating_sub(1) >> cluster_bits).min(max_clusters.saturating_sub(1));
    if first > last {
        return;
    }
    let words = usize_of(last / 64).saturating_add(1);
    if bits.len() < words {
        bits.resize(words, 0);
    }
    for cluster in first..=last {
        if let Some(w) = bits.get_mut(usize_of(cluster / 64)) {
            *w |= 1u64 << (cluster % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QCOW2_MAX_BITMAP_CLUSTERS;

    #[test]
    fn test_cluster_map_finds_the_first_cluster_in_both() {
        let mut m = ClusterMap::new(16, QCOW2_MAX_BITMAP_CLUSTERS);
        m.mark_meta(0, 1 << 16);
        m.mark_data(3 << 16, 4 << 16);
        assert_eq!(m.first_conflict(), None);
        m.mark_meta((3 << 16) + 8, (3 << 16) + 16);
        m.mark_data(70 << 16, 71 << 16);
        m.mark_meta(70 << 16, 72 << 16);
        assert_eq!(m.first_conflict(), Some(3 << 16));
    }

    #[test]
    fn test_cluster_map_is_bounded_whatever_the_offsets() {
        let mut m = ClusterMap::new(9, QCOW2_MAX_BITMAP_CLUSTERS);
        m.mark_data(u64::MAX - 1024, u64::MAX);
        m.mark_meta(0, u64::MAX);
        assert!(m.memory() <= 2 * (QCOW2_MAX_BITMAP_CLUSTERS as usize / 8) + 64);
        // Clusters past the bound are not tracked, so not checked.
        assert_eq!(m.first_conflict(), None);
        m.mark_data(5 << 9, 6 << 9);
        assert_eq!(m.first_conflict(), Some(5 << 9));
    }

    /// The figure README quotes: a 1 TiB image with 64 KiB clusters, every cluster used.
    #[test]
    fn test_cluster_map_memory_for_a_1_tib_image_is_4_mib() {
        let mut m = ClusterMap::new(16, QCOW2_MAX_BITMAP_CLUSTERS);
        m.mark_meta((1 << 40) - (2 << 16), (1 << 40) - (1 << 16));
        m.mark_data((1 << 40) - (1 << 16), 1 << 40);
        assert_eq!(m.memory(), 4 << 20);
        assert_eq!(m.first_conflict(), None);
    }
}
