//! `!st2 ping` in a plain room: invite the bot, it joins, the command is answered as a reply.

use matrix_sdk::ruma::{OwnedEventId, RoomId, UserId};
use serde_json::Value as Json;

use crate::harness::Ctx;
use crate::harness::bridge::version;
use crate::harness::events::{body, in_reply_to, is_notice_from, thread_root};
use crate::harness::user::User;
use crate::harness::wait::PROMPTLY;

/// Whether `event` is `bot`'s answer to a ping: a notice starting with `pong`.
pub fn is_pong(event: &Json, bot: &UserId) -> bool {
    is_notice_from(event, bot) && body(event).starts_with("pong")
}

/// Whether `event` is `bot`'s pong replying to the ping `command` (an event id: some tests
/// make theirs up).
pub fn is_pong_to(event: &Json, bot: &UserId, command: &str) -> bool {
    is_pong(event, bot) && in_reply_to(event) == Some(command)
}

/// `user` says `!st2 ping` in `room`; returns the command's id and `bot`'s pong replying to it.
pub async fn ping(
    user: &User,
    room: &RoomId,
    bot: &UserId,
) -> anyhow::Result<(OwnedEventId, Json)> {
    let command = user.send_text(room, "!st2 ping").await?;
    let pong = user
        .wait_for_event(
            room,
            &format!("the bot's pong to {}'s ping", user.user_id()),
            |ev| is_pong_to(ev, bot, command.as_str()),
            PROMPTLY,
        )
        .await;
    Ok((command, pong))
}

/// Invite the bot: it joins; say `!st2 ping`: a `pong` notice with the version arrives as a
/// reply to the command (and not in a thread, as the command was not).
pub async fn invited_bot_joins_and_answers_ping_with_a_reply(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    let room = alice.create_room().await?;

    // Act
    alice.invite(&room, &bot).await?;
    alice
        .wait_for_membership(&room, &bot, "join", PROMPTLY)
        .await;
    let command = alice.send_text(&room, "!st2 ping").await?;

    // Assert
    let reply = alice
        .wait_for_event(&room, "the bot's pong", |ev| is_pong(ev, &bot), PROMPTLY)
        .await;
    assert_eq!(
        in_reply_to(&reply),
        Some(command.as_str()),
        "the pong replies to the command: {reply}"
    );
    assert!(
        body(&reply).contains(&version()),
        "the pong names version {}: {reply}",
        version()
    );
    assert_eq!(
        thread_root(&reply),
        None,
        "a command outside a thread is answered outside one: {reply}"
    );
    Ok(())
}
