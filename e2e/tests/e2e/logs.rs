//! The bridge's log is safe to share: it never contains the appservice tokens.

use serde_json::json;

use crate::harness::Ctx;
use crate::harness::events::in_reply_to;
use crate::harness::wait::PROMPTLY;
use crate::ping::is_pong;

/// After start-up, a command round trip, a refused transaction and a shutdown (every path
/// that handles a token), the log holds neither the `as_token` nor the `hs_token`.
pub async fn bridge_log_never_contains_the_appservice_tokens(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;

    // Act
    let command = alice.send_text(&room, "!st2 ping").await?;
    alice
        .wait_for_event(
            &room,
            "the bot's pong",
            |ev| is_pong(ev, &bot) && in_reply_to(ev) == Some(command.as_str()),
            PROMPTLY,
        )
        .await;
    let wrong = format!("{}-not", bridge.hs_token());
    bridge
        .put_transaction("e2e-log-check", Some(&wrong), &json!({ "events": [] }))
        .await?;
    bridge.stop().await?;

    // Assert
    let log = bridge.log();
    assert!(
        !log.trim().is_empty(),
        "the bridge logged something to check"
    );
    let registration = bridge.registration();
    assert!(
        !log.contains(&registration.as_token),
        "the as_token appears in the bridge's log"
    );
    assert!(
        !log.contains(&registration.hs_token),
        "the hs_token appears in the bridge's log"
    );
    Ok(())
}
