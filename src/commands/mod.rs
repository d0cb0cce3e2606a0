//! Commands people type in rooms: recognising them, and one closed enum to dispatch.
//!
//! A message is addressed to the bridge when (after stripping a reply fallback) it starts with
//! the command prefix followed by a space or the end of the message.

pub mod ping;

use ruma::events::{
    OriginalMessageLikeEvent,
    room::message::{Relation, RoomMessageEventContent},
};

use crate::{
    bridge::Bridge,
    matrix::render::{self, Origin},
    store::inbox,
};

/// A recognised command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ping`: proves the loop works, answers with the version.
    Ping,
    /// Nothing after the prefix.
    Empty,
    /// Anything else.
    Unknown(String),
}

impl Command {
    /// Parses the text after the prefix.
    pub fn parse(text: &str) -> Command {
        let text = text.trim();
        let mut words = text.split_whitespace();
        match words.next() {
            None => Command::Empty,
            Some(word) if word.eq_ignore_ascii_case("ping") && words.next().is_none() => {
                Command::Ping
            }
            Some(_) => Command::Unknown(text.to_owned()),
        }
    }
}

/// The command text of a message addressed to the bridge, or `None` when it is not.
pub fn invocation<'a>(body: &'a str, prefix: &str) -> Option<&'a str> {
    let body = strip_reply_fallback(body).trim_start();
    let rest = body.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with(char::is_whitespace) {
        Some(rest.trim())
    } else {
        None
    }
}

/// Removes the quoted `> ` lines (and the blank line after them) that older clients put at the
/// start of a reply's plain body.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while let Some(line_end) = rest.find('\n') {
        let line = &rest[..line_end];
        if line.starts_with('>') {
            rest = &rest[line_end + 1..];
        } else {
            break;
        }
    }
    if rest.starts_with('>') {
        // Nothing but quotes.
        return "";
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// Where a command came from, for the reply.
pub fn origin(message: &OriginalMessageLikeEvent<RoomMessageEventContent>) -> Origin {
    let thread_root = match &message.content.relates_to {
        Some(Relation::Thread(thread)) => Some(thread.event_id.clone()),
        _ => None,
    };
    Origin {
        room_id: message.room_id.clone(),
        event_id: message.event_id.clone(),
        sender: message.sender.clone(),
        thread_root,
    }
}

/// Runs the command in `message` and queues the reply, committed together with "done".
pub async fn handle(
    bridge: &Bridge,
    row: &inbox::Row,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
) -> anyhow::Result<()> {
    let origin = origin(message);
    let text = invocation(message.content.body(), &bridge.config.bridge.command_prefix)
        .unwrap_or_default();
    let command = Command::parse(text);
    tracing::info!(sender = %origin.sender, command = ?command, "command");
    let prefix = &bridge.config.bridge.command_prefix;
    let reply = match command {
        Command::Ping => ping::reply(),
        Command::Empty => format!("Try `{prefix} ping`."),
        Command::Unknown(text) => {
            format!("I don't know the command `{text}`. Try `{prefix} ping`.")
        }
    };
    reply_and_finish(bridge, row, &origin, render::notice_markdown(&reply)).await
}

/// Queues `content` as a reply to `origin` and marks the inbox row done, in one transaction.
pub async fn reply_and_finish(
    bridge: &Bridge,
    row: &inbox::Row,
    origin: &Origin,
    content: RoomMessageEventContent,
) -> anyhow::Result<()> {
    let content = render::reply(content, origin);
    let mut tx = bridge.store.begin().await?;
    bridge
        .outbox
        .queue_in(&mut tx, &origin.room_id, &content)
        .await?;
    inbox::finish(&mut tx, row.seq).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_must_stand_alone() {
        assert_eq!(invocation("!st2 ping", "!st2"), Some("ping"));
        assert_eq!(invocation("  !st2   ping  ", "!st2"), Some("ping"));
        assert_eq!(invocation("!st2", "!st2"), Some(""));
        assert_eq!(invocation("!st2ping", "!st2"), None);
        assert_eq!(invocation("say !st2 ping", "!st2"), None);
    }

    #[test]
    fn a_reply_fallback_is_stripped_before_matching() {
        let body = "> <@bob:x> earlier message\n> second quoted line\n\n!st2 ping";
        assert_eq!(invocation(body, "!st2"), Some("ping"));
        assert_eq!(strip_reply_fallback("> only a quote"), "");
        assert_eq!(strip_reply_fallback("no quote"), "no quote");
    }

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("ping"), Command::Ping);
        assert_eq!(Command::parse(" PING "), Command::Ping);
        assert_eq!(Command::parse(""), Command::Empty);
        assert_eq!(
            Command::parse("ping me"),
            Command::Unknown("ping me".into())
        );
    }
}
