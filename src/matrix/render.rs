//! Building the content of what the bridge says: notices, replies, threads.
//!
//! Bot output is `m.notice` (clients do not notify for notices, and other bots conventionally
//! ignore them). A reply names its target in `m.in_reply_to` and mentions the person, and stays
//! in the command's thread when the command was in one.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId,
    events::{
        Mentions,
        relation::{InReplyTo, Thread},
        room::message::{Relation, RoomMessageEventContent},
    },
};

/// The message a reply answers: where it was, who sent it, and its thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The message.
    pub event_id: OwnedEventId,
    /// Its sender.
    pub sender: OwnedUserId,
    /// The thread root, when the message was in a thread.
    pub thread_root: Option<OwnedEventId>,
}

/// A plain-text notice.
pub fn notice(text: &str) -> RoomMessageEventContent {
    RoomMessageEventContent::notice_plain(text)
}

/// A Markdown notice (plain `body` plus sanitised HTML `formatted_body` when the Markdown has
/// formatting).
pub fn notice_markdown(markdown: &str) -> RoomMessageEventContent {
    RoomMessageEventContent::notice_markdown(markdown)
}

/// Makes `content` a reply to `origin`, inside its thread if it had one.
pub fn reply(mut content: RoomMessageEventContent, origin: &Origin) -> RoomMessageEventContent {
    content.relates_to = Some(match &origin.thread_root {
        // A real reply within the thread (not a fallback), so clients show what it answers.
        Some(root) => Relation::Thread(Thread::reply(root.clone(), origin.event_id.clone())),
        None => Relation::Reply(ruma::events::relation::Reply::new(InReplyTo::new(
            origin.event_id.clone(),
        ))),
    });
    content.mentions = Some(Mentions::with_user_ids([origin.sender.clone()]));
    content
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin(thread: Option<&str>) -> Origin {
        Origin {
            room_id: "!r:x".try_into().unwrap(),
            event_id: "$cmd".try_into().unwrap(),
            sender: "@alice:x".try_into().unwrap(),
            thread_root: thread.map(|t| t.try_into().unwrap()),
        }
    }

    #[test]
    fn a_reply_points_at_the_command_and_mentions_its_sender() {
        let json = serde_json::to_value(reply(notice("pong"), &origin(None))).unwrap();
        assert_eq!(json["msgtype"], "m.notice");
        assert_eq!(
            json["m.relates_to"],
            json!({"m.in_reply_to": {"event_id": "$cmd"}})
        );
        assert_eq!(json["m.mentions"], json!({"user_ids": ["@alice:x"]}));
    }

    #[test]
    fn a_reply_in_a_thread_stays_in_the_thread() {
        let json = serde_json::to_value(reply(notice("pong"), &origin(Some("$root")))).unwrap();
        let rel = &json["m.relates_to"];
        assert_eq!(rel["rel_type"], "m.thread");
        assert_eq!(rel["event_id"], "$root");
        assert_eq!(rel["m.in_reply_to"]["event_id"], "$cmd");
        // A real reply, not a fallback (ruma omits the `false`).
        assert_ne!(rel["is_falling_back"], true);
    }
}
