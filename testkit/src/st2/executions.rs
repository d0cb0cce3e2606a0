//! Alias executions (`POST /api/v1/aliasexecution`), executions by id, the notify rule, and
//! what happens when a test finishes an execution: the route's notify rule (`st2_matrix.notify_<route>`) running
//! `chatops.post_result`, which announces the formatted result on the stream.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use st2_alias::ParseError;

use super::http::{Caller, Fault, parse_body};
use super::post_result::format_execution_result;
use super::python::py_repr;
use super::state::Shared;
use super::template::{self, RenderError, Root, Undefined};
use super::{AliasHold, FinishOutcome, RecordedExecution, RuleState, aliases, ids};

/// Fields the `AliasExecution` body schema allows, with their JSON type.
const FIELDS: [(&str, &str); 8] = [
    ("name", "string"),
    ("format", "string"),
    ("command", "string"),
    ("user", "string"),
    ("source_channel", "string"),
    ("source_context", "object"),
    ("notification_channel", "string"),
    ("notification_route", "string"),
];
const REQUIRED: [&str; 4] = ["name", "format", "command", "source_channel"];

/// The body checks st2's router makes from the OpenAPI schema (jsonschema messages).
fn validate(body: Option<Value>) -> Result<Map<String, Value>, Fault> {
    let body =
        body.ok_or_else(|| Fault::bad_request("Required parameter \"payload\" is missing"))?;
    let Value::Object(map) = body else {
        return Err(Fault::bad_request(format!(
            "{} is not of type 'object'",
            py_repr(&body)
        )));
    };
    for (field, kind) in FIELDS {
        let ok = match map.get(field) {
            None => true,
            Some(v) if kind == "string" => v.is_string(),
            Some(v) => v.is_object(),
        };
        if !ok {
            return Err(Fault::bad_request(format!(
                "{} is not of type '{kind}'",
                py_repr(&map[field])
            )));
        }
    }
    let unexpected: Vec<String> = map
        .keys()
        .filter(|k| FIELDS.iter().all(|(f, _)| f != k))
        .map(|k| format!("'{k}'"))
        .collect();
    match unexpected.len() {
        0 => {}
        1 => {
            return Err(Fault::bad_request(format!(
                "Additional properties are not allowed ({} was unexpected)",
                unexpected[0]
            )));
        }
        _ => {
            return Err(Fault::bad_request(format!(
                "Additional properties are not allowed ({} were unexpected)",
                unexpected.join(", ")
            )));
        }
    }
    if let Some(missing) = REQUIRED.iter().find(|f| !map.contains_key(**f)) {
        return Err(Fault::bad_request(format!(
            "'{missing}' is a required property"
        )));
    }
    Ok(map)
}

fn field<'a>(map: &'a Map<String, Value>, name: &str) -> &'a str {
    map.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The route an execution notifies: `notification_route`, else `notification_channel`.
pub(crate) fn route_of(request: &Value) -> Option<String> {
    ["notification_route", "notification_channel"]
        .iter()
        .filter_map(|k| request.get(*k).and_then(Value::as_str))
        .find(|r| !r.is_empty())
        .map(str::to_owned)
}

/// st2's `extract_parameters` with the answers its API gives, using the bridge's own port of
/// st2's parser (`st2_alias`), so the double and StackStorm read every format alike.
fn extract_parameters(format: &str, command: &str) -> Result<Map<String, Value>, Fault> {
    // A format Python's `re` rejects raises `re.error`, which nothing catches: a 500. A format
    // Python accepts but `st2_alias` does not implement, or one too complex to rewrite, has no
    // faithful answer here; a 500 at least fails the test loudly.
    let compiled = st2_alias::Format::compile(format).map_err(|_| Fault::internal())?;
    let params = compiled.parse(command).map_err(|e| match e {
        // st2's `ParseException`: a 400 with its message.
        ParseError::NoMatch { .. } | ParseError::NoValue => Fault::bad_request(e.to_string()),
        // A `KeyError` in st2 (an uncaught 500); the step limit, which Python does not have,
        // would only be hit by a pathological test format.
        ParseError::MissingGroup { .. } | ParseError::LimitExceeded { .. } => Fault::internal(),
    })?;
    Ok(params
        .into_iter()
        .map(|(k, v)| (k, v.map_or(Value::Null, Value::String)))
        .collect())
}

/// `POST /api/v1/aliasexecution`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Fault> {
    shared.wait_at_hold(AliasHold::BeforeRecording).await;
    let request = validate(parse_body(&body)?)?;
    let name = field(&request, "name");
    if name.is_empty() {
        return Err(Fault::bad_request("Alias execution \"name\" is required"));
    }
    let format = field(&request, "format");
    let command = field(&request, "command");

    // Looked up by name only: the first alias with that name, whatever its pack.
    let alias = shared
        .state()
        .aliases
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
        .cloned();
    let alias = alias.ok_or_else(|| {
        Fault::not_found(format!(
            "Unable to find the ActionAliasDB instance. {{'name': {}}}",
            super::python::py_str_repr(name)
        ))
    })?;
    if !aliases::is_enabled(&alias) {
        return Err(Fault::bad_request(format!(
            "Action alias with name \"{name}\" is disabled."
        )));
    }
    if !aliases::format_strings(&alias).iter().any(|f| f == format) {
        return Err(Fault::bad_request(format!(
            "Format string \"{format}\" is not available on the alias \"{name}\""
        )));
    }
    let mut params = extract_parameters(format, command)?;
    if let Some(immutable) = alias.get("immutable_parameters").and_then(Value::as_object) {
        let overridden: Vec<&str> = immutable
            .keys()
            .filter(|k| params.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !overridden.is_empty() {
            return Err(Fault::bad_request(format!(
                "Immutable arguments cannot be overriden: {}",
                overridden.join(",")
            )));
        }
        params.extend(immutable.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    let action_ref = alias
        .get("action_ref")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (action_pack, action_name) = action_ref.split_once('.').unwrap_or(("", &action_ref));
    let now = SystemTime::now();
    let id = ids::object_id();
    let request_value = Value::Object(request.clone());
    let execution = {
        let state = shared.state();
        if state.missing_actions.contains(&action_ref) {
            return Err(Fault::not_found(format!(
                "Action with ref \"{action_ref}\" not found "
            )));
        }
        let denied = state.rbac
            && state
                .users
                .get(&caller.user)
                .is_some_and(|u| u.execute_denied);
        if denied {
            return Err(Fault::forbidden(format!(
                "User \"{}\" doesn't have required permission \"action_execute\" on resource \"action:{action_pack}:{action_name}\"",
                caller.user
            )));
        }
        let runner = state.runner_for(&action_ref);
        let started = ids::iso8601(now);
        let route = route_of(&request_value);
        json!({
            "id": id,
            "action": {
                "ref": action_ref, "name": action_name, "pack": action_pack,
                "uid": format!("action:{action_pack}:{action_name}"), "runner_type": runner,
            },
            "runner": { "name": runner },
            "liveaction": {
                "id": ids::object_id(), "action": action_ref, "parameters": params,
                "notify": { "on-complete": {
                    "routes": [route],
                    "data": {
                        "user": request.get("user").cloned().unwrap_or(Value::Null),
                        "source_channel": request.get("source_channel").cloned().unwrap_or(Value::Null),
                        "source_context": request.get("source_context").cloned().unwrap_or(Value::Null),
                    },
                }},
            },
            "status": "requested",
            "start_timestamp": started,
            "parameters": params,
            "context": {
                "action_alias_ref": { "id": alias.get("id").cloned().unwrap_or(Value::Null), "name": name },
                "api_user": request.get("user").cloned().unwrap_or(Value::Null),
                "user": caller.user,
                "source_channel": request.get("source_channel").cloned().unwrap_or(Value::Null),
            },
            "result": {},
            "web_url": format!("{}/#/history/{id}/general", shared.webui_url),
            "log": [{ "status": "requested", "timestamp": started }],
        })
    };
    shared.state().executions.push(RecordedExecution {
        id: id.clone(),
        request: request_value,
        credential: caller.credential.clone(),
        user: caller.user.clone(),
        execution: execution.clone(),
        started_at: now,
    });
    shared.publish_execution("st2.execution__create", &execution);
    if action_ref == super::inquiries::ASK_ACTION {
        super::inquiries::start_later(shared.clone(), id.clone());
    } else {
        super::lifecycle::start_later(shared.clone(), id.clone());
    }

    // Recorded and started: a client that goes away now leaves the execution running.
    shared.wait_at_hold(AliasHold::AfterRecording).await;
    let mut body = Map::new();
    body.insert("execution".into(), execution.clone());
    body.insert("actionalias".into(), alias.clone());
    if let Some(ack) = alias
        .get("ack")
        .and_then(Value::as_object)
        .filter(|a| !a.is_empty())
    {
        let roots = [
            Root {
                name: "execution",
                value: &execution,
                class: Some("st2common.models.api.execution.ActionExecutionAPI"),
            },
            Root {
                name: "actionalias",
                value: &alias,
                class: Some("st2common.models.api.action.ActionAliasAPI"),
            },
        ];
        if let Some(format) = ack.get("format") {
            let format = super::python::py_str(format);
            let message = match template::render(&format, &roots, Undefined::Strict) {
                Ok(m) => m,
                Err(RenderError::Undefined(e)) => {
                    format!("Cannot render \"format\" in field \"ack\" for alias. {e}")
                }
                // Anything but UndefinedError escapes the controller: the execution exists,
                // the caller gets a 500.
                Err(RenderError::Template(_)) => return Err(Fault::internal()),
            };
            body.insert("message".into(), Value::String(message));
        }
        if let Some(extra) = ack.get("extra") {
            let extra = match template::render_value(extra, &roots, Undefined::Strict) {
                Ok(v) => v,
                Err(RenderError::Undefined(e)) => Value::String(format!(
                    "Cannot render \"extra\" in field \"ack\" for alias. {e}"
                )),
                Err(RenderError::Template(_)) => return Err(Fault::internal()),
            };
            body.insert("extra".into(), extra);
        }
    }
    Ok((StatusCode::CREATED, Json(Value::Object(body))).into_response())
}

/// `GET /api/v1/executions/{id}`.
pub(crate) async fn get_one(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Fault> {
    let state = shared.state();
    state
        .executions
        .iter()
        .find(|e| e.id == id)
        .map(|e| Json(e.execution.clone()))
        .ok_or_else(|| Fault::not_found(format!("Unable to identify resource with id \"{id}\".")))
}

/// Ref of the notify rule for a route: stock `chatops.notify` serves `hubot` and
/// `chatops.notify-errbot` serves `errbot`; any other route is served by the rule of the pack
/// st2-matrix ships (`stackstorm/st2_matrix`), `st2_matrix.notify_<route>`.
pub(crate) fn rule_ref(route: &str) -> String {
    match route {
        "hubot" => "chatops.notify".into(),
        "errbot" => "chatops.notify-errbot".into(),
        other => format!("st2_matrix.notify_{other}"),
    }
}

/// The route the rule's `post_result` announces on: `chatops.notify` passes no `route`.
fn announcement_route(route: &str) -> String {
    if route == "hubot" {
        "chatops".into()
    } else {
        route.to_owned()
    }
}

fn rule_json(route: &str, enabled: bool) -> Value {
    let rule_ref = rule_ref(route);
    let (pack, name) = rule_ref.split_once('.').unwrap_or(("chatops", &rule_ref));
    let digest = sha2::Sha256::digest(rule_ref.as_bytes());
    let id: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let mut parameters = json!({
        "channel": "{{trigger.data.source_channel}}",
        "user": "{{trigger.data.user}}",
        "execution_id": "{{trigger.execution_id}}",
        "context": "{{trigger.data.source_context}}",
    });
    if route != "hubot" {
        parameters["route"] = json!("{{trigger.route}}");
    }
    json!({
        "id": id,
        "uid": format!("rule:{pack}:{name}"),
        "ref": rule_ref,
        "name": name,
        "pack": pack,
        "description": "Notification rule to send results of action executions to stream for chatops",
        "enabled": enabled,
        "trigger": { "type": "core.st2.generic.notifytrigger", "ref": "core.st2.generic.notifytrigger", "parameters": {} },
        "criteria": { "trigger.route": { "pattern": route, "type": "equals" } },
        "action": { "ref": "chatops.post_result", "parameters": parameters },
        "context": {},
        "tags": [],
        "type": { "ref": "standard", "parameters": {} },
        "metadata_file": format!("rules/{}.yaml", name.replace('-', "_")),
    })
}

/// `GET /api/v1/rules/{ref_or_id}`: only the notify rules exist in the double.
pub(crate) async fn get_rule(
    State(shared): State<Arc<Shared>>,
    Path(ref_or_id): Path<String>,
) -> Result<Json<Value>, Fault> {
    let state = shared.state();
    state
        .notify_rules
        .iter()
        .filter(|(_, s)| **s != RuleState::Absent)
        .map(|(route, s)| rule_json(route, *s == RuleState::Enabled))
        .find(|r| r["ref"] == ref_or_id.as_str() || r["id"] == ref_or_id.as_str())
        .map(Json)
        .ok_or_else(|| {
            Fault::not_found(format!(
                "Resource with a reference or id \"{ref_or_id}\" not found"
            ))
        })
}

/// The route and data st2's notifier would put into the `core.st2.generic.notifytrigger` of
/// a completed execution: its `notify.on-complete` (alias executions get one from
/// `_get_notify_field`, API executions carry what the caller sent). The first route only:
/// the bridge has one, and a `null` route (an alias execution without
/// `notification_route`) matches no rule.
pub(crate) fn notify_of(execution: &Value) -> Option<(String, Value)> {
    let on_complete = execution.pointer("/liveaction/notify/on-complete")?;
    let route = on_complete
        .get("routes")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .find(|r| !r.is_empty())?
        .to_owned();
    let data = on_complete
        .get("data")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Some((route, data))
}

/// Announces `payload` on `st2.announcement__<route>`; returns the number of listeners.
pub(crate) fn announce(shared: &Shared, route: &str, payload: Value) -> usize {
    let data = json!({ "payload": payload, "trace_context": { "id_": null, "trace_tag": null } });
    shared.publish(format!("st2.announcement__{route}"), &data)
}

/// Finishes an execution and plays st2's notification pipeline.
pub(crate) fn finish(shared: &Shared, id: &str, status: &str, result: Value) -> FinishOutcome {
    let now = SystemTime::now();
    let (execution, alias, rule) = {
        let mut state = shared.state();
        let Some(record) = state.executions.iter_mut().find(|e| e.id == id) else {
            panic!("St2Double::finish_execution: no execution with id {id}");
        };
        let elapsed = now
            .duration_since(record.started_at)
            .unwrap_or_default()
            .as_secs_f64();
        let ex = &mut record.execution;
        ex["status"] = json!(status);
        ex["result"] = result;
        ex["end_timestamp"] = json!(ids::iso8601(now));
        ex["elapsed_seconds"] = json!((elapsed * 1e6).round() / 1e6);
        if let Some(log) = ex["log"].as_array_mut() {
            log.push(json!({ "status": status, "timestamp": ids::iso8601(now) }));
        }
        let execution = record.execution.clone();
        let alias_id = execution.pointer("/context/action_alias_ref/id").cloned();
        let alias = state
            .aliases
            .iter()
            .find(|a| alias_id.as_ref().is_some_and(|id| a.get("id") == Some(id)))
            .cloned();
        let rule = notify_of(&execution).map(|(r, data)| {
            let s = state
                .notify_rules
                .get(&r)
                .copied()
                .unwrap_or(RuleState::Absent);
            (r, s, data)
        });
        (execution, alias, rule)
    };
    shared.publish_execution("st2.execution__update", &execution);

    let mut outcome = FinishOutcome {
        execution: execution.clone(),
        event: None,
        payload: None,
        delivered_to: 0,
        skipped: None,
    };
    let (route, data) = match rule {
        None => {
            outcome.skipped = Some("the execution has no notification route".into());
            return outcome;
        }
        Some((route, RuleState::Absent, _)) => {
            outcome.skipped = Some(format!(
                "no rule {} matches route {route}",
                rule_ref(&route)
            ));
            return outcome;
        }
        Some((route, RuleState::Disabled, _)) => {
            outcome.skipped = Some(format!("rule {} is disabled", rule_ref(&route)));
            return outcome;
        }
        Some((route, RuleState::Enabled, data)) => (route, data),
    };
    let formatted = match format_execution_result(alias.as_ref(), &execution) {
        Ok(Some(f)) => f,
        Ok(None) => {
            outcome.skipped = Some("the alias disables result output".into());
            return outcome;
        }
        Err(e) => {
            outcome.skipped = Some(format!("chatops.post_result failed: {e}"));
            return outcome;
        }
    };
    // The rule's parameters: `{{trigger.data.source_channel}}`, `{{trigger.data.user}}`, …
    let data_field = |k: &str| data.get(k).cloned().unwrap_or(Value::Null);
    let payload = json!({
        "channel": data_field("source_channel"),
        "message": formatted.message,
        "user": data_field("user"),
        "whisper": false,
        "extra": formatted.extra.unwrap_or_else(|| json!({})),
        "context": data_field("source_context"),
    });
    let route = announcement_route(&route);
    outcome.delivered_to = announce(shared, &route, payload.clone());
    outcome.event = Some(format!("st2.announcement__{route}"));
    outcome.payload = Some(payload);
    outcome
}
