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
    /// A direct chat with the bot.
    pub direct: bool,
}

/// Records that the bot joined `room_id` (keeps what was known if it was already recorded).
pub async fn joined(
    store: &Store,
    room_id: &str,
    inviter: Option<&str>,
    direct: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rooms (room_id, joined_at, inviter, direct) VALUES (?, ?, ?, ?) \
         ON CONFLICT (room_id) DO UPDATE SET inviter = COALESCE(excluded.inviter, inviter), \
         direct = excluded.direct OR direct",
    )
    .bind(room_id)
    .bind(now_ms())
    .bind(inviter)
    .bind(direct)
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
        "SELECT room_id, inviter, encrypted, encryption_notice_at, direct FROM rooms WHERE room_id = ?",
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
    set_encrypted(&mut *conn, room_id).await?;
    let claimed = sqlx::query(
        "UPDATE rooms SET encryption_notice_at = ? WHERE room_id = ? AND encryption_notice_at IS NULL",
    )
    .bind(now_ms())
    .bind(room_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Records that `room_id` is end-to-end encrypted (known or not before); in the caller's
/// transaction, so it can commit with what follows from it.
pub async fn set_encrypted(
    conn: &mut sqlx::SqliteConnection,
    room_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rooms (room_id, joined_at, encrypted) VALUES (?, ?, 1) \
         ON CONFLICT (room_id) DO UPDATE SET encrypted = 1",
    )
    .bind(room_id)
    .bind(now_ms())
    .execute(conn)
    .await
    .map(drop)
}

/// Ids of the rooms known to be encrypted.
pub async fn encrypted_ids(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_id FROM rooms WHERE encrypted = 1")
        .fetch_all(store.pool())
        .await
}

/// Ids of the direct chats.
pub async fn direct_ids(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_id FROM rooms WHERE direct = 1")
        .fetch_all(store.pool())
        .await
}

/// Ids of the rooms that got the encryption notice.
pub async fn encryption_noticed_ids(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_id FROM rooms WHERE encryption_notice_at IS NOT NULL")
        .fetch_all(store.pool())
        .await
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
        joined(&store, "!r", Some("@a:x"), true).await.unwrap();
        joined(&store, "!r", None, false).await.unwrap();
        let room = get(&store, "!r").await.unwrap().unwrap();
        assert_eq!(room.inviter.as_deref(), Some("@a:x"));
        assert!(!room.encrypted);
        assert!(room.direct, "once direct, stays direct");
        assert_eq!(all_ids(&store).await.unwrap(), ["!r"]);
        assert_eq!(direct_ids(&store).await.unwrap(), ["!r"]);
        assert!(forget(&store, "!r").await.unwrap());
        assert!(!forget(&store, "!r").await.unwrap());
        assert_eq!(get(&store, "!r").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_encryption_notice_is_claimed_once() {
        let store = Store::in_memory().await.unwrap();
        joined(&store, "!r", None, false).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(claim_encryption_notice(&mut conn, "!r").await.unwrap());
        assert!(!claim_encryption_notice(&mut conn, "!r").await.unwrap());
        drop(conn);
        assert!(get(&store, "!r").await.unwrap().unwrap().encrypted);
        assert_eq!(encryption_noticed_ids(&store).await.unwrap(), ["!r"]);
    }

    #[tokio::test]
    async fn a_room_marked_encrypted_stays_encrypted() {
        let store = Store::in_memory().await.unwrap();
        joined(&store, "!r", None, false).await.unwrap();
        joined(&store, "!s", None, false).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        set_encrypted(&mut conn, "!r").await.unwrap();
        set_encrypted(&mut conn, "!new").await.unwrap();
        drop(conn);
        joined(&store, "!r", None, false).await.unwrap();
        let mut ids = encrypted_ids(&store).await.unwrap();
        ids.sort();
        assert_eq!(ids, ["!new", "!r"]);
    }
}
