//! `!st2help [filter] [--pack P] [--page N]` (also `!st2 help …`): the commands a room can
//! run, grouped by pack, with their descriptions. Element gets HTML; the plain body reads well
//! on its own. Long lists are split into pages.

use ruma::events::room::message::RoomMessageEventContent;

use crate::{
    aliases::AliasEntry,
    matrix::render::{self, Origin, escape_html},
    permissions::Level,
    state::AppState,
};

/// Arguments of `help`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelpArgs {
    /// Words that must appear (case-insensitive) in the command, its description or its pack.
    pub filter: Option<String>,
    /// Only this pack.
    pub pack: Option<String>,
    /// 1-based page; 0 means the first.
    pub page: usize,
}

impl HelpArgs {
    /// Parses what follows `help`; a mistake gives the usage.
    pub fn parse(rest: &str) -> Result<HelpArgs, String> {
        let usage = "Usage: `help [filter] [--pack PACK] [--page N]`";
        let mut args = HelpArgs::default();
        let mut words = Vec::new();
        let mut tokens = rest.split_whitespace();
        while let Some(token) = tokens.next() {
            match token {
                "--pack" => args.pack = Some(tokens.next().ok_or(usage)?.to_owned()),
                "--page" => {
                    let n = tokens.next().ok_or(usage)?;
                    args.page = n
                        .parse()
                        .map_err(|_| format!("`{n}` is not a page number. {usage}"))?;
                }
                t if t.starts_with("--") => return Err(format!("Unknown option `{t}`. {usage}")),
                t => words.push(t),
            }
        }
        if !words.is_empty() {
            args.filter = Some(words.join(" "));
        }
        Ok(args)
    }
}

/// One help line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The alias's pack.
    pub pack: String,
    /// The display string (what to type).
    pub display: String,
    /// The alias description.
    pub description: Option<String>,
}

/// The help entries of `aliases` that pass `args`' filter and pack, in (pack, alias) order.
pub fn entries(aliases: &[AliasEntry], args: &HelpArgs) -> Vec<Entry> {
    let needle = args.filter.as_deref().map(str::to_lowercase);
    let mut out = Vec::new();
    for alias in aliases {
        let pack = alias.pack.to_string();
        if args.pack.as_deref().is_some_and(|p| p != pack) {
            continue;
        }
        for display in alias.displays.iter() {
            let entry = Entry {
                pack: pack.clone(),
                display: display.to_string(),
                description: alias.description.as_deref().map(str::to_owned),
            };
            let haystack = format!(
                "{} {} {}",
                entry.display,
                entry.description.as_deref().unwrap_or(""),
                entry.pack
            )
            .to_lowercase();
            if needle.as_deref().is_none_or(|n| haystack.contains(n)) {
                out.push(entry);
            }
        }
    }
    out
}

/// The reply to `help` in `origin`'s room.
/// `level` is the person's: below `run` the list is titled as the room's commands, not theirs,
/// and comes with a note saying which permission they lack and who can grant it.
pub fn render(
    bridge: &AppState,
    origin: &Origin,
    args: &HelpArgs,
    level: Level,
) -> RoomMessageEventContent {
    let prefix = &bridge.config.bridge.command_prefix;
    let catalog = bridge.aliases.catalog();
    if catalog.aliases().is_empty() {
        let why = match (&bridge.st2, catalog.fetched_at) {
            (None, _) => {
                "StackStorm is not configured for this bridge, so there are no commands yet."
            }
            (Some(_), None) => {
                "I could not load StackStorm's commands yet (StackStorm did not answer). Try again in a moment."
            }
            (Some(_), Some(_)) => "StackStorm has no enabled action aliases.",
        };
        return render::notice(why);
    }
    let view = bridge.aliases.view(&bridge.packs_for(&origin.room_id));
    let entries = entries(&view.aliases, args);
    let (mut plain, mut html) = format(
        &entries,
        args,
        prefix,
        bridge.config.bridge.help_page_size,
        level,
    );
    if level < Level::Run {
        let note = crate::access::refusal(
            &bridge.config,
            &origin.room_id,
            "Running these",
            Level::Run,
            level,
        );
        plain.push_str(&format!("\n\n{note}"));
        html.push_str(&format!("<p>{}</p>", render::escape_html(&note)));
    } else if args.filter.is_none() && args.pack.is_none() && args.page <= 1 {
        // First, after the heading: the bridge's own commands are always there, and the
        // aliases' last page keeps ending with the last alias.
        let (p, h) = builtins(prefix);
        match plain.find('\n') {
            Some(at) => plain.insert_str(at, &p),
            None => plain.push_str(&p),
        }
        match html.find("</p>") {
            Some(at) => html.insert_str(at + "</p>".len(), &h),
            None => html.push_str(&h),
        }
    }
    render::notice_html(&plain, html)
}

/// The bridge's own commands, as a group of their own (plain, HTML).
fn builtins(prefix: &str) -> (String, String) {
    let commands: [(&str, &str); 9] = [
        (
            "status [id]",
            "An execution's status, who started it, how long it took, its link.",
        ),
        (
            "output [id]",
            "An execution's output so far (long output as a file).",
        ),
        ("cancel [id]", "Cancels an execution."),
        (
            "rerun [id] [key=value …]",
            "Runs an execution again, with changed parameters.",
        ),
        ("history [N]", "The last N executions started in this room."),
        (
            "respond [id] key=value …",
            "Answers a question StackStorm asks (an inquiry).",
        ),
        (
            "approve <id> / reject <id> [reason]",
            "Answers a request for approval (or react ✅/❌ to it).",
        ),
        (
            "login / logout / whoami",
            "Links your own StackStorm account (in a direct chat with me).",
        ),
        ("ping", "Checks that I am here."),
    ];
    let mut plain = String::from(
        "\n\nbuilt-in (in a command's thread, or replying to its ack, the execution id can be left out)\n",
    );
    // Ends without a newline: the caller's text goes on with its own.
    let mut html = String::from(
        "<p><strong>built-in</strong> (in a command's thread, or replying to its ack, the execution id can be left out)</p><ul>",
    );
    for (usage, what) in commands {
        plain.push_str(&format!("  {prefix} {usage} — {what}\n"));
        html.push_str(&format!(
            "<li><code>{} {}</code> — {}</li>",
            render::escape_html(prefix),
            render::escape_html(usage),
            render::escape_html(what)
        ));
    }
    html.push_str("</ul>");
    (plain.trim_end().to_owned(), html)
}

/// Formats a page of help as (plain body, HTML). `level` is the reader's: only from `run` on
/// are these "commands you can run".
pub fn format(
    entries: &[Entry],
    args: &HelpArgs,
    prefix: &str,
    page_size: usize,
    level: Level,
) -> (String, String) {
    let (title, everything) = if level >= Level::Run {
        ("Commands you can run here", "everything you can run here")
    } else {
        ("Commands in this room", "every command in this room")
    };
    if entries.is_empty() {
        let what = match (&args.filter, &args.pack) {
            (Some(f), Some(p)) => format!("No commands match “{f}” in pack {p}."),
            (Some(f), None) => format!("No commands match “{f}”."),
            (None, Some(p)) => format!("No commands in pack {p}."),
            (None, None) => "No commands are available in this room.".to_owned(),
        };
        let hint = format!("{what} Type {prefix}help to see {everything}.");
        return (hint.clone(), escape_html(&hint));
    }
    let pages = entries.len().div_ceil(page_size);
    let page = args.page.clamp(1, pages);
    let shown = &entries[(page - 1) * page_size..(page * page_size).min(entries.len())];

    let title = if pages > 1 {
        format!(
            "{title} ({} of {}, page {page} of {pages}):",
            shown.len(),
            entries.len()
        )
    } else {
        format!("{title} ({}):", entries.len())
    };
    let mut plain = format!("{title}\n");
    let mut html = format!("<p><strong>{}</strong></p>", escape_html(&title));
    let mut current_pack: Option<&str> = None;
    for entry in shown {
        if current_pack != Some(entry.pack.as_str()) {
            if current_pack.is_some() {
                html.push_str("</ul>");
            }
            current_pack = Some(&entry.pack);
            plain.push_str(&format!("\n{}\n", entry.pack));
            html.push_str(&format!(
                "<p><strong>{}</strong></p><ul>",
                escape_html(&entry.pack)
            ));
        }
        let command = format!("{prefix} {}", entry.display);
        match &entry.description {
            Some(d) if !d.trim().is_empty() => {
                plain.push_str(&format!("  {command} — {}\n", d.trim()));
                html.push_str(&format!(
                    "<li><code>{}</code> — {}</li>",
                    escape_html(&command),
                    escape_html(d.trim())
                ));
            }
            _ => {
                plain.push_str(&format!("  {command}\n"));
                html.push_str(&format!("<li><code>{}</code></li>", escape_html(&command)));
            }
        }
    }
    html.push_str("</ul>");
    if page < pages {
        let mut next = format!("{prefix}help");
        if let Some(f) = &args.filter {
            next.push_str(&format!(" {f}"));
        }
        if let Some(p) = &args.pack {
            next.push_str(&format!(" --pack {p}"));
        }
        next.push_str(&format!(" --page {}", page + 1));
        plain.push_str(&format!("\nMore: {next}"));
        html.push_str(&format!("<p>More: <code>{}</code></p>", escape_html(&next)));
    }
    (plain, html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alias(pack: &str, name: &str, formats: serde_json::Value, description: &str) -> AliasEntry {
        let alias: st2_alias::Alias = serde_json::from_value(
            json!({"name": name, "pack": pack, "action_ref": "x.y", "formats": formats,
            "description": description}),
        )
        .unwrap();
        AliasEntry::from(&alias)
    }

    fn aliases() -> Vec<AliasEntry> {
        vec![
            alias(
                "examples",
                "remote",
                json!(["run {{cmd}} on {{hosts}}"]),
                "Execute a command on a remote host.",
            ),
            alias(
                "packs",
                "get",
                json!([{"display": "pack get <pack>", "representation": ["pack get {{ pack }}"]}]),
                "Get a pack.",
            ),
            alias(
                "packs",
                "hidden",
                json!([{"representation": ["secret {{x}}"]}]),
                "No display string.",
            ),
        ]
    }

    #[test]
    fn arguments_parse_and_mistakes_show_usage() {
        assert_eq!(HelpArgs::parse("").unwrap(), HelpArgs::default());
        let args = HelpArgs::parse("deploy web --pack ops --page 2").unwrap();
        assert_eq!(
            (args.filter.as_deref(), args.pack.as_deref(), args.page),
            (Some("deploy web"), Some("ops"), 2)
        );
        assert!(HelpArgs::parse("--page").unwrap_err().contains("Usage"));
        assert!(HelpArgs::parse("--frob").unwrap_err().contains("--frob"));
    }

    #[test]
    fn entries_follow_display_strings_filter_and_pack() {
        let all = entries(&aliases(), &HelpArgs::default());
        assert_eq!(
            all.iter().map(|e| e.display.as_str()).collect::<Vec<_>>(),
            ["run {{cmd}} on {{hosts}}", "pack get <pack>"]
        );
        let filtered = entries(
            &aliases(),
            &HelpArgs {
                filter: Some("REMOTE".into()),
                ..Default::default()
            },
        );
        assert_eq!(filtered.len(), 1);
        let pack = entries(
            &aliases(),
            &HelpArgs {
                pack: Some("packs".into()),
                ..Default::default()
            },
        );
        assert_eq!(pack.len(), 1);
    }

    #[test]
    fn help_is_grouped_by_pack_and_escaped() {
        let (plain, html) = format(
            &entries(&aliases(), &HelpArgs::default()),
            &HelpArgs::default(),
            "!st2",
            40,
            Level::Run,
        );
        assert!(
            plain.contains(
                "examples\n  !st2 run {{cmd}} on {{hosts}} — Execute a command on a remote host."
            ),
            "{plain}"
        );
        assert!(
            plain.contains("packs\n  !st2 pack get <pack> — Get a pack."),
            "{plain}"
        );
        assert!(
            html.contains("<code>!st2 pack get &lt;pack&gt;</code>"),
            "{html}"
        );
        assert!(!html.contains("<pack>"), "{html}");
    }

    #[test]
    fn long_help_is_paginated_with_a_next_hint() {
        let many: Vec<Entry> = (0..95)
            .map(|i| Entry {
                pack: "p".into(),
                display: format!("cmd{i}"),
                description: None,
            })
            .collect();
        let (plain, _) = format(
            &many,
            &HelpArgs {
                filter: Some("cmd".into()),
                ..Default::default()
            },
            "!st2",
            40,
            Level::Run,
        );
        assert!(
            plain.starts_with("Commands you can run here (40 of 95, page 1 of 3):"),
            "{plain}"
        );
        assert!(plain.ends_with("More: !st2help cmd --page 2"), "{plain}");
        let (last, _) = format(
            &many,
            &HelpArgs {
                page: 9,
                ..Default::default()
            },
            "!st2",
            40,
            Level::Run,
        );
        assert!(
            last.contains("page 3 of 3") && last.contains("cmd94") && !last.contains("More:"),
            "{last}"
        );
    }

    #[test]
    fn help_for_someone_who_cannot_run_is_titled_as_the_rooms_commands() {
        let all = entries(&aliases(), &HelpArgs::default());
        let (plain, html) = format(&all, &HelpArgs::default(), "!st2", 40, Level::Help);
        assert!(plain.starts_with("Commands in this room (2):"), "{plain}");
        assert!(!html.contains("you can run"), "{html}");
        let (ran, _) = format(&all, &HelpArgs::default(), "!st2", 40, Level::Run);
        assert!(ran.starts_with("Commands you can run here (2):"), "{ran}");
    }

    #[test]
    fn no_match_for_someone_who_cannot_run_does_not_promise_commands_to_run() {
        let args = HelpArgs {
            pack: Some("zzz".into()),
            ..Default::default()
        };
        let (plain, _) = format(&[], &args, "!st2", 40, Level::Help);
        assert_eq!(
            plain,
            "No commands in pack zzz. Type !st2help to see every command in this room."
        );
    }

    #[test]
    fn no_match_says_so_with_a_hint() {
        let args = HelpArgs {
            filter: Some("zzz".into()),
            ..Default::default()
        };
        let (plain, _) = format(&[], &args, "!st2", 40, Level::Run);
        assert_eq!(
            plain,
            "No commands match “zzz”. Type !st2help to see everything you can run here."
        );
    }
}
