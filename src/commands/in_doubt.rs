//! Commands in doubt: sent to StackStorm (`POST /aliasexecution`), but the bridge never learnt
//! the answer, because it died before the answer came (the inbox row is found started after a
//! restart) or the answer was lost on the way (a timeout, a broken connection).
//!
//! The bridge never sends such a command again (it may have run). It asks StackStorm instead:
//! the executions of the alias's action started by the StackStorm user it was sent as, around
//! the time it was sent (`GET /executions?action=…&user=…&timestamp_gt=…&timestamp_lt=…`, every
//! page), matched exactly on the command's event id in the `source_context` StackStorm keeps in
//! each execution's notify data. The time window is generous on both sides
//! ([`CLOCK_MARGIN_MS`]): StackStorm's clock need not agree with the bridge's, a wider window
//! only costs pages, and the match itself is exact.
//!
//! - It ran: the executions are recorded exactly as a normal run records them (so live status,
//!   the result's claim and recovery work), with the normal ack marked "confirmed after a
//!   restart". One that finished meanwhile gets its result from a recovery pass, asked for
//!   here; one still running reports as usual.
//! - It did not run: the person is told so, and that they may send it again.
//! - StackStorm cannot be asked (not configured, refusing, or unreachable through the inbox
//!   worker's retries): only then does the person hear that it may or may not have run.
//!
//! Before concluding that StackStorm has no such execution, the bridge lets the time it would
//! have waited for the answer (`[stackstorm] timeout`) pass since the command was sent: a
//! request StackStorm received just before the bridge died may still be in its hands.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::{
    one_line, reply_and_finish,
    run::{Started, record_started},
};
use crate::{
    matrix::render::{self, Origin},
    st2::{
        self, ExecutionFilter,
        types::{Execution, source_context_of},
    },
    state::AppState,
    store::{inbox, now_ms},
};

/// How far StackStorm's clock may be off the bridge's and a command in doubt still be found:
/// the listing asks for executions started this long before and after it was sent.
pub const CLOCK_MARGIN_MS: i64 = 60 * 60 * 1000;

/// Why a command is in doubt (what the person is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The bridge restarted while sending it.
    Restart,
    /// StackStorm's answer did not arrive (a timeout, a broken connection).
    LostAnswer,
}

impl Cause {
    /// The cause of a row found started: a restart if it was sent before this process
    /// started, else an answer lost by this process (whose retry found the row started).
    fn of(bridge: &AppState, attempt: &inbox::Attempt) -> Cause {
        let elapsed = i64::try_from(bridge.started_at.elapsed().as_millis()).unwrap_or(i64::MAX);
        if attempt.started_at < now_ms().saturating_sub(elapsed) {
            Cause::Restart
        } else {
            Cause::LostAnswer
        }
    }

    fn confirmed(self) -> &'static str {
        match self {
            Cause::Restart => "confirmed after a restart",
            Cause::LostAnswer => "confirmed after StackStorm's answer was lost",
        }
    }

    fn what_happened(self) -> &'static str {
        match self {
            Cause::Restart => "the bridge restarted while it was sending it to StackStorm",
            Cause::LostAnswer => "StackStorm's answer to it was lost",
        }
    }
}

/// An inbox row found started: the command was caught mid-flight. Resolved from StackStorm
/// when the row recorded what was sent; a row without (started by an older version, or a
/// re-run) can only be reported as in doubt.
pub async fn on_interrupted(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    text: &str,
) -> anyhow::Result<()> {
    match inbox::attempt(&bridge.store, row.seq).await? {
        Some(attempt) => {
            let cause = Cause::of(bridge, &attempt);
            tracing::warn!(sender = %origin.sender, alias = %attempt.alias_ref,
                "command interrupted by a restart; looking it up in StackStorm");
            resolve(bridge, row, origin, text, &attempt, cause).await
        }
        None => {
            tracing::warn!(sender = %origin.sender, "command interrupted by a restart; not re-running it");
            let reply = format!(
                "⚠️ The bridge restarted while it was sending `{}` to StackStorm, so it **may or may not have run**. \
                 Check the StackStorm execution history before running it again.",
                one_line(text)
            );
            reply_and_finish(bridge, row, origin, render::notice_markdown(&reply)).await
        }
    }
}

/// Finds out from StackStorm whether the command `attempt` describes ran, and tells the person
/// (see the module doc). `Err` (the inbox worker tries again later) only while StackStorm is
/// unreachable and the worker has tries left.
pub async fn resolve(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    text: &str,
    attempt: &inbox::Attempt,
    cause: Cause,
) -> anyhow::Result<()> {
    let Some(st2) = &bridge.st2 else {
        return cannot_ask(bridge, row, origin, text, cause, &st2::Error::NotConfigured).await;
    };
    // The time the bridge would have waited for the answer: until then, StackStorm may still
    // be handling a request it received.
    let settle = bridge
        .config
        .stackstorm
        .as_ref()
        .map_or(Duration::ZERO, |c| c.timeout.get());
    let settled_at = attempt
        .started_at
        .saturating_add(i64::try_from(settle.as_millis()).unwrap_or(i64::MAX));
    if let Ok(wait) = u64::try_from(settled_at - now_ms())
        && wait > 0
        && !crate::retry::sleep_unless_stopped(
            Duration::from_millis(wait).min(settle),
            &bridge.stopping,
        )
        .await
    {
        // Shutting down: the row stays started, and the next start looks the command up.
        anyhow::bail!("shutting down before a command in doubt could be looked up");
    }
    let filter = ExecutionFilter {
        action: Some(attempt.action_ref.clone()).filter(|a| !a.is_empty()),
        user: attempt.st2_user.clone(),
        started_after_ms: Some(attempt.started_at.saturating_sub(CLOCK_MARGIN_MS)),
        started_before_ms: Some(attempt.started_at.saturating_add(CLOCK_MARGIN_MS)),
    };
    let found = st2
        .list_executions(&filter, |execution| sent_for(execution, attempt))
        .await;
    let mut found = match found {
        Ok(found) => found,
        Err(e) if e.is_transient() && !row.last_try => {
            return Err(anyhow::Error::new(e)).context("looking up a command in doubt");
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "cannot look up a command in doubt");
            return cannot_ask(bridge, row, origin, text, cause, &e).await;
        }
    };
    // A listing paged by offset may show an execution twice when newer ones arrive meanwhile.
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.dedup_by(|a, b| a.id == b.id);
    if found.is_empty() {
        metrics::counter!("st2_matrix_commands_in_doubt_total", "outcome" => "not_run")
            .increment(1);
        tracing::info!(alias = %attempt.alias_ref, "a command in doubt did not run");
        let reply = format!(
            "⚠️ `{}` **did not run**: {}, and StackStorm has no execution of it. You may send it again.",
            one_line(text),
            cause.what_happened()
        );
        return reply_and_finish(bridge, row, origin, render::notice_markdown(&reply)).await;
    }
    metrics::counter!("st2_matrix_commands_in_doubt_total", "outcome" => "ran").increment(1);
    tracing::info!(alias = %attempt.alias_ref, executions = found.len(), "a command in doubt ran");
    let started: Vec<Started> = found
        .iter()
        .map(|execution| Started {
            execution_id: execution.id.clone(),
            ack: attempt
                .ack_enabled
                .then(|| ack_text(attempt, execution, st2, cause)),
        })
        .collect();
    record_started(bridge, row, origin, attempt, &started).await?;
    // What the stream said about them while nobody listened is gone: start from what the
    // listing says (a finished one's ack shows its end at once).
    if bridge.config.live.enabled {
        for execution in &found {
            if let Err(e) = bridge.live.on_update(&bridge.core, execution).await {
                tracing::warn!(execution_id = %execution.id, error.message = %e, "could not update an execution's live status");
            }
        }
    }
    if found.iter().any(Execution::is_finished) {
        // Its announcement may have been made while the bridge was down: recovery posts the
        // result unless the announcement comes (or came) and is claimed first.
        bridge.recover.notify_one();
    }
    Ok(())
}

/// Whether `execution` (as StackStorm lists it) was started by the command `attempt`: its
/// notify `source_context` names the same event in the same room.
fn sent_for(execution: &Value, attempt: &inbox::Attempt) -> bool {
    let Some(context) = source_context_of(execution) else {
        return false;
    };
    let field = |k: &str| context.get(k).and_then(Value::as_str);
    field("event_id") == Some(attempt.event_id.as_str())
        && field("room_id") == Some(attempt.room_id.as_str())
}

/// The ack of a command found to have run: StackStorm's rendered `ack.format` was in the
/// answer that was lost, so the short default, marked as confirmed, and the link unless the
/// alias sets `ack.append_url: false`.
fn ack_text(
    attempt: &inbox::Attempt,
    execution: &Execution,
    st2: &st2::St2Client,
    cause: Cause,
) -> String {
    let mut text = format!(
        "Running `{}`: execution `{}` ({}).",
        attempt.alias_ref,
        execution.id,
        cause.confirmed()
    );
    if attempt.ack_append_url {
        text.push_str(&format!("\n\n{}", st2.execution_link(execution)));
    }
    text
}

/// StackStorm cannot say whether the command ran: the one case left where the person hears
/// that it may or may not have.
async fn cannot_ask(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    text: &str,
    cause: Cause,
    error: &st2::Error,
) -> anyhow::Result<()> {
    metrics::counter!("st2_matrix_commands_in_doubt_total", "outcome" => "unknown").increment(1);
    let reply = format!(
        "⚠️ `{}` **may or may not have run**: {}, and StackStorm could not be asked whether it ran ({error}). \
         Check the StackStorm execution history before running it again.",
        one_line(text),
        cause.what_happened()
    );
    reply_and_finish(bridge, row, origin, render::notice_markdown(&reply)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt() -> inbox::Attempt {
        inbox::Attempt {
            inbox_seq: 1,
            room_id: "!r:x".into(),
            event_id: "$cmd".into(),
            thread_root: None,
            sender: "@a:x".into(),
            alias_ref: "ops.up".into(),
            action_ref: "core.local".into(),
            st2_user: None,
            ack_enabled: true,
            ack_append_url: true,
            started_at: 1,
        }
    }

    fn execution(context: Value) -> Value {
        json!({"id": "5e1", "liveaction": {"notify": {"on-complete": {"routes": ["matrix"],
            "data": {"source_context": context}}}}})
    }

    #[test]
    fn an_execution_matches_its_command_exactly() {
        let ours = json!({"room_id": "!r:x", "event_id": "$cmd", "sender": "@a:x"});
        assert!(sent_for(&execution(ours), &attempt()));
        let other_event = json!({"room_id": "!r:x", "event_id": "$cmd2"});
        assert!(!sent_for(&execution(other_event), &attempt()));
        let other_room = json!({"room_id": "!s:x", "event_id": "$cmd"});
        assert!(!sent_for(&execution(other_room), &attempt()));
        assert!(!sent_for(&json!({"id": "5e2"}), &attempt()));
    }
}
