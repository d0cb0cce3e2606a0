//! Watching and steering executions over the API (`st2api/controllers/v1/actionexecutions.py`
//! at st2 c2eaf56): `POST /executions`, `GET /executions`, `DELETE` and `PUT
//! /executions/{id}`, `POST /executions/{id}/re_run`, `GET /executions/{id}/output`.
//! RBAC on these is not modelled beyond `action_execute` (st2's `execution_stop` and
//! `execution_view` pass for everyone here).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use super::http::{Caller, Fault, int_param, parse_body};
use super::lifecycle::{self, NewExecution};
use super::python::{py_repr, py_str_repr};
use super::state::Shared;
use super::{aliases, executions, ids};

/// `_get_one_by_id`'s 404.
fn not_found(id: &str) -> Fault {
    Fault::not_found(format!("Unable to identify resource with id \"{id}\"."))
}

fn status_of(shared: &Shared, id: &str) -> Result<String, Fault> {
    let ex = lifecycle::get(shared, id);
    ex["status"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| not_found(id))
}

/// The router's `additionalProperties: false` message.
fn unexpected(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), Fault> {
    let extra: Vec<String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| py_str_repr(k))
        .collect();
    match extra.len() {
        0 => Ok(()),
        1 => Err(Fault::bad_request(format!(
            "Additional properties are not allowed ({} was unexpected)",
            extra[0]
        ))),
        _ => Err(Fault::bad_request(format!(
            "Additional properties are not allowed ({} were unexpected)",
            extra.join(", ")
        ))),
    }
}

fn object_body(body: &Bytes) -> Result<Map<String, Value>, Fault> {
    match parse_body(body)? {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(Fault::bad_request(format!(
            "{} is not of type 'object'",
            py_repr(&other)
        ))),
    }
}

fn typed(map: &Map<String, Value>, field: &str, kind: &str) -> Result<(), Fault> {
    let ok = match (map.get(field), kind) {
        (None, _) => true,
        (Some(v), "object") => v.is_object(),
        (Some(v), "array") => v.is_array(),
        (Some(v), "string") => v.is_string(),
        (Some(v), "integer") => v.is_i64() || v.is_u64(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Fault::bad_request(format!(
            "{} is not of type '{kind}'",
            py_repr(&map[field])
        )))
    }
}

/// `_handle_schedule_execution` + `_schedule_execution`: the action must exist, the caller
/// may execute it, `context` gets `user` (the body's `user`, else the caller), `pack`, and
/// with RBAC on `rbac: {user, roles}`.
#[allow(clippy::too_many_arguments)]
fn schedule(
    shared: &Arc<Shared>,
    caller: &Caller,
    action_ref: &str,
    parameters: Map<String, Value>,
    context: Map<String, Value>,
    notify: Option<Value>,
    user: Option<&str>,
    delay: Option<u64>,
    request: Value,
) -> Result<Response, Fault> {
    let (pack, name) = action_ref.split_once('.').unwrap_or(("", action_ref));
    let mut context = Value::Object(context);
    {
        let state = shared.state();
        if state.missing_actions.contains(action_ref) {
            return Err(Fault::bad_request(format!(
                "Action \"{action_ref}\" cannot be found."
            )));
        }
        let denied = state.rbac
            && state
                .users
                .get(&caller.user)
                .is_some_and(|u| u.execute_denied);
        if denied {
            return Err(Fault::forbidden(format!(
                "User \"{}\" doesn't have required permission \"action_execute\" on resource \"action:{pack}:{name}\"",
                caller.user
            )));
        }
        let user = user.filter(|u| !u.is_empty()).unwrap_or(&caller.user);
        context["user"] = json!(user);
        context["pack"] = json!(pack);
        if state.rbac {
            let roles: Vec<&str> = if state.is_admin(user) {
                vec!["admin"]
            } else {
                vec![]
            };
            context["rbac"] = json!({ "user": user, "roles": roles });
        }
    }
    let execution = lifecycle::create(
        shared,
        NewExecution {
            action_ref: action_ref.to_owned(),
            parameters,
            context,
            notify,
            parent: None,
            status: if delay.is_some() {
                "delayed"
            } else {
                "requested"
            },
            extra: Map::new(),
            request,
            credential: caller.credential.clone(),
            user: caller.user.clone(),
        },
    );
    let id = execution["id"].as_str().unwrap_or("").to_owned();
    lifecycle::start_after(
        shared.clone(),
        id,
        Duration::from_millis(delay.unwrap_or(0)),
    );
    Ok((
        StatusCode::CREATED,
        Json(super::inquiries::api_view(&execution)),
    )
        .into_response())
}

/// `NotificationsHelper`: `to_model` then `from_model`, which keeps only truthy `message`,
/// `data` and `routes` (`channels` is the deprecated spelling of `routes`).
fn normalise_notify(notify: &Map<String, Value>) -> Result<Value, Fault> {
    unexpected(notify, &["on-complete", "on-failure", "on-success"])?;
    let mut out = Map::new();
    for (key, sub) in notify {
        let Value::Object(sub) = sub else {
            return Err(Fault::bad_request(format!(
                "{} is not of type 'object'",
                py_repr(sub)
            )));
        };
        unexpected(sub, &["message", "data", "routes", "channels"])?;
        typed(sub, "message", "string")?;
        typed(sub, "data", "object")?;
        typed(sub, "routes", "array")?;
        typed(sub, "channels", "array")?;
        if !super::python::py_truthy(&Value::Object(sub.clone())) {
            continue;
        }
        let mut norm = Map::new();
        for field in ["message", "data"] {
            if let Some(v) = sub.get(field).filter(|v| super::python::py_truthy(v)) {
                norm.insert(field.into(), v.clone());
            }
        }
        let routes = sub
            .get("routes")
            .filter(|v| super::python::py_truthy(v))
            .or_else(|| sub.get("channels"))
            .filter(|v| super::python::py_truthy(v));
        if let Some(routes) = routes {
            norm.insert("routes".into(), routes.clone());
        }
        out.insert(key.clone(), Value::Object(norm));
    }
    Ok(Value::Object(out))
}

/// `POST /api/v1/executions`: `{action, parameters?, context?, notify?, user?, delay?}`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Fault> {
    let map = object_body(&body)?;
    unexpected(
        &map,
        &[
            "id",
            "status",
            "start_timestamp",
            "end_timestamp",
            "action",
            "parameters",
            "result",
            "context",
            "callback",
            "runner_info",
            "notify",
            "delay",
            "user",
        ],
    )?;
    for (field, kind) in [
        ("action", "string"),
        ("parameters", "object"),
        ("context", "object"),
        ("notify", "object"),
        ("user", "string"),
        ("delay", "integer"),
    ] {
        if field == "user" && map.get("user") == Some(&Value::Null) {
            continue; // `x-nullable`
        }
        typed(&map, field, kind)?;
    }
    let action = map
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| Fault::bad_request("'action' is a required property"))?;
    let parameters = map
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let context = map
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let notify = match map.get("notify").and_then(Value::as_object) {
        Some(n) => Some(normalise_notify(n)?),
        None => None,
    };
    let user = map.get("user").and_then(Value::as_str);
    let delay = map.get("delay").and_then(Value::as_u64);
    schedule(
        &shared,
        &caller,
        action,
        parameters,
        context,
        notify,
        user,
        delay,
        Value::Object(map.clone()),
    )
}

/// `POST /api/v1/executions/{id}/re_run`: `{parameters, tasks, reset, user, delay}`.
pub(crate) async fn re_run(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Fault> {
    let spec = object_body(&body)?;
    for (field, kind) in [
        ("parameters", "object"),
        ("tasks", "array"),
        ("reset", "array"),
        ("user", "string"),
        ("delay", "integer"),
    ] {
        typed(&spec, field, kind)?;
    }
    let truthy = |k: &str| spec.get(k).is_some_and(super::python::py_truthy);
    if (truthy("tasks") || truthy("reset")) && truthy("parameters") {
        return Err(Fault::bad_request(
            "Parameters override is not supported when re-running task(s) for a workflow.",
        ));
    }
    let list = |k: &str| -> Vec<Value> {
        spec.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (tasks, reset) = (list("tasks"), list("reset"));
    if reset.iter().any(|r| !tasks.contains(r)) {
        return Err(Fault::bad_request(
            "List of tasks to reset does not match the tasks to rerun.",
        ));
    }
    let original = lifecycle::get(&shared, &id);
    if original.is_null() {
        return Err(not_found(&id));
    }
    if !tasks.is_empty() && original.pointer("/runner/name") != Some(&json!("orquesta")) {
        return Err(Fault::bad_request(
            "Task option is only supported for Orquesta workflows.",
        ));
    }
    let no_merge = query
        .get("no_merge")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    let mut parameters = if no_merge {
        Map::new()
    } else {
        original["parameters"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    if let Some(p) = spec.get("parameters").and_then(Value::as_object) {
        parameters.extend(p.clone());
    }
    let mut rerun = json!({ "ref": id });
    if !tasks.is_empty() {
        rerun["tasks"] = Value::Array(tasks);
    }
    if !reset.is_empty() {
        rerun["reset"] = Value::Array(reset);
    }
    let mut context = Map::new();
    context.insert("re-run".into(), rerun);
    // Every execution has a trace, so `get_trace_db_by_action_execution` finds one.
    context.insert("trace_context".into(), json!({ "id_": ids::object_id() }));
    let action = original["action"]["ref"].as_str().unwrap_or("").to_owned();
    schedule(
        &shared,
        &caller,
        &action,
        parameters,
        context,
        None,
        spec.get("user").and_then(Value::as_str),
        spec.get("delay").and_then(Value::as_u64),
        Value::Object(spec.clone()),
    )
}

/// `DELETE /api/v1/executions/{id}`.
pub(crate) async fn cancel(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Fault> {
    let status = status_of(&shared, &id)?;
    if status == "canceled" {
        return Ok(Json(lifecycle::view(&shared, &id)));
    }
    if !lifecycle::cancelable(&status) {
        return Err(lifecycle::not_cancelable(&status));
    }
    let execution = lifecycle::request_cancellation(&shared, &id, &caller.user);
    Ok(Json(super::inquiries::api_view(&execution)))
}

/// `PUT /api/v1/executions/{id}`: `{"status": …, "result": {…}}` only.
pub(crate) async fn put(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Fault> {
    let map = object_body(&body)?;
    unexpected(&map, &["status", "result"])?;
    typed(&map, "status", "string")?;
    if let Some(s) = map.get("status").and_then(Value::as_str)
        && !lifecycle::STATUSES.contains(&s)
    {
        let list: Vec<String> = lifecycle::STATUSES.iter().map(|s| py_str_repr(s)).collect();
        return Err(Fault::bad_request(format!(
            "{} is not one of [{}]",
            py_str_repr(s),
            list.join(", ")
        )));
    }
    typed(&map, "result", "object")?;
    let current = status_of(&shared, &id)?;
    if lifecycle::is_completed(&current) {
        return Err(Fault::bad_request(
            "Execution is already in completed state.",
        ));
    }
    let wanted = map.get("status").and_then(Value::as_str).unwrap_or("");
    let result = map.get("result").cloned();
    let execution = match (current.as_str(), wanted) {
        ("canceling", "canceled") => {
            if lifecycle::children_active(&shared, &id) {
                set_status(&shared, &id, "canceling", result)
            } else {
                set_status(&shared, &id, "canceled", result)
            }
        }
        // `request_cancellation` returns a bare liveaction for `canceling`, which the
        // controller fails to unpack: a 500.
        ("canceling", "canceling") => {
            return Err(Fault::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed updating execution due to unexpected error.",
            ));
        }
        (_, "canceling" | "canceled") => {
            if !lifecycle::cancelable(&current) {
                // `request_cancellation` raises a plain Exception.
                return Err(Fault::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Failed updating execution due to unexpected error.",
                ));
            }
            lifecycle::request_cancellation(&shared, &id, &caller.user)
        }
        ("pausing", "paused") => {
            if lifecycle::children_active(&shared, &id) {
                set_status(&shared, &id, "pausing", result)
            } else {
                set_status(&shared, &id, "paused", result)
            }
        }
        (_, "pausing" | "paused") => lifecycle::request_pause(&shared, &id, &caller.user)?,
        (_, "resuming") => lifecycle::request_resume(&shared, &id, &caller.user)?,
        (_, other) => set_status(&shared, &id, other, result),
    };
    Ok(Json(super::inquiries::api_view(&execution)))
}

/// `action_service.update_status`: a completed status finishes the execution (and plays
/// the notify pipeline), any other is a plain update.
fn set_status(shared: &Shared, id: &str, status: &str, result: Option<Value>) -> Value {
    if status.is_empty() {
        return lifecycle::get(shared, id);
    }
    if lifecycle::is_completed(status) {
        let result = result.unwrap_or_else(|| lifecycle::get(shared, id)["result"].clone());
        return executions::finish(shared, id, status, result).execution;
    }
    super::inquiries::update(shared, id, status, |ex| {
        if let Some(r) = result.filter(super::python::py_truthy) {
            ex["result"] = r;
        }
    })
}

/// `GET /api/v1/executions/{id}/output?output_type=all|stdout|stderr`.
pub(crate) async fn output(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Fault> {
    let output_type = query
        .get("output_type")
        .map(String::as_str)
        .unwrap_or("all");
    if !matches!(output_type, "all" | "stdout" | "stderr") {
        return Err(Fault::bad_request(format!(
            "{} is not one of ['all', 'stdout', 'stderr']",
            py_str_repr(output_type)
        )));
    }
    status_of(&shared, &id)?;
    let text = lifecycle::output_of(&shared, &id, output_type);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], text).into_response())
}

/// `ActionExecutionsControllerMixin.valid_exclude_attributes`.
const VALID_EXCLUDE_ATTRIBUTES: [&str; 3] = ["result", "trigger_instance", "status"];

/// `GET /api/v1/executions`, as st2's `ActionExecutionsController.get_all` and
/// `ResourceController._get_all` answer it:
/// - filters (`SUPPORTED_EXECUTIONS_FILTERS`; an empty value is no filter): `action`
///   (`action.ref`), `status`, `parent` (`null`: top-level only), `user` (`context.user`),
///   `timestamp_gt` / `timestamp_lt` (`start_timestamp`, strictly after / before; a value
///   `isotime.parse` rejects is a 400 "Datetime value does not match expected format.");
/// - order: `timestamp_lt` or `sort_desc` → newest first; else `timestamp_gt` or `sort_asc` →
///   oldest first; else newest first (any non-empty value counts, as in st2);
/// - `exclude_attributes` (comma-separated; only `result`, `trigger_instance`, `status`,
///   else a 400 "Invalid or unsupported exclude attribute specified: X");
/// - `limit` (100, st2's page-size rules) and `offset`, `X-Total-Count` and `X-Limit`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Fault> {
    let limit = int_param(&query, "limit")?.unwrap_or(100);
    let offset = int_param(&query, "offset")?.unwrap_or(0).max(0) as usize;
    let filter = |name: &str| query.get(name).filter(|v| !v.is_empty());
    let excluded: Vec<&str> = filter("exclude_attributes")
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    if let Some(bad) = excluded
        .iter()
        .find(|a| !VALID_EXCLUDE_ATTRIBUTES.contains(a))
    {
        return Err(Fault::bad_request(format!(
            "Invalid or unsupported exclude attribute specified: {bad}"
        )));
    }
    let state = shared.state();
    let page = aliases::validate_limit(limit, state.is_admin(&caller.user), state.max_page_size)?;
    let timestamp = |name: &str| -> Result<Option<i64>, Fault> {
        filter(name)
            .map(|v| {
                ids::parse_iso8601_utc(v).ok_or_else(|| {
                    Fault::bad_request("Datetime value does not match expected format.")
                })
            })
            .transpose()
    };
    let (after, before) = (timestamp("timestamp_gt")?, timestamp("timestamp_lt")?);
    let started = |e: &Value| {
        e["start_timestamp"]
            .as_str()
            .and_then(ids::parse_iso8601_utc)
    };
    let mut items: Vec<Value> = state
        .executions
        .iter()
        .map(|e| &e.execution)
        .filter(|e| filter("action").is_none_or(|a| e["action"]["ref"] == a.as_str()))
        .filter(|e| filter("status").is_none_or(|s| e["status"] == s.as_str()))
        .filter(|e| filter("user").is_none_or(|u| e["context"]["user"] == u.as_str()))
        .filter(|e| match filter("parent").map(String::as_str) {
            None => true,
            Some("null") => e.get("parent").is_none(),
            Some(p) => e["parent"] == p,
        })
        .filter(|e| after.is_none_or(|t| started(e).is_some_and(|s| s > t)))
        .filter(|e| before.is_none_or(|t| started(e).is_some_and(|s| s < t)))
        .map(super::inquiries::api_view)
        .collect();
    drop(state);
    for item in &mut items {
        if let Value::Object(map) = item {
            for attribute in &excluded {
                map.remove(*attribute);
            }
        }
    }
    let ascending = if before.is_some() || filter("sort_desc").is_some() {
        false
    } else {
        after.is_some() || filter("sort_asc").is_some()
    };
    // Recorded oldest first (in `start_timestamp` order).
    if !ascending {
        items.reverse();
    }
    let total = items.len();
    let items: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(page.unwrap_or(usize::MAX))
        .collect();
    let mut response = Json(Value::Array(items)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    headers.insert("x-limit", HeaderValue::from(limit));
    Ok(response)
}
