//! Results of StackStorm executions back in Matrix: in the command's thread, whispered by
//! direct chat, and neither lost nor posted twice when StackStorm's stream or the homeserver
//! goes away for a while.

use std::time::Duration;

use matrix_sdk::ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::{RecordedExecution, St2Double, St2Options};
use tokio::time::{Instant, sleep_until};

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, in_reply_to, is_notice_from, is_reply_from, thread_root};
use crate::harness::stackstorm::{self, St2Auth, alias, ops_deploy, started_execution};
use crate::harness::user::{Invite, User};
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};

/// The `result.format` of `ops.deploy`, which StackStorm renders when the execution finishes:
/// `Deployed web: <stdout>`.
const DEPLOY_RESULT: &str =
    "Deployed {{ execution.parameters.service }}: {{ execution.result.stdout }}";

/// [`ops_deploy`] (`deploy {{service}}`), its result rendered with [`DEPLOY_RESULT`].
pub fn deploy_alias() -> Json {
    let mut deploy = ops_deploy();
    deploy["result"] = json!({ "format": DEPLOY_RESULT });
    deploy
}

/// What a `core.local` execution that printed `stdout` returns.
pub fn shell_result(stdout: &str) -> Json {
    json!({ "stdout": stdout, "stderr": "", "return_code": 0, "succeeded": true, "failed": false })
}

/// The bot's answers to `command` other than its ack `ack`: its results.
pub fn is_result_of(event: &Json, bot: &UserId, command: &EventId, ack: &Json) -> bool {
    is_reply_from(event, bot, command) && event["event_id"] != ack["event_id"]
}

/// Alice's `!st2 deploy web`, acknowledged: where the tests of its result start.
pub struct Deploy {
    /// The command.
    pub command: OwnedEventId,
    /// The bot's ack, replying to it: results are the bot's other replies.
    pub ack: Json,
    /// The execution StackStorm started for it.
    pub execution: RecordedExecution,
}

/// `alice` says `!st2 deploy web` in `room` and waits for `bot`'s ack. StackStorm has started
/// the execution by then: the bridge acks with StackStorm's answer.
pub async fn deploy_web(
    st2: &St2Double,
    alice: &User,
    room: &RoomId,
    bot: &UserId,
) -> anyhow::Result<Deploy> {
    let command = alice.send_text(room, "!st2 deploy web").await?;
    let ack = alice
        .wait_for_event(
            room,
            "the ack of the command",
            |ev| is_reply_from(ev, bot, &command),
            PROMPTLY,
        )
        .await;
    let execution = started_execution(st2, &ack);
    Ok(Deploy {
        command,
        ack,
        execution,
    })
}

/// StackStorm finishes `deploy`'s execution, which printed `web is live`, and announces its
/// result on the stream, where the bridge listens; returns the bot's result in `room`.
pub async fn finish_deploy(
    st2: &St2Double,
    alice: &User,
    room: &RoomId,
    bot: &UserId,
    deploy: &Deploy,
) -> Json {
    let finished = st2.finish_execution(
        &deploy.execution.id,
        "succeeded",
        shell_result("web is live"),
    );
    assert_eq!(
        finished.delivered_to, 1,
        "the result was announced to the bridge's stream: {finished:?}"
    );
    alice
        .wait_for_event(
            room,
            "the result of the command",
            |ev| is_result_of(ev, bot, &deploy.command, &deploy.ack),
            PROMPTLY,
        )
        .await
}

/// What StackStorm announces for a whisper of `message` to `user`, naming `room` as its
/// channel (err-stackstorm's announcement body).
pub fn whisper(room: &RoomId, user: &UserId, message: &str) -> Json {
    json!({
        "channel": room,
        "message": message,
        "user": user,
        "whisper": true,
        "extra": {},
    })
}

/// Waits for `bot`'s invite to a direct chat, which it opens for a whisper, and joins it as
/// `alice`; returns the invite.
pub async fn join_the_bots_direct_chat(alice: &User, bot: &UserId) -> anyhow::Result<Invite> {
    let invite = alice
        .wait_for_invite(
            "the bot's invite to a direct chat",
            |invite| invite.sender == bot.as_str(),
            PROMPTLY,
        )
        .await;
    alice.join(&invite.room_id).await?;
    Ok(invite)
}

/// `!st2 deploy web`, a top-level command, runs; when StackStorm finishes the execution and
/// announces its result on the stream, the result arrives as a notice in the thread rooted at
/// the command (where the ack is too), replying to it and mentioning its sender.
pub async fn result_of_a_run_appears_in_the_commands_thread_mentioning_its_sender(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let deploy = deploy_web(&st2, &alice, &room, &bot).await?;

    // Act
    let result = finish_deploy(&st2, &alice, &room, &bot, &deploy).await;

    // Assert
    assert!(is_notice_from(&result, &bot), "a notice: {result}");
    assert_eq!(
        body(&result),
        format!("{}: Deployed web: web is live", alice.user_id()),
        "the alias's result format, after a mention of the sender: {result}"
    );
    assert_eq!(
        result["content"]["m.mentions"]["user_ids"],
        json!([alice.user_id()]),
        "the sender is mentioned, so their client notifies them: {result}"
    );
    assert_eq!(
        thread_root(&result),
        Some(deploy.command.as_str()),
        "the result is in the thread rooted at the command: {result}"
    );
    assert_eq!(
        in_reply_to(&result),
        Some(deploy.command.as_str()),
        "the result replies to the command: {result}"
    );
    assert_eq!(
        thread_root(&deploy.ack),
        Some(deploy.command.as_str()),
        "the ack is in that thread too: {}",
        deploy.ack
    );
    Ok(())
}

/// A whispered announcement for alice (`whisper: true`, `user`) makes the bot invite her to a
/// direct chat (`is_direct`) and post it there; a second whisper goes to the same chat, with
/// no second invite and nothing in the room the announcement names.
pub async fn whispered_results_arrive_in_one_direct_chat_with_the_user(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), Vec::new()).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_stream().await;

    // Act
    let listeners = st2.announce("matrix", whisper(&room, alice.user_id(), "first whisper"));
    assert_eq!(listeners, 1, "the bridge was listening to the stream");
    let invite = join_the_bots_direct_chat(&alice, &bot).await?;
    let dm = invite.room_id.clone();
    alice
        .wait_for_event(
            &dm,
            "the first whisper in the direct chat",
            |ev| is_notice_from(ev, &bot) && body(ev) == "first whisper",
            PROMPTLY,
        )
        .await;
    let listeners = st2.announce("matrix", whisper(&room, alice.user_id(), "second whisper"));
    assert_eq!(listeners, 1, "the bridge was listening to the stream");

    // Assert
    alice
        .wait_for_event(
            &dm,
            "the second whisper in the same direct chat",
            |ev| is_notice_from(ev, &bot) && body(ev) == "second whisper",
            PROMPTLY,
        )
        .await;
    assert!(
        invite.is_direct,
        "the invite marks a direct chat: {invite:?}"
    );
    assert_ne!(dm, room, "the whisper is not posted in the room it names");
    assert_count_stays("invites from the bot", 1, SETTLE, || async {
        alice
            .invites()
            .iter()
            .filter(|invite| invite.sender == bot.as_str())
            .count()
    })
    .await;
    let leaked = alice.events_matching(&room, |ev| body(ev).contains("whisper"));
    assert!(
        leaked.is_empty(),
        "whispers appeared in the room: {leaked:?}"
    );
    Ok(())
}

/// How long StackStorm's stream is down in the stream outage test.
const STREAM_OUTAGE: Duration = Duration::from_secs(10);

/// `!st2 deploy web` runs, then StackStorm's stream goes down for 10 s and the execution
/// finishes meanwhile: its announcement reaches nobody, as in StackStorm. Once the bridge is
/// connected again it asks StackStorm about the execution and posts the result itself, marked
/// as recovered, in the command's thread: once.
pub async fn result_finished_while_the_stream_was_down_for_10_s_is_posted_once_recovered(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    // A 1 s heartbeat on both sides: a connection that dies silently is noticed within 2 s.
    let st2 = stackstorm::double(
        St2Options {
            heartbeat: Duration::from_secs(1),
            ..St2Options::default()
        },
        vec![deploy_alias()],
    )
    .await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    // After configure_stackstorm, which writes the whole `[stackstorm]` section.
    bridge.set_config("stackstorm", "heartbeat", "1s");
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let Deploy {
        command,
        ack,
        execution,
    } = deploy_web(&st2, &alice, &room, &bot).await?;

    // Act
    st2.stream_down_for(STREAM_OUTAGE);
    wait_until(
        "the bridge's stream connection to be cut",
        PROMPTLY,
        || async { (st2.stream_subscribers() == 0).then_some(()) },
    )
    .await;
    let finished = st2.finish_execution(&execution.id, "succeeded", shell_result("web is live"));
    assert_eq!(
        finished.delivered_to, 0,
        "the announcement reached nobody: {finished:?}"
    );

    // Assert
    // The stream is back after 10 s; the bridge's reconnection backoff (0.5 s doubling) may
    // add up to about 8 s more.
    let result = alice
        .wait_for_only_event(
            &room,
            "the recovered result",
            |ev| is_result_of(ev, &bot, &command, &ack),
            STREAM_OUTAGE + PROMPTLY,
        )
        .await;
    let text = body(&result);
    assert!(
        text.contains("`ops.deploy` succeeded") && text.contains(&execution.id),
        "the result names the alias, its status and the execution: {result}"
    );
    assert!(
        text.contains("Recovered"),
        "the result says it was recovered: {result}"
    );
    assert!(
        text.contains("web is live"),
        "the result shows the output: {result}"
    );
    assert_eq!(
        thread_root(&result),
        Some(command.as_str()),
        "the result is in the command's thread: {result}"
    );
    Ok(())
}

/// How long the homeserver is down in the homeserver outage test.
const SYNAPSE_OUTAGE: Duration = Duration::from_secs(30);

/// Five commands run; Synapse stops; the five executions finish and their results reach the
/// bridge, which cannot post them. 30 s later Synapse is back: all five results arrive, in the
/// order they were announced, once each.
///
/// This test stops its homeserver, so it runs on a Synapse of its own: stopping the run's
/// would break every test running beside it. The bridge retries every 2 s at most
/// (`[outbox] max_backoff`), so the results follow Synapse's return promptly.
pub async fn five_results_while_synapse_is_down_for_30_s_arrive_after_it_returns_in_order_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    // Declared first, so it is dropped last: the bridge and the user stop using it first.
    let mut synapse = ctx.private_synapse(1).await?;
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![alias("ops", "echo", "echo {{text}}", "Say something.")],
    )
    .await;
    let mut bridge = synapse.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.set_config("outbox", "max_backoff", "2s");
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = synapse.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let words = ["one", "two", "three", "four", "five"];
    let mut commands: Vec<OwnedEventId> = Vec::new();
    for word in words {
        commands.push(alice.send_text(&room, &format!("!st2 echo {word}")).await?);
    }
    let mut acks = Vec::new();
    for command in &commands {
        acks.push(
            alice
                .wait_for_event(
                    &room,
                    "the ack of a command",
                    |ev| is_reply_from(ev, &bot, command),
                    PROMPTLY,
                )
                .await,
        );
    }
    let executions: Vec<String> = commands
        .iter()
        .map(|command| {
            st2.executions()
                .into_iter()
                .find(|e| e.request["source_context"]["event_id"] == command.as_str())
                .unwrap_or_else(|| panic!("no execution for command {command}"))
                .id
        })
        .collect();
    synapse.stop().await?;
    let synapse_back_at = Instant::now() + SYNAPSE_OUTAGE;

    // Act
    for (execution, word) in executions.iter().zip(words) {
        let finished = st2.finish_execution(execution, "succeeded", shell_result(word));
        assert_eq!(
            finished.delivered_to, 1,
            "the result was announced to the bridge's stream: {finished:?}"
        );
    }
    // The five results reached the bridge while Synapse is down: now they wait in its outbox.
    bridge
        .wait_for_metric(r#"st2_matrix_results_total{source="stream"}"#, words.len())
        .await;
    // Real time has to pass: this is the outage the bridge must ride out.
    sleep_until(synapse_back_at).await;
    synapse.start_again().await?;

    // Assert
    let is_a_result = |ev: &Json| {
        commands
            .iter()
            .zip(&acks)
            .any(|(command, ack)| is_result_of(ev, &bot, command, ack))
    };
    let results = wait_until("the five results", PROMPTLY, || async {
        let results = alice.events_matching(&room, is_a_result);
        (results.len() >= words.len()).then_some(results)
    })
    .await;
    let answered: Vec<&str> = results.iter().filter_map(|ev| in_reply_to(ev)).collect();
    let expected: Vec<&str> = commands.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        answered, expected,
        "the results arrive in the order of the commands they answer"
    );
    for (result, word) in results.iter().zip(words) {
        assert!(
            body(result).contains(&format!("stdout : {word}")),
            "each result shows its own execution's output: {result}"
        );
    }
    assert_count_stays(
        "results of the five commands",
        words.len(),
        SETTLE,
        || async { alice.events_matching(&room, is_a_result).len() },
    )
    .await;
    Ok(())
}
