#![no_main]
//! libFuzzer entry for arbor_fuzz::plan::run (see docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| arbor_fuzz::plan::run(data));
