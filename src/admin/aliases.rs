//! `aliases reload` and `aliases check`.

use std::collections::BTreeSet;

use super::{CommandError, Reply};
use crate::{alias::MatchOutcome, aliases, bridge::Bridge};

/// `aliases reload`: fetch now.
pub async fn reload(bridge: &Bridge) -> Result<Reply, CommandError> {
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
    let placeholder = regex::Regex::new(r"\{\{[^}]*\}\}").expect("constant regex");
    view.matcher
        .patterns()
        .map(|format| placeholder.replace_all(format, "sample").into_owned())
        .filter(|sample| !sample.chars().any(|c| "\\[](){}|?*+^$".contains(c)))
        .collect()
}

/// `aliases check`: formats that do not compile, and formats that overlap.
///
/// It reviews the views rooms actually use (each pack filter in use): an overlap matters
/// only where both aliases are allowed, and a broken format only where its alias is.
pub fn check(bridge: &Bridge) -> Result<Reply, CommandError> {
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
