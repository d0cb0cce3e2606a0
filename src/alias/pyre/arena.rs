//! Compact storage for many compiled regexes (and the st2 formats built on them).
//!
//! Tens of thousands of alias formats stay resident, so per-format heap allocations would cost
//! more than the programs themselves. An [`Arena`] keeps everything in a handful of large
//! vectors, and each regex is a [`PackedRegex`] of offsets. Instruction lists (and the other
//! program tables) hold no per-format data: literals are referenced by index and their text
//! lives in the format's own text region. So formats of the same *shape* (`verb noun {{a}} on
//! {{b}}` with different words) share one instruction list, found by hashing while packing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Range;

use super::program::{CharSet, FirstSet, Inst, ProgView, ProgramParts, Rep, RepOne, SubInfo};

/// A small, fast, non-cryptographic hasher (FxHash's multiply-rotate step) for build-time
/// indexes. The keys are our own compiled tables and byte windows, not attacker-chosen in any
/// way that could matter: a collision only costs a comparison.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for b in chunks.remainder() {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `(start, len)` window into one of the arena's vectors or its text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

fn to_u32(n: usize) -> u32 {
    // Arena sizes are bounded by the alias set (megabytes), far below 4 GiB.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A freshly compiled regex with its metadata, before packing.
#[derive(Clone, Debug, Default)]
pub(crate) struct RegexParts {
    pub prog: ProgramParts,
    /// Named groups in definition order.
    pub names: Vec<(String, u32)>,
    /// Literal strings every match must contain.
    pub required: Vec<String>,
}

/// The tables of one program shape, shared by every regex of that shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct ProgramSpans {
    insts: Span,
    lits: Span,
    sets: Span,
    rep_ones: Span,
    reps: Span,
    subs: Span,
    /// Index into `firsts`, or `u32::MAX`.
    first: u32,
    groups: u32,
    anchored: bool,
}

/// Offsets of one regex inside an [`Arena`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PackedRegex {
    /// The regex's own text (literal runs, group names, required literals); the `lits`,
    /// `names` and `required` tables hold ranges relative to its start.
    text: Span,
    /// Index into `programs`.
    program: u32,
    names: Span,
    required: Span,
}

/// Storage for compiled regexes and strings; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    text: String,
    insts: Vec<Inst>,
    lits: Vec<(u32, u32)>,
    sets: Vec<CharSet>,
    rep_ones: Vec<RepOne>,
    reps: Vec<Rep>,
    subs: Vec<SubInfo>,
    firsts: Vec<FirstSet>,
    programs: Vec<ProgramSpans>,
    names: Vec<(u32, u32, u32)>,
    required: Vec<(u32, u32)>,
    pairs: Vec<(Span, Span)>,
    /// Build-time index for sharing identical tables: (table, hash) to the span stored first.
    dedup: FastMap<(u8, u64), Span>,
}

/// Appends `items` to `table` unless an identical run is already stored there.
fn intern<T: Hash + Eq + Clone>(
    table: &mut Vec<T>,
    items: &[T],
    kind: u8,
    dedup: &mut FastMap<(u8, u64), Span>,
) -> Span {
    if items.is_empty() {
        return Span::default();
    }
    let mut hasher = FastHasher::default();
    items.hash(&mut hasher);
    let key = (kind, hasher.finish());
    if let Some(span) = dedup.get(&key)
        && table[span.range()] == *items
    {
        return *span;
    }
    // A hash collision between different tables: store this one unshared.
    let span = Span {
        start: to_u32(table.len()),
        len: to_u32(items.len()),
    };
    table.extend_from_slice(items);
    dedup.entry(key).or_insert(span);
    span
}

impl Arena {
    /// Reserves room for about `formats` formats of `text_bytes` total source text, so the big
    /// tables do not grow by repeated doubling (each step leaves a freed block behind that the
    /// allocator may never return to the system).
    pub(crate) fn reserve(&mut self, formats: usize, text_bytes: usize) {
        self.text.reserve(text_bytes * 2 + formats * 16);
        self.lits.reserve(formats);
        self.names.reserve(formats);
        self.required.reserve(formats);
        self.pairs.reserve(formats / 4);
    }

    /// Appends a string to the text, returning its absolute span.
    pub(crate) fn push_str(&mut self, s: &str) -> Span {
        let span = Span {
            start: to_u32(self.text.len()),
            len: to_u32(s.len()),
        };
        self.text.push_str(s);
        span
    }

    /// The text of an absolute span.
    pub(crate) fn str(&self, span: Span) -> &str {
        &self.text[span.range()]
    }

    /// Stores string pairs (st2's `(name, default)` list).
    pub(crate) fn push_pairs(&mut self, pairs: &[(String, String)]) -> Span {
        let start = to_u32(self.pairs.len());
        for (a, b) in pairs {
            let a = self.push_str(a);
            let b = self.push_str(b);
            self.pairs.push((a, b));
        }
        Span {
            start,
            len: to_u32(pairs.len()),
        }
    }

    /// The pairs stored by [`Arena::push_pairs`].
    pub(crate) fn pairs(&self, span: Span) -> impl Iterator<Item = (&str, &str)> {
        self.pairs[span.range()]
            .iter()
            .map(|(a, b)| (self.str(*a), self.str(*b)))
    }

    /// Packs a compiled regex, sharing identical tables with earlier ones.
    pub(crate) fn push_regex(&mut self, parts: &RegexParts) -> PackedRegex {
        let base = self.text.len();
        let rel = |text: &mut String, s: &str| {
            let start = to_u32(text.len() - base);
            text.push_str(s);
            (start, to_u32(s.len()))
        };
        let lits: Vec<(u32, u32)> = parts
            .prog
            .lits
            .iter()
            .map(|l| rel(&mut self.text, l))
            .collect();
        let names: Vec<(u32, u32, u32)> = parts
            .names
            .iter()
            .map(|(n, g)| {
                let (s, l) = rel(&mut self.text, n);
                (s, l, *g)
            })
            .collect();
        let required: Vec<(u32, u32)> = parts
            .required
            .iter()
            .map(|r| rel(&mut self.text, r))
            .collect();
        let text = Span {
            start: to_u32(base),
            len: to_u32(self.text.len() - base),
        };
        let d = &mut self.dedup;
        let first = match &parts.prog.first {
            Some(f) => {
                let span = intern(&mut self.firsts, std::slice::from_ref(f), 9, d);
                span.start
            }
            None => u32::MAX,
        };
        let program = ProgramSpans {
            insts: intern(&mut self.insts, &parts.prog.insts, 0, d),
            lits: intern(&mut self.lits, &lits, 1, d),
            sets: intern(&mut self.sets, &parts.prog.sets, 2, d),
            rep_ones: intern(&mut self.rep_ones, &parts.prog.rep_ones, 3, d),
            reps: intern(&mut self.reps, &parts.prog.reps, 4, d),
            subs: intern(&mut self.subs, &parts.prog.subs, 5, d),
            first,
            groups: to_u32(parts.prog.groups),
            anchored: parts.prog.anchored,
        };
        PackedRegex {
            text,
            program: intern(&mut self.programs, std::slice::from_ref(&program), 8, d).start,
            names: intern(&mut self.names, &names, 6, d),
            required: intern(&mut self.required, &required, 7, d),
        }
    }

    /// Ends building: drops the sharing index and returns spare capacity.
    pub(crate) fn finish(&mut self) {
        self.dedup = FastMap::default();
        self.text.shrink_to_fit();
        self.insts.shrink_to_fit();
        self.lits.shrink_to_fit();
        self.sets.shrink_to_fit();
        self.rep_ones.shrink_to_fit();
        self.reps.shrink_to_fit();
        self.subs.shrink_to_fit();
        self.firsts.shrink_to_fit();
        self.programs.shrink_to_fit();
        self.names.shrink_to_fit();
        self.required.shrink_to_fit();
        self.pairs.shrink_to_fit();
    }

    /// A readable view of a packed regex.
    pub(crate) fn regex(&self, r: &PackedRegex) -> RegexView<'_> {
        let text = &self.text[r.text.range()];
        let p = self
            .programs
            .get(r.program as usize)
            .copied()
            .unwrap_or_default();
        RegexView {
            prog: ProgView {
                insts: &self.insts[p.insts.range()],
                lits: &self.lits[p.lits.range()],
                text,
                sets: &self.sets[p.sets.range()],
                rep_ones: &self.rep_ones[p.rep_ones.range()],
                reps: &self.reps[p.reps.range()],
                subs: &self.subs[p.subs.range()],
                groups: p.groups as usize,
                anchored: p.anchored,
                first: self.firsts.get(p.first as usize),
            },
            names: &self.names[r.names.range()],
            required: &self.required[r.required.range()],
        }
    }
}

/// A compiled regex as stored in an arena (see [`super::Regex`] for the owned form).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegexView<'a> {
    pub prog: ProgView<'a>,
    names: &'a [(u32, u32, u32)],
    required: &'a [(u32, u32)],
}

impl<'a> RegexView<'a> {
    fn text(&self, start: u32, len: u32) -> &'a str {
        &self.prog.text[start as usize..(start + len) as usize]
    }

    /// Named groups in definition order with their numbers.
    pub(crate) fn group_names(self) -> impl Iterator<Item = (&'a str, usize)> + use<'a> {
        self.names
            .iter()
            .map(move |&(s, l, g)| (self.text(s, l), g as usize))
    }

    /// Literal strings every match must contain.
    pub(crate) fn required_literals(self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.required.iter().map(move |&(s, l)| self.text(s, l))
    }
}
