//! st2's two matching passes (`get_matching_alias`) over the prefilter's candidates, and the
//! outcome built from the hits.
//!
//! Separate from the prefilter and the suggestions because this is the part that must agree
//! with StackStorm: everything here decides *what* matches, the rest only decides how fast
//! and what to say when nothing does.

use super::{
    AliasMatch, Candidate, MatchOutcome, MatchParams, Matcher, PASS_MULTIPLE, PASS_NORMAL, to_u32,
};
use crate::format::{self, Command, Params};
use crate::pyre::{Cache, DEFAULT_STEP_LIMIT};

impl Matcher {
    /// [`Matcher::match_command`], optionally without the prefilter (every format is tried), so
    /// tests can check that the prefilter never changes an outcome.
    pub(super) fn match_with(&self, command: &str, prefilter: bool) -> MatchOutcome {
        let mut cache = Cache::new();
        let mut budget = DEFAULT_STEP_LIMIT;
        let cmd = match Command::with_cache(command, &mut cache, &mut budget) {
            Ok(cmd) => cmd,
            Err(_) => {
                tracing::warn!(
                    command,
                    "cutting key=value extras off the command exceeded the regex step limit; \
                     treating it as matching nothing"
                );
                return MatchOutcome::NoMatch;
            }
        };
        let candidates = if prefilter {
            self.candidates(&cmd)
        } else {
            (0..to_u32(self.entries.len())).collect()
        };

        for (pass, multiple) in [(PASS_NORMAL, false), (PASS_MULTIPLE, true)] {
            let mut hits: Vec<(u32, Params)> = Vec::new();
            for &idx in &candidates {
                let entry = &self.entries[idx as usize];
                if entry.passes & pass == 0 || (multiple && entry.passes & PASS_NORMAL != 0) {
                    // In pass two, entries that took part in pass one already failed to match.
                    continue;
                }
                let mut budget = DEFAULT_STEP_LIMIT;
                match self
                    .format(idx)
                    .parse_command(&cmd, &mut cache, &mut budget)
                {
                    Ok(params) => hits.push((idx, params)),
                    Err(format::ParseError::LimitExceeded { format, .. }) => {
                        tracing::warn!(
                            command,
                            format,
                            "format exceeded the regex step limit; treating it as no match"
                        );
                    }
                    Err(_) => {}
                }
            }
            match hits.len() {
                0 => continue,
                1 => {
                    let (idx, params) = hits.remove(0);
                    return MatchOutcome::Matched(self.matched(idx, params, &cmd, &mut cache));
                }
                _ => {
                    return MatchOutcome::Ambiguous {
                        multiple,
                        candidates: hits.iter().map(|(idx, _)| self.candidate(*idx)).collect(),
                    };
                }
            }
        }
        MatchOutcome::NoMatch
    }

    fn matched(&self, idx: u32, params: Params, cmd: &Command, cache: &mut Cache) -> AliasMatch {
        let entry = &self.entries[idx as usize];
        let alias = &self.aliases[entry.alias as usize];
        let params = if entry.match_multiple {
            let mut budget = DEFAULT_STEP_LIMIT;
            match self
                .format(idx)
                .parse_command_multiple(cmd, cache, &mut budget)
            {
                Ok(list) => MatchParams::Multiple(list),
                Err(e) => {
                    tracing::warn!(error = %e, "match_multiple extraction failed after a match");
                    MatchParams::Multiple(Vec::new())
                }
            }
        } else {
            MatchParams::Single(params)
        };
        AliasMatch {
            alias_index: entry.alias as usize,
            alias_ref: self.text(alias.reference).to_owned(),
            alias_name: self.text(alias.name).to_owned(),
            display: self.display(idx).map(str::to_owned),
            representation: self.format(idx).source().to_owned(),
            match_multiple: entry.match_multiple,
            params,
        }
    }

    fn candidate(&self, idx: u32) -> Candidate {
        let entry = &self.entries[idx as usize];
        Candidate {
            alias_index: entry.alias as usize,
            alias_ref: self
                .text(self.aliases[entry.alias as usize].reference)
                .to_owned(),
            display: self.display(idx).map(str::to_owned),
            representation: self.format(idx).source().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{alias, single};
    use super::*;

    #[test]
    fn unique_format_matches_with_params() {
        let m = Matcher::build(&[
            alias(r#"{"name": "shell", "pack": "core", "formats": ["run {{cmd}} on {{hosts}}"]}"#),
            alias(
                r#"{"name": "get", "pack": "packs", "formats": [{"display": "pack get <pack>", "representation": ["pack get {{ pack }}"]}]}"#,
            ),
        ]);
        let out = m.match_command("pack get st2");
        assert_eq!(single(&out).get("pack"), Some(&Some("st2".to_owned())));
        let MatchOutcome::Matched(am) = out else {
            unreachable!()
        };
        assert_eq!(am.alias_ref, "packs.get");
        assert_eq!(am.display.as_deref(), Some("pack get <pack>"));
        assert_eq!(am.representation, "pack get {{ pack }}");
    }

    #[test]
    fn two_formats_of_the_same_alias_are_ambiguous() {
        let m = Matcher::build(&[alias(
            r#"{"name": "ip", "pack": "net", "formats": ["get ip {{a}} {{b}}", "get ip {{a}} {{b}} {{c}} {{d}}"]}"#,
        )]);
        match m.match_command("get ip 1 2 3 4") {
            MatchOutcome::Ambiguous {
                multiple: false,
                candidates,
            } => assert_eq!(candidates.len(), 2),
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[test]
    fn disabled_alias_is_skipped() {
        let m = Matcher::build(&[
            alias(r#"{"name": "a", "pack": "p", "enabled": false, "formats": ["run {{cmd}}"]}"#),
            alias(r#"{"name": "b", "pack": "p", "formats": ["run {{cmd}}"]}"#),
        ]);
        let MatchOutcome::Matched(am) = m.match_command("run date") else {
            panic!("expected a match");
        };
        assert_eq!(am.alias_ref, "p.b");
    }

    #[test]
    fn match_multiple_only_when_no_normal_format_matched() {
        let multi = r#"{"name": "fixes", "pack": "p", "formats": [{"display": "fixes <issue>", "representation": ["(?:\\b|^)fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\\b|$)"], "match_multiple": true}]}"#;
        let normal = r#"{"name": "fix", "pack": "p", "formats": ["fixes {{issue}}"]}"#;
        let both = Matcher::build(&[alias(multi), alias(normal)]);
        let MatchOutcome::Matched(am) = both.match_command("fixes ABC-1") else {
            panic!("expected a match");
        };
        assert_eq!(am.alias_ref, "p.fix");

        let only_multi = Matcher::build(&[alias(multi)]);
        let MatchOutcome::Matched(am) = only_multi.match_command("x fixes AB-1 and fixes CD-2")
        else {
            panic!("expected a match");
        };
        assert!(am.match_multiple);
        let MatchParams::Multiple(list) = am.params else {
            panic!("expected a list");
        };
        let keys: Vec<_> = list.iter().map(|p| p["issue_key"].clone()).collect();
        assert_eq!(keys, vec![Some("AB-1".into()), Some("CD-2".into())]);
    }
}
