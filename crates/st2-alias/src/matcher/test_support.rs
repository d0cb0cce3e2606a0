//! Helpers shared by the matcher's test modules: aliases from JSON, and a [`Snapshot`] of
//! everything a matcher decides with (to compare a rebuilt matcher with a fresh one).

use super::{AliasMatch, FormatFailure, MatchOutcome, MatchParams, Matcher, to_u32};
use crate::format::Params;
use crate::model::Alias;
use crate::pyre::arena::RegexParts;

pub(super) fn alias(json: &str) -> Alias {
    serde_json::from_str(json).expect("valid alias JSON")
}

pub(super) fn single(outcome: &MatchOutcome) -> &Params {
    match outcome {
        MatchOutcome::Matched(AliasMatch {
            params: MatchParams::Single(p),
            ..
        }) => p,
        other => panic!("expected a single match, got {other:?}"),
    }
}

/// One entry of a [`Snapshot`]: format source, compiled regex, defaults, display, and
/// (alias, passes, match_multiple).
type EntrySnapshot = (
    String,
    RegexParts,
    Vec<(String, String)>,
    Option<String>,
    (u32, u8, bool),
);

/// A window with its member entries.
type Filing = (u32, Vec<u32>);

/// A first word with its suggestion items.
type Grouped = (String, Vec<u32>);

/// Everything a matcher decides with, independent of where its arena put things.
#[derive(Debug, PartialEq)]
pub(super) struct Snapshot {
    pub(super) aliases: Vec<(String, String)>,
    pub(super) entries: Vec<EntrySnapshot>,
    /// Filed entries and always-tried ones.
    pub(super) prefilter: (Vec<Filing>, Vec<u32>),
    /// Items `(entry, key)` and items by first word.
    pub(super) suggestions: (Vec<(u32, String)>, Vec<Grouped>),
    pub(super) failures: Vec<FormatFailure>,
}

pub(super) fn snapshot(m: &Matcher) -> Snapshot {
    let mut index: Vec<(u32, Vec<u32>)> = m
        .prefilter
        .index
        .iter()
        .map(|(w, &(start, len))| {
            let members = m.prefilter.members[start as usize..(start + len) as usize].to_vec();
            (*w, members)
        })
        .collect();
    index.sort();
    let mut words: Vec<(String, Vec<u32>)> = m
        .suggestions
        .by_first_word
        .iter()
        .map(|(w, members)| (w.to_string(), members.clone()))
        .collect();
    words.sort();
    Snapshot {
        aliases: m
            .aliases
            .iter()
            .map(|a| (m.text(a.reference).to_owned(), m.text(a.name).to_owned()))
            .collect(),
        entries: (0..to_u32(m.entries.len()))
            .map(|idx| {
                let e = &m.entries[idx as usize];
                let view = m.format(idx);
                (
                    view.source().to_owned(),
                    view.regex().to_parts(),
                    view.optional()
                        .map(|(n, d)| (n.to_owned(), d.to_owned()))
                        .collect(),
                    m.display(idx).map(str::to_owned),
                    (e.alias, e.passes, e.match_multiple),
                )
            })
            .collect(),
        prefilter: (index, m.prefilter.always.clone()),
        suggestions: (
            m.suggestions
                .items
                .iter()
                .map(|(entry, key)| (*entry, m.text(*key).to_owned()))
                .collect(),
            words,
        ),
        failures: m.failures.clone(),
    }
}
