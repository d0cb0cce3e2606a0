//! A bridge killed (-9) while a command is in StackStorm's hands: after the restart the bridge
//! asks StackStorm whether the command ran, instead of sending it again or guessing. The
//! StackStorm double holds the command's request where the test wants the crash: after it
//! recorded the execution (StackStorm ran it; the answer never left) or before (StackStorm
//! never received it).

use st2_matrix_testkit::st2::{AliasHold, St2Double, St2Options};

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, is_reply_from};
use crate::harness::stackstorm::{self, St2Auth};
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};
use crate::results::{deploy_alias, is_result_of, shell_result};

/// Waits until StackStorm holds `n` alias execution requests.
async fn wait_for_held(st2: &St2Double, n: usize, what: &str) {
    wait_until(what, PROMPTLY, || async {
        (st2.held_alias_executions() == n).then_some(())
    })
    .await;
}

/// Alice's `!st2 deploy web` reaches StackStorm, which runs it; the bridge is killed before
/// StackStorm's answer reaches it. After the restart: one ack, marked as confirmed after a
/// restart, and once the execution finishes, one result; never "may or may not have run".
pub async fn command_stackstorm_ran_when_the_bridge_was_killed_is_confirmed_with_one_result(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    st2.hold_alias_executions(Some(AliasHold::AfterRecording));
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    wait_for_held(&st2, 1, "StackStorm to hold the command after running it").await;

    // Act: killed before the answer leaves StackStorm (the bridge waits 3 s for it).
    bridge.kill()?;
    st2.hold_alias_executions(None);
    bridge.start().await?;

    // Assert
    let ack = alice
        .wait_for_event(
            &room,
            "the ack, confirmed after the restart",
            |ev| {
                is_reply_from(ev, &bot, &command) && body(ev).contains("confirmed after a restart")
            },
            PROMPTLY,
        )
        .await;
    let executions = st2.executions();
    assert_eq!(
        executions.len(),
        1,
        "StackStorm ran it once: {executions:?}"
    );
    let execution = &executions[0];
    assert!(
        body(&ack).contains(&execution.id),
        "the ack names the execution: {ack}"
    );
    bridge.wait_for_stream().await;
    let finished = st2.finish_execution(&execution.id, "succeeded", shell_result("web is live"));
    assert_eq!(
        finished.delivered_to, 1,
        "announced to the bridge: {finished:?}"
    );
    let result = alice
        .wait_for_event(
            &room,
            "the result",
            |ev| is_result_of(ev, &bot, &command, &ack),
            PROMPTLY,
        )
        .await;
    assert!(
        body(&result).contains("Deployed web: web is live"),
        "{result}"
    );
    assert_count_stays("the bot's answers to the command", 2, SETTLE, || async {
        alice
            .events_matching(&room, |ev| is_reply_from(ev, &bot, &command))
            .len()
    })
    .await;
    let doubtful = alice.events_matching(&room, |ev| body(ev).contains("may or may not"));
    assert!(doubtful.is_empty(), "{doubtful:?}");
    Ok(())
}

/// Alice's `!st2 deploy web` is on its way to StackStorm, which has not recorded it, when the
/// bridge is killed: the request dies with the bridge. After the restart Alice is told it did
/// not run and that she may send it again; nothing ran.
pub async fn command_stackstorm_never_received_during_a_crash_is_answered_that_it_did_not_run(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    st2.hold_alias_executions(Some(AliasHold::BeforeRecording));
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    wait_for_held(
        &st2,
        1,
        "StackStorm to hold the command before recording it",
    )
    .await;

    // Act
    bridge.kill()?;
    // The dead bridge's connection closes, and the request with it.
    wait_for_held(&st2, 0, "the request to go with the bridge's connection").await;
    st2.hold_alias_executions(None);
    bridge.start().await?;

    // Assert
    let told = alice
        .wait_for_event(
            &room,
            "the answer that the command did not run",
            |ev| is_reply_from(ev, &bot, &command),
            PROMPTLY,
        )
        .await;
    assert!(
        body(&told).contains("did not run") && body(&told).contains("You may send it again"),
        "{told}"
    );
    assert!(
        st2.executions().is_empty(),
        "nothing ran, nothing was sent again"
    );
    assert_count_stays("the bot's answers to the command", 1, SETTLE, || async {
        alice
            .events_matching(&room, |ev| is_reply_from(ev, &bot, &command))
            .len()
    })
    .await;
    Ok(())
}
