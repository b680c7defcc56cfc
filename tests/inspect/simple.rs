//! simple inspection tests on real images.
