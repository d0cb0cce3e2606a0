//! st2-matrix: StackStorm ChatOps for Matrix, as an application service.
//!
//! ```text
//! homeserver ──PUT /transactions──▶ appservice ──▶ dispatch ──▶ commands / membership
//!                                   (auth, dedupe,  (inbox worker,    (ping, invites,
//!                                    persist inbox)  per room)          encryption notice)
//!                          everything said ──▶ matrix::outbox ──▶ matrix (client) ──▶ homeserver
//! ```
//!
//! - [`alias`]: StackStorm's action-alias format parser (a port of its Python-regex semantics)
//!   and the matcher over many aliases.
//! - [`config`]: `config.toml` + `ST2_MATRIX_*` overrides, validated.
//! - [`registration`]: the appservice registration file (generate, load, check).
//! - [`appservice`]: the HTTP API the homeserver calls (hs_token auth, transactions).
//! - [`dispatch`]: which events need work, and the per-room inbox worker.
//! - [`commands`], [`membership`]: what the bridge does with them.
//! - [`matrix`]: the homeserver client and the outbox, the one way the bridge speaks.
//! - [`store`]: all SQL (SQLite, migrations embedded).
//! - [`ops`], [`telemetry`]: health, readiness, metrics, logs.
//! - [`startup`], [`cli`]: wiring and the command line.

pub mod admin;
pub mod alias;
pub mod aliases;
pub mod appservice;
pub mod bridge;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod identity;
pub mod matrix;
pub mod membership;
pub mod ops;
pub mod permissions;
pub mod registration;
pub mod results;
pub mod room_settings;
pub mod secret;
pub mod st2;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod web;
pub mod webhook;
