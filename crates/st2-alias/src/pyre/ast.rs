//! The parsed form of a Python regex: a mirror of `sre_parse`'s token lists.
//!
//! The shape is kept identical to what CPython 3.11's `re._parser.parse` returns (non-capturing
//! groups without flags are spliced into their parent, common prefixes of alternatives are
//! factored out, alternations of single characters become one set), because StackStorm inspects
//! exactly that structure to decide whether a format already carries its own `^`/`$` anchors.

/// `sre_constants.MAXREPEAT`: an unbounded repeat count (and the limit for explicit counts).
pub(crate) const MAXREPEAT: u32 = u32::MAX;

/// `sre_parse.MAXWIDTH` (`1 << 64`), the cap of [`width`], stood for by `u64::MAX`. That value
/// is one less, which changes no outcome: widths only matter to a look-behind, which fails as
/// "looks too much behind" on anything over `MAXCODE` (`u32::MAX`) before the two bounds are
/// compared, and a sum or product that reaches the cap stays there either way.
pub(crate) const MAXWIDTH: u64 = u64::MAX;

/// `re.IGNORECASE`.
pub const FLAG_IGNORECASE: u32 = 2;
/// `re.LOCALE` (always rejected for text patterns).
pub const FLAG_LOCALE: u32 = 4;
/// `re.MULTILINE`.
pub const FLAG_MULTILINE: u32 = 8;
/// `re.DOTALL`.
pub const FLAG_DOTALL: u32 = 16;
/// `re.UNICODE` (the default for text patterns).
pub const FLAG_UNICODE: u32 = 32;
/// `re.VERBOSE`.
pub const FLAG_VERBOSE: u32 = 64;
/// `re.DEBUG` (cannot be set inline; listed for the global-flag checks).
pub const FLAG_DEBUG: u32 = 128;
/// `re.ASCII`.
pub const FLAG_ASCII: u32 = 256;
/// `re.TEMPLATE` (deprecated; forbids repetition).
pub const FLAG_TEMPLATE: u32 = 1;

/// Zero-width positions (`AT` codes). Multiline and ASCII variants are chosen at compile time.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub(crate) enum At {
    /// `^`
    Beginning,
    /// `\A`
    BeginningString,
    /// `$`
    End,
    /// `\Z`
    EndString,
    /// `\b`
    Boundary,
    /// `\B`
    NonBoundary,
}

/// Character categories (`\d`, `\D`, `\s`, `\S`, `\w`, `\W`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub(crate) enum Category {
    Digit,
    NotDigit,
    Space,
    NotSpace,
    Word,
    NotWord,
}

/// One member of a character set (`IN`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub(crate) enum SetItem {
    /// Leading `^` of a negated set.
    Negate,
    /// A single code point (may be a lone surrogate written as an escape, which never matches).
    Literal(u32),
    /// An inclusive code point range.
    Range(u32, u32),
    /// A category escape inside the set.
    Category(Category),
}

/// Greedy (`*`), lazy (`*?`) or possessive (`*+`, Python 3.11+).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub(crate) enum RepeatKind {
    Greedy,
    Lazy,
    Possessive,
}

/// A sequence of tokens (`SubPattern`).
pub(crate) type Seq = Vec<Node>;

/// One `sre_parse` token.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Literal(u32),
    NotLiteral(u32),
    Any,
    In(Vec<SetItem>),
    At(At),
    /// Alternatives, in order.
    Branch(Vec<Seq>),
    /// A group: capturing (`group` is its number) and/or carrying scoped flags.
    Subpattern {
        group: Option<usize>,
        add_flags: u32,
        del_flags: u32,
        body: Seq,
    },
    Repeat {
        kind: RepeatKind,
        min: u32,
        max: u32,
        body: Seq,
    },
    Atomic(Seq),
    Assert {
        behind: bool,
        negate: bool,
        body: Seq,
    },
    GroupRef(usize),
    /// StackStorm's placeholder group `(?P<name>(?:(?<=').+?(?=')|(?<=").+?(?=")|{.+?}|.+?))`
    /// for group number `.0`: the parser recognises the exact text and emits this instead of
    /// the equivalent subtree, which the VM runs as one instruction.
    Param(usize),
    GroupRefExists {
        group: usize,
        yes: Seq,
        no: Option<Seq>,
    },
}

impl Node {
    /// Token equality as Python's tuple comparison sees it when `_parse_sub` factors out common
    /// prefixes: tokens holding a `SubPattern` object compare by identity, so they never match.
    pub(crate) fn same_token(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Literal(a), Node::Literal(b)) => a == b,
            (Node::NotLiteral(a), Node::NotLiteral(b)) => a == b,
            (Node::Any, Node::Any) => true,
            (Node::In(a), Node::In(b)) => a == b,
            (Node::At(a), Node::At(b)) => a == b,
            (Node::GroupRef(a), Node::GroupRef(b)) => a == b,
            _ => false,
        }
    }
}

/// `SubPattern.getwidth()` as CPython 3.11.7 has it: the (min, max) number of characters a
/// sequence can match, both capped at [`MAXWIDTH`]; an unbounded repeat of anything that
/// consumes makes the maximum [`MAXWIDTH`]. (Older sre capped at `MAXREPEAT - 1` and
/// `MAXREPEAT`, so a look-behind over `2**32` characters was "fixed-width"; 3.11.7 rejects it
/// as "looks too much behind", which the fuzzer found pyre did not.) `group_widths` holds the
/// widths of closed groups for back-references.
pub(crate) fn width(seq: &[Node], group_widths: &[Option<(u64, u64)>]) -> (u64, u64) {
    let cap = u128::from(MAXWIDTH);
    let mut lo: u128 = 0;
    let mut hi: u128 = 0;
    for node in seq {
        let (i, j) = match node {
            Node::Branch(items) => {
                let mut i = MAXWIDTH;
                let mut j = 0;
                for item in items {
                    let (l, h) = width(item, group_widths);
                    i = i.min(l);
                    j = j.max(h);
                }
                (u128::from(i), u128::from(j))
            }
            Node::Atomic(body) | Node::Subpattern { body, .. } => {
                let (l, h) = width(body, group_widths);
                (u128::from(l), u128::from(h))
            }
            Node::Repeat { min, max, body, .. } => {
                let (l, h) = width(body, group_widths);
                let hi = if *max == MAXREPEAT && h > 0 {
                    cap
                } else {
                    u128::from(h) * u128::from(*max)
                };
                (u128::from(l) * u128::from(*min), hi)
            }
            Node::Literal(_) | Node::NotLiteral(_) | Node::Any | Node::In(_) => (1, 1),
            // The placeholder group's widest alternative is `.+?`.
            Node::Param(_) => (1, cap),
            Node::GroupRef(g) => {
                let (l, h) = group_widths.get(*g).copied().flatten().unwrap_or((0, 0));
                (u128::from(l), u128::from(h))
            }
            Node::GroupRefExists { yes, no, .. } => {
                let (mut i, mut j) = width(yes, group_widths);
                match no {
                    Some(no) => {
                        let (l, h) = width(no, group_widths);
                        i = i.min(l);
                        j = j.max(h);
                    }
                    None => i = 0,
                }
                (u128::from(i), u128::from(j))
            }
            Node::At(_) | Node::Assert { .. } => (0, 0),
        };
        // Each term is at most 2**64 * 2**32, so capping after every step keeps the sums far
        // from overflowing u128 however long the sequence.
        lo = (lo + i).min(cap);
        hi = (hi + j).min(cap);
    }
    // Both bounds are capped at MAXWIDTH, which fits in u64: the casts cannot truncate.
    (lo as u64, hi as u64)
}

/// Which anchors StackStorm's `search_regex_tokens` looks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AnchorSide {
    /// `(AT, AT_BEGINNING)` or `(AT, AT_BEGINNING_STRING)`: `^` or `\A`.
    Begin,
    /// `(AT, AT_END)` or `(AT, AT_END_STRING)`: `$` or `\Z`.
    End,
}

/// StackStorm's `search_regex_tokens`: looks for an anchor among the top-level tokens, descending
/// into groups and, for an alternation, into its *second* alternative only (`rtoken[1][1]`; the
/// st2 docs call it "the last", which is the same thing for two alternatives). Repeats,
/// lookarounds, atomic groups and conditionals are not descended into.
pub(crate) fn has_anchor(seq: &[Node], side: AnchorSide) -> bool {
    seq.iter().any(|node| match node {
        Node::Subpattern { body, .. } => has_anchor(body, side),
        Node::Branch(items) => items.get(1).is_some_and(|item| has_anchor(item, side)),
        Node::At(at) => match side {
            AnchorSide::Begin => matches!(at, At::Beginning | At::BeginningString),
            AnchorSide::End => matches!(at, At::End | At::EndString),
        },
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_caps_like_sre() {
        let seq = vec![Node::Repeat {
            kind: RepeatKind::Greedy,
            min: 2,
            max: MAXREPEAT,
            body: vec![Node::Any],
        }];
        assert_eq!(width(&seq, &[]), (2, MAXWIDTH));
    }

    #[test]
    fn anchor_search_only_looks_at_second_alternative() {
        let first = vec![Node::Branch(vec![
            vec![Node::At(At::Beginning)],
            vec![Node::Literal(120)],
        ])];
        let second = vec![Node::Branch(vec![
            vec![Node::Literal(120)],
            vec![Node::At(At::Beginning)],
        ])];
        assert!(!has_anchor(&first, AnchorSide::Begin));
        assert!(has_anchor(&second, AnchorSide::Begin));
    }
}
