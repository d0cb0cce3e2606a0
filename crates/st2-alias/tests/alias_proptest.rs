//! Property tests: no (format, command) pair makes the alias parser or matcher panic or hang.
//! Termination is guaranteed by the regex step budget; these tests exercise that on arbitrary,
//! regex-heavy input.

use proptest::prelude::*;
use st2_alias::pyre::{Cache, Regex};
use st2_alias::{Alias, Format, FormatSpec, Matcher};

/// Fragments that stress the Python regex dialect and st2's placeholder rewriting.
const FORMAT_PIECES: &[&str] = &[
    "run",
    " ",
    "  ",
    "on",
    "{{cmd}}",
    "{{ hosts = localhost }}",
    "{{a=\"x y\"}}",
    "{{b={'k': 1}}}",
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
    "\\b",
    "\\1",
    "\\x4",
    "\\N{x}",
    "^",
    "$",
    "\\A",
    "\\Z",
    ".",
    "\n",
    "'",
    "\"",
    "é",
    "ſ",
    "K",
    "#",
];

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
];

fn pieces(set: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(set), 0..max).prop_map(|v| v.concat())
}

fn format_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        pieces(FORMAT_PIECES, 12),
        any::<String>(),
        "[(){}|?*+.\\[\\]\\\\a-z=^$ ]{0,24}"
    ]
}

fn command_strategy() -> impl Strategy<Value = String> {
    prop_oneof![pieces(COMMAND_PIECES, 12), any::<String>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn format_parse_never_panics(format in format_strategy(), command in command_strategy()) {
        if let Ok(f) = Format::compile(&format) {
            let _ = f.parse(&command);
            let _ = f.parse_multiple(&command);
        }
    }

    #[test]
    fn raw_regex_never_panics(pattern in format_strategy(), text in command_strategy()) {
        if let Ok(re) = Regex::new(&pattern, 0) {
            let input: Vec<char> = text.chars().collect();
            let mut budget = 200_000;
            let _ = re.find_all(&input, &mut Cache::new(), &mut budget);
        }
    }

    #[test]
    fn matcher_never_panics(
        formats in prop::collection::vec(format_strategy(), 0..6),
        command in command_strategy(),
    ) {
        let aliases: Vec<Alias> = formats
            .into_iter()
            .enumerate()
            .map(|(i, f)| Alias {
                name: format!("a{i}"),
                pack: Some("p".into()),
                enabled: true,
                formats: vec![FormatSpec::Plain(f)],
                ..Alias::default()
            })
            .collect();
        let matcher = Matcher::build(&aliases);
        let _ = matcher.match_command(&command);
    }
}
