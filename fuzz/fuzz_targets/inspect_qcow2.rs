//! Whole-stream inspection, declared `qcow2`; see `sluice_formats::fuzzing::inspect_as`.
#![no_main]

use sluice_formats::Format;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_formats::fuzzing::inspect_as(Some(Format::Qcow2), data);
});
