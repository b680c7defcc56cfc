//! Streaming conversion tests: converter output against `qemu-img convert -O raw`.

mod cli;
mod meter;
mod qcow2;
mod roundtrip;
mod sparse;
mod unwrap;
mod vhd;
mod vhdx;
mod vmdk;
