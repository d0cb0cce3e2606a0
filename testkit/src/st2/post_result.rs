//! What `chatops.format_execution_result` makes of a finished execution: the message that the
//! `chatops.post_result` workflow announces.
//!
//! With an alias `result.format` the message is that template (lenient undefined); without one
//! it is st2's `templates/default.j2`, ported by hand below because it leans on Python objects
//! (`six`, API model attributes) that no Rust Jinja engine has. The port reproduces Jinja2's output
//! byte for byte (checked against Jinja2 3.1 with st2's `trim_blocks`/`lstrip_blocks`), quirks
//! included: a multi-line value prints as `key :       ` followed by the trimmed text on the
//! next line, and `http-request` results start with two stray spaces.

use serde_json::{Map, Value};

use super::python::{py_float, py_str, py_truthy};
use super::template::{self, Root, Undefined};

/// The formatted result: `None` when the alias says `result.enabled: false` (nothing posted).
pub(crate) struct Formatted {
    /// The chat message.
    pub message: String,
    /// Rendered `result.extra`, if the alias has one.
    pub extra: Option<Value>,
}

/// Formats `execution` (the API object) for `alias` (if it came from one). `Ok(None)`: output
/// disabled by the alias; `Err`: the template failed, so the real workflow would fail and post
/// nothing.
pub(crate) fn format_execution_result(
    alias: Option<&Value>,
    execution: &Value,
) -> Result<Option<Formatted>, String> {
    let result_cfg = alias
        .and_then(|a| a.get("result"))
        .and_then(Value::as_object);
    let roots = [
        Root {
            name: "execution",
            value: execution,
            class: None,
        },
        Root {
            name: "alias",
            value: alias.unwrap_or(&Value::Null),
            class: Some("st2client.models.action_alias.ActionAlias"),
        },
    ];
    let mut extra = None;
    let mut custom = None;
    if let Some(cfg) = result_cfg.filter(|c| !c.is_empty()) {
        if cfg.get("enabled").is_some_and(|e| !py_truthy(e)) {
            return Ok(None);
        }
        if let Some(fmt) = cfg.get("format") {
            custom = Some(py_str(fmt));
        }
        if let Some(e) = cfg.get("extra") {
            extra = Some(
                template::render_value(e, &roots, Undefined::Strict).map_err(|e| e.to_string())?,
            );
        }
    }
    let message = match custom {
        Some(fmt) => {
            template::render(&fmt, &roots, Undefined::Lenient).map_err(|e| e.to_string())?
        }
        None => default_template(execution)?,
    };
    Ok(Some(Formatted { message, extra }))
}

/// st2's `default.j2`, by hand.
pub(crate) fn default_template(ex: &Value) -> Result<String, String> {
    let field = |k: &str| ex.get(k).unwrap_or(&Value::Null);
    let text = |v: &Value| py_str(v);
    let action_ref = ex.pointer("/action/ref").unwrap_or(&Value::Null);
    let mut out = format!(
        "\nAction {} completed.\nstatus : {}\nexecution: {}\n\n",
        text(action_ref),
        text(field("status")),
        text(field("id"))
    );
    if py_truthy(field("web_url")) {
        out.push_str(&format!("web_url: {}\n", text(field("web_url"))));
    }
    out.push('\n');
    if py_truthy(field("elapsed_seconds")) {
        let secs = field("elapsed_seconds").as_f64().unwrap_or(0.0);
        out.push_str(&format!("Took {} to complete.\n", human_time(secs)));
    }
    out.push('\n');
    let result = field("result");
    if !py_truthy(result) {
        return Ok(out);
    }
    out.push_str("result :\n--------\n");
    let runner = ex
        .pointer("/runner/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let items = |v: &Value| -> Result<Vec<(String, Value)>, String> {
        match v {
            Value::Object(m) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            other => Err(format!(
                "'{}' object has no attribute 'items'",
                py_type(other)
            )),
        }
    };
    let only = |pairs: Vec<(String, Value)>, keys: &[&str]| -> Vec<(String, Value)> {
        pairs
            .into_iter()
            .filter(|(k, v)| keys.contains(&k.as_str()) && py_truthy(v))
            .collect()
    };
    match runner {
        "http-request" => {
            out.push_str("  ");
            out.push_str(&serialize(&items(result)?, ""));
            out.push('\n');
        }
        "run-python" | "python-script" | "windows-cmd" | "windows-script" => {
            out.push_str(&serialize(
                &only(items(result)?, &["result", "stdout", "stderr", "exit_code"]),
                "",
            ));
            out.push('\n');
        }
        "remote-shell-cmd" | "remote-shell-script" => {
            for (host, value) in items(result)? {
                let inner = only(
                    items(&value)?,
                    &["stdout", "stderr", "return_code", "error"],
                );
                out.push_str(&format!("{host} : \n{}\n", serialize(&inner, "  ")));
            }
        }
        "local-shell-cmd" | "local-shell-script" => {
            out.push_str(&serialize(
                &only(
                    items(result)?,
                    &["stdout", "stderr", "return_code", "error"],
                ),
                "",
            ));
            out.push('\n');
        }
        _ => {
            if result.is_object() {
                out.push_str(&serialize(&items(result)?, ""));
            } else {
                out.push_str(&py_str(result));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// The template's `serialize` macro.
fn serialize(pairs: &[(String, Value)], prefix: &str) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        match value {
            Value::Object(map) => {
                let inner: Vec<(String, Value)> = map_pairs(map);
                out.push_str(&format!(
                    "{prefix}{key} : \n{}",
                    serialize(&inner, &format!("{prefix}  "))
                ));
            }
            Value::String(s) if s.trim().split('\n').count() > 1 => {
                out.push_str(&format!("{prefix}{key} :       \n{prefix}  {}\n", s.trim()));
            }
            other => out.push_str(&format!("{prefix}{key} : {}\n", py_str(other).trim())),
        }
    }
    out
}

fn map_pairs(map: &Map<String, Value>) -> Vec<(String, Value)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// st2's `to_human_time_from_seconds`, including its quirks (`0.5μs` for half a second, day
/// of month for days).
pub(crate) fn human_time(seconds: f64) -> String {
    if seconds == 0.0 {
        return "0s".into();
    }
    if seconds < 1.0 {
        return format!("{}\u{3bc}s", py_float(seconds));
    }
    let secs = seconds.round_ties_even() as u64;
    let (mins, s) = (secs / 60, secs % 60);
    let (hours, m) = (mins / 60, mins % 60);
    let (days_total, h) = (hours / 24, hours % 24);
    // datetime(1, 1, 1) + delta: years and day-of-month, as st2 reads them.
    let (years, day_of_year) = (days_total / 365, days_total % 365);
    let parts = [years, day_of_year % 31, h, m, s];
    let Some(first) = parts.iter().position(|p| *p != 0) else {
        return "0s".into();
    };
    let p = &parts[first..];
    match p.len() {
        1 => format!("{}s", p[0]),
        2 => format!("{}m{}s", p[0], p[1]),
        3 => format!("{}h{}m{}s", p[0], p[1], p[2]),
        4 => format!("{}d{}h{}m{}s", p[0], p[1], p[2], p[3]),
        _ => format!("{}y{}d{}h{}m{}s", p[0], p[1], p[2], p[3], p[4]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected strings below were produced by Jinja2 3.1.6 rendering st2's default.j2.

    #[test]
    fn default_template_matches_jinja_for_python_runners() {
        let ex = json!({"id": "abc", "action": {"ref": "x.y"}, "status": "succeeded",
            "runner": {"name": "python-script"},
            "result": {"exit_code": 0, "result": {"a": 1, "b": {"c": "d"}}, "stderr": "", "stdout": ""}});
        assert_eq!(
            default_template(&ex).unwrap(),
            "\nAction x.y completed.\nstatus : succeeded\nexecution: abc\n\n\n\nresult :\n--------\nresult : \n  a : 1\n  b : \n    c : d\n\n"
        );
    }

    #[test]
    fn default_template_matches_jinja_for_multiline_local_output() {
        let ex = json!({"id": "abc", "action": {"ref": "core.local"}, "status": "succeeded",
            "web_url": "https://st2/#/history/abc/general", "elapsed_seconds": 3.2,
            "runner": {"name": "local-shell-cmd"},
            "result": {"failed": false, "return_code": 0, "stderr": "", "stdout": "hello\nworld", "succeeded": true}});
        assert_eq!(
            default_template(&ex).unwrap(),
            "\nAction core.local completed.\nstatus : succeeded\nexecution: abc\n\nweb_url: https://st2/#/history/abc/general\n\nTook 3s to complete.\n\nresult :\n--------\nstdout :       \n  hello\nworld\n\n"
        );
    }

    #[test]
    fn default_template_matches_jinja_for_remote_hosts() {
        let ex = json!({"id": "abc", "action": {"ref": "core.remote"}, "status": "failed",
            "web_url": "u", "elapsed_seconds": 75, "runner": {"name": "remote-shell-cmd"},
            "result": {"web1": {"return_code": 0, "stderr": "", "stdout": "a\nb", "succeeded": true},
                       "web2": {"error": "boom", "return_code": 255, "stdout": "x"}}});
        assert_eq!(
            default_template(&ex).unwrap(),
            "\nAction core.remote completed.\nstatus : failed\nexecution: abc\n\nweb_url: u\n\nTook 1m15s to complete.\n\nresult :\n--------\nweb1 : \n  stdout :       \n    a\nb\n\nweb2 : \n  error : boom\n  return_code : 255\n  stdout : x\n\n"
        );
    }

    #[test]
    fn default_template_matches_jinja_for_other_runners() {
        let ex = json!({"id": "abc", "action": {"ref": "x.y"}, "status": "succeeded",
            "runner": {"name": "orquesta"}, "result": {"output": {"a": [1, 2], "n": null, "s": "  padded  ", "t": true}}});
        assert_eq!(
            default_template(&ex).unwrap(),
            "\nAction x.y completed.\nstatus : succeeded\nexecution: abc\n\n\n\nresult :\n--------\noutput : \n  a : [1, 2]\n  n : None\n  s : padded\n  t : True\n\n"
        );
        let plain = json!({"id": "abc", "action": {"ref": "x.y"}, "status": "succeeded",
            "runner": {"name": "orquesta"}, "result": "plain"});
        assert!(
            default_template(&plain)
                .unwrap()
                .ends_with("result :\n--------\nplain\n")
        );
    }

    #[test]
    fn human_time_keeps_st2_quirks() {
        assert_eq!(human_time(0.5), "0.5\u{3bc}s");
        assert_eq!(human_time(3.2), "3s");
        assert_eq!(human_time(3725.0), "1h2m5s");
    }
}
