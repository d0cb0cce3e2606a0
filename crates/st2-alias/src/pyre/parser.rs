//! A port of CPython 3.11's `re._parser` (`sre_parse`): Python regex syntax to [`Node`] tokens.
//!
//! The port keeps Python's order of checks so that exactly the patterns Python rejects are
//! rejected, with the same message text where practical (messages are informative only; callers
//! branch on [`ErrorKind`]). Warnings Python emits (`FutureWarning` for `[[`, `--`, ...;
//! `DeprecationWarning`s) do not change the result and are not reproduced.

use super::ast::{
    At, Category, FLAG_ASCII, FLAG_DEBUG, FLAG_DOTALL, FLAG_IGNORECASE, FLAG_LOCALE,
    FLAG_MULTILINE, FLAG_TEMPLATE, FLAG_UNICODE, FLAG_VERBOSE, MAXREPEAT, Node, RepeatKind, Seq,
    SetItem, width,
};
use super::unicode;
use super::{Error, ErrorKind};

/// `_sre.MAXGROUPS` on 64-bit CPython.
const MAXGROUPS: usize = 1_073_741_823;

/// Nesting depth we accept, in `_parse_sub`/`_parse` calls (two per group level, so about 100
/// nested groups). CPython gives up with `RecursionError` a little below 500 group levels; we
/// stop earlier so that our recursive passes stay well inside a 2 MiB thread stack even in debug
/// builds. Real alias formats nest a handful of levels.
const MAX_NESTING: usize = 200;

const TYPE_FLAGS: u32 = FLAG_ASCII | FLAG_LOCALE | FLAG_UNICODE;
const GLOBAL_FLAGS: u32 = FLAG_DEBUG | FLAG_TEMPLATE;

/// The result of parsing: the token tree plus what `sre_parse.State` learned on the way.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// Top-level tokens.
    pub seq: Seq,
    /// Global flags after inline `(?x)` flags and `fix_flags` (UNICODE added unless ASCII).
    pub flags: u32,
    /// Number of capturing groups (not counting group 0).
    pub groups: usize,
    /// Named groups in definition order, with their numbers.
    pub group_names: Vec<(String, usize)>,
}

/// One tokenizer token: a plain character or a backslash escape (`this` in `sre_parse`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    Ch(char),
    Esc(char),
}

impl Tok {
    fn len(self) -> usize {
        match self {
            Tok::Ch(_) => 1,
            Tok::Esc(_) => 2,
        }
    }

    fn push_to(self, out: &mut String) {
        match self {
            Tok::Ch(c) => out.push(c),
            Tok::Esc(c) => {
                out.push('\\');
                out.push(c);
            }
        }
    }

    fn text(self) -> String {
        let mut s = String::new();
        self.push_to(&mut s);
        s
    }

    fn is_ch(self, c: char) -> bool {
        self == Tok::Ch(c)
    }

    fn plain(self) -> Option<char> {
        match self {
            Tok::Ch(c) => Some(c),
            Tok::Esc(_) => None,
        }
    }
}

/// `sre_parse.Tokenizer`, over code points (Python positions count code points).
struct Tokenizer<'a> {
    pattern: &'a str,
    chars: Vec<char>,
    index: usize,
    next: Option<Tok>,
}

impl<'a> Tokenizer<'a> {
    fn new(pattern: &'a str) -> Result<Self, Error> {
        let mut t = Tokenizer {
            pattern,
            chars: pattern.chars().collect(),
            index: 0,
            next: None,
        };
        t.advance()?;
        Ok(t)
    }

    fn advance(&mut self) -> Result<(), Error> {
        let index = self.index;
        let Some(&c) = self.chars.get(index) else {
            self.next = None;
            return Ok(());
        };
        if c == '\\' {
            let Some(&e) = self.chars.get(index + 1) else {
                return Err(Error::at(
                    ErrorKind::Syntax,
                    "bad escape (end of pattern)".to_owned(),
                    self.pattern,
                    self.chars.len() - 1,
                ));
            };
            self.next = Some(Tok::Esc(e));
            self.index = index + 2;
        } else {
            self.next = Some(Tok::Ch(c));
            self.index = index + 1;
        }
        Ok(())
    }

    fn match_ch(&mut self, c: char) -> Result<bool, Error> {
        if self.next == Some(Tok::Ch(c)) {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn get(&mut self) -> Result<Option<Tok>, Error> {
        let this = self.next;
        self.advance()?;
        Ok(this)
    }

    fn next_is(&self, pred: impl Fn(char) -> bool) -> bool {
        matches!(self.next, Some(Tok::Ch(c)) if pred(c))
    }

    fn getwhile(&mut self, n: usize, pred: impl Fn(char) -> bool) -> Result<String, Error> {
        let mut out = String::new();
        for _ in 0..n {
            match self.next {
                Some(Tok::Ch(c)) if pred(c) => {
                    out.push(c);
                    self.advance()?;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn getuntil(&mut self, terminator: char, name: &str) -> Result<String, Error> {
        let mut result = String::new();
        let mut result_len = 0;
        loop {
            let c = self.next;
            self.advance()?;
            let Some(c) = c else {
                if result.is_empty() {
                    return Err(self.error(format!("missing {name}"), 0));
                }
                return Err(self.error(
                    format!("missing {terminator}, unterminated name"),
                    result_len,
                ));
            };
            if c.is_ch(terminator) {
                if result.is_empty() {
                    return Err(self.error(format!("missing {name}"), 1));
                }
                break;
            }
            c.push_to(&mut result);
            result_len += c.len();
        }
        Ok(result)
    }

    fn tell(&self) -> usize {
        self.index - self.next.map_or(0, Tok::len)
    }

    fn seek(&mut self, index: usize) -> Result<(), Error> {
        self.index = index;
        self.advance()
    }

    fn error(&self, msg: String, offset: usize) -> Error {
        Error::at(
            ErrorKind::Syntax,
            msg,
            self.pattern,
            self.tell().saturating_sub(offset),
        )
    }

    fn checkgroupname(&self, name: &str, offset: usize) -> Result<(), Error> {
        if !unicode::is_identifier(name) {
            return Err(self.error(
                format!("bad character in group name {}", py_repr(name)),
                name.chars().count() + offset,
            ));
        }
        Ok(())
    }
}

/// `sre_parse.State`.
struct State {
    flags: u32,
    group_order: Vec<(String, usize)>,
    groupwidths: Vec<Option<(u64, u64)>>,
    lookbehindgroups: Option<usize>,
    grouprefpos: Vec<(usize, usize)>,
}

impl State {
    /// `groupdict.get(name)`; patterns have few named groups, so a scan beats hashing.
    fn group_id(&self, name: &str) -> Option<usize> {
        self.group_order
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| *g)
    }

    fn groups(&self) -> usize {
        self.groupwidths.len()
    }

    fn opengroup(&mut self, name: Option<&str>) -> Result<usize, String> {
        let gid = self.groups();
        self.groupwidths.push(None);
        if self.groups() > MAXGROUPS {
            return Err("too many groups".to_owned());
        }
        if let Some(name) = name {
            if let Some(ogid) = self.group_id(name) {
                return Err(format!(
                    "redefinition of group name {} as group {gid}; was group {ogid}",
                    py_repr(name)
                ));
            }
            self.group_order.push((name.to_owned(), gid));
        }
        Ok(gid)
    }

    fn closegroup(&mut self, gid: usize, p: &[Node]) {
        self.groupwidths[gid] = Some(width(p, &self.groupwidths));
    }

    fn checkgroup(&self, gid: usize) -> bool {
        gid < self.groups() && self.groupwidths[gid].is_some()
    }

    fn checklookbehindgroup(&self, gid: usize, source: &Tokenizer<'_>) -> Result<(), Error> {
        if let Some(lookbehind) = self.lookbehindgroups {
            if !self.checkgroup(gid) {
                return Err(source.error("cannot refer to an open group".to_owned(), 0));
            }
            if gid >= lookbehind {
                return Err(source.error(
                    "cannot refer to group defined in the same lookbehind subpattern".to_owned(),
                    0,
                ));
            }
        }
        Ok(())
    }
}

/// `sre_parse.parse(pattern, flags)` for a `str` pattern.
pub(crate) fn parse(pattern: &str, flags: u32) -> Result<Parsed, Error> {
    let mut source = Tokenizer::new(pattern)?;
    let mut state = State {
        flags,
        group_order: Vec::new(),
        groupwidths: vec![None],
        lookbehindgroups: None,
        grouprefpos: Vec::new(),
    };
    let seq = parse_sub(&mut source, &mut state, flags & FLAG_VERBOSE != 0, 0)?;
    let flags = fix_flags(state.flags)?;
    if source.next.is_some() {
        return Err(source.error("unbalanced parenthesis".to_owned(), 0));
    }
    for &(g, pos) in &state.grouprefpos {
        if g >= state.groups() {
            return Err(Error::at(
                ErrorKind::Syntax,
                format!("invalid group reference {g}"),
                pattern,
                pos,
            ));
        }
    }
    Ok(Parsed {
        seq,
        flags,
        groups: state.groups() - 1,
        group_names: state.group_order,
    })
}

/// `sre_parse.fix_flags` for a `str` pattern (these are `ValueError`s in Python).
fn fix_flags(mut flags: u32) -> Result<u32, Error> {
    if flags & FLAG_LOCALE != 0 {
        return Err(Error::plain(
            ErrorKind::Value,
            "cannot use LOCALE flag with a str pattern",
        ));
    }
    if flags & FLAG_ASCII == 0 {
        flags |= FLAG_UNICODE;
    } else if flags & FLAG_UNICODE != 0 {
        return Err(Error::plain(
            ErrorKind::Value,
            "ASCII and UNICODE flags are incompatible",
        ));
    }
    Ok(flags)
}

/// `_parse_sub`: an alternation `a|b|c`, with sre's prefix factoring and set folding.
fn parse_sub(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    mut verbose: bool,
    nested: usize,
) -> Result<Seq, Error> {
    if nested > MAX_NESTING {
        return Err(Error::plain(
            ErrorKind::Recursion,
            "maximum recursion depth exceeded",
        ));
    }
    let head = parse_seq(source, state, verbose, nested + 1, nested == 0)?;
    if !source.match_ch('|')? {
        // No alternation: the common case, without allocating the list of alternatives.
        return Ok(head);
    }
    let mut items: Vec<Seq> = vec![head];
    loop {
        if nested == 0 {
            verbose = state.flags & FLAG_VERBOSE != 0;
        }
        items.push(parse_seq(source, state, verbose, nested + 1, false)?);
        if !source.match_ch('|')? {
            break;
        }
    }

    let mut subpattern = Seq::new();
    // Move a prefix shared by every alternative out of the branch.
    loop {
        let all_share = items.iter().all(|item| {
            !item.is_empty() && (std::ptr::eq(item, &items[0]) || item[0].same_token(&items[0][0]))
        });
        if !all_share {
            break;
        }
        let prefix = items[0][0].clone();
        for item in &mut items {
            item.remove(0);
        }
        subpattern.push(prefix);
    }

    // An alternation of single characters or non-negated sets becomes one set.
    let mut set = Vec::new();
    let mut foldable = true;
    for item in &items {
        if item.len() != 1 {
            foldable = false;
            break;
        }
        match &item[0] {
            Node::Literal(c) => set.push(SetItem::Literal(*c)),
            Node::In(av) if av.first() != Some(&SetItem::Negate) => set.extend_from_slice(av),
            _ => {
                foldable = false;
                break;
            }
        }
    }
    if foldable {
        subpattern.push(Node::In(uniq(set)));
        return Ok(subpattern);
    }
    subpattern.push(Node::Branch(items));
    Ok(subpattern)
}

/// `_uniq`: removes duplicates, keeping first occurrences in order.
fn uniq(mut items: Vec<SetItem>) -> Vec<SetItem> {
    let mut i = 0;
    while i < items.len() {
        if items[..i].contains(&items[i]) {
            items.remove(i);
        } else {
            i += 1;
        }
    }
    items
}

/// `SPECIAL_CHARS` of sre_parse: `.\[{()*+?^$|`.
fn is_special(c: char) -> bool {
    matches!(
        c,
        '.' | '\\' | '[' | '{' | '(' | ')' | '*' | '+' | '?' | '^' | '$' | '|'
    )
}

/// `WHITESPACE` of sre_parse (skipped in verbose mode).
fn is_verbose_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn is_octal(c: char) -> bool {
    c.is_ascii_digit() && c != '8' && c != '9'
}

/// `_parse`: one alternative (a sequence of items).
fn parse_seq(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    mut verbose: bool,
    nested: usize,
    first: bool,
) -> Result<Seq, Error> {
    // The top-level sequence of an st2 format is mostly one token per character: size it for
    // the rest of the pattern so that it is allocated once instead of grown step by step.
    let capacity = if first {
        source.chars.len() - source.tell().min(source.chars.len())
    } else {
        8
    };
    let mut subpattern: Seq = Vec::with_capacity(capacity);
    while let Some(this) = source.next {
        if this.is_ch('|') || this.is_ch(')') {
            break;
        }
        if !verbose
            && this.is_ch('[')
            && nested + 8 <= MAX_NESTING
            && let Some(nodes) = splice_st2_param(source, state)?
        {
            subpattern.extend(nodes);
            continue;
        }
        source.get()?;

        if verbose && let Tok::Ch(c) = this {
            if is_verbose_space(c) {
                continue;
            }
            if c == '#' {
                loop {
                    match source.get()? {
                        None => break,
                        Some(t) if t.is_ch('\n') => break,
                        Some(_) => {}
                    }
                }
                continue;
            }
        }

        let c = match this {
            Tok::Esc(e) => {
                let code = escape(source, e, state)?;
                subpattern.push(code);
                continue;
            }
            Tok::Ch(c) => c,
        };

        if !is_special(c) {
            subpattern.push(Node::Literal(u32::from(c)));
        } else if c == '[' {
            subpattern.push(parse_set(source)?);
        } else if matches!(c, '?' | '*' | '+' | '{') {
            let here = source.tell();
            let (min, max) = match c {
                '?' => (0, 1),
                '*' => (0, MAXREPEAT),
                '+' => (1, MAXREPEAT),
                _ => {
                    if source.next == Some(Tok::Ch('}')) {
                        subpattern.push(Node::Literal(u32::from('{')));
                        continue;
                    }
                    let lo = source.getwhile(usize::MAX, |c| c.is_ascii_digit())?;
                    let hi = if source.match_ch(',')? {
                        source.getwhile(usize::MAX, |c| c.is_ascii_digit())?
                    } else {
                        lo.clone()
                    };
                    if !source.match_ch('}')? {
                        subpattern.push(Node::Literal(u32::from('{')));
                        source.seek(here)?;
                        continue;
                    }
                    let mut min = 0;
                    let mut max = MAXREPEAT;
                    if !lo.is_empty() {
                        min = repeat_count(&lo)?;
                    }
                    if !hi.is_empty() {
                        max = repeat_count(&hi)?;
                        if max < min {
                            return Err(source.error(
                                "min repeat greater than max repeat".to_owned(),
                                source.tell() - here,
                            ));
                        }
                    }
                    (min, max)
                }
            };
            let item = match subpattern.last() {
                None | Some(Node::At(_)) => {
                    return Err(
                        source.error("nothing to repeat".to_owned(), source.tell() - here + 1)
                    );
                }
                Some(Node::Repeat { .. }) => {
                    return Err(
                        source.error("multiple repeat".to_owned(), source.tell() - here + 1)
                    );
                }
                Some(_) => subpattern.pop(),
            };
            let body = match item {
                Some(Node::Subpattern {
                    group: None,
                    add_flags: 0,
                    del_flags: 0,
                    body,
                }) => body,
                Some(node) => vec![node],
                None => Vec::new(),
            };
            let kind = if source.match_ch('?')? {
                RepeatKind::Lazy
            } else if source.match_ch('+')? {
                RepeatKind::Possessive
            } else {
                RepeatKind::Greedy
            };
            subpattern.push(Node::Repeat {
                kind,
                min,
                max,
                body,
            });
        } else if c == '.' {
            subpattern.push(Node::Any);
        } else if c == '(' {
            if let Some(node) =
                parse_group(source, state, &mut verbose, nested, first, &subpattern)?
            {
                subpattern.push(node);
            }
        } else if c == '^' {
            subpattern.push(Node::At(At::Beginning));
        } else if c == '$' {
            subpattern.push(Node::At(At::End));
        }
    }

    // Unpack non-capturing groups without flags into the parent.
    let plain_group = |n: &Node| {
        matches!(
            n,
            Node::Subpattern {
                group: None,
                add_flags: 0,
                del_flags: 0,
                ..
            }
        )
    };
    if !subpattern.iter().any(plain_group) {
        return Ok(subpattern);
    }
    let mut out = Vec::with_capacity(subpattern.len());
    for node in subpattern {
        match node {
            Node::Subpattern {
                group: None,
                add_flags: 0,
                del_flags: 0,
                body,
            } => out.extend(body),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The text StackStorm substitutes for every `{{name}}` (`param_match` without the captured
/// whitespace and the closing optional quote), split around the group name.
pub(crate) const ST2_PARAM_HEAD: &str = r#"["\']?(?P<"#;
/// See [`ST2_PARAM_HEAD`]: the group body after the name, up to the group's closing `)`.
pub(crate) const ST2_PARAM_BODY: &str = r#">(?:(?<=\').+?(?=\')|(?<=").+?(?=")|{.+?}|.+?))"#;

fn text_at(chars: &[char], at: usize, text: &str) -> bool {
    (at..)
        .zip(text.chars())
        .all(|(i, c)| chars.get(i) == Some(&c))
}

/// A shortcut for the group st2 writes for every placeholder. When the upcoming text is exactly
/// `["\']?(?P<name>(?:(?<=\').+?(?=\')|(?<=").+?(?=")|{.+?}|.+?))` with a valid name, the
/// tokens Python's parser would produce are known in advance: the optional-quote repeat and a
/// group whose body is the fixed alternation (width `(1, MAXREPEAT)`), represented as
/// [`Node::Param`]. Parsing it token by token gives the same tree, only slower; anything that
/// differs (an invalid name, verbose mode, other text) takes the normal path, so errors are
/// produced exactly as before.
fn splice_st2_param(
    source: &mut Tokenizer<'_>,
    state: &mut State,
) -> Result<Option<[Node; 2]>, Error> {
    let start = source.tell();
    let head_len = ST2_PARAM_HEAD.chars().count();
    if !text_at(&source.chars, start, ST2_PARAM_HEAD) {
        return Ok(None);
    }
    let name_start = start + head_len;
    let Some(name_len) = source.chars[name_start..].iter().position(|&c| c == '>') else {
        return Ok(None);
    };
    let name_end = name_start + name_len;
    let name: String = source.chars[name_start..name_end].iter().collect();
    if !unicode::is_identifier(&name) || !text_at(&source.chars, name_end, ST2_PARAM_BODY) {
        return Ok(None);
    }
    // Position the tokenizer just after `>` so that an `opengroup` error reports the position
    // Python reports.
    source.seek(name_end + 1)?;
    let gid = state
        .opengroup(Some(&name))
        .map_err(|msg| source.error(msg, name_len + 1))?;
    state.groupwidths[gid] = Some((1, u64::from(MAXREPEAT)));
    source.seek(name_end + ST2_PARAM_BODY.chars().count())?;
    let quote = Node::Repeat {
        kind: RepeatKind::Greedy,
        min: 0,
        max: 1,
        body: vec![Node::In(vec![
            SetItem::Literal(u32::from('"')),
            SetItem::Literal(u32::from('\'')),
        ])],
    };
    Ok(Some([quote, Node::Param(gid)]))
}

/// Parses a `{m,n}` count. Counts at or above MAXREPEAT are an `OverflowError` in Python.
fn repeat_count(digits: &str) -> Result<u32, Error> {
    let mut value: u64 = 0;
    for d in digits.bytes() {
        value = value.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    match u32::try_from(value) {
        Ok(v) if v < MAXREPEAT => Ok(v),
        _ => Err(Error::plain(
            ErrorKind::Overflow,
            "the repetition number is too large",
        )),
    }
}

/// The `(` branch of `_parse`. Returns `None` for constructs that add no token (comments,
/// global flags) and for group references already handled.
fn parse_group(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    verbose: &mut bool,
    nested: usize,
    first: bool,
    subpattern: &Seq,
) -> Result<Option<Node>, Error> {
    let start = source.tell() - 1;
    let mut capture = true;
    let mut atomic = false;
    let mut name: Option<String> = None;
    let mut add_flags = 0;
    let mut del_flags = 0;
    if source.match_ch('?')? {
        let Some(ch) = source.get()? else {
            return Err(source.error("unexpected end of pattern".to_owned(), 0));
        };
        match ch.plain() {
            Some('P') => {
                if source.match_ch('<')? {
                    let n = source.getuntil('>', "group name")?;
                    source.checkgroupname(&n, 1)?;
                    name = Some(n);
                } else if source.match_ch('=')? {
                    let n = source.getuntil(')', "group name")?;
                    source.checkgroupname(&n, 1)?;
                    let n_len = n.chars().count();
                    let Some(gid) = state.group_id(&n) else {
                        return Err(
                            source.error(format!("unknown group name {}", py_repr(&n)), n_len + 1)
                        );
                    };
                    if !state.checkgroup(gid) {
                        return Err(
                            source.error("cannot refer to an open group".to_owned(), n_len + 1)
                        );
                    }
                    state.checklookbehindgroup(gid, source)?;
                    return Ok(Some(Node::GroupRef(gid)));
                } else {
                    let Some(ch) = source.get()? else {
                        return Err(source.error("unexpected end of pattern".to_owned(), 0));
                    };
                    return Err(
                        source.error(format!("unknown extension ?P{}", ch.text()), ch.len() + 2)
                    );
                }
            }
            Some(':') => capture = false,
            Some('#') => {
                loop {
                    if source.next.is_none() {
                        return Err(source.error(
                            "missing ), unterminated comment".to_owned(),
                            source.tell() - start,
                        ));
                    }
                    if source.get()? == Some(Tok::Ch(')')) {
                        break;
                    }
                }
                return Ok(None);
            }
            Some(c @ ('=' | '!' | '<')) => {
                let mut ch = c;
                let mut behind = false;
                let mut outer_lookbehind = None;
                if ch == '<' {
                    let Some(t) = source.get()? else {
                        return Err(source.error("unexpected end of pattern".to_owned(), 0));
                    };
                    match t.plain() {
                        Some(c2 @ ('=' | '!')) => ch = c2,
                        _ => {
                            return Err(source
                                .error(format!("unknown extension ?<{}", t.text()), t.len() + 2));
                        }
                    }
                    behind = true;
                    outer_lookbehind = Some(state.lookbehindgroups);
                    if state.lookbehindgroups.is_none() {
                        state.lookbehindgroups = Some(state.groups());
                    }
                }
                let p = parse_sub(source, state, *verbose, nested + 1)?;
                if let Some(None) = outer_lookbehind {
                    state.lookbehindgroups = None;
                }
                if !source.match_ch(')')? {
                    return Err(source.error(
                        "missing ), unterminated subpattern".to_owned(),
                        source.tell() - start,
                    ));
                }
                return Ok(Some(Node::Assert {
                    behind,
                    negate: ch == '!',
                    body: p,
                }));
            }
            Some('(') => {
                return parse_conditional(source, state, *verbose, nested, start).map(Some);
            }
            Some('>') => {
                capture = false;
                atomic = true;
            }
            Some(c) if FLAG_CHARS.contains(c) || c == '-' => match parse_flags(source, state, c)? {
                None => {
                    if !first || !subpattern.is_empty() {
                        return Err(source.error(
                            "global flags not at the start of the expression".to_owned(),
                            source.tell() - start,
                        ));
                    }
                    *verbose = state.flags & FLAG_VERBOSE != 0;
                    return Ok(None);
                }
                Some((add, del)) => {
                    add_flags = add;
                    del_flags = del;
                    capture = false;
                }
            },
            _ => {
                return Err(source.error(format!("unknown extension ?{}", ch.text()), ch.len() + 1));
            }
        }
    }

    let group = if capture {
        match state.opengroup(name.as_deref()) {
            Ok(g) => Some(g),
            Err(msg) => {
                let offset = name.as_deref().map_or(0, |n| n.chars().count()) + 1;
                return Err(source.error(msg, offset));
            }
        }
    } else {
        None
    };
    let sub_verbose = (*verbose || add_flags & FLAG_VERBOSE != 0) && del_flags & FLAG_VERBOSE == 0;
    let p = parse_sub(source, state, sub_verbose, nested + 1)?;
    if !source.match_ch(')')? {
        return Err(source.error(
            "missing ), unterminated subpattern".to_owned(),
            source.tell() - start,
        ));
    }
    if let Some(g) = group {
        state.closegroup(g, &p);
    }
    if atomic {
        return Ok(Some(Node::Atomic(p)));
    }
    Ok(Some(Node::Subpattern {
        group,
        add_flags,
        del_flags,
        body: p,
    }))
}

/// `(?(id/name)yes|no)`.
fn parse_conditional(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    verbose: bool,
    nested: usize,
    start: usize,
) -> Result<Node, Error> {
    let condname = source.getuntil(')', "group name")?;
    let name_len = condname.chars().count();
    let condgroup = if unicode::is_identifier(&condname) {
        source.checkgroupname(&condname, 1)?;
        match state.group_id(&condname) {
            Some(g) => g,
            None => {
                return Err(source.error(
                    format!("unknown group name {}", py_repr(&condname)),
                    name_len + 1,
                ));
            }
        }
    } else {
        let Some(value) = py_int(&condname).filter(|v| *v >= 0) else {
            return Err(source.error(
                format!("bad character in group name {}", py_repr(&condname)),
                name_len + 1,
            ));
        };
        if value == 0 {
            return Err(source.error("bad group number".to_owned(), name_len + 1));
        }
        let group = match usize::try_from(value) {
            Ok(g) if g < MAXGROUPS => g,
            _ => {
                return Err(source.error(format!("invalid group reference {value}"), name_len + 1));
            }
        };
        if !state.grouprefpos.iter().any(|&(g, _)| g == group) {
            state
                .grouprefpos
                .push((group, source.tell() - name_len - 1));
        }
        group
    };
    state.checklookbehindgroup(condgroup, source)?;
    let yes = parse_seq(source, state, verbose, nested + 1, false)?;
    let no = if source.match_ch('|')? {
        let no = parse_seq(source, state, verbose, nested + 1, false)?;
        if source.next == Some(Tok::Ch('|')) {
            return Err(source.error(
                "conditional backref with more than two branches".to_owned(),
                0,
            ));
        }
        Some(no)
    } else {
        None
    };
    if !source.match_ch(')')? {
        return Err(source.error(
            "missing ), unterminated subpattern".to_owned(),
            source.tell() - start,
        ));
    }
    Ok(Node::GroupRefExists {
        group: condgroup,
        yes,
        no,
    })
}

const FLAG_CHARS: &str = "iLmsxatu";

fn flag_value(c: char) -> u32 {
    match c {
        'i' => FLAG_IGNORECASE,
        'L' => FLAG_LOCALE,
        'm' => FLAG_MULTILINE,
        's' => FLAG_DOTALL,
        'x' => FLAG_VERBOSE,
        'a' => FLAG_ASCII,
        't' => FLAG_TEMPLATE,
        _ => FLAG_UNICODE,
    }
}

fn is_flag_tok(t: Tok) -> Option<char> {
    t.plain().filter(|c| FLAG_CHARS.contains(*c))
}

fn tok_is_alpha(t: Tok) -> bool {
    // `str.isalpha()` on the token text; an escape token starts with a backslash.
    t.plain().is_some_and(char::is_alphabetic)
}

/// `_parse_flags`: `None` for global flags `(?i)`, `Some((add, del))` for `(?i-s:...)`.
fn parse_flags(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    first: char,
) -> Result<Option<(u32, u32)>, Error> {
    let mut add_flags = 0;
    let mut del_flags = 0;
    let mut ch = Tok::Ch(first);
    if first != '-' {
        loop {
            let c = ch.plain().unwrap_or('i');
            let flag = flag_value(c);
            if c == 'L' {
                return Err(source.error(
                    "bad inline flags: cannot use 'L' flag with a str pattern".to_owned(),
                    0,
                ));
            }
            add_flags |= flag;
            if flag & TYPE_FLAGS != 0 && add_flags & TYPE_FLAGS != flag {
                return Err(source.error(
                    "bad inline flags: flags 'a', 'u' and 'L' are incompatible".to_owned(),
                    0,
                ));
            }
            let Some(next) = source.get()? else {
                return Err(source.error("missing -, : or )".to_owned(), 0));
            };
            ch = next;
            if ch.is_ch(')') || ch.is_ch('-') || ch.is_ch(':') {
                break;
            }
            if is_flag_tok(ch).is_none() {
                let msg = if tok_is_alpha(ch) {
                    "unknown flag"
                } else {
                    "missing -, : or )"
                };
                return Err(source.error(msg.to_owned(), ch.len()));
            }
        }
    }
    if ch.is_ch(')') {
        state.flags |= add_flags;
        return Ok(None);
    }
    if add_flags & GLOBAL_FLAGS != 0 {
        return Err(source.error("bad inline flags: cannot turn on global flag".to_owned(), 1));
    }
    if ch.is_ch('-') {
        let Some(next) = source.get()? else {
            return Err(source.error("missing flag".to_owned(), 0));
        };
        ch = next;
        if is_flag_tok(ch).is_none() {
            let msg = if tok_is_alpha(ch) {
                "unknown flag"
            } else {
                "missing flag"
            };
            return Err(source.error(msg.to_owned(), ch.len()));
        }
        loop {
            let flag = flag_value(ch.plain().unwrap_or('i'));
            if flag & TYPE_FLAGS != 0 {
                return Err(source.error(
                    "bad inline flags: cannot turn off flags 'a', 'u' and 'L'".to_owned(),
                    0,
                ));
            }
            del_flags |= flag;
            let Some(next) = source.get()? else {
                return Err(source.error("missing :".to_owned(), 0));
            };
            ch = next;
            if ch.is_ch(':') {
                break;
            }
            if is_flag_tok(ch).is_none() {
                let msg = if tok_is_alpha(ch) {
                    "unknown flag"
                } else {
                    "missing :"
                };
                return Err(source.error(msg.to_owned(), ch.len()));
            }
        }
    }
    if del_flags & GLOBAL_FLAGS != 0 {
        return Err(source.error(
            "bad inline flags: cannot turn off global flag".to_owned(),
            1,
        ));
    }
    if add_flags & del_flags != 0 {
        return Err(source.error("bad inline flags: flag turned on and off".to_owned(), 1));
    }
    Ok(Some((add_flags, del_flags)))
}

/// The `[` branch of `_parse`: a character set.
fn parse_set(source: &mut Tokenizer<'_>) -> Result<Node, Error> {
    let here = source.tell() - 1;
    let mut set: Vec<SetItem> = Vec::new();
    let negate = source.match_ch('^')?;
    loop {
        let Some(this) = source.get()? else {
            return Err(source.error(
                "unterminated character set".to_owned(),
                source.tell() - here,
            ));
        };
        if this.is_ch(']') && !set.is_empty() {
            break;
        }
        let code1 = match this {
            Tok::Esc(e) => class_escape(source, e)?,
            Tok::Ch(c) => ClassCode::Literal(u32::from(c)),
        };
        if source.match_ch('-')? {
            let Some(that) = source.get()? else {
                return Err(source.error(
                    "unterminated character set".to_owned(),
                    source.tell() - here,
                ));
            };
            if that.is_ch(']') {
                set.push(code1.into_item());
                set.push(SetItem::Literal(u32::from('-')));
                break;
            }
            let code2 = match that {
                Tok::Esc(e) => class_escape(source, e)?,
                Tok::Ch(c) => ClassCode::Literal(u32::from(c)),
            };
            let (ClassCode::Literal(lo), ClassCode::Literal(hi)) = (code1, code2) else {
                return Err(source.error(
                    format!("bad character range {}-{}", this.text(), that.text()),
                    this.len() + 1 + that.len(),
                ));
            };
            if hi < lo {
                return Err(source.error(
                    format!("bad character range {}-{}", this.text(), that.text()),
                    this.len() + 1 + that.len(),
                ));
            }
            set.push(SetItem::Range(lo, hi));
        } else {
            set.push(code1.into_item());
        }
    }
    let mut set = uniq(set);
    if set.len() == 1
        && let SetItem::Literal(c) = set[0]
    {
        return Ok(if negate {
            Node::NotLiteral(c)
        } else {
            Node::Literal(c)
        });
    }
    if negate {
        set.insert(0, SetItem::Negate);
    }
    Ok(Node::In(set))
}

/// What an escape inside a set stands for.
#[derive(Clone, Copy)]
enum ClassCode {
    Literal(u32),
    Category(Category),
}

impl ClassCode {
    fn into_item(self) -> SetItem {
        match self {
            ClassCode::Literal(c) => SetItem::Literal(c),
            ClassCode::Category(c) => SetItem::Category(c),
        }
    }
}

fn simple_escape(e: char) -> Option<u32> {
    let c = match e {
        'a' => 0x07,
        'f' => 0x0C,
        'n' => 0x0A,
        'r' => 0x0D,
        't' => 0x09,
        'v' => 0x0B,
        '\\' => 0x5C,
        _ => return None,
    };
    Some(c)
}

fn category_escape(e: char) -> Option<Category> {
    Some(match e {
        'd' => Category::Digit,
        'D' => Category::NotDigit,
        's' => Category::Space,
        'S' => Category::NotSpace,
        'w' => Category::Word,
        'W' => Category::NotWord,
        _ => return None,
    })
}

fn bad_escape(source: &Tokenizer<'_>, escape: &str) -> Error {
    source.error(format!("bad escape {escape}"), escape.chars().count())
}

/// Shared `\x`, `\u`, `\U` and `\N` handling. Returns `Ok(None)` when `e` is none of them.
fn hex_escape(source: &mut Tokenizer<'_>, e: char) -> Result<Option<u32>, Error> {
    let digits = match e {
        'x' => 2,
        'u' => 4,
        'U' => 8,
        'N' => {
            // `\N{NAME}` needs the Unicode name database, which we do not ship.
            if !source.match_ch('{')? {
                return Err(source.error("missing {".to_owned(), 0));
            }
            let name = source.getuntil('}', "character name")?;
            return Err(Error::plain(
                ErrorKind::Unsupported,
                &format!("named Unicode escape \\N{{{name}}} is not supported"),
            ));
        }
        _ => return Ok(None),
    };
    let hex = source.getwhile(digits, |c| c.is_ascii_hexdigit())?;
    let escape = format!("\\{e}{hex}");
    if hex.len() != digits {
        return Err(source.error(
            format!("incomplete escape {escape}"),
            escape.chars().count(),
        ));
    }
    let value = u32::from_str_radix(&hex, 16).unwrap_or(u32::MAX);
    if i32::try_from(value).is_err() {
        // `chr()` takes a C int: past `i32::MAX` it raises OverflowError, which sre_parse lets
        // through (it only catches ValueError). Found by the pyre_diff fuzzer.
        return Err(Error::plain(
            ErrorKind::Overflow,
            "Python int too large to convert to C int",
        ));
    }
    if value > 0x10FFFF {
        // `chr()` raises ValueError, which sre_parse turns into "bad escape".
        return Err(bad_escape(source, &escape));
    }
    Ok(Some(value))
}

/// `_class_escape`: an escape inside `[...]`.
fn class_escape(source: &mut Tokenizer<'_>, e: char) -> Result<ClassCode, Error> {
    if e == 'b' {
        return Ok(ClassCode::Literal(0x08));
    }
    if let Some(c) = simple_escape(e) {
        return Ok(ClassCode::Literal(c));
    }
    if let Some(cat) = category_escape(e) {
        return Ok(ClassCode::Category(cat));
    }
    if let Some(c) = hex_escape(source, e)? {
        return Ok(ClassCode::Literal(c));
    }
    if is_octal(e) {
        let more = source.getwhile(2, is_octal)?;
        let escape = format!("\\{e}{more}");
        let value = u32::from_str_radix(&escape[1..], 8).unwrap_or(u32::MAX);
        if value > 0o377 {
            return Err(source.error(
                format!("octal escape value {escape} outside of range 0-0o377"),
                escape.chars().count(),
            ));
        }
        return Ok(ClassCode::Literal(value));
    }
    if e.is_ascii_digit() || e.is_ascii_alphabetic() {
        return Err(bad_escape(source, &format!("\\{e}")));
    }
    Ok(ClassCode::Literal(u32::from(e)))
}

/// `_escape`: an escape outside a set.
fn escape(source: &mut Tokenizer<'_>, e: char, state: &State) -> Result<Node, Error> {
    let at = match e {
        'A' => Some(At::BeginningString),
        'b' => Some(At::Boundary),
        'B' => Some(At::NonBoundary),
        'Z' => Some(At::EndString),
        _ => None,
    };
    if let Some(at) = at {
        return Ok(Node::At(at));
    }
    if let Some(cat) = category_escape(e) {
        return Ok(Node::In(vec![SetItem::Category(cat)]));
    }
    if let Some(c) = simple_escape(e) {
        return Ok(Node::Literal(c));
    }
    if let Some(c) = hex_escape(source, e)? {
        return Ok(Node::Literal(c));
    }
    if e == '0' {
        let more = source.getwhile(2, is_octal)?;
        let value = u32::from_str_radix(&format!("0{more}"), 8).unwrap_or(0);
        return Ok(Node::Literal(value));
    }
    if e.is_ascii_digit() {
        let mut escape = format!("\\{e}");
        if source.next_is(|c| c.is_ascii_digit()) {
            let d2 = source.get()?.and_then(Tok::plain).unwrap_or('0');
            escape.push(d2);
            if is_octal(e) && is_octal(d2) && source.next_is(is_octal) {
                let d3 = source.get()?.and_then(Tok::plain).unwrap_or('0');
                escape.push(d3);
                let value = u32::from_str_radix(&escape[1..], 8).unwrap_or(u32::MAX);
                if value > 0o377 {
                    return Err(source.error(
                        format!("octal escape value {escape} outside of range 0-0o377"),
                        escape.len(),
                    ));
                }
                return Ok(Node::Literal(value));
            }
        }
        let group: usize = escape[1..].parse().unwrap_or(usize::MAX);
        if group < state.groups() {
            if !state.checkgroup(group) {
                return Err(source.error("cannot refer to an open group".to_owned(), escape.len()));
            }
            state.checklookbehindgroup(group, source)?;
            return Ok(Node::GroupRef(group));
        }
        return Err(source.error(format!("invalid group reference {group}"), escape.len() - 1));
    }
    if e.is_ascii_alphabetic() {
        return Err(bad_escape(source, &format!("\\{e}")));
    }
    Ok(Node::Literal(u32::from(e)))
}

/// Python's `int(str)` for the conditional-group number: surrounding whitespace, a sign,
/// Unicode decimal digits and single underscores between digits are accepted.
///
/// "Whitespace" is not quite `str.strip()`'s: CPython turns non-ASCII spaces into `' '`, then
/// strips with the C-locale `Py_ISSPACE`, which leaves out the ASCII separators U+001C..U+001F
/// that `str.isspace()` counts (so `int("\x1e2")` fails; found by the pyre_diff fuzzer).
fn py_int(s: &str) -> Option<i128> {
    let int_space = |c: char| {
        if c.is_ascii() {
            matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
        } else {
            unicode::is_space(u32::from(c))
        }
    };
    let s = s.trim_matches(int_space);
    let (negative, digits) = match s.chars().next()? {
        '+' => (false, &s[1..]),
        '-' => (true, &s[1..]),
        _ => (false, s),
    };
    let mut value: i128 = 0;
    let mut seen_digit = false;
    let mut last_underscore = false;
    for c in digits.chars() {
        if c == '_' {
            if !seen_digit || last_underscore {
                return None;
            }
            last_underscore = true;
            continue;
        }
        let d = unicode::decimal_value(c)?;
        value = value.saturating_mul(10).saturating_add(i128::from(d));
        seen_digit = true;
        last_underscore = false;
    }
    if !seen_digit || last_underscore {
        return None;
    }
    Some(if negative { -value } else { value })
}

/// Python's `repr()` of a `str`, for error messages (and for anything else that must quote
/// text as Python does, such as the StackStorm test double).
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            // What `unicode_repr` escapes: everything `str.isprintable()` rejects (controls,
            // format characters, separators other than space, unassigned code points), in its
            // shortest form (found by the pyre_diff fuzz target: U+00A0 was shown raw).
            c if !unicode::is_printable(c as u32) => {
                let code = c as u32;
                out.push_str(&if code < 0x100 {
                    format!("\\x{code:02x}")
                } else if code < 0x10000 {
                    format!("\\u{code:04x}")
                } else {
                    format!("\\U{code:08x}")
                });
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: &str) -> String {
        match parse(p, FLAG_DOTALL) {
            Ok(_) => panic!("{p:?} should fail"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn group_name_errors_match_python() {
        assert_eq!(
            err("go (?P<a=>x)"),
            "bad character in group name 'a=' at position 7"
        );
        assert_eq!(
            err("(?P<a>x)(?P<a>y)"),
            "redefinition of group name 'a' as group 2; was group 1 at position 12"
        );
    }

    #[test]
    fn braces_are_literal_unless_a_quantifier() {
        let p = parse("{{a}}x{,}y{2}", 0).expect("valid");
        assert!(matches!(p.seq[0], Node::Literal(123)));
        assert!(matches!(
            p.seq[5],
            Node::Repeat {
                min: 0,
                max: MAXREPEAT,
                ..
            }
        ));
    }

    #[test]
    fn alternation_folding_follows_sre_parse() {
        let p = parse("(?:a|b|c)", 0).expect("valid");
        assert!(matches!(&p.seq[..], [Node::In(items)] if items.len() == 3));
        let p = parse("(?:^a|^b)", 0).expect("valid");
        assert!(matches!(&p.seq[..], [Node::At(At::Beginning), Node::In(_)]));
    }

    #[test]
    fn global_flags_only_at_start() {
        assert!(parse("(?i)abc", 0).is_ok());
        assert_eq!(
            err("^\\s*(?i)run"),
            "global flags not at the start of the expression at position 4"
        );
    }

    #[test]
    fn python_int_accepts_unicode_digits_and_underscores() {
        assert_eq!(py_int(" +1_0 "), Some(10));
        assert_eq!(py_int("٣"), Some(3));
        assert_eq!(py_int("1__0"), None);
        // int() strips U+0085 and U+3000 but not the ASCII separators U+001C..U+001F.
        assert_eq!(py_int("\u{85}2\u{3000}"), Some(2));
        for sep in ['\x1c', '\x1d', '\x1e', '\x1f'] {
            assert_eq!(py_int(&format!("{sep}2")), None, "{sep:?}");
        }
        assert_eq!(py_int("_1"), None);
    }
}
