//! Commands in doubt: sent to StackStorm, the answer never reached the bridge (it died, or the
//! answer was lost). StackStorm is asked whether they ran; their results come once, whichever
//! way and in whichever order they come — the bridge in-process against the homeserver double
//! and the StackStorm double.
//!
//! A crash between "marked started" and "recorded" is played by writing what the bridge
//! leaves behind into its database while it is stopped (the row started, with its attempt)
//! and, for a command that ran, by sending StackStorm the request the bridge had sent. The
//! end-to-end tier kills the real process instead (`e2e/tests/e2e/in_doubt_commands.rs`).

use std::time::Duration;

use serde_json::{Value, json};
use st2_matrix::store::{self, Store, executions, inbox};
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    poll,
    st2::{AliasHold, St2Double},
};

use crate::helpers::*;

const BOB: &str = "@bob:example.org";

fn body(sent: &Sent) -> String {
    sent.content["body"].as_str().unwrap_or_default().to_owned()
}

fn alias(pack: &str, name: &str, format: &str) -> Value {
    json!({"name": name, "pack": pack, "ref": format!("{pack}.{name}"), "action_ref": "core.local",
           "enabled": true, "formats": [format], "ack": {"format": "started {{ execution.id }}"}})
}

/// A bridge with `ops.up` (`uptime`) and `deploy.web` (`deploy {{app}}`, which needs Bob's
/// approval), in ROOM, its aliases loaded.
async fn app() -> TestApp {
    let st2 = st2_double().await;
    st2.set_aliases(vec![
        alias("ops", "up", "uptime"),
        alias("deploy", "web", "deploy {{app}}"),
    ]);
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            extra_config: "[[approvals]]\naliases = [\"deploy.*\"]\napprovers = [\"@bob:example.org\"]\n",
            encryption_off: true,
            ..Default::default()
        },
        Some(st2),
    )
    .await;
    app.push(
        "join",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$invite")],
    )
    .await;
    poll::wait_until(WAIT, "the bot to join and the aliases", || async {
        let joined = store::rooms::get(&app.bridge.store, ROOM)
            .await
            .unwrap()
            .is_some();
        (joined && app.bridge.aliases.catalog().aliases().len() == 2).then_some(())
    })
    .await;
    app
}

fn st2(app: &TestApp) -> &St2Double {
    app.st2.as_ref().unwrap()
}

async fn open_store(app: &TestApp) -> Store {
    let url = format!("sqlite://{}", app.dir.path().join("bridge.db").display());
    Store::connect(&url, 1, Default::default()).await.unwrap()
}

/// What a bridge that died while sending Alice's `!st2 uptime` (event `event_id`) leaves in
/// its database: the command's inbox row, marked started, with its attempt.
async fn leave_in_doubt(store: &Store, event_id: &str) {
    let event = events::text(ROOM, ALICE, event_id, "!st2 uptime").to_string();
    let row = inbox::NewEvent {
        event_id,
        room_id: ROOM,
        kind: inbox::Kind::Command,
        event: &event,
    };
    store::txns::store_transaction(store, &format!("t{event_id}"), &[row])
        .await
        .unwrap();
    let seq = inbox::next_for_room(store, ROOM)
        .await
        .unwrap()
        .unwrap()
        .seq;
    let attempt = inbox::Attempt {
        inbox_seq: seq,
        room_id: ROOM.into(),
        event_id: event_id.into(),
        thread_root: None,
        sender: ALICE.into(),
        alias_ref: "ops.up".into(),
        action_ref: "core.local".into(),
        st2_user: None,
        ack_enabled: true,
        ack_append_url: true,
        started_at: store::now_ms(),
    };
    inbox::mark_started_with(store, &attempt).await.unwrap();
}

/// StackStorm receives the request the bridge sent for `event_id` (before it died): returns
/// the execution id.
async fn st2_receives(st2: &St2Double, event_id: &str) -> String {
    let key = st2.add_api_key("bot");
    let response = reqwest::Client::new()
        .post(format!("{}/aliasexecution", st2.api_url()))
        .header("St2-Api-Key", key)
        .json(&json!({
            "name": "up", "format": "uptime", "command": "uptime", "user": ALICE,
            "source_channel": ROOM,
            "source_context": {"room_id": ROOM, "event_id": event_id, "thread_root": null, "sender": ALICE},
            "notification_route": "matrix",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["execution"]["id"].as_str().unwrap().to_owned()
}

/// The bot's messages in ROOM that answer the command `event_id` (in its thread or replying
/// to it).
fn answers(app: &TestApp, event_id: &str) -> Vec<Sent> {
    app.hs
        .sent_to(ROOM)
        .into_iter()
        .filter(|s| {
            let relates = &s.content["m.relates_to"];
            s.event_type == "m.room.message"
                && relates["rel_type"] != "m.replace"
                && (relates["event_id"] == event_id
                    || relates["m.in_reply_to"]["event_id"] == event_id)
        })
        .collect()
}

async fn wait_for_answer(app: &TestApp, event_id: &str, needle: &str) -> Sent {
    poll::wait_until(WAIT, &format!("an answer with {needle:?}"), || async {
        answers(app, event_id)
            .into_iter()
            .find(|s| body(s).contains(needle))
    })
    .await
}

async fn wait_for_stream(app: &TestApp) {
    poll::wait_until(WAIT, "the stream to connect", || async {
        (st2(app).stream_subscribers() > 0).then_some(())
    })
    .await;
}

/// After a positive signal that everything due was done: the command keeps `n` answers for
/// longer than a recovery pass waits before it posts (its grace, 3 s).
async fn answers_stay(app: &TestApp, event_id: &str, n: usize) {
    poll::stays(
        Duration::from_secs(4),
        &format!("{n} answer(s) to {event_id}"),
        || async { answers(app, event_id).len() == n },
    )
    .await;
}

#[tokio::test]
async fn a_command_that_ran_before_a_crash_is_confirmed_and_gets_one_result() {
    // Arrange: the bridge died after StackStorm accepted the command, before recording it.
    let mut app = app().await;
    app.shutdown().await;
    let store = open_store(&app).await;
    leave_in_doubt(&store, "$ran").await;
    store.close().await;
    let id = st2_receives(st2(&app), "$ran").await;

    // Act
    let app = app.restart().await;

    // Assert: the ack, marked, in the command's thread; not run again.
    let ack = wait_for_answer(&app, "$ran", "confirmed after a restart").await;
    assert!(body(&ack).contains(&id), "{}", body(&ack));
    assert_eq!(ack.content["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(st2(&app).executions().len(), 1, "not sent again");
    // Its result comes as for any command, once.
    wait_for_stream(&app).await;
    st2(&app).finish_execution(&id, "succeeded", json!({"stdout": "up 3 days"}));
    wait_for_answer(&app, "$ran", "up 3 days").await;
    st2(&app).cut_streams(); // a recovery pass after the reconnection posts nothing more
    wait_for_stream(&app).await;
    answers_stay(&app, "$ran", 2).await;
    assert!(
        !answers(&app, "$ran")
            .iter()
            .any(|s| body(s).contains("may or may not")),
    );
}

#[tokio::test]
async fn a_command_that_finished_while_the_bridge_was_down_gets_its_result_recovered() {
    // Arrange: it ran, and finished (announced to nobody) while the bridge was down.
    let mut app = app().await;
    app.shutdown().await;
    let store = open_store(&app).await;
    leave_in_doubt(&store, "$done").await;
    store.close().await;
    let id = st2_receives(st2(&app), "$done").await;
    st2(&app).finish_execution(&id, "succeeded", json!({"stdout": "up 4 days"}));

    // Act
    let app = app.restart().await;

    // Assert
    wait_for_answer(&app, "$done", "confirmed after a restart").await;
    let result = wait_for_answer(&app, "$done", "up 4 days").await;
    assert!(body(&result).contains("Recovered"), "{}", body(&result));
    answers_stay(&app, "$done", 2).await;
}

#[tokio::test]
async fn a_command_stackstorm_never_received_did_not_run() {
    // Arrange: the bridge died before the request reached StackStorm.
    let mut app = app().await;
    app.shutdown().await;
    let store = open_store(&app).await;
    leave_in_doubt(&store, "$lost").await;
    store.close().await;

    // Act
    let app = app.restart().await;

    // Assert
    let told = wait_for_answer(&app, "$lost", "did not run").await;
    assert!(
        body(&told).contains("You may send it again"),
        "{}",
        body(&told)
    );
    assert!(st2(&app).executions().is_empty(), "not sent again");
    let seq = inbox::next_for_room(&app.bridge.store, ROOM).await.unwrap();
    assert!(seq.is_none(), "the command is finished");
}

#[tokio::test]
async fn with_stackstorm_unreachable_a_command_may_or_may_not_have_run() {
    // Arrange
    let mut app = app().await;
    app.shutdown().await;
    let store = open_store(&app).await;
    leave_in_doubt(&store, "$unknown").await;
    store.close().await;
    st2(&app).set_failure(Some(503));

    // Act
    let app = app.restart().await;

    // Assert: after the inbox worker's retries (about 30 s), and only then.
    let told = poll::wait_until(
        Duration::from_secs(90),
        "the command reported in doubt",
        || async {
            answers(&app, "$unknown")
                .into_iter()
                .find(|s| body(s).contains("may or may not have run"))
        },
    )
    .await;
    assert!(
        body(&told).contains("StackStorm is unavailable"),
        "{}",
        body(&told)
    );
    let listings = st2(&app)
        .requests_to("/api/v1/executions")
        .into_iter()
        .filter(|r| r.method == "GET" && r.status == 503)
        .count();
    assert!(listings >= 5, "asked {listings} times");
    assert_eq!(answers(&app, "$unknown").len(), 1);
}

#[tokio::test]
async fn a_result_announced_before_the_command_is_resolved_is_the_only_result() {
    // Arrange: it ran; the bridge comes back and hears its result before it has looked the
    // command up (it waits for `[stackstorm] timeout` after sending before concluding).
    let mut app = app().await;
    app.shutdown().await;
    let store = open_store(&app).await;
    leave_in_doubt(&store, "$early").await;
    store.close().await;
    let id = st2_receives(st2(&app), "$early").await;
    let app = app.restart().await;
    wait_for_stream(&app).await;

    // Act
    let outcome = st2(&app).finish_execution(&id, "succeeded", json!({"stdout": "up 5 days"}));
    let result = wait_for_answer(&app, "$early", "up 5 days").await;
    let ack = wait_for_answer(&app, "$early", "confirmed after a restart").await;
    // A second copy of the announcement (StackStorm can announce twice), and a recovery pass.
    st2(&app).announce("matrix", outcome.payload.unwrap());
    st2(&app).cut_streams();
    wait_for_stream(&app).await;

    // Assert
    let sent = app.hs.sent_to(ROOM);
    let position = |event_id: &str| sent.iter().position(|s| s.event_id == event_id);
    assert!(
        position(&result.event_id) < position(&ack.event_id),
        "the result came first"
    );
    assert_eq!(
        result.content["m.relates_to"]["event_id"], "$early",
        "in the command's thread"
    );
    answers_stay(&app, "$early", 2).await;
    assert!(
        executions::awaiting_result(&app.bridge.store, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "recorded as posted"
    );
}

#[tokio::test]
async fn a_result_posted_just_before_a_crash_is_not_posted_again_after_the_restart() {
    // Arrange: the result was delivered (claimed and queued) for the command in doubt, then
    // the bridge died before it looked the command up.
    let mut app = app().await;
    app.shutdown().await;
    let store = open_store(&app).await;
    leave_in_doubt(&store, "$posted").await;
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        executions::claim_for_event(&mut tx, "$posted")
            .await
            .unwrap(),
        executions::Claim::InDoubt
    );
    tx.commit().await.unwrap();
    store.close().await;
    let id = st2_receives(st2(&app), "$posted").await;
    st2(&app).finish_execution(&id, "succeeded", json!({"stdout": "up 6 days"}));

    // Act
    let app = app.restart().await;

    // Assert: confirmed (the execution finished: a recovery pass is asked for), no result.
    wait_for_answer(&app, "$posted", "confirmed after a restart").await;
    assert!(
        executions::awaiting_result(&app.bridge.store, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "its result counts as posted"
    );
    answers_stay(&app, "$posted", 1).await;
}

#[tokio::test]
async fn an_approved_command_whose_answer_was_lost_is_confirmed_and_gets_one_result() {
    // Arrange: Alice's deploy is approved; StackStorm starts it, its answer never leaves.
    let app = app().await;
    wait_for_stream(&app).await;
    app.push(
        "c",
        vec![events::text(ROOM, ALICE, "$deploy", "!st2 deploy shop")],
    )
    .await;
    let request = wait_for_answer(&app, "$deploy", "needs approval").await;
    st2(&app).hold_alias_executions(Some(AliasHold::AfterRecording));

    // Act
    app.push(
        "r",
        vec![json!({"type": "m.reaction", "room_id": ROOM, "sender": BOB, "event_id": "$yes",
               "origin_server_ts": 1_700_000_000_000_u64,
               "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": request.event_id, "key": "✅"}}})],
    )
    .await;

    // Assert: the bridge gives up waiting (`timeout`, 3 s), finds it in StackStorm, acks it.
    let ack = wait_for_answer(
        &app,
        "$deploy",
        "confirmed after StackStorm's answer was lost",
    )
    .await;
    let executions = st2(&app).executions();
    assert_eq!(executions.len(), 1, "run once");
    assert_eq!(executions[0].request["user"], ALICE, "as its requester");
    assert!(body(&ack).contains(&executions[0].id));
    st2(&app).hold_alias_executions(None);
    st2(&app).finish_execution(
        &executions[0].id,
        "succeeded",
        json!({"stdout": "deployed"}),
    );
    wait_for_answer(&app, "$deploy", "deployed").await;
    st2(&app).cut_streams();
    wait_for_stream(&app).await;
    // The request, the approval's news, the ack and the result; nothing "may or may not".
    poll::stays(Duration::from_secs(4), "one result", || async {
        answers(&app, "$deploy")
            .iter()
            .filter(|s| body(s).contains("deployed"))
            .count()
            == 1
    })
    .await;
    assert!(
        !answers(&app, "$deploy")
            .iter()
            .any(|s| body(s).contains("may or may not"))
    );
}

#[tokio::test]
async fn a_command_whose_request_was_lost_before_stackstorm_recorded_it_did_not_run() {
    // Arrange
    let app = app().await;
    st2(&app).hold_alias_executions(Some(AliasHold::BeforeRecording));

    // Act: the bridge gives up waiting; StackStorm never recorded the command.
    app.push("c", vec![events::text(ROOM, ALICE, "$held", "!st2 uptime")])
        .await;

    // Assert
    let told = wait_for_answer(&app, "$held", "did not run").await;
    assert!(
        body(&told).contains("StackStorm's answer to it was lost"),
        "{}",
        body(&told)
    );
    assert!(st2(&app).executions().is_empty());
    st2(&app).hold_alias_executions(None);
}
