//! Only inviters matching `[bridge] invite_allow` get the bot; others are declined.

use crate::harness::Ctx;
use crate::harness::wait::PROMPTLY;

/// An invite from a user `invite_allow` does not match is declined: the bot's membership goes
/// from invite to leave and never to join.
pub async fn invite_from_a_user_outside_invite_allow_is_declined(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange: only users named bob-… may invite; alice-… may not.
    let mut bridge = ctx.bridge();
    bridge.set_invite_allow(&["@bob*:localhost"]);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    let room = alice.create_room().await?;

    // Act
    alice.invite(&room, &bot).await?;

    // Assert
    alice
        .wait_for_membership(&room, &bot, "leave", PROMPTLY)
        .await;
    assert_eq!(
        alice.membership_history(&room, &bot),
        ["invite", "leave"],
        "the bot declined the invite without joining first"
    );
    Ok(())
}
