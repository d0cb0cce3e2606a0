//! A second device of a user whose encryption a test drives by hand, so the test decides when
//! (or whether) the room keys of what it sends go out.
//!
//! Element, like the user's matrix-sdk client, always shares a room key before it sends the
//! first message encrypted with it, so the bridge normally has the key first. Keys can still
//! arrive late in real life (a slow to-device queue, a device that shares late), and a bridge
//! must cope. matrix-sdk does not let its caller hold a key back, so this device runs
//! matrix-sdk-crypto's `OlmMachine` itself, the way a client built on it does: it uploads its
//! keys, queries the recipients' devices, claims their one-time keys, makes the room key and
//! its to-device messages, encrypts a message, and sends each request when the test says so.
//! Every request is a real one to Synapse, so the bridge gets the event and the key exactly as
//! it would from any client: by its transactions.
//!
//! It also shows a test the room keys it holds, its own and those sent to it, unsealed (for
//! checking that none shows up where it must not), which the users' matrix-sdk clients only
//! export sealed with a passphrase.
//!
//! Its HTTP goes through a matrix-sdk `Client` logged in as the device that never syncs: only
//! its access token is used. (matrix-sdk's own crypto for that device stays idle: it uploads
//! keys only from a sync, so the keys Synapse knows for the device are this machine's.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use matrix_sdk::Client;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::keys::get_keys;
use matrix_sdk::ruma::api::client::message::send_message_event;
use matrix_sdk::ruma::api::client::sync::sync_events;
use matrix_sdk::ruma::api::client::to_device::send_event_to_device;
use matrix_sdk::ruma::events::AnyMessageLikeEventContent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedEventId, RoomId, TransactionId, UserId};
use matrix_sdk_crypto::types::requests::{AnyOutgoingRequest, ToDeviceRequest};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement,
};
use serde_json::json;

use super::user::{User, random_lowercase};

/// A device of a user, with end-to-end keys Synapse knows, whose room keys go out only when
/// the test releases them.
pub struct ManualDevice {
    client: Client,
    machine: OlmMachine,
    /// Where the last `/sync` of [`ManualDevice::receive_to_device`] ended.
    since: Mutex<Option<String>>,
}

/// The to-device messages carrying a room key to its recipients' devices, not sent yet.
#[must_use = "a held room key reaches nobody until it is released"]
pub struct HeldRoomKey {
    requests: Vec<Arc<ToDeviceRequest>>,
}

impl ManualDevice {
    /// Logs in as a new device of `user` and uploads its device keys and one-time keys. From
    /// then on Synapse lists it among `user`'s devices (and tells the bridge the list changed).
    pub async fn login(user: &User) -> anyhow::Result<ManualDevice> {
        let (homeserver_url, password) = user.credentials();
        // Upper case like the device ids Synapse makes, and recognisable in a log.
        let device_id: OwnedDeviceId =
            format!("E2EMANUAL{}", random_lowercase(6).to_uppercase()).into();
        let client = Client::builder()
            .homeserver_url(homeserver_url)
            .build()
            .await
            .context("building the second device's client")?;
        client
            .matrix_auth()
            .login_username(user.user_id(), password)
            .device_id(device_id.as_str())
            .initial_device_display_name("st2-matrix e2e, keys by hand")
            .await
            .with_context(|| format!("logging in {} as device {device_id}", user.user_id()))?;
        let machine = OlmMachine::new(user.user_id(), &device_id).await;
        let device = ManualDevice {
            client,
            machine,
            since: Mutex::new(None),
        };
        device.send_outgoing_requests().await?;
        Ok(device)
    }

    /// Makes a new room key (megolm session) for `room` and its to-device messages for every
    /// device of `recipients` (Olm sessions are set up with them first), and holds them back.
    /// An empty `recipients` makes a key nobody else ever gets.
    #[expect(
        clippy::unnecessary_to_owned,
        reason = "the borrowing `iter().copied()` it suggests makes the tests' futures not `Send`"
    )]
    pub async fn new_room_key(
        &self,
        room: &RoomId,
        recipients: &[&UserId],
    ) -> anyhow::Result<HeldRoomKey> {
        // `to_vec()` rather than `iter().copied()` throughout: with a borrowing iterator
        // adapter in them, rustc cannot prove the tests' futures `Send` ("implementation of
        // `Copy` is not general enough").
        self.machine
            .update_tracked_users(recipients.to_vec())
            .await?;
        // The key query the line above queued, so the recipients' devices are known.
        self.send_outgoing_requests().await?;
        if let Some((request_id, claim)) = self
            .machine
            .get_missing_sessions(recipients.to_vec().into_iter())
            .await?
        {
            let response = self
                .client
                .send(claim)
                .await
                .context("claiming one-time keys")?;
            self.machine
                .mark_request_as_sent(&request_id, &response)
                .await?;
        }
        // A key of its own, even if this device already has one for the room.
        self.machine.discard_room_key(room).await?;
        let requests = self
            .machine
            .share_room_key(
                room,
                recipients.to_vec().into_iter(),
                EncryptionSettings::default(),
            )
            .await
            .context("making a room key")?;
        Ok(HeldRoomKey { requests })
    }

    /// Sends `body` as an `m.text` message into `room`, encrypted with the room's current key
    /// (from [`new_room_key`](ManualDevice::new_room_key)), whether or not that key was
    /// released. Returns the event id and the key's session id.
    pub async fn send_text(
        &self,
        room: &RoomId,
        body: &str,
    ) -> anyhow::Result<(OwnedEventId, String)> {
        let content: Raw<AnyMessageLikeEventContent> =
            Raw::new(&json!({ "msgtype": "m.text", "body": body }))?.cast_unchecked();
        let encrypted = self
            .machine
            .encrypt_room_event_raw(room, "m.room.message", &content)
            .await
            .context("encrypting a message")?;
        let session_id = encrypted
            .encryption_info
            .session_id()
            .context("a megolm-encrypted message names its session")?
            .to_owned();
        let request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            TransactionId::new(),
            "m.room.encrypted".into(),
            encrypted.content.cast_unchecked(),
        );
        let response = self
            .client
            .send(request)
            .await
            .context("sending an encrypted message")?;
        Ok((response.event_id, session_id))
    }

    /// Sends the held to-device messages: the recipients' devices get the room key now.
    pub async fn release(&self, key: HeldRoomKey) -> anyhow::Result<()> {
        for request in key.requests {
            self.send_to_device(&request).await?;
        }
        Ok(())
    }

    /// Fetches what was sent to this device since the last call (one `/sync` that returns at
    /// once, without rooms) and hands it to the machine: room keys shared with the device are
    /// stored, device list changes noted.
    pub async fn receive_to_device(&self) -> anyhow::Result<()> {
        let mut filter = FilterDefinition::default();
        filter.room.rooms = Some(Vec::new());
        let mut request = sync_events::v3::Request::new();
        request.filter = Some(sync_events::v3::Filter::FilterDefinition(filter));
        request.since = self.since.lock().expect("since lock").clone();
        request.timeout = Some(Duration::ZERO);
        let response = self
            .client
            .send(request)
            .await
            .context("syncing the second device")?;
        let changes = EncryptionSyncChanges {
            to_device_events: response.to_device.events,
            changed_devices: &response.device_lists,
            one_time_keys_counts: &response.device_one_time_keys_count,
            unused_fallback_keys: response.device_unused_fallback_key_types.as_deref(),
            next_batch_token: Some(response.next_batch.clone()),
        };
        // Keys from devices nobody verified are what a test deals in (the bot's included).
        let settings = DecryptionSettings {
            sender_device_trust_requirement: TrustRequirement::Untrusted,
        };
        self.machine
            .receive_sync_changes(changes, &settings)
            .await
            .context("taking in the second device's to-device messages")?;
        *self.since.lock().expect("since lock") = Some(response.next_batch);
        self.send_outgoing_requests().await
    }

    /// The megolm room keys this device holds for `room` (its own, and those shared with it
    /// that [`receive_to_device`](ManualDevice::receive_to_device) took in), as
    /// `(session_id, session key)`, the key in base64 as a key export holds it.
    pub async fn room_keys(&self, room: &RoomId) -> anyhow::Result<Vec<(String, String)>> {
        let keys = self
            .machine
            .store()
            .export_room_keys(|session| session.room_id() == room)
            .await
            .context("exporting room keys")?;
        Ok(keys
            .into_iter()
            .map(|key| (key.session_id, key.session_key.to_base64()))
            .collect())
    }

    /// Sends what the machine has queued (its keys, key queries) and tells it the outcome.
    async fn send_outgoing_requests(&self) -> anyhow::Result<()> {
        for outgoing in self.machine.outgoing_requests().await? {
            let id = outgoing.request_id();
            match outgoing.request() {
                AnyOutgoingRequest::KeysUpload(request) => {
                    let response = self
                        .client
                        .send(request.clone())
                        .await
                        .context("uploading the device's keys")?;
                    self.machine.mark_request_as_sent(id, &response).await?;
                }
                AnyOutgoingRequest::KeysQuery(request) => {
                    let mut query = get_keys::v3::Request::new();
                    query.device_keys = request.device_keys.clone();
                    let response = self
                        .client
                        .send(query)
                        .await
                        .context("querying device keys")?;
                    self.machine.mark_request_as_sent(id, &response).await?;
                }
                AnyOutgoingRequest::ToDeviceRequest(request) => {
                    self.send_to_device(request).await?;
                }
                // Verification and key-claim requests: this device does not verify anyone, and
                // claims one-time keys itself in `new_room_key`.
                _ => {}
            }
        }
        Ok(())
    }

    async fn send_to_device(&self, request: &ToDeviceRequest) -> anyhow::Result<()> {
        let send = send_event_to_device::v3::Request::new_raw(
            request.event_type.clone(),
            request.txn_id.clone(),
            request.messages.clone(),
        );
        let response = self
            .client
            .send(send)
            .await
            .context("sending to-device messages")?;
        self.machine
            .mark_request_as_sent(&request.txn_id, &response)
            .await?;
        Ok(())
    }
}
