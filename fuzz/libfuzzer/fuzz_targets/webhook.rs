//! libFuzzer entry for the `webhook` target; the property is documented in
//! `st2_matrix_fuzz::webhook`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| st2_matrix_fuzz::webhook::run(data));
