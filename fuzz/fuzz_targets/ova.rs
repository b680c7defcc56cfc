//! OVA reading (tar, OVF descriptor, manifest, one disk) then inspection; see
//! `sluice_pipeline::fuzzing::ova_inspect`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_pipeline::fuzzing::ova_inspect(data);
});
