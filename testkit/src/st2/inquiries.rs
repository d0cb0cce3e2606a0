//! Humans in the loop: a workflow that pauses on `core.ask`, and st2's inquiries API
//! (`st2api/controllers/v1/inquiries.py`, `st2common/services/inquiry.py` at st2 c2eaf56).
//!
//! The double's one asking workflow is the Orquesta action [`ASK_ACTION`], served by the
//! alias [`super::St2Double::ask_alias`]. Written as Orquesta it would read:
//!
//! ```yaml
//! version: 1.0
//! input: [question]
//! vars: [answer: null, proceeded: false]
//! tasks:
//!   ask:
//!     action: core.ask
//!     input: {schema: …, users: …, roles: …, route: …, ttl: …}   # AskOptions
//!     next:
//!       - when: <% succeeded() %>
//!         publish: [answer: <% result().response %>]
//!       - when: <% succeeded() and result().response.get(continue, true) %>
//!         publish: [proceeded: true]
//!         do: proceed
//!   proceed:
//!     action: core.noop
//! output:
//!   - answer: <% ctx().answer %>
//!   - proceeded: <% ctx().proceeded %>
//! ```
//!
//! So an answer of `{"continue": false}` takes no branch to `proceed`: the workflow still
//! succeeds (Orquesta ends a branch whose `when` is false), with `proceeded: false` in its
//! output. `proceed` is not played as an execution of its own. An inquiry that times out
//! fails the `ask` task, so the workflow fails with Orquesta's error entry and the vars'
//! initial values as output.
//!
//! Status changes follow st2 for an Orquesta workflow whose only active task goes pending:
//! workflow `requested` → `scheduled` → `running`; child `requested` → `scheduled` →
//! `running` → `pending`; workflow `paused` (Orquesta's `TASK_PENDING_WORKFLOW_DORMANT`). An
//! answer resumes the parent first (`resuming`), then the child `succeeded`, then the
//! workflow `running` and `succeeded` — the order of `inquiry_service.respond`. Each change is
//! an `st2.execution__create`/`__update` on the stream. The workflow is announced on
//! completion through the same notify pipeline as any alias execution; the child carries no
//! `notify` (Orquesta copies it only to tasks listed in the workflow's notify config).
//!
//! RBAC: with RBAC off `roles` is ignored (the no-op backend's `user_has_role` is always
//! true); the double ignores `roles` always, as it models no role assignments.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::http::{Caller, Fault, int_param};
use super::inquiry_schema::{self, Py};
use super::state::Shared;
use super::{
    AnswerVia, AskOptions, Credential, FinishOutcome, InquiryAnswer, InquiryRefusal,
    RecordedExecution, aliases, executions, ids,
};

/// The asking workflow's action ref.
pub const ASK_ACTION: &str = "examples.orquesta-ask-chatops";

/// The inquirer runner's default schema, in the key order of its `runner.yaml`.
pub(crate) const DEFAULT_SCHEMA: &str = r#"{"title": "response_data", "type": "object", "properties": {"continue": {"type": "boolean", "description": "Would you like to continue the workflow?", "required": true}}}"#;

/// How long after the alias execution's 201 the workflow starts moving: st2 answers while
/// the execution is still `requested`, and the runners pick it up shortly after.
const START_DELAY: Duration = Duration::from_millis(20);

/// The schema a `core.ask` task will carry, key order kept.
fn schema_of(options: &AskOptions) -> Py {
    options
        .schema
        .as_deref()
        .and_then(|s| Py::parse(s).ok())
        .unwrap_or_else(|| Py::parse(DEFAULT_SCHEMA).expect("default schema"))
}

/// `ActionExecutionAPI.from_model` drops every top-level field whose value is falsy.
pub(crate) fn api_view(execution: &Value) -> Value {
    match execution {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| super::python::py_truthy(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Sets an execution's status (and whatever `change` does), appends to its `log`, and
/// publishes `st2.execution__update`. Returns the execution.
pub(crate) fn update(
    shared: &Shared,
    id: &str,
    status: &str,
    change: impl FnOnce(&mut Value),
) -> Value {
    let execution = {
        let mut state = shared.state();
        let Some(record) = state.executions.iter_mut().find(|e| e.id == id) else {
            panic!("St2Double: no execution with id {id}");
        };
        let ex = &mut record.execution;
        ex["status"] = json!(status);
        change(ex);
        let now = ids::iso8601(SystemTime::now());
        if let Some(log) = ex["log"].as_array_mut() {
            log.push(json!({ "status": status, "timestamp": now }));
        }
        record.execution.clone()
    };
    shared.publish_execution("st2.execution__update", &execution);
    execution
}

fn finish_fields(ex: &mut Value, started_at: SystemTime) {
    let now = SystemTime::now();
    let elapsed = now
        .duration_since(started_at)
        .unwrap_or_default()
        .as_secs_f64();
    ex["end_timestamp"] = json!(ids::iso8601(now));
    ex["elapsed_seconds"] = json!((elapsed * 1e6).round() / 1e6);
}

/// The workflow record for [`super::St2Double::start_ask_workflow`]: no alias, no notify.
pub(crate) fn create_unchatted(shared: &Shared, user: &str) -> String {
    let id = ids::object_id();
    let now = SystemTime::now();
    let started = ids::iso8601(now);
    let (pack, name) = ASK_ACTION
        .split_once('.')
        .unwrap_or(("examples", ASK_ACTION));
    let execution = json!({
        "id": id,
        "action": {
            "ref": ASK_ACTION, "name": name, "pack": pack,
            "uid": format!("action:{pack}:{name}"), "runner_type": "orquesta",
        },
        "runner": { "name": "orquesta" },
        "liveaction": { "action": ASK_ACTION, "parameters": {} },
        "status": "requested",
        "start_timestamp": started,
        "parameters": {},
        "context": { "user": user, "pack": pack },
        "result": {},
        "web_url": format!("{}/#/history/{id}/general", shared.webui_url),
        "log": [{ "status": "requested", "timestamp": started }],
    });
    shared.state().executions.push(RecordedExecution {
        id: id.clone(),
        request: json!({}),
        credential: Credential {
            kind: super::CredentialKind::Token,
            place: super::CredentialPlace::Header,
            value: String::new(),
        },
        user: user.to_owned(),
        execution: execution.clone(),
        started_at: now,
    });
    shared.publish_execution("st2.execution__create", &execution);
    id
}

/// After an alias execution of [`ASK_ACTION`]: the runners pick the workflow up shortly.
pub(crate) fn start_later(shared: Arc<Shared>, workflow_id: String) {
    let options = shared.state().ask.clone();
    tokio::spawn(async move {
        tokio::time::sleep(START_DELAY).await;
        run_until_pending(&shared, &workflow_id, &options);
    });
}

/// Plays the workflow up to the pending inquiry; returns the inquiry (child) id.
pub(crate) fn run_until_pending(
    shared: &Shared,
    workflow_id: &str,
    options: &AskOptions,
) -> String {
    let wf_ex_id = ids::object_id();
    update(shared, workflow_id, "scheduled", |_| {});
    let workflow = update(shared, workflow_id, "running", |ex| {
        ex["context"]["workflow_execution"] = json!(wf_ex_id);
    });
    let wf_ctx = &workflow["context"];
    let user = wf_ctx.get("user").cloned().unwrap_or(Value::Null);
    let pack = workflow
        .pointer("/action/pack")
        .cloned()
        .unwrap_or(Value::Null);

    // `request_next_tasks` / `request_action_execution` of st2's workflow service.
    let mut parent_ctx = json!({ "execution_id": workflow_id, "user": user, "pack": pack });
    let mut child_ctx = json!({
        "pack": "core",
        "user": user,
        "orquesta": {
            "workflow_execution_id": wf_ex_id,
            "task_execution_id": ids::object_id(),
            "task_name": "ask",
            "task_id": "ask",
            "task_route": 0,
        },
    });
    for key in ["api_user", "source_channel"] {
        if let Some(v) = wf_ctx.get(key).filter(|v| super::python::py_truthy(v)) {
            parent_ctx[key] = v.clone();
            child_ctx[key] = v.clone();
        }
    }
    child_ctx["parent"] = parent_ctx;

    let schema = schema_of(options);
    let parameters = json!({
        "schema": schema.to_value(),
        "users": options.users,
        "roles": options.roles,
        "route": options.route,
        "ttl": options.ttl,
    });
    let id = ids::object_id();
    let now = SystemTime::now();
    let started = ids::iso8601(now);
    let child = json!({
        "id": id,
        "action": {
            "ref": "core.ask", "name": "ask", "pack": "core", "uid": "action:core:ask",
            "runner_type": "inquirer",
        },
        "runner": { "name": "inquirer", "runner_module": "inquirer_runner" },
        "liveaction": {
            "id": ids::object_id(), "action": "core.ask", "parameters": parameters,
            "context": child_ctx,
        },
        "workflow_execution": wf_ex_id,
        "task_execution": child_ctx["orquesta"]["task_execution_id"],
        "status": "requested",
        "start_timestamp": started,
        "parameters": parameters,
        "context": child_ctx,
        "parent": workflow_id,
        "result": {},
        "web_url": format!("{}/#/history/{id}/general", shared.webui_url),
        "log": [{ "status": "requested", "timestamp": started }],
    });
    {
        let mut state = shared.state();
        let (credential, user) = state
            .executions
            .iter()
            .find(|e| e.id == workflow_id)
            .map(|e| (e.credential.clone(), e.user.clone()))
            .expect("the workflow exists");
        state.executions.push(RecordedExecution {
            id: id.clone(),
            request: json!({}),
            credential,
            user,
            execution: child.clone(),
            started_at: now,
        });
        state.inquiry_schemas.insert(id.clone(), schema);
    }
    shared.publish_execution("st2.execution__create", &child);
    update(shared, &id, "scheduled", |_| {});
    update(shared, &id, "running", |_| {});
    // The inquirer runner's `run` returns `pending` with this result.
    update(shared, &id, "pending", |ex| {
        ex["result"] = json!({
            "schema": parameters["schema"], "roles": options.roles, "users": options.users,
            "route": options.route, "ttl": options.ttl,
        });
    });
    let child_id = id.clone();
    update(shared, workflow_id, "paused", move |ex| {
        let children = ex["children"].as_array().cloned().unwrap_or_default();
        let mut children = children;
        children.push(json!(child_id));
        ex["children"] = Value::Array(children);
    });
    id
}

/// `check_inquiry`, on an execution as stored.
fn check_inquiry(execution: &Value) -> Result<(), Fault> {
    let id = execution["id"].as_str().unwrap_or("");
    if execution.pointer("/runner/name").and_then(Value::as_str) != Some("inquirer") {
        return Err(Fault::bad_request(format!(
            "Action execution \"{id}\" is not an inquiry."
        )));
    }
    match execution["status"].as_str() {
        Some("timed_out") => Err(Fault::bad_request(format!(
            "Inquiry \"{id}\" timed out and cannot be responded to."
        ))),
        Some("pending") => Ok(()),
        _ => Err(Fault::bad_request(format!(
            "Inquiry \"{id}\" has already been responded to."
        ))),
    }
}

/// `InquiryResponseAPI`: the five fields the runner put into `result`, plus the id.
fn inquiry_view(execution: &Value) -> Value {
    let result = &execution["result"];
    let mut out = json!({ "id": execution["id"] });
    for field in ["route", "ttl", "users", "roles", "schema"] {
        out[field] = result.get(field).cloned().unwrap_or(Value::Null);
    }
    out
}

fn find(shared: &Shared, id: &str) -> Result<RecordedExecution, Fault> {
    shared
        .state()
        .executions
        .iter()
        .find(|e| e.id == id)
        .cloned()
        // `_get_one_by_id` raises a message-less NotFound: webob's default explanation.
        .ok_or_else(|| Fault::not_found("The resource could not be found."))
}

/// `GET /api/v1/inquiries`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Fault> {
    // The OpenAPI default is 20; `X-Limit` echoes the value given, even -1.
    let limit = int_param(&query, "limit")?.unwrap_or(20);
    let state = shared.state();
    let page = aliases::validate_limit(limit, state.is_admin(&caller.user), state.max_page_size)?;
    let pending: Vec<Value> = state
        .executions
        .iter()
        .map(|e| &e.execution)
        .filter(|e| {
            e["status"] == "pending" && e.pointer("/runner/name") == Some(&json!("inquirer"))
        })
        .map(inquiry_view)
        .collect();
    drop(state);
    let total = pending.len();
    let items: Vec<Value> = pending
        .into_iter()
        .take(page.unwrap_or(usize::MAX))
        .collect();
    let mut response = Json(Value::Array(items)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    headers.insert("x-limit", HeaderValue::from(limit));
    Ok(response)
}

/// `GET /api/v1/inquiries/{id}`.
pub(crate) async fn get_one(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Fault> {
    let record = find(&shared, &id)?;
    check_inquiry(&record.execution)?;
    Ok(Json(inquiry_view(&record.execution)))
}

/// The checks of `InquiriesController.put` after the body: lookup, `check_inquiry`,
/// `check_permission`, `validate_response`; then `respond`.
fn answer(
    shared: &Shared,
    id: &str,
    user: &str,
    response: &Py,
    via: AnswerVia,
) -> Result<FinishOutcome, Fault> {
    let record = find(shared, id)?;
    check_inquiry(&record.execution)?;
    let users: Vec<&str> = record.execution["result"]["users"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !users.is_empty() && !users.contains(&user) {
        return Err(Fault::forbidden(format!(
            "User \"{user}\" does not have permission to respond to inquiry \"{id}\"."
        )));
    }
    let schema = shared
        .state()
        .inquiry_schemas
        .get(id)
        .cloned()
        .unwrap_or_else(|| Py::from_value(&record.execution["result"]["schema"]));
    inquiry_schema::validate(&schema, response).map_err(|e| {
        Fault::bad_request(format!(
            "Response for inquiry \"{id}\" did not pass schema validation. {e}"
        ))
    })?;
    let response = response.to_value();
    shared.state().inquiry_answers.push(InquiryAnswer {
        inquiry_id: id.to_owned(),
        user: user.to_owned(),
        response: response.clone(),
        via,
    });
    Ok(respond(shared, &record, response))
}

/// `inquiry_service.respond`, then the workflow running to its end.
fn respond(shared: &Shared, child: &RecordedExecution, response: Value) -> FinishOutcome {
    let parent = child.execution["parent"].as_str().map(str::to_owned);
    if let Some(parent) = &parent {
        update(shared, parent, "resuming", |_| {});
    }
    let started_at = child.started_at;
    let answer = response.clone();
    let child = update(shared, &child.id, "succeeded", move |ex| {
        ex["result"]["response"] = answer;
        finish_fields(ex, started_at);
    });
    let Some(parent) = parent else {
        return FinishOutcome {
            execution: child,
            event: None,
            payload: None,
            delivered_to: 0,
            skipped: Some("the inquiry has no parent workflow".into()),
        };
    };
    update(shared, &parent, "running", |_| {});
    let proceeded = response
        .get("continue")
        .is_none_or(super::python::py_truthy);
    executions::finish(
        shared,
        &parent,
        "succeeded",
        json!({ "output": { "answer": response, "proceeded": proceeded } }),
    )
}

/// What st2's garbage collector does to an inquiry past its TTL (`purge_inquiries`), and
/// the workflow failing on it.
pub(crate) fn time_out(shared: &Shared, id: &str) -> FinishOutcome {
    let record = find(shared, id).unwrap_or_else(|_| panic!("St2Double: no inquiry {id}"));
    assert_eq!(
        record.execution["status"], "pending",
        "St2Double::timeout_inquiry: only a pending inquiry can time out"
    );
    let started_at = record.started_at;
    let child = update(shared, id, "timed_out", |ex| finish_fields(ex, started_at));
    let Some(parent) = child["parent"].as_str().map(str::to_owned) else {
        return FinishOutcome {
            execution: child,
            event: None,
            payload: None,
            delivered_to: 0,
            skipped: Some("the inquiry has no parent workflow".into()),
        };
    };
    update(shared, &parent, "resuming", |_| {});
    update(shared, &parent, "running", |_| {});
    let error = json!({
        "type": "error",
        "message": "Execution failed. See result for details.",
        "task_id": "ask",
        "result": child["result"],
    });
    executions::finish(
        shared,
        &parent,
        "failed",
        json!({ "output": { "answer": null, "proceeded": false }, "errors": [error] }),
    )
}

/// The hook's entry: an answer given elsewhere (web UI, CLI) as `user`.
pub(crate) fn answer_elsewhere(
    shared: &Shared,
    id: &str,
    user: &str,
    response: &Value,
) -> Result<FinishOutcome, InquiryRefusal> {
    answer(
        shared,
        id,
        user,
        &Py::from_value(response),
        AnswerVia::Elsewhere,
    )
    .map_err(|f| InquiryRefusal {
        status: f.status.as_u16(),
        faultstring: f.message,
    })
}

/// `PUT /api/v1/inquiries/{id}`.
pub(crate) async fn put(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Fault> {
    // The router sends `{}` for an empty body, then checks it against
    // `InquiryResponseResult` with st2's CustomValidator, which has no Draft-4 `required`:
    // only the types of `id` and `response` are checked, first error wins.
    let text = String::from_utf8_lossy(&body);
    let body = if text.trim().is_empty() {
        Py::Dict(Vec::new())
    } else {
        Py::parse(&text)
            .map_err(|e| Fault::bad_request(format!("Failed to parse request body: {e}")))?
    };
    if !matches!(body, Py::Dict(_)) {
        return Err(Fault::bad_request(format!(
            "{} is not of type 'object'",
            body.repr()
        )));
    }
    if let Some(v) = body.get("id").filter(|v| !matches!(v, Py::Str(_))) {
        return Err(Fault::bad_request(format!(
            "{} is not of type 'string'",
            v.repr()
        )));
    }
    let response = match body.get("response") {
        Some(r @ Py::Dict(_)) => r.clone(),
        Some(other) => {
            return Err(Fault::bad_request(format!(
                "{} is not of type 'object'",
                other.repr()
            )));
        }
        // `response_data.response` is an AttributeError in the controller: a bare 500.
        None => return Err(Fault::internal()),
    };
    answer(&shared, &id, &caller.user, &response, AnswerVia::Api)?;
    Ok((
        StatusCode::OK,
        Json(json!({ "id": id, "response": response.to_value() })),
    )
        .into_response())
}
