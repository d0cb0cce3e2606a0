//! The YAML of registration files, read into and written from [`serde_json::Value`].
//!
//! A registration is a small tree of mappings, lists and strings, and a general YAML library
//! cost ~0.35 MiB of code (and so of resident memory: the file is read at every start). This
//! reads the YAML such files are written in, by this bridge, by other bridges' generators and
//! by hand: block mappings and lists (lists indented or not), one-line flow lists and mappings
//! (`[]`, `["irc"]`, `{}`), plain, single- and double-quoted scalars, comments and `---`.
//! Anything else (block scalars `|`/`>`, anchors, tags, multi-line values) is refused with the
//! line number and what to write instead, never misread.
//!
//! Scalars resolve as Synapse's YAML reader (PyYAML, YAML 1.1) resolves them where it matters
//! here: `true`/`false`/`yes`/`no`/`on`/`off` (any of the three usual casings) are booleans,
//! `null`, `~` and nothing are null. Everything else stays a string, so a token made only of
//! digits still reads as the string it is meant to be.

use serde_json::{Map, Value};

/// A line the reader cannot accept, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Error {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Parses one YAML document. An empty document is `null`.
pub fn parse(text: &str) -> Result<Value, Error> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let raw = if number == 1 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        let content = raw.trim_start_matches(' ');
        let indent = raw.len() - content.len();
        let trimmed = content.trim_end_matches([' ', '\t', '\r']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if content.starts_with('\t') {
            return Err(error(
                number,
                "indent with spaces: YAML does not allow tabs there",
            ));
        }
        if indent == 0 && (trimmed == "---" || trimmed.starts_with("--- ")) {
            if !lines.is_empty() {
                return Err(error(number, "only one document is allowed"));
            }
            let rest = strip_comment(trimmed[3..].trim_start());
            if !rest.is_empty() {
                return Err(error(number, "put the document's content on the next line"));
            }
            continue;
        }
        if indent == 0 && trimmed == "..." {
            break;
        }
        if trimmed.starts_with('%') && indent == 0 {
            return Err(error(number, "YAML directives (`%`) are not supported"));
        }
        lines.push(Line {
            number,
            indent,
            text: trimmed,
        });
    }
    if lines.is_empty() {
        return Ok(Value::Null);
    }
    let mut reader = Reader { lines, pos: 0 };
    let indent = reader.lines[0].indent;
    let value = reader.node(indent)?;
    if let Some(line) = reader.lines.get(reader.pos) {
        return Err(error(
            line.number,
            "unexpected indentation: align this line with the keys it belongs with",
        ));
    }
    Ok(value)
}

/// Writes `value` (a mapping) as block YAML. Keys listed in `order` come first, in that order;
/// the others follow in the mapping's order. Every string is written so that YAML readers,
/// PyYAML included, read back the same string.
pub fn emit(value: &Map<String, Value>, order: &[&str]) -> String {
    let mut out = String::new();
    emit_mapping(value, 0, order, &mut out);
    out
}

struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
}

fn error(line: usize, message: impl Into<String>) -> Error {
    Error {
        line,
        message: message.into(),
    }
}

/// A `- ` entry (or a bare `-`).
fn is_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

impl<'a> Reader<'a> {
    /// The node whose first line is the current one, at `indent`.
    fn node(&mut self, indent: usize) -> Result<Value, Error> {
        let line = &self.lines[self.pos];
        if is_entry(line.text) {
            self.sequence(indent)
        } else if split_key(line.text, line.number)?.is_some() {
            self.mapping(indent)
        } else {
            let (number, text) = (line.number, line.text);
            self.pos += 1;
            if self.lines.get(self.pos).is_some_and(|l| l.indent > indent) {
                return Err(error(
                    number + 1,
                    "values that continue on the next line are not supported: write the value \
                     on one line, quoted if need be",
                ));
            }
            inline(text, number)
        }
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, Error> {
        let mut map = Map::new();
        while let Some(line) = self.lines.get(self.pos) {
            if line.indent < indent {
                break;
            }
            let (number, text) = (line.number, line.text);
            if line.indent > indent {
                return Err(error(
                    number,
                    "unexpected indentation: align this line with the keys it belongs with",
                ));
            }
            if is_entry(text) {
                return Err(error(
                    number,
                    "a list entry where a `key: value` line was expected",
                ));
            }
            let Some((key, rest)) = split_key(text, number)? else {
                return Err(error(number, "expected `key: value`"));
            };
            if map.contains_key(&key) {
                return Err(error(number, format!("the key `{key}` appears twice")));
            }
            self.pos += 1;
            let value = if rest.is_empty() {
                match self.lines.get(self.pos) {
                    Some(next) if next.indent > indent => self.node(next.indent)?,
                    // A list may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_entry(next.text) => {
                        self.sequence(indent)?
                    }
                    _ => Value::Null,
                }
            } else {
                inline(rest, number)?
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, Error> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.pos) {
            if line.indent != indent || !is_entry(line.text) {
                if line.indent > indent {
                    return Err(error(
                        line.number,
                        "unexpected indentation: align this line with the entry it belongs to",
                    ));
                }
                break;
            }
            let number = line.number;
            let rest = value_text(&line.text[1..]);
            if rest.is_empty() {
                self.pos += 1;
                let value = match self.lines.get(self.pos) {
                    Some(next) if next.indent > indent => self.node(next.indent)?,
                    _ => Value::Null,
                };
                items.push(value);
                continue;
            }
            // The entry's content starts a node of its own, at its column: `- key: v` is a
            // mapping whose next keys line up under `key`.
            let column = indent + (line.text.len() - rest.len());
            self.lines[self.pos] = Line {
                number,
                indent: column,
                text: rest,
            };
            items.push(self.node(column)?);
        }
        Ok(Value::Array(items))
    }
}

/// Splits `key: rest` (`rest` may be empty). `None` when the line is not a mapping entry.
fn split_key(text: &str, line: usize) -> Result<Option<(String, &str)>, Error> {
    if text.starts_with('?') && (text.len() == 1 || text[1..].starts_with(' ')) {
        return Err(error(line, "complex keys (`? `) are not supported"));
    }
    let (key, after) = if text.starts_with('"') || text.starts_with('\'') {
        let (key, consumed) = quoted(text, line)?;
        let after = text[consumed..].trim_start_matches(' ');
        if !after.starts_with(':') {
            return Ok(None);
        }
        (key, &after[1..])
    } else {
        if text.starts_with(['[', '{']) {
            return Ok(None);
        }
        let body = strip_comment(text);
        let Some(colon) = find_value_colon(body) else {
            return Ok(None);
        };
        (body[..colon].trim_end().to_owned(), &text[colon + 1..])
    };
    if !(after.is_empty() || after.starts_with(' ')) {
        return Ok(None);
    }
    Ok(Some((key, value_text(after))))
}

/// What follows a key's `:` or an entry's `-`: empty when it is only a comment. A comment
/// after a value is left for [`inline`], which knows where quotes end.
fn value_text(after: &str) -> &str {
    let text = after.trim_start_matches(' ');
    if text.starts_with('#') { "" } else { text }
}

/// The first `:` followed by a space or the end: the one that ends a plain key.
fn find_value_colon(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))
}

/// `text` without a trailing ` # comment` (only outside quotes; callers pass plain text or
/// text after a quoted scalar).
fn strip_comment(text: &str) -> &str {
    if text.starts_with('#') {
        return "";
    }
    match text.find(" #") {
        Some(i) => text[..i].trim_end(),
        None => text,
    }
}

/// A value on the rest of a line: a flow collection or a scalar.
fn inline(text: &str, line: usize) -> Result<Value, Error> {
    if text.starts_with(['[', '{']) {
        let mut flow = Flow { text, pos: 0, line };
        let value = flow.value()?;
        flow.skip_spaces();
        let rest = &text[flow.pos..];
        if !strip_comment(rest).is_empty() {
            return Err(error(
                line,
                format!("unexpected `{rest}` after the closing bracket"),
            ));
        }
        return Ok(value);
    }
    if text.starts_with(['"', '\'']) {
        let (value, consumed) = quoted(text, line)?;
        let rest = text[consumed..].trim_start_matches(' ');
        if !rest.is_empty() && !rest.starts_with('#') {
            return Err(error(
                line,
                format!("unexpected `{rest}` after the closing quote"),
            ));
        }
        return Ok(Value::String(value));
    }
    plain(strip_comment(text), line)
}

/// A plain (unquoted) scalar, resolved to a boolean, null or a string.
fn plain(text: &str, line: usize) -> Result<Value, Error> {
    if let Some(c) = text.chars().next() {
        match c {
            '|' | '>' => {
                return Err(error(
                    line,
                    "block scalars (`|`, `>`) are not supported: write the value on one line, \
                     quoted if need be",
                ));
            }
            '&' | '*' | '!' => {
                return Err(error(
                    line,
                    "anchors (`&`), aliases (`*`) and tags (`!`) are not supported",
                ));
            }
            '@' | '`' => {
                return Err(error(
                    line,
                    format!("a value starting with `{c}` must be quoted, e.g. '{text}'"),
                ));
            }
            '-' if text.len() == 1 || text[1..].starts_with(' ') => {
                return Err(error(
                    line,
                    "a list entry cannot follow a key on the same line",
                ));
            }
            _ => {}
        }
    }
    if find_value_colon(text).is_some() {
        return Err(error(
            line,
            format!("a value containing `: ` must be quoted, e.g. '{text}'"),
        ));
    }
    Ok(resolve(text))
}

const TRUE: &[&str] = &[
    "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON",
];
const FALSE: &[&str] = &[
    "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF",
];
const NULL: &[&str] = &["", "~", "null", "Null", "NULL"];

fn resolve(text: &str) -> Value {
    if TRUE.contains(&text) {
        Value::Bool(true)
    } else if FALSE.contains(&text) {
        Value::Bool(false)
    } else if NULL.contains(&text) {
        Value::Null
    } else {
        Value::String(text.to_owned())
    }
}

/// A quoted scalar at the start of `text`: its value and the bytes it spans.
fn quoted(text: &str, line: usize) -> Result<(String, usize), Error> {
    let quote = text.chars().next().expect("callers check the quote");
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if quote == '\'' => {
                if text[i + 1..].starts_with('\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    return Ok((value, i + 1));
                }
            }
            '"' if quote == '"' => return Ok((value, i + 1)),
            '\\' if quote == '"' => {
                let Some((_, e)) = chars.next() else { break };
                let hex = |len: usize, chars: &mut dyn Iterator<Item = (usize, char)>| {
                    let digits: String = chars.take(len).map(|(_, c)| c).collect();
                    u32::from_str_radix(&digits, 16)
                        .ok()
                        .filter(|_| digits.len() == len)
                        .and_then(char::from_u32)
                        .ok_or_else(|| error(line, format!("invalid escape `\\{e}{digits}`")))
                };
                value.push(match e {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    'x' => hex(2, &mut chars)?,
                    'u' => hex(4, &mut chars)?,
                    'U' => hex(8, &mut chars)?,
                    other => return Err(error(line, format!("invalid escape `\\{other}`"))),
                });
            }
            c => value.push(c),
        }
    }
    Err(error(
        line,
        format!(
            "the {quote}-quoted value is not closed on this line (multi-line quoted values are not supported)"
        ),
    ))
}

/// A one-line flow collection: `[a, "b"]`, `{k: v}`, nested.
struct Flow<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Flow<'_> {
    fn skip_spaces(&mut self) {
        while self.text[self.pos..].starts_with(' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.text[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn unclosed(&self) -> Error {
        error(
            self.line,
            "the bracketed list or mapping is not closed on this line (multi-line ones are not \
             supported)",
        )
    }

    fn value(&mut self) -> Result<Value, Error> {
        self.skip_spaces();
        let rest = &self.text[self.pos..];
        if rest.starts_with('[') {
            self.pos += 1;
            let mut items = Vec::new();
            if self.eat(']') {
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value()?);
                if self.eat(']') {
                    return Ok(Value::Array(items));
                }
                if !self.eat(',') {
                    return Err(self.unclosed());
                }
                if self.eat(']') {
                    return Ok(Value::Array(items));
                }
            }
        }
        if rest.starts_with('{') {
            self.pos += 1;
            let mut map = Map::new();
            if self.eat('}') {
                return Ok(Value::Object(map));
            }
            loop {
                let key = match self.value()? {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                let value = if self.eat(':') {
                    self.value()?
                } else {
                    Value::Null
                };
                if map.insert(key.clone(), value).is_some() {
                    return Err(error(self.line, format!("the key `{key}` appears twice")));
                }
                if self.eat('}') {
                    return Ok(Value::Object(map));
                }
                if !self.eat(',') {
                    return Err(self.unclosed());
                }
                if self.eat('}') {
                    return Ok(Value::Object(map));
                }
            }
        }
        if rest.starts_with(['"', '\'']) {
            let (value, consumed) = quoted(rest, self.line)?;
            self.pos += consumed;
            return Ok(Value::String(value));
        }
        // A plain scalar ends at `,`, a closing bracket, `: ` or ` #`.
        let bytes = rest.as_bytes();
        let mut end = 0;
        while end < bytes.len() {
            match bytes[end] {
                b',' | b']' | b'}' => break,
                b':' if end + 1 == bytes.len()
                    || matches!(bytes[end + 1], b' ' | b',' | b']' | b'}') =>
                {
                    break;
                }
                b'#' if end > 0 && bytes[end - 1] == b' ' => break,
                b'[' | b'{' => {
                    return Err(error(
                        self.line,
                        "unexpected bracket inside a value: quote it",
                    ));
                }
                _ => end += 1,
            }
        }
        if end == bytes.len() {
            return Err(self.unclosed());
        }
        let text = rest[..end].trim_end();
        self.pos += end;
        plain(text, self.line)
    }
}

/// Characters YAML does not allow raw in a quoted scalar, or reads as line breaks.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn emit_mapping(map: &Map<String, Value>, indent: usize, order: &[&str], out: &mut String) {
    let known = order.iter().filter_map(|k| map.get_key_value(*k));
    let others = map.iter().filter(|(k, _)| !order.contains(&k.as_str()));
    for (key, value) in known.chain(others) {
        push_indent(out, indent);
        out.push_str(&scalar_text(key));
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_mapping(inner, indent + 2, order, out);
            }
            // PyYAML's style: a list under a key sits at the key's indentation.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                emit_sequence(items, indent, order, out);
            }
            other => {
                out.push(' ');
                out.push_str(&leaf(other));
                out.push('\n');
            }
        }
    }
}

fn emit_sequence(items: &[Value], indent: usize, order: &[&str], out: &mut String) {
    for item in items {
        push_indent(out, indent);
        out.push_str("- ");
        // A nested collection starts on the entry's own line: written two columns in, then
        // its first indentation dropped.
        let mut nested = String::new();
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                emit_mapping(inner, indent + 2, order, &mut nested);
            }
            Value::Array(inner) if !inner.is_empty() => {
                emit_sequence(inner, indent + 2, order, &mut nested);
            }
            other => {
                out.push_str(&leaf(other));
                out.push('\n');
                continue;
            }
        }
        out.push_str(&nested[indent + 2..]);
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn leaf(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// `text` as a YAML scalar: plain when no YAML reader could take it for anything else (it
/// starts with a letter, holds only unambiguous characters and is no boolean or null word),
/// single-quoted when printable, double-quoted with escapes otherwise.
fn scalar_text(text: &str) -> String {
    let plain_safe = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@+=".contains(c))
        && !text.ends_with(':')
        && !TRUE.contains(&text)
        && !FALSE.contains(&text)
        && !NULL.contains(&text)
        // YAML 1.1's one-letter booleans, which some readers still honour.
        && !matches!(text, "y" | "Y" | "n" | "N");
    if plain_safe {
        return text.to_owned();
    }
    if !text.chars().any(needs_escape) {
        return format!("'{}'", text.replace('\'', "''"));
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn read(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn refused(text: &str) -> Error {
        parse(text).expect_err(text)
    }

    #[test]
    fn registration_styles_in_the_wild_read_alike() {
        let expected = json!({
            "id": "st2-matrix",
            "url": "http://127.0.0.1:9000",
            "as_token": "0123abc",
            "hs_token": "4567",
            "sender_localpart": "st2bot",
            "namespaces": {
                "users": [{"exclusive": true, "regex": "@st2_.*:example\\.org"}],
                "aliases": [],
                "rooms": []
            },
            "rate_limited": false,
            "protocols": ["irc"],
        });
        // As this bridge writes it (lists at their key's indentation, single quotes).
        let ours = "# header\nid: st2-matrix\nurl: http://127.0.0.1:9000\nas_token: '0123abc'\n\
            hs_token: '4567'\nsender_localpart: st2bot\nnamespaces:\n  users:\n  - exclusive: true\n    \
            regex: '@st2_.*:example\\.org'\n  aliases: []\n  rooms: []\nrate_limited: false\nprotocols:\n- irc\n";
        // As Synapse's documentation and many generators write it: indented lists, double
        // quotes, comments everywhere, a document marker.
        let indented = "---\nid: \"st2-matrix\"   # the id\nurl: \"http://127.0.0.1:9000\"\n\
            as_token: \"0123abc\"\nhs_token: 4567\nsender_localpart: st2bot\n\nnamespaces:\n    \
            users:\n        - exclusive: yes\n          regex: \"@st2_.*:example\\\\.org\"\n    \
            aliases: [ ]\n    rooms: []\nrate_limited: False\nprotocols: [\"irc\"]\n...\nignored: after the end\n";
        // Flow style inside, entries on their own lines.
        let flow = "id: st2-matrix\nurl: http://127.0.0.1:9000\nas_token: 0123abc\nhs_token: \"4567\"\n\
            sender_localpart: 'st2bot'\nnamespaces:\n  users:\n    -\n      exclusive: true\n      \
            regex: '@st2_.*:example\\.org'\n  aliases: []\n  rooms: {}\nrate_limited: off\nprotocols: [irc,]\n";
        assert_eq!(read(ours), expected);
        assert_eq!(read(indented), expected);
        let mut flow_expected = expected.clone();
        flow_expected["namespaces"]["rooms"] = json!({});
        assert_eq!(read(flow), flow_expected);
    }

    #[test]
    fn scalars_resolve_as_pyyaml_does_where_it_matters() {
        let doc = read(
            "a: yes\nb: No\nc: ~\nd:\ne: null\nf: 12345\ng: 'yes'\nh: it's\ni: a#b\nj: x # c\n\
             k: \"\\u00e9\\t\\x41\"\nl: 'it''s'\nm: url:with:colons\n",
        );
        assert_eq!(
            doc,
            json!({"a": true, "b": false, "c": null, "d": null, "e": null, "f": "12345",
                   "g": "yes", "h": "it's", "i": "a#b", "j": "x", "k": "é\tA", "l": "it's",
                   "m": "url:with:colons"})
        );
        assert_eq!(
            read(
                "a: 'x #1' # c\nb: \"y # 2\"\nc: # nothing here\n  d: [z, 'w #3'] # c\ne:\n- # c\n  - v\n"
            ),
            json!({"a": "x #1", "b": "y # 2", "c": {"d": ["z", "w #3"]}, "e": [["v"]]})
        );
        assert_eq!(read(""), Value::Null);
        assert_eq!(read("# only a comment\n---\n"), Value::Null);
        assert_eq!(read("- a\n- - b\n  - c\n"), json!(["a", ["b", "c"]]));
        assert_eq!(
            read("\"quoted key\": 1\n'k2': [a, {x: y}]\n"),
            json!({"quoted key": "1", "k2": ["a", {"x": "y"}]})
        );
    }

    #[test]
    fn what_is_not_supported_is_refused_with_its_line() {
        for (text, line, words) in [
            ("a: 1\nb: |\n  text\n", 2, "block scalars"),
            ("a: &x 1\n", 1, "anchors"),
            ("a: !!str 1\n", 1, "tags"),
            ("a: 1\n\tb: 2\n", 2, "tabs"),
            ("a: 1\na: 2\n", 2, "appears twice"),
            ("a: 'open\n", 1, "not closed"),
            ("a: [1, 2\n", 1, "not closed"),
            ("a: @x\n", 1, "must be quoted"),
            ("a: b: c\n", 1, "must be quoted"),
            ("a: 1\n  b: 2\n", 2, "unexpected indentation"),
            ("a: \"\\q\"\n", 1, "invalid escape"),
            ("a: - x\n", 1, "list entry"),
            ("a:\n  - x\n  b: 1\n", 3, "unexpected indentation"),
            ("a: first\n  continued\n", 2, "unexpected indentation"),
            ("plain\n  more\n", 2, "continue on the next line"),
            ("? complex\n", 1, "complex keys"),
            ("a: 1\n---\nb: 2\n", 2, "one document"),
            ("a: 'x' y\n", 1, "after the closing quote"),
        ] {
            let e = refused(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(words), "{text:?}: {e}");
        }
    }

    #[test]
    fn emitted_registration_reads_back_and_looks_as_documented() {
        let value = json!({
            "rate_limited": false,
            "id": "st2-matrix",
            "namespaces": {"users": [{"regex": "@st2_.*:example\\.org", "exclusive": true}]},
            "as_token": "09bf",
            "url": "http://127.0.0.1:9000",
            "extra": {"empty": [], "nested": [[1, 2], {"k": null}]},
        });
        let order = [
            "id",
            "url",
            "as_token",
            "namespaces",
            "users",
            "exclusive",
            "regex",
        ];
        let text = emit(value.as_object().unwrap(), &order);
        assert_eq!(
            text,
            "id: st2-matrix\nurl: http://127.0.0.1:9000\nas_token: '09bf'\nnamespaces:\n  users:\n  \
             - exclusive: true\n    regex: '@st2_.*:example\\.org'\nextra:\n  empty: []\n  nested:\n  \
             - - 1\n    - 2\n  - k: null\nrate_limited: false\n"
        );
        let mut expected = value.clone();
        expected["extra"]["nested"] = json!([["1", "2"], {"k": null}]);
        assert_eq!(read(&text), expected);
    }

    /// Values a registration can hold: strings of any characters, booleans, null, and
    /// mappings and lists of them.
    fn value_tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::String),
            "[ -~]{0,12}".prop_map(Value::String),
            // YAML's own punctuation, densely.
            "[a #:'\"\\,\\[\\]{}&*!|>%@`-]{0,10}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[ -~]{0,8}|\\PC{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_the_identity(map in prop::collection::btree_map("[a-z_]{1,8}", value_tree(), 0..5)) {
            let map: Map<String, Value> = map.into_iter().collect();
            let text = emit(&map, &[]);
            let expected = if map.is_empty() { Value::Null } else { Value::Object(map.clone()) };
            let read = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(read, expected);
        }

        #[test]
        fn a_real_yaml_reader_agrees_with_what_is_emitted(map in prop::collection::btree_map("[a-z_]{1,8}", value_tree(), 1..5)) {
            let map: Map<String, Value> = map.into_iter().collect();
            let text = emit(&map, &[]);
            let theirs: Value = serde_saphyr::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(theirs, Value::Object(map));
        }

        #[test]
        fn any_input_is_read_or_refused_without_panicking(text in "(\\PC|[ \\n\\t:#'\"\\[\\]{}-]){0,200}") {
            let _ = parse(&text);
        }
    }
}
