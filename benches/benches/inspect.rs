//! Placeholder; the inspection benchmark lands with the formats work.
fn main() {}
