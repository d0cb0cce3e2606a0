//! Answers to the bot's prompts (an inquiry's question, a request for approval): a ✅/❌
//! reaction or a poll vote, read out of the event.
//!
//! Any reaction with an answer key and any vote is stored by the transaction handler
//! ([`crate::addressing::Classifier`]); the inbox worker ([`crate::dispatch`]) finds the prompt
//! it answers through the prompt's event id (only the database knows which sent events are
//! prompts) and hands it to the feature that asked.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId,
    events::{AnyMessageLikeEvent, AnyTimelineEvent, MessageLikeEvent},
    serde::Raw,
};

use crate::{
    addressing::{is_poll_response, reaction_answer},
    matrix::poll,
};

/// What someone answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A ✅ (`true`) or ❌ (`false`) reaction.
    Reaction(bool),
    /// A poll vote: the chosen answer ids (empty: the vote was withdrawn).
    Vote(Vec<String>),
}

/// A reaction or vote on one of the bot's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The reaction's or vote's own event id.
    pub event_id: OwnedEventId,
    /// Who answered.
    pub sender: OwnedUserId,
    /// The event it relates to (the prompt, if it is one).
    pub target: String,
    /// The answer.
    pub answer: Answer,
}

/// Reads a response out of `event` (`raw` is the same event, for the content ruma does not
/// type). `None`: not a reaction with an answer key nor a vote.
pub fn parse(raw: &Raw<AnyTimelineEvent>, event: &AnyTimelineEvent) -> Option<Response> {
    let AnyTimelineEvent::MessageLike(message) = event else {
        return None;
    };
    let (target, answer) = match message {
        AnyMessageLikeEvent::Reaction(MessageLikeEvent::Original(reaction)) => {
            let relation = &reaction.content.relates_to;
            (
                relation.event_id.to_string(),
                Answer::Reaction(reaction_answer(&relation.key)?),
            )
        }
        other if is_poll_response(other) => {
            let vote = raw.get_field::<poll::Response>("content").ok()??;
            (
                vote.relates_to.event_id,
                Answer::Vote(vote.response.answers),
            )
        }
        _ => return None,
    };
    Some(Response {
        room_id: message.room_id().to_owned(),
        event_id: message.event_id().to_owned(),
        sender: message.sender().to_owned(),
        target,
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> (Raw<AnyTimelineEvent>, AnyTimelineEvent) {
        let raw: Raw<AnyTimelineEvent> = serde_json::from_value(value).unwrap();
        let event = raw.deserialize().unwrap();
        (raw, event)
    }

    fn base(kind: &str, content: serde_json::Value) -> serde_json::Value {
        json!({"type": kind, "room_id": "!r:x", "event_id": "$a", "sender": "@u:x",
               "origin_server_ts": 1, "content": content})
    }

    #[test]
    fn reactions_and_votes_are_read_and_other_reactions_are_not() {
        let (raw, e) = event(base(
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$q", "key": "✅\u{fe0f}"}}),
        ));
        let r = parse(&raw, &e).unwrap();
        assert_eq!(
            (r.target.as_str(), &r.answer),
            ("$q", &Answer::Reaction(true))
        );
        let (raw, e) = event(base(
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$q", "key": "👍"}}),
        ));
        assert_eq!(parse(&raw, &e), None);
        let (raw, e) = event(base(
            "org.matrix.msc3381.poll.response",
            json!({"m.relates_to": {"rel_type": "m.reference", "event_id": "$p"},
                   "org.matrix.msc3381.poll.response": {"answers": ["2"]}}),
        ));
        let r = parse(&raw, &e).unwrap();
        assert_eq!(
            (r.target.as_str(), &r.answer),
            ("$p", &Answer::Vote(vec!["2".into()]))
        );
    }
}
