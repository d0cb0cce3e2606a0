//! Target `alias`: st2 alias formats and the matcher over untrusted commands.
//!
//! Property: for any few formats (trusted-ish: they come from StackStorm's packs) and any
//! command (user input from a chat room), compiling the formats, parsing the command with each
//! ([`Format::parse`], [`Format::parse_multiple`]), the extras step
//! ([`Command::new`]) and the whole matcher ([`Matcher::match_command`], [`Matcher::closest`])
//! never panic and always return. "Always return" rests on pyre's step budget; the campaign
//! runs with libFuzzer's `-timeout`, and the short run bounds each input's time too.
//!
//! Inputs are built from fragments that stress the Python dialect and st2's `{{param}}`
//! rewriting (half the time) or taken as raw text, so both "almost valid" formats and plain
//! garbage are reached.

use arbitrary::{Result, Unstructured};
use st2_alias::{Alias, Command, Format, FormatObject, FormatSpec, Matcher};

/// Format fragments: placeholders, Python regex syntax, and characters with case-folding or
/// whitespace quirks.
const FORMAT_PIECES: &[&str] = &[
    "run",
    " ",
    "  ",
    "on",
    "{{cmd}}",
    "{{ hosts = localhost }}",
    "{{a=\"x y\"}}",
    "{{b={'k': 1}}}",
    "{{c=[1, 2]}}",
    "{{",
    "}}",
    "{",
    "}",
    "=",
    "(",
    ")",
    "(?:",
    "(?P<n>",
    "(?P=n)",
    "(?i:",
    "(?i)",
    "(?x)",
    "(?s)",
    "(?=",
    "(?!",
    "(?<=a)",
    "(?<!b)",
    "(?>",
    "(?(1)a|b)",
    "|",
    "*",
    "+",
    "?",
    "*?",
    "++",
    "{2}",
    "{1,3}",
    "{,}",
    "[",
    "]",
    "[^a-z]",
    "[[:alpha:]]",
    "\\",
    "\\d",
    "\\w",
    "\\s",
    "\\S",
    "\\b",
    "\\1",
    "\\x4",
    "\\N{x}",
    "^",
    "$",
    "\\A",
    "\\Z",
    ".",
    ".*",
    "(.+)",
    "(.*)*",
    "\n",
    "'",
    "\"",
    "é",
    "ſ",
    "K",
    "#",
    "{{x}} {{y}}",
    "{{ z = 5 }}",
];

/// Command fragments: words, `key=value` extras with every quoting st2 knows, and unusual
/// whitespace.
const COMMAND_PIECES: &[&str] = &[
    "run",
    " ",
    "  ",
    "on",
    "date",
    "web1",
    "k=v",
    "a=\"b c\"",
    "x='y'",
    "d={\"a\": {\"b\": 1}}",
    "=",
    "\"",
    "'",
    "{",
    "}",
    "\n",
    "é",
    "ſ",
    "K",
    "aaaaaaaaaaaaaaaa",
    "\u{a0}",
    "\t",
    "\u{2028}",
    "localhost",
    "1",
    "[1, 2]",
    "x",
    "y",
    "z",
];

/// Fragments joined, or arbitrary text.
fn text(u: &mut Unstructured<'_>, pieces: &[&str], max: usize) -> Result<String> {
    if u.ratio(1, 4)? {
        let s: &str = u.arbitrary()?;
        return Ok(s.chars().take(4 * max).collect());
    }
    let n = u.int_in_range(0..=max)?;
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(u.choose(pieces)?);
    }
    Ok(out)
}

/// One fuzz case: formats for a handful of aliases and one command.
#[derive(Debug)]
pub struct Case {
    /// Each alias's formats (plain strings or `representation` lists).
    pub aliases: Vec<Vec<FormatSpec>>,
    /// The command typed in the room.
    pub command: String,
}

impl Case {
    /// Builds a case from fuzz bytes.
    pub fn generate(u: &mut Unstructured<'_>) -> Result<Self> {
        let n_aliases = u.int_in_range(1..=4)?;
        let mut aliases = Vec::with_capacity(n_aliases);
        for _ in 0..n_aliases {
            let n_formats = u.int_in_range(1..=3)?;
            let mut formats = Vec::with_capacity(n_formats);
            for _ in 0..n_formats {
                let format = text(u, FORMAT_PIECES, 10)?;
                formats.push(if u.ratio(1, 4)? {
                    FormatSpec::Object(FormatObject {
                        display: Some(format.clone()),
                        representation: vec![format, text(u, FORMAT_PIECES, 6)?],
                        match_multiple: Some(u.arbitrary()?),
                    })
                } else {
                    FormatSpec::Plain(format)
                });
            }
            aliases.push(formats);
        }
        let command = text(u, COMMAND_PIECES, 12)?;
        Ok(Self { aliases, command })
    }
}

/// Runs one input through every alias entry point (see the module doc for the property).
/// Byte 0 picks the mode: odd is structured ([`Case::generate`]); even is raw text,
/// `NUL`-separated: one alias per format, the last part being the command, so a seed is one
/// byte and readable text.
pub fn run(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let case = if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let mut parts: Vec<&str> = text.split('\0').collect();
        let command = parts.pop().unwrap_or_default().to_owned();
        Case {
            aliases: parts
                .into_iter()
                .map(|f| vec![FormatSpec::Plain(f.to_owned())])
                .collect(),
            command,
        }
    } else {
        match Case::generate(&mut Unstructured::new(rest)) {
            Ok(case) => case,
            Err(_) => return,
        }
    };
    check(&case);
}

/// The property, for one case; panics are the failures.
pub fn check(case: &Case) {
    let _ = Command::new(&case.command);
    for formats in &case.aliases {
        for spec in formats {
            for pattern in spec.patterns() {
                let Ok(format) = Format::compile(pattern.representation) else {
                    continue;
                };
                let _ = format.parse(&case.command);
                let _ = format.parse_multiple(&case.command);
                let _ = format.required_literals().count();
                let _ = format.missing_default_group();
            }
        }
    }
    let aliases: Vec<Alias> = case
        .aliases
        .iter()
        .enumerate()
        .map(|(i, formats)| Alias {
            name: format!("a{i}"),
            pack: Some("fuzz".into()),
            action_ref: format!("fuzz.a{i}"),
            enabled: true,
            formats: formats.clone(),
            ..Alias::default()
        })
        .collect();
    let matcher = Matcher::build(&aliases);
    let _ = matcher.match_command(&case.command);
    let _ = matcher.closest(&case.command);
    // A rebuild reuses compiled formats: the reuse path must agree with a fresh build.
    let rebuilt = matcher.rebuild(&aliases);
    assert_eq!(
        rebuilt.format_count(),
        matcher.format_count(),
        "rebuilding from the same aliases changed the number of formats"
    );
}
