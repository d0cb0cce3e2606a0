//! libFuzzer entry for the `alias` target; the property is documented in
//! `st2_matrix_fuzz::alias`.
#![no_main]

unsafe extern "C" {
    /// libc's: libFuzzer ends a campaign with `exit(0)`, so this is the one place to report.
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// The counts of inputs that gave up on the step budget, for the campaign's log.
extern "C" fn report() {
    eprintln!("alias {:?}", st2_matrix_fuzz::alias::stats());
}

libfuzzer_sys::fuzz_target!(
    init: {
        // SAFETY: registers a plain function with no captured state.
        unsafe { atexit(report) };
    },
    |data: &[u8]| st2_matrix_fuzz::alias::run(data)
);
