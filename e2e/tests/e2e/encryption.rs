//! End-to-end encrypted rooms and direct chats: the bot reads the commands people send
//! encrypted and answers encrypted, lets members who join later read it and stops using a room
//! key once someone who had it leaves, keeps its device across restarts and crashes, waits for
//! a room key that arrives after its message, tells the sender once about messages it can
//! never read, and keeps every key out of its log. With `[encryption] enabled = false` it says
//! once that it cannot read the room, as before. The rooms the bot creates itself (whisper
//! direct chats, the admin room) are encrypted.
//!
//! The users' clients encrypt and decrypt as Element does (matrix-sdk); a test sees the bot's
//! messages decrypted, and [`User::encryption_of`] tells how each arrived: encrypted, with which
//! room key (megolm session), from which device.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use matrix_sdk::ruma::{EventId, RoomId, UserId};
use rand::RngCore as _;
use serde_json::Value as Json;
use st2_matrix_testkit::st2::St2Options;

use crate::admin::{ADMIN_ROOM_NAME, set_admins};
use crate::harness::Ctx;
use crate::harness::bridge::version;
use crate::harness::conversation::Conversation;
use crate::harness::device::ManualDevice;
use crate::harness::events::{body, in_reply_to, is_notice_from, sender, thread_root};
use crate::harness::stackstorm::{self, St2Auth};
use crate::harness::user::{Encrypted, User, random_lowercase};
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};
use crate::login::{
    ALICE_ST2, bridge_serving_login, deploy_double, login_link, open_login_page,
    wait_for_link_confirmation,
};
use crate::ping::{is_pong, is_pong_to, ping};
use crate::results::{deploy_alias, deploy_web, finish_deploy, join_the_bots_direct_chat, whisper};

/// What the bot's notice about a message it cannot decrypt says.
const UNDECRYPTABLE: &str = "could not decrypt";

/// `[encryption] key_wait` in the test of messages that never become readable: short, as the
/// test waits it out.
const SHORT_KEY_WAIT: Duration = Duration::from_secs(3);

/// How many commands the never-readable test sends with one room key: a small flood.
const FLOOD: usize = 3;

/// How long the room key is held back after its message in the late key test: long enough
/// for the message to reach the bridge first (a transaction takes milliseconds), far shorter
/// than the default `[encryption] key_wait` of 30 s.
const KEY_DELAY: Duration = Duration::from_secs(2);

/// How `event` reached `user`; panics if it did not arrive encrypted (or was never decrypted).
fn encryption(user: &User, room: &RoomId, event: &Json) -> Encrypted {
    user.encryption_of(room, event).unwrap_or_else(|| {
        panic!(
            "{} did not get this event encrypted, or could not decrypt it: {event}",
            user.user_id()
        )
    })
}

/// How `user`'s own message `event_id` in `room` was encrypted, from her own sync.
fn own_encryption(user: &User, room: &RoomId, event_id: &EventId) -> Encrypted {
    let event = user
        .events(room)
        .into_iter()
        .find(|ev| ev["event_id"] == event_id.as_str())
        .unwrap_or_else(|| panic!("{}'s sync has her message {event_id}", user.user_id()));
    encryption(user, room, &event)
}

/// Whether `event` is `bot`'s notice that it could not decrypt a message.
fn is_undecryptable_notice(event: &Json, bot: &UserId) -> bool {
    is_notice_from(event, bot) && body(event).contains(UNDECRYPTABLE)
}

/// Whether `bot` sent the `m.room.encryption` event of `room`: it made the room encrypted.
fn made_encrypted_by(user: &User, room: &RoomId, bot: &UserId) -> bool {
    !user
        .events_matching(room, |ev| {
            ev["type"] == "m.room.encryption" && sender(ev) == bot.as_str()
        })
        .is_empty()
}

/// The event id of a recorded event.
fn id_of(event: &Json) -> &str {
    event["event_id"].as_str().unwrap_or_default()
}

/// In a room created encrypted, `!st2 ping` (which alice's client sends encrypted) is
/// answered: the pong reaches her as an `m.room.encrypted` event from one of the bot's
/// devices, and her client decrypts it into a notice replying to her command. The homeserver
/// holds command and pong only as ciphertext.
pub async fn ping_in_an_encrypted_room_is_answered_with_an_encrypted_reply(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;

    // Act
    let (command, pong) = ping(&alice, &room, &bot).await?;

    // Assert
    let registration = bridge.registration();
    assert!(
        registration.receive_ephemeral && registration.msc3202,
        "the registration asks Synapse for to-device events (receive_ephemeral: {}) and \
         device lists (org.matrix.msc3202: {})",
        registration.receive_ephemeral,
        registration.msc3202
    );
    assert!(
        body(&pong).contains(&version()),
        "the decrypted pong names the version: {pong}"
    );
    let encrypted = encryption(&alice, &room, &pong);
    let stored_command = alice.event_as_stored(&room, command.as_str()).await?;
    let stored_pong = alice.event_as_stored(&room, id_of(&pong)).await?;
    assert_eq!(
        stored_command["type"], "m.room.encrypted",
        "alice's command went out encrypted: {stored_command}"
    );
    assert_eq!(
        stored_pong["type"], "m.room.encrypted",
        "the pong went out encrypted: {stored_pong}"
    );
    assert_eq!(
        stored_pong["content"]["algorithm"], "m.megolm.v1.aes-sha2",
        "with megolm: {stored_pong}"
    );
    assert_eq!(
        stored_pong["content"]["session_id"],
        encrypted.session_id.as_str(),
        "with the room key alice decrypted it with: {stored_pong}"
    );
    assert!(
        stored_pong["content"].get("body").is_none(),
        "no plaintext beside the ciphertext: {stored_pong}"
    );
    let device = encrypted
        .sender_device
        .expect("the encrypted pong names the device that sent it");
    let bot_devices = alice.devices_of(&bot).await?;
    assert!(
        bot_devices.contains(&device),
        "the pong came from device {device}, which is not among the bot's devices {bot_devices:?}"
    );
    Ok(())
}

/// `!st2 deploy web` in an encrypted room runs; its ack and, once StackStorm finishes the
/// execution, its result arrive encrypted in the thread rooted at the command, the result
/// mentioning alice.
pub async fn command_in_an_encrypted_room_gets_its_ack_and_result_encrypted_in_its_thread(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let deploy = deploy_web(&st2, &alice, &room, &bot).await?;

    // Act
    let result = finish_deploy(&st2, &alice, &room, &bot, &deploy).await;

    // Assert
    encryption(&alice, &room, &deploy.ack);
    encryption(&alice, &room, &result);
    assert_eq!(
        thread_root(&deploy.ack),
        Some(deploy.command.as_str()),
        "the ack is in the command's thread: {}",
        deploy.ack
    );
    assert_eq!(
        thread_root(&result),
        Some(deploy.command.as_str()),
        "the result is in the command's thread: {result}"
    );
    assert_eq!(
        body(&result),
        format!("{}: Deployed web: web is live", alice.user_id()),
        "the alias's result format, after a mention of alice: {result}"
    );
    Ok(())
}

/// Bob joins an encrypted room after the bot has already spoken there with a room key made
/// for alice alone. He reads the bot's pong to his own `!st2 ping`, and its pong to alice's
/// ping sent after he joined; the bot then tracks the devices of both.
pub async fn member_who_joins_an_encrypted_room_later_reads_the_bots_answers(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    let bob = ctx.user("bob").await?;
    ping(&alice, &room, &bot).await?;

    // Act
    alice.invite(&room, bob.user_id()).await?;
    bob.join(&room).await?;
    alice
        .wait_for_membership(&room, bob.user_id(), "join", PROMPTLY)
        .await;
    let (_, bobs_pong) = ping(&bob, &room, &bot).await?;
    let alices_command = alice.send_text(&room, "!st2 ping").await?;

    // Assert
    let pong_to_alice = bob
        .wait_for_event(
            &room,
            "the bot's pong to alice's ping after bob joined",
            |ev| is_pong_to(ev, &bot, alices_command.as_str()),
            PROMPTLY,
        )
        .await;
    encryption(&bob, &room, &bobs_pong);
    encryption(&bob, &room, &pong_to_alice);
    wait_until(
        "the bot to track the devices of alice and bob (st2_matrix_e2ee_tracked_users >= 2)",
        PROMPTLY,
        || async {
            let tracked = bridge.metric("st2_matrix_e2ee_tracked_users").await?;
            (tracked >= 2.0).then_some(())
        },
    )
    .await;
    Ok(())
}

/// While alice and bob are in an encrypted room, the bot encrypts its pongs with one room
/// key; once bob leaves, its next pong uses a new key, which bob never had.
pub async fn after_a_member_leaves_the_bot_encrypts_with_a_new_room_key(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    let bob = ctx.user("bob").await?;
    alice.invite(&room, bob.user_id()).await?;
    bob.join(&room).await?;
    alice
        .wait_for_membership(&room, bob.user_id(), "join", PROMPTLY)
        .await;
    let (_, first) = ping(&alice, &room, &bot).await?;
    let (_, second) = ping(&alice, &room, &bot).await?;

    // Act
    bob.leave(&room).await?;
    alice
        .wait_for_membership(&room, bob.user_id(), "leave", PROMPTLY)
        .await;
    let (_, after_leave) = ping(&alice, &room, &bot).await?;

    // Assert
    let first = encryption(&alice, &room, &first);
    let second = encryption(&alice, &room, &second);
    let after_leave = encryption(&alice, &room, &after_leave);
    assert_eq!(
        first.session_id, second.session_id,
        "while the members stay, the bot keeps its room key"
    );
    assert_ne!(
        first.session_id, after_leave.session_id,
        "after bob left, the bot's next message uses a room key he never had"
    );
    Ok(())
}

/// Alice links her StackStorm account from an encrypted direct chat, as Element opens direct
/// chats: `!st2 login` there answers with the one-time link (encrypted: the homeserver never
/// sees it), she fills in the page in Chromium, and the bot's confirmation and its answer to
/// `!st2 whoami` arrive encrypted in the same chat, naming her StackStorm user.
pub async fn login_in_an_encrypted_direct_chat_sends_the_link_and_links_the_account(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let password = random_lowercase(24);
    st2.add_user(ALICE_ST2, &password);
    let alice = ctx.user("alice").await?;
    let mut bridge = bridge_serving_login(&ctx, &st2);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let direct = alice.create_encrypted_direct_chat_with(&bot).await?;
    bridge.wait_for_aliases(1).await;

    // Act
    let offer = alice.ask(&direct, &bot, "!st2 login").await?;
    let link = login_link(&offer, &bridge.url());
    let (browser, _) = open_login_page(&link).await?;
    browser.type_into("#username", ALICE_ST2).await?;
    browser.type_into("#password", &password).await?;
    browser.click("#link").await?;
    browser.wait_for_title("Account linked").await?;
    let confirmed = wait_for_link_confirmation(&alice, &direct, &bot).await;
    let whoami = alice.ask(&direct, &bot, "!st2 whoami").await?;

    // Assert
    for event in [&offer, &confirmed, &whoami] {
        encryption(&alice, &direct, event);
    }
    let link_token = &link[format!("{}/login/", bridge.url()).len()..];
    let stored_offer = alice.event_as_stored(&direct, id_of(&offer)).await?;
    assert_eq!(
        stored_offer["type"], "m.room.encrypted",
        "the link went out encrypted: {stored_offer}"
    );
    assert!(
        !stored_offer.to_string().contains(link_token),
        "the homeserver holds the link's token in clear: {stored_offer}"
    );
    assert!(
        body(&confirmed).contains(ALICE_ST2),
        "the confirmation names the StackStorm user: {confirmed}"
    );
    assert!(
        body(&whoami).contains(ALICE_ST2),
        "whoami names the linked StackStorm user: {whoami}"
    );
    Ok(())
}

/// The bot keeps its device, and the room keys it was given, across a restart and a crash:
/// after a stop and start it answers alice from the same device; then alice starts a new room
/// key, the bot answers her first message with it, and is killed with SIGKILL right away. Once
/// started again, it answers her next message, encrypted with that same key (which it got only
/// just before the kill), again from the same device, and the homeserver still lists that
/// device as its only one.
pub async fn bridge_restarted_or_killed_after_a_key_arrived_keeps_answering_with_the_same_device(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    let (first_command, first) = ping(&alice, &room, &bot).await?;
    let device = encryption(&alice, &room, &first)
        .sender_device
        .expect("the encrypted pong names the device that sent it");

    // Act: a restart
    bridge.restart().await?;
    let (_, after_restart) = ping(&alice, &room, &bot).await?;

    // Act: a new room key of alice's, then a crash as soon as the bot has used it
    alice.room(&room)?.discard_room_key().await?;
    let (new_key_command, before_kill) = ping(&alice, &room, &bot).await?;
    bridge.kill()?;
    bridge.start().await?;
    let (same_key_command, after_kill) = ping(&alice, &room, &bot).await?;

    // Assert
    for (when, pong) in [
        ("after the restart", &after_restart),
        ("before the kill", &before_kill),
        ("after the kill", &after_kill),
    ] {
        assert_eq!(
            encryption(&alice, &room, pong).sender_device.as_deref(),
            Some(device.as_str()),
            "the pong {when} comes from the bot's first device: {pong}"
        );
    }
    let new_key = own_encryption(&alice, &room, &new_key_command).session_id;
    assert_ne!(
        own_encryption(&alice, &room, &first_command).session_id,
        new_key,
        "alice's client started a new room key"
    );
    assert_eq!(
        own_encryption(&alice, &room, &same_key_command).session_id,
        new_key,
        "the command after the kill is encrypted with the key the bot got just before it"
    );
    assert_eq!(
        alice.devices_of(&bot).await?,
        vec![device],
        "the bot still has exactly the device it started with"
    );
    Ok(())
}

/// A command whose room key reaches the bot two seconds after the command is answered, once
/// the key is there; nobody is told the message could not be read.
///
/// How the key is made late: Element (and the users' matrix-sdk clients) share a key before
/// sending anything encrypted with it, so the command comes from a second device of alice's
/// whose encryption the test drives by hand (`ManualDevice`: matrix-sdk-crypto's OlmMachine
/// with real requests to Synapse). It makes a room key for the bot's and alice's devices and
/// holds back the to-device messages carrying it, sends `!st2 ping` encrypted with it, waits
/// until the command is in the room (alice's sync has it, so Synapse has stored it and queued
/// it for the bridge) and two seconds more, then sends the key. The bridge gets both through
/// its transactions, in that order, as it would from any slow client.
pub async fn command_whose_room_key_arrives_seconds_later_is_answered(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    ping(&alice, &room, &bot).await?;
    let device = ManualDevice::login(&alice).await?;
    let key = device.new_room_key(&room, &[&bot, alice.user_id()]).await?;

    // Act
    let (command, _) = device.send_text(&room, "!st2 ping").await?;
    alice
        .wait_for_event(
            &room,
            "the command from alice's second device",
            |ev| ev["event_id"] == command.as_str(),
            PROMPTLY,
        )
        .await;
    // Real time has to pass: this is the delay the bridge must ride out.
    tokio::time::sleep(KEY_DELAY).await;
    device.release(key).await?;

    // Assert
    let pong = alice
        .wait_for_event(
            &room,
            "the bot's pong to the command whose key came late",
            |ev| is_pong_to(ev, &bot, command.as_str()),
            PROMPTLY,
        )
        .await;
    encryption(&alice, &room, &pong);
    assert_count_stays(
        "notices that a message could not be decrypted",
        0,
        SETTLE,
        || async {
            alice
                .events_matching(&room, |ev| is_undecryptable_notice(ev, &bot))
                .len()
        },
    )
    .await;
    Ok(())
}

/// Three commands encrypted with a room key that never reaches the bot (alice's second device,
/// driven by hand as in the late key test, keeps it to itself) get, once `[encryption]
/// key_wait` (3 s here) has passed, exactly one notice in the room, naming alice and saying
/// the bot could not decrypt her message: not one per message. None runs; each is counted in
/// `st2_matrix_e2ee_undecryptable_total`.
pub async fn messages_the_bot_can_never_decrypt_get_one_notice_naming_their_sender(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.set_config(
        "encryption",
        "key_wait",
        format!("{}s", SHORT_KEY_WAIT.as_secs()),
    );
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    let device = ManualDevice::login(&alice).await?;
    let _kept_to_itself = device.new_room_key(&room, &[]).await?;

    // Act
    let mut commands = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..FLOOD {
        let (command, session) = device.send_text(&room, "!st2 ping").await?;
        commands.push(command.to_string());
        sessions.push(session);
    }

    // Assert
    sessions.dedup();
    assert_eq!(sessions.len(), 1, "the commands share one room key");
    let notice = alice
        .wait_for_event(
            &room,
            "the bot's notice that it could not decrypt a message",
            |ev| is_undecryptable_notice(ev, &bot),
            PROMPTLY,
        )
        .await;
    assert!(
        body(&notice).contains(alice.user_id().as_str()),
        "the notice names the sender: {notice}"
    );
    encryption(&alice, &room, &notice);
    // The last command's wait ends a little after the first's: watch past it.
    assert_count_stays(
        "notices that a message could not be decrypted",
        1,
        SHORT_KEY_WAIT + SETTLE,
        || async {
            alice
                .events_matching(&room, |ev| is_undecryptable_notice(ev, &bot))
                .len()
        },
    )
    .await;
    let answers = alice.events_matching(&room, |ev| {
        is_pong(ev, &bot) && commands.iter().any(|c| in_reply_to(ev) == Some(c.as_str()))
    });
    assert!(
        answers.is_empty(),
        "a command nobody could read ran: {answers:?}"
    );
    // Each message given up on is counted, though only the first was answered.
    bridge
        .wait_for_metric("st2_matrix_e2ee_undecryptable_total", FLOOD)
        .await;
    Ok(())
}

/// After an encrypted conversation and a stop, the bridge's log holds none of the room keys
/// involved, in full or just their secret ratchet in the encoding a to-device message carries
/// it in: neither the key of alice's that the bot received nor the bot's own that it sent her;
/// nor the appservice tokens, nor the `[secrets]` key its crypto store is sealed with.
///
/// Alice talks from a second device of hers whose encryption the test drives by hand
/// (`ManualDevice`), as it can list its room keys at once (an export from her matrix-sdk
/// client is sealed with a passphrase, which takes half a minute in a debug build).
pub async fn bridge_log_holds_no_room_key_or_secret_of_an_encrypted_conversation(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut sealing_key = [0u8; 32];
    rand::rng().fill_bytes(&mut sealing_key);
    let sealing_key = base64::engine::general_purpose::STANDARD.encode(sealing_key);
    let mut bridge = ctx.bridge();
    bridge.set_config("secrets", "key", sealing_key.as_str());
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    let device = ManualDevice::login(&alice).await?;
    let key = device.new_room_key(&room, &[&bot, alice.user_id()]).await?;
    device.release(key).await?;

    // Act
    let (command, _) = device.send_text(&room, "!st2 ping").await?;
    alice
        .wait_for_event(
            &room,
            "the bot's pong to the ping from alice's second device",
            |ev| is_pong_to(ev, &bot, command.as_str()),
            PROMPTLY,
        )
        .await;
    let keys = wait_until(
        "the bot's room key to reach alice's second device",
        PROMPTLY,
        || async {
            device.receive_to_device().await.ok()?;
            let keys = device.room_keys(&room).await.ok()?;
            // Her own key, and the one the bot sent the pong with.
            (keys.len() >= 2).then_some(keys)
        },
    )
    .await;
    bridge.stop().await?;

    // Assert
    let log = bridge.log();
    assert!(
        !log.trim().is_empty(),
        "the bridge logged something to check"
    );
    for (session, key) in &keys {
        assert!(
            !log.contains(key.as_str()),
            "room key {session} appears in the bridge's log"
        );
        assert!(
            !log.contains(&ratchet(key)),
            "the secret ratchet of room key {session} appears in the bridge's log"
        );
    }
    let registration = bridge.registration();
    for (what, secret) in [
        ("the as_token", registration.as_token.as_str()),
        ("the hs_token", registration.hs_token.as_str()),
        ("the [secrets] key", sealing_key.as_str()),
    ] {
        assert!(!log.contains(secret), "{what} appears in the bridge's log");
    }
    Ok(())
}

/// The secret part of an exported megolm key (base64), encoded so that it is found inside any
/// base64 encoding of that key at the same ratchet index: an export (version 1 byte, index 4,
/// ratchet 128, public key 32) and the session key of an `m.room_key` (the same, version 2,
/// plus a signature) share their bytes 1 to 164, so bytes 6 to 131 (inside the ratchet, and
/// starting on a 3-byte boundary) encode to the same 168 characters in both.
fn ratchet(exported: &str) -> String {
    let bytes = STANDARD_NO_PAD
        .decode(exported.trim_end_matches('='))
        .expect("an exported room key is base64");
    assert!(bytes.len() >= 132, "an exported room key is 165 bytes long");
    STANDARD_NO_PAD.encode(&bytes[6..132])
}

/// A whisper makes the bot open a direct chat with alice: the chat is encrypted from its
/// creation (the bot sets `m.room.encryption`), and the whisper, posted as she is invited or
/// just after she joins, arrives in it encrypted.
pub async fn direct_chat_the_bot_opens_for_a_whisper_is_encrypted(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), Vec::new()).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    bridge.wait_for_stream().await;

    // Act
    let listeners = st2.announce(
        "matrix",
        whisper(&room, alice.user_id(), "a whispered secret"),
    );
    assert_eq!(listeners, 1, "the bridge was listening to the stream");
    let direct = join_the_bots_direct_chat(&alice, &bot).await?.room_id;

    // Assert
    let whispered = alice
        .wait_for_event(
            &direct,
            "the whisper in the direct chat",
            |ev| is_notice_from(ev, &bot) && body(ev) == "a whispered secret",
            PROMPTLY,
        )
        .await;
    encryption(&alice, &direct, &whispered);
    assert!(
        made_encrypted_by(&alice, &direct, &bot),
        "the bot made the direct chat encrypted"
    );
    Ok(())
}

/// The admin room the bot creates for its admin is encrypted: its welcome arrives encrypted,
/// and an admin command alice sends there (encrypted by her client) is answered encrypted.
pub async fn admin_room_the_bot_creates_is_encrypted_and_commands_there_are_answered_encrypted(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let alice = ctx.user("alice").await?;
    let mut bridge = ctx.bridge();
    set_admins(&mut bridge, &[&alice]);
    bridge.start().await?;
    let bot = bridge.bot_user_id();

    // Act
    let admin_room = alice.join_when_invited(&bot, ADMIN_ROOM_NAME).await?;
    let status = alice.ask(&admin_room, &bot, "status").await?;

    // Assert
    let welcome = alice
        .wait_for_event(
            &admin_room,
            "the admin room's welcome",
            |ev| sender(ev) == bot.as_str() && body(ev).contains("admin room of st2-matrix"),
            PROMPTLY,
        )
        .await;
    encryption(&alice, &admin_room, &welcome);
    encryption(&alice, &admin_room, &status);
    assert!(
        made_encrypted_by(&alice, &admin_room, &bot),
        "the bot made the admin room encrypted"
    );
    Ok(())
}

/// With `[encryption] enabled = false`, invited into a room created encrypted, the bot joins
/// and posts exactly one notice saying it cannot read encrypted messages.
pub async fn with_encryption_off_an_encrypted_room_gets_one_notice_that_it_cannot_be_read(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.set_config("encryption", "enabled", false);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    let room = alice.create_encrypted_room().await?;

    // Act
    alice.invite(&room, &bot).await?;

    // Assert
    alice
        .wait_for_membership(&room, &bot, "join", PROMPTLY)
        .await;
    alice
        .wait_for_only_event(
            &room,
            "the bot's notice about encryption",
            |ev| is_notice_from(ev, &bot) && body(ev).contains("encrypted"),
            PROMPTLY,
        )
        .await;
    Ok(())
}
