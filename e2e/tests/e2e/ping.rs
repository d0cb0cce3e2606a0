//! `!st2 ping` in a plain room: invite the bot, it joins, the command is answered as a reply.

use matrix_sdk::ruma::UserId;
use serde_json::Value as Json;

use crate::harness::Ctx;
use crate::harness::bridge::version;
use crate::harness::events::{body, in_reply_to, is_notice_from, thread_root};
use crate::harness::wait::PROMPTLY;

/// Whether `event` is `bot`'s answer to a ping: a notice starting with `pong`.
pub fn is_pong(event: &Json, bot: &UserId) -> bool {
    is_notice_from(event, bot) && body(event).starts_with("pong")
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
