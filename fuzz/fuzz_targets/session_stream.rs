#![no_main]
//! See causette::fuzzing::session_stream.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causette::fuzzing::session_stream(data));
