//! StackStorm inquiries asked in rooms and answered there.
//!
//! A workflow that pauses on `core.ask` creates an inquiry. The watcher ([`watch`]) learns of
//! it from the stream (a `core.ask` execution going `pending`) or from listing the pending
//! inquiries (after every stream (re)connection and every `[inquiries] poll_interval`), and
//! [`post`] asks it once (recorded, across restarts): in the thread of the command whose
//! workflow asked, else in the room its `route` names, else in `[inquiries] default_room`, else
//! in the admin room. People answer with ✅/❌ (one yes/no property), a poll vote (one `enum`
//! property) or `!st2 respond`; the answer is sent with the person's own StackStorm
//! credential, so StackStorm's `users`, roles and RBAC apply to them. The question is then
//! edited to say who answered what, or that it timed out or was answered elsewhere.

pub mod question;
pub mod watch;

use ruma::{
    OwnedEventId, OwnedRoomId, RoomId,
    events::{
        OriginalMessageLikeEvent,
        room::message::{Relation, RoomMessageEventContent},
    },
};
use serde_json::{Value, json};

use crate::{
    identity,
    matrix::{
        poll,
        render::{self, Origin, one_line},
    },
    permissions::Level,
    prompts::Response,
    st2::{self, types::Inquiry},
    state::AppState,
    store::{
        self, Tx, inbox,
        inquiries::{self as stored, NewInquiry},
        prompts::{self, Kind, Prompt},
    },
};

/// Where an inquiry is asked.
#[derive(Debug, Clone)]
struct Place {
    room: OwnedRoomId,
    /// The command whose workflow asked: the question goes in its thread, mentioning its
    /// sender.
    command: Option<Origin>,
    /// The top workflow's action, shown with the question.
    action: Option<String>,
}

/// Posts `inquiry` unless it was posted (or found unpostable) before.
pub async fn post(bridge: &AppState, inquiry: &Inquiry) -> anyhow::Result<()> {
    if stored::known(&bridge.store, &inquiry.id).await? {
        return Ok(());
    }
    let place = find_place(bridge, inquiry).await?;
    let question_json = serde_json::to_string(inquiry)?;
    let mut tx = bridge.store.begin().await?;
    let Some(place) = place else {
        tracing::warn!(inquiry_id = %inquiry.id, "an inquiry has no room to be asked in: it belongs to no command from a room, its route is not a room the bot is in, and there is no [inquiries] default_room or admin room");
        stored::insert(
            &mut tx,
            &NewInquiry {
                inquiry_id: &inquiry.id,
                room_id: None,
                thread_root: None,
                question: &question_json,
                prompt_txn: None,
            },
        )
        .await?;
        tx.commit().await?;
        return Ok(());
    };
    let prefix = &bridge.config.bridge.command_prefix;
    let text = question::render(inquiry, prefix, place.action.as_deref());
    let mut content = render::notice_markdown(&text);
    if let Some(origin) = &place.command {
        content = render::in_thread(content, origin);
    }
    let room = place.room.as_ref();
    let txn = queue_message(bridge, &mut tx, room, &content).await?;
    prompts::record(&mut tx, &txn, room.as_str(), Kind::Inquiry, &inquiry.id).await?;
    match question::form(&inquiry.schema) {
        question::Form::YesNo { .. } => {
            for key in ["✅", "❌"] {
                let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "", "key": key}});
                bridge
                    .outbox
                    .queue_event_in(&mut tx, room, "m.reaction", &reaction, Some(&txn))
                    .await?;
            }
        }
        question::Form::Choice { values, .. } => {
            let choices = question::choices(&values);
            let fallback = format!(
                "{} — {} (or answer with `{prefix} respond {}`)",
                question::poll_question(inquiry),
                choices
                    .iter()
                    .map(|c| c.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" / "),
                inquiry.id
            );
            let mut start = poll::start(&question::poll_question(inquiry), &choices, &fallback);
            if let Some(origin) = &place.command {
                let root = origin.thread_root.as_ref().unwrap_or(&origin.event_id);
                start["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root,
                    "is_falling_back": true, "m.in_reply_to": {"event_id": origin.event_id}});
            }
            let poll_txn = bridge
                .outbox
                .queue_event_in(&mut tx, room, poll::START, &start, None)
                .await?;
            prompts::record(
                &mut tx,
                &poll_txn,
                room.as_str(),
                Kind::Inquiry,
                &inquiry.id,
            )
            .await?;
        }
        question::Form::Text => {}
    }
    let thread_root = place
        .command
        .as_ref()
        .map(|o| o.thread_root.as_ref().unwrap_or(&o.event_id).to_string());
    let inserted = stored::insert(
        &mut tx,
        &NewInquiry {
            inquiry_id: &inquiry.id,
            room_id: Some(room.as_str()),
            thread_root: thread_root.as_deref(),
            question: &question_json,
            prompt_txn: Some(&txn),
        },
    )
    .await?;
    if !inserted {
        // Posted meanwhile by another path (the stream and a listing at once): drop ours.
        return Ok(());
    }
    tx.commit().await?;
    bridge.outbox.wake();
    metrics::counter!("st2_matrix_inquiries_posted_total").increment(1);
    tracing::info!(inquiry_id = %inquiry.id, room_id = %room, in_thread = place.command.is_some(), "inquiry asked");
    Ok(())
}

/// Queues an `m.room.message` and returns its send transaction id.
async fn queue_message(
    bridge: &AppState,
    tx: &mut Tx,
    room: &RoomId,
    content: &RoomMessageEventContent,
) -> anyhow::Result<String> {
    let value = serde_json::to_value(content)?;
    Ok(bridge
        .outbox
        .queue_event_in(tx, room, "m.room.message", &value, None)
        .await?)
}

/// Where to ask `inquiry` (see the module doc); `None`: nowhere.
async fn find_place(bridge: &AppState, inquiry: &Inquiry) -> anyhow::Result<Option<Place>> {
    let Some(st2) = &bridge.st2 else {
        return Ok(None);
    };
    // The inquiry's execution, then its parents: the first one started from a room wins.
    let mut id = inquiry.id.clone();
    let mut action = None;
    for _ in 0..16 {
        if let Some(record) = store::executions::get(&bridge.store, &id).await? {
            let origin = Origin {
                room_id: record.room_id.as_str().try_into()?,
                event_id: record.event_id.as_str().try_into()?,
                sender: record.sender.as_str().try_into()?,
                thread_root: record
                    .thread_root
                    .as_deref()
                    .map(<OwnedEventId>::try_from)
                    .transpose()?,
            };
            return Ok(Some(Place {
                room: origin.room_id.clone(),
                command: Some(origin),
                action: Some(record.alias_ref),
            }));
        }
        let execution = match st2.execution(&id).await {
            Ok(execution) => execution,
            Err(st2::Error::NotFound { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        if let Some(reference) = execution
            .action
            .as_ref()
            .and_then(|a| a.get("ref"))
            .and_then(Value::as_str)
            && id != inquiry.id
        {
            action = Some(reference.to_owned());
        }
        match execution.parent {
            Some(parent) if !parent.is_empty() => id = parent,
            _ => break,
        }
    }
    let candidates = [
        Some(inquiry.route.trim()).filter(|r| !r.is_empty()),
        bridge.config.inquiries.default_room.as_deref(),
    ];
    for candidate in candidates.into_iter().flatten() {
        if let Some(room) = joined_room(bridge, candidate).await {
            return Ok(Some(Place {
                room,
                command: None,
                action,
            }));
        }
    }
    Ok(bridge.rooms.admin_room().map(|room| Place {
        room,
        command: None,
        action,
    }))
}

/// `text` as a room the bot is in: a room id, or an alias resolved through the homeserver.
async fn joined_room(bridge: &AppState, text: &str) -> Option<OwnedRoomId> {
    let room = if let Ok(room) = RoomId::parse(text) {
        room
    } else if let Ok(alias) = ruma::RoomAliasId::parse(text) {
        match bridge.rooms.resolved_alias(alias.as_str()) {
            Some(room) => room,
            None => match bridge.matrix.resolve_alias(&alias).await {
                Ok(room) => {
                    bridge.rooms.remember_alias(alias.as_str(), room.clone());
                    room
                }
                Err(_) => return None,
            },
        }
    } else {
        return None;
    };
    match store::rooms::get(&bridge.store, room.as_str()).await {
        Ok(Some(_)) => Some(room),
        _ => None,
    }
}

/// A reaction or vote on an inquiry's question.
pub async fn on_answer(
    bridge: &AppState,
    row: &inbox::Row,
    prompt: &Prompt,
    response: &Response,
) -> anyhow::Result<()> {
    let Some(inquiry) = open_inquiry(bridge, &prompt.target_id).await? else {
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    };
    let question: Inquiry = serde_json::from_str(&inquiry.question)?;
    let Some(answer) =
        question::response_from_click(&question::form(&question.schema), &response.answer)
    else {
        // ❌ on a poll, a withdrawn vote, a reaction to the poll itself: not an answer.
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    };
    let origin = Origin {
        room_id: response.room_id.clone(),
        event_id: response.event_id.clone(),
        sender: response.sender.clone(),
        thread_root: inquiry
            .thread_root
            .as_deref()
            .and_then(|t| OwnedEventId::try_from(t).ok()),
    };
    let level = bridge
        .access
        .level_of(bridge, &origin.room_id, &origin.sender)
        .await;
    if level < Level::Run {
        if prompts::refuse_once(
            &bridge.store,
            Kind::Inquiry,
            &question.id,
            origin.sender.as_str(),
        )
        .await?
        {
            let text = format!(
                "{}, only people who may run commands in this room may answer StackStorm's questions here, so your answer was ignored.",
                origin.sender
            );
            return reply_in_thread(bridge, row, &origin, &text).await;
        }
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    }
    answer_inquiry(
        bridge,
        row,
        &origin,
        &question,
        Some(&inquiry),
        &answer,
        false,
    )
    .await
}

/// The stored inquiry `id` if it is still open.
async fn open_inquiry(bridge: &AppState, id: &str) -> anyhow::Result<Option<stored::Inquiry>> {
    Ok(stored::get(&bridge.store, id)
        .await?
        .filter(|i| i.state == "open"))
}

/// `!st2 respond [id] key=value …`: answers an inquiry in words. Without an id: the one whose
/// question the message replies to, else the only one open in its thread, else the only one
/// open in the room.
pub async fn respond(
    bridge: &AppState,
    row: &inbox::Row,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
    origin: &Origin,
    args: &str,
) -> anyhow::Result<()> {
    let prefix = &bridge.config.bridge.command_prefix;
    let parsed = match st2_alias::Command::new(args) {
        Ok(parsed) => parsed,
        Err(_) => {
            let text = format!(
                "I could not read `{}` as `key=value` pairs.",
                one_line(args)
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
    };
    let pairs = parsed.extras().to_vec();
    let words: Vec<&str> = parsed.padded().split_whitespace().collect();
    if words.len() > 1 {
        let text = format!(
            "Usage: `{prefix} respond [inquiry id] key=value …`: after the id, only `key=value` pairs (quote values with spaces)."
        );
        return reply_in_thread(bridge, row, origin, &text).await;
    }
    let stored_inquiry = match words.first() {
        Some(id) => stored::get(&bridge.store, id).await?,
        None => match which_inquiry(bridge, message, origin).await? {
            Ok(found) => Some(found),
            Err(why) => return reply_in_thread(bridge, row, origin, &why).await,
        },
    };
    let question: Inquiry = match (&stored_inquiry, words.first()) {
        (Some(s), _) => serde_json::from_str(&s.question)?,
        (None, Some(id)) => {
            // Not posted by this bridge: ask StackStorm what it is.
            let Some(st2) = &bridge.st2 else {
                return reply_in_thread(
                    bridge,
                    row,
                    origin,
                    "StackStorm is not configured for this bridge.",
                )
                .await;
            };
            match st2.inquiry(id).await {
                Ok(inquiry) => inquiry,
                Err(e) => {
                    let text = format!("⚠️ Inquiry `{}`: {e}", one_line(id));
                    return reply_in_thread(bridge, row, origin, &text).await;
                }
            }
        }
        (None, None) => unreachable!("which_inquiry found one or explained why not"),
    };
    if let Some(s) = &stored_inquiry
        && s.state != "open"
    {
        let text = format!(
            "Inquiry `{}` is closed already ({}).",
            s.inquiry_id,
            closed_words(s)
        );
        return reply_in_thread(bridge, row, origin, &text).await;
    }
    if pairs.is_empty() {
        let text = format!(
            "Say what to answer: `{prefix} respond {} key=value …`.",
            question.id
        );
        return reply_in_thread(bridge, row, origin, &text).await;
    }
    let answer = question::response_from_pairs(&question.schema, &pairs);
    answer_inquiry(
        bridge,
        row,
        origin,
        &question,
        stored_inquiry.as_ref(),
        &answer,
        true,
    )
    .await
}

/// The inquiry a `respond` without an id means, or why there is none to pick.
async fn which_inquiry(
    bridge: &AppState,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
    origin: &Origin,
) -> anyhow::Result<Result<stored::Inquiry, String>> {
    let replied_to = match &message.content.relates_to {
        Some(Relation::Reply(reply)) => Some(reply.in_reply_to.event_id.clone()),
        Some(Relation::Thread(thread)) if !thread.is_falling_back => {
            thread.in_reply_to.as_ref().map(|r| r.event_id.clone())
        }
        _ => None,
    };
    if let Some(event) = replied_to
        && let Some(prompt) =
            prompts::by_event(&bridge.store, origin.room_id.as_str(), event.as_str()).await?
        && prompt.kind == Kind::Inquiry
        && let Some(found) = stored::get(&bridge.store, &prompt.target_id).await?
    {
        return Ok(Ok(found));
    }
    let open = stored::open_in_room(&bridge.store, origin.room_id.as_str()).await?;
    if let Some(root) = &origin.thread_root {
        let in_thread: Vec<&stored::Inquiry> = open
            .iter()
            .filter(|i| i.thread_root.as_deref() == Some(root.as_str()))
            .collect();
        if let [only] = in_thread.as_slice() {
            return Ok(Ok((*only).clone()));
        }
    }
    Ok(match open.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err("No StackStorm question is waiting for an answer in this room. To answer one asked elsewhere, give its id.".to_owned()),
        many => Err(format!(
            "Several questions are waiting here; say which with its id: {}.",
            many.iter()
                .map(|i| format!("`{}`", i.inquiry_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

/// Sends `answer` to StackStorm as `origin.sender` and records, edits and replies as it went.
async fn answer_inquiry(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    question: &Inquiry,
    stored_inquiry: Option<&stored::Inquiry>,
    answer: &Value,
    typed: bool,
) -> anyhow::Result<()> {
    let prefix = &bridge.config.bridge.command_prefix;
    let Some(st2) = &bridge.st2 else {
        return reply_in_thread(
            bridge,
            row,
            origin,
            "StackStorm is not configured for this bridge.",
        )
        .await;
    };
    let login_hint = format!(
        "Type `{prefix} login` in a direct chat with me ({}) to link your StackStorm account.",
        bridge.bot
    );
    let credential = match identity::credential_for(bridge, &origin.sender).await {
        Ok(Some(credential)) => Some(credential),
        Ok(None) if bridge.config.inquiries.allow_bridge_credential => None,
        Ok(None) => {
            let text = format!(
                "🔒 {}, answers to StackStorm's questions are sent with your own StackStorm account, and you have not linked one. {login_hint}",
                origin.sender
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
        Err(identity::Error::LoginAgain(why)) => {
            let text = format!(
                "🔒 {}, your answer was not sent: {why}. {login_hint}",
                origin.sender
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
        Err(e) => {
            let text = format!(
                "⚠️ Your answer was not sent: your StackStorm login could not be used ({e}). Try again later."
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
    };
    // Only the property names: the values may be secrets.
    tracing::info!(inquiry_id = %question.id, sender = %origin.sender, own_identity = credential.is_some(),
        properties = %answer.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>().join(",")).unwrap_or_default(),
        "answering an inquiry");
    let mut result = st2
        .respond_inquiry(&question.id, answer, credential.as_ref())
        .await;
    if credential.is_some() && matches!(result, Err(st2::Error::Unauthorized { .. })) {
        result = match identity::after_rejection(bridge, &origin.sender).await {
            Ok(renewed) => {
                st2.respond_inquiry(&question.id, answer, Some(&renewed))
                    .await
            }
            Err(e) => {
                let text = format!(
                    "🔒 {}, your answer was not sent: {e}. {login_hint}",
                    origin.sender
                );
                return reply_in_thread(bridge, row, origin, &text).await;
            }
        };
    }
    let closed = match result {
        Ok(()) => Closed::Answered {
            by: origin.sender.to_string(),
            answer: answer.clone(),
        },
        Err(st2::Error::BadRequest { faultstring, .. })
            if faultstring.contains("already been responded") =>
        {
            Closed::Elsewhere
        }
        Err(st2::Error::BadRequest { faultstring, .. }) if faultstring.contains("timed out") => {
            Closed::TimedOut
        }
        Err(st2::Error::NotFound { .. }) => Closed::Elsewhere,
        Err(st2::Error::BadRequest { faultstring, .. }) => {
            let text = format!(
                "❌ StackStorm did not accept the answer to `{}`: {faultstring}",
                question.id
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
        Err(st2::Error::Forbidden { faultstring, .. }) => {
            let text = format!(
                "⛔ StackStorm refused your answer to `{}`: {faultstring}",
                question.id
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
        Err(e) => {
            tracing::warn!(inquiry_id = %question.id, error.message = %e, "answering an inquiry failed");
            let text = format!(
                "⚠️ {e}: your answer to `{}` may not have been recorded. Try again; if it was, StackStorm will say it was already answered.",
                question.id
            );
            return reply_in_thread(bridge, row, origin, &text).await;
        }
    };
    let mut tx = bridge.store.begin().await?;
    if let Some(s) = stored_inquiry {
        close_in(bridge, &mut tx, s, question, &closed).await?;
    }
    if typed || !matches!(closed, Closed::Answered { .. }) {
        let text = match &closed {
            Closed::Answered { answer, .. } => format!(
                "✅ Sent your answer to `{}`: {}.",
                question.id,
                question::describe(answer)
            ),
            other => format!(
                "Inquiry `{}` no longer takes answers: {}.",
                question.id,
                other.words()
            ),
        };
        let content = render::reply(render::notice_markdown(&text), origin);
        bridge
            .outbox
            .queue_in(&mut tx, &origin.room_id, &content)
            .await?;
    }
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    Ok(())
}

/// How an inquiry was closed.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// Answered from a room, by `by`.
    Answered {
        /// The Matrix user who answered.
        by: String,
        /// What they answered.
        answer: Value,
    },
    /// StackStorm no longer takes answers: timed out.
    TimedOut,
    /// Answered somewhere else (the web UI, the CLI, another room), or gone.
    Elsewhere,
}

impl Closed {
    fn state(&self) -> &'static str {
        match self {
            Closed::Answered { .. } => "answered",
            Closed::TimedOut => "timed_out",
            Closed::Elsewhere => "elsewhere",
        }
    }

    fn words(&self) -> String {
        match self {
            Closed::Answered { by, answer } => {
                format!("answered by {by}: {}", question::describe(answer))
            }
            Closed::TimedOut => "it timed out".to_owned(),
            Closed::Elsewhere => {
                "it was answered outside this room (or no longer exists)".to_owned()
            }
        }
    }
}

fn closed_words(s: &stored::Inquiry) -> String {
    match (s.state.as_str(), &s.answered_by) {
        ("answered", Some(by)) => format!("answered by {by}"),
        ("timed_out", _) => "timed out".to_owned(),
        _ => "answered elsewhere".to_owned(),
    }
}

/// Closes `stored_inquiry` as `closed` inside `tx`: the state, the question's edit, the poll's
/// end. Nothing when it was closed already (by a concurrent path): one closing only.
async fn close_in(
    bridge: &AppState,
    tx: &mut Tx,
    stored_inquiry: &stored::Inquiry,
    question: &Inquiry,
    closed: &Closed,
) -> anyhow::Result<bool> {
    let (by, answer) = match closed {
        Closed::Answered { by, answer } => (Some(by.as_str()), Some(answer.to_string())),
        _ => (None, None),
    };
    if !stored::close(
        tx,
        &stored_inquiry.inquiry_id,
        closed.state(),
        by,
        answer.as_deref(),
    )
    .await?
    {
        return Ok(false);
    }
    let Some(room) = stored_inquiry
        .room_id
        .as_deref()
        .and_then(|r| OwnedRoomId::try_from(r).ok())
    else {
        return Ok(true);
    };
    let prefix = &bridge.config.bridge.command_prefix;
    let outcome = match closed {
        Closed::Answered { by, answer } => format!("✅ **Answered by {by}:** {}.", question::describe(answer)),
        Closed::TimedOut => "⌛ **Timed out:** StackStorm no longer takes an answer.".to_owned(),
        Closed::Elsewhere => "**Answered outside this room** (StackStorm's web UI or CLI, or another room), or no longer there.".to_owned(),
    };
    let asked = question::render(question, prefix, None);
    // The question stays readable; how to answer is replaced by what happened.
    let kept = asked
        .split("\n\n")
        .filter(|p| {
            !p.starts_with("React ") && !p.starts_with("Vote ") && !p.starts_with("Answer with ")
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let new_text = format!("{kept}\n\n{outcome}");
    for prompt in prompts::for_target(tx, Kind::Inquiry, &stored_inquiry.inquiry_id).await? {
        if Some(prompt.txn_id.as_str()) == stored_inquiry.prompt_txn.as_deref() {
            bridge
                .outbox
                .queue_edit_in(
                    tx,
                    &room,
                    &render::notice_markdown(&new_text),
                    prompt.event_id.as_deref(),
                    &prompt.txn_id,
                )
                .await?;
        } else {
            let (event_id, relates_to_txn) = match &prompt.event_id {
                Some(event_id) => (event_id.clone(), None),
                None => (String::new(), Some(prompt.txn_id.as_str())),
            };
            let mut end = poll::end(&outcome);
            end["m.relates_to"]["event_id"] = Value::String(event_id);
            bridge
                .outbox
                .queue_event_in(tx, &room, poll::END, &end, relates_to_txn)
                .await?;
        }
    }
    Ok(true)
}

/// Closes an open inquiry found closed by StackStorm (timed out, answered elsewhere).
pub async fn close(bridge: &AppState, inquiry_id: &str, closed: &Closed) -> anyhow::Result<()> {
    let Some(s) = stored::get(&bridge.store, inquiry_id).await? else {
        return Ok(());
    };
    let question: Inquiry = serde_json::from_str(&s.question)?;
    let mut tx = bridge.store.begin().await?;
    if close_in(bridge, &mut tx, &s, &question, closed).await? {
        tx.commit().await?;
        bridge.outbox.wake();
        tracing::info!(inquiry_id, state = closed.state(), "inquiry closed");
    }
    Ok(())
}

/// Replies to `origin` (in its thread) and finishes `row`.
async fn reply_in_thread(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    text: &str,
) -> anyhow::Result<()> {
    crate::state::reply_and_finish(bridge, row, origin, render::notice_markdown(text)).await
}
