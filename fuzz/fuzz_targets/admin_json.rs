#![no_main]
//! See causette::fuzzing::admin_json.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causette::fuzzing::admin_json(data));
