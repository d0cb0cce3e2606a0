//! API tier: the bridge in-process against a homeserver double. Fast; most cases live here.

mod admin;
mod approvals;
mod attachments;
mod commands;
mod encryption;
mod executions;
mod helpers;
mod in_doubt;
mod inquiries;
mod membership;
mod ops;
mod outbox;
mod results;
mod startup;
mod transactions;
