//! An allowlist sanitiser for HTML that comes from outside (`extra.matrix.formatted_body` in a
//! StackStorm result): only the tags and attributes the Matrix spec lists for `formatted_body`
//! survive; links keep only http(s), ftp, mailto and magnet targets; images (external ones
//! would leak readers' addresses), scripts, styles and comments are removed; anything that is
//! not a well-formed tag is escaped as text.

/// Tags the Matrix spec allows in `formatted_body` (images excluded, see the module doc).
const TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "strike",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "details",
    "summary",
];

/// Elements removed together with their content.
const DROP_WITH_CONTENT: &[&str] = &[
    "script", "style", "head", "title", "iframe", "object", "embed", "svg", "math", "template",
];

/// Sanitises `input`.
pub fn sanitize(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        match parse_tag(rest) {
            Some((tag, len)) => {
                rest = &rest[len..];
                if !tag.closing && DROP_WITH_CONTENT.contains(&tag.name.as_str()) {
                    let close = format!("</{}", tag.name);
                    let lower = rest.to_ascii_lowercase();
                    rest = match lower.find(&close) {
                        Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                        None => "",
                    };
                } else if TAGS.contains(&tag.name.as_str()) {
                    push_tag(&mut out, &tag);
                }
            }
            None => {
                out.push_str("&lt;");
                rest = &rest[1..];
            }
        }
    }
    push_text(&mut out, rest);
    out
}

struct Tag {
    name: String,
    closing: bool,
    attributes: Vec<(String, String)>,
}

/// Parses a tag at the start of `s`; returns it and its length in bytes.
fn parse_tag(s: &str) -> Option<(Tag, usize)> {
    let bytes = s.as_bytes();
    let mut i = 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
        i += 1;
    }
    if i == name_start {
        return None;
    }
    let name = s[name_start..i].to_ascii_lowercase();
    let mut attributes = Vec::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i)? {
            b'>' => {
                return Some((
                    Tag {
                        name,
                        closing,
                        attributes,
                    },
                    i + 1,
                ));
            }
            b'/' if bytes.get(i + 1) == Some(&b'>') => {
                return Some((
                    Tag {
                        name,
                        closing,
                        attributes,
                    },
                    i + 2,
                ));
            }
            _ => {}
        }
        let attr_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        if i == attr_start {
            return None;
        }
        let attr = s[attr_start..i].to_ascii_lowercase();
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            match bytes.get(i)? {
                q @ (b'"' | b'\'') => {
                    let end = s[i + 1..].find(*q as char)? + i + 1;
                    value = decode_entities(&s[i + 1..end]);
                    i = end + 1;
                }
                _ => {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = decode_entities(&s[start..i]);
                }
            }
        }
        attributes.push((attr, value));
    }
}

fn push_tag(out: &mut String, tag: &Tag) {
    out.push('<');
    if tag.closing {
        out.push('/');
        out.push_str(&tag.name);
        out.push('>');
        return;
    }
    out.push_str(&tag.name);
    for (name, value) in &tag.attributes {
        if allowed_attribute(&tag.name, name, value) {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            out.push_str(&super::render::escape_html(value));
            out.push('"');
        }
    }
    out.push('>');
}

fn allowed_attribute(tag: &str, name: &str, value: &str) -> bool {
    match (tag, name) {
        ("a", "href") => {
            let v = value.trim().to_ascii_lowercase();
            ["http://", "https://", "ftp://", "mailto:", "magnet:"]
                .iter()
                .any(|s| v.starts_with(s))
        }
        ("a", "target") => value == "_blank",
        ("font" | "span", "data-mx-color" | "data-mx-bg-color") | ("font", "color") => {
            let v = value.trim_start_matches('#');
            v.len() == 6 && v.chars().all(|c| c.is_ascii_hexdigit())
        }
        ("span", "data-mx-spoiler") => true,
        ("code", "class") => value.strip_prefix("language-").is_some_and(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }),
        ("ol", "start") => value.parse::<u32>().is_ok(),
        _ => false,
    }
}

/// Text between tags: entities kept as written when well-formed, every other `&`, and any
/// stray `>`, escaped.
fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '>', '"']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix('&') {
            let entity_len = after.find(';').filter(|&n| {
                n > 0
                    && n <= 10
                    && after[..n]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '#')
            });
            match entity_len {
                Some(n) => {
                    out.push_str(&tail[..n + 2]);
                    rest = &tail[n + 2..];
                    continue;
                }
                None => out.push_str("&amp;"),
            }
        } else if tail.starts_with('>') {
            out.push_str("&gt;");
        } else {
            out.push_str("&quot;");
        }
        rest = &tail[1..];
    }
    out.push_str(rest);
}

/// Decodes the few entities that matter for checking attribute values (so `&#106;avascript:`
/// cannot pass as something else).
fn decode_entities(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(end) = tail.find(';').filter(|&n| n <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_markup_is_kept() {
        let html = r#"<p>Deploy <strong>done</strong></p><pre><code class="language-bash">ls &amp;&amp; echo</code></pre><a href="https://st2.example.org/x">link</a>"#;
        assert_eq!(sanitize(html), html);
    }

    #[test]
    fn scripts_images_handlers_and_bad_links_go() {
        assert_eq!(sanitize("<script>alert(1)</script>ok"), "ok");
        assert_eq!(sanitize("<img src=https://evil/x.png>ok"), "ok");
        assert_eq!(sanitize(r#"<b onclick="alert(1)">x</b>"#), "<b>x</b>");
        assert_eq!(
            sanitize(r#"<a href="javascript:alert(1)">x</a>"#),
            "<a>x</a>"
        );
        assert_eq!(
            sanitize(r#"<a href="&#106;avascript:alert(1)">x</a>"#),
            "<a>x</a>"
        );
        assert_eq!(sanitize("<!-- secret -->visible"), "visible");
        assert_eq!(sanitize("<STYLE>p{}</style>after"), "after");
    }

    #[test]
    fn malformed_markup_becomes_text() {
        assert_eq!(
            sanitize("1 < 2 and 3 > 2 & so"),
            "1 &lt; 2 and 3 &gt; 2 &amp; so"
        );
        assert_eq!(sanitize("<b class=\"x"), "&lt;b class=&quot;x");
        assert_eq!(sanitize("<<b>>"), "&lt;<b>&gt;");
    }

    #[test]
    fn colours_and_code_languages_are_checked() {
        assert_eq!(
            sanitize(r##"<font data-mx-color="#ff0000">r</font>"##),
            r##"<font data-mx-color="#ff0000">r</font>"##
        );
        assert_eq!(
            sanitize(r#"<font color="red;background:url(x)">r</font>"#),
            "<font>r</font>"
        );
        assert_eq!(
            sanitize(r#"<code class="language-x onmouseover">c</code>"#),
            "<code>c</code>"
        );
    }
}
