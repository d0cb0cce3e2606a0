//! The direct path for *plain* formats: literal text (where `.` may occur) and well-formed
//! `{{ name }}` / `{{ name = default }}` placeholders, no other regex syntax
//! (`run {{cmd}} on {{hosts=localhost}}`, `Lorem ipsum {{a}} dolor sit {{b}} amet.`).
//!
//! Most real formats are plain, and for them the result of st2's transformation is known in
//! advance: the two `re.sub` snippets turn each placeholder into st2's group, `^\s*`/`\s*$` are
//! added (a plain format has no anchor), and Python's parser and our compiler then produce a
//! fixed instruction pattern around the literal text. This module writes that program directly
//! into the arena layout, skipping the snippet regexes, the string rewrite, parsing and
//! compilation, which were most of the cost of building a matcher.
//!
//! The grammar accepted here is deliberately narrow; anything outside it returns `None` and
//! takes the general path in [`super::compile_parts`], which stays the reference. The unit test
//! `plain_path_equals_general_path` (a proptest over generated formats plus hand-picked edge
//! cases) checks that, wherever this path answers, its compiled regex, group names, required
//! literals and defaults are identical to the general path's.
//!
//! Why each condition holds (the regexes are st2's `(\s*){{\s*(\S+?)\s*=\s*(?:""|''|"(.+?)"|
//! '(.+?)'|({.+?})|(.+?))\s*}}` for defaults, then `(\s*){{\s*(\S+?)\s*}}`, both without DOTALL):
//! - No `\[{()*+?^$|` outside placeholders: the text parses as literal characters and `.`s
//!   (any character), and the format has no anchors. No `}` outside placeholders and no `{` at
//!   all except `{{`: every snippet match is exactly one of our placeholders. No line break
//!   anywhere: `.` in the defaults' snippet cannot cross one, and without one st2's DOTALL
//!   listing of defaults agrees with its rewrite.
//! - A placeholder is `{{`, whitespace, an ASCII identifier, whitespace, then `}}` or `=`
//!   followed by a default: `""`/`''` (empty), a quoted text without its quote character or
//!   braces, or unquoted text without braces (st2 drops its trailing whitespace). Then the
//!   snippet's key, being lazy, is the identifier, and the value alternative that matches first
//!   is the one named. An identifier is always a valid Python group name.
//! - A `{{name}}` with no whitespace before `}}` would let the defaults' snippet extend its key
//!   over `}}` and following non-space text; if an `=` could be reached that way the snippet
//!   might match there, so such formats are left to the general path.
//! - The defaults' snippet starts its match at the whitespace right before `{{`, so that
//!   whitespace moves into the optional group; a required placeholder's whitespace stays in
//!   place, i.e. the literal text is unchanged.
//! - Repeated group names are a Python error: left to the general path, which reports it.
//! - Formats longer than [`MAX_PLAIN_LEN`] bytes are left to the general path, whose snippet
//!   regexes run under a step budget (a format that exhausts it fails as too complex); below
//!   that length a plain format cannot come near the budget (see the tests).

use super::PackedFormat;
use crate::pyre::arena::{Arena, FlatRegex};
use crate::pyre::ast::{Category, MAXREPEAT, RepeatKind};
use crate::pyre::program::{AtCode, Cat, Inst, Rep, RepOne};
use crate::pyre::unicode;

/// Longest format (in bytes) the direct path takes.
pub(crate) const MAX_PLAIN_LEN: usize = 512;

/// A byte range of the format string.
type Range = (usize, usize);

/// One piece of a plain format, in order.
#[derive(Clone, Copy, Debug)]
enum Piece {
    /// Literal text outside placeholders (never empty).
    Text(Range),
    /// A `.` outside placeholders: any character (st2's regex has DOTALL).
    Dot,
    /// `{{ name }}`.
    Required { name: Range },
    /// `{{ name = default }}` with the whitespace before it (possibly empty); an empty
    /// `default` range is the empty string.
    Optional {
        ws: Range,
        name: Range,
        default: Range,
    },
}

/// Buffers reused from one format to the next.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pieces: Vec<Piece>,
    names: Vec<Range>,
    required: Vec<Range>,
    flat: FlatRegex,
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Python's `\s`, except that a line break (which makes a format not plain) is not skipped
/// over, so that the check that follows a skip rejects it.
fn is_space(c: char) -> bool {
    c != '\n' && unicode::is_space(u32::from(c))
}

/// The index after the whitespace (Python's `\s`) starting at `at`.
fn skip_space(format: &str, at: usize) -> usize {
    at + format[at..]
        .char_indices()
        .find(|(_, c)| !is_space(*c))
        .map_or(format.len() - at, |(k, _)| k)
}

/// Start of the whitespace run that ends at `end`, not before `floor`.
fn space_before(format: &str, floor: usize, end: usize) -> usize {
    let mut start = end;
    for (k, c) in format[floor..end].char_indices().rev() {
        if !is_space(c) {
            break;
        }
        start = floor + k;
    }
    start
}

/// Whether the defaults' snippet, starting its key at `name_start`, could reach an `=`: its
/// key `\S+?` may extend over any non-space text, followed by `\s*=`.
fn key_reaches_equals(format: &str, name_start: usize) -> bool {
    let rest = &format[name_start..];
    let run = rest.find(is_space).unwrap_or(rest.len());
    if rest[..run].contains('=') {
        return true;
    }
    let after = skip_space(format, name_start + run);
    format.as_bytes().get(after) == Some(&b'=')
}

/// Parses the placeholder whose `{{` is at `open`; returns it (with an empty `ws`) and the
/// index after its `}}`.
fn placeholder(format: &str, open: usize) -> Option<(Piece, usize)> {
    let b = format.as_bytes();
    let name_start = skip_space(format, open + 2);
    let mut j = name_start;
    if !b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
    {
        return None;
    }
    while b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        j += 1;
    }
    let name = (name_start, j);
    let after_name = j;
    j = skip_space(format, j);
    if b[j..].starts_with(b"}}") {
        if j == after_name && key_reaches_equals(format, name_start) {
            return None;
        }
        return Some((Piece::Required { name }, j + 2));
    }
    if b.get(j) != Some(&b'=') {
        return None;
    }
    let v = skip_space(format, j + 1);
    let (default, after) = match *b.get(v)? {
        q @ (b'"' | b'\'') => {
            if b.get(v + 1) == Some(&q) {
                // `""` or `''`: every value group is unset, st2 joins them to "".
                ((v, v), v + 2)
            } else {
                let mut close = v + 1;
                loop {
                    match *b.get(close)? {
                        c if c == q => break,
                        b'{' | b'}' | b'\n' => return None,
                        _ => close += 1,
                    }
                }
                ((v + 1, close), close + 1)
            }
        }
        b'{' | b'}' => return None,
        _ => {
            let mut close = v;
            loop {
                match *b.get(close)? {
                    b'}' => break,
                    b'{' | b'\n' => return None,
                    _ => close += 1,
                }
            }
            // The lazy `(.+?)` stops where `\s*}}` can match: trailing whitespace is dropped.
            let kept = format[v..close].trim_end_matches(is_space);
            ((v, v + kept.len()), close)
        }
    };
    let close = skip_space(format, after);
    if !b[close..].starts_with(b"}}") {
        return None;
    }
    let ws = (open, open);
    Some((Piece::Optional { ws, name, default }, close + 2))
}

/// Bytes that end a run of literal text: `{` (a placeholder, if `{{`) and everything that makes
/// a format not plain (regex syntax, a stray `}`, a line break).
static SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let bytes = b"{.\\[()*+?^$|}\n";
    let mut k = 0;
    while k < bytes.len() {
        table[bytes[k] as usize] = true;
        k += 1;
    }
    table
};

/// Splits `format` into pieces, or `None` if it is not plain.
fn scan(format: &str, pieces: &mut Vec<Piece>) -> Option<()> {
    pieces.clear();
    if format.len() > MAX_PLAIN_LEN {
        return None;
    }
    let b = format.as_bytes();
    let mut text_start = 0;
    let mut i = 0;
    // Byte-wise is enough: every character that matters is ASCII, and the bytes of other
    // characters are all >= 0x80.
    while i < b.len() {
        if !SPECIAL[usize::from(b[i])] {
            i += 1;
            continue;
        }
        match b[i] {
            b'{' => {
                if b.get(i + 1) != Some(&b'{') {
                    return None;
                }
                let (mut piece, end) = placeholder(format, i)?;
                let mut text_end = i;
                if let Piece::Optional { ws, .. } = &mut piece {
                    text_end = space_before(format, text_start, i);
                    *ws = (text_end, i);
                }
                if text_end > text_start {
                    pieces.push(Piece::Text((text_start, text_end)));
                }
                pieces.push(piece);
                i = end;
                text_start = end;
            }
            b'.' => {
                if i > text_start {
                    pieces.push(Piece::Text((text_start, i)));
                }
                pieces.push(Piece::Dot);
                i += 1;
                text_start = i;
            }
            _ => return None,
        }
    }
    if b.len() > text_start {
        pieces.push(Piece::Text((text_start, b.len())));
    }
    Some(())
}

/// `\s*` as the compiler emits it (greedy single-character repeat of the Unicode category).
const SPACE_STAR: RepOne = RepOne {
    min: 0,
    max: MAXREPEAT,
    kind: RepeatKind::Greedy,
    body: Inst::Cat(Cat {
        category: Category::Space,
        ascii: false,
    }),
};

/// st2's optional quote `["\']?` as the compiler emits it.
const QUOTE: RepOne = RepOne {
    min: 0,
    max: 1,
    kind: RepeatKind::Greedy,
    body: Inst::AnyOf2(b'"' as u32, b'\'' as u32),
};

/// A literal run: one `Char` for a single character, else a `Str` (the compiler's rule).
fn emit_text(flat: &mut FlatRegex, text: &str) {
    let mut chars = text.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        flat.insts.push(Inst::Char(u32::from(c)));
        return;
    }
    let span = flat.push_text(text);
    flat.lits.push(span);
    flat.insts.push(Inst::Str(to_u32(flat.lits.len() - 1)));
}

/// `["\']?(?P<name>...)["\']?`: quote, st2's parameter group, quote.
fn emit_param(flat: &mut FlatRegex, group: u32) {
    flat.rep_ones.push(QUOTE);
    flat.insts
        .push(Inst::RepOne(to_u32(flat.rep_ones.len() - 1)));
    // DOTALL is always on for st2's final regex.
    flat.insts.push(Inst::Param(group, true));
    flat.rep_ones.push(QUOTE);
    flat.insts
        .push(Inst::RepOne(to_u32(flat.rep_ones.len() - 1)));
}

/// Compiles a plain format into `arena`; `None` (with the arena untouched) if `format` is not
/// plain.
pub(crate) fn compile(
    format: &str,
    arena: &mut Arena,
    scratch: &mut Scratch,
) -> Option<PackedFormat> {
    let Scratch {
        pieces,
        names,
        required,
        flat,
    } = scratch;
    scan(format, pieces)?;
    let text = |(s, e): Range| &format[s..e];

    names.clear();
    for piece in pieces.iter() {
        if let Piece::Required { name } | Piece::Optional { name, .. } = *piece {
            if names.iter().any(|n| text(*n) == text(name)) {
                // Python: "redefinition of group name"; the general path reports it.
                return None;
            }
            names.push(name);
        }
    }

    // `^\s*` + rewritten format + `\s*$`, compiled as `program::compile` does.
    flat.clear();
    required.clear();
    flat.insts.push(Inst::At(AtCode::Beginning));
    flat.rep_ones.push(SPACE_STAR);
    flat.insts.push(Inst::RepOne(0));
    let mut group = 0;
    for piece in pieces.iter() {
        match *piece {
            Piece::Text(range) => {
                emit_text(flat, text(range));
                required.push(range);
            }
            Piece::Dot => flat.insts.push(Inst::AnyAll),
            Piece::Required { .. } => {
                group += 1;
                emit_param(flat, group);
            }
            Piece::Optional { ws, .. } => {
                // `(?:ws["\']?(?P<name>...)["\']?)?`: a general greedy `{0,1}` repeat.
                group += 1;
                let rep = to_u32(flat.reps.len());
                flat.insts.push(Inst::RepInit(rep));
                let body = to_u32(flat.insts.len());
                if ws.1 > ws.0 {
                    emit_text(flat, text(ws));
                }
                emit_param(flat, group);
                let until = to_u32(flat.insts.len());
                flat.insts.push(Inst::Until(rep));
                flat.reps.push(Rep {
                    min: 0,
                    max: 1,
                    greedy: true,
                    body,
                    until,
                    exit: until + 1,
                });
            }
        }
    }
    flat.rep_ones.push(SPACE_STAR);
    flat.insts
        .push(Inst::RepOne(to_u32(flat.rep_ones.len() - 1)));
    flat.insts.push(Inst::At(AtCode::End));
    flat.insts.push(Inst::Match);
    flat.groups = group;
    // The program starts with `^` (not multiline): only position 0 is tried, no first set.
    flat.anchored = true;

    for (g, name) in names.iter().enumerate() {
        let (start, len) = flat.push_text(text(*name));
        flat.names.push((start, len, to_u32(g + 1)));
    }
    // `required_literals`: the top-level literal runs, longest first (stable), then
    // consecutive duplicates dropped.
    required.sort_by_key(|(s, e)| std::cmp::Reverse(e - s));
    required.dedup_by(|a, b| text(*a) == text(*b));
    for range in required.iter() {
        let span = flat.push_text(text(*range));
        flat.required.push(span);
    }

    let regex = arena.push_flat(flat);
    let source = arena.push_str(format);
    let optional = arena.push_pairs(pieces.iter().filter_map(|piece| match *piece {
        Piece::Optional { name, default, .. } => Some((text(name), text(default))),
        _ => None,
    }));
    Some(PackedFormat {
        regex,
        source,
        optional,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{FormatView, compile_parts};
    use super::*;
    use crate::pyre::arena::RegexParts;
    use crate::pyre::{Cache, DEFAULT_STEP_LIMIT};

    /// Everything a compiled format consists of, in comparable form.
    type Compiled = (String, RegexParts, Vec<(String, String)>);

    fn unpack(arena: &Arena, packed: &PackedFormat) -> Compiled {
        let view = FormatView::new(arena, packed);
        (
            view.source().to_owned(),
            view.regex().to_parts(),
            view.optional()
                .map(|(n, d)| (n.to_owned(), d.to_owned()))
                .collect(),
        )
    }

    /// The direct path's result, if it takes the format.
    fn direct(format: &str) -> Option<Compiled> {
        let mut arena = Arena::default();
        let packed = compile(format, &mut arena, &mut Scratch::default())?;
        Some(unpack(&arena, &packed))
    }

    /// Whether the direct path takes `format`, and if so, that the general path (st2's snippet
    /// regexes, Python's parser, the compiler) produces exactly the same format.
    fn check(format: &str) -> Result<bool, TestCaseError> {
        let Some(fast) = direct(format) else {
            return Ok(false);
        };
        let parts = compile_parts(format).map_err(|e| {
            TestCaseError::fail(format!(
                "direct path accepted {format:?}, general path: {e}"
            ))
        })?;
        let mut arena = Arena::default();
        let packed = parts.pack(&mut arena);
        prop_assert_eq!(fast, unpack(&arena, &packed), "format {:?}", format);
        Ok(true)
    }

    /// Pieces of plain formats: literal text (with the characters that matter to the snippet
    /// regexes: whitespace of several kinds, quotes, `=`) and placeholders of every accepted form.
    const PLAIN_PIECES: &[&str] = &[
        "run",
        "kobatu",
        "x",
        " ",
        "  ",
        "\t",
        "\u{a0}",
        "\u{1c}",
        "é",
        "K",
        "-",
        ",",
        "=",
        "==",
        "'",
        "\"",
        "#",
        ":",
        "<a>",
        "]",
        "!",
        ".",
        "{{cmd}}",
        "{{ cmd }}",
        "{{\tcmd\u{a0}}}",
        "{{a}}",
        "{{a }}",
        "{{ a}}",
        "{{_a1}}",
        "{{b=1}}",
        "{{ b = 1 }}",
        "{{b=x=y}}",
        "{{c=\"x y\"}}",
        "{{ c = 'x y' }}",
        "{{c=\"it's\"}}",
        "{{d=\"\"}}",
        "{{d=''}}",
        "{{ d = \"\" }}",
        "{{e=hello world  }}",
        "{{e=it's}}",
        "{{e=\u{a0}v\u{a0}}}",
        "{{e=a\"b}}",
        "{{p}}",
        "{{ q=7 }}",
        "{{r=\"v w\"}}",
        "{{s=''}}",
        "{{t=z }}",
        "{{ u }}",
    ];

    /// Everything that must send a format to the general path (and regex syntax generally).
    const NEAR_MISSES: &[&str] = &[
        "{{f={'k': 1}}}",
        "{{g=}}",
        "{{g= }}",
        "{{1a}}",
        "{{a-b}}",
        "{{ é }}",
        "{{a=\"x}}",
        "{{a=\"x\" y}}",
        "{{a=\"\"x}}",
        "{{a='x'y'}}",
        "{{a={x}}",
        "{{a=x{y}}",
        "{{a=\"x{\"}}",
        "{{a=x\ny}}",
        "{{a=\"x\ny\"}}",
        "{{\na}}",
        "{{a\n}}",
        "{{a=\nx}}",
        "{{a=x\n}}",
        "{{",
        "}}",
        "{",
        "}",
        "{{}}",
        "{{ }}",
        "(",
        ")",
        "(?:",
        "?",
        "|",
        "\\d",
        "\\",
        "^",
        "$",
        "\n",
        "[!.]?",
        "*",
        "+",
    ];

    fn pieces(max: usize, near_misses: u32) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            16 => prop::sample::select(PLAIN_PIECES),
            near_misses => prop::sample::select(NEAR_MISSES),
        ];
        prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
    }

    fn format_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => pieces(10, 0),
            4 => pieces(10, 1),
            1 => pieces(6, 16),
            1 => "[ab {}=\"' \t]{0,30}",
            1 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The differential test that licenses the direct path.
        #[test]
        fn plain_path_equals_general_path(format in format_strategy()) {
            check(&format)?;
        }
    }

    #[test]
    fn edge_cases_agree_with_the_general_path() {
        let plain = [
            "",
            " ",
            "x",
            "run kobatu status",
            "run {{cmd}}",
            "run {{cmd}} on {{hosts}}",
            "run {{cmd}} on {{hosts=localhost}}",
            "run {{cmd}} {{hosts=localhost}}",
            "pack kobatu install {{ name }}",
            "get service kobatu {{name}} {{env=\"default value\"}}",
            "{{a}}",
            "{{a=1}}",
            "{{a=\"\"}}",
            "{{a=''}}",
            "{{ a = '' }}",
            "{{a=b=c}}",
            "{{a=hello world   }}",
            "{{a=it's}}",
            "{{a=\"it's\"}}",
            "{{ a }}{{b=1}}",
            "{{a=1}}{{b=2}}",
            "{{a=1}} {{b=2}}",
            " \t {{a=1}}",
            "x\u{a0}{{a=1}}",
            "x\u{1c}{{a}}",
            "a {{x}} b {{y=1}} c {{z}}",
            "{{a}} x=1",
            "é {{ a }} ü",
            "x ]-#,:!<> {{a}}",
            "Lorem ipsum {{param1}} dolor sit {{param2}} amet.",
            "version 1.2 {{ a }}.{{b=1}}",
            ".",
            "..x.",
            "a. {{x=1}}",
        ];
        for format in plain {
            assert!(
                check(format).expect("same result"),
                "{format:?} should be plain"
            );
        }
        let general = [
            "{{a}}{{b=1}}",
            "{{a}}=1",
            "{{a}} =1",
            "{{a=}}",
            "{{a= }}",
            "{{1a}}",
            "{{a-b}}",
            "{{a}} {{a}}",
            "{{a=1}} {{a}}",
            "{{a=\"x\" y}}",
            "{{a=\"x}}",
            "{{a={'k': 1}}}",
            "run {{cmd}}\n",
            "(run|execute) {{cmd}}",
            "run {{cmd}}}",
            "run { {{cmd}}",
            "x{2}",
        ];
        for format in general {
            assert!(
                !check(format).expect("same result"),
                "{format:?} should not be plain"
            );
        }
    }

    #[test]
    fn st2_vector_formats_agree_with_the_general_path() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/st2-parser-vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("vector fixture");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
        let mut plain = 0;
        for v in &vectors {
            let format = v["format"].as_str().expect("format string");
            plain += usize::from(check(format).expect("same result"));
        }
        // Most of st2's own test formats are plain: the direct path must be exercised here.
        assert!(plain * 2 > vectors.len(), "{plain} of {}", vectors.len());
    }

    /// The general path runs st2's snippets under a step budget and fails a format that
    /// exhausts it; the direct path has no budget. Plain formats up to `MAX_PLAIN_LEN` bytes must
    /// therefore stay far below the budget on the general path, worst shapes included.
    #[test]
    fn plain_formats_stay_far_below_the_snippet_budget() {
        let n = MAX_PLAIN_LEN;
        let worst = [
            " ".repeat(n),
            format!("{}{{{{a}}}}", " ".repeat(n - 5)),
            format!("{{{{a=1}}}}{}", " ".repeat(n - 7)),
            format!("{{{{a={}x}}}}", " ".repeat(n - 8)),
            format!("{{{{a=x{}}}}}", " ".repeat(n - 8)),
            format!("{{{{a={}x}}}}", "x ".repeat((n - 8) / 2)),
            format!("{{{{a}}}}{}", "x".repeat(n - 5)),
            format!("{{{{ a }}}}{}", "=".repeat(n - 7)),
            "{{a=1}}".repeat(n / 7),
            " {{a}}".repeat(n / 6),
            "{{ a }}".repeat(n / 7),
            "{{a=\" \"}}".repeat(n / 9),
            format!("{{{{a=\"{}\"}}}}", " ".repeat(n - 8)),
        ];
        let snippets = &*super::super::SNIPPETS;
        for format in &worst {
            assert!(format.len() <= n);
            let chars: Vec<char> = format.chars().collect();
            let mut budget = DEFAULT_STEP_LIMIT;
            let mut cache = Cache::new();
            for re in [
                &snippets.optional_sub,
                &snippets.required_sub,
                &snippets.optional,
            ] {
                re.find_all(&chars, &mut cache, &mut budget)
                    .expect("within budget");
            }
            let used = DEFAULT_STEP_LIMIT - budget;
            assert!(
                used < DEFAULT_STEP_LIMIT / 10,
                "{format:?} used {used} steps"
            );
        }
    }
}
