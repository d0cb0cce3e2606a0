//! All SQL lives here: the pool, migrations, and one submodule per table family.
//!
//! SQLite in WAL mode. Queries are runtime-checked (`sqlx::query`), and every one is exercised
//! by the unit tests below against the real migrations, so a schema change that breaks a query
//! fails `cargo test`, not production.

pub mod aliases;
pub mod dms;
pub mod executions;
pub mod identities;
pub mod inbox;
pub mod outbox;
pub mod rooms;
pub mod settings;
pub mod tokens;
pub mod txns;

use std::{str::FromStr, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::Synchronous;

/// Handle on the database. Cheap to clone (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A database transaction, for work that must commit together (e.g. "queue the reply and mark
/// the command done").
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

impl Store {
    /// Opens (creating if needed) the database at `url` and applies the embedded migrations.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        synchronous: Synchronous,
    ) -> Result<Store, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            // A writer waits for another rather than failing with SQLITE_BUSY.
            .busy_timeout(Duration::from_secs(10))
            // Keep the page cache small: the working set is tiny and idle memory matters.
            .pragma("cache_size", "-512");
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // Every connection to `sqlite::memory:` is a separate database, so tests that use
            // one must share a single connection.
            .max_connections(if in_memory { 1 } else { max_connections })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(60))
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// A store on a private in-memory database, for tests and benchmarks.
    pub async fn in_memory() -> Result<Store, sqlx::Error> {
        Store::connect("sqlite::memory:", 1, Synchronous::Normal).await
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Checks the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// Deletes finished work older than `max_age`: processed transaction keys, done inbox
    /// events and sent or failed outbox messages. Returns the number of rows removed.
    pub async fn purge(&self, max_age: Duration) -> Result<u64, sqlx::Error> {
        let cutoff = now_ms() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut removed = 0;
        for sql in [
            "DELETE FROM processed_txns WHERE processed_at < ?",
            "DELETE FROM inbox WHERE state = 'done' AND finished_at < ?",
            "DELETE FROM outbox WHERE state != 'pending' AND finished_at < ?",
        ] {
            removed += sqlx::query(sql)
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Milliseconds since the Unix epoch: the time unit of every timestamp column.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_to_a_file_database_twice() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        Store::connect(&url, 2, Synchronous::Full)
            .await
            .unwrap()
            .close()
            .await;
        let store = Store::connect(&url, 2, Synchronous::Normal).await.unwrap();
        store.ping().await.unwrap();
        assert!(dir.path().join("s.db-wal").exists(), "WAL mode is on");
    }

    #[tokio::test]
    async fn purge_removes_only_old_finished_rows() {
        let store = Store::in_memory().await.unwrap();
        txns::store_transaction(&store, "t1", &[]).await.unwrap();
        assert_eq!(store.purge(Duration::from_secs(3600)).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.purge(Duration::ZERO).await.unwrap(), 1);
    }
}
