//! Decides, as StackStorm's `POST /api/v1/actionalias/match` would, which alias format a chat
//! command matches, over thousands of aliases.
//!
//! Semantics (st2 `get_matching_alias`, protocol notes §3.1):
//! 1. Pass one tries every format of every enabled alias that has at least one format without
//!    `match_multiple: true` (st2 selects *aliases* with a Mongo query on
//!    `formats.match_multiple`, then tries all their formats). Exactly one hit wins; two or more
//!    (even two formats of the same alias) is ambiguous.
//! 2. With no hit, pass two does the same for enabled aliases that have a `match_multiple`
//!    format; exactly one hit wins, more is ambiguous, none is "no match".
//!
//! We deliberately differ in one way: a format that does not compile is skipped (and reported
//! by [`Matcher::failures`]) instead of failing every match with HTTP 500 as st2 does.
//!
//! Speed comes from a prefilter: every compiled format knows literal strings any match must
//! contain ([`Format::required_literals`](super::Format::required_literals)). Each format is
//! filed under the rarest 4-byte window of those literals in a hash index, so one pass over the
//! command's windows finds the few candidate formats; their literals are checked, and only the
//! survivors run the full parser. Formats without a 4-byte literal are always candidates.
//! Compiled formats live in one shared arena (same-shaped formats share their instruction
//! lists), which keeps ten thousand aliases within a few megabytes. Everything is built eagerly,
//! so the first match after a (re)load costs the same as any other.

use std::collections::HashMap;

use super::format::{self, Command, FormatError, FormatView, PackedFormat, Params};
use super::model::{Alias, FormatSpec};
use super::pyre::arena::{Arena, FastMap};
use super::pyre::{Cache, DEFAULT_STEP_LIMIT};

/// How many "did you mean" suggestions a [`MatchOutcome::NoMatch`] carries at most.
pub const MAX_SUGGESTIONS: usize = 3;

/// A format that could not be compiled and is skipped by matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatFailure {
    /// The alias reference (`pack.name`).
    pub alias_ref: String,
    /// The format string (or a JSON rendering of a malformed format item).
    pub format: String,
    /// Why it failed.
    pub reason: String,
}

/// Parameters of a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchParams {
    /// A normal format: one parameter set.
    Single(Params),
    /// A `match_multiple` format: one parameter set per hit in the command.
    Multiple(Vec<Params>),
}

/// The unique format a command matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasMatch {
    /// Index of the alias in the slice given to [`Matcher::build`].
    pub alias_index: usize,
    /// The alias reference (`pack.name`).
    pub alias_ref: String,
    /// The alias name (what `/aliasexecution` takes as `name`).
    pub alias_name: String,
    /// The format's help text, if any.
    pub display: Option<String>,
    /// The format string that matched: send it to `/aliasexecution` as `format`.
    pub representation: String,
    /// Whether the format is a `match_multiple` one.
    pub match_multiple: bool,
    /// The extracted parameters.
    pub params: MatchParams,
}

/// One of several formats that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index of the alias in the slice given to [`Matcher::build`].
    pub alias_index: usize,
    /// The alias reference.
    pub alias_ref: String,
    /// The format's help text, if any.
    pub display: Option<String>,
    /// The format string.
    pub representation: String,
}

/// The result of matching one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    /// Exactly one format matched.
    Matched(AliasMatch),
    /// Several formats matched (st2: `Command '<cmd>' matched more than 1 pattern`, or
    /// `... 1 (multi) pattern` when `multiple` is true).
    Ambiguous {
        /// Whether the ambiguity arose in the `match_multiple` pass.
        multiple: bool,
        /// The matching formats, in alias order.
        candidates: Vec<Candidate>,
    },
    /// Nothing matched (st2: `Command '<cmd>' matched no patterns`).
    NoMatch {
        /// Up to [`MAX_SUGGESTIONS`] help strings close to the command (see [`Matcher`]).
        closest: Vec<String>,
    },
}

/// A `(start, len)` window into the matcher's own text.
#[derive(Clone, Copy, Debug, Default)]
struct TextSpan {
    start: u32,
    len: u32,
}

struct AliasInfo {
    reference: TextSpan,
    name: TextSpan,
}

const PASS_NORMAL: u8 = 1;
const PASS_MULTIPLE: u8 = 2;

/// Where an entry's help text comes from.
#[derive(Clone, Copy, Debug)]
enum Display {
    None,
    /// Plain string formats are their own help text.
    Representation,
    Text(TextSpan),
}

struct Entry {
    /// Index into `Matcher::formats`.
    format: u32,
    display: Display,
    alias: u32,
    passes: u8,
    match_multiple: bool,
}

type WindowMap<V> = FastMap<u32, V>;

/// Width of the prefilter's byte windows.
const WINDOW: usize = 4;

fn window_at(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
}

/// Candidate selection: every format is filed under one 4-byte window of its required
/// literals, the rarest one across all formats, so that formats sharing leading words are still
/// told apart by a later, distinctive word.
struct Prefilter {
    /// Window to `members[start..start + len]`.
    index: WindowMap<(u32, u32)>,
    members: Vec<u32>,
    /// Entries without a literal of at least four bytes.
    always: Vec<u32>,
}

/// "Did you mean" data: normalised help strings grouped by their first word.
struct Suggestions {
    /// `(entry, normalised key)` per help string.
    items: Vec<(u32, TextSpan)>,
    by_first_word: HashMap<Box<str>, Vec<u32>>,
}

/// Matches commands against a set of aliases; cheap to share (`Send + Sync`), rebuilt on reload.
///
/// "Did you mean" rule for [`MatchOutcome::NoMatch`]: help strings (plain formats and object
/// `display`s of enabled aliases whose formats compiled) are normalised by lowercasing and
/// dropping placeholders (`{{…}}`, `<…>`, `[…]`). Those whose first word is within edit distance
/// `max(1, len / 3)` of the command's first word (an adjacent transposition counts as one edit)
/// are ranked by the Levenshtein distance between their normalised text and the command's
/// first as-many words (lowercased, at most 64 characters compared); the best
/// [`MAX_SUGGESTIONS`] distinct help strings are returned, ties in alias order.
pub struct Matcher {
    aliases: Vec<AliasInfo>,
    arena: Arena,
    /// Compiled formats, one per distinct format string (failed ones hold a default).
    formats: Vec<PackedFormat>,
    entries: Vec<Entry>,
    text: String,
    prefilter: Prefilter,
    suggestions: Suggestions,
    failures: Vec<FormatFailure>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("aliases", &self.aliases.len())
            .field("formats", &self.entries.len())
            .field("failures", &self.failures.len())
            .finish()
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn push_text(text: &mut String, s: &str) -> TextSpan {
    let span = TextSpan {
        start: to_u32(text.len()),
        len: to_u32(s.len()),
    };
    text.push_str(s);
    span
}

impl Matcher {
    /// Compiles every format of every enabled alias. Formats that fail are skipped and listed in
    /// [`Matcher::failures`] for the caller to log once.
    pub fn build(aliases: &[Alias]) -> Self {
        format::warm_up();
        // Identical format strings (common across packs) are compiled once; compiling is
        // spread over the available cores, packing stays sequential and ordered.
        let mut unique: FastMap<&str, u32> = FastMap::default();
        let mut order: Vec<&str> = Vec::new();
        // The compiled-format slot of every pattern, in the order the second loop visits them.
        let mut slots: Vec<u32> = Vec::new();
        for alias in aliases.iter().filter(|a| a.enabled) {
            for spec in &alias.formats {
                for pattern in spec.patterns() {
                    let slot = *unique.entry(pattern.representation).or_insert_with(|| {
                        order.push(pattern.representation);
                        to_u32(order.len() - 1)
                    });
                    slots.push(slot);
                }
            }
        }
        drop(unique);
        let mut slots = slots.into_iter();
        let mut arena = Arena::default();
        arena.reserve(order.len(), order.iter().map(|f| f.len()).sum());
        let (formats, errors) = compile_all(&order, &mut arena);

        let mut infos = Vec::with_capacity(aliases.len());
        let mut entries = Vec::new();
        let mut failures = Vec::new();
        let mut text = String::new();
        let mut suggestion_sources: Vec<(u32, String)> = Vec::new();
        for (index, alias) in aliases.iter().enumerate() {
            let reference = alias.reference();
            infos.push(AliasInfo {
                reference: push_text(&mut text, &reference),
                name: push_text(&mut text, &alias.name),
            });
            if !alias.enabled {
                continue;
            }
            let mut passes = 0;
            if alias.formats.iter().any(FormatSpec::selects_normal_pass) {
                passes |= PASS_NORMAL;
            }
            if alias.formats.iter().any(FormatSpec::selects_multiple_pass) {
                passes |= PASS_MULTIPLE;
            }
            for spec in &alias.formats {
                if let FormatSpec::Invalid(value) = spec {
                    failures.push(FormatFailure {
                        alias_ref: reference.clone(),
                        format: value.to_string(),
                        reason: "format is neither a string nor an object".to_owned(),
                    });
                    continue;
                }
                let mut first_entry = None;
                // One stored copy of an object's display, shared by its representations.
                let mut display_span = None;
                for pattern in spec.patterns() {
                    let Some(slot) = slots.next() else {
                        continue;
                    };
                    if let Some(e) = errors.get(&slot) {
                        failures.push(FormatFailure {
                            alias_ref: reference.clone(),
                            format: pattern.representation.to_owned(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                    let view = FormatView::new(&arena, &formats[slot as usize]);
                    if let Some(name) = view.missing_default_group() {
                        failures.push(FormatFailure {
                            alias_ref: reference.clone(),
                            format: pattern.representation.to_owned(),
                            reason: format!(
                                "parameter {name:?} has a default but no group \
                                 (a line break inside a default); st2 fails with KeyError"
                            ),
                        });
                        continue;
                    }
                    let display = match (spec, pattern.display) {
                        (_, None) => Display::None,
                        (FormatSpec::Plain(_), Some(_)) => Display::Representation,
                        (_, Some(d)) => Display::Text(
                            *display_span.get_or_insert_with(|| push_text(&mut text, d)),
                        ),
                    };
                    first_entry.get_or_insert(to_u32(entries.len()));
                    entries.push(Entry {
                        format: slot,
                        display,
                        alias: to_u32(index),
                        passes,
                        match_multiple: pattern.match_multiple,
                    });
                }
                let display = spec.normalise().and_then(|n| n.display);
                if let (Some(entry), Some(display)) = (first_entry, display) {
                    suggestion_sources.push((entry, suggestion_key(display)));
                }
            }
        }
        drop(errors);
        let prefilter = build_prefilter(&arena, &formats, &entries);
        let suggestions = build_suggestions(&mut text, suggestion_sources);
        text.shrink_to_fit();
        entries.shrink_to_fit();
        Self {
            aliases: infos,
            arena,
            formats,
            entries,
            text,
            prefilter,
            suggestions,
            failures,
        }
    }

    fn text(&self, span: TextSpan) -> &str {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }

    fn format(&self, idx: u32) -> FormatView<'_> {
        let slot = self.entries[idx as usize].format as usize;
        FormatView::new(&self.arena, &self.formats[slot])
    }

    fn display(&self, idx: u32) -> Option<&str> {
        match self.entries[idx as usize].display {
            Display::None => None,
            Display::Representation => Some(self.format(idx).source()),
            Display::Text(span) => Some(self.text(span)),
        }
    }

    /// Formats that did not compile (skipped by matching).
    pub fn failures(&self) -> &[FormatFailure] {
        &self.failures
    }

    /// Number of (alias, format, representation) patterns that take part in matching.
    pub fn format_count(&self) -> usize {
        self.entries.len()
    }

    /// Matches a command (the chat text after the bot prefix) like st2's `/actionalias/match`.
    pub fn match_command(&self, command: &str) -> MatchOutcome {
        self.match_with(command, true)
    }

    /// [`Matcher::match_command`], optionally without the prefilter (every format is tried), so
    /// tests can check that the prefilter never changes an outcome.
    fn match_with(&self, command: &str, prefilter: bool) -> MatchOutcome {
        let mut cache = Cache::new();
        let mut budget = DEFAULT_STEP_LIMIT;
        let cmd = match Command::with_cache(command, &mut cache, &mut budget) {
            Ok(cmd) => cmd,
            Err(_) => {
                tracing::warn!(
                    command,
                    "cutting key=value extras off the command exceeded the regex step limit; \
                     treating it as matching nothing"
                );
                return MatchOutcome::NoMatch {
                    closest: self.closest(command),
                };
            }
        };
        let candidates = if prefilter {
            self.candidates(&cmd)
        } else {
            (0..to_u32(self.entries.len())).collect()
        };

        for (pass, multiple) in [(PASS_NORMAL, false), (PASS_MULTIPLE, true)] {
            let mut hits: Vec<(u32, Params)> = Vec::new();
            for &idx in &candidates {
                let entry = &self.entries[idx as usize];
                if entry.passes & pass == 0 || (multiple && entry.passes & PASS_NORMAL != 0) {
                    // In pass two, entries that took part in pass one already failed to match.
                    continue;
                }
                let mut budget = DEFAULT_STEP_LIMIT;
                match self
                    .format(idx)
                    .parse_command(&cmd, &mut cache, &mut budget)
                {
                    Ok(params) => hits.push((idx, params)),
                    Err(format::ParseError::LimitExceeded { format, .. }) => {
                        tracing::warn!(
                            command,
                            format,
                            "format exceeded the regex step limit; treating it as no match"
                        );
                    }
                    Err(_) => {}
                }
            }
            match hits.len() {
                0 => continue,
                1 => {
                    let (idx, params) = hits.remove(0);
                    return MatchOutcome::Matched(self.matched(idx, params, &cmd, &mut cache));
                }
                _ => {
                    return MatchOutcome::Ambiguous {
                        multiple,
                        candidates: hits.iter().map(|(idx, _)| self.candidate(*idx)).collect(),
                    };
                }
            }
        }
        MatchOutcome::NoMatch {
            closest: self.closest(command),
        }
    }

    fn matched(&self, idx: u32, params: Params, cmd: &Command, cache: &mut Cache) -> AliasMatch {
        let entry = &self.entries[idx as usize];
        let alias = &self.aliases[entry.alias as usize];
        let params = if entry.match_multiple {
            let mut budget = DEFAULT_STEP_LIMIT;
            match self
                .format(idx)
                .parse_command_multiple(cmd, cache, &mut budget)
            {
                Ok(list) => MatchParams::Multiple(list),
                Err(e) => {
                    tracing::warn!(error = %e, "match_multiple extraction failed after a match");
                    MatchParams::Multiple(Vec::new())
                }
            }
        } else {
            MatchParams::Single(params)
        };
        AliasMatch {
            alias_index: entry.alias as usize,
            alias_ref: self.text(alias.reference).to_owned(),
            alias_name: self.text(alias.name).to_owned(),
            display: self.display(idx).map(str::to_owned),
            representation: self.format(idx).source().to_owned(),
            match_multiple: entry.match_multiple,
            params,
        }
    }

    fn candidate(&self, idx: u32) -> Candidate {
        let entry = &self.entries[idx as usize];
        Candidate {
            alias_index: entry.alias as usize,
            alias_ref: self
                .text(self.aliases[entry.alias as usize].reference)
                .to_owned(),
            display: self.display(idx).map(str::to_owned),
            representation: self.format(idx).source().to_owned(),
        }
    }

    /// Entries whose required literals all occur in the padded command, in build order.
    fn candidates(&self, cmd: &Command) -> Vec<u32> {
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

    /// The "did you mean" list (rule in the type's documentation).
    pub fn closest(&self, command: &str) -> Vec<String> {
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

/// Compiles `formats` in order into `arena`.
///
/// A multi-threaded version was measured: on the shared two-core machines it gained nothing
/// under load and cost several MiB of resident memory (per-thread allocator arenas), so this
/// stays sequential.
fn compile_all(
    sources: &[&str],
    arena: &mut Arena,
) -> (Vec<PackedFormat>, HashMap<u32, FormatError>) {
    let mut formats = Vec::with_capacity(sources.len());
    let mut errors = HashMap::new();
    for (i, source) in sources.iter().enumerate() {
        match format::compile_parts(source) {
            Ok(parts) => formats.push(parts.pack(arena)),
            Err(e) => {
                formats.push(PackedFormat::default());
                errors.insert(to_u32(i), e);
            }
        }
    }
    arena.finish();
    (formats, errors)
}

fn build_prefilter(arena: &Arena, formats: &[PackedFormat], entries: &[Entry]) -> Prefilter {
    // Every entry's distinct windows, flattened: `windows[bounds[i]..bounds[i + 1]]`.
    let mut windows: Vec<u32> = Vec::with_capacity(entries.len() * 16);
    let mut bounds: Vec<u32> = Vec::with_capacity(entries.len() + 1);
    bounds.push(0);
    for entry in entries {
        let start = windows.len();
        for lit in FormatView::new(arena, &formats[entry.format as usize])
            .regex()
            .required_literals()
        {
            let b = lit.as_bytes();
            if b.len() >= WINDOW {
                windows.extend((0..=b.len() - WINDOW).map(|i| window_at(b, i)));
            }
        }
        windows[start..].sort_unstable();
        let mut kept = start;
        for i in start..windows.len() {
            if i == start || windows[i] != windows[kept - 1] {
                windows[kept] = windows[i];
                kept += 1;
            }
        }
        windows.truncate(kept);
        bounds.push(to_u32(windows.len()));
    }
    // Document frequency of every window, to file each entry under its rarest one.
    let mut frequency: WindowMap<u32> = WindowMap::default();
    for w in &windows {
        *frequency.entry(*w).or_default() += 1;
    }
    let mut keyed: Vec<(u32, u32)> = Vec::with_capacity(entries.len());
    let mut always = Vec::new();
    for idx in 0..entries.len() {
        let mine = &windows[bounds[idx] as usize..bounds[idx + 1] as usize];
        let best = mine
            .iter()
            .copied()
            .min_by_key(|w| frequency.get(w).copied().unwrap_or(0));
        match best {
            Some(w) => keyed.push((w, to_u32(idx))),
            None => always.push(to_u32(idx)),
        }
    }
    drop(frequency);
    drop(windows);
    drop(bounds);
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

/// Lowercases a help string and drops placeholders, leaving its literal words separated by
/// single spaces.
fn suggestion_key(display: &str) -> String {
    let mut out = String::with_capacity(display.len());
    let mut pending_space = false;
    let push = |out: &mut String, c: char, pending: &mut bool| {
        if c.is_whitespace() {
            *pending = !out.is_empty();
        } else {
            if *pending {
                out.push(' ');
                *pending = false;
            }
            out.extend(c.to_lowercase());
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
                push(&mut out, ' ', &mut pending_space);
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
                push(&mut out, ' ', &mut pending_space);
            }
            '[' => depth_square += 1,
            ']' if depth_square > 0 => {
                depth_square -= 1;
                push(&mut out, ' ', &mut pending_space);
            }
            _ if depth_angle > 0 || depth_square > 0 => {}
            c => push(&mut out, c, &mut pending_space),
        }
    }
    out
}

fn build_suggestions(text: &mut String, sources: Vec<(u32, String)>) -> Suggestions {
    let mut items = Vec::with_capacity(sources.len());
    let mut by_first_word: HashMap<Box<str>, Vec<u32>> = HashMap::new();
    for (entry, key) in sources {
        let Some(first) = key.split(' ').next().filter(|w| !w.is_empty()) else {
            continue;
        };
        by_first_word
            .entry(first.into())
            .or_default()
            .push(to_u32(items.len()));
        items.push((entry, push_text(text, &key)));
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
    use super::*;

    fn alias(json: &str) -> Alias {
        serde_json::from_str(json).expect("valid alias JSON")
    }

    fn single(outcome: &MatchOutcome) -> &Params {
        match outcome {
            MatchOutcome::Matched(AliasMatch {
                params: MatchParams::Single(p),
                ..
            }) => p,
            other => panic!("expected a single match, got {other:?}"),
        }
    }

    #[test]
    fn unique_format_matches_with_params() {
        let m = Matcher::build(&[
            alias(r#"{"name": "shell", "pack": "core", "formats": ["run {{cmd}} on {{hosts}}"]}"#),
            alias(
                r#"{"name": "get", "pack": "packs", "formats": [{"display": "pack get <pack>", "representation": ["pack get {{ pack }}"]}]}"#,
            ),
        ]);
        let out = m.match_command("pack get st2");
        assert_eq!(single(&out).get("pack"), Some(&Some("st2".to_owned())));
        let MatchOutcome::Matched(am) = out else {
            unreachable!()
        };
        assert_eq!(am.alias_ref, "packs.get");
        assert_eq!(am.display.as_deref(), Some("pack get <pack>"));
        assert_eq!(am.representation, "pack get {{ pack }}");
    }

    #[test]
    fn two_formats_of_the_same_alias_are_ambiguous() {
        let m = Matcher::build(&[alias(
            r#"{"name": "ip", "pack": "net", "formats": ["get ip {{a}} {{b}}", "get ip {{a}} {{b}} {{c}} {{d}}"]}"#,
        )]);
        match m.match_command("get ip 1 2 3 4") {
            MatchOutcome::Ambiguous {
                multiple: false,
                candidates,
            } => assert_eq!(candidates.len(), 2),
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[test]
    fn disabled_alias_is_skipped() {
        let m = Matcher::build(&[
            alias(r#"{"name": "a", "pack": "p", "enabled": false, "formats": ["run {{cmd}}"]}"#),
            alias(r#"{"name": "b", "pack": "p", "formats": ["run {{cmd}}"]}"#),
        ]);
        let MatchOutcome::Matched(am) = m.match_command("run date") else {
            panic!("expected a match");
        };
        assert_eq!(am.alias_ref, "p.b");
    }

    #[test]
    fn broken_format_is_skipped_while_others_match() {
        let m = Matcher::build(&[
            alias(r#"{"name": "bad", "pack": "p", "formats": ["run {{my-param}}"]}"#),
            alias(r#"{"name": "good", "pack": "p", "formats": ["run {{cmd}}"]}"#),
        ]);
        assert_eq!(m.failures().len(), 1);
        assert_eq!(m.failures()[0].alias_ref, "p.bad");
        let MatchOutcome::Matched(am) = m.match_command("run date") else {
            panic!("expected a match");
        };
        assert_eq!(am.alias_ref, "p.good");
    }

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
        match m.match_command("pakc instal st2") {
            MatchOutcome::NoMatch { closest } => {
                assert_eq!(
                    closest.first().map(String::as_str),
                    Some("pack install <pack>")
                );
                assert!(!closest.iter().any(|d| d.starts_with("run")));
            }
            other => panic!("expected no match, got {other:?}"),
        }
        match m.match_command("zzzz") {
            MatchOutcome::NoMatch { closest } => assert!(closest.is_empty()),
            other => panic!("expected no match, got {other:?}"),
        }
    }

    #[test]
    fn match_multiple_only_when_no_normal_format_matched() {
        let multi = r#"{"name": "fixes", "pack": "p", "formats": [{"display": "fixes <issue>", "representation": ["(?:\\b|^)fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\\b|$)"], "match_multiple": true}]}"#;
        let normal = r#"{"name": "fix", "pack": "p", "formats": ["fixes {{issue}}"]}"#;
        let both = Matcher::build(&[alias(multi), alias(normal)]);
        let MatchOutcome::Matched(am) = both.match_command("fixes ABC-1") else {
            panic!("expected a match");
        };
        assert_eq!(am.alias_ref, "p.fix");

        let only_multi = Matcher::build(&[alias(multi)]);
        let MatchOutcome::Matched(am) = only_multi.match_command("x fixes AB-1 and fixes CD-2")
        else {
            panic!("expected a match");
        };
        assert!(am.match_multiple);
        let MatchParams::Multiple(list) = am.params else {
            panic!("expected a list");
        };
        let keys: Vec<_> = list.iter().map(|p| p["issue_key"].clone()).collect();
        assert_eq!(keys, vec![Some("AB-1".into()), Some("CD-2".into())]);
    }

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
