//! The bridge's log is safe to share: it never contains the appservice tokens.

use serde_json::json;

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::ping::ping;

/// After start-up, a command round trip, a refused transaction and a shutdown (every path
/// that handles a token), the log holds neither the `as_token` nor the `hs_token`.
pub async fn bridge_log_never_contains_the_appservice_tokens(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;

    // Act
    ping(&alice, &room, &bot).await?;
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
