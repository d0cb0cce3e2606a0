//! libFuzzer entry for the `registration` target; the property is documented in
//! `st2_matrix_fuzz::registration`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| st2_matrix_fuzz::registration::run(data));
