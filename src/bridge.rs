//! What every handler and worker shares: config, identities, the store, the homeserver client
//! and the outbox. Built once by [`crate::startup`], passed around as `Arc<Bridge>`.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Instant,
};

use ruma::{OwnedUserId, RoomId};
use tokio::sync::Notify;

use crate::{
    config::Config,
    dispatch::Classifier,
    matrix::{MatrixClient, outbox::Outbox},
    secret::Secret,
    store::Store,
};

/// The bridge's shared state.
#[derive(Debug)]
pub struct Bridge {
    /// The validated configuration.
    pub config: Config,
    /// The bot user.
    pub bot: OwnedUserId,
    /// Decides which pushed events need work (knows the bot, the namespace, the prefix).
    pub classifier: Classifier,
    /// Token the homeserver presents to us.
    pub hs_token: Secret,
    /// The database.
    pub store: Store,
    /// The homeserver client.
    pub matrix: MatrixClient,
    /// The one way to say something in Matrix.
    pub outbox: Outbox,
    /// Wakes the inbox worker when a transaction stored new work.
    pub inbox_wake: Arc<Notify>,
    /// Rooms that already got the "encrypted rooms are not supported" notice, so their
    /// encrypted messages need not be stored at all.
    pub noticed_encrypted_rooms: RwLock<HashSet<String>>,
    /// Process start, for uptime.
    pub started_at: Instant,
}

impl Bridge {
    /// Whether `room` already got the encryption notice.
    pub fn encryption_noticed(&self, room: &RoomId) -> bool {
        self.noticed_encrypted_rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(room.as_str())
    }

    /// Records that `room` got the encryption notice.
    pub fn mark_encryption_noticed(&self, room: &RoomId) {
        self.noticed_encrypted_rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.as_str().to_owned());
    }
}
