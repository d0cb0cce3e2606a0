//! "Did you mean": the help strings closest to a command that matched nothing.
//!
//! Separate from matching because only a reply to a failed command needs it, it costs more
//! than a match, and it follows no StackStorm rule (st2 has no suggestions): the rule is ours,
//! documented on [`Matcher`].

use super::{MAX_SUGGESTIONS, Matcher, TextSpan, to_u32};
use crate::pyre::arena::FastMap;

/// "Did you mean" data: normalised help strings grouped by their first word.
pub(super) struct Suggestions {
    /// `(entry, normalised key)` per help string.
    pub(super) items: Vec<(u32, TextSpan)>,
    pub(super) by_first_word: FastMap<Box<str>, Vec<u32>>,
}

impl Matcher {
    /// [`Matcher::closest`].
    pub(super) fn closest_displays(&self, command: &str) -> Vec<String> {
        let words: Vec<Vec<char>> = command
            .split_whitespace()
            .map(|w| w.to_lowercase().chars().collect())
            .collect();
        let Some(first) = words.first() else {
            return Vec::new();
        };
        // The command's words joined by single spaces; `ends[n - 1]` ends the first n words.
        let mut joined: Vec<char> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        for w in &words {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.extend_from_slice(w);
            ends.push(joined.len());
        }
        let allowed = (first.len() / 3).max(1);
        let mut dist = EditDistance::default();
        let patterns: Vec<Myers> = (1..=ends.len())
            .map(|n| Myers::new(&joined[..ends[n - 1]]))
            .collect();
        let mut key: Vec<char> = Vec::new();
        // Best (distance, item) pairs so far, kept sorted; distinct displays are picked later,
        // so keep a few spare in case several items share a help string.
        let keep = MAX_SUGGESTIONS * 4;
        let mut best: Vec<(usize, u32)> = Vec::new();
        for (word, members) in &self.suggestions.by_first_word {
            key.clear();
            key.extend(word.chars());
            if dist.bounded(first, &key, allowed) > allowed {
                continue;
            }
            for &m in members {
                let text = self.text(self.suggestions.items[m as usize].1);
                let n_words = text.split(' ').count().min(ends.len());
                let d = patterns[n_words - 1].distance(text);
                if best.len() < keep || (d, m) < best[keep - 1] {
                    let at = best.partition_point(|&(bd, bm)| (bd, bm) < (d, m));
                    best.insert(at, (d, m));
                    best.truncate(keep);
                }
            }
        }
        let mut out: Vec<String> = Vec::new();
        for (_, m) in best {
            let entry = self.suggestions.items[m as usize].0;
            let Some(display) = self.display(entry) else {
                continue;
            };
            if !out.iter().any(|d| d == display) {
                out.push(display.to_owned());
            }
            if out.len() == MAX_SUGGESTIONS {
                break;
            }
        }
        out
    }
}

/// Appends [`suggestion_key`]`(display)` to `text`, returning its span.
pub(super) fn push_suggestion_key(text: &mut String, display: &str) -> TextSpan {
    let start = text.len();
    write_suggestion_key(text, display);
    TextSpan {
        start: to_u32(start),
        len: to_u32(text.len() - start),
    }
}

/// Lowercases a help string and drops placeholders, leaving its literal words separated by
/// single spaces.
#[cfg(test)]
fn suggestion_key(display: &str) -> String {
    let mut out = String::new();
    write_suggestion_key(&mut out, display);
    out
}

/// Writes the suggestion key of `display` at the end of `text`.
fn write_suggestion_key(text: &mut String, display: &str) {
    let base = text.len();
    let mut pending_space = false;
    let push = |out: &mut String, c: char, pending: &mut bool| {
        if c.is_whitespace() {
            *pending = out.len() > base;
        } else {
            if *pending {
                out.push(' ');
                *pending = false;
            }
            if c.is_ascii() {
                // Help strings are mostly ASCII; skip the general case-mapping iterator.
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        }
    };
    let mut chars = display.chars().peekable();
    let mut depth_angle = 0usize;
    let mut depth_square = 0usize;
    let mut in_braces = false;
    while let Some(c) = chars.next() {
        if in_braces {
            if c == '}' && chars.peek() == Some(&'}') {
                chars.next();
                in_braces = false;
                push(text, ' ', &mut pending_space);
            }
            continue;
        }
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                in_braces = true;
            }
            '<' => depth_angle += 1,
            '>' if depth_angle > 0 => {
                depth_angle -= 1;
                push(text, ' ', &mut pending_space);
            }
            '[' => depth_square += 1,
            ']' if depth_square > 0 => {
                depth_square -= 1;
                push(text, ' ', &mut pending_space);
            }
            _ if depth_angle > 0 || depth_square > 0 => {}
            c => push(text, c, &mut pending_space),
        }
    }
}

pub(super) fn build_suggestions(text: &str, sources: Vec<(u32, TextSpan)>) -> Suggestions {
    let mut items = Vec::with_capacity(sources.len());
    let mut by_first_word: FastMap<Box<str>, Vec<u32>> = FastMap::default();
    for (entry, span) in sources {
        let key = &text[span.start as usize..(span.start + span.len) as usize];
        let Some(first) = key.split(' ').next().filter(|w| !w.is_empty()) else {
            continue;
        };
        let item = to_u32(items.len());
        match by_first_word.get_mut(first) {
            Some(members) => members.push(item),
            None => {
                by_first_word.insert(first.into(), vec![item]);
            }
        }
        items.push((entry, span));
    }
    Suggestions {
        items,
        by_first_word,
    }
}

/// Edit distance over characters counting an adjacent transposition as one edit (optimal
/// string alignment), so the usual typo `pakc` is one edit away from `pack`. Rows are reused
/// across calls.
#[derive(Default)]
struct EditDistance {
    rows: [Vec<usize>; 3],
}

impl EditDistance {
    /// The distance, or some value above `cutoff` as soon as it is certain to exceed it.
    fn bounded(&mut self, a: &[char], b: &[char], cutoff: usize) -> usize {
        if a.len().abs_diff(b.len()) > cutoff {
            return cutoff.saturating_add(1);
        }
        let width = b.len() + 1;
        for row in &mut self.rows {
            row.clear();
            row.resize(width, 0);
        }
        for (j, cell) in self.rows[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            let (cur, prev, prev2) = (i % 3, (i + 2) % 3, (i + 1) % 3);
            self.rows[cur][0] = i;
            let mut row_min = i;
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut d = (self.rows[prev][j - 1] + cost)
                    .min(self.rows[prev][j] + 1)
                    .min(self.rows[cur][j - 1] + 1);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d = d.min(self.rows[prev2][j - 2] + 1);
                }
                self.rows[cur][j] = d;
                row_min = row_min.min(d);
            }
            // Distances never decrease from one row to the next's minimum.
            if row_min > cutoff {
                return cutoff.saturating_add(1);
            }
        }
        self.rows[a.len() % 3][b.len()]
    }
}

/// Myers' bit-parallel Levenshtein distance (Hyyrö's formulation for whole strings), with the
/// pattern's first 64 characters preprocessed once and compared against many texts.
struct Myers {
    /// Bit masks of pattern positions per character (ASCII in a table, others in a list).
    ascii: [u64; 128],
    other: Vec<(char, u64)>,
    len: usize,
}

impl Myers {
    fn new(pattern: &[char]) -> Self {
        let pattern = &pattern[..pattern.len().min(64)];
        let mut ascii = [0u64; 128];
        let mut other: Vec<(char, u64)> = Vec::new();
        for (i, &c) in pattern.iter().enumerate() {
            let bit = 1u64 << i;
            match usize::try_from(u32::from(c)).ok().filter(|&u| u < 128) {
                Some(u) => ascii[u] |= bit,
                None => match other.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, mask)) => *mask |= bit,
                    None => other.push((c, bit)),
                },
            }
        }
        Self {
            ascii,
            other,
            len: pattern.len(),
        }
    }

    fn mask(&self, c: char) -> u64 {
        match usize::try_from(u32::from(c)).ok().filter(|&u| u < 128) {
            Some(u) => self.ascii[u],
            None => self
                .other
                .iter()
                .find(|(k, _)| *k == c)
                .map_or(0, |(_, m)| *m),
        }
    }

    fn distance(&self, text: &str) -> usize {
        let m = self.len;
        if m == 0 {
            return text.chars().count();
        }
        let high = 1u64 << (m - 1);
        let mut pv: u64 = if m == 64 { u64::MAX } else { (1u64 << m) - 1 };
        let mut mv: u64 = 0;
        let mut score = m;
        for c in text.chars() {
            let eq = self.mask(c);
            let xv = eq | mv;
            let xh = ((eq & pv).wrapping_add(pv) ^ pv) | eq;
            let mut ph = mv | !(xh | pv);
            let mut mh = pv & xh;
            if ph & high != 0 {
                score += 1;
            } else if mh & high != 0 {
                score -= 1;
            }
            // Row 0 of the table grows by one per text character (whole-string distance).
            ph = (ph << 1) | 1;
            mh <<= 1;
            pv = mh | !(xv | ph);
            mv = ph & xv;
        }
        score
    }
}

#[cfg(test)]
fn edit_distance(a: &[char], b: &[char]) -> usize {
    EditDistance::default().bounded(a, b, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::MatchOutcome;
    use super::super::test_support::alias;
    use super::*;

    #[test]
    fn no_match_suggests_close_help_strings() {
        let m = Matcher::build(&[
            alias(
                r#"{"name": "i", "pack": "packs", "formats": [{"display": "pack install <pack>", "representation": ["pack install {{ packs }}"]}]}"#,
            ),
            alias(
                r#"{"name": "s", "pack": "packs", "formats": [{"display": "pack search <query>", "representation": ["pack search {{ query }}"]}]}"#,
            ),
            alias(r#"{"name": "r", "pack": "core", "formats": ["run {{cmd}} on {{hosts}}"]}"#),
        ]);
        assert!(matches!(
            m.match_command("pakc instal st2"),
            MatchOutcome::NoMatch
        ));
        let closest = m.closest("pakc instal st2");
        assert_eq!(
            closest.first().map(String::as_str),
            Some("pack install <pack>")
        );
        assert!(!closest.iter().any(|d| d.starts_with("run")));
        assert!(matches!(m.match_command("zzzz"), MatchOutcome::NoMatch));
        assert!(m.closest("zzzz").is_empty());
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("pakc", "pack"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("kitten", "sitting"), 3);
    }

    #[test]
    fn myers_matches_plain_levenshtein() {
        fn levenshtein(a: &[char], b: &[char]) -> usize {
            let mut prev: Vec<usize> = (0..=b.len()).collect();
            for (i, ca) in a.iter().enumerate() {
                let mut cur = vec![i + 1; b.len() + 1];
                for (j, cb) in b.iter().enumerate() {
                    cur[j + 1] = (prev[j] + usize::from(ca != cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1);
                }
                prev = cur;
            }
            prev[b.len()]
        }
        let words = [
            "",
            "pack",
            "pakc instal",
            "kitten",
            "sitting",
            "grüße anna",
            "run date on web1",
        ];
        for a in words {
            for b in words {
                let ac: Vec<char> = a.chars().collect();
                let bc: Vec<char> = b.chars().collect();
                assert_eq!(
                    Myers::new(&ac).distance(b),
                    levenshtein(&ac, &bc),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn suggestion_keys_drop_placeholders() {
        assert_eq!(
            suggestion_key("pack install <pack_name|git_url>[,<pack_name|git_url>]"),
            "pack install"
        );
        assert_eq!(suggestion_key("Run {{cmd}} on {{ hosts }}"), "run on");
    }
}
