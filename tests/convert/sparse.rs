//! Sparse raw output: `sluice convert --to raw` of a raw image leaves every all-zero 4 KiB
//! block as a hole (as `qemu-img convert -S 4k`), bytes unchanged. (`FileSink` already did;
//! this pins it next to the import's holes in `service::sparse`.)

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::{read, scratch};

/// Bytes allocated to `path` on disk.
fn allocated(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn test_convert_raw_to_raw_leaves_zero_blocks_as_holes() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    // 32 MiB, a quarter of it data: 4 KiB of data in every 16 KiB, so every chunk the
    // converter sees holds data and zeros; written out in full (the input has no holes).
    let mut bytes = vec![0u8; 32 << 20];
    for block in bytes.chunks_mut(16 << 10) {
        block[..4096].fill(0x5a);
    }
    std::fs::write(&src, &bytes).unwrap();
    assert!(allocated(&src) >= 32 << 20);
    let out = dir.path().join("out.raw");
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["convert", "--to", "raw"])
        .arg(&src)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(read(&out) == read(&src));
    let used = allocated(&out);
    assert!(
        used <= (8 << 20) + (1 << 20),
        "{used} bytes allocated for 8 MiB of data"
    );
}
