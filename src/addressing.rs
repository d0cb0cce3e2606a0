//! How messages address the bridge, and which pushed events need work at all.
//!
//! A message is addressed to the bridge when, after stripping a reply fallback, it
//! - starts with the command prefix followed by a space or the end (`!st2 deploy web`), or
//!   directly by `help` (`!st2help`, as err-stackstorm users type it);
//! - starts with a mention of the bot (`StackStorm: deploy web`, `@st2bot:example.org: …`);
//! - or is any message in a direct chat with the bot (or the admin room).
//!
//! Classification runs in the transaction handler, before the `200`, so it reads only memory
//! ([`RoomFacts`]), never the network; it sits below the handlers so that the bridge's state
//! can hold a [`Classifier`] without importing them.

use ruma::{
    OwnedUserId, RoomId,
    events::{
        AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
        room::{member::MembershipState, message::MessageType},
    },
};

use crate::{registration::UserNamespace, store::inbox::Kind};

/// How messages address the bridge.
#[derive(Debug, Clone)]
pub struct Addressing {
    /// The command prefix, e.g. `!st2`.
    pub prefix: String,
    /// The bot's user id.
    pub bot: OwnedUserId,
    /// The bot's display name (what a mention pill shows).
    pub displayname: String,
}

impl Addressing {
    /// The command text of a message, or `None` when the message is not for the bridge.
    pub fn command<'a>(&self, body: &'a str, direct: bool) -> Option<&'a str> {
        let body = strip_reply_fallback(body).trim_start();
        if let Some(rest) = self.after_prefix(body) {
            return Some(rest);
        }
        if let Some(rest) = self.after_mention(body) {
            return Some(self.after_prefix(rest).unwrap_or(rest));
        }
        direct.then(|| body.trim())
    }

    fn after_prefix<'a>(&self, body: &'a str) -> Option<&'a str> {
        let rest = body.strip_prefix(self.prefix.as_str())?;
        let standalone = |s: &str| s.is_empty() || s.starts_with(char::is_whitespace);
        if standalone(rest) || rest.strip_prefix("help").is_some_and(standalone) {
            Some(rest.trim())
        } else {
            None
        }
    }

    /// What follows a leading mention of the bot (by id, display name or localpart, as a
    /// mention pill's plain text or as typed) and a `:` or `,`.
    fn after_mention<'a>(&self, body: &'a str) -> Option<&'a str> {
        let localpart = self.bot.localpart();
        let at_localpart = format!("@{localpart}");
        let names = [
            self.bot.as_str(),
            self.displayname.as_str(),
            at_localpart.as_str(),
            localpart,
        ];
        names
            .into_iter()
            .filter(|name| !name.is_empty())
            .find_map(|name| {
                let head = body.get(..name.len())?;
                if !head.eq_ignore_ascii_case(name) {
                    return None;
                }
                body[name.len()..].strip_prefix([':', ',']).map(str::trim)
            })
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
        if rest[..line_end].starts_with('>') {
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

/// The event types of a poll vote: MSC3381's unstable name (what Element sends today) and the
/// stable one.
pub const POLL_RESPONSE_TYPES: [&str; 2] = ["org.matrix.msc3381.poll.response", "m.poll.response"];

/// Whether `event` is a poll vote (ruma types polls only with a feature the bridge does not
/// enable, so they are recognised by their event type).
pub fn is_poll_response(event: &AnyMessageLikeEvent) -> bool {
    POLL_RESPONSE_TYPES.contains(&event.event_type().to_string().as_str())
}

/// The answer a reaction gives to one of the bot's yes/no prompts: ✅ (or ✔) is yes, ❌ (or ✖)
/// is no; any other key is not an answer. Variation selectors are ignored (clients differ).
pub fn reaction_answer(key: &str) -> Option<bool> {
    let key: String = key.chars().filter(|c| *c != '\u{fe0f}').collect();
    match key.as_str() {
        "✅" | "✔" | "☑" => Some(true),
        "❌" | "✖" | "❎" => Some(false),
        _ => None,
    }
}

/// What classification needs to know about rooms, from memory (never the network).
pub trait RoomFacts {
    /// The room already got the encryption notice (its encrypted events need nothing more).
    fn encryption_noticed(&self, room: &RoomId) -> bool;
    /// The room is a direct chat with the bot (every message is a command).
    fn is_direct(&self, room: &RoomId) -> bool;
    /// The room is the admin room (every message is a command there too).
    fn is_admin_room(&self, room: &RoomId) -> bool;
    /// The bot can decrypt (encryption is on): every encrypted message may be a command.
    fn decrypts(&self) -> bool {
        false
    }
}

/// Decides which events need work.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// The bot user.
    pub bot: OwnedUserId,
    /// The bridge's own users.
    pub namespace: UserNamespace,
    /// How messages address the bridge.
    pub addressing: Addressing,
}

impl Classifier {
    /// The kind of work `event` needs, if any.
    pub fn classify(&self, event: &AnyTimelineEvent, rooms: &dyn RoomFacts) -> Option<Kind> {
        // Membership changes of the bot made by others come first: they are about us, but the
        // sender is someone else.
        if let AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))) =
            event
        {
            if member.state_key != self.bot || member.sender == self.bot {
                return None;
            }
            return match member.content.membership {
                MembershipState::Invite => Some(Kind::Invite),
                MembershipState::Leave | MembershipState::Ban => Some(Kind::Removed),
                _ => None,
            };
        }
        // Our own messages (and our users') come back to us; never answer them.
        let sender = event.sender();
        if sender == self.bot || self.namespace.contains(sender) {
            return None;
        }
        match event {
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                MessageLikeEvent::Original(message),
            )) => {
                match &message.content.msgtype {
                    // Notices are bot output by convention: never treat one as a command.
                    MessageType::Text(text)
                        if self
                            .addressing
                            .command(
                                &text.body,
                                rooms.is_direct(&message.room_id)
                                    || rooms.is_admin_room(&message.room_id),
                            )
                            .is_some() =>
                    {
                        Some(Kind::Command)
                    }
                    _ => None,
                }
            }
            // With encryption on, each encrypted message is decrypted by the worker (it may be
            // a command) and `m.room.encryption` is recorded; with it off, the room gets the
            // notice once and nothing more is stored.
            // Possible answers to the bot's prompts; whether the target is a prompt is looked up
            // by the worker (the database, not memory, knows the prompts' event ids).
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::Reaction(
                MessageLikeEvent::Original(reaction),
            )) => reaction_answer(&reaction.content.relates_to.key).map(|_| Kind::Response),
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomEncrypted(_))
            | AnyTimelineEvent::State(AnyStateEvent::RoomEncryption(_)) => (rooms.decrypts()
                || !rooms.encryption_noticed(event.room_id()))
            .then_some(Kind::Encrypted),
            // Last: it names the event type as a string, which the common events above skip.
            AnyTimelineEvent::MessageLike(event) if is_poll_response(event) => Some(Kind::Response),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classifier() -> Classifier {
        let registration =
            ruma::api::appservice::Registration::from(ruma::api::appservice::RegistrationInit {
                id: "x".into(),
                url: None,
                as_token: "a".into(),
                hs_token: "h".into(),
                sender_localpart: "st2bot".into(),
                namespaces: {
                    let mut ns = ruma::api::appservice::Namespaces::new();
                    ns.users = vec![ruma::api::appservice::Namespace::new(
                        true,
                        "@st2_.*:x".into(),
                    )];
                    ns
                },
                rate_limited: None,
                protocols: None,
            });
        Classifier {
            bot: "@st2bot:x".try_into().unwrap(),
            namespace: UserNamespace::from_registration(&registration).unwrap(),
            addressing: Addressing {
                prefix: "!st2".into(),
                bot: "@st2bot:x".try_into().unwrap(),
                displayname: "StackStorm".into(),
            },
        }
    }

    /// Room facts for tests: which rooms are noticed / direct, and whether the bot decrypts.
    struct Facts {
        noticed: bool,
        direct: bool,
    }

    /// A bridge with encryption on.
    struct Decrypting;

    impl RoomFacts for Decrypting {
        fn encryption_noticed(&self, _: &RoomId) -> bool {
            true
        }
        fn is_direct(&self, _: &RoomId) -> bool {
            false
        }
        fn is_admin_room(&self, _: &RoomId) -> bool {
            false
        }
        fn decrypts(&self) -> bool {
            true
        }
    }

    impl RoomFacts for Facts {
        fn encryption_noticed(&self, _: &RoomId) -> bool {
            self.noticed
        }
        fn is_direct(&self, _: &RoomId) -> bool {
            self.direct
        }
        fn is_admin_room(&self, _: &RoomId) -> bool {
            false
        }
    }

    const NONE: &Facts = &Facts {
        noticed: false,
        direct: false,
    };

    fn event(value: serde_json::Value) -> AnyTimelineEvent {
        let mut v =
            json!({"event_id": "$e", "room_id": "!r", "origin_server_ts": 1, "sender": "@alice:x"});
        v.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn text(sender: &str, msgtype: &str, body: &str) -> AnyTimelineEvent {
        event(
            json!({"type": "m.room.message", "sender": sender, "content": {"msgtype": msgtype, "body": body}}),
        )
    }

    fn member(sender: &str, target: &str, membership: &str) -> AnyTimelineEvent {
        event(
            json!({"type": "m.room.member", "sender": sender, "state_key": target, "content": {"membership": membership}}),
        )
    }

    #[test]
    fn a_prefixed_text_message_is_a_command() {
        let c = classifier();
        assert_eq!(
            c.classify(&text("@alice:x", "m.text", "!st2 ping"), NONE),
            Some(Kind::Command)
        );
        assert_eq!(c.classify(&text("@alice:x", "m.text", "hello"), NONE), None);
        assert_eq!(
            c.classify(&text("@alice:x", "m.notice", "!st2 ping"), NONE),
            None
        );
    }

    #[test]
    fn mentions_and_direct_chats_are_commands() {
        let c = classifier();
        assert_eq!(
            c.classify(&text("@alice:x", "m.text", "StackStorm: deploy web"), NONE),
            Some(Kind::Command)
        );
        assert_eq!(
            c.classify(&text("@alice:x", "m.text", "deploy web"), NONE),
            None
        );
        assert_eq!(
            c.classify(
                &text("@alice:x", "m.text", "deploy web"),
                &Facts {
                    noticed: false,
                    direct: true
                }
            ),
            Some(Kind::Command)
        );
    }

    #[test]
    fn our_own_users_are_ignored() {
        let c = classifier();
        assert_eq!(
            c.classify(&text("@st2bot:x", "m.text", "!st2 ping"), NONE),
            None
        );
        assert_eq!(
            c.classify(&text("@st2_alice:x", "m.text", "!st2 ping"), NONE),
            None
        );
    }

    #[test]
    fn invites_and_removals_of_the_bot_need_work() {
        let c = classifier();
        assert_eq!(
            c.classify(&member("@alice:x", "@st2bot:x", "invite"), NONE),
            Some(Kind::Invite)
        );
        assert_eq!(
            c.classify(&member("@alice:x", "@st2bot:x", "leave"), NONE),
            Some(Kind::Removed)
        );
        assert_eq!(
            c.classify(&member("@alice:x", "@st2bot:x", "ban"), NONE),
            Some(Kind::Removed)
        );
        assert_eq!(
            c.classify(&member("@st2bot:x", "@st2bot:x", "join"), NONE),
            None
        );
        assert_eq!(
            c.classify(&member("@st2bot:x", "@st2bot:x", "leave"), NONE),
            None
        );
        assert_eq!(
            c.classify(&member("@alice:x", "@bob:x", "invite"), NONE),
            None
        );
    }

    #[test]
    fn encrypted_events_need_work_until_the_room_got_its_notice() {
        let c = classifier();
        let encrypted = event(json!({"type": "m.room.encrypted", "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "sender_key": "k", "device_id": "D", "session_id": "s"}}));
        assert_eq!(c.classify(&encrypted, NONE), Some(Kind::Encrypted));
        assert_eq!(
            c.classify(
                &encrypted,
                &Facts {
                    noticed: true,
                    direct: false
                }
            ),
            None
        );
    }

    #[test]
    fn with_encryption_on_every_encrypted_message_and_encryption_change_needs_work() {
        let c = classifier();
        let encrypted = event(json!({"type": "m.room.encrypted", "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "sender_key": "k", "device_id": "D", "session_id": "s"}}));
        assert_eq!(c.classify(&encrypted, &Decrypting), Some(Kind::Encrypted));
        let switched_on = event(json!({"type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}));
        assert_eq!(c.classify(&switched_on, &Decrypting), Some(Kind::Encrypted));
        let own = event(
            json!({"type": "m.room.encrypted", "sender": "@st2bot:x", "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "sender_key": "k", "device_id": "D", "session_id": "s"}}),
        );
        assert_eq!(
            c.classify(&own, &Decrypting),
            None,
            "the bot's own messages are not read back"
        );
    }

    fn addressing() -> Addressing {
        Addressing {
            prefix: "!st2".into(),
            bot: "@st2bot:example.org".try_into().unwrap(),
            displayname: "StackStorm".into(),
        }
    }

    #[test]
    fn the_prefix_must_stand_alone_or_be_followed_by_help() {
        let a = addressing();
        assert_eq!(a.command("!st2 ping", false), Some("ping"));
        assert_eq!(
            a.command("  !st2   deploy web  ", false),
            Some("deploy web")
        );
        assert_eq!(a.command("!st2", false), Some(""));
        assert_eq!(a.command("!st2help", false), Some("help"));
        assert_eq!(a.command("!st2help pack", false), Some("help pack"));
        assert_eq!(a.command("!st2ping", false), None);
        assert_eq!(a.command("!st2helper", false), None);
        assert_eq!(a.command("say !st2 ping", false), None);
    }

    #[test]
    fn a_mention_addresses_the_bot() {
        let a = addressing();
        assert_eq!(
            a.command("StackStorm: deploy web", false),
            Some("deploy web")
        );
        assert_eq!(
            a.command("stackstorm, deploy web", false),
            Some("deploy web")
        );
        assert_eq!(a.command("@st2bot:example.org: ping", false), Some("ping"));
        assert_eq!(a.command("st2bot: ping", false), Some("ping"));
        assert_eq!(a.command("StackStorm: !st2 ping", false), Some("ping"));
        assert_eq!(a.command("StackStorm is great", false), None);
    }

    #[test]
    fn every_message_in_a_direct_chat_is_a_command() {
        let a = addressing();
        assert_eq!(a.command("deploy web", true), Some("deploy web"));
        assert_eq!(a.command("!st2 deploy web", true), Some("deploy web"));
        assert_eq!(a.command("deploy web", false), None);
    }

    #[test]
    fn a_reply_fallback_is_stripped_before_matching() {
        let a = addressing();
        let body = "> <@bob:x> earlier message\n> second quoted line\n\n!st2 ping";
        assert_eq!(a.command(body, false), Some("ping"));
        assert_eq!(strip_reply_fallback("> only a quote"), "");
        assert_eq!(strip_reply_fallback("no quote"), "no quote");
    }
}
