//! A bridge killed with -9 loses nothing: Synapse holds what it could not deliver and the
//! restarted bridge acts on it exactly once.

use serde_json::Value as Json;

use crate::harness::Ctx;
use crate::harness::events::in_reply_to;
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays};
use crate::ping::is_pong;

/// Kill the bridge (SIGKILL), send `!st2 ping` while it is down, start it again: the command
/// is answered, once.
pub async fn command_sent_while_the_bridge_is_down_is_answered_once_after_restart(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;
    bridge.kill()?;

    // Act
    let command = alice.send_text(&room, "!st2 ping").await?;
    // Once the sender's own sync has it, the event is stored and Synapse's push to the
    // (dead) appservice is under way: from here on Synapse holds it for the bridge.
    alice
        .wait_for_event(
            &room,
            "the command in the sender's own sync",
            |ev| ev["event_id"] == command.as_str(),
            PROMPTLY,
        )
        .await;
    bridge.restart().await?;

    // Assert
    let answers_command =
        |ev: &Json| is_pong(ev, &bot) && in_reply_to(ev) == Some(command.as_str());
    alice
        .wait_for_event(
            &room,
            "the pong after the restart",
            answers_command,
            PROMPTLY,
        )
        .await;
    assert_count_stays("pongs to the command", 1, SETTLE, || async {
        alice.events_matching(&room, answers_command).len()
    })
    .await;
    Ok(())
}
