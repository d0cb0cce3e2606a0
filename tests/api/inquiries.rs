//! StackStorm inquiries asked in rooms and answered there: ✅/❌, polls, `!st2 respond`.

use serde_json::{Value, json};
use st2_matrix::secret::Secret;
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    poll,
    st2::{AskOptions, St2Double},
};

use crate::helpers::*;

const BOB: &str = "@bob:example.org";

fn api_key() -> Options {
    Options {
        st2: Some(St2Auth::ApiKey),
        // Listing every second, so closings found by listing show up within a test.
        inquiries: true,
        ..Options::default()
    }
}

fn body(sent: &Sent) -> &str {
    sent.content["body"].as_str().unwrap_or_default()
}

/// A double with the asking workflow's alias (`ask`), asking with `options`.
async fn asking(options: AskOptions) -> St2Double {
    let st2 = st2_double().await;
    st2.set_aliases(vec![St2Double::ask_alias()]);
    st2.set_ask_options(options);
    st2
}

/// Links `user`'s StackStorm account (an API key of st2 user `st2_user`).
async fn link(app: &TestApp, user: &str, st2_user: &str) {
    let key = app.st2.as_ref().unwrap().add_api_key(st2_user);
    st2_matrix::identity::link_api_key(
        &app.bridge.core,
        &ruma::UserId::parse(user).unwrap(),
        &Secret::new(key),
    )
    .await
    .unwrap();
}

async fn wait_for_aliases(app: &TestApp) {
    poll::wait_until(WAIT, "the ask alias", || async {
        (!app.bridge.aliases.catalog().aliases().is_empty()).then_some(())
    })
    .await;
}

/// The bot's question (the notice naming the inquiry), once sent.
async fn question(app: &TestApp) -> Sent {
    poll::wait_until(WAIT, "the question", || async {
        app.hs
            .sent_to(ROOM)
            .into_iter()
            .find(|s| s.event_type == "m.room.message" && body(s).contains("StackStorm asks"))
    })
    .await
}

fn reaction(sender: &str, event_id: &str, target: &str, key: &str) -> Value {
    json!({"type": "m.reaction", "room_id": ROOM, "sender": sender, "event_id": event_id,
           "origin_server_ts": 1_700_000_000_000_u64,
           "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}})
}

fn vote(sender: &str, event_id: &str, poll: &str, answer: &str) -> Value {
    json!({"type": "org.matrix.msc3381.poll.response", "room_id": ROOM, "sender": sender,
           "event_id": event_id, "origin_server_ts": 1_700_000_000_000_u64,
           "content": {"m.relates_to": {"rel_type": "m.reference", "event_id": poll},
                       "org.matrix.msc3381.poll.response": {"answers": [answer]}}})
}

/// Messages (not reactions, polls or edits) whose body contains `needle`.
fn messages_with(app: &TestApp, needle: &str) -> Vec<Sent> {
    app.hs
        .sent_to(ROOM)
        .into_iter()
        .filter(|s| {
            s.event_type == "m.room.message"
                && s.content.get("m.new_content").is_none()
                && body(s).contains(needle)
        })
        .collect()
}

async fn wait_for_message(app: &TestApp, needle: &str) -> Sent {
    let what = format!("message containing {needle:?}");
    app.wait_for_sent(ROOM, &what, |s| {
        s.event_type == "m.room.message"
            && s.content.get("m.new_content").is_none()
            && body(s).contains(needle)
    })
    .await
}

async fn wait_for_edit(app: &TestApp, needle: &str) -> Sent {
    poll::wait_until(WAIT, &format!("an edit saying {needle}"), || async {
        app.hs.sent_to(ROOM).into_iter().find(|s| {
            s.content["m.new_content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(needle))
        })
    })
    .await
}

#[tokio::test]
async fn a_workflows_question_is_asked_in_the_commands_thread_and_a_check_mark_answers_it_as_that_person()
 {
    let app =
        TestApp::spawn_with_double(api_key(), Some(asking(AskOptions::default()).await)).await;
    // Results go only to rooms the bot is in.
    join(&app).await;
    wait_for_aliases(&app).await;
    link(&app, ALICE, "alice").await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ask")])
        .await;

    let q = question(&app).await;
    assert_eq!(q.content["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(q.content["m.relates_to"]["event_id"], "$cmd");
    assert!(
        body(&q).contains("`continue` (yes/no, required)"),
        "{}",
        body(&q)
    );
    assert!(
        body(&q).contains("React ✅ for yes or ❌ for no"),
        "{}",
        body(&q)
    );
    // The bot's own ✅ and ❌, on the question.
    let reactions = poll::wait_until(WAIT, "the bot's two reactions", || async {
        let r: Vec<Sent> = app
            .hs
            .sent_to(ROOM)
            .into_iter()
            .filter(|s| s.event_type == "m.reaction")
            .collect();
        (r.len() == 2).then_some(r)
    })
    .await;
    for r in &reactions {
        assert_eq!(r.content["m.relates_to"]["event_id"], q.event_id.as_str());
    }

    app.push("2", vec![reaction(ALICE, "$yes", &q.event_id, "✅")])
        .await;
    let st2 = app.st2.as_ref().unwrap();
    let answers = poll::wait_until(WAIT, "the answer", || async {
        let a = st2.inquiry_answers();
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(
        (answers[0].user.as_str(), &answers[0].response),
        ("alice", &json!({"continue": true})),
        "answered with alice's own StackStorm account"
    );
    let edit = wait_for_edit(&app, "Answered by @alice:example.org").await;
    assert_eq!(edit.content["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(
        edit.content["m.relates_to"]["event_id"],
        q.event_id.as_str()
    );
    // The workflow's result follows in the thread, as for any command.
    let result = poll::wait_until(WAIT, "the workflow's result", || async {
        app.hs.sent_to(ROOM).into_iter().find(|s| {
            s.content["m.relates_to"]["event_id"] == "$cmd"
                && s.content.get("m.new_content").is_none()
                && body(s).contains("proceeded")
        })
    })
    .await;
    assert!(
        body(&result).contains("proceeded : True"),
        "{}",
        body(&result)
    );
}

#[tokio::test]
async fn a_reaction_from_someone_who_may_not_run_commands_is_refused_once_and_ignored() {
    let options = Options {
        extra_config: "[permissions]\ndefault = \"help\"\n[[permissions.rules]]\nrule = \"@alice:example.org\"\nlevel = \"run\"\n",
        ..api_key()
    };
    let app = TestApp::spawn_with_double(options, Some(asking(AskOptions::default()).await)).await;
    wait_for_aliases(&app).await;
    link(&app, BOB, "bob").await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ask")])
        .await;
    let q = question(&app).await;
    app.push("2", vec![reaction(BOB, "$b1", &q.event_id, "✅")])
        .await;
    let refusal = wait_for_message(&app, "only people who may run commands").await;
    assert!(body(&refusal).contains(BOB), "{}", body(&refusal));
    app.push("3", vec![reaction(BOB, "$b2", &q.event_id, "❌")])
        .await;
    // The second reaction is handled (evidence: the inbox is empty) without a second refusal.
    poll::wait_until(WAIT, "both reactions handled", || async {
        let stats = st2_matrix::store::inbox::open_rooms(&app.bridge.store, 10)
            .await
            .unwrap();
        stats.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        messages_with(&app, "only people who may run commands").len(),
        1
    );
    assert!(app.st2.as_ref().unwrap().inquiry_puts().is_empty());
}

#[tokio::test]
async fn an_enum_question_is_a_poll_and_the_first_vote_answers_and_ends_it() {
    let schema = json!({"type": "object", "properties": {"colour": {"type": "string",
        "enum": ["blue", "green"], "description": "Which colour?", "required": true}}});
    let app = TestApp::spawn_with_double(
        api_key(),
        Some(asking(AskOptions::default().schema(&schema)).await),
    )
    .await;
    wait_for_aliases(&app).await;
    link(&app, ALICE, "alice").await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ask")])
        .await;
    let poll_start = poll::wait_until(WAIT, "the poll", || async {
        app.hs
            .sent_to(ROOM)
            .into_iter()
            .find(|s| s.event_type == "org.matrix.msc3381.poll.start")
    })
    .await;
    let start = &poll_start.content["org.matrix.msc3381.poll.start"];
    assert_eq!(
        start["question"]["org.matrix.msc1767.text"],
        "Which colour?"
    );
    assert_eq!(start["answers"][1]["org.matrix.msc1767.text"], "green");
    assert_eq!(poll_start.content["m.relates_to"]["rel_type"], "m.thread");

    app.push("2", vec![vote(ALICE, "$v", &poll_start.event_id, "1")])
        .await;
    let st2 = app.st2.as_ref().unwrap();
    poll::wait_until(WAIT, "the answer", || async {
        (st2.inquiry_answers().first().map(|a| a.response.clone())
            == Some(json!({"colour": "green"})))
        .then_some(())
    })
    .await;
    let end = poll::wait_until(WAIT, "the poll's end", || async {
        app.hs
            .sent_to(ROOM)
            .into_iter()
            .find(|s| s.event_type == "org.matrix.msc3381.poll.end")
    })
    .await;
    assert_eq!(
        end.content["m.relates_to"]["event_id"],
        poll_start.event_id.as_str()
    );
}

#[tokio::test]
async fn several_fields_are_answered_with_respond_in_the_thread_and_a_schema_error_is_shown() {
    let schema = json!({"type": "object", "properties": {
        "approve": {"type": "boolean", "required": true},
        "reason": {"type": "string", "required": true}}});
    let app = TestApp::spawn_with_double(
        api_key(),
        Some(asking(AskOptions::default().schema(&schema)).await),
    )
    .await;
    wait_for_aliases(&app).await;
    link(&app, ALICE, "alice").await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ask")])
        .await;
    let q = question(&app).await;
    assert!(
        body(&q).contains("Answer with `!st2 respond"),
        "{}",
        body(&q)
    );

    // A wrong type: StackStorm's validation message, in words.
    app.push(
        "2",
        vec![events::thread_text(
            ROOM,
            ALICE,
            "$r1",
            "$cmd",
            "!st2 respond approve=maybe reason=x",
        )],
    )
    .await;
    let refused = wait_for_message(&app, "did not accept the answer").await;
    assert!(
        body(&refused).contains("did not pass schema validation"),
        "{}",
        body(&refused)
    );

    // In the thread, without the id.
    app.push(
        "3",
        vec![events::thread_text(
            ROOM,
            ALICE,
            "$r2",
            "$cmd",
            "!st2 respond approve=true reason=\"all good\"",
        )],
    )
    .await;
    wait_for_message(&app, "Sent your answer").await;
    let answers = app.st2.as_ref().unwrap().inquiry_answers();
    assert_eq!(
        answers[0].response,
        json!({"approve": true, "reason": "all good"})
    );
}

#[tokio::test]
async fn without_a_linked_account_a_person_is_told_to_log_in() {
    let app =
        TestApp::spawn_with_double(api_key(), Some(asking(AskOptions::default()).await)).await;
    wait_for_aliases(&app).await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ask")])
        .await;
    let q = question(&app).await;
    app.push("2", vec![reaction(ALICE, "$yes", &q.event_id, "✅")])
        .await;
    let told = wait_for_message(&app, "have not linked one").await;
    assert!(body(&told).contains("login"), "{}", body(&told));
    assert!(app.st2.as_ref().unwrap().inquiry_puts().is_empty());
}

/// Joins the bot to ROOM (so a route naming it is a room the bot is in).
async fn join(app: &TestApp) {
    app.push(
        "j",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    poll::wait_until(WAIT, "the bot in the room", || async {
        st2_matrix::store::rooms::get(&app.bridge.store, ROOM)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn an_inquiry_created_while_the_stream_was_down_is_asked_once_in_its_routes_room() {
    let app =
        TestApp::spawn_with_double(api_key(), Some(asking(AskOptions::default()).await)).await;
    join(&app).await;
    let st2 = app.st2.as_ref().unwrap();
    st2.set_stream_available(false);
    st2.cut_streams();
    let started = st2.start_ask_workflow("ops", AskOptions::default().route(ROOM));
    st2.set_stream_available(true);
    let q = question(&app).await;
    assert!(body(&q).contains(&started.inquiry_id), "{}", body(&q));
    // Later listings (every second) and a restart do not ask it again.
    let app = app.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(messages_with(&app, "StackStorm asks").len(), 1);
}

#[tokio::test]
async fn a_question_that_times_out_or_is_answered_elsewhere_is_edited_to_say_so() {
    let app =
        TestApp::spawn_with_double(api_key(), Some(asking(AskOptions::default()).await)).await;
    join(&app).await;
    let st2 = app.st2.as_ref().unwrap();
    let first = st2.start_ask_workflow("ops", AskOptions::default().route(ROOM));
    question(&app).await;
    st2.timeout_inquiry(&first.inquiry_id);
    wait_for_edit(&app, "Timed out").await;
    let second = st2.start_ask_workflow("ops", AskOptions::default().route(ROOM));
    poll::wait_until(WAIT, "the second question", || async {
        (messages_with(&app, &second.inquiry_id).len() == 1).then_some(())
    })
    .await;
    st2.answer_inquiry(&second.inquiry_id, "ops", json!({"continue": true}))
        .unwrap();
    wait_for_edit(&app, "Answered outside this room").await;
}
