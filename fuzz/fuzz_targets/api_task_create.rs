//! `POST /v2/tasks` bodies: refused with a 4xx, or accepted and parsed the same way again
//! from the stored task; see `sluice_server::fuzzing::task_create` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_server::fuzzing::task_create(data);
});
