//! Sends in doubt: a message that reached Synapse without its answer reaching the bridge is
//! not posted twice, even when Synapse restarts (and forgets the transaction id) before the
//! bridge tries again; and a backlog in one room drains without sends falling into doubt.

use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::bridge::{Bridge, WebhookBody};
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, is_notice_from};
use crate::harness::proxy::Proxy;
use crate::harness::stackstorm::{self, St2Auth, alias, started_execution};
use crate::harness::user::User;
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};
use crate::results::shell_result;

/// The bridge waits this long for Synapse's answer to a send (`[homeserver] timeout`).
const SEND_TIMEOUT: &str = "4s";

/// The series the outbox counts a message in doubt that it found on the homeserver under.
const FOUND: &str = "st2_matrix_send_in_doubt_total{outcome=\"delivered\"}";

/// A test's Synapse, a proxy in front of it, and a bridge on that proxy (not started).
async fn behind_a_proxy(
    synapse: &crate::harness::private_synapse::PrivateSynapse,
) -> anyhow::Result<(Proxy, Bridge)> {
    let mut bridge = synapse.bridge();
    let upstream = bridge
        .config_str("homeserver", "url")
        .expect("the slot's homeserver url");
    let proxy = Proxy::start(&upstream).await?;
    bridge.set_config("homeserver", "url", proxy.url());
    bridge.set_config("homeserver", "timeout", SEND_TIMEOUT);
    bridge.set_config("outbox", "max_backoff", "2s");
    Ok((proxy, bridge))
}

/// Events in `room` whose body contains `text`, as alice sees them.
fn count_with(alice: &User, room: &matrix_sdk::ruma::RoomId, text: &str) -> usize {
    alice
        .events_matching(room, |ev| body(ev).contains(text))
        .len()
}

/// A command's result reaches Synapse, but Synapse's answer is lost (the bridge times out),
/// and Synapse restarts before the bridge tries again, forgetting the transaction id: the
/// bridge finds its message among its recent events instead of posting it a second time.
pub async fn a_result_whose_answer_was_lost_before_a_synapse_restart_is_posted_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut synapse = ctx.private_synapse(1).await?;
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![alias("ops", "echo", "echo {{text}}", "Say something.")],
    )
    .await;
    let (proxy, mut bridge) = behind_a_proxy(&synapse).await?;
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = synapse.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let ack = alice.ask(&room, &bot, "!st2 echo lost").await?;
    let execution = started_execution(&st2, &ack);

    // Act
    proxy.lose_answers_to_sends_containing("answer-lost-once");
    st2.finish_execution(&execution.id, "succeeded", shell_result("answer-lost-once"));
    wait_until("Synapse to store the result", PROMPTLY, || async {
        (!proxy.lost().is_empty()).then_some(())
    })
    .await;
    // Before the bridge's wait for the answer runs out.
    synapse.stop().await?;
    synapse.start_again().await?;

    // Assert
    // At least the result; messages sent just before it whose success the outbox had not
    // recorded yet (it records them in batches) are found the same way.
    wait_until("the message in doubt to be found", PROMPTLY, || async {
        (bridge.metric(FOUND).await? >= 1.0).then_some(())
    })
    .await;
    let follow_up = alice.ask(&room, &bot, "!st2 ping").await?;
    assert!(is_notice_from(&follow_up, &bot), "{follow_up}");
    assert_count_stays("results in the room", 1, SETTLE, || async {
        count_with(&alice, &room, "answer-lost-once")
    })
    .await;
    Ok(())
}

/// The bridge is killed (-9) while Synapse holds its result (stored, answer not yet sent),
/// then Synapse restarts: the bridge that starts again finds the message it had in flight and
/// does not post it again.
pub async fn a_result_in_flight_when_the_bridge_is_killed_is_posted_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut synapse = ctx.private_synapse(1).await?;
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![alias("ops", "echo", "echo {{text}}", "Say something.")],
    )
    .await;
    let (proxy, mut bridge) = behind_a_proxy(&synapse).await?;
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = synapse.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let ack = alice.ask(&room, &bot, "!st2 echo killed").await?;
    let execution = started_execution(&st2, &ack);

    // Act
    proxy.lose_answers_to_sends_containing("in-flight-at-the-kill");
    st2.finish_execution(
        &execution.id,
        "succeeded",
        shell_result("in-flight-at-the-kill"),
    );
    wait_until("Synapse to store the result", PROMPTLY, || async {
        (!proxy.lost().is_empty()).then_some(())
    })
    .await;
    bridge.kill()?;
    synapse.stop().await?;
    synapse.start_again().await?;
    bridge.start().await?;

    // Assert
    // At least the result; messages sent just before it whose success the outbox had not
    // recorded yet (it records them in batches) are found the same way.
    wait_until("the message in doubt to be found", PROMPTLY, || async {
        (bridge.metric(FOUND).await? >= 1.0).then_some(())
    })
    .await;
    let follow_up = alice.ask(&room, &bot, "!st2 ping").await?;
    assert!(is_notice_from(&follow_up, &bot), "{follow_up}");
    assert_count_stays("results in the room", 1, SETTLE, || async {
        count_with(&alice, &room, "in-flight-at-the-kill")
    })
    .await;
    Ok(())
}

/// Messages queued for one room in a burst.
const BURST: usize = 800;

/// 800 messages are queued for one room in a burst (webhook results, posted as fast as the
/// bridge accepts them): they all arrive, in order, once each, and none of the sends times
/// out into doubt: the outbox sends a room's messages one after another.
pub async fn eight_hundred_messages_for_one_room_drain_in_order_without_sends_in_doubt(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.set_config("webhook", "secret", SECRET);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;

    // Act
    for i in 0..BURST {
        let (status, answer) = bridge
            .post_webhook(
                "/chatops/message",
                Some(SECRET),
                WebhookBody::Json(json!({"channel": room, "message": format!("burst {i:04}")})),
            )
            .await?;
        assert_eq!(status, 202, "accepted: {answer}");
    }

    // Assert
    let burst = |ev: &Json| is_notice_from(ev, &bot) && body(ev).starts_with("burst ");
    wait_until(
        format!("{BURST} messages in the room"),
        // Minutes on two busy cores; the harness gives this test a longer limit.
        PROMPTLY * 10,
        || async { (alice.events_matching(&room, burst).len() >= BURST).then_some(()) },
    )
    .await;
    let seen: Vec<String> = alice
        .events_matching(&room, burst)
        .iter()
        .map(|ev| body(ev).to_owned())
        .collect();
    let expected: Vec<String> = (0..BURST).map(|i| format!("burst {i:04}")).collect();
    assert!(
        seen == expected,
        "each message once, in order ({} seen)",
        seen.len()
    );
    let sends_in_doubt = bridge
        .metric("st2_matrix_send_failures_total{kind=\"in_doubt\"}")
        .await
        .unwrap_or(0.0);
    assert_eq!(sends_in_doubt, 0.0, "no send timed out into doubt");
    Ok(())
}

/// The webhook secret of the burst test.
const SECRET: &str = "e2e-burst-secret-0123456789";
