//! What the bridge does with the StackStorm stream ([`crate::st2::stream`] only reads it):
//! each announcement is delivered; each (re)connection starts a recovery pass for results
//! announced while nobody listened ([`super::recovery`]).
//!
//! Recovery runs in one task of its own, one pass at a time: a reconnection (or anyone holding
//! the `recover` handle, e.g. a command in doubt that turned out to have run and finished)
//! during a pass asks for one more pass after it, never a second one beside it. That task is on the workers'
//! tracker, so shutdown waits for it, and every wait in it gives way to shutdown.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Announcement, Claim, Source, deliver, recovery};
use crate::{bridge::Bridge, retry, st2::stream::StreamEvent};

/// Attempts at delivering one announcement whose delivery fails transiently.
const DELIVERY_ATTEMPTS: u32 = 3;

/// Consumes the stream reader's events until `stop` or until the reader ends.
/// `recover` asks for a recovery pass, as a (re)connection does.
pub async fn consume(
    bridge: Arc<Bridge>,
    mut events: mpsc::Receiver<StreamEvent>,
    recover: Arc<Notify>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    tracker.spawn(recover_on_request(
        bridge.clone(),
        recover.clone(),
        stop.clone(),
    ));
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            None => return,
            // A permit is stored when the recovery task is busy: exactly one more pass.
            Some(StreamEvent::Connected) => recover.notify_one(),
            Some(StreamEvent::Announcement(data)) => handle(&bridge, &data, &stop).await,
            // Not subscribed to on this connection (the executions connection's, see `crate::watch`).
            Some(StreamEvent::Execution(_)) => {}
        }
    }
}

/// Runs a recovery pass each time one is asked for, one at a time, until `stop`.
async fn recover_on_request(bridge: Arc<Bridge>, requests: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = requests.notified() => {}
        }
        recovery::recover(&bridge, &stop).await;
    }
}

/// Delivers one announcement (`data` of the SSE event).
async fn handle(bridge: &Bridge, data: &str, stop: &CancellationToken) {
    let payload = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v.get("payload").cloned());
    let announcement = match payload.map(serde_json::from_value::<Announcement>) {
        Some(Ok(announcement)) => announcement,
        _ => {
            metrics::counter!("st2_matrix_results_undeliverable_total", "reason" => "malformed")
                .increment(1);
            tracing::warn!(
                bytes = data.len(),
                "ignoring a stream announcement that is not a chatops payload"
            );
            return;
        }
    };
    // Refusals are logged and counted inside; a transient failure (database, homeserver for a
    // direct chat) is retried a few times rather than losing the result.
    let mut backoff = retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    for attempt in 1..=DELIVERY_ATTEMPTS {
        match deliver(bridge, &announcement, Source::Stream, Claim::ByContext).await {
            Err(e) if e.is_transient() && attempt < DELIVERY_ATTEMPTS => {
                if !backoff.wait(stop).await {
                    return;
                }
            }
            _ => return,
        }
    }
}
