//! Approvals: a command of an alias that needs approval waits in its thread until a second
//! person approves it with ✅, then runs as the person who asked; rejected or expired, it never
//! runs; a request survives a restart of the bridge.

use std::time::Duration;

use matrix_sdk::ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::{St2Double, St2Options};

use crate::harness::Ctx;
use crate::harness::bridge::Bridge;
use crate::harness::events::{body, in_reply_to, is_notice_from, is_reply_from, sender};
use crate::harness::stackstorm::{self, St2Auth, ops_deploy};
use crate::harness::user::User;
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};

/// `ops.*` commands need one approval by alice or bob (alice, who asks in these tests, is
/// listed too: her own approval must not count), within `timeout`.
fn require_approval(bridge: &mut Bridge, alice: &User, bob: &User, timeout: &str) {
    let mut rule = toml::Table::new();
    rule.insert("aliases".into(), vec![toml::Value::from("ops.*")].into());
    rule.insert(
        "approvers".into(),
        vec![
            toml::Value::from(alice.user_id().as_str()),
            toml::Value::from(bob.user_id().as_str()),
        ]
        .into(),
    );
    rule.insert("timeout".into(), timeout.into());
    bridge.patch_config(|config| {
        config.insert("approvals".into(), vec![toml::Value::from(rule)].into());
    });
}

/// Alice, bob and the bot in a room of alice's, with the bridge started as `configure` sets
/// it up against a StackStorm double with `ops.deploy`.
struct Setup {
    st2: St2Double,
    bridge: Bridge,
    alice: User,
    bob: User,
    room: matrix_sdk::ruma::OwnedRoomId,
    bot: matrix_sdk::ruma::OwnedUserId,
}

async fn setup(ctx: &Ctx, timeout: &str) -> anyhow::Result<Setup> {
    setup_room(ctx, timeout, false).await
}

/// As [`setup`], in an end-to-end encrypted room when `encrypted`.
async fn setup_room(ctx: &Ctx, timeout: &str, encrypted: bool) -> anyhow::Result<Setup> {
    let st2 = stackstorm::double(St2Options::default(), vec![ops_deploy()]).await;
    let alice = ctx.user("alice").await?;
    let bob = ctx.user("bob").await?;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    require_approval(&mut bridge, &alice, &bob, timeout);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let room = if encrypted {
        alice.create_encrypted_room_with(&bot).await?
    } else {
        alice.create_room_with(&bot).await?
    };
    alice.invite(&room, bob.user_id()).await?;
    bob.join(&room).await?;
    alice
        .wait_for_membership(&room, bob.user_id(), "join", PROMPTLY)
        .await;
    bridge.wait_for_aliases(1).await;
    Ok(Setup {
        st2,
        bridge,
        alice,
        bob,
        room,
        bot,
    })
}

/// The bot's request for approval of `command`: its event id and its approval id.
async fn request_of(
    user: &User,
    room: &RoomId,
    bot: &UserId,
    command: &EventId,
) -> (OwnedEventId, String, Json) {
    let request = user
        .wait_for_event(
            room,
            "the request for approval",
            |ev| is_reply_from(ev, bot, command) && body(ev).contains("needs approval"),
            PROMPTLY,
        )
        .await;
    let text = body(&request).to_owned();
    let start = text
        .find("!st2 approve ")
        .unwrap_or_else(|| panic!("the request says how to approve: {text}"))
        + "!st2 approve ".len();
    let id = text[start..start + 6].to_owned();
    let event_id: OwnedEventId = request["event_id"]
        .as_str()
        .expect("an event id")
        .try_into()
        .expect("a valid event id");
    (event_id, id, request)
}

/// `user` reacts with `key` to `target`, as Element does when one clicks a reaction.
async fn react(user: &User, room: &RoomId, target: &EventId, key: &str) -> anyhow::Result<()> {
    user.room(room)?
        .send_raw(
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}),
        )
        .await?;
    Ok(())
}

/// A notice of `bot` in `room` whose body contains `needle`, as `user` sees it.
async fn notice_with(user: &User, room: &RoomId, bot: &UserId, needle: &str) -> Json {
    user.wait_for_event(
        room,
        &format!("the bot's notice with {needle:?}"),
        |ev| {
            is_notice_from(ev, bot)
                && ev["content"]["m.relates_to"]["rel_type"] != "m.replace"
                && body(ev).contains(needle)
        },
        PROMPTLY,
    )
    .await
}

/// Alice's `!st2 deploy web` needs approval: the bot asks in its thread and adds ✅ and ❌;
/// nothing runs. Her own ✅ does not count (she is told so); bob's ✅ runs it, once, as alice,
/// acknowledged as a reply to her command.
pub async fn approval_granted_by_a_second_person_runs_the_command_as_its_requester(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let Setup {
        st2,
        bridge: _bridge,
        alice,
        bob,
        room,
        bot,
    } = setup(&ctx, "30m").await?;

    // Act
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    let (request, id, request_event) = request_of(&bob, &room, &bot, &command).await;

    // Assert
    assert!(
        body(&request_event).contains("`ops.deploy`")
            && body(&request_event).contains("`service` = `web`")
            && body(&request_event).contains(bob.user_id().as_str()),
        "the request says what will run and who may approve: {request_event}"
    );
    for key in ["✅", "❌"] {
        bob.wait_for_event(
            &room,
            &format!("the bot's {key} on its request"),
            |ev| {
                ev["type"] == "m.reaction"
                    && sender(ev) == bot.as_str()
                    && ev["content"]["m.relates_to"]["event_id"] == request.as_str()
                    && ev["content"]["m.relates_to"]["key"] == key
            },
            PROMPTLY,
        )
        .await;
    }
    assert!(st2.executions().is_empty(), "nothing ran before approval");

    // Act: alice approves her own command
    react(&alice, &room, &request, "✅").await?;
    notice_with(&alice, &room, &bot, "your own approval does not count").await;
    assert_count_stays("executions after alice's own ✅", 0, SETTLE, || async {
        st2.executions().len()
    })
    .await;

    // Act: bob approves
    react(&bob, &room, &request, "✅").await?;

    // Assert
    notice_with(
        &alice,
        &room,
        &bot,
        &format!("Request `{id}`: ✅ Approved by {}", bob.user_id()),
    )
    .await;
    let ack = alice
        .wait_for_event(
            &room,
            "the ack of the approved command",
            |ev| {
                is_reply_from(ev, &bot, &command)
                    && ev["event_id"] != request.as_str()
                    && !body(ev).contains("approv")
            },
            PROMPTLY,
        )
        .await;
    let executions = st2.executions();
    assert_eq!(executions.len(), 1, "it ran once: {ack}");
    assert_eq!(
        executions[0].request["user"],
        alice.user_id().as_str(),
        "it ran on behalf of alice, who asked, not bob, who approved"
    );
    assert_eq!(
        executions[0].execution["parameters"],
        json!({"service": "web"})
    );
    assert_count_stays("executions", 1, SETTLE, || async { st2.executions().len() }).await;
    Ok(())
}

/// Bob's ❌ on the request rejects it: the thread says who rejected it, and a later ✅ changes
/// nothing; it never runs.
pub async fn approval_rejected_by_an_approver_never_runs(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let Setup {
        st2,
        bridge: _bridge,
        alice,
        bob,
        room,
        bot,
    } = setup(&ctx, "30m").await?;
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    let (request, _, _) = request_of(&alice, &room, &bot, &command).await;

    // Act
    react(&bob, &room, &request, "❌").await?;

    // Assert
    let rejected = notice_with(
        &alice,
        &room,
        &bot,
        &format!("Rejected by {}", bob.user_id()),
    )
    .await;
    assert!(body(&rejected).contains("it does not run"), "{rejected}");
    let edit = alice
        .wait_for_event(
            &room,
            "the edit of the request",
            |ev| {
                ev["content"]["m.relates_to"]["rel_type"] == "m.replace"
                    && ev["content"]["m.relates_to"]["event_id"] == request.as_str()
            },
            PROMPTLY,
        )
        .await;
    assert!(
        edit["content"]["m.new_content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("Rejected")),
        "the request itself now says it was rejected: {edit}"
    );
    react(&bob, &room, &request, "✅").await?;
    assert_count_stays("executions", 0, SETTLE, || async { st2.executions().len() }).await;
    Ok(())
}

/// Nobody answers within the rule's 3 s: the request expires, the thread says so (mentioning
/// alice), and bob's ✅ after that does not run it.
pub async fn approval_nobody_gives_expires_and_the_command_never_runs(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let Setup {
        st2,
        bridge: _bridge,
        alice,
        bob,
        room,
        bot,
    } = setup(&ctx, "3s").await?;
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    let (request, _, _) = request_of(&alice, &room, &bot, &command).await;

    // Act: nothing, for the timeout

    // Assert
    let expired = notice_with(&alice, &room, &bot, "Expired: nobody approved it").await;
    assert_eq!(
        expired["content"]["m.mentions"]["user_ids"],
        json!([alice.user_id()]),
        "alice is told: {expired}"
    );
    assert_eq!(
        in_reply_to(&expired),
        Some(command.as_str()),
        "in her command's thread: {expired}"
    );
    react(&bob, &room, &request, "✅").await?;
    assert_count_stays("executions", 0, SETTLE, || async { st2.executions().len() }).await;
    Ok(())
}

/// The bridge restarts while a request waits: bob's ✅ after the restart runs the command,
/// exactly once, and the restart after that runs nothing again.
pub async fn approval_given_after_a_restart_runs_the_command_once(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let Setup {
        st2,
        mut bridge,
        alice,
        bob,
        room,
        bot,
    } = setup(&ctx, "30m").await?;
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    let (request, _, _) = request_of(&alice, &room, &bot, &command).await;
    // The bot's ❌, the last thing it queued with the request, is out before the restart.
    alice
        .wait_for_event(
            &room,
            "the bot's ❌ on its request",
            |ev| {
                ev["type"] == "m.reaction"
                    && sender(ev) == bot.as_str()
                    && ev["content"]["m.relates_to"]["key"] == "❌"
            },
            PROMPTLY,
        )
        .await;

    // Act
    bridge.restart().await?;
    react(&bob, &room, &request, "✅").await?;

    // Assert
    wait_until("the approved command to run", PROMPTLY, || async {
        (st2.executions().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        st2.executions()[0].request["user"],
        alice.user_id().as_str()
    );
    bridge.restart().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_count_stays("executions", 1, SETTLE, || async { st2.executions().len() }).await;
    assert!(
        !bridge.log().contains("command interrupted by a restart"),
        "the approved command was not caught mid-flight"
    );
    Ok(())
}

/// In an end-to-end encrypted room: the request comes encrypted, bob's encrypted ✅ is read by
/// the bot's device, and the command runs once as alice.
pub async fn approval_in_an_encrypted_room_is_given_by_an_encrypted_reaction(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let Setup {
        st2,
        bridge: _bridge,
        alice,
        bob,
        room,
        bot,
    } = setup_room(&ctx, "30m", true).await?;
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    let (request, _, request_event) = request_of(&bob, &room, &bot, &command).await;
    assert!(
        bob.encryption_of(&room, &request_event).is_some(),
        "the request arrived encrypted: {request_event}"
    );

    // Act
    react(&bob, &room, &request, "✅").await?;

    // Assert
    notice_with(
        &alice,
        &room,
        &bot,
        &format!("Approved by {}", bob.user_id()),
    )
    .await;
    wait_until("the approved command to run", PROMPTLY, || async {
        (st2.executions().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        st2.executions()[0].request["user"],
        alice.user_id().as_str()
    );
    assert_count_stays("executions", 1, SETTLE, || async { st2.executions().len() }).await;
    Ok(())
}
