//! The backtracking matcher: runs a [`Program`] with the semantics of CPython's `_sre` engine.
//!
//! Python's engine is itself a backtracking one, so trying alternatives in the same order gives
//! the same match and the same captures. Instead of recursing, choice points live on an explicit
//! stack and every register write (capture slots, repeat counters) is recorded on a trail, so
//! backtracking restores captures exactly as sre's `MARK_PUSH`/`MARK_POP` do. Stack depth is
//! therefore bounded by memory, not by the thread stack, and a step budget bounds time.

use super::program::{AtCode, Fold, Inst, ProgView, SubKind, unbounded};
use super::unicode;

/// "Unset" for capture slots and repeat `last` positions (sre's NULL mark).
pub(crate) const NONE: usize = usize::MAX;

/// The step budget ran out before the engine could decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitExceeded;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarrierKind {
    /// Atomic group: keep the body's end position.
    Atomic,
    /// Positive lookaround: succeed at the saved position.
    Look,
    /// Negative lookaround: the body matching means failure.
    NotLook,
    /// A mandatory iteration of a possessive repeat.
    PossMin,
    /// An optional iteration of a possessive repeat.
    PossMore,
}

#[derive(Clone, Copy, Debug)]
enum Choice {
    Alt {
        pc: u32,
        trail: u32,
        pos: usize,
    },
    RepOneGreedy {
        next: u32,
        min: u32,
        trail: u32,
        base: usize,
        count: usize,
    },
    RepOneLazy {
        next: u32,
        rep: u32,
        trail: u32,
        base: usize,
        count: usize,
    },
    LazyUntil {
        rep: u32,
        trail: u32,
        count: usize,
        pos: usize,
    },
    Barrier {
        kind: BarrierKind,
        next: u32,
        aux: u32,
        trail: u32,
        pos: usize,
    },
    /// Resumable enumeration of a StackStorm placeholder group (see [`param_next`]).
    Param {
        next: u32,
        group: u32,
        trail: u32,
        dotall: bool,
        alt: u8,
        start: usize,
        len: usize,
    },
}

/// Reusable scratch memory for matching; one per thread of work, reused across calls.
#[derive(Debug, Default)]
pub struct Cache {
    pub(crate) regs: Vec<usize>,
    trail: Vec<(u32, usize)>,
    stack: Vec<Choice>,
    barriers: Vec<u32>,
}

impl Cache {
    /// Creates an empty cache; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

fn trail_mark(trail: &[(u32, usize)]) -> u32 {
    // The trail only grows by one entry per executed step, and steps are budgeted far below
    // u32::MAX.
    u32::try_from(trail.len()).unwrap_or(u32::MAX)
}

struct Vm<'a> {
    prog: ProgView<'a>,
    input: &'a [char],
    regs: &'a mut Vec<usize>,
    trail: &'a mut Vec<(u32, usize)>,
    stack: &'a mut Vec<Choice>,
    barriers: &'a mut Vec<u32>,
}

/// Runs the program anchored at `start`. Returns the end of the match; captures are left in
/// `cache.regs` (two slots per group). `must_advance` rejects an empty match at `start`
/// (sre's rule for the next `finditer` step after an empty match).
pub(crate) fn exec(
    prog: ProgView<'_>,
    input: &[char],
    start: usize,
    must_advance: bool,
    cache: &mut Cache,
    budget: &mut u64,
) -> Result<Option<usize>, LimitExceeded> {
    cache.regs.clear();
    cache.regs.resize(prog.register_count(), NONE);
    cache.trail.clear();
    cache.stack.clear();
    cache.barriers.clear();
    let mut vm = Vm {
        prog,
        input,
        regs: &mut cache.regs,
        trail: &mut cache.trail,
        stack: &mut cache.stack,
        barriers: &mut cache.barriers,
    };
    vm.run(start, must_advance, budget)
}

/// Whether a single-character instruction accepts `c`.
#[inline]
fn unit_matches(prog: &ProgView<'_>, inst: Inst, c: char) -> bool {
    let c = u32::from(c);
    match inst {
        Inst::Char(l) => c == l,
        Inst::NotChar(l) => c != l,
        Inst::CharUi(l) => unicode::lower(c) == l,
        Inst::NotCharUi(l) => unicode::lower(c) != l,
        Inst::CharAi(l) => unicode::ascii_lower(c) == l,
        Inst::NotCharAi(l) => unicode::ascii_lower(c) != l,
        Inst::Set(i) => prog.sets[i as usize].matches(c),
        Inst::AnyOf2(a, b) => c == a || c == b,
        Inst::Cat(cat) => cat.matches(c),
        Inst::Any => c != u32::from('\n'),
        Inst::AnyAll => true,
        _ => false,
    }
}

fn at_matches(code: AtCode, input: &[char], pos: usize) -> bool {
    let n = input.len();
    let boundary = |word: fn(u32) -> bool| {
        let before = pos > 0 && word(u32::from(input[pos - 1]));
        let here = pos < n && word(u32::from(input[pos]));
        (before, here)
    };
    match code {
        AtCode::Beginning | AtCode::BeginningString => pos == 0,
        AtCode::BeginningLine => pos == 0 || input[pos - 1] == '\n',
        AtCode::End => pos == n || (pos + 1 == n && input[pos] == '\n'),
        AtCode::EndLine => pos == n || input[pos] == '\n',
        AtCode::EndString => pos == n,
        // sre: both fail on an empty string.
        AtCode::Boundary => {
            n > 0 && {
                let (a, b) = boundary(unicode::is_ascii_word);
                a != b
            }
        }
        AtCode::NonBoundary => {
            n > 0 && {
                let (a, b) = boundary(unicode::is_ascii_word);
                a == b
            }
        }
        AtCode::UniBoundary => {
            n > 0 && {
                let (a, b) = boundary(unicode::is_word);
                a != b
            }
        }
        AtCode::UniNonBoundary => {
            n > 0 && {
                let (a, b) = boundary(unicode::is_word);
                a == b
            }
        }
    }
}

/// Enumerates the matches of st2's placeholder group
/// `(?:(?<=').+?(?=')|(?<=").+?(?=")|{.+?}|.+?)` at `start` in the order sre tries them:
/// alternative by alternative, each lazy `.+?` from one character upwards. `(alt, len)` is the
/// previously produced state (`(0, 0)` before the first); returns the next state and the end of
/// the group, or `None` when every alternative is exhausted. `steps` counts characters examined.
fn param_next(
    input: &[char],
    start: usize,
    mut alt: u8,
    mut len: usize,
    dotall: bool,
    steps: &mut u64,
) -> Option<(u8, usize, usize)> {
    let n = input.len();
    // `.` consumes any character under DOTALL, anything but a newline otherwise.
    let consumable = |i: usize| i < n && (dotall || input[i] != '\n');
    while alt < 4 {
        match alt {
            // `(?<=q).+?(?=q)` for q = ' then ".
            0 | 1 => {
                let q = if alt == 0 { '\'' } else { '"' };
                if start >= 1 && input[start - 1] == q {
                    loop {
                        len += 1;
                        *steps += 1;
                        if !consumable(start + len - 1) {
                            break;
                        }
                        if start + len < n && input[start + len] == q {
                            return Some((alt, len, start + len));
                        }
                    }
                }
            }
            // `{.+?}`
            2 => {
                if start < n && input[start] == '{' {
                    loop {
                        len += 1;
                        *steps += 1;
                        if !consumable(start + len) {
                            break;
                        }
                        if start + len + 1 < n && input[start + len + 1] == '}' {
                            return Some((alt, len, start + len + 2));
                        }
                    }
                }
            }
            // `.+?`
            _ => {
                len += 1;
                *steps += 1;
                if consumable(start + len - 1) {
                    return Some((alt, len, start + len));
                }
            }
        }
        alt += 1;
        len = 0;
    }
    None
}

fn fold_eq(fold: Fold, a: char, b: char) -> bool {
    match fold {
        Fold::None => a == b,
        _ => fold.apply(u32::from(a)) == fold.apply(u32::from(b)),
    }
}

impl Vm<'_> {
    fn set(&mut self, reg: usize, value: usize) {
        self.trail.push((reg as u32, self.regs[reg]));
        self.regs[reg] = value;
    }

    fn unwind(&mut self, mark: u32) {
        while self.trail.len() > mark as usize {
            if let Some((reg, old)) = self.trail.pop() {
                self.regs[reg as usize] = old;
            }
        }
    }

    fn push(&mut self, choice: Choice) {
        self.stack.push(choice);
    }

    fn group_span(&self, group: u32) -> Option<(usize, usize)> {
        let g = group as usize;
        if g == 0 || 2 * g > self.regs.len() {
            return None;
        }
        let s = self.regs[2 * (g - 1)];
        let e = self.regs[2 * (g - 1) + 1];
        (s != NONE && e != NONE && e >= s).then_some((s, e))
    }

    fn run(
        &mut self,
        start: usize,
        must_advance: bool,
        budget: &mut u64,
    ) -> Result<Option<usize>, LimitExceeded> {
        let prog = self.prog;
        let input = self.input;
        let n = input.len();
        let mut pc: usize = 0;
        let mut pos = start;
        loop {
            if *budget == 0 {
                return Err(LimitExceeded);
            }
            *budget -= 1;
            let inst = prog.insts[pc];
            let ok = match inst {
                Inst::Char(_)
                | Inst::NotChar(_)
                | Inst::CharUi(_)
                | Inst::NotCharUi(_)
                | Inst::CharAi(_)
                | Inst::NotCharAi(_)
                | Inst::Set(_)
                | Inst::AnyOf2(..)
                | Inst::Cat(_)
                | Inst::Any
                | Inst::AnyAll => {
                    if pos < n && unit_matches(&prog, inst, input[pos]) {
                        pos += 1;
                        pc += 1;
                        true
                    } else {
                        false
                    }
                }
                Inst::Str(k) => {
                    let mut at = pos;
                    let mut ok = true;
                    for c in prog.lit(k).chars() {
                        if at < n && input[at] == c {
                            at += 1;
                        } else {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        pos = at;
                        pc += 1;
                    }
                    ok
                }
                Inst::At(code) => {
                    pc += 1;
                    at_matches(code, input, pos)
                }
                Inst::Save(slot) => {
                    self.set(slot as usize, pos);
                    pc += 1;
                    true
                }
                Inst::Split(a, b) => {
                    let trail = trail_mark(self.trail);
                    self.push(Choice::Alt { pc: b, trail, pos });
                    pc = a as usize;
                    true
                }
                Inst::Jmp(t) => {
                    pc = t as usize;
                    true
                }
                Inst::RepOne(i) => {
                    let info = prog.rep_ones[i as usize];
                    let min = info.min as usize;
                    let max = if unbounded(info.max) {
                        usize::MAX
                    } else {
                        info.max as usize
                    };
                    match info.kind {
                        super::ast::RepeatKind::Greedy | super::ast::RepeatKind::Possessive => {
                            let avail = n - pos;
                            let limit = max.min(avail);
                            let mut count = 0;
                            while count < limit
                                && unit_matches(&prog, info.body, input[pos + count])
                            {
                                count += 1;
                            }
                            *budget = budget.saturating_sub(count as u64);
                            if count < min {
                                false
                            } else {
                                if count > min && info.kind == super::ast::RepeatKind::Greedy {
                                    let trail = trail_mark(self.trail);
                                    self.push(Choice::RepOneGreedy {
                                        next: to_u32(pc + 1),
                                        min: info.min,
                                        trail,
                                        base: pos,
                                        count,
                                    });
                                }
                                pos += count;
                                pc += 1;
                                true
                            }
                        }
                        super::ast::RepeatKind::Lazy => {
                            let mut count = 0;
                            while count < min
                                && pos + count < n
                                && unit_matches(&prog, info.body, input[pos + count])
                            {
                                count += 1;
                            }
                            *budget = budget.saturating_sub(count as u64);
                            if count < min {
                                false
                            } else {
                                if count < max {
                                    let trail = trail_mark(self.trail);
                                    self.push(Choice::RepOneLazy {
                                        next: to_u32(pc + 1),
                                        rep: i,
                                        trail,
                                        base: pos,
                                        count,
                                    });
                                }
                                pos += count;
                                pc += 1;
                                true
                            }
                        }
                    }
                }
                Inst::RepInit(r) => {
                    // REPEAT: count = -1, last_ptr = NULL, then straight to the UNTIL opcode.
                    self.set(prog.count_reg(r), NONE);
                    self.set(prog.last_reg(r), NONE);
                    pc = prog.reps[r as usize].until as usize;
                    true
                }
                Inst::Until(r) => {
                    let info = prog.reps[r as usize];
                    let cnt_reg = prog.count_reg(r);
                    let last_reg = prog.last_reg(r);
                    let count = self.regs[cnt_reg].wrapping_add(1);
                    if count < info.min as usize {
                        // Not enough iterations yet (no zero-width protection here, as in sre).
                        self.set(cnt_reg, count);
                        pc = info.body as usize;
                    } else if info.greedy {
                        // MAX_UNTIL: try another iteration unless the last one was empty.
                        if (unbounded(info.max) || count < info.max as usize)
                            && pos != self.regs[last_reg]
                        {
                            let trail = trail_mark(self.trail);
                            self.push(Choice::Alt {
                                pc: info.exit,
                                trail,
                                pos,
                            });
                            self.set(cnt_reg, count);
                            self.set(last_reg, pos);
                            pc = info.body as usize;
                        } else {
                            pc = info.exit as usize;
                        }
                    } else {
                        // MIN_UNTIL: try the tail first; another iteration on backtracking.
                        let trail = trail_mark(self.trail);
                        self.push(Choice::LazyUntil {
                            rep: r,
                            trail,
                            count,
                            pos,
                        });
                        pc = info.exit as usize;
                    }
                    true
                }
                Inst::PossInit(r) => {
                    self.set(prog.count_reg(r), 0);
                    self.set(prog.last_reg(r), NONE);
                    pc += 1;
                    true
                }
                Inst::PossLoop(r) => {
                    let info = prog.reps[r as usize];
                    let count = self.regs[prog.count_reg(r)];
                    let last_reg = prog.last_reg(r);
                    let trail = trail_mark(self.trail);
                    if count < info.min as usize {
                        self.push(Choice::Barrier {
                            kind: BarrierKind::PossMin,
                            next: info.exit,
                            aux: r,
                            trail,
                            pos,
                        });
                        self.barriers.push(to_u32(self.stack.len() - 1));
                        pc = info.body as usize;
                    } else if (unbounded(info.max) || count < info.max as usize)
                        && pos != self.regs[last_reg]
                    {
                        self.push(Choice::Barrier {
                            kind: BarrierKind::PossMore,
                            next: info.exit,
                            aux: r,
                            trail,
                            pos,
                        });
                        self.barriers.push(to_u32(self.stack.len() - 1));
                        self.set(last_reg, pos);
                        pc = info.body as usize;
                    } else {
                        pc = info.exit as usize;
                    }
                    true
                }
                Inst::Sub(i) => {
                    let info = prog.subs[i as usize];
                    let (kind, back) = match info.kind {
                        SubKind::Atomic => (BarrierKind::Atomic, 0),
                        SubKind::Ahead => (BarrierKind::Look, 0),
                        SubKind::NotAhead => (BarrierKind::NotLook, 0),
                        SubKind::Behind => (BarrierKind::Look, info.width as usize),
                        SubKind::NotBehind => (BarrierKind::NotLook, info.width as usize),
                    };
                    if pos < back {
                        // Not enough text behind: a positive lookbehind fails, a negative holds.
                        if kind == BarrierKind::NotLook {
                            pc = info.next as usize;
                            true
                        } else {
                            false
                        }
                    } else {
                        let trail = trail_mark(self.trail);
                        self.push(Choice::Barrier {
                            kind,
                            next: info.next,
                            aux: 0,
                            trail,
                            pos,
                        });
                        self.barriers.push(to_u32(self.stack.len() - 1));
                        pos -= back;
                        pc += 1;
                        true
                    }
                }
                Inst::SubEnd => {
                    let at = self.barriers.pop().map_or(0, |b| b as usize);
                    let entry = self.stack.get(at).copied();
                    self.stack.truncate(at);
                    match entry {
                        Some(Choice::Barrier {
                            kind,
                            next,
                            aux,
                            trail,
                            pos: saved,
                        }) => match kind {
                            BarrierKind::Atomic => {
                                pc = next as usize;
                                true
                            }
                            BarrierKind::Look => {
                                pc = next as usize;
                                pos = saved;
                                true
                            }
                            BarrierKind::NotLook => {
                                self.unwind(trail);
                                false
                            }
                            BarrierKind::PossMin | BarrierKind::PossMore => {
                                let reg = prog.count_reg(aux);
                                let count = self.regs[reg] + 1;
                                self.set(reg, count);
                                pc = prog.reps[aux as usize].until as usize;
                                true
                            }
                        },
                        _ => false,
                    }
                }
                Inst::Backref(g, fold) => match self.group_span(g) {
                    Some((s, e)) => {
                        let len = e - s;
                        if pos + len <= n
                            && (0..len).all(|k| fold_eq(fold, input[pos + k], input[s + k]))
                        {
                            pos += len;
                            pc += 1;
                            true
                        } else {
                            false
                        }
                    }
                    None => false,
                },
                Inst::Param(g, dotall) => {
                    let mut steps = 0;
                    let found = param_next(input, pos, 0, 0, dotall, &mut steps);
                    *budget = budget.saturating_sub(steps);
                    match found {
                        Some((alt, len, end)) => {
                            let trail = trail_mark(self.trail);
                            self.push(Choice::Param {
                                next: to_u32(pc + 1),
                                group: g,
                                trail,
                                dotall,
                                alt,
                                start: pos,
                                len,
                            });
                            let slot = 2 * (g as usize - 1);
                            self.set(slot, pos);
                            self.set(slot + 1, end);
                            pos = end;
                            pc += 1;
                            true
                        }
                        None => false,
                    }
                }
                Inst::CondGroup(g, no) => {
                    pc = if self.group_span(g).is_some() {
                        pc + 1
                    } else {
                        no as usize
                    };
                    true
                }
                Inst::Match => {
                    if must_advance && pos == start {
                        false
                    } else {
                        return Ok(Some(pos));
                    }
                }
            };
            if !ok {
                match self.backtrack(budget)? {
                    Some((npc, npos)) => {
                        pc = npc;
                        pos = npos;
                    }
                    None => return Ok(None),
                }
            }
        }
    }

    /// Pops choice points until one yields a new state; `None` when the attempt failed.
    fn backtrack(&mut self, budget: &mut u64) -> Result<Option<(usize, usize)>, LimitExceeded> {
        let prog = self.prog;
        let input = self.input;
        loop {
            if *budget == 0 {
                return Err(LimitExceeded);
            }
            *budget -= 1;
            let Some(top) = self.stack.last().copied() else {
                return Ok(None);
            };
            match top {
                Choice::Alt { pc, trail, pos } => {
                    self.stack.pop();
                    self.unwind(trail);
                    return Ok(Some((pc as usize, pos)));
                }
                Choice::RepOneGreedy {
                    next,
                    min,
                    trail,
                    base,
                    count,
                } => {
                    self.unwind(trail);
                    let count = count - 1;
                    if count <= min as usize {
                        self.stack.pop();
                    } else if let Some(Choice::RepOneGreedy { count: c, .. }) =
                        self.stack.last_mut()
                    {
                        *c = count;
                    }
                    return Ok(Some((next as usize, base + count)));
                }
                Choice::RepOneLazy {
                    next,
                    rep,
                    trail,
                    base,
                    count,
                } => {
                    self.unwind(trail);
                    let info = prog.rep_ones[rep as usize];
                    let at = base + count;
                    if at >= input.len() || !unit_matches(&prog, info.body, input[at]) {
                        self.stack.pop();
                        continue;
                    }
                    let count = count + 1;
                    if !unbounded(info.max) && count >= info.max as usize {
                        self.stack.pop();
                    } else if let Some(Choice::RepOneLazy { count: c, .. }) = self.stack.last_mut()
                    {
                        *c = count;
                    }
                    return Ok(Some((next as usize, base + count)));
                }
                Choice::LazyUntil {
                    rep,
                    trail,
                    count,
                    pos,
                } => {
                    self.stack.pop();
                    self.unwind(trail);
                    let info = prog.reps[rep as usize];
                    let last_reg = prog.last_reg(rep);
                    if (!unbounded(info.max) && count >= info.max as usize)
                        || pos == self.regs[last_reg]
                    {
                        continue;
                    }
                    self.set(prog.count_reg(rep), count);
                    self.set(last_reg, pos);
                    return Ok(Some((info.body as usize, pos)));
                }
                Choice::Param {
                    next,
                    group,
                    trail,
                    dotall,
                    alt,
                    start,
                    len,
                } => {
                    self.unwind(trail);
                    let mut steps = 0;
                    let found = param_next(input, start, alt, len, dotall, &mut steps);
                    *budget = budget.saturating_sub(steps);
                    let Some((alt, len, end)) = found else {
                        self.stack.pop();
                        continue;
                    };
                    if let Some(Choice::Param { alt: a, len: l, .. }) = self.stack.last_mut() {
                        *a = alt;
                        *l = len;
                    }
                    let slot = 2 * (group as usize - 1);
                    self.set(slot, start);
                    self.set(slot + 1, end);
                    return Ok(Some((next as usize, end)));
                }
                Choice::Barrier {
                    kind,
                    next,
                    trail,
                    pos,
                    ..
                } => {
                    self.stack.pop();
                    self.barriers.pop();
                    self.unwind(trail);
                    match kind {
                        // The body failed, so the negative assertion holds.
                        BarrierKind::NotLook => return Ok(Some((next as usize, pos))),
                        // An optional possessive iteration failed: leave the loop.
                        BarrierKind::PossMore => return Ok(Some((next as usize, pos))),
                        _ => continue,
                    }
                }
            }
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
