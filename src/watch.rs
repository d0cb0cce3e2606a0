//! The executions stream's consumer: every execution change StackStorm announces goes to the
//! live status of executions started from rooms ([`crate::live`]) and to the inquiry finder
//! ([`crate::inquiries::watch`]); a timer lists inquiries (the backstop) and flushes coalesced
//! live-status edits.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    inquiries,
    st2::{stream::StreamEvent, types::Execution},
    state::AppState,
};

/// How often coalesced live-status edits are looked at.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Consumes the executions stream's reader until `stop` (see the module doc).
pub async fn run(
    bridge: Arc<AppState>,
    mut events: mpsc::Receiver<StreamEvent>,
    stop: CancellationToken,
) {
    let inquiries_on = bridge.config.inquiries.enabled;
    let live_on = bridge.config.live.enabled;
    let mut listing = tokio::time::interval(bridge.config.inquiries.poll_interval.get());
    listing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushing = tokio::time::interval(FLUSH_EVERY);
    flushing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missing = HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = listing.tick(), if inquiries_on => {
                inquiries::watch::sweep(&bridge, &mut missing).await;
            }
            _ = flushing.tick(), if live_on => bridge.live.flush(&bridge.core).await,
            event = events.recv() => match event {
                None => return,
                Some(StreamEvent::Connected) if inquiries_on => {
                    inquiries::watch::sweep(&bridge, &mut missing).await;
                }
                Some(StreamEvent::Execution(data)) => {
                    let update: Execution = match serde_json::from_str(&data) {
                        Ok(update) => update,
                        Err(e) => {
                            tracing::warn!(error.message = %e, "an execution update from the stream does not parse; ignoring it");
                            continue;
                        }
                    };
                    if live_on
                        && let Err(e) = bridge.live.on_update(&bridge.core, &update).await
                    {
                        tracing::warn!(execution_id = %update.id, error.message = %e, "could not update an execution's live status");
                    }
                    if inquiries_on {
                        inquiries::watch::on_update(&bridge, &update).await;
                    }
                }
                Some(StreamEvent::Connected | StreamEvent::Announcement(_)) => {}
            },
        }
    }
}
