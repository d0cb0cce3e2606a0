//! Executions the bridge started, and where their results go.

use sqlx::{FromRow, SqliteConnection};

use super::{Store, now_ms};

/// An execution started from a room.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Execution {
    /// StackStorm's execution id.
    pub execution_id: String,
    /// The room of the command.
    pub room_id: String,
    /// The command's event.
    pub event_id: String,
    /// The command's thread root, if it was in a thread.
    pub thread_root: Option<String>,
    /// Who typed it.
    pub sender: String,
    /// `pack.name` of the alias.
    pub alias_ref: String,
    /// When it was started (unix ms).
    pub created_at: i64,
}

/// Records the executions a command started (the inbox row `inbox_seq`), in the caller's
/// transaction (with the ack and the row's finish). Results already delivered for the command
/// while they were not recorded (counted on its attempt by [`claim_for_event`]) mark as many
/// of them posted, oldest first as the claim takes them, so none is posted again.
pub async fn record_started(
    conn: &mut SqliteConnection,
    inbox_seq: i64,
    executions: &[Execution],
) -> Result<(), sqlx::Error> {
    for execution in executions {
        record(conn, execution).await?;
    }
    let posted: Option<i64> =
        sqlx::query_scalar("SELECT results_posted FROM command_attempts WHERE inbox_seq = ?")
            .bind(inbox_seq)
            .fetch_optional(&mut *conn)
            .await?;
    let (Some(posted), Some(first)) = (posted.filter(|n| *n > 0), executions.first()) else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE executions SET result_at = ? WHERE execution_id IN (SELECT execution_id FROM executions \
         WHERE event_id = ? AND result_at IS NULL ORDER BY created_at, execution_id LIMIT ?)",
    )
    .bind(now_ms())
    .bind(&first.event_id)
    .bind(posted)
    .execute(conn)
    .await
    .map(drop)
}

/// Records an execution, in the caller's transaction (with the ack).
pub async fn record(conn: &mut SqliteConnection, e: &Execution) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR IGNORE INTO executions (execution_id, room_id, event_id, thread_root, sender, alias_ref, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.execution_id)
    .bind(&e.room_id)
    .bind(&e.event_id)
    .bind(&e.thread_root)
    .bind(&e.sender)
    .bind(&e.alias_ref)
    .bind(e.created_at)
    .execute(conn)
    .await
    .map(drop)
}

/// The execution, if the bridge started it.
pub async fn get(store: &Store, execution_id: &str) -> Result<Option<Execution>, sqlx::Error> {
    sqlx::query_as(
        "SELECT execution_id, room_id, event_id, thread_root, sender, alias_ref, created_at FROM executions WHERE execution_id = ?",
    )
    .bind(execution_id)
    .fetch_optional(store.pool())
    .await
}

/// Records the ack of an execution (in the transaction that queues it): its text and send
/// transaction id, so it can be edited as the execution moves.
pub async fn set_ack(
    conn: &mut SqliteConnection,
    execution_id: &str,
    ack_text: &str,
    ack_txn: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE executions SET ack_text = ?, ack_txn = ? WHERE execution_id = ?")
        .bind(ack_text)
        .bind(ack_txn)
        .bind(execution_id)
        .execute(conn)
        .await
        .map(drop)
}

/// What live status needs of an execution: where its command and ack are.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Live {
    /// StackStorm's execution id.
    pub execution_id: String,
    /// The room.
    pub room_id: String,
    /// The command's event (the ✅/❌ goes on it).
    pub event_id: String,
    /// The ack's text, when it was acknowledged.
    pub ack_text: Option<String>,
    /// The ack's send transaction id.
    pub ack_txn: Option<String>,
    /// The ack's event id, once sent.
    pub ack_event_id: Option<String>,
    /// The last status seen.
    pub status: Option<String>,
    /// When it was seen to end.
    pub ended_at: Option<i64>,
}

/// The live-status view of an execution the bridge started.
pub async fn live(store: &Store, execution_id: &str) -> Result<Option<Live>, sqlx::Error> {
    sqlx::query_as(
        "SELECT execution_id, room_id, event_id, ack_text, ack_txn, ack_event_id, status, ended_at \
         FROM executions WHERE execution_id = ?",
    )
    .bind(execution_id)
    .fetch_optional(store.pool())
    .await
}

/// Ids of the executions not seen to end, started since `since` (unix ms): what the live
/// status follows after a restart.
pub async fn not_ended_since(store: &Store, since: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT execution_id FROM executions WHERE ended_at IS NULL AND created_at >= ?",
    )
    .bind(since)
    .fetch_all(store.pool())
    .await
}

/// Records the last status seen; with `ended`, that the execution ended (once: `false` when
/// it was recorded as ended before, so the end is announced once).
pub async fn set_status(
    conn: &mut SqliteConnection,
    execution_id: &str,
    status: &str,
    ended: bool,
) -> Result<bool, sqlx::Error> {
    let changed = if ended {
        sqlx::query(
            "UPDATE executions SET status = ?, ended_at = ? WHERE execution_id = ? AND ended_at IS NULL",
        )
        .bind(status)
        .bind(now_ms())
        .bind(execution_id)
        .execute(conn)
        .await?
    } else {
        sqlx::query("UPDATE executions SET status = ? WHERE execution_id = ? AND ended_at IS NULL")
            .bind(status)
            .bind(execution_id)
            .execute(conn)
            .await?
    };
    Ok(changed.rows_affected() == 1)
}

/// The latest `limit` executions started from `room_id`, newest first.
pub async fn recent_in_room(
    store: &Store,
    room_id: &str,
    limit: i64,
) -> Result<Vec<Execution>, sqlx::Error> {
    sqlx::query_as(
        "SELECT execution_id, room_id, event_id, thread_root, sender, alias_ref, created_at \
         FROM executions WHERE room_id = ? ORDER BY created_at DESC, execution_id DESC LIMIT ?",
    )
    .bind(room_id)
    .bind(limit)
    .fetch_all(store.pool())
    .await
}

/// The newest execution of `room_id` that a thread or reply points at: started by the command
/// `event_id`, or whose thread is rooted at it, or whose ack it is.
pub async fn for_event(
    store: &Store,
    room_id: &str,
    event_id: &str,
) -> Result<Option<Execution>, sqlx::Error> {
    sqlx::query_as(
        "SELECT execution_id, room_id, event_id, thread_root, sender, alias_ref, created_at \
         FROM executions WHERE room_id = ? AND (event_id = ? OR thread_root = ? OR ack_event_id = ?) \
         ORDER BY created_at DESC, execution_id DESC LIMIT 1",
    )
    .bind(room_id)
    .bind(event_id)
    .bind(event_id)
    .bind(event_id)
    .fetch_optional(store.pool())
    .await
}

/// Marks that the result was queued; returns false if it already was (so it is posted once).
pub async fn mark_result(
    conn: &mut SqliteConnection,
    execution_id: &str,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE executions SET result_at = ? WHERE execution_id = ? AND result_at IS NULL",
    )
    .bind(now_ms())
    .bind(execution_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// What posting a result for the command `event_id` should do, decided and recorded in the
/// caller's transaction: results are matched to executions by the command's event (the
/// announcement carries the command's `source_context`, not the execution id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No execution of ours for this event: post it (a result of something else).
    Unrelated,
    /// This execution's result: post it (now recorded as posted).
    Execution(String),
    /// Every execution of this command already has its result (e.g. recovered while the
    /// stream was down): do not post it again.
    AlreadyPosted,
    /// The command is in doubt (sent, its executions not recorded yet: the bridge died before
    /// StackStorm's answer, or the answer is still on its way): post it, now counted on the
    /// command's attempt so that recording its executions marks it posted
    /// ([`record_started`]).
    InDoubt,
}

/// Claims the oldest execution of the command `event_id` that has no result yet; for a
/// command in doubt, its one result.
pub async fn claim_for_event(
    conn: &mut SqliteConnection,
    event_id: &str,
) -> Result<Claim, sqlx::Error> {
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT execution_id, result_at FROM executions WHERE event_id = ? ORDER BY created_at, execution_id")
            .bind(event_id)
            .fetch_all(&mut *conn)
            .await?;
    if rows.is_empty() {
        // Which executions the command started is not known yet, so one result stands for
        // the command: a second copy (st2 may announce twice) is dropped. A `match_multiple`
        // command's other results come from the recovery pass once they are recorded.
        let claimed = sqlx::query(
            "UPDATE command_attempts SET results_posted = 1 WHERE event_id = ? AND results_posted = 0",
        )
        .bind(event_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if claimed > 0 {
            return Ok(Claim::InDoubt);
        }
        let in_doubt: Option<i64> =
            sqlx::query_scalar("SELECT inbox_seq FROM command_attempts WHERE event_id = ? LIMIT 1")
                .bind(event_id)
                .fetch_optional(&mut *conn)
                .await?;
        return Ok(if in_doubt.is_some() {
            Claim::AlreadyPosted
        } else {
            Claim::Unrelated
        });
    }
    for (execution_id, result_at) in rows {
        if result_at.is_none() && mark_result(conn, &execution_id).await? {
            return Ok(Claim::Execution(execution_id));
        }
    }
    Ok(Claim::AlreadyPosted)
}

/// The execution of the command `event_id` whose result [`claim_for_event`] would claim now
/// (the oldest without one), without claiming it.
pub async fn awaiting_for_event(
    store: &Store,
    event_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT execution_id FROM executions WHERE event_id = ? AND result_at IS NULL \
         ORDER BY created_at, execution_id LIMIT 1",
    )
    .bind(event_id)
    .fetch_optional(store.pool())
    .await
}

/// Executions whose result has not been posted, oldest first.
///
/// Keyset-paged: `after` is the (`created_at`, `execution_id`) of the last row of the previous
/// page, so a pass reaches every row however many stay pending.
pub async fn awaiting_result(
    store: &Store,
    after: Option<&(i64, String)>,
    limit: i64,
) -> Result<Vec<Execution>, sqlx::Error> {
    let (created_at, execution_id) = after
        .map(|(at, id)| (*at, id.as_str()))
        .unwrap_or((i64::MIN, ""));
    sqlx::query_as(
        "SELECT execution_id, room_id, event_id, thread_root, sender, alias_ref, created_at FROM executions \
         WHERE result_at IS NULL AND (created_at, execution_id) > (?, ?) \
         ORDER BY created_at, execution_id LIMIT ?",
    )
    .bind(created_at)
    .bind(execution_id)
    .bind(limit)
    .fetch_all(store.pool())
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{inbox, txns::store_transaction};

    /// A command whose inbox row is marked started with an attempt, as `run` leaves it just
    /// before sending it (or a crash leaves it).
    async fn command_in_doubt(store: &Store, event_id: &str) -> i64 {
        let event = inbox::NewEvent {
            event_id,
            room_id: "!r",
            kind: inbox::Kind::Command,
            event: "{}",
        };
        store_transaction(store, event_id, &[event]).await.unwrap();
        let seq = inbox::next_for_room(store, "!r")
            .await
            .unwrap()
            .unwrap()
            .seq;
        let attempt = inbox::Attempt {
            inbox_seq: seq,
            room_id: "!r".into(),
            event_id: event_id.into(),
            thread_root: None,
            sender: "@a:x".into(),
            alias_ref: "p.a".into(),
            action_ref: "core.local".into(),
            st2_user: None,
            ack_enabled: true,
            ack_append_url: true,
            started_at: 1,
        };
        inbox::mark_started_with(store, &attempt).await.unwrap();
        seq
    }

    fn started_by(event_id: &str, id: &str, at: i64) -> Execution {
        Execution {
            execution_id: id.into(),
            room_id: "!r".into(),
            event_id: event_id.into(),
            thread_root: None,
            sender: "@a:x".into(),
            alias_ref: "p.a".into(),
            created_at: at,
        }
    }

    #[tokio::test]
    async fn a_result_for_a_command_in_doubt_is_posted_once_and_counted_when_recorded() {
        let store = Store::in_memory().await.unwrap();
        let seq = command_in_doubt(&store, "$cmd").await;

        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            claim_for_event(&mut tx, "$cmd").await.unwrap(),
            Claim::InDoubt
        );
        assert_eq!(
            claim_for_event(&mut tx, "$cmd").await.unwrap(),
            Claim::AlreadyPosted,
            "a second copy of the announcement"
        );
        record_started(&mut tx, seq, &[started_by("$cmd", "e1", 1)])
            .await
            .unwrap();
        inbox::finish(&mut tx, seq).await.unwrap();
        tx.commit().await.unwrap();

        assert!(
            awaiting_result(&store, None, 10).await.unwrap().is_empty(),
            "recovery will not post it again"
        );
        let mut conn = store.pool().acquire().await.unwrap();
        assert_eq!(
            claim_for_event(&mut conn, "$cmd").await.unwrap(),
            Claim::AlreadyPosted
        );
    }

    #[tokio::test]
    async fn recording_a_command_in_doubt_without_a_result_leaves_it_to_claim() {
        let store = Store::in_memory().await.unwrap();
        let seq = command_in_doubt(&store, "$cmd").await;
        let mut tx = store.begin().await.unwrap();
        record_started(
            &mut tx,
            seq,
            &[started_by("$cmd", "e1", 1), started_by("$cmd", "e2", 2)],
        )
        .await
        .unwrap();
        inbox::finish(&mut tx, seq).await.unwrap();
        assert_eq!(
            claim_for_event(&mut tx, "$cmd").await.unwrap(),
            Claim::Execution("e1".into())
        );
        tx.commit().await.unwrap();
        assert_eq!(awaiting_result(&store, None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn one_result_before_a_match_multiple_command_is_recorded_marks_one_execution() {
        let store = Store::in_memory().await.unwrap();
        let seq = command_in_doubt(&store, "$cmd").await;
        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            claim_for_event(&mut tx, "$cmd").await.unwrap(),
            Claim::InDoubt
        );
        record_started(
            &mut tx,
            seq,
            &[started_by("$cmd", "e2", 2), started_by("$cmd", "e1", 1)],
        )
        .await
        .unwrap();
        inbox::finish(&mut tx, seq).await.unwrap();
        tx.commit().await.unwrap();
        let awaiting: Vec<String> = awaiting_result(&store, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.execution_id)
            .collect();
        assert_eq!(
            awaiting,
            ["e2"],
            "the oldest counts as posted, as a claim takes it"
        );
    }

    #[tokio::test]
    async fn an_execution_gets_its_result_once() {
        let store = Store::in_memory().await.unwrap();
        let e = Execution {
            execution_id: "5e1".into(),
            room_id: "!r".into(),
            event_id: "$e".into(),
            thread_root: Some("$t".into()),
            sender: "@a:x".into(),
            alias_ref: "p.a".into(),
            created_at: now_ms(),
        };
        let mut conn = store.pool().acquire().await.unwrap();
        record(&mut conn, &e).await.unwrap();
        drop(conn);
        assert_eq!(get(&store, "5e1").await.unwrap().as_ref(), Some(&e));
        assert_eq!(awaiting_result(&store, None, 10).await.unwrap().len(), 1);
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(mark_result(&mut conn, "5e1").await.unwrap());
        assert!(!mark_result(&mut conn, "5e1").await.unwrap());
        drop(conn);
        assert!(awaiting_result(&store, None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn paging_reaches_every_execution_awaiting_a_result() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        // Two share a timestamp: the id breaks the tie, so neither is skipped nor repeated.
        for (id, at) in [("a", 1), ("c", 2), ("b", 2), ("d", 3), ("e", 4)] {
            let e = Execution {
                execution_id: id.into(),
                room_id: "!r".into(),
                event_id: format!("${id}"),
                thread_root: None,
                sender: "@a:x".into(),
                alias_ref: "p.a".into(),
                created_at: at,
            };
            record(&mut conn, &e).await.unwrap();
        }
        drop(conn);
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = awaiting_result(&store, after.as_ref(), 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|l| (l.created_at, l.execution_id.clone()));
            seen.extend(page.into_iter().map(|e| e.execution_id));
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    }

    #[tokio::test]
    async fn results_are_claimed_by_command_one_execution_at_a_time() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        assert_eq!(
            claim_for_event(&mut conn, "$none").await.unwrap(),
            Claim::Unrelated
        );
        for (id, at) in [("e1", 1), ("e2", 2)] {
            let e = Execution {
                execution_id: id.into(),
                room_id: "!r".into(),
                event_id: "$cmd".into(),
                thread_root: None,
                sender: "@a:x".into(),
                alias_ref: "p.a".into(),
                created_at: at,
            };
            record(&mut conn, &e).await.unwrap();
        }
        assert_eq!(
            claim_for_event(&mut conn, "$cmd").await.unwrap(),
            Claim::Execution("e1".into())
        );
        assert_eq!(
            claim_for_event(&mut conn, "$cmd").await.unwrap(),
            Claim::Execution("e2".into())
        );
        assert_eq!(
            claim_for_event(&mut conn, "$cmd").await.unwrap(),
            Claim::AlreadyPosted
        );
    }
}
