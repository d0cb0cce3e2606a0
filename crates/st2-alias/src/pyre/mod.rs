//! A faithful implementation of the Python 3.11 `re` dialect, as far as StackStorm formats need it.
//!
//! StackStorm alias formats *are* Python regexes, and the regex st2 builds for each `{{param}}`
//! uses lookbehind and lookahead, which the `regex` crate cannot run. This module parses patterns
//! exactly as `re._parser` does (module `parser`), compiles them with `re._compiler`'s choices
//! (module `program`) and runs them on a backtracking VM with `_sre`'s semantics (module `vm`):
//! leftmost first, lazy and possessive quantifiers, atomic groups, back-references, conditionals,
//! scoped flags, Python's Unicode character classes and simple case folding. Compiled programs
//! are stored compactly in an arena (module `arena`) so that thousands can stay loaded.
//!
//! Known deviations (documented in the alias module's report): `\N{NAME}` escapes are rejected as
//! unsupported (no Unicode name database), groups nested more than ~100 deep are rejected (Python
//! manages ~490 before `RecursionError`), and a step budget turns catastrophic backtracking into
//! [`SearchError::LimitExceeded`] where Python would just take a very long time.

pub(crate) mod arena;
pub(crate) mod ast;
pub(crate) mod parser;
pub(crate) mod program;
pub(crate) mod tables;
pub(crate) mod unicode;
pub(crate) mod vm;

pub use ast::{
    FLAG_ASCII, FLAG_DOTALL, FLAG_IGNORECASE, FLAG_MULTILINE, FLAG_UNICODE, FLAG_VERBOSE,
};
pub use parser::py_repr;
pub use tables::UNICODE_VERSION;
pub use vm::Cache;

use arena::{Arena, PackedRegex, RegexParts, RegexView};
use ast::{AnchorSide, Node};

/// Default step budget for one search: generous for chat-sized input (a typical format needs a
/// few hundred steps), small enough that a pathological pattern gives up within milliseconds.
pub const DEFAULT_STEP_LIMIT: u64 = 10_000_000;

/// Which Python exception a rejected pattern corresponds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `re.error`: the pattern is not valid Python regex syntax.
    Syntax,
    /// `OverflowError`: a repeat count of 2**32-1 or more, or flags past a C int.
    Overflow,
    /// `ValueError`: incompatible flags.
    Value,
    /// `RecursionError`: the pattern nests too deeply.
    Recursion,
    /// Valid for Python but not implemented here (`\N{...}`).
    Unsupported,
}

/// A pattern that cannot be compiled, with Python's message (e.g. `bad escape \q at position 3`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error located in the pattern, formatted the way `re.error` formats itself.
    pub(crate) fn at(kind: ErrorKind, msg: String, pattern: &str, pos: usize) -> Self {
        let mut message = format!("{msg} at position {pos}");
        if pattern.contains('\n') {
            let before: Vec<char> = pattern.chars().take(pos).collect();
            let line = before.iter().filter(|c| **c == '\n').count() + 1;
            let col = match before.iter().rposition(|c| *c == '\n') {
                Some(nl) => pos - nl,
                None => pos + 1,
            };
            message = format!("{message} (line {line}, column {col})");
        }
        Self { kind, message }
    }

    /// An error without a position.
    pub(crate) fn plain(kind: ErrorKind, msg: &str) -> Self {
        Self {
            kind,
            message: msg.to_owned(),
        }
    }

    /// Which Python exception this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, as Python would print it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A search that could not be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The step budget ran out (catastrophic backtracking).
    #[error("regex step limit exceeded")]
    LimitExceeded,
}

impl From<vm::LimitExceeded> for SearchError {
    fn from(_: vm::LimitExceeded) -> Self {
        SearchError::LimitExceeded
    }
}

/// Spans of one match, in code points: index 0 is the whole match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captures {
    spans: Vec<Option<(usize, usize)>>,
}

impl Captures {
    /// The span of group `i` (0 = whole match), `None` if the group did not take part.
    pub fn get(&self, i: usize) -> Option<(usize, usize)> {
        self.spans.get(i).copied().flatten()
    }

    /// The text of group `i` taken from `input`.
    pub fn text(&self, input: &[char], i: usize) -> Option<String> {
        self.get(i).map(|(s, e)| input[s..e].iter().collect())
    }

    /// Start of the whole match.
    pub fn start(&self) -> usize {
        self.get(0).map_or(0, |(s, _)| s)
    }

    /// End of the whole match.
    pub fn end(&self) -> usize {
        self.get(0).map_or(0, |(_, e)| e)
    }

    /// Number of spans (groups + 1).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Always false: there is at least the whole-match span.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// A parsed (not yet compiled) pattern: what `re._parser.parse` returns.
#[derive(Debug, Clone)]
pub struct Parsed {
    inner: parser::Parsed,
}

impl Parsed {
    /// Parses `pattern` with the given global flags.
    pub fn new(pattern: &str, flags: u32) -> Result<Self, Error> {
        Ok(Self {
            inner: parser::parse(pattern, flags)?,
        })
    }

    /// st2's `search_regex_tokens` for `^`/`\A`.
    pub fn has_begin_anchor(&self) -> bool {
        ast::has_anchor(&self.inner.seq, AnchorSide::Begin)
    }

    /// st2's `search_regex_tokens` for `$`/`\Z`.
    pub fn has_end_anchor(&self) -> bool {
        ast::has_anchor(&self.inner.seq, AnchorSide::End)
    }
}

/// A compiled Python regex (owned; the matcher keeps many in one shared arena instead).
#[derive(Debug)]
pub struct Regex {
    arena: Arena,
    handle: PackedRegex,
}

/// Parses and compiles into the parts an arena stores.
pub(crate) fn compile_parts(parsed: &parser::Parsed) -> Result<RegexParts, Error> {
    let group_widths = group_widths(parsed);
    let prog = program::compile(&parsed.seq, parsed.flags, parsed.groups, &group_widths)?;
    let mut required: Vec<String> = Vec::new();
    required_literals(&parsed.seq, parsed.flags, &mut String::new(), &mut required);
    required.sort_by_key(|s| std::cmp::Reverse(s.len()));
    required.dedup();
    Ok(RegexParts {
        prog,
        names: parsed
            .group_names
            .iter()
            .map(|(n, g)| (n.clone(), u32::try_from(*g).unwrap_or(u32::MAX)))
            .collect(),
        required,
    })
}

impl Regex {
    /// `re.compile(pattern, flags)`.
    pub fn new(pattern: &str, flags: u32) -> Result<Self, Error> {
        let parsed = parser::parse(pattern, flags)?;
        let parts = compile_parts(&parsed)?;
        // CPython hands the flags to `_sre.compile` as a C int once the pattern has parsed and
        // compiled, so flags past `i32::MAX` fail there, after every other error (found by the
        // pyre_diff fuzzer).
        if i32::try_from(flags).is_err() {
            return Err(Error::plain(
                ErrorKind::Overflow,
                "Python int too large to convert to C int",
            ));
        }
        Self::from_parts(&parts)
    }

    fn from_parts(parts: &RegexParts) -> Result<Self, Error> {
        let mut arena = Arena::default();
        let handle = arena.push_regex(parts);
        arena.finish();
        Ok(Self { arena, handle })
    }

    pub(crate) fn view(&self) -> RegexView<'_> {
        self.arena.regex(&self.handle)
    }

    /// Table sizes of the compiled program, for tests that check which compilation path ran.
    #[cfg(test)]
    pub(crate) fn debug_sizes(&self) -> String {
        let v = self.view();
        format!(
            "insts {} lits {} sets {} rep_ones {} reps {} subs {}",
            v.prog.insts.len(),
            v.prog.lits.len(),
            v.prog.sets.len(),
            v.prog.rep_ones.len(),
            v.prog.reps.len(),
            v.prog.subs.len(),
        )
    }

    /// Named groups in definition order with their numbers (Python's `groupindex`).
    pub fn group_names(&self) -> impl Iterator<Item = (&str, usize)> {
        self.view().group_names()
    }

    /// Number of capturing groups.
    pub fn groups(&self) -> usize {
        self.view().prog.groups
    }

    /// Literal strings that any match must contain (possibly none).
    pub fn required_literals(&self) -> impl Iterator<Item = &str> {
        self.view().required_literals()
    }

    /// `pattern.match(text)`: a match starting exactly at `pos`.
    pub fn match_at(
        &self,
        input: &[char],
        pos: usize,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Option<Captures>, SearchError> {
        self.view().match_at(input, pos, cache, budget)
    }

    /// `pattern.search(text, pos)`; with `must_advance`, an empty match at `pos` is rejected
    /// (the rule `finditer` applies after an empty match).
    pub fn search_from(
        &self,
        input: &[char],
        pos: usize,
        must_advance: bool,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Option<Captures>, SearchError> {
        self.view()
            .search_from(input, pos, must_advance, cache, budget)
    }

    /// `pattern.search(text)`.
    pub fn search(
        &self,
        input: &[char],
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Option<Captures>, SearchError> {
        self.view().search_from(input, 0, false, cache, budget)
    }

    /// `pattern.finditer(text)`, collected (Python 3.7+ empty-match rules).
    pub fn find_all(
        &self,
        input: &[char],
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Vec<Captures>, SearchError> {
        self.view().find_all(input, cache, budget)
    }
}

impl RegexView<'_> {
    fn captures(&self, cache: &Cache, start: usize, end: usize) -> Captures {
        let groups = self.prog.groups;
        let mut spans = Vec::with_capacity(groups + 1);
        spans.push(Some((start, end)));
        for g in 0..groups {
            let s = cache.regs[2 * g];
            let e = cache.regs[2 * g + 1];
            spans.push((s != vm::NONE && e != vm::NONE).then_some((s, e)));
        }
        Captures { spans }
    }

    /// See [`Regex::match_at`].
    pub(crate) fn match_at(
        &self,
        input: &[char],
        pos: usize,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Option<Captures>, SearchError> {
        if pos > input.len() {
            return Ok(None);
        }
        match vm::exec(self.prog, input, pos, false, cache, budget)? {
            Some(end) => Ok(Some(self.captures(cache, pos, end))),
            None => Ok(None),
        }
    }

    /// See [`Regex::search_from`].
    pub(crate) fn search_from(
        &self,
        input: &[char],
        pos: usize,
        must_advance: bool,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Option<Captures>, SearchError> {
        let n = input.len();
        let rest = &input[pos.min(n)..];
        if !self.required_literals().all(|lit| contains_str(rest, lit)) {
            return Ok(None);
        }
        for start in pos..=n {
            if self.prog.anchored && start > 0 {
                break;
            }
            if let Some(first) = self.prog.first
                && (start >= n || !first.contains(input[start]))
            {
                continue;
            }
            let advance = must_advance && start == pos;
            if let Some(end) = vm::exec(self.prog, input, start, advance, cache, budget)? {
                return Ok(Some(self.captures(cache, start, end)));
            }
        }
        Ok(None)
    }

    /// See [`Regex::find_all`].
    pub(crate) fn find_all(
        &self,
        input: &[char],
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Vec<Captures>, SearchError> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut must_advance = false;
        while pos <= input.len() {
            match self.search_from(input, pos, must_advance, cache, budget)? {
                Some(caps) => {
                    must_advance = caps.start() == caps.end();
                    pos = caps.end();
                    out.push(caps);
                }
                None => break,
            }
        }
        Ok(out)
    }
}

/// Whether `needle` occurs in `haystack` (both short: commands and formats).
fn contains_str(haystack: &[char], needle: &str) -> bool {
    let mut chars = needle.chars();
    let Some(first) = chars.next() else {
        return true;
    };
    let rest = chars.as_str();
    haystack.iter().enumerate().any(|(i, c)| {
        *c == first && {
            let mut it = haystack[i + 1..].iter();
            rest.chars().all(|r| it.next() == Some(&r))
        }
    })
}

/// StackStorm's final step (`transform_format_string_into_regex`): parse the rewritten format
/// `reg`, prepend `^\s*` unless its tokens contain `^`/`\A` and append `\s*$` unless they contain
/// `$`/`\Z` (see [`ast::has_anchor`]), then compile the result with DOTALL.
///
/// The common case (no anchors) is done with one parse of the final pattern: when that parse
/// succeeds and its tokens are exactly `^`, `\s*`, *tokens of reg*, `\s*`, `$`, the tokens of
/// `reg` alone are known without parsing it again. Anything else (a parse error, a top-level
/// alternation, anchors, a trailing backslash that could pair with the appended text) takes the
/// literal two-step path, so errors and anchoring decisions are exactly st2's.
pub(crate) fn compile_st2(reg: &str) -> Result<RegexParts, Error> {
    let trailing_backslashes = reg.chars().rev().take_while(|c| *c == '\\').count();
    if trailing_backslashes % 2 == 0 {
        let mut full = String::with_capacity(reg.len() + 8);
        full.push_str(r"^\s*");
        full.push_str(reg);
        full.push_str(r"\s*$");
        if let Ok(parsed) = parser::parse(&full, FLAG_DOTALL)
            && let Some(middle) = st2_middle(&parsed.seq)
            && !ast::has_anchor(middle, AnchorSide::Begin)
            && !ast::has_anchor(middle, AnchorSide::End)
        {
            return compile_parts(&parsed);
        }
    }
    let tokens = parser::parse(reg, FLAG_DOTALL)?;
    let mut full = String::with_capacity(reg.len() + 8);
    if !ast::has_anchor(&tokens.seq, AnchorSide::Begin) {
        full.push_str(r"^\s*");
    }
    full.push_str(reg);
    if !ast::has_anchor(&tokens.seq, AnchorSide::End) {
        full.push_str(r"\s*$");
    }
    compile_parts(&parser::parse(&full, FLAG_DOTALL)?)
}

/// The tokens between a leading `^`, `\s*` and a trailing `\s*`, `$`, if the sequence has
/// exactly that shape (greedy `\s*` on both sides).
fn st2_middle(seq: &[Node]) -> Option<&[Node]> {
    fn is_space_star(node: &Node) -> bool {
        matches!(node, Node::Repeat { kind: ast::RepeatKind::Greedy, min: 0, max: ast::MAXREPEAT, body }
            if matches!(&body[..], [Node::In(items)]
                if items[..] == [ast::SetItem::Category(ast::Category::Space)]))
    }
    match seq {
        [
            Node::At(ast::At::Beginning),
            lead,
            middle @ ..,
            trail,
            Node::At(ast::At::End),
        ] if is_space_star(lead) && is_space_star(trail) => Some(middle),
        _ => None,
    }
}

fn group_widths(parsed: &parser::Parsed) -> Vec<Option<(u64, u64)>> {
    // Widths of groups are needed for lookbehind width checks involving back-references; they
    // are recomputed here from the tree rather than kept from parsing.
    let mut widths = vec![None; parsed.groups + 1];
    fn walk(seq: &[Node], widths: &mut Vec<Option<(u64, u64)>>) {
        for node in seq {
            match node {
                Node::Subpattern { group, body, .. } => {
                    walk(body, widths);
                    if let Some(g) = group {
                        let w = ast::width(body, widths);
                        if let Some(slot) = widths.get_mut(*g) {
                            *slot = Some(w);
                        }
                    }
                }
                Node::Param(g) => {
                    if let Some(slot) = widths.get_mut(*g) {
                        *slot = Some((1, ast::MAXWIDTH));
                    }
                }
                Node::Branch(items) => items.iter().for_each(|i| walk(i, widths)),
                Node::Repeat { body, .. } | Node::Atomic(body) | Node::Assert { body, .. } => {
                    walk(body, widths)
                }
                Node::GroupRefExists { yes, no, .. } => {
                    walk(yes, widths);
                    if let Some(no) = no {
                        walk(no, widths);
                    }
                }
                _ => {}
            }
        }
    }
    walk(&parsed.seq, &mut widths);
    widths
}

/// Collects literal runs every match must contain: exact literals concatenated through
/// capturing/flag groups and atomic groups; anything optional, alternative or case-insensitive
/// ends a run. Bodies of repeats with `min >= 1` contribute their own runs.
fn required_literals(seq: &[Node], flags: u32, run: &mut String, out: &mut Vec<String>) {
    fn flush(run: &mut String, out: &mut Vec<String>) {
        if !run.is_empty() {
            out.push(std::mem::take(run));
        }
    }
    for node in seq {
        match node {
            Node::Literal(c) if flags & FLAG_IGNORECASE == 0 => match char::from_u32(*c) {
                Some(ch) => run.push(ch),
                None => flush(run, out),
            },
            Node::At(_) => {}
            Node::Subpattern {
                add_flags,
                del_flags,
                body,
                ..
            } => {
                let type_flags = ast::FLAG_ASCII | ast::FLAG_UNICODE | ast::FLAG_LOCALE;
                let base = if add_flags & type_flags != 0 {
                    flags & !type_flags
                } else {
                    flags
                };
                let inner = (base | add_flags) & !del_flags;
                required_literals(body, inner, run, out);
            }
            Node::Atomic(body) => required_literals(body, flags, run, out),
            Node::Repeat { min, body, .. } if *min >= 1 => {
                flush(run, out);
                required_literals(body, flags, run, out);
                flush(run, out);
            }
            _ => flush(run, out),
        }
    }
    flush(run, out);
}

#[cfg(test)]
mod tests;
