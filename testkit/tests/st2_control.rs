//! The StackStorm double's executions you watch and steer: the lifecycle on the stream,
//! workflows with tasks, cancel, `PUT`, re-run, output, `POST /executions` with notify, held
//! to st2's texts and behaviour (`actionexecutions.py`, `services/action.py` at c2eaf56).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use st2_matrix_testkit::st2::{
    AliasHold, ControlKind, St2Double, St2Options, WORKFLOW_ACTION, WorkflowStep,
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
    st2.load_fixture_aliases();
    st2.add_workflow_alias();
    let token = st2.issue_token("bot", Duration::from_secs(600));
    (st2, token)
}

async fn call(
    st2: &St2Double,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = client()
        .request(method, format!("{}{path}", st2.api_url()))
        .header("X-Auth-Token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

async fn json_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Runs a command from a room as the bridge does; returns the execution id.
async fn run(st2: &St2Double, token: &str, name: &str, format: &str, command: &str) -> String {
    let (status, body) = json_of(
        call(
            st2,
            token,
            Method::POST,
            "/aliasexecution",
            Some(json!({
                "name": name, "format": format, "command": command,
                "user": "@alice:example.org", "source_channel": "!room:example.org",
                "source_context": {"room_id": "!room:example.org", "event_id": "$cmd"},
                "notification_route": "matrix",
            })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["execution"]["id"].as_str().expect("id").to_owned()
}

async fn run_date(st2: &St2Double, token: &str) -> String {
    run(
        st2,
        token,
        "remote_shell_cmd",
        "run {{cmd}} on {{hosts}}",
        "run date on web1",
    )
    .await
}

async fn wait_status(st2: &St2Double, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while st2.execution(id).expect("execution").execution["status"] != status {
        assert!(Instant::now() < deadline, "{id} never became {status}");
        tokio::time::sleep(Duration::from_millis(5)).await;
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

    /// Events `(name, data)` received within `wait`.
    async fn collect(&mut self, wait: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.0.next()).await {
                Ok(Some(Ok(bytes))) => self.1.push_str(&String::from_utf8(bytes).expect("utf8")),
                _ => break,
            }
        }
        let mut events = Vec::new();
        for frame in self.1.split("\n\n") {
            let mut lines = frame.trim_start_matches('\n').lines();
            if let (Some(e), Some(d)) = (lines.next(), lines.next())
                && let (Some(e), Some(d)) = (e.strip_prefix("event: "), d.strip_prefix("data: "))
            {
                events.push((e.to_owned(), serde_json::from_str(d).expect("json")));
            }
        }
        self.1.clear();
        events
    }
}

fn statuses(events: &[(String, Value)], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(e, d)| e.starts_with("st2.execution__") && d["id"] == id)
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
async fn an_alias_execution_goes_requested_scheduled_running_and_stays_running() {
    let (st2, token) = double().await;
    let mut sse = Sse::open(
        &st2,
        &token,
        "?events=st2.execution__create,st2.execution__update",
    )
    .await;
    let id = run_date(&st2, &token).await;
    let events = sse.collect(Duration::from_millis(300)).await;
    assert_eq!(
        statuses(&events, &id),
        ["create:requested", "update:scheduled", "update:running"]
    );
    let ex = st2.execution(&id).unwrap().execution;
    assert_eq!(ex["status"], "running");
    assert!(ex.get("end_timestamp").is_none());
    let outcome = st2.finish_execution(&id, "succeeded", json!({"stdout": "Mon"}));
    assert!(outcome.execution["elapsed_seconds"].as_f64().unwrap() > 0.0);
    assert!(outcome.execution["end_timestamp"].is_string());
    let events = sse.collect(Duration::from_millis(100)).await;
    assert_eq!(statuses(&events, &id), ["update:succeeded"]);
}

#[tokio::test]
async fn without_a_start_delay_an_execution_waits_for_the_test() {
    let (st2, token) = double().await;
    st2.set_start_delay(None);
    let id = run_date(&st2, &token).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(st2.execution(&id).unwrap().execution["status"], "requested");
    assert_eq!(st2.start_execution(&id)["status"], "running");
}

#[tokio::test]
async fn cancel_answers_as_st2_and_announces_the_canceled_result() {
    let (st2, token) = double().await;
    let id = run_date(&st2, &token).await;
    wait_status(&st2, &id, "running").await;
    let mut sse = Sse::open(
        &st2,
        &token,
        "?events=st2.execution__update,st2.announcement__matrix",
    )
    .await;
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::DELETE,
            &format!("/executions/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "canceling");
    assert_eq!(
        body["result"],
        json!({"message": "Action canceled by user.", "user": "bot"})
    );
    assert_eq!(body["context"]["cancelled_by"], "bot");
    let events = sse.collect(Duration::from_millis(300)).await;
    assert_eq!(
        statuses(&events, &id),
        ["update:canceling", "update:canceled"]
    );
    let announced = events
        .iter()
        .find(|(e, _)| e == "st2.announcement__matrix")
        .expect("announced");
    // The alias's own result template, rendered over the canceled result.
    assert!(
        announced.1["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("Host: *message*"),
        "{}",
        announced.1
    );
    assert_eq!(announced.1["payload"]["channel"], "!room:example.org");

    // Again: already canceled, the execution itself.
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::DELETE,
            &format!("/executions/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceled")));

    let done = run_date(&st2, &token).await;
    st2.finish_execution(&done, "succeeded", json!({}));
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::DELETE,
            &format!("/executions/{done}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"faultstring": "Action cannot be canceled. State = succeeded."})
        )
    );

    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::DELETE,
            "/executions/5f0000000000000000000000",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["faultstring"].as_str()),
        (
            404,
            Some("Unable to identify resource with id \"5f0000000000000000000000\".")
        )
    );

    let requests = st2.control_requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests
            .iter()
            .all(|r| r.kind == ControlKind::Cancel && r.user.as_deref() == Some("bot"))
    );
    assert_eq!(requests[0].execution_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn a_requested_execution_is_canceled_at_once() {
    let (st2, token) = double().await;
    st2.set_start_delay(None);
    let id = run_date(&st2, &token).await;
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::DELETE,
            &format!("/executions/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceled")));
}

#[tokio::test]
async fn put_follows_st2s_checks() {
    let (st2, token) = double().await;
    let id = run_date(&st2, &token).await;
    wait_status(&st2, &id, "running").await;
    let path = format!("/executions/{id}");
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::PUT,
            &path,
            Some(json!({"status": "pausing"})),
        )
        .await,
    )
    .await;
    let lv = st2.execution(&id).unwrap().execution["liveaction"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!((status, body["faultstring"].as_str().unwrap()), (400, format!("Failed updating execution. Unable to pause liveaction \"{lv}\" because it is not supported by the \"remote-shell-cmd\" runner.").as_str()));
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::PUT,
            &path,
            Some(json!({"status": "bogus"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["faultstring"]
            .as_str()
            .unwrap()
            .starts_with("'bogus' is not one of ['requested'")
    );
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::PUT,
            &path,
            Some(json!({"status": "canceling", "result": {}})),
        )
        .await,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceling")));
    wait_status(&st2, &id, "canceled").await;
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::PUT,
            &path,
            Some(json!({"status": "resuming"})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["faultstring"].as_str()),
        (400, Some("Execution is already in completed state."))
    );
    assert!(
        st2.control_requests()
            .iter()
            .all(|r| r.kind == ControlKind::Update)
    );
}

#[tokio::test]
async fn output_is_served_and_streamed() {
    let (st2, token) = double().await;
    let id = run_date(&st2, &token).await;
    let mut sse = Sse::open(
        &st2,
        &token,
        &format!("?events=st2.execution.output__create&execution_ids={id}"),
    )
    .await;
    st2.append_output(&id, "stdout", "line 1\n");
    st2.append_output(&id, "stderr", "oops\n");
    st2.append_output(&id, "stdout", "line 2\n");
    let response = call(
        &st2,
        &token,
        Method::GET,
        &format!("/executions/{id}/output"),
        None,
    )
    .await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=UTF-8"
    );
    assert_eq!(response.text().await.unwrap(), "line 1\noops\nline 2\n");
    let response = call(
        &st2,
        &token,
        Method::GET,
        &format!("/executions/{id}/output?output_type=stdout"),
        None,
    )
    .await;
    assert_eq!(response.text().await.unwrap(), "line 1\nline 2\n");
    let events = sse.collect(Duration::from_millis(200)).await;
    assert_eq!(events.len(), 3);
    let (name, data) = &events[1];
    assert_eq!(name, "st2.execution.output__create");
    assert_eq!(
        (
            &data["execution_id"],
            &data["action_ref"],
            &data["runner_ref"],
            &data["output_type"],
            &data["data"]
        ),
        (
            &json!(id),
            &json!("core.remote"),
            &json!("remote-shell-cmd"),
            &json!("stderr"),
            &json!("oops\n")
        )
    );
}

#[tokio::test]
async fn re_run_merges_parameters_and_carries_no_notify() {
    let (st2, token) = double().await;
    let id = run_date(&st2, &token).await;
    st2.finish_execution(&id, "failed", json!({}));
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::POST,
            &format!("/executions/{id}/re_run"),
            Some(json!({"parameters": {"hosts": "web2"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["parameters"], json!({"cmd": "date", "hosts": "web2"}));
    assert_eq!(body["context"]["re-run"], json!({"ref": id}));
    assert_eq!(body["context"]["user"], "bot");
    assert!(body["context"].get("source_channel").is_none());
    assert!(body["liveaction"].get("notify").is_none());
    let new = body["id"].as_str().unwrap().to_owned();
    wait_status(&st2, &new, "running").await;
    let outcome = st2.finish_execution(&new, "succeeded", json!({}));
    assert!(outcome.payload.is_none());

    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::POST,
            &format!("/executions/{id}/re_run"),
            Some(json!({"tasks": ["task1"]})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["faultstring"].as_str()),
        (
            400,
            Some("Task option is only supported for Orquesta workflows.")
        )
    );
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::POST,
            &format!("/executions/{id}/re_run"),
            Some(json!({"tasks": ["a"], "parameters": {"x": 1}})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["faultstring"].as_str()),
        (
            400,
            Some("Parameters override is not supported when re-running task(s) for a workflow.")
        )
    );
    let kinds: Vec<ControlKind> = st2.control_requests().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [ControlKind::ReRun; 3]);
}

#[tokio::test]
async fn an_api_execution_with_notify_is_announced_like_a_command() {
    let (st2, token) = double().await;
    let mut sse = Sse::open(&st2, &token, "?events=st2.announcement__matrix").await;
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::POST,
            "/executions",
            Some(json!({
                "action": "core.remote", "parameters": {"cmd": "date", "hosts": "web2"},
                "notify": {"on-complete": {"routes": ["matrix"], "data": {
                    "user": "@alice:example.org", "source_channel": "!room:example.org",
                    "source_context": {"room_id": "!room:example.org", "event_id": "$rerun"}}}},
            })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "requested");
    assert_eq!(body["context"]["user"], "bot");
    assert_eq!(body["context"]["pack"], "core");
    assert_eq!(
        body["liveaction"]["notify"]["on-complete"]["routes"],
        json!(["matrix"])
    );
    let id = body["id"].as_str().unwrap().to_owned();
    wait_status(&st2, &id, "running").await;
    let outcome = st2.finish_execution(
        &id,
        "succeeded",
        json!({"web2": {"stdout": "Tue", "return_code": 0}}),
    );
    let payload = outcome.payload.expect("announced");
    assert_eq!(payload["context"]["event_id"], "$rerun");
    assert_eq!(payload["user"], "@alice:example.org");
    assert!(
        payload["message"]
            .as_str()
            .unwrap()
            .starts_with("\nAction core.remote completed.\nstatus : succeeded")
    );
    let events = sse.collect(Duration::from_millis(200)).await;
    assert_eq!(events.len(), 1);

    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::POST,
            "/executions",
            Some(json!({"parameters": {}})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["faultstring"].as_str()),
        (400, Some("'action' is a required property"))
    );
    let (status, _) = json_of(
        call(
            &st2,
            &token,
            Method::GET,
            "/executions?parent=null&action=core.remote&limit=1",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let list = call(
        &st2,
        &token,
        Method::GET,
        "/executions?action=core.remote&limit=1",
        None,
    )
    .await;
    assert_eq!(list.headers()["x-total-count"], "1");
    let (_, items) = json_of(list).await;
    assert_eq!(items[0]["id"], json!(id));
    let creates: Vec<_> = st2
        .control_requests()
        .into_iter()
        .filter(|r| r.kind == ControlKind::Create)
        .collect();
    assert_eq!(
        (creates.len(), creates[0].user.as_deref(), creates[0].status),
        (2, Some("bot"), 201)
    );
}

#[tokio::test]
async fn a_workflow_runs_its_tasks_step_by_step() {
    let (st2, token) = double().await;
    let mut sse = Sse::open(
        &st2,
        &token,
        "?events=st2.execution__create,st2.execution__update,st2.announcement__matrix",
    )
    .await;
    let id = run(
        &st2,
        &token,
        "orquesta_sequential",
        "greet {{name=Lakshmi}}",
        "greet Ann",
    )
    .await;
    wait_status(&st2, &id, "running").await;
    let tasks = st2.workflow_tasks(&id);
    assert_eq!(tasks.len(), 1);
    let task1 = &tasks[0].execution;
    assert_eq!(task1["parent"], json!(id));
    assert_eq!(task1["context"]["orquesta"]["task_name"], "task1");
    assert_eq!(task1["runner"]["name"], "local-shell-cmd");
    assert_eq!(task1["parameters"], json!({"message": "Ann"}));
    assert_eq!(task1["status"], "running");
    let WorkflowStep::TaskStarted { task, .. } = st2.advance_workflow(&id) else {
        panic!("task2")
    };
    assert_eq!(task, "task2");
    let outcome = st2.finish_workflow(&id);
    assert_eq!(outcome.execution["status"], "succeeded");
    assert_eq!(
        outcome.execution["result"],
        json!({"output": {"greeting": "Ann, All your base are belong to us!"}})
    );
    assert!(outcome.payload.is_some());
    let events = sse.collect(Duration::from_millis(200)).await;
    assert_eq!(
        statuses(&events, &id),
        [
            "create:requested",
            "update:scheduled",
            "update:running",
            "update:succeeded"
        ]
    );
    let t1 = tasks[0].id.clone();
    assert_eq!(
        statuses(&events, &t1),
        [
            "create:requested",
            "update:scheduled",
            "update:running",
            "update:succeeded"
        ]
    );
    assert_eq!(st2.workflow_tasks(&id).len(), 3);
    assert_eq!(st2.last_execution().unwrap().id, id);
    assert_eq!(
        st2.execution(&id).unwrap().execution["action"]["ref"],
        WORKFLOW_ACTION
    );
}

#[tokio::test]
async fn a_canceled_workflow_waits_for_its_running_task() {
    let (st2, token) = double().await;
    let id = run(
        &st2,
        &token,
        "orquesta_sequential",
        "greet {{name=Lakshmi}}",
        "greet",
    )
    .await;
    wait_status(&st2, &id, "running").await;
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::DELETE,
            &format!("/executions/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceling")));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let task = st2.workflow_tasks(&id)[0].clone();
    assert_eq!(
        task.execution["status"], "running",
        "Orquesta leaves running action tasks alone"
    );
    assert_eq!(st2.execution(&id).unwrap().execution["status"], "canceling");
    let WorkflowStep::Finished(outcome) = st2.advance_workflow(&id) else {
        panic!("finished")
    };
    assert_eq!(outcome.execution["status"], "canceled");
    assert!(
        outcome.payload.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("status : canceled")
    );
    assert_eq!(st2.workflow_tasks(&id).len(), 1);
}

#[tokio::test]
async fn workflows_step_by_themselves_and_pause_and_resume() {
    let (st2, token) = double().await;
    st2.set_workflow_step(Some(Duration::from_millis(30)));
    let id = run(
        &st2,
        &token,
        "orquesta_sequential",
        "greet {{name=Lakshmi}}",
        "greet",
    )
    .await;
    wait_status(&st2, &id, "running").await;
    let path = format!("/executions/{id}");
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::PUT,
            &path,
            Some(json!({"status": "pausing"})),
        )
        .await,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pausing")));
    wait_status(&st2, &id, "paused").await;
    let tasks = st2.workflow_tasks(&id).len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        st2.workflow_tasks(&id).len(),
        tasks,
        "a paused workflow starts no task"
    );
    assert_eq!(st2.execution(&id).unwrap().execution["status"], "paused");
    let (status, body) = json_of(
        call(
            &st2,
            &token,
            Method::PUT,
            &path,
            Some(json!({"status": "resuming"})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            status,
            body["status"].as_str(),
            body["context"]["resumed_by"].as_str()
        ),
        (200, Some("resuming"), Some("bot"))
    );
    wait_status(&st2, &id, "succeeded").await;
    assert_eq!(st2.workflow_tasks(&id).len(), 3);
}

#[tokio::test]
async fn the_execution_list_filters_pages_and_sorts_as_st2_does() {
    // Arrange: two executions by bot, one by alice, a moment apart.
    let (st2, token) = double().await;
    st2.add_user("alice", "pw");
    let alice = st2.issue_token("alice", Duration::from_secs(600));
    let first = run_date(&st2, &token).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let by_alice = run_date(&st2, &alice).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = run_date(&st2, &token).await;
    let started = |id: &str| {
        st2.execution(id).unwrap().execution["start_timestamp"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ids = |items: &Value| -> Vec<String> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |query: String| {
        let (st2, token) = (&st2, token.clone());
        async move {
            json_of(
                call(
                    st2,
                    &token,
                    Method::GET,
                    &format!("/executions?{query}"),
                    None,
                )
                .await,
            )
            .await
        }
    };

    // Act / Assert: `user` is the context's user; newest first by default.
    let (status, items) = list("user=bot&action=core.remote".into()).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&items), [last.clone(), first.clone()]);
    // `timestamp_gt` is strictly after, and sorts oldest first.
    let (_, items) = list(format!("timestamp_gt={}", started(&first))).await;
    assert_eq!(ids(&items), [by_alice.clone(), last.clone()]);
    // `timestamp_lt` is strictly before and sorts newest first, also with `timestamp_gt`.
    let (_, items) = list(format!(
        "timestamp_gt=2000-01-01T00:00:00Z&timestamp_lt={}",
        started(&last)
    ))
    .await;
    assert_eq!(ids(&items), [by_alice.clone(), first.clone()]);
    // Paged with `limit` and `offset`; the total counts every match.
    let response = call(
        &st2,
        &token,
        Method::GET,
        "/executions?sort_asc=True&limit=1&offset=1",
        None,
    )
    .await;
    assert_eq!(response.headers()["x-total-count"], "3");
    let (_, items) = json_of(response).await;
    assert_eq!(ids(&items), [by_alice]);
    // `exclude_attributes` drops what it names, and only what st2 allows.
    let (_, items) = list("exclude_attributes=result,trigger_instance&limit=1".into()).await;
    assert!(items[0].get("result").is_none() && items[0].get("liveaction").is_some());
    let (status, body) = list("exclude_attributes=liveaction".into()).await;
    assert_eq!(
        (status, body["faultstring"].as_str()),
        (
            400,
            Some("Invalid or unsupported exclude attribute specified: liveaction")
        )
    );
    // A timestamp st2's `isotime.parse` rejects ('+' in a query string is a space).
    for bad in [
        "yesterday",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+00:00",
    ] {
        let (status, body) = list(format!("timestamp_gt={bad}")).await;
        assert_eq!(
            (status, body["faultstring"].as_str()),
            (400, Some("Datetime value does not match expected format.")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn alias_executions_can_be_held_before_or_after_they_are_recorded() {
    // Arrange
    let (st2, token) = double().await;

    // Act: held before recording, the client gives up.
    st2.hold_alias_executions(Some(AliasHold::BeforeRecording));
    let attempt = tokio::spawn({
        let (st2_url, token) = (st2.api_url(), token.clone());
        async move {
            client()
                .post(format!("{st2_url}/aliasexecution"))
                .header("X-Auth-Token", token)
                .json(
                    &json!({"name": "remote_shell_cmd", "format": "run {{cmd}} on {{hosts}}",
                    "command": "run date on web1", "source_channel": "!room:example.org"}),
                )
                .send()
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while st2.held_alias_executions() == 0 {
        assert!(Instant::now() < deadline, "the request was never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    attempt.abort();
    while st2.held_alias_executions() > 0 {
        assert!(
            Instant::now() < deadline,
            "a request whose client left is still held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    st2.hold_alias_executions(None);

    // Assert: nothing was recorded.
    assert!(st2.executions().is_empty());

    // Act: held after recording, the execution exists before the answer leaves.
    st2.hold_alias_executions(Some(AliasHold::AfterRecording));
    let answered = tokio::spawn({
        let (st2_url, token) = (st2.api_url(), token.clone());
        async move {
            client()
                .post(format!("{st2_url}/aliasexecution"))
                .header("X-Auth-Token", token)
                .json(
                    &json!({"name": "remote_shell_cmd", "format": "run {{cmd}} on {{hosts}}",
                    "command": "run date on web1", "source_channel": "!room:example.org"}),
                )
                .send()
                .await
                .map(|r| r.status())
        }
    });
    while st2.held_alias_executions() == 0 {
        assert!(Instant::now() < deadline, "the request was never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(st2.executions().len(), 1, "recorded while held");
    assert!(!answered.is_finished());
    st2.hold_alias_executions(None);

    // Assert: released, it answers as usual.
    assert_eq!(answered.await.unwrap().unwrap(), StatusCode::CREATED);
}
