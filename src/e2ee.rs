//! End-to-end encryption: the bot's one device, driven from the appservice transactions.
//!
//! The bot (the registration's `sender_localpart`) cannot `/sync` (Synapse refuses it for an
//! appservice sender), so everything a client learns from `/sync` comes from the transactions
//! instead: to-device events (MSC2409, `de.sorunome.msc2409.to_device`), changed device lists
//! and one-time-key counts (MSC3202). [`Encryption::receive`] feeds them to matrix-sdk-crypto's
//! [`OlmMachine`], which persists what they carry (room keys above all: Synapse delivers a
//! to-device message once) in its own SQLite store before the transaction is acknowledged.
//!
//! What the machine wants sent (key uploads and queries, one-time-key claims, room keys for
//! other devices) is sent by one pump ([`Encryption::flush`]), as the bot's device (device
//! masquerading with the as_token), and each response handed back to the machine.
//!
//! Rooms: this module keeps a small directory of which rooms are encrypted, their members
//! (joined and invited, fetched once, then kept current from the transactions' membership
//! events) and their history visibility. Encrypting for a room = track its members' devices,
//! claim one-time keys where an Olm session is missing, share the room key with every device
//! (matrix-sdk-crypto rotates it when someone who had it is no longer a member), then encrypt.
//!
//! Keys and sessions never reach a log: errors are logged by kind, never with their payload.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use matrix_sdk_common::deserialized_responses::UnableToDecryptReason;
use matrix_sdk_crypto::{
    CollectStrategy, CryptoStoreError, DecryptionSettings, EncryptionSettings,
    EncryptionSyncChanges, OlmMachine, RoomEventDecryptionResult, TrustRequirement,
    types::requests::{AnyIncomingResponse, AnyOutgoingRequest, OutgoingRequest},
};
use matrix_sdk_sqlite::{SqliteCryptoStore, SqliteStoreConfig};
use rand::Rng as _;
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    api::{
        appservice::event::push_events,
        client::{
            keys::{get_keys, upload_signing_keys},
            message::send_message_event,
            sync::sync_events::DeviceLists,
            to_device::send_event_to_device,
        },
    },
    events::{
        AnyMessageLikeEventContent, AnyStateEvent, AnyTimelineEvent, AnyToDeviceEvent, StateEvent,
        StateEventType,
        room::{
            encryption::RoomEncryptionEventContent,
            history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent},
            member::MembershipState,
        },
    },
    serde::Raw,
};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    crypto::SecretBox,
    matrix::{self, MatrixClient, outbox::RoomEncryptor},
    store::{self, Store},
};

/// The `meta` key holding the bot's device id.
const DEVICE_META: &str = "e2ee_device_id";
/// The `meta` key recording that cross-signing was uploaded for the device it names.
const CROSS_SIGNING_META: &str = "e2ee_cross_signed_device";
/// The purpose the crypto store's key is derived for from the `[secrets]` key.
const STORE_KEY_PURPOSE: &str = "matrix-sdk-crypto store";
/// Transactions without MSC3202 fields after which the homeserver is assumed not to send them.
const TRANSACTIONS_BEFORE_WARNING: u64 = 3;

/// A failure of the encryption layer. Messages never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crypto store failed (disk, corruption, wrong key).
    #[error("the crypto store failed: {0}")]
    Store(#[from] CryptoStoreError),
    /// The homeserver refused or could not be reached.
    #[error(transparent)]
    Matrix(#[from] matrix::Error),
    /// matrix-sdk-crypto refused (a malformed key, a session that cannot be created).
    #[error("encryption failed: {0}")]
    Olm(String),
}

/// The outcome of decrypting a room event.
#[derive(Debug)]
pub enum Decrypted {
    /// The plain event, as if it had been sent unencrypted (same id, sender, room).
    Event(Raw<AnyTimelineEvent>),
    /// Its room key has not arrived (yet): worth waiting for.
    MissingKey {
        /// The Megolm session it was encrypted with.
        session_id: Option<String>,
    },
    /// It cannot be decrypted, and waiting will not help (withheld key, bad ciphertext).
    Failed {
        /// The Megolm session, when the event names one.
        session_id: Option<String>,
        /// Why, in words (no key material).
        reason: String,
    },
}

/// What the admin room's `status` and `/metrics` show.
#[derive(Debug, Clone)]
pub struct Status {
    /// The bot's device id.
    pub device_id: String,
    /// Cross-signing keys uploaded and the device signed.
    pub cross_signed: bool,
    /// Users whose devices the bot tracks.
    pub tracked_users: usize,
    /// Events given up on as undecryptable since start.
    pub undecryptable: u64,
    /// Encryption failures (decryption store errors, failed key shares) since start.
    pub errors: u64,
    /// Whether transactions carry MSC3202 fields (`None`: not enough transactions seen).
    pub extensions_seen: Option<bool>,
    /// To-device events received since start.
    pub to_device_received: u64,
}

/// The bot's device and its crypto machine. Cheap to clone.
#[derive(Clone)]
pub struct Encryption {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("device", &self.inner.device)
            .finish_non_exhaustive()
    }
}

struct Inner {
    machine: OlmMachine,
    client: MatrixClient,
    bot: OwnedUserId,
    device: OwnedDeviceId,
    /// One sender of outgoing requests at a time: two would send the same key query twice, and
    /// a caller that needs the keys waits for the pump that is sending them.
    pump: tokio::sync::Mutex<()>,
    /// Wakes the background pump (after a transaction changed something).
    pump_wake: Notify,
    /// One room-key share at a time: sharing reads and writes the set of devices that have
    /// a session, which must not interleave for one room.
    share: tokio::sync::Mutex<()>,
    rooms: Mutex<Rooms>,
    /// Users whose devices were handed to the machine to track (so only new ones are added).
    tracked: Mutex<HashSet<OwnedUserId>>,
    /// Bumped whenever room keys arrive, to wake events waiting for theirs.
    keys: watch::Sender<u64>,
    /// The last one-time-key counts fed to the machine: unchanged counts are not fed again.
    last_counts: Mutex<Option<KeyCounts>>,
    /// Undecryptable (room, sender, session) already told about: one notice per session.
    told: Mutex<HashSet<(OwnedRoomId, OwnedUserId, String)>>,
    cross_signed: AtomicBool,
    transactions: AtomicU64,
    with_extensions: AtomicU64,
    to_device_received: AtomicU64,
    undecryptable: AtomicU64,
    errors: AtomicU64,
    warned_extensions: AtomicBool,
    /// Bumped whenever devices may have changed (device lists in a transaction, key queries
    /// answered): shares made before must be checked again.
    devices: AtomicU64,
}

/// One-time-key counts and unused fallback key types, as a transaction reports them.
type KeyCounts = (
    BTreeMap<OneTimeKeyAlgorithm, UInt>,
    Option<Vec<OneTimeKeyAlgorithm>>,
);

/// How long a room key share is trusted without checking again that every member's device has
/// the key (new devices of known users come through device-list changes, which force a check).
const SHARE_CHECK_EVERY: Duration = Duration::from_secs(600);

/// Which rooms are encrypted, and what encrypting for them needs.
#[derive(Default)]
struct Rooms {
    encrypted: HashMap<OwnedRoomId, RoomState>,
    /// Rooms known to be unencrypted (joined while not encrypted, or checked).
    plain: HashSet<OwnedRoomId>,
}

#[derive(Default)]
struct RoomState {
    /// `m.room.encryption` of the room (rotation settings).
    settings: Option<RoomEncryptionEventContent>,
    history_visibility: Option<HistoryVisibility>,
    /// Joined and invited users; `None` until fetched from the homeserver.
    members: Option<BTreeSet<OwnedUserId>>,
    /// The last complete share of the room key: while members and devices are unchanged, the
    /// next message needs no share check (for 50 members' devices it costs ~5 ms of store
    /// reads).
    shared: Option<Shared>,
}

/// A room key share that reached every member's devices.
#[derive(Clone, Copy)]
struct Shared {
    /// The device generation ([`Inner::devices`]) it was made at.
    devices: u64,
    at: std::time::Instant,
    /// Messages the room key may still encrypt before it must rotate (`rotation_period_msgs`
    /// less what it has encrypted). Counted here: reading the stored session before every
    /// message would cost a store read each time.
    remaining: u64,
}

impl Shared {
    /// Whether the next message can be encrypted without checking the share again: no device
    /// changed since, it is recent, and the room key has messages left. (Members changing
    /// clears the record.) matrix-sdk-crypto refuses to encrypt with an expired room key, and
    /// only a share rotates it.
    fn still_good(&self, devices: u64) -> bool {
        self.devices == devices && self.at.elapsed() < SHARE_CHECK_EVERY && self.remaining > 0
    }
}

/// The target of a to-device event as Synapse adds it to appservice transactions.
#[derive(Deserialize)]
struct ToDeviceTarget {
    to_user_id: Option<OwnedUserId>,
    to_device_id: Option<OwnedDeviceId>,
}

impl Encryption {
    /// Ensures the bot's device (id kept in the database; created on the homeserver with
    /// `PUT /devices/{id}`), opens the crypto store (encrypted with a key derived from
    /// `[secrets]`), uploads the device's keys and, once, its cross-signing keys.
    pub async fn start(
        config: &Config,
        client: MatrixClient,
        store: &Store,
        secrets: &SecretBox,
    ) -> anyhow::Result<Encryption> {
        use anyhow::Context as _;
        let bot = client.bot().to_owned();
        let device: OwnedDeviceId = match store::settings::meta(store, DEVICE_META).await? {
            Some(id) => id.into(),
            None => {
                let id: OwnedDeviceId = new_device_id().into();
                // Recorded before the homeserver knows it: a crash in between only means the
                // same id is created on the next start.
                store::settings::set_meta(store, DEVICE_META, id.as_str()).await?;
                tracing::info!(device_id = %id, "new device for the bot");
                id
            }
        };
        client
            .ensure_device(&device, &config.encryption.device_displayname)
            .await
            .with_context(|| format!("creating the bot's device {device} on the homeserver"))?;

        let path: PathBuf = config.resolve(&config.encryption.store);
        let key = secrets.derive_key(STORE_KEY_PURPOSE);
        let crypto_store = SqliteCryptoStore::open_with_config(
            &SqliteStoreConfig::with_low_memory_config(&path)
                .pool_max_size(2)
                .key(Some(&key)),
        )
        .await
        .with_context(|| {
            format!(
                "opening the crypto store {} ([encryption] store); it opens only with the \
                 [secrets] key it was created with",
                path.display()
            )
        })?;
        let machine = OlmMachine::with_store(&bot, &device, crypto_store, None)
            .await
            .map_err(|e| match e {
                CryptoStoreError::MismatchedAccount { expected, .. } => anyhow::anyhow!(
                    "the crypto store {} belongs to device {} but the database names device \
                     {device}: keep the database and the crypto store together, or move the \
                     crypto store away to start over with a new device",
                    path.display(),
                    expected.1
                ),
                other => anyhow::Error::new(other).context("loading the bot's device"),
            })?;
        // Without matrix-sdk-crypto's `automatic-room-key-forwarding` feature the machine
        // neither asks other devices for keys nor forwards its own: the bot has no other
        // devices to ask, and must not hand room keys to anyone who asks.
        debug_assert!(!machine.is_room_key_forwarding_enabled());

        let (keys, _) = watch::channel(0);
        let encryption = Encryption {
            inner: Arc::new(Inner {
                machine,
                client,
                bot,
                device,
                pump: tokio::sync::Mutex::new(()),
                pump_wake: Notify::new(),
                share: tokio::sync::Mutex::new(()),
                rooms: Mutex::new(Rooms::default()),
                tracked: Mutex::new(HashSet::new()),
                keys,
                last_counts: Mutex::new(None),
                told: Mutex::new(HashSet::new()),
                cross_signed: AtomicBool::new(false),
                transactions: AtomicU64::new(0),
                with_extensions: AtomicU64::new(0),
                to_device_received: AtomicU64::new(0),
                undecryptable: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                warned_extensions: AtomicBool::new(false),
                devices: AtomicU64::new(0),
            }),
        };
        encryption
            .flush()
            .await
            .context("uploading the bot device's keys")?;
        encryption.cross_sign_once(store).await;
        if let Ok(tracked) = encryption.inner.machine.tracked_users().await {
            *lock(&encryption.inner.tracked) = tracked;
        }
        encryption.record_gauges();
        // Present (at zero) from the start, so dashboards and alerts see them.
        metrics::counter!("st2_matrix_e2ee_undecryptable_total").increment(0);
        metrics::counter!("st2_matrix_e2ee_errors_total").increment(0);
        tracing::info!(
            device_id = %encryption.inner.device,
            cross_signed = encryption.inner.cross_signed.load(Ordering::Relaxed),
            "end-to-end encryption ready"
        );
        Ok(encryption)
    }

    /// Sets the gauges `/metrics` shows: the device (its id as a label), cross-signing, and
    /// the number of tracked users.
    fn record_gauges(&self) {
        let inner = &self.inner;
        metrics::gauge!("st2_matrix_e2ee_device_info", "device_id" => inner.device.to_string())
            .set(1.0);
        metrics::gauge!("st2_matrix_e2ee_cross_signed").set(f64::from(u8::from(
            inner.cross_signed.load(Ordering::Relaxed),
        )));
        metrics::gauge!("st2_matrix_e2ee_tracked_users").set(lock(&inner.tracked).len() as f64);
    }

    /// The bot's device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.inner.device
    }

    /// Uploads the cross-signing keys and signs the device, unless done for this device before.
    /// A failure is logged and leaves the bot working, only shown as "not verified by its
    /// owner" in Element.
    async fn cross_sign_once(&self, store: &Store) {
        let done = store::settings::meta(store, CROSS_SIGNING_META)
            .await
            .ok()
            .flatten();
        let status = self.inner.machine.cross_signing_status().await;
        let complete = status.has_master && status.has_self_signing && status.has_user_signing;
        if complete && done.as_deref() == Some(self.inner.device.as_str()) {
            self.inner.cross_signed.store(true, Ordering::Relaxed);
            return;
        }
        match self.bootstrap_cross_signing().await {
            Ok(()) => {
                self.inner.cross_signed.store(true, Ordering::Relaxed);
                if let Err(e) =
                    store::settings::set_meta(store, CROSS_SIGNING_META, self.inner.device.as_str())
                        .await
                {
                    tracing::warn!(error.message = %e, "cannot record that cross-signing is set up");
                }
                tracing::info!(device_id = %self.inner.device, "cross-signing set up: the bot's device is signed by its own identity");
            }
            Err(e) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error.message = %e, "could not set up cross-signing; Element will show the bot's device as not verified by its owner");
            }
        }
    }

    async fn bootstrap_cross_signing(&self) -> Result<(), Error> {
        let _pump = self.inner.pump.lock().await;
        let machine = &self.inner.machine;
        let requests = machine.bootstrap_cross_signing(false).await?;
        if let Some(upload) = &requests.upload_keys_req {
            self.send_request(upload).await?;
        }
        let keys = &requests.upload_signing_keys_req;
        let raw = |key: &Option<matrix_sdk_crypto::types::CrossSigningKey>| {
            key.as_ref()
                .map(|key| Raw::new(key).map(Raw::cast_unchecked))
                .transpose()
                .map_err(|e| Error::Olm(e.to_string()))
        };
        let mut upload = upload_signing_keys::v3::Request::new();
        upload.master_key = raw(&keys.master_key)?;
        upload.self_signing_key = raw(&keys.self_signing_key)?;
        upload.user_signing_key = raw(&keys.user_signing_key)?;
        // An appservice needs no user-interactive auth for this (Synapse 1.163, MSC4190).
        let response = self
            .inner
            .client
            .send_as_device(upload, &self.inner.device)
            .await?;
        machine
            .mark_request_as_sent(
                &ruma::TransactionId::new(),
                AnyIncomingResponse::SigningKeysUpload(&response),
            )
            .await
            .map_err(|e| Error::Olm(e.to_string()))?;
        let signatures = requests.upload_signatures_req.clone();
        self.inner
            .client
            .send_as_device(signatures, &self.inner.device)
            .await?;
        Ok(())
    }

    /// Feeds what a transaction carries for the bot's device to the crypto machine, which
    /// stores it before this returns. Skips the machine when there is nothing new.
    pub async fn receive(&self, request: &push_events::v1::Request) -> Result<(), Error> {
        let inner = &self.inner;
        inner.transactions.fetch_add(1, Ordering::Relaxed);
        if !request.device_one_time_keys_count.is_empty()
            || !request.device_unused_fallback_key_types.is_empty()
        {
            inner.with_extensions.fetch_add(1, Ordering::Relaxed);
        }
        let to_device: Vec<Raw<AnyToDeviceEvent>> = request
            .to_device
            .iter()
            .filter(|raw| {
                raw.deserialize_as_unchecked::<ToDeviceTarget>()
                    .is_ok_and(|t| {
                        t.to_user_id.as_deref() == Some(&*inner.bot)
                            && t.to_device_id.as_deref() == Some(&*inner.device)
                    })
            })
            .map(|raw| raw.clone().cast_unchecked())
            .collect();
        let counts = request
            .device_one_time_keys_count
            .get(&inner.bot)
            .and_then(|devices| devices.get(&inner.device))
            .cloned();
        let fallback = request
            .device_unused_fallback_key_types
            .get(&inner.bot)
            .and_then(|devices| devices.get(&inner.device))
            .cloned();
        let counts_changed = counts.is_some() && {
            let mut last = lock(&inner.last_counts);
            let now = (counts.clone().unwrap_or_default(), fallback.clone());
            if last.as_ref() == Some(&now) {
                false
            } else {
                *last = Some(now);
                true
            }
        };
        if to_device.is_empty() && request.device_lists.is_empty() && !counts_changed {
            return Ok(());
        }
        inner
            .to_device_received
            .fetch_add(to_device.len() as u64, Ordering::Relaxed);
        if !request.device_lists.is_empty() {
            inner.devices.fetch_add(1, Ordering::Relaxed);
        }
        let mut changed = DeviceLists::new();
        changed.changed = request.device_lists.changed.clone();
        changed.left = request.device_lists.left.clone();
        let no_counts = BTreeMap::new();
        let changes = EncryptionSyncChanges {
            to_device_events: to_device,
            changed_devices: &changed,
            one_time_keys_counts: if counts_changed {
                counts.as_ref().unwrap_or(&no_counts)
            } else {
                &no_counts
            },
            unused_fallback_keys: if counts_changed {
                fallback.as_deref()
            } else {
                None
            },
            next_batch_token: None,
        };
        let (_, room_keys) = inner
            .machine
            .receive_sync_changes(changes, &decryption_settings())
            .await
            .map_err(|e| match e {
                matrix_sdk_crypto::OlmError::Store(e) => Error::Store(e),
                other => Error::Olm(other.to_string()),
            })?;
        if !room_keys.is_empty() {
            tracing::debug!(room_keys = room_keys.len(), "room keys received");
            inner.keys.send_modify(|n| *n += 1);
        }
        inner.pump_wake.notify_one();
        Ok(())
    }

    /// A warning for the operator when transactions do not carry the MSC3202 fields the
    /// bot's encryption needs; given once.
    pub fn extension_warning(&self) -> Option<String> {
        let inner = &self.inner;
        let seen = inner.transactions.load(Ordering::Relaxed);
        if seen < TRANSACTIONS_BEFORE_WARNING || inner.with_extensions.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if inner.warned_extensions.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "⚠️ End-to-end encryption is on, but the homeserver's transactions carry no device \
             lists or one-time-key counts ({seen} transactions so far), so the bot cannot read \
             encrypted rooms. Add to Synapse's homeserver.yaml:\n\n```yaml\nexperimental_features:\n  \
             msc2409_to_device_messages_enabled: true\n  msc3202_transaction_extensions: true\n```\n\n\
             and `receive_ephemeral: true` and `org.matrix.msc3202: true` to the registration \
             (`st2-matrix check-config` says which are missing), then restart Synapse."
        ))
    }

    /// Keeps the room directory current from a pushed event: membership, encryption and
    /// history visibility of rooms. Memory only, so cheap enough for the transaction handler.
    pub fn observe(&self, event: &AnyTimelineEvent) {
        let AnyTimelineEvent::State(state) = event else {
            return;
        };
        let mut rooms = lock(&self.inner.rooms);
        match state {
            AnyStateEvent::RoomEncryption(StateEvent::Original(e)) => {
                rooms.plain.remove(&e.room_id);
                rooms
                    .encrypted
                    .entry(e.room_id.clone())
                    .or_default()
                    .settings = Some(e.content.clone());
            }
            AnyStateEvent::RoomHistoryVisibility(StateEvent::Original(e)) => {
                if let Some(room) = rooms.encrypted.get_mut(&e.room_id) {
                    room.history_visibility = Some(e.content.history_visibility.clone());
                    room.shared = None;
                }
            }
            AnyStateEvent::RoomMember(StateEvent::Original(e)) => {
                if let Some(room) = rooms.encrypted.get_mut(&e.room_id) {
                    room.shared = None;
                }
                if let Some(members) = rooms
                    .encrypted
                    .get_mut(&e.room_id)
                    .and_then(|room| room.members.as_mut())
                {
                    let user: OwnedUserId = e.state_key.clone();
                    match e.content.membership {
                        MembershipState::Join | MembershipState::Invite => {
                            members.insert(user);
                        }
                        _ => {
                            members.remove(&user);
                        }
                    }
                }
                if e.state_key == self.inner.bot
                    && matches!(
                        e.content.membership,
                        MembershipState::Leave | MembershipState::Ban
                    )
                {
                    // Left: nothing is sent there any more; a new join starts afresh.
                    if let Some(room) = rooms.encrypted.get_mut(&e.room_id) {
                        room.members = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// Records rooms known from the database: `encrypted` ones and the others (`plain`).
    pub fn load_rooms(&self, encrypted: Vec<String>, plain: Vec<String>) {
        let mut rooms = lock(&self.inner.rooms);
        for id in encrypted {
            if let Ok(id) = RoomId::parse(id) {
                rooms.encrypted.entry(id).or_default();
            }
        }
        for id in plain {
            if let Ok(id) = RoomId::parse(id)
                && !rooms.encrypted.contains_key(&id)
            {
                rooms.plain.insert(id);
            }
        }
    }

    /// Records that `room` is encrypted (the bot created it encrypted, or saw it switch on), in
    /// the database and here.
    pub async fn record_encrypted(&self, store: &Store, room: &RoomId) -> Result<(), sqlx::Error> {
        let mut conn = store.pool().acquire().await?;
        store::rooms::set_encrypted(&mut conn, room.as_str()).await?;
        self.mark_encrypted(room, None);
        Ok(())
    }

    fn mark_encrypted(&self, room: &RoomId, settings: Option<RoomEncryptionEventContent>) {
        let mut rooms = lock(&self.inner.rooms);
        rooms.plain.remove(room);
        let state = rooms.encrypted.entry(room.to_owned()).or_default();
        if settings.is_some() {
            state.settings = settings;
        }
    }

    /// Asks the homeserver whether `room` is encrypted (and with which settings), and
    /// remembers the answer: for a room just joined, which may have turned encrypted while the
    /// bot was away.
    pub async fn check_room(&self, room: &RoomId) -> Result<bool, matrix::Error> {
        let content = self
            .inner
            .client
            .state_content(room, StateEventType::RoomEncryption)
            .await?;
        match content {
            Some(raw) => {
                self.mark_encrypted(room, serde_json::from_str(raw.get()).ok());
                Ok(true)
            }
            None => {
                let mut rooms = lock(&self.inner.rooms);
                // Encryption cannot be switched off in Matrix: a room once seen encrypted stays
                // so here, whatever one answer says, so nothing is ever sent to it in the clear.
                if rooms.encrypted.contains_key(room) {
                    return Ok(true);
                }
                rooms.plain.insert(room.to_owned());
                Ok(false)
            }
        }
    }

    /// Whether `room` is encrypted, asking the homeserver once for a room never seen.
    pub async fn is_encrypted(&self, room: &RoomId) -> Result<bool, Error> {
        {
            let rooms = lock(&self.inner.rooms);
            if rooms.encrypted.contains_key(room) {
                return Ok(true);
            }
            if rooms.plain.contains(room) {
                return Ok(false);
            }
        }
        Ok(self.check_room(room).await?)
    }

    /// Tries to decrypt the stored encrypted event `json` of `room`.
    pub async fn decrypt(&self, json: &str, room: &RoomId) -> Result<Decrypted, Error> {
        let raw = serde_json::from_str(json).map_err(|e| Error::Olm(e.to_string()))?;
        match self
            .inner
            .machine
            .try_decrypt_room_event(&raw, room, &decryption_settings())
            .await
        {
            Ok(RoomEventDecryptionResult::Decrypted(event)) => Ok(Decrypted::Event(event.event)),
            Ok(RoomEventDecryptionResult::UnableToDecrypt(info)) => {
                if info.reason.is_missing_room_key() {
                    Ok(Decrypted::MissingKey {
                        session_id: info.session_id,
                    })
                } else {
                    Ok(Decrypted::Failed {
                        session_id: info.session_id,
                        reason: describe(&info.reason),
                    })
                }
            }
            Err(e) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("st2_matrix_e2ee_errors_total").increment(1);
                Err(Error::Store(e))
            }
        }
    }

    /// A receiver that changes whenever room keys arrive.
    pub fn key_updates(&self) -> watch::Receiver<u64> {
        self.inner.keys.subscribe()
    }

    /// Counts an event given up on, and says whether its sender should be told: once per
    /// room, sender and session (a flood of messages in one session gets one notice).
    pub fn give_up(&self, room: &RoomId, sender: &ruma::UserId, session_id: Option<&str>) -> bool {
        self.inner.undecryptable.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("st2_matrix_e2ee_undecryptable_total").increment(1);
        lock(&self.inner.told).insert((
            room.to_owned(),
            sender.to_owned(),
            session_id.unwrap_or("").to_owned(),
        ))
    }

    /// Whether no to-device event has reached the bot since start: the likely reason room
    /// keys never arrive is then the homeserver's configuration, not the sender's client.
    pub fn no_to_device_yet(&self) -> bool {
        self.inner.to_device_received.load(Ordering::Relaxed) == 0
    }

    /// Encrypts `content` for `room` when the room is encrypted (`None`: it is not). Shares the
    /// room key with every device of its members first, as needed.
    pub async fn encrypt(
        &self,
        room: &RoomId,
        event_type: &str,
        content: &Raw<AnyMessageLikeEventContent>,
    ) -> Result<Option<Raw<AnyMessageLikeEventContent>>, Error> {
        if !self.is_encrypted(room).await? {
            return Ok(None);
        }
        let result = self.share_and_encrypt(room, event_type, content).await;
        if let Err(e) = &result {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("st2_matrix_e2ee_errors_total").increment(1);
            tracing::warn!(room_id = %room, error.message = %e, "could not encrypt a message");
        }
        result.map(Some)
    }

    async fn share_and_encrypt(
        &self,
        room: &RoomId,
        event_type: &str,
        content: &Raw<AnyMessageLikeEventContent>,
    ) -> Result<Raw<AnyMessageLikeEventContent>, Error> {
        let inner = &self.inner;
        let devices = inner.devices.load(Ordering::Relaxed);
        let usable = lock(&inner.rooms)
            .encrypted
            .get(room)
            .and_then(|state| state.shared)
            .is_some_and(|shared| shared.still_good(devices));
        if !usable {
            self.share(room, devices).await?;
        }
        // matrix-sdk-crypto panics rather than encrypt with a session that expired or was
        // never shared; the bookkeeping above keeps that from happening, and should it ever
        // be wrong, the message is shared for afresh instead of the outbox task dying.
        let attempt = std::panic::AssertUnwindSafe(
            inner
                .machine
                .encrypt_room_event_raw(room, event_type, content),
        );
        let encrypted = match futures_util::FutureExt::catch_unwind(attempt).await {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(room_id = %room, "the room key was not ready to encrypt with; sharing it again");
                self.share(room, devices).await?;
                inner
                    .machine
                    .encrypt_room_event_raw(room, event_type, content)
                    .await
            }
        }
        .map_err(|e| Error::Olm(e.to_string()))?;
        if let Some(shared) = lock(&inner.rooms)
            .encrypted
            .get_mut(room)
            .and_then(|state| state.shared.as_mut())
        {
            shared.remaining = shared.remaining.saturating_sub(1);
        }
        Ok(encrypted.content.cast_unchecked())
    }

    /// Makes sure every device of every member of `room` has its room key (a new one when
    /// the old one must rotate): tracks new members, queries their devices, opens missing Olm
    /// sessions, sends the key. Records the share, made at device generation `devices`.
    async fn share(&self, room: &RoomId, devices: u64) -> Result<(), Error> {
        let inner = &self.inner;
        let (members, settings) = self.room_facts(room).await?;
        let new_users: Vec<OwnedUserId> = {
            let tracked = lock(&inner.tracked);
            members
                .iter()
                .filter(|u| !tracked.contains(*u))
                .cloned()
                .collect()
        };
        if !new_users.is_empty() {
            inner
                .machine
                .update_tracked_users(new_users.iter().map(std::ops::Deref::deref))
                .await?;
            lock(&inner.tracked).extend(new_users);
            self.record_gauges();
        }
        let _share = inner.share.lock().await;
        // Key queries for newly tracked or changed users, so their devices are known.
        self.flush().await?;
        if let Some((id, claim)) = inner
            .machine
            .get_missing_sessions(members.iter().map(std::ops::Deref::deref))
            .await?
        {
            let response = inner.client.send_as_device(claim, &inner.device).await?;
            self.mark_sent(&id, &response).await?;
        }
        let shares = inner
            .machine
            .share_room_key(room, members.iter().map(std::ops::Deref::deref), settings)
            .await
            .map_err(|e| Error::Olm(e.to_string()))?;
        for share in shares {
            let request = send_event_to_device::v3::Request::new_raw(
                share.event_type.clone(),
                share.txn_id.clone(),
                share.messages.clone(),
            );
            match inner.client.send_as_device(request, &inner.device).await {
                Ok(response) => self.mark_sent(&share.txn_id, &response).await?,
                Err(e) => {
                    // Devices that did not get the key must not be taken as having it.
                    let _ = inner.machine.discard_room_key(room).await;
                    if let Some(state) = lock(&inner.rooms).encrypted.get_mut(room) {
                        state.shared = None;
                    }
                    return Err(e.into());
                }
            }
        }
        // How many messages the room key (new or not) has left, read once per share.
        let remaining = match inner
            .machine
            .store()
            .get_outbound_group_session(room)
            .await?
        {
            Some(session) if !session.expired() && !session.invalidated() => {
                let limit = session.settings().rotation_period_msgs.clamp(1, 10_000);
                limit.saturating_sub(u64::from(session.message_index().await))
            }
            _ => 0,
        };
        if let Some(state) = lock(&inner.rooms).encrypted.get_mut(room) {
            state.shared = Some(Shared {
                devices,
                at: std::time::Instant::now(),
                remaining,
            });
        }
        Ok(())
    }

    /// The members of `room` (fetched once) and the settings its room key is made with.
    async fn room_facts(
        &self,
        room: &RoomId,
    ) -> Result<(BTreeSet<OwnedUserId>, EncryptionSettings), Error> {
        let known = {
            let rooms = lock(&self.inner.rooms);
            rooms.encrypted.get(room).map(|state| {
                (
                    state.members.clone(),
                    state.settings.clone(),
                    state.history_visibility.clone(),
                )
            })
        };
        let (members, settings, visibility) = known.unwrap_or_default();
        let client = &self.inner.client;
        let members = match members {
            Some(members) => members,
            None => {
                let fetched: BTreeSet<OwnedUserId> =
                    client.room_members(room).await?.into_iter().collect();
                if let Some(state) = lock(&self.inner.rooms).encrypted.get_mut(room) {
                    state.members = Some(fetched.clone());
                }
                fetched
            }
        };
        let settings = match settings {
            Some(settings) => settings,
            None => {
                let content = client
                    .state_content(room, StateEventType::RoomEncryption)
                    .await?
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
                    .unwrap_or_else(RoomEncryptionEventContent::with_recommended_defaults);
                if let Some(state) = lock(&self.inner.rooms).encrypted.get_mut(room) {
                    state.settings = Some(content.clone());
                }
                content
            }
        };
        let visibility = match visibility {
            Some(visibility) => visibility,
            None => {
                let visibility = client
                    .state_content(room, StateEventType::RoomHistoryVisibility)
                    .await?
                    .and_then(|raw| {
                        serde_json::from_str::<RoomHistoryVisibilityEventContent>(raw.get()).ok()
                    })
                    .map_or(HistoryVisibility::Shared, |c| c.history_visibility);
                if let Some(state) = lock(&self.inner.rooms).encrypted.get_mut(room) {
                    state.history_visibility = Some(visibility.clone());
                }
                visibility
            }
        };
        Ok((
            members,
            EncryptionSettings::new(settings, visibility, CollectStrategy::AllDevices),
        ))
    }

    /// Sends every request the machine has queued (key uploads, key queries, to-device
    /// messages) and hands each response back, until none is left.
    pub async fn flush(&self) -> Result<(), Error> {
        let _pump = self.inner.pump.lock().await;
        // A bound, in case a request keeps coming back: the next wake-up resumes.
        for _ in 0..16 {
            let requests = self.inner.machine.outgoing_requests().await?;
            if requests.is_empty() {
                return Ok(());
            }
            for request in &requests {
                self.send_request(request).await?;
            }
        }
        Ok(())
    }

    async fn send_request(&self, request: &OutgoingRequest) -> Result<(), Error> {
        let inner = &self.inner;
        let (client, device) = (&inner.client, &*inner.device);
        let id = request.request_id();
        match request.request() {
            AnyOutgoingRequest::KeysUpload(upload) => {
                let response = client.send_as_device(upload.clone(), device).await?;
                self.mark_sent(id, &response).await
            }
            AnyOutgoingRequest::KeysQuery(query) => {
                let mut request = get_keys::v3::Request::new();
                request.device_keys = query.device_keys.clone();
                request.timeout = query.timeout;
                let response = client.send_as_device(request, device).await?;
                self.mark_sent(id, &response).await
            }
            AnyOutgoingRequest::KeysClaim(claim) => {
                let response = client.send_as_device(claim.clone(), device).await?;
                self.mark_sent(id, &response).await
            }
            AnyOutgoingRequest::ToDeviceRequest(to_device) => {
                let request = send_event_to_device::v3::Request::new_raw(
                    to_device.event_type.clone(),
                    to_device.txn_id.clone(),
                    to_device.messages.clone(),
                );
                let response = client.send_as_device(request, device).await?;
                self.mark_sent(id, &response).await
            }
            AnyOutgoingRequest::SignatureUpload(signatures) => {
                let response = client.send_as_device(signatures.clone(), device).await?;
                self.mark_sent(id, &response).await
            }
            AnyOutgoingRequest::RoomMessage(message) => {
                let request = send_message_event::v3::Request::new(
                    message.room_id.clone(),
                    message.txn_id.clone(),
                    &*message.content,
                )
                .map_err(|e| Error::Olm(e.to_string()))?;
                let response = client.send_as_device(request, device).await?;
                self.mark_sent(id, &response).await
            }
        }
    }

    async fn mark_sent<'a>(
        &self,
        id: &ruma::TransactionId,
        response: impl Into<AnyIncomingResponse<'a>>,
    ) -> Result<(), Error> {
        self.inner
            .machine
            .mark_request_as_sent(id, response)
            .await
            .map_err(|e| match e {
                matrix_sdk_crypto::OlmError::Store(e) => Error::Store(e),
                other => Error::Olm(other.to_string()),
            })
    }

    /// Sends what the machine queues (after transactions change device lists or key counts)
    /// until `stop`; retries with backoff while the homeserver is away.
    pub async fn run_pump(self, stop: CancellationToken) {
        let mut backoff =
            crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(64));
        loop {
            let wait = match self.flush().await {
                Ok(()) => {
                    backoff.reset();
                    Duration::from_secs(300)
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error.message = %e, failures = backoff.failures(), "sending the device's key requests failed; retrying");
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.inner.pump_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// What `status` and `/metrics` show.
    pub fn status(&self) -> Status {
        let inner = &self.inner;
        let transactions = inner.transactions.load(Ordering::Relaxed);
        let with = inner.with_extensions.load(Ordering::Relaxed);
        Status {
            device_id: inner.device.to_string(),
            cross_signed: inner.cross_signed.load(Ordering::Relaxed),
            tracked_users: lock(&inner.tracked).len(),
            undecryptable: inner.undecryptable.load(Ordering::Relaxed),
            errors: inner.errors.load(Ordering::Relaxed),
            extensions_seen: if with > 0 {
                Some(true)
            } else if transactions >= TRANSACTIONS_BEFORE_WARNING {
                Some(false)
            } else {
                None
            },
            to_device_received: inner.to_device_received.load(Ordering::Relaxed),
        }
    }
}

impl RoomEncryptor for Encryption {
    fn encrypt<'a>(
        &'a self,
        room: &'a RoomId,
        event_type: &'a str,
        content: &'a Raw<AnyMessageLikeEventContent>,
    ) -> BoxFuture<'a, Result<Option<Raw<AnyMessageLikeEventContent>>, matrix::Error>> {
        Box::pin(async move {
            Encryption::encrypt(self, room, event_type, content)
                .await
                .map_err(|e| match e {
                    Error::Matrix(e) => e,
                    other => matrix::Error::Encryption(other.to_string()),
                })
        })
    }

    fn is_encrypted<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<bool, matrix::Error>> {
        Box::pin(async move {
            Encryption::is_encrypted(self, room)
                .await
                .map_err(|e| match e {
                    Error::Matrix(e) => e,
                    other => matrix::Error::Encryption(other.to_string()),
                })
        })
    }
}

/// Why an event cannot be decrypted, in words its sender can act on.
fn describe(reason: &UnableToDecryptReason) -> String {
    match reason {
        UnableToDecryptReason::MissingMegolmSession {
            withheld_code: Some(code),
        } => format!("the sending device withheld its key from me: {code}"),
        UnableToDecryptReason::MissingMegolmSession {
            withheld_code: None,
        } => "its room key did not arrive".into(),
        UnableToDecryptReason::UnknownMegolmMessageIndex => {
            "the room key I have does not reach back to it".into()
        }
        UnableToDecryptReason::MalformedEncryptedEvent
        | UnableToDecryptReason::PayloadDeserializationFailure => "it is malformed".into(),
        UnableToDecryptReason::MegolmDecryptionFailure => {
            "it does not decrypt with its room key".into()
        }
        UnableToDecryptReason::MismatchedIdentityKeys => {
            "its room key came from a device that does not match its sender".into()
        }
        UnableToDecryptReason::SenderIdentityNotTrusted(_) => "its sender is not trusted".into(),
        _ => "of an unknown decryption error".into(),
    }
}

/// Decrypt from any device: people's devices are rarely cross-signed for the bot to check.
fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}

/// A fresh device id: `ST2M` and 8 random capitals, in the style clients use.
fn new_device_id() -> String {
    let mut rng = rand::rng();
    let mut id = String::from("ST2M");
    for _ in 0..8 {
        id.push(char::from(b'A' + rng.random_range(0..26u8)));
    }
    id
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decryption_failures_are_told_in_words() {
        assert_eq!(
            describe(&UnableToDecryptReason::MissingMegolmSession {
                withheld_code: None
            }),
            "its room key did not arrive"
        );
        let withheld = describe(&UnableToDecryptReason::MissingMegolmSession {
            withheld_code: Some(
                matrix_sdk_common::deserialized_responses::WithheldCode::Unverified,
            ),
        });
        assert!(
            withheld.contains("withheld") && withheld.contains("unverified devices"),
            "{withheld}"
        );
    }

    #[test]
    fn a_share_is_reused_until_devices_change_it_is_old_or_its_key_is_used_up() {
        let shared = Shared {
            devices: 3,
            at: std::time::Instant::now(),
            remaining: 1,
        };
        assert!(shared.still_good(3));
        assert!(!shared.still_good(4), "devices changed");
        let old = Shared {
            at: std::time::Instant::now() - SHARE_CHECK_EVERY,
            ..shared
        };
        assert!(!old.still_good(3), "checked again after a while");
        let used_up = Shared {
            remaining: 0,
            ..shared
        };
        assert!(!used_up.still_good(3), "the room key must rotate");
    }

    #[test]
    fn device_ids_look_like_client_device_ids() {
        let id = new_device_id();
        assert_eq!(id.len(), 12);
        assert!(id.starts_with("ST2M"));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_ne!(id, new_device_id());
    }
}
