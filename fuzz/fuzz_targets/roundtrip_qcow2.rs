//! Round trip raw → qcow2 (→ raw once that converter exists); see
//! `sluice_formats::fuzzing::roundtrip_raw_qcow2`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_formats::fuzzing::roundtrip_raw_qcow2(data);
});
