//! VHDX (Hyper-V): little-endian, a 1 MiB header section (file identifier, two headers, two
//! region tables) followed, anywhere after 1 MiB, by the log, the metadata region and the block
//! allocation table (BAT).
//!
//! The header section is captured as it streams past. The region table names the BAT and
//! metadata regions; the metadata table (64 KiB) is captured when it streams past, then the few
//! small metadata items Sluice needs. qemu writes the BAT *before* the metadata, so BAT entries
//! are checked as they stream past without knowing the block size: per-entry checks that need
//! no metadata are made at once and a few aggregates (largest payload offset, first invalid
//! state, ...) are kept for the checks completed at end of stream.

pub(crate) mod convert;
mod header;
mod inspect;
#[cfg(test)]
mod tests;

pub(crate) use inspect::VhdxProbe;
