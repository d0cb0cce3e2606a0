//! The bridge's core: what every layer above shares — config, the bot's identity, the store,
//! the homeserver client and the outbox, StackStorm, the secrets, the bot's device and what is
//! known about rooms. Built once by [`crate::startup`], passed around as `Arc<Bridge>`.
//!
//! Features keep their own state next to their code (the alias cache in [`crate::aliases`],
//! permissions in [`crate::access`], the stream's state in [`crate::st2::stream`]); the
//! handlers' view of all of it is [`crate::state::AppState`], which sits above every feature.
//! So this module imports nothing that imports it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, RwLock},
    time::Instant,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId};

use crate::{
    addressing::RoomFacts,
    config::Config,
    crypto::SecretBox,
    e2ee::Encryption,
    matrix::{MatrixClient, outbox::Outbox},
    secret::Secret,
    st2::St2Client,
    store::Store,
};

/// The bridge's shared core.
#[derive(Debug)]
pub struct Bridge {
    /// The validated configuration.
    pub config: Config,
    /// The bot user.
    pub bot: OwnedUserId,
    /// Token the homeserver presents to us.
    pub hs_token: Secret,
    /// The database.
    pub store: Store,
    /// The homeserver client.
    pub matrix: MatrixClient,
    /// The one way to say something in Matrix.
    pub outbox: Outbox,
    /// StackStorm, when configured.
    pub st2: Option<St2Client>,
    /// Seals and opens stored credentials.
    pub secrets: std::sync::Arc<SecretBox>,
    /// The bot's device, when `[encryption] enabled`: reads and answers in encrypted rooms.
    pub e2ee: Option<Encryption>,
    /// What the bridge knows about rooms without asking the homeserver.
    pub rooms: RoomDirectory,
    /// Process start, for uptime.
    pub started_at: Instant,
}

/// Facts about rooms kept in memory (and in the store, by the code that learns them): read on
/// the hot path, where asking the homeserver is not an option.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    /// Rooms that already got the "encrypted rooms are not supported" notice, so their
    /// encrypted messages need not be stored at all.
    pub noticed_encrypted: RwLock<HashSet<String>>,
    /// Direct chats with the bot: every message there is a command.
    pub direct: RwLock<HashSet<String>>,
    /// The admin room, once known.
    pub admin_room: RwLock<Option<OwnedRoomId>>,
    /// Room aliases results were routed to, resolved once.
    pub aliases: Mutex<HashMap<String, OwnedRoomId>>,
    /// Serialises opening direct chats, so two whispers at once open one chat.
    pub dm_lock: tokio::sync::Mutex<()>,
}

impl RoomDirectory {
    /// A directory that knows these rooms' facts (loaded from the store at start).
    pub fn new(noticed_encrypted: HashSet<String>, direct: HashSet<String>) -> Self {
        Self {
            noticed_encrypted: RwLock::new(noticed_encrypted),
            direct: RwLock::new(direct),
            ..Self::default()
        }
    }

    /// The admin room, when known.
    pub fn admin_room(&self) -> Option<OwnedRoomId> {
        self.admin_room
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the admin room.
    pub fn set_admin_room(&self, room: OwnedRoomId) {
        *self.admin_room.write().unwrap_or_else(|e| e.into_inner()) = Some(room);
    }

    /// The room an alias was resolved to before.
    pub fn resolved_alias(&self, alias: &str) -> Option<OwnedRoomId> {
        self.aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(alias)
            .cloned()
    }

    /// Remembers what an alias resolved to.
    pub fn remember_alias(&self, alias: &str, room: OwnedRoomId) {
        self.aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(alias.to_owned(), room);
    }
}

impl Bridge {
    /// Whether `room` already got the encryption notice.
    pub fn encryption_noticed(&self, room: &RoomId) -> bool {
        self.rooms
            .noticed_encrypted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(room.as_str())
    }

    /// Records that `room` got the encryption notice.
    pub fn mark_encryption_noticed(&self, room: &RoomId) {
        self.rooms
            .noticed_encrypted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.as_str().to_owned());
    }

    /// Whether `room` is a direct chat with the bot.
    pub fn is_direct(&self, room: &RoomId) -> bool {
        self.rooms
            .direct
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(room.as_str())
    }

    /// Records that `room` is a direct chat.
    pub fn mark_direct(&self, room: &RoomId) {
        self.rooms
            .direct
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.as_str().to_owned());
    }

    /// Whether `room` is the admin room.
    pub fn is_admin_room(&self, room: &RoomId) -> bool {
        self.rooms
            .admin_room
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(room)
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
