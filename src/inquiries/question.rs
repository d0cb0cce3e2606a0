//! What an inquiry asks, read from its JSON schema, and how people answer it: the question's
//! text, the form of answer it allows (✅/❌, a poll, `key=value`), and the response built from
//! an answer.
//!
//! StackStorm validates responses with Draft-4 keywords but Draft-3 `properties` (each carries
//! `required: true`), so both `required` styles are read. The bridge never validates: it sends
//! what the person gave and shows StackStorm's verdict.

use serde_json::{Map, Value};

use crate::{matrix::poll::Choice, st2::types::Inquiry};

/// StackStorm's default schema title (`core.ask`), not worth showing.
const DEFAULT_TITLE: &str = "response_data";
/// Polls have 1–20 answers (MSC3381).
const MAX_POLL_ANSWERS: usize = 20;

/// The answers an inquiry's schema allows from a click.
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    /// One boolean property: ✅ answers `true`, ❌ `false`.
    YesNo {
        /// The property.
        property: String,
    },
    /// One property with an `enum`: a poll, one answer per value.
    Choice {
        /// The property.
        property: String,
        /// The allowed values, in order (poll answer `i` is `values[i]`).
        values: Vec<Value>,
    },
    /// Anything else: `!st2 respond` only.
    Text,
}

/// The properties of `schema` (empty when it has none).
fn properties(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether property `name` (its schema `property`) is required, in either Draft's style.
fn required(schema: &Value, name: &str, property: &Value) -> bool {
    property.get("required").and_then(Value::as_bool) == Some(true)
        || schema
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(name)))
}

/// The form of answer `schema` allows.
pub fn form(schema: &Value) -> Form {
    let props = properties(schema);
    let mut iter = props.iter();
    let (Some((name, property)), None) = (iter.next(), iter.next()) else {
        return Form::Text;
    };
    if let Some(values) = property.get("enum").and_then(Value::as_array)
        && !values.is_empty()
        && values.len() <= MAX_POLL_ANSWERS
    {
        return Form::Choice {
            property: name.clone(),
            values: values.clone(),
        };
    }
    if property.get("type").and_then(Value::as_str) == Some("boolean") {
        return Form::YesNo {
            property: name.clone(),
        };
    }
    Form::Text
}

/// A value as people read it: strings bare, everything else as JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The poll's answers for a [`Form::Choice`].
pub fn choices(values: &[Value]) -> Vec<Choice> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Choice {
            id: i.to_string(),
            text: show(v),
        })
        .collect()
}

/// The question's heading line for the poll (the first property's description, else the
/// schema's).
pub fn poll_question(inquiry: &Inquiry) -> String {
    let props = properties(&inquiry.schema);
    props
        .values()
        .next()
        .and_then(|p| p.get("description").or_else(|| p.get("title")))
        .or_else(|| inquiry.schema.get("description"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| "StackStorm asks".to_owned())
}

/// The question as Markdown: what is asked, who may answer, and how. `prefix` is the command
/// prefix (e.g. `!st2`).
pub fn render(inquiry: &Inquiry, prefix: &str, origin: Option<&str>) -> String {
    let schema = &inquiry.schema;
    let mut text = format!("❓ **StackStorm asks** (inquiry `{}`", inquiry.id);
    if let Some(origin) = origin {
        text.push_str(&format!(", from `{origin}`"));
    }
    text.push(')');
    for key in ["title", "description"] {
        if let Some(s) = schema.get(key).and_then(Value::as_str)
            && !s.is_empty()
            && s != DEFAULT_TITLE
        {
            text.push_str(&format!("\n\n{}", markdown_text(s)));
        }
    }
    let props = properties(schema);
    if !props.is_empty() {
        text.push('\n');
    }
    for (name, property) in &props {
        let mut line = format!("\n- `{}`", code(name));
        let kind = property.get("type").and_then(Value::as_str);
        let mut notes: Vec<String> = Vec::new();
        match (kind, property.get("enum").and_then(Value::as_array)) {
            (_, Some(values)) => notes.push(format!(
                "one of {}",
                values
                    .iter()
                    .map(|v| format!("`{}`", code(&show(v))))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (Some("boolean"), None) => notes.push("yes/no".to_owned()),
            (Some(kind), None) => notes.push(kind.to_owned()),
            (None, None) => {}
        }
        if required(schema, name, property) {
            notes.push("required".to_owned());
        }
        if let Some(default) = property.get("default") {
            notes.push(format!("default `{}`", code(&show(default))));
        }
        if !notes.is_empty() {
            line.push_str(&format!(" ({})", notes.join(", ")));
        }
        if let Some(d) = property
            .get("description")
            .or_else(|| property.get("title"))
            .and_then(Value::as_str)
        {
            line.push_str(&format!(": {}", markdown_text(d)));
        }
        text.push_str(&line);
    }
    let mut who = Vec::new();
    if !inquiry.users.is_empty() {
        who.push(format!(
            "StackStorm users {}",
            inquiry
                .users
                .iter()
                .map(|u| format!("`{}`", code(u)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !inquiry.roles.is_empty() {
        who.push(format!(
            "roles {}",
            inquiry
                .roles
                .iter()
                .map(|r| format!("`{}`", code(r)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text.push_str("\n\n");
    if who.is_empty() {
        text.push_str("Anyone who may run commands here may answer.");
    } else {
        text.push_str(&format!(
            "Only {} may answer (answers are sent with your own StackStorm account).",
            who.join(" and ")
        ));
    }
    let example = example(&props);
    let respond = format!("`{prefix} respond {} {example}`", inquiry.id);
    text.push_str("\n\n");
    match form(schema) {
        Form::YesNo { .. } => text.push_str(&format!(
            "React ✅ for yes or ❌ for no, or type {respond}."
        )),
        Form::Choice { .. } => {
            text.push_str(&format!("Vote in the poll below, or type {respond}."))
        }
        Form::Text => text.push_str(&format!("Answer with {respond}.")),
    }
    text.push_str(
        " Replying to this message, you can leave out the id. Values are read as JSON where they parse (`true`, `3`, `[\"a\"]`), as text otherwise; quote text with spaces.",
    );
    text
}

/// A `key=value …` example for the schema's properties.
fn example(props: &Map<String, Value>) -> String {
    if props.is_empty() {
        return "key=value".to_owned();
    }
    props
        .iter()
        .map(|(name, p)| {
            let value = match (
                p.get("enum")
                    .and_then(Value::as_array)
                    .and_then(|v| v.first()),
                p.get("type").and_then(Value::as_str),
            ) {
                (Some(first), _) => show(first),
                (None, Some("boolean")) => "true".to_owned(),
                (None, Some("integer" | "number")) => "1".to_owned(),
                (None, Some("array")) => "[\"a\"]".to_owned(),
                _ => "…".to_owned(),
            };
            let value = if value.contains(char::is_whitespace) {
                format!("\"{value}\"")
            } else {
                value
            };
            format!("{name}={}", value.replace('`', "'"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text from the schema inside inline code: backticks would end it.
fn code(s: &str) -> String {
    s.replace('`', "'")
}

/// Text from the schema in running Markdown: on one line, without markup of its own.
fn markdown_text(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if matches!(c, '*' | '_' | '`' | '[' | ']' | '<' | '>' | '#' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The response for `key=value` pairs: each value read as JSON where it parses, as a string
/// otherwise (so `continue=true` is a boolean and `host=web1` a string). A property typed
/// `string` keeps the text as typed even when it would parse (`version=1.10`).
pub fn response_from_pairs(schema: &Value, pairs: &[(String, String)]) -> Value {
    let props = properties(schema);
    let mut response = Map::new();
    for (key, raw) in pairs {
        let as_string = props
            .get(key)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            == Some("string");
        let value = if as_string {
            Value::String(raw.clone())
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        };
        response.insert(key.clone(), value);
    }
    Value::Object(response)
}

/// The response a click gives: `Some` when the form allows it.
pub fn response_from_click(form: &Form, answer: &crate::prompts::Answer) -> Option<Value> {
    use crate::prompts::Answer;
    let (property, value) = match (form, answer) {
        (Form::YesNo { property }, Answer::Reaction(yes)) => (property, Value::Bool(*yes)),
        (Form::Choice { property, values }, Answer::Vote(ids)) => {
            let index: usize = ids.first()?.parse().ok()?;
            (property, values.get(index)?.clone())
        }
        _ => return None,
    };
    let mut response = Map::new();
    response.insert(property.clone(), value);
    Some(Value::Object(response))
}

/// An answer in words: `continue = true, reason = "late"`.
pub fn describe(response: &Value) -> String {
    match response.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("`{}` = `{}`", code(k), code(&v.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!("`{}`", code(&response.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::Answer;
    use serde_json::json;

    fn inquiry(schema: Value) -> Inquiry {
        Inquiry {
            id: "5f00".into(),
            route: String::new(),
            ttl: Some(1440),
            users: vec![],
            roles: vec![],
            schema,
        }
    }

    fn default_schema() -> Value {
        json!({"title": "response_data", "type": "object", "properties": {"continue": {
            "type": "boolean", "description": "Would you like to continue the workflow?", "required": true}}})
    }

    #[test]
    fn the_default_core_ask_is_a_yes_no_question() {
        let schema = default_schema();
        assert_eq!(
            form(&schema),
            Form::YesNo {
                property: "continue".into()
            }
        );
        let text = render(&inquiry(schema.clone()), "!st2", Some("examples.ask"));
        assert!(
            text.contains(
                "`continue` (yes/no, required): Would you like to continue the workflow?"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "React ✅ for yes or ❌ for no, or type `!st2 respond 5f00 continue=true`"
            ),
            "{text}"
        );
        assert!(!text.contains("response_data"), "{text}");
        assert_eq!(
            response_from_click(&form(&schema), &Answer::Reaction(false)),
            Some(json!({"continue": false}))
        );
        assert_eq!(
            response_from_click(&form(&schema), &Answer::Vote(vec!["0".into()])),
            None
        );
    }

    #[test]
    fn an_enum_is_a_poll_and_anything_else_is_typed() {
        let schema = json!({"type": "object", "properties": {"colour": {
            "type": "string", "enum": ["blue", "dark green"], "description": "Which colour?"}}});
        let f = form(&schema);
        assert!(matches!(f, Form::Choice { .. }));
        assert_eq!(
            response_from_click(&f, &Answer::Vote(vec!["1".into()])),
            Some(json!({"colour": "dark green"}))
        );
        assert_eq!(
            response_from_click(&f, &Answer::Vote(vec!["7".into()])),
            None
        );
        assert_eq!(poll_question(&inquiry(schema.clone())), "Which colour?");
        let two = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "integer"}, "b": {"type": "string"}}});
        assert_eq!(form(&two), Form::Text);
        let text = render(&inquiry(two), "!st2", None);
        assert!(text.contains("- `a` (integer, required)"), "{text}");
        assert!(
            text.contains("Answer with `!st2 respond 5f00 a=1 b=…`"),
            "{text}"
        );
    }

    #[test]
    fn typed_values_are_json_where_they_parse_and_strings_stay_strings() {
        let schema = json!({"properties": {"version": {"type": "string"}}});
        let pairs = [
            ("continue".to_owned(), "true".to_owned()),
            ("n".to_owned(), "3".to_owned()),
            ("host".to_owned(), "web1".to_owned()),
            ("version".to_owned(), "1.10".to_owned()),
        ];
        assert_eq!(
            response_from_pairs(&schema, &pairs),
            json!({"continue": true, "n": 3, "host": "web1", "version": "1.10"})
        );
        assert_eq!(describe(&json!({"continue": true})), "`continue` = `true`");
    }

    #[test]
    fn who_may_answer_is_said() {
        let mut i = inquiry(default_schema());
        i.users = vec!["alice".into()];
        assert!(render(&i, "!st2", None).contains("Only StackStorm users `alice` may answer"));
    }
}
