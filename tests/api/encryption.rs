//! End-to-end encryption: the bot's device, against the homeserver double and people's devices
//! (matrix-sdk-crypto machines, [`HumanDevice`]) that encrypt and decrypt for real.
//!
//! Transactions are pushed as Synapse pushes them with MSC2409/MSC3202 on
//! ([`TestApp::push`]): a room key a person's device shares travels as a to-device event in the
//! next transaction, unless a test holds it back.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    human::HumanDevice,
    poll,
};

use crate::helpers::*;

const BOB: &str = "@bob:example.org";
const ADMIN: &str = "@admin:example.org";
const ADMIN_ROOM: &str = "!created1:example.org";

fn pong() -> String {
    format!("pong: st2-matrix {}", env!("CARGO_PKG_VERSION"))
}

/// Asserts that `reply` (decrypted) is the bot's pong, replying to `command`.
fn assert_pong_to(reply: &Value, command: &str) {
    assert_eq!(reply["content"]["body"], pong(), "{reply}");
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], command,
        "{reply}"
    );
}

/// The bot's device id.
fn bot_device(app: &TestApp) -> String {
    app.bridge
        .e2ee
        .as_ref()
        .expect("encryption is on by default")
        .device_id()
        .to_string()
}

/// A bridge (with `extra_config`) and an encrypted ROOM where the bot and `members` are
/// joined, each member with a device of their own (in the order given).
async fn encrypted_room(
    extra_config: &'static str,
    members: &[&str],
) -> (TestApp, Vec<HumanDevice>) {
    let app = TestApp::spawn_with(Options {
        extra_config,
        ..Default::default()
    })
    .await;
    app.hs.set_encrypted(ROOM);
    let mut joined: Vec<(&str, &str)> = members.iter().map(|m| (*m, "join")).collect();
    joined.push((BOT, "join"));
    app.hs.set_members(ROOM, &joined);
    let mut devices = Vec::new();
    for member in members {
        devices.push(HumanDevice::new(&app.hs, member, &device_id_of(member)).await);
    }
    (app, devices)
}

/// Waits until `room` has `n` messages as sent (encrypted or not).
async fn wait_for_sent(app: &TestApp, room: &str, n: usize) -> Vec<Sent> {
    poll::wait_until(WAIT, &format!("{n} message(s) sent to {room}"), || async {
        let sent = app.hs.sent_to(room);
        (sent.len() >= n).then_some(sent)
    })
    .await
}

/// `sent`, which must be encrypted, as `reader` decrypts it.
async fn decrypt(reader: &HumanDevice, sent: &Sent) -> Value {
    assert_eq!(sent.event_type, "m.room.encrypted", "{:?}", sent.content);
    reader
        .decrypt(sent)
        .await
        .unwrap_or_else(|e| panic!("{} cannot read the bot's message: {e}", reader.device_id()))
}

/// A transaction as Synapse would build it now, carrying `held` to-device events (held back by
/// the test until now) besides those waiting.
fn with_to_device(app: &TestApp, events: Vec<Value>, held: Vec<Value>) -> Value {
    let mut body = app.hs.appservice_transaction(events);
    let to_device = body["de.sorunome.msc2409.to_device"]
        .as_array_mut()
        .expect("the double always sets the field");
    to_device.extend(held);
    body
}

/// The value of the counter `name` on `/metrics` (0 when absent).
async fn counter(app: &TestApp, name: &str) -> f64 {
    let (status, body) = app.get("/metrics", None).await;
    assert_eq!(status, 200);
    body.as_str()
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn at_start_the_bot_creates_its_device_uploads_its_keys_as_that_device_and_cross_signs_it() {
    // Arrange + Act
    let app = TestApp::spawn().await;

    // Assert
    let device = bot_device(&app);
    assert_eq!(app.hs.devices(BOT), std::slice::from_ref(&device));
    let requests = app.hs.requests();
    let position = |method: Method, path: &str| {
        requests
            .iter()
            .position(|r| r.method == method && r.path == path)
            .unwrap_or_else(|| panic!("no {method} {path} in {requests:#?}"))
    };
    let created = position(Method::PUT, &format!("/_matrix/client/v3/devices/{device}"));
    let uploaded = position(Method::POST, "/_matrix/client/v3/keys/upload");
    let cross_signed = position(
        Method::POST,
        "/_matrix/client/v3/keys/device_signing/upload",
    );
    assert!(
        created < uploaded && uploaded < cross_signed,
        "{requests:#?}"
    );

    let first = &app.hs.key_uploads()[0];
    assert_eq!(
        (first.user_id.as_str(), first.device_id.as_deref()),
        (BOT, Some(device.as_str()))
    );
    assert_eq!(first.body["device_keys"]["user_id"], BOT);
    assert_eq!(first.body["device_keys"]["device_id"], device.as_str());
    assert!(
        app.hs.one_time_key_count(BOT, &device) > 0,
        "one-time keys uploaded"
    );

    let signing = app.hs.signing_key_uploads();
    assert_eq!(signing.len(), 1);
    assert_eq!(signing[0].device_id.as_deref(), Some(device.as_str()));
    let keys = app.hs.cross_signing_keys(BOT);
    for kind in ["master", "self_signing", "user_signing"] {
        assert!(keys.contains_key(kind), "{kind} key missing: {keys:?}");
    }
    // The device is signed by the self-signing key (what Element shows as "verified by its
    // owner").
    let self_signing = keys["self_signing"]["keys"]
        .as_object()
        .and_then(|k| k.keys().next().cloned())
        .expect("a self-signing key id");
    let device_keys = app.hs.device_keys(BOT, &device).expect("device keys");
    assert!(
        device_keys["signatures"][BOT].get(&self_signing).is_some(),
        "{device_keys:#}"
    );
    assert!(
        app.hs
            .signature_uploads()
            .iter()
            .all(|u| u.device_id.as_deref() == Some(device.as_str()))
    );
}

#[tokio::test]
async fn a_restart_keeps_the_device_and_uploads_no_new_identity() {
    // Arrange
    let app = TestApp::spawn().await;
    let device = bot_device(&app);
    let identity = app.hs.device_keys(BOT, &device).expect("device keys")["keys"].clone();
    let cross_signing = app.hs.cross_signing_keys(BOT);

    // Act
    let app = app.restart().await;

    // Assert
    assert_eq!(bot_device(&app), device);
    assert_eq!(app.hs.devices(BOT), std::slice::from_ref(&device));
    let with_device_keys = app
        .hs
        .key_uploads()
        .iter()
        .filter(|u| !u.body["device_keys"].is_null())
        .count();
    assert_eq!(with_device_keys, 1, "device keys uploaded once");
    assert_eq!(app.hs.signing_key_uploads().len(), 1, "cross-signed once");
    assert_eq!(
        app.hs.device_keys(BOT, &device).expect("device keys")["keys"],
        identity
    );
    assert_eq!(app.hs.cross_signing_keys(BOT), cross_signing);
    assert!(
        app.hs
            .key_uploads()
            .iter()
            .all(|u| u.device_id.as_deref() == Some(device.as_str()))
    );
}

#[tokio::test]
async fn an_encrypted_ping_is_answered_with_an_encrypted_reply_its_sender_can_read() {
    // Arrange
    let (app, people) = encrypted_room("", &[ALICE]).await;
    let alice = &people[0];
    alice.share_room_key(ROOM, &[ALICE, BOT]).await;
    let command = alice.encrypted_text(ROOM, "$cmd", "!st2 ping").await;

    // Act: the room key travels in the same transaction as the message.
    let (status, _) = app.push("1", vec![command]).await;

    // Assert
    assert_eq!(status, 200);
    let sent = wait_for_sent(&app, ROOM, 1).await;
    assert_eq!(sent[0].content["algorithm"], "m.megolm.v1.aes-sha2");
    assert_eq!(sent[0].content["device_id"], bot_device(&app).as_str());
    let reply = decrypt(alice, &sent[0]).await;
    assert_eq!(reply["type"], "m.room.message");
    assert_eq!(reply["content"]["body"], pong());
    assert_eq!(
        reply["content"]["m.relates_to"],
        json!({"m.in_reply_to": {"event_id": "$cmd"}})
    );
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn a_message_whose_room_key_arrives_two_seconds_later_is_still_answered() {
    // Arrange
    let (app, people) = encrypted_room("", &[ALICE]).await;
    let alice = &people[0];
    alice.share_room_key(ROOM, &[ALICE, BOT]).await;
    let held = app.hs.take_appservice_to_device();
    assert!(!held.is_empty(), "the room key is held back");
    let command = alice.encrypted_text(ROOM, "$cmd", "!st2 ping").await;

    // Act
    app.push("1", vec![command]).await;
    poll::stays(
        Duration::from_secs(2),
        "no answer without the key",
        || async { app.hs.sent_to(ROOM).is_empty() },
    )
    .await;
    let (status, _) = app
        .push_body("2", &with_to_device(&app, Vec::new(), held))
        .await;

    // Assert
    assert_eq!(status, 200);
    let sent = wait_for_sent(&app, ROOM, 1).await;
    let reply = decrypt(alice, &sent[0]).await;
    assert_pong_to(&reply, "$cmd");
}

#[tokio::test]
async fn messages_whose_room_key_never_arrives_get_one_could_not_decrypt_notice_per_session() {
    // Arrange
    let (app, people) = encrypted_room("[encryption]\nkey_wait = \"1s\"\n", &[ALICE]).await;
    let alice = &people[0];
    alice.share_room_key(ROOM, &[ALICE, BOT]).await;
    let lost = app.hs.take_appservice_to_device();
    assert!(!lost.is_empty(), "the room key is lost");
    let mut commands = Vec::new();
    for n in 0..3 {
        commands.push(
            alice
                .encrypted_text(ROOM, &format!("$lost{n}"), "!st2 ping")
                .await,
        );
    }
    let session = commands[0]["content"]["session_id"].clone();
    assert!(
        commands
            .iter()
            .all(|c| c["content"]["session_id"] == session)
    );
    let before = counter(&app, "st2_matrix_e2ee_undecryptable_total").await;

    // Act
    app.push("1", commands).await;

    // Assert
    let sent = wait_for_sent(&app, ROOM, 1).await;
    let notice = decrypt(alice, &sent[0]).await;
    assert_eq!(notice["content"]["msgtype"], "m.notice");
    let body = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(body.contains("could not decrypt"), "{body}");
    assert!(
        body.contains(&bot_device(&app)),
        "names the bot's device: {body}"
    );
    poll::wait_until(WAIT, "all three given up", || async {
        let status = app.bridge.e2ee.as_ref().unwrap().status();
        (status.undecryptable == 3).then_some(())
    })
    .await;
    app.assert_message_count_stays(ROOM, 1).await;
    // Other tests share the process-wide counter: it grew by at least these three.
    let after = counter(&app, "st2_matrix_e2ee_undecryptable_total").await;
    assert!(after - before >= 3.0, "{before} → {after}");
}

#[tokio::test]
async fn after_a_member_leaves_the_bot_answers_with_a_new_room_key_the_others_can_read() {
    // Arrange: Alice and Bob in the room; the bot has answered Bob once.
    let (app, people) = encrypted_room("", &[ALICE, BOB]).await;
    let (alice, bob) = (&people[0], &people[1]);
    bob.share_room_key(ROOM, &[ALICE, BOB, BOT]).await;
    let first = bob.encrypted_text(ROOM, "$first", "!st2 ping").await;
    app.push("1", vec![first]).await;
    let sent = wait_for_sent(&app, ROOM, 1).await;
    let first_session = sent[0].content["session_id"].clone();
    assert_eq!(decrypt(alice, &sent[0]).await["content"]["body"], pong());

    // Act: Alice leaves; Bob (rotating his own key as his client would) asks again.
    app.hs.set_membership(ROOM, ALICE, "leave");
    app.push(
        "2",
        vec![events::member(ROOM, ALICE, ALICE, "leave", "$leave")],
    )
    .await;
    bob.share_room_key(ROOM, &[BOB, BOT]).await;
    let second = bob.encrypted_text(ROOM, "$second", "!st2 ping").await;
    app.push("3", vec![second]).await;

    // Assert
    let sent = wait_for_sent(&app, ROOM, 2).await;
    assert_ne!(
        sent[1].content["session_id"], first_session,
        "a new room key"
    );
    let reply = decrypt(bob, &sent[1]).await;
    assert_pong_to(&reply, "$second");
    assert!(
        alice.decrypt(&sent[1]).await.is_err(),
        "Alice, gone, cannot read what came after"
    );
}

#[tokio::test]
async fn the_bots_room_key_rotates_after_the_rooms_message_limit_and_every_reply_is_readable() {
    // Arrange: a room whose keys rotate every 2 messages (`rotation_period_msgs`).
    let (app, people) = encrypted_room("", &[ALICE]).await;
    let alice = &people[0];
    app.hs.set_state_content(
        ROOM,
        "m.room.encryption",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 2}),
    );
    alice.share_room_key(ROOM, &[ALICE, BOT]).await;

    // Act: five pings, one after the other.
    for i in 1..=5 {
        let ping = alice
            .encrypted_text(ROOM, &format!("$ping{i}"), "!st2 ping")
            .await;
        app.push(&format!("{i}"), vec![ping]).await;
        wait_for_sent(&app, ROOM, i).await;
    }

    // Assert: each answered, each readable, a new room key every 2 messages.
    let sent = wait_for_sent(&app, ROOM, 5).await;
    let mut sessions = Vec::new();
    for (i, message) in sent.iter().enumerate() {
        let reply = decrypt(alice, message).await;
        assert_pong_to(&reply, &format!("$ping{}", i + 1));
        sessions.push(message.content["session_id"].clone());
    }
    assert_eq!(sessions[0], sessions[1], "two messages per key");
    assert_ne!(sessions[1], sessions[2], "rotated after two");
    assert_eq!(sessions[2], sessions[3]);
    assert_ne!(sessions[3], sessions[4], "rotated again");
}

#[tokio::test]
async fn a_room_key_the_bridge_acknowledged_survives_an_immediate_restart() {
    // Arrange
    let (app, people) = encrypted_room("", &[ALICE]).await;
    let alice = &people[0];
    alice.share_room_key(ROOM, &[ALICE, BOT]).await;

    // Act: a transaction with only the room key, acknowledged, then a restart at once.
    let (status, _) = app.push("1", Vec::new()).await;
    assert_eq!(status, 200);
    let app = app.restart().await;
    let command = alice.encrypted_text(ROOM, "$cmd", "!st2 ping").await;
    app.push("2", vec![command]).await;

    // Assert
    let sent = wait_for_sent(&app, ROOM, 1).await;
    let reply = decrypt(alice, &sent[0]).await;
    assert_pong_to(&reply, "$cmd");
}

#[tokio::test]
async fn an_invite_to_an_encrypted_room_is_accepted_without_the_cannot_read_notice() {
    // Arrange
    let app = TestApp::spawn().await;
    app.hs.set_encrypted(ROOM);

    // Act
    app.push(
        "1",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;

    // Assert
    poll::wait_until(WAIT, "the join", || async {
        app.hs.joined().contains(&ROOM.to_owned()).then_some(())
    })
    .await;
    app.assert_message_count_stays(ROOM, 0).await;
}

/// A bridge with an admin room (encrypted, as the bridge creates it with encryption on) that
/// the admin reads with a device of their own; returns once the welcome is there.
async fn with_admin_room() -> TestApp {
    let app = TestApp::spawn_with(Options {
        extra_config: "[bridge]\nadmins = [\"@admin:example.org\"]\n",
        devices: &[ADMIN],
        ..Default::default()
    })
    .await;
    let welcome = app.wait_for_messages(ADMIN_ROOM, 1).await;
    assert_eq!(app.hs.sent_to(ADMIN_ROOM)[0].event_type, "m.room.encrypted");
    assert!(
        welcome[0].content["body"]
            .as_str()
            .unwrap_or_default()
            .contains("admin room"),
        "the admin reads the welcome: {:?}",
        welcome[0].content
    );
    app
}

#[tokio::test]
async fn three_transactions_without_msc3202_fields_warn_the_admin_room_once() {
    // Arrange
    let app = with_admin_room().await;

    // Act
    for txn in ["1", "2", "3", "4"] {
        let (status, _) = app.push_without_extensions(txn, Vec::new()).await;
        assert_eq!(status, 200);
    }

    // Assert
    let sent = app.wait_for_messages(ADMIN_ROOM, 2).await;
    let warning = sent[1].content["body"].as_str().unwrap_or_default();
    assert!(
        warning.contains("msc3202_transaction_extensions")
            && warning.contains("msc2409_to_device_messages_enabled"),
        "{warning}"
    );
    assert_eq!(sent[1].content["msgtype"], "m.notice");
    app.assert_message_count_stays(ADMIN_ROOM, 2).await;
}

#[tokio::test]
async fn transactions_with_msc3202_fields_raise_no_warning() {
    // Arrange
    let app = with_admin_room().await;

    // Act
    for txn in ["1", "2", "3", "4"] {
        let (status, _) = app.push(txn, Vec::new()).await;
        assert_eq!(status, 200);
    }

    // Assert
    app.assert_message_count_stays(ADMIN_ROOM, 1).await;
}
