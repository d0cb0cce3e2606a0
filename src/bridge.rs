//! What every handler and worker shares: config, identities, the store, the homeserver client
//! and the outbox. Built once by [`crate::startup`], passed around as `Arc<Bridge>`.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Instant,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use tokio::sync::Notify;

use crate::{
    addressing::Classifier,
    addressing::{Addressing, RoomFacts},
    aliases::AliasCache,
    config::Config,
    crypto::SecretBox,
    matrix::{MatrixClient, outbox::Outbox},
    permissions::PackFilter,
    permissions::PowerCache,
    results::Deliveries,
    room_settings::RoomSettings,
    secret::Secret,
    st2::{St2Client, stream::StreamStatus},
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
    /// How messages address the bridge (the classifier's copy, for the handlers).
    pub addressing: Addressing,
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
    /// Direct chats with the bot: every message there is a command.
    pub direct_rooms: RwLock<HashSet<String>>,
    /// StackStorm, when configured.
    pub st2: Option<St2Client>,
    /// The aliases each room may use.
    pub aliases: Arc<AliasCache>,
    /// The StackStorm stream's state.
    pub stream: StreamStatus,
    /// Alias cache and locks for delivering results.
    pub deliveries: Deliveries,
    /// What the start-up check found about the notify rule (`enabled`, `disabled`, `missing`).
    pub notify_rule: RwLock<Option<String>>,
    /// Rules and pack filters set per room in the admin room.
    pub room_settings: RoomSettings,
    /// Rooms' power levels, for `power>=N` rules.
    pub power: PowerCache,
    /// The admin room, once known.
    pub admin_room: RwLock<Option<OwnedRoomId>>,
    /// Seals and opens stored credentials.
    pub secrets: Arc<SecretBox>,
    /// The bot's device, when `[encryption] enabled`: reads and answers in encrypted rooms.
    pub e2ee: Option<crate::e2ee::Encryption>,
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

    /// Whether `room` is a direct chat with the bot.
    pub fn is_direct(&self, room: &RoomId) -> bool {
        self.direct_rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(room.as_str())
    }

    /// Records that `room` is a direct chat.
    pub fn mark_direct(&self, room: &RoomId) {
        self.direct_rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.as_str().to_owned());
    }

    /// The packs `room` may use.
    pub fn packs_for(&self, room: &RoomId) -> PackFilter {
        self.room_settings
            .packs_for(room, &self.config.bridge.packs)
    }

    /// Whether `room` is the admin room.
    pub fn is_admin_room(&self, room: &RoomId) -> bool {
        self.admin_room
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(room)
    }

    /// Records that `room` got the encryption notice.
    pub fn mark_encryption_noticed(&self, room: &RoomId) {
        self.noticed_encrypted_rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.as_str().to_owned());
    }
}

impl RoomFacts for Bridge {
    fn encryption_noticed(&self, room: &RoomId) -> bool {
        Bridge::encryption_noticed(self, room)
    }
    fn is_direct(&self, room: &RoomId) -> bool {
        Bridge::is_direct(self, room)
    }
    fn is_admin_room(&self, room: &RoomId) -> bool {
        Bridge::is_admin_room(self, room)
    }
    fn decrypts(&self) -> bool {
        self.e2ee.is_some()
    }
}
