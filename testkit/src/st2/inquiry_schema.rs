//! How StackStorm checks an inquiry response against the inquiry's schema
//! (`st2common/services/inquiry.py::validate_response` at st2 c2eaf56), ported with its exact
//! error text.
//!
//! Why a hand port and not the `jsonschema` crate: st2 validates with its own
//! `CustomValidator` (`st2common/util/schema/__init__.py`): Draft-4 keywords, but Draft-3
//! `properties`, so a property's `required: true` is what makes it mandatory and a Draft-4
//! `required: [...]` array is ignored altogether (the keyword is not registered). Before
//! validating it rewrites the schema (`modify_schema_allow_default_none`: an optional property
//! without a default also accepts `null`, and its `type` becomes a list) and fills defaults
//! into a copy of the response. The message is `str()` of the best-matching `ValidationError`
//! of Python `jsonschema` 4.26 (st2's pin): the short message, then the failing schema and the
//! instance pretty-printed by `pprint` in dict insertion order. No Rust validator has Draft-3
//! `required`, and none prints Python's text, so both are reproduced here; expected strings in
//! the tests were produced by running st2's code with jsonschema 4.26.0.
//!
//! Values are kept as [`Py`], a JSON value whose objects keep their key order, because the
//! message prints schema and response in the order they were written (serde_json's `Value`
//! sorts keys in this workspace).
//!
//! Subset: `$ref`, `format` (st2 passes no format checker, so it never fails) and
//! `additionalItems` are not checked; unknown `type` names never match (Python raises
//! `UnknownType`); an invalid `pattern` never fails (Python raises `re.error`); `splitlines` in
//! the pretty-printer only knows `\n`, `\r\n` and `\r`.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::python::{py_float, py_str_repr};

/// A JSON value as Python's `json.loads` gives it: objects keep insertion order.
#[derive(Debug, Clone)]
pub(crate) enum Py {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

impl Py {
    /// Parses JSON text keeping key order; a repeated key keeps its first place and last
    /// value, as assignment into a Python dict does.
    pub(crate) fn parse(text: &str) -> Result<Py, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// From a serde_json value (keys in serde_json's order).
    pub(crate) fn from_value(v: &Value) -> Py {
        match v {
            Value::Null => Py::None,
            Value::Bool(b) => Py::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Py::Int(i.into()),
                (_, Some(u)) => Py::Int(u.into()),
                _ => Py::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Py::Str(s.clone()),
            Value::Array(a) => Py::List(a.iter().map(Py::from_value).collect()),
            Value::Object(m) => Py::Dict(
                m.iter()
                    .map(|(k, v)| (k.clone(), Py::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// To a serde_json value (key order lost).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Py::None => Value::Null,
            Py::Bool(b) => Value::Bool(*b),
            Py::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                .unwrap_or(Value::Null),
            Py::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Py::Str(s) => Value::String(s.clone()),
            Py::List(a) => Value::Array(a.iter().map(Py::to_value).collect()),
            Py::Dict(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }

    /// `d.get(key)` of a dict; `None` for anything else.
    pub(crate) fn get(&self, key: &str) -> Option<&Py> {
        match self {
            Py::Dict(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Py> {
        match self {
            Py::Dict(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `d[key] = value`: replaces in place, or appends.
    fn set(&mut self, key: &str, value: Py) {
        if let Py::Dict(m) = self {
            match m.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => m.push((key.to_owned(), value)),
            }
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Py::Str(s) => Some(s),
            _ => None,
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Py::None => false,
            Py::Bool(b) => *b,
            Py::Int(i) => *i != 0,
            Py::Float(f) => *f != 0.0,
            Py::Str(s) => !s.is_empty(),
            Py::List(a) => !a.is_empty(),
            Py::Dict(m) => !m.is_empty(),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Py::Int(i) => Some(*i as f64),
            Py::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// `repr()`.
    pub(crate) fn repr(&self) -> String {
        match self {
            Py::None => "None".into(),
            Py::Bool(true) => "True".into(),
            Py::Bool(false) => "False".into(),
            Py::Int(i) => i.to_string(),
            Py::Float(f) => py_float(*f),
            Py::Str(s) => py_str_repr(s),
            Py::List(a) => format!(
                "[{}]",
                a.iter().map(Py::repr).collect::<Vec<_>>().join(", ")
            ),
            Py::Dict(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{}: {}", py_str_repr(k), v.repr()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Py {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Py, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Py;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Py, E> {
                Ok(Py::None)
            }
            fn visit_none<E: de::Error>(self) -> Result<Py, E> {
                Ok(Py::None)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Py, E> {
                Ok(Py::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Py, E> {
                Ok(Py::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Py, E> {
                Ok(Py::Int(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Py, E> {
                Ok(Py::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Py, E> {
                Ok(Py::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Py, E> {
                Ok(Py::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Py, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Py::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Py, A::Error> {
                let mut dict = Py::Dict(Vec::new());
                while let Some((k, v)) = map.next_entry::<String, Py>()? {
                    dict.set(&k, v);
                }
                Ok(dict)
            }
        }
        d.deserialize_any(V)
    }
}

/// jsonschema's `equal`: booleans are not numbers, `1 == 1.0`.
fn equal(a: &Py, b: &Py) -> bool {
    match (a, b) {
        (Py::Str(x), Py::Str(y)) => x == y,
        (Py::List(x), Py::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(i, j)| equal(i, j))
        }
        (Py::Dict(x), Py::Dict(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| b.get(k).is_some_and(|w| equal(v, w)))
        }
        (Py::Bool(x), Py::Bool(y)) => x == y,
        (Py::None, Py::None) => true,
        (Py::Int(x), Py::Int(y)) => x == y,
        (x, y) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p == q,
            _ => false,
        },
    }
}

/// Draft-4's type checker.
fn is_type(v: &Py, name: &str) -> bool {
    match name {
        "array" => matches!(v, Py::List(_)),
        "boolean" => matches!(v, Py::Bool(_)),
        "integer" => matches!(v, Py::Int(_)),
        "null" => matches!(v, Py::None),
        "number" => matches!(v, Py::Int(_) | Py::Float(_)),
        "object" => matches!(v, Py::Dict(_)),
        "string" => matches!(v, Py::Str(_)),
        _ => false,
    }
}

// ----- pprint.pformat(width=72, sort_dicts=False) ----------------------------------------------

const WIDTH: isize = 72;

fn width_of(s: &str) -> isize {
    s.chars().count() as isize
}

/// `pprint.pformat(value, width=72, sort_dicts=False)`.
pub(crate) fn pformat(v: &Py) -> String {
    let mut out = String::new();
    pp_format(v, &mut out, 0, 0, 0);
    out
}

fn pp_format(v: &Py, out: &mut String, indent: isize, allowance: isize, level: usize) {
    let rep = v.repr();
    if width_of(&rep) > WIDTH - indent - allowance {
        match v {
            Py::Dict(items) => {
                out.push('{');
                let indent = indent + 1;
                let allowance = allowance + 1;
                for (i, (k, ent)) in items.iter().enumerate() {
                    let last = i + 1 == items.len();
                    let krep = py_str_repr(k);
                    out.push_str(&krep);
                    out.push_str(": ");
                    let inner = indent + width_of(&krep) + 2;
                    pp_format(ent, out, inner, if last { allowance } else { 1 }, level + 1);
                    if !last {
                        out.push_str(",\n");
                        out.push_str(&" ".repeat(indent as usize));
                    }
                }
                out.push('}');
                return;
            }
            Py::List(items) => {
                out.push('[');
                let indent = indent + 1;
                let allowance = allowance + 1;
                for (i, ent) in items.iter().enumerate() {
                    let last = i + 1 == items.len();
                    if i > 0 {
                        out.push_str(",\n");
                        out.push_str(&" ".repeat(indent as usize));
                    }
                    pp_format(
                        ent,
                        out,
                        indent,
                        if last { allowance } else { 1 },
                        level + 1,
                    );
                }
                out.push(']');
                return;
            }
            Py::Str(s) if !s.is_empty() => {
                pp_str(s, out, indent, allowance, level + 1);
                return;
            }
            _ => {}
        }
    }
    out.push_str(&rep);
}

/// `PrettyPrinter._pprint_str`: a long string is cut after whitespace into adjacent literals.
fn pp_str(s: &str, out: &mut String, mut indent: isize, mut allowance: isize, level: usize) {
    let lines = split_lines_keep_ends(s);
    if level == 1 {
        indent += 1;
        allowance += 1;
    }
    let max_width = WIDTH - indent;
    let mut max_width1 = max_width;
    let mut chunks: Vec<String> = Vec::new();
    let mut last_rep = String::new();
    for (i, line) in lines.iter().enumerate() {
        let rep = py_str_repr(line);
        let last_line = i + 1 == lines.len();
        if last_line {
            max_width1 -= allowance;
        }
        if width_of(&rep) <= max_width1 {
            chunks.push(rep.clone());
        } else {
            let parts = word_parts(line);
            let mut max_width2 = max_width;
            let mut current = String::new();
            for (j, part) in parts.iter().enumerate() {
                let candidate = format!("{current}{part}");
                if j + 1 == parts.len() && last_line {
                    max_width2 -= allowance;
                }
                if width_of(&py_str_repr(&candidate)) > max_width2 {
                    if !current.is_empty() {
                        chunks.push(py_str_repr(&current));
                    }
                    current = part.clone();
                } else {
                    current = candidate;
                }
            }
            if !current.is_empty() {
                chunks.push(py_str_repr(&current));
            }
        }
        last_rep = rep;
    }
    if chunks.len() == 1 {
        out.push_str(&last_rep);
        return;
    }
    if level == 1 {
        out.push('(');
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(&" ".repeat(indent.max(0) as usize));
        }
        out.push_str(chunk);
    }
    if level == 1 {
        out.push(')');
    }
}

fn split_lines_keep_ends(s: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        if c == '\r' && chars.peek() == Some(&'\n') {
            cur.push('\n');
            chars.next();
            lines.push(std::mem::take(&mut cur));
        } else if c == '\n' || c == '\r' {
            lines.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// `re.findall(r'\S*\s*', line)` without the final empty match.
fn word_parts(line: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_space = false;
    for c in line.chars() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            parts.push(std::mem::take(&mut cur));
            in_space = false;
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

// ----- errors ----------------------------------------------------------------------------------

/// A path element: a property name or an array index.
#[derive(Debug, Clone, PartialEq)]
enum Idx {
    Key(String),
    Pos(usize),
}

impl Idx {
    fn repr(&self) -> String {
        match self {
            Idx::Key(k) => py_str_repr(k),
            Idx::Pos(i) => i.to_string(),
        }
    }
}

/// Python compares deques element-wise; str against int cannot occur between siblings.
fn cmp_path(a: &VecDeque<Idx>, b: &VecDeque<Idx>) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Idx::Key(p), Idx::Key(q)) => p.cmp(q),
            (Idx::Pos(p), Idx::Pos(q)) => p.cmp(q),
            _ => Ordering::Equal,
        };
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// A `jsonschema.ValidationError`.
#[derive(Debug, Clone)]
struct VError {
    message: String,
    /// `validator`, `validator_value`, `instance`, `schema`: unset until the keyword loop
    /// fills them in (the Draft-3 `required` error sets its own).
    set: Option<(String, Py, Py)>,
    path: VecDeque<Idx>,
    schema_path: VecDeque<Idx>,
    context: Vec<VError>,
}

impl VError {
    fn new(message: String) -> Self {
        VError {
            message,
            set: None,
            path: VecDeque::new(),
            schema_path: VecDeque::new(),
            context: Vec::new(),
        }
    }

    fn validator(&self) -> &str {
        self.set.as_ref().map_or("", |s| s.0.as_str())
    }

    /// `_matches_type`: whether the instance has the failing schema's `type`.
    fn matches_type(&self) -> bool {
        let Some((_, instance, schema)) = &self.set else {
            return false;
        };
        match schema.get("type") {
            Some(Py::Str(t)) => is_type(instance, t),
            Some(Py::List(ts)) => ts
                .iter()
                .any(|t| t.as_str().is_some_and(|t| is_type(instance, t))),
            _ => false,
        }
    }

    /// `str(error)`; the words are `schema`/`instance`, or `metaschema`/`schema` for a
    /// `SchemaError`.
    fn render_as(&self, schema_word: &str, instance_word: &str) -> String {
        let Some((validator, instance, schema)) = &self.set else {
            return self.message.clone();
        };
        let indices: Vec<&Idx> = self.schema_path.iter().collect();
        let schema_path = format_as_index(schema_word, &indices[..indices.len().saturating_sub(1)]);
        let path: Vec<&Idx> = self.path.iter().collect();
        let instance_path = format_as_index(instance_word, &path);
        format!(
            "{}\n\nFailed validating {} in {schema_path}:\n    {}\n\nOn {instance_path}:\n    {}",
            self.message,
            py_str_repr(validator),
            indent4(&pformat(schema)),
            indent4(&pformat(instance)),
        )
    }
}

fn indent4(s: &str) -> String {
    s.replace('\n', "\n    ")
}

fn format_as_index(container: &str, indices: &[&Idx]) -> String {
    if indices.is_empty() {
        return container.to_owned();
    }
    let inner: Vec<String> = indices.iter().map(|i| i.repr()).collect();
    format!("{container}[{}]", inner.join("]["))
}

/// `relevance` of `jsonschema.exceptions.by_relevance()`.
fn relevance_cmp(a: &VError, b: &VError) -> Ordering {
    let weak = |e: &VError| matches!(e.validator(), "anyOf" | "oneOf");
    (b.path.len().cmp(&a.path.len()))
        .then_with(|| cmp_path(&a.path, &b.path))
        .then_with(|| (!weak(a)).cmp(&!weak(b)))
        .then_with(|| (!a.matches_type()).cmp(&!b.matches_type()))
}

/// `best_match`: Python's `max` keeps the first of equals; then descends into the context of
/// `anyOf`/`oneOf` errors while one sub-error is strictly the least relevant.
fn best_match(errors: Vec<VError>) -> Option<VError> {
    let mut best: Option<VError> = None;
    for e in errors {
        match &best {
            Some(b) if relevance_cmp(&e, b) != Ordering::Greater => {}
            _ => best = Some(e),
        }
    }
    let mut best = best?;
    while !best.context.is_empty() {
        let mut sorted = best.context.clone();
        // heapq.nsmallest is stable: the first of equal minima wins.
        sorted.sort_by(relevance_cmp);
        if sorted.len() >= 2 && relevance_cmp(&sorted[0], &sorted[1]) == Ordering::Equal {
            return Some(best);
        }
        best = sorted.swap_remove(0);
    }
    Some(best)
}

// ----- the validator ---------------------------------------------------------------------------

/// What a validation run needs besides the instance and the current schema.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    /// The document `$ref`s resolve in.
    root: &'a Py,
    /// Checking a schema against the meta-schema (`check_schema`): Draft-4's validator with
    /// its format checker, where `$ref` hides its siblings.
    meta: bool,
}

fn iter_errors(instance: &Py, schema: &Py, ctx: Ctx) -> Vec<VError> {
    let Py::Dict(keywords) = schema else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let only_ref = ctx.meta && schema.get("$ref").is_some();
    for (k, v) in keywords {
        if only_ref && k != "$ref" {
            continue;
        }
        for mut e in keyword(k, v, instance, schema, ctx) {
            if e.set.is_none() {
                e.set = Some((k.clone(), instance.clone(), schema.clone()));
            }
            if k != "$ref" {
                e.schema_path.push_front(Idx::Key(k.clone()));
            }
            out.push(e);
        }
    }
    out
}

fn descend(
    instance: &Py,
    schema: &Py,
    path: Option<Idx>,
    schema_path: Option<Idx>,
    ctx: Ctx,
) -> Vec<VError> {
    let mut errors = iter_errors(instance, schema, ctx);
    for e in &mut errors {
        if let Some(p) = &path {
            e.path.push_front(p.clone());
        }
        if let Some(p) = &schema_path {
            e.schema_path.push_front(p.clone());
        }
    }
    errors
}

fn is_valid(instance: &Py, schema: &Py, ctx: Ctx) -> bool {
    iter_errors(instance, schema, ctx).is_empty()
}

fn re_search(pattern: &str, text: &str) -> Option<bool> {
    let re = st2_alias::pyre::Regex::new(pattern, 0).ok()?;
    let chars: Vec<char> = text.chars().collect();
    let mut cache = st2_alias::pyre::Cache::new();
    let mut budget = st2_alias::pyre::DEFAULT_STEP_LIMIT;
    re.search(&chars, &mut cache, &mut budget)
        .ok()
        .map(|m| m.is_some())
}

fn len_of(v: &Py) -> usize {
    match v {
        Py::Str(s) => s.chars().count(),
        Py::List(a) => a.len(),
        Py::Dict(m) => m.len(),
        _ => 0,
    }
}

/// `{instance!r} is too short`-style messages of the length keywords.
fn length_error(kind: &str, v: &Py, instance: &Py, keyword: &str) -> Vec<VError> {
    if !is_type(instance, kind) {
        return Vec::new();
    }
    let Some(limit) = v.as_f64() else {
        return Vec::new();
    };
    let n = len_of(instance) as f64;
    let message = match keyword {
        "minLength" | "minItems" if n < limit => {
            if limit == 1.0 {
                "should be non-empty"
            } else {
                "is too short"
            }
        }
        "maxLength" | "maxItems" if n > limit => {
            if limit == 0.0 {
                "is expected to be empty"
            } else {
                "is too long"
            }
        }
        "minProperties" if n < limit => {
            if limit == 1.0 {
                "should be non-empty"
            } else {
                "does not have enough properties"
            }
        }
        "maxProperties" if n > limit => {
            if limit == 0.0 {
                "is expected to be empty"
            } else {
                "has too many properties"
            }
        }
        _ => return Vec::new(),
    };
    vec![VError::new(format!("{} {message}", instance.repr()))]
}

fn keyword(k: &str, v: &Py, instance: &Py, schema: &Py, ctx: Ctx) -> Vec<VError> {
    match k {
        "$ref" => match v.as_str().and_then(|r| resolve(ctx.root, r)) {
            Some(target) => iter_errors(instance, target, ctx),
            None => Vec::new(),
        },
        "format" if ctx.meta => match (instance, v.as_str()) {
            (Py::Str(p), Some("regex")) if st2_alias::pyre::Regex::new(p, 0).is_err() => {
                vec![VError::new(format!(
                    "{} is not a {}",
                    instance.repr(),
                    v.repr()
                ))]
            }
            _ => Vec::new(),
        },
        "type" => {
            let types: Vec<&Py> = match v {
                Py::List(ts) => ts.iter().collect(),
                other => vec![other],
            };
            if types
                .iter()
                .any(|t| t.as_str().is_some_and(|t| is_type(instance, t)))
            {
                return Vec::new();
            }
            let reprs: Vec<String> = types.iter().map(|t| t.repr()).collect();
            vec![VError::new(format!(
                "{} is not of type {}",
                instance.repr(),
                reprs.join(", ")
            ))]
        }
        "enum" => match v {
            Py::List(options) if options.iter().all(|o| !equal(o, instance)) => {
                vec![VError::new(format!(
                    "{} is not one of {}",
                    instance.repr(),
                    v.repr()
                ))]
            }
            _ => Vec::new(),
        },
        "properties" => {
            let (Py::Dict(props), Py::Dict(present)) = (v, instance) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (name, sub) in props {
                if let Some((_, value)) = present.iter().find(|(k, _)| k == name) {
                    out.extend(descend(
                        value,
                        sub,
                        Some(Idx::Key(name.clone())),
                        Some(Idx::Key(name.clone())),
                        ctx,
                    ));
                } else if !ctx.meta && sub.get("required").is_some_and(Py::truthy) {
                    let mut e =
                        VError::new(format!("{} is a required property", py_str_repr(name)));
                    e.set = Some(("required".into(), instance.clone(), schema.clone()));
                    e.path.push_front(Idx::Key(name.clone()));
                    e.schema_path
                        .extend([Idx::Key(name.clone()), Idx::Key("required".into())]);
                    out.push(e);
                }
            }
            out
        }
        "patternProperties" => {
            let (Py::Dict(patterns), Py::Dict(present)) = (v, instance) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (pattern, sub) in patterns {
                for (name, value) in present {
                    if re_search(pattern, name) == Some(true) {
                        out.extend(descend(
                            value,
                            sub,
                            Some(Idx::Key(name.clone())),
                            Some(Idx::Key(pattern.clone())),
                            ctx,
                        ));
                    }
                }
            }
            out
        }
        "additionalProperties" => {
            let Py::Dict(present) = instance else {
                return Vec::new();
            };
            let patterns: Vec<&str> = match schema.get("patternProperties") {
                Some(Py::Dict(p)) => p.iter().map(|(k, _)| k.as_str()).collect(),
                _ => Vec::new(),
            };
            let joined = patterns.join("|");
            let mut extras: Vec<&String> = present
                .iter()
                .map(|(k, _)| k)
                .filter(|k| schema.get("properties").and_then(|p| p.get(k)).is_none())
                .filter(|k| joined.is_empty() || re_search(&joined, k) != Some(true))
                .collect();
            if matches!(v, Py::Dict(_)) {
                return extras
                    .iter()
                    .flat_map(|k| {
                        descend(
                            instance.get(k).unwrap_or(&Py::None),
                            v,
                            Some(Idx::Key((*k).clone())),
                            None,
                            ctx,
                        )
                    })
                    .collect();
            }
            if v.truthy() || extras.is_empty() {
                return Vec::new();
            }
            extras.sort();
            let reprs: Vec<String> = extras.iter().map(|e| py_str_repr(e)).collect();
            if schema.get("patternProperties").is_some() {
                let verb = if extras.len() == 1 { "does" } else { "do" };
                let mut sorted_patterns = patterns.clone();
                sorted_patterns.sort();
                let pats: Vec<String> = sorted_patterns.iter().map(|p| py_str_repr(p)).collect();
                return vec![VError::new(format!(
                    "{} {verb} not match any of the regexes: {}",
                    reprs.join(", "),
                    pats.join(", ")
                ))];
            }
            let verb = if extras.len() == 1 { "was" } else { "were" };
            vec![VError::new(format!(
                "Additional properties are not allowed ({} {verb} unexpected)",
                reprs.join(", ")
            ))]
        }
        "dependencies" => {
            let (Py::Dict(deps), Py::Dict(present)) = (v, instance) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (property, dependency) in deps {
                if !present.iter().any(|(k, _)| k == property) {
                    continue;
                }
                match dependency {
                    Py::List(each) => {
                        for d in each {
                            let missing = d
                                .as_str()
                                .is_none_or(|d| !present.iter().any(|(k, _)| k == d));
                            if missing {
                                out.push(VError::new(format!(
                                    "{} is a dependency of {}",
                                    d.repr(),
                                    py_str_repr(property)
                                )));
                            }
                        }
                    }
                    other => out.extend(descend(
                        instance,
                        other,
                        None,
                        Some(Idx::Key(property.clone())),
                        ctx,
                    )),
                }
            }
            out
        }
        "items" => {
            let Py::List(items) = instance else {
                return Vec::new();
            };
            match v {
                Py::Dict(_) => items
                    .iter()
                    .enumerate()
                    .flat_map(|(i, item)| descend(item, v, Some(Idx::Pos(i)), None, ctx))
                    .collect(),
                Py::List(schemas) => items
                    .iter()
                    .zip(schemas)
                    .enumerate()
                    .flat_map(|(i, (item, s))| {
                        descend(item, s, Some(Idx::Pos(i)), Some(Idx::Pos(i)), ctx)
                    })
                    .collect(),
                _ => Vec::new(),
            }
        }
        "minLength" | "maxLength" => length_error("string", v, instance, k),
        "minItems" | "maxItems" => length_error("array", v, instance, k),
        "minProperties" | "maxProperties" => length_error("object", v, instance, k),
        "minimum" | "maximum" => {
            let (Some(x), Some(limit)) = (instance.as_f64(), v.as_f64()) else {
                return Vec::new();
            };
            if matches!(instance, Py::Bool(_)) {
                return Vec::new();
            }
            let minimum = k == "minimum";
            let exclusive = schema
                .get(if minimum {
                    "exclusiveMinimum"
                } else {
                    "exclusiveMaximum"
                })
                .is_some_and(Py::truthy);
            let (failed, cmp) = match (minimum, exclusive) {
                (true, true) => (x <= limit, "less than or equal to"),
                (true, false) => (x < limit, "less than"),
                (false, true) => (x >= limit, "greater than or equal to"),
                (false, false) => (x > limit, "greater than"),
            };
            if !failed {
                return Vec::new();
            }
            let which = if minimum { "minimum" } else { "maximum" };
            vec![VError::new(format!(
                "{} is {cmp} the {which} of {}",
                instance.repr(),
                v.repr()
            ))]
        }
        "multipleOf" => {
            let (Some(x), Some(d)) = (instance.as_f64(), v.as_f64()) else {
                return Vec::new();
            };
            let failed = match (instance, v) {
                (Py::Int(a), Py::Int(b)) if *b != 0 => a % b != 0,
                (_, Py::Float(_)) => {
                    let q = x / d;
                    q.trunc() != q
                }
                _ => x % d != 0.0,
            };
            if failed {
                vec![VError::new(format!(
                    "{} is not a multiple of {}",
                    instance.repr(),
                    v.repr()
                ))]
            } else {
                Vec::new()
            }
        }
        "pattern" => match (instance, v) {
            (Py::Str(s), Py::Str(p)) if re_search(p, s) == Some(false) => {
                vec![VError::new(format!(
                    "{} does not match {}",
                    instance.repr(),
                    v.repr()
                ))]
            }
            _ => Vec::new(),
        },
        "uniqueItems" => match instance {
            Py::List(items) if v.truthy() => {
                let dup = items
                    .iter()
                    .enumerate()
                    .any(|(i, a)| items[i + 1..].iter().any(|b| equal(a, b)));
                if dup {
                    vec![VError::new(format!(
                        "{} has non-unique elements",
                        instance.repr()
                    ))]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        },
        "allOf" => match v {
            Py::List(subs) => subs
                .iter()
                .enumerate()
                .flat_map(|(i, s)| descend(instance, s, None, Some(Idx::Pos(i)), ctx))
                .collect(),
            _ => Vec::new(),
        },
        "anyOf" | "oneOf" => {
            let Py::List(subs) = v else {
                return Vec::new();
            };
            let mut all = Vec::new();
            let mut first_valid = None;
            for (i, s) in subs.iter().enumerate() {
                let errs = descend(instance, s, None, Some(Idx::Pos(i)), ctx);
                if errs.is_empty() {
                    first_valid = Some(i);
                    break;
                }
                all.extend(errs);
            }
            let mut out = Vec::new();
            match first_valid {
                None => {
                    let mut e = VError::new(format!(
                        "{} is not valid under any of the given schemas",
                        instance.repr()
                    ));
                    e.context = all;
                    out.push(e);
                }
                Some(first) if k == "oneOf" => {
                    let mut more: Vec<&Py> = subs[first + 1..]
                        .iter()
                        .filter(|s| is_valid(instance, s, ctx))
                        .collect();
                    if !more.is_empty() {
                        more.push(&subs[first]);
                        let reprs: Vec<String> = more.iter().map(|s| s.repr()).collect();
                        out.push(VError::new(format!(
                            "{} is valid under each of {}",
                            instance.repr(),
                            reprs.join(", ")
                        )));
                    }
                }
                Some(_) => {}
            }
            out
        }
        "not" => {
            if is_valid(instance, v, ctx) {
                vec![VError::new(format!(
                    "{} should not be valid under {}",
                    instance.repr(),
                    v.repr()
                ))]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

// ----- st2's preparation -----------------------------------------------------------------------

fn type_is(t: Option<&Py>, name: &str) -> bool {
    match t {
        Some(Py::Str(s)) => s == name,
        Some(Py::List(l)) => l.iter().any(|x| x.as_str() == Some(name)),
        _ => false,
    }
}

fn nullable(types: &Py) -> bool {
    match types {
        Py::List(l) => l.iter().any(|t| match t {
            Py::Str(s) => s == "null",
            Py::Dict(_) => t.get("type").and_then(Py::as_str).unwrap_or("string") == "null",
            _ => false,
        }),
        _ => false,
    }
}

/// `modify_schema_allow_default_none`.
fn allow_default_none(schema: &Py) -> Py {
    let mut schema = schema.clone();
    let names: Vec<String> = match schema.get("properties") {
        Some(Py::Dict(p)) => p.iter().map(|(k, _)| k.clone()).collect(),
        _ => return schema,
    };
    for name in names {
        let Some(prop) = schema.get_mut("properties").and_then(|p| p.get_mut(&name)) else {
            continue;
        };
        if !matches!(prop, Py::Dict(_)) {
            continue;
        }
        let optional = !prop.get("required").is_some_and(Py::truthy);
        let has_default = prop.get("default").is_some();
        let default_none = matches!(prop.get("default"), None | Some(Py::None));
        if (has_default || optional) && default_none {
            let any_of = prop.get("anyOf").cloned();
            let one_of = prop.get("oneOf").cloned();
            match (&any_of, &one_of, prop.get("type").cloned()) {
                (Some(a), _, _) if !nullable(a) => push_null_schema(prop, "anyOf"),
                (None, Some(o), _) if !nullable(o) => push_null_schema(prop, "oneOf"),
                (None, None, Some(Py::List(mut l))) if !nullable(&Py::List(l.clone())) => {
                    l.push(Py::Str("null".into()));
                    prop.set("type", Py::List(l));
                }
                (None, None, Some(Py::List(_))) => {}
                (None, None, t) => {
                    let t = t.unwrap_or(Py::Str("string".into()));
                    prop.set("type", Py::List(vec![t, Py::Str("null".into())]));
                }
                _ => {}
            }
        }
        let attribute_type = prop.get("type").cloned();
        let items = prop
            .get("items")
            .filter(|i| i.get("properties").is_some_and(Py::truthy));
        if let Some(items) = items.filter(|_| type_is(attribute_type.as_ref(), "array")) {
            let items = allow_default_none(items);
            prop.set("items", items);
        }
        if type_is(attribute_type.as_ref(), "object")
            && prop.get("properties").is_some_and(Py::truthy)
        {
            *prop = allow_default_none(prop);
        }
    }
    schema
}

fn push_null_schema(prop: &mut Py, key: &str) {
    if let Some(Py::List(l)) = prop.get_mut(key) {
        l.push(Py::Dict(vec![("type".into(), Py::Str("null".into()))]));
    }
}

/// `_assign_default_values_object`.
fn defaults_object(instance: &mut Py, schema: &Py) {
    if !matches!(instance, Py::Dict(_)) {
        return;
    }
    let Some(Py::Dict(props)) = schema.get("properties") else {
        return;
    };
    let dependencies = schema.get("dependencies");
    for (name, prop) in props {
        let mut has_default = prop.get("default").is_some();
        let required = match dependencies.and_then(|d| d.get(name)) {
            Some(Py::List(required)) if has_default => required.as_slice(),
            _ => &[],
        };
        for req in required.iter().filter_map(Py::as_str) {
            let dep_has_default = props
                .iter()
                .find(|(k, _)| k == req)
                .is_some_and(|(_, p)| p.get("default").is_some());
            if dep_has_default {
                continue;
            }
            if instance.get(req).is_none() {
                has_default = false;
                break;
            }
        }
        if has_default && matches!(instance.get(name), None | Some(Py::None)) {
            instance.set(name, prop.get("default").cloned().unwrap_or(Py::None));
        }
        let t = prop.get("type");
        if let Some(value) = instance.get_mut(name) {
            if matches!(value, Py::None) {
                continue;
            }
            if type_is(t, "array") {
                defaults_array(value, prop);
            } else if type_is(t, "object") {
                defaults_object(value, prop);
            }
        }
    }
}

/// `_assign_default_values_array`.
fn defaults_array(instance: &mut Py, schema: &Py) {
    let Py::List(values) = instance else {
        return;
    };
    let schemas: Vec<Py> = match schema.get("items") {
        Some(Py::Dict(d)) if !d.is_empty() => {
            vec![schema.get("items").cloned().unwrap_or(Py::None); values.len()]
        }
        Some(Py::List(l)) => l.clone(),
        _ => return,
    };
    for (i, item_schema) in schemas.iter().enumerate() {
        let Some(value) = values.get_mut(i) else {
            break;
        };
        if item_schema.get("default").is_some() && matches!(value, Py::None) {
            *value = item_schema.get("default").cloned().unwrap_or(Py::None);
        }
        if matches!(value, Py::None) {
            continue;
        }
        let t = item_schema.get("type");
        if type_is(t, "array") {
            defaults_array(value, item_schema);
        }
        if type_is(t, "object") {
            defaults_object(value, item_schema);
        }
    }
}

/// A local `$ref`: `#` or `#/a/b`.
fn resolve<'a>(root: &'a Py, reference: &str) -> Option<&'a Py> {
    let pointer = reference.strip_prefix('#')?;
    pointer
        .split('/')
        .filter(|p| !p.is_empty())
        .try_fold(root, |node, part| node.get(part))
}

/// st2's custom meta-schema (`st2common/util/schema/custom.json`, as
/// `get_draft_schema("custom", additional_properties=True)` loads it: without its
/// `additionalProperties: false`).
fn meta_schema() -> Py {
    let mut meta = Py::parse(include_str!("inquiry-meta-schema.json")).expect("valid meta-schema");
    if let Py::Dict(m) = &mut meta {
        m.retain(|(k, _)| k != "additionalProperties");
    }
    meta
}

/// `check_schema`: the first error of Draft-4 validation against the meta-schema, worded
/// as a `SchemaError` (`metaschema[...]`, `On schema[...]`).
fn check_schema(schema: &Py) -> Result<(), String> {
    let meta = meta_schema();
    let ctx = Ctx {
        root: &meta,
        meta: true,
    };
    match iter_errors(schema, &meta, ctx).into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e.render_as("metaschema", "schema")),
    }
}

/// `schema_utils.validate(instance=response, schema=schema, cls=CustomValidator,
/// use_default=True, allow_default_none=True)`: `Err` carries `str(ValidationError)`.
/// Like `validate_response`, the copy with defaults filled in is only validated, never
/// returned: st2 stores the response as it was sent.
pub(crate) fn validate(schema: &Py, response: &Py) -> Result<(), String> {
    let schema = allow_default_none(schema);
    let mut instance = response.clone();
    if schema.get("type").and_then(Py::as_str) == Some("object") {
        defaults_object(&mut instance, &schema);
    }
    check_schema(&schema)?;
    let ctx = Ctx {
        root: &schema,
        meta: false,
    };
    match best_match(iter_errors(&instance, &schema, ctx)) {
        None => Ok(()),
        Some(e) => Err(e.render_as("schema", "instance")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case of `inquiry-schema-cases.json`, whose expected texts come from st2's own
    /// `schema_utils.validate` under jsonschema 4.26.0.
    #[test]
    fn validates_and_words_errors_as_st2_does() {
        let fixture = Py::parse(include_str!("inquiry-schema-cases.json")).expect("fixture");
        let Some(Py::List(cases)) = fixture.get("cases") else {
            panic!("cases");
        };
        let mut failures = Vec::new();
        for case in cases {
            let name = case.get("name").and_then(Py::as_str).unwrap_or("?");
            let schema = case.get("schema").expect("schema");
            let response = case.get("response").expect("response");
            let got = validate(schema, response)
                .err()
                .map(|e| format!("Response for inquiry \"X\" did not pass schema validation. {e}"));
            let expected = case.get("error").and_then(Py::as_str).map(str::to_owned);
            if got != expected {
                failures.push(format!(
                    "{name}:\n  got:      {got:?}\n  expected: {expected:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn pformat_wraps_like_pprint() {
        // Expected: CPython 3.11 `pprint.pformat(..., width=72)`.
        let v = Py::parse(r#"{"a": "short", "b": [1, 2, 3]}"#).unwrap();
        assert_eq!(pformat(&v), "{'a': 'short', 'b': [1, 2, 3]}");
        let long = Py::Str("word ".repeat(20));
        assert_eq!(
            pformat(&long),
            "('word word word word word word word word word word word word word '\n 'word word word word word word word ')"
        );
    }

    #[test]
    fn parse_keeps_key_order() {
        let v = Py::parse(r#"{"z": 1, "a": {"y": true, "b": null}}"#).unwrap();
        assert_eq!(v.repr(), "{'z': 1, 'a': {'y': True, 'b': None}}");
    }
}
