//! Fuzz targets for st2-matrix: one `pub fn` per target, taking the fuzzer's bytes.
//!
//! The targets live in a workspace member (not in cargo-fuzz's own crate) so that they share the
//! workspace's `Cargo.lock`, and so that plain `cargo test -p st2-matrix-fuzz` runs every target
//! over its checked-in seed corpus plus a few thousand generated inputs (`tests/short_run.rs`)
//! with no fuzzing tool installed. The coverage-guided campaign (`scripts/fuzz.sh`, harness in
//! `fuzz/libfuzzer/`) calls the same functions. A target reports a bug by panicking.
//!
//! - [`alias`]: st2 alias formats, commands and the matcher never panic and always finish.
//! - [`pyre_diff`]: pyre agrees with CPython 3.11's `re` (a `python3` child process).
//! - `transactions` (feature `bridge`): appservice transaction bodies never panic the parser or
//!   the classifier.
//! - `webhook` (feature `bridge`): webhook bodies never panic the parser or the renderer.
//! - `registration` (feature `bridge`): registration YAML never panics the loader or the user
//!   namespace built from it.

#![warn(missing_docs)]

pub mod alias;
pub mod pyre_diff;
#[cfg(feature = "bridge")]
pub mod registration;
#[cfg(feature = "bridge")]
pub mod transactions;
#[cfg(feature = "bridge")]
pub mod webhook;

/// Every target by name, as `fuzz/corpus/<name>/` and the harness's binaries call them.
pub const TARGETS: &[&str] = &[
    "alias",
    "pyre_diff",
    "transactions",
    "webhook",
    "registration",
];

/// Runs the target called `name` on one input (`false` if there is no such target in this
/// build, e.g. a bridge target without the `bridge` feature).
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "alias" => alias::run(data),
        "pyre_diff" => pyre_diff::run(data),
        #[cfg(feature = "bridge")]
        "transactions" => transactions::run(data),
        #[cfg(feature = "bridge")]
        "webhook" => webhook::run(data),
        #[cfg(feature = "bridge")]
        "registration" => registration::run(data),
        _ => return false,
    }
    true
}
