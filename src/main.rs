//! The `st2-matrix` binary: parses the command line and hands over to [`st2_matrix::cli`].
//!
//! Before anything else it caps glibc's malloc arenas at two. glibc gives each thread that
//! allocates its own arena (up to 8 per core), and each keeps its free memory resident: with
//! the runtime's workers, SQLite's connection threads and the blocking pool that was eight
//! arenas, ~0.9 MiB of the idle bridge's resident memory (the idle budget is 14 MiB,
//! docs/performance.md). The bridge allocates little and rarely contends, so two arenas cost
//! nothing measurable in throughput. `MALLOC_ARENA_MAX` in the environment still wins.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc tunable; it is called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    st2_matrix::cli::main(st2_matrix::cli::Cli::parse())
}
