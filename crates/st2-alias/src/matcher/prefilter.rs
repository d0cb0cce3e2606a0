//! Candidate selection: the few formats a command could match, found without running them.
//!
//! Every compiled format knows literal strings any match must contain. Each format is filed
//! under the rarest 4-byte window of those literals, so one pass over the command's windows
//! finds the candidates, whose literals are then checked. Kept apart from matching because it
//! must never change an outcome, only skip work: its tests check exactly that.

use super::{Entry, Matcher, to_u32};
use crate::format::{Command, FormatView, PackedFormat};
use crate::pyre::arena::{Arena, FastMap};

type WindowMap<V> = FastMap<u32, V>;

/// Width of the prefilter's byte windows.
const WINDOW: usize = 4;

fn window_at(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
}

/// Candidate selection: every format is filed under one 4-byte window of its required
/// literals, the rarest one across all formats, so that formats sharing leading words are still
/// told apart by a later, distinctive word.
pub(super) struct Prefilter {
    /// Window to `members[start..start + len]`.
    pub(super) index: WindowMap<(u32, u32)>,
    pub(super) members: Vec<u32>,
    /// Entries without a literal of at least four bytes.
    pub(super) always: Vec<u32>,
}

impl Matcher {
    /// Entries whose required literals all occur in the padded command, in build order.
    pub(super) fn candidates(&self, cmd: &Command) -> Vec<u32> {
        let haystack = cmd.padded();
        let bytes = haystack.as_bytes();
        let mut out = self.prefilter.always.clone();
        if bytes.len() >= WINDOW {
            for i in 0..=bytes.len() - WINDOW {
                if let Some(&(start, len)) = self.prefilter.index.get(&window_at(bytes, i)) {
                    out.extend_from_slice(
                        &self.prefilter.members[start as usize..(start + len) as usize],
                    );
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|&idx| {
            self.format(idx)
                .regex()
                .required_literals()
                .all(|lit| haystack.contains(lit))
        });
        out
    }
}

/// Dense ids for 4-byte windows: an open-addressing table with linear probing. Building the
/// prefilter looks up every window of every format (hundreds of thousands) among a few thousand
/// distinct ones; this small table does that several times faster than a general hash map.
struct WindowIds {
    /// `(window, id + 1)` per slot; id 0 marks an empty slot. The length is a power of two.
    slots: Vec<(u32, u32)>,
    /// Window of each id, in order of first sight.
    windows: Vec<u32>,
}

impl WindowIds {
    fn new() -> Self {
        Self {
            slots: vec![(0, 0); 1 << 12],
            windows: Vec::new(),
        }
    }

    fn slot_of(&self, w: u32) -> usize {
        // Fibonacci hashing: the top bits of the product index the table.
        let bits = self.slots.len().trailing_zeros();
        (w.wrapping_mul(0x9E37_79B9) >> (32 - bits)) as usize
    }

    /// The id of `w`, assigning the next one if it is new.
    fn id(&mut self, w: u32) -> u32 {
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(w);
        loop {
            let (key, id) = self.slots[i];
            if id == 0 {
                break;
            }
            if key == w {
                return id - 1;
            }
            i = (i + 1) & mask;
        }
        let id = to_u32(self.windows.len());
        self.windows.push(w);
        self.slots[i] = (w, id + 1);
        // Keep the load at most one half, so probe runs stay short.
        if self.windows.len() * 2 > self.slots.len() {
            self.grow();
        }
        id
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        self.slots = vec![(0, 0); size];
        let mask = size - 1;
        for (id, &w) in self.windows.iter().enumerate() {
            let mut i = self.slot_of(w);
            while self.slots[i].1 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (w, to_u32(id) + 1);
        }
    }
}

/// Prefilter construction. Every entry's 4-byte windows are collected once; distinct windows get
/// dense ids so that counting document frequencies (how many entries contain a window) and
/// picking each entry's rarest window are array lookups rather than a second round of hashing.
pub(super) fn build_prefilter(
    arena: &Arena,
    formats: &[PackedFormat],
    entries: &[Entry],
) -> Prefilter {
    let mut ids = WindowIds::new();
    // Per id: the number of entries containing the window, and the last entry counted.
    let mut frequency: Vec<u32> = Vec::new();
    let mut counted_for: Vec<u32> = Vec::new();
    // Every entry's window ids (repeats allowed): `entry_ids[bounds[i]..bounds[i + 1]]`.
    let mut entry_ids: Vec<u32> = Vec::with_capacity(entries.len() * 16);
    let mut bounds: Vec<u32> = Vec::with_capacity(entries.len() + 1);
    bounds.push(0);
    for (idx, entry) in entries.iter().enumerate() {
        let idx = to_u32(idx);
        for lit in FormatView::new(arena, &formats[entry.format as usize])
            .regex()
            .required_literals()
        {
            let b = lit.as_bytes();
            if b.len() < WINDOW {
                continue;
            }
            for i in 0..=b.len() - WINDOW {
                let id = ids.id(window_at(b, i));
                let k = id as usize;
                if k == frequency.len() {
                    frequency.push(0);
                    counted_for.push(u32::MAX);
                }
                if counted_for[k] != idx {
                    counted_for[k] = idx;
                    frequency[k] += 1;
                }
                entry_ids.push(id);
            }
        }
        bounds.push(to_u32(entry_ids.len()));
    }
    let window_of = std::mem::take(&mut ids.windows);
    drop(ids);
    drop(counted_for);
    // Each entry goes under its rarest window, the smallest window value among equally rare
    // ones.
    let mut keyed: Vec<(u32, u32)> = Vec::with_capacity(entries.len());
    let mut always = Vec::new();
    for idx in 0..entries.len() {
        let mine = &entry_ids[bounds[idx] as usize..bounds[idx + 1] as usize];
        let best = mine
            .iter()
            .map(|&id| (frequency[id as usize], window_of[id as usize]))
            .min();
        match best {
            Some((_, w)) => keyed.push((w, to_u32(idx))),
            None => always.push(to_u32(idx)),
        }
    }
    drop(entry_ids);
    drop(bounds);
    drop(frequency);
    drop(window_of);
    keyed.sort_unstable();
    let mut index: WindowMap<(u32, u32)> = WindowMap::default();
    let mut members = Vec::with_capacity(keyed.len());
    for (w, idx) in keyed {
        let slot = index.entry(w).or_insert((to_u32(members.len()), 0));
        slot.1 += 1;
        members.push(idx);
    }
    index.shrink_to_fit();
    Prefilter {
        index,
        members,
        always,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::MatchOutcome;
    use super::super::test_support::{alias, snapshot};
    use super::*;
    use crate::model::Alias;

    #[test]
    fn prefilter_never_changes_an_outcome() {
        let formats = [
            r#"["run {{cmd}} on {{hosts}}", {"display": "run <cmd>", "representation": ["(run|execute) {{cmd}}( on {{hosts=localhost}})?[!.]?"]}]"#,
            r#"["pack install {{ packs }}", "pack get {{pack}}", "pack {{action}} now"]"#,
            r#"["(?i:deploy) {{app}} to {{env=staging}}", "{{a}}=={{b}}", "(?:go)?"]"#,
            r#"[{"display": "fixes <k>", "representation": "(?:\\b|^)fixes (?P<k>[A-Z]+-[0-9]+)(?:\\b|$)", "match_multiple": true}]"#,
            r#"["say {{msg}} to {{who}}", "say {{msg}}", "echo {{x}} end", "ping"]"#,
            r#"[{"display": "help me"}, "status.", "what is {{x}}?"]"#,
        ];
        let aliases: Vec<Alias> = formats
            .iter()
            .enumerate()
            .map(|(i, f)| {
                alias(&format!(
                    r#"{{"name": "a{i}", "pack": "p", "formats": {f}}}"#
                ))
            })
            .collect();
        let m = Matcher::build(&aliases);
        let words = [
            "run",
            "execute",
            "date",
            "on",
            "web1",
            "pack",
            "install",
            "get",
            "now",
            "deploy",
            "DEPLOY",
            "to",
            "prod",
            "==",
            "go",
            "fixes",
            "AB-1",
            "say",
            "\"hi there\"",
            "echo",
            "end",
            "ping",
            "status.",
            "what",
            "is",
            "up?",
            "k=v",
            "x=\"1 2\"",
            "",
            " ",
            "!",
        ];
        // Every command of up to three words: exhaustive over this small vocabulary.
        for a in words {
            for b in words {
                for c in words {
                    let command = format!("{a} {b} {c}");
                    assert_eq!(
                        m.match_with(&command, true),
                        m.match_with(&command, false),
                        "{command:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn prefilter_never_hides_a_match_created_by_removing_extras() {
        // "fo" + "o" only becomes "foo" after st2's str.replace removes " x=1 " twice.
        let m = Matcher::build(&[alias(r#"{"name": "f", "pack": "p", "formats": ["foo"]}"#)]);
        assert!(matches!(
            m.match_command("fo x=1 o x=1 "),
            MatchOutcome::Matched(_)
        ));
    }

    /// Each entry must be filed under its rarest window (fewest entries containing it), the
    /// smallest such window on ties: checked against a direct computation on a set with
    /// thousands of distinct windows (so the window table grows several times).
    #[test]
    fn prefilter_files_entries_under_their_rarest_window() {
        let mut rng = 0x1234_5678_9abc_def0_u64;
        let mut word = || {
            (0..6)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    char::from(b'a' + u8::try_from(rng % 26).unwrap_or(0))
                })
                .collect::<String>()
        };
        let aliases: Vec<Alias> = (0..1500)
            .map(|i| {
                let (a, b) = (word(), word());
                alias(&format!(
                    r#"{{"name": "a{i}", "pack": "p", "formats": ["{a} {{{{x}}}} {b}", "get {a} now", "{{{{y}}}}"]}}"#
                ))
            })
            .collect();
        let m = Matcher::build(&aliases);
        let windows: Vec<Vec<u32>> = (0..to_u32(m.entries.len()))
            .map(|idx| {
                let mut ws: Vec<u32> = m
                    .format(idx)
                    .regex()
                    .required_literals()
                    .flat_map(|lit| {
                        let b = lit.as_bytes().to_vec();
                        (0..(b.len() + 1).saturating_sub(WINDOW)).map(move |i| window_at(&b, i))
                    })
                    .collect();
                ws.sort_unstable();
                ws.dedup();
                ws
            })
            .collect();
        let mut frequency: HashMap<u32, u32> = HashMap::new();
        for w in windows.iter().flatten() {
            *frequency.entry(*w).or_default() += 1;
        }
        assert!(
            frequency.len() > 10_000,
            "{} distinct windows",
            frequency.len()
        );
        let mut expected: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut always = Vec::new();
        let mut keyed: Vec<(u32, u32)> = Vec::new();
        for (idx, ws) in windows.iter().enumerate() {
            match ws.iter().min_by_key(|w| (frequency[w], **w)) {
                Some(w) => keyed.push((*w, to_u32(idx))),
                None => always.push(to_u32(idx)),
            }
        }
        keyed.sort_unstable();
        for (w, idx) in keyed {
            match expected.last_mut() {
                Some((last, members)) if *last == w => members.push(idx),
                _ => expected.push((w, vec![idx])),
            }
        }
        assert_eq!(snapshot(&m).prefilter, (expected, always));
    }
}
