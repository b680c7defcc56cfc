//! qcow2 inspection tests on real images.
