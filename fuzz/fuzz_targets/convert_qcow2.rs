//! qcow2 → raw conversion, whole and chunked; see `sluice_formats::fuzzing::convert_qcow2`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_formats::fuzzing::convert_qcow2(data);
});
