//! Placeholder: the tests come first.

#[cfg(test)]
mod tests;
