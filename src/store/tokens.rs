//! Stored StackStorm tokens (sealed by [`crate::crypto::SecretBox`]; this module never sees
//! a token in clear).

use sqlx::FromRow;

use super::Store;

/// A sealed token and its expiry.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SealedToken {
    /// Whose token: `bot`, or a Matrix user id.
    pub owner: String,
    /// The sealed value.
    pub sealed: String,
    /// Expiry (unix ms), if it expires.
    pub expires_at: Option<i64>,
}

/// Stores (or replaces) `owner`'s token.
pub async fn put(store: &Store, token: &SealedToken) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO st2_tokens (owner, sealed, expires_at) VALUES (?, ?, ?)")
        .bind(&token.owner)
        .bind(&token.sealed)
        .bind(token.expires_at)
        .execute(store.pool())
        .await
        .map(drop)
}

/// `owner`'s token, if stored.
pub async fn get(store: &Store, owner: &str) -> Result<Option<SealedToken>, sqlx::Error> {
    sqlx::query_as("SELECT owner, sealed, expires_at FROM st2_tokens WHERE owner = ?")
        .bind(owner)
        .fetch_optional(store.pool())
        .await
}

/// Removes `owner`'s token; returns whether there was one.
pub async fn delete(store: &Store, owner: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("DELETE FROM st2_tokens WHERE owner = ?")
        .bind(owner)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_is_stored_replaced_and_deleted() {
        let store = Store::in_memory().await.unwrap();
        let t = SealedToken {
            owner: "bot".into(),
            sealed: "s1".into(),
            expires_at: Some(5),
        };
        put(&store, &t).await.unwrap();
        put(
            &store,
            &SealedToken {
                sealed: "s2".into(),
                ..t.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(get(&store, "bot").await.unwrap().unwrap().sealed, "s2");
        assert!(delete(&store, "bot").await.unwrap());
        assert_eq!(get(&store, "bot").await.unwrap(), None);
    }
}
