//! vhdx inspection tests on real images.
