//! Room settings set in the admin room: permission rules and pack filters; and where the admin
//! room is.

use sqlx::SqliteConnection;

use super::Store;

/// A room's rules, as stored (rule, level).
pub async fn rules(store: &Store) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT room_id, rule, level FROM room_rules ORDER BY room_id, rule")
        .fetch_all(store.pool())
        .await
}

/// Sets (or replaces) a rule of a room.
pub async fn put_rule(
    store: &Store,
    room_id: &str,
    rule: &str,
    level: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO room_rules (room_id, rule, level) VALUES (?, ?, ?)")
        .bind(room_id)
        .bind(rule)
        .bind(level)
        .execute(store.pool())
        .await
        .map(drop)
}

/// Removes a rule of a room; returns whether it existed.
pub async fn delete_rule(store: &Store, room_id: &str, rule: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("DELETE FROM room_rules WHERE room_id = ? AND rule = ?")
        .bind(room_id)
        .bind(rule)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Removes every rule of a room (it was left or forgotten).
pub async fn delete_room_rules(store: &Store, room_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM room_rules WHERE room_id = ?")
        .bind(room_id)
        .execute(store.pool())
        .await
        .map(drop)
}

/// Every room's own pack filter.
pub async fn packs(store: &Store) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT room_id, packs FROM rooms WHERE packs IS NOT NULL")
        .fetch_all(store.pool())
        .await
}

/// Sets a room's own pack filter (`None`: back to `[bridge].packs`).
pub async fn set_packs(
    store: &Store,
    room_id: &str,
    packs: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE rooms SET packs = ? WHERE room_id = ?")
        .bind(packs)
        .bind(room_id)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// A value from the `meta` table.
pub async fn meta(store: &Store, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(store.pool())
        .await
}

/// Sets a value in the `meta` table.
pub async fn set_meta(store: &Store, key: &str, value: &str) -> Result<(), sqlx::Error> {
    let mut conn = store.pool().acquire().await?;
    set_meta_in(&mut conn, key, value).await
}

/// Sets a value in the `meta` table inside the caller's transaction (e.g. together with the
/// notice it remembers).
pub async fn set_meta_in(
    conn: &mut SqliteConnection,
    key: &str,
    value: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
        .bind(key)
        .bind(value)
        .execute(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rules_packs_and_meta_round_trip() {
        let store = Store::in_memory().await.unwrap();
        put_rule(&store, "!r", "*:x", "run").await.unwrap();
        put_rule(&store, "!r", "*:x", "none").await.unwrap();
        put_rule(&store, "!r", "power>=50", "run").await.unwrap();
        assert_eq!(rules(&store).await.unwrap().len(), 2);
        assert!(delete_rule(&store, "!r", "*:x").await.unwrap());
        assert!(!delete_rule(&store, "!r", "*:x").await.unwrap());
        delete_room_rules(&store, "!r").await.unwrap();
        assert!(rules(&store).await.unwrap().is_empty());

        super::super::rooms::joined(&store, "!r", None, false)
            .await
            .unwrap();
        assert!(set_packs(&store, "!r", Some("ops,packs")).await.unwrap());
        assert_eq!(
            packs(&store).await.unwrap(),
            [("!r".to_owned(), "ops,packs".to_owned())]
        );
        assert!(!set_packs(&store, "!unknown", Some("x")).await.unwrap());

        assert_eq!(meta(&store, "admin_room").await.unwrap(), None);
        set_meta(&store, "admin_room", "!a").await.unwrap();
        assert_eq!(
            meta(&store, "admin_room").await.unwrap().as_deref(),
            Some("!a")
        );
    }
}
