//! All SQL lives here: the pool, migrations, and one submodule per table family.
//!
//! SQLite in WAL mode. Queries are runtime-checked (`sqlx::query`), and every one is exercised
//! by the unit tests below against the real migrations, so a schema change that breaks a query
//! fails `cargo test`, not production.

pub mod aliases;
pub mod approvals;
pub mod dms;
pub mod executions;
pub mod identities;
pub mod inbox;
pub mod inquiries;
pub mod outbox;
pub mod prompts;
pub mod rooms;
pub mod settings;
pub mod tokens;
pub mod txns;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::Synchronous;

/// Handle on the database. Cheap to clone (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Held by the one open write transaction ([`Store::begin`]). SQLite allows one writer at
    /// a time; queueing writers here, where a waiter sleeps until the lock is handed to it,
    /// beats letting SQLite's busy handler poll for its lock (CPU spent, and a lock freed just
    /// after a poll is noticed only at the next one).
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction, for work that must commit together (e.g. "queue the reply and mark
/// the command done"). Use it as the connection (`&mut tx`); dropped without
/// [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub struct Tx {
    // Field order is drop order: the transaction is rolled back before the lock is freed.
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::SqliteConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

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
            // A writer waits for another rather than failing with SQLITE_BUSY.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    // SAFETY: the handle is this connection's open database, locked for us;
                    // the handler is a plain function that uses no user data.
                    unsafe {
                        libsqlite3_sys::sqlite3_busy_handler(
                            handle.as_raw_handle().as_ptr(),
                            Some(wait_for_writer),
                            std::ptr::null_mut(),
                        );
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            writer: Arc::default(),
        })
    }

    /// A store on a private in-memory database, for tests and benchmarks.
    pub async fn in_memory() -> Result<Store, sqlx::Error> {
        Store::connect("sqlite::memory:", 1, Synchronous::Normal).await
    }

    /// Starts a write transaction. `IMMEDIATE`: it takes the write lock at once (waiting for
    /// another writer if need be), so a transaction that reads before it writes can never fail
    /// with `SQLITE_BUSY` halfway because another connection wrote in between.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        Ok(Tx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _writer: writer,
        })
    }

    /// Checks the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// Deletes finished work older than `max_age`: processed transaction keys, done inbox
    /// events, sent or failed outbox messages and decided approvals. Returns the number of
    /// rows removed.
    pub async fn purge(&self, max_age: Duration) -> Result<u64, sqlx::Error> {
        let cutoff = now_ms() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut removed = 0;
        for sql in [
            "DELETE FROM processed_txns WHERE processed_at < ?",
            "DELETE FROM inbox WHERE state = 'done' AND finished_at < ?",
            "DELETE FROM outbox WHERE state != 'pending' AND finished_at < ?",
            // Decided approvals: an answer to one this old is told "no such request".
            "DELETE FROM approval_votes WHERE approval_id IN \
             (SELECT approval_id FROM approvals WHERE state != 'pending' AND decided_at < ?)",
            "DELETE FROM approval_refusals WHERE approval_id IN \
             (SELECT approval_id FROM approvals WHERE state != 'pending' AND decided_at < ?)",
            "DELETE FROM approvals WHERE state != 'pending' AND decided_at < ?",
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

/// How long a connection waits for another connection's write lock before giving up with
/// `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's busy handler: called while another connection holds the write lock, with the
/// number of times it was called for this wait; returning 0 gives up.
///
/// SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10 … ms between tries. Writes here hold the
/// lock for well under a millisecond, so those steps mostly wait for nothing and add
/// milliseconds to every contended write (the outbox's latency tail). This one starts at
/// 50 µs and doubles up to 1.6 ms. It blocks: sqlx runs each SQLite connection on a thread of
/// its own, never on the async runtime.
extern "C" fn wait_for_writer(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    let tries = u32::try_from(tries).unwrap_or(0);
    let step = Duration::from_micros(50 << tries.min(5));
    // `step * tries` is at least the time waited so far.
    if step * tries >= BUSY_TIMEOUT {
        return 0;
    }
    std::thread::sleep(step);
    1
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
    async fn a_second_writer_waits_for_the_first_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url, 2, Synchronous::Normal).await.unwrap();
        let insert = "INSERT INTO processed_txns (txn_key, processed_at) VALUES (?, 0)";
        let mut first = store.begin().await.unwrap();
        sqlx::query(insert)
            .bind("t1")
            .execute(&mut *first)
            .await
            .unwrap();
        let second = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                sqlx::query(insert).bind("t2").execute(&mut *tx).await?;
                tx.commit().await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "the second writer waits for the lock"
        );
        first.commit().await.unwrap();
        second.await.unwrap().expect("then it writes");
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
