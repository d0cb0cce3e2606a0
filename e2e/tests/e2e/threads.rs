//! Commands sent inside a thread are answered inside that thread.

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{in_reply_to, thread_root};
use crate::harness::wait::PROMPTLY;
use crate::ping::is_pong;

/// `!st2 ping` as a thread message: the pong is in the same thread (`rel_type: m.thread`,
/// the thread's root) and replies to the command.
pub async fn ping_in_a_thread_is_answered_in_that_thread(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    let root = alice
        .send_text(&room, "let's check the bridge in a thread")
        .await?;

    // Act
    let command = alice.send_thread_reply(&room, &root, "!st2 ping").await?;

    // Assert
    let reply = alice
        .wait_for_event(&room, "the bot's pong", |ev| is_pong(ev, &bot), PROMPTLY)
        .await;
    assert_eq!(
        thread_root(&reply),
        Some(root.as_str()),
        "the pong is in the command's thread: {reply}"
    );
    assert_eq!(
        in_reply_to(&reply),
        Some(command.as_str()),
        "the pong replies to the command: {reply}"
    );
    Ok(())
}
