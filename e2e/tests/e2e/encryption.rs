//! Encrypted rooms: the bridge cannot read them yet, and says so once instead of staying silent.

use crate::harness::Ctx;
use crate::harness::events::{body, is_notice_from};
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays};

/// Invited into a room created with encryption on, the bot joins and posts exactly one notice
/// saying encrypted rooms are not supported.
pub async fn encrypted_room_gets_one_notice_that_encryption_is_unsupported(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
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
    let about_encryption =
        |ev: &serde_json::Value| is_notice_from(ev, &bot) && body(ev).contains("encrypted");
    alice
        .wait_for_event(
            &room,
            "the bot's notice about encryption",
            about_encryption,
            PROMPTLY,
        )
        .await;
    assert_count_stays("notices about encryption", 1, SETTLE, || async {
        alice.events_matching(&room, about_encryption).len()
    })
    .await;
    Ok(())
}
