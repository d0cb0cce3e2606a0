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

/// Executions whose result has not been posted, oldest first.
pub async fn awaiting_result(store: &Store, limit: i64) -> Result<Vec<Execution>, sqlx::Error> {
    sqlx::query_as(
        "SELECT execution_id, room_id, event_id, thread_root, sender, alias_ref, created_at FROM executions \
         WHERE result_at IS NULL ORDER BY created_at LIMIT ?",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(awaiting_result(&store, 10).await.unwrap().len(), 1);
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(mark_result(&mut conn, "5e1").await.unwrap());
        assert!(!mark_result(&mut conn, "5e1").await.unwrap());
        drop(conn);
        assert!(awaiting_result(&store, 10).await.unwrap().is_empty());
    }
}
