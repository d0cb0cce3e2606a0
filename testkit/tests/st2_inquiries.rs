//! The StackStorm double's inquiries: the asking workflow, `/api/v1/inquiries`, and the
//! stream's execution events and filters, held to st2's texts and behaviour.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use st2_matrix_testkit::st2::{
    ASK_ACTION, AnswerVia, AskOptions, InquiryRefusal, St2Double, St2Options,
};

fn client() -> Client {
    // Built with the bridge's reqwest features, which need a provider even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

async fn double() -> (St2Double, String) {
    let st2 = St2Double::start(St2Options {
        heartbeat: Duration::from_millis(200),
        ..St2Options::default()
    })
    .await;
    st2.add_ask_alias();
    let token = st2.issue_token("bot", Duration::from_secs(600));
    (st2, token)
}

async fn get(st2: &St2Double, token: &str, path: &str) -> Response {
    client()
        .get(format!("{}{path}", st2.url()))
        .header("X-Auth-Token", token)
        .send()
        .await
        .expect("request")
}

async fn put(st2: &St2Double, token: &str, id: &str, body: &str) -> Response {
    client()
        .put(format!("{}/inquiries/{id}", st2.api_url()))
        .header("X-Auth-Token", token)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

async fn fault(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON error");
    (
        status,
        body["faultstring"]
            .as_str()
            .expect("faultstring")
            .to_owned(),
    )
}

/// Runs `ask …` from a room, as the bridge does, and waits for the inquiry.
async fn ask_from_chat(st2: &St2Double, token: &str) -> (String, String) {
    let response = client()
        .post(format!("{}/aliasexecution", st2.api_url()))
        .header("X-Auth-Token", token)
        .json(&json!({
            "name": "orquesta_ask_chatops", "format": "ask {{question=Continue?}}",
            "command": "ask deploy?", "user": "@alice:example.org",
            "source_channel": "!room:example.org",
            "source_context": {"room_id": "!room:example.org", "event_id": "$cmd"},
            "notification_route": "matrix",
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("body");
    assert_eq!(body["execution"]["status"], "requested");
    let workflow = body["execution"]["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(inquiry) = st2.pending_inquiries().first() {
            return (workflow, inquiry.clone());
        }
        assert!(Instant::now() < deadline, "no inquiry");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An SSE connection and the text received but not yet parsed.
struct Sse(
    futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    String,
);

impl Sse {
    async fn open(st2: &St2Double, token: &str, query: &str) -> Sse {
        let response = client()
            .get(format!("{}/stream{query}", st2.stream_url()))
            .header("X-Auth-Token", token)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), StatusCode::OK);
        Sse(
            response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            String::new(),
        )
    }

    /// Events `(name, data)` received within `wait`; stops early when the stream ends.
    async fn collect(&mut self, wait: Duration) -> (Vec<(String, Value)>, bool) {
        let deadline = Instant::now() + wait;
        let mut ended = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.0.next()).await {
                Ok(Some(Ok(bytes))) => self.1.push_str(&String::from_utf8(bytes).expect("utf8")),
                Ok(_) => {
                    ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut events = Vec::new();
        for frame in self.1.split("\n\n") {
            let frame = frame.trim_start_matches('\n');
            let mut lines = frame.lines();
            if let (Some(e), Some(d)) = (lines.next(), lines.next()) {
                let (Some(e), Some(d)) = (e.strip_prefix("event: "), d.strip_prefix("data: "))
                else {
                    continue;
                };
                events.push((e.to_owned(), serde_json::from_str(d).expect("json")));
            }
        }
        self.1.clear();
        (events, ended)
    }
}

fn statuses(events: &[(String, Value)], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(_, d)| d["id"] == id)
        .map(|(e, d)| {
            format!(
                "{}:{}",
                e.trim_start_matches("st2.execution__"),
                d["status"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test]
async fn a_chat_command_pauses_on_core_ask_and_the_answer_resumes_and_announces_it() {
    let (st2, token) = double().await;
    let mut executions = Sse::open(
        &st2,
        &token,
        "?events=st2.execution__create,st2.execution__update",
    )
    .await;
    let mut announcements = Sse::open(&st2, &token, "?events=st2.announcement__*").await;
    let (workflow, inquiry) = ask_from_chat(&st2, &token).await;

    let child: Value = get(&st2, &token, &format!("/api/v1/executions/{inquiry}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(child["parent"], workflow);
    assert_eq!(child["runner"]["name"], "inquirer");
    assert_eq!(child["action"]["ref"], "core.ask");
    assert_eq!(child["status"], "pending");
    assert_eq!(child["context"]["parent"]["execution_id"], workflow);
    assert_eq!(child["context"]["source_channel"], "!room:example.org");
    assert_eq!(child["context"]["orquesta"]["task_name"], "ask");
    assert_eq!(
        child["result"]["schema"]["properties"]["continue"]["type"],
        "boolean"
    );
    assert_eq!(child["result"]["ttl"], 1440);
    assert_eq!(child["result"]["users"], json!([]));
    let parent: Value = get(&st2, &token, &format!("/api/v1/executions/{workflow}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(parent["status"], "paused");
    assert_eq!(parent["children"], json!([inquiry]));
    assert_eq!(parent["runner"]["name"], "orquesta");

    let (events, _) = executions.collect(Duration::from_millis(300)).await;
    assert_eq!(
        statuses(&events, &workflow),
        [
            "create:requested",
            "update:scheduled",
            "update:running",
            "update:paused"
        ]
    );
    assert_eq!(
        statuses(&events, &inquiry),
        [
            "create:requested",
            "update:scheduled",
            "update:running",
            "update:pending"
        ]
    );
    let created = &events
        .iter()
        .find(|(e, d)| e == "st2.execution__create" && d["id"] == inquiry)
        .unwrap()
        .1;
    assert!(
        created.get("result").is_none(),
        "from_model drops falsy fields: {created}"
    );

    let listed = get(&st2, &token, "/api/v1/inquiries").await;
    assert_eq!(listed.headers()["x-total-count"], "1");
    assert_eq!(listed.headers()["x-limit"], "20");
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let keys: Vec<&String> = listed[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "roles", "route", "schema", "ttl", "users"]);

    let answered = put(
        &st2,
        &token,
        &inquiry,
        &format!(r#"{{"id": "{inquiry}", "response": {{"continue": true}}}}"#),
    )
    .await;
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(
        answered.json::<Value>().await.unwrap(),
        json!({"id": inquiry, "response": {"continue": true}})
    );

    let (events, _) = executions.collect(Duration::from_millis(300)).await;
    assert_eq!(
        statuses(&events, &workflow),
        ["update:resuming", "update:running", "update:succeeded"]
    );
    assert_eq!(statuses(&events, &inquiry), ["update:succeeded"]);
    let done = st2.execution(&workflow).unwrap().execution;
    assert_eq!(
        done["result"],
        json!({"output": {"answer": {"continue": true}, "proceeded": true}})
    );
    assert_eq!(
        st2.execution(&inquiry).unwrap().execution["result"]["response"],
        json!({"continue": true})
    );
    let (announced, _) = announcements.collect(Duration::from_millis(300)).await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0].0, "st2.announcement__matrix");
    let payload = &announced[0].1["payload"];
    assert_eq!(payload["context"]["event_id"], "$cmd");
    assert!(payload["message"].as_str().unwrap().contains(&format!(
        "Action {ASK_ACTION} completed.\nstatus : succeeded"
    )));
    assert_eq!(
        st2.last_execution().unwrap().id,
        workflow,
        "children are not what the command started"
    );

    let answers = st2.inquiry_answers();
    assert_eq!(
        (answers[0].user.as_str(), answers[0].via),
        ("bot", AnswerVia::Api)
    );
    assert_eq!(st2.inquiry_puts()[0].user.as_deref(), Some("bot"));
    let again = put(
        &st2,
        &token,
        &inquiry,
        r#"{"response": {"continue": true}}"#,
    )
    .await;
    assert_eq!(
        fault(again).await,
        (
            400,
            format!("Inquiry \"{inquiry}\" has already been responded to.")
        )
    );
}

#[tokio::test]
async fn continue_false_skips_the_proceed_branch_and_the_workflow_still_succeeds() {
    let (st2, token) = double().await;
    let (workflow, inquiry) = ask_from_chat(&st2, &token).await;
    let answered = put(
        &st2,
        &token,
        &inquiry,
        r#"{"id": "x", "response": {"continue": false}}"#,
    )
    .await;
    assert_eq!(answered.status(), StatusCode::OK);
    let done = st2.execution(&workflow).unwrap().execution;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(
        done["result"]["output"],
        json!({"answer": {"continue": false}, "proceeded": false})
    );
}

#[tokio::test]
async fn responses_are_checked_with_st2s_texts() {
    let (st2, token) = double().await;
    let (workflow, inquiry) = ask_from_chat(&st2, &token).await;
    let missing = put(&st2, &token, &inquiry, r#"{"id": "x", "response": {}}"#).await;
    assert_eq!(
        fault(missing).await,
        (
            400,
            format!(
                "Response for inquiry \"{inquiry}\" did not pass schema validation. 'continue' is a required property\n\nFailed validating 'required' in schema['properties']['continue']:\n    {{'title': 'response_data',\n     'type': 'object',\n     'properties': {{'continue': {{'type': 'boolean',\n                                 'description': 'Would you like to '\n                                                'continue the workflow?',\n                                 'required': True}}}}}}\n\nOn instance['continue']:\n    {{}}"
            )
        )
    );
    assert_eq!(
        fault(put(&st2, &token, &inquiry, r#"{"id": "x"}"#).await).await,
        (500, "Internal Server Error".into())
    );
    assert_eq!(
        fault(put(&st2, &token, &inquiry, "").await).await,
        (500, "Internal Server Error".into())
    );
    assert_eq!(
        fault(put(&st2, &token, &inquiry, r#"{"response": "yes"}"#).await).await,
        (400, "'yes' is not of type 'object'".into())
    );
    assert_eq!(
        fault(put(&st2, &token, &inquiry, r#"{"id": 5, "response": {}}"#).await).await,
        (400, "5 is not of type 'string'".into())
    );
    assert_eq!(
        fault(put(&st2, &token, &inquiry, "[1]").await).await,
        (400, "[1] is not of type 'object'".into())
    );
    let unknown = "5f0c0e8a0000000000000099";
    assert_eq!(
        fault(put(&st2, &token, unknown, r#"{"response": {}}"#).await).await,
        (404, "The resource could not be found.".into())
    );
    assert_eq!(
        fault(get(&st2, &token, &format!("/api/v1/inquiries/{unknown}")).await).await,
        (404, "The resource could not be found.".into())
    );
    assert_eq!(
        fault(get(&st2, &token, &format!("/api/v1/inquiries/{workflow}")).await).await,
        (
            400,
            format!("Action execution \"{workflow}\" is not an inquiry.")
        )
    );
    let one: Value = get(&st2, &token, &format!("/api/v1/inquiries/{inquiry}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], inquiry);
    assert_eq!(one["route"], "");
    assert!(st2.inquiry_answers().is_empty());
    assert_eq!(st2.inquiry_puts().len(), 7);
}

#[tokio::test]
async fn users_restrict_who_answers_and_api_keys_answer_as_their_owner() {
    let (st2, token) = double().await;
    let enum_schema = r#"{"type": "object", "properties": {"environment": {"type": "string", "enum": ["staging", "production"], "required": true}}}"#;
    st2.set_ask_options(
        AskOptions::default()
            .schema_json(enum_schema)
            .users(&["alice"])
            .route("!room:example.org"),
    );
    let (_, inquiry) = ask_from_chat(&st2, &token).await;
    let denied = put(
        &st2,
        &token,
        &inquiry,
        r#"{"response": {"environment": "staging"}}"#,
    )
    .await;
    assert_eq!(
        fault(denied).await,
        (
            403,
            format!("User \"bot\" does not have permission to respond to inquiry \"{inquiry}\".")
        )
    );
    let key = st2.add_api_key("alice");
    let wrong = client()
        .put(format!("{}/inquiries/{inquiry}", st2.api_url()))
        .header("St2-Api-Key", &key)
        .json(&json!({"response": {"environment": "dev"}}))
        .send()
        .await
        .unwrap();
    let (status, text) = fault(wrong).await;
    assert_eq!(status, 400);
    assert!(text.ends_with("'dev' is not one of ['staging', 'production']\n\nFailed validating 'enum' in schema['properties']['environment']:\n    {'type': 'string', 'enum': ['staging', 'production'], 'required': True}\n\nOn instance['environment']:\n    'dev'"), "{text}");
    let ok = client()
        .put(format!("{}/inquiries/{inquiry}", st2.api_url()))
        .header("St2-Api-Key", &key)
        .json(&json!({"id": inquiry, "response": {"environment": "production"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(st2.inquiry_answers()[0].user, "alice");
    assert_eq!(st2.inquiry_puts()[1].user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn inquiries_without_chat_time_out_or_are_answered_elsewhere() {
    let (st2, token) = double().await;
    let multi = json!({"type": "object", "properties": {"approved": {"type": "boolean", "required": true}, "reason": {"type": "string"}}});
    let first = st2.start_ask_workflow(
        "ops",
        AskOptions::default()
            .schema(&multi)
            .route("#ops:example.org")
            .ttl(5),
    );
    let second = st2.start_ask_workflow("ops", AskOptions::default());
    assert_eq!(
        st2.pending_inquiries(),
        [first.inquiry_id.clone(), second.inquiry_id.clone()]
    );
    let one: Value = get(
        &st2,
        &token,
        &format!("/api/v1/inquiries/{}", first.inquiry_id),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (one["route"].as_str(), one["ttl"].as_i64()),
        (Some("#ops:example.org"), Some(5))
    );
    let workflow = st2.execution(&first.workflow_id).unwrap().execution;
    assert_eq!(workflow["status"], "paused");
    assert!(workflow["context"].get("source_channel").is_none());

    let outcome = st2.timeout_inquiry(&first.inquiry_id);
    assert_eq!(outcome.execution["status"], "failed");
    assert_eq!(
        outcome.execution["result"]["errors"][0]["message"],
        "Execution failed. See result for details."
    );
    assert!(
        outcome.event.is_none(),
        "no chat, no announcement: {:?}",
        outcome.skipped
    );
    assert_eq!(
        fault(
            get(
                &st2,
                &token,
                &format!("/api/v1/inquiries/{}", first.inquiry_id)
            )
            .await
        )
        .await,
        (
            400,
            format!(
                "Inquiry \"{}\" timed out and cannot be responded to.",
                first.inquiry_id
            )
        )
    );

    let refused = st2
        .answer_inquiry(&second.inquiry_id, "carol", json!({"continue": "yes"}))
        .unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .faultstring
            .contains("'yes' is not of type 'boolean'")
    );
    assert_eq!(
        st2.answer_inquiry(&first.inquiry_id, "carol", json!({}))
            .unwrap_err(),
        InquiryRefusal {
            status: 400,
            faultstring: format!(
                "Inquiry \"{}\" timed out and cannot be responded to.",
                first.inquiry_id
            ),
        }
    );
    let done = st2
        .answer_inquiry(&second.inquiry_id, "carol", json!({"continue": true}))
        .unwrap();
    assert_eq!(done.execution["status"], "succeeded");
    assert_eq!(st2.inquiry_answers()[0].via, AnswerVia::Elsewhere);
    let late = put(
        &st2,
        &token,
        &second.inquiry_id,
        r#"{"response": {"continue": true}}"#,
    )
    .await;
    assert_eq!(
        fault(late).await,
        (
            400,
            format!(
                "Inquiry \"{}\" has already been responded to.",
                second.inquiry_id
            )
        )
    );
}

#[tokio::test]
async fn the_inquiry_list_pages_as_st2_does() {
    let (st2, token) = double().await;
    for _ in 0..3 {
        st2.start_ask_workflow("ops", AskOptions::default());
    }
    let page = get(&st2, &token, "/api/v1/inquiries?limit=2").await;
    assert_eq!(
        (
            page.headers()["x-total-count"].to_str().unwrap(),
            page.headers()["x-limit"].to_str().unwrap()
        ),
        ("3", "2")
    );
    assert_eq!(
        page.json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/inquiries?limit=0").await).await,
        (
            400,
            "Limit, \"0\" specified, must be a positive number or -1 for full result set.".into()
        )
    );
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/inquiries?limit=101").await).await,
        (
            403,
            "Limit \"101\" specified, maximum value is \"100\"".into()
        )
    );
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/inquiries?limit=-1").await).await,
        (403, "Administrator access required to be able to specify limit=-1 and retrieve all the records".into())
    );
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/inquiries?limit=-2").await).await,
        (
            400,
            "Limit, \"-2\" specified, must be a positive number.".into()
        )
    );
    st2.set_admin("bot", true);
    let all = get(&st2, &token, "/api/v1/inquiries?limit=-1").await;
    assert_eq!(all.headers()["x-limit"], "-1");
    assert_eq!(
        all.json::<Value>().await.unwrap().as_array().unwrap().len(),
        3
    );
}

#[tokio::test]
async fn stream_filters_follow_st2s_listener() {
    let (st2, token) = double().await;
    let mut asks = Sse::open(
        &st2,
        &token,
        "?events=st2.execution__update,st2.announcement__matrix&action_refs=core.ask",
    )
    .await;
    let mut by_id = Sse::open(&st2, &token, "?execution_ids=nope").await;
    let mut nothing = Sse::open(&st2, &token, "?events=").await;
    let mut everything = Sse::open(&st2, &token, "").await;
    let started = st2.start_ask_workflow("ops", AskOptions::default());
    st2.announce("matrix", json!({"channel": "c", "message": "hi"}));
    let (events, _) = asks.collect(Duration::from_millis(300)).await;
    assert_eq!(
        statuses(&events, &started.inquiry_id),
        ["update:scheduled", "update:running", "update:pending"]
    );
    assert_eq!(
        events.len(),
        3,
        "action_refs drops the workflow and the announcement: {events:?}"
    );
    assert!(by_id.collect(Duration::from_millis(100)).await.0.is_empty());
    assert!(
        nothing
            .collect(Duration::from_millis(100))
            .await
            .0
            .is_empty(),
        "events= matches nothing"
    );
    let (all, _) = everything.collect(Duration::from_millis(100)).await;
    assert_eq!(
        all.len(),
        9,
        "8 execution events and the announcement: {all:?}"
    );

    let mut until_done = Sse::open(
        &st2,
        &token,
        &format!("?events=st2.execution__update&execution_ids={}&end_event=st2.execution__update&end_execution_id={}", started.workflow_id, started.workflow_id),
    )
    .await;
    st2.answer_inquiry(&started.inquiry_id, "ops", json!({"continue": true}))
        .unwrap();
    let (events, ended) = until_done.collect(Duration::from_secs(2)).await;
    assert_eq!(
        statuses(&events, &started.workflow_id),
        ["update:resuming", "update:running", "update:succeeded"]
    );
    assert!(ended, "the end event closes the stream");
}
