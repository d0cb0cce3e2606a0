//! StackStorm commands from a room: matched against the aliases, run in StackStorm on behalf
//! of the Matrix sender, acknowledged where they were typed.

use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, is_reply_from, thread_root};
use crate::harness::stackstorm::{self, St2Auth, alias, started_execution};
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays};

/// The `ack.format` of `ops.deploy`, which StackStorm renders: `Deploying web to production.`
const DEPLOY_ACK: &str =
    "Deploying {{ execution.parameters.service }} to {{ execution.parameters.env }}.";

/// `ops.deploy`: `deploy {{service}} to {{env=staging}}`, acknowledged with [`DEPLOY_ACK`].
fn deploy_alias() -> Json {
    let mut deploy = alias(
        "ops",
        "deploy",
        "deploy {{service}} to {{env=staging}}",
        "Deploy a service.",
    );
    deploy["ack"] = json!({ "format": DEPLOY_ACK });
    deploy
}

/// `!st2 deploy web to production` inside a thread: StackStorm gets one alias execution on
/// behalf of the Matrix sender, with the command's room, event, thread and sender as its
/// `source_context`; the ack, StackStorm's rendered message and the execution's link, arrives
/// in the command's thread as a reply to it.
pub async fn command_in_a_thread_runs_for_its_sender_and_is_acknowledged_in_that_thread(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    let root = alice.send_text(&room, "time to ship web").await?;
    bridge.wait_for_aliases(1).await;

    // Act
    let command = alice
        .send_thread_reply(&room, &root, "!st2 deploy web to production")
        .await?;

    // Assert
    let ack = alice
        .wait_for_event(
            &room,
            "the ack of the command",
            |ev| is_reply_from(ev, &bot, &command),
            PROMPTLY,
        )
        .await;
    let executions = st2.executions();
    assert_eq!(executions.len(), 1, "one execution was started");
    let execution = &executions[0];
    assert_eq!(
        execution.request["name"], "deploy",
        "{:?}",
        execution.request
    );
    assert_eq!(
        execution.request["user"],
        alice.user_id().as_str(),
        "it runs on behalf of the Matrix sender: {:?}",
        execution.request
    );
    assert_eq!(
        execution.request["source_context"],
        json!({
            "room_id": room,
            "event_id": command,
            "thread_root": root,
            "sender": alice.user_id(),
        }),
        "the source context says where the command came from"
    );
    assert_eq!(
        execution.execution["parameters"],
        json!({"service": "web", "env": "production"}),
        "StackStorm parsed the command's parameters"
    );
    assert_eq!(
        thread_root(&ack),
        Some(root.as_str()),
        "the ack is in the command's thread: {ack}"
    );
    assert!(
        body(&ack).starts_with("Deploying web to production."),
        "the ack is StackStorm's rendered ack message: {ack}"
    );
    let link = format!("{}/#/history/{}/general", st2.url(), execution.id);
    assert!(
        body(&ack).contains(&link),
        "the ack links to the execution ({link}): {ack}"
    );
    Ok(())
}

/// `StackStorm: deploy web to production`, addressing the bot by its display name instead of
/// the prefix, runs the command and is acknowledged.
pub async fn command_after_the_bots_display_name_runs(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;

    // Act
    let ack = alice
        .ask(&room, &bot, "StackStorm: deploy web to production")
        .await?;

    // Assert
    assert!(
        body(&ack).starts_with("Deploying web to production."),
        "the command ran: {ack}"
    );
    let execution = started_execution(&st2, &ack);
    assert_eq!(
        execution.request["command"], "deploy web to production",
        "StackStorm got the command without the mention"
    );
    Ok(())
}

/// Two aliases with the same format: `!st2 restart web` is answered with both of them, and
/// nothing is sent to StackStorm (which would refuse a command matching two aliases).
pub async fn ambiguous_command_lists_the_commands_it_matches_and_runs_none(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![
            alias(
                "ops",
                "restart",
                "restart {{service}}",
                "Restart a service.",
            ),
            alias(
                "web",
                "restart",
                "restart {{service}}",
                "Restart a web app.",
            ),
        ],
    )
    .await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(2).await;

    // Act
    let reply = alice.ask(&room, &bot, "!st2 restart web").await?;

    // Assert
    let text = body(&reply);
    assert!(
        text.contains("`restart web` matches more than one command"),
        "the reply says the command is ambiguous: {reply}"
    );
    assert!(
        text.contains("ops.restart") && text.contains("web.restart"),
        "the reply names both aliases: {reply}"
    );
    assert_count_stays("alias executions sent to StackStorm", 0, SETTLE, || async {
        st2.requests_to("/api/v1/aliasexecution").len()
    })
    .await;
    Ok(())
}

/// `!st2 launch rockets`, which no alias matches, is answered with "No command matches" and a
/// pointer to `!st2help`.
pub async fn unmatched_command_is_answered_with_a_hint_to_help(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![deploy_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;

    // Act
    let reply = alice.ask(&room, &bot, "!st2 launch rockets").await?;

    // Assert
    assert!(
        body(&reply).starts_with("No command matches `launch rockets`."),
        "the reply says nothing matched: {reply}"
    );
    assert!(
        body(&reply).contains("`!st2help`"),
        "the reply points to !st2help: {reply}"
    );
    Ok(())
}
