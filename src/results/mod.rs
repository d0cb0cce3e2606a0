//! Results back into rooms: one delivery path for the StackStorm stream, the webhooks and
//! recovery.
//!
//! - Target: `whisper` + `user` → a direct chat with that person (opened once, remembered);
//!   otherwise `channel` (a room id, a room alias, or a user id for a direct chat); a channel
//!   the bot is not in is logged and counted, never a crash.
//! - When `context` is the `source_context` the bridge sent with the command, the result goes
//!   into the command's thread, and it is matched to the execution so each execution's result
//!   is posted once (an announcement arriving after a recovered result is dropped).
//! - A result longer than `[results] attach_over` is a short summary plus the whole text as a
//!   file (`execution-<id>.txt`), both in the command's thread; the outbox uploads the file
//!   (encrypted in encrypted rooms) when it sends it.
//! - Everything is queued in the outbox, in one transaction with the execution's "result
//!   posted" mark.

pub mod recovery;
pub mod render;
pub mod stream;

use futures_util::future::BoxFuture;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{
    bridge::Bridge,
    matrix::{
        self,
        file::FileMessage,
        outbox::ResultGuard,
        render::{Origin, in_thread, reply},
    },
    store::{dms, executions, rooms},
};
use sqlx::SqliteConnection;

/// A `chatops.post_message` payload (stream), or a webhook body: the same fields.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Announcement {
    /// A room id, a room alias, or a user id.
    #[serde(default)]
    pub channel: Option<String>,
    /// The message (Markdown, with hubot's `{~}` pretext separator).
    #[serde(default, deserialize_with = "string_or_json")]
    pub message: String,
    /// Who the result is for.
    #[serde(default)]
    pub user: Option<String>,
    /// Send to `user` privately.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub whisper: bool,
    /// Adapter options (`extra.matrix`).
    #[serde(default)]
    pub extra: Option<Value>,
    /// The `source_context` of the command, for threading.
    #[serde(default)]
    pub context: Option<Value>,
}

/// `message` is a string for `chatops.post_message`; anything else (e.g. an object given to
/// `core.announcement`) is shown as JSON rather than rejected.
fn string_or_json<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => format!(
            "```json\n{}\n```",
            serde_json::to_string_pretty(&other).unwrap_or_default()
        ),
    })
}

/// `whisper` as a boolean or the strings StackStorm's parameter casting produces.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "y")
        }
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    })
}

/// Where a result came from (metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The StackStorm stream.
    Stream,
    /// `POST /chatops/message` or `/hubot/st2`.
    Webhook,
    /// Fetched after a stream outage.
    Recovered,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Webhook => "webhook",
            Source::Recovered => "recovered",
        }
    }
}

/// Which execution a result belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Find it from the command's event in `context` (stream and webhooks).
    ByContext,
    /// This execution (recovery).
    Execution(String),
}

/// The claim a result's messages are queued under, taken in the outbox's commit: the one place
/// that decides whether a result was posted already.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Guard {
    /// Nothing to claim (a result for no command of ours): always queued.
    Nothing,
    /// This execution's result.
    Execution(String),
    /// The result of the execution the command `event_id` started, if the bridge started one.
    ForCommand(String),
}

impl ResultGuard for Guard {
    fn claim<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            Ok(match self {
                Guard::Nothing => true,
                Guard::Execution(id) => executions::mark_result(conn, id).await?,
                Guard::ForCommand(event_id) => !matches!(
                    executions::claim_for_event(conn, event_id).await?,
                    executions::Claim::AlreadyPosted
                ),
            })
        })
    }
}

/// Why a result was not queued.
#[derive(Debug, thiserror::Error)]
pub enum Undeliverable {
    /// Neither `channel` nor `user`.
    #[error("the result names no channel and no user")]
    NoTarget,
    /// `channel` is not a room id, alias or user id.
    #[error("channel {0:?} is not a Matrix room id, room alias or user id")]
    BadChannel(String),
    /// The alias does not exist.
    #[error("the room alias {0} does not exist")]
    UnknownAlias(String),
    /// The bot is not in the room.
    #[error("the bot is not in the room {0}")]
    NotInRoom(String),
    /// The homeserver failed (alias lookup, opening a direct chat).
    #[error("the homeserver failed: {0}")]
    Matrix(#[from] matrix::Error),
    /// The database failed.
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
}

impl Undeliverable {
    fn reason(&self) -> &'static str {
        match self {
            Undeliverable::NoTarget => "no_target",
            Undeliverable::BadChannel(_) => "bad_channel",
            Undeliverable::UnknownAlias(_) => "unknown_alias",
            Undeliverable::NotInRoom(_) => "not_in_room",
            Undeliverable::Matrix(_) => "homeserver",
            Undeliverable::Store(_) => "database",
        }
    }

    /// Whether trying again later could succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Undeliverable::Matrix(e) => e.is_transient(),
            Undeliverable::Store(_) => true,
            _ => false,
        }
    }
}

/// What delivering did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Queued as this many messages in this room.
    Queued {
        /// The room.
        room_id: OwnedRoomId,
        /// Messages queued (long results are split).
        messages: usize,
    },
    /// The execution's result was already posted (recovered earlier): dropped.
    Duplicate,
}

/// Renders `announcement` and queues it. Never panics on odd input; every refusal is logged
/// and counted by the caller-visible error.
pub async fn deliver(
    bridge: &Bridge,
    announcement: &Announcement,
    source: Source,
    claim: Claim,
) -> Result<Delivered, Undeliverable> {
    let result = deliver_inner(bridge, announcement, claim).await;
    match &result {
        Ok(Delivered::Queued { room_id, messages }) => {
            metrics::counter!("st2_matrix_results_total", "source" => source.as_str()).increment(1);
            tracing::info!(room_id = %room_id, messages, source = source.as_str(), "result queued");
        }
        Ok(Delivered::Duplicate) => {
            metrics::counter!("st2_matrix_results_duplicate_total").increment(1);
            tracing::info!(
                source = source.as_str(),
                "result already posted (recovered earlier); dropped"
            );
        }
        Err(e) => {
            metrics::counter!("st2_matrix_results_undeliverable_total", "reason" => e.reason())
                .increment(1);
            tracing::warn!(source = source.as_str(), channel = ?announcement.channel, error.message = %e, "result not delivered");
        }
    }
    result
}

async fn deliver_inner(
    bridge: &Bridge,
    announcement: &Announcement,
    claim: Claim,
) -> Result<Delivered, Undeliverable> {
    let user = announcement
        .user
        .as_deref()
        .and_then(|u| UserId::parse(u).ok());
    let (room_id, direct) = target(bridge, announcement, user.as_deref()).await?;
    if rooms::get(&bridge.store, room_id.as_str()).await?.is_none() {
        return Err(Undeliverable::NotInRoom(room_id.to_string()));
    }
    let origin = origin_in(announcement.context.as_ref(), &room_id);
    // In a direct chat the person is alone with the bot: no pill needed.
    let mention = if direct { None } else { user.as_deref() };
    let text = render::join_pretext(&announcement.message);
    let (mut contents, mut file) = if text.len() as u64 > bridge.config.results.attach_over.bytes()
    {
        let name = attachment_name(bridge, &claim, origin.as_ref()).await?;
        (
            render::render_summary(announcement, mention, &name),
            Some(FileMessage::text(&name, text)),
        )
    } else {
        (render::render(announcement, mention), None)
    };
    let no_thread = render::MatrixExtra::from_extra(announcement.extra.as_ref()).no_thread;
    if let Some(origin) = &origin {
        let place = |content: ruma::events::room::message::RoomMessageEventContent| {
            // The mentions were decided by render; placing the message must not add the
            // command's sender to every part.
            let mentions = content.mentions.clone();
            let mut placed = if no_thread {
                reply(content, origin)
            } else {
                in_thread(content, origin)
            };
            placed.mentions = mentions;
            placed
        };
        contents = contents.into_iter().map(place).collect();
        if let Some(file) = &mut file {
            file.content = place(file.content.clone());
        }
    }
    let messages = contents.len() + usize::from(file.is_some());

    let guard = match (claim, &origin) {
        (Claim::Execution(id), _) => Guard::Execution(id),
        (Claim::ByContext, Some(origin)) => Guard::ForCommand(origin.event_id.to_string()),
        (Claim::ByContext, None) => Guard::Nothing,
    };
    if !bridge
        .outbox
        .queue_result_with_file(&room_id, &contents, file, Box::new(guard))
        .await?
    {
        return Ok(Delivered::Duplicate);
    }
    Ok(Delivered::Queued { room_id, messages })
}

/// The name of a long result's file: `execution-<id>.txt` when the execution is known (the
/// one recovered, or the command's oldest without a result, which is the one the claim will
/// take), else `result.txt`.
async fn attachment_name(
    bridge: &Bridge,
    claim: &Claim,
    origin: Option<&Origin>,
) -> Result<String, sqlx::Error> {
    let id = match (claim, origin) {
        (Claim::Execution(id), _) => Some(id.clone()),
        (Claim::ByContext, Some(origin)) => {
            executions::awaiting_for_event(&bridge.store, origin.event_id.as_str()).await?
        }
        (Claim::ByContext, None) => None,
    };
    // The id goes into a file name: keep it to what StackStorm's ids are made of.
    let safe = |id: &String| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    Ok(match id.filter(safe) {
        Some(id) => format!("execution-{id}.txt"),
        None => "result.txt".to_owned(),
    })
}

/// The room to post in, and whether it is a direct chat.
async fn target(
    bridge: &Bridge,
    a: &Announcement,
    user: Option<&UserId>,
) -> Result<(OwnedRoomId, bool), Undeliverable> {
    if a.whisper
        && let Some(user) = user
    {
        return Ok((direct_chat(bridge, user).await?, true));
    }
    match a
        .channel
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        Some(channel) if channel.starts_with('!') => RoomId::parse(channel)
            .map(|r| (r, false))
            .map_err(|_| Undeliverable::BadChannel(channel.to_owned())),
        Some(channel) if channel.starts_with('#') => {
            let alias = RoomAliasId::parse(channel)
                .map_err(|_| Undeliverable::BadChannel(channel.to_owned()))?;
            Ok((resolve_alias(bridge, &alias).await?, false))
        }
        Some(channel) if channel.starts_with('@') => {
            let user = UserId::parse(channel)
                .map_err(|_| Undeliverable::BadChannel(channel.to_owned()))?;
            Ok((direct_chat(bridge, &user).await?, true))
        }
        Some(channel) => Err(Undeliverable::BadChannel(channel.to_owned())),
        None => match user {
            Some(user) => Ok((direct_chat(bridge, user).await?, true)),
            None => Err(Undeliverable::NoTarget),
        },
    }
}

async fn resolve_alias(bridge: &Bridge, alias: &RoomAliasId) -> Result<OwnedRoomId, Undeliverable> {
    let cached = bridge.rooms.resolved_alias(alias.as_str());
    if let Some(room) = cached {
        return Ok(room);
    }
    match bridge.matrix.resolve_alias(alias).await {
        Ok(room) => {
            bridge.rooms.remember_alias(alias.as_str(), room.clone());
            Ok(room)
        }
        Err(e) if e.errcode() == Some("M_NOT_FOUND") => {
            Err(Undeliverable::UnknownAlias(alias.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bot's direct chat with `user`, opened (once) if needed.
pub async fn direct_chat(bridge: &Bridge, user: &UserId) -> Result<OwnedRoomId, Undeliverable> {
    let _guard = bridge.rooms.dm_lock.lock().await;
    if let Some(room) = dms::get(&bridge.store, user.as_str()).await?
        && let Ok(room) = RoomId::parse(room)
    {
        return Ok(room);
    }
    let room = bridge
        .matrix
        .create_direct_chat(user, bridge.e2ee.is_some())
        .await?;
    dms::put(&bridge.store, user.as_str(), room.as_str()).await?;
    rooms::joined(&bridge.store, room.as_str(), Some(user.as_str()), true).await?;
    if let Some(e2ee) = &bridge.e2ee {
        e2ee.record_encrypted(&bridge.store, &room).await?;
    }
    bridge.mark_direct(&room);
    tracing::info!(user = %user, room_id = %room, "opened a direct chat");
    Ok(room)
}

/// The command a result answers, when `context` is the `source_context` the bridge sent and
/// the result goes to that same room.
fn origin_in(context: Option<&Value>, room: &RoomId) -> Option<Origin> {
    let context = context?;
    let field = |k: &str| context.get(k).and_then(Value::as_str);
    if field("room_id")? != room.as_str() {
        return None;
    }
    Some(Origin {
        room_id: room.to_owned(),
        event_id: OwnedEventId::try_from(field("event_id")?).ok()?,
        sender: OwnedUserId::try_from(field("sender")?).ok()?,
        thread_root: field("thread_root").and_then(|t| OwnedEventId::try_from(t).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        matrix::outbox::Outbox,
        store::{Store, now_ms},
    };
    use ruma::events::room::message::RoomMessageEventContent;

    #[tokio::test]
    async fn a_result_is_queued_once_per_execution_however_it_is_claimed() {
        let store = Store::in_memory().await.unwrap();
        let execution = executions::Execution {
            execution_id: "e1".into(),
            room_id: "!r:x".into(),
            event_id: "$cmd".into(),
            thread_root: None,
            sender: "@a:x".into(),
            alias_ref: "p.a".into(),
            created_at: now_ms(),
        };
        let mut tx = store.begin().await.unwrap();
        executions::record(&mut tx, &execution).await.unwrap();
        tx.commit().await.unwrap();
        let outbox = Outbox::new(store.clone());
        let room = RoomId::parse("!r:x").unwrap();
        let message = [RoomMessageEventContent::notice_plain("done")];

        let claims = [
            Guard::Execution("e1".into()),
            Guard::ForCommand("$cmd".into()),
            Guard::Nothing,
            Guard::ForCommand("$unrelated".into()),
        ];
        let queued = futures_util::future::join_all(
            claims.map(|claim| outbox.queue_result(&room, &message, Box::new(claim))),
        )
        .await;

        let queued: Vec<bool> = queued.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            queued,
            [true, false, true, true],
            "one result per execution"
        );
        assert_eq!(
            crate::store::outbox::stats(&store).await.unwrap().pending,
            3
        );
    }

    use serde_json::json;

    #[test]
    fn announcements_parse_leniently() {
        let a: Announcement =
            serde_json::from_value(json!({"channel": "!r:x", "message": "hi", "whisper": "true"}))
                .unwrap();
        assert!(a.whisper);
        let a: Announcement =
            serde_json::from_value(json!({"message": {"k": 1}, "user": null, "extra": null}))
                .unwrap();
        assert!(a.message.contains("\"k\": 1"));
        assert!(!a.whisper);
    }

    #[test]
    fn the_origin_comes_from_our_source_context_in_the_same_room() {
        let room = RoomId::parse("!r:x").unwrap();
        let context =
            json!({"room_id": "!r:x", "event_id": "$c", "thread_root": null, "sender": "@a:x"});
        let origin = origin_in(Some(&context), &room).unwrap();
        assert_eq!((origin.event_id.as_str(), origin.thread_root), ("$c", None));
        assert_eq!(
            origin_in(Some(&context), &RoomId::parse("!other:x").unwrap()),
            None
        );
        assert_eq!(origin_in(Some(&json!({"id": "slack-ts"})), &room), None);
        assert_eq!(origin_in(None, &room), None);
    }
}
