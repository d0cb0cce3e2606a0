//! Login sessions and linked StackStorm identities (secrets sealed by the caller).

use sqlx::FromRow;

use super::{Store, now_ms};

/// A login link.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LoginSession {
    /// Hash of the link's token.
    pub token_hash: String,
    /// Who asked for it.
    pub user_id: String,
    /// Their direct chat with the bot.
    pub room_id: String,
    /// The page's one-time form token.
    pub form_token: String,
    /// Expiry (unix ms).
    pub expires_at: i64,
    /// When it was used (unix ms).
    pub used_at: Option<i64>,
}

/// Stores a new login session (older unused ones of the same person are removed: one link at a
/// time).
pub async fn create_session(store: &Store, session: &LoginSession) -> Result<(), sqlx::Error> {
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM login_sessions WHERE user_id = ? AND used_at IS NULL")
        .bind(&session.user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO login_sessions (token_hash, user_id, room_id, form_token, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&session.token_hash)
        .bind(&session.user_id)
        .bind(&session.room_id)
        .bind(&session.form_token)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The session for a token hash.
pub async fn session(store: &Store, token_hash: &str) -> Result<Option<LoginSession>, sqlx::Error> {
    sqlx::query_as("SELECT token_hash, user_id, room_id, form_token, expires_at, used_at FROM login_sessions WHERE token_hash = ?")
        .bind(token_hash)
        .fetch_optional(store.pool())
        .await
}

/// Marks a session used; false when it already was (single use, even with two submits racing).
pub async fn use_session(store: &Store, token_hash: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE login_sessions SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
    )
    .bind(now_ms())
    .bind(token_hash)
    .execute(store.pool())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Removes expired and used sessions older than `cutoff` (unix ms).
pub async fn purge_sessions(store: &Store, cutoff: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM login_sessions WHERE expires_at < ?")
            .bind(cutoff)
            .execute(store.pool())
            .await?
            .rows_affected(),
    )
}

/// A linked identity.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Identity {
    /// The Matrix user.
    pub user_id: String,
    /// The StackStorm user.
    pub st2_user: String,
    /// `password` or `api_key`.
    pub kind: String,
    /// The sealed password or API key.
    pub sealed_secret: String,
    /// The sealed current token (password kind).
    pub sealed_token: Option<String>,
    /// Its expiry (unix ms).
    pub token_expires_at: Option<i64>,
    /// When it was linked (unix ms).
    pub linked_at: i64,
}

/// Stores (or replaces) an identity.
pub async fn put(store: &Store, identity: &Identity) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR REPLACE INTO user_credentials (user_id, st2_user, kind, sealed_secret, sealed_token, token_expires_at, linked_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&identity.user_id)
    .bind(&identity.st2_user)
    .bind(&identity.kind)
    .bind(&identity.sealed_secret)
    .bind(&identity.sealed_token)
    .bind(identity.token_expires_at)
    .bind(identity.linked_at)
    .execute(store.pool())
    .await
    .map(drop)
}

/// Replaces the token of an identity.
pub async fn set_token(
    store: &Store,
    user_id: &str,
    sealed_token: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE user_credentials SET sealed_token = ?, token_expires_at = ? WHERE user_id = ?",
    )
    .bind(sealed_token)
    .bind(expires_at)
    .bind(user_id)
    .execute(store.pool())
    .await
    .map(drop)
}

/// A person's identity.
pub async fn get(store: &Store, user_id: &str) -> Result<Option<Identity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, st2_user, kind, sealed_secret, sealed_token, token_expires_at, linked_at FROM user_credentials WHERE user_id = ?",
    )
    .bind(user_id)
    .fetch_optional(store.pool())
    .await
}

/// Every identity, by Matrix user.
pub async fn all(store: &Store) -> Result<Vec<Identity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, st2_user, kind, sealed_secret, sealed_token, token_expires_at, linked_at FROM user_credentials ORDER BY user_id",
    )
    .fetch_all(store.pool())
    .await
}

/// Removes a person's identity; returns whether there was one.
pub async fn delete(store: &Store, user_id: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("DELETE FROM user_credentials WHERE user_id = ?")
        .bind(user_id)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_is_single_use_and_one_per_person() {
        let store = Store::in_memory().await.unwrap();
        let s = LoginSession {
            token_hash: "h1".into(),
            user_id: "@a:x".into(),
            room_id: "!dm".into(),
            form_token: "f".into(),
            expires_at: now_ms() + 600_000,
            used_at: None,
        };
        create_session(&store, &s).await.unwrap();
        create_session(
            &store,
            &LoginSession {
                token_hash: "h2".into(),
                ..s.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            session(&store, "h1").await.unwrap(),
            None,
            "a new link replaces the unused old one"
        );
        assert!(use_session(&store, "h2").await.unwrap());
        assert!(!use_session(&store, "h2").await.unwrap());
        assert!(
            session(&store, "h2")
                .await
                .unwrap()
                .unwrap()
                .used_at
                .is_some()
        );
        assert_eq!(purge_sessions(&store, now_ms() + 700_000).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_identity_is_stored_renewed_and_removed() {
        let store = Store::in_memory().await.unwrap();
        let id = Identity {
            user_id: "@a:x".into(),
            st2_user: "alice".into(),
            kind: "password".into(),
            sealed_secret: "s".into(),
            sealed_token: None,
            token_expires_at: None,
            linked_at: 1,
        };
        put(&store, &id).await.unwrap();
        set_token(&store, "@a:x", "t", 99).await.unwrap();
        let got = get(&store, "@a:x").await.unwrap().unwrap();
        assert_eq!(
            (got.sealed_token.as_deref(), got.token_expires_at),
            (Some("t"), Some(99))
        );
        assert_eq!(all(&store).await.unwrap().len(), 1);
        assert!(delete(&store, "@a:x").await.unwrap());
        assert_eq!(get(&store, "@a:x").await.unwrap(), None);
    }
}
