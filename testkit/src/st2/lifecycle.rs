//! How an execution moves after it is requested, as st2's scheduler, action runners and
//! `action_service` move it (st2 c2eaf56): `requested` → `scheduled` → `running`, each an
//! `st2.execution__update`; cancellation (`request_cancellation`), pause and resume
//! (`request_pause`, `request_resume`); output chunks (`st2.execution.output__create`).
//!
//! Nothing finishes a plain execution by itself: it stays `running` until the test finishes
//! it ([`super::St2Double::finish_execution`]) or someone cancels it. Workflows with tasks are
//! driven by `workflows.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::http::Fault;
use super::inquiries::{api_view, update};
use super::state::{BusEvent, Shared};
use super::{Credential, RecordedExecution, executions, ids, inquiries, workflows};

/// st2's `LIVEACTION_STATUSES`, in its order (the enum of the API schemas).
pub(crate) const STATUSES: [&str; 14] = [
    "requested",
    "scheduled",
    "delayed",
    "running",
    "succeeded",
    "failed",
    "timeout",
    "abandoned",
    "canceling",
    "canceled",
    "pending",
    "pausing",
    "paused",
    "resuming",
];

/// `LIVEACTION_COMPLETED_STATES`. (The inquiry code of the double says `timed_out` for an
/// expired inquiry; st2's constant is `timeout`, so both count as completed here.)
pub(crate) const COMPLETED: [&str; 6] = [
    "succeeded",
    "failed",
    "timeout",
    "timed_out",
    "canceled",
    "abandoned",
];

/// `LIVEACTION_CANCELABLE_STATES`: note that neither `pending` nor `canceling` is in it.
const CANCELABLE: [&str; 7] = [
    "requested",
    "scheduled",
    "delayed",
    "running",
    "pausing",
    "paused",
    "resuming",
];

/// How long the action runner takes to act on a `canceling` (or `pausing`) request: st2's
/// API answers before the runner has done it, so the response shows the transitional status.
const RUNNER_DELAY: Duration = Duration::from_millis(20);

/// Whether a status is final.
pub(crate) fn is_completed(status: &str) -> bool {
    COMPLETED.contains(&status)
}

fn status_of(shared: &Shared, id: &str) -> Option<String> {
    shared
        .state()
        .executions
        .iter()
        .find(|e| e.id == id)
        .and_then(|e| e.execution["status"].as_str().map(str::to_owned))
}

/// What a new execution is made of (`create_execution_object` of an API or re-run request,
/// or a workflow task).
pub(crate) struct NewExecution {
    /// `pack.name`.
    pub action_ref: String,
    /// After `render_live_params` (the double does not cast or default them).
    pub parameters: Map<String, Value>,
    /// The liveaction context.
    pub context: Value,
    /// `notify` in its API form (`on-complete`), if any.
    pub notify: Option<Value>,
    /// The parent workflow execution, for tasks.
    pub parent: Option<String>,
    /// `requested`, or `delayed` when the request had a `delay`.
    pub status: &'static str,
    /// Extra top-level fields (a task's `workflow_execution`, `task_execution`).
    pub extra: Map<String, Value>,
    /// The request body, for [`RecordedExecution::request`].
    pub request: Value,
    /// The credential and st2 user that asked for it.
    pub credential: Credential,
    /// The st2 user that asked for it.
    pub user: String,
}

/// Creates and records an execution and publishes `st2.execution__create`; returns it.
pub(crate) fn create(shared: &Shared, new: NewExecution) -> Value {
    let now = SystemTime::now();
    let id = ids::object_id();
    let started = ids::iso8601(now);
    let runner = shared.state().runner_for(&new.action_ref);
    let (pack, name) = new
        .action_ref
        .split_once('.')
        .unwrap_or(("", &new.action_ref));
    let mut liveaction = json!({
        "id": ids::object_id(), "action": new.action_ref, "parameters": new.parameters,
    });
    if let Some(notify) = new.notify.filter(super::python::py_truthy) {
        liveaction["notify"] = notify;
    }
    let mut execution = json!({
        "id": id,
        "action": {
            "ref": new.action_ref, "name": name, "pack": pack,
            "uid": format!("action:{pack}:{name}"), "runner_type": runner,
        },
        "runner": { "name": runner },
        "liveaction": liveaction,
        "status": new.status,
        "start_timestamp": started,
        "parameters": new.parameters,
        "context": new.context,
        "result": {},
        "web_url": format!("{}/#/history/{id}/general", shared.webui_url),
        "log": [{ "status": new.status, "timestamp": started }],
    });
    if let Some(parent) = &new.parent {
        execution["parent"] = json!(parent);
    }
    for (k, v) in new.extra {
        execution[k] = v;
    }
    {
        let mut state = shared.state();
        state.executions.push(RecordedExecution {
            id: id.clone(),
            request: new.request,
            credential: new.credential,
            user: new.user,
            execution: execution.clone(),
            started_at: now,
        });
        // `create_execution_object` pushes the child onto its parent's `children`.
        if let Some(parent) = new.parent
            && let Some(p) = state.executions.iter_mut().find(|e| e.id == parent)
        {
            let mut children = p.execution["children"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            children.push(json!(id));
            p.execution["children"] = Value::Array(children);
        }
    }
    shared.publish_execution("st2.execution__create", &execution);
    execution
}

/// After a request is accepted, st2's scheduler and a runner pick it up shortly; with
/// [`super::St2Double::set_start_delay`] at `None` the execution waits for the test.
/// `extra` is a request's own `delay`.
pub(crate) fn start_later(shared: Arc<Shared>, id: String) {
    start_after(shared, id, Duration::ZERO);
}

/// [`start_later`] plus a request's `delay`.
pub(crate) fn start_after(shared: Arc<Shared>, id: String, extra: Duration) {
    let Some(delay) = shared.state().start_delay else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay + extra).await;
        // The test may have finished or canceled it meanwhile: then there is nothing to do.
        let _ = start(&shared, &id);
    });
}

/// `requested`/`delayed` → `scheduled` → `running` (a workflow also starts its first task);
/// `Err` says why it could not start.
pub(crate) fn start(shared: &Arc<Shared>, id: &str) -> Result<Value, String> {
    let (status, action_ref) = {
        let state = shared.state();
        let record = state
            .executions
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| format!("no execution with id {id}"))?;
        (
            record.execution["status"].as_str().unwrap_or("").to_owned(),
            record.execution["action"]["ref"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    if action_ref == inquiries::ASK_ACTION {
        if status != "requested" {
            return Err(format!("execution {id} is {status}, not requested"));
        }
        let options = shared.state().ask.clone();
        inquiries::run_until_pending(shared, id, &options);
        return Ok(get(shared, id));
    }
    if !matches!(status.as_str(), "requested" | "delayed" | "scheduled") {
        return Err(format!("execution {id} is {status}, not requested"));
    }
    if status != "scheduled" {
        update(shared, id, "scheduled", |_| {});
    }
    let running = update(shared, id, "running", |_| {});
    if action_ref == workflows::WORKFLOW_ACTION {
        workflows::start(shared, id);
        workflows::step_by_itself(shared.clone(), id.to_owned());
        return Ok(get(shared, id));
    }
    Ok(running)
}

/// The execution as stored now.
pub(crate) fn get(shared: &Shared, id: &str) -> Value {
    shared
        .state()
        .executions
        .iter()
        .find(|e| e.id == id)
        .map(|e| e.execution.clone())
        .unwrap_or(Value::Null)
}

fn is_workflow(execution: &Value) -> bool {
    matches!(
        execution.pointer("/runner/name").and_then(Value::as_str),
        Some("orquesta" | "action-chain")
    )
}

/// `is_children_active`: a child not yet completed.
pub(crate) fn children_active(shared: &Shared, id: &str) -> bool {
    shared.state().executions.iter().any(|e| {
        e.execution["parent"] == id && !is_completed(e.execution["status"].as_str().unwrap_or(""))
    })
}

fn liveaction_id(execution: &Value) -> String {
    execution
        .pointer("/liveaction/id")
        .or_else(|| execution.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// What `DELETE` answers for an execution that cannot be canceled: a 200 with a faultstring.
pub(crate) fn not_cancelable(status: &str) -> Fault {
    Fault::new(
        StatusCode::OK,
        format!("Action cannot be canceled. State = {status}."),
    )
}

/// `action_service.request_cancellation` and what the runner then does; the caller checked
/// that the execution is in a cancelable state.
pub(crate) fn request_cancellation(shared: &Arc<Shared>, id: &str, requester: &str) -> Value {
    let execution = get(shared, id);
    let status = execution["status"].as_str().unwrap_or("");
    debug_assert!(CANCELABLE.contains(&status));
    let result = json!({ "message": "Action canceled by user.", "user": requester });
    let requester = requester.to_owned();
    // `"parent" in liveaction.context` or running: the runner has to stop it first.
    let has_parent =
        execution.pointer("/context/parent").is_some() || execution.get("parent").is_some();
    if !(has_parent || status == "running") {
        mark_cancelled_by(shared, id, &requester);
        executions::finish(shared, id, "canceled", result);
        after_task_done(shared, &execution);
        return get(shared, id);
    }
    let canceling = update(shared, id, "canceling", |ex| {
        ex["result"] = result.clone();
        ex["context"]["cancelled_by"] = json!(requester);
    });
    if is_workflow(&execution) {
        // The Orquesta runner's `cancel`: only child workflows and delayed actions are
        // canceled; a running action task is left to finish, and the workflow stays
        // `canceling` until it has.
        let children: Vec<(String, String, bool)> = shared
            .state()
            .executions
            .iter()
            .filter(|e| e.execution["parent"] == id)
            .map(|e| {
                (
                    e.id.clone(),
                    e.execution["status"].as_str().unwrap_or("").to_owned(),
                    is_workflow(&e.execution),
                )
            })
            .collect();
        for (child, status, workflow) in children {
            let cancelable = if workflow {
                CANCELABLE.contains(&status.as_str())
            } else {
                status == "delayed"
            };
            if cancelable {
                request_cancellation(shared, &child, &requester);
            }
        }
        if !children_active(shared, id) {
            let shared = shared.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(RUNNER_DELAY).await;
                if status_of(&shared, &id).as_deref() == Some("canceling") {
                    workflows::end_canceled(&shared, &id);
                }
            });
        }
        return canceling;
    }
    // Any other runner's `cancel` returns `canceled` with the result as it is.
    let shared = shared.clone();
    let id = id.to_owned();
    let task = execution.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RUNNER_DELAY).await;
        if status_of(&shared, &id).as_deref() == Some("canceling") {
            let result = get(&shared, &id)["result"].clone();
            executions::finish(&shared, &id, "canceled", result);
            after_task_done(&shared, &task);
        }
    });
    canceling
}

fn mark_cancelled_by(shared: &Shared, id: &str, requester: &str) {
    if let Some(r) = shared.state().executions.iter_mut().find(|e| e.id == id) {
        r.execution["context"]["cancelled_by"] = json!(requester);
    }
}

/// A workflow task that ended outside the workflow driver (canceled): the workflow reacts.
fn after_task_done(shared: &Shared, task: &Value) {
    if let Some(parent) = task["parent"].as_str() {
        workflows::task_ended_elsewhere(shared, parent);
    }
}

/// `request_pause`: only workflows pause; the workflow waits for its running task.
pub(crate) fn request_pause(
    shared: &Arc<Shared>,
    id: &str,
    requester: &str,
) -> Result<Value, Fault> {
    let execution = get(shared, id);
    let status = execution["status"].as_str().unwrap_or("");
    let runner = execution
        .pointer("/runner/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let lv = liveaction_id(&execution);
    if !is_workflow(&execution) {
        return Err(Fault::bad_request(format!(
            "Failed updating execution. Unable to pause liveaction \"{lv}\" because it is not supported by the \"{runner}\" runner."
        )));
    }
    if matches!(status, "pausing" | "paused") {
        return Ok(execution);
    }
    if status != "running" {
        return Err(Fault::bad_request(format!(
            "Failed updating execution. Unable to pause liveaction \"{lv}\" because it is not in a running state."
        )));
    }
    let requester = requester.to_owned();
    let pausing = update(shared, id, "pausing", |ex| {
        ex["context"]["paused_by"] = json!(requester);
    });
    if !children_active(shared, id) {
        let shared = shared.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(RUNNER_DELAY).await;
            if status_of(&shared, &id).as_deref() == Some("pausing") {
                update(&shared, &id, "paused", |_| {});
            }
        });
    }
    Ok(pausing)
}

/// `request_resume`: a paused workflow goes `resuming`, then `running` with its next task.
pub(crate) fn request_resume(
    shared: &Arc<Shared>,
    id: &str,
    requester: &str,
) -> Result<Value, Fault> {
    let execution = get(shared, id);
    let status = execution["status"].as_str().unwrap_or("");
    let runner = execution
        .pointer("/runner/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let lv = liveaction_id(&execution);
    if !is_workflow(&execution) {
        return Err(Fault::bad_request(format!(
            "Failed updating execution. Unable to resume liveaction \"{lv}\" because it is not supported by the \"{runner}\" runner."
        )));
    }
    if matches!(status, "running" | "resuming") {
        return Ok(execution);
    }
    if status != "paused" {
        return Err(Fault::bad_request(format!(
            "Failed updating execution. Unable to resume liveaction \"{lv}\" because it is in \"{status}\" state and not in \"paused\" state."
        )));
    }
    let requester = requester.to_owned();
    let resuming = update(shared, id, "resuming", |ex| {
        ex["context"]["resumed_by"] = json!(requester);
    });
    let shared = shared.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(RUNNER_DELAY).await;
        if status_of(&shared, &id).as_deref() == Some("resuming") {
            workflows::resume(&shared, &id);
        }
    });
    Ok(resuming)
}

/// Whether `DELETE` may cancel it.
pub(crate) fn cancelable(status: &str) -> bool {
    CANCELABLE.contains(&status)
}

/// One chunk of output, as `ActionExecutionOutputDB` stores it.
#[derive(Debug, Clone)]
pub(crate) struct OutputChunk {
    pub output_type: String,
    pub data: String,
}

/// Stores an output chunk and publishes `st2.execution.output__create` as st2stream
/// forwards it (`ActionExecutionOutputAPI`: `None` fields dropped, so no `delay`).
pub(crate) fn append_output(shared: &Shared, id: &str, output_type: &str, data: &str) -> usize {
    let execution = get(shared, id);
    assert!(
        !execution.is_null(),
        "St2Double::append_output: no execution with id {id}"
    );
    let action_ref = execution["action"]["ref"].as_str().unwrap_or("").to_owned();
    let runner_ref = execution["runner"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    shared
        .state()
        .outputs
        .entry(id.to_owned())
        .or_default()
        .push(OutputChunk {
            output_type: output_type.to_owned(),
            data: data.to_owned(),
        });
    let payload = json!({
        "id": ids::object_id(),
        "execution_id": id,
        "action_ref": action_ref,
        "runner_ref": runner_ref,
        "timestamp": ids::iso8601(SystemTime::now()),
        "output_type": output_type,
        "data": data,
    });
    let event = BusEvent {
        name: "st2.execution.output__create".into(),
        data: payload.to_string(),
        action_ref: Some(action_ref),
        execution_id: Some(id.to_owned()),
        status: None,
    };
    shared.events.send(event).unwrap_or(0)
}

/// The output so far, all types or one (`existing_output_iter`).
pub(crate) fn output_of(shared: &Shared, id: &str, output_type: &str) -> String {
    shared
        .state()
        .outputs
        .get(id)
        .map(|chunks| {
            chunks
                .iter()
                .filter(|c| output_type == "all" || c.output_type == output_type)
                .map(|c| c.data.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// The API view of the execution now.
pub(crate) fn view(shared: &Shared, id: &str) -> Value {
    api_view(&get(shared, id))
}
