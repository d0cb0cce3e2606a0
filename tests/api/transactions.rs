//! Pushed transactions: auth, parsing, dedupe, and the first command.

use serde_json::json;
use st2_matrix_testkit::homeserver::events;

use crate::helpers::*;

#[tokio::test]
async fn ping_is_answered_with_a_reply_to_the_command() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ping")])
        .await;
    assert_eq!((status, body), (200, json!({})));
    let sent = app.wait_for_messages(ROOM, 1).await;
    let content = &sent[0].content;
    assert_eq!(content["msgtype"], "m.notice");
    assert_eq!(
        content["body"],
        format!("pong: st2-matrix {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        content["m.relates_to"],
        json!({"m.in_reply_to": {"event_id": "$cmd"}})
    );
    assert_eq!(content["m.mentions"]["user_ids"], json!([ALICE]));
}

#[tokio::test]
async fn ping_in_a_thread_is_answered_in_the_thread() {
    let app = TestApp::spawn().await;
    app.push(
        "1",
        vec![events::thread_text(
            ROOM,
            ALICE,
            "$cmd",
            "$root",
            "!st2 ping",
        )],
    )
    .await;
    let sent = app.wait_for_messages(ROOM, 1).await;
    let relation = &sent[0].content["m.relates_to"];
    assert_eq!(relation["rel_type"], "m.thread");
    assert_eq!(relation["event_id"], "$root");
    assert_eq!(relation["m.in_reply_to"]["event_id"], "$cmd");
}

#[tokio::test]
async fn a_resent_transaction_changes_nothing() {
    let app = TestApp::spawn().await;
    let txn = vec![events::text(ROOM, ALICE, "$cmd", "!st2 ping")];
    assert_eq!(app.push("7", txn.clone()).await.0, 200);
    app.wait_for_messages(ROOM, 1).await;
    assert_eq!(app.push("7", txn).await, (200, json!({})));
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn an_event_in_two_transactions_is_answered_once() {
    let app = TestApp::spawn().await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ping")])
        .await;
    app.push(
        "2",
        vec![
            events::text(ROOM, ALICE, "$cmd", "!st2 ping"),
            events::text(ROOM, ALICE, "$cmd2", "!st2 ping"),
        ],
    )
    .await;
    app.wait_for_messages(ROOM, 2).await;
    app.assert_message_count_stays(ROOM, 2).await;
}

#[tokio::test]
async fn the_same_transaction_id_with_other_events_is_new_work() {
    // Synapse restarts its transaction counter at 1 on a fresh database.
    let app = TestApp::spawn().await;
    app.push("1", vec![events::text(ROOM, ALICE, "$a", "!st2 ping")])
        .await;
    app.push("1", vec![events::text(ROOM, ALICE, "$b", "!st2 ping")])
        .await;
    let sent = app.wait_for_messages(ROOM, 2).await;
    let answered: Vec<_> = sent
        .iter()
        .map(|s| s.content["m.relates_to"]["m.in_reply_to"]["event_id"].clone())
        .collect();
    assert_eq!(answered, [json!("$a"), json!("$b")]);
}

#[tokio::test]
async fn commands_in_one_room_are_answered_in_order() {
    let app = TestApp::spawn().await;
    let commands: Vec<_> = (0..20)
        .map(|i| events::text(ROOM, ALICE, &format!("$c{i}"), "!st2 ping"))
        .collect();
    app.push("1", commands).await;
    let sent = app.wait_for_messages(ROOM, 20).await;
    for (i, s) in sent.iter().enumerate() {
        assert_eq!(
            s.content["m.relates_to"]["m.in_reply_to"]["event_id"],
            format!("$c{i}")
        );
    }
}

#[tokio::test]
async fn messages_from_the_bridge_itself_are_ignored() {
    let app = TestApp::spawn().await;
    app.push(
        "1",
        vec![
            events::text(ROOM, BOT, "$own", "!st2 ping"),
            events::text(ROOM, "@st2_bob:example.org", "$ns", "!st2 ping"),
            events::text(ROOM, ALICE, "$other", "hello !st2 ping"),
            events::text(ROOM, ALICE, "$real", "!st2 ping"),
        ],
    )
    .await;
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert_eq!(
        sent[0].content["m.relates_to"]["m.in_reply_to"]["event_id"],
        "$real"
    );
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn a_command_without_stackstorm_configured_says_so() {
    let app = TestApp::spawn().await;
    app.push(
        "1",
        vec![events::text(ROOM, ALICE, "$cmd", "!st2 frobnicate")],
    )
    .await;
    let sent = app.wait_for_messages(ROOM, 1).await;
    let body = sent[0].content["body"].as_str().unwrap();
    assert!(body.contains("StackStorm is not configured"), "{body}");
}

#[tokio::test]
async fn a_missing_token_is_401_and_a_wrong_one_403() {
    let app = TestApp::spawn().await;
    let body = br#"{"events": []}"#.to_vec();
    let (status, error) = app.push_raw("1", None, body.clone()).await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let (status, error) = app.push_raw("1", Some("wrong"), body.clone()).await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    let (status, _) = app
        .get("/_matrix/app/v1/users/@x:example.org", Some("wrong"))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_legacy_query_token_and_path_are_accepted() {
    let app = TestApp::spawn().await;
    let url = format!("{}/transactions/9?access_token={}", app.url, app.hs_token);
    let response = app
        .http
        .put(url)
        .body(r#"{"events": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let url = format!(
        "{}/_matrix/app/v1/transactions/9?access_token=wrong",
        app.url
    );
    let response = app
        .http
        .put(url)
        .bearer_auth(&app.hs_token)
        .body(r#"{"events": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "both credentials must match when both are sent"
    );
}

#[tokio::test]
async fn a_rejected_transaction_stores_nothing() {
    let app = TestApp::spawn().await;
    let body = serde_json::to_vec(&events::transaction([events::text(
        ROOM,
        ALICE,
        "$cmd",
        "!st2 ping",
    )]))
    .unwrap();
    assert_eq!(app.push_raw("1", Some("wrong"), body).await.0, 403);
    app.assert_message_count_stays(ROOM, 0).await;
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_right_errcode() {
    let app = TestApp::spawn().await;
    let token = Some(app.hs_token.as_str());
    let (status, error) = app.push_raw("1", token, b"{not json".to_vec()).await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (400, Some("M_NOT_JSON"))
    );
    let (status, error) = app
        .push_raw("1", token, br#"{"events": "nope"}"#.to_vec())
        .await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (400, Some("M_BAD_JSON"))
    );
}

#[tokio::test]
async fn a_malformed_event_is_skipped_and_the_rest_handled() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .push(
            "1",
            vec![
                json!({"type": "m.room.message", "content": 5}),
                events::text(ROOM, ALICE, "$cmd", "!st2 ping"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    app.wait_for_messages(ROOM, 1).await;
}

#[tokio::test]
async fn queries_and_ping_answer_as_the_spec_says() {
    let app = TestApp::spawn().await;
    let token = Some(app.hs_token.as_str());
    let (status, error) = app
        .get("/_matrix/app/v1/users/@st2_x:example.org", token)
        .await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    let (status, _) = app
        .get("/_matrix/app/v1/rooms/%23st2_x:example.org", token)
        .await;
    assert_eq!(status, 404);
    let response = app
        .http
        .post(format!("{}/_matrix/app/v1/ping", app.url))
        .bearer_auth(&app.hs_token)
        .body(r#"{"transaction_id": "t"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({})
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_are_unrecognized() {
    let app = TestApp::spawn().await;
    let (status, error) = app.get("/_matrix/app/v1/nothing", None).await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let (status, error) = app
        .get("/_matrix/app/v1/transactions/1", Some(&app.hs_token))
        .await;
    assert_eq!(
        (status, error["errcode"].as_str()),
        (405, Some("M_UNRECOGNIZED"))
    );
}
