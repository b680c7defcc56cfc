//! gpt inspection tests on real images.
