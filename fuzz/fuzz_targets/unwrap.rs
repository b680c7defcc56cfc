//! gzip/xz/zstd/bzip2 unwrapping then inspection; see `sluice_pipeline::fuzzing::unwrap_inspect`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_pipeline::fuzzing::unwrap_inspect(data);
});
