//! Jinja2 for alias `ack` and `result` formats, as StackStorm renders them, on minijinja.
//!
//! The engine is minijinja; this module only sets it up the way st2 sets up Jinja2 and adds
//! what minijinja does not do the Python way:
//! - `trim_blocks` and `lstrip_blocks` on, no autoescape, one trailing newline dropped;
//!   `StrictUndefined` for `ack` and `*.extra`, default `Undefined` for `result.format`.
//! - Values print as Python's `str()` does (`True`, `None`, `['a', 'b']`, `{'k': 'v'}`), in
//!   `{{ }}`, `join` and `string`, because a chat message shows what Jinja2 printed.
//! - Python's dict and str methods (`.items()`, `.split()`, …) through minijinja-contrib.
//! - st2's own filters that alias templates use: `to_json_string`, `to_yaml_string`, and
//!   `tojson` with Python's `json.dumps` spacing.
//! - An undefined value's error carries Jinja2's message (`'cmd' is undefined`, `'dict object'
//!   has no attribute 'x'`), because st2 puts that text in the ack; minijinja only says
//!   "undefined value", so the message is rebuilt from the failing expression's path.

use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, value::Value as JValue};
use serde_json::{Map, Value};

use super::python::{py_json, py_str, py_str_repr};

/// How undefined values behave, as Jinja2's `StrictUndefined` or default `Undefined`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undefined {
    /// `StrictUndefined`: used for `ack` (aliasexecution) and for `*.extra` values.
    Strict,
    /// `Undefined`: used by `chatops.format_execution_result` for `result.format`.
    Lenient,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenderError {
    /// `jinja2.exceptions.UndefinedError`, with Jinja2's message (`'x' is undefined`).
    Undefined(String),
    /// Any other failure: syntax, unknown filter, type errors.
    Template(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Undefined(m) | RenderError::Template(m) => f.write_str(m),
        }
    }
}

/// A top-level template variable. `class` names the Python class for "has no attribute"
/// messages (st2 passes API objects, not dicts, as `execution` and `actionalias`).
pub(crate) struct Root<'a> {
    /// Variable name, e.g. `execution`.
    pub name: &'a str,
    /// Its value.
    pub value: &'a Value,
    /// Python class shown by Jinja2 when an attribute is missing; `None` for plain dicts.
    pub class: Option<&'static str>,
}

/// Renders `src` with the given variables.
pub(crate) fn render(
    src: &str,
    roots: &[Root<'_>],
    mode: Undefined,
) -> Result<String, RenderError> {
    let env = environment(mode);
    let ctx: Map<String, Value> = roots
        .iter()
        .map(|r| (r.name.to_owned(), r.value.clone()))
        .collect();
    env.render_str(src, Value::Object(ctx))
        .map_err(|e| match e.kind() {
            ErrorKind::UndefinedError => RenderError::Undefined(
                undefined_message(src, &e, roots).unwrap_or_else(|| e.to_string()),
            ),
            _ => RenderError::Template(e.to_string()),
        })
}

/// `render_values`: renders every string inside `value` (st2 renders `ack.extra` and
/// `result.extra` this way, recursing into JSON).
pub(crate) fn render_value(
    value: &Value,
    roots: &[Root<'_>],
    mode: Undefined,
) -> Result<Value, RenderError> {
    Ok(match value {
        Value::String(s) => Value::String(render(s, roots, mode)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, roots, mode))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), render_value(v, roots, mode)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// The environment st2's `get_jinja_environment` amounts to, for alias templates.
fn environment(mode: Undefined) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_undefined_behavior(match mode {
        Undefined::Strict => UndefinedBehavior::Strict,
        Undefined::Lenient => UndefinedBehavior::Lenient,
    });
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // The strict check on printing an undefined happens before the formatter is called.
    env.set_formatter(|out, _state, value| {
        if !value.is_undefined() {
            out.write_str(&py_text(value)?)?;
        }
        Ok(())
    });
    env.add_filter("string", |v: JValue| py_text(&v));
    env.add_filter("join", join);
    env.add_filter("tojson", |v: JValue| Ok::<_, Error>(py_json(&to_json(&v)?)));
    env.add_filter("to_json_string", |v: JValue| {
        Ok::<_, Error>(py_json(&to_json(&v)?))
    });
    env.add_filter("to_yaml_string", |v: JValue| {
        Ok::<_, Error>(yaml(&to_json(&v)?))
    });
    env
}

/// A template value as JSON (what the double's values all are).
fn to_json(v: &JValue) -> Result<Value, Error> {
    if v.is_undefined() {
        return Ok(Value::Null);
    }
    serde_json::to_value(v).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

/// Python's `str(value)`.
fn py_text(v: &JValue) -> Result<String, Error> {
    Ok(match v.as_str() {
        Some(s) => s.to_owned(),
        None => py_str(&to_json(v)?),
    })
}

/// Jinja2's `join`: `str()` of each item.
fn join(_state: &State, v: JValue, sep: Option<String>) -> Result<String, Error> {
    let items = v
        .try_iter()?
        .map(|i| py_text(&i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(items.join(sep.as_deref().unwrap_or("")))
}

/// Jinja2's text for the undefined value `err` is about: the failing expression's source is
/// read as a path (`a.b[0]['c']`) and walked over the roots to the first missing step.
/// `None` when the expression is not a plain path over the roots (a loop variable, a call):
/// minijinja's own message then stands.
fn undefined_message(src: &str, err: &Error, roots: &[Root<'_>]) -> Option<String> {
    let range = err.range()?;
    // minijinja's span of a nested lookup starts at its last operand (`.parameters.nope`),
    // so widen it back over the path to its root name.
    let start = src[..range.start]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_.[]'\"".contains(c)))
        .map_or(0, |i| i + src[i..].chars().next().map_or(1, char::len_utf8));
    let expr = src.get(start..range.end)?;
    let (name, steps) = parse_path(expr)?;
    let Some(root) = roots.iter().find(|r| r.name == name) else {
        // A loop or `set` variable is defined: its missing attribute is not walkable here.
        if binds(src, &name) {
            return None;
        }
        return Some(format!("{} is undefined", py_str_repr(&name)));
    };
    let (mut value, mut class) = (root.value, root.class);
    for step in steps {
        let next = match (&step, value) {
            (Step::Key(k), Value::Object(map)) => map.get(k),
            (Step::Index(i), Value::Array(items)) => {
                usize::try_from(*i).ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        match next {
            Some(v) => {
                value = v;
                class = None;
            }
            None => {
                let ty = type_repr(value, class);
                return Some(match step {
                    Step::Key(k) => format!("'{ty}' has no attribute {}", py_str_repr(&k)),
                    Step::Index(i) => format!("{ty} has no element {i}"),
                });
            }
        }
    }
    None
}

/// Whether a `{% for %}` or `{% set %}` tag of `src` binds `name`.
fn binds(src: &str, name: &str) -> bool {
    src.split("{%").skip(1).any(|tag| {
        let tag = tag.split("%}").next().unwrap_or("");
        let tag = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let targets = if let Some(rest) = tag.strip_prefix("for ") {
            rest.split(" in ").next().unwrap_or("")
        } else if let Some(rest) = tag.strip_prefix("set ") {
            rest.split('=').next().unwrap_or("")
        } else {
            return false;
        };
        targets
            .split(',')
            .any(|t| t.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace()) == name)
    })
}

/// One step of a path: `.name` / `['name']`, or `[3]`.
enum Step {
    Key(String),
    Index(i64),
}

/// `name(.attr | [int] | ['key'])*`, spaces allowed around the brackets' contents.
fn parse_path(expr: &str) -> Option<(String, Vec<Step>)> {
    let ident = |s: &str| -> (String, usize) {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        (s[..end].to_owned(), end)
    };
    let mut rest = expr.trim();
    let (name, n) = ident(rest);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    rest = &rest[n..];
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let (key, n) = ident(r);
            if key.is_empty() {
                return None;
            }
            steps.push(Step::Key(key));
            rest = &r[n..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let (inner, after) = r.split_once(']')?;
            let inner = inner.trim();
            let quoted = ['\'', '"']
                .iter()
                .find_map(|q| inner.strip_prefix(*q)?.strip_suffix(*q));
            steps.push(match quoted {
                Some(key) => Step::Key(key.to_owned()),
                None => Step::Index(inner.parse().ok()?),
            });
            rest = after;
        } else {
            return None;
        }
    }
    Some((name, steps))
}

/// Jinja2's `object_type_repr`: `None`, `dict object`, or the API object's class.
fn type_repr(v: &Value, class: Option<&'static str>) -> String {
    if let Some(c) = class {
        return format!("{c} object");
    }
    match v {
        Value::Null => "None".into(),
        Value::Bool(_) => "bool object".into(),
        Value::Number(n) if n.is_f64() => "float object".into(),
        Value::Number(_) => "int object".into(),
        Value::String(_) => "str object".into(),
        Value::Array(_) => "list object".into(),
        Value::Object(_) => "dict object".into(),
    }
}

/// `yaml.safe_dump(value, default_flow_style=False)`, approximately: block style, sorted keys,
/// plain scalars where unambiguous, single quotes otherwise.
fn yaml(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => {
                let plain = !s.is_empty()
                    && !s.starts_with([
                        ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>',
                        '\'', '"', '%', '@', '`',
                    ])
                    && !s.ends_with(' ')
                    && !s.contains(": ")
                    && !s.contains(" #")
                    && !s.contains('\n')
                    && s.parse::<f64>().is_err()
                    && !matches!(
                        s.to_lowercase().as_str(),
                        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off"
                    );
                if plain {
                    s.clone()
                } else {
                    format!("'{}'", s.replace('\'', "''"))
                }
            }
            Value::Array(a) if a.is_empty() => "[]".into(),
            Value::Object(o) if o.is_empty() => "{}".into(),
            _ => String::new(),
        }
    }
    fn block(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, item) in map {
                    out.push_str(&format!("{pad}{}:", scalar(&Value::String(k.clone()))));
                    match item {
                        Value::Object(m) if !m.is_empty() => {
                            out.push('\n');
                            block(item, indent + 2, out);
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push('\n');
                            block(item, indent, out);
                        }
                        _ => out.push_str(&format!(" {}\n", scalar(item))),
                    }
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    match item {
                        Value::Object(m) if !m.is_empty() => {
                            let mut inner = String::new();
                            block(item, indent + 2, &mut inner);
                            out.push(' ');
                            out.push_str(inner.trim_start());
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push('\n');
                            block(item, indent + 2, out);
                        }
                        _ => out.push_str(&format!(" {}\n", scalar(item))),
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    let mut out = String::new();
    block(v, 0, &mut out);
    if !matches!(v, Value::Object(m) if !m.is_empty())
        && !matches!(v, Value::Array(a) if !a.is_empty())
    {
        out.push_str("...\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases rendered by Jinja2 itself (see the file's `note`); minijinja as set up here must agree.
    #[test]
    fn renders_like_jinja2() {
        let fixture: Value =
            serde_json::from_str(include_str!("jinja-cases.json")).expect("valid fixture");
        let ctx = &fixture["context"];
        let roots = [
            Root {
                name: "execution",
                value: &ctx["execution"],
                class: None,
            },
            Root {
                name: "actionalias",
                value: &ctx["actionalias"],
                class: None,
            },
        ];
        let mut failures = Vec::new();
        for case in fixture["cases"].as_array().expect("cases") {
            let mode = if case["mode"] == "strict" {
                Undefined::Strict
            } else {
                Undefined::Lenient
            };
            let src = case["src"].as_str().expect("src");
            let got = render(src, &roots, mode);
            let expected = if let Some(ok) = case.get("ok") {
                Ok(ok.as_str().expect("ok").to_owned())
            } else {
                Err(RenderError::Undefined(
                    case["undefined"].as_str().expect("undefined").to_owned(),
                ))
            };
            if got != expected {
                failures.push(format!(
                    "{} ({}): got {got:?}, want {expected:?}",
                    case["name"], case["mode"]
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn api_objects_name_their_class_when_an_attribute_is_missing() {
        let ex = serde_json::json!({"id": "x"});
        let roots = [Root {
            name: "execution",
            value: &ex,
            class: Some("st2common.models.api.execution.ActionExecutionAPI"),
        }];
        assert_eq!(
            render("{{ execution.nope }}", &roots, Undefined::Strict),
            Err(RenderError::Undefined(
                "'st2common.models.api.execution.ActionExecutionAPI object' has no attribute 'nope'".into()
            ))
        );
    }

    #[test]
    fn values_print_as_python_str_in_output_join_and_string() {
        let v = serde_json::json!({"l": [true, null, 1.5]});
        let roots = [Root {
            name: "v",
            value: &v,
            class: None,
        }];
        assert_eq!(
            render(
                "{{ v.l }}|{{ v.l | join(',') }}|{{ v.l | string }}|{{ 'a' ~ v.l[0] }}",
                &roots,
                Undefined::Strict
            ),
            Ok("[True, None, 1.5]|True,None,1.5|[True, None, 1.5]|aTrue".into())
        );
    }

    #[test]
    fn an_undefined_name_is_named_but_a_loop_variables_attribute_is_not_guessed() {
        let v = serde_json::json!({"l": [true]});
        let roots = [Root {
            name: "v",
            value: &v,
            class: None,
        }];
        assert_eq!(
            render("{{ missing.x }}", &roots, Undefined::Lenient),
            Err(RenderError::Undefined("'missing' is undefined".into()))
        );
        assert!(matches!(
            render("{% for h in v.l %}{{ h.x }}{% endfor %}", &roots, Undefined::Strict),
            Err(RenderError::Undefined(m)) if !m.contains("'h' is undefined")
        ));
    }

    #[test]
    fn unknown_filters_and_tags_are_template_errors() {
        assert!(matches!(
            render("{{ x | frobnicate }}", &[], Undefined::Lenient),
            Err(RenderError::Template(_))
        ));
        assert!(matches!(
            render("{% frobnicate %}", &[], Undefined::Lenient),
            Err(RenderError::Template(_))
        ));
    }
}
