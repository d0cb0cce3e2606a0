//! Handing freed memory back to the system.
//!
//! glibc's malloc keeps memory that was freed in its arenas (one per thread that allocated)
//! for reuse, so after a burst the process keeps its peak resident set although it no longer
//! uses it. The bridge asks glibc to return it where a burst is known to be over and large:
//! after a catalog refresh, which allocates tens of MiB for ten thousand aliases. (After
//! start-up it gains nothing measurable: idle memory stayed at 14.7 MiB with a trim 3 to 4 s
//! after start, also with blocking threads ended after 2 s idle, `cargo bench --bench
//! idle_memory`.)

/// Returns memory held free by the allocator to the system (glibc's `malloc_trim`); a no-op
/// on other C libraries.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator; it takes no pointers
    // and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
