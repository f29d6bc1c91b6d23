#![no_main]
//! See causette::fuzzing::web_message.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causette::fuzzing::web_message(data));
