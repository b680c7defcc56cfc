//! vhd → raw conversion on real images made by `qemu-img` (fixed and dynamic, qemu's default
//! CHS-derived size and `force_size`): output equal to `qemu-img convert -O raw`.

use std::path::{Path, PathBuf};

use sluice_formats::{ConvertLimits, Format};

use super::vmdk::{assert_converts_like_qemu, assert_cuts_are_truncated, convert_chunked};
use crate::common::*;

fn vhd_with_data(dir: &Path, name: &str, opts: &str, size: u64) -> PathBuf {
    let raw = raw_with_data(dir, &format!("{name}.raw"), size);
    qemu_img_convert(&raw, &dir.join(name), "vpc", opts)
}

#[test]
fn test_convert_vhd_dynamic_matches_qemu() {
    let dir = scratch();
    let small = vhd_with_data(dir.path(), "s.vhd", "", 8 << 20);
    assert_converts_like_qemu(&small, Format::Vhd, "vpc");
    let large = vhd_with_data(dir.path(), "l.vhd", "", 40 << 20);
    assert_converts_like_qemu(&large, Format::Vhd, "vpc");
    let forced = vhd_with_data(dir.path(), "f.vhd", "force_size=on", (10 << 20) + 3 * 512);
    assert_converts_like_qemu(&forced, Format::Vhd, "vpc");
    let empty = qemu_img_create(dir.path(), "e.vhd", "vpc", "", "10M");
    assert_converts_like_qemu(&empty, Format::Vhd, "vpc");
}

#[test]
fn test_convert_vhd_fixed_matches_qemu() {
    let dir = scratch();
    let small = vhd_with_data(dir.path(), "s.vhd", "subformat=fixed", 1 << 20);
    assert_converts_like_qemu(&small, Format::Vhd, "vpc");
    let large = vhd_with_data(dir.path(), "l.vhd", "subformat=fixed", 24 << 20);
    assert_converts_like_qemu(&large, Format::Vhd, "vpc");
    let forced = vhd_with_data(
        dir.path(),
        "f.vhd",
        "subformat=fixed,force_size=on",
        (10 << 20) + 3 * 512,
    );
    assert_converts_like_qemu(&forced, Format::Vhd, "vpc");
}

#[test]
fn test_convert_vhd_cut_images_are_truncated() {
    let dir = scratch();
    let path = vhd_with_data(dir.path(), "s.vhd", "", 8 << 20);
    let len = read(&path).len();
    // Inside the footer copy, inside the BAT, inside a block, without the final footer.
    assert_cuts_are_truncated(&path, Format::Vhd, &[100, 1600, len / 2, len - 512]);
    let fixed = vhd_with_data(dir.path(), "x.vhd", "subformat=fixed", 1 << 20);
    let bytes = read(&fixed);
    // A fixed image cut short has no footer at its end: it is not a VHD at all.
    assert!(convert_chunked(
        &bytes[..bytes.len() - 1],
        Format::Vhd,
        &[4096],
        &ConvertLimits::default()
    )
    .is_err());
}
