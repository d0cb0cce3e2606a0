//! Storing one pushed transaction: its dedupe key and the events that need work, in a single
//! SQLite transaction, so a crash leaves either all of it or none of it.

use super::{Store, inbox::NewEvent, now_ms};

/// What storing a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This transaction was stored before: nothing changed.
    Duplicate,
    /// Stored; `new_events` inbox rows were added (events already in the inbox are skipped).
    Stored {
        /// Rows added to the inbox.
        new_events: u64,
    },
}

/// Records `txn_key` as processed and adds `events` to the inbox, atomically.
pub async fn store_transaction(
    store: &Store,
    txn_key: &str,
    events: &[NewEvent<'_>],
) -> Result<Outcome, sqlx::Error> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let inserted =
        sqlx::query("INSERT OR IGNORE INTO processed_txns (txn_key, processed_at) VALUES (?, ?)")
            .bind(txn_key)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if inserted == 0 {
        // Dropping `tx` rolls back; nothing was written anyway.
        return Ok(Outcome::Duplicate);
    }
    let mut new_events = 0;
    for event in events {
        new_events += sqlx::query(
            "INSERT OR IGNORE INTO inbox (event_id, room_id, kind, event, received_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(event.event_id)
        .bind(event.room_id)
        .bind(event.kind.as_str())
        .bind(event.event)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(Outcome::Stored { new_events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::inbox::{self, Kind};

    fn event<'a>(id: &'a str) -> NewEvent<'a> {
        NewEvent {
            event_id: id,
            room_id: "!r:x",
            kind: Kind::Command,
            event: "{}",
        }
    }

    #[tokio::test]
    async fn a_transaction_is_stored_once() {
        let store = Store::in_memory().await.unwrap();
        let first = store_transaction(&store, "k1", &[event("$a"), event("$b")])
            .await
            .unwrap();
        assert_eq!(first, Outcome::Stored { new_events: 2 });
        let again = store_transaction(&store, "k1", &[event("$a"), event("$b")])
            .await
            .unwrap();
        assert_eq!(again, Outcome::Duplicate);
    }

    #[tokio::test]
    async fn an_event_seen_in_another_transaction_is_not_queued_twice() {
        let store = Store::in_memory().await.unwrap();
        store_transaction(&store, "k1", &[event("$a")])
            .await
            .unwrap();
        let second = store_transaction(&store, "k2", &[event("$a"), event("$c")])
            .await
            .unwrap();
        assert_eq!(second, Outcome::Stored { new_events: 1 });
        assert_eq!(inbox::open_rooms(&store, 10).await.unwrap().len(), 1);
    }
}
