//! Tests of the Python regex dialect. Every expectation was checked against CPython 3.11's `re`
//! (`re.search(pattern, text)` groups, `re.compile` errors and messages).

use super::*;

/// `re.search(pattern, text)`: `None`, or every group's text (`None` for unset groups).
fn search(pattern: &str, text: &str) -> Option<Vec<Option<String>>> {
    let re = Regex::new(pattern, 0).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
    let input: Vec<char> = text.chars().collect();
    let mut budget = DEFAULT_STEP_LIMIT;
    let caps = re
        .search(&input, &mut Cache::new(), &mut budget)
        .expect("within budget")?;
    Some((0..caps.len()).map(|i| caps.text(&input, i)).collect())
}

fn groups(items: &[Option<&str>]) -> Option<Vec<Option<String>>> {
    Some(items.iter().map(|s| s.map(str::to_owned)).collect())
}

fn whole(s: &str) -> Option<Vec<Option<String>>> {
    groups(&[Some(s)])
}

/// `re.compile(pattern)` error message.
fn error(pattern: &str) -> String {
    match Regex::new(pattern, 0) {
        Ok(_) => panic!("{pattern:?} should be rejected"),
        Err(e) => e.to_string(),
    }
}

fn error_kind(pattern: &str) -> ErrorKind {
    match Regex::new(pattern, 0) {
        Ok(_) => panic!("{pattern:?} should be rejected"),
        Err(e) => e.kind(),
    }
}

#[test]
fn escapes_follow_python() {
    assert_eq!(search(r"\x41\u00e9\U0001F600", "Aé😀"), whole("Aé😀"));
    assert_eq!(search(r"\0\012", "\0\n"), whole("\0\n"));
    assert_eq!(search(r"\-", "-"), whole("-"));
    assert_eq!(error(r"\q"), r"bad escape \q at position 0");
    assert_eq!(
        error(r"\400"),
        r"octal escape value \400 outside of range 0-0o377 at position 0"
    );
    assert_eq!(error(r"\8"), "invalid group reference 8 at position 1");
    assert_eq!(error(r"\x4"), r"incomplete escape \x4 at position 0");
    assert_eq!(error(r"\u12"), r"incomplete escape \u12 at position 0");
    assert_eq!(error("a\\"), "bad escape (end of pattern) at position 1");
    // Python accepts \N{...}; we cannot resolve names and say so instead of guessing.
    assert_eq!(error_kind(r"\N{DIGIT ONE}"), ErrorKind::Unsupported);
}

#[test]
fn character_classes_follow_python() {
    // Not a POSIX class: the set is `[:alph` and a literal `]` follows.
    assert_eq!(search("[[:alpha:]]", "a"), None);
    assert_eq!(search("[[:alpha:]]", "a]"), whole("a]"));
    assert_eq!(search("[]a]", "]"), whole("]"));
    assert_eq!(search("[^]a]", "b"), whole("b"));
    assert_eq!(search("[a-]", "-"), whole("-"));
    assert_eq!(search(r"[\b]", "\u{8}"), whole("\u{8}"));
    assert_eq!(search(r"[\w-]+", "a-b"), whole("a-b"));
    assert_eq!(error("[z-a]"), "bad character range z-a at position 1");
    assert_eq!(error(r"[\d-z]"), r"bad character range \d-z at position 1");
    assert_eq!(error("[a"), "unterminated character set at position 0");
}

#[test]
fn unicode_categories_follow_python() {
    assert_eq!(search(r"\w", "é"), whole("é"));
    assert_eq!(search(r"\d", "٣"), whole("٣"));
    assert_eq!(search(r"\s", "\u{a0}"), whole("\u{a0}"));
    assert_eq!(search(r"(?a:\w)", "é"), None);
    assert_eq!(search(r"\bfoo\b", "a foo b"), whole("foo"));
    assert_eq!(search(r"\Bfoo", "afoo"), whole("foo"));
    // sre: \b and \B both fail on an empty string.
    assert_eq!(search(r"\b", ""), None);
    assert_eq!(search(r"\B", ""), None);
}

#[test]
fn quantifiers_follow_python() {
    assert_eq!(search("a{2}", "aaa"), whole("aa"));
    assert_eq!(search("a{,2}", "aaa"), whole("aa"));
    assert_eq!(search("a{2,}", "aaaa"), whole("aaaa"));
    // `{` that does not start a valid quantifier is a literal.
    assert_eq!(search("a{", "a{"), whole("a{"));
    assert_eq!(search("a{1,x}", "a{1,x}"), whole("a{1,x}"));
    assert_eq!(search("x*?y", "xxy"), whole("xxy"));
    // Possessive: gives nothing back.
    assert_eq!(search("a*+a", "aaa"), None);
    assert_eq!(
        error("a{2,1}"),
        "min repeat greater than max repeat at position 2"
    );
    assert_eq!(error("x**"), "multiple repeat at position 2");
    assert_eq!(error("^*"), "nothing to repeat at position 1");
    assert_eq!(error_kind("a{4294967295}"), ErrorKind::Overflow);
}

#[test]
fn possessive_group_repeat_is_not_an_atomic_greedy_repeat() {
    // CPython: POSSESSIVE_REPEAT matches each iteration atomically...
    assert_eq!(search("(?:a|ab){2,}+", "abab"), None);
    // ...whereas an atomic group around a greedy repeat may backtrack inside first.
    assert_eq!(search("(?>(?:a|ab){2,})", "abab"), whole("aba"));
    assert_eq!(search("(?>a|ab)c", "abc"), None);
    assert_eq!(search("(?:a|ab)c", "abc"), whole("abc"));
}

#[test]
fn lookarounds_follow_python() {
    assert_eq!(search("(?<=a)b", "ab"), whole("b"));
    assert_eq!(search("(?<!a)b", "ab"), None);
    assert_eq!(search("a(?=b)", "ab"), whole("a"));
    assert_eq!(search("a(?!b)", "ab"), None);
    assert_eq!(
        error("(?<=a+)b"),
        "look-behind requires fixed-width pattern"
    );
    assert_eq!(error("(?<x"), "unknown extension ?<x at position 1");
}

/// Found by the pyre_diff fuzzer: `int()` does not strip U+001E, so a conditional group's
/// "number" with it is a bad group name, not a reference to group 2.
#[test]
fn conditional_group_number_with_a_separator_is_a_bad_name() {
    assert_eq!(
        error("(a)?(?(\x1e2)b|c)"),
        "bad character in group name '\\x1e2' at position 7"
    );
    assert_eq!(
        error("(a)?(?( 2)b|c)"),
        "invalid group reference 2 at position 7"
    );
}

/// Found by the pyre_diff fuzzer: CPython 3.11.7 measures widths up to `2**64` and rejects a
/// look-behind whose minimum width passes `MAXCODE` before checking that it is fixed; pyre
/// capped widths at `MAXREPEAT` and called these fixed-width or merely variable-width.
#[test]
fn lookbehind_widths_are_capped_like_python_3_11_7() {
    // Python: `re.compile(p)` raises `re.error("looks too much behind")`.
    for p in [
        r"(?<!(?: {1,3}?\0[--] )a{4294967294}.[--])*",
        r"(?<=a{2}a{4294967294})",
        r"(?<=(?:a{4294967294}){2})",
    ] {
        assert_eq!(error(p), "looks too much behind", "{p}");
    }
    // Still variable-width (the minimum fits in MAXCODE).
    assert_eq!(
        error(r"(?<!a{1,3}a{4294967294})"),
        "look-behind requires fixed-width pattern"
    );
    // An unbounded repeat is as wide as anything, even at the cap.
    assert_eq!(
        error(r"(?<=(?:a{4294967294}){1,})"),
        "look-behind requires fixed-width pattern"
    );
    // The largest fixed widths Python accepts.
    assert!(Regex::new(r"(?<!a{4294967294}b)", 0).is_ok());
    assert!(Regex::new(r"(?<!a{4294967294})", 0).is_ok());
}

#[test]
fn backreferences_and_conditionals_follow_python() {
    assert_eq!(search(r"(a)\1", "aa"), groups(&[Some("aa"), Some("a")]));
    assert_eq!(
        search("(?P<x>a)(?P=x)", "aa"),
        groups(&[Some("aa"), Some("a")])
    );
    assert_eq!(search(r"(?i)(a)\1", "aA"), groups(&[Some("aA"), Some("a")]));
    assert_eq!(search("(a)?(?(1)b|c)", "c"), groups(&[Some("c"), None]));
    assert_eq!(
        search("(a)?(?(1)b|c)", "ab"),
        groups(&[Some("ab"), Some("a")])
    );
    assert_eq!(error(r"\2"), "invalid group reference 2 at position 1");
    assert_eq!(
        error(r"(a\1)"),
        "cannot refer to an open group at position 2"
    );
    assert_eq!(
        error("(?(2)a)(b)"),
        "invalid group reference 2 at position 3"
    );
    assert_eq!(error("(?(0)a)"), "bad group number at position 3");
    assert_eq!(error("(?(a)b)"), "unknown group name 'a' at position 3");
}

#[test]
fn captures_follow_sre_repeat_rules() {
    assert_eq!(
        search("(a|b)*c", "abac"),
        groups(&[Some("abac"), Some("a")])
    );
    assert_eq!(search("(a*)*b", "aab"), groups(&[Some("aab"), Some("")]));
    assert_eq!(search("(a|)*", "aa"), groups(&[Some("aa"), Some("")]));
    assert_eq!(search("(?:(a)|b)*", "ab"), groups(&[Some("ab"), Some("a")]));
}

#[test]
fn scoped_and_global_flags_follow_python_3_11() {
    assert_eq!(search("(?i:run) x", "RUN x"), whole("RUN x"));
    assert_eq!(search("(?i:run) x", "RUN X"), None);
    assert_eq!(search("(?s:.)", "\n"), whole("\n"));
    assert_eq!(search("(?-s:.)", "\n"), None);
    assert_eq!(search("(?m:^b)", "a\nb"), whole("b"));
    assert_eq!(search("(?x) a b # c", "ab"), whole("ab"));
    assert_eq!(
        error("a(?i)b"),
        "global flags not at the start of the expression at position 1"
    );
    assert_eq!(
        error("(?iL)"),
        "bad inline flags: cannot use 'L' flag with a str pattern at position 4"
    );
    assert_eq!(
        error("(?a-u:x)"),
        "bad inline flags: cannot turn off flags 'a', 'u' and 'L' at position 5"
    );
    assert_eq!(
        error("(?i-i:x)"),
        "bad inline flags: flag turned on and off at position 5"
    );
}

#[test]
fn case_folding_uses_python_simple_folding() {
    assert_eq!(search("(?i)k", "\u{212a}"), whole("\u{212a}"));
    assert_eq!(search("(?i)s", "ſ"), whole("ſ"));
    assert_eq!(search("(?i)[a-z]", "\u{212a}"), whole("\u{212a}"));
    // sre keeps non-BMP literals of a multi-member set unfolded, so this never matches.
    assert_eq!(search("(?i)[\u{10400}x]", "\u{10400}"), None);
    assert_eq!(search("(?i)[\u{10428}x]", "\u{10400}"), whole("\u{10400}"));
}

#[test]
fn dollar_matches_before_a_final_newline() {
    assert_eq!(search("a$", "a\n"), whole("a"));
    assert_eq!(search(r"a\Z", "a\n"), None);
    assert_eq!(search("a$", "a\n\n"), None);
}

#[test]
fn group_names_follow_python_identifiers() {
    assert_eq!(search("(?P<größe>x)", "x"), groups(&[Some("x"), Some("x")]));
    assert_eq!(
        error("(?P<1a>x)"),
        "bad character in group name '1a' at position 4"
    );
    assert_eq!(
        error("(?P<a>x)(?P<a>y)"),
        "redefinition of group name 'a' as group 2; was group 1 at position 12"
    );
}

#[test]
fn structural_errors_follow_python() {
    assert_eq!(error("(?"), "unexpected end of pattern at position 2");
    assert_eq!(error("(?P"), "unexpected end of pattern at position 3");
    assert_eq!(
        error("(a"),
        "missing ), unterminated subpattern at position 0"
    );
    assert_eq!(error("a)"), "unbalanced parenthesis at position 1");
    assert_eq!(
        error("(?#x"),
        "missing ), unterminated comment at position 0"
    );
    assert_eq!(
        error("x\n(a"),
        "missing ), unterminated subpattern at position 2 (line 2, column 1)"
    );
}

#[test]
fn finditer_follows_python_3_7_empty_match_rules() {
    let re = Regex::new("x*", 0).expect("valid");
    let input: Vec<char> = "axb".chars().collect();
    let mut budget = DEFAULT_STEP_LIMIT;
    let spans: Vec<_> = re
        .find_all(&input, &mut Cache::new(), &mut budget)
        .expect("within budget")
        .iter()
        .map(|c| (c.start(), c.end()))
        .collect();
    assert_eq!(spans, vec![(0, 0), (1, 2), (2, 2), (3, 3)]);
}

#[test]
fn catastrophic_backtracking_hits_the_step_limit() {
    let re = Regex::new("(a*)*b", 0).expect("valid");
    // The `b` is present (so the literal pre-check cannot answer) but unreachable from the a's.
    let input: Vec<char> = format!("{}!b", "a".repeat(40)).chars().collect();
    let mut budget = 100_000;
    assert_eq!(
        re.search(&input, &mut Cache::new(), &mut budget),
        Err(SearchError::LimitExceeded)
    );
}

#[test]
fn st2_anchor_detection_walks_sre_tokens() {
    let begin = |p: &str| {
        Parsed::new(p, FLAG_DOTALL)
            .expect("valid")
            .has_begin_anchor()
    };
    let end = |p: &str| Parsed::new(p, FLAG_DOTALL).expect("valid").has_end_anchor();
    assert!(begin(r"^\s*foo"));
    assert!(begin(r"(?:x|^)hello"));
    assert!(!begin(r"(?:^|x)hello"));
    // Three alternatives: st2 looks at the second (index 1), not the last.
    assert!(begin("(?:a|^|b)x"));
    assert!(!begin("(?:a|b|^)x"));
    // Common prefixes are factored out of alternations first.
    assert!(begin("(?:^a|^b)"));
    // Repeats and lookarounds are not searched.
    assert!(!begin("(?:^)?x"));
    assert!(!begin("(?=^)x"));
    assert!(end(r"(?:\b|$)"));
    assert!(end(r"foo\Z"));
    assert!(end("(?P<x>a$)"));
}

#[test]
fn st2_param_shortcut_matches_the_generic_subtree() {
    // The parser recognises st2's placeholder group and runs it as one instruction; in verbose
    // mode it takes the generic path. The text has no whitespace or `#`, so both must agree.
    let param = format!(
        "{}p{}[\"\\']?",
        parser::ST2_PARAM_HEAD,
        parser::ST2_PARAM_BODY
    );
    let patterns = [
        // `[ ]` rather than a space: verbose mode would drop a bare space.
        format!(
            r"^\s*go[ ]{param}[ ]to[ ]{param2}\s*$",
            param2 = param.replace("<p>", "<q>")
        ),
        format!(r"^\s*{param}(?:[ ]x)?\s*$"),
        format!(r"a{param}b"),
    ];
    let inputs = [
        " go 'a b' to c ",
        " go \"a\" to \"b c\" ",
        " go {x} to {y}z} ",
        " go a\nb to c\nd ",
        " go ' to ' to x ",
        " go to to to ",
        " 'x' x ",
        "a''b",
        "a\"\"b",
        "a{}b",
        "a{\n}b",
        "ab",
        "a\n'b",
    ];
    for flags in [0, FLAG_DOTALL] {
        for pattern in &patterns {
            let fast = Regex::new(pattern, flags).expect("valid");
            let slow = Regex::new(&format!("(?x){pattern}"), flags).expect("valid");
            assert!(
                fast.debug_sizes() != slow.debug_sizes(),
                "shortcut not taken"
            );
            for input in inputs {
                let chars: Vec<char> = input.chars().collect();
                let run = |re: &Regex| {
                    let mut budget = DEFAULT_STEP_LIMIT;
                    re.find_all(&chars, &mut Cache::new(), &mut budget)
                        .expect("within budget")
                };
                assert_eq!(run(&fast), run(&slow), "{pattern:?} on {input:?}");
            }
        }
    }
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    let deep = format!("{}a{}", "(".repeat(1000), ")".repeat(1000));
    assert_eq!(error_kind(&deep), ErrorKind::Recursion);
    let fine = format!("{}a{}", "(".repeat(99), ")".repeat(99));
    assert_eq!(search(&fine, "a").map(|g| g.len()), Some(100));
}

#[test]
fn the_template_flag_refuses_repeats_naming_the_opcode() {
    let message = |pattern: &str| match Regex::new(pattern, ast::FLAG_TEMPLATE) {
        Ok(_) => panic!("{pattern:?} should be rejected under re.TEMPLATE"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        message("a*"),
        "internal: unsupported template operator MAX_REPEAT"
    );
    assert_eq!(
        message("(?:ab)*?"),
        "internal: unsupported template operator MIN_REPEAT"
    );
    assert_eq!(
        message("a*+"),
        "internal: unsupported template operator POSSESSIVE_REPEAT"
    );
}

#[test]
fn error_messages_escape_what_python_repr_escapes() {
    // U+00A0 (a space separator), U+200B (a format character) and U+E000 (private use) are
    // not printable for Python; U+10FFFF is unassigned.
    assert_eq!(
        error("(?P<a\u{a0}\u{200b}\u{e000}\u{10ffff}é>x)"),
        "bad character in group name 'a\\xa0\\u200b\\ue000\\U0010ffffé' at position 4"
    );
}

/// Every match's group spans, as `re.finditer` gives them.
fn finditer_spans(pattern: &str, text: &str) -> Vec<Vec<Option<(usize, usize)>>> {
    let re = Regex::new(pattern, 0).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
    let input: Vec<char> = text.chars().collect();
    let mut budget = DEFAULT_STEP_LIMIT;
    re.find_all(&input, &mut Cache::new(), &mut budget)
        .expect("within budget")
        .iter()
        .map(|c| (0..c.len()).map(|i| c.get(i)).collect())
        .collect()
}

/// The pyre_diff fuzzer's open finding (`fuzz/findings/pyre_diff/possessive-group-span`),
/// settled: CPython 3.11.7 is wrong, pyre is right. `X{,2}+` is documented as `(?>X{,2})`;
/// for the atomic form CPython gives group 6 the span (6, 7) in the fourth match, as pyre does
/// for both, but for the possessive form it gives (7, 7), an empty span for a group whose
/// shortest match is one character (sre's own `getwidth()` says (1, 10)): a start and an end
/// from different attempts. The same mark handling makes CPython raise
/// `SystemError: The span of capturing group is wrong` on `re.match('((x)|y|z)*+', 'xyz')`
/// (python/cpython#101955; 3.11.7, 3.12.1 and 3.13.0 all have it).
#[test]
fn possessive_repeat_keeps_group_spans_of_the_atomic_form() {
    let body = "((|)*?a*?(((?P<g0>){,2}\u{1f600}{0,1}?(( \\u212a{1,3}? {0,1}?|k..).{0,1}?\
                ( {0,1}\\w\\w|\\w\\07{,2}\\w)|\\w)|))|)";
    let possessive = format!("{body}{{,2}}+|");
    let atomic = format!("(?>{body}{{,2}})|");
    let spans = finditer_spans(&possessive, "aaaaaaa");
    assert_eq!(spans, finditer_spans(&atomic, "aaaaaaa"));
    assert_eq!(spans[3][0], Some((6, 7)));
    assert_eq!(
        spans[3][6],
        Some((6, 7)),
        "CPython 3.11.7's possessive form says (7, 7)"
    );
    // pyre has no such error: the groups are those of the atomic form, ('z', 'x').
    assert_eq!(
        finditer_spans("((x)|y|z)*+", "xyz")[0],
        finditer_spans("(?>((x)|y|z)*)", "xyz")[0]
    );
    assert_eq!(
        search("((x)|y|z)*+", "xyz"),
        groups(&[Some("xyz"), Some("z"), Some("x")])
    );
}

/// Found by the pyre_diff fuzzer: flags past `i32::MAX` are an `OverflowError`, raised by
/// `_sre.compile` after the parser's and compiler's own errors.
#[test]
fn flags_past_a_c_int_overflow_after_other_errors() {
    // Without LOCALE (an error of its own for str patterns), DEBUG and TEMPLATE.
    let quiet = !(ast::FLAG_LOCALE | ast::FLAG_DEBUG | ast::FLAG_TEMPLATE);
    for flags in [1 << 31, 3_330_000_000 & quiet] {
        let e = Regex::new("a", flags).expect_err("too large");
        assert_eq!(e.kind(), ErrorKind::Overflow);
        assert_eq!(e.message(), "Python int too large to convert to C int");
        assert_eq!(
            Regex::new("(", flags).expect_err("unclosed").message(),
            "missing ), unterminated subpattern at position 0"
        );
        assert_eq!(
            Regex::new("(?<=a+)", flags)
                .expect_err("variable width")
                .message(),
            "look-behind requires fixed-width pattern"
        );
    }
    assert!(Regex::new("a", i32::MAX as u32 & quiet & !(FLAG_ASCII | FLAG_UNICODE)).is_ok());
}

/// Found by the pyre_diff fuzzer: `\U` escapes past `i32::MAX` make `chr()` raise
/// OverflowError, which sre_parse does not turn into "bad escape" (it catches ValueError only).
#[test]
fn huge_unicode_escapes_overflow() {
    for p in [
        r"\U8001F600",
        r"[\U8001F600]",
        r"\U80000000",
        r"\UFFFFFFFF",
        r"[a-\U80000000]",
    ] {
        assert_eq!(error_kind(p), ErrorKind::Overflow, "{p}");
        assert_eq!(error(p), "Python int too large to convert to C int", "{p}");
    }
    assert_eq!(error(r"\U7fffffff"), r"bad escape \U7fffffff at position 0");
    assert_eq!(
        error(r"[\U7fffffff]"),
        r"bad escape \U7fffffff at position 1"
    );
    assert_eq!(error(r"\U00110000"), r"bad escape \U00110000 at position 0");
}
