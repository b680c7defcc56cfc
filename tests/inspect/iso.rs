//! iso inspection tests on real images.
