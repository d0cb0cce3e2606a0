//! libFuzzer entry for the `pyre_diff` target; the property is documented in
//! `st2_matrix_fuzz::pyre_diff`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| st2_matrix_fuzz::pyre_diff::run(data));
