//! The bot's own membership: accepting or declining invites, forgetting rooms it was removed
//! from, recording which rooms are encrypted, and (with encryption off) telling encrypted rooms
//! once that it cannot read them.

use ruma::{
    RoomId,
    events::{OriginalStateEvent, room::member::RoomMemberEventContent},
};

use crate::{
    matrix::{self, render},
    state::AppState,
    store::{inbox, rooms},
};

/// What the bot says in a room it cannot read (`[encryption] enabled = false`).
pub const ENCRYPTION_NOTICE: &str = "🔒 This room is encrypted, and this st2-matrix has encryption switched off \
    ([encryption] enabled = false), so it cannot read encrypted messages and will not see commands here. \
    Run StackStorm commands from an unencrypted room, or ask the operator to turn encryption on.";

/// The reason given when declining an invite.
pub const DECLINE_REASON: &str =
    "st2-matrix accepts invites only from users allowed by its bridge.invite_allow setting";

/// Joins when the inviter is allowed, declines otherwise.
pub async fn on_invite(
    bridge: &AppState,
    row: &inbox::Row,
    invite: &OriginalStateEvent<RoomMemberEventContent>,
) -> anyhow::Result<()> {
    let room = &invite.room_id;
    let inviter = &invite.sender;
    let allowed = bridge
        .config
        .invite_rules()
        .iter()
        .any(|rule| rule.matches(inviter));
    if !allowed {
        tracing::info!(room_id = %room, inviter = %inviter, "declining invite: inviter not in bridge.invite_allow");
        tolerate_permanent(
            bridge.matrix.leave(room, DECLINE_REASON).await,
            "declining the invite",
        )?;
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    }
    let direct = invite.content.is_direct == Some(true);
    if direct {
        // Before joining: the first message can arrive right after the join, and in a direct
        // chat it is a command only if the room is already known as one.
        bridge.mark_direct(room);
    }
    if let Err(e) = bridge.matrix.join(room).await {
        if e.is_transient() {
            return Err(e.into());
        }
        // e.g. the invite was withdrawn meanwhile: nothing to retry.
        tracing::warn!(room_id = %room, error.message = %e, "could not join the room");
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    }
    rooms::joined(&bridge.store, room.as_str(), Some(inviter.as_str()), direct).await?;
    tracing::info!(room_id = %room, inviter = %inviter, direct, "joined");
    // Asked afresh (the bot's device remembers the answer): the room may have turned
    // encrypted while the bot was not in it.
    let checked = match &bridge.e2ee {
        Some(e2ee) => e2ee.check_room(room).await,
        None => bridge.matrix.room_is_encrypted(room).await,
    };
    let encrypted = match checked {
        Ok(encrypted) => encrypted,
        Err(e) if e.is_transient() => return Err(e.into()),
        Err(e) => {
            tracing::warn!(room_id = %room, error.message = %e, "cannot read the room's encryption state");
            false
        }
    };
    match (bridge.e2ee.is_some(), encrypted) {
        (true, true) => {
            let mut tx = bridge.store.begin().await?;
            rooms::set_encrypted(&mut tx, room.as_str()).await?;
            inbox::finish(&mut tx, row.seq).await?;
            tx.commit().await?;
            Ok(())
        }
        (false, true) => notice_encryption(bridge, row, room).await,
        (_, false) => Ok(inbox::finish_alone(&bridge.store, row.seq).await?),
    }
}

/// The bot was kicked or banned (or its invite withdrawn): forget the room.
pub async fn on_removed(
    bridge: &AppState,
    row: &inbox::Row,
    event: &OriginalStateEvent<RoomMemberEventContent>,
) -> anyhow::Result<()> {
    let forgotten = rooms::forget(&bridge.store, event.room_id.as_str()).await?;
    crate::store::dms::forget_room(&bridge.store, event.room_id.as_str()).await?;
    bridge
        .access
        .settings
        .forget(&bridge.store, &event.room_id)
        .await?;
    tracing::info!(room_id = %event.room_id, by = %event.sender, membership = %event.content.membership, forgotten,
        "removed from the room; its state is forgotten");
    Ok(inbox::finish_alone(&bridge.store, row.seq).await?)
}

/// With encryption off: an encrypted event arrived, or encryption was switched on: post the
/// notice once.
pub async fn on_encrypted(
    bridge: &AppState,
    row: &inbox::Row,
    room: &RoomId,
) -> anyhow::Result<()> {
    notice_encryption(bridge, row, room).await
}

async fn notice_encryption(
    bridge: &AppState,
    row: &inbox::Row,
    room: &RoomId,
) -> anyhow::Result<()> {
    let mut tx = bridge.store.begin().await?;
    let first = rooms::claim_encryption_notice(&mut tx, room.as_str()).await?;
    if first {
        bridge
            .outbox
            .queue_in(&mut tx, room, &render::notice(ENCRYPTION_NOTICE))
            .await?;
    }
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.mark_encryption_noticed(room);
    if first {
        tracing::info!(room_id = %room, "room is encrypted; posted the notice");
        bridge.outbox.wake();
    }
    Ok(())
}

/// Turns a permanent homeserver error into a log line (nothing to retry) and keeps transient
/// ones as errors (retry).
fn tolerate_permanent(result: Result<(), matrix::Error>, doing: &str) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(anyhow::Error::new(e).context(doing.to_owned())),
        Err(e) => {
            tracing::warn!(error.message = %e, "{doing} failed");
            Ok(())
        }
    }
}
