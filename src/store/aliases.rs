//! The persisted alias list and small metadata.

use sqlx::FromRow;

use super::{Store, now_ms};

/// One stored alias.
#[derive(Debug, Clone, FromRow)]
pub struct StoredAlias {
    /// `pack.name`.
    #[sqlx(rename = "ref")]
    pub reference: String,
    /// The alias object JSON as StackStorm returned it.
    pub alias: String,
}

/// Replaces the stored alias list (one transaction: readers see the old list or the new one).
pub async fn replace_all(
    store: &Store,
    aliases: &[(String, String, String)],
) -> Result<(), sqlx::Error> {
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM aliases").execute(&mut *tx).await?;
    for (reference, pack, json) in aliases {
        sqlx::query("INSERT INTO aliases (ref, pack, alias) VALUES (?, ?, ?)")
            .bind(reference)
            .bind(pack)
            .bind(json)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('aliases_fetched_at', ?)")
        .bind(now_ms().to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Every stored alias, in the order StackStorm returned them.
pub async fn all(store: &Store) -> Result<Vec<StoredAlias>, sqlx::Error> {
    sqlx::query_as("SELECT ref, alias FROM aliases ORDER BY seq")
        .fetch_all(store.pool())
        .await
}

/// When the stored list was fetched (unix ms).
pub async fn fetched_at(store: &Store) -> Result<Option<i64>, sqlx::Error> {
    let value: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'aliases_fetched_at'")
            .fetch_optional(store.pool())
            .await?;
    Ok(value.and_then(|v| v.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_list_is_replaced_as_a_whole() {
        let store = Store::in_memory().await.unwrap();
        assert_eq!(fetched_at(&store).await.unwrap(), None);
        let a = |r: &str, p: &str| (r.to_owned(), p.to_owned(), format!("{{\"ref\":\"{r}\"}}"));
        replace_all(&store, &[a("b.x", "b"), a("a.y", "a")])
            .await
            .unwrap();
        let refs: Vec<_> = all(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.reference)
            .collect();
        assert_eq!(
            refs,
            ["b.x", "a.y"],
            "kept in the order StackStorm returned them"
        );
        replace_all(&store, &[a("c.z", "c")]).await.unwrap();
        assert_eq!(all(&store).await.unwrap().len(), 1);
        replace_all(&store, &[a("d.w", "d"), a("d.w", "d")])
            .await
            .unwrap();
        assert_eq!(
            all(&store).await.unwrap().len(),
            2,
            "duplicate refs are kept as returned"
        );
        assert!(fetched_at(&store).await.unwrap().is_some());
    }
}
