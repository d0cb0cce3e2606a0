//! A workflow with child tasks: st2's own example `examples.orquesta-sequential`
//! (`contrib/examples/actions/workflows/orquesta-sequential.yaml` at st2 c2eaf56):
//!
//! ```yaml
//! input: [name]            # default Lakshmi
//! vars: [greeting: null]
//! output: [greeting: <% ctx().greeting %>]
//! tasks:
//!   task1: {action: core.echo message=<% ctx().name %>, publish greeting=stdout, do: task2}
//!   task2: {action: core.echo message="All your base are belong to us!",
//!           publish greeting="<% ctx(greeting) %>, <% result().stdout %>", do: task3}
//!   task3: {action: core.echo message=<% ctx('greeting') %>, publish greeting=stdout}
//! ```
//!
//! Each task is a child execution (`parent`, `context.orquesta.task_name`, runner
//! `local-shell-cmd`) going `requested` → `scheduled` → `running` → `succeeded`, every change
//! published. Tasks move when the test says so ([`super::St2Double::advance_workflow`]) or,
//! with [`super::St2Double::set_workflow_step`], by themselves. The workflow itself finishes
//! (and is announced, if it came from chat) after its last task.
//!
//! Cancel and pause follow the Orquesta runner: a running action task is never canceled or
//! paused; the workflow stays `canceling`/`pausing` until that task ends, then becomes
//! `canceled` (its output rendered from what was published so far) or `paused`, and no
//! further task starts. A task canceled on its own cancels its workflow.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::inquiries::update;
use super::lifecycle::{self, NewExecution};
use super::state::Shared;
use super::{FinishOutcome, WorkflowStep, executions, ids};

/// The example workflow's action ref.
pub const WORKFLOW_ACTION: &str = "examples.orquesta-sequential";

/// The tasks, in order.
const TASKS: [&str; 3] = ["task1", "task2", "task3"];

/// What the driver remembers of a running workflow (the Orquesta conductor's state).
#[derive(Debug, Clone)]
pub(crate) struct WorkflowRun {
    wf_ex_id: String,
    /// The index of the next task to start.
    next: usize,
    /// The running task's execution, if any.
    current: Option<String>,
    name: String,
    greeting: Value,
}

/// The task's `core.echo` message.
fn message(run: &WorkflowRun, task: usize) -> String {
    match task {
        0 => run.name.clone(),
        1 => "All your base are belong to us!".into(),
        _ => super::python::py_str(&run.greeting),
    }
}

/// The task's `publish`.
fn publish(run: &mut WorkflowRun, task: usize, stdout: &str) {
    run.greeting = match task {
        1 => json!(format!(
            "{}, {stdout}",
            super::python::py_str(&run.greeting)
        )),
        _ => json!(stdout),
    };
}

/// Called once the workflow is `running`: the conductor's first task (or the first of a
/// re-run's `tasks`).
pub(crate) fn start(shared: &Shared, id: &str) {
    let workflow = lifecycle::get(shared, id);
    let name = workflow
        .pointer("/parameters/name")
        .map(super::python::py_str)
        .unwrap_or_else(|| "Lakshmi".into());
    let first = workflow
        .pointer("/context/re-run/tasks/0")
        .and_then(Value::as_str)
        .and_then(|t| TASKS.iter().position(|x| *x == t))
        .unwrap_or(0);
    let wf_ex_id = ids::object_id();
    {
        let mut state = shared.state();
        if let Some(r) = state.executions.iter_mut().find(|e| e.id == id) {
            r.execution["context"]["workflow_execution"] = json!(wf_ex_id);
        }
        state.workflows.insert(
            id.to_owned(),
            WorkflowRun {
                wf_ex_id,
                next: first,
                current: None,
                name,
                greeting: Value::Null,
            },
        );
    }
    start_next(shared, id);
}

/// `request_next_tasks` / `request_action_execution` for the next task.
fn start_next(shared: &Shared, id: &str) -> Option<(String, String)> {
    let workflow = lifecycle::get(shared, id);
    let run = shared.state().workflows.get(id).cloned()?;
    let index = run.next;
    let task = *TASKS.get(index)?;
    let wf_ctx = &workflow["context"];
    let user = wf_ctx.get("user").cloned().unwrap_or(Value::Null);
    let mut parent_ctx = json!({
        "execution_id": id, "user": user,
        "pack": workflow.pointer("/action/pack").cloned().unwrap_or(Value::Null),
    });
    let task_execution_id = ids::object_id();
    let mut context = json!({
        "pack": "core",
        "user": user,
        "orquesta": {
            "workflow_execution_id": run.wf_ex_id,
            "task_execution_id": task_execution_id,
            "task_name": task,
            "task_id": task,
            "task_route": 0,
        },
    });
    for key in ["api_user", "source_channel"] {
        if let Some(v) = wf_ctx.get(key).filter(|v| super::python::py_truthy(v)) {
            parent_ctx[key] = v.clone();
            context[key] = v.clone();
        }
    }
    context["parent"] = parent_ctx;
    let mut parameters = Map::new();
    parameters.insert("message".into(), json!(message(&run, index)));
    let mut extra = Map::new();
    extra.insert("workflow_execution".into(), json!(run.wf_ex_id));
    extra.insert("task_execution".into(), json!(task_execution_id));
    let (credential, user) = {
        let state = shared.state();
        let record = state.executions.iter().find(|e| e.id == id)?;
        (record.credential.clone(), record.user.clone())
    };
    let child = lifecycle::create(
        shared,
        NewExecution {
            action_ref: "core.echo".into(),
            parameters,
            context,
            notify: None,
            parent: Some(id.to_owned()),
            status: "requested",
            extra,
            request: json!({}),
            credential,
            user,
        },
    );
    let child_id = child["id"].as_str().unwrap_or("").to_owned();
    if let Some(run) = shared.state().workflows.get_mut(id) {
        run.next = index + 1;
        run.current = Some(child_id.clone());
    }
    update(shared, &child_id, "scheduled", |_| {});
    update(shared, &child_id, "running", |_| {});
    Some((task.to_owned(), child_id))
}

/// Moves the workflow one step: the running task succeeds (its stdout streamed as output
/// first), then the next task starts, or the workflow ends.
pub(crate) fn advance(shared: &Arc<Shared>, id: &str) -> Result<WorkflowStep, String> {
    let status = lifecycle::get(shared, id)["status"]
        .as_str()
        .ok_or_else(|| format!("no execution with id {id}"))?
        .to_owned();
    if matches!(status.as_str(), "requested" | "delayed" | "scheduled") {
        lifecycle::start(shared, id)?;
        return Ok(current_step(shared, id));
    }
    if lifecycle::is_completed(&status) || status == "paused" {
        return Err(format!("workflow {id} is {status}"));
    }
    let run = shared
        .state()
        .workflows
        .get(id)
        .cloned()
        .ok_or_else(|| format!("execution {id} is not a running {WORKFLOW_ACTION}"))?;
    if let Some(child) = &run.current {
        let child_ex = lifecycle::get(shared, child);
        if child_ex["status"] == "running" {
            let stdout = child_ex
                .pointer("/parameters/message")
                .map(super::python::py_str)
                .unwrap_or_default();
            lifecycle::append_output(shared, child, "stdout", &format!("{stdout}\n"));
            executions::finish(
                shared,
                child,
                "succeeded",
                json!({"failed": false, "succeeded": true, "return_code": 0, "stdout": stdout, "stderr": ""}),
            );
            if let Some(run) = shared.state().workflows.get_mut(id) {
                publish(run, run.next - 1, &stdout);
                run.current = None;
            }
        }
    }
    Ok(after_task(shared, id))
}

/// What the conductor does once no task is running.
fn after_task(shared: &Shared, id: &str) -> WorkflowStep {
    let status = lifecycle::get(shared, id)["status"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    match status.as_str() {
        "canceling" => WorkflowStep::Finished(end_canceled(shared, id)),
        "pausing" => {
            update(shared, id, "paused", |_| {});
            WorkflowStep::Paused
        }
        _ => match start_next(shared, id) {
            Some((task, execution_id)) => WorkflowStep::TaskStarted { task, execution_id },
            None => {
                let output = output(shared, id);
                shared.state().workflows.remove(id);
                WorkflowStep::Finished(executions::finish(
                    shared,
                    id,
                    "succeeded",
                    json!({ "output": output }),
                ))
            }
        },
    }
}

fn current_step(shared: &Shared, id: &str) -> WorkflowStep {
    let run = shared.state().workflows.get(id).cloned();
    match run.and_then(|r| r.current.map(|c| (TASKS[r.next - 1], c))) {
        Some((task, execution_id)) => WorkflowStep::TaskStarted {
            task: task.to_owned(),
            execution_id,
        },
        None => WorkflowStep::Paused,
    }
}

fn output(shared: &Shared, id: &str) -> Value {
    let greeting = shared
        .state()
        .workflows
        .get(id)
        .map(|r| r.greeting.clone())
        .unwrap_or(Value::Null);
    json!({ "greeting": greeting })
}

/// The workflow ends `canceled`, its output rendered from what was published.
pub(crate) fn end_canceled(shared: &Shared, id: &str) -> FinishOutcome {
    let output = output(shared, id);
    shared.state().workflows.remove(id);
    executions::finish(shared, id, "canceled", json!({ "output": output }))
}

/// A task canceled through the API: its workflow is canceled with it.
pub(crate) fn task_ended_elsewhere(shared: &Shared, id: &str) {
    let status = lifecycle::get(shared, id)["status"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if let Some(run) = shared.state().workflows.get_mut(id) {
        run.current = None;
    }
    if !lifecycle::is_completed(&status) && !status.is_empty() {
        end_canceled(shared, id);
    }
}

/// `resuming` → `running`, and the next task if none is running. The asking workflow goes
/// back to `paused` while its inquiry is pending.
pub(crate) fn resume(shared: &Shared, id: &str) {
    update(shared, id, "running", |_| {});
    let known = shared.state().workflows.contains_key(id);
    if !known {
        if lifecycle::children_active(shared, id) {
            update(shared, id, "paused", |_| {});
        }
        return;
    }
    if !lifecycle::children_active(shared, id) {
        after_task(shared, id);
    }
}

/// With a step interval set, moves the workflow by itself until it ends.
pub(crate) fn step_by_itself(shared: Arc<Shared>, id: String) {
    let Some(every) = shared.state().workflow_step else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let status = lifecycle::get(&shared, &id)["status"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if status.is_empty() || lifecycle::is_completed(&status) {
                break;
            }
            // Paused waits for a resume; anything else moves.
            if status != "paused" && advance(&shared, &id).is_err() {
                break;
            }
        }
    });
}
