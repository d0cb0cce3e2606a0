//! What the handlers see: the core ([`Bridge`]) plus each feature's own state, in one place.
//!
//! This module sits above every feature whose state it holds and below every handler (the
//! appservice API, the inbox worker, commands, the admin room, the web pages, operations), so
//! the layers stay one way: features never see it, handlers take it. It dereferences to the
//! core, so a handler reads `state.store` or `state.config` directly.

use std::{
    ops::Deref,
    sync::{Arc, RwLock},
};

use tokio::sync::Notify;

use ruma::events::room::message::RoomMessageEventContent;

use crate::{
    access::Access,
    addressing::{Addressing, Classifier},
    aliases::AliasCache,
    bridge::Bridge,
    matrix::render::{self, Origin},
    st2::stream::StreamStatus,
    store::inbox,
};

/// The handlers' state: the core and the features' state.
#[derive(Debug)]
pub struct AppState {
    /// The core every layer shares.
    pub core: Arc<Bridge>,
    /// Decides which pushed events need work (knows the bot, the namespace, the prefix).
    pub classifier: Classifier,
    /// How messages address the bridge (the classifier's copy, for the handlers).
    pub addressing: Addressing,
    /// Wakes the inbox worker when a transaction stored new work.
    pub inbox_wake: Arc<Notify>,
    /// Wakes the approvals' expiry task when a new request was stored.
    pub approvals_wake: Arc<Notify>,
    /// Asks the results' recovery task for a pass (see [`crate::results::stream`]): a command
    /// in doubt found to have finished while the bridge was down gets its result that way.
    pub recover: Arc<Notify>,
    /// Cancelled when the bridge begins to shut down: a handler that would wait (the settle
    /// time of a command in doubt) gives way to it and leaves its event for the next start.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The aliases each room may use.
    pub aliases: Arc<AliasCache>,
    /// Permission levels: rooms' own settings and power levels.
    pub access: Access,
    /// The live status of executions started from rooms.
    pub live: Arc<crate::live::Live>,
    /// The StackStorm stream's state (written by its reader).
    pub stream: Arc<StreamStatus>,
    /// What the start-up check found about the notify rule (`enabled`, `disabled`, `missing`).
    pub notify_rule: RwLock<Option<String>>,
}

impl Deref for AppState {
    type Target = Bridge;

    fn deref(&self) -> &Bridge {
        &self.core
    }
}

impl AppState {
    /// The packs `room` may use.
    pub fn packs_for(&self, room: &ruma::RoomId) -> crate::permissions::PackFilter {
        self.access.packs_for(&self.core, room)
    }
}

/// Queues `content` as a reply to `origin` and marks the inbox row done, in one transaction.
pub async fn reply_and_finish(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    content: RoomMessageEventContent,
) -> anyhow::Result<()> {
    let content = render::reply(content, origin);
    let mut tx = bridge.store.begin().await?;
    bridge
        .outbox
        .queue_in(&mut tx, &origin.room_id, &content)
        .await?;
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    Ok(())
}
