//! The direct chat the bot opened with each person (for whispered results), created once and
//! remembered.

use super::{Store, now_ms};

/// The direct chat with `user_id`, if the bot opened one.
pub async fn get(store: &Store, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_id FROM dm_rooms WHERE user_id = ?")
        .bind(user_id)
        .fetch_optional(store.pool())
        .await
}

/// Remembers the direct chat with `user_id`.
pub async fn put(store: &Store, user_id: &str, room_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO dm_rooms (user_id, room_id, created_at) VALUES (?, ?, ?)")
        .bind(user_id)
        .bind(room_id)
        .bind(now_ms())
        .execute(store.pool())
        .await
        .map(drop)
}

/// Forgets the direct chat in `room_id` (the bot was removed from it).
pub async fn forget_room(store: &Store, room_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM dm_rooms WHERE room_id = ?")
        .bind(room_id)
        .execute(store.pool())
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_chat_is_remembered_and_forgotten() {
        let store = Store::in_memory().await.unwrap();
        assert_eq!(get(&store, "@a:x").await.unwrap(), None);
        put(&store, "@a:x", "!dm").await.unwrap();
        assert_eq!(get(&store, "@a:x").await.unwrap().as_deref(), Some("!dm"));
        forget_room(&store, "!dm").await.unwrap();
        assert_eq!(get(&store, "@a:x").await.unwrap(), None);
    }
}
