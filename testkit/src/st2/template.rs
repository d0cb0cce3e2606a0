//! A small Jinja2 subset, enough for alias `ack` and `result` formats.
//!
//! StackStorm renders these with Jinja2 (`trim_blocks` and `lstrip_blocks` on, no autoescape),
//! strict about undefined names for `ack` and lenient for `result`. Supported here:
//! `{{ expr }}`, `{% if/elif/else/endif %}`, `{% for x in … %}` / `{% for k, v in … %}` (with
//! `loop.*` and `{% else %}`), `{# comments #}`, `-`/`+` whitespace control, attribute and item
//! access, literals, `and/or/not`, comparisons, `in`, `is` tests, `+ - * / % ~`, `a if b else c`,
//! the common filters and a few dict/str methods. Unsupported constructs (`set`, macros,
//! `include`, …) are template errors, which is what a broken template is to StackStorm too.
//! Undefined values follow Jinja2: printing, truth-testing or iterating one fails only in strict
//! mode, but any attribute access on one fails in both, with Jinja2's own message text.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::python::{py_json, py_repr, py_str, py_str_repr, py_truthy};

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
    // Jinja2's default `keep_trailing_newline=False` drops one final newline of the source.
    let src = src
        .strip_suffix("\r\n")
        .or_else(|| src.strip_suffix('\n'))
        .unwrap_or(src);
    let pieces = lex(src)?;
    let mut pos = 0;
    let (nodes, stop) = parse_nodes(&pieces, &mut pos, &[])?;
    if let Some(tag) = stop {
        return Err(syntax(&format!("Encountered unknown tag '{tag}'.")));
    }
    let mut env = Env {
        roots,
        mode,
        scopes: Vec::new(),
    };
    let mut out = String::new();
    env.render_nodes(&nodes, &mut out)?;
    Ok(out)
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

fn syntax(msg: &str) -> RenderError {
    RenderError::Template(msg.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Lexing: text, `{{ }}`, `{% %}`, with Jinja2's whitespace rules applied here.

#[derive(Debug)]
enum Piece {
    Text(String),
    Var(String),
    Block(String),
}

#[derive(Clone, Copy, PartialEq)]
enum Strip {
    None,
    All,
    Newline,
}

fn lex(src: &str) -> Result<Vec<Piece>, RenderError> {
    let mut pieces = Vec::new();
    let mut i = 0;
    let mut strip_next = Strip::None;
    loop {
        let open = find_open(src, i);
        let text_end = open.map_or(src.len(), |(p, _)| p);
        let mut text = src[i..text_end].to_owned();
        match strip_next {
            Strip::All => text = text.trim_start().to_owned(),
            Strip::Newline => {
                if let Some(rest) = text
                    .strip_prefix("\r\n")
                    .or_else(|| text.strip_prefix('\n'))
                {
                    text = rest.to_owned();
                }
            }
            Strip::None => {}
        }
        let Some((pos, kind)) = open else {
            if !text.is_empty() {
                pieces.push(Piece::Text(text));
            }
            break;
        };
        let mut inner_start = pos + 2;
        match src[inner_start..].chars().next() {
            Some('-') => {
                inner_start += 1;
                text = text.trim_end().to_owned();
            }
            Some('+') => inner_start += 1,
            _ if kind != b'{' => {
                // lstrip_blocks: the tag is alone on its line so far in the *source*.
                let line_start = src[..pos].rfind('\n').map_or(0, |n| n + 1);
                if src[line_start..pos].chars().all(|c| c == ' ' || c == '\t') {
                    let keep = text.trim_end_matches([' ', '\t']).len();
                    text.truncate(keep);
                }
            }
            _ => {}
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let close_delim = match kind {
            b'{' => "}}",
            b'%' => "%}",
            _ => "#}",
        };
        let close = find_close(src, inner_start, close_delim, kind != b'#').ok_or_else(|| {
            syntax(&format!(
                "unexpected end of template, expected '{close_delim}'."
            ))
        })?;
        let (inner_end, trim_after) = if close > inner_start && src[..close].ends_with('-') {
            (close - 1, true)
        } else {
            (close, false)
        };
        let inner = src[inner_start..inner_end].trim().to_owned();
        match kind {
            b'{' => pieces.push(Piece::Var(inner)),
            b'%' => pieces.push(Piece::Block(inner)),
            _ => {}
        }
        strip_next = if trim_after {
            Strip::All
        } else if kind != b'{' {
            Strip::Newline
        } else {
            Strip::None
        };
        i = close + 2;
    }
    Ok(pieces)
}

fn find_open(src: &str, from: usize) -> Option<(usize, u8)> {
    let bytes = src.as_bytes();
    let mut i = from;
    while i + 1 < bytes.len() {
        if bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%' | b'#') {
            return Some((i, bytes[i + 1]));
        }
        i += 1;
    }
    None
}

fn find_close(src: &str, from: usize, delim: &str, skip_strings: bool) -> Option<usize> {
    let bytes = src.as_bytes();
    let d = delim.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
            }
        } else if skip_strings && (b == b'\'' || b == b'"') {
            quote = Some(b);
        } else if i + 1 < bytes.len() && b == d[0] && bytes[i + 1] == d[1] {
            return Some(i);
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Template structure.

#[derive(Debug)]
enum Node {
    Text(String),
    Out(Expr),
    If(Vec<(Expr, Vec<Node>)>, Vec<Node>),
    For {
        targets: Vec<String>,
        iter: Expr,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

fn keyword(tag: &str) -> &str {
    tag.split_whitespace().next().unwrap_or("")
}

fn parse_nodes(
    pieces: &[Piece],
    pos: &mut usize,
    stop: &[&str],
) -> Result<(Vec<Node>, Option<String>), RenderError> {
    let mut nodes = Vec::new();
    while *pos < pieces.len() {
        let piece = &pieces[*pos];
        *pos += 1;
        match piece {
            Piece::Text(t) => nodes.push(Node::Text(t.clone())),
            Piece::Var(src) => nodes.push(Node::Out(parse_expr(src)?)),
            Piece::Block(tag) => {
                let kw = keyword(tag);
                if stop.contains(&kw) {
                    return Ok((nodes, Some(tag.clone())));
                }
                match kw {
                    "if" => nodes.push(parse_if(tag, pieces, pos)?),
                    "for" => nodes.push(parse_for(tag, pieces, pos)?),
                    other => return Err(syntax(&format!("Encountered unknown tag '{other}'."))),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn parse_if(tag: &str, pieces: &[Piece], pos: &mut usize) -> Result<Node, RenderError> {
    let mut branches = Vec::new();
    let mut cond = parse_expr(tag["if".len()..].trim())?;
    loop {
        let (body, end) = parse_nodes(pieces, pos, &["elif", "else", "endif"])?;
        let end = end
            .ok_or_else(|| syntax("Unexpected end of template. Jinja was looking for 'endif'."))?;
        branches.push((cond, body));
        match keyword(&end) {
            "elif" => cond = parse_expr(end["elif".len()..].trim())?,
            "else" => {
                let (otherwise, end) = parse_nodes(pieces, pos, &["endif"])?;
                if end.is_none() {
                    return Err(syntax(
                        "Unexpected end of template. Jinja was looking for 'endif'.",
                    ));
                }
                return Ok(Node::If(branches, otherwise));
            }
            _ => return Ok(Node::If(branches, Vec::new())),
        }
    }
}

fn parse_for(tag: &str, pieces: &[Piece], pos: &mut usize) -> Result<Node, RenderError> {
    let spec = tag["for".len()..].trim();
    let (targets, iter) = spec
        .split_once(" in ")
        .ok_or_else(|| syntax("expected 'in' in for loop"))?;
    let targets: Vec<String> = targets.split(',').map(|t| t.trim().to_owned()).collect();
    if targets.iter().any(|t| t.is_empty()) {
        return Err(syntax("invalid for loop target"));
    }
    let iter = parse_expr(iter.trim())?;
    let (body, end) = parse_nodes(pieces, pos, &["else", "endfor"])?;
    let end =
        end.ok_or_else(|| syntax("Unexpected end of template. Jinja was looking for 'endfor'."))?;
    let otherwise = if keyword(&end) == "else" {
        let (otherwise, end) = parse_nodes(pieces, pos, &["endfor"])?;
        if end.is_none() {
            return Err(syntax(
                "Unexpected end of template. Jinja was looking for 'endfor'.",
            ));
        }
        otherwise
    } else {
        Vec::new()
    };
    Ok(Node::For {
        targets,
        iter,
        body,
        otherwise,
    })
}

// ---------------------------------------------------------------------------------------------
// Expressions.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Num(Value),
    Op(&'static str),
}

const OPS: [&str; 25] = [
    "==", "!=", "<=", ">=", "//", "**", "+", "-", "*", "/", "%", "~", "|", ".", ",", "(", ")", "[",
    "]", "{", "}", ":", "<", ">", "=",
];

fn tokenize(src: &str) -> Result<Vec<Tok>, RenderError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Name(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let num = if float {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            } else {
                text.parse::<i64>().ok().map(Value::from)
            };
            toks.push(Tok::Num(
                num.ok_or_else(|| syntax(&format!("bad number {text}")))?,
            ));
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(syntax("unexpected end of string"));
                };
                i += 1;
                if ch == c {
                    break;
                }
                if ch == '\\' {
                    let esc = chars.get(i).copied().unwrap_or('\\');
                    i += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                } else {
                    s.push(ch);
                }
            }
            toks.push(Tok::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(**op))
                .ok_or_else(|| syntax(&format!("unexpected char '{c}'")))?;
            i += op.chars().count();
            toks.push(Tok::Op(op));
        }
    }
    Ok(toks)
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Name(String),
    Attr(Box<Expr>, String),
    Item(Box<Expr>, Box<Expr>),
    Call(Box<Expr>, Vec<Expr>),
    Filter(Box<Expr>, String, Vec<Expr>),
    Test(Box<Expr>, String, Vec<Expr>, bool),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(&'static str, Box<Expr>, Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    List(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    Cond(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
}

const FILTERS: [&str; 24] = [
    "length",
    "count",
    "trim",
    "lower",
    "upper",
    "capitalize",
    "title",
    "default",
    "d",
    "string",
    "join",
    "first",
    "last",
    "tojson",
    "to_json_string",
    "to_yaml_string",
    "int",
    "float",
    "abs",
    "replace",
    "list",
    "e",
    "escape",
    "safe",
];
const TESTS: [&str; 14] = [
    "defined",
    "undefined",
    "none",
    "mapping",
    "string",
    "number",
    "sequence",
    "iterable",
    "boolean",
    "true",
    "false",
    "in",
    "sameas",
    "equalto",
];

fn parse_expr(src: &str) -> Result<Expr, RenderError> {
    let toks = tokenize(src)?;
    let mut p = ExprParser { toks, pos: 0 };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(syntax(&format!("unexpected token in expression '{src}'")));
    }
    Ok(e)
}

struct ExprParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl ExprParser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }
    fn peek_name(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Name(n)) if n == name)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.peek_op(op);
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn eat_name(&mut self, name: &str) -> bool {
        let hit = self.peek_name(name);
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn expect_op(&mut self, op: &str) -> Result<(), RenderError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(syntax(&format!("expected '{op}'")))
        }
    }
    fn name(&mut self) -> Result<String, RenderError> {
        match self.toks.get(self.pos) {
            Some(Tok::Name(n)) => {
                self.pos += 1;
                Ok(n.clone())
            }
            _ => Err(syntax("expected a name")),
        }
    }

    fn expr(&mut self) -> Result<Expr, RenderError> {
        let e = self.or()?;
        if self.eat_name("if") {
            let cond = self.or()?;
            let otherwise = if self.eat_name("else") {
                Some(Box::new(self.expr()?))
            } else {
                None
            };
            return Ok(Expr::Cond(Box::new(e), Box::new(cond), otherwise));
        }
        Ok(e)
    }
    fn or(&mut self) -> Result<Expr, RenderError> {
        let mut e = self.and()?;
        while self.eat_name("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, RenderError> {
        let mut e = self.not()?;
        while self.eat_name("and") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> Result<Expr, RenderError> {
        if self.eat_name("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.compare()
    }
    fn compare(&mut self) -> Result<Expr, RenderError> {
        let mut e = self.concat()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(o)) if matches!(*o, "==" | "!=" | "<" | ">" | "<=" | ">=") => *o,
                Some(Tok::Name(n)) if n == "in" => "in",
                Some(Tok::Name(n))
                    if n == "not"
                        && matches!(self.toks.get(self.pos + 1), Some(Tok::Name(m)) if m == "in") =>
                {
                    self.pos += 1;
                    "not in"
                }
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Cmp(op, Box::new(e), Box::new(self.concat()?));
        }
    }
    fn concat(&mut self) -> Result<Expr, RenderError> {
        let mut e = self.sum()?;
        while self.eat_op("~") {
            e = Expr::Bin("~", Box::new(e), Box::new(self.sum()?));
        }
        Ok(e)
    }
    fn sum(&mut self) -> Result<Expr, RenderError> {
        let mut e = self.product()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.product()?));
        }
    }
    fn product(&mut self) -> Result<Expr, RenderError> {
        let mut e = self.unary()?;
        loop {
            let op = ["*", "//", "/", "%"]
                .into_iter()
                .find(|op| self.peek_op(op));
            let Some(op) = op else { return Ok(e) };
            self.pos += 1;
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
    }
    fn unary(&mut self) -> Result<Expr, RenderError> {
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        let primary = self.primary()?;
        let e = self.postfix(primary)?;
        self.filters(e)
    }
    fn filters(&mut self, mut e: Expr) -> Result<Expr, RenderError> {
        loop {
            if self.eat_op("|") {
                let name = self.name()?;
                if !FILTERS.contains(&name.as_str()) {
                    return Err(syntax(&format!("No filter named '{name}'.")));
                }
                let args = if self.peek_op("(") {
                    self.args()?
                } else {
                    Vec::new()
                };
                e = Expr::Filter(Box::new(e), name, args);
            } else if self.eat_name("is") {
                let negated = self.eat_name("not");
                let name = self.name()?;
                if !TESTS.contains(&name.as_str()) {
                    return Err(syntax(&format!("No test named '{name}'.")));
                }
                let args = if self.peek_op("(") {
                    self.args()?
                } else if matches!(self.peek(), Some(Tok::Str(_) | Tok::Num(_))) {
                    vec![self.primary()?]
                } else {
                    Vec::new()
                };
                e = Expr::Test(Box::new(e), name, args, negated);
            } else {
                return Ok(e);
            }
        }
    }
    fn args(&mut self) -> Result<Vec<Expr>, RenderError> {
        self.expect_op("(")?;
        let mut args = Vec::new();
        while !self.eat_op(")") {
            // Keyword arguments (`default(x, boolean=true)`) are taken by position.
            if matches!(self.peek(), Some(Tok::Name(_)))
                && matches!(self.toks.get(self.pos + 1), Some(Tok::Op("=")))
            {
                self.pos += 2;
            }
            args.push(self.expr()?);
            if !self.eat_op(",") {
                self.expect_op(")")?;
                break;
            }
        }
        Ok(args)
    }
    fn postfix(&mut self, mut e: Expr) -> Result<Expr, RenderError> {
        loop {
            if self.eat_op(".") {
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Name(n)) => {
                        self.pos += 1;
                        e = Expr::Attr(Box::new(e), n);
                    }
                    Some(Tok::Num(n)) => {
                        self.pos += 1;
                        e = Expr::Item(Box::new(e), Box::new(Expr::Lit(n)));
                    }
                    _ => return Err(syntax("expected a name after '.'")),
                }
            } else if self.eat_op("[") {
                let key = self.expr()?;
                self.expect_op("]")?;
                e = Expr::Item(Box::new(e), Box::new(key));
            } else if self.peek_op("(") {
                let args = self.args()?;
                e = Expr::Call(Box::new(e), args);
            } else {
                return Ok(e);
            }
        }
    }
    fn primary(&mut self) -> Result<Expr, RenderError> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or_else(|| syntax("unexpected end of expression"))?;
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => {
                // Adjacent string literals concatenate, as in Python.
                let mut s = s;
                while let Some(Tok::Str(more)) = self.peek().cloned() {
                    self.pos += 1;
                    s.push_str(&more);
                }
                Expr::Lit(Value::String(s))
            }
            Tok::Num(n) => Expr::Lit(n),
            Tok::Name(n) => match n.as_str() {
                "true" | "True" => Expr::Lit(Value::Bool(true)),
                "false" | "False" => Expr::Lit(Value::Bool(false)),
                "none" | "None" => Expr::Lit(Value::Null),
                _ => Expr::Name(n),
            },
            Tok::Op("(") => {
                if self.eat_op(")") {
                    return Ok(Expr::List(Vec::new()));
                }
                let first = self.expr()?;
                if self.eat_op(")") {
                    return Ok(first);
                }
                let mut items = vec![first];
                while self.eat_op(",") {
                    if self.peek_op(")") {
                        break;
                    }
                    items.push(self.expr()?);
                }
                self.expect_op(")")?;
                Expr::List(items)
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                while !self.eat_op("]") {
                    items.push(self.expr()?);
                    if !self.eat_op(",") {
                        self.expect_op("]")?;
                        break;
                    }
                }
                Expr::List(items)
            }
            Tok::Op("{") => {
                let mut items = Vec::new();
                while !self.eat_op("}") {
                    let k = self.expr()?;
                    self.expect_op(":")?;
                    let v = self.expr()?;
                    items.push((k, v));
                    if !self.eat_op(",") {
                        self.expect_op("}")?;
                        break;
                    }
                }
                Expr::Dict(items)
            }
            other => return Err(syntax(&format!("unexpected {other:?}"))),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

#[derive(Debug, Clone)]
enum Val {
    Json(Value, Option<&'static str>),
    Undef(String),
    Method(Value, String),
}

fn json(v: Value) -> Val {
    Val::Json(v, None)
}

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

fn no_attr(v: &Value, class: Option<&'static str>, name: &str) -> Val {
    Val::Undef(format!(
        "'{}' has no attribute {}",
        type_repr(v, class),
        py_str_repr(name)
    ))
}

const DICT_METHODS: [&str; 4] = ["items", "keys", "values", "get"];
const STR_METHODS: [&str; 9] = [
    "split",
    "strip",
    "lstrip",
    "rstrip",
    "lower",
    "upper",
    "startswith",
    "endswith",
    "replace",
];

struct Env<'a> {
    roots: &'a [Root<'a>],
    mode: Undefined,
    scopes: Vec<HashMap<String, Val>>,
}

impl Env<'_> {
    fn render_nodes(&mut self, nodes: &[Node], out: &mut String) -> Result<(), RenderError> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Out(e) => {
                    let v = self.eval(e)?;
                    out.push_str(&self.to_str(&v)?);
                }
                Node::If(branches, otherwise) => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        let v = self.eval(cond)?;
                        if self.truthy(&v)? {
                            self.render_nodes(body, out)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.render_nodes(otherwise, out)?;
                    }
                }
                Node::For {
                    targets,
                    iter,
                    body,
                    otherwise,
                } => {
                    let v = self.eval(iter)?;
                    let items = self.iterate(&v)?;
                    if items.is_empty() {
                        self.render_nodes(otherwise, out)?;
                        continue;
                    }
                    let len = items.len();
                    for (index, item) in items.into_iter().enumerate() {
                        let mut scope = HashMap::new();
                        if targets.len() == 1 {
                            scope.insert(targets[0].clone(), json(item));
                        } else {
                            let parts = match item {
                                Value::Array(parts) if parts.len() == targets.len() => parts,
                                _ => return Err(syntax("cannot unpack loop item")),
                            };
                            for (t, p) in targets.iter().zip(parts) {
                                scope.insert(t.clone(), json(p));
                            }
                        }
                        let lp = serde_json::json!({
                            "index": index + 1, "index0": index, "first": index == 0,
                            "last": index + 1 == len, "length": len,
                            "revindex": len - index, "revindex0": len - index - 1,
                        });
                        scope.insert("loop".into(), json(lp));
                        self.scopes.push(scope);
                        let r = self.render_nodes(body, out);
                        self.scopes.pop();
                        r?;
                    }
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Val {
        for scope in self.scopes.iter().rev() {
            if let Some(v) = scope.get(name) {
                return v.clone();
            }
        }
        match self.roots.iter().find(|r| r.name == name) {
            Some(r) => Val::Json(r.value.clone(), r.class),
            None => Val::Undef(format!("{} is undefined", py_str_repr(name))),
        }
    }

    fn eval(&mut self, e: &Expr) -> Result<Val, RenderError> {
        Ok(match e {
            Expr::Lit(v) => json(v.clone()),
            Expr::Name(n) => self.lookup(n),
            Expr::Attr(obj, name) => {
                let obj = self.eval(obj)?;
                getattr(obj, name)?
            }
            Expr::Item(obj, key) => {
                let obj = self.eval(obj)?;
                let key = self.eval(key)?;
                let key = self.defined(key)?;
                getitem(obj, &key)?
            }
            Expr::Call(callee, args) => {
                let callee = self.eval(callee)?;
                let args = self.eval_args(args)?;
                call_method(callee, &args)?
            }
            Expr::Filter(v, name, args) => {
                let v = self.eval(v)?;
                let args = self.eval_args(args)?;
                self.filter(v, name, &args)?
            }
            Expr::Test(v, name, args, negated) => {
                let v = self.eval(v)?;
                let args = self.eval_args(args)?;
                json(Value::Bool(self.test(&v, name, &args)? != *negated))
            }
            Expr::Not(v) => {
                let v = self.eval(v)?;
                json(Value::Bool(!self.truthy(&v)?))
            }
            Expr::And(a, b) => {
                let a = self.eval(a)?;
                if self.truthy(&a)? { self.eval(b)? } else { a }
            }
            Expr::Or(a, b) => {
                let a = self.eval(a)?;
                if self.truthy(&a)? { a } else { self.eval(b)? }
            }
            Expr::Cmp(op, a, b) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                json(Value::Bool(self.compare(op, &a, &b)?))
            }
            Expr::Bin(op, a, b) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                self.binary(op, a, b)?
            }
            Expr::Neg(v) => {
                let v = self.eval(v)?;
                match self.defined(v)? {
                    Value::Number(n) if n.is_i64() => json(Value::from(-n.as_i64().unwrap_or(0))),
                    Value::Number(n) => json(float(-n.as_f64().unwrap_or(0.0))),
                    other => {
                        return Err(syntax(&format!(
                            "bad operand type for unary -: {}",
                            py_repr(&other)
                        )));
                    }
                }
            }
            Expr::List(items) => {
                let mut out = Vec::new();
                for item in items {
                    let v = self.eval(item)?;
                    out.push(self.defined(v)?);
                }
                json(Value::Array(out))
            }
            Expr::Dict(items) => {
                let mut out = Map::new();
                for (k, v) in items {
                    let k = self.eval(k)?;
                    let v = self.eval(v)?;
                    out.insert(py_str(&self.defined(k)?), self.defined(v)?);
                }
                json(Value::Object(out))
            }
            Expr::Cond(then, cond, otherwise) => {
                let c = self.eval(cond)?;
                if self.truthy(&c)? {
                    self.eval(then)?
                } else if let Some(o) = otherwise {
                    self.eval(o)?
                } else {
                    Val::Undef("the inline if-expression evaluated to false and no else section was defined.".into())
                }
            }
        })
    }

    fn eval_args(&mut self, args: &[Expr]) -> Result<Vec<Val>, RenderError> {
        args.iter().map(|a| self.eval(a)).collect()
    }

    /// A value that must exist for the operation (arithmetic, keys): undefined fails in both
    /// modes, as Jinja2's `Undefined` raises on these dunder methods.
    fn defined(&self, v: Val) -> Result<Value, RenderError> {
        match v {
            Val::Json(v, _) => Ok(v),
            Val::Undef(m) => Err(RenderError::Undefined(m)),
            Val::Method(_, name) => Err(syntax(&format!("cannot use method '{name}' as a value"))),
        }
    }

    /// A value where lenient mode lets undefined through as `default`.
    fn soft(&self, v: &Val, default: Value) -> Result<Value, RenderError> {
        match v {
            Val::Undef(m) if self.mode == Undefined::Strict => {
                Err(RenderError::Undefined(m.clone()))
            }
            Val::Undef(_) => Ok(default),
            other => self.defined(other.clone()),
        }
    }

    fn to_str(&self, v: &Val) -> Result<String, RenderError> {
        Ok(match v {
            Val::Undef(_) => {
                self.soft(v, Value::Null)?;
                String::new()
            }
            other => py_str(&self.defined(other.clone())?),
        })
    }

    fn truthy(&self, v: &Val) -> Result<bool, RenderError> {
        Ok(py_truthy(&self.soft(v, Value::Bool(false))?))
    }

    fn iterate(&self, v: &Val) -> Result<Vec<Value>, RenderError> {
        match self.soft(v, Value::Array(Vec::new()))? {
            Value::Array(items) => Ok(items),
            Value::Object(map) => Ok(map.keys().cloned().map(Value::String).collect()),
            Value::String(s) => Ok(s.chars().map(|c| Value::String(c.to_string())).collect()),
            other => Err(syntax(&format!(
                "'{}' object is not iterable",
                type_name(&other)
            ))),
        }
    }

    fn compare(&self, op: &str, a: &Val, b: &Val) -> Result<bool, RenderError> {
        if op == "==" || op == "!=" {
            // Jinja2's Undefined compares equal only to another Undefined; StrictUndefined
            // refuses to compare at all.
            let eq = match (a, b) {
                (Val::Undef(m), _) | (_, Val::Undef(m)) if self.mode == Undefined::Strict => {
                    return Err(RenderError::Undefined(m.clone()));
                }
                (Val::Undef(_), Val::Undef(_)) => true,
                (Val::Undef(_), _) | (_, Val::Undef(_)) => false,
                _ => json_eq(&self.defined(a.clone())?, &self.defined(b.clone())?),
            };
            return Ok(eq == (op == "=="));
        }
        if op == "in" || op == "not in" {
            let needle = self.soft(a, Value::Null)?;
            let hay = self.soft(b, Value::Array(Vec::new()))?;
            let found = match &hay {
                Value::Array(items) => items.iter().any(|i| json_eq(i, &needle)),
                Value::Object(map) => matches!(&needle, Value::String(k) if map.contains_key(k)),
                Value::String(s) => match &needle {
                    Value::String(n) => s.contains(n.as_str()),
                    _ => return Err(syntax("'in <string>' requires string as left operand")),
                },
                other => {
                    return Err(syntax(&format!(
                        "argument of type '{}' is not iterable",
                        type_name(other)
                    )));
                }
            };
            return Ok(found == (op == "in"));
        }
        let a = self.defined(a.clone())?;
        let b = self.defined(b.clone())?;
        let ord = match (&a, &b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0)),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        }
        .ok_or_else(|| {
            syntax(&format!(
                "'{op}' not supported between instances of '{}' and '{}'",
                type_name(&a),
                type_name(&b)
            ))
        })?;
        Ok(match op {
            "<" => ord.is_lt(),
            ">" => ord.is_gt(),
            "<=" => ord.is_le(),
            _ => ord.is_ge(),
        })
    }

    fn binary(&self, op: &str, a: Val, b: Val) -> Result<Val, RenderError> {
        if op == "~" {
            return Ok(json(Value::String(self.to_str(&a)? + &self.to_str(&b)?)));
        }
        let a = self.defined(a)?;
        let b = self.defined(b)?;
        let bad = || {
            syntax(&format!(
                "unsupported operand type(s) for {op}: '{}' and '{}'",
                type_name(&a),
                type_name(&b)
            ))
        };
        Ok(json(match (&a, &b) {
            (Value::String(x), Value::String(y)) if op == "+" => Value::String(format!("{x}{y}")),
            (Value::Array(x), Value::Array(y)) if op == "+" => {
                Value::Array(x.iter().chain(y.iter()).cloned().collect())
            }
            (Value::Number(x), Value::Number(y)) => {
                if let (Some(i), Some(j), true) = (x.as_i64(), y.as_i64(), op != "/") {
                    match op {
                        "+" => Value::from(i + j),
                        "-" => Value::from(i - j),
                        "*" => Value::from(i * j),
                        "//" if j != 0 => Value::from(i.div_euclid(j)),
                        "%" if j != 0 => Value::from(i.rem_euclid(j)),
                        _ => return Err(syntax("integer division or modulo by zero")),
                    }
                } else {
                    let (i, j) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                    float(match op {
                        "+" => i + j,
                        "-" => i - j,
                        "*" => i * j,
                        "/" if j != 0.0 => i / j,
                        "//" if j != 0.0 => (i / j).floor(),
                        "%" if j != 0.0 => i.rem_euclid(j),
                        _ => return Err(syntax("float division by zero")),
                    })
                }
            }
            _ => return Err(bad()),
        }))
    }

    fn filter(&self, v: Val, name: &str, args: &[Val]) -> Result<Val, RenderError> {
        let arg = |i: usize| args.get(i).cloned();
        Ok(match name {
            "default" | "d" => {
                let fallback = arg(0).unwrap_or_else(|| json(Value::String(String::new())));
                let boolean = match arg(1) {
                    Some(b) => self.truthy(&b)?,
                    None => false,
                };
                match &v {
                    Val::Undef(_) => fallback,
                    Val::Json(j, _) if boolean && !py_truthy(j) => fallback,
                    _ => v,
                }
            }
            "length" | "count" => json(Value::from(
                match self.soft(&v, Value::Array(Vec::new()))? {
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    Value::String(s) => s.chars().count(),
                    other => {
                        return Err(syntax(&format!(
                            "object of type '{}' has no len()",
                            type_name(&other)
                        )));
                    }
                },
            )),
            "trim" => json(Value::String(self.to_str(&v)?.trim().to_owned())),
            "lower" => json(Value::String(self.to_str(&v)?.to_lowercase())),
            "upper" => json(Value::String(self.to_str(&v)?.to_uppercase())),
            "capitalize" => {
                let s = self.to_str(&v)?.to_lowercase();
                let mut c = s.chars();
                json(Value::String(match c.next() {
                    Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                    None => String::new(),
                }))
            }
            "title" => json(Value::String(
                self.to_str(&v)?
                    .split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        match c.next() {
                            Some(f) => {
                                f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase()
                            }
                            None => String::new(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            )),
            "string" | "e" | "escape" | "safe" => json(Value::String(self.to_str(&v)?)),
            "join" => {
                let sep = match arg(0) {
                    Some(s) => self.to_str(&s)?,
                    None => String::new(),
                };
                let items = self.iterate(&v)?;
                json(Value::String(
                    items.iter().map(py_str).collect::<Vec<_>>().join(&sep),
                ))
            }
            "first" | "last" => {
                let items = self.iterate(&v)?;
                let item = if name == "first" {
                    items.first()
                } else {
                    items.last()
                };
                match item {
                    Some(i) => json(i.clone()),
                    None => Val::Undef(format!("No {name} item, sequence was empty.")),
                }
            }
            "list" => json(Value::Array(self.iterate(&v)?)),
            "tojson" | "to_json_string" => {
                json(Value::String(py_json(&self.soft(&v, Value::Null)?)))
            }
            "to_yaml_string" => json(Value::String(yaml(&self.soft(&v, Value::Null)?))),
            "int" => {
                let s = self.soft(&v, Value::Null)?;
                json(Value::from(match &s {
                    Value::Number(n) => n.as_f64().unwrap_or(0.0).trunc() as i64,
                    Value::String(t) => t.trim().parse::<i64>().unwrap_or(0),
                    Value::Bool(b) => i64::from(*b),
                    _ => 0,
                }))
            }
            "float" => {
                let s = self.soft(&v, Value::Null)?;
                json(float(match &s {
                    Value::Number(n) => n.as_f64().unwrap_or(0.0),
                    Value::String(t) => t.trim().parse::<f64>().unwrap_or(0.0),
                    _ => 0.0,
                }))
            }
            "abs" => match self.defined(v)? {
                Value::Number(n) if n.is_i64() => json(Value::from(n.as_i64().unwrap_or(0).abs())),
                Value::Number(n) => json(float(n.as_f64().unwrap_or(0.0).abs())),
                other => {
                    return Err(syntax(&format!(
                        "bad operand type for abs(): '{}'",
                        type_name(&other)
                    )));
                }
            },
            "replace" => {
                let s = self.to_str(&v)?;
                let (Some(old), Some(new)) = (arg(0), arg(1)) else {
                    return Err(syntax("replace() needs two arguments"));
                };
                json(Value::String(
                    s.replace(&self.to_str(&old)?, &self.to_str(&new)?),
                ))
            }
            other => return Err(syntax(&format!("No filter named '{other}'."))),
        })
    }

    fn test(&self, v: &Val, name: &str, args: &[Val]) -> Result<bool, RenderError> {
        if name == "defined" {
            return Ok(!matches!(v, Val::Undef(_)));
        }
        if name == "undefined" {
            return Ok(matches!(v, Val::Undef(_)));
        }
        let Val::Json(j, _) = v else {
            return Ok(false);
        };
        Ok(match name {
            "none" => j.is_null(),
            "mapping" => j.is_object(),
            "string" => j.is_string(),
            "number" => j.is_number(),
            "boolean" => j.is_boolean(),
            "true" => j == &Value::Bool(true),
            "false" => j == &Value::Bool(false),
            "sequence" | "iterable" => j.is_array() || j.is_string() || j.is_object(),
            "in" | "sameas" | "equalto" => {
                let other = args.first().cloned().unwrap_or(json(Value::Null));
                if name == "in" {
                    self.compare("in", v, &other)?
                } else {
                    self.compare("==", v, &other)?
                }
            }
            other => return Err(syntax(&format!("No test named '{other}'."))),
        })
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn type_name(v: &Value) -> &'static str {
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

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn getattr(obj: Val, name: &str) -> Result<Val, RenderError> {
    match obj {
        Val::Undef(m) => Err(RenderError::Undefined(m)),
        Val::Method(_, m) => Err(syntax(&format!(
            "'builtin_function_or_method' object has no attribute '{name}' (on {m})"
        ))),
        Val::Json(Value::Object(map), class) => Ok(match map.get(name) {
            Some(v) => json(v.clone()),
            None if class.is_none() && DICT_METHODS.contains(&name) => {
                Val::Method(Value::Object(map), name.to_owned())
            }
            None => no_attr(&Value::Object(Map::new()), class, name),
        }),
        Val::Json(Value::String(s), _) if STR_METHODS.contains(&name) => {
            Ok(Val::Method(Value::String(s), name.to_owned()))
        }
        Val::Json(v, class) => Ok(no_attr(&v, class, name)),
    }
}

fn getitem(obj: Val, key: &Value) -> Result<Val, RenderError> {
    match (obj, key) {
        (Val::Undef(m), _) => Err(RenderError::Undefined(m)),
        (Val::Json(Value::Object(map), class), Value::String(k)) => Ok(match map.get(k) {
            Some(v) => json(v.clone()),
            None => no_attr(&Value::Object(Map::new()), class, k),
        }),
        (Val::Json(Value::Array(items), _), Value::Number(n)) if n.is_i64() => {
            let i = n.as_i64().unwrap_or(0);
            let idx = if i < 0 { items.len() as i64 + i } else { i };
            Ok(match usize::try_from(idx).ok().and_then(|i| items.get(i)) {
                Some(v) => json(v.clone()),
                None => Val::Undef(format!("list object has no element {i}")),
            })
        }
        (Val::Json(Value::String(s), _), Value::Number(n)) if n.is_i64() => {
            let i = n.as_i64().unwrap_or(0);
            let chars: Vec<char> = s.chars().collect();
            let idx = if i < 0 { chars.len() as i64 + i } else { i };
            Ok(match usize::try_from(idx).ok().and_then(|i| chars.get(i)) {
                Some(c) => json(Value::String(c.to_string())),
                None => Val::Undef(format!("str object has no element {i}")),
            })
        }
        (obj @ Val::Json(..), Value::String(k)) => getattr(obj, k),
        (Val::Json(v, class), k) => Ok(Val::Undef(format!(
            "{} has no element {}",
            type_repr(&v, class),
            py_repr(k)
        ))),
        (Val::Method(_, m), _) => Err(syntax(&format!(
            "'builtin_function_or_method' object is not subscriptable ({m})"
        ))),
    }
}

fn call_method(callee: Val, args: &[Val]) -> Result<Val, RenderError> {
    let (target, name) = match callee {
        Val::Method(t, n) => (t, n),
        Val::Undef(m) => return Err(RenderError::Undefined(m)),
        Val::Json(v, _) => {
            return Err(syntax(&format!(
                "'{}' object is not callable",
                type_name(&v)
            )));
        }
    };
    let arg = |i: usize| -> Result<Option<Value>, RenderError> {
        match args.get(i) {
            None => Ok(None),
            Some(Val::Json(v, _)) => Ok(Some(v.clone())),
            Some(Val::Undef(m)) => Err(RenderError::Undefined(m.clone())),
            Some(Val::Method(..)) => Err(syntax("a method is not a valid argument")),
        }
    };
    let arg_str =
        |i: usize| -> Result<Option<String>, RenderError> { Ok(arg(i)?.map(|v| py_str(&v))) };
    Ok(json(match (&target, name.as_str()) {
        (Value::Object(map), "items") => Value::Array(
            map.iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), v.clone()]))
                .collect(),
        ),
        (Value::Object(map), "keys") => {
            Value::Array(map.keys().cloned().map(Value::String).collect())
        }
        (Value::Object(map), "values") => Value::Array(map.values().cloned().collect()),
        (Value::Object(map), "get") => {
            let key = arg_str(0)?.unwrap_or_default();
            map.get(&key).cloned().or(arg(1)?).unwrap_or(Value::Null)
        }
        (Value::String(s), "split") => {
            let parts: Vec<Value> = match arg(0)? {
                Some(Value::String(sep)) if !sep.is_empty() => s
                    .split(sep.as_str())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
                _ => s
                    .split_whitespace()
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
            };
            Value::Array(parts)
        }
        (Value::String(s), "strip") => Value::String(s.trim().to_owned()),
        (Value::String(s), "lstrip") => Value::String(s.trim_start().to_owned()),
        (Value::String(s), "rstrip") => Value::String(s.trim_end().to_owned()),
        (Value::String(s), "lower") => Value::String(s.to_lowercase()),
        (Value::String(s), "upper") => Value::String(s.to_uppercase()),
        (Value::String(s), "startswith") => {
            Value::Bool(s.starts_with(&arg_str(0)?.unwrap_or_default()))
        }
        (Value::String(s), "endswith") => {
            Value::Bool(s.ends_with(&arg_str(0)?.unwrap_or_default()))
        }
        (Value::String(s), "replace") => Value::String(s.replace(
            &arg_str(0)?.unwrap_or_default(),
            &arg_str(1)?.unwrap_or_default(),
        )),
        (_, other) => return Err(syntax(&format!("unsupported method '{other}'"))),
    }))
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

    /// Cases rendered by Jinja2 itself (see the file's `note`); the subset must agree.
    #[test]
    fn subset_renders_like_jinja2() {
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
    fn unknown_filters_and_tags_are_template_errors() {
        assert!(matches!(
            render("{{ x | frobnicate }}", &[], Undefined::Lenient),
            Err(RenderError::Template(_))
        ));
        assert!(matches!(
            render("{% set x = 1 %}", &[], Undefined::Lenient),
            Err(RenderError::Template(_))
        ));
    }
}
