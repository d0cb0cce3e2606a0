//! Test doubles and helpers shared by st2-matrix's API tier, end-to-end tier and benchmarks.
//!
//! - [`st2`]: a StackStorm double speaking the HTTP API and SSE stream of
//!   `st2-protocol.md` (tokens with expiry, paged aliases, alias executions, announcements).
//! - [`homeserver`]: a homeserver double for the client-server calls the bridge makes, with
//!   failure injection (429, 5xx, outages) and a record of every request.
//! - [`human`]: a person's device (matrix-sdk-crypto's `OlmMachine`) that encrypts for and
//!   decrypts from the bot's device through the homeserver double.
//! - [`poll`]: polling assertions with a deadline, so tests never sleep for a fixed time.

pub mod homeserver;
pub mod human;
pub mod poll;
pub mod st2;
