//! Sends in doubt: a message that reached Synapse without its answer reaching the bridge is
//! not posted twice, even when Synapse restarts (and forgets the transaction id) before the
//! bridge tries again; and a backlog in one room drains without sends falling into doubt.

use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::bridge::{Bridge, WebhookBody};
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, is_notice_from};
use crate::harness::private_synapse::PrivateSynapse;
use crate::harness::proxy::Proxy;
use crate::harness::stackstorm::{self, St2Auth, alias, started_execution};
use crate::harness::user::User;
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};
use crate::results::shell_result;

/// The bridge waits this long for Synapse's answer to a send (`[homeserver] timeout`).
const SEND_TIMEOUT: &str = "4s";

/// The series the outbox counts a message in doubt that it found on the homeserver under.
const FOUND: &str = "st2_matrix_send_in_doubt_total{outcome=\"delivered\"}";

/// A command run through a bridge whose homeserver is behind a [`Proxy`], its result not yet
/// announced. Field order is drop order: the Synapse goes last.
struct Arranged {
    bridge: Bridge,
    proxy: Proxy,
    st2: st2_matrix_testkit::st2::St2Double,
    alice: User,
    room: matrix_sdk::ruma::OwnedRoomId,
    bot: matrix_sdk::ruma::OwnedUserId,
    /// The execution `!st2 echo <word>` started.
    execution: String,
    synapse: PrivateSynapse,
}

/// A test's Synapse, a proxy in front of it, a bridge on that proxy (waiting `SEND_TIMEOUT`
/// for each answer) and alice's `!st2 echo <word>`, started and acknowledged.
async fn arrange(ctx: &Ctx, word: &str) -> anyhow::Result<Arranged> {
    let synapse = ctx.private_synapse(1).await?;
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![alias("ops", "echo", "echo {{text}}", "Say something.")],
    )
    .await;
    let mut bridge = synapse.bridge();
    let upstream = bridge
        .config_str("homeserver", "url")
        .expect("the slot's homeserver url");
    let proxy = Proxy::start(&upstream).await?;
    bridge.set_config("homeserver", "url", proxy.url());
    bridge.set_config("homeserver", "timeout", SEND_TIMEOUT);
    bridge.set_config("outbox", "max_backoff", "2s");
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = synapse.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let ack = alice.ask(&room, &bot, &format!("!st2 echo {word}")).await?;
    let execution = started_execution(&st2, &ack).id;
    Ok(Arranged {
        bridge,
        proxy,
        st2,
        alice,
        room,
        bot,
        execution,
        synapse,
    })
}

/// Finishes the execution with `marker` as its output, and waits until Synapse has stored the
/// result while its answer to the bridge is lost.
async fn result_stored_answer_lost(arranged: &Arranged, marker: &str) {
    arranged.proxy.lose_answers_to_sends_containing(marker);
    arranged
        .st2
        .finish_execution(&arranged.execution, "succeeded", shell_result(marker));
    wait_until("Synapse to store the result", PROMPTLY, || async {
        (!arranged.proxy.lost().is_empty()).then_some(())
    })
    .await;
}

/// Waits until the outbox found at least one message in doubt on the homeserver (the result;
/// messages sent just before it whose success it had not recorded yet are found the same
/// way), then checks that alice sees `marker` once, after a later answer.
async fn posted_once(arranged: &Arranged, marker: &str) -> anyhow::Result<()> {
    let Arranged {
        bridge,
        alice,
        room,
        bot,
        ..
    } = arranged;
    wait_until("the message in doubt to be found", PROMPTLY, || async {
        (bridge.metric(FOUND).await? >= 1.0).then_some(())
    })
    .await;
    let follow_up = alice.ask(room, bot, "!st2 ping").await?;
    assert!(is_notice_from(&follow_up, bot), "{follow_up}");
    assert_count_stays("results in the room", 1, SETTLE, || async {
        count_with(alice, room, marker)
    })
    .await;
    Ok(())
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
    let mut arranged = arrange(&ctx, "lost").await?;

    // Act
    result_stored_answer_lost(&arranged, "answer-lost-once").await;
    // Before the bridge's wait for the answer runs out.
    arranged.synapse.stop().await?;
    arranged.synapse.start_again().await?;

    // Assert
    posted_once(&arranged, "answer-lost-once").await
}

/// The bridge is killed (-9) while Synapse holds its result (stored, answer not yet sent),
/// then Synapse restarts: the bridge that starts again finds the message it had in flight and
/// does not post it again.
pub async fn a_result_in_flight_when_the_bridge_is_killed_is_posted_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut arranged = arrange(&ctx, "killed").await?;

    // Act
    result_stored_answer_lost(&arranged, "in-flight-at-the-kill").await;
    arranged.bridge.kill()?;
    arranged.synapse.stop().await?;
    arranged.synapse.start_again().await?;
    arranged.bridge.start().await?;

    // Assert
    posted_once(&arranged, "in-flight-at-the-kill").await
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
