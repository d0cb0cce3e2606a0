//! st2-matrix: StackStorm ChatOps for Matrix, as an application service.
//!
//! ```text
//! homeserver ──PUT /transactions──▶ appservice ──▶ dispatch ──▶ commands ──▶ st2 ──▶ StackStorm
//!                                   (auth, dedupe,  (inbox worker,  (help, run,
//!                                    persist inbox)  per room)       login, admin)
//! StackStorm ──stream / webhook──▶ results ──▶ matrix::outbox ──▶ matrix (client) ──▶ homeserver
//! ```
//!
//! - [`config`], [`registration`]: `config.toml` + `ST2_MATRIX_*` overrides, validated; the
//!   appservice registration file (generate, load, check).
//! - [`appservice`]: the HTTP API the homeserver calls (hs_token auth, transactions).
//! - [`dispatch`]: which events need work, and the per-room inbox worker.
//! - [`commands`], [`membership`]: what the bridge does with them (ping, help, run, login;
//!   invites, removals, the encryption notice).
//! - [`approvals`]: commands that wait for other people's approval (asked, answered by
//!   reaction or `approve`/`reject`, expired), run once approved.
//! - [`admin`]: the admin room's commands; [`permissions`] and [`room_settings`]: who may do
//!   what where, and each room's packs.
//! - [`aliases`]: the per-room alias cache, kept on disk, over the `st2-alias` crate
//!   (StackStorm's format parser and matcher, with its Python-compatible regex engine).
//! - [`st2`]: the StackStorm client (credentials kept alive, aliases, executions, the stream).
//! - [`results`], [`webhook`]: results back into rooms, from the stream, the webhooks and
//!   recovery after stream gaps; long ones as files.
//! - [`live`], [`watch`]: acks edited as executions move, ✅/❌ on commands; the executions
//!   stream's consumer (live status and inquiries).
//! - [`prompts`], [`inquiries`], [`approvals`]: the bot's messages people answer (✅/❌, polls,
//!   `respond`): StackStorm's inquiries, and commands waiting for approval.
//! - [`identity`], [`web`], [`crypto`], [`secret`]: people's own StackStorm accounts, the login
//!   page, encryption at rest, and strings that never reach a log.
//! - [`matrix`]: the homeserver client and the outbox, the one way the bridge speaks.
//! - [`e2ee`]: the bot's device: decrypting what encrypted rooms say, encrypting what the
//!   outbox sends there (matrix-sdk-crypto, fed from the appservice transactions).
//! - [`store`]: all SQL (SQLite, migrations embedded).
//! - [`ops`], [`telemetry`], [`tls`], [`memory`]: health, readiness, metrics, logs; outgoing
//!   TLS; freed memory handed back to the system.
//! - [`bridge`], [`startup`], [`cli`], [`parse_alias`]: the shared state, wiring and the
//!   command line.

pub mod access;
pub mod addressing;
pub mod admin;
pub mod aliases;
pub mod approvals;
pub mod appservice;
pub mod bridge;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod e2ee;
pub mod identity;
pub mod inquiries;
pub mod live;
pub mod matrix;
pub mod membership;
pub mod memory;
pub mod ops;
pub mod parse_alias;
pub mod permissions;
pub mod prompts;
pub mod registration;
pub mod results;
pub mod retry;
pub mod room_settings;
pub mod secret;
pub mod st2;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod web;
pub mod webhook;
