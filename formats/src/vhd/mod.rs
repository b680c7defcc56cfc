//! VHD (Virtual PC / Hyper-V; qemu's `vpc`): big-endian, a 512-byte footer at the end of the
//! file and, for dynamic and differencing disks, a copy of it at offset 0 followed by a
//! 1024-byte dynamic header and a block allocation table (BAT).
//!
//! - Dynamic and differencing images are recognised from the footer copy at offset 0; the
//!   dynamic header and the BAT are checked as they stream past and the footer at the end of
//!   the stream must be present and agree with the copy.
//! - A fixed image is a raw disk followed by a footer: like qemu, it is only recognised at end
//!   of stream (a footer of disk type 2 in the last 512 bytes), so even a raw disk whose last
//!   sector happens to be such a footer is a VHD.
//! - The virtual size is computed as qemu's `vpc` driver does (see `header::vhd_virtual_size`).

pub(crate) mod convert;
mod header;
mod inspect;
#[cfg(test)]
mod tests;

pub(crate) use inspect::VhdProbe;
