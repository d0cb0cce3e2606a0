//! `PUT /_matrix/app/v1/transactions/{txnId}` pushed straight to the bridge, as Synapse would:
//! authentication and idempotence.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::wait::PROMPTLY;
use crate::ping::is_pong_to;

/// The same transaction (same id, same `!st2 ping` event) pushed twice: both pushes are
/// acknowledged, and the command is answered once.
pub async fn resent_transaction_is_answered_once(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange: a room the bot is in, and a command event only this test's pushes carry (its
    // id is made up, so Synapse itself never delivers it).
    let mut bridge = ctx.bridge();
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    let event_id = format!("$e2e-resent-{}", rand::random::<u64>());
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let transaction = json!({
        "events": [{
            "type": "m.room.message",
            "room_id": room,
            "sender": alice.user_id(),
            "event_id": event_id,
            "origin_server_ts": now_ms,
            "content": { "msgtype": "m.text", "body": "!st2 ping" },
            "unsigned": { "age": 1 },
        }],
    });
    // Not an integer: Synapse's own transaction ids for this slot count 1, 2, 3….
    let txn_id = format!("e2e-resent-{}", rand::random::<u64>());

    // Act
    let first = bridge
        .put_transaction(&txn_id, Some(bridge.hs_token()), &transaction)
        .await?;
    let second = bridge
        .put_transaction(&txn_id, Some(bridge.hs_token()), &transaction)
        .await?;

    // Assert
    assert_eq!(first, (200, json!({})), "the first push is acknowledged");
    assert_eq!(
        second,
        (200, json!({})),
        "the repeated push is acknowledged too"
    );
    alice
        .wait_for_only_event(
            &room,
            "the pong to the pushed command",
            |ev| is_pong_to(ev, &bot, &event_id),
            PROMPTLY,
        )
        .await;
    Ok(())
}

/// A transaction with the wrong `hs_token` is refused: 403 `M_FORBIDDEN`.
pub async fn wrong_hs_token_is_refused_with_403(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.start().await?;
    let wrong = format!("{}-not", bridge.hs_token());

    // Act
    let (status, body) = bridge
        .put_transaction("e2e-wrong-token", Some(&wrong), &json!({ "events": [] }))
        .await?;

    // Assert
    assert_eq!(status, 403, "a wrong hs_token is forbidden: {body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    Ok(())
}

/// A transaction without any `hs_token` is refused: 401 `M_MISSING_TOKEN`.
pub async fn missing_hs_token_is_refused_with_401(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.start().await?;

    // Act
    let (status, body) = bridge
        .put_transaction("e2e-no-token", None, &json!({ "events": [] }))
        .await?;

    // Assert
    assert_eq!(status, 401, "a missing hs_token is unauthorized: {body}");
    assert_eq!(body["errcode"], "M_MISSING_TOKEN", "{body}");
    Ok(())
}
