//! `approve <id>` and `reject <id> [reason]`: answering a request for approval by typing
//! instead of reacting. [`crate::approvals`] does the rest.

use crate::{matrix::render::Origin, state::AppState, store::inbox};

/// An answer to a request for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `approve` (true) or `reject`.
    pub approve: bool,
    /// The request's id, as typed.
    pub id: String,
    /// `reject`'s reason.
    pub reason: Option<String>,
}

impl Answer {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        if self.approve { "approve" } else { "reject" }
    }

    /// `None` when `first` is not `approve`/`reject` or what follows is not an approval id:
    /// then it is an alias command (a StackStorm alias may start with those words).
    /// `Some(Err(usage))` for `approve`/`reject` alone.
    pub fn parse(first: &str, rest: &str) -> Option<Result<Answer, String>> {
        let approve = if first.eq_ignore_ascii_case("approve") {
            true
        } else if first.eq_ignore_ascii_case("reject") {
            false
        } else {
            return None;
        };
        let rest = rest.trim();
        if rest.is_empty() {
            return Some(Err(
                "Usage: `approve <id>` or `reject <id> [reason]`, with the id shown in the request for approval.".into(),
            ));
        }
        let (id, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !crate::approvals::looks_like_id(id) || (approve && !reason.trim().is_empty()) {
            return None;
        }
        let reason = Some(reason.trim().to_owned()).filter(|r| !r.is_empty());
        Some(Ok(Answer {
            approve,
            id: id.to_owned(),
            reason,
        }))
    }
}

/// Answers the request `answer.id` for `origin`'s sender, replying and finishing `row`.
pub async fn answer(
    bridge: &AppState,
    row: &inbox::Row,
    origin: &Origin,
    answer: &Answer,
) -> anyhow::Result<()> {
    crate::approvals::on_command(
        bridge,
        row,
        origin,
        &answer.id,
        answer.approve,
        answer.reason.as_deref(),
    )
    .await
}
