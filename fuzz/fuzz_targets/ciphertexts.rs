//! Fuzz target: `fhec::fuzzing::ciphertexts` on arbitrary bytes (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec::fuzzing::ciphertexts(data));
