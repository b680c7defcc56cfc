//! cli inspection tests on real images.
