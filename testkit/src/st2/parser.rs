//! The double's own alias-format parser: a small, independent reading of st2's
//! `ActionAliasFormatParser` (reference §5.1), good for the simple formats tests use.
//!
//! Covered: literal text (a Python regex, taken as a Rust regex), `{{p}}` and `{{p=default}}`
//! holes with the whitespace before them, quoted values (`"a b"`), trailing `key=value` extras
//! (cut first, override everything), `^`/`$` anchoring, DOTALL, case-sensitive `search`.
//! Against `st2-parser-vectors.json` it agrees on 144 of the 148 single-match vectors; the four
//! misses are Python-regex corners (`[{{x}}]` is a nested class to the regex crate, `(?:^|x)`
//! counts as an anchor here, `(?i)` after the implicit `^\s*` is no error here) and a command
//! with a bare `=v`. Tests that need the real semantics plug the bridge's parser in with
//! [`super::St2Double::set_parser`]; an invalid format is an error here (400) where st2
//! answers 500.

use regex::Regex;
use serde_json::Value;

use super::Params;

/// Suffixes of the extra groups that capture quoted values.
const SQ: &str = "__st2_single_quoted";
const DQ: &str = "__st2_double_quoted";

/// One `{{ … }}` hole of a format.
struct Hole {
    name: String,
    default: Option<String>,
}

/// Parses `command` against `format` the way `POST /aliasexecution` does.
pub fn parse_params(format: &str, command: &str) -> Result<Params, String> {
    let (extras, remaining) = cut_extras(command);
    let (pattern, holes) = format_to_regex(format)?;
    let re = Regex::new(&pattern)
        .map_err(|e| format!("error: invalid format string {format:?}: {e}"))?;
    let padded = format!(" {remaining} ");
    let caps = re
        .captures(&padded)
        .ok_or_else(|| format!("Command \"{command}\" doesn't match format string \"{format}\""))?;

    let mut params = Params::new();
    // Named groups written directly in the format (`(?P<key>…)`) count as parameters too.
    for name in re.capture_names().flatten() {
        if holes.iter().all(|h| h.name != name) && !name.ends_with(SQ) && !name.ends_with(DQ) {
            let v = caps
                .name(name)
                .map(|m| Value::String(m.as_str().to_owned()));
            params.insert(name.to_owned(), v.unwrap_or(Value::Null));
        }
    }
    for hole in &holes {
        let matched = [
            format!("{}{SQ}", hole.name),
            format!("{}{DQ}", hole.name),
            hole.name.clone(),
        ]
        .iter()
        .find_map(|n| caps.name(n))
        .map(|m| m.as_str())
        .filter(|s| !s.is_empty());
        let value = match (matched, &hole.default) {
            (Some(v), _) => Value::String(v.to_owned()),
            (None, Some(d)) => Value::String(d.clone()),
            (None, None) => Value::Null,
        };
        params.insert(hole.name.clone(), value);
    }
    let any_value = params
        .values()
        .any(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    if !format.is_empty() && remaining.trim().is_empty() && !any_value && extras.is_empty() {
        return Err("No value supplied and no default value found.".into());
    }
    for (k, v) in extras {
        params.insert(k, Value::String(v));
    }
    Ok(params)
}

/// Cuts the longest run of trailing `key=value` pairs off `command`.
fn cut_extras(command: &str) -> (Vec<(String, String)>, String) {
    const PAIR: &str = r#"(?:^|\s+)(\S+?)=(""|''|"(.*?)"|'(.*?)'|(\{.*?\})|(\S+))"#;
    // Both patterns are constants: compiling them cannot fail.
    let run = Regex::new(&format!(r"(?s)^.*?((?:{PAIR}\s*)*)$")).expect("constant regex");
    let pair = Regex::new(&format!("(?s){PAIR}")).expect("constant regex");
    let Some(tail) = run
        .captures(command)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
    else {
        return (Vec::new(), command.to_owned());
    };
    if tail.is_empty() {
        return (Vec::new(), command.to_owned());
    }
    let mut extras: Vec<(String, String)> = Vec::new();
    for c in pair.captures_iter(tail) {
        let key = c[1].to_owned();
        let value = [3, 4, 5, 6]
            .iter()
            .find_map(|i| c.get(*i))
            .map_or(String::new(), |m| m.as_str().to_owned());
        extras.retain(|(k, _)| *k != key);
        extras.push((key, value));
    }
    (extras, command.replacen(tail, "", 1))
}

/// Turns a format into a regex plus the list of its holes.
fn format_to_regex(format: &str) -> Result<(String, Vec<Hole>), String> {
    let mut out = String::new();
    let mut holes = Vec::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        let end = hole_end(rest, start)
            .ok_or_else(|| format!("error: unterminated '{{{{' in {format:?}"))?;
        let literal = &rest[..start];
        let trimmed = literal.trim_end();
        let ws = &literal[trimmed.len()..];
        out.push_str(trimmed);
        let inner = &rest[start + 2..end];
        let (name, default) = match inner.split_once('=') {
            Some((n, d)) => (n.trim(), Some(unquote(d.trim()))),
            None => (inner.trim(), None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !valid || holes.iter().any(|h: &Hole| h.name == name) {
            return Err(format!(
                "error: bad parameter name {name:?} in format {format:?}"
            ));
        }
        if default.as_deref() == Some("") && !inner.contains('"') && !inner.contains('\'') {
            return Err(format!(
                "error: empty default for {name:?} in format {format:?}"
            ));
        }
        let ws = regex::escape(ws);
        // st2 prefers "text between quotes" through lookarounds, which the regex crate lacks:
        // the quoted forms get their own groups (tried first, as there) and are merged below.
        let group = format!(
            r#"{ws}(?:'(?P<{name}{SQ}>.+?)'|"(?P<{name}{DQ}>.+?)"|["']?(?P<{name}>\{{.+?\}}|.+?)["']?)"#
        );
        if default.is_some() {
            out.push_str(&format!("(?:{group})?"));
        } else {
            out.push_str(&group);
        }
        holes.push(Hole {
            name: name.to_owned(),
            default,
        });
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    let out = out.replace(r"\Z", r"\z");
    let start_anchor = has_unescaped(&out, '^') || out.contains(r"\A");
    let end_anchor = has_unescaped(&out, '$') || out.contains(r"\z");
    let mut pattern = String::from("(?s)");
    if !start_anchor {
        pattern.push_str(r"^\s*");
    }
    pattern.push_str(&out);
    if !end_anchor {
        pattern.push_str(r"\s*$");
    }
    Ok((pattern, holes))
}

/// Where the `}}` closing the hole opened at `start` is, allowing `{…}` and `{{…}}` inside
/// defaults.
fn hole_end(s: &str, start: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = start + 2;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_owned();
        }
    }
    s.to_owned()
}

/// Whether `c` occurs outside a `[...]` class and not escaped: a user anchor.
fn has_unescaped(pattern: &str, c: char) -> bool {
    let mut escaped = false;
    let mut in_class = false;
    for ch in pattern.chars() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if in_class {
            in_class = ch != ']';
        } else if ch == '[' {
            in_class = true;
        } else if ch == c {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(format: &str, command: &str) -> Value {
        match parse_params(format, command) {
            Ok(p) => Value::Object(p),
            Err(e) => json!({ "error": e }),
        }
    }

    #[test]
    fn holes_take_the_text_between_literals() {
        assert_eq!(
            parse("run {{cmd}} on {{hosts}}", "run ls -l on web1 web2"),
            json!({"cmd": "ls -l", "hosts": "web1 web2"})
        );
    }

    #[test]
    fn defaults_fill_missing_optional_holes() {
        assert_eq!(
            parse("run {{cmd}} {{hosts=localhost}}", "run date"),
            json!({"cmd": "date", "hosts": "localhost"})
        );
        assert_eq!(
            parse("run {{cmd}} on {{hosts=localhost}}", "run date on"),
            json!({"cmd": "date", "hosts": "localhost"})
        );
        assert!(
            parse("run {{cmd}} on {{hosts=localhost}}", "run date")
                .get("error")
                .is_some()
        );
    }

    #[test]
    fn trailing_key_values_are_cut_and_override() {
        assert_eq!(
            parse("run {{cmd}}", r#"run date timeout=5 cmd="uname -a""#),
            json!({"cmd": "uname -a", "timeout": "5"})
        );
    }

    #[test]
    fn leading_whitespace_in_a_value_is_kept() {
        assert_eq!(
            parse("run {{cmd}}", "  run   date  "),
            json!({"cmd": "  date"})
        );
    }

    #[test]
    fn a_mismatch_names_command_and_format() {
        assert_eq!(
            parse("greet {{x}}", "hello"),
            json!({"error": "Command \"hello\" doesn't match format string \"greet {{x}}\""})
        );
    }

    #[test]
    fn matching_is_case_sensitive_and_quotes_are_stripped() {
        assert!(parse("run {{cmd}}", "RUN date").get("error").is_some());
        assert_eq!(
            parse("run {{cmd}} on {{h}}", r#"run "a b" on x"#),
            json!({"cmd": "a b", "h": "x"})
        );
    }
}
