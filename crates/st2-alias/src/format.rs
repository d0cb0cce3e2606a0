//! A port of StackStorm's `ActionAliasFormatParser` (st2common `models/utils/action_alias_utils.py`).
//!
//! A format such as `run {{cmd}} on {{hosts=localhost}}` is a Python regex with `{{param}}`
//! placeholders. st2 (1) cuts trailing `key=value` extras off the command, (2) pads what is left
//! with one space on each side, (3) rewrites the placeholders into named groups with `re.sub`,
//! adds `^\s*`/`\s*$` unless the format already has anchors (found by walking `sre_parse`
//! tokens), and (4) `search`es the padded command, filling defaults and overlaying the extras.
//! Every regex step here runs on [`super::pyre`], the Python-compatible engine, using st2's
//! own snippet regexes, so edge cases come out exactly as on the server. Plain formats (text
//! and placeholders, no other regex syntax) are compiled by a direct path that writes the same
//! program without running those steps (module `plain`); a differential test checks that it
//! agrees with the general path.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::pyre::arena::{Arena, CopyMap, PackedRegex, RegexParts, RegexView, Span};
use super::pyre::{self, Cache, Captures, DEFAULT_STEP_LIMIT, FLAG_DOTALL, Regex};

mod plain;

/// Extracted parameters: name to value, `None` where a group did not take part (Python `None`,
/// JSON `null`). Values are always strings; st2 casts them to the action's types later.
pub type Params = BTreeMap<String, Option<String>>;

/// A format that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Python rejects the regex st2 builds from this format (`re.error`, or the `OverflowError`/
    /// `ValueError`/`RecursionError` st2 would also fail with): the st2 API answers 500.
    #[error("format {format:?} is not a valid Python regex: {reason}")]
    InvalidRegex {
        /// The format string.
        format: String,
        /// Python's message, e.g. `bad character in group name 'a=' at position 13`.
        reason: String,
    },
    /// Python accepts the regex but this engine does not implement the construct.
    #[error("format {format:?} uses regex syntax st2-matrix does not support: {reason}")]
    Unsupported {
        /// The format string.
        format: String,
        /// What is missing.
        reason: String,
    },
    /// Rewriting the format hit the regex step limit (a pathological format).
    #[error("format {format:?} is too complex to process")]
    TooComplex {
        /// The format string.
        format: String,
    },
}

/// Why a command does not yield parameters for a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// st2's `ParseException` when the regex does not match (HTTP 400 on the server).
    #[error("Command \"{command}\" doesn't match format string \"{format}\"")]
    NoMatch {
        /// The command as given (before extras were cut).
        command: String,
        /// The format string.
        format: String,
    },
    /// st2's `ParseException` when the format matched nothing but padding and no parameter got a
    /// value (e.g. format `(?:go)?` with an empty command).
    #[error("No value supplied and no default value found.")]
    NoValue,
    /// A `{{name=default}}` placeholder was not turned into a group (a default spanning a line
    /// break escapes st2's non-DOTALL rewrite); st2 fails with `KeyError` (HTTP 500) on a match.
    #[error(
        "parameter {name:?} has a default but no group in format \"{format}\" (st2 fails with KeyError)"
    )]
    MissingGroup {
        /// The parameter name.
        name: String,
        /// The format string.
        format: String,
    },
    /// The regex step budget ran out; treated as "no match" by the matcher and logged.
    #[error("matching command \"{command}\" against format \"{format}\" exceeded the step limit")]
    LimitExceeded {
        /// The command.
        command: String,
        /// The format string.
        format: String,
    },
}

/// st2's snippets (`generate_snippets`), compiled once with the Python-compatible engine.
struct Snippets {
    /// `ending`: the trailing run of `key=value` pairs (used with `re.match`, DOTALL).
    ending: Regex,
    /// `pairs`: one pair (used with `re.findall`, DOTALL).
    pairs: Regex,
    /// `optional`: `{{ key = default }}` (used with `re.findall`, DOTALL).
    optional: Regex,
    /// `(\s*)` + `optional`, for `re.sub` (no flags: `.` does not cross newlines).
    optional_sub: Regex,
    /// `(\s*)` + `required`, for `re.sub` (no flags).
    required_sub: Regex,
}

const KEY: &str = r"\s*(\S+?)\s*";
const VALUE: &str = r#"""|''|"(.+?)"|'(.+?)'|({.+?})|(\S+)"#;
const EXT_VALUE: &str = r#"""|''|"(.+?)"|'(.+?)'|({.+?})|(.+?)"#;

/// The group st2 substitutes for each placeholder (`param_match`), after the captured leading
/// whitespace: an optional quote, then text between quotes, a `{...}` block or any text (lazy),
/// then an optional quote. The parser recognises this exact text (see `ST2_PARAM_HEAD`).
const PARAM_HEAD: &str = pyre::parser::ST2_PARAM_HEAD;
const PARAM_BODY: &str = pyre::parser::ST2_PARAM_BODY;
const PARAM_QUOTE: &str = r#"["\']?"#;

static SNIPPETS: LazyLock<Snippets> = LazyLock::new(|| {
    let pairs = format!(r"(?:^|\s+){KEY}=({VALUE})");
    let ending = format!(r".*?(({pairs}\s*)*)$");
    let default = format!(r"\s*=\s*(?:{EXT_VALUE})\s*");
    let optional = format!("{{{{{KEY}{default}}}}}");
    let required = format!("{{{{{KEY}}}}}");
    let compile = |pattern: &str, flags| {
        // These are st2's fixed snippets; the unit tests compile them, so failure here is a bug.
        Regex::new(pattern, flags).expect("st2 snippet regexes are valid Python regexes")
    };
    Snippets {
        ending: compile(&ending, FLAG_DOTALL),
        pairs: compile(&pairs, FLAG_DOTALL),
        optional: compile(&optional, FLAG_DOTALL),
        optional_sub: compile(&format!(r"(\s*){optional}"), 0),
        required_sub: compile(&format!(r"(\s*){required}"), 0),
    }
});

/// Forces compilation of st2's snippet regexes, so that the first match after a (re)load does
/// not pay for it.
pub(crate) fn warm_up() {
    LazyLock::force(&SNIPPETS);
}

/// A command after st2's first two steps: extras cut off and the rest padded.
#[derive(Debug, Clone)]
pub struct Command {
    original: String,
    extras: Vec<(String, String)>,
    padded: String,
    padded_chars: Vec<char>,
    blank: bool,
}

impl Command {
    /// Runs st2's extras step on `command` (`match_kv_pairs_at_end`).
    pub fn new(command: &str) -> Result<Self, pyre::SearchError> {
        let mut cache = Cache::new();
        let mut budget = DEFAULT_STEP_LIMIT;
        Self::with_cache(command, &mut cache, &mut budget)
    }

    pub(crate) fn with_cache(
        command: &str,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Self, pyre::SearchError> {
        let snippets = &*SNIPPETS;
        let chars: Vec<char> = command.chars().collect();
        let mut extras = Vec::new();
        let mut stream = command.to_owned();
        // `.*?(...)$` always matches; group 1 is the trailing run of pairs (maybe empty).
        if let Some(caps) = snippets.ending.match_at(&chars, 0, cache, budget)?
            && let Some((s, e)) = caps.get(1).filter(|(s, e)| e > s)
        {
            let run: Vec<char> = chars[s..e].to_vec();
            for pair in snippets.pairs.find_all(&run, cache, budget)? {
                let key = pair.text(&run, 1).unwrap_or_default();
                // `''.join(pair[2:])`: unmatched alternatives are empty strings.
                let value: String = (3..=6).filter_map(|g| pair.text(&run, g)).collect();
                extras.push((key, value));
            }
            // `str.replace` removes every occurrence, not only the trailing one.
            let run: String = run.iter().collect();
            stream = stream.replace(&run, "");
        }
        let padded = format!(" {stream} ");
        let blank = pyre::unicode::py_strip(&padded).is_empty();
        Ok(Self {
            original: command.to_owned(),
            padded_chars: padded.chars().collect(),
            padded,
            extras,
            blank,
        })
    }

    /// The command as given.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The trailing `key=value` extras, in order (later duplicates win when applied).
    pub fn extras(&self) -> &[(String, String)] {
        &self.extras
    }

    /// What the format regex is searched in: the command minus extras, padded with spaces.
    pub fn padded(&self) -> &str {
        &self.padded
    }
}

/// Offsets of a compiled format inside an [`Arena`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PackedFormat {
    regex: PackedRegex,
    source: Span,
    optional: Span,
}

/// A compiled format before packing.
pub(crate) struct FormatParts {
    source: String,
    regex: RegexParts,
    /// `(name, default)` for every `{{name=default}}`, in order (st2's `_optional`).
    optional: Vec<(String, String)>,
}

impl FormatParts {
    /// Stores the format in `arena` (sharing program tables with same-shaped formats).
    pub(crate) fn pack(&self, arena: &mut Arena) -> PackedFormat {
        PackedFormat {
            regex: arena.push_regex(&self.regex),
            source: arena.push_str(&self.source),
            optional: arena.push_pairs(
                self.optional
                    .iter()
                    .map(|(name, default)| (name.as_str(), default.as_str())),
            ),
        }
    }
}

/// Buffers reused across [`compile_into`] calls, so compiling many formats in a row does not
/// allocate per format.
#[derive(Debug, Default)]
pub(crate) struct CompileScratch {
    plain: plain::Scratch,
}

/// Compiles `format` into `arena`: plain formats (literal text and placeholders only) by the
/// direct path of [`plain`], everything else by [`compile_parts`]. Both give the same result;
/// the direct path exists because it is many times faster.
pub(crate) fn compile_into(
    format: &str,
    arena: &mut Arena,
    scratch: &mut CompileScratch,
) -> Result<PackedFormat, FormatError> {
    if let Some(packed) = plain::compile(format, arena, &mut scratch.plain) {
        return Ok(packed);
    }
    Ok(compile_parts(format)?.pack(arena))
}

/// Copies formats compiled into another arena (a previous matcher's) into a new one.
#[derive(Debug, Default)]
pub(crate) struct Copier {
    map: CopyMap,
}

impl Copier {
    /// Copies `from` into `arena`; the copy is exactly what compiling its source would store.
    /// All formats given to one copier must come from the same arena.
    pub(crate) fn copy(&mut self, from: FormatView<'_>, arena: &mut Arena) -> PackedFormat {
        PackedFormat {
            regex: arena.copy_regex(from.arena, &from.packed.regex, &mut self.map),
            source: arena.push_str(from.source()),
            optional: arena.push_pairs(from.optional()),
        }
    }
}

/// Builds the regex st2 would build for `format` (`transform_format_string_into_regex`).
pub(crate) fn compile_parts(format: &str) -> Result<FormatParts, FormatError> {
    let too_complex = |_| FormatError::TooComplex {
        format: format.to_owned(),
    };
    let mut cache = Cache::new();
    let snippets = &*SNIPPETS;
    let chars: Vec<char> = format.chars().collect();

    // Every snippet needs a literal `{{`, so formats without one skip the rewrite unchanged.
    let (optional, reg) = if format.contains("{{") {
        let mut budget = DEFAULT_STEP_LIMIT;
        let optional_hits = snippets
            .optional_sub
            .find_all(&chars, &mut cache, &mut budget)
            .map_err(too_complex)?;
        let optional: Vec<(String, String)> = if format.contains('\n') {
            // st2 lists defaults with DOTALL but rewrites without it; only a line break can
            // make the two disagree, so then the DOTALL findall runs on its own.
            snippets
                .optional
                .find_all(&chars, &mut cache, &mut budget)
                .map_err(too_complex)?
                .iter()
                .map(|caps| optional_pair(caps, &chars, 1))
                .collect()
        } else {
            // Without a line break the rewrite's matches are the findall's, each extended to
            // the whitespace before it (group numbers shifted by one for that `(\s*)`).
            optional_hits
                .iter()
                .map(|caps| optional_pair(caps, &chars, 2))
                .collect()
        };
        let reg = substitute(&chars, &optional_hits, true);
        let reg = match simple_required_sub(&reg) {
            Some(reg) => reg,
            None => {
                let reg_chars: Vec<char> = reg.chars().collect();
                let hits = snippets
                    .required_sub
                    .find_all(&reg_chars, &mut cache, &mut budget)
                    .map_err(too_complex)?;
                substitute(&reg_chars, &hits, false)
            }
        };
        (optional, reg)
    } else {
        (Vec::new(), format.to_owned())
    };

    let regex = pyre::compile_st2(&reg).map_err(|e| match e.kind() {
        pyre::ErrorKind::Unsupported | pyre::ErrorKind::Recursion => FormatError::Unsupported {
            format: format.to_owned(),
            reason: e.message().to_owned(),
        },
        _ => FormatError::InvalidRegex {
            format: format.to_owned(),
            reason: e.message().to_owned(),
        },
    })?;
    Ok(FormatParts {
        source: format.to_owned(),
        regex,
        optional,
    })
}

/// A compiled alias format.
#[derive(Debug)]
pub struct Format {
    arena: Arena,
    packed: PackedFormat,
}

impl Format {
    /// Builds the regex st2 would build for `format` (`transform_format_string_into_regex`).
    pub fn compile(format: &str) -> Result<Self, FormatError> {
        let mut arena = Arena::default();
        let packed = compile_into(format, &mut arena, &mut CompileScratch::default())?;
        arena.finish();
        Ok(Self { arena, packed })
    }

    fn view(&self) -> FormatView<'_> {
        FormatView::new(&self.arena, &self.packed)
    }

    /// The format string.
    pub fn source(&self) -> &str {
        self.view().source()
    }

    /// Literal strings every match of the format's regex must contain.
    pub fn required_literals(&self) -> impl Iterator<Item = &str> {
        self.view().regex().required_literals()
    }

    /// Named groups of the format's regex (Python's `groupindex`), in definition order.
    pub fn group_names(&self) -> impl Iterator<Item = (&str, usize)> {
        self.view().regex().group_names()
    }

    /// A defaulted parameter that has no group in the regex, if any: every successful match
    /// of such a format makes st2 fail with `KeyError`.
    pub fn missing_default_group(&self) -> Option<&str> {
        self.view().missing_default_group()
    }

    /// `extract_parameters(format, command)`: the parameters of the first match.
    pub fn parse(&self, command: &str) -> Result<Params, ParseError> {
        let mut cache = Cache::new();
        let mut budget = DEFAULT_STEP_LIMIT;
        let view = self.view();
        let cmd = Command::with_cache(command, &mut cache, &mut budget)
            .map_err(|_| view.limit(command))?;
        view.parse_command(&cmd, &mut cache, &mut budget)
    }

    /// `extract_parameters(..., match_multiple=True)`: one parameter set per regex hit
    /// (`finditer`), each with the extras applied. No hit gives an empty list, as in st2.
    pub fn parse_multiple(&self, command: &str) -> Result<Vec<Params>, ParseError> {
        let mut cache = Cache::new();
        let mut budget = DEFAULT_STEP_LIMIT;
        let view = self.view();
        let cmd = Command::with_cache(command, &mut cache, &mut budget)
            .map_err(|_| view.limit(command))?;
        view.parse_command_multiple(&cmd, &mut cache, &mut budget)
    }

    /// [`Format::parse`] on a command whose extras step already ran.
    pub fn parse_command(
        &self,
        cmd: &Command,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Params, ParseError> {
        self.view().parse_command(cmd, cache, budget)
    }

    /// [`Format::parse_multiple`] on a command whose extras step already ran.
    pub fn parse_command_multiple(
        &self,
        cmd: &Command,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Vec<Params>, ParseError> {
        self.view().parse_command_multiple(cmd, cache, budget)
    }
}

/// A compiled format as stored in an arena (owned by a [`Format`] or shared by a matcher).
#[derive(Clone, Copy)]
pub(crate) struct FormatView<'a> {
    arena: &'a Arena,
    packed: &'a PackedFormat,
}

impl<'a> FormatView<'a> {
    pub(crate) fn new(arena: &'a Arena, packed: &'a PackedFormat) -> Self {
        Self { arena, packed }
    }

    pub(crate) fn source(self) -> &'a str {
        self.arena.str(self.packed.source)
    }

    pub(crate) fn regex(self) -> RegexView<'a> {
        self.arena.regex(&self.packed.regex)
    }

    pub(crate) fn optional(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.arena.pairs(self.packed.optional)
    }

    pub(crate) fn missing_default_group(self) -> Option<&'a str> {
        let regex = self.regex();
        self.optional()
            .map(|(name, _)| name)
            .find(|name| !regex.group_names().any(|(n, _)| n == *name))
    }

    pub(crate) fn parse_command(
        self,
        cmd: &Command,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Params, ParseError> {
        match self
            .regex()
            .search_from(&cmd.padded_chars, 0, false, cache, budget)
        {
            Ok(Some(caps)) => self.params_from(&caps, cmd),
            Ok(None) => Err(ParseError::NoMatch {
                command: cmd.original.clone(),
                format: self.source().to_owned(),
            }),
            Err(_) => Err(self.limit(&cmd.original)),
        }
    }

    pub(crate) fn parse_command_multiple(
        self,
        cmd: &Command,
        cache: &mut Cache,
        budget: &mut u64,
    ) -> Result<Vec<Params>, ParseError> {
        let hits = self
            .regex()
            .find_all(&cmd.padded_chars, cache, budget)
            .map_err(|_| self.limit(&cmd.original))?;
        hits.iter()
            .map(|caps| self.params_from(caps, cmd))
            .collect()
    }

    fn limit(self, command: &str) -> ParseError {
        ParseError::LimitExceeded {
            command: command.to_owned(),
            format: self.source().to_owned(),
        }
    }

    /// `match_params_in_stream`: group values, then defaults, then extras, then the
    /// "no value" check.
    fn params_from(self, caps: &Captures, cmd: &Command) -> Result<Params, ParseError> {
        let mut result: Params = self
            .regex()
            .group_names()
            .map(|(name, g)| (name.to_owned(), caps.text(&cmd.padded_chars, g)))
            .collect();
        for (name, default) in self.optional() {
            let Some(value) = result.get_mut(name) else {
                return Err(ParseError::MissingGroup {
                    name: name.to_owned(),
                    format: self.source().to_owned(),
                });
            };
            // `matched_value or default`: an empty capture also takes the default.
            if value.as_deref().is_none_or(str::is_empty) {
                *value = Some(default.to_owned());
            }
        }
        for (key, value) in &cmd.extras {
            result.insert(key.clone(), Some(value.clone()));
        }
        let any_value = result
            .values()
            .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()));
        if !self.source().is_empty() && cmd.blank && !any_value {
            return Err(ParseError::NoValue);
        }
        Ok(result)
    }
}

/// The required-placeholder rewrite for the common case, without running the snippet regex.
///
/// It applies only when every `{` and `}` of `text` belongs to a placeholder of the form
/// `{{` spaces NAME spaces `}}` (NAME of ASCII letters, digits and `_`, spaces being ASCII
/// spaces) or to a group body already inserted by the optional rewrite (whose `{.+?}` cannot
/// take part in a `{{...}}` match). Then `re.sub(r"(\s*){{\s*(\S+?)\s*}}", ...)` finds exactly those placeholders, each
/// starting at the whitespace run that directly precedes it (Python's leftmost match), with
/// the key being NAME. Anything else returns `None` and goes through the regex engine.
fn simple_required_sub(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 128);
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A group body inserted by the optional rewrite holds `{.+?}`, never `{{`/`}}`.
            b'>' if text[i..].starts_with(PARAM_BODY) => i += PARAM_BODY.len(),
            b'}' => return None,
            b'{' => {
                if bytes.get(i + 1) != Some(&b'{') {
                    return None;
                }
                let mut j = i + 2;
                while bytes.get(j) == Some(&b' ') {
                    j += 1;
                }
                let name_start = j;
                while bytes
                    .get(j)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    j += 1;
                }
                let name_end = j;
                while bytes.get(j) == Some(&b' ') {
                    j += 1;
                }
                if name_end == name_start || bytes.get(j..j + 2) != Some(b"}}") {
                    return None;
                }
                // The match starts at the whitespace run right before `{{`, but not before
                // the end of the previous match.
                let ws_start = text[last..i]
                    .char_indices()
                    .rev()
                    .take_while(|(_, c)| pyre::unicode::is_space(u32::from(*c)))
                    .last()
                    .map_or(i, |(k, _)| last + k);
                out.push_str(&text[last..ws_start]);
                out.push_str(&text[ws_start..i]);
                out.push_str(PARAM_HEAD);
                out.push_str(&text[name_start..name_end]);
                out.push_str(PARAM_BODY);
                out.push_str(PARAM_QUOTE);
                i = j + 2;
                last = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// `re.sub(pattern, template, text)` given the pattern's matches, with st2's two templates: `param_match` (required
/// placeholders) or `(?:` + `param_match` + `)?` (defaulted ones). They only use groups 1
/// (leading whitespace) and 2 (the key); unmatched groups expand to empty strings, and the
/// template's `\'` stays a two-character escape (Python keeps unknown non-letter escapes).
fn substitute(text: &[char], hits: &[Captures], optional: bool) -> String {
    let mut out = String::with_capacity(text.len() + hits.len() * 96);
    let mut last = 0;
    for caps in hits {
        out.extend(&text[last..caps.start()]);
        // Template `[(?:]\1["\']?(?P<\2>...)["\']?[)?]`, written out piece by piece.
        if optional {
            out.push_str("(?:");
        }
        if let Some((s, e)) = caps.get(1) {
            out.extend(&text[s..e]);
        }
        out.push_str(PARAM_HEAD);
        if let Some((s, e)) = caps.get(2) {
            out.extend(&text[s..e]);
        }
        out.push_str(PARAM_BODY);
        out.push_str(PARAM_QUOTE);
        if optional {
            out.push_str(")?");
        }
        last = caps.end();
    }
    out.extend(&text[last..]);
    out
}

/// `(name, ''.join(defaults))` from an optional-placeholder match whose key is group `key`.
fn optional_pair(caps: &Captures, text: &[char], key: usize) -> (String, String) {
    let name = caps.text(text, key).unwrap_or_default();
    let default: String = (key + 1..=key + 4)
        .filter_map(|g| caps.text(text, g))
        .collect();
    (name, default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Option<&str>)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn snippets_compile() {
        warm_up();
    }

    #[test]
    fn placeholders_become_st2_named_groups() {
        let f = Format::compile("run {{cmd}} on {{hosts}}").expect("valid");
        assert_eq!(
            f.parse("run date on localhost"),
            Ok(params(&[
                ("cmd", Some("date")),
                ("hosts", Some("localhost"))
            ]))
        );
    }

    #[test]
    fn extras_are_removed_everywhere_by_str_replace() {
        // The trailing run " a=1" also occurs in the middle; Python's str.replace drops both.
        let cmd = Command::new("x a=1 y a=1").expect("small input");
        assert_eq!(cmd.padded(), " x y ");
        assert_eq!(cmd.extras(), &[("a".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn default_spanning_newline_is_missing_group() {
        // st2's rewrite runs without DOTALL, so this default stays literal text while the
        // DOTALL findall still lists it as optional.
        let f = Format::compile("go {{a=x\ny}}").expect("valid");
        assert_eq!(f.missing_default_group(), Some("a"));
        assert!(matches!(
            f.parse("go {{a=x\ny}}"),
            Err(ParseError::MissingGroup { .. })
        ));
        assert!(matches!(f.parse("go"), Err(ParseError::NoMatch { .. })));
    }

    #[test]
    fn simple_required_rewrite_agrees_with_the_snippet_regex() {
        let cases = [
            "run {{cmd}} on {{hosts}}",
            "{{a}}{{b}}",
            "x  \t {{ a }}y{{b}} ",
            "say {{msg}}",
            "no placeholders",
            "{{a}}}",
            "{{ {{a}} }}",
            "{{a-b}}",
            "go {{a=1}}",
            "\u{a0}{{x}}",
            "run {{cmd}} (?: [\"\\']?(?P<h>(?:(?<=\\').+?(?=\\')|(?<=\").+?(?=\")|{.+?}|.+?))[\"\\']?)?",
        ];
        let snippets = &*SNIPPETS;
        for text in cases {
            let chars: Vec<char> = text.chars().collect();
            let mut budget = DEFAULT_STEP_LIMIT;
            let hits = snippets
                .required_sub
                .find_all(&chars, &mut Cache::new(), &mut budget)
                .expect("small input");
            let by_regex = substitute(&chars, &hits, false);
            if let Some(fast) = simple_required_sub(text) {
                assert_eq!(fast, by_regex, "{text:?}");
            }
        }
        assert!(simple_required_sub("{{a}}}").is_none());
        assert!(simple_required_sub("run {{cmd}}").is_some());
        assert!(
            cases
                .last()
                .is_some_and(|c| simple_required_sub(c).is_some())
        );
    }

    #[test]
    fn empty_default_is_an_invalid_group_name() {
        assert!(matches!(
            Format::compile("go {{a=}}"),
            Err(FormatError::InvalidRegex { .. })
        ));
    }
}
