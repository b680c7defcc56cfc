//! QEMU qcow2 (versions 2 and 3) and legacy QCOW v1 recognition and safety checks.
//!
//! The header (first 112 bytes) decides the format and most rejections, so a backing file, an
//! external data file, encryption or unknown features are refused within the first decision
//! step. The metadata tables are then checked as they stream past: the refcount table, the
//! active L1 table, every L2 table it references that comes later in the stream, and the
//! snapshot table. The furthest byte any of them references must exist, or the image is
//! truncated. Memory: the 112-byte header, one backing file name (≤ 1023 bytes), two
//! extension values (≤ 1023 bytes each) and 8 bytes per queued L2 table
//! (`Limits::max_tracked_tables`), whatever the file size.

mod clusters;
mod codec;
mod compressed;
pub(crate) mod convert;
mod extensions;
mod header;
mod inspect;
mod limits;
mod snapshots;
mod tables;
pub(crate) mod write;

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test builders compute small fixed offsets
mod tests;

pub(crate) use inspect::{display_name, Qcow2Probe};
