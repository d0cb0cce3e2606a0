//! The inbox: events that need work, in arrival order per room.
//!
//! Life of a row: `pending` (stored with its transaction) → optionally `started` (committed
//! before a side effect that must not be repeated, such as starting a StackStorm execution) →
//! `done`. A row found `started` after a restart was interrupted mid-flight; its handler decides
//! what that means, never re-running it. A command records what it sends to StackStorm with
//! the mark ([`mark_started_with`], an [`Attempt`]), so that after a crash it can be looked up
//! among StackStorm's executions instead of guessed at; the attempt is deleted when the row is
//! finished.

use sqlx::{FromRow, SqliteConnection};

use super::{Store, now_ms};

/// What kind of work an inbox event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message addressed to the bridge.
    Command,
    /// The bot was invited.
    Invite,
    /// The bot was kicked or banned (or its invite was withdrawn).
    Removed,
    /// Evidence that a room is encrypted (an encrypted message or `m.room.encryption`).
    Encrypted,
    /// A possible answer to one of the bot's prompts: a ✅/❌ reaction or a poll vote.
    Response,
    /// A command someone approved, to run now as its sender (the event is the command's).
    Approved,
}

impl Kind {
    /// The value stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Invite => "invite",
            Kind::Removed => "removed",
            Kind::Encrypted => "encrypted",
            Kind::Response => "response",
            Kind::Approved => "approved",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "command" => Kind::Command,
            "invite" => Kind::Invite,
            "removed" => Kind::Removed,
            "encrypted" => Kind::Encrypted,
            "response" => Kind::Response,
            "approved" => Kind::Approved,
            _ => return None,
        })
    }
}

/// An event about to be stored.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The event id (dedupe key).
    pub event_id: &'a str,
    /// Its room.
    pub room_id: &'a str,
    /// Why it needs work.
    pub kind: Kind,
    /// The event JSON as received.
    pub event: &'a str,
}

/// A stored inbox event.
#[derive(Debug, Clone)]
pub struct Row {
    /// Arrival order.
    pub seq: i64,
    /// Event id.
    pub event_id: String,
    /// Room id.
    pub room_id: String,
    /// Why it needs work.
    pub kind: Kind,
    /// The event JSON.
    pub event: String,
    /// True when a previous run marked it started and did not finish it.
    pub interrupted: bool,
    /// When the transaction that carried it was stored (unix ms).
    pub received_at: i64,
    /// Set by the inbox worker (the store reads `false`): this is the worker's last try at the
    /// row, so a transient error now gives it up. A handler that must tell the person
    /// something before that happens (a command in doubt) checks it.
    pub last_try: bool,
}

/// What was sent to StackStorm for a command, recorded with the mark that it started (see the
/// module doc and `migrations/0010_in_doubt_commands.sql`).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Attempt {
    /// The inbox row.
    pub inbox_seq: i64,
    /// The command's room.
    pub room_id: String,
    /// The command's event (the `event_id` of the `source_context` sent).
    pub event_id: String,
    /// The command's thread root, when it was in a thread.
    pub thread_root: Option<String>,
    /// Who typed it.
    pub sender: String,
    /// The alias it matched (`pack.name`).
    pub alias_ref: String,
    /// The alias's action (`pack.name`).
    pub action_ref: String,
    /// The StackStorm user of the credential it was sent with, when the bridge knows it.
    pub st2_user: Option<String>,
    /// The alias's `ack.enabled`: whether a run is acknowledged.
    pub ack_enabled: bool,
    /// The alias's `ack.append_url`: whether the ack links the execution.
    pub ack_append_url: bool,
    /// When it was sent (unix ms, the bridge's clock).
    pub started_at: i64,
}

#[derive(FromRow)]
struct RawRow {
    seq: i64,
    event_id: String,
    room_id: String,
    kind: String,
    event: String,
    state: String,
    received_at: i64,
}

/// Up to `limit` rooms that have unfinished inbox events, the one waiting longest first (so a
/// bounded worker serves rooms in turn, none starved).
pub async fn open_rooms(store: &Store, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT room_id FROM inbox WHERE state != 'done' GROUP BY room_id ORDER BY MIN(seq) LIMIT ?",
    )
        .bind(limit)
        .fetch_all(store.pool())
        .await
}

/// The oldest unfinished event of `room_id`.
pub async fn next_for_room(store: &Store, room_id: &str) -> Result<Option<Row>, sqlx::Error> {
    let raw: Option<RawRow> = sqlx::query_as(
        "SELECT seq, event_id, room_id, kind, event, state, received_at FROM inbox \
         WHERE room_id = ? AND state != 'done' ORDER BY seq LIMIT 1",
    )
    .bind(room_id)
    .fetch_optional(store.pool())
    .await?;
    let Some(raw) = raw else { return Ok(None) };
    let Some(kind) = Kind::parse(&raw.kind) else {
        // A kind written by a newer version: finish it rather than block the room forever.
        tracing::warn!(event_id = %raw.event_id, kind = %raw.kind, "skipping inbox event of unknown kind");
        finish(&mut *store.pool().acquire().await?, raw.seq).await?;
        return Box::pin(next_for_room(store, room_id)).await;
    };
    Ok(Some(Row {
        seq: raw.seq,
        event_id: raw.event_id,
        room_id: raw.room_id,
        kind,
        event: raw.event,
        interrupted: raw.state == "started",
        received_at: raw.received_at,
        last_try: false,
    }))
}

/// Marks an event started, committed before a side effect that must not run twice.
pub async fn mark_started(store: &Store, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE inbox SET state = 'started' WHERE seq = ?")
        .bind(seq)
        .execute(store.pool())
        .await
        .map(drop)
}

/// Marks a command started and records what is about to be sent for it, in one commit, before
/// the request leaves: after a crash, [`attempt`] says what to look for.
pub async fn mark_started_with(store: &Store, attempt: &Attempt) -> Result<(), sqlx::Error> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE inbox SET state = 'started' WHERE seq = ?")
        .bind(attempt.inbox_seq)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT OR REPLACE INTO command_attempts (inbox_seq, room_id, event_id, thread_root, sender, \
         alias_ref, action_ref, st2_user, ack_enabled, ack_append_url, started_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(attempt.inbox_seq)
    .bind(&attempt.room_id)
    .bind(&attempt.event_id)
    .bind(&attempt.thread_root)
    .bind(&attempt.sender)
    .bind(&attempt.alias_ref)
    .bind(&attempt.action_ref)
    .bind(&attempt.st2_user)
    .bind(attempt.ack_enabled)
    .bind(attempt.ack_append_url)
    .bind(attempt.started_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// What was sent for the inbox row `seq`, if it recorded an attempt that is not finished.
pub async fn attempt(store: &Store, seq: i64) -> Result<Option<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT inbox_seq, room_id, event_id, thread_root, sender, alias_ref, action_ref, st2_user, \
         ack_enabled, ack_append_url, started_at \
         FROM command_attempts WHERE inbox_seq = ?",
    )
    .bind(seq)
    .fetch_optional(store.pool())
    .await
}

/// Marks an event done with no other effect, in a commit of its own.
pub async fn finish_alone(store: &Store, seq: i64) -> Result<(), sqlx::Error> {
    let mut conn = store.begin().await?;
    finish(&mut conn, seq).await?;
    conn.commit().await
}

/// Marks an event done; pass the transaction that also stores its effects. Its attempt, if
/// it recorded one, goes with it: whatever the outcome, it is no longer in doubt.
pub async fn finish(conn: &mut SqliteConnection, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE inbox SET state = 'done', finished_at = ? WHERE seq = ?")
        .bind(now_ms())
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM command_attempts WHERE inbox_seq = ?")
        .bind(seq)
        .execute(conn)
        .await
        .map(drop)
}

/// Adds an event to the inbox inside the caller's transaction (work the bridge makes for
/// itself, such as an approved command), so it commits with what caused it. `false` when an
/// event with that id is already there. Call `inbox_wake` after the commit.
pub async fn insert_in(
    conn: &mut SqliteConnection,
    event: &NewEvent<'_>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT OR IGNORE INTO inbox (event_id, room_id, kind, event, received_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(event.event_id)
    .bind(event.room_id)
    .bind(event.kind.as_str())
    .bind(event.event)
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Number of unfinished inbox events.
pub async fn open_count(store: &Store) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE state != 'done'")
        .fetch_one(store.pool())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::txns::store_transaction;

    fn ev<'a>(id: &'a str, room: &'a str) -> NewEvent<'a> {
        NewEvent {
            event_id: id,
            room_id: room,
            kind: Kind::Invite,
            event: r#"{"x":1}"#,
        }
    }

    #[tokio::test]
    async fn events_come_back_in_order_per_room_and_finish() {
        let store = Store::in_memory().await.unwrap();
        store_transaction(
            &store,
            "t",
            &[ev("$1", "!a"), ev("$2", "!b"), ev("$3", "!a")],
        )
        .await
        .unwrap();
        let mut rooms = open_rooms(&store, 10).await.unwrap();
        rooms.sort();
        assert_eq!(rooms, ["!a", "!b"]);
        let first = next_for_room(&store, "!a").await.unwrap().unwrap();
        assert_eq!(
            (first.event_id.as_str(), first.kind, first.interrupted),
            ("$1", Kind::Invite, false)
        );
        finish(&mut store.pool().acquire().await.unwrap(), first.seq)
            .await
            .unwrap();
        let second = next_for_room(&store, "!a").await.unwrap().unwrap();
        assert_eq!(second.event_id, "$3");
        assert_eq!(open_count(&store).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn the_room_waiting_longest_comes_first() {
        let store = Store::in_memory().await.unwrap();
        store_transaction(
            &store,
            "t",
            &[ev("$1", "!b"), ev("$2", "!a"), ev("$3", "!b")],
        )
        .await
        .unwrap();
        assert_eq!(open_rooms(&store, 10).await.unwrap(), ["!b", "!a"]);
        let first = next_for_room(&store, "!b").await.unwrap().unwrap();
        finish(&mut store.pool().acquire().await.unwrap(), first.seq)
            .await
            .unwrap();
        assert_eq!(open_rooms(&store, 1).await.unwrap(), ["!a"]);
    }

    #[tokio::test]
    async fn a_started_event_reads_back_as_interrupted() {
        let store = Store::in_memory().await.unwrap();
        store_transaction(&store, "t", &[ev("$1", "!a")])
            .await
            .unwrap();
        let row = next_for_room(&store, "!a").await.unwrap().unwrap();
        mark_started(&store, row.seq).await.unwrap();
        assert!(
            next_for_room(&store, "!a")
                .await
                .unwrap()
                .unwrap()
                .interrupted
        );
    }

    #[tokio::test]
    async fn an_attempt_is_recorded_with_the_start_and_goes_with_the_finish() {
        let store = Store::in_memory().await.unwrap();
        store_transaction(&store, "t", &[ev("$1", "!a")])
            .await
            .unwrap();
        let row = next_for_room(&store, "!a").await.unwrap().unwrap();
        let sent = Attempt {
            inbox_seq: row.seq,
            room_id: "!a".into(),
            event_id: "$1".into(),
            thread_root: None,
            sender: "@a:x".into(),
            alias_ref: "ops.up".into(),
            action_ref: "core.local".into(),
            st2_user: Some("bot".into()),
            ack_enabled: true,
            ack_append_url: false,
            started_at: 42,
        };
        mark_started_with(&store, &sent).await.unwrap();
        let row = next_for_room(&store, "!a").await.unwrap().unwrap();
        assert!(row.interrupted);
        assert_eq!(attempt(&store, row.seq).await.unwrap(), Some(sent));
        finish_alone(&store, row.seq).await.unwrap();
        assert_eq!(attempt(&store, row.seq).await.unwrap(), None);
    }

    #[tokio::test]
    async fn work_inserted_in_a_transaction_is_stored_once() {
        let store = Store::in_memory().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let event = NewEvent {
            event_id: "approval:abc234",
            room_id: "!a",
            kind: Kind::Approved,
            event: "{}",
        };
        assert!(insert_in(&mut tx, &event).await.unwrap());
        assert!(!insert_in(&mut tx, &event).await.unwrap());
        tx.commit().await.unwrap();
        let row = next_for_room(&store, "!a").await.unwrap().unwrap();
        assert_eq!(
            (row.event_id.as_str(), row.kind),
            ("approval:abc234", Kind::Approved)
        );
    }

    #[tokio::test]
    async fn an_unknown_kind_is_skipped_not_stuck() {
        let store = Store::in_memory().await.unwrap();
        sqlx::query("INSERT INTO inbox (event_id, room_id, kind, event, received_at) VALUES ('$x', '!a', 'future', '{}', 0)")
            .execute(store.pool())
            .await
            .unwrap();
        store_transaction(&store, "t", &[ev("$1", "!a")])
            .await
            .unwrap();
        assert_eq!(
            next_for_room(&store, "!a").await.unwrap().unwrap().event_id,
            "$1"
        );
    }
}
