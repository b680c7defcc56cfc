//! `PATCH /v2/images/{id}` documents applied to an image record: refused with a 4xx, or
//! applied deterministically within what a patch may change; see
//! `sluice_server::fuzzing::image_patch` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_server::fuzzing::image_patch(data);
});
