#![no_main]
//! See causette::fuzzing::negotiation_stream.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causette::fuzzing::negotiation_stream(data));
