//! Executions watched and steered from the room: the ack edited as the execution moves, ✅/❌
//! on the command, and `status`, `output`, `cancel`, `rerun`, `history`.

use matrix_sdk::ruma::{EventId, RoomId, UserId};
use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::{ControlKind, St2Double, St2Options};

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, in_reply_to, is_reply_from, thread_root};
use crate::harness::stackstorm::{self, St2Auth};
use crate::harness::user::User;
use crate::harness::wait::{PROMPTLY, wait_until};
use crate::results::deploy_alias;

/// A double with `ops.deploy` (`deploy {{service}}`, its result `Deployed <service>: …`).
async fn deploy_double() -> St2Double {
    stackstorm::double(St2Options::default(), vec![deploy_alias()]).await
}

/// The bot's edit of `ack` whose new text contains `needle`.
async fn edit_of(user: &User, room: &RoomId, ack: &Json, needle: &str) -> Json {
    user.wait_for_event(
        room,
        &format!("the ack edited to say {needle:?}"),
        |ev| {
            ev["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && ev["content"]["m.relates_to"]["event_id"] == ack["event_id"]
                && ev["content"]["m.new_content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(needle))
        },
        PROMPTLY,
    )
    .await
}

/// The bot's reaction on `command`.
async fn reaction_on(user: &User, room: &RoomId, bot: &UserId, command: &EventId) -> Json {
    user.wait_for_event(
        room,
        "the bot's reaction on the command",
        |ev| {
            ev["type"] == "m.reaction"
                && ev["sender"] == bot.as_str()
                && ev["content"]["m.relates_to"]["event_id"] == command.as_str()
        },
        PROMPTLY,
    )
    .await
}

/// Waits until StackStorm reports `id` as `status`.
async fn until_status(st2: &St2Double, id: &str, status: &str) {
    wait_until(format!("execution {id} {status}"), PROMPTLY, || async {
        (st2.execution(id)?.execution["status"] == status).then_some(())
    })
    .await;
}

/// Alice deploys web: the ack is edited to say it is running, then that it succeeded (with
/// the duration), and her command gets ✅; the result still arrives as a message. A deploy
/// that fails gets ❌.
pub async fn ack_is_edited_as_the_execution_runs_and_the_command_gets_a_check_mark_or_a_cross(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;

    // Act
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    let ack = alice
        .wait_for_event(
            &room,
            "the ack",
            |ev| is_reply_from(ev, &bot, &command),
            PROMPTLY,
        )
        .await;
    let id = st2.last_execution().expect("the command ran").id;
    edit_of(&alice, &room, &ack, "**Running**").await;
    st2.finish_execution(
        &id,
        "succeeded",
        json!({"stdout": "web is live", "succeeded": true}),
    );
    let failing = alice.send_text(&room, "!st2 deploy api").await?;
    alice
        .wait_for_event(
            &room,
            "the second ack",
            |ev| is_reply_from(ev, &bot, &failing),
            PROMPTLY,
        )
        .await;
    let failed_id = st2.last_execution().expect("the second command ran").id;
    until_status(&st2, &failed_id, "running").await;
    st2.finish_execution(&failed_id, "failed", json!({"stderr": "no such service"}));

    // Assert
    edit_of(&alice, &room, &ack, "**Succeeded** in").await;
    let check = reaction_on(&alice, &room, &bot, &command).await;
    assert_eq!(check["content"]["m.relates_to"]["key"], "✅");
    alice
        .wait_for_event(
            &room,
            "the result",
            |ev| is_reply_from(ev, &bot, &command) && body(ev).contains("Deployed web"),
            PROMPTLY,
        )
        .await;
    let cross = reaction_on(&alice, &room, &bot, &failing).await;
    assert_eq!(cross["content"]["m.relates_to"]["key"], "❌");
    Ok(())
}

/// In the command's thread, `status` and `output` need no id; long output comes as a file
/// holding all of it; `history` lists the room's executions.
pub async fn status_output_and_history_answer_in_the_commands_thread(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    let command = alice.send_text(&room, "!st2 deploy web").await?;
    alice
        .wait_for_event(
            &room,
            "the ack",
            |ev| is_reply_from(ev, &bot, &command),
            PROMPTLY,
        )
        .await;
    let id = st2.last_execution().expect("the command ran").id;
    until_status(&st2, &id, "running").await;
    st2.append_output(&id, "stdout", "pulling image\nstarting web\n");

    // Act
    let status_ask = alice
        .send_thread_reply(&room, &command, "!st2 status")
        .await?;
    let status = alice
        .wait_for_event(
            &room,
            "the status",
            |ev| is_reply_from(ev, &bot, &status_ask),
            PROMPTLY,
        )
        .await;
    let output_ask = alice
        .send_thread_reply(&room, &command, "!st2 output")
        .await?;
    let output = alice
        .wait_for_event(
            &room,
            "the output",
            |ev| is_reply_from(ev, &bot, &output_ask),
            PROMPTLY,
        )
        .await;
    let long: String = (1..=300).map(|i| format!("step {i} done\n")).collect();
    st2.append_output(&id, "stdout", &long);
    let long_ask = alice.send_text(&room, &format!("!st2 output {id}")).await?;
    let file = alice
        .wait_for_event(
            &room,
            "the output file",
            |ev| {
                in_reply_to(ev) == Some(long_ask.as_str())
                    && ev["sender"] == bot.as_str()
                    && ev["content"]["msgtype"] == "m.file"
            },
            PROMPTLY,
        )
        .await;
    let history_ask = alice.send_text(&room, "!st2 history").await?;
    let history = alice
        .wait_for_event(
            &room,
            "the history",
            |ev| is_reply_from(ev, &bot, &history_ask),
            PROMPTLY,
        )
        .await;

    // Assert
    assert!(
        body(&status).contains(&id) && body(&status).contains("running"),
        "{}",
        body(&status)
    );
    assert_eq!(
        thread_root(&status),
        Some(command.as_str()),
        "answered in the thread"
    );
    assert!(
        body(&output).contains("pulling image\nstarting web"),
        "{}",
        body(&output)
    );
    let downloaded = String::from_utf8(alice.download_file(&file).await?)?;
    assert!(
        downloaded.starts_with("pulling image") && downloaded.contains("step 300 done"),
        "the file holds the whole output"
    );
    assert!(
        body(&history).contains(&id) && body(&history).contains("ops.deploy"),
        "{}",
        body(&history)
    );
    Ok(())
}

/// `cancel` stops a running execution; on a finished one it says why StackStorm cannot.
pub async fn cancel_stops_a_running_execution_and_explains_a_finished_one(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    alice.ask(&room, &bot, "!st2 deploy web").await?;
    let running = st2.last_execution().expect("ran").id;
    until_status(&st2, &running, "running").await;
    alice.ask(&room, &bot, "!st2 deploy api").await?;
    let done = st2.last_execution().expect("ran").id;
    until_status(&st2, &done, "running").await;
    st2.finish_execution(&done, "succeeded", json!({"stdout": "ok"}));

    // Act
    let canceled = alice
        .ask(&room, &bot, &format!("!st2 cancel {running}"))
        .await?;
    let refused = alice
        .ask(&room, &bot, &format!("!st2 cancel {done}"))
        .await?;

    // Assert
    assert!(body(&canceled).contains("Cancel"), "{}", body(&canceled));
    until_status(&st2, &running, "canceled").await;
    assert!(
        body(&refused).contains("Action cannot be canceled. State = succeeded."),
        "{}",
        body(&refused)
    );
    let cancels: Vec<_> = st2
        .control_requests()
        .into_iter()
        .filter(|r| r.kind == ControlKind::Cancel)
        .collect();
    assert_eq!(cancels.len(), 2);
    Ok(())
}

/// `rerun` with a changed parameter starts the action again; its ack and its result come in
/// the thread of the `rerun` command.
pub async fn rerun_with_a_changed_parameter_reports_in_its_own_thread(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    alice.ask(&room, &bot, "!st2 deploy web").await?;
    let first = st2.last_execution().expect("ran").id;
    until_status(&st2, &first, "running").await;
    st2.finish_execution(&first, "succeeded", json!({"stdout": "ok"}));

    // Act
    let rerun = alice
        .send_text(&room, &format!("!st2 rerun {first} service=api"))
        .await?;
    let ack = alice
        .wait_for_event(
            &room,
            "the re-run's ack",
            |ev| is_reply_from(ev, &bot, &rerun),
            PROMPTLY,
        )
        .await;
    let created = st2
        .control_requests()
        .into_iter()
        .find(|r| r.kind == ControlKind::Create)
        .expect("a new execution was created");
    let second = st2
        .executions()
        .into_iter()
        .map(|e| e.id)
        .find(|id| *id != first && body(&ack).contains(id.as_str()))
        .expect("the ack names the new execution");
    // An execution created through the API (not an alias) stays `requested` in the double
    // until the test moves it.
    st2.finish_execution(&second, "succeeded", json!({"stdout": "api is live"}));
    let result = alice
        .wait_for_event(
            &room,
            "the re-run's result",
            |ev| {
                thread_root(ev) == Some(rerun.as_str())
                    && ev["event_id"] != ack["event_id"]
                    && body(ev).contains(second.as_str())
            },
            PROMPTLY,
        )
        .await;

    // Assert
    let parameters: &Json = &created.body.as_ref().unwrap()["parameters"];
    assert_eq!(parameters["service"], "api", "the changed parameter");
    assert_eq!(thread_root(&ack), Some(rerun.as_str()));
    assert_eq!(thread_root(&result), Some(rerun.as_str()));
    Ok(())
}

/// Someone below `run` in the room may not steer executions: told so, nothing is sent.
pub async fn someone_who_may_not_run_commands_cannot_cancel(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.set_config("permissions", "default", "help");
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;

    // Act
    let refused = alice
        .ask(&room, &bot, "!st2 cancel 5f1a2b3c4d5e6f7081920a1b")
        .await?;

    // Assert
    assert!(
        body(&refused).contains("Watching and steering executions"),
        "{}",
        body(&refused)
    );
    assert!(
        st2.control_requests().is_empty(),
        "nothing reached StackStorm"
    );
    Ok(())
}
