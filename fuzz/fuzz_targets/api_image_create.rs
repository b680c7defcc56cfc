//! `POST /v2/images` bodies: refused with a 4xx, or a valid queued record that the image as
//! shown would create again; see `sluice_server::fuzzing::image_create` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_server::fuzzing::image_create(data);
});
