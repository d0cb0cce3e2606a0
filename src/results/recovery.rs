//! Results lost while the stream was down. StackStorm's stream has no resume: an announcement
//! made while nobody listens is gone. So after every (re)connection the bridge asks StackStorm
//! about each execution it started whose result it has not posted; those that finished before
//! the connection was up get a result in a default format, marked as recovered. Those that
//! finish later are announced on the live stream as usual, and [`super::Claim`] makes sure a
//! result is posted once whichever way it comes. A pass runs alone (see [`super::stream`]).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Announcement, Claim, Delivered, Source, deliver};
use crate::{
    bridge::Bridge,
    retry,
    st2::{self, types::Execution},
    store::{executions, now_ms},
};

/// Executions read from the store at a time; a pass goes through all of them, page by page.
const PAGE: i64 = 200;
/// Executions that never report back are given up after this long (the bridge's own clock:
/// when it recorded the execution).
const GIVE_UP_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;
/// Output shown in a recovered result; the link has the rest.
const MAX_OUTPUT_CHARS: usize = 3000;
/// How long after a pass starts its finished executions are claimed: an execution that
/// finished around the reconnection may still be announced on the live stream, in the alias's
/// own format, and that announcement should win. Waiting instead of comparing StackStorm's end
/// timestamps with the bridge's clock keeps clock skew between the hosts out of it.
pub const GRACE: Duration = Duration::from_secs(3);

/// One recovery pass over every execution awaiting a result (oldest first, page by page, so
/// long-running executions never hide newer ones). Returns how many results were recovered.
/// Stops early, leaving the rest for the next pass, when `stop` is cancelled or StackStorm
/// cannot be asked.
pub async fn recover(bridge: &Bridge, stop: &CancellationToken) -> usize {
    let Some(st2) = &bridge.st2 else { return 0 };
    let started = Instant::now();
    let mut after: Option<(i64, String)> = None;
    let mut recovered = 0;
    'pages: loop {
        let page = match executions::awaiting_result(&bridge.store, after.as_ref(), PAGE).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error.message = %e, "recovery: cannot read the executions awaiting a result");
                break;
            }
        };
        after = page
            .last()
            .map(|last| (last.created_at, last.execution_id.clone()));
        let mut finished = Vec::new();
        for record in page {
            if stop.is_cancelled() {
                break 'pages;
            }
            let execution = match st2.execution(&record.execution_id).await {
                Ok(execution) => execution,
                Err(st2::Error::NotFound { .. }) => {
                    tracing::warn!(execution_id = %record.execution_id, "recovery: StackStorm no longer knows this execution; giving up on its result");
                    give_up(bridge, &record.execution_id).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, "recovery: cannot ask StackStorm about executions; will retry on the next connection");
                    break 'pages;
                }
            };
            if execution.is_finished() {
                finished.push((record, execution));
            } else if now_ms() - record.created_at > GIVE_UP_AFTER_MS {
                give_up(bridge, &record.execution_id).await;
            }
        }
        if finished.is_empty() {
            continue;
        }
        if !retry::sleep_unless_stopped(GRACE.saturating_sub(started.elapsed()), stop).await {
            break;
        }
        for (record, execution) in finished {
            let announcement = Announcement {
                channel: Some(record.room_id.clone()),
                message: recovered_message(
                    &record.alias_ref,
                    &execution,
                    &st2.execution_link(&execution),
                ),
                user: Some(record.sender.clone()),
                whisper: false,
                extra: None,
                context: Some(
                    json!({"room_id": record.room_id, "event_id": record.event_id,
                    "thread_root": record.thread_root, "sender": record.sender}),
                ),
            };
            match deliver(
                bridge,
                &announcement,
                Source::Recovered,
                Claim::Execution(record.execution_id.clone()),
            )
            .await
            {
                Ok(Delivered::Queued { .. }) => recovered += 1,
                Ok(Delivered::Duplicate) => {}
                Err(e) if e.is_transient() => break 'pages,
                // Not deliverable (e.g. the bot left the room): do not try again forever.
                Err(_) => give_up(bridge, &record.execution_id).await,
            }
        }
    }
    if recovered > 0 {
        tracing::info!(
            recovered,
            "posted results that finished while the stream was down"
        );
    }
    recovered
}

async fn give_up(bridge: &Bridge, execution_id: &str) {
    let result = async {
        let mut tx = bridge.store.begin().await?;
        executions::mark_result(&mut tx, execution_id).await?;
        tx.commit().await
    };
    if let Err(e) = result.await {
        tracing::warn!(error.message = %e, "recovery: cannot mark an execution given up");
    }
}

/// The default result format: status, the output (or the result as JSON), the link.
pub fn recovered_message(alias_ref: &str, execution: &Execution, link: &str) -> String {
    let status = execution.status.as_deref().unwrap_or("finished");
    let icon = if status == "succeeded" { "✅" } else { "❌" };
    let mut text = format!(
        "{icon} `{alias_ref}` {status} (execution `{}`). Recovered: its live result was lost while the bridge was not connected to StackStorm's stream.",
        execution.id
    );
    let output = output_of(execution.result.as_ref());
    if !output.trim().is_empty() {
        let mut shown: String = output.chars().take(MAX_OUTPUT_CHARS).collect();
        if shown.len() < output.len() {
            shown.push_str("\n… (truncated: see the execution)");
        }
        text.push_str(&format!("\n\n```\n{}\n```", shown.replace("```", "'''")));
    }
    text.push_str(&format!("\n\n{link}"));
    text
}

/// What a person wants to see of a result: a command's stdout/stderr, else the JSON.
fn output_of(result: Option<&Value>) -> String {
    let Some(result) = result else {
        return String::new();
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    };
    let (stdout, stderr) = (text(result.get("stdout")), text(result.get("stderr")));
    if !stdout.is_empty() || !stderr.is_empty() {
        return match (stdout.is_empty(), stderr.is_empty()) {
            (false, true) => stdout,
            (true, false) => stderr,
            _ => format!("{stdout}\n--- stderr ---\n{stderr}"),
        };
    }
    match result {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(status: &str, result: Value) -> Execution {
        serde_json::from_value(json!({"id": "5e1", "status": status, "result": result})).unwrap()
    }

    #[test]
    fn a_recovered_result_shows_status_output_and_link() {
        let text = recovered_message(
            "ops.shell",
            &execution("succeeded", json!({"stdout": "hello\n", "stderr": ""})),
            "https://st2/x",
        );
        assert!(
            text.starts_with("✅ `ops.shell` succeeded (execution `5e1`). Recovered:"),
            "{text}"
        );
        assert!(text.contains("```\nhello\n```"), "{text}");
        assert!(text.ends_with("https://st2/x"));
        let failed = recovered_message(
            "ops.shell",
            &execution("failed", json!({"stdout": "", "stderr": "boom"})),
            "l",
        );
        assert!(failed.starts_with("❌") && failed.contains("boom"));
        let json_result = recovered_message(
            "ops.q",
            &execution("succeeded", json!({"result": {"n": 1}})),
            "l",
        );
        assert!(json_result.contains("\"n\": 1"));
    }

    #[test]
    fn long_output_is_truncated_and_fences_cannot_be_broken() {
        let long = "x".repeat(10_000) + "```";
        let text = recovered_message("a.b", &execution("succeeded", json!({"stdout": long})), "l");
        assert!(text.contains("truncated") && text.len() < 4000);
        assert_eq!(text.matches("```").count(), 2);
    }
}
