//! Executions watched and steered from the room: the ack edited live, ✅/❌ on the command,
//! and `status`, `output`, `cancel`, `rerun`, `history`.

use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    poll,
    st2::{ControlKind, St2Double},
};

use crate::helpers::*;

fn body(sent: &Sent) -> &str {
    sent.content["body"].as_str().unwrap_or_default()
}

fn deploy_alias() -> Value {
    json!({"name": "deploy", "pack": "ops", "ref": "ops.deploy", "action_ref": "core.local",
           "description": "Deploy a service.", "enabled": true, "formats": ["deploy {{service}}"],
           "result": {"format": "Deployed {{ execution.parameters.service }}"}})
}

fn options(live: bool) -> Options {
    Options {
        st2: Some(St2Auth::ApiKey),
        live,
        ..Options::default()
    }
}

async fn app_with(live: bool, extra: Vec<Value>) -> TestApp {
    let st2 = st2_double().await;
    let mut aliases = vec![deploy_alias()];
    aliases.extend(extra);
    st2.set_aliases(aliases);
    let app = TestApp::spawn_with_double(options(live), Some(st2)).await;
    // Results and acks go only to rooms the bot is in.
    app.push(
        "j",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    poll::wait_until(WAIT, "the bot in the room and the aliases", || async {
        let joined = st2_matrix::store::rooms::get(&app.bridge.store, ROOM)
            .await
            .unwrap()
            .is_some();
        (joined && !app.bridge.aliases.catalog().aliases().is_empty()).then_some(())
    })
    .await;
    app
}

fn st2(app: &TestApp) -> &St2Double {
    app.st2.as_ref().unwrap()
}

/// Sends `text` as alice (event `event_id`) and returns the execution it started.
async fn run(app: &TestApp, txn: &str, event_id: &str, text: &str) -> String {
    let before = st2(app).executions().len();
    app.push(txn, vec![events::text(ROOM, ALICE, event_id, text)])
        .await;
    poll::wait_until(WAIT, "the execution", || async {
        let all = st2(app).executions();
        (all.len() > before).then(|| all[before].id.clone())
    })
    .await
}

async fn wait_for(app: &TestApp, what: &str, f: impl Fn(&Sent) -> bool) -> Sent {
    app.wait_for_sent(ROOM, what, f).await
}

fn edit_saying(s: &Sent, needle: &str) -> bool {
    s.content["m.relates_to"]["rel_type"] == "m.replace"
        && s.content["m.new_content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains(needle))
}

fn reply_to(s: &Sent, event: &str) -> bool {
    s.content["m.relates_to"]["m.in_reply_to"]["event_id"] == event
        && s.content.get("m.new_content").is_none()
}

#[tokio::test]
async fn the_ack_is_edited_to_running_then_succeeded_and_the_command_gets_a_check_mark() {
    let app = app_with(true, vec![]).await;
    let id = run(&app, "1", "$cmd", "!st2 deploy web").await;
    let ack = wait_for(&app, "the ack", |s| reply_to(s, "$cmd")).await;
    let running = wait_for(&app, "an edit saying running", |s| {
        edit_saying(s, "**Running**")
    })
    .await;
    assert_eq!(
        running.content["m.relates_to"]["event_id"],
        ack.event_id.as_str()
    );
    st2(&app).finish_execution(&id, "succeeded", json!({"stdout": "ok"}));
    let done = wait_for(&app, "an edit saying succeeded", |s| {
        edit_saying(s, "**Succeeded** in")
    })
    .await;
    assert_eq!(
        done.content["m.relates_to"]["event_id"],
        ack.event_id.as_str()
    );
    let check = wait_for(&app, "the ✅ on the command", |s| {
        s.event_type == "m.reaction"
    })
    .await;
    assert_eq!(
        check.content["m.relates_to"],
        json!({"rel_type": "m.annotation", "event_id": "$cmd", "key": "✅"})
    );
    // The result is still a message of its own.
    wait_for(&app, "the result", |s| body(s).contains("Deployed web")).await;
}

#[tokio::test]
async fn a_failing_execution_gets_a_cross_and_a_workflow_lists_its_tasks() {
    let app = app_with(true, vec![St2Double::workflow_alias()]).await;
    let id = run(&app, "1", "$cmd", "!st2 deploy web").await;
    st2(&app).finish_execution(&id, "failed", json!({"stderr": "boom"}));
    wait_for(&app, "the ❌", |s| {
        s.event_type == "m.reaction" && s.content["m.relates_to"]["key"] == "❌"
    })
    .await;
    wait_for(&app, "an edit saying failed", |s| {
        edit_saying(s, "**Failed** after")
    })
    .await;

    let wf = run(&app, "2", "$wf", "!st2 greet").await;
    poll::wait_until(WAIT, "the workflow running", || async {
        (st2(&app).execution(&wf)?.execution["status"] == "running").then_some(())
    })
    .await;
    st2(&app).advance_workflow(&wf);
    st2(&app).advance_workflow(&wf);
    wait_for(&app, "an edit listing the tasks", |s| {
        edit_saying(s, "Tasks: ✅")
    })
    .await;
}

#[tokio::test]
async fn status_output_and_history_answer_about_the_rooms_executions() {
    let app = app_with(false, vec![]).await;
    let id = run(&app, "1", "$cmd", "!st2 deploy web").await;
    st2(&app).append_output(&id, "stdout", "deploying web\nstep 2\n");
    // The id is implied inside the command's thread.
    app.push(
        "2",
        vec![events::thread_text(
            ROOM,
            ALICE,
            "$s",
            "$cmd",
            "!st2 status",
        )],
    )
    .await;
    let status = wait_for(&app, "the status", |s| reply_to(s, "$s")).await;
    assert!(body(&status).contains(&id), "{}", body(&status));
    assert!(body(&status).contains("core.local"), "{}", body(&status));
    assert!(body(&status).contains("/#/history/"), "{}", body(&status));

    app.push(
        "3",
        vec![events::text(
            ROOM,
            ALICE,
            "$o",
            &format!("!st2 output {id}"),
        )],
    )
    .await;
    let output = wait_for(&app, "the output", |s| reply_to(s, "$o")).await;
    assert!(
        body(&output).contains("deploying web\nstep 2"),
        "{}",
        body(&output)
    );

    let long: String = (1..=500).map(|i| format!("line {i}\n")).collect();
    st2(&app).append_output(&id, "stdout", &long);
    app.push(
        "4",
        vec![events::text(
            ROOM,
            ALICE,
            "$o2",
            &format!("!st2 output {id}"),
        )],
    )
    .await;
    let cut = wait_for(&app, "the cut output", |s| {
        reply_to(s, "$o2") && s.content["msgtype"] != "m.file"
    })
    .await;
    assert!(body(&cut).contains("the last 40 of"), "{}", body(&cut));
    wait_for(&app, "the output file", |s| {
        s.content["msgtype"] == "m.file"
    })
    .await;
    let uploaded = app.hs.media_uploads();
    let text = String::from_utf8(uploaded[0].data.clone()).unwrap();
    assert!(
        text.contains("line 1\n") && text.contains("line 500"),
        "the whole output is attached"
    );

    app.push("5", vec![events::text(ROOM, ALICE, "$h", "!st2 history")])
        .await;
    let history = wait_for(&app, "the history", |s| reply_to(s, "$h")).await;
    assert!(body(&history).contains(&id), "{}", body(&history));
    assert!(body(&history).contains("ops.deploy"), "{}", body(&history));
}

#[tokio::test]
async fn cancel_stops_a_running_execution_and_explains_why_a_finished_one_cannot_be() {
    let app = app_with(false, vec![]).await;
    let id = run(&app, "1", "$cmd", "!st2 deploy web").await;
    poll::wait_until(WAIT, "running", || async {
        (st2(&app).execution(&id)?.execution["status"] == "running").then_some(())
    })
    .await;
    app.push(
        "2",
        vec![events::text(
            ROOM,
            ALICE,
            "$c",
            &format!("!st2 cancel {id}"),
        )],
    )
    .await;
    let canceling = wait_for(&app, "the cancel answer", |s| reply_to(s, "$c")).await;
    assert!(body(&canceling).contains("Cancel"), "{}", body(&canceling));
    let requests = st2(&app).control_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.kind == ControlKind::Cancel && r.execution_id.as_deref() == Some(&id))
    );

    let done = run(&app, "3", "$cmd2", "!st2 deploy api").await;
    st2(&app).finish_execution(&done, "succeeded", json!({}));
    app.push(
        "4",
        vec![events::text(
            ROOM,
            ALICE,
            "$c2",
            &format!("!st2 cancel {done}"),
        )],
    )
    .await;
    let refused = wait_for(&app, "the refusal", |s| reply_to(s, "$c2")).await;
    assert!(
        body(&refused).contains("Action cannot be canceled. State = succeeded."),
        "{}",
        body(&refused)
    );
}

#[tokio::test]
async fn rerun_with_a_changed_parameter_answers_in_its_own_thread() {
    let app = app_with(false, vec![]).await;
    let id = run(&app, "1", "$cmd", "!st2 deploy web").await;
    st2(&app).finish_execution(&id, "succeeded", json!({}));
    let again = run(&app, "2", "$again", &format!("!st2 rerun {id} service=api")).await;
    let created = st2(&app)
        .control_requests()
        .into_iter()
        .find(|r| r.kind == ControlKind::Create)
        .expect("a POST /executions");
    assert_eq!(
        created.body.as_ref().unwrap()["parameters"]["service"],
        "api"
    );
    let ack = wait_for(&app, "the re-run's ack", |s| reply_to(s, "$again")).await;
    assert!(body(&ack).contains(&again), "{}", body(&ack));
    assert_eq!(
        ack.content["m.relates_to"]["event_id"], "$again",
        "in the rerun's thread"
    );
    st2(&app).finish_execution(&again, "succeeded", json!({}));
    let result = wait_for(&app, "the re-run's result", |s| {
        s.event_type == "m.room.message"
            && s.event_id != ack.event_id
            && s.content["m.relates_to"]["event_id"] == "$again"
            && s.content.get("m.new_content").is_none()
    })
    .await;
    assert!(
        body(&result).contains(&again),
        "the result names the new execution: {}",
        body(&result)
    );
}

#[tokio::test]
async fn someone_who_may_not_run_commands_cannot_steer_executions() {
    let st2 = st2_double().await;
    st2.set_aliases(vec![deploy_alias()]);
    let app = TestApp::spawn_with_double(
        Options {
            extra_config: "[permissions]\ndefault = \"help\"\n",
            ..options(false)
        },
        Some(st2),
    )
    .await;
    app.push(
        "1",
        vec![events::text(
            ROOM,
            ALICE,
            "$c",
            "!st2 cancel 5f1a2b3c4d5e6f7081920a1b",
        )],
    )
    .await;
    let refused = wait_for(&app, "the refusal", |s| reply_to(s, "$c")).await;
    assert!(
        body(&refused).contains("Watching and steering executions"),
        "{}",
        body(&refused)
    );
    assert!(app.st2.as_ref().unwrap().control_requests().is_empty());
}
