//! Target `webhook`: bodies posted to `/chatops/message` and `/hubot/st2`.
//!
//! Property: for any body (and, for hubot, a JSON or form content type),
//! [`webhook::parse_errbot`] and [`webhook::parse_hubot`] return an announcement or the 400's
//! message without panicking; an accepted announcement renders into Matrix messages
//! ([`render::render`], with and without a mention) without panicking; and
//! [`render::split_markdown`], run with a small chunk size taken from the input so that its
//! cutting and fence-reopening paths are reached with short inputs, returns chunks that
//! together keep every non-fence character of the text.
//!
//! Half the inputs are raw bodies; the other half are JSON objects with fuzz-chosen fields in
//! the shapes StackStorm sends (string or object `message`, lenient `whisper`, `extra.matrix`).

use arbitrary::{Result, Unstructured};
use ruma::UserId;
use serde_json::{Value, json};
use st2_matrix::{
    results::render::{self, MatrixExtra},
    webhook,
};

/// A plausible webhook body.
fn structured(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const MESSAGES: &[&str] = &[
        "done",
        "pre{~}text",
        "pre{~}",
        "{~}",
        "```\ncode\n```",
        "```rust\nlet x;\n",
        "~~~\na\n~~~",
        "# title\n\n* a\n* b",
        "<script>x</script>",
        "**b** _i_ `c`",
        "line\nline\nline",
        " ",
    ];
    let message: Value = match u.int_in_range(0..=3)? {
        0 => Value::from(u.arbitrary::<&str>()?),
        1 => json!({"k": u.arbitrary::<&str>()?, "n": [1, 2]}),
        _ => {
            let mut s = String::new();
            for _ in 0..u.int_in_range(1..=6)? {
                s.push_str(u.choose(MESSAGES)?);
                s.push('\n');
            }
            Value::from(s)
        }
    };
    let mut body = json!({
        "channel": *u.choose(&["!r:x", "#alias:x", "@alice:x", "general", " ", ""])?,
        "message": message,
    });
    if u.arbitrary()? {
        body["user"] = Value::from(*u.choose(&["@alice:x", "alice", "", "@:"])?);
    }
    if u.arbitrary()? {
        body["whisper"] = match u.int_in_range(0..=3)? {
            0 => Value::from(u.arbitrary::<bool>()?),
            1 => Value::from(*u.choose(&["true", "Yes", "0", "no"])?),
            2 => Value::from(u.int_in_range(-1..=2)?),
            _ => Value::Null,
        };
    }
    if u.arbitrary()? {
        body["extra"] = json!({"matrix": {
            "msgtype": *u.choose(&["m.text", "m.notice", "x"])?,
            "formatted_body": *u.choose(&["<b>x</b>", "<img src=x onerror=y>", "<a href='javascript:x'>y</a>", "<"])?,
            "thread": u.arbitrary::<bool>()?,
        }});
    }
    if u.arbitrary()? {
        body["context"] = json!({"room_id": "!r:x", "event_id": "$e", "sender": "@alice:x"});
    }
    Ok(serde_json::to_vec(&body).expect("a JSON value serialises"))
}

/// Runs one input (see the module doc for the property). Byte 0 picks the endpoint and the
/// mode (bit 2: structured), byte 1 the chunk size for `split_markdown`, the rest is the body
/// itself in raw mode, so a seed is two bytes and a real body.
pub fn run(data: &[u8]) {
    let [mode, max, rest @ ..] = data else {
        return;
    };
    let max = usize::from(max % 64) + 1;
    let body = if mode & 4 == 0 {
        rest.to_vec()
    } else {
        match structured(&mut Unstructured::new(rest)) {
            Ok(body) => body,
            Err(_) => return,
        }
    };
    let parsed = match mode % 4 {
        0 => webhook::parse_errbot(&body),
        1 => webhook::parse_hubot(Some("application/json"), &body),
        2 => webhook::parse_hubot(None, &body),
        _ => webhook::parse_hubot(Some("application/x-www-form-urlencoded"), &body),
    };
    let Ok(announcement) = parsed else {
        return;
    };
    let _ = MatrixExtra::from_extra(announcement.extra.as_ref());
    let _ = render::render(&announcement, None);
    if let Some(user) = announcement
        .user
        .as_deref()
        .and_then(|u| UserId::parse(u).ok())
    {
        let _ = render::render(&announcement, Some(&user));
    }
    let markdown = render::join_pretext(&announcement.message);
    let chunks = render::split_markdown(&markdown, max);
    // Splitting only adds fence lines and drops a blank tail: every other character survives,
    // in order.
    let kept: String = chunks.concat();
    let mut rest = kept.chars();
    for c in markdown.chars().filter(|c| !c.is_whitespace()) {
        assert!(
            rest.any(|k| k == c),
            "split_markdown(_, {max}) lost {c:?} of {markdown:?}: {chunks:?}"
        );
    }
}
