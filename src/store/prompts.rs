//! The prompts table: the bot's messages that people answer with a reaction or a poll vote
//! (a question of an inquiry, a request for approval), found again by the event id that the
//! reaction or vote relates to.

use sqlx::{FromRow, SqliteConnection};

use super::{Store, now_ms};

/// What a prompt asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A StackStorm inquiry's question; the target is the inquiry id.
    Inquiry,
    /// A request to approve a command; the target is the approval id.
    Approval,
}

impl Kind {
    /// The value stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inquiry => "inquiry",
            Kind::Approval => "approval",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "inquiry" => Some(Kind::Inquiry),
            "approval" => Some(Kind::Approval),
            _ => None,
        }
    }
}

/// A stored prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The send transaction id of the message.
    pub txn_id: String,
    /// Its event id, once sent.
    pub event_id: Option<String>,
    /// Its room.
    pub room_id: String,
    /// What it asks about.
    pub kind: Kind,
    /// The inquiry id or approval id.
    pub target_id: String,
}

#[derive(FromRow)]
struct Stored {
    txn_id: String,
    event_id: Option<String>,
    room_id: String,
    kind: String,
    target_id: String,
}

impl TryFrom<Stored> for Prompt {
    type Error = sqlx::Error;

    fn try_from(s: Stored) -> Result<Self, Self::Error> {
        let kind = Kind::parse(&s.kind).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown prompt kind {:?}", s.kind).into())
        })?;
        Ok(Prompt {
            txn_id: s.txn_id,
            event_id: s.event_id,
            room_id: s.room_id,
            kind,
            target_id: s.target_id,
        })
    }
}

/// Records that the message queued as `txn_id` in `room_id` asks about `kind`/`target_id`.
/// Call it in the transaction that queued the message: the outbox copies the event id in when
/// it is sent, which must not happen before this row exists.
pub async fn record(
    conn: &mut SqliteConnection,
    txn_id: &str,
    room_id: &str,
    kind: Kind,
    target_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO prompts (txn_id, room_id, kind, target_id, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(txn_id)
    .bind(room_id)
    .bind(kind.as_str())
    .bind(target_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// The prompt whose message is the event `event_id` in `room_id`, if any.
pub async fn by_event(
    store: &Store,
    room_id: &str,
    event_id: &str,
) -> Result<Option<Prompt>, sqlx::Error> {
    let row: Option<Stored> = sqlx::query_as(
        "SELECT txn_id, event_id, room_id, kind, target_id FROM prompts \
         WHERE event_id = ? AND room_id = ?",
    )
    .bind(event_id)
    .bind(room_id)
    .fetch_optional(store.pool())
    .await?;
    row.map(Prompt::try_from).transpose()
}

/// Whether `room_id` has a prompt queued since `since` (unix ms) whose event id is not recorded
/// yet: it is being sent, or sent and not yet marked (the outbox records sends in batches).
pub async fn unrecorded_since(
    store: &Store,
    room_id: &str,
    since: i64,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM prompts WHERE room_id = ? AND event_id IS NULL AND created_at >= ?",
    )
    .bind(room_id)
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    Ok(n > 0)
}

/// The prompts asking about `kind`/`target_id` (usually one).
pub async fn for_target(
    conn: &mut SqliteConnection,
    kind: Kind,
    target_id: &str,
) -> Result<Vec<Prompt>, sqlx::Error> {
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT txn_id, event_id, room_id, kind, target_id FROM prompts \
         WHERE kind = ? AND target_id = ? ORDER BY created_at",
    )
    .bind(kind.as_str())
    .bind(target_id)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Prompt::try_from).collect()
}

/// Records that `user_id` was told they may not answer `kind`/`target_id`; `true` the first
/// time (tell them), `false` after (stay quiet: one refusal per person and prompt).
pub async fn refuse_once(
    store: &Store,
    kind: Kind,
    target_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO prompt_refusals (kind, target_id, user_id) VALUES (?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )
    .bind(kind.as_str())
    .bind(target_id)
    .bind(user_id)
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox;

    #[tokio::test]
    async fn a_prompt_is_found_by_its_event_id_once_the_outbox_has_sent_it() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let msg = outbox::NewMessage {
            room_id: "!r",
            txn_id: "t1",
            event_type: "m.room.message",
            content: "{}",
            relates_to_txn: None,
        };
        let seq = outbox::enqueue(&mut conn, &msg).await.unwrap();
        record(&mut conn, "t1", "!r", Kind::Inquiry, "inq1")
            .await
            .unwrap();
        drop(conn);
        assert_eq!(by_event(&store, "!r", "$q").await.unwrap(), None);
        assert!(unrecorded_since(&store, "!r", 0).await.unwrap());
        assert!(
            !unrecorded_since(&store, "!r", now_ms() + 1000)
                .await
                .unwrap()
        );
        assert!(!unrecorded_since(&store, "!other", 0).await.unwrap());
        outbox::mark_sent_many(&store, &[(seq, "$q".to_owned())])
            .await
            .unwrap();
        assert!(!unrecorded_since(&store, "!r", 0).await.unwrap());
        let prompt = by_event(&store, "!r", "$q").await.unwrap().unwrap();
        assert_eq!(
            (
                prompt.kind,
                prompt.target_id.as_str(),
                prompt.event_id.as_deref()
            ),
            (Kind::Inquiry, "inq1", Some("$q"))
        );
        assert_eq!(by_event(&store, "!other", "$q").await.unwrap(), None);
        let mut conn = store.pool().acquire().await.unwrap();
        assert_eq!(
            for_target(&mut conn, Kind::Inquiry, "inq1").await.unwrap(),
            [prompt]
        );
        assert_eq!(
            outbox::sent_event(&mut conn, "t1").await.unwrap(),
            outbox::Sent::Event("$q".into())
        );
        drop(conn);
        assert!(
            refuse_once(&store, Kind::Inquiry, "inq1", "@m:x")
                .await
                .unwrap()
        );
        assert!(
            !refuse_once(&store, Kind::Inquiry, "inq1", "@m:x")
                .await
                .unwrap()
        );
        assert!(
            refuse_once(&store, Kind::Approval, "inq1", "@m:x")
                .await
                .unwrap()
        );
    }
}
