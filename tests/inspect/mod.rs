//! Inspector tests on real images, one module per format family.

mod cli;
mod gpt;
mod iso;
mod qcow2;
mod simple;
mod vhd;
pub(crate) mod vhdx;
mod vmdk;
pub(crate) mod vmdk_footer;
