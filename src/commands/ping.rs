//! `!st2 ping`: the smallest command, proving the whole loop (homeserver → transaction →
//! inbox → worker → outbox → homeserver) works.

/// The bridge's version, reported by `ping`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The answer to `ping`.
pub fn reply() -> String {
    format!("pong: st2-matrix {VERSION}")
}
