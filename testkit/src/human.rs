//! A person's device: matrix-sdk-crypto's [`OlmMachine`] (the crypto core of Element X and
//! matrix-rust-sdk clients) with an in-memory store, talking to the [homeserver double]'s state
//! the way a client talks to Synapse, but without HTTP (the double only accepts the as_token).
//!
//! It makes the traffic a real client makes: its device and one-time keys uploaded, the bot's
//! keys queried and claimed, Olm-encrypted `m.room_key` to-device messages for the bot's device
//! (stored in the double, pushed to the bridge by
//! [`HomeserverDouble::appservice_transaction`]), Megolm-encrypted `m.room.encrypted` timeline
//! events, and it decrypts what the bot sends after reading its own to-device messages, as
//! `/sync` would hand them over.
//!
//! ```no_run
//! # async fn demo() {
//! use st2_matrix_testkit::{homeserver::HomeserverDouble, human::HumanDevice};
//! let hs = HomeserverDouble::start("as-token", "@st2bot:example.org").await;
//! let alice = HumanDevice::new(&hs, "@alice:example.org", "ALICEDEV").await;
//! alice
//!     .share_room_key("!room:example.org", &["@alice:example.org", "@st2bot:example.org"])
//!     .await;
//! let event = alice.encrypted_text("!room:example.org", "$cmd", "!st2 ping").await;
//! let body = hs.appservice_transaction(vec![event]);
//! // … push `body` to the bridge, wait for its answer `sent` …
//! # let sent = hs.sent().remove(0);
//! let plain = alice.decrypt(&sent).await.unwrap();
//! # }
//! ```
//!
//! [homeserver double]: crate::homeserver::HomeserverDouble

use std::{collections::BTreeMap, sync::Arc};

use axum::http;
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement,
    types::{
        events::room::encrypted::EncryptedEvent,
        requests::{AnyOutgoingRequest, OutgoingRequest},
    },
};
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, RoomId, UInt, UserId,
    api::{
        IncomingResponse,
        client::{
            keys::{claim_keys, get_keys, upload_keys, upload_signatures},
            sync::sync_events::DeviceLists,
            to_device::send_event_to_device,
        },
    },
    events::{AnyMessageLikeEventContent, AnyToDeviceEvent},
    serde::Raw,
};
use serde_json::{Value, json};

use crate::homeserver::{HomeserverDouble, Sent, Shared};

/// One device of a person, with its own Olm account and sessions (memory only).
pub struct HumanDevice {
    machine: OlmMachine,
    shared: Arc<Shared>,
    user: OwnedUserId,
    device: OwnedDeviceId,
}

impl std::fmt::Debug for HumanDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HumanDevice")
            .field("user", &self.user)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// A response body of the double turned into the ruma response a client would parse from
/// Synapse's HTTP answer (same parser, same checks).
fn response<R: IncomingResponse>(body: &Value) -> R {
    let http = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("JSON"))
        .expect("a response");
    R::try_from_http_response(http)
        .unwrap_or_else(|e| panic!("the double's answer does not parse as a client's would: {e}"))
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("serializable")
}

/// Lets a person's device read everything: people's devices are rarely cross-signed for each
/// other, and the bot's trust is not what these tests are about.
fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}

impl HumanDevice {
    /// Logs in `device` of `user` on the double (the device is created as a login creates it)
    /// and uploads its device keys and one-time keys, as a client does on its first sync.
    pub async fn new(hs: &HomeserverDouble, user: &str, device: &str) -> HumanDevice {
        let user: OwnedUserId = user.try_into().expect("a user id");
        let device: OwnedDeviceId = device.into();
        hs.register_device(user.as_str(), device.as_str(), Some("Test client"));
        let machine = OlmMachine::new(&user, &device).await;
        let human = HumanDevice {
            machine,
            shared: hs.shared(),
            user,
            device,
        };
        human.flush().await;
        human
    }

    /// The user this device belongs to.
    pub fn user_id(&self) -> &UserId {
        &self.user
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        self.device.as_str()
    }

    /// This device's Curve25519 identity key (base64): the `sender_key` of what it encrypts.
    pub fn curve25519_key(&self) -> String {
        self.machine.identity_keys().curve25519.to_base64()
    }

    /// The crypto machine itself, for what the helpers here do not cover.
    pub fn machine(&self) -> &OlmMachine {
        &self.machine
    }

    /// Sends every request the machine has queued to the double and hands the answers back,
    /// until nothing is left (a client's request loop).
    pub async fn flush(&self) {
        for _ in 0..16 {
            let requests = self
                .machine
                .outgoing_requests()
                .await
                .expect("memory store");
            if requests.is_empty() {
                return;
            }
            for request in &requests {
                self.send(request).await;
            }
        }
        panic!("{} keeps queueing requests", self.device);
    }

    async fn send(&self, request: &OutgoingRequest) {
        let id = request.request_id();
        let (user, device) = (self.user.as_str(), self.device.as_str());
        let mark = |result: Result<(), matrix_sdk_crypto::OlmError>| {
            result.unwrap_or_else(|e| panic!("{device} rejected the double's answer: {e}"));
        };
        match request.request() {
            AnyOutgoingRequest::KeysUpload(upload) => {
                let body = json!({
                    "device_keys": upload.device_keys.as_ref().map(to_json),
                    "one_time_keys": to_json(&upload.one_time_keys),
                    "fallback_keys": to_json(&upload.fallback_keys),
                });
                let answer = self
                    .shared
                    .lock()
                    .upload_keys(user, device, &body)
                    .unwrap_or_else(|(_, code, message)| panic!("keys/upload: {code} {message}"));
                let answer: upload_keys::v3::Response = response(&answer);
                mark(self.machine.mark_request_as_sent(id, &answer).await);
            }
            AnyOutgoingRequest::KeysQuery(query) => {
                let body = json!({"device_keys": to_json(&query.device_keys)});
                let answer = self.shared.lock().query_keys(user, &body);
                let answer: get_keys::v3::Response = response(&answer);
                mark(self.machine.mark_request_as_sent(id, &answer).await);
            }
            AnyOutgoingRequest::KeysClaim(claim) => {
                let body = json!({"one_time_keys": to_json(&claim.one_time_keys)});
                let answer = self.shared.lock().claim_keys(&body);
                let answer: claim_keys::v3::Response = response(&answer);
                mark(self.machine.mark_request_as_sent(id, &answer).await);
            }
            AnyOutgoingRequest::ToDeviceRequest(to_device) => {
                let body = json!({"messages": to_json(&to_device.messages)});
                self.shared.lock().send_to_device(
                    user,
                    Some(device),
                    &to_device.event_type.to_string(),
                    to_device.txn_id.as_str(),
                    &body,
                );
                let answer: send_event_to_device::v3::Response = response(&json!({}));
                mark(self.machine.mark_request_as_sent(id, &answer).await);
            }
            AnyOutgoingRequest::SignatureUpload(signatures) => {
                let body = to_json(&signatures.signed_keys);
                let answer = self.shared.lock().upload_signatures(&body);
                let answer: upload_signatures::v3::Response = response(&answer);
                mark(self.machine.mark_request_as_sent(id, &answer).await);
            }
            AnyOutgoingRequest::RoomMessage(_) => {
                panic!("{device} wants to send a room message (verification): not supported")
            }
        }
    }

    /// Reads this device's to-device messages from the double (what `/sync` would carry, once
    /// each), with its one-time-key counts, and answers what the machine then wants sent.
    pub async fn sync(&self) {
        let (messages, counts, fallback) = {
            let mut inner = self.shared.lock();
            let (user, device) = (self.user.as_str(), self.device.as_str());
            let messages =
                inner.take_to_device(|m| m.recipient == user && m.recipient_device == device);
            (
                messages,
                inner.one_time_key_counts(user, device),
                inner.unused_fallback_key_types(user, device),
            )
        };
        let events: Vec<Raw<AnyToDeviceEvent>> = messages
            .iter()
            .map(|m| Raw::from_json(serde_json::value::to_raw_value(&m.event()).expect("JSON")))
            .collect();
        let counts: BTreeMap<OneTimeKeyAlgorithm, UInt> =
            serde_json::from_value(counts).expect("counts");
        let fallback: Vec<OneTimeKeyAlgorithm> =
            serde_json::from_value(json!(fallback)).expect("algorithms");
        let changes = EncryptionSyncChanges {
            to_device_events: events,
            changed_devices: &DeviceLists::new(),
            one_time_keys_counts: &counts,
            unused_fallback_keys: Some(&fallback),
            next_batch_token: None,
        };
        self.machine
            .receive_sync_changes(changes, &decryption_settings())
            .await
            .unwrap_or_else(|e| {
                panic!("{} could not read its to-device messages: {e}", self.device)
            });
        self.flush().await;
    }

    /// Shares this device's room key for `room` with every device of `members`, as a client
    /// does before it sends there: it tracks their devices, queries their keys, claims one-time
    /// keys for Olm sessions it lacks, and stores the Olm-encrypted `m.room_key` to-device
    /// messages in the double. The `session_id` of what it then encrypts names the session.
    pub async fn share_room_key(&self, room: &str, members: &[&str]) {
        let room = RoomId::parse(room).expect("a room id");
        let members: Vec<OwnedUserId> = members
            .iter()
            .map(|u| (*u).try_into().expect("a user id"))
            .collect();
        self.machine
            .update_tracked_users(members.iter().map(|u| &**u))
            .await
            .expect("memory store");
        self.flush().await;
        if let Some((id, claim)) = self
            .machine
            .get_missing_sessions(members.iter().map(|u| &**u))
            .await
            .expect("memory store")
        {
            let body = json!({"one_time_keys": to_json(&claim.one_time_keys)});
            let answer = self.shared.lock().claim_keys(&body);
            let answer: claim_keys::v3::Response = response(&answer);
            self.machine
                .mark_request_as_sent(&id, &answer)
                .await
                .expect("claimed keys accepted");
        }
        let shares = self
            .machine
            .share_room_key(
                &room,
                members.iter().map(|u| &**u),
                EncryptionSettings::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{} could not share its room key: {e}", self.device));
        for share in shares {
            let body = json!({"messages": to_json(&share.messages)});
            self.shared.lock().send_to_device(
                self.user.as_str(),
                Some(self.device.as_str()),
                &share.event_type.to_string(),
                share.txn_id.as_str(),
                &body,
            );
            let answer: send_event_to_device::v3::Response = response(&json!({}));
            self.machine
                .mark_request_as_sent(&share.txn_id, &answer)
                .await
                .expect("to-device answer accepted");
        }
    }

    /// `content` of `event_type` encrypted for `room` (after [`Self::share_room_key`]), as the
    /// `m.room.encrypted` timeline event Synapse pushes to the appservice: `event_id`, this
    /// device's user as `sender`, the time now.
    pub async fn encrypted_event(
        &self,
        room: &str,
        event_id: &str,
        event_type: &str,
        content: Value,
    ) -> Value {
        let room_id = RoomId::parse(room).expect("a room id");
        let content: Raw<AnyMessageLikeEventContent> =
            Raw::new(&content).expect("JSON").cast_unchecked();
        let encrypted = self
            .machine
            .encrypt_room_event_raw(&room_id, event_type, &content)
            .await
            .unwrap_or_else(|e| panic!("{} could not encrypt: {e}", self.device));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        json!({
            "type": "m.room.encrypted", "room_id": room, "sender": self.user, "event_id": event_id,
            "origin_server_ts": now, "unsigned": {"age": 10}, "content": to_json(&encrypted.content),
        })
    }

    /// An encrypted `m.text` message: see [`Self::encrypted_event`].
    pub async fn encrypted_text(&self, room: &str, event_id: &str, body: &str) -> Value {
        self.encrypted_event(
            room,
            event_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": body}),
        )
        .await
    }

    /// Decrypts a message the bot sent (an `m.room.encrypted` the double recorded), after
    /// reading this device's to-device messages (the bot's room keys): the plain event
    /// (`type`, `content`, …), or why it cannot be read.
    pub async fn decrypt(&self, sent: &Sent) -> Result<Value, String> {
        if sent.event_type != "m.room.encrypted" {
            return Err(format!("not encrypted: {}", sent.event_type));
        }
        self.sync().await;
        let sender = sent
            .user_id
            .clone()
            .unwrap_or_else(|| self.shared.bot.clone());
        let event = json!({
            "type": "m.room.encrypted", "room_id": sent.room_id, "sender": sender,
            "event_id": sent.event_id, "origin_server_ts": 1_700_000_000_000_u64,
            "content": sent.content,
        });
        let raw: Raw<EncryptedEvent> =
            Raw::from_json(serde_json::value::to_raw_value(&event).expect("JSON"));
        let room = RoomId::parse(&sent.room_id).map_err(|e| e.to_string())?;
        let decrypted = self
            .machine
            .decrypt_room_event(&raw, &room, &decryption_settings())
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str(decrypted.event.json().get()).map_err(|e| e.to_string())
    }
}
