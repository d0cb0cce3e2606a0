//! A homeserver double: the client-server endpoints st2-matrix calls, answering as Synapse
//! does, recording every request, with failure injection.
//!
//! ```no_run
//! # async fn demo() {
//! use st2_matrix_testkit::homeserver::{Failure, HomeserverDouble};
//! let hs = HomeserverDouble::start("as-token", "@st2bot:example.org").await;
//! hs.fail_next_sends([Failure::RateLimited { retry_after_secs: 1 }, Failure::Status(502)]);
//! // … run the bridge against hs.url() …
//! let sent = hs.sent();
//! # }
//! ```
//!
//! Behaviour copied from Synapse (see `synapse.md`): `/register` answers `M_USER_IN_USE` the
//! second time; a send with a transaction id seen before returns the first event id (the
//! idempotency that makes outbox retries safe); a wrong `as_token` is `401 M_UNKNOWN_TOKEN`;
//! 429s carry both `Retry-After` and `retry_after_ms`.
//!
//! Media uploads (`POST /_matrix/media/v3/upload`, spec 1.1+): the body is the file, its type
//! the `Content-Type` header, `?filename=` optional; the answer is `{"content_uri": "mxc://…"}`.
//! Every upload is kept ([`HomeserverDouble::media_uploads`], [`HomeserverDouble::media`]), and
//! failures can be injected as for sends ([`HomeserverDouble::fail_next_uploads`]).
//!
//! End-to-end encryption as Synapse serves it to an appservice (`e2ee-appservice.md`; checked in
//! Synapse 1.157's `api/auth/base.py`, `rest/client/devices.py`, `handlers/e2e_keys.py`):
//! `?user_id=…&device_id=…` with the as_token acts as that device, and a device that does not
//! exist is `400 ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE`, so the bot's device is created first, by
//! `PUT /devices/{deviceId}` as the appservice without `device_id` (`201` when new, `200`
//! after). The double keeps what devices upload (device keys, one-time and fallback keys,
//! cross-signing keys and signatures), serves `keys/query` and `keys/claim` from it, records
//! to-device messages per recipient device, and builds transactions the way Synapse pushes them
//! with MSC2409/MSC3202 on ([`HomeserverDouble::appservice_transaction`]). People's devices
//! ([`crate::human::HumanDevice`]) use the same state without HTTP.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

/// One message the bridge sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Room id.
    pub room_id: String,
    /// Event type.
    pub event_type: String,
    /// The bridge's transaction id.
    pub txn_id: String,
    /// Event content.
    pub content: Value,
    /// The event id the double assigned.
    pub event_id: String,
    /// `?user_id=` when the bridge acted as a namespaced user.
    pub user_id: Option<String>,
    /// When the double received it (for latency measurements).
    pub received_at: std::time::Instant,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
}

impl Request {
    /// The decoded value of query parameter `name` (e.g. `user_id`, `device_id`: whom the
    /// appservice acted as).
    pub fn param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref(), name)
    }
}

/// A body the bridge uploaded for encryption, with the identity it acted as.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The user it acted as (`?user_id=`, else the appservice's sender).
    pub user_id: String,
    /// The device it acted as (`?device_id=`), if any.
    pub device_id: Option<String>,
    /// The request body.
    pub body: Value,
}

/// A file uploaded to the media repository.
#[derive(Debug, Clone)]
pub struct MediaUpload {
    /// The `mxc://` URI the double answered with.
    pub content_uri: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// `?filename=`, if given.
    pub filename: Option<String>,
    /// `?user_id=` when the bridge acted as a namespaced user.
    pub user_id: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// One to-device message, as stored for one recipient device.
#[derive(Debug, Clone)]
pub struct ToDevice {
    /// Who sent it.
    pub sender: String,
    /// The sending device, when the sender acted as one.
    pub sender_device: Option<String>,
    /// The recipient user.
    pub recipient: String,
    /// The recipient device (`*` already expanded to each device).
    pub recipient_device: String,
    /// Event type, e.g. `m.room.encrypted`.
    pub event_type: String,
    /// The content for this device.
    pub content: Value,
    /// The sender's transaction id.
    pub txn_id: String,
}

impl ToDevice {
    /// The event as the recipient's `/sync` carries it: `sender`, `type`, `content`.
    pub fn event(&self) -> Value {
        json!({"sender": self.sender, "type": self.event_type, "content": self.content})
    }

    /// The event as Synapse adds it to an appservice transaction (MSC2409/MSC4203): the sync
    /// event plus `to_user_id` and `to_device_id`.
    pub fn appservice_event(&self) -> Value {
        let mut event = self.event();
        event["to_user_id"] = self.recipient.clone().into();
        event["to_device_id"] = self.recipient_device.clone().into();
        event
    }
}

/// A failure to inject into the next send.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// `429 M_LIMIT_EXCEEDED` with `Retry-After` (seconds) and `retry_after_ms`.
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// `429` with only `retry_after_ms` in the body (older servers).
    RateLimitedMs(u64),
    /// Any status with an `M_UNKNOWN` body (e.g. 500, 502, 503).
    Status(u16),
    /// `403 M_FORBIDDEN` (e.g. the bot is not in the room): permanent.
    Forbidden,
    /// The event is stored, but the answer is lost: a gateway in front of the homeserver
    /// answers this status (e.g. 504) instead, as when the homeserver was too slow; and the
    /// homeserver restarts at once, forgetting every transaction id (see
    /// [`HomeserverDouble::forget_transactions`]), so a blind re-send would post it twice.
    StoredButLost(u16),
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    registered: HashSet<String>,
    displaynames: HashMap<String, String>,
    sent: Vec<Sent>,
    txns: HashMap<String, String>,
    joined: Vec<String>,
    left: Vec<(String, Option<String>)>,
    encrypted: HashSet<String>,
    failures: VecDeque<Failure>,
    requests: Vec<Request>,
    pings: u32,
    created: Vec<Value>,
    room_state: HashMap<String, Vec<Value>>,
    aliases: HashMap<String, String>,
    down: bool,
    appservice: Option<(String, String)>,
    next_event: u64,
    /// Room state set explicitly or by `createRoom`'s `initial_state`: (room, type) → content.
    state: HashMap<(String, String), Value>,
    /// Members the double knows, by room: user → membership.
    members: HashMap<String, BTreeMap<String, String>>,
    /// Devices by user, then device id.
    devices: BTreeMap<String, BTreeMap<String, Device>>,
    /// Cross-signing keys by user: `master`, `self_signing`, `user_signing`.
    cross_signing: HashMap<String, BTreeMap<String, Value>>,
    /// Every to-device message stored, with whether it was delivered yet.
    to_device: Vec<(ToDevice, bool)>,
    /// (sender, device, type, txn) already handled: a re-sent request delivers nothing twice.
    to_device_txns: HashSet<(String, Option<String>, String, String)>,
    /// Users whose device lists changed since the last transaction built for the appservice.
    device_list_changes: BTreeSet<String>,
    key_uploads: Vec<Upload>,
    media: Vec<MediaUpload>,
    upload_failures: VecDeque<Failure>,
    signing_key_uploads: Vec<Upload>,
    signature_uploads: Vec<Upload>,
}

/// What the double stores for one device.
#[derive(Debug, Default, Clone)]
struct Device {
    display_name: Option<String>,
    keys: Option<Value>,
    /// `algorithm:key_id` → signed key; a claim takes the first by id (Synapse promises no
    /// order either).
    one_time_keys: BTreeMap<String, Value>,
    /// algorithm → (`algorithm:key_id`, key, used).
    fallback_keys: BTreeMap<String, (String, Value, bool)>,
}

/// A homeserver error: status, `errcode`, message.
type Refusal = (StatusCode, &'static str, String);

/// Synapse's end-to-end key handling (`handlers/e2e_keys.py`), on the double's state. Shared by
/// the HTTP handlers (the bridge) and [`crate::human::HumanDevice`] (people's clients).
impl Inner {
    /// Creates `device` of `user` (Synapse's `upsert_device`); `true` when it is new.
    pub(crate) fn upsert_device(
        &mut self,
        user: &str,
        device: &str,
        display_name: Option<String>,
    ) -> bool {
        let devices = self.devices.entry(user.to_owned()).or_default();
        let created = !devices.contains_key(device);
        let entry = devices.entry(device.to_owned()).or_default();
        if display_name.is_some() {
            entry.display_name = display_name;
        }
        if created {
            self.device_list_changes.insert(user.to_owned());
        }
        created
    }

    fn has_device(&self, user: &str, device: &str) -> bool {
        self.devices
            .get(user)
            .is_some_and(|devices| devices.contains_key(device))
    }

    /// `POST /keys/upload` as `device` of `user`.
    pub(crate) fn upload_keys(
        &mut self,
        user: &str,
        device: &str,
        body: &Value,
    ) -> Result<Value, Refusal> {
        if let Some(keys) = body.get("device_keys").filter(|k| !k.is_null()) {
            if keys["user_id"] != user {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "M_BAD_JSON",
                    "Provided `user_id` in `device_keys` does not match that of the authenticated user".into(),
                ));
            }
            if keys["device_id"] != device {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "M_BAD_JSON",
                    "Provided `device_id` in `device_keys` does not match that of the authenticated user device".into(),
                ));
            }
        }
        let entry = self
            .devices
            .entry(user.to_owned())
            .or_default()
            .entry(device.to_owned())
            .or_default();
        let mut changed = false;
        if let Some(keys) = body.get("device_keys").filter(|k| !k.is_null()) {
            changed = entry.keys.as_ref() != Some(keys);
            entry.keys = Some(keys.clone());
        }
        if let Some(one_time) = body.get("one_time_keys").and_then(Value::as_object) {
            for (id, key) in one_time {
                match entry.one_time_keys.get(id) {
                    Some(existing) if existing != key => {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            "M_UNKNOWN",
                            format!("One time key {id} already exists."),
                        ));
                    }
                    _ => {
                        entry.one_time_keys.insert(id.clone(), key.clone());
                    }
                }
            }
        }
        if let Some(fallback) = body.get("fallback_keys").and_then(Value::as_object) {
            for (id, key) in fallback {
                let algorithm = id.split(':').next().unwrap_or_default().to_owned();
                entry
                    .fallback_keys
                    .insert(algorithm, (id.clone(), key.clone(), false));
            }
        }
        let counts = one_time_key_counts(entry);
        if changed {
            self.device_list_changes.insert(user.to_owned());
        }
        Ok(json!({"one_time_key_counts": counts}))
    }

    /// `POST /keys/query` by `from_user`: device keys (with the signatures uploaded for them),
    /// master and self-signing keys of everyone asked about, the user-signing key only of the
    /// asker.
    pub(crate) fn query_keys(&self, from_user: &str, body: &Value) -> Value {
        let mut device_keys = serde_json::Map::new();
        let mut master = serde_json::Map::new();
        let mut self_signing = serde_json::Map::new();
        let mut user_signing = serde_json::Map::new();
        let query = body["device_keys"].as_object().cloned().unwrap_or_default();
        for (user, wanted) in query {
            let wanted: Vec<&str> = wanted
                .as_array()
                .map(|ids| ids.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut found = serde_json::Map::new();
            for (id, device) in self.devices.get(&user).into_iter().flatten() {
                if !wanted.is_empty() && !wanted.contains(&id.as_str()) {
                    continue;
                }
                if let Some(keys) = &device.keys {
                    let mut keys = keys.clone();
                    if let Some(name) = &device.display_name {
                        keys["unsigned"] = json!({"device_display_name": name});
                    }
                    found.insert(id.clone(), keys);
                }
            }
            device_keys.insert(user.clone(), Value::Object(found));
            if let Some(keys) = self.cross_signing.get(&user) {
                if let Some(key) = keys.get("master") {
                    master.insert(user.clone(), key.clone());
                }
                if let Some(key) = keys.get("self_signing") {
                    self_signing.insert(user.clone(), key.clone());
                }
                if user == from_user
                    && let Some(key) = keys.get("user_signing")
                {
                    user_signing.insert(user.clone(), key.clone());
                }
            }
        }
        json!({
            "device_keys": device_keys,
            "failures": {},
            "master_keys": master,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
        })
    }

    /// `POST /keys/claim`: one one-time key per device asked for, else its fallback key
    /// (which stays, marked used, as in Synapse).
    pub(crate) fn claim_keys(&mut self, body: &Value) -> Value {
        let mut claimed = serde_json::Map::new();
        let query = body["one_time_keys"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (user, devices) in query {
            let mut for_user = serde_json::Map::new();
            for (device_id, algorithm) in devices.as_object().cloned().unwrap_or_default() {
                let algorithm = algorithm.as_str().unwrap_or_default().to_owned();
                let Some(device) = self
                    .devices
                    .get_mut(&user)
                    .and_then(|devices| devices.get_mut(&device_id))
                else {
                    continue;
                };
                let prefix = format!("{algorithm}:");
                let one_time = device
                    .one_time_keys
                    .keys()
                    .find(|id| id.starts_with(&prefix))
                    .cloned();
                let key = match one_time {
                    Some(id) => device.one_time_keys.remove(&id).map(|key| (id, key)),
                    None => device.fallback_keys.get_mut(&algorithm).map(|fallback| {
                        fallback.2 = true;
                        (fallback.0.clone(), fallback.1.clone())
                    }),
                };
                if let Some((id, key)) = key {
                    for_user.insert(device_id, json!({ id: key }));
                }
            }
            if !for_user.is_empty() {
                claimed.insert(user, Value::Object(for_user));
            }
        }
        json!({"one_time_keys": claimed, "failures": {}})
    }

    /// `POST /keys/device_signing/upload` as `user` (an appservice needs no user-interactive
    /// auth, Synapse ≥ 1.1xx with MSC4190).
    pub(crate) fn upload_signing_keys(&mut self, user: &str, body: &Value) -> Value {
        let keys = self.cross_signing.entry(user.to_owned()).or_default();
        for (field, name) in [
            ("master_key", "master"),
            ("self_signing_key", "self_signing"),
            ("user_signing_key", "user_signing"),
        ] {
            if let Some(key) = body.get(field).filter(|k| k.is_object()) {
                keys.insert(name.to_owned(), key.clone());
            }
        }
        self.device_list_changes.insert(user.to_owned());
        json!({})
    }

    /// `POST /keys/signatures/upload`: each signature is merged into the device keys or the
    /// cross-signing key it signs, so `keys/query` returns it (what Synapse does on read).
    pub(crate) fn upload_signatures(&mut self, body: &Value) -> Value {
        let mut failures = serde_json::Map::new();
        for (user, signed) in body.as_object().cloned().unwrap_or_default() {
            for (key_id, object) in signed.as_object().cloned().unwrap_or_default() {
                let target = match self
                    .devices
                    .get_mut(&user)
                    .and_then(|devices| devices.get_mut(&key_id))
                    .and_then(|device| device.keys.as_mut())
                {
                    Some(keys) => Some(keys),
                    None => self.cross_signing.get_mut(&user).and_then(|keys| {
                        keys.values_mut().find(|key| {
                            key["keys"]
                                .as_object()
                                .is_some_and(|k| k.values().any(|v| v == key_id.as_str()))
                        })
                    }),
                };
                match target {
                    Some(target) => {
                        merge_signatures(target, &object["signatures"]);
                        self.device_list_changes.insert(user.clone());
                    }
                    None => {
                        failures
                            .entry(user.clone())
                            .or_insert_with(|| json!({}))
                            .as_object_mut()
                            .expect("an object")
                            .insert(
                                key_id,
                                json!({"errcode": "M_NOT_FOUND", "error": "No such key"}),
                            );
                    }
                }
            }
        }
        json!({"failures": failures})
    }

    /// `PUT /sendToDevice/{type}/{txn}` from `sender` (acting as `sender_device`): one stored
    /// message per recipient device, `*` meaning each device the recipient has.
    pub(crate) fn send_to_device(
        &mut self,
        sender: &str,
        sender_device: Option<&str>,
        event_type: &str,
        txn_id: &str,
        body: &Value,
    ) {
        let key = (
            sender.to_owned(),
            sender_device.map(str::to_owned),
            event_type.to_owned(),
            txn_id.to_owned(),
        );
        if !self.to_device_txns.insert(key) {
            return;
        }
        for (recipient, devices) in body["messages"].as_object().cloned().unwrap_or_default() {
            for (device, content) in devices.as_object().cloned().unwrap_or_default() {
                let targets: Vec<String> = if device == "*" {
                    self.devices
                        .get(&recipient)
                        .map(|d| d.keys().cloned().collect())
                        .unwrap_or_default()
                } else if self.has_device(&recipient, &device) {
                    vec![device]
                } else {
                    // Synapse drops messages for devices that do not exist.
                    Vec::new()
                };
                for target in targets {
                    self.to_device.push((
                        ToDevice {
                            sender: sender.to_owned(),
                            sender_device: sender_device.map(str::to_owned),
                            recipient: recipient.clone(),
                            recipient_device: target,
                            event_type: event_type.to_owned(),
                            content: content.clone(),
                            txn_id: txn_id.to_owned(),
                        },
                        false,
                    ));
                }
            }
        }
    }

    /// Takes the undelivered to-device messages whose recipient `matches`.
    pub(crate) fn take_to_device(&mut self, matches: impl Fn(&ToDevice) -> bool) -> Vec<ToDevice> {
        let mut taken = Vec::new();
        for (message, delivered) in &mut self.to_device {
            if !*delivered && matches(message) {
                *delivered = true;
                taken.push(message.clone());
            }
        }
        taken
    }

    /// The one-time-key counts of `device` of `user`, as `keys/upload` answers them.
    pub(crate) fn one_time_key_counts(&self, user: &str, device: &str) -> Value {
        self.devices
            .get(user)
            .and_then(|devices| devices.get(device))
            .map_or_else(|| json!({"signed_curve25519": 0}), one_time_key_counts)
    }

    /// The algorithms of `device`'s unused fallback keys.
    pub(crate) fn unused_fallback_key_types(&self, user: &str, device: &str) -> Vec<String> {
        self.devices
            .get(user)
            .and_then(|devices| devices.get(device))
            .map(|device| {
                device
                    .fallback_keys
                    .iter()
                    .filter(|(_, (_, _, used))| !used)
                    .map(|(algorithm, _)| algorithm.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `user` shares a room (joined or invited) with `other`, per the members known.
    fn shares_room(&self, user: &str, other: &str) -> bool {
        let present = |m: &String| m == "join" || m == "invite";
        self.members.values().any(|members| {
            members.get(user).is_some_and(present) && members.get(other).is_some_and(present)
        })
    }
}

/// Synapse's counts: `signed_curve25519` always present, 0 when none are left.
fn one_time_key_counts(device: &Device) -> Value {
    let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0u64)]);
    for id in device.one_time_keys.keys() {
        let algorithm = id.split(':').next().unwrap_or_default().to_owned();
        *counts.entry(algorithm).or_default() += 1;
    }
    json!(counts)
}

/// Adds the `signatures` of an upload to those of the stored `target`.
fn merge_signatures(target: &mut Value, signatures: &Value) {
    let Some(signatures) = signatures.as_object() else {
        return;
    };
    if !target["signatures"].is_object() {
        target["signatures"] = json!({});
    }
    for (signer, by_key) in signatures {
        let entry = &mut target["signatures"][signer];
        if !entry.is_object() {
            *entry = json!({});
        }
        for (key_id, signature) in by_key.as_object().into_iter().flatten() {
            entry[key_id] = signature.clone();
        }
    }
}

/// The decoded value of `name` in a query string (`%XX` and `+` decoded, as forms encode).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
pub(crate) struct Shared {
    as_token: String,
    pub(crate) bot: String,
    inner: Mutex<Inner>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running homeserver double. Dropping it stops the server.
#[derive(Debug)]
pub struct HomeserverDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HomeserverDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HomeserverDouble {
    /// Starts a double on 127.0.0.1 (random port) that accepts `as_token` and knows `bot`.
    pub async fn start(as_token: &str, bot: &str) -> Self {
        let shared = Arc::new(Shared {
            as_token: as_token.to_owned(),
            bot: bot.to_owned(),
            inner: Mutex::default(),
        });
        let app = Router::new()
            .route("/_matrix/client/versions", get(versions))
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .route("/_matrix/client/v3/register", post(register))
            .route(
                "/_matrix/client/v3/profile/{user}/displayname",
                put(displayname),
            )
            .route("/_matrix/client/v1/appservice/{id}/ping", post(ping))
            .route("/_matrix/client/v3/createRoom", post(create_room))
            .route("/_matrix/client/v3/directory/room/{alias}", get(directory))
            .route("/_matrix/client/v3/rooms/{room}/join", post(join))
            .route("/_matrix/client/v3/join/{room}", post(join))
            .route("/_matrix/client/v3/rooms/{room}/state", get(full_state))
            .route("/_matrix/client/v3/rooms/{room}/leave", post(leave))
            .route(
                "/_matrix/client/v3/rooms/{room}/state/{event_type}/",
                get(state),
            )
            .route(
                "/_matrix/client/v3/rooms/{room}/state/{event_type}",
                get(state),
            )
            .route(
                "/_matrix/client/v3/rooms/{room}/send/{event_type}/{txn}",
                put(send),
            )
            .route("/_matrix/client/v3/rooms/{room}/members", get(members))
            .route("/_matrix/client/v3/rooms/{room}/messages", get(messages))
            .route("/_matrix/media/v3/upload", post(media_upload))
            .route("/_matrix/client/v3/devices/{device}", put(put_device))
            .route("/_matrix/client/v3/keys/upload", post(keys_upload))
            .route("/_matrix/client/v3/keys/query", post(keys_query))
            .route("/_matrix/client/v3/keys/claim", post(keys_claim))
            .route(
                "/_matrix/client/v3/keys/device_signing/upload",
                post(signing_keys_upload),
            )
            .route(
                "/_matrix/client/v3/keys/signatures/upload",
                post(signatures_upload),
            )
            .route(
                "/_matrix/client/v3/sendToDevice/{event_type}/{txn}",
                put(send_to_device),
            )
            .fallback(unknown)
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                record_and_gate,
            ))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the homeserver double");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tells the double where the bridge is, so `ping` calls it back as Synapse does.
    pub fn set_appservice(&self, url: &str, hs_token: &str) {
        self.shared.lock().appservice = Some((url.to_owned(), hs_token.to_owned()));
    }

    /// Makes the next sends fail, in order.
    pub fn fail_next_sends(&self, failures: impl IntoIterator<Item = Failure>) {
        self.shared.lock().failures.extend(failures);
    }

    /// Makes the next media uploads fail, in order.
    pub fn fail_next_uploads(&self, failures: impl IntoIterator<Item = Failure>) {
        self.shared.lock().upload_failures.extend(failures);
    }

    /// Every file uploaded, in order.
    pub fn media_uploads(&self) -> Vec<MediaUpload> {
        self.shared.lock().media.clone()
    }

    /// The bytes uploaded as `content_uri` (`mxc://…`).
    pub fn media(&self, content_uri: &str) -> Option<Vec<u8>> {
        self.shared
            .lock()
            .media
            .iter()
            .find(|m| m.content_uri == content_uri)
            .map(|m| m.data.clone())
    }

    /// While down, every request is answered `502` (as a reverse proxy does for a dead
    /// homeserver).
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Marks `room` as having an `m.room.encryption` state event.
    pub fn set_encrypted(&self, room: &str) {
        self.shared.lock().encrypted.insert(room.to_owned());
    }

    /// Makes `alias` (e.g. `#ops:example.org`) resolve to `room`.
    pub fn set_alias(&self, alias: &str, room: &str) {
        self.shared
            .lock()
            .aliases
            .insert(alias.to_owned(), room.to_owned());
    }

    /// Sets the full state of `room` (what `GET /rooms/{room}/state` answers), e.g. its
    /// `m.room.create` and `m.room.power_levels` events.
    pub fn set_room_state(&self, room: &str, events: Vec<Value>) {
        self.shared
            .lock()
            .room_state
            .insert(room.to_owned(), events);
    }

    /// `createRoom` bodies received, in order (their rooms are `!created<n>:<server>`).
    pub fn created_rooms(&self) -> Vec<Value> {
        self.shared.lock().created.clone()
    }

    /// Forgets the send transaction ids seen so far, as Synapse does on a restart for an
    /// appservice's sends (its dedupe of those is in memory only): a re-send with a known id
    /// then creates a second event.
    pub fn forget_transactions(&self) {
        self.shared.lock().txns.clear();
    }

    /// Stores an event in `room` as if the bot had sent it with `txn_id` (as when a send
    /// reached the homeserver and its answer was lost). `content` is its JSON.
    pub fn store_sent(&self, room: &str, txn_id: &str, event_type: &str, content: &str) {
        let mut inner = self.shared.lock();
        inner.next_event += 1;
        let event_id = format!("$double{}", inner.next_event);
        inner.txns.insert(txn_id.to_owned(), event_id.clone());
        inner.sent.push(Sent {
            room_id: room.to_owned(),
            event_type: event_type.to_owned(),
            txn_id: txn_id.to_owned(),
            content: serde_json::from_str(content).expect("the event's content is JSON"),
            event_id,
            user_id: None,
            received_at: std::time::Instant::now(),
        });
    }

    /// Every message successfully sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// How many messages were sent (cheap: no copy).
    pub fn sent_count(&self) -> usize {
        self.shared.lock().sent.len()
    }

    /// Messages sent to `room`.
    pub fn sent_to(&self, room: &str) -> Vec<Sent> {
        self.shared
            .lock()
            .sent
            .iter()
            .filter(|s| s.room_id == room)
            .cloned()
            .collect()
    }

    /// Rooms joined, in order.
    pub fn joined(&self) -> Vec<String> {
        self.shared.lock().joined.clone()
    }

    /// Rooms left (with the reason), in order.
    pub fn left(&self) -> Vec<(String, Option<String>)> {
        self.shared.lock().left.clone()
    }

    /// Display names set, by user.
    pub fn displayname(&self, user: &str) -> Option<String> {
        self.shared.lock().displaynames.get(user).cloned()
    }

    /// Users registered.
    pub fn registered(&self) -> Vec<String> {
        self.shared.lock().registered.iter().cloned().collect()
    }

    /// Number of pings received.
    pub fn pings(&self) -> u32 {
        self.shared.lock().pings
    }

    /// Every request, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The appservice's sender (the bot), as given to [`Self::start`].
    pub fn bot(&self) -> &str {
        &self.shared.bot
    }

    /// The state people's devices ([`crate::human::HumanDevice`]) work on.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Sets the members of `room` (what `GET /rooms/{room}/members` answers): `(user,
    /// membership)` pairs, e.g. `("@alice:example.org", "join")`. Replaces what was known.
    pub fn set_members(&self, room: &str, members: &[(&str, &str)]) {
        let mut inner = self.shared.lock();
        inner.members.insert(
            room.to_owned(),
            members
                .iter()
                .map(|(user, membership)| ((*user).to_owned(), (*membership).to_owned()))
                .collect(),
        );
    }

    /// Sets one member's membership in `room` (e.g. `leave` after someone left).
    pub fn set_membership(&self, room: &str, user: &str, membership: &str) {
        self.shared
            .lock()
            .members
            .entry(room.to_owned())
            .or_default()
            .insert(user.to_owned(), membership.to_owned());
    }

    /// The members of `room` the double knows, with their membership.
    pub fn members(&self, room: &str) -> Vec<(String, String)> {
        self.shared
            .lock()
            .members
            .get(room)
            .map(|m| m.iter().map(|(u, s)| (u.clone(), s.clone())).collect())
            .unwrap_or_default()
    }

    /// Sets the content of `room`'s state event of `event_type` (empty state key), e.g.
    /// `m.room.history_visibility` or an `m.room.encryption` with rotation settings.
    pub fn set_state_content(&self, room: &str, event_type: &str, content: Value) {
        let mut inner = self.shared.lock();
        if event_type == "m.room.encryption" {
            inner.encrypted.insert(room.to_owned());
        }
        inner
            .state
            .insert((room.to_owned(), event_type.to_owned()), content);
    }

    /// Creates `device` of `user`, as a login does (people's devices; the bot creates its own
    /// with `PUT /devices/{id}`). `true` when it is new.
    pub fn register_device(&self, user: &str, device: &str, display_name: Option<&str>) -> bool {
        self.shared
            .lock()
            .upsert_device(user, device, display_name.map(str::to_owned))
    }

    /// The device ids of `user`.
    pub fn devices(&self, user: &str) -> Vec<String> {
        self.shared
            .lock()
            .devices
            .get(user)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The device keys `device` of `user` uploaded (with the signatures uploaded for them).
    pub fn device_keys(&self, user: &str, device: &str) -> Option<Value> {
        self.shared
            .lock()
            .devices
            .get(user)
            .and_then(|d| d.get(device))
            .and_then(|d| d.keys.clone())
    }

    /// `user`'s cross-signing keys by kind (`master`, `self_signing`, `user_signing`).
    pub fn cross_signing_keys(&self, user: &str) -> BTreeMap<String, Value> {
        self.shared
            .lock()
            .cross_signing
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// How many unclaimed `signed_curve25519` one-time keys `device` of `user` has.
    pub fn one_time_key_count(&self, user: &str, device: &str) -> u64 {
        self.shared.lock().one_time_key_counts(user, device)["signed_curve25519"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Every `POST /keys/upload` received over HTTP, in order.
    pub fn key_uploads(&self) -> Vec<Upload> {
        self.shared.lock().key_uploads.clone()
    }

    /// Every `POST /keys/device_signing/upload` received over HTTP, in order.
    pub fn signing_key_uploads(&self) -> Vec<Upload> {
        self.shared.lock().signing_key_uploads.clone()
    }

    /// Every `POST /keys/signatures/upload` received over HTTP, in order.
    pub fn signature_uploads(&self) -> Vec<Upload> {
        self.shared.lock().signature_uploads.clone()
    }

    /// Every to-device message stored, delivered or not, in order.
    pub fn to_device_sent(&self) -> Vec<ToDevice> {
        self.shared
            .lock()
            .to_device
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The to-device messages stored for `device` of `user`, delivered or not, in order.
    pub fn to_device_for(&self, user: &str, device: &str) -> Vec<ToDevice> {
        self.to_device_sent()
            .into_iter()
            .filter(|m| m.recipient == user && m.recipient_device == device)
            .collect()
    }

    /// Takes the undelivered to-device messages for the appservice's users (the bot and the
    /// users it registered), in transaction format. What [`Self::appservice_transaction`]
    /// carries; a test holds them back (a room key that arrives late) by taking them first.
    pub fn take_appservice_to_device(&self) -> Vec<Value> {
        let mut inner = self.shared.lock();
        let users = appservice_users(&self.shared.bot, &inner);
        inner
            .take_to_device(|m| users.contains(&m.recipient))
            .iter()
            .map(ToDevice::appservice_event)
            .collect()
    }

    /// A transaction body as Synapse pushes it with MSC2409 and MSC3202 on: `events`, the
    /// to-device messages for the appservice's users not yet delivered, the one-time-key
    /// counts and unused fallback key types of every device of the appservice's users (the
    /// sender is always included), and the users whose device lists changed since the last
    /// such transaction (the appservice's own and those sharing a room with the bot; `left`
    /// stays empty, as in Synapse).
    pub fn appservice_transaction(&self, events: impl IntoIterator<Item = Value>) -> Value {
        let to_device = self.take_appservice_to_device();
        let mut inner = self.shared.lock();
        let bot = self.shared.bot.clone();
        let users = appservice_users(&bot, &inner);
        let mut counts = serde_json::Map::new();
        let mut fallback = serde_json::Map::new();
        for user in &users {
            for (id, device) in inner.devices.get(user).into_iter().flatten() {
                // Synapse's bulk count for transactions has no `signed_curve25519: 0` default.
                let mut by_algorithm = serde_json::Map::new();
                for key_id in device.one_time_keys.keys() {
                    let algorithm = key_id.split(':').next().unwrap_or_default().to_owned();
                    let n = by_algorithm
                        .get(&algorithm)
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    by_algorithm.insert(algorithm, (n + 1).into());
                }
                counts.entry(user.clone()).or_insert_with(|| json!({}))[id] =
                    Value::Object(by_algorithm);
                fallback.entry(user.clone()).or_insert_with(|| json!({}))[id] =
                    json!(inner.unused_fallback_key_types(user, id));
            }
        }
        let changes = std::mem::take(&mut inner.device_list_changes);
        let changed: Vec<String> = changes
            .into_iter()
            .filter(|user| users.contains(user) || inner.shares_room(user, &bot))
            .collect();
        let mut body = json!({
            "events": events.into_iter().collect::<Vec<_>>(),
            "ephemeral": [],
            "de.sorunome.msc2409.to_device": to_device,
        });
        if !counts.is_empty() {
            body["org.matrix.msc3202.device_one_time_key_counts"] = Value::Object(counts.clone());
            body["org.matrix.msc3202.device_one_time_keys_count"] = Value::Object(counts);
        }
        if !fallback.is_empty() {
            body["org.matrix.msc3202.device_unused_fallback_key_types"] = Value::Object(fallback);
        }
        if !changed.is_empty() {
            body["org.matrix.msc3202.device_lists"] = json!({"changed": changed, "left": []});
        }
        body
    }
}

/// The users an appservice transaction carries to-device messages and key counts for.
fn appservice_users(bot: &str, inner: &Inner) -> BTreeSet<String> {
    let mut users: BTreeSet<String> = inner.registered.iter().cloned().collect();
    users.insert(bot.to_owned());
    users
}

fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": message}))).into_response()
}

async fn record_and_gate(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (down, authorized) = {
        let mut inner = shared.lock();
        inner.requests.push(Request {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
        });
        let token = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        (inner.down, token.map(|t| t == shared.as_token))
    };
    if down {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    let path = request.uri().path();
    // As in the spec (and Synapse): these need no access token.
    if path == "/_matrix/client/versions" || path.starts_with("/_matrix/client/v3/directory/room/")
    {
        return next.run(request).await;
    }
    match authorized {
        None => error(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        ),
        Some(false) => error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unrecognised access token",
        ),
        Some(true) => {
            // Device masquerading (Synapse's `get_appservice_user`): the device must exist.
            let query = request.uri().query();
            if let Some(device) = query_param(query, "device_id") {
                let user = query_param(query, "user_id").unwrap_or_else(|| shared.bot.clone());
                if !shared.lock().has_device(&user, &device) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE",
                        &format!(
                            "Application service trying to use a device that doesn't exist ('{device}' for {user})"
                        ),
                    );
                }
            }
            next.run(request).await
        }
    }
}

async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"],
        "unstable_features": {}
    }))
}

async fn whoami(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"user_id": shared.bot, "is_guest": false}))
}

async fn register(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if body["type"] != "m.login.application_service" {
        return error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Registration has been disabled",
        );
    }
    let Some(username) = body["username"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", "username");
    };
    let server = shared.bot.split_once(':').map_or("", |(_, s)| s);
    let user_id = format!("@{username}:{server}");
    if !shared.lock().registered.insert(user_id.clone()) {
        return error(
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
            "User ID already taken.",
        );
    }
    let mut reply = json!({"user_id": user_id, "home_server": server});
    if body["inhibit_login"] != true {
        reply["access_token"] = "syt_double".into();
        reply["device_id"] = "DOUBLE".into();
    }
    Json(reply).into_response()
}

async fn displayname(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let name = body["displayname"].as_str().unwrap_or_default().to_owned();
    shared.lock().displaynames.insert(user, name);
    Json(json!({}))
}

async fn ping(State(shared): State<Arc<Shared>>, Path(_id): Path<String>, body: Bytes) -> Response {
    let target = {
        let mut inner = shared.lock();
        inner.pings += 1;
        inner.appservice.clone()
    };
    let Some((url, hs_token)) = target else {
        return Json(json!({"duration_ms": 0})).into_response();
    };
    let started = std::time::Instant::now();
    let result = reqwest_free_post(&format!("{url}/_matrix/app/v1/ping"), &hs_token, &body).await;
    match result {
        Ok(200) => {
            Json(json!({"duration_ms": started.elapsed().as_millis() as u64})).into_response()
        }
        Ok(status) => error(
            StatusCode::BAD_GATEWAY,
            "M_BAD_STATUS",
            &format!("appservice answered {status}"),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED", &e),
    }
}

/// A minimal HTTP/1.1 POST over a TCP stream, so the testkit needs no HTTP client crate.
async fn reqwest_free_post(url: &str, token: &str, body: &[u8]) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// is supported")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad response".to_owned())
}

async fn create_room(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Json<Value> {
    let server = shared.bot.split_once(':').map_or("", |(_, s)| s).to_owned();
    let mut inner = shared.lock();
    let room = format!("!created{}:{server}", inner.created.len() + 1);
    // As Synapse builds the room: the creator joined, the invitees invited, the presets'
    // `shared` history visibility, then `initial_state` (e.g. `m.room.encryption`).
    let mut members = BTreeMap::from([(shared.bot.clone(), "join".to_owned())]);
    for user in body["invite"].as_array().into_iter().flatten() {
        if let Some(user) = user.as_str() {
            members.insert(user.to_owned(), "invite".to_owned());
        }
    }
    inner.members.insert(room.clone(), members);
    inner.state.insert(
        (room.clone(), "m.room.history_visibility".to_owned()),
        json!({"history_visibility": "shared"}),
    );
    for event in body["initial_state"].as_array().into_iter().flatten() {
        let Some(kind) = event["type"].as_str() else {
            continue;
        };
        if !event["state_key"].as_str().unwrap_or_default().is_empty() {
            continue;
        }
        if kind == "m.room.encryption" {
            inner.encrypted.insert(room.clone());
        }
        inner
            .state
            .insert((room.clone(), kind.to_owned()), event["content"].clone());
    }
    inner.created.push(body);
    Json(json!({"room_id": room}))
}

async fn directory(State(shared): State<Arc<Shared>>, Path(alias): Path<String>) -> Response {
    match shared.lock().aliases.get(&alias) {
        Some(room) => Json(json!({"room_id": room, "servers": []})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            &format!("Room alias {alias} not found"),
        ),
    }
}

async fn full_state(State(shared): State<Arc<Shared>>, Path(room): Path<String>) -> Response {
    match shared.lock().room_state.get(&room) {
        // Whole events, as Synapse sends them: tests give type, sender, state key and content;
        // the event id, room id and timestamp every client-server event carries are filled in.
        Some(events) => {
            let events = events
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    let mut event = event.clone();
                    if let Some(fields) = event.as_object_mut() {
                        fields
                            .entry("event_id")
                            .or_insert_with(|| json!(format!("$state{i}")));
                        fields.entry("room_id").or_insert_with(|| json!(room));
                        fields
                            .entry("origin_server_ts")
                            .or_insert_with(|| json!(1_700_000_000_000u64));
                    }
                    event
                })
                .collect();
            Json(Value::Array(events)).into_response()
        }
        None => error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "User not in room"),
    }
}

async fn join(State(shared): State<Arc<Shared>>, Path(room): Path<String>) -> Json<Value> {
    let mut inner = shared.lock();
    inner.joined.push(room.clone());
    inner
        .members
        .entry(room.clone())
        .or_default()
        .insert(shared.bot.clone(), "join".to_owned());
    Json(json!({"room_id": room}))
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    body: Bytes,
) -> Json<Value> {
    let reason = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned));
    let mut inner = shared.lock();
    if let Some(members) = inner.members.get_mut(&room) {
        members.insert(shared.bot.clone(), "leave".to_owned());
    }
    inner.left.push((room, reason));
    Json(json!({}))
}

async fn state(
    State(shared): State<Arc<Shared>>,
    Path((room, event_type)): Path<(String, String)>,
) -> Response {
    let inner = shared.lock();
    if let Some(content) = inner.state.get(&(room.clone(), event_type.clone())) {
        return Json(content.clone()).into_response();
    }
    if event_type == "m.room.encryption" && inner.encrypted.contains(&room) {
        return Json(json!({"algorithm": "m.megolm.v1.aes-sha2"})).into_response();
    }
    let from_full_state = inner.room_state.get(&room).and_then(|events| {
        events
            .iter()
            .find(|e| e["type"] == event_type.as_str() && e["state_key"] == "")
    });
    if let Some(event) = from_full_state {
        return Json(event["content"].clone()).into_response();
    }
    if event_type == "m.room.history_visibility" && inner.members.contains_key(&room) {
        // Every room Synapse creates has one; `shared` is what the presets set.
        return Json(json!({"history_visibility": "shared"})).into_response();
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Event not found.")
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Path((room, event_type, txn)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    Json(content): Json<Value>,
) -> Response {
    let mut inner = shared.lock();
    if let Some(event_id) = inner.txns.get(&txn) {
        // Synapse's idempotency: the same transaction id gets the same event back.
        return Json(json!({"event_id": event_id})).into_response();
    }
    let lost = match inner.failures.pop_front() {
        Some(Failure::StoredButLost(status)) => Some(status),
        Some(failure) => {
            drop(inner);
            return failure_response(failure);
        }
        None => None,
    };
    inner.next_event += 1;
    let event_id = format!("$double{}", inner.next_event);
    inner.txns.insert(txn.clone(), event_id.clone());
    let user_id = query_param(query.as_deref(), "user_id");
    inner.sent.push(Sent {
        room_id: room,
        event_type,
        txn_id: txn,
        content,
        event_id: event_id.clone(),
        user_id,
        received_at: std::time::Instant::now(),
    });
    if let Some(status) = lost {
        inner.txns.clear();
        drop(inner);
        return failure_response(Failure::Status(status));
    }
    Json(json!({"event_id": event_id})).into_response()
}

/// `GET /rooms/{room}/messages`, backwards only (`dir=b`): the room's sent events newest
/// first, `limit` (10) at a time from `from` (a position), filtered by `filter.senders`. As
/// Synapse does, `unsigned.transaction_id` is given to the appservice for its own events.
async fn messages(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.as_deref();
    if query_param(query, "dir").as_deref() != Some("b") {
        return error(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "only dir=b is served by the double",
        );
    }
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10);
    let senders: Option<Vec<String>> = query_param(query, "filter")
        .and_then(|f| serde_json::from_str::<Value>(&f).ok())
        .and_then(|f| f.get("senders").cloned())
        .and_then(|s| serde_json::from_value(s).ok());
    let inner = shared.lock();
    let events: Vec<&Sent> = inner.sent.iter().filter(|s| s.room_id == room).collect();
    let end = query_param(query, "from")
        .and_then(|f| f.parse::<usize>().ok())
        .unwrap_or(events.len())
        .min(events.len());
    let mut chunk = Vec::new();
    let mut position = end;
    while position > 0 && chunk.len() < limit {
        position -= 1;
        let sent = events[position];
        let sender = sent.user_id.clone().unwrap_or_else(|| shared.bot.clone());
        if senders.as_ref().is_some_and(|s| !s.contains(&sender)) {
            continue;
        }
        chunk.push(json!({
            "event_id": sent.event_id, "room_id": sent.room_id, "sender": sender,
            "type": sent.event_type, "content": sent.content, "origin_server_ts": 0,
            "unsigned": {"transaction_id": sent.txn_id},
        }));
    }
    let mut body = json!({"start": end.to_string(), "chunk": chunk});
    if position > 0 {
        body["end"] = position.to_string().into();
    }
    Json(body).into_response()
}

/// The response of an injected failure, as Synapse words each.
fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "Too Many Requests");
            let body = json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": retry_after_secs * 1000});
            *response.body_mut() = axum::body::Body::from(body.to_string());
            response.headers_mut().insert("retry-after", retry_after_secs.into());
            response
        }
        Failure::RateLimitedMs(ms) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": ms})),
        )
            .into_response(),
        Failure::Status(code) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "M_UNKNOWN", "Internal server error"),
        Failure::Forbidden => error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "User not in room"),
        Failure::StoredButLost(code) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::GATEWAY_TIMEOUT), "M_UNKNOWN", "Gateway timeout"),
    }
}

/// `POST /_matrix/media/v3/upload`: stores the body under a fresh `mxc://` URI of the bot's
/// server (Synapse's media ids are random; these count up).
async fn media_upload(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = shared.lock();
    if let Some(failure) = inner.upload_failures.pop_front() {
        drop(inner);
        return failure_response(failure);
    }
    let server = shared.bot.split_once(':').map_or("localhost", |(_, s)| s);
    let content_uri = format!("mxc://{server}/media{}", inner.media.len() + 1);
    inner.media.push(MediaUpload {
        content_uri: content_uri.clone(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        filename: query_param(query.as_deref(), "filename"),
        user_id: query_param(query.as_deref(), "user_id"),
        data: body.to_vec(),
    });
    Json(json!({"content_uri": content_uri})).into_response()
}

/// Whom a request acts as: `?user_id=` (else the appservice's sender) and `?device_id=`
/// (checked to exist by [`record_and_gate`]).
fn identity(shared: &Shared, query: Option<&str>) -> (String, Option<String>) {
    (
        query_param(query, "user_id").unwrap_or_else(|| shared.bot.clone()),
        query_param(query, "device_id"),
    )
}

/// A JSON object body, as Synapse requires for these endpoints.
fn json_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn not_json() -> Response {
    error(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Content not JSON.")
}

fn refused((status, errcode, message): Refusal) -> Response {
    error(status, errcode, &message)
}

/// `GET /rooms/{room}/members`: every membership the double knows, as `m.room.member` events.
async fn members(State(shared): State<Arc<Shared>>, Path(room): Path<String>) -> Response {
    let inner = shared.lock();
    let Some(members) = inner.members.get(&room) else {
        return error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            &format!("User {} not in room {room}", shared.bot),
        );
    };
    let chunk: Vec<Value> = members
        .iter()
        .enumerate()
        .map(|(n, (user, membership))| {
            json!({"type": "m.room.member", "room_id": room, "sender": user, "state_key": user,
                   "event_id": format!("$member{n}-{}", room.trim_start_matches('!')),
                   "origin_server_ts": 1_700_000_000_000_u64, "content": {"membership": membership},
                   "unsigned": {}})
        })
        .collect();
    Json(json!({"chunk": chunk})).into_response()
}

/// `PUT /devices/{deviceId}`: as the appservice, creates the device (MSC4190; `201`) or
/// updates its display name (`200`).
async fn put_device(
    State(shared): State<Arc<Shared>>,
    Path(device): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    let (user, _) = identity(&shared, query.as_deref());
    let name = body["display_name"].as_str().map(str::to_owned);
    let created = shared.lock().upsert_device(&user, &device, name);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(json!({}))).into_response()
}

async fn keys_upload(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    let (user, device) = identity(&shared, query.as_deref());
    let mut inner = shared.lock();
    inner.key_uploads.push(Upload {
        user_id: user.clone(),
        device_id: device.clone(),
        body: body.clone(),
    });
    let Some(device) = device else {
        return error(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "To upload keys, you must pass device_id when authenticating",
        );
    };
    match inner.upload_keys(&user, &device, &body) {
        Ok(reply) => Json(reply).into_response(),
        Err(refusal) => refused(refusal),
    }
}

async fn keys_query(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    let (user, _) = identity(&shared, query.as_deref());
    Json(shared.lock().query_keys(&user, &body)).into_response()
}

async fn keys_claim(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    Json(shared.lock().claim_keys(&body)).into_response()
}

async fn signing_keys_upload(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    let (user, device) = identity(&shared, query.as_deref());
    let mut inner = shared.lock();
    inner.signing_key_uploads.push(Upload {
        user_id: user.clone(),
        device_id: device,
        body: body.clone(),
    });
    Json(inner.upload_signing_keys(&user, &body)).into_response()
}

async fn signatures_upload(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    let (user, device) = identity(&shared, query.as_deref());
    let mut inner = shared.lock();
    inner.signature_uploads.push(Upload {
        user_id: user,
        device_id: device,
        body: body.clone(),
    });
    Json(inner.upload_signatures(&body)).into_response()
}

async fn send_to_device(
    State(shared): State<Arc<Shared>>,
    Path((event_type, txn)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(body) = json_body(&body) else {
        return not_json();
    };
    let (user, device) = identity(&shared, query.as_deref());
    shared
        .lock()
        .send_to_device(&user, device.as_deref(), &event_type, &txn, &body);
    Json(json!({})).into_response()
}

async fn unknown(method: Method, uri: Uri, _headers: HeaderMap) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        &format!("Unrecognized request: {method} {}", uri.path()),
    )
}

/// Builders for the events a homeserver pushes, in client format (as Synapse sends them).
pub mod events {
    use serde_json::{Value, json};

    fn base(kind: &str, room: &str, sender: &str, event_id: &str) -> Value {
        json!({"type": kind, "room_id": room, "sender": sender, "event_id": event_id,
               "origin_server_ts": 1_700_000_000_000_u64, "unsigned": {"age": 10}})
    }

    /// An `m.text` message.
    pub fn text(room: &str, sender: &str, event_id: &str, body: &str) -> Value {
        let mut event = base("m.room.message", room, sender, event_id);
        event["content"] = json!({"msgtype": "m.text", "body": body});
        event
    }

    /// An `m.text` message in a thread.
    pub fn thread_text(room: &str, sender: &str, event_id: &str, root: &str, body: &str) -> Value {
        let mut event = text(room, sender, event_id, body);
        event["content"]["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": {"event_id": root}});
        event
    }

    /// A membership event for `target`, sent by `sender`.
    pub fn member(
        room: &str,
        sender: &str,
        target: &str,
        membership: &str,
        event_id: &str,
    ) -> Value {
        let mut event = base("m.room.member", room, sender, event_id);
        event["state_key"] = target.into();
        event["content"] = json!({"membership": membership});
        event
    }

    /// An encrypted message.
    pub fn encrypted(room: &str, sender: &str, event_id: &str) -> Value {
        let mut event = base("m.room.encrypted", room, sender, event_id);
        event["content"] = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k",
                                   "device_id": "DEV", "session_id": "s"});
        event
    }

    /// A transaction body carrying `events`.
    pub fn transaction(events: impl IntoIterator<Item = Value>) -> Value {
        json!({"events": events.into_iter().collect::<Vec<_>>()})
    }
}
