//! A human Matrix user driven by matrix-sdk, as Element would drive one.
//!
//! Registered through Synapse's shared-secret API with a random suffix (tests share one
//! homeserver and must never see each other's users), logged in with matrix-sdk, and synced in
//! the background. The sync records every timeline event as raw JSON (so tests can look at
//! exactly what the bridge sent, e.g. `content["m.relates_to"]`), every membership change and
//! every invite. It keeps going through a homeserver outage and catches up when it returns.
//!
//! The user's client does end-to-end encryption as Element does (matrix-sdk's OlmMachine, in
//! memory): it uploads its device keys, shares room keys with the members' devices and
//! encrypts what it sends into an encrypted room, and decrypts what arrives. An encrypted event
//! is recorded as its decrypted JSON (`type: m.room.message`, the plaintext `content`), so tests
//! read it like any other; how it arrived (encrypted, in which megolm session, from which
//! device) is kept beside it, see [`User::encryption_of`]. An event whose key had not arrived
//! yet is recorded as the `m.room.encrypted` event it is, and replaced by its decrypted form as
//! soon as a later sync brings the key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::deserialized_responses::{EncryptionInfo, TimelineEvent, TimelineEventKind};
use matrix_sdk::ruma::api::client::filter::{FilterDefinition, RoomEventFilter, RoomFilter};
use matrix_sdk::ruma::api::client::keys::get_keys;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::{AnyInitialStateEvent, InitialStateEvent};
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use matrix_sdk::sync::{State, SyncResponse, Timeline};
use matrix_sdk::{Client, Room};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

use super::events::is_reply_from;
use super::synapse::Homeserver;
use super::wait::{PROMPTLY, SETTLE, assert_count_stays, poll_until};

/// How long one `/sync` long-poll may wait for news; short so a stuck request is noticed.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause before matrix-sdk retries a request the homeserver answered with a transient
/// error (5xx, 429). Its own pause grows to 60 s, so a homeserver that answers errors for a
/// moment after a restart could delay a sync by a minute; 1 s keeps tests of outages short.
/// (A homeserver that is down refuses connections: matrix-sdk does not retry those itself,
/// `sync_forever` does.)
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A logged-in human user with a background sync.
pub struct User {
    user_id: OwnedUserId,
    client: Client,
    /// Kept so that a second device of this user can log in (see `ManualDevice`).
    password: String,
    homeserver_url: String,
    seen: Arc<Mutex<Seen>>,
    sync: JoinHandle<()>,
}

/// How an encrypted event reached this user: what its `m.room.encrypted` envelope said, as
/// matrix-sdk reports it once decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// The megolm session (room key) it was encrypted with: the same for the messages a sender
    /// encrypts with one room key, different once the sender rotates it.
    pub session_id: String,
    /// The sending device, as the encrypted event names it (e.g. the bot's device id).
    pub sender_device: Option<String>,
}

impl Encrypted {
    fn from_info(info: &EncryptionInfo) -> Option<Encrypted> {
        Some(Encrypted {
            session_id: info.session_id()?.to_owned(),
            sender_device: info.sender_device.as_ref().map(ToString::to_string),
        })
    }
}

/// What the background sync has seen, per room.
#[derive(Default)]
struct Seen {
    rooms: HashMap<OwnedRoomId, RoomSeen>,
    /// Invites to rooms this user has not joined (yet), in the order they arrived.
    invites: Vec<Invite>,
}

/// An invite this user received, from the room's invite state.
#[derive(Clone, Debug)]
pub struct Invite {
    /// The room invited to.
    pub room_id: OwnedRoomId,
    /// Who sent the invite.
    pub sender: String,
    /// Whether the invite says the room is a direct chat (`is_direct` on the invite).
    pub is_direct: bool,
    /// The room's name, when its invite state carries one (`m.room.name`).
    pub name: Option<String>,
}

#[derive(Default)]
struct RoomSeen {
    /// Timeline events in sync order, raw JSON (decrypted JSON for encrypted events).
    events: Vec<Json>,
    event_ids: HashSet<String>,
    /// How each event that arrived encrypted and was decrypted was encrypted, by event id.
    encrypted: HashMap<String, Encrypted>,
    /// Ids of the encrypted events not decrypted yet (their key has not arrived).
    undecrypted: HashSet<String>,
    /// Each user's membership events from the timeline, oldest first.
    membership_history: HashMap<String, Vec<String>>,
    /// Each user's membership now (timeline, then the room state the sync reported).
    membership: HashMap<String, String>,
}

impl User {
    /// Registers `<name>-<random>` on `homeserver`, logs in and starts syncing.
    pub async fn register(homeserver: &Homeserver, name: &str) -> anyhow::Result<User> {
        let localpart = format!("{name}-{}", random_lowercase(8));
        let password = random_lowercase(20);
        let registered = homeserver.register_user(&localpart, &password).await?;

        let client = Client::builder()
            .homeserver_url(&homeserver.url)
            // `max_retry_time` caps each pause between retries in matrix-sdk 0.18 (it is
            // `with_max_delay` of its backoff), not their total.
            .request_config(RequestConfig::new().max_retry_time(MAX_RETRY_DELAY))
            .build()
            .await
            .context("building the matrix-sdk client")?;
        client
            .matrix_auth()
            .login_username(&localpart, &password)
            .initial_device_display_name("st2-matrix e2e")
            .await
            .with_context(|| format!("logging in as {}", registered.user_id))?;
        let user_id = client
            .user_id()
            .context("logged in but no user id")?
            .to_owned();

        let seen = Arc::new(Mutex::new(Seen::default()));
        let sync = tokio::spawn(sync_forever(client.clone(), Arc::clone(&seen)));
        Ok(User {
            user_id,
            client,
            password,
            homeserver_url: homeserver.url.clone(),
            seen,
            sync,
        })
    }

    /// The homeserver URL and password this user logged in with, for a second device of hers.
    pub(super) fn credentials(&self) -> (&str, &str) {
        (&self.homeserver_url, &self.password)
    }

    /// This user's id, e.g. `@alice-k3j9x0qa:localhost`.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Creates a private room (the homeserver's default room version, 12 on Synapse 1.163).
    pub async fn create_room(&self) -> anyhow::Result<OwnedRoomId> {
        self.create_room_from(Vec::new()).await
    }

    /// Creates a private room with end-to-end encryption on from the start (an
    /// `m.room.encryption` initial state event), as Element creates private rooms.
    pub async fn create_encrypted_room(&self) -> anyhow::Result<OwnedRoomId> {
        self.create_room_from(vec![encryption_state()]).await
    }

    /// Creates an encrypted room, invites `member` (e.g. the bot) and waits until it joined.
    pub async fn create_encrypted_room_with(&self, member: &UserId) -> anyhow::Result<OwnedRoomId> {
        let room = self.create_encrypted_room().await?;
        self.with_member(room, member).await
    }

    /// Creates a private room, invites `member` (e.g. the bot) and waits until it joined: the
    /// arrangement of most tests.
    pub async fn create_room_with(&self, member: &UserId) -> anyhow::Result<OwnedRoomId> {
        let room = self.create_room().await?;
        self.with_member(room, member).await
    }

    /// Invites `member` into `room`, a room just created, and returns it once `member` joined.
    async fn with_member(&self, room: OwnedRoomId, member: &UserId) -> anyhow::Result<OwnedRoomId> {
        self.invite(&room, member).await?;
        self.wait_for_membership(&room, member, "join", PROMPTLY)
            .await;
        Ok(room)
    }

    /// Opens a direct chat with `member` (e.g. the bot): a private room whose invite says
    /// `is_direct`, unencrypted; waits until `member` joined.
    pub async fn create_direct_chat_with(&self, member: &UserId) -> anyhow::Result<OwnedRoomId> {
        self.create_direct_chat_from(member, Vec::new()).await
    }

    /// Opens an encrypted direct chat with `member`, as Element opens every direct chat;
    /// waits until `member` joined.
    pub async fn create_encrypted_direct_chat_with(
        &self,
        member: &UserId,
    ) -> anyhow::Result<OwnedRoomId> {
        self.create_direct_chat_from(member, vec![encryption_state()])
            .await
    }

    async fn create_direct_chat_from(
        &self,
        member: &UserId,
        initial_state: Vec<Raw<AnyInitialStateEvent>>,
    ) -> anyhow::Result<OwnedRoomId> {
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        request.is_direct = true;
        request.invite = vec![member.to_owned()];
        request.initial_state = initial_state;
        let room = self
            .client
            .create_room(request)
            .await
            .context("creating a direct chat")?
            .room_id()
            .to_owned();
        self.wait_for_membership(&room, member, "join", PROMPTLY)
            .await;
        Ok(room)
    }

    async fn create_room_from(
        &self,
        initial_state: Vec<Raw<AnyInitialStateEvent>>,
    ) -> anyhow::Result<OwnedRoomId> {
        let mut request = create_room::v3::Request::new();
        request.initial_state = initial_state;
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        let room = self
            .client
            .create_room(request)
            .await
            .context("creating a room")?;
        Ok(room.room_id().to_owned())
    }

    /// Invites `user_id` into `room`.
    pub async fn invite(&self, room: &RoomId, user_id: &UserId) -> anyhow::Result<()> {
        self.room(room)?
            .invite_user_by_id(user_id)
            .await
            .with_context(|| format!("inviting {user_id} to {room}"))
    }

    /// Joins `room`, e.g. one this user was invited to (see [`User::wait_for_invite`]).
    pub async fn join(&self, room: &RoomId) -> anyhow::Result<()> {
        self.client
            .join_room_by_id(room)
            .await
            .with_context(|| format!("{} joining {room}", self.user_id))?;
        Ok(())
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &RoomId) -> anyhow::Result<()> {
        self.room(room)?
            .leave()
            .await
            .with_context(|| format!("{} leaving {room}", self.user_id))
    }

    /// Every invite this user's sync has seen, oldest first (joined rooms' invites included).
    pub fn invites(&self) -> Vec<Invite> {
        self.seen().invites.clone()
    }

    /// Waits until this user's sync has seen an invite for which `predicate` holds, and
    /// returns the first one. Panics after `timeout`, naming `what` and listing the invites.
    pub async fn wait_for_invite(
        &self,
        what: &str,
        predicate: impl Fn(&Invite) -> bool,
        timeout: Duration,
    ) -> Invite {
        let found = poll_until(timeout, || async {
            self.invites().into_iter().find(|invite| predicate(invite))
        })
        .await;
        match found {
            Some(invite) => invite,
            None => panic!(
                "timed out after {timeout:?} waiting for {what}; the invites {} saw: {:?}",
                self.user_id,
                self.invites()
            ),
        }
    }

    /// Sends `text` into `room` and waits for `bot`'s answer to it: a notice replying to it.
    pub async fn ask(&self, room: &RoomId, bot: &UserId, text: &str) -> anyhow::Result<Json> {
        let command = self.send_text(room, text).await?;
        Ok(self
            .wait_for_event(
                room,
                &format!("the bot's answer to {text:?}"),
                |ev| is_reply_from(ev, bot, &command),
                PROMPTLY,
            )
            .await)
    }

    /// Waits for `bot`'s invite into a room named `name`, joins it, and returns it.
    pub async fn join_when_invited(&self, bot: &UserId, name: &str) -> anyhow::Result<OwnedRoomId> {
        let invite = self
            .wait_for_invite(
                &format!("{bot}'s invite into {name:?}"),
                |invite| invite.sender == bot.as_str() && invite.name.as_deref() == Some(name),
                PROMPTLY,
            )
            .await;
        self.join(&invite.room_id).await?;
        Ok(invite.room_id)
    }

    /// Sends a plain `m.text` message and returns its event id. In an encrypted room it goes
    /// out encrypted, after the room key was shared with the members' devices, as from Element.
    pub async fn send_text(&self, room: &RoomId, body: &str) -> anyhow::Result<OwnedEventId> {
        let sent = self
            .room(room)?
            .send(RoomMessageEventContent::text_plain(body))
            .await
            .context("sending a message")?;
        Ok(sent.response.event_id)
    }

    /// Sends an `m.text` message into the thread rooted at `thread_root`, shaped as Element
    /// sends one that replies to no particular message of the thread: `rel_type: m.thread`,
    /// `event_id: thread_root`, `is_falling_back: true` and `m.in_reply_to: thread_root`.
    pub async fn send_thread_reply(
        &self,
        room: &RoomId,
        thread_root: &EventId,
        body: &str,
    ) -> anyhow::Result<OwnedEventId> {
        // Written out as JSON on purpose: the test states the wire format it sends rather
        // than trusting the client library's idea of a thread message.
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": thread_root,
                "is_falling_back": true,
                "m.in_reply_to": { "event_id": thread_root },
            },
        });
        let sent = self
            .room(room)?
            .send_raw("m.room.message", content)
            .await
            .context("sending a thread message")?;
        Ok(sent.response.event_id)
    }

    /// How `event` (a timeline event of `room` this user's sync recorded) was encrypted; `None`
    /// if it arrived in clear, or has not been decrypted (yet).
    pub fn encryption_of(&self, room: &RoomId, event: &Json) -> Option<Encrypted> {
        let event_id = event["event_id"].as_str()?;
        self.seen()
            .rooms
            .get(room)?
            .encrypted
            .get(event_id)
            .cloned()
    }

    /// The event `event_id` of `room` as the homeserver stores it
    /// (`GET /rooms/{room}/event/{id}`), not decrypted: for an event sent encrypted, an
    /// `m.room.encrypted` event whose content is ciphertext.
    pub async fn event_as_stored(&self, room: &RoomId, event_id: &str) -> anyhow::Result<Json> {
        use matrix_sdk::ruma::api::client::room::get_room_event;
        let event_id: OwnedEventId = event_id.try_into()?;
        let response = self
            .client
            .send(get_room_event::v3::Request::new(room.to_owned(), event_id))
            .await
            .context("fetching an event from the homeserver")?;
        Ok(to_json(response.event.json().get()))
    }

    /// The file an `m.file` event (as this user reads it) carries, downloaded as Element does:
    /// from its `url`, or from its `file` and decrypted with the key and checked against the
    /// hash that `file` holds.
    pub async fn download_file(&self, event: &Json) -> anyhow::Result<Vec<u8>> {
        use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
        use matrix_sdk::ruma::events::room::MediaSource;
        let content = &event["content"];
        let source = match content.get("file") {
            Some(file) => MediaSource::Encrypted(Box::new(
                serde_json::from_value(file.clone()).context("the event's `file`")?,
            )),
            None => MediaSource::Plain(
                serde_json::from_value(content["url"].clone()).context("the event's `url`")?,
            ),
        };
        let request = MediaRequestParameters {
            source,
            format: MediaFormat::File,
        };
        self.client
            .media()
            .get_media_content(&request, false)
            .await
            .context("downloading the file")
    }

    /// The ids of `user_id`'s devices with end-to-end keys, as the homeserver lists them now
    /// (`/keys/query`): one per device the user has created and not deleted.
    pub async fn devices_of(&self, user_id: &UserId) -> anyhow::Result<Vec<String>> {
        let mut request = get_keys::v3::Request::new();
        request.device_keys.insert(user_id.to_owned(), Vec::new());
        let response = self
            .client
            .send(request)
            .await
            .context("querying device keys")?;
        let mut devices: Vec<String> = response
            .device_keys
            .get(user_id)
            .map(|devices| devices.keys().map(ToString::to_string).collect())
            .unwrap_or_default();
        devices.sort();
        Ok(devices)
    }

    /// Every timeline event of `room` this user's sync has seen so far, oldest first.
    pub fn events(&self, room: &RoomId) -> Vec<Json> {
        self.seen()
            .rooms
            .get(room)
            .map(|r| r.events.clone())
            .unwrap_or_default()
    }

    /// The timeline events of `room` for which `predicate` holds.
    pub fn events_matching(&self, room: &RoomId, predicate: impl Fn(&Json) -> bool) -> Vec<Json> {
        self.events(room)
            .into_iter()
            .filter(|ev| predicate(ev))
            .collect()
    }

    /// Waits until this user's sync has seen an event in `room` for which `predicate` holds,
    /// and returns the first one. Panics after `timeout`, naming `what` and listing the
    /// room's latest events.
    pub async fn wait_for_event(
        &self,
        room: &RoomId,
        what: &str,
        predicate: impl Fn(&Json) -> bool,
        timeout: Duration,
    ) -> Json {
        let found = poll_until(timeout, || async {
            self.events(room).into_iter().find(|ev| predicate(ev))
        })
        .await;
        match found {
            Some(event) => event,
            None => panic!(
                "timed out after {timeout:?} waiting for {what} in {room}; the latest events {} saw there:\n{}",
                self.user_id,
                summarize(&self.events(room))
            ),
        }
    }

    /// Waits as [`User::wait_for_event`] does, then watches for [`SETTLE`] that the event
    /// stays the only one in `room` for which `predicate` holds, and returns it: how a test
    /// shows that something happened exactly once (only within that while: see
    /// [`assert_count_stays`]).
    pub async fn wait_for_only_event(
        &self,
        room: &RoomId,
        what: &str,
        predicate: impl Fn(&Json) -> bool,
        timeout: Duration,
    ) -> Json {
        let event = self.wait_for_event(room, what, &predicate, timeout).await;
        assert_count_stays(format!("events like {what}"), 1, SETTLE, || async {
            self.events_matching(room, &predicate).len()
        })
        .await;
        event
    }

    /// Waits until `user_id`'s membership in `room` is `membership` (`join`, `leave`, …).
    pub async fn wait_for_membership(
        &self,
        room: &RoomId,
        user_id: &UserId,
        membership: &str,
        timeout: Duration,
    ) {
        let reached = poll_until(timeout, || async {
            (self.membership(room, user_id).as_deref() == Some(membership)).then_some(())
        })
        .await;
        if reached.is_none() {
            panic!(
                "timed out after {timeout:?} waiting for {user_id} to {membership} {room}; its membership history: {:?}",
                self.membership_history(room, user_id)
            );
        }
    }

    /// `user_id`'s current membership in `room`, as far as this user's sync knows.
    pub fn membership(&self, room: &RoomId, user_id: &UserId) -> Option<String> {
        self.seen()
            .rooms
            .get(room)?
            .membership
            .get(user_id.as_str())
            .cloned()
    }

    /// Every membership `user_id` has had in `room` (from the timeline), oldest first.
    pub fn membership_history(&self, room: &RoomId, user_id: &UserId) -> Vec<String> {
        self.seen()
            .rooms
            .get(room)
            .and_then(|r| r.membership_history.get(user_id.as_str()).cloned())
            .unwrap_or_default()
    }

    /// matrix-sdk's room, which this user's client knows once it created, joined or was
    /// invited to it.
    pub fn room(&self, room: &RoomId) -> anyhow::Result<Room> {
        self.client
            .get_room(room)
            .with_context(|| format!("{} does not know room {room}", self.user_id))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("sync log lock")
    }
}

impl Drop for User {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

/// Syncs until aborted, recording what each response brings. Errors (a homeserver that is
/// down and refuses connections, say) are retried every 200 ms from the last position, so
/// nothing is missed once it answers again; the test notices a sync that never catches up
/// through its own deadlines.
async fn sync_forever(client: Client, seen: Arc<Mutex<Seen>>) {
    // A high timeline limit, so that a burst of events between two syncs (room creation sends
    // about eight) never arrives as a "limited" timeline with a gap.
    let mut filter = FilterDefinition::default();
    let mut room_filter = RoomFilter::default();
    let mut timeline = RoomEventFilter::default();
    timeline.limit = Some(UInt::from(500u32));
    room_filter.timeline = timeline;
    room_filter.include_leave = true;
    filter.room = room_filter;
    let mut settings = SyncSettings::new()
        .timeout(SYNC_TIMEOUT)
        .filter(Filter::FilterDefinition(filter));
    // Failed attempts in a row: an outage is reported once as it starts and once as it ends,
    // not every 200 ms.
    let mut failures = 0u32;
    let me = client
        .user_id()
        .map(ToString::to_string)
        .unwrap_or_default();
    loop {
        match client.sync_once(settings.clone()).await {
            Ok(response) => {
                seen.lock().expect("sync log lock").record(&response, &me);
                settings = settings.token(response.next_batch);
                decrypt_late(&client, &seen).await;
                if failures > 0 {
                    eprintln!(
                        "e2e: sync of {:?} works again after {failures} failed attempts",
                        client.user_id()
                    );
                    failures = 0;
                }
            }
            Err(e) => {
                if failures == 0 {
                    eprintln!("e2e: sync of {:?} failed, retrying: {e}", client.user_id());
                }
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Tries again to decrypt the recorded events whose room key had not arrived: a key may come
/// in a later sync than its message (its sender shared it late, or the to-device message
/// simply took longer), as Element too decrypts such a message when its key arrives.
async fn decrypt_late(client: &Client, seen: &Mutex<Seen>) {
    let pending: Vec<(OwnedRoomId, Json)> = {
        let seen = seen.lock().expect("sync log lock");
        seen.rooms
            .iter()
            .flat_map(|(room_id, room)| {
                room.events
                    .iter()
                    .filter(|ev| {
                        ev["event_id"]
                            .as_str()
                            .is_some_and(|id| room.undecrypted.contains(id))
                    })
                    .map(|ev| (room_id.clone(), ev.clone()))
            })
            .collect()
    };
    for (room_id, event) in pending {
        let Some(room) = client.get_room(&room_id) else {
            continue;
        };
        let Ok(raw) = Raw::<OriginalSyncRoomEncryptedEvent>::from_json_string(event.to_string())
        else {
            continue;
        };
        let Ok(decrypted) = room.decrypt_event(&raw, None).await else {
            continue;
        };
        if decrypted.kind.is_utd() {
            continue;
        }
        if let Some(room) = seen.lock().expect("sync log lock").rooms.get_mut(&room_id) {
            room.replace_decrypted(&decrypted);
        }
    }
}

impl Seen {
    /// Records `response`, a sync of the user `me`.
    fn record(&mut self, response: &SyncResponse, me: &str) {
        for (room_id, update) in &response.rooms.joined {
            self.rooms
                .entry(room_id.clone())
                .or_default()
                .record(&update.timeline, &update.state);
        }
        for (room_id, update) in &response.rooms.left {
            self.rooms
                .entry(room_id.clone())
                .or_default()
                .record(&update.timeline, &update.state);
        }
        for (room_id, update) in &response.rooms.invited {
            if self.invites.iter().any(|i| &i.room_id == room_id) {
                continue;
            }
            // The invite itself is the invitee's `m.room.member` event in the invite state.
            let state: Vec<Json> = update
                .invite_state
                .events
                .iter()
                .map(|raw| to_json(raw.json().get()))
                .collect();
            let name = state
                .iter()
                .find(|ev| ev["type"] == "m.room.name")
                .and_then(|ev| ev["content"]["name"].as_str())
                .map(str::to_owned);
            let invite = state.into_iter().find(|ev| {
                ev["type"] == "m.room.member"
                    && ev["content"]["membership"] == "invite"
                    && ev["state_key"] == me
            });
            if let Some(invite) = invite {
                self.invites.push(Invite {
                    room_id: room_id.clone(),
                    sender: invite["sender"].as_str().unwrap_or_default().to_owned(),
                    is_direct: invite["content"]["is_direct"] == true,
                    name,
                });
            }
        }
    }
}

impl RoomSeen {
    fn record(&mut self, timeline: &Timeline, state: &State) {
        // `State::Before` is the state before the timeline, `State::After` the state at its
        // end (matrix-sdk asks for the latter): apply each on the right side of the timeline
        // so `membership` ends as the room's current state.
        if let State::Before(events) = state {
            for raw in events {
                self.apply_state(&to_json(raw.json().get()));
            }
        }
        for event in &timeline.events {
            let json = to_json(event.raw().json().get());
            let Some(event_id) = json["event_id"].as_str() else {
                continue;
            };
            if !self.event_ids.insert(event_id.to_owned()) {
                continue;
            }
            self.note_encryption(event_id, event);
            if let Some((user, membership)) = member_change(&json) {
                self.membership_history
                    .entry(user.clone())
                    .or_default()
                    .push(membership.clone());
                self.membership.insert(user, membership);
            }
            self.events.push(json);
        }
        if let State::After(events) = state {
            for raw in events {
                self.apply_state(&to_json(raw.json().get()));
            }
        }
    }

    /// Notes how `event` (with id `event_id`) arrived: decrypted, or still waiting for its key.
    fn note_encryption(&mut self, event_id: &str, event: &TimelineEvent) {
        match &event.kind {
            TimelineEventKind::Decrypted(decrypted) => {
                self.undecrypted.remove(event_id);
                if let Some(encrypted) = Encrypted::from_info(&decrypted.encryption_info) {
                    self.encrypted.insert(event_id.to_owned(), encrypted);
                }
            }
            TimelineEventKind::UnableToDecrypt { .. } => {
                self.undecrypted.insert(event_id.to_owned());
            }
            TimelineEventKind::PlainText { .. } => {}
        }
    }

    /// Puts the decrypted form of an event recorded while its key was missing in its place.
    fn replace_decrypted(&mut self, decrypted: &TimelineEvent) {
        let json = to_json(decrypted.raw().json().get());
        let Some(event_id) = json["event_id"].as_str().map(str::to_owned) else {
            return;
        };
        self.note_encryption(&event_id, decrypted);
        if let Some(slot) = self
            .events
            .iter_mut()
            .find(|ev| ev["event_id"] == event_id.as_str())
        {
            *slot = json;
        }
    }

    fn apply_state(&mut self, json: &Json) {
        if let Some((user, membership)) = member_change(json) {
            self.membership.insert(user, membership);
        }
    }
}

/// `(state_key, membership)` of an `m.room.member` event.
fn member_change(event: &Json) -> Option<(String, String)> {
    if event["type"] != "m.room.member" {
        return None;
    }
    Some((
        event["state_key"].as_str()?.to_owned(),
        event["content"]["membership"].as_str()?.to_owned(),
    ))
}

/// The `m.room.encryption` initial state that makes a new room encrypted, as Element sets it.
fn encryption_state() -> Raw<AnyInitialStateEvent> {
    InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
        .to_raw_any()
}

fn to_json(raw: &str) -> Json {
    serde_json::from_str(raw).expect("the homeserver sends JSON events")
}

/// One line per event (the last 20): enough to see what the bridge did instead.
fn summarize(events: &[Json]) -> String {
    let lines: Vec<String> = events[events.len().saturating_sub(20)..]
        .iter()
        .map(|ev| {
            format!(
                "  {} {} {}",
                ev["sender"].as_str().unwrap_or("?"),
                ev["type"].as_str().unwrap_or("?"),
                ev["content"]
            )
        })
        .collect();
    if lines.is_empty() {
        "  (none)".to_owned()
    } else {
        lines.join("\n")
    }
}

/// `len` random lowercase letters and digits: names no other test uses, and throw-away secrets.
pub fn random_lowercase(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}
