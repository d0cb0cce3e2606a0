//! Turning a StackStorm announcement into Matrix messages.
//!
//! - `{~}` splits a *pretext* from the *text* (hubot's convention): the pretext comes first,
//!   then the text; `{~}` at the very end means "all pretext".
//! - A `user` that is set (and not whispered to) gets a mention pill in front, and is listed in
//!   `m.mentions` so Element notifies them.
//! - Markdown becomes sanitised HTML with a plain `body` (see [`render::markdown_to_html`]).
//! - `extra.matrix` may set `msgtype` (`m.notice`, the default, or `m.text`), `formatted_body`
//!   (HTML, sanitised), or `thread: false` (no thread).
//! - Text over the event size limit is split at line boundaries into several messages; a code
//!   block cut in two is closed and reopened so each part renders.
//! - Text over `[results] attach_over` is not split: [`render_summary`] gives its first lines
//!   and says the whole text is attached (the caller attaches it as a file).

use ruma::{
    UserId,
    events::{
        Mentions,
        room::message::{
            MessageType, NoticeMessageEventContent, RoomMessageEventContent,
            TextMessageEventContent,
        },
    },
};
use serde_json::Value;

use super::Announcement;
use crate::matrix::{
    html,
    render::{self, escape_html},
};

/// Bytes of Markdown per message. Matrix events are limited to 64 KiB of JSON, and a message
/// carries the text twice (body and HTML) plus JSON escaping.
pub const MAX_CHUNK_BYTES: usize = 20 * 1024;

/// The `extra.matrix` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatrixExtra {
    /// `m.text` instead of `m.notice`.
    pub text_msgtype: bool,
    /// Operator-supplied HTML.
    pub formatted_body: Option<String>,
    /// `thread: false`.
    pub no_thread: bool,
}

impl MatrixExtra {
    /// Reads `extra.matrix` (unknown keys and wrong types are ignored).
    pub fn from_extra(extra: Option<&Value>) -> MatrixExtra {
        let Some(matrix) = extra.and_then(|e| e.get("matrix")) else {
            return MatrixExtra::default();
        };
        MatrixExtra {
            text_msgtype: matrix.get("msgtype").and_then(Value::as_str) == Some("m.text"),
            formatted_body: matrix
                .get("formatted_body")
                .and_then(Value::as_str)
                .map(str::to_owned),
            no_thread: matrix.get("thread").and_then(Value::as_bool) == Some(false),
        }
    }
}

/// The messages for `announcement`, without relations (the caller adds reply/thread).
pub fn render(
    announcement: &Announcement,
    mention: Option<&UserId>,
) -> Vec<RoomMessageEventContent> {
    let extra = MatrixExtra::from_extra(announcement.extra.as_ref());
    let markdown = join_pretext(&announcement.message);
    let mut parts: Vec<(String, Option<String>)> = match &extra.formatted_body {
        // Operator HTML is kept whole when it fits; otherwise the text is sent without it.
        Some(html_body) if markdown.len() + html_body.len() <= 2 * MAX_CHUNK_BYTES => {
            vec![(markdown.clone(), Some(html::sanitize(html_body)))]
        }
        _ => split_markdown(&markdown, MAX_CHUNK_BYTES)
            .into_iter()
            .map(|chunk| {
                let html = render::markdown_to_html(&chunk);
                (chunk, html)
            })
            .collect(),
    };
    if let (Some(user), Some(first)) = (mention, parts.first_mut()) {
        let html = first
            .1
            .take()
            .unwrap_or_else(|| escape_html(&first.0).replace('\n', "<br>"));
        first.0 = format!("{user}: {}", first.0);
        first.1 = Some(format!(
            r#"<a href="https://matrix.to/#/{user}">{}</a>: {html}"#,
            escape_html(user.as_str())
        ));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (plain, html))| {
            let msgtype = match (extra.text_msgtype, html) {
                (false, Some(html)) => {
                    MessageType::Notice(NoticeMessageEventContent::html(plain, html))
                }
                (false, None) => MessageType::Notice(NoticeMessageEventContent::plain(plain)),
                (true, Some(html)) => MessageType::Text(TextMessageEventContent::html(plain, html)),
                (true, None) => MessageType::Text(TextMessageEventContent::plain(plain)),
            };
            let mut content = RoomMessageEventContent::new(msgtype);
            // Only the first part mentions the person: one notification per result.
            content.mentions = Some(match mention {
                Some(user) if i == 0 => Mentions::with_user_ids([user.to_owned()]),
                _ => Mentions::new(),
            });
            content
        })
        .collect()
}

/// Lines of a long result shown above its attachment.
const SUMMARY_LINES: usize = 12;
/// Bytes of a long result shown above its attachment, at most.
const SUMMARY_BYTES: usize = 1024;

/// The messages for a long `announcement` whose whole text is attached as `filename`: its
/// first lines (a code block cut there is closed), then a line naming the attachment. Mention,
/// msgtype and thread options apply as in [`render()`]; operator HTML does not (it is the whole
/// result, not its summary).
pub fn render_summary(
    announcement: &Announcement,
    mention: Option<&UserId>,
    filename: &str,
) -> Vec<RoomMessageEventContent> {
    let markdown = join_pretext(&announcement.message);
    let mut extra = announcement.extra.clone();
    if let Some(matrix) = extra
        .as_mut()
        .and_then(|e| e.get_mut("matrix"))
        .and_then(Value::as_object_mut)
    {
        matrix.remove("formatted_body");
    }
    let short = Announcement {
        message: summary(&markdown, filename),
        extra,
        ..announcement.clone()
    };
    render(&short, mention)
}

/// The first lines of `markdown` and a note that the whole of it is attached as `filename`.
pub fn summary(markdown: &str, filename: &str) -> String {
    let mut head = String::new();
    let mut fence: Option<&str> = None;
    for (lines, line) in markdown.split_inclusive('\n').enumerate() {
        if lines == SUMMARY_LINES || head.len() + line.len() > SUMMARY_BYTES {
            // A first line longer than the whole budget: show its beginning.
            if head.is_empty() {
                let mut cut = SUMMARY_BYTES.min(line.len());
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                head.push_str(&line[..cut]);
                head.push('…');
            }
            break;
        }
        head.push_str(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = match fence {
                Some(_) => None,
                None => Some(fence_marker(trimmed.trim_end())),
            };
        }
    }
    let mut text = head.trim_end().to_owned();
    if let Some(marker) = fence {
        text.push('\n');
        text.push_str(marker);
    }
    let size = crate::matrix::render::human_size(markdown.len());
    text.push_str(&format!(
        "\n\n… full output attached: `{filename}` ({size})"
    ));
    text
}

/// `pretext{~}text` → `pretext` then `text`; a trailing `{~}` leaves only the pretext.
pub fn join_pretext(message: &str) -> String {
    match message.split_once("{~}") {
        Some((pretext, text)) if text.trim().is_empty() => pretext.trim_end().to_owned(),
        Some((pretext, text)) if pretext.trim().is_empty() => text.trim_start().to_owned(),
        Some((pretext, text)) => format!("{}\n\n{}", pretext.trim_end(), text.trim_start()),
        None => message.to_owned(),
    }
}

/// Splits Markdown into chunks of at most `max` bytes at line boundaries (a longer line is cut
/// at a character boundary). A fenced code block that spans a cut is closed at the end of one
/// chunk and reopened, with the same fence line, at the start of the next.
pub fn split_markdown(text: &str, max: usize) -> Vec<String> {
    if text.len() <= max {
        return vec![text.to_owned()];
    }
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut open_fence: Option<String> = None;
    let close_len =
        |fence: &Option<String>| fence.as_ref().map_or(0, |f| fence_marker(f).len() + 1);
    for line in text.split_inclusive('\n') {
        let mut line = line;
        loop {
            let budget = max.saturating_sub(close_len(&open_fence)).max(1);
            if current.len() + line.len() <= budget {
                current.push_str(line);
                break;
            }
            // Flush only when `current` holds more than the fence line reopened by the last
            // flush (the line plus its newline): flushing that alone again makes no progress,
            // and the loop would spin forever (found by the webhook fuzz target).
            let reopened = open_fence.as_ref().map_or(0, |f| f.len() + 1);
            if !current.is_empty() && current.len() > reopened {
                flush(&mut chunks, &mut current, &open_fence);
                continue;
            }
            // A single line longer than a whole chunk: cut it.
            let room = budget.saturating_sub(current.len()).max(1);
            let mut cut = room.min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                cut = line.char_indices().nth(1).map_or(line.len(), |(i, _)| i);
            }
            current.push_str(&line[..cut]);
            line = &line[cut..];
            flush(&mut chunks, &mut current, &open_fence);
            if line.is_empty() {
                break;
            }
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            open_fence = match open_fence {
                Some(_) => None,
                None => Some(trimmed.trim_end().to_owned()),
            };
        }
    }
    if !current.trim().is_empty() {
        chunks.push(current);
    }
    chunks
}

fn fence_marker(fence_line: &str) -> &str {
    let c = fence_line.chars().next().unwrap_or('`');
    let n = fence_line.chars().take_while(|&x| x == c).count();
    &fence_line[..n]
}

fn flush(chunks: &mut Vec<String>, current: &mut String, open_fence: &Option<String>) {
    let mut chunk = std::mem::take(current);
    if let Some(fence) = open_fence {
        if !chunk.ends_with('\n') {
            chunk.push('\n');
        }
        chunk.push_str(fence_marker(fence));
        current.push_str(fence);
        current.push('\n');
    }
    chunks.push(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fence_line_that_fills_a_chunk_is_split_without_looping_forever() {
        // The reopened fence line alone leaves no room for the next line: each chunk then
        // carries one piece of it.
        let text = "```ab\nxxxxxxxx\n```\n";
        let chunks = split_markdown(text, 8);
        assert!(chunks.len() < text.len() * 2, "{chunks:?}");
        let kept: String = chunks.concat();
        assert_eq!(kept.matches('x').count(), 8, "{chunks:?}");
    }

    fn announcement(message: &str, extra: Option<Value>) -> Announcement {
        Announcement {
            channel: Some("!r:x".into()),
            message: message.into(),
            user: None,
            whisper: false,
            extra,
            context: None,
        }
    }

    fn json(content: &RoomMessageEventContent) -> Value {
        serde_json::to_value(content).unwrap()
    }

    #[test]
    fn pretext_and_text_are_joined_in_order() {
        assert_eq!(join_pretext("Done!{~}status: ok"), "Done!\n\nstatus: ok");
        assert_eq!(join_pretext("all plain{~}"), "all plain");
        assert_eq!(join_pretext("{~}only text"), "only text");
        assert_eq!(join_pretext("no marker"), "no marker");
    }

    #[test]
    fn markdown_becomes_a_notice_with_html() {
        let out = render(&announcement("**ok**\n```\nline\n```", None), None);
        let c = json(&out[0]);
        assert_eq!(c["msgtype"], "m.notice");
        assert_eq!(c["body"], "**ok**\n```\nline\n```");
        assert!(
            c["formatted_body"]
                .as_str()
                .unwrap()
                .contains("<pre><code>line\n</code></pre>")
        );
    }

    #[test]
    fn the_user_gets_a_mention_pill() {
        let user = UserId::parse("@alice:x").unwrap();
        let out = render(&announcement("done", None), Some(&user));
        let c = json(&out[0]);
        assert_eq!(c["body"], "@alice:x: done");
        assert_eq!(
            c["formatted_body"],
            r#"<a href="https://matrix.to/#/@alice:x">@alice:x</a>: done"#
        );
        assert_eq!(c["m.mentions"]["user_ids"], json!(["@alice:x"]));
    }

    #[test]
    fn extra_matrix_sets_msgtype_html_and_thread() {
        let extra = json!({"matrix": {"msgtype": "m.text", "formatted_body": "<b>hi</b><script>x</script>", "thread": false}});
        assert!(MatrixExtra::from_extra(Some(&extra)).no_thread);
        let c = json(&render(&announcement("hi", Some(extra)), None)[0]);
        assert_eq!(c["msgtype"], "m.text");
        assert_eq!(c["formatted_body"], "<b>hi</b>");
        assert_eq!(
            MatrixExtra::from_extra(Some(&json!({"color": "red"}))),
            MatrixExtra::default()
        );
    }

    #[test]
    fn long_output_is_split_at_lines_and_code_blocks_stay_closed() {
        let mut text = String::from("result:\n```\n");
        for i in 0..2000 {
            text.push_str(&format!("line {i} of the output\n"));
        }
        text.push_str("```\ndone\n");
        let chunks = split_markdown(&text, 4096);
        assert!(chunks.len() > 10);
        for chunk in &chunks {
            assert!(chunk.len() <= 4096, "{}", chunk.len());
            assert_eq!(
                chunk.matches("```").count() % 2,
                0,
                "fences balanced in:\n{chunk}"
            );
        }
        let rejoined: String = chunks.concat();
        assert!(rejoined.contains("line 1999 of the output") && rejoined.ends_with("done\n"));
        for i in [0, 777, 1999] {
            assert_eq!(rejoined.matches(&format!("line {i} of")).count(), 1);
        }
    }

    #[test]
    fn a_long_result_is_summarised_by_its_first_lines_with_the_code_block_closed() {
        let mut text = String::from("Execution 5f3 succeeded{~}stdout:\n```\n");
        for i in 0..5000 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("```\n");
        let user = UserId::parse("@alice:x").unwrap();
        let out = render_summary(&announcement(&text, None), Some(&user), "execution-5f3.txt");
        assert_eq!(out.len(), 1);
        let c = json(&out[0]);
        let body = c["body"].as_str().unwrap();
        assert!(
            body.starts_with("@alice:x: Execution 5f3 succeeded\n\nstdout:\n```\nline 0\n"),
            "{body}"
        );
        assert!(!body.contains("line 20\n"), "{body}");
        assert!(
            body.ends_with("```\n\n… full output attached: `execution-5f3.txt` (48 KiB)"),
            "{body}"
        );
        assert!(body.len() < 2 * 1024);
        assert_eq!(c["msgtype"], "m.notice");
        assert_eq!(c["m.mentions"]["user_ids"], serde_json::json!(["@alice:x"]));
        assert_eq!(body.matches("```").count() % 2, 0, "fences balanced");
    }

    #[test]
    fn a_summary_ignores_operator_html_and_cuts_a_huge_first_line() {
        let extra = json!({"matrix": {"formatted_body": "<b>all of it</b>", "msgtype": "m.text"}});
        let text = "é".repeat(40_000);
        let c = json(&render_summary(&announcement(&text, Some(extra)), None, "r.txt")[0]);
        let body = c["body"].as_str().unwrap();
        assert!(
            body.starts_with("éé") && body.contains("…\n\n… full output attached"),
            "{body}"
        );
        assert!(body.len() < 1200, "{}", body.len());
        assert_eq!(c["msgtype"], "m.text");
        assert!(
            !c["formatted_body"]
                .as_str()
                .unwrap_or("")
                .contains("all of it")
        );
    }

    #[test]
    fn a_huge_single_line_is_cut_on_char_boundaries() {
        let text = "é".repeat(5000);
        let chunks = split_markdown(&text, 1001);
        assert!(chunks.iter().all(|c| c.len() <= 1001));
        assert_eq!(chunks.concat(), text);
    }
}
