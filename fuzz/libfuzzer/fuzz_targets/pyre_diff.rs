//! libFuzzer entry for the `pyre_diff` target; the property is documented in
//! `st2_matrix_fuzz::pyre_diff`.
#![no_main]

unsafe extern "C" {
    /// libc's: libFuzzer ends a campaign (and a replay) with `exit(0)`, with cases still
    /// queued for the oracle thread; this is the one place left to compare them.
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// Compares the last queued cases and prints the counts; a disagreement found this late
/// aborts, so the campaign does not end as a success.
extern "C" fn finish() {
    if let Some(message) = st2_matrix_fuzz::pyre_diff::finish() {
        eprintln!("pyre_diff: disagreement at exit: {message}");
        std::process::abort();
    }
}

libfuzzer_sys::fuzz_target!(
    init: {
        // SAFETY: registers a plain function with no captured state.
        unsafe { atexit(finish) };
    },
    |data: &[u8]| st2_matrix_fuzz::pyre_diff::run(data)
);
