//! Results back into rooms: the stream, whispers, webhooks, recovery after a stream outage,
//! delivery through a homeserver outage.

use std::time::Duration;

use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    poll,
    st2::RuleState,
};

use crate::helpers::*;

const SECRET: &str = "a-webhook-secret-of-some-length";

fn body(sent: &Sent) -> &str {
    sent.content["body"].as_str().unwrap_or_default()
}

fn alias(name: &str, format: &str, result: Value) -> Value {
    json!({"name": name, "pack": "ops", "ref": format!("ops.{name}"), "action_ref": "core.local", "enabled": true,
           "formats": [format], "ack": {"enabled": false}, "result": result})
}

/// A bridge with StackStorm, in ROOM, with its stream up and `aliases` loaded.
async fn app_with(aliases: Vec<Value>, extra_config: &'static str) -> TestApp {
    let st2 = st2_double().await;
    st2.set_aliases(aliases);
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            extra_config,
            // Whispers go to an encrypted direct chat: Alice reads it with her device.
            devices: &[ALICE],
            ..Default::default()
        },
        Some(st2),
    )
    .await;
    join(&app, ROOM).await;
    poll::wait_until(WAIT, "the stream to connect", || async {
        let fetched = app.bridge.aliases.catalog().fetched_at.is_some();
        (app.st2.as_ref().unwrap().stream_subscribers() > 0 && fetched).then_some(())
    })
    .await;
    app
}

async fn join(app: &TestApp, room: &str) {
    app.push(
        &format!("join-{room}"),
        vec![events::member(
            room,
            ALICE,
            BOT,
            "invite",
            &format!("$inv{room}"),
        )],
    )
    .await;
    poll::wait_until(WAIT, "the bot to join", || async {
        st2_matrix::store::rooms::get(&app.bridge.store, room)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
}

/// Runs `command` as ALICE and returns the execution id.
async fn run(app: &TestApp, event_id: &str, command: &str) -> String {
    let before = app.st2.as_ref().unwrap().executions().len();
    app.push(
        &format!("run{event_id}"),
        vec![events::text(ROOM, ALICE, event_id, command)],
    )
    .await;
    poll::wait_until(WAIT, "the execution", || async {
        let executions = app.st2.as_ref().unwrap().executions();
        (executions.len() > before).then(|| executions.last().unwrap().id.clone())
    })
    .await
}

async fn post(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}{path}", app.url))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_result_appears_in_the_commands_thread_and_mentions_the_sender() {
    let app = app_with(
        vec![alias(
            "shell",
            "shell {{cmd}}",
            json!({"format": "Output: `{{ execution.result.stdout }}`"}),
        )],
        "",
    )
    .await;
    let id = run(&app, "$cmd", "!st2 shell date").await;
    app.st2.as_ref().unwrap().finish_execution(
        &id,
        "succeeded",
        json!({"stdout": "Tue Nov 25", "stderr": ""}),
    );
    let sent = app.wait_for_messages(ROOM, 1).await;
    let result = &sent[0];
    assert_eq!(body(result), format!("{ALICE}: Output: `Tue Nov 25`"));
    assert!(
        result.content["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<code>Tue Nov 25</code>")
    );
    assert_eq!(result.content["m.mentions"]["user_ids"], json!([ALICE]));
    let relation = &result.content["m.relates_to"];
    assert_eq!(
        (relation["rel_type"].as_str(), relation["event_id"].as_str()),
        (Some("m.thread"), Some("$cmd"))
    );
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn thread_false_in_extra_matrix_posts_a_plain_reply() {
    let result =
        json!({"format": "done", "extra": {"matrix": {"thread": false, "msgtype": "m.text"}}});
    let app = app_with(vec![alias("shell", "shell {{cmd}}", result)], "").await;
    let id = run(&app, "$cmd", "!st2 shell date").await;
    app.st2
        .as_ref()
        .unwrap()
        .finish_execution(&id, "succeeded", json!({}));
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert_eq!(sent[0].content["msgtype"], "m.text");
    assert_eq!(
        sent[0].content["m.relates_to"],
        json!({"m.in_reply_to": {"event_id": "$cmd"}})
    );
}

#[tokio::test]
async fn a_whispered_result_goes_to_a_direct_chat_opened_once() {
    let app = app_with(vec![alias("shell", "shell {{cmd}}", json!({}))], "").await;
    let st2 = app.st2.as_ref().unwrap();
    for text in ["secret one", "secret two"] {
        st2.announce(
            "matrix",
            json!({"channel": ROOM, "message": text, "user": ALICE, "whisper": true}),
        );
    }
    let dm = "!created1:example.org";
    let sent = app.wait_for_messages(dm, 2).await;
    assert_eq!(
        (body(&sent[0]), body(&sent[1])),
        ("secret one", "secret two")
    );
    let created = app.hs.created_rooms();
    assert_eq!(created.len(), 1, "one direct chat, remembered");
    assert_eq!(
        (
            created[0]["is_direct"].as_bool(),
            created[0]["invite"].clone()
        ),
        (Some(true), json!([ALICE]))
    );
    assert!(app.hs.sent_to(ROOM).is_empty(), "nothing in the room");
}

#[tokio::test]
async fn a_channel_alias_is_resolved_and_a_room_the_bot_is_not_in_is_skipped() {
    let app = app_with(vec![alias("shell", "shell {{cmd}}", json!({}))], "").await;
    app.hs.set_alias("#ops:example.org", ROOM);
    let st2 = app.st2.as_ref().unwrap();
    st2.announce(
        "matrix",
        json!({"channel": "!elsewhere:example.org", "message": "lost"}),
    );
    st2.announce(
        "matrix",
        json!({"channel": "#ops:example.org", "message": "via alias"}),
    );
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert_eq!(body(&sent[0]), "via alias");
    assert!(app.hs.sent_to("!elsewhere:example.org").is_empty());
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"st2_matrix_results_undeliverable_total{reason="not_in_room"}"#)
    );
}

#[tokio::test]
async fn long_output_is_split_into_several_messages_in_order() {
    // Under the attachment threshold (see attachments.rs for results over it).
    let app = app_with(
        vec![alias("shell", "shell {{cmd}}", json!({}))],
        "[results]\nattach_over = \"1MiB\"\n",
    )
    .await;
    let output: String = (0..3000)
        .map(|i| format!("line {i} of a long command output\n"))
        .collect();
    app.st2.as_ref().unwrap().announce(
        "matrix",
        json!({"channel": ROOM, "message": format!("```\n{output}```")}),
    );
    // Until the last line arrived: the parts are sent one by one.
    let sent = poll::wait_until(WAIT, "the last part", || async {
        let sent = app.hs.sent_to(ROOM);
        let joined: String = sent.iter().map(|s| body(s).to_owned()).collect();
        joined.contains("line 2999 of").then_some(sent)
    })
    .await;
    assert!(sent.len() >= 4, "several parts: {}", sent.len());
    let joined: String = sent.iter().map(|s| body(s).to_owned()).collect();
    let first = joined.find("line 0 of").expect("the first line");
    assert!(first < joined.find("line 2999 of").unwrap(), "in order");
    for part in &sent {
        assert!(serde_json::to_string(&part.content).unwrap().len() < 64 * 1024);
        assert!(
            part.content["formatted_body"]
                .as_str()
                .unwrap()
                .contains("<pre><code>")
        );
    }
}

#[tokio::test]
async fn a_result_finished_while_the_stream_was_down_is_recovered_once() {
    let app = app_with(vec![alias("shell", "shell {{cmd}}", json!({}))], "").await;
    let id = run(&app, "$cmd", "!st2 shell uptime").await;
    let st2 = app.st2.as_ref().unwrap();
    st2.set_stream_available(false);
    st2.cut_streams();
    poll::wait_until(WAIT, "the stream to be down", || async {
        (st2.stream_subscribers() == 0).then_some(())
    })
    .await;
    let outcome = st2.finish_execution(
        &id,
        "succeeded",
        json!({"stdout": "up 3 days", "stderr": ""}),
    );
    assert_eq!(
        outcome.delivered_to, 0,
        "the announcement is lost, as in StackStorm"
    );
    st2.set_stream_available(true);
    let sent = app.wait_for_messages(ROOM, 1).await;
    let text = body(&sent[0]);
    assert!(
        text.contains("`ops.shell` succeeded")
            && text.contains("Recovered")
            && text.contains("up 3 days"),
        "{text}"
    );
    assert_eq!(sent[0].content["m.relates_to"]["event_id"], "$cmd");
    // The announcement StackStorm would have sent arrives after all: no second result.
    poll::wait_until(WAIT, "the stream back", || async {
        (st2.stream_subscribers() > 0).then_some(())
    })
    .await;
    let payload = outcome.payload.clone().unwrap_or_else(|| json!({"channel": ROOM, "message": "late", "context": {"room_id": ROOM, "event_id": "$cmd", "sender": ALICE}}));
    st2.announce("matrix", payload);
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn a_silent_stream_is_declared_dead_and_replaced() {
    // StackStorm's heartbeats do not come (the bridge expects one every 500 ms): it must notice
    // and reconnect by itself.
    let st2 = st2_double().await;
    st2.set_heartbeat(Duration::from_secs(3600));
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            ..Options::default()
        },
        Some(st2),
    )
    .await;
    let st2 = app.st2.as_ref().unwrap();
    poll::wait_until(WAIT, "a reconnection", || async {
        (st2.requests_to("/stream/v1/stream").len() >= 2 && app.bridge.stream.get().reconnects >= 1)
            .then_some(())
    })
    .await;
    assert!(
        app.bridge
            .stream
            .get()
            .last_error
            .unwrap_or_default()
            .contains("no data")
    );
}

#[tokio::test]
async fn five_results_wait_through_a_homeserver_outage_and_arrive_in_order_once() {
    let app = app_with(
        vec![alias(
            "shell",
            "shell {{cmd}}",
            json!({"format": "result {{ execution.parameters.cmd }}"}),
        )],
        "",
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(run(&app, &format!("$c{i}"), &format!("!st2 shell n{i}")).await);
    }
    app.hs.set_down(true);
    let before = app.send_attempts();
    for id in &ids {
        app.st2
            .as_ref()
            .unwrap()
            .finish_execution(id, "succeeded", json!({}));
    }
    app.wait_for_send_attempts(before, 2).await; // sends failed against the outage, then again
    app.hs.set_down(false);
    let sent = app.wait_for_messages(ROOM, 5).await;
    let bodies: Vec<_> = sent.iter().map(|s| body(s).to_owned()).collect();
    assert_eq!(
        bodies,
        (0..5)
            .map(|i| format!("{ALICE}: result n{i}"))
            .collect::<Vec<_>>()
    );
    app.assert_message_count_stays(ROOM, 5).await;
}

#[tokio::test]
async fn a_missing_notify_rule_is_noticed_at_start() {
    let st2 = st2_double().await;
    st2.set_notify_rule("matrix", RuleState::Absent);
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            ..Options::default()
        },
        Some(st2),
    )
    .await;
    poll::wait_until(WAIT, "the rule check", || async {
        app.bridge
            .notify_rule
            .read()
            .unwrap()
            .clone()
            .filter(|s| s == "missing")
    })
    .await;
}

#[tokio::test]
async fn ready_reports_the_stream() {
    let app = app_with(vec![alias("shell", "shell {{cmd}}", json!({}))], "").await;
    let (status, ready) = app.get("/ready", None).await;
    assert_eq!(
        (status, ready["stackstorm_stream"].as_str()),
        (200, Some("connected"))
    );
}

#[tokio::test]
async fn webhooks_are_off_without_a_secret() {
    let app = app_with(vec![], "").await;
    let (status, _) = post(
        &app,
        "/chatops/message",
        None,
        "application/json",
        br#"{"channel":"!room:example.org","message":"x"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn webhooks_need_the_secret() {
    let app = app_with(
        vec![],
        "[webhook]\nsecret = \"a-webhook-secret-of-some-length\"",
    )
    .await;
    let body = json!({"channel": ROOM, "message": "hi"})
        .to_string()
        .into_bytes();
    assert_eq!(
        post(
            &app,
            "/chatops/message",
            None,
            "application/json",
            body.clone()
        )
        .await
        .0,
        401
    );
    assert_eq!(
        post(
            &app,
            "/chatops/message",
            Some("wrong-secret-wrong-secret"),
            "application/json",
            body.clone()
        )
        .await
        .0,
        401
    );
    assert_eq!(
        post(
            &app,
            "/hubot/st2",
            Some("wrong-secret-wrong-secret"),
            "application/json",
            body
        )
        .await
        .0,
        401
    );
    app.assert_message_count_stays(ROOM, 0).await;
}

#[tokio::test]
async fn the_errbot_webhook_posts_into_the_room() {
    let app = app_with(
        vec![],
        "[webhook]\nsecret = \"a-webhook-secret-of-some-length\"",
    )
    .await;
    let body = json!({"channel": ROOM, "message": "deployed *web*", "user": ALICE, "whisper": false, "extra": {}});
    let (status, answer) = post(
        &app,
        "/chatops/message",
        Some(SECRET),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")));
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert_eq!(body_of(&sent[0]), format!("{ALICE}: deployed *web*"));
}

fn body_of(sent: &Sent) -> String {
    body(sent).to_owned()
}

#[tokio::test]
async fn the_hubot_webhook_takes_json_or_a_form_payload() {
    let app = app_with(
        vec![],
        "[webhook]\nsecret = \"a-webhook-secret-of-some-length\"",
    )
    .await;
    let json_body = json!({"channel": ROOM, "message": "from json"})
        .to_string()
        .into_bytes();
    assert_eq!(
        post(
            &app,
            "/hubot/st2",
            Some(SECRET),
            "application/json",
            json_body
        )
        .await
        .0,
        202
    );
    let form: String = url_encode(&json!({"channel": ROOM, "message": "from a form"}).to_string());
    let form_body = format!("payload={form}").into_bytes();
    assert_eq!(
        post(
            &app,
            "/hubot/st2",
            Some(SECRET),
            "application/x-www-form-urlencoded",
            form_body
        )
        .await
        .0,
        202
    );
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert_eq!(
        (body(&sent[0]), body(&sent[1])),
        ("from json", "from a form")
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn bad_webhook_bodies_are_refused_with_the_reason() {
    let app = app_with(
        vec![],
        "[webhook]\nsecret = \"a-webhook-secret-of-some-length\"",
    )
    .await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not JSON"),
        (br#"{"message": "x"}"#.to_vec(), "`channel`"),
        (
            json!({"channel": ROOM}).to_string().into_bytes(),
            "`message`",
        ),
        (
            json!({"channel": ROOM, "message": 5})
                .to_string()
                .into_bytes(),
            "`message` must be a string",
        ),
        (
            json!({"channel": "general", "message": "x"})
                .to_string()
                .into_bytes(),
            "not a Matrix room id",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(
            &app,
            "/chatops/message",
            Some(SECRET),
            "application/json",
            body,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{answer} should mention {expected}"
        );
    }
    let (status, _) = post(
        &app,
        "/hubot/st2",
        Some(SECRET),
        "application/x-www-form-urlencoded",
        b"other=1".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, answer) = post(
        &app,
        "/chatops/message",
        Some(SECRET),
        "application/json",
        json!({"channel": "!nope:example.org", "message": "x"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let huge = json!({"channel": ROOM, "message": "x".repeat(1024 * 1024 + 10)})
        .to_string()
        .into_bytes();
    assert_eq!(
        post(
            &app,
            "/chatops/message",
            Some(SECRET),
            "application/json",
            huge
        )
        .await
        .0,
        413
    );
    app.assert_message_count_stays(ROOM, 0).await;
}
