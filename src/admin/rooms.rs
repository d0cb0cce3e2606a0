//! `rooms …`: where the bot is, and each room's packs and permission rules.

use super::{ApprovalsAction, CommandError, Reply, RoomsCommand, room_arg};
use crate::{
    config::HumanDuration,
    permissions::PackFilter,
    permissions::{Grant, Level, Rule},
    state::AppState,
    store,
};

/// Runs a `rooms` command.
pub async fn run(bridge: &AppState, command: RoomsCommand) -> Result<Reply, CommandError> {
    match command {
        RoomsCommand::List => list(bridge).await,
        RoomsCommand::Show { room } => show(bridge, &room).await,
        RoomsCommand::Packs { room, packs } => set_packs(bridge, &room, &packs).await,
        RoomsCommand::Leave { room } => leave(bridge, &room).await,
        RoomsCommand::Allow { room, rule, level } => {
            let level: Level = level.parse().map_err(CommandError::User)?;
            if level == Level::None {
                return Err(CommandError::User(
                    "to deny, use `rooms deny <room> <rule>`".into(),
                ));
            }
            grant(bridge, &room, &rule, level).await
        }
        RoomsCommand::Deny { room, rule } => grant(bridge, &room, &rule, Level::None).await,
        RoomsCommand::Unset { room, rule } => unset(bridge, &room, &rule).await,
        RoomsCommand::Approvals { room, action } => approvals(bridge, &room, action).await,
    }
}

/// The room, which the bot must be in.
async fn joined_room(
    bridge: &AppState,
    room: &str,
) -> Result<(ruma::OwnedRoomId, store::rooms::Room), CommandError> {
    let id = room_arg(bridge, room).await?;
    match store::rooms::get(&bridge.store, id.as_str()).await? {
        Some(row) => Ok((id, row)),
        None => Err(CommandError::User(format!(
            "the bot is not in {id}; `rooms list` shows where it is"
        ))),
    }
}

async fn list(bridge: &AppState) -> Result<Reply, CommandError> {
    let rooms = store::rooms::all_ids(&bridge.store).await?;
    if rooms.is_empty() {
        return Ok(Reply::Markdown(
            "The bot is in no room yet. Invite it into one.".into(),
        ));
    }
    let mut lines = vec![format!("The bot is in {} room(s):", rooms.len())];
    for room in rooms {
        let Some(row) = store::rooms::get(&bridge.store, &room).await? else {
            continue;
        };
        let Ok(id) = ruma::RoomId::parse(&room) else {
            continue;
        };
        let mut notes = Vec::new();
        if bridge.is_admin_room(&id) {
            notes.push("admin room".to_owned());
        }
        if row.direct {
            notes.push(format!(
                "direct chat with {}",
                row.inviter.as_deref().unwrap_or("?")
            ));
        }
        if row.encrypted {
            notes.push("encrypted".to_owned());
        }
        if let Some(filter) = bridge.access.settings.own_packs(&id) {
            notes.push(format!("packs {filter}"));
        }
        let rules = bridge.access.settings.room_grants(&id).len();
        if rules > 0 {
            notes.push(format!("{rules} rule(s)"));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" — {}", notes.join(", "))
        };
        lines.push(format!("- `{room}`{notes}"));
    }
    Ok(Reply::Markdown(lines.join("\n")))
}

async fn show(bridge: &AppState, room: &str) -> Result<Reply, CommandError> {
    let (id, row) = joined_room(bridge, room).await?;
    let filter = bridge.packs_for(&id);
    let own = if bridge.access.settings.own_packs(&id).is_some() {
        ""
    } else {
        " (the default, [bridge].packs)"
    };
    let view = bridge.aliases.view(&filter);
    let mut lines = vec![
        format!("**`{id}`**"),
        format!(
            "- Invited by: {}",
            row.inviter.as_deref().unwrap_or("unknown")
        ),
        format!(
            "- Direct chat: {}; encrypted: {}",
            yes(row.direct),
            yes(row.encrypted)
        ),
        format!("- Packs: {filter}{own}; {} aliases", view.aliases.len()),
        format!(
            "- Default level: `{}` ([permissions].default)",
            bridge.config.permissions.default
        ),
    ];
    let room_rules = bridge.access.settings.room_grants(&id);
    if room_rules.is_empty() {
        lines.push("- Room rules: none".into());
    } else {
        lines.push("- Room rules (a deny wins; otherwise the highest grant):".into());
        lines.extend(
            room_rules
                .iter()
                .map(|g| format!("  - `{}` → `{}`", g.rule, g.level)),
        );
    }
    if !bridge.config.permissions.rules.is_empty() {
        lines.push("- Rules from the config:".into());
        lines.extend(
            bridge
                .config
                .permissions
                .rules
                .iter()
                .map(|g| format!("  - `{}` → `{}`", g.rule, g.level)),
        );
    }
    Ok(Reply::Markdown(lines.join("\n")))
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

async fn set_packs(bridge: &AppState, room: &str, packs: &str) -> Result<Reply, CommandError> {
    let (id, _) = joined_room(bridge, room).await?;
    let filter = if packs.trim() == "default" {
        None
    } else {
        Some(packs.parse::<PackFilter>().map_err(CommandError::User)?)
    };
    let effective = filter
        .clone()
        .unwrap_or_else(|| bridge.config.bridge.packs.clone());
    // Built before the filter takes effect, so the room's next command finds its view ready.
    bridge
        .aliases
        .ensure_view(&bridge.store, &effective)
        .await
        .map_err(CommandError::Internal)?;
    bridge
        .access
        .settings
        .set_packs(&bridge.store, &id, filter.clone())
        .await?;
    let count = bridge.aliases.view(&effective).aliases.len();
    let what = if filter.is_some() {
        format!("{effective}")
    } else {
        format!("the default ({effective})")
    };
    Ok(Reply::Markdown(format!(
        "✅ `{id}` now uses packs {what}: {count} aliases."
    )))
}

async fn leave(bridge: &AppState, room: &str) -> Result<Reply, CommandError> {
    let (id, _) = joined_room(bridge, room).await?;
    if bridge.is_admin_room(&id) {
        return Err(CommandError::User(
            "this is the admin room; the bot stays here".into(),
        ));
    }
    bridge
        .matrix
        .leave(&id, "asked to leave by a bridge admin")
        .await
        .map_err(|e| CommandError::Internal(e.into()))?;
    store::rooms::forget(&bridge.store, id.as_str()).await?;
    store::dms::forget_room(&bridge.store, id.as_str()).await?;
    bridge.access.settings.forget(&bridge.store, &id).await?;
    store::approvals::forget_room(&bridge.store, id.as_str()).await?;
    Ok(Reply::Markdown(format!(
        "✅ Left `{id}` and forgot its settings."
    )))
}

async fn grant(
    bridge: &AppState,
    room: &str,
    rule: &str,
    level: Level,
) -> Result<Reply, CommandError> {
    let (id, _) = joined_room(bridge, room).await?;
    let rule: Rule = rule.parse().map_err(CommandError::User)?;
    let shown = rule.to_string();
    bridge
        .access
        .settings
        .set_grant(&bridge.store, &id, Grant { rule, level })
        .await?;
    bridge.access.power.invalidate(&id);
    let what = if level == Level::None {
        "denied".to_owned()
    } else {
        format!("granted `{level}`")
    };
    Ok(Reply::Markdown(format!(
        "✅ In `{id}`, `{shown}` is {what}."
    )))
}

async fn unset(bridge: &AppState, room: &str, rule: &str) -> Result<Reply, CommandError> {
    let (id, _) = joined_room(bridge, room).await?;
    let rule: Rule = rule.parse().map_err(CommandError::User)?;
    if bridge
        .access
        .settings
        .remove_grant(&bridge.store, &id, &rule)
        .await?
    {
        Ok(Reply::Markdown(format!(
            "✅ Removed the rule `{rule}` of `{id}`."
        )))
    } else {
        Err(CommandError::User(format!(
            "`{id}` has no rule `{rule}`; `rooms show {id}` lists them"
        )))
    }
}

/// `rooms approvals <room> [list | add … | remove <n>]`.
async fn approvals(
    bridge: &AppState,
    room: &str,
    action: Option<ApprovalsAction>,
) -> Result<Reply, CommandError> {
    let (id, _) = joined_room(bridge, room).await?;
    match action.unwrap_or(ApprovalsAction::List) {
        ApprovalsAction::List => list_approvals(bridge, &id).await,
        ApprovalsAction::Add {
            aliases,
            approvers,
            required,
            timeout,
        } => {
            let split = |list: &str| -> Vec<String> {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            let timeout: HumanDuration = timeout
                .parse()
                .map_err(|e| CommandError::User(format!("--timeout: {e}")))?;
            let rule = store::approvals::RoomRule {
                rule_id: 0,
                aliases: split(&aliases),
                approvers: split(&approvers),
                required,
                timeout_ms: i64::try_from(timeout.get().as_millis()).unwrap_or(i64::MAX),
            };
            // Checked as the config's rules are, so a stored rule always parses back.
            let parsed = crate::approvals::room_rule(&rule)
                .map_err(|e| CommandError::User(e.replace("rule.", "--")))?;
            let number = store::approvals::add_room_rule(
                &bridge.store,
                id.as_str(),
                &rule.aliases,
                &rule.approvers,
                rule.required,
                rule.timeout_ms,
            )
            .await?;
            Ok(Reply::Markdown(format!(
                "✅ In `{id}`, commands of {} now wait for approval by {} ({} needed, expiring after {}): rule {number}.",
                code_list(&rule.aliases),
                code_list(&rule.approvers),
                parsed.required,
                show_duration(parsed.timeout.get()),
            )))
        }
        ApprovalsAction::Remove { number } => {
            if store::approvals::remove_room_rule(&bridge.store, id.as_str(), number).await? {
                Ok(Reply::Markdown(format!(
                    "✅ Removed approval rule {number} of `{id}`. Requests already waiting keep their approvers."
                )))
            } else {
                Err(CommandError::User(format!(
                    "`{id}` has no approval rule {number}; `rooms approvals {id}` lists them"
                )))
            }
        }
    }
}

async fn list_approvals(bridge: &AppState, id: &ruma::RoomId) -> Result<Reply, CommandError> {
    let own = store::approvals::room_rules(&bridge.store, id.as_str()).await?;
    let mut lines = vec![format!(
        "**Approval rules of `{id}`** (the room's own first, then the config's; the first whose aliases match decides):"
    )];
    if own.is_empty() {
        lines.push("- The room's own: none".into());
    }
    for rule in &own {
        lines.push(format!(
            "- {}: {} → approvers {}, {} needed, expires after {}",
            rule.rule_id,
            code_list(&rule.aliases),
            code_list(&rule.approvers),
            rule.required,
            show_duration(std::time::Duration::from_millis(
                u64::try_from(rule.timeout_ms).unwrap_or(0)
            )),
        ));
    }
    if bridge.config.approvals.is_empty() {
        lines.push("- From the config ([[approvals]]): none".into());
    }
    for rule in &bridge.config.approvals {
        let aliases: Vec<String> = rule.aliases.iter().map(ToString::to_string).collect();
        let approvers: Vec<String> = rule.approvers.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "- config: {} → approvers {}, {} needed, expires after {}",
            code_list(&aliases),
            code_list(&approvers),
            rule.required,
            show_duration(rule.timeout.get()),
        ));
    }
    Ok(Reply::Markdown(lines.join("\n")))
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration as the config writes it (`30m`, `2h`, `90s`).
fn show_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
