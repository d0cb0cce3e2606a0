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

/// A Markdown notice: the plain `body` is the Markdown source, `formatted_body` the rendered
/// HTML (only when the Markdown has formatting). See [`markdown_to_html`] for what is allowed.
pub fn notice_markdown(markdown: &str) -> RoomMessageEventContent {
    match markdown_to_html(markdown) {
        Some(html) => RoomMessageEventContent::notice_html(markdown, html),
        None => RoomMessageEventContent::notice_plain(markdown),
    }
}

/// A notice with a plain body and HTML written by the bridge itself (already escaped).
pub fn notice_html(plain: &str, html: String) -> RoomMessageEventContent {
    RoomMessageEventContent::notice_html(plain, html)
}

/// Renders Markdown to HTML that is safe to send whatever the text contains. Text that reaches
/// a room often includes what people typed (StackStorm renders command parameters into ack and
/// result messages), so raw HTML in the Markdown is shown as text, not passed through, and links
/// keep only http(s) and mailto targets. Returns `None` when the text has no formatting at all.
pub fn markdown_to_html(markdown: &str) -> Option<String> {
    use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag};

    let mut formatted = false;
    let events = Parser::new_ext(
        markdown,
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES,
    )
    .map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            formatted = true;
            let safe = ["http://", "https://", "mailto:"]
                .iter()
                .any(|s| dest_url.to_ascii_lowercase().starts_with(s));
            let dest_url = if safe { dest_url } else { CowStr::Borrowed("") };
            Event::Start(Tag::Link {
                link_type: if safe { link_type } else { LinkType::Inline },
                dest_url,
                title,
                id,
            })
        }
        Event::Start(Tag::Image { dest_url, .. }) => {
            // Matrix images must be mxc:// URLs; an external image would leak the reader's IP.
            formatted = true;
            Event::Text(dest_url)
        }
        Event::End(pulldown_cmark::TagEnd::Image) => Event::Text(CowStr::Borrowed("")),
        Event::Start(Tag::Paragraph)
        | Event::End(pulldown_cmark::TagEnd::Paragraph)
        | Event::Text(_)
        | Event::SoftBreak => event,
        other => {
            formatted = true;
            other
        }
    });
    let mut html = String::with_capacity(markdown.len() + markdown.len() / 4);
    pulldown_cmark::html::push_html(&mut html, events);
    if !formatted {
        return None;
    }
    let html = html.trim_end();
    // A single paragraph needs no <p> wrapper (clients render it with extra margins).
    let html = match html
        .strip_prefix("<p>")
        .and_then(|h| h.strip_suffix("</p>"))
    {
        Some(inner) if !inner.contains("<p>") => inner,
        _ => html,
    };
    Some(html.to_owned())
}

/// Escapes text for inclusion in HTML written by the bridge.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Puts `content` in the command's thread (rooted at the command itself when it was not in a
/// thread) as a reply to it: how acks and results of StackStorm commands are posted, so a
/// busy room shows one thread per command.
pub fn in_thread(mut content: RoomMessageEventContent, origin: &Origin) -> RoomMessageEventContent {
    let root = origin
        .thread_root
        .clone()
        .unwrap_or_else(|| origin.event_id.clone());
    content.relates_to = Some(Relation::Thread(Thread::reply(
        root,
        origin.event_id.clone(),
    )));
    if content.mentions.is_none() {
        content.mentions = Some(Mentions::with_user_ids([origin.sender.clone()]));
    }
    content
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

/// `text` on one line, shortened, for quoting a command back inside backticks.
pub fn one_line(text: &str) -> String {
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('`', "'");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(119).collect::<String>())
    } else {
        line
    }
}

/// A size in bytes as people read it: `512 B`, `48 KiB` (rounded up), `1.5 MiB`.
pub fn human_size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
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
    fn markdown_renders_formatting_and_code() {
        assert_eq!(markdown_to_html("plain text"), None);
        assert_eq!(
            markdown_to_html("*ran* `date`").unwrap(),
            "<em>ran</em> <code>date</code>"
        );
        let block = markdown_to_html("out:\n```\nline 1\nline 2\n```").unwrap();
        assert!(
            block.contains("<pre><code>line 1\nline 2\n</code></pre>"),
            "{block}"
        );
    }

    #[test]
    fn raw_html_and_unsafe_links_are_neutralised() {
        let html =
            markdown_to_html("*x* <img src=x onerror=alert(1)> <script>alert(1)</script>").unwrap();
        assert!(
            !html.contains("<img") && !html.contains("<script"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let html = markdown_to_html("[click](javascript:alert(1)) [ok](https://st2.example.org/x)")
            .unwrap();
        assert!(!html.contains("javascript:"), "{html}");
        assert!(
            html.contains(r#"href="https://st2.example.org/x""#),
            "{html}"
        );
        let html = markdown_to_html("![pic](https://tracker.example/p.png)").unwrap();
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn html_escaping_covers_quotes() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_top_level_command_gets_a_thread_rooted_at_it() {
        let json = serde_json::to_value(in_thread(notice("ack"), &origin(None))).unwrap();
        let rel = &json["m.relates_to"];
        assert_eq!(
            (rel["rel_type"].as_str(), rel["event_id"].as_str()),
            (Some("m.thread"), Some("$cmd"))
        );
        assert_eq!(rel["m.in_reply_to"]["event_id"], "$cmd");
        let json = serde_json::to_value(in_thread(notice("ack"), &origin(Some("$root")))).unwrap();
        assert_eq!(json["m.relates_to"]["event_id"], "$root");
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
