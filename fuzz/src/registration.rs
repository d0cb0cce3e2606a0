//! Target `registration`: the appservice registration loader.
//!
//! Property: for any text, [`registration::parse`] returns a registration or an error without
//! panicking, and for a registration it accepts, the user namespace built from it
//! ([`UserNamespace::from_registration`], whose regexes are Python regexes run by pyre) either
//! compiles or says why, and then answers `contains` for a few user ids without panicking.
//!
//! Inputs are raw text half the time; otherwise a registration assembled from
//! fuzz-chosen YAML lines (including odd scalars, flow collections, anchors and tags), so the
//! YAML reader and the field checks both get exercised.

use arbitrary::{Result, Unstructured};
use ruma::UserId;
use st2_matrix::registration::{self, UserNamespace};

/// Registration-ish YAML text from fuzz bytes.
fn structured(u: &mut Unstructured<'_>) -> Result<String> {
    const LINES: &[&str] = &[
        "id: st2-matrix",
        "id: ",
        "id: [1, 2]",
        "url: http://127.0.0.1:9000",
        "url: null",
        "url: ~",
        "as_token: a",
        "hs_token: h",
        "as_token: 'q''uoted'",
        "hs_token: \"esc\\u00e9\"",
        "sender_localpart: st2bot",
        "sender_localpart: 7",
        "rate_limited: false",
        "rate_limited: yes",
        "receive_ephemeral: true",
        "org.matrix.msc3202: true",
        "de.sorunome.msc2409.push_ephemeral: true",
        "protocols: []",
        "protocols: [a, b]",
        "namespaces:",
        "  users:",
        "  aliases: []",
        "  rooms: []",
        "  - exclusive: true",
        "    regex: '@st2_.*:x'",
        "    regex: \"@st2_.*\"",
        "    regex: '('",
        "    regex: '(?P<x>a)(?P=x)'",
        "    exclusive: false",
        "    regex: !!str 5",
        "namespaces: {users: [{exclusive: true, regex: '@x.*'}]}",
        "a: &anchor x",
        "b: *anchor",
        "c: *missing",
        "? complex",
        ": value",
        "---",
        "...",
        "%YAML 1.2",
        "# comment",
        "key: |",
        "  block",
        "key: >-",
        "\t- tab",
        "  - - nested",
        "x: {a: [b, {c: d}]}",
        "'\\x': 1",
        "dup: 1",
        "dup: 2",
        "",
        " ",
        "- list",
        "[",
        "{",
        "\"unterminated",
        "x: !tag y",
    ];
    let n = u.int_in_range(0..=24)?;
    let mut text = String::new();
    for _ in 0..n {
        if u.ratio(1, 10)? {
            let raw: &str = u.arbitrary()?;
            text.push_str(raw);
        } else {
            text.push_str(u.choose(LINES)?);
        }
        text.push('\n');
    }
    Ok(text)
}

/// Runs one input (see the module doc for the property). Byte 0 picks the mode (odd:
/// structured); the rest is the YAML itself in raw mode, so a seed is one byte and a real file.
pub fn run(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let text = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        match structured(&mut Unstructured::new(rest)) {
            Ok(text) => text,
            Err(_) => return,
        }
    };
    let Ok(registration) = registration::parse(&text) else {
        return;
    };
    let Ok(namespace) = UserNamespace::from_registration(&registration) else {
        return;
    };
    for user in ["@st2_a:x", "@st2bot:x", "@alice:example.org", "@x:y"] {
        let user = UserId::parse(user).expect("a valid user id");
        let _ = namespace.contains(&user);
    }
}
