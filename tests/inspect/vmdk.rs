//! vmdk inspection tests on real images.
