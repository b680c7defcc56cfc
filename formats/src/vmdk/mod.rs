//! VMware VMDK: hosted sparse extents (`KDMV`: monolithicSparse and streamOptimized), the
//! legacy `COWD` extent, and text-only descriptor files.
//!
//! Sluice ingests a VMDK only when it is one self-contained sparse extent: createType
//! `monolithicSparse` or `streamOptimized`, one `SPARSE` extent naming a plain file (itself),
//! no parent. Anything that makes QEMU open another file is refused: descriptor files (their
//! data is always elsewhere), FLAT/VMFS/ZERO extents and paths (CVE-2022-47951), parents. Past
//! those checks (oslo.utils' and more), the structure is walked as it streams: grain
//! directory → grain tables → grains, and for streamOptimized the marker chain and footer.

pub(crate) mod convert;
mod cowd;
mod descriptor;
mod footer;
mod header;
mod inspect;
mod sparse;
mod stream_optimized;
#[cfg(test)]
mod tests;

pub(crate) use inspect::VmdkProbe;
