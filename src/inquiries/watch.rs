//! Finding inquiries: the stream's `core.ask` updates for promptness, a listing after every
//! stream (re)connection and every `[inquiries] poll_interval` so that none is missed while the
//! stream was down, and the same listing to close questions StackStorm closed (timed out,
//! answered elsewhere). The loop that calls these is [`crate::watch`].

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::Closed;
use crate::{
    st2::{self, types::Execution},
    state::AppState,
    store::inquiries as stored,
};

/// Inquiries listed at once. StackStorm's list has no offset and caps a page at its
/// `max_page_size` (100 by default); more pending inquiries than this are found by the stream.
const LIST_LIMIT: usize = 100;

/// How long an open question must be missing from StackStorm's list before it is closed as
/// "answered elsewhere" (at most; a shorter `poll_interval` shortens it): an answer sent from a
/// room is recorded just after StackStorm takes it, and the listing must not close it first.
const MISSING_GRACE: Duration = Duration::from_secs(10);

/// An execution changed: a `pending` inquirer (`core.ask`) is an inquiry to ask.
pub async fn on_update(bridge: &AppState, update: &Execution) {
    let inquirer = update
        .runner
        .as_ref()
        .and_then(|r| r.get("name"))
        .and_then(|n| n.as_str())
        == Some("inquirer")
        || update.action_ref() == Some("core.ask");
    if update.status.as_deref() != Some("pending") || !inquirer {
        return;
    }
    let Some(st2) = &bridge.st2 else { return };
    match st2.inquiry(&update.id).await {
        Ok(inquiry) => {
            if let Err(e) = super::post(bridge, &inquiry).await {
                tracing::warn!(inquiry_id = %update.id, error.message = %e, "could not ask an inquiry; the next listing tries again");
            }
        }
        // Answered or timed out already, before we asked: nothing to ask.
        Err(st2::Error::BadRequest { .. } | st2::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(inquiry_id = %update.id, error.message = %e, "could not read an inquiry; the next listing tries again");
        }
    }
}

/// Lists the pending inquiries: asks the new ones, closes the open ones StackStorm closed.
/// `missing` remembers since when open questions were missing from the list (the caller keeps
/// it between sweeps).
pub async fn sweep(bridge: &AppState, missing: &mut HashMap<String, Instant>) {
    let Some(st2) = &bridge.st2 else { return };
    let pending = match st2.inquiries(LIST_LIMIT).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error.message = %e, "could not list StackStorm's inquiries; trying again later");
            return;
        }
    };
    for inquiry in &pending {
        if let Err(e) = super::post(bridge, inquiry).await {
            tracing::warn!(inquiry_id = %inquiry.id, error.message = %e, "could not ask an inquiry; the next listing tries again");
        }
    }
    if pending.len() >= LIST_LIMIT {
        // A full page: an open question missing from it may still be pending.
        return;
    }
    let listed: HashSet<&str> = pending.iter().map(|i| i.id.as_str()).collect();
    let open = match stored::open_ids(&bridge.store).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(error.message = %e, "could not read the open inquiries");
            return;
        }
    };
    missing.retain(|id, _| open.contains(id) && !listed.contains(id.as_str()));
    for id in open {
        if listed.contains(id.as_str()) {
            continue;
        }
        let since = *missing.entry(id.clone()).or_insert_with(Instant::now);
        if since.elapsed() < MISSING_GRACE.min(bridge.config.inquiries.poll_interval.get()) {
            continue;
        }
        let closed = match st2.inquiry(&id).await {
            Ok(_) => continue,
            Err(st2::Error::BadRequest { faultstring, .. })
                if faultstring.contains("timed out") =>
            {
                Closed::TimedOut
            }
            Err(st2::Error::BadRequest { .. } | st2::Error::NotFound { .. }) => Closed::Elsewhere,
            Err(e) => {
                tracing::warn!(inquiry_id = %id, error.message = %e, "could not read an inquiry");
                continue;
            }
        };
        if let Err(e) = super::close(bridge, &id, &closed).await {
            tracing::warn!(inquiry_id = %id, error.message = %e, "could not close an inquiry");
            continue;
        }
        missing.remove(&id);
    }
}
