//! A bridge killed with -9 loses nothing: Synapse holds what it could not deliver and the
//! restarted bridge acts on it exactly once.

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::wait::PROMPTLY;
use crate::ping::is_pong_to;

/// Kill the bridge (SIGKILL), send `!st2 ping` while it is down, start it again: the command
/// is answered, once.
pub async fn command_sent_while_the_bridge_is_down_is_answered_once_after_restart(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
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
    alice
        .wait_for_only_event(
            &room,
            "the pong after the restart",
            |ev| is_pong_to(ev, &bot, command.as_str()),
            PROMPTLY,
        )
        .await;
    Ok(())
}
