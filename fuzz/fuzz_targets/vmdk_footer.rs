//! The VMDK footer path (monolithicSparse, grain directory at the end): a fixed header and
//! descriptor, the input as the rest of the file; see `sluice_formats::fuzzing::vmdk_footer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_formats::fuzzing::vmdk_footer(data);
});
