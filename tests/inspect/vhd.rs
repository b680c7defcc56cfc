//! vhd inspection tests on real images.
