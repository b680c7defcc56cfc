//! The `sluice` binary.

use std::process::ExitCode;

/// jemalloc rather than glibc's allocator: glibc raises its mmap threshold to the size of
/// each large block freed (up to 32 MiB), so once an 8 MiB S3 part buffer has been freed the
/// pipeline's chunk buffers come from per-thread arenas that keep freed memory; four
/// concurrent imports into S3 then peaked at 202 MiB of RSS, 112 MiB with the threshold
/// pinned (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576`). See the README, "Memory".
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    sluice_server::cli::main()
}
