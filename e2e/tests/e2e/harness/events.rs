//! Reading the raw JSON events a user's sync recorded, the way a Matrix client reads them.

use matrix_sdk::ruma::UserId;
use serde_json::Value as Json;

/// The event's `sender`.
pub fn sender(event: &Json) -> &str {
    event["sender"].as_str().unwrap_or_default()
}

/// `content.body` (empty if missing).
pub fn body(event: &Json) -> &str {
    event["content"]["body"].as_str().unwrap_or_default()
}

/// Whether the event is an `m.room.message` with `msgtype: m.notice` sent by `user`.
pub fn is_notice_from(event: &Json, user: &UserId) -> bool {
    event["type"] == "m.room.message"
        && event["content"]["msgtype"] == "m.notice"
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
