//! Action aliases: how they are stored, listed (`GET /api/v1/actionalias`), fetched by ref or
//! id, and summarised by the help endpoint (`GET /api/v1/actionalias/help`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};
use st2_alias::pyre;

use super::http::{Caller, Fault, int_param};
use super::ids;
use super::state::Shared;

/// Completes an alias as StackStorm would return it: `id`, `uid`, `ref`, `enabled`, and
/// `metadata_file`; drops the fixture-only `source_file`.
pub(crate) fn normalise(mut alias: Value) -> Value {
    let Some(map) = alias.as_object_mut() else {
        return alias;
    };
    let pack = map
        .get("pack")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    map.entry("pack")
        .or_insert_with(|| Value::String(pack.clone()));
    map.entry("id")
        .or_insert_with(|| Value::String(ids::object_id()));
    map.entry("uid")
        .or_insert_with(|| Value::String(format!("action_alias:{pack}:{name}")));
    map.entry("ref")
        .or_insert_with(|| Value::String(format!("{pack}.{name}")));
    map.entry("enabled").or_insert(Value::Bool(true));
    map.entry("formats")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(source) = map.remove("source_file") {
        let file = source
            .as_str()
            .and_then(|s| s.rsplit_once("aliases/").map(|(_, f)| f.to_owned()));
        if let Some(file) = file {
            map.entry("metadata_file")
                .or_insert_with(|| Value::String(format!("aliases/{file}")));
        }
    }
    alias
}

fn text<'a>(alias: &'a Value, field: &str) -> &'a str {
    alias.get(field).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn is_enabled(alias: &Value) -> bool {
    alias
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// `(display, representations)` of one format entry (st2's `normalise_alias_format_string`).
pub(crate) fn display_and_representations(format: &Value) -> (Option<String>, Vec<String>) {
    match format {
        Value::String(s) => (Some(s.clone()), vec![s.clone()]),
        Value::Object(o) => {
            let display = o.get("display").and_then(Value::as_str).map(str::to_owned);
            let reps = match o.get("representation") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            (display, reps)
        }
        _ => (None, Vec::new()),
    }
}

/// Every string the server accepts as `format` for this alias.
pub(crate) fn format_strings(alias: &Value) -> Vec<String> {
    alias
        .get("formats")
        .and_then(Value::as_array)
        .map(|formats| {
            formats
                .iter()
                .flat_map(|f| display_and_representations(f).1)
                .collect()
        })
        .unwrap_or_default()
}

/// Default order: pack, then name.
fn sorted(aliases: &[Value]) -> Vec<Value> {
    let mut all = aliases.to_vec();
    all.sort_by(|a, b| (text(a, "pack"), text(a, "name")).cmp(&(text(b, "pack"), text(b, "name"))));
    all
}

/// st2's `validate_limit_query_param`: `Some(n)` = page size, `None` = everything.
pub(crate) fn validate_limit(limit: i64, admin: bool, max: i64) -> Result<Option<usize>, Fault> {
    match limit {
        -1 if admin => Ok(None),
        -1 => Err(Fault::forbidden(
            "Administrator access required to be able to specify limit=-1 and retrieve all the records",
        )),
        l if l <= -2 => Err(Fault::bad_request(format!(
            "Limit, \"{l}\" specified, must be a positive number."
        ))),
        0 => Err(Fault::bad_request(
            "Limit, \"0\" specified, must be a positive number or -1 for full result set.",
        )),
        l if l > max && !admin => Err(Fault::forbidden(format!(
            "Limit \"{l}\" specified, maximum value is \"{max}\""
        ))),
        l => Ok(Some(l as usize)),
    }
}

/// `GET /api/v1/actionalias`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Fault> {
    let limit = int_param(&query, "limit")?.unwrap_or(100);
    let offset = int_param(&query, "offset")?.unwrap_or(0);
    let state = shared.state();
    let limit = validate_limit(limit, state.is_admin(&caller.user), state.max_page_size)?;
    if offset >= 1 << 31 {
        return Err(Fault::bad_request(format!(
            "Offset \"{offset}\" specified is more than 32-bit int"
        )));
    }
    let include: Vec<&str> = list_param(&query, "include_attributes");
    let exclude: Vec<&str> = list_param(&query, "exclude_attributes");
    if !include.is_empty() && !exclude.is_empty() {
        return Err(Fault::bad_request(
            "exclude_fields and include_fields arguments are mutually exclusive. You need to provide either one or another, but not both.",
        ));
    }
    let mut all: Vec<Value> = sorted(&state.aliases)
        .into_iter()
        .filter(|a| {
            ["name", "pack"].iter().all(|f| match query.get(*f) {
                Some(want) if !want.is_empty() => text(a, f) == want,
                _ => true,
            })
        })
        .collect();
    drop(state);
    if let Some(sort) = query.get("sort").filter(|s| !s.is_empty()) {
        sort_by_keys(&mut all, sort);
    }
    let total = all.len();
    // Python slicing: a negative offset counts from the end (clamped here).
    let start = if offset < 0 {
        total.saturating_sub(offset.unsigned_abs() as usize)
    } else {
        (offset as usize).min(total)
    };
    let end = limit.map_or(total, |l| (start + l).min(total));
    let page: Vec<Value> = all[start..end]
        .iter()
        .map(|a| project(a, &include, &exclude))
        .collect();
    let mut response = Json(Value::Array(page)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    if let Some(l) = limit {
        headers.insert("x-limit", HeaderValue::from(l));
    }
    Ok(response)
}

fn list_param<'a>(query: &'a HashMap<String, String>, name: &str) -> Vec<&'a str> {
    query
        .get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `?sort=-name,pack`: supported keys are `name`, `pack`, `id`; others are skipped.
fn sort_by_keys(all: &mut [Value], sort: &str) {
    let keys: Vec<(bool, &str)> = sort
        .split(',')
        .map(|k| match k.strip_prefix('-') {
            Some(k) => (true, k),
            None => (false, k.strip_prefix('+').unwrap_or(k)),
        })
        .filter(|(_, k)| matches!(*k, "name" | "pack" | "id"))
        .collect();
    if keys.is_empty() {
        return;
    }
    all.sort_by(|a, b| {
        for (desc, k) in &keys {
            let ord = text(a, k).cmp(text(b, k));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// `include_attributes` keeps the listed fields plus `id` and `ref`; `exclude_attributes`
/// drops the listed ones.
fn project(alias: &Value, include: &[&str], exclude: &[&str]) -> Value {
    let Some(map) = alias.as_object() else {
        return alias.clone();
    };
    let out: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            if !include.is_empty() {
                include.contains(&k) || k == "id" || k == "ref"
            } else {
                !exclude.contains(&k)
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(out)
}

/// Looks an alias up the way `_get_by_ref_or_id` does: a dot means ref, else id.
pub(crate) fn find_by_ref_or_id<'a>(aliases: &'a [Value], ref_or_id: &str) -> Option<&'a Value> {
    if let Some((pack, name)) = ref_or_id.split_once('.') {
        aliases
            .iter()
            .find(|a| text(a, "pack") == pack && text(a, "name") == name)
    } else {
        aliases.iter().find(|a| text(a, "id") == ref_or_id)
    }
}

/// `GET /api/v1/actionalias/{ref_or_id}`.
pub(crate) async fn get_one(
    State(shared): State<Arc<Shared>>,
    Path(ref_or_id): Path<String>,
) -> Result<Json<Value>, Fault> {
    let state = shared.state();
    find_by_ref_or_id(&state.aliases, &ref_or_id)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            Fault::not_found(format!(
                "Resource with a reference or id \"{ref_or_id}\" not found"
            ))
        })
}

/// `GET /api/v1/actionalias/help`.
pub(crate) async fn help(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Fault> {
    let limit = int_param(&query, "limit")?.unwrap_or(100);
    let offset = int_param(&query, "offset")?.unwrap_or(0);
    let pack = query.get("pack").filter(|p| !p.is_empty());
    // st2 runs Python's `re.search(filter, display, re.IGNORECASE)`, so the filter is read by
    // st2_alias's Python-compatible engine. An invalid pattern is an uncaught `re.error`: 500.
    let filter = pyre::Regex::new(
        query.get("filter").map_or("", String::as_str),
        pyre::FLAG_IGNORECASE,
    )
    .map_err(|_| Fault::internal())?;
    let mut cache = pyre::Cache::new();
    let aliases = sorted(&shared.state().aliases);
    let mut helpstrings = Vec::new();
    let mut count: i64 = 0;
    for alias in aliases.iter().filter(|a| is_enabled(a)) {
        if pack.is_some_and(|p| text(alias, "pack") != p) {
            continue;
        }
        let formats = alias
            .get("formats")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for format in &formats {
            let Some(display) = display_and_representations(format)
                .0
                .filter(|d| !d.is_empty())
            else {
                continue;
            };
            let chars: Vec<char> = display.chars().collect();
            let mut budget = pyre::DEFAULT_STEP_LIMIT;
            // Running out of steps (Python has no limit) counts as no match.
            if !matches!(filter.search(&chars, &mut cache, &mut budget), Ok(Some(_))) {
                continue;
            }
            // The window logic of `generate_helpstring_result`, kept as written: negative
            // values fall through every branch and behave as 0.
            let skip = (offset == 0 && limit > 0 && count >= limit)
                || (offset > 0 && limit == 0 && count < offset)
                || (offset > 0 && limit > 0 && (count < offset || count >= offset + limit));
            count += 1;
            if skip {
                continue;
            }
            helpstrings.push(json!({
                "pack": alias.get("pack").cloned().unwrap_or(Value::Null),
                "display": display,
                "description": alias.get("description").cloned().unwrap_or(Value::Null),
            }));
        }
    }
    Ok((
        StatusCode::OK,
        Json(json!({ "available": count, "helpstrings": helpstrings })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_fills_ids_the_way_st2_shows_them() {
        let a = normalise(
            json!({"name": "greet", "pack": "hello_st2", "action_ref": "hello_st2.greet",
            "formats": ["greet {{greeting}}"], "source_file": "StackStorm/st2:contrib/hello_st2/aliases/alias1.yaml"}),
        );
        assert_eq!(a["uid"], "action_alias:hello_st2:greet");
        assert_eq!(a["ref"], "hello_st2.greet");
        assert_eq!(a["metadata_file"], "aliases/alias1.yaml");
        assert_eq!(a["id"].as_str().map(str::len), Some(24));
        assert!(a.get("source_file").is_none());
    }

    #[test]
    fn format_strings_cover_plain_strings_and_representations() {
        let a = json!({"formats": ["a {{x}}", {"display": "b <y>", "representation": ["b {{y}}", "bb {{y}}"]},
            {"display": "only display"}, {"representation": "c {{z}}"}]});
        assert_eq!(
            format_strings(&a),
            vec!["a {{x}}", "b {{y}}", "bb {{y}}", "c {{z}}"]
        );
    }
}
