//! Live status of the executions started from rooms: the ack is edited in place as the
//! execution moves (scheduled → running with its elapsed time → how it ended, with the
//! duration; a workflow's tasks as they are seen), and the command gets ✅ or ❌ when it ends.
//!
//! Updates come from the stream's execution events ([`crate::st2::stream::Subscription::executions`]).
//! Edits are coalesced: at most one per execution every `[live] edit_interval`, the last state
//! winning; the end is edited at once. Edits do not notify (Matrix's `.m.rule.suppress_edits`),
//! so the result still comes as a new message in the thread ([`crate::results`]).
//!
//! Which executions are followed is kept in memory (loaded from the database at start: those
//! not yet seen to end); the end and the ✅/❌ are recorded in the database, so each is posted
//! once, also across restarts. A workflow's tasks are memory only: after a restart the list
//! starts again from the tasks seen since.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::RoomId;
use serde_json::{Value, json};

use crate::{
    bridge::Bridge,
    matrix::render,
    st2::types::{Execution, parse_timestamp_ms},
    store::{self, now_ms},
};

/// Tasks listed in an edit at most; more are counted.
const MAX_TASKS_SHOWN: usize = 12;
/// Executions older than this are not followed after a restart (their end would be news to
/// nobody, and their ack is long out of sight).
const FOLLOW_FOR_MS: i64 = 24 * 3600 * 1000;

/// What is followed of one execution started from a room.
#[derive(Debug, Clone, Default)]
struct Followed {
    status: Option<String>,
    started_ms: Option<i64>,
    /// Task name → status, in the order first seen.
    tasks: Vec<(String, String)>,
    last_edit: Option<Instant>,
    /// Changed since the last edit.
    dirty: bool,
}

/// The live status of executions started from rooms (see the module doc).
#[derive(Debug)]
pub struct Live {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    followed: HashMap<String, Followed>,
    /// A workflow's descendants → the followed execution they belong to.
    children: HashMap<String, String>,
    /// The last update of executions not (yet) followed: StackStorm may announce `running`
    /// before the bridge has its answer to the request that started the execution, so before
    /// [`Live::follow`]. Kept briefly, bounded.
    unclaimed: HashMap<String, (String, Option<i64>, Instant)>,
}

/// Updates of unfollowed executions kept at most (older ones are dropped first).
const UNCLAIMED_MAX: usize = 4096;
/// How long an update of an unfollowed execution is kept.
const UNCLAIMED_FOR: Duration = Duration::from_secs(30);

/// The statuses an execution ends in.
pub fn is_final(status: &str) -> bool {
    matches!(
        status,
        "succeeded" | "failed" | "timeout" | "canceled" | "abandoned"
    )
}

impl Live {
    /// Live status with at most one edit per execution every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `execution_id` (just started from a room). An update that came before is
    /// applied (the next flush edits the ack).
    pub fn follow(&self, execution_id: &str) {
        let mut state = self.state();
        let early = state.unclaimed.remove(execution_id);
        let entry = state.followed.entry(execution_id.to_owned()).or_default();
        if let Some((status, started_ms, _)) = early {
            entry.status = Some(status);
            entry.started_ms = started_ms;
            entry.dirty = true;
        }
    }

    /// Follows the executions that had not ended when the bridge last stopped.
    pub async fn load(&self, bridge: &Bridge) -> Result<(), sqlx::Error> {
        let ids =
            store::executions::not_ended_since(&bridge.store, now_ms() - FOLLOW_FOR_MS).await?;
        for id in ids {
            self.follow(&id);
        }
        Ok(())
    }

    /// How many executions are followed (for tests and metrics).
    pub fn followed(&self) -> usize {
        self.state().followed.len()
    }

    /// An execution changed (`update` is the stream event's execution). Edits what must be
    /// edited now; the rest is left for [`Live::flush`].
    pub async fn on_update(&self, bridge: &Bridge, update: &Execution) -> anyhow::Result<()> {
        let Some(status) = update.status.clone() else {
            return Ok(());
        };
        let (root, edit_now) = {
            let mut state = self.state();
            let state = &mut *state;
            if let Some(entry) = state.followed.get_mut(&update.id) {
                entry.status = Some(status.clone());
                if entry.started_ms.is_none() {
                    entry.started_ms = update
                        .start_timestamp
                        .as_deref()
                        .and_then(parse_timestamp_ms);
                }
                entry.dirty = true;
                let due = entry
                    .last_edit
                    .is_none_or(|at| at.elapsed() >= self.interval);
                (update.id.clone(), is_final(&status) || due)
            } else if let Some(parent) = update.parent.as_deref() {
                let root = if state.followed.contains_key(parent) {
                    parent.to_owned()
                } else if let Some(root) = state.children.get(parent) {
                    root.clone()
                } else {
                    return Ok(());
                };
                state.children.insert(update.id.clone(), root.clone());
                let name = task_name(update);
                let Some(entry) = state.followed.get_mut(&root) else {
                    return Ok(());
                };
                match entry.tasks.iter_mut().find(|(n, _)| *n == name) {
                    Some(task) => task.1 = status.clone(),
                    None => entry.tasks.push((name, status.clone())),
                }
                entry.dirty = true;
                let due = entry
                    .last_edit
                    .is_none_or(|at| at.elapsed() >= self.interval);
                (root, due)
            } else {
                if state.unclaimed.len() >= UNCLAIMED_MAX {
                    state
                        .unclaimed
                        .retain(|_, (_, _, at)| at.elapsed() < UNCLAIMED_FOR);
                    if state.unclaimed.len() >= UNCLAIMED_MAX {
                        state.unclaimed.clear();
                    }
                }
                let started = update
                    .start_timestamp
                    .as_deref()
                    .and_then(parse_timestamp_ms);
                state
                    .unclaimed
                    .insert(update.id.clone(), (status, started, Instant::now()));
                return Ok(());
            }
        };
        if edit_now {
            self.edit(bridge, &root).await?;
        }
        Ok(())
    }

    /// Edits every followed execution that changed and whose last edit is `interval` old.
    pub async fn flush(&self, bridge: &Bridge) {
        let due: Vec<String> = {
            let state = self.state();
            state
                .followed
                .iter()
                .filter(|(_, f)| {
                    f.dirty && f.last_edit.is_none_or(|at| at.elapsed() >= self.interval)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in due {
            if let Err(e) = self.edit(bridge, &id).await {
                tracing::warn!(execution_id = %id, error.message = %e, "could not update an execution's ack");
            }
        }
    }

    /// Queues the edit of `id`'s ack for its current state, and at its end the ✅/❌ on the
    /// command (once: recorded in the database).
    async fn edit(&self, bridge: &Bridge, id: &str) -> anyhow::Result<()> {
        let snapshot = {
            let mut state = self.state();
            let Some(entry) = state.followed.get_mut(id) else {
                return Ok(());
            };
            entry.dirty = false;
            entry.last_edit = Some(Instant::now());
            entry.clone()
        };
        let Some(status) = snapshot.status.as_deref() else {
            return Ok(());
        };
        let Some(row) = store::executions::live(&bridge.store, id).await? else {
            self.forget(id);
            return Ok(());
        };
        let ended = is_final(status);
        let room = RoomId::parse(&row.room_id)?;
        let mut tx = bridge.store.begin().await?;
        let changed = store::executions::set_status(&mut tx, id, status, ended).await?;
        if !changed {
            // Seen to end before (a repeated update, or the end recorded before a restart).
            drop(tx);
            self.forget(id);
            return Ok(());
        }
        if let (Some(ack), Some(txn)) = (&row.ack_text, &row.ack_txn) {
            let text = format!("{ack}\n\n{}", describe(status, &snapshot, now_ms()));
            bridge
                .outbox
                .queue_edit_in(
                    &mut tx,
                    &room,
                    &render::notice_markdown(&text),
                    row.ack_event_id.as_deref(),
                    txn,
                )
                .await?;
        }
        if ended {
            let key = if status == "succeeded" { "✅" } else { "❌" };
            let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": row.event_id, "key": key}});
            bridge
                .outbox
                .queue_event_in(&mut tx, &room, "m.reaction", &reaction, None)
                .await?;
        }
        tx.commit().await?;
        bridge.outbox.wake();
        if ended {
            self.forget(id);
        }
        Ok(())
    }

    fn forget(&self, id: &str) {
        let mut state = self.state();
        state.followed.remove(id);
        state.children.retain(|_, root| root != id);
    }
}

/// A task's name: Orquesta's task name, else the action.
fn task_name(update: &Execution) -> String {
    update
        .context
        .as_ref()
        .and_then(|c| c.get("orquesta"))
        .and_then(|o| o.get("task_name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| update.action_ref().map(str::to_owned))
        .unwrap_or_else(|| update.id.clone())
}

/// An emoji for a status.
fn icon(status: &str) -> &'static str {
    match status {
        "requested" | "scheduled" | "delayed" => "⏳",
        "running" | "pausing" | "resuming" | "canceling" => "🔄",
        "paused" | "pending" => "⏸️",
        "succeeded" => "✅",
        "timeout" => "⌛",
        "canceled" => "🚫",
        _ => "❌",
    }
}

/// A duration as people read it: `850 ms`, `12 s`, `3 min 5 s`, `2 h 4 min`.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The status line (and tasks) shown under the ack.
fn describe(status: &str, f: &Followed, now: i64) -> String {
    let since = f.started_ms.map(|start| human_duration(now - start));
    let mut text = match (status, since) {
        ("requested" | "scheduled" | "delayed", _) => "⏳ **Scheduled.**".to_owned(),
        ("running", Some(since)) => format!("🔄 **Running** (for {since} so far)."),
        ("running", None) => "🔄 **Running.**".to_owned(),
        ("succeeded", Some(took)) => format!("✅ **Succeeded** in {took}."),
        ("failed", Some(took)) => format!("❌ **Failed** after {took}."),
        ("timeout", Some(took)) => format!("⌛ **Timed out** after {took}."),
        ("canceled", Some(took)) => format!("🚫 **Canceled** after {took}."),
        (other, _) => format!("{} **{}**.", icon(other), capitalised(other)),
    };
    if !f.tasks.is_empty() {
        let shown: Vec<String> = f
            .tasks
            .iter()
            .take(MAX_TASKS_SHOWN)
            .map(|(name, status)| format!("{} `{}`", icon(status), name.replace('`', "'")))
            .collect();
        text.push_str(&format!("\nTasks: {}", shown.join(", ")));
        if f.tasks.len() > MAX_TASKS_SHOWN {
            text.push_str(&format!(" and {} more", f.tasks.len() - MAX_TASKS_SHOWN));
        }
    }
    text
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_tasks_read_well() {
        let f = Followed {
            started_ms: Some(1_000),
            tasks: vec![
                ("prepare".into(), "succeeded".into()),
                ("deploy".into(), "running".into()),
            ],
            ..Followed::default()
        };
        assert_eq!(
            describe("running", &f, 13_500),
            "🔄 **Running** (for 12 s so far).\nTasks: ✅ `prepare`, 🔄 `deploy`"
        );
        let plain = Followed {
            started_ms: Some(0),
            ..Followed::default()
        };
        assert_eq!(
            describe("succeeded", &plain, 185_000),
            "✅ **Succeeded** in 3 min 5 s."
        );
        assert_eq!(
            describe("scheduled", &Followed::default(), 0),
            "⏳ **Scheduled.**"
        );
        assert_eq!(
            describe("abandoned", &Followed::default(), 0),
            "❌ **Abandoned**."
        );
        assert_eq!(human_duration(850), "850 ms");
        assert_eq!(human_duration(7_500_000), "2 h 5 min");
    }
}
