//! libFuzzer entry for the `transactions` target; the property is documented in
//! `st2_matrix_fuzz::transactions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| st2_matrix_fuzz::transactions::run(data));
