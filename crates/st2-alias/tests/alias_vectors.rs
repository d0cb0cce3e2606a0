//! Runs StackStorm's parser test vectors (`tests/fixtures/st2-parser-vectors.json`, produced by
//! st2's real `ActionAliasFormatParser` on Python 3.11) against `st2_alias::Format`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use st2_alias::{Format, FormatError, Params, ParseError};

#[derive(Debug, Deserialize)]
struct Vector {
    format: String,
    command: String,
    #[serde(default)]
    match_multiple: bool,
    expected_params: Option<BTreeMap<String, Option<String>>>,
    expected_params_list: Option<Vec<BTreeMap<String, Option<String>>>>,
    #[serde(default)]
    expected_error: bool,
    error_message: Option<String>,
    note: Option<String>,
}

/// What st2 produced, reduced to the classes the vectors distinguish.
#[derive(Debug, PartialEq)]
enum Outcome {
    Params(Params),
    ParamsList(Vec<Params>),
    /// `ParseException: Command "..." doesn't match format string "..."`.
    NoMatch,
    /// `ParseException: No value supplied and no default value found.`
    NoValue,
    /// `error: ...` (Python `re.error`): the format itself is invalid.
    InvalidFormat,
}

fn expected(v: &Vector) -> Outcome {
    if v.expected_error {
        let msg = v.error_message.as_deref().unwrap_or_default();
        if msg.starts_with("ParseException: No value supplied") {
            Outcome::NoValue
        } else if msg.starts_with("ParseException:") {
            Outcome::NoMatch
        } else {
            assert!(msg.starts_with("error:"), "unknown error class: {msg}");
            Outcome::InvalidFormat
        }
    } else if let Some(list) = &v.expected_params_list {
        Outcome::ParamsList(list.clone())
    } else {
        Outcome::Params(v.expected_params.clone().expect("vector has an outcome"))
    }
}

fn actual(v: &Vector) -> Outcome {
    let format = match Format::compile(&v.format) {
        Ok(f) => f,
        Err(FormatError::InvalidRegex { .. }) => return Outcome::InvalidFormat,
        Err(e) => panic!("unexpected compile error for {:?}: {e}", v.format),
    };
    let result = if v.match_multiple {
        format.parse_multiple(&v.command).map(Outcome::ParamsList)
    } else {
        format.parse(&v.command).map(Outcome::Params)
    };
    match result {
        Ok(o) => o,
        Err(ParseError::NoMatch { .. }) => Outcome::NoMatch,
        Err(ParseError::NoValue) => Outcome::NoValue,
        Err(e) => panic!("unexpected parse error for {:?}: {e}", v.format),
    }
}

#[test]
fn every_st2_parser_vector_passes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/st2-parser-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("vectors fixture is present");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("vectors are valid JSON");
    assert!(vectors.len() >= 153, "fixture shrank: {}", vectors.len());

    let mut report = String::new();
    let mut failures = 0;
    for (i, v) in vectors.iter().enumerate() {
        let want = expected(v);
        let got = actual(v);
        if want != got {
            failures += 1;
            let _ = writeln!(
                report,
                "#{i}: format {:?} command {:?}{}\n    expected: {want:?}\n    actual:   {got:?}",
                v.format,
                v.command,
                v.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
            );
        }
    }
    assert!(
        failures == 0,
        "{failures} of {} vectors differ from st2:\n{report}",
        vectors.len()
    );
}
