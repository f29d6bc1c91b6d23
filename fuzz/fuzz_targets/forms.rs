#![no_main]
//! See causette::fuzzing::forms.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causette::fuzzing::forms(data));
