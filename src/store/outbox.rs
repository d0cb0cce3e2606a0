//! The outbox table: messages queued for the homeserver, each with the transaction id chosen
//! when it was queued.

use sqlx::{FromRow, SqliteConnection};

use super::{Store, now_ms};

/// A message to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// Target room.
    pub room_id: &'a str,
    /// Globally unique send transaction id.
    pub txn_id: &'a str,
    /// Event type, e.g. `m.room.message`.
    pub event_type: &'a str,
    /// Event content JSON.
    pub content: &'a str,
    /// The send transaction id of the queued event this one relates to: its event id is put
    /// into `m.relates_to.event_id` when this one is sent.
    pub relates_to_txn: Option<&'a str>,
}

/// A queued message.
#[derive(Debug, Clone, FromRow)]
pub struct Row {
    /// Queue order.
    pub seq: i64,
    /// Target room.
    pub room_id: String,
    /// Send transaction id.
    pub txn_id: String,
    /// Event type.
    pub event_type: String,
    /// Event content JSON.
    pub content: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Earliest time of the next attempt (unix ms).
    pub next_attempt_at: i64,
    /// When it was queued (unix ms).
    pub created_at: i64,
    /// See [`NewMessage::relates_to_txn`].
    pub relates_to_txn: Option<String>,
    /// Whether it carries a file (in `outbox_files`), uploaded when it is sent.
    pub file: bool,
    /// Whether the homeserver may have it already (an attempt got no answer, or was cut short
    /// by a crash): look before sending it again.
    pub in_doubt: bool,
}

/// Queues a message; returns its sequence number.
pub async fn enqueue(
    conn: &mut SqliteConnection,
    msg: &NewMessage<'_>,
) -> Result<i64, sqlx::Error> {
    let now = now_ms();
    sqlx::query_scalar(
        "INSERT INTO outbox (room_id, txn_id, event_type, content, relates_to_txn, next_attempt_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(msg.room_id)
    .bind(msg.txn_id)
    .bind(msg.event_type)
    .bind(msg.content)
    .bind(msg.relates_to_txn)
    .bind(now)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// The oldest `limit` pending messages, in queue order.
pub async fn pending(store: &Store, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, room_id, txn_id, event_type, content, attempts, next_attempt_at, created_at, \
         relates_to_txn, EXISTS (SELECT 1 FROM outbox_files f WHERE f.txn_id = outbox.txn_id) AS file, \
         in_doubt FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await
}

/// The bytes of a file a queued message carries.
#[derive(Debug, Clone, FromRow)]
pub struct File {
    /// The file.
    pub data: Vec<u8>,
    /// Its media type, e.g. `text/plain; charset=utf-8`.
    pub mimetype: String,
    /// `None` until uploaded; then `plain` or `encrypted`: how the message refers to it.
    pub uploaded: Option<String>,
}

/// Stores the file of the message queued as `txn_id`, in the caller's transaction (the one
/// that queues the message).
pub async fn attach(
    conn: &mut SqliteConnection,
    txn_id: &str,
    data: &[u8],
    mimetype: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox_files (txn_id, data, mimetype) VALUES (?, ?, ?)")
        .bind(txn_id)
        .bind(data)
        .bind(mimetype)
        .execute(conn)
        .await
        .map(drop)
}

/// The file of the message queued as `txn_id`, while that message is pending.
pub async fn file(store: &Store, txn_id: &str) -> Result<Option<File>, sqlx::Error> {
    sqlx::query_as("SELECT data, mimetype, uploaded FROM outbox_files WHERE txn_id = ?")
        .bind(txn_id)
        .fetch_optional(store.pool())
        .await
}

/// Records an upload: the message's `content` now refers to the uploaded file, `how` (`plain`
/// or `encrypted`). One transaction, so a retry sends the same upload.
pub async fn file_uploaded(
    store: &Store,
    seq: i64,
    txn_id: &str,
    content: &str,
    how: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE outbox SET content = ? WHERE seq = ?")
        .bind(content)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE outbox_files SET uploaded = ? WHERE txn_id = ?")
        .bind(how)
        .bind(txn_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The earliest `next_attempt_at` of any pending message.
pub async fn next_due(store: &Store) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")
        .fetch_one(store.pool())
        .await
}

/// What became of a queued event, looked up by its send transaction id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Sent; its event id.
    Event(String),
    /// Still queued.
    Pending,
    /// Given up on (or no longer known: finished rows are purged after a while).
    Gone,
}

/// What became of the event queued with `txn_id`.
pub async fn sent_event(conn: &mut SqliteConnection, txn_id: &str) -> Result<Sent, sqlx::Error> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT state, event_id FROM outbox WHERE txn_id = ?")
            .bind(txn_id)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        Some((state, _)) if state == "pending" => Sent::Pending,
        Some((_, Some(event_id))) => Sent::Event(event_id),
        _ => Sent::Gone,
    })
}

/// Records several successful sends in one transaction.
pub async fn mark_sent_many(store: &Store, sent: &[(i64, String)]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    for (seq, event_id) in sent {
        sqlx::query("UPDATE outbox SET state = 'sent', event_id = ?, attempts = attempts + 1, finished_at = ? WHERE seq = ?")
            .bind(event_id)
            .bind(now)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Records a failed attempt to retry at `next_attempt_at`; `in_doubt`: whether the homeserver
/// may have acted on it anyway.
pub async fn mark_retry(
    store: &Store,
    seq: i64,
    next_attempt_at: i64,
    error: &str,
    in_doubt: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, in_doubt = ? WHERE seq = ?")
        .bind(next_attempt_at)
        .bind(error)
        .bind(in_doubt)
        .bind(seq)
        .execute(store.pool())
        .await
        .map(drop)
}

/// Marks `room_id`'s pending messages up to `upto_seq` in doubt, committed before the sender
/// works through them: a crash from here on leaves them to be looked up, not blindly re-sent.
pub async fn mark_in_doubt(store: &Store, room_id: &str, upto_seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET in_doubt = 1 WHERE room_id = ? AND state = 'pending' AND seq <= ? AND in_doubt = 0",
    )
    .bind(room_id)
    .bind(upto_seq)
    .execute(store.pool())
    .await
    .map(drop)
}

/// Clears the doubt of `room_id`'s pending messages after `after_seq` up to `upto_seq`: the
/// sender stopped before trying them, and they were not on the homeserver when it started.
pub async fn clear_in_doubt(
    store: &Store,
    room_id: &str,
    after_seq: i64,
    upto_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET in_doubt = 0 WHERE room_id = ? AND state = 'pending' AND seq > ? AND seq <= ? AND in_doubt = 1",
    )
    .bind(room_id)
    .bind(after_seq)
    .bind(upto_seq)
    .execute(store.pool())
    .await
    .map(drop)
}

/// The event id of the newest message of `room_id` recorded as sent before `before_seq`: a
/// look-up of messages queued after it can stop there.
pub async fn last_sent_before(
    store: &Store,
    room_id: &str,
    before_seq: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT event_id FROM outbox WHERE room_id = ? AND seq < ? AND state = 'sent' \
         AND event_id IS NOT NULL ORDER BY seq DESC LIMIT 1",
    )
    .bind(room_id)
    .bind(before_seq)
    .fetch_optional(store.pool())
    .await
}

/// Gives up on a message.
pub async fn mark_failed(store: &Store, seq: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?, finished_at = ? WHERE seq = ?")
        .bind(error)
        .bind(now_ms())
        .bind(seq)
        .execute(store.pool())
        .await
        .map(drop)
}

/// Queue statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow)]
pub struct Stats {
    /// Messages waiting to be sent.
    pub pending: i64,
    /// Messages given up on (kept until purged).
    pub failed: i64,
}

/// Counts pending and failed messages.
pub async fn stats(store: &Store) -> Result<Stats, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(state = 'pending'), 0) AS pending, COALESCE(SUM(state = 'failed'), 0) AS failed \
         FROM outbox WHERE state != 'sent'",
    )
    .fetch_one(store.pool())
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn queue(store: &Store, room: &str, txn: &str) -> i64 {
        let msg = NewMessage {
            room_id: room,
            txn_id: txn,
            event_type: "m.room.message",
            content: "{}",
            relates_to_txn: None,
        };
        enqueue(&mut store.pool().acquire().await.unwrap(), &msg)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn messages_move_from_pending_to_sent_or_failed() {
        let store = Store::in_memory().await.unwrap();
        let a = queue(&store, "!r", "t1").await;
        let b = queue(&store, "!r", "t2").await;
        let c = queue(&store, "!s", "t3").await;
        assert_eq!(
            pending(&store, 10)
                .await
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [a, b, c]
        );
        mark_sent_many(&store, &[(a, "$e".to_owned())])
            .await
            .unwrap();
        mark_retry(&store, b, i64::MAX, "429", false).await.unwrap();
        mark_failed(&store, c, "403").await.unwrap();
        let left = pending(&store, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].seq, left[0].attempts), (b, 1));
        assert_eq!(next_due(&store).await.unwrap(), Some(i64::MAX));
        assert_eq!(
            stats(&store).await.unwrap(),
            Stats {
                pending: 1,
                failed: 1
            }
        );
    }

    #[tokio::test]
    async fn a_transaction_id_is_never_reused() {
        let store = Store::in_memory().await.unwrap();
        queue(&store, "!r", "same").await;
        let msg = NewMessage {
            room_id: "!r",
            txn_id: "same",
            event_type: "m.room.message",
            content: "{}",
            relates_to_txn: None,
        };
        assert!(
            enqueue(&mut store.pool().acquire().await.unwrap(), &msg)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_file_stays_until_its_message_is_done_and_its_upload_is_recorded() {
        let store = Store::in_memory().await.unwrap();
        let seq = queue(&store, "!r", "with-file").await;
        let other = queue(&store, "!r", "plain").await;
        let mut conn = store.pool().acquire().await.unwrap();
        attach(&mut conn, "with-file", b"the bytes", "text/plain")
            .await
            .unwrap();
        drop(conn);

        let rows = pending(&store, 10).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.seq, r.file)).collect::<Vec<_>>(),
            [(seq, true), (other, false)]
        );
        file_uploaded(&store, seq, "with-file", r#"{"url":"mxc://x/y"}"#, "plain")
            .await
            .unwrap();
        let file = file(&store, "with-file").await.unwrap().unwrap();
        assert_eq!(
            (file.data.as_slice(), file.uploaded.as_deref()),
            (&b"the bytes"[..], Some("plain"))
        );
        assert_eq!(
            pending(&store, 1).await.unwrap()[0].content,
            r#"{"url":"mxc://x/y"}"#
        );

        mark_sent_many(&store, &[(seq, "$e".into())]).await.unwrap();
        assert!(super::file(&store, "with-file").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn empty_queue_has_no_due_time_and_zero_stats() {
        let store = Store::in_memory().await.unwrap();
        assert_eq!(next_due(&store).await.unwrap(), None);
        assert_eq!(stats(&store).await.unwrap(), Stats::default());
    }
}
