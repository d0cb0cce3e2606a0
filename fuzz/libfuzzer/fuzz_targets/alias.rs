//! libFuzzer entry for the `alias` target; the property is documented in
//! `st2_matrix_fuzz::alias`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| st2_matrix_fuzz::alias::run(data));
