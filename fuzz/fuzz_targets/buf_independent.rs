//! Differential: the report must not depend on how the stream is chunked; see
//! `sluice_formats::fuzzing::buf_independent` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_formats::fuzzing::buf_independent(data);
});
