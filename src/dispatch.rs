//! One match on incoming events, and the worker that acts on them.
//!
//! [`crate::addressing::Classifier::classify`] runs inside the transaction handler and must stay cheap: it only
//! decides whether an event needs work (an invite or removal of the bot, a command, evidence of
//! encryption) and of which kind; everything else is ignored there. [`run_inbox`] then works
//! through the stored events, one room at a time in arrival order and rooms in parallel, like
//! one queue per room.

use std::{collections::HashSet, sync::Arc, time::Duration};

use anyhow::Context as _;
use ruma::{
    events::{AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent},
    serde::Raw,
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument as _;

use crate::{
    commands, membership, prompts, retry,
    state::AppState,
    store::{
        self,
        inbox::{self, Kind},
    },
};

/// Attempts at an event whose handling keeps failing transiently before it is given up.
const MAX_ATTEMPTS: u32 = 6;

/// Rooms worked on at once. Beyond it, rooms wait for a free slot (in the order the database
/// lists them): a burst over thousands of rooms must not become thousands of tasks each
/// holding a database connection and a StackStorm request. Generous, because a room whose
/// encrypted message waits for its room key holds its slot for up to `[encryption] key_wait`.
const MAX_ACTIVE_ROOMS: usize = 128;

/// How long after a prompt is queued a reaction to an unknown event may still be an answer to
/// it (its event id not recorded yet): longer than the outbox takes to send and record a
/// message under load, shorter than the worker's retries last.
const PROMPT_RECORDING_WAIT_MS: i64 = 60_000;

/// What the transaction handler calls: classification with the bridge's current state.
pub fn classify(bridge: &AppState, event: &AnyTimelineEvent) -> Option<Kind> {
    if let AnyTimelineEvent::State(AnyStateEvent::RoomPowerLevels(_)) = event {
        // Cheap, and keeps `power>=N` rules current without waiting for the cache to expire.
        bridge.access.power.invalidate(event.room_id());
    }
    bridge.classifier.classify(event, &*bridge.core)
}

/// Works through the inbox until `stop` is cancelled; the event in hand is finished first.
pub async fn run_inbox(bridge: Arc<AppState>, stop: CancellationToken) {
    let tracker = TaskTracker::new();
    let mut active: HashSet<String> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    loop {
        match inbox::open_rooms(&bridge.store, 10_000).await {
            Ok(rooms) => {
                // A mark of the command path's breakdown (docs/performance.md).
                tracing::debug!(rooms = rooms.len(), "inbox: rooms with work listed");
                for room in rooms {
                    if active.len() >= MAX_ACTIVE_ROOMS {
                        // The next finished room wakes the loop, which asks again.
                        break;
                    }
                    if active.insert(room.clone()) {
                        let (bridge, stop, done) = (bridge.clone(), stop.clone(), done_tx.clone());
                        tracker.spawn(async move {
                            work_room(&bridge, &room, &stop).await;
                            let _ = done.send(room);
                        });
                    }
                }
            }
            Err(e) => {
                tracing::error!(error.message = %e, "inbox: cannot read open rooms");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = bridge.inbox_wake.notified() => {}
            Some(room) = done_rx.recv() => {
                active.remove(&room);
                // Collect every other finished room too before querying again.
                while let Ok(room) = done_rx.try_recv() {
                    active.remove(&room);
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Handles `room`'s events in order until none is left (or we are stopping).
async fn work_room(bridge: &AppState, room: &str, stop: &CancellationToken) {
    let mut attempts = 0u32;
    while !stop.is_cancelled() {
        let mut row = match inbox::next_for_room(&bridge.store, room).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(room_id = room, error.message = %e, "inbox: cannot read the next event");
                return;
            }
        };
        row.last_try = attempts + 1 >= MAX_ATTEMPTS;
        let (seq, event_id) = (row.seq, row.event_id.clone());
        // A mark of the command path's breakdown (docs/performance.md).
        tracing::debug!(room_id = room, event_id, "inbox: next event read");
        match process(bridge, row, stop).await {
            Ok(()) => attempts = 0,
            Err(_) if stop.is_cancelled() => {
                // A handler that gave way to shutdown: the event stays for the next start,
                // and is never given up for it.
                return;
            }
            Err(e) => {
                attempts += 1;
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(room_id = room, event_id, error.message = %e, error.cause_chain = ?e,
                        "giving up on an event after {attempts} attempts");
                    if let Err(e) = inbox::finish_alone(&bridge.store, seq).await {
                        tracing::error!(error.message = %e, "inbox: cannot mark the event done");
                        return;
                    }
                    attempts = 0;
                    continue;
                }
                let wait = retry::delay(Duration::from_secs(1), Duration::from_secs(32), attempts);
                tracing::warn!(room_id = room, event_id, attempts, error.message = %e, "handling failed; retrying in {wait:?}");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Acts on one stored event. `Err` means "transient, try again"; handlers deal with permanent
/// failures themselves (log, tell the person) and return `Ok`.
async fn process(
    bridge: &AppState,
    row: inbox::Row,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let event = serde_json::from_str::<Raw<AnyTimelineEvent>>(&row.event)
        .and_then(|raw| raw.deserialize().map(|event| (raw, event)))
        .with_context(|| format!("stored event {} does not parse", row.event_id));
    let (raw, event) = match event {
        Ok(event) => event,
        Err(e) => {
            // It parsed when it was stored; if it no longer does, retrying cannot help.
            tracing::error!(event_id = row.event_id, error.message = %e, "dropping an unparseable inbox event");
            return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
        }
    };
    let span = tracing::info_span!("event", event_id = %row.event_id, room_id = %row.room_id, kind = row.kind.as_str());
    // `instrument`, never `span.enter()` across an await: a guard held over a suspension point
    // leaves the span entered on whatever thread resumes, which corrupts tracing's state.
    async move {
        match (row.kind, event) {
            (
                Kind::Invite,
                AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))),
            ) => membership::on_invite(bridge, &row, &member).await,
            (
                Kind::Removed,
                AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))),
            ) => membership::on_removed(bridge, &row, &member).await,
            (Kind::Encrypted, event) => match &bridge.e2ee {
                Some(e2ee) => process_encrypted(bridge, e2ee, &row, &event, stop).await,
                None => membership::on_encrypted(bridge, &row, event.room_id()).await,
            },
            (
                Kind::Command,
                AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                    MessageLikeEvent::Original(message),
                )),
            ) => commands::handle(bridge, &row, &message).await,
            (Kind::Response, event) => on_response(bridge, &row, &raw, &event).await,
            (
                Kind::Approved,
                AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                    MessageLikeEvent::Original(message),
                )),
            ) => commands::handle_approved(bridge, &row, &message).await,
            (kind, _) => {
                tracing::error!(
                    kind = kind.as_str(),
                    "inbox event does not fit its kind; skipping"
                );
                Ok(inbox::finish_alone(&bridge.store, row.seq).await?)
            }
        }
    }
    .instrument(span)
    .await
}

/// A possible answer to one of the bot's prompts: the feature whose prompt it answers acts on
/// it (and finishes the row); anything else is finished and forgotten.
async fn on_response(
    bridge: &AppState,
    row: &inbox::Row,
    raw: &Raw<AnyTimelineEvent>,
    event: &AnyTimelineEvent,
) -> anyhow::Result<()> {
    let found = match prompts::parse(raw, event) {
        Some(response) => {
            store::prompts::by_event(&bridge.store, response.room_id.as_str(), &response.target)
                .await?
                .map(|prompt| (prompt, response))
        }
        None => None,
    };
    let Some((prompt, response)) = found else {
        // A quick click can beat the outbox recording the prompt's event id (sends are marked
        // in batches): while a recent prompt of the room is unrecorded, try again shortly
        // (the worker's retry) instead of dropping what may be an answer.
        let recent = crate::store::now_ms() - PROMPT_RECORDING_WAIT_MS;
        if store::prompts::unrecorded_since(&bridge.store, &row.room_id, recent).await? {
            anyhow::bail!(
                "the reaction's target may be a prompt whose event id is not recorded yet"
            );
        }
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    };
    match prompt.kind {
        store::prompts::Kind::Inquiry => {
            crate::inquiries::on_answer(bridge, row, &prompt, &response).await
        }
        store::prompts::Kind::Approval => {
            crate::approvals::on_answer(bridge, row, &prompt, &response).await
        }
    }
}

/// An encrypted event. `m.room.encryption`: the room is recorded as encrypted. A message is
/// decrypted, waiting up to `[encryption] key_wait` (from when it arrived, or from this start)
/// for a room key that comes after it, then handled as if it had been sent in the clear; one
/// that cannot be decrypted is given up, and its sender told once per session.
async fn process_encrypted(
    bridge: &AppState,
    e2ee: &crate::e2ee::Encryption,
    row: &inbox::Row,
    event: &AnyTimelineEvent,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use crate::e2ee::Decrypted;
    let room = event.room_id();
    if let AnyTimelineEvent::State(_) = event {
        e2ee.record_encrypted(&bridge.store, room).await?;
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    }
    let started_ms = crate::store::now_ms()
        - i64::try_from(bridge.started_at.elapsed().as_millis()).unwrap_or(i64::MAX);
    let wait_ms =
        i64::try_from(bridge.config.encryption.key_wait.get().as_millis()).unwrap_or(i64::MAX);
    let deadline = row.received_at.max(started_ms).saturating_add(wait_ms);
    let mut keys = e2ee.key_updates();
    loop {
        // Marked seen before trying: a key that lands during the attempt wakes the wait.
        keys.borrow_and_update();
        let (session_id, reason) = match e2ee.decrypt(&row.event, room).await? {
            Decrypted::Event(raw) => return process_decrypted(bridge, row, raw).await,
            Decrypted::MissingKey { session_id } => {
                let left = deadline - crate::store::now_ms();
                if left > 0 {
                    let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
                    tokio::select! {
                        () = stop.cancelled() => anyhow::bail!("stopping while waiting for a room key"),
                        _ = keys.changed() => {}
                        () = tokio::time::sleep(left) => {}
                    }
                    continue;
                }
                (session_id, "its room key did not arrive".to_owned())
            }
            Decrypted::Failed { session_id, reason } => (session_id, reason),
        };
        return undecryptable(bridge, e2ee, row, event, session_id.as_deref(), &reason).await;
    }
}

/// A decrypted event, classified and handled like a plain one. Its inbox row (the encrypted
/// event's) is the one marked started and done, so exactly-once holds as for plain commands.
async fn process_decrypted(
    bridge: &AppState,
    row: &inbox::Row,
    raw: Raw<AnyTimelineEvent>,
) -> anyhow::Result<()> {
    let event = match raw.deserialize() {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error.message = %e, "a decrypted event does not parse; ignoring it");
            return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
        }
    };
    match (bridge.classifier.classify(&event, &*bridge.core), event) {
        (
            Some(Kind::Command),
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                MessageLikeEvent::Original(message),
            )),
        ) => commands::handle(bridge, row, &message).await,
        (Some(Kind::Response), event) => on_response(bridge, row, &raw, &event).await,
        _ => Ok(inbox::finish_alone(&bridge.store, row.seq).await?),
    }
}

/// Gives up on an event that cannot be decrypted: counted, logged (never with key material)
/// and, the first time for its sender's session in that room, its sender told why, so a
/// command is never silently lost.
async fn undecryptable(
    bridge: &AppState,
    e2ee: &crate::e2ee::Encryption,
    row: &inbox::Row,
    event: &AnyTimelineEvent,
    session_id: Option<&str>,
    reason: &str,
) -> anyhow::Result<()> {
    let (room, sender) = (event.room_id(), event.sender());
    let first = e2ee.give_up(room, sender, session_id);
    let no_to_device = e2ee.no_to_device_yet();
    tracing::warn!(
        event_id = %row.event_id, room_id = %room, sender = %sender, reason, told = first,
        "could not decrypt an event{}",
        if no_to_device {
            "; no to-device message has reached the bot since start: check that Synapse has \
             experimental_features msc2409_to_device_messages_enabled and the registration \
             receive_ephemeral: true"
        } else {
            ""
        }
    );
    if !first {
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    }
    let origin = crate::matrix::render::Origin {
        room_id: room.to_owned(),
        event_id: event.event_id().to_owned(),
        sender: sender.to_owned(),
        thread_root: None,
    };
    let text = format!(
        "🔒 {sender}, I could not decrypt your message ({reason}), so if it was a command it \
         did not run. Type `/discardsession` (Element), then send it again: your client then \
         makes a new room key and sends it to my device `{}`. Your client must not be set to \
         send keys to verified devices only.",
        e2ee.device_id()
    );
    commands::reply_and_finish(
        bridge,
        row,
        &origin,
        crate::matrix::render::notice_markdown(&text),
    )
    .await
}
