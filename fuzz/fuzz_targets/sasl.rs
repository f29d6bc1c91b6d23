#![no_main]
//! See causette::fuzzing::sasl.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causette::fuzzing::sasl(data));
