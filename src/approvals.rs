//! Approvals: commands of configured aliases wait for other people's approval before they
//! run.
//!
//! - A command covered by a rule (the room's own, from the admin room, then `[[approvals]]`)
//!   is not sent to StackStorm: the bot asks in the command's thread (what will run, who may
//!   approve, until when) and adds ✅ and ❌ to its request. The request, the approval record,
//!   the prompt that routes reactions here and "command done" commit together.
//! - Approvers answer with ✅/❌ or `approve <id>` / `reject <id> [reason]`. The requester's own
//!   approval never counts (they may withdraw with ❌ or `reject`); people who may not approve
//!   are told why, once per approval.
//! - Once enough distinct approvers agreed, one transaction marks the approval approved and
//!   hands the command back to the inbox as a row of kind `approved`: it then runs as its
//!   sender through the usual path (permissions checked again, marked started before the
//!   request to StackStorm), so it runs at most once, and never unapproved.
//! - [`run_expiry`] expires requests at their deadline, also those that fell due while the
//!   bridge was down.
//!
//! Logs name the alias, the approval id and people, never the command's text or parameter
//! values (they can hold secrets).

use std::{sync::Arc, time::Duration};

use rand::Rng as _;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::json;
use sqlx::SqliteConnection;
use st2_alias::MatchParams;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ApprovalRule,
    matrix::render::{self, Origin},
    permissions::{Level, Rule},
    prompts::{Answer, Response},
    state::AppState,
    store::{
        self,
        approvals::{self as stored, Approval, State},
        inbox, now_ms,
        prompts::{self, Prompt},
    },
};

/// Letters and digits that cannot be mistaken for one another when typed from a screen (no
/// `0`/`o`, `1`/`l`/`i`).
const ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Length of an approval id: short enough to type, 31^6 ≈ 900 million values.
const ID_LEN: usize = 6;
/// Longest sleep of the expiry task between two looks at the database.
const MAX_EXPIRY_SLEEP: Duration = Duration::from_secs(3600);

/// A fresh approval id.
fn new_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect()
}

/// Whether `word` has the shape of an approval id (what `approve <id>` takes).
pub fn looks_like_id(word: &str) -> bool {
    word.len() == ID_LEN
        && word
            .bytes()
            .all(|b| ID_ALPHABET.contains(&b.to_ascii_lowercase()))
}

/// The approval rule covering `alias_ref` in `room`: the room's own rules (oldest first), then
/// `[[approvals]]`; the first whose aliases match decides.
pub async fn rule_for(
    bridge: &AppState,
    room: &RoomId,
    alias_ref: &str,
) -> Result<Option<ApprovalRule>, sqlx::Error> {
    for stored_rule in stored::room_rules(&bridge.store, room.as_str()).await? {
        match room_rule(&stored_rule) {
            Ok(rule) if rule.aliases.iter().any(|a| a.matches(alias_ref)) => {
                return Ok(Some(rule));
            }
            Ok(_) => {}
            Err(e) => {
                // Rows are checked when added; one that no longer parses (edited by hand)
                // would otherwise silently let commands through: fail closed.
                tracing::error!(room_id = %room, rule_id = stored_rule.rule_id, error.message = %e,
                    "a stored approval rule does not parse; every command in the room waits for an approval nobody can give until it is removed (rooms approvals)");
                return Ok(Some(ApprovalRule {
                    aliases: Vec::new(),
                    approvers: Vec::new(),
                    required: 1,
                    timeout: crate::config::HumanDuration(Duration::from_secs(60)),
                }));
            }
        }
    }
    Ok(bridge
        .config
        .approvals
        .iter()
        .find(|rule| rule.aliases.iter().any(|a| a.matches(alias_ref)))
        .cloned())
}

/// A room rule as stored, parsed back into the config's type.
pub fn room_rule(rule: &stored::RoomRule) -> Result<ApprovalRule, String> {
    let rule = ApprovalRule {
        aliases: rule
            .aliases
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?,
        approvers: rule
            .approvers
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?,
        required: rule.required,
        timeout: crate::config::HumanDuration(Duration::from_millis(
            u64::try_from(rule.timeout_ms).unwrap_or(0),
        )),
    };
    rule.check("rule")?;
    Ok(rule)
}

/// What a matched command will run, as the request shows it: the alias and each parameter.
pub fn summary(alias_ref: &str, params: &MatchParams) -> String {
    let sets: Vec<&st2_alias::Params> = match params {
        MatchParams::Single(p) => vec![p],
        MatchParams::Multiple(sets) => sets.iter().collect(),
    };
    let mut text = format!("`{alias_ref}`");
    for (i, set) in sets.iter().enumerate() {
        if sets.len() > 1 {
            text.push_str(&format!("\n- run {}:", i + 1));
        }
        let indent = if sets.len() > 1 { "  " } else { "" };
        for (name, value) in set.iter() {
            let value = value.as_deref().unwrap_or("(default)");
            text.push_str(&format!("\n{indent}- `{name}` = `{}`", quote(value)));
        }
    }
    text
}

/// `text` on one line, shortened, safe inside backticks.
fn quote(text: &str) -> String {
    let line = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('`', "'");
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(199).collect::<String>())
    } else {
        line
    }
}

/// The command's event as JSON, to hand back to the inbox once approved.
pub fn event_json(
    message: &ruma::events::OriginalMessageLikeEvent<
        ruma::events::room::message::RoomMessageEventContent,
    >,
) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&json!({
        "type": "m.room.message",
        "room_id": message.room_id,
        "event_id": message.event_id,
        "sender": message.sender,
        "origin_server_ts": message.origin_server_ts,
        "content": serde_json::to_value(&message.content)?,
    }))?)
}

/// Asks for approval of the command of `row` instead of running it: the request in the
/// command's thread, the bot's ✅ and ❌ on it, the approval and "done", in one commit.
pub async fn request(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    rule: &ApprovalRule,
    alias_ref: &str,
    summary: String,
    command_event: String,
) -> anyhow::Result<()> {
    let prefix = &bridge.config.bridge.command_prefix;
    let mut tx = bridge.store.begin().await?;
    if stored::by_command(&mut tx, origin.room_id.as_str(), origin.event_id.as_str())
        .await?
        .is_some()
    {
        // Asked already (the row is being handled again): asking twice would split the votes.
        inbox::finish(&mut tx, row.seq).await?;
        tx.commit().await?;
        return Ok(());
    }
    let mut id = new_id();
    while stored::get(&mut tx, &id).await?.is_some() {
        id = new_id();
    }
    let now = now_ms();
    let timeout_ms = i64::try_from(rule.timeout.get().as_millis()).unwrap_or(i64::MAX);
    let mut approval = Approval {
        approval_id: id.clone(),
        room_id: origin.room_id.to_string(),
        event_id: origin.event_id.to_string(),
        thread_root: origin.thread_root.as_ref().map(ToString::to_string),
        requester: origin.sender.to_string(),
        alias_ref: alias_ref.to_owned(),
        summary,
        command_event,
        approvers: rule.approvers.iter().map(ToString::to_string).collect(),
        required: rule.required,
        prompt_txn: String::new(),
        state: State::Pending,
        created_at: now,
        expires_at: now.saturating_add(timeout_ms),
        decided_by: None,
        reason: None,
    };
    let text = request_text(&approval, prefix);
    let content = render::in_thread(render::notice_markdown(&text), origin);
    let content = serde_json::to_value(&content)?;
    let txn = bridge
        .outbox
        .queue_event_in(&mut tx, &origin.room_id, "m.room.message", &content, None)
        .await?;
    prompts::record(
        &mut tx,
        &txn,
        origin.room_id.as_str(),
        prompts::Kind::Approval,
        &id,
    )
    .await?;
    for key in ["✅", "❌"] {
        let reaction =
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "", "key": key}});
        bridge
            .outbox
            .queue_event_in(
                &mut tx,
                &origin.room_id,
                "m.reaction",
                &reaction,
                Some(&txn),
            )
            .await?;
    }
    approval.prompt_txn = txn;
    anyhow::ensure!(
        stored::create(&mut tx, &approval).await?,
        "approval {id} could not be stored"
    );
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    bridge.approvals_wake.notify_one();
    metrics::counter!("st2_matrix_approvals_requested_total").increment(1);
    tracing::info!(approval_id = %id, alias = %alias_ref, requester = %origin.sender,
        required = rule.required, timeout_s = rule.timeout.get().as_secs(), "command waits for approval");
    Ok(())
}

/// The request's text while it waits.
fn request_text(a: &Approval, prefix: &str) -> String {
    let needed = if a.required == 1 {
        "one approval".to_owned()
    } else {
        format!("{} approvals from different people", a.required)
    };
    format!(
        "🔐 This command needs approval before it runs (request `{id}`).\n\n\
         **What will run:** {summary}\n\n\
         **Requested by:** {requester}\\\n\
         **Who may approve:** {approvers} (not the requester); {needed}\\\n\
         **Until:** {until}\n\n\
         React ✅ to approve or ❌ to reject, or type `{prefix} approve {id}` / `{prefix} reject {id} [reason]`.",
        id = a.approval_id,
        summary = a.summary,
        requester = a.requester,
        approvers = a
            .approvers
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", "),
        until = utc(a.expires_at),
    )
}

/// A unix-ms time as `2026-12-07 23:15 UTC`.
fn utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "(an invalid time)".to_owned(),
    }
}

/// What happened to a request, for the edit of the request and the post in its thread.
fn outcome_text(a: &Approval, state: State, by: &str, reason: Option<&str>) -> String {
    let reason = reason
        .filter(|r| !r.trim().is_empty())
        .map(|r| format!(": {}", quote(r)))
        .unwrap_or_default();
    match state {
        State::Approved => format!("✅ Approved by {by}: it runs now as {}.", a.requester),
        State::Rejected if by == a.requester => {
            format!("❌ Withdrawn by {by}{reason}: it does not run.")
        }
        State::Rejected => format!("❌ Rejected by {by}{reason}: it does not run."),
        State::Expired => format!(
            "⌛ Expired: nobody approved it by {}, so it does not run. Send the command again to ask again.",
            utc(a.expires_at)
        ),
        State::Pending => String::new(),
    }
}

/// Where the command was, for posts in its thread.
fn origin_of(a: &Approval) -> anyhow::Result<Origin> {
    Ok(Origin {
        room_id: OwnedRoomId::try_from(a.room_id.as_str())?,
        event_id: OwnedEventId::try_from(a.event_id.as_str())?,
        sender: OwnedUserId::try_from(a.requester.as_str())?,
        thread_root: a
            .thread_root
            .as_deref()
            .map(OwnedEventId::try_from)
            .transpose()?,
    })
}

/// Queues the decided request's edit and the outcome in its thread, in the caller's
/// transaction. An edit does not notify anyone; the thread post does (it mentions the
/// requester).
async fn queue_outcome(
    bridge: &AppState,
    conn: &mut SqliteConnection,
    a: &Approval,
    outcome: &str,
) -> anyhow::Result<()> {
    let origin = origin_of(a)?;
    let edited = format!(
        "🔐 Request `{}`: {}\n\n**What:** {}\n\n**Requested by:** {}",
        a.approval_id, outcome, a.summary, a.requester
    );
    // The request's event id when it is known, else the outbox fills it in at send time.
    let target = prompts::for_target(conn, prompts::Kind::Approval, &a.approval_id)
        .await?
        .into_iter()
        .find_map(|p: Prompt| p.event_id);
    bridge
        .outbox
        .queue_edit_in(
            conn,
            &origin.room_id,
            &render::notice_markdown(&edited),
            target.as_deref(),
            &a.prompt_txn,
        )
        .await?;
    let post = render::in_thread(
        render::notice_markdown(&format!("Request `{}`: {outcome}", a.approval_id)),
        &origin,
    );
    bridge.outbox.queue_in(conn, &origin.room_id, &post).await?;
    Ok(())
}

/// Whether `user` may approve `a`: they match its approver rules (as room rules match) and
/// have at least `run` in the room, so someone denied in the room never approves there.
async fn may_approve(bridge: &AppState, room: &RoomId, user: &UserId, a: &Approval) -> bool {
    let rules: Vec<Rule> = a.approvers.iter().filter_map(|r| r.parse().ok()).collect();
    bridge.access.level_of(bridge, room, user).await >= Level::Run
        && bridge.access.matches_any(bridge, room, user, &rules).await
}

/// How an answer came.
enum Via<'a> {
    /// A ✅/❌ reaction on the request: answered in the thread only when something happened.
    Reaction,
    /// `approve`/`reject`: always answered, as a reply to the command.
    Command(&'a Origin),
}

/// A ✅/❌ reaction (or a poll vote) on a request for approval; finishes `row`.
pub async fn on_answer(
    bridge: &AppState,
    row: &inbox::Row,
    prompt: &Prompt,
    response: &Response,
) -> anyhow::Result<()> {
    let Answer::Reaction(approve) = response.answer else {
        // Requests are not polls.
        return Ok(inbox::finish_alone(&bridge.store, row.seq).await?);
    };
    answer(
        bridge,
        row,
        &prompt.target_id,
        &response.room_id,
        &response.sender,
        approve,
        None,
        Via::Reaction,
    )
    .await
}

/// `approve <id>` (`approve` true) or `reject <id> [reason]` typed in `origin`'s room; queues
/// the reply and finishes `row`.
pub async fn on_command(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    approval_id: &str,
    approve: bool,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    answer(
        bridge,
        row,
        &approval_id.to_ascii_lowercase(),
        &origin.room_id,
        &origin.sender,
        approve,
        reason,
        Via::Command(origin),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    bridge: &AppState,
    row: &inbox::Row,
    approval_id: &str,
    room: &RoomId,
    person: &UserId,
    approve: bool,
    reason: Option<&str>,
    via: Via<'_>,
) -> anyhow::Result<()> {
    let found = {
        let mut conn = bridge.store.pool().acquire().await?;
        stored::get(&mut conn, approval_id).await?
    };
    let a = match found {
        Some(a) if a.room_id == room.as_str() => a,
        _ => {
            let text = format!(
                "There is no request for approval `{approval_id}` in this room. The id is in the request's message (6 letters and digits)."
            );
            return finish(bridge, row, &via, None, Some(text)).await;
        }
    };
    let is_requester = a.requester == person.as_str();
    // Network (power levels) before the transaction: the write lock is never held across it.
    let allowed = !is_requester && may_approve(bridge, room, person, &a).await;

    let mut tx = bridge.store.begin().await?;
    // Read again under the write lock: another answer or the expiry may have decided it.
    let Some(a) = stored::get(&mut tx, approval_id).await? else {
        anyhow::bail!("approval {approval_id} disappeared");
    };
    if a.state == State::Pending && a.expires_at <= now_ms() {
        // Due but not yet expired by the task: an answer after the deadline never counts.
        expire_in(bridge, &mut tx, &a).await?;
        let text = format!(
            "Request `{approval_id}` has expired, so it does not run. Send the command again to ask again."
        );
        return finish(bridge, row, &via, Some(tx), Some(text)).await;
    }
    if a.state != State::Pending {
        let text = format!("Request `{approval_id}` was already {}.", a.state.as_str());
        let text = matches!(via, Via::Command(_)).then_some(text);
        return finish(bridge, row, &via, Some(tx), text).await;
    }
    let approvers = a
        .approvers
        .iter()
        .map(|r| format!("`{r}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let person_s = person.as_str();
    let (state, by) = if is_requester && !approve {
        // Withdrawing one's own request is always allowed.
        (State::Rejected, person_s.to_owned())
    } else if is_requester {
        let text = format!(
            "{person}, you asked for this command, so your own approval does not count: it needs \
             approval by someone else matching {approvers}."
        );
        return refuse(bridge, row, &via, tx, &a, person, text).await;
    } else if !allowed {
        let what = if approve { "approve" } else { "reject" };
        let text = format!(
            "⛔ {person}, you may not {what} request `{approval_id}`: approvers are {approvers} \
             (with at least the `run` permission in this room). Your answer was ignored."
        );
        return refuse(bridge, row, &via, tx, &a, person, text).await;
    } else if !approve {
        (State::Rejected, person_s.to_owned())
    } else {
        let count = stored::add_vote(&mut tx, approval_id, person_s).await?;
        if count >= a.required {
            let voters = stored::votes(&mut tx, approval_id).await?;
            (State::Approved, voters.join(", "))
        } else {
            tracing::info!(approval_id, approver = %person, count, required = a.required, "approval recorded");
            let text = format!(
                "Your approval of `{approval_id}` is recorded ({count} of {}).",
                a.required
            );
            let text = matches!(via, Via::Command(_)).then_some(text);
            return finish(bridge, row, &via, Some(tx), text).await;
        }
    };
    let reason = if state == State::Rejected {
        reason
    } else {
        None
    };
    if !stored::decide(&mut tx, approval_id, state, Some(&by), reason).await? {
        anyhow::bail!("approval {approval_id} was decided meanwhile");
    }
    if state == State::Approved {
        let event_id = format!("approval:{approval_id}");
        inbox::insert_in(
            &mut tx,
            &inbox::NewEvent {
                event_id: &event_id,
                room_id: &a.room_id,
                kind: inbox::Kind::Approved,
                event: &a.command_event,
            },
        )
        .await?;
    }
    let outcome = outcome_text(&a, state, &by, reason);
    queue_outcome(bridge, &mut tx, &a, &outcome).await?;
    metrics::counter!("st2_matrix_approvals_decided_total", "outcome" => state.as_str())
        .increment(1);
    tracing::info!(approval_id, alias = %a.alias_ref, requester = %a.requester, by = %by,
        outcome = state.as_str(), "approval decided");
    // The thread post says it all; a command gets no reply of its own.
    finish(bridge, row, &via, Some(tx), None).await?;
    if state == State::Approved {
        bridge.inbox_wake.notify_one();
    }
    Ok(())
}

/// Tells `person` why their answer did not count: always for a command, once per approval
/// for reactions (one notice per person, however often they react).
async fn refuse(
    bridge: &AppState,
    row: &inbox::Row,
    via: &Via<'_>,
    mut tx: store::Tx,
    a: &Approval,
    person: &UserId,
    text: String,
) -> anyhow::Result<()> {
    tracing::info!(approval_id = %a.approval_id, person = %person, "an answer to an approval did not count");
    match via {
        Via::Command(_) => finish(bridge, row, via, Some(tx), Some(text)).await,
        Via::Reaction => {
            if stored::claim_refusal(&mut tx, &a.approval_id, person.as_str()).await? {
                let origin = origin_of(a)?;
                let mut content = render::in_thread(render::notice_markdown(&text), &origin);
                content.mentions = Some(ruma::events::Mentions::with_user_ids([person.to_owned()]));
                bridge
                    .outbox
                    .queue_in(&mut tx, &origin.room_id, &content)
                    .await?;
            }
            finish(bridge, row, via, Some(tx), None).await
        }
    }
}

/// Finishes `row` in `tx` (or a new transaction), with `text` as the reply to the command
/// when the answer was one.
async fn finish(
    bridge: &AppState,
    row: &inbox::Row,
    via: &Via<'_>,
    tx: Option<store::Tx>,
    text: Option<String>,
) -> anyhow::Result<()> {
    let mut tx = match tx {
        Some(tx) => tx,
        None => bridge.store.begin().await?,
    };
    if let (Via::Command(origin), Some(text)) = (via, text) {
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

/// Expires `a` (pending, due) in `conn`'s transaction and queues what the thread is told.
async fn expire_in(
    bridge: &AppState,
    conn: &mut SqliteConnection,
    a: &Approval,
) -> anyhow::Result<bool> {
    if !stored::decide(conn, &a.approval_id, State::Expired, None, None).await? {
        return Ok(false);
    }
    let outcome = outcome_text(a, State::Expired, "", None);
    queue_outcome(bridge, conn, a, &outcome).await?;
    metrics::counter!("st2_matrix_approvals_decided_total", "outcome" => "expired").increment(1);
    tracing::info!(approval_id = %a.approval_id, alias = %a.alias_ref, requester = %a.requester, "approval expired");
    Ok(true)
}

/// Expires every pending approval whose deadline has passed; returns how many.
pub async fn expire_due(bridge: &AppState) -> anyhow::Result<usize> {
    let mut tx = bridge.store.begin().await?;
    let due = stored::overdue(&mut tx, now_ms()).await?;
    let mut expired = 0;
    for a in &due {
        if expire_in(bridge, &mut tx, a).await? {
            expired += 1;
        }
    }
    tx.commit().await?;
    if expired > 0 {
        bridge.outbox.wake();
    }
    Ok(expired)
}

/// Expires approvals at their deadline until `stop`: sleeps until the earliest one (woken
/// when a new one is asked for); at start, the ones that fell due while the bridge was down
/// expire at once.
pub async fn run_expiry(bridge: Arc<AppState>, stop: CancellationToken) {
    loop {
        let wait = match expire_due(&bridge).await {
            Err(e) => {
                tracing::warn!(error.message = %e, error.cause_chain = ?e, "expiring approvals failed; retrying");
                Duration::from_secs(5)
            }
            Ok(_) => match stored::next_expiry(&bridge.store).await {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
                    .min(MAX_EXPIRY_SLEEP),
                Ok(None) => MAX_EXPIRY_SLEEP,
                Err(e) => {
                    tracing::warn!(error.message = %e, "reading the next approval deadline failed");
                    Duration::from_secs(5)
                }
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = bridge.approvals_wake.notified() => {}
            // A little after the deadline, so the deadline is past when it is checked.
            () = tokio::time::sleep(wait + Duration::from_millis(5)) => {}
        }
    }
}

/// The approval behind an inbox row of kind `approved` (`approval:<id>`).
pub async fn for_approved_row(
    bridge: &AppState,
    row: &inbox::Row,
) -> Result<Option<Approval>, sqlx::Error> {
    let Some(id) = row.event_id.strip_prefix("approval:") else {
        return Ok(None);
    };
    let mut conn = bridge.store.pool().acquire().await?;
    stored::get(&mut conn, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_typeable_and_recognised() {
        for _ in 0..100 {
            let id = new_id();
            assert!(looks_like_id(&id), "{id}");
            assert!(!id.contains(['0', 'o', '1', 'l', 'i']));
        }
        assert!(looks_like_id("ABC234"), "people may type capitals");
        assert!(!looks_like_id("abc23") && !looks_like_id("abc2345") && !looks_like_id("abc 23"));
        assert!(!looks_like_id("web101"), "0 and 1 are never in an id");
    }

    #[test]
    fn the_summary_names_the_alias_and_every_parameter() {
        let mut params = st2_alias::Params::new();
        params.insert("app".into(), Some("web `x`".into()));
        params.insert("env".into(), None);
        let text = summary("deploy.web", &MatchParams::Single(params.clone()));
        assert_eq!(
            text,
            "`deploy.web`\n- `app` = `web 'x'`\n- `env` = `(default)`"
        );
        let text = summary(
            "deploy.web",
            &MatchParams::Multiple(vec![params.clone(), params]),
        );
        assert!(text.contains("- run 2:\n  - `app`"), "{text}");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_688_900_000), "2026-12-08 00:15:00 UTC");
    }

    #[test]
    fn room_rules_parse_back_and_bad_ones_are_refused() {
        let good = stored::RoomRule {
            rule_id: 1,
            aliases: vec!["deploy.*".into()],
            approvers: vec!["power>=50".into()],
            required: 2,
            timeout_ms: 60_000,
        };
        let rule = room_rule(&good).unwrap();
        assert!(rule.aliases[0].matches("deploy.web"));
        assert_eq!(
            (rule.required, rule.timeout.get()),
            (2, Duration::from_secs(60))
        );
        let bad = stored::RoomRule {
            required: 0,
            ..good.clone()
        };
        assert!(room_rule(&bad).is_err());
        let bad = stored::RoomRule {
            approvers: vec!["power>=x".into()],
            ..good
        };
        assert!(room_rule(&bad).is_err());
    }
}
