//! Built-in commands on executions started from rooms: `status`, `output`, `cancel`, `rerun`
//! and `history`. Inside a command's thread (or replying to its ack) the id can be left out:
//! the thread's execution is meant.
//!
//! Each needs `run` in the room. StackStorm is called with the person's linked credential when
//! they have one (so RBAC applies to them), else with the bridge's (unless `[bridge]
//! require_login`). Words that do not fit these commands' shape (`status web1`) are left to
//! StackStorm's aliases, which may start with the same words.

use ruma::events::{
    OriginalMessageLikeEvent,
    room::message::{Relation, RoomMessageEventContent},
};
use serde_json::{Map, Value, json};

use crate::{
    identity,
    live::{human_duration, is_final},
    matrix::render::{self, Origin, one_line},
    st2::{self, Credential, types::Execution},
    state::{AppState, reply_and_finish},
    store::{executions, inbox, now_ms},
};

/// Lines of output shown in a room; the rest is cut (the tail is kept).
const OUTPUT_LINES: usize = 40;
/// Characters of output shown in a room.
const OUTPUT_CHARS: usize = 6000;
/// `history` shows at most this many.
const HISTORY_MAX: usize = 25;

/// What is asked of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// Its status, action, who started it, when, how long, link.
    Status,
    /// Its output so far.
    Output,
    /// Cancel it.
    Cancel,
    /// Run it again, with `key=value` overrides.
    Rerun(String),
}

/// A built-in execution command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecCommand {
    /// `status|output|cancel|rerun [id] …`.
    On {
        /// What to do.
        verb: Verb,
        /// The execution id, when given.
        id: Option<String>,
    },
    /// `history [N]`.
    History(usize),
}

impl ExecCommand {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ExecCommand::On { verb, .. } => match verb {
                Verb::Status => "status",
                Verb::Output => "output",
                Verb::Cancel => "cancel",
                Verb::Rerun(_) => "rerun",
            },
            ExecCommand::History(_) => "history",
        }
    }

    /// `None` when `first rest` is not one of these commands' shapes (then it is an alias
    /// command).
    pub fn parse(first: &str, rest: &str) -> Option<ExecCommand> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let first = first.to_ascii_lowercase();
        if first == "history" {
            return match words.as_slice() {
                [] => Some(ExecCommand::History(10)),
                [n] => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| ExecCommand::History(n.min(HISTORY_MAX))),
                _ => None,
            };
        }
        let verb = match first.as_str() {
            "status" => Verb::Status,
            "output" => Verb::Output,
            "cancel" => Verb::Cancel,
            "rerun" | "re-run" => Verb::Rerun(String::new()),
            _ => return None,
        };
        let (id, after) = match words.first() {
            Some(w) if looks_like_execution_id(w) => (Some((*w).to_owned()), &words[1..]),
            _ => (None, &words[..]),
        };
        match verb {
            Verb::Rerun(_) => {
                // After the id only `key=value` overrides (quoted as StackStorm reads them).
                let overrides = rest
                    .trim()
                    .strip_prefix(id.as_deref().unwrap_or(""))
                    .unwrap_or(rest)
                    .trim()
                    .to_owned();
                match st2_alias::Command::new(&overrides) {
                    Ok(parsed) if parsed.padded().trim().is_empty() => Some(ExecCommand::On {
                        verb: Verb::Rerun(overrides),
                        id,
                    }),
                    _ => None,
                }
            }
            verb => after.is_empty().then_some(ExecCommand::On { verb, id }),
        }
    }
}

/// StackStorm's execution ids: 24 hexadecimal digits (a MongoDB object id).
pub fn looks_like_execution_id(word: &str) -> bool {
    word.len() == 24 && word.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs `command` for `origin` and replies.
pub async fn handle(
    bridge: &AppState,
    row: &inbox::Row,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
    origin: &Origin,
    command: &ExecCommand,
) -> anyhow::Result<()> {
    let prefix = &bridge.config.bridge.command_prefix;
    let Some(st2) = &bridge.st2 else {
        let text = "StackStorm is not configured for this bridge.";
        return reply_and_finish(bridge, row, origin, render::notice(text)).await;
    };
    let credential = match credential(bridge, origin).await {
        Ok(credential) => credential,
        Err(text) => {
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
    };
    let (verb, id) = match command {
        ExecCommand::History(n) => {
            let text = history(bridge, st2, credential.as_ref(), origin, *n).await?;
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
        ExecCommand::On { verb, id } => (verb, id),
    };
    let id = match id {
        Some(id) => id.clone(),
        None => match implied_execution(bridge, message, origin).await? {
            Some(id) => id,
            None => {
                let text = format!(
                    "Which execution? Give its id (`{prefix} {} <id>`), or type it in the thread of the command that started it.",
                    command.name()
                );
                return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
            }
        },
    };
    tracing::info!(execution_id = %id, command = command.name(), sender = %origin.sender, "execution command");
    let text = match verb {
        Verb::Status => match st2.execution_as(&id, credential.as_ref()).await {
            Ok(execution) => status_text(st2, &execution),
            Err(e) => failure(&e, &id),
        },
        Verb::Output => match st2.execution_output(&id, credential.as_ref()).await {
            Ok(output) if too_long(&output) => {
                return output_as_file(bridge, row, origin, &id, output).await;
            }
            Ok(output) => output_text(&id, &output),
            Err(e) => failure(&e, &id),
        },
        Verb::Cancel => match st2.cancel_execution(&id, credential.as_ref()).await {
            Ok(execution) => match execution.status.as_deref() {
                Some("canceled") => format!("🚫 Execution `{id}` is canceled."),
                Some(status) => format!("🚫 Canceling execution `{id}` (now `{status}`)."),
                None => format!("🚫 Canceling execution `{id}`."),
            },
            Err(st2::Error::BadRequest { faultstring, .. }) => {
                format!("StackStorm cannot cancel execution `{id}`: {faultstring}")
            }
            Err(e) => failure(&e, &id),
        },
        Verb::Rerun(overrides) => {
            return rerun(
                bridge,
                row,
                origin,
                st2,
                credential.as_ref(),
                &id,
                overrides,
            )
            .await;
        }
    };
    reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await
}

/// The person's linked credential, `None` for the bridge's, or why neither may be used.
async fn credential(bridge: &AppState, origin: &Origin) -> Result<Option<Credential>, String> {
    let prefix = &bridge.config.bridge.command_prefix;
    match identity::credential_for(bridge, &origin.sender).await {
        Ok(Some(credential)) => Ok(Some(credential)),
        Ok(None) if bridge.config.bridge.require_login => Err(format!(
            "🔒 On this bridge commands run with your own StackStorm account, and you have not linked one. Type `{prefix} login` in a direct chat with me ({}) to link it.",
            bridge.bot
        )),
        Ok(None) => Ok(None),
        Err(identity::Error::LoginAgain(why)) => Err(format!(
            "🔒 {why}. Log in again with `{prefix} login` in a direct chat with me."
        )),
        Err(e) => Err(format!(
            "⚠️ Your StackStorm login could not be used ({e}). Try again later."
        )),
    }
}

/// The execution a command without an id means: the one of the thread it was typed in, or of
/// the message (command or ack) it replies to.
async fn implied_execution(
    bridge: &AppState,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
    origin: &Origin,
) -> anyhow::Result<Option<String>> {
    let mut candidates = Vec::new();
    match &message.content.relates_to {
        Some(Relation::Thread(thread)) => {
            if let Some(reply) = &thread.in_reply_to
                && !thread.is_falling_back
            {
                candidates.push(reply.event_id.to_string());
            }
            candidates.push(thread.event_id.to_string());
        }
        Some(Relation::Reply(reply)) => candidates.push(reply.in_reply_to.event_id.to_string()),
        _ => {}
    }
    for event in candidates {
        if let Some(found) =
            executions::for_event(&bridge.store, origin.room_id.as_str(), &event).await?
        {
            return Ok(Some(found.execution_id));
        }
    }
    Ok(None)
}

/// What to say when StackStorm did not answer as hoped.
fn failure(error: &st2::Error, id: &str) -> String {
    match error {
        st2::Error::NotFound { .. } => format!("StackStorm has no execution `{id}`."),
        st2::Error::Forbidden { faultstring, .. } => {
            format!("⛔ StackStorm refused: {faultstring}")
        }
        other => format!("⚠️ {other}"),
    }
}

/// `status`: what it is, who started it, when, how long, where to see it.
fn status_text(st2: &st2::St2Client, e: &Execution) -> String {
    let status = e.status.as_deref().unwrap_or("unknown");
    let mut lines = vec![format!(
        "**Execution `{}`**: `{}` — **{status}**",
        e.id,
        e.action_ref().unwrap_or("?")
    )];
    if let Some(user) = e.started_by() {
        lines.push(format!("Started by StackStorm user `{user}`"));
    }
    let start = e
        .start_timestamp
        .as_deref()
        .and_then(st2::types::parse_timestamp_ms);
    let end = e
        .end_timestamp
        .as_deref()
        .and_then(st2::types::parse_timestamp_ms);
    if let Some(started) = &e.start_timestamp {
        lines.push(format!("Started at {started}"));
    }
    match (start, end, is_final(status)) {
        (Some(s), Some(end), true) => lines.push(format!("Took {}", human_duration(end - s))),
        (Some(s), _, false) => lines.push(format!("Running for {}", human_duration(now_ms() - s))),
        _ => {}
    }
    lines.push(st2.execution_link(e));
    lines.join("\n")
}

/// `output`: the tail of the output in a code block.
fn output_text(id: &str, output: &str) -> String {
    if output.trim().is_empty() {
        return format!("Execution `{id}` has no output (yet).");
    }
    let lines: Vec<&str> = output.lines().collect();
    let mut tail: Vec<&str> = lines[lines.len().saturating_sub(OUTPUT_LINES)..].to_vec();
    let mut shown = tail.join("\n");
    while shown.chars().count() > OUTPUT_CHARS && tail.len() > 1 {
        tail.remove(0);
        shown = tail.join("\n");
    }
    if shown.chars().count() > OUTPUT_CHARS {
        let skip = shown.chars().count() - OUTPUT_CHARS;
        shown = shown.chars().skip(skip).collect();
    }
    let cut = tail.len() < lines.len();
    let fence = fence_for(&shown);
    let mut text = format!("Output of `{id}`");
    if cut {
        text.push_str(&format!(
            " (the last {} of {} lines)",
            tail.len(),
            lines.len()
        ));
    }
    text.push_str(&format!(":\n\n{fence}\n{shown}\n{fence}"));
    text
}

/// Whether output is too long to show whole in a message (then it is attached too).
fn too_long(output: &str) -> bool {
    output.lines().count() > OUTPUT_LINES || output.chars().count() > OUTPUT_CHARS
}

/// Long output: its tail in the room and the whole of it as a text file, in the command's
/// thread (encrypted in an encrypted room, by the outbox).
async fn output_as_file(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    id: &str,
    output: String,
) -> anyhow::Result<()> {
    let size = output.len();
    let mut text = output_text(id, &output);
    text.push_str(&format!(
        "\n\nThe whole output is attached: `execution-{id}-output.txt` ({}).",
        render::human_size(size)
    ));
    let content = render::reply(render::notice_markdown(&text), origin);
    let mut file =
        crate::matrix::file::FileMessage::text(&format!("execution-{id}-output.txt"), output);
    file.content = render::reply(file.content, origin);
    file.content.mentions = Some(ruma::events::Mentions::new());
    let mut tx = bridge.store.begin().await?;
    bridge
        .outbox
        .queue_in(&mut tx, &origin.room_id, &content)
        .await?;
    bridge
        .outbox
        .queue_file_in(&mut tx, &origin.room_id, &file)
        .await?;
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    Ok(())
}

/// A code fence longer than any run of backticks in `text`, so the output cannot close it.
fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

/// `history [N]`: the last N executions started from this room, with their status.
async fn history(
    bridge: &AppState,
    st2: &st2::St2Client,
    credential: Option<&Credential>,
    origin: &Origin,
    n: usize,
) -> anyhow::Result<String> {
    let recent =
        executions::recent_in_room(&bridge.store, origin.room_id.as_str(), n as i64).await?;
    if recent.is_empty() {
        return Ok("No command has run from this room yet.".to_owned());
    }
    let mut lines = vec![format!(
        "**The last {} executions started here:**",
        recent.len()
    )];
    for e in recent {
        let live = executions::live(&bridge.store, &e.execution_id).await?;
        let mut status = live.and_then(|l| l.status);
        if status.as_deref().is_none_or(|s| !is_final(s))
            && let Ok(fresh) = st2.execution_as(&e.execution_id, credential).await
        {
            status = fresh.status;
        }
        let status = status.unwrap_or_else(|| "unknown".to_owned());
        lines.push(format!(
            "- `{}` `{}` by {}, {} ago: {}",
            e.execution_id,
            e.alias_ref,
            e.sender,
            human_duration(now_ms() - e.created_at),
            status
        ));
    }
    Ok(lines.join("\n"))
}

/// `rerun [id] [key=value …]`: runs the execution's action again with its parameters (the
/// overrides on top), as the person asking; its ack and result come to this command's thread.
#[allow(clippy::too_many_arguments)]
async fn rerun(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    st2: &st2::St2Client,
    credential: Option<&Credential>,
    id: &str,
    overrides: &str,
) -> anyhow::Result<()> {
    let original = match st2.execution_as(id, credential).await {
        Ok(original) => original,
        Err(e) => {
            let text = failure(&e, id);
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
    };
    let Some(action) = original.action_ref().map(str::to_owned) else {
        let text = format!("StackStorm did not say which action execution `{id}` ran.");
        return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
    };
    let pairs = match st2_alias::Command::new(overrides) {
        Ok(parsed) if parsed.padded().trim().is_empty() => parsed.extras().to_vec(),
        _ => {
            let text = format!(
                "After the id, `rerun` takes only `key=value` pairs; I could not read `{}`.",
                one_line(overrides)
            );
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
    };
    let parameters = merged_parameters(original.parameters.clone().unwrap_or_default(), &pairs);
    let body = json!({
        "action": action,
        "parameters": parameters,
        "notify": {"on-complete": {"routes": [st2.route()], "data": {
            "user": origin.sender,
            "source_channel": origin.room_id,
            "source_context": {
                "room_id": origin.room_id,
                "event_id": origin.event_id,
                "thread_root": origin.thread_root,
                "sender": origin.sender,
            },
        }}},
    });
    inbox::mark_started(&bridge.store, row.seq).await?;
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    tracing::info!(execution_id = %id, action = %action, overridden = %names.join(","), sender = %origin.sender, "re-running an execution");
    let started = match st2.create_execution(&body, credential).await {
        Ok(started) => started,
        Err(e) => {
            let text = match e.delivery() {
                st2::Delivery::Unknown => format!(
                    "⚠️ {e}: the re-run of `{id}` **may or may not have started**. Check StackStorm's history before trying again."
                ),
                _ => format!("❌ The re-run of `{id}` did not start: {}", failure(&e, id)),
            };
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
    };
    let alias_ref = executions::get(&bridge.store, id)
        .await?
        .map(|e| e.alias_ref)
        .unwrap_or_else(|| action.clone());
    let ack = format!(
        "Re-running `{action}` (execution `{id}`) as execution `{}`.\n\n{}",
        started.id,
        st2.execution_link(&started)
    );
    let mut tx = bridge.store.begin().await?;
    executions::record(
        &mut tx,
        &executions::Execution {
            execution_id: started.id.clone(),
            room_id: origin.room_id.to_string(),
            event_id: origin.event_id.to_string(),
            thread_root: origin.thread_root.as_ref().map(ToString::to_string),
            sender: origin.sender.to_string(),
            alias_ref,
            created_at: now_ms(),
        },
    )
    .await?;
    let content = serde_json::to_value(render::in_thread(render::notice_markdown(&ack), origin))?;
    let txn = bridge
        .outbox
        .queue_event_in(&mut tx, &origin.room_id, "m.room.message", &content, None)
        .await?;
    executions::set_ack(&mut tx, &started.id, &ack, &txn).await?;
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    bridge.live.follow(&started.id);
    Ok(())
}

/// The original parameters with `pairs` on top. A value whose original was text stays text
/// (`version=1.10`); others are read as JSON where they parse, as text otherwise.
fn merged_parameters(mut parameters: Map<String, Value>, pairs: &[(String, String)]) -> Value {
    for (key, raw) in pairs {
        let was_text = matches!(parameters.get(key), Some(Value::String(_)));
        let value = if was_text {
            Value::String(raw.clone())
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        };
        parameters.insert(key.clone(), value);
    }
    Value::Object(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5f1a2b3c4d5e6f7081920a1b";

    #[test]
    fn only_the_commands_shapes_are_taken_and_the_rest_is_left_to_aliases() {
        assert_eq!(
            ExecCommand::parse("status", ID),
            Some(ExecCommand::On {
                verb: Verb::Status,
                id: Some(ID.into())
            })
        );
        assert_eq!(
            ExecCommand::parse("Cancel", ""),
            Some(ExecCommand::On {
                verb: Verb::Cancel,
                id: None
            })
        );
        assert_eq!(ExecCommand::parse("status", "web1"), None);
        assert_eq!(ExecCommand::parse("output", &format!("{ID} more")), None);
        assert_eq!(
            ExecCommand::parse("history", ""),
            Some(ExecCommand::History(10))
        );
        assert_eq!(
            ExecCommand::parse("history", "500"),
            Some(ExecCommand::History(HISTORY_MAX))
        );
        assert_eq!(ExecCommand::parse("history", "of web1"), None);
        assert_eq!(
            ExecCommand::parse("rerun", &format!("{ID} service=api")),
            Some(ExecCommand::On {
                verb: Verb::Rerun("service=api".into()),
                id: Some(ID.into())
            })
        );
        assert_eq!(
            ExecCommand::parse("rerun", "service=api"),
            Some(ExecCommand::On {
                verb: Verb::Rerun("service=api".into()),
                id: None
            })
        );
        assert_eq!(ExecCommand::parse("rerun", "the deploy"), None);
    }

    #[test]
    fn overrides_keep_text_as_text_and_read_the_rest_as_json() {
        let original = json!({"version": "1.9", "count": 2, "host": "web1"});
        let merged = merged_parameters(
            original.as_object().unwrap().clone(),
            &[
                ("version".into(), "1.10".into()),
                ("count".into(), "3".into()),
                ("dry".into(), "true".into()),
            ],
        );
        assert_eq!(
            merged,
            json!({"version": "1.10", "count": 3, "host": "web1", "dry": true})
        );
    }

    #[test]
    fn output_keeps_the_tail_in_a_fence_it_cannot_close() {
        let output: String = (1..=100).map(|i| format!("line {i} ```\n")).collect();
        let text = output_text(ID, &output);
        assert!(text.contains("(the last 40 of 100 lines)"), "{text}");
        assert!(text.contains("line 100"), "{text}");
        assert!(!text.contains("line 60 "), "{text}");
        assert!(text.contains("````\n"), "{text}");
        assert!(output_text(ID, "  \n").contains("no output"));
    }
}
