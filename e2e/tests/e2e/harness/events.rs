//! Reading the raw JSON events a user's sync recorded, the way a Matrix client reads them.

use matrix_sdk::ruma::{EventId, UserId};
use serde_json::Value as Json;

/// The event's `sender`.
pub fn sender(event: &Json) -> &str {
    event["sender"].as_str().unwrap_or_default()
}

/// `content.body` (empty if missing).
pub fn body(event: &Json) -> &str {
    event["content"]["body"].as_str().unwrap_or_default()
}

/// `content.formatted_body` when `content.format` says it is HTML (`org.matrix.custom.html`).
pub fn html_body(event: &Json) -> Option<&str> {
    if event["content"]["format"] == "org.matrix.custom.html" {
        event["content"]["formatted_body"].as_str()
    } else {
        None
    }
}

/// Whether the event is an `m.room.message` with `msgtype: m.notice` sent by `user`, and a
/// new one: an edit (`m.replace`, e.g. an ack showing its execution's progress) changes a
/// notice that was already counted.
pub fn is_notice_from(event: &Json, user: &UserId) -> bool {
    event["type"] == "m.room.message"
        && event["content"]["msgtype"] == "m.notice"
        && event["content"]["m.relates_to"]["rel_type"] != "m.replace"
        && sender(event) == user.as_str()
}

/// The event this one replies to: `content["m.relates_to"]["m.in_reply_to"].event_id`.
pub fn in_reply_to(event: &Json) -> Option<&str> {
    event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"].as_str()
}

/// The root of the thread this event is in, if its relation is `rel_type: m.thread`.
pub fn thread_root(event: &Json) -> Option<&str> {
    let relation = &event["content"]["m.relates_to"];
    if relation["rel_type"] == "m.thread" {
        relation["event_id"].as_str()
    } else {
        None
    }
}

/// Whether the event is a notice from `user` replying to `command`: how the bot answers one.
pub fn is_reply_from(event: &Json, user: &UserId, command: &EventId) -> bool {
    is_notice_from(event, user) && in_reply_to(event) == Some(command.as_str())
}
