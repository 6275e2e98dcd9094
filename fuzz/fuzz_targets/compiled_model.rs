//! Fuzz target: `fhec::fuzzing::compiled_model` on arbitrary bytes (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec::fuzzing::compiled_model(data));
