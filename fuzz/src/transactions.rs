//! Target `transactions`: appservice transaction bodies, as the homeserver pushes them.
//!
//! Property: for any transaction id and body, [`transactions::parse`] and
//! [`transactions::parse_events`] return (an error or the events) without panicking, and
//! every event that parses goes through the classifier (the step the handler runs next, with
//! room facts taken from the input) without panicking. A body that parses must also give the
//! same events through both functions.
//!
//! Half the inputs are raw bodies; the other half wrap fuzz-chosen event fields in a
//! well-formed transaction, so ruma's event deserialisers and the classifier's branches
//! (invites, commands, encrypted events) are reached, not only the JSON tokenizer.

use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use ruma::{
    RoomId,
    api::appservice::{Namespace, Namespaces, Registration, RegistrationInit},
};
use serde_json::{Value, json};
use st2_matrix::{
    addressing::{Addressing, Classifier, RoomFacts},
    appservice::transactions,
    registration::UserNamespace,
};

/// Room facts decided by the input's bits.
struct Facts(u8);

impl RoomFacts for Facts {
    fn encryption_noticed(&self, _: &RoomId) -> bool {
        self.0 & 1 != 0
    }
    fn is_direct(&self, _: &RoomId) -> bool {
        self.0 & 2 != 0
    }
    fn is_admin_room(&self, _: &RoomId) -> bool {
        self.0 & 4 != 0
    }
    fn decrypts(&self) -> bool {
        self.0 & 8 != 0
    }
}

/// The bot `@st2bot:x` with users `@st2_.*:x`, addressed as `!st2`.
fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        let mut namespaces = Namespaces::new();
        namespaces.users = vec![Namespace::new(true, "@st2_.*:x".into())];
        let registration = Registration::from(RegistrationInit {
            id: "fuzz".into(),
            url: None,
            as_token: "a".into(),
            hs_token: "h".into(),
            sender_localpart: "st2bot".into(),
            namespaces,
            rate_limited: None,
            protocols: None,
        });
        let bot: ruma::OwnedUserId = "@st2bot:x".try_into().expect("a valid user id");
        Classifier {
            bot: bot.clone(),
            namespace: UserNamespace::from_registration(&registration)
                .expect("the namespace regex compiles"),
            addressing: Addressing {
                prefix: "!st2".into(),
                bot,
                displayname: "StackStorm".into(),
            },
        }
    })
}

/// A transaction body with fuzz-chosen, mostly plausible events.
fn structured(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const TYPES: &[&str] = &[
        "m.room.message",
        "m.room.member",
        "m.room.encrypted",
        "m.room.encryption",
        "m.room.power_levels",
        "m.reaction",
        "m.room.name",
        "m.room.redaction",
    ];
    const USERS: &[&str] = &[
        "@st2bot:x",
        "@st2_a:x",
        "@alice:x",
        "@bob:y",
        "alice",
        "@:x",
        "",
    ];
    const BODIES: &[&str] = &[
        "!st2 run core.local cmd=date",
        "!st2",
        "StackStorm: help",
        "st2bot: run x",
        "> <@a:x> quoted\n\n!st2 help",
        "hello",
        "",
        "!st2 \u{0}",
        "!ST2 run",
    ];
    let n = u.int_in_range(0..=3)?;
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let ty = *u.choose(TYPES)?;
        let mut event = json!({
            "type": ty,
            "event_id": format!("$e{i}"),
            "room_id": *u.choose(&["!r:x", "!other:y", "r", ""])?,
            "sender": *u.choose(USERS)?,
            "origin_server_ts": u.int_in_range(0..=2_000_000_000_000u64)?,
        });
        let body: String = if u.ratio(1, 3)? {
            u.arbitrary()?
        } else {
            (*u.choose(BODIES)?).to_owned()
        };
        event["content"] = match ty {
            "m.room.member" => json!({
                "membership": *u.choose(&["invite", "join", "leave", "ban", "knock", "x"])?,
                "is_direct": u.arbitrary::<bool>()?,
            }),
            "m.room.encrypted" => json!({
                "algorithm": *u.choose(&["m.megolm.v1.aes-sha2", "m.olm.v1.curve25519-aes-sha2", "x"])?,
                "ciphertext": body, "session_id": "s", "sender_key": "k", "device_id": "D",
            }),
            "m.room.encryption" => json!({"algorithm": "m.megolm.v1.aes-sha2"}),
            "m.room.power_levels" => json!({"users": {"@alice:x": u.int_in_range(-5..=200)?}}),
            _ => json!({
                "msgtype": *u.choose(&["m.text", "m.notice", "m.emote", "m.image", "x"])?,
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": "<b>x</b>",
            }),
        };
        if ty.starts_with("m.room.m") && ty != "m.room.message" || u.ratio(1, 8)? {
            event["state_key"] = Value::from(*u.choose(USERS)?);
        }
        if u.ratio(1, 8)? {
            // A field of the wrong type, somewhere ruma must notice.
            let key = *u.choose(&[
                "content",
                "sender",
                "event_id",
                "origin_server_ts",
                "unsigned",
            ])?;
            event[key] = json!([1, "x", null]);
        }
        events.push(event);
    }
    let mut txn = json!({ "events": events });
    if u.ratio(1, 4)? {
        txn["ephemeral"] = json!([{"type": "m.receipt", "content": {}}]);
        txn["de.sorunome.msc2409.to_device"] =
            json!([{"type": "m.room_key", "sender": "@alice:x", "content": {}}]);
    }
    Ok(serde_json::to_vec(&txn).expect("a JSON value serialises"))
}

/// Runs one input (see the module doc for the property). Byte 0 is the room facts, byte 1
/// picks the mode (odd: structured), the rest is the body itself in raw mode, so a seed is
/// two bytes and a real transaction.
pub fn run(data: &[u8]) {
    let [facts, mode, rest @ ..] = data else {
        return;
    };
    let body = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match structured(&mut Unstructured::new(rest)) {
            Ok(body) => body,
            Err(_) => return,
        }
    };
    let txn_id = match mode >> 1 {
        0 => "1",
        1 => "",
        2 => "txn/with slash",
        _ => "1234567890",
    };
    let request = transactions::parse(txn_id, &body);
    let events = transactions::parse_events(&body);
    assert_eq!(
        request.is_ok(),
        events.is_ok(),
        "parse and parse_events disagree on whether the body is a transaction"
    );
    let Ok(events) = events else {
        return;
    };
    let classifier = classifier();
    let facts = Facts(*facts);
    for event in &events {
        let _ = classifier.classify(event, &facts);
    }
}
