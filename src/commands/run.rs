//! Running an action-alias command: match it locally (exactly one format, as StackStorm's
//! server requires), start it with `POST /api/v1/aliasexecution`, acknowledge it in the
//! command's thread, and record the execution so its result can find its way back.
//!
//! At most once: the inbox row is marked started (committed) before the request leaves, with
//! what is sent (an [`inbox::Attempt`]: alias, action, StackStorm user, time); the execution
//! record, the ack and "done" commit together after StackStorm answers. A crash in between
//! leaves the row started, and the next run never sends it again: it looks the command up
//! among StackStorm's executions ([`super::in_doubt`]) and records it, or says it did not run.
//! An answer lost on the way (a timeout, a broken connection) is resolved the same way.

use ruma::events::{OriginalMessageLikeEvent, room::message::RoomMessageEventContent};
use serde_json::json;
use st2_alias::MatchOutcome;

use super::{in_doubt, one_line, reply_and_finish};
use crate::{
    aliases::AliasEntry,
    approvals,
    config::St2Credentials,
    identity,
    matrix::render::{self, Origin},
    st2::{self, Delivery, types::AliasExecutionRequest},
    state::AppState,
    store::{approvals::Approval, executions, inbox, now_ms},
};

/// Runs `text` (the command without the prefix) for `origin`. `approved`: the approval it
/// was given (it then runs without asking again, if it still matches the approved alias);
/// `message` is the command's event, kept by a request for approval.
pub async fn run(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    text: &str,
    approved: Option<&Approval>,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
) -> anyhow::Result<()> {
    let prefix = &bridge.config.bridge.command_prefix;
    let Some(st2) = &bridge.st2 else {
        let text = "StackStorm is not configured for this bridge, so it cannot run commands. Ask the bridge's operator.";
        return reply_and_finish(bridge, row, origin, render::notice(text)).await;
    };
    let view = bridge.aliases.view(&bridge.packs_for(&origin.room_id));
    let matched = match view.matcher.match_command(text) {
        MatchOutcome::Matched(m) => m,
        MatchOutcome::Ambiguous { candidates, .. } => {
            let mut reply = format!(
                "`{}` matches more than one command, so StackStorm would refuse it. Be more specific; it matches:\n",
                one_line(text)
            );
            for c in &candidates {
                let shown = c.display.as_deref().unwrap_or(&c.representation);
                reply.push_str(&format!(
                    "\n- `{prefix} {}` ({})",
                    one_line(shown),
                    c.alias_ref
                ));
            }
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&reply)).await;
        }
        MatchOutcome::NoMatch => {
            let closest = view.matcher.closest(text);
            let mut reply = format!("No command matches `{}`.", one_line(text));
            if !closest.is_empty() {
                reply.push_str(" Did you mean:\n");
                for c in &closest {
                    reply.push_str(&format!("\n- `{prefix} {}`", one_line(c)));
                }
                reply.push_str("\n\n");
            } else {
                reply.push(' ');
            }
            reply.push_str(&format!(
                "Type `{prefix}help` to see the commands you can run here."
            ));
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&reply)).await;
        }
    };
    let alias: &AliasEntry = &view.aliases[matched.alias_index];
    let request = AliasExecutionRequest {
        name: matched.alias_name.clone(),
        format: matched.representation.clone(),
        command: text.to_owned(),
        user: origin.sender.to_string(),
        source_channel: origin.room_id.to_string(),
        source_context: json!({
            "room_id": origin.room_id,
            "event_id": origin.event_id,
            "thread_root": origin.thread_root,
            "sender": origin.sender,
        }),
        notification_route: st2.route().to_owned(),
    };

    // The person's own StackStorm identity when they linked one. If it cannot be used, say so:
    // never fall back to the bridge's account, which may be allowed more than they are.
    let login_hint = format!("Log in again with `{prefix} login` in a direct chat with me.");
    let credential = match identity::credential_for(bridge, &origin.sender).await {
        Ok(Some(credential)) => Some(credential),
        Ok(None) if bridge.config.bridge.require_login => {
            let text = format!(
                "🔒 On this bridge commands run with your own StackStorm account, and you have not linked one. \
                 Type `{prefix} login` in a direct chat with me ({}) to link it.",
                bridge.bot
            );
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
        Ok(None) => None,
        Err(identity::Error::LoginAgain(why)) => {
            let text = format!("🔒 `{}` was not run: {why}. {login_hint}", one_line(text));
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
        Err(e) => {
            let text = format!(
                "⚠️ `{}` was not run: your StackStorm login could not be used ({e}). Try again later.",
                one_line(text)
            );
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
    };

    match approved {
        Some(approval) if approval.alias_ref != matched.alias_ref => {
            // StackStorm's aliases changed while it waited: what was approved is not what
            // would run now.
            tracing::warn!(approval_id = %approval.approval_id, approved_alias = %approval.alias_ref,
                alias = %matched.alias_ref, "an approved command now matches another alias; not running it");
            let text = format!(
                "⛔ `{}` was approved as `{}`, but it now matches `{}` (StackStorm's aliases changed meanwhile), \
                 so it was not run. Send it again to ask for a new approval.",
                one_line(text),
                approval.alias_ref,
                matched.alias_ref
            );
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
        }
        Some(_) => {}
        None => {
            if let Some(rule) =
                approvals::rule_for(bridge, &origin.room_id, &matched.alias_ref).await?
            {
                let summary = approvals::summary(&matched.alias_ref, &matched.params);
                tracing::info!(alias = %matched.alias_ref, parameters = %parameter_names(&matched.params),
                    sender = %origin.sender, "the command needs approval");
                return approvals::request(
                    bridge,
                    row,
                    origin,
                    &rule,
                    &matched.alias_ref,
                    summary,
                    approvals::event_json(message)?,
                )
                .await;
            }
        }
    }

    let attempt = inbox::Attempt {
        inbox_seq: row.seq,
        room_id: origin.room_id.to_string(),
        event_id: origin.event_id.to_string(),
        thread_root: origin.thread_root.as_ref().map(ToString::to_string),
        sender: origin.sender.to_string(),
        alias_ref: matched.alias_ref.clone(),
        action_ref: alias.action_ref.to_string(),
        st2_user: st2_user_of(bridge, origin, credential.is_some()).await,
        ack_enabled: alias.ack_enabled,
        ack_append_url: alias.ack_append_url,
        started_at: now_ms(),
    };
    inbox::mark_started_with(&bridge.store, &attempt).await?;
    tracing::info!(alias = %matched.alias_ref, parameters = %parameter_names(&matched.params), sender = %origin.sender,
        own_identity = credential.is_some(), "starting an alias execution");
    let mut sent = st2.execute_alias(&request, credential.as_ref()).await;
    if credential.is_some() && matches!(sent, Err(st2::Error::Unauthorized { .. })) {
        // Refused before anything ran: renew (when a password is kept) and try once more.
        sent = match identity::after_rejection(bridge, &origin.sender).await {
            Ok(renewed) => st2.execute_alias(&request, Some(&renewed)).await,
            Err(identity::Error::LoginAgain(why)) => {
                let text = format!("🔒 `{}` was not run: {why}. {login_hint}", one_line(text));
                return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
            }
            Err(e) => {
                let text = format!(
                    "⚠️ `{}` was not run: your StackStorm login could not be renewed ({e}).",
                    one_line(text)
                );
                return reply_and_finish(bridge, row, origin, render::notice_markdown(&text)).await;
            }
        };
    }
    let results = match sent {
        Ok(results) => results,
        Err(e) if e.delivery() == Delivery::Unknown => {
            // It may have reached StackStorm: find out there rather than guess.
            tracing::warn!(alias = %matched.alias_ref, error.message = %e, "no answer to an alias execution; looking it up");
            return in_doubt::resolve(
                bridge,
                row,
                origin,
                text,
                &attempt,
                in_doubt::Cause::LostAnswer,
            )
            .await;
        }
        Err(e) => {
            tracing::warn!(alias = %matched.alias_ref, error.message = %e, "alias execution failed");
            metrics::counter!("st2_matrix_executions_failed_total").increment(1);
            let reply = failure_text(&e, text);
            return reply_and_finish(bridge, row, origin, render::notice_markdown(&reply)).await;
        }
    };
    metrics::counter!("st2_matrix_executions_started_total").increment(results.len() as u64);
    let started: Vec<Started> = results
        .iter()
        .map(|result| Started {
            execution_id: result.execution.id.clone(),
            ack: alias
                .ack_enabled
                .then(|| ack_text(alias, result, st2, &matched.alias_ref)),
        })
        .collect();
    record_started(bridge, row, origin, &attempt, &started).await
}

/// An execution a command started, and its ack (`None` when the alias has acks off).
pub(super) struct Started {
    /// StackStorm's execution id.
    pub execution_id: String,
    /// The ack's text.
    pub ack: Option<String>,
}

/// Records the executions a command started, queues their acks in its thread and finishes its
/// row, in one commit; then follows them live. The one way a run is recorded, whether
/// StackStorm's answer said so or a command in doubt was found among its executions.
pub(super) async fn record_started(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    attempt: &inbox::Attempt,
    started: &[Started],
) -> anyhow::Result<()> {
    let records: Vec<executions::Execution> = started
        .iter()
        .map(|s| executions::Execution {
            execution_id: s.execution_id.clone(),
            room_id: origin.room_id.to_string(),
            event_id: origin.event_id.to_string(),
            thread_root: origin.thread_root.as_ref().map(ToString::to_string),
            sender: origin.sender.to_string(),
            alias_ref: attempt.alias_ref.clone(),
            created_at: now_ms(),
        })
        .collect();
    let mut tx = bridge.store.begin().await?;
    executions::record_started(&mut tx, row.seq, &records).await?;
    for s in started {
        if let Some(ack) = &s.ack {
            let content = render::in_thread(render::notice_markdown(ack), origin);
            let content = serde_json::to_value(&content)?;
            // Its transaction id is kept: the ack is edited in place as the execution moves.
            let txn = bridge
                .outbox
                .queue_event_in(&mut tx, &origin.room_id, "m.room.message", &content, None)
                .await?;
            executions::set_ack(&mut tx, &s.execution_id, ack, &txn).await?;
        }
        tracing::info!(execution_id = %s.execution_id, alias = %attempt.alias_ref, "execution started");
    }
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    for s in started {
        bridge.live.follow(&s.execution_id);
    }
    Ok(())
}

/// The StackStorm user a command is sent as, when the bridge knows it: the person's linked
/// account, or the bridge's username (an API key or a fixed token does not say whose it is).
/// Only narrows the lookup of a command in doubt; never needed for it.
async fn st2_user_of(bridge: &AppState, origin: &Origin, own: bool) -> Option<String> {
    if own {
        return identity::whoami(bridge, &origin.sender)
            .await
            .ok()
            .flatten()
            .map(|linked| linked.st2_user);
    }
    match bridge.config.stackstorm.as_ref()?.credentials().ok()? {
        St2Credentials::Password { username, .. } => Some(username),
        St2Credentials::ApiKey(_) | St2Credentials::Token(_) => None,
    }
}

/// hubot's ack: StackStorm's rendered `ack.format` (or a short default naming the execution),
/// then the execution link unless the alias sets `ack.append_url: false`.
fn ack_text(
    alias: &AliasEntry,
    result: &st2::types::AliasExecutionResult,
    st2: &st2::St2Client,
    alias_ref: &str,
) -> String {
    let mut text = match result.message.as_deref().map(str::trim) {
        Some(message) if !message.is_empty() => message.to_owned(),
        _ => format!(
            "Running `{alias_ref}`: execution `{}`.",
            result.execution.id
        ),
    };
    if alias.ack_append_url {
        text.push_str(&format!("\n\n{}", st2.execution_link(&result.execution)));
    }
    text
}

/// What to tell the person when StackStorm did not start the execution.
fn failure_text(error: &st2::Error, command: &str) -> String {
    let command = one_line(command);
    match error {
        st2::Error::NotConfigured => "StackStorm is not configured for this bridge.".to_owned(),
        st2::Error::Unauthorized { .. } => {
            format!(
                "❌ {error}, so `{command}` was not run. The bridge's operator needs to check its StackStorm credentials."
            )
        }
        st2::Error::Forbidden { faultstring, .. } => {
            format!("⛔ StackStorm refused `{command}`: {faultstring}")
        }
        st2::Error::BadRequest { faultstring, .. } => {
            format!("❌ StackStorm did not accept `{command}`: {faultstring}")
        }
        st2::Error::NotFound { faultstring, .. } => {
            format!("❌ StackStorm could not run `{command}`: {faultstring}")
        }
        st2::Error::Unavailable { .. } | st2::Error::Protocol(_) => match error.delivery() {
            Delivery::NotSent => format!("⚠️ {error}: `{command}` was not run. Try again later."),
            Delivery::Unknown => format!(
                "⚠️ {error}: `{command}` **may or may not have run**. Check the StackStorm execution history before trying again."
            ),
            Delivery::Answered => {
                format!("⚠️ {error}: `{command}` was not started. Try again later.")
            }
        },
    }
}

/// The names of the parameters a command set, comma-separated, for the log: their values
/// (and the command's text) may hold secrets, so they are never logged.
fn parameter_names(params: &st2_alias::MatchParams) -> String {
    let mut names: Vec<&str> = match params {
        st2_alias::MatchParams::Single(params) => params.keys().map(String::as_str).collect(),
        st2_alias::MatchParams::Multiple(sets) => sets
            .iter()
            .flat_map(|params| params.keys().map(String::as_str))
            .collect(),
    };
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parameter_names_are_logged_never_values() {
        let params = st2_alias::MatchParams::Single(
            [
                ("token".to_owned(), Some("s3cret".to_owned())),
                ("host".to_owned(), None),
            ]
            .into(),
        );
        assert_eq!(parameter_names(&params), "host,token");
    }

    #[test]
    fn failures_tell_people_what_happened_to_their_command() {
        let unavailable = |delivery| st2::Error::Unavailable {
            detail: "cannot connect".into(),
            request_id: None,
            delivery,
        };
        assert!(failure_text(&unavailable(Delivery::NotSent), "x").contains("was not run"));
        assert!(
            failure_text(&unavailable(Delivery::Unknown), "x").contains("may or may not have run")
        );
        let down = st2::Error::Unavailable {
            detail: "HTTP 503".into(),
            request_id: Some("abc".into()),
            delivery: Delivery::Answered,
        };
        let text = failure_text(&down, "x");
        assert!(
            text.contains("StackStorm is unavailable (HTTP 503; request id abc)"),
            "{text}"
        );
        let rbac = st2::Error::Forbidden {
            faultstring: "User \"bot\" lacks action_execute".into(),
            request_id: None,
        };
        assert!(failure_text(&rbac, "x").contains("lacks action_execute"));
        let auth = st2::Error::Unauthorized {
            faultstring: "ApiKey with key_hash=… not found".into(),
            request_id: None,
        };
        let text = failure_text(&auth, "x");
        assert!(
            text.contains("rejected the bridge's credentials") && !text.contains("key_hash"),
            "{text}"
        );
    }
}
