//! Rooms the bot has joined, and what the bridge remembers about each.

use sqlx::FromRow;

use super::{Store, now_ms};

/// A joined room.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct Room {
    /// Room id.
    pub room_id: String,
    /// Who invited the bot.
    pub inviter: Option<String>,
    /// Whether the room is known to be encrypted.
    pub encrypted: bool,
    /// When the "encrypted rooms are not supported" notice was queued (unix ms).
    pub encryption_notice_at: Option<i64>,
}

/// Records that the bot joined `room_id` (keeps what was known if it was already recorded).
pub async fn joined(
    store: &Store,
    room_id: &str,
    inviter: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rooms (room_id, joined_at, inviter) VALUES (?, ?, ?) \
         ON CONFLICT (room_id) DO UPDATE SET inviter = COALESCE(excluded.inviter, inviter)",
    )
    .bind(room_id)
    .bind(now_ms())
    .bind(inviter)
    .execute(store.pool())
    .await
    .map(drop)
}

/// Forgets everything about `room_id` (the bot was kicked or banned).
pub async fn forget(store: &Store, room_id: &str) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query("DELETE FROM rooms WHERE room_id = ?")
        .bind(room_id)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(removed > 0)
}

/// The room, if the bot is in it.
pub async fn get(store: &Store, room_id: &str) -> Result<Option<Room>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_id, inviter, encrypted, encryption_notice_at FROM rooms WHERE room_id = ?",
    )
    .bind(room_id)
    .fetch_optional(store.pool())
    .await
}

/// Marks the room encrypted and claims the right to post the one notice about it: returns true
/// only the first time, so the notice is posted once per room however many encrypted events
/// arrive. Runs in the caller's transaction so the claim commits with the queued notice.
pub async fn claim_encryption_notice(
    conn: &mut sqlx::SqliteConnection,
    room_id: &str,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO rooms (room_id, joined_at, encrypted) VALUES (?, ?, 1) \
         ON CONFLICT (room_id) DO UPDATE SET encrypted = 1",
    )
    .bind(room_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let claimed = sqlx::query(
        "UPDATE rooms SET encryption_notice_at = ? WHERE room_id = ? AND encryption_notice_at IS NULL",
    )
    .bind(now)
    .bind(room_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Ids of every joined room.
pub async fn all_ids(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_id FROM rooms ORDER BY joined_at")
        .fetch_all(store.pool())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn join_then_forget() {
        let store = Store::in_memory().await.unwrap();
        joined(&store, "!r", Some("@a:x")).await.unwrap();
        joined(&store, "!r", None).await.unwrap();
        let room = get(&store, "!r").await.unwrap().unwrap();
        assert_eq!(room.inviter.as_deref(), Some("@a:x"));
        assert!(!room.encrypted);
        assert_eq!(all_ids(&store).await.unwrap(), ["!r"]);
        assert!(forget(&store, "!r").await.unwrap());
        assert!(!forget(&store, "!r").await.unwrap());
        assert_eq!(get(&store, "!r").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_encryption_notice_is_claimed_once() {
        let store = Store::in_memory().await.unwrap();
        joined(&store, "!r", None).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(claim_encryption_notice(&mut conn, "!r").await.unwrap());
        assert!(!claim_encryption_notice(&mut conn, "!r").await.unwrap());
        drop(conn);
        assert!(get(&store, "!r").await.unwrap().unwrap().encrypted);
    }
}
