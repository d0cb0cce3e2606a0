//! The inquiries table: StackStorm inquiries the bridge posted (or could not post), so each is
//! posted once across restarts and closed once.

use sqlx::{FromRow, SqliteConnection};

use super::{Store, now_ms};

/// A posted inquiry.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Inquiry {
    /// StackStorm's inquiry id.
    pub inquiry_id: String,
    /// Where the question was posted (`None`: nowhere to post it).
    pub room_id: Option<String>,
    /// The thread it was posted in.
    pub thread_root: Option<String>,
    /// The inquiry as StackStorm listed it (JSON).
    pub question: String,
    /// The question message's send transaction id.
    pub prompt_txn: Option<String>,
    /// `open`, `answered`, `timed_out`, `elsewhere` or `unposted`.
    pub state: String,
    /// Who answered (Matrix user id), once answered here.
    pub answered_by: Option<String>,
}

/// Where an inquiry is posted.
#[derive(Debug, Clone, Copy)]
pub struct NewInquiry<'a> {
    /// StackStorm's inquiry id.
    pub inquiry_id: &'a str,
    /// The room (`None`: nowhere, recorded as `unposted` so it is not tried again).
    pub room_id: Option<&'a str>,
    /// The thread.
    pub thread_root: Option<&'a str>,
    /// The inquiry (JSON).
    pub question: &'a str,
    /// The question message's send transaction id.
    pub prompt_txn: Option<&'a str>,
}

/// Records a posted inquiry; `false` when it was already recorded (posted before).
pub async fn insert(
    conn: &mut SqliteConnection,
    new: &NewInquiry<'_>,
) -> Result<bool, sqlx::Error> {
    let state = if new.room_id.is_some() {
        "open"
    } else {
        "unposted"
    };
    let done = sqlx::query(
        "INSERT INTO inquiries (inquiry_id, room_id, thread_root, question, prompt_txn, state, posted_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (inquiry_id) DO NOTHING",
    )
    .bind(new.inquiry_id)
    .bind(new.room_id)
    .bind(new.thread_root)
    .bind(new.question)
    .bind(new.prompt_txn)
    .bind(state)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the inquiry is known (posted, or recorded as unpostable).
pub async fn known(store: &Store, inquiry_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inquiries WHERE inquiry_id = ?")
        .bind(inquiry_id)
        .fetch_one(store.pool())
        .await?;
    Ok(n > 0)
}

/// One inquiry.
pub async fn get(store: &Store, inquiry_id: &str) -> Result<Option<Inquiry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT inquiry_id, room_id, thread_root, question, prompt_txn, state, answered_by \
         FROM inquiries WHERE inquiry_id = ?",
    )
    .bind(inquiry_id)
    .fetch_optional(store.pool())
    .await
}

/// The open inquiries of `room_id` (oldest first).
pub async fn open_in_room(store: &Store, room_id: &str) -> Result<Vec<Inquiry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT inquiry_id, room_id, thread_root, question, prompt_txn, state, answered_by \
         FROM inquiries WHERE state = 'open' AND room_id = ? ORDER BY posted_at",
    )
    .bind(room_id)
    .fetch_all(store.pool())
    .await
}

/// Every open inquiry's id.
pub async fn open_ids(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT inquiry_id FROM inquiries WHERE state = 'open' ORDER BY posted_at")
        .fetch_all(store.pool())
        .await
}

/// Closes an open inquiry (`answered`, `timed_out`, `elsewhere`); `false` when it was not open
/// (closed by someone else first), so only one closing is ever announced.
pub async fn close(
    conn: &mut SqliteConnection,
    inquiry_id: &str,
    state: &str,
    answered_by: Option<&str>,
    answer: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE inquiries SET state = ?, answered_by = ?, answer = ?, closed_at = ? \
         WHERE inquiry_id = ? AND state = 'open'",
    )
    .bind(state)
    .bind(answered_by)
    .bind(answer)
    .bind(now_ms())
    .bind(inquiry_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inquiry_is_posted_once_and_closed_once() {
        let store = Store::in_memory().await.unwrap();
        // The in-memory store has one connection: take it only for each call that needs it.
        let conn = || async { store.pool().acquire().await.unwrap() };
        let new = NewInquiry {
            inquiry_id: "i1",
            room_id: Some("!r"),
            thread_root: Some("$t"),
            question: "{}",
            prompt_txn: Some("t1"),
        };
        assert!(insert(&mut *conn().await, &new).await.unwrap());
        assert!(!insert(&mut *conn().await, &new).await.unwrap());
        assert!(known(&store, "i1").await.unwrap());
        assert_eq!(open_ids(&store).await.unwrap(), ["i1"]);
        assert_eq!(open_in_room(&store, "!r").await.unwrap().len(), 1);
        assert!(
            close(
                &mut *conn().await,
                "i1",
                "answered",
                Some("@a:x"),
                Some("{}")
            )
            .await
            .unwrap()
        );
        assert!(
            !close(&mut *conn().await, "i1", "elsewhere", None, None)
                .await
                .unwrap()
        );
        let got = get(&store, "i1").await.unwrap().unwrap();
        assert_eq!(
            (got.state.as_str(), got.answered_by.as_deref()),
            ("answered", Some("@a:x"))
        );
        assert!(open_ids(&store).await.unwrap().is_empty());
        let nowhere = NewInquiry {
            inquiry_id: "i2",
            room_id: None,
            thread_root: None,
            question: "{}",
            prompt_txn: None,
        };
        assert!(insert(&mut *conn().await, &nowhere).await.unwrap());
        assert_eq!(get(&store, "i2").await.unwrap().unwrap().state, "unposted");
    }
}
