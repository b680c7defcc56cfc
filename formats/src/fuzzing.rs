//! Harness bodies for the fuzz targets in `fuzz/`, kept here so the targets are one-liners
//! and the same code runs in unit tests on the stable toolchain.

use crate::{inspect_bytes, Format, Inspector, Limits, Report};

/// Inspects `data` whole with no declared format; must never panic.
pub fn inspect(data: &[u8]) {
    let _ = inspect_bytes(data, None, Limits::default());
}

/// Inspects `data[1..]` declared as the format selected by `data[0]`; must never panic.
pub fn inspect_declared(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let declared = Format::ALL
        .get(usize::from(selector) % Format::ALL.len())
        .copied();
    let _ = inspect_bytes(rest, declared, Limits::default());
}

/// Feeds `data` split at the given chunk sizes (cycled; 0 is read as 1) and returns the report.
pub fn inspect_chunked(data: &[u8], declared: Option<Format>, sizes: &[usize]) -> Report {
    let mut inspector = Inspector::new(declared, Limits::default());
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        let _ = inspector.feed(chunk);
        rest = after;
        i = i.wrapping_add(1);
    }
    inspector.finish()
}

/// The differential target: the first bytes of `data` choose chunk sizes, the rest is the
/// image; the report must equal the one for the image fed whole.
///
/// # Panics
/// When the two reports differ: that is the bug this target exists to find.
pub fn buf_independent(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8).max(1);
    let Some((sizes, image)) = rest.split_at_checked(count.min(rest.len())) else {
        return;
    };
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b).max(1)).collect();
    let whole = inspect_bytes(image, None, Limits::default());
    let split = inspect_chunked(image, None, &sizes);
    assert_eq!(whole, split, "report depends on chunking");
}
