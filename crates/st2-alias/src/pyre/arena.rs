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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RegexParts {
    pub prog: ProgramParts,
    /// Named groups in definition order.
    pub names: Vec<(String, u32)>,
    /// Literal strings every match must contain.
    pub required: Vec<String>,
}

/// A compiled regex laid out the way an [`Arena`] stores it: all its strings (literal runs, then
/// group names, then required literals) in one text buffer, and tables that refer to that buffer
/// by `(start, len)`. The build loop fills one of these per format and reuses its buffers, so
/// compiling a format does not allocate per string.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlatRegex {
    pub text: String,
    pub insts: Vec<Inst>,
    /// Literal runs referenced by `Inst::Str`.
    pub lits: Vec<(u32, u32)>,
    pub sets: Vec<CharSet>,
    pub rep_ones: Vec<RepOne>,
    pub reps: Vec<Rep>,
    pub subs: Vec<SubInfo>,
    pub first: Option<FirstSet>,
    pub groups: u32,
    pub anchored: bool,
    /// Named groups in definition order: `(start, len, group)`.
    pub names: Vec<(u32, u32, u32)>,
    /// Literal strings every match must contain.
    pub required: Vec<(u32, u32)>,
}

impl FlatRegex {
    /// Empties every table, keeping the buffers.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.insts.clear();
        self.lits.clear();
        self.sets.clear();
        self.rep_ones.clear();
        self.reps.clear();
        self.subs.clear();
        self.first = None;
        self.groups = 0;
        self.anchored = false;
        self.names.clear();
        self.required.clear();
    }

    /// Appends `s` to the text, returning its `(start, len)`.
    pub(crate) fn push_text(&mut self, s: &str) -> (u32, u32) {
        let start = to_u32(self.text.len());
        self.text.push_str(s);
        (start, to_u32(s.len()))
    }

    /// Lays out `parts` (the general compiler's output) in this form.
    pub(crate) fn fill_from_parts(&mut self, parts: &RegexParts) {
        self.clear();
        let prog = &parts.prog;
        for lit in &prog.lits {
            let span = self.push_text(lit);
            self.lits.push(span);
        }
        for (name, group) in &parts.names {
            let (start, len) = self.push_text(name);
            self.names.push((start, len, *group));
        }
        for lit in &parts.required {
            let span = self.push_text(lit);
            self.required.push(span);
        }
        self.insts.extend_from_slice(&prog.insts);
        self.sets.extend_from_slice(&prog.sets);
        self.rep_ones.extend_from_slice(&prog.rep_ones);
        self.reps.extend_from_slice(&prog.reps);
        self.subs.extend_from_slice(&prog.subs);
        self.first.clone_from(&prog.first);
        self.groups = to_u32(prog.groups);
        self.anchored = prog.anchored;
    }
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

/// Where the shared tables of one arena went when regexes were copied from it into another
/// (see [`Arena::copy_regex`]).
#[derive(Debug, Default)]
pub(crate) struct CopyMap {
    programs: FastMap<u32, u32>,
    names: FastMap<Span, Span>,
    required: FastMap<Span, Span>,
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
    /// Build-time buffers for [`Arena::push_regex`].
    scratch: FlatRegex,
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
    pub(crate) fn push_pairs<'s>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'s str, &'s str)>,
    ) -> Span {
        let start = to_u32(self.pairs.len());
        for (a, b) in pairs {
            let a = self.push_str(a);
            let b = self.push_str(b);
            self.pairs.push((a, b));
        }
        Span {
            start,
            len: to_u32(self.pairs.len()) - start,
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
        let mut flat = std::mem::take(&mut self.scratch);
        flat.fill_from_parts(parts);
        let packed = self.push_flat(&flat);
        self.scratch = flat;
        packed
    }

    /// Copies regex `r` of arena `from` into this one. The copy is exactly what packing the same
    /// compiled regex here would store; `map` remembers where `from`'s shared tables went, so
    /// each is interned here once however many regexes share it.
    pub(crate) fn copy_regex(
        &mut self,
        from: &Arena,
        r: &PackedRegex,
        map: &mut CopyMap,
    ) -> PackedRegex {
        let text = self.push_str(from.str(r.text));
        let program = match map.programs.get(&r.program) {
            Some(&p) => p,
            None => {
                let p = self.copy_program(from, r.program);
                map.programs.insert(r.program, p);
                p
            }
        };
        let d = &mut self.dedup;
        let names = *map
            .names
            .entry(r.names)
            .or_insert_with(|| intern(&mut self.names, &from.names[r.names.range()], 6, d));
        let required = *map.required.entry(r.required).or_insert_with(|| {
            intern(&mut self.required, &from.required[r.required.range()], 7, d)
        });
        PackedRegex {
            text,
            program,
            names,
            required,
        }
    }

    /// Interns program `idx` of arena `from` (all its tables) here; returns its index.
    fn copy_program(&mut self, from: &Arena, idx: u32) -> u32 {
        let p = from.programs.get(idx as usize).copied().unwrap_or_default();
        let d = &mut self.dedup;
        let first = match from.firsts.get(p.first as usize) {
            Some(f) => intern(&mut self.firsts, std::slice::from_ref(f), 9, d).start,
            None => u32::MAX,
        };
        let program = ProgramSpans {
            insts: intern(&mut self.insts, &from.insts[p.insts.range()], 0, d),
            lits: intern(&mut self.lits, &from.lits[p.lits.range()], 1, d),
            sets: intern(&mut self.sets, &from.sets[p.sets.range()], 2, d),
            rep_ones: intern(&mut self.rep_ones, &from.rep_ones[p.rep_ones.range()], 3, d),
            reps: intern(&mut self.reps, &from.reps[p.reps.range()], 4, d),
            subs: intern(&mut self.subs, &from.subs[p.subs.range()], 5, d),
            first,
            groups: p.groups,
            anchored: p.anchored,
        };
        intern(&mut self.programs, std::slice::from_ref(&program), 8, d).start
    }

    /// Packs a regex given in arena layout, sharing identical tables with earlier ones.
    pub(crate) fn push_flat(&mut self, flat: &FlatRegex) -> PackedRegex {
        let text = self.push_str(&flat.text);
        let d = &mut self.dedup;
        let first = match &flat.first {
            Some(f) => {
                let span = intern(&mut self.firsts, std::slice::from_ref(f), 9, d);
                span.start
            }
            None => u32::MAX,
        };
        let program = ProgramSpans {
            insts: intern(&mut self.insts, &flat.insts, 0, d),
            lits: intern(&mut self.lits, &flat.lits, 1, d),
            sets: intern(&mut self.sets, &flat.sets, 2, d),
            rep_ones: intern(&mut self.rep_ones, &flat.rep_ones, 3, d),
            reps: intern(&mut self.reps, &flat.reps, 4, d),
            subs: intern(&mut self.subs, &flat.subs, 5, d),
            first,
            groups: flat.groups,
            anchored: flat.anchored,
        };
        PackedRegex {
            text,
            program: intern(&mut self.programs, std::slice::from_ref(&program), 8, d).start,
            names: intern(&mut self.names, &flat.names, 6, d),
            required: intern(&mut self.required, &flat.required, 7, d),
        }
    }

    /// Ends building: drops the sharing index and returns spare capacity.
    pub(crate) fn finish(&mut self) {
        self.dedup = FastMap::default();
        self.scratch = FlatRegex::default();
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

    /// The regex in the general compiler's form (owned strings), so that tests can compare
    /// regexes built by different paths or stored in different arenas.
    #[cfg(test)]
    pub(crate) fn to_parts(self) -> RegexParts {
        let prog = self.prog;
        RegexParts {
            prog: ProgramParts {
                insts: prog.insts.to_vec(),
                lits: (0..prog.lits.len())
                    .map(|k| prog.lit(to_u32(k)).to_owned())
                    .collect(),
                sets: prog.sets.to_vec(),
                rep_ones: prog.rep_ones.to_vec(),
                reps: prog.reps.to_vec(),
                subs: prog.subs.to_vec(),
                groups: prog.groups,
                anchored: prog.anchored,
                first: prog.first.cloned(),
            },
            names: self
                .group_names()
                .map(|(n, g)| (n.to_owned(), to_u32(g)))
                .collect(),
            required: self.required_literals().map(str::to_owned).collect(),
        }
    }
}
