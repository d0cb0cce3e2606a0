//! Approvals: commands waiting for other people's approval, who approved them, who was told
//! their answer did not count, and the approval rules rooms have of their own.
//!
//! Every change of state is a conditional update (`WHERE state = 'pending'`) inside the
//! caller's transaction, so an approval is decided once however many answers, commands and
//! the expiry task race for it.

use sqlx::{FromRow, SqliteConnection};

use super::{Store, now_ms};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for approvers.
    Pending,
    /// Approved: the command was handed to the inbox to run.
    Approved,
    /// Rejected: the command does not run.
    Rejected,
    /// Nobody decided in time: the command does not run.
    Expired,
}

impl State {
    /// The value stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "approved" => State::Approved,
            "rejected" => State::Rejected,
            "expired" => State::Expired,
            _ => return None,
        })
    }
}

/// A request for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Its short id.
    pub approval_id: String,
    /// The command's room.
    pub room_id: String,
    /// The command's event.
    pub event_id: String,
    /// The command's thread, when it was in one.
    pub thread_root: Option<String>,
    /// Who sent the command.
    pub requester: String,
    /// The alias the command matched.
    pub alias_ref: String,
    /// What will run (Markdown: the alias and the parameters), shown in the request and its
    /// edits.
    pub summary: String,
    /// The command's event JSON (decrypted, in an encrypted room).
    pub command_event: String,
    /// The approver rules, as written in the config or the admin room.
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    pub required: u32,
    /// Send transaction id of the request message.
    pub prompt_txn: String,
    /// Where it stands.
    pub state: State,
    /// When it was asked (unix ms).
    pub created_at: i64,
    /// When it expires (unix ms).
    pub expires_at: i64,
    /// Who decided: the rejecter, or the approvers (comma-separated).
    pub decided_by: Option<String>,
    /// A rejection's reason.
    pub reason: Option<String>,
}

#[derive(FromRow)]
struct Stored {
    approval_id: String,
    room_id: String,
    event_id: String,
    thread_root: Option<String>,
    requester: String,
    alias_ref: String,
    summary: String,
    command_event: String,
    approvers: String,
    required: i64,
    prompt_txn: String,
    state: String,
    created_at: i64,
    expires_at: i64,
    decided_by: Option<String>,
    reason: Option<String>,
}

/// The columns [`Stored`] reads, as a literal (sqlx only takes static SQL).
macro_rules! columns {
    () => {
        "approval_id, room_id, event_id, thread_root, requester, alias_ref, summary, \
         command_event, approvers, required, prompt_txn, state, created_at, expires_at, \
         decided_by, reason"
    };
}

impl TryFrom<Stored> for Approval {
    type Error = sqlx::Error;

    fn try_from(s: Stored) -> Result<Self, Self::Error> {
        let decode = |what: String| sqlx::Error::Decode(what.into());
        let state = State::parse(&s.state)
            .ok_or_else(|| decode(format!("unknown approval state {:?}", s.state)))?;
        let approvers = serde_json::from_str(&s.approvers)
            .map_err(|e| decode(format!("approvers of {}: {e}", s.approval_id)))?;
        Ok(Approval {
            approval_id: s.approval_id,
            room_id: s.room_id,
            event_id: s.event_id,
            thread_root: s.thread_root,
            requester: s.requester,
            alias_ref: s.alias_ref,
            summary: s.summary,
            command_event: s.command_event,
            approvers,
            required: u32::try_from(s.required).unwrap_or(1),
            prompt_txn: s.prompt_txn,
            state,
            created_at: s.created_at,
            expires_at: s.expires_at,
            decided_by: s.decided_by,
            reason: s.reason,
        })
    }
}

/// Stores a new pending approval. `false` when its id is taken (pick another) or its command
/// already has one (see [`by_command`]).
pub async fn create(conn: &mut SqliteConnection, a: &Approval) -> Result<bool, sqlx::Error> {
    let approvers =
        serde_json::to_string(&a.approvers).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let n = sqlx::query(
        "INSERT OR IGNORE INTO approvals (approval_id, room_id, event_id, thread_root, requester, \
         alias_ref, summary, command_event, approvers, required, prompt_txn, state, created_at, \
         expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(&a.approval_id)
    .bind(&a.room_id)
    .bind(&a.event_id)
    .bind(&a.thread_root)
    .bind(&a.requester)
    .bind(&a.alias_ref)
    .bind(&a.summary)
    .bind(&a.command_event)
    .bind(approvers)
    .bind(i64::from(a.required))
    .bind(&a.prompt_txn)
    .bind(a.created_at)
    .bind(a.expires_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The approval `approval_id`.
pub async fn get(
    conn: &mut SqliteConnection,
    approval_id: &str,
) -> Result<Option<Approval>, sqlx::Error> {
    let row: Option<Stored> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM approvals WHERE approval_id = ?"
    ))
    .bind(approval_id)
    .fetch_optional(conn)
    .await?;
    row.map(Approval::try_from).transpose()
}

/// The approval asked for the command `event_id` in `room_id`.
pub async fn by_command(
    conn: &mut SqliteConnection,
    room_id: &str,
    event_id: &str,
) -> Result<Option<Approval>, sqlx::Error> {
    let row: Option<Stored> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM approvals WHERE room_id = ? AND event_id = ?"
    ))
    .bind(room_id)
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    row.map(Approval::try_from).transpose()
}

/// Records `user`'s approval; returns the number of distinct approvals now.
pub async fn add_vote(
    conn: &mut SqliteConnection,
    approval_id: &str,
    user: &str,
) -> Result<u32, sqlx::Error> {
    sqlx::query(
        "INSERT OR IGNORE INTO approval_votes (approval_id, user_id, voted_at) VALUES (?, ?, ?)",
    )
    .bind(approval_id)
    .bind(user)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(votes(conn, approval_id).await?.len() as u32)
}

/// Who approved, in the order they did.
pub async fn votes(
    conn: &mut SqliteConnection,
    approval_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM approval_votes WHERE approval_id = ? ORDER BY voted_at, user_id",
    )
    .bind(approval_id)
    .fetch_all(conn)
    .await
}

/// Moves a pending approval to `state`; `false` when it was no longer pending (decided by
/// someone or something else first).
pub async fn decide(
    conn: &mut SqliteConnection,
    approval_id: &str,
    state: State,
    decided_by: Option<&str>,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, reason = ? \
         WHERE approval_id = ? AND state = 'pending'",
    )
    .bind(state.as_str())
    .bind(now_ms())
    .bind(decided_by)
    .bind(reason)
    .bind(approval_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Claims the right to tell `user` why their answer to `approval_id` did not count: `true`
/// the first time only.
pub async fn claim_refusal(
    conn: &mut SqliteConnection,
    approval_id: &str,
    user: &str,
) -> Result<bool, sqlx::Error> {
    let n =
        sqlx::query("INSERT OR IGNORE INTO approval_refusals (approval_id, user_id) VALUES (?, ?)")
            .bind(approval_id)
            .bind(user)
            .execute(conn)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Pending approvals whose deadline is at or before `now` (unix ms).
pub async fn overdue(conn: &mut SqliteConnection, now: i64) -> Result<Vec<Approval>, sqlx::Error> {
    let rows: Vec<Stored> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM approvals WHERE state = 'pending' AND expires_at <= ? ORDER BY expires_at"
    ))
    .bind(now)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Approval::try_from).collect()
}

/// The earliest deadline of a pending approval.
pub async fn next_expiry(store: &Store) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MIN(expires_at) FROM approvals WHERE state = 'pending'")
        .fetch_one(store.pool())
        .await
}

/// A room's own approval rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRule {
    /// Its number, for `rooms approvals <room> remove <n>`.
    pub rule_id: i64,
    /// Alias globs.
    pub aliases: Vec<String>,
    /// Approver rules.
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    pub required: u32,
    /// How long a request waits (ms).
    pub timeout_ms: i64,
}

/// `room_id`'s own approval rules, oldest first.
pub async fn room_rules(store: &Store, room_id: &str) -> Result<Vec<RoomRule>, sqlx::Error> {
    let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT rule_id, aliases, approvers, required, timeout_ms FROM room_approval_rules \
         WHERE room_id = ? ORDER BY rule_id",
    )
    .bind(room_id)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter()
        .map(|(rule_id, aliases, approvers, required, timeout_ms)| {
            let list = |json: &str| {
                serde_json::from_str::<Vec<String>>(json).map_err(|e| {
                    sqlx::Error::Decode(format!("room approval rule {rule_id}: {e}").into())
                })
            };
            Ok(RoomRule {
                rule_id,
                aliases: list(&aliases)?,
                approvers: list(&approvers)?,
                required: u32::try_from(required).unwrap_or(1),
                timeout_ms,
            })
        })
        .collect()
}

/// Adds an approval rule to `room_id`; returns its number.
pub async fn add_room_rule(
    store: &Store,
    room_id: &str,
    aliases: &[String],
    approvers: &[String],
    required: u32,
    timeout_ms: i64,
) -> Result<i64, sqlx::Error> {
    let json =
        |list: &[String]| serde_json::to_string(list).map_err(|e| sqlx::Error::Encode(e.into()));
    sqlx::query_scalar(
        "INSERT INTO room_approval_rules (room_id, aliases, approvers, required, timeout_ms) \
         VALUES (?, ?, ?, ?, ?) RETURNING rule_id",
    )
    .bind(room_id)
    .bind(json(aliases)?)
    .bind(json(approvers)?)
    .bind(i64::from(required))
    .bind(timeout_ms)
    .fetch_one(store.pool())
    .await
}

/// Removes approval rule `rule_id` of `room_id`; returns whether it existed.
pub async fn remove_room_rule(
    store: &Store,
    room_id: &str,
    rule_id: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("DELETE FROM room_approval_rules WHERE room_id = ? AND rule_id = ?")
        .bind(room_id)
        .bind(rule_id)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Removes every approval rule of `room_id` (the bot left it).
pub async fn forget_room(store: &Store, room_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM room_approval_rules WHERE room_id = ?")
        .bind(room_id)
        .execute(store.pool())
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(id: &str, event: &str, expires_at: i64) -> Approval {
        Approval {
            approval_id: id.into(),
            room_id: "!r".into(),
            event_id: event.into(),
            thread_root: Some("$root".into()),
            requester: "@alice:x".into(),
            alias_ref: "deploy.web".into(),
            summary: "`deploy.web`".into(),
            command_event: "{}".into(),
            approvers: vec!["power>=50".into()],
            required: 2,
            prompt_txn: format!("t-{id}"),
            state: State::Pending,
            created_at: 1,
            expires_at,
            decided_by: None,
            reason: None,
        }
    }

    #[tokio::test]
    async fn an_approval_is_stored_once_per_command_and_read_back() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(
            create(&mut conn, &approval("abc234", "$c", 10))
                .await
                .unwrap()
        );
        assert!(
            !create(&mut conn, &approval("xyz234", "$c", 10))
                .await
                .unwrap(),
            "same command"
        );
        assert!(
            !create(&mut conn, &approval("abc234", "$d", 10))
                .await
                .unwrap(),
            "same id"
        );
        let a = get(&mut conn, "abc234").await.unwrap().unwrap();
        assert_eq!(a, approval("abc234", "$c", 10));
        assert_eq!(by_command(&mut conn, "!r", "$c").await.unwrap(), Some(a));
        assert_eq!(get(&mut conn, "nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn votes_count_distinct_people_and_a_decision_is_taken_once() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        create(&mut conn, &approval("abc234", "$c", 10))
            .await
            .unwrap();
        assert_eq!(add_vote(&mut conn, "abc234", "@bob:x").await.unwrap(), 1);
        assert_eq!(add_vote(&mut conn, "abc234", "@bob:x").await.unwrap(), 1);
        assert_eq!(add_vote(&mut conn, "abc234", "@carol:x").await.unwrap(), 2);
        assert_eq!(
            votes(&mut conn, "abc234").await.unwrap(),
            ["@bob:x", "@carol:x"]
        );
        assert!(
            decide(
                &mut conn,
                "abc234",
                State::Approved,
                Some("@bob:x, @carol:x"),
                None
            )
            .await
            .unwrap()
        );
        assert!(
            !decide(&mut conn, "abc234", State::Expired, None, None)
                .await
                .unwrap()
        );
        let a = get(&mut conn, "abc234").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.decided_by.as_deref()),
            (State::Approved, Some("@bob:x, @carol:x"))
        );
        assert!(claim_refusal(&mut conn, "abc234", "@eve:x").await.unwrap());
        assert!(!claim_refusal(&mut conn, "abc234", "@eve:x").await.unwrap());
    }

    #[tokio::test]
    async fn overdue_and_next_expiry_see_only_pending_ones() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        create(&mut conn, &approval("aaaaaa", "$a", 100))
            .await
            .unwrap();
        create(&mut conn, &approval("bbbbbb", "$b", 50))
            .await
            .unwrap();
        create(&mut conn, &approval("cccccc", "$c", 10))
            .await
            .unwrap();
        decide(
            &mut conn,
            "cccccc",
            State::Rejected,
            Some("@bob:x"),
            Some("no"),
        )
        .await
        .unwrap();
        drop(conn);
        assert_eq!(next_expiry(&store).await.unwrap(), Some(50));
        let mut conn = store.pool().acquire().await.unwrap();
        let due: Vec<String> = overdue(&mut conn, 60)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.approval_id)
            .collect();
        assert_eq!(due, ["bbbbbb"]);
    }

    #[tokio::test]
    async fn decided_approvals_are_purged_and_pending_ones_kept() {
        let store = Store::in_memory().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        create(&mut conn, &approval("aaaaaa", "$a", i64::MAX))
            .await
            .unwrap();
        create(&mut conn, &approval("bbbbbb", "$b", i64::MAX))
            .await
            .unwrap();
        add_vote(&mut conn, "bbbbbb", "@bob:x").await.unwrap();
        decide(&mut conn, "bbbbbb", State::Approved, Some("@bob:x"), None)
            .await
            .unwrap();
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store.purge(std::time::Duration::ZERO).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        assert!(get(&mut conn, "aaaaaa").await.unwrap().is_some());
        assert!(get(&mut conn, "bbbbbb").await.unwrap().is_none());
        assert!(votes(&mut conn, "bbbbbb").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn room_rules_are_added_listed_and_removed() {
        let store = Store::in_memory().await.unwrap();
        let id = add_room_rule(
            &store,
            "!r",
            &["deploy.*".into()],
            &["power>=50".into()],
            1,
            60_000,
        )
        .await
        .unwrap();
        add_room_rule(&store, "!other", &["x.*".into()], &["@a:x".into()], 2, 1000)
            .await
            .unwrap();
        let rules = room_rules(&store, "!r").await.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            (
                rules[0].rule_id,
                rules[0].aliases.as_slice(),
                rules[0].timeout_ms
            ),
            (id, &["deploy.*".to_owned()][..], 60_000)
        );
        assert!(!remove_room_rule(&store, "!other", id).await.unwrap());
        assert!(remove_room_rule(&store, "!r", id).await.unwrap());
        assert!(room_rules(&store, "!r").await.unwrap().is_empty());
        forget_room(&store, "!other").await.unwrap();
        assert!(room_rules(&store, "!other").await.unwrap().is_empty());
    }
}
