//! `aliases reload` and `aliases check`.

use std::collections::BTreeSet;

use super::{CommandError, Reply};
use st2_alias::MatchOutcome;

use crate::{aliases, state::AppState};

/// `aliases reload`: fetch now.
pub async fn reload(bridge: &AppState) -> Result<Reply, CommandError> {
    let Some(st2) = &bridge.st2 else {
        return Err(CommandError::User(
            "StackStorm is not configured ([stackstorm])".into(),
        ));
    };
    match aliases::refresh_once(
        &bridge.aliases,
        &bridge.store,
        st2,
        &bridge.config.bridge.packs,
    )
    .await
    {
        Ok(count) => Ok(Reply::Markdown(format!(
            "✅ Fetched the aliases: {count} enabled. `aliases check` reviews them."
        ))),
        Err(e) => Err(CommandError::User(format!(
            "could not fetch the aliases: {e}; the cached ones stay in use"
        ))),
    }
}

/// Every format with its placeholders replaced by a sample word: a command the format should
/// match. Formats with other regex syntax are skipped (no reliable sample).
fn samples(view: &aliases::RoomView) -> Vec<String> {
    view.matcher
        .patterns()
        .map(replace_placeholders)
        .filter(|sample| !sample.chars().any(|c| "\\[](){}|?*+^$".contains(c)))
        .collect()
}

/// `format` with every `{{...}}` (no `}` inside) replaced by `sample`.
fn replace_placeholders(format: &str) -> String {
    let mut out = String::with_capacity(format.len());
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(close) = after.find('}') else { break };
        if !after[close..].starts_with("}}") {
            // A lone `}` ends the candidate: keep the text and look again after it.
            out.push_str(&rest[..start + 2 + close + 1]);
            rest = &after[close + 1..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str("sample");
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// `aliases check`: formats that do not compile, and formats that overlap.
///
/// It reviews the views rooms actually use (each pack filter in use): an overlap matters
/// only where both aliases are allowed, and a broken format only where its alias is.
pub fn check(bridge: &AppState) -> Result<Reply, CommandError> {
    let catalog = bridge.aliases.catalog();
    let mut failures = BTreeSet::new();
    let mut overlaps = BTreeSet::new();
    for filter in catalog.filters() {
        let Some(view) = catalog.view(&filter) else {
            continue;
        };
        failures.extend(
            view.matcher
                .failures()
                .iter()
                .map(|f| (f.alias_ref.clone(), f.format.clone(), f.reason.clone())),
        );
        for sample in samples(&view) {
            if let MatchOutcome::Ambiguous { candidates, .. } = view.matcher.match_command(&sample)
            {
                let set: Vec<String> = candidates
                    .iter()
                    .map(|c| format!("`{}` ({})", c.representation, c.alias_ref))
                    .collect();
                overlaps.insert((sample, set.join(" and ")));
            }
        }
    }
    let mut lines = Vec::new();
    if failures.is_empty() {
        lines.push(format!(
            "✅ All formats of the {} enabled aliases compile.",
            catalog.aliases().len()
        ));
    } else {
        lines.push(format!(
            "⚠️ {} format(s) do not compile and are skipped:",
            failures.len()
        ));
        lines.extend(
            failures
                .iter()
                .map(|(alias, format, reason)| format!("- `{alias}`: `{format}` — {reason}")),
        );
    }
    if overlaps.is_empty() {
        lines.push(
            "✅ No overlapping formats found (checked with a sample command per format).".into(),
        );
    } else {
        lines.push(format!(
            "⚠️ {} command(s) match more than one format, so StackStorm refuses them as ambiguous:",
            overlaps.len()
        ));
        lines.extend(
            overlaps
                .iter()
                .map(|(sample, set)| format!("- `{sample}`: {set}")),
        );
    }
    Ok(Reply::Markdown(lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::replace_placeholders;

    #[test]
    fn placeholders_become_sample_words() {
        for (format, sample) in [
            ("deploy {{app}} to {{env=prod}}", "deploy sample to sample"),
            ("no placeholders", "no placeholders"),
            ("{{a}b}} stays", "{{a}b}} stays"),
            ("{{a}{{b}}", "{{a}sample"),
            ("{{{x}}", "sample"),
            ("open {{x", "open {{x"),
            ("{{}}", "sample"),
        ] {
            assert_eq!(replace_placeholders(format), sample, "{format}");
        }
    }
}
