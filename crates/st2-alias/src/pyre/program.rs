//! Compiles [`Node`] trees into a compact instruction list for the backtracking VM, following
//! CPython 3.11's `re._compiler` wherever the choice of opcode changes what matches (case
//! folding of literals and sets, `_simple` repeats, multiline/ASCII variants of anchors).

use super::ast::{
    At, Category, FLAG_ASCII, FLAG_DOTALL, FLAG_IGNORECASE, FLAG_MULTILINE, FLAG_TEMPLATE,
    FLAG_UNICODE, MAXREPEAT, Node, RepeatKind, SetItem, width,
};
use super::unicode;
use super::{Error, ErrorKind};

/// Zero-width assertions after flags have picked the variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AtCode {
    Beginning,
    BeginningLine,
    BeginningString,
    End,
    EndLine,
    EndString,
    Boundary,
    NonBoundary,
    UniBoundary,
    UniNonBoundary,
}

/// How the subject character is transformed before a case-insensitive comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Fold {
    /// Exact comparison (`IN`, `LITERAL`).
    None,
    /// `sre_lower_unicode` (`*_UNI_IGNORE`).
    Unicode,
    /// `sre_lower_ascii` (`*_IGNORE` under the ASCII flag).
    Ascii,
}

impl Fold {
    pub(crate) fn apply(self, c: u32) -> u32 {
        match self {
            Fold::None => c,
            Fold::Unicode => unicode::lower(c),
            Fold::Ascii => unicode::ascii_lower(c),
        }
    }
}

/// A category test with the Unicode/ASCII choice already made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cat {
    pub category: Category,
    pub ascii: bool,
}

impl Cat {
    pub(crate) fn matches(self, c: u32) -> bool {
        type Class = fn(u32) -> bool;
        let (digit, space, word): (Class, Class, Class) = if self.ascii {
            (
                unicode::is_ascii_digit,
                unicode::is_ascii_space,
                unicode::is_ascii_word,
            )
        } else {
            (unicode::is_digit, unicode::is_space, unicode::is_word)
        };
        match self.category {
            Category::Digit => digit(c),
            Category::NotDigit => !digit(c),
            Category::Space => space(c),
            Category::NotSpace => !space(c),
            Category::Word => word(c),
            Category::NotWord => !word(c),
        }
    }
}

/// Set members that are not folded into the sorted range list (sre's charset "tail").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Tail {
    /// A literal compared against the (possibly folded) subject as is. Under IGNORECASE sre keeps
    /// non-BMP literals unfolded here, so `(?i)[\U00010400x]` never matches U+10400: reproduced.
    Literal(u32),
    /// `RANGE_UNI_IGNORE`: the folded subject or its uppercase lies in the range.
    RangeUniIgnore(u32, u32),
    Category(Cat),
}

/// A compiled character set (`IN`, `IN_IGNORE`, `IN_UNI_IGNORE`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CharSet {
    pub negate: bool,
    pub fold: Fold,
    /// Sorted, merged, inclusive ranges tested against the folded subject.
    pub ranges: Box<[(u32, u32)]>,
    pub tail: Box<[Tail]>,
}

impl CharSet {
    pub(crate) fn matches(&self, c: u32) -> bool {
        let t = self.fold.apply(c);
        let idx = self.ranges.partition_point(|&(lo, _)| lo <= t);
        let mut hit = idx > 0 && t <= self.ranges[idx - 1].1;
        if !hit {
            hit = self.tail.iter().any(|item| match *item {
                Tail::Literal(l) => l == t,
                Tail::RangeUniIgnore(lo, hi) => {
                    (lo..=hi).contains(&t) || (lo..=hi).contains(&unicode::upper(t))
                }
                Tail::Category(cat) => cat.matches(t),
            });
        }
        hit != self.negate
    }
}

/// One VM instruction. Kept at 12 bytes and free of per-format data (literals are referenced by
/// index), so that formats of the same shape share one instruction list in an
/// [`Arena`](super::arena::Arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Inst {
    Char(u32),
    NotChar(u32),
    /// `LITERAL_UNI_IGNORE`: `lower(c) == operand`.
    CharUi(u32),
    NotCharUi(u32),
    /// `LITERAL_IGNORE` under ASCII: `ascii_lower(c) == operand`.
    CharAi(u32),
    NotCharAi(u32),
    Set(u32),
    /// An exact two-member set such as `["']` (no allocation for the commonest sets).
    AnyOf2(u32, u32),
    /// A set holding a single category such as `\s` or `\w`.
    Cat(Cat),
    /// `.` without DOTALL: anything but `\n`.
    Any,
    AnyAll,
    /// A run of exact literals: literal number `.0` of the program.
    Str(u32),
    At(AtCode),
    /// Records the current position in a capture slot.
    Save(u32),
    /// Tries the first target, then the second on backtracking.
    Split(u32, u32),
    Jmp(u32),
    /// Single-character repeat (`REPEAT_ONE` family), described in `Program::rep_ones`.
    RepOne(u32),
    /// Starts a general repeat (`REPEAT`): resets its registers and jumps to its `Until`.
    RepInit(u32),
    /// `MAX_UNTIL`/`MIN_UNTIL` of repeat `n`.
    Until(u32),
    /// Starts a possessive general repeat (`POSSESSIVE_REPEAT`).
    PossInit(u32),
    /// Loop head of a possessive repeat.
    PossLoop(u32),
    /// Opens an atomic group or lookaround described in `Program::subs`.
    Sub(u32),
    /// End of an atomic/lookaround/possessive body.
    SubEnd,
    Backref(u32, Fold),
    /// StackStorm's placeholder group ([`Node::Param`]) for group `.0`; `.1` is DOTALL.
    Param(u32, bool),
    /// `GROUPREF_EXISTS`: continue if the group matched, else jump.
    CondGroup(u32, u32),
    Match,
}

/// A `REPEAT_ONE`/`MIN_REPEAT_ONE`/`POSSESSIVE_REPEAT_ONE` description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RepOne {
    pub min: u32,
    pub max: u32,
    pub kind: RepeatKind,
    /// A single-character instruction.
    pub body: Inst,
}

/// A general repeat: body starts at `body`, the loop decision (`Until`, or `PossLoop` for a
/// possessive repeat) sits at `until`, and the pattern continues at `exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Rep {
    pub min: u32,
    pub max: u32,
    pub greedy: bool,
    pub body: u32,
    pub until: u32,
    pub exit: u32,
}

/// What a `Sub` instruction opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SubKind {
    Atomic,
    Ahead,
    NotAhead,
    Behind,
    NotBehind,
}

/// An atomic group or lookaround: body at `Sub`'s pc + 1, continuation at `next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SubInfo {
    pub kind: SubKind,
    /// Fixed width of a lookbehind.
    pub width: u32,
    pub next: u32,
}

/// A freshly compiled program, before it is packed into an [`Arena`](super::arena::Arena).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgramParts {
    pub insts: Vec<Inst>,
    /// Literal runs referenced by `Inst::Str`.
    pub lits: Vec<String>,
    pub sets: Vec<CharSet>,
    pub rep_ones: Vec<RepOne>,
    pub reps: Vec<Rep>,
    pub subs: Vec<SubInfo>,
    /// Number of capturing groups.
    pub groups: usize,
    /// Whether every match must start at position 0 (pattern begins with `^`/`\A`).
    pub anchored: bool,
    /// Characters a match can start with, when that is a small known set (sre's INFO charset
    /// idea): `search` skips other start positions without running the VM.
    pub first: Option<FirstSet>,
}

/// A program as the VM reads it: borrowed slices, wherever they are stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProgView<'a> {
    pub insts: &'a [Inst],
    /// `(start, len)` byte ranges of the literal runs in `text`.
    pub lits: &'a [(u32, u32)],
    pub text: &'a str,
    pub sets: &'a [CharSet],
    pub rep_ones: &'a [RepOne],
    pub reps: &'a [Rep],
    pub subs: &'a [SubInfo],
    pub groups: usize,
    pub anchored: bool,
    pub first: Option<&'a FirstSet>,
}

/// Characters that can begin a match: exact code points (sorted) or category members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct FirstSet {
    chars: Vec<u32>,
    cats: Vec<Cat>,
}

impl FirstSet {
    pub(crate) fn contains(&self, c: char) -> bool {
        let c = u32::from(c);
        self.chars.binary_search(&c).is_ok() || self.cats.iter().any(|cat| cat.matches(c))
    }
}

impl<'a> ProgView<'a> {
    /// The text of literal run `k`.
    pub(crate) fn lit(&self, k: u32) -> &'a str {
        let (start, len) = self.lits[k as usize];
        &self.text[start as usize..(start + len) as usize]
    }

    /// Registers: two capture slots per group, then a count and a last position per general
    /// (or possessive) repeat.
    pub(crate) fn register_count(&self) -> usize {
        2 * self.groups + 2 * self.reps.len()
    }

    pub(crate) fn count_reg(&self, rep: u32) -> usize {
        2 * self.groups + 2 * rep as usize
    }

    pub(crate) fn last_reg(&self, rep: u32) -> usize {
        2 * self.groups + 2 * rep as usize + 1
    }
}

/// Compiles a parsed pattern. `flags` are the global flags returned by the parser.
pub(crate) fn compile(
    seq: &[Node],
    flags: u32,
    groups: usize,
    group_widths: &[Option<(u64, u64)>],
) -> Result<ProgramParts, Error> {
    let mut c = Compiler {
        prog: ProgramParts {
            insts: Vec::with_capacity(2 * seq.len() + 8),
            groups,
            anchored: starts_anchored(seq, flags),
            ..ProgramParts::default()
        },
        group_widths,
    };
    c.seq(seq, flags)?;
    c.emit(Inst::Match);
    // An anchored program is only tried at position 0; no need for a first-character set.
    if !c.prog.anchored
        && let (First::Set(mut set), false) = first_of(seq, flags)
    {
        set.chars.sort_unstable();
        set.chars.dedup();
        c.prog.first = Some(set);
    }
    Ok(c.prog)
}

/// A match can only start at 0 when the first token is `^` (not multiline) or `\A`.
fn starts_anchored(seq: &[Node], flags: u32) -> bool {
    match seq.first() {
        Some(Node::At(At::BeginningString)) => true,
        Some(Node::At(At::Beginning)) => flags & FLAG_MULTILINE == 0,
        _ => false,
    }
}

struct Compiler<'a> {
    prog: ProgramParts,
    group_widths: &'a [Option<(u64, u64)>],
}

fn to_u32(n: usize) -> u32 {
    // Programs are built from patterns bounded far below 4 billion instructions.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `_combine_flags`.
fn combine_flags(flags: u32, add: u32, del: u32) -> u32 {
    let type_flags = FLAG_ASCII | FLAG_UNICODE | super::ast::FLAG_LOCALE;
    let base = if add & type_flags != 0 {
        flags & !type_flags
    } else {
        flags
    };
    (base | add) & !del
}

impl Compiler<'_> {
    fn pc(&self) -> u32 {
        to_u32(self.prog.insts.len())
    }

    fn emit(&mut self, inst: Inst) -> u32 {
        let pc = self.pc();
        self.prog.insts.push(inst);
        pc
    }

    fn patch(&mut self, at: u32, inst: Inst) {
        self.prog.insts[at as usize] = inst;
    }

    fn seq(&mut self, seq: &[Node], flags: u32) -> Result<(), Error> {
        let mut i = 0;
        while i < seq.len() {
            // Runs of exact literals become one `Str` instruction.
            if flags & FLAG_IGNORECASE == 0 {
                // Lone surrogates (`\ud800`) cannot live in a `str`; they stay `Char`s.
                let run: String = seq[i..]
                    .iter()
                    .map_while(|n| match n {
                        Node::Literal(c) => char::from_u32(*c),
                        _ => None,
                    })
                    .collect();
                let count = run.chars().count();
                if count >= 2 {
                    self.prog.lits.push(run);
                    self.emit(Inst::Str(to_u32(self.prog.lits.len() - 1)));
                    i += count;
                    continue;
                }
            }
            self.node(&seq[i], flags)?;
            i += 1;
        }
        Ok(())
    }

    /// Compiles a token that matches exactly one character, if it is one (`_simple` units).
    fn unit(&mut self, node: &Node, flags: u32) -> Option<Inst> {
        Some(match node {
            Node::Literal(c) => self.literal(*c, false, flags),
            Node::NotLiteral(c) => self.literal(*c, true, flags),
            Node::Any => {
                if flags & FLAG_DOTALL != 0 {
                    Inst::AnyAll
                } else {
                    Inst::Any
                }
            }
            Node::In(items) => {
                let set = build_set(items, flags);
                match (&*set.ranges, &*set.tail, set.negate, set.fold) {
                    ([(a, a2), (b, b2)], [], false, Fold::None) if a == a2 && b == b2 => {
                        Inst::AnyOf2(*a, *b)
                    }
                    ([], [Tail::Category(cat)], false, _) => Inst::Cat(*cat),
                    _ => {
                        self.prog.sets.push(set);
                        Inst::Set(to_u32(self.prog.sets.len() - 1))
                    }
                }
            }
            _ => return None,
        })
    }

    fn literal(&mut self, c: u32, negate: bool, flags: u32) -> Inst {
        if flags & FLAG_IGNORECASE == 0 {
            return if negate {
                Inst::NotChar(c)
            } else {
                Inst::Char(c)
            };
        }
        if flags & FLAG_UNICODE == 0 {
            if !unicode::ascii_is_cased(c) {
                return if negate {
                    Inst::NotChar(c)
                } else {
                    Inst::Char(c)
                };
            }
            let lo = unicode::ascii_lower(c);
            return if negate {
                Inst::NotCharAi(lo)
            } else {
                Inst::CharAi(lo)
            };
        }
        if !unicode::is_cased(c) {
            return if negate {
                Inst::NotChar(c)
            } else {
                Inst::Char(c)
            };
        }
        let lo = unicode::lower(c);
        let fixes = unicode::extra_cases(lo);
        if fixes.is_empty() {
            return if negate {
                Inst::NotCharUi(lo)
            } else {
                Inst::CharUi(lo)
            };
        }
        // sre emits IN_UNI_IGNORE with the lowercase form and its extra case equivalents.
        let mut members: Vec<u32> = vec![lo];
        members.extend_from_slice(fixes);
        let set = CharSet {
            negate,
            fold: Fold::Unicode,
            ranges: merge_points(members).into_boxed_slice(),
            tail: Box::new([]),
        };
        self.prog.sets.push(set);
        Inst::Set(to_u32(self.prog.sets.len() - 1))
    }

    fn node(&mut self, node: &Node, flags: u32) -> Result<(), Error> {
        if let Some(inst) = self.unit(node, flags) {
            self.emit(inst);
            return Ok(());
        }
        match node {
            Node::At(at) => {
                let code = at_code(*at, flags);
                self.emit(Inst::At(code));
            }
            Node::Branch(items) => {
                // Split chain: each alternative is tried in order, all rejoin after the branch.
                let mut jumps = Vec::with_capacity(items.len());
                for (k, item) in items.iter().enumerate() {
                    if k + 1 < items.len() {
                        let split = self.emit(Inst::Split(0, 0));
                        self.seq(item, flags)?;
                        jumps.push(self.emit(Inst::Jmp(0)));
                        let next = self.pc();
                        self.patch(split, Inst::Split(split + 1, next));
                    } else {
                        self.seq(item, flags)?;
                    }
                }
                let end = self.pc();
                for j in jumps {
                    self.patch(j, Inst::Jmp(end));
                }
            }
            Node::Subpattern {
                group,
                add_flags,
                del_flags,
                body,
            } => {
                let inner = combine_flags(flags, *add_flags, *del_flags);
                if let Some(g) = group {
                    self.emit(Inst::Save(to_u32(2 * (g - 1))));
                    self.seq(body, inner)?;
                    self.emit(Inst::Save(to_u32(2 * (g - 1) + 1)));
                } else {
                    self.seq(body, inner)?;
                }
            }
            Node::Repeat {
                kind,
                min,
                max,
                body,
            } => self.repeat(*kind, *min, *max, body, flags)?,
            Node::Atomic(body) => self.sub(SubKind::Atomic, 0, body, flags)?,
            Node::Assert {
                behind,
                negate,
                body,
            } => {
                let (kind, w) = if *behind {
                    let (lo, hi) = width(body, self.group_widths);
                    // sre checks the size before the fixedness (3.11.7's `_compile`).
                    if lo > u64::from(u32::MAX) {
                        return Err(Error::plain(ErrorKind::Syntax, "looks too much behind"));
                    }
                    if lo != hi {
                        return Err(Error::plain(
                            ErrorKind::Syntax,
                            "look-behind requires fixed-width pattern",
                        ));
                    }
                    let kind = if *negate {
                        SubKind::NotBehind
                    } else {
                        SubKind::Behind
                    };
                    (
                        kind,
                        u32::try_from(lo).expect("checked against MAXCODE above"),
                    )
                } else if *negate {
                    (SubKind::NotAhead, 0)
                } else {
                    (SubKind::Ahead, 0)
                };
                self.sub(kind, w, body, flags)?;
            }
            Node::GroupRef(g) => {
                let fold = if flags & FLAG_IGNORECASE == 0 {
                    Fold::None
                } else if flags & FLAG_UNICODE != 0 {
                    Fold::Unicode
                } else {
                    Fold::Ascii
                };
                self.emit(Inst::Backref(to_u32(*g), fold));
            }
            Node::GroupRefExists { group, yes, no } => {
                let cond = self.emit(Inst::CondGroup(to_u32(*group), 0));
                self.seq(yes, flags)?;
                match no {
                    Some(no) => {
                        let jump = self.emit(Inst::Jmp(0));
                        let no_pc = self.pc();
                        self.seq(no, flags)?;
                        let end = self.pc();
                        self.patch(jump, Inst::Jmp(end));
                        self.patch(cond, Inst::CondGroup(to_u32(*group), no_pc));
                    }
                    None => {
                        let end = self.pc();
                        self.patch(cond, Inst::CondGroup(to_u32(*group), end));
                    }
                }
            }
            Node::Param(g) => {
                self.emit(Inst::Param(to_u32(*g), flags & FLAG_DOTALL != 0));
            }
            Node::Literal(_) | Node::NotLiteral(_) | Node::Any | Node::In(_) => {}
        }
        Ok(())
    }

    fn sub(&mut self, kind: SubKind, w: u32, body: &[Node], flags: u32) -> Result<(), Error> {
        let idx = to_u32(self.prog.subs.len());
        self.prog.subs.push(SubInfo {
            kind,
            width: w,
            next: 0,
        });
        self.emit(Inst::Sub(idx));
        self.seq(body, flags)?;
        self.emit(Inst::SubEnd);
        let next = self.pc();
        self.prog.subs[idx as usize].next = next;
        Ok(())
    }

    fn repeat(
        &mut self,
        kind: RepeatKind,
        min: u32,
        max: u32,
        body: &[Node],
        flags: u32,
    ) -> Result<(), Error> {
        if flags & FLAG_TEMPLATE != 0 {
            // `_compiler` formats the opcode with `%r`, i.e. its name (found by the pyre_diff
            // fuzz target: the name was missing).
            let op = match kind {
                RepeatKind::Greedy => "MAX_REPEAT",
                RepeatKind::Lazy => "MIN_REPEAT",
                RepeatKind::Possessive => "POSSESSIVE_REPEAT",
            };
            return Err(Error::plain(
                ErrorKind::Syntax,
                &format!("internal: unsupported template operator {op}"),
            ));
        }
        if let Some(unit) = self.simple(body, flags) {
            self.prog.rep_ones.push(RepOne {
                min,
                max,
                kind,
                body: unit,
            });
            self.emit(Inst::RepOne(to_u32(self.prog.rep_ones.len() - 1)));
            return Ok(());
        }
        let rep = to_u32(self.prog.reps.len());
        self.prog.reps.push(Rep {
            min,
            max,
            greedy: kind != RepeatKind::Lazy,
            body: 0,
            until: 0,
            exit: 0,
        });
        if kind == RepeatKind::Possessive {
            // POSSESSIVE_REPEAT: each iteration is matched atomically; the loop head sits at
            // `until`, the body follows it and ends with `SubEnd`.
            self.emit(Inst::PossInit(rep));
            let head = self.emit(Inst::PossLoop(rep));
            let body_pc = self.pc();
            self.seq(body, flags)?;
            self.emit(Inst::SubEnd);
            let exit = self.pc();
            let r = &mut self.prog.reps[rep as usize];
            r.body = body_pc;
            r.until = head;
            r.exit = exit;
            return Ok(());
        }
        self.emit(Inst::RepInit(rep));
        let body_pc = self.pc();
        self.seq(body, flags)?;
        let until = self.emit(Inst::Until(rep));
        let r = &mut self.prog.reps[rep as usize];
        r.body = body_pc;
        r.until = until;
        r.exit = until + 1;
        Ok(())
    }

    /// `_simple`: a single one-character token, possibly inside a flag-only group.
    fn simple(&mut self, body: &[Node], flags: u32) -> Option<Inst> {
        if body.len() != 1 {
            return None;
        }
        match &body[0] {
            Node::Subpattern {
                group: None,
                add_flags,
                del_flags,
                body: inner,
            } => {
                let inner_flags = combine_flags(flags, *add_flags, *del_flags);
                self.simple(inner, inner_flags)
            }
            node => self.unit(node, flags),
        }
    }
}

fn at_code(at: At, flags: u32) -> AtCode {
    let multiline = flags & FLAG_MULTILINE != 0;
    let unicode = flags & FLAG_UNICODE != 0;
    match at {
        At::Beginning if multiline => AtCode::BeginningLine,
        At::Beginning => AtCode::Beginning,
        At::BeginningString => AtCode::BeginningString,
        At::End if multiline => AtCode::EndLine,
        At::End => AtCode::End,
        At::EndString => AtCode::EndString,
        At::Boundary if unicode => AtCode::UniBoundary,
        At::Boundary => AtCode::Boundary,
        At::NonBoundary if unicode => AtCode::UniNonBoundary,
        At::NonBoundary => AtCode::NonBoundary,
    }
}

/// Sorts and merges code points into inclusive ranges.
fn merge_points(mut points: Vec<u32>) -> Vec<(u32, u32)> {
    points.sort_unstable();
    points.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(last) if last.1 + 1 == p => last.1 = p,
            _ => out.push((p, p)),
        }
    }
    out
}

fn merge_ranges(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn range_has_cased(lo: u32, hi: u32, ascii: bool) -> bool {
    if ascii {
        return (lo..=hi.min(0x7F)).any(unicode::ascii_is_cased);
    }
    (lo..=hi).any(unicode::is_cased)
}

/// `_optimize_charset` + the IN opcode choice of `_compile`.
fn build_set(items: &[SetItem], flags: u32) -> CharSet {
    let negate = items.first() == Some(&SetItem::Negate);
    let ascii = flags & FLAG_UNICODE == 0;
    let cat = |category| Cat { category, ascii };
    let ignore = flags & FLAG_IGNORECASE != 0;

    // Does the set contain cased characters (sre's `hascased`)? Non-BMP members count as cased
    // under IGNORECASE because sre's charmap cannot hold them.
    let hascased = ignore
        && items.iter().any(|item| match *item {
            SetItem::Literal(c) => {
                c >= 0x10000
                    || if ascii {
                        unicode::ascii_is_cased(c)
                    } else {
                        unicode::is_cased(c)
                    }
            }
            SetItem::Range(lo, hi) => hi >= 0x10000 || range_has_cased(lo, hi, ascii),
            _ => false,
        });

    let mut tail = Vec::new();
    if !hascased {
        let mut ranges = Vec::new();
        for item in items {
            match *item {
                SetItem::Literal(c) => ranges.push((c, c)),
                SetItem::Range(lo, hi) => ranges.push((lo, hi)),
                SetItem::Category(c) => tail.push(Tail::Category(cat(c))),
                SetItem::Negate => {}
            }
        }
        return CharSet {
            negate,
            fold: Fold::None,
            ranges: merge_ranges(ranges).into_boxed_slice(),
            tail: tail.into_boxed_slice(),
        };
    }

    let fold = if ascii { Fold::Ascii } else { Fold::Unicode };
    let mut points: Vec<u32> = Vec::new();
    let add = |c: u32, points: &mut Vec<u32>| {
        let lo = fold.apply(c);
        points.push(lo);
        if !ascii {
            points.extend_from_slice(unicode::extra_cases(lo));
        }
    };
    for item in items {
        match *item {
            SetItem::Literal(c) if c < 0x10000 => add(c, &mut points),
            SetItem::Literal(c) => tail.push(Tail::Literal(c)),
            SetItem::Range(lo, hi) => {
                if lo < 0x10000 {
                    for c in lo..=hi.min(0xFFFF) {
                        add(c, &mut points);
                    }
                }
                if hi >= 0x10000 {
                    tail.push(Tail::RangeUniIgnore(lo, hi));
                }
            }
            SetItem::Category(c) => tail.push(Tail::Category(cat(c))),
            SetItem::Negate => {}
        }
    }
    CharSet {
        negate,
        fold,
        ranges: merge_points(points).into_boxed_slice(),
        tail: tail.into_boxed_slice(),
    }
}

/// What can start a match of a sequence.
enum First {
    Any,
    Set(FirstSet),
}

impl First {
    fn union(self, other: First) -> First {
        match (self, other) {
            (First::Set(mut a), First::Set(b)) => {
                a.chars.extend(b.chars);
                for cat in b.cats {
                    if !a.cats.contains(&cat) {
                        a.cats.push(cat);
                    }
                }
                First::Set(a)
            }
            _ => First::Any,
        }
    }
}

fn empty_first() -> First {
    First::Set(FirstSet::default())
}

/// The first-character set of a sequence and whether it can match the empty string. Any
/// uncertainty gives `First::Any`; the result is only used to skip hopeless start positions.
fn first_of(seq: &[Node], flags: u32) -> (First, bool) {
    let mut acc = empty_first();
    for node in seq {
        let (f, nullable) = first_of_node(node, flags);
        acc = acc.union(f);
        if !nullable {
            return (acc, false);
        }
    }
    (acc, true)
}

fn first_of_node(node: &Node, flags: u32) -> (First, bool) {
    let ignore = flags & FLAG_IGNORECASE != 0;
    match node {
        Node::Literal(c) if !ignore => (
            First::Set(FirstSet {
                chars: vec![*c],
                cats: Vec::new(),
            }),
            false,
        ),
        Node::In(items) if !ignore && items.first() != Some(&SetItem::Negate) => {
            let mut set = FirstSet::default();
            for item in items {
                match *item {
                    SetItem::Literal(c) => set.chars.push(c),
                    SetItem::Range(lo, hi) if hi - lo < 64 => set.chars.extend(lo..=hi),
                    SetItem::Category(category) => set.cats.push(Cat {
                        category,
                        ascii: flags & FLAG_UNICODE == 0,
                    }),
                    _ => return (First::Any, false),
                }
            }
            (First::Set(set), false)
        }
        Node::Literal(_) | Node::NotLiteral(_) | Node::Any | Node::In(_) | Node::Param(_) => {
            (First::Any, false)
        }
        Node::At(_) | Node::Assert { .. } => (empty_first(), true),
        Node::GroupRef(_) => (First::Any, true),
        Node::Branch(items) => {
            let mut acc = empty_first();
            let mut nullable = false;
            for item in items {
                let (f, n) = first_of(item, flags);
                acc = acc.union(f);
                nullable |= n;
            }
            (acc, nullable)
        }
        Node::Subpattern {
            add_flags,
            del_flags,
            body,
            ..
        } => first_of(body, combine_flags(flags, *add_flags, *del_flags)),
        Node::Atomic(body) => first_of(body, flags),
        Node::Repeat { min, max, body, .. } => {
            if *max == 0 {
                return (empty_first(), true);
            }
            let (f, n) = first_of(body, flags);
            (f, n || *min == 0)
        }
        Node::GroupRefExists { yes, no, .. } => {
            let (f, n) = first_of(yes, flags);
            match no {
                Some(no) => {
                    let (g, m) = first_of(no, flags);
                    (f.union(g), n || m)
                }
                None => (f, true),
            }
        }
    }
}

/// Whether `MAXREPEAT` means "no upper bound" for this count.
pub(crate) fn unbounded(max: u32) -> bool {
    max == MAXREPEAT
}
