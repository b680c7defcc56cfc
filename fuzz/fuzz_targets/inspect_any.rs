//! Whole-stream inspection, no declared format (detection only); see `sluice_formats::fuzzing::inspect_as`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_formats::fuzzing::inspect_as(None, data);
});
