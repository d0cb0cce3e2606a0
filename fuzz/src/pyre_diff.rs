//! Target `pyre_diff`: pyre against CPython 3.11's `re`, differentially.
//!
//! Property: for a pattern, flags and a few inputs, pyre and CPython agree on everything
//! observable: both reject the pattern with the same exception class and the same message, or
//! both compile it and give the same `search`, `match` and `finditer` results, each with the
//! same span (in code points) for every group, `None` for a group that did not take part.
//!
//! Patterns come from a grammar ([`Case::generate`]) over a small alphabet chosen for its
//! case-folding and class quirks, so most are valid and the inputs (drawn from the same
//! alphabet and the pattern's own literals) often match. A sprinkle of raw syntax fragments
//! keeps the error paths covered.
//!
//! The oracle is one long-lived `python3` child ([`Oracle`], script `pyre_oracle.py`) speaking
//! JSON lines, one batch of cases per line.
//!
//! Speed. The first campaign ran at 290 inputs/s: every input waited for its own round trip,
//! and CPython, not pyre, was the cost. Timing CPython on a grown corpus's cases gave 15.7 s for
//! 8,126 cases, 10.5 s of it in 21 alarms (0.5 s each) on inputs pyre had already given up on
//! (its step budget), whose results are never compared; without those, 2.7 s. So [`run`]
//! now works out pyre's side first, in the fuzzer's thread (its coverage is what guides
//! libFuzzer), sends CPython only the inputs pyre finished, and leaves the round trip to a
//! thread of its own: cases go in batches of [`BATCH`] through a bounded queue, so both
//! processes work at once and a slow Python holds the fuzzer back instead of piling up.
//! Compiled patterns are cached by (pattern, flags): after that change a profile put 57% of the
//! fuzzer's time in `Regex::new` (case-folding classes such as `[\u0100-\uffff]`), and
//! libFuzzer's mutations sometimes keep the pattern (a later profile still put 56% there: most
//! mutations do change it, and pyre's compile is that target's real work). Inputs are capped at 256 bytes
//! (`scripts/fuzz.sh`). Once inputs reached that size, inputs running to pyre's budget took most
//! of its time, so [`STEP_BUDGET`] went from 200,000 to 20,000 for seven inputs in eight
//! (figures on the constant).
//! A disagreement is found after its input has gone: the oracle thread
//! saves the input and the case (raw mode) as `disagreement-*` beside libFuzzer's artifacts,
//! and the next [`run`] panics with their names; at exit [`finish`] compares the last batch and
//! prints the counts (also printed as they double). `PYRE_DIFF_SYNC=1` compares every input
//! before the next (replays, `-minimize_crash`). The short run stays synchronous ([`check`]).
//!
//! Known, intentional differences (documented in `st2_alias::pyre`), and what is done with
//! them. Each is counted in [`Stats`], never silently dropped:
//! - pyre's step budget: a search that exceeds [`STEP_BUDGET`] (or, for one fuzz input in
//!   [`FULL_BUDGET_SAMPLE`], [`FULL_STEP_BUDGET`]) returns `LimitExceeded` where Python keeps
//!   going. That input is not compared, nor sent ([`Stats::pyre_gave_up`]).
//! - Python has no budget: a compile or search that runs past the oracle's alarm (0.5 s) is
//!   not compared ([`Stats::python_timeouts`]).
//! - `\N{NAME}` escapes: pyre has no Unicode name database and rejects them with
//!   `ErrorKind::Unsupported`; such cases are not compared ([`Stats::unsupported`]).
//! - Nesting deeper than ~100 groups: pyre says `RecursionError` where Python manages ~490
//!   (and may find another error first, e.g. an unclosed group). The grammar never nests that
//!   deep, but raw inputs do: a pyre `RecursionError` on a pattern with at least 100 `(` is
//!   not compared ([`Stats::too_deep`]); any other `RecursionError` mismatch is reported.
//!
//! CPython 3.11.7's bug in possessive repeats (python/cpython#101955: `POSSESSIVE_REPEAT`
//! leaves group marks inconsistent; 3.12.1 and 3.13.0 have it too), seen two ways:
//! - same matches, a different group span, e.g. `((|)*?a*?(((?P<g0>){,2}😀{0,1}?(( \u212a{1,3}?
//!   {0,1}?|k..).{0,1}?( {0,1}\w\w|\w\07{,2}\w)|\w)|))|){,2}+|` on `"aaaaaaa"` (input
//!   `fuzz/findings/pyre_diff/possessive-group-span`): group 6 of the fourth match is `(7, 7)`
//!   in CPython, `(6, 7)` in pyre. CPython is wrong: for the documented equivalent
//!   `(?>...{,2})|` it gives `(6, 7)` itself, and `(7, 7)` is empty where group 6 needs at least
//!   one character (test `possessive_repeat_keeps_group_spans_of_the_atomic_form` in pyre).
//!   Counted in [`Stats::possessive_group_spans`] (possessive quantifier in the pattern, same
//!   group-0 spans);
//! - CPython raising `SystemError: The span of capturing group is wrong` (the issue's own
//!   example, `((x)|y|z)*+` on `"xyz"`): the oracle answers `"systemerror"` for that input,
//!   counted in [`Stats::python_span_errors`] when the pattern has a possessive quantifier.
//!
//! Every other difference under possessive repeats still fails.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Mutex,
};

use arbitrary::{Result, Unstructured};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use st2_alias::pyre::{
    self, Cache, Captures, ErrorKind, FLAG_ASCII, FLAG_DOTALL, FLAG_IGNORECASE, FLAG_MULTILINE,
    FLAG_VERBOSE, Regex,
};

/// The oracle's source, compiled in and passed to `python3 -c` (so neither the harness nor the
/// test needs a path into the repository).
const ORACLE_PY: &str = include_str!("pyre_oracle.py");

/// Steps pyre may take per input (all three operations together). Far below the bridge's own
/// budget: anything pathological should give up quickly rather than slow the campaign down.
/// Measured on a campaign's corpus (about 30,000 inputs, 256-byte fuzz inputs): 99% finish in
/// under 1,000 steps and 0.7% need more than 20,000, while the 5% that ran to the former
/// 200,000 cost ten times more pyre time than all the others together. Among mutated inputs
/// more fall between the two (8% gave up at 20,000 against 2.5% at 200,000), so one fuzz input
/// in [`FULL_BUDGET_SAMPLE`] still gets [`FULL_STEP_BUDGET`]: heavy backtracking stays compared.
pub const STEP_BUDGET: u64 = 20_000;

/// The budget of the sampled inputs (the former budget for all).
pub const FULL_STEP_BUDGET: u64 = 200_000;

/// One fuzz input in this many (by a hash of its bytes, so a replay does the same) gets
/// [`FULL_STEP_BUDGET`].
pub const FULL_BUDGET_SAMPLE: u64 = 8;

/// Characters of patterns and inputs: ASCII letters and digits, whitespace and punctuation that
/// matter to VERBOSE, word boundaries and classes, and non-ASCII letters whose case folding is
/// special in Python (`ſ` folds to `s`, `K` KELVIN SIGN to `k`, `İ`/`ı`, final sigma, `ß`).
const ALPHABET: &[char] = &[
    'a', 'b', 'c', 'A', 'B', 's', 'k', 'S', 'K', '0', '1', '9', ' ', '\t', '\n', '-', '_', '#',
    'é', 'É', 'ß', 'ſ', '\u{212a}', 'İ', 'ı', 'σ', 'ς', 'Σ', '\u{a0}', '٣', '€', '😀',
];

/// Flags the grammar combines (LOCALE is only an error for str patterns, and is produced
/// inline as `(?L)` to check that error instead).
const FLAGS: &[u32] = &[
    FLAG_IGNORECASE,
    FLAG_MULTILINE,
    FLAG_DOTALL,
    FLAG_VERBOSE,
    FLAG_ASCII,
];

/// Raw syntax fragments, valid or not, for the error paths.
const RAW: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\\",
    "|",
    "*",
    "+?",
    "??",
    "{2,1}",
    "{,",
    "{1,2}+",
    "(?",
    "(?P",
    "(?P<",
    "(?P<1>",
    "(?P<n>)(?P<n>)",
    "(?P=",
    "(?<",
    "(?<=a|bc)",
    "(?<!a*)",
    "(?#c)",
    "(?x: )",
    "(?i-i:a)",
    "(?-:a)",
    "(?a)",
    "(?u)",
    "(?L)",
    "(?au)",
    "(?(",
    "(?(0)a)",
    "(?(n)a|b)",
    "(?(1)a|b|c)",
    "\\N{DIGIT ONE}",
    "\\N",
    "\\z",
    "\\8",
    "\\400",
    "\\x4",
    "\\u12",
    "\\U0011ffff",
    "[z-a]",
    "[\\d-z]",
    "[a-\\d]",
    "[]",
    "[^]",
    "[[:alpha:]]",
    "[--]",
    "[&&]",
    "[~~]",
    "[||]",
    "a{4294967295}",
    "a{4294967294}",
    "\\b{2}",
    "^*",
    "$+",
    "(?=a)*",
    "(?:)*",
    "()\\1",
    "(?i)(?s)",
    "a(?i)",
    "(?>a*)",
    "a*+",
    "a?+",
    "(?>",
    "\\Z",
    "\\A",
    "#x\n",
];

/// One differential case: a pattern compiled with `flags`, searched in each input.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// The pattern.
    #[serde(rename = "p")]
    pub pattern: String,
    /// `re` flags (pyre uses Python's values).
    #[serde(rename = "f")]
    pub flags: u32,
    /// Inputs to `search`, `match` and `finditer`.
    #[serde(rename = "s")]
    pub inputs: Vec<String>,
}

/// Pattern text under construction, with what later choices need to know.
struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    out: String,
    /// Capturing groups opened so far (valid back-reference numbers are 1..=groups).
    groups: u32,
    /// Names given to groups so far.
    names: Vec<String>,
    /// Literal characters used, to build inputs that can match.
    literals: Vec<char>,
    /// Nodes left; bounds the pattern's size whatever the bytes say.
    fuel: u32,
}

impl Gen<'_, '_> {
    fn literal(&mut self) -> Result<()> {
        let c = *self.u.choose(ALPHABET)?;
        self.literals.push(c);
        self.out.push(c);
        Ok(())
    }

    fn escape(&mut self) -> Result<()> {
        const ESCAPES: &[&str] = &[
            "\\d",
            "\\D",
            "\\w",
            "\\W",
            "\\s",
            "\\S",
            "\\b",
            "\\B",
            "\\A",
            "\\Z",
            "\\n",
            "\\t",
            "\\.",
            "\\\\",
            "\\-",
            "\\#",
            "\\ ",
            "\\x41",
            "\\x73",
            "\\u017f",
            "\\u212a",
            "\\U0001F600",
            "\\0",
            "\\07",
            "\\141",
            "\\a",
            "\\f",
            "\\v",
            "\\r",
        ];
        let e = *self.u.choose(ESCAPES)?;
        self.out.push_str(e);
        Ok(())
    }

    fn class(&mut self) -> Result<()> {
        self.out.push('[');
        if self.u.ratio(1, 3)? {
            self.out.push('^');
        }
        let n = self.u.int_in_range(0..=4)?;
        for i in 0..n {
            match self.u.int_in_range(0..=5)? {
                0 | 1 => {
                    let c = *self.u.choose(ALPHABET)?;
                    // A leading `]` is a literal in Python, elsewhere it would close the set.
                    if c == ']' && i > 0 {
                        self.out.push('\\');
                    }
                    self.literals.push(c);
                    self.out.push(c);
                }
                2 => {
                    let a = *self.u.choose(ALPHABET)?;
                    let b = *self.u.choose(ALPHABET)?;
                    let (lo, hi) = if self.u.ratio(7, 8)? && a > b {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    self.literals.extend([lo, hi]);
                    self.out.push(lo);
                    self.out.push('-');
                    self.out.push(hi);
                }
                3 => self
                    .out
                    .push_str(self.u.choose(&["\\d", "\\w", "\\s", "\\W", "\\S", "\\D"])?),
                4 => self.out.push_str(self.u.choose(&[
                    "\\x41", "\\u00e9", "\\n", "\\]", "\\-", "\\b", "\\\\", "\\^", "-",
                ])?),
                _ => self.out.push_str(self.u.choose(&[
                    "a-z",
                    "A-Z",
                    "0-9",
                    "\\x00-\\x7f",
                    "\\u0100-\\uffff",
                    "]",
                ])?),
            }
        }
        self.out.push(']');
        Ok(())
    }

    fn quantifier(&mut self) -> Result<()> {
        const QUANTS: &[&str] = &[
            "*", "+", "?", "{2}", "{1,3}", "{,2}", "{2,}", "{0}", "{0,1}", "{3,3}",
        ];
        self.out.push_str(self.u.choose(QUANTS)?);
        match self.u.int_in_range(0..=5)? {
            0 => self.out.push('?'),
            1 => self.out.push('+'),
            _ => {}
        }
        Ok(())
    }

    fn group(&mut self, depth: u32) -> Result<()> {
        match self.u.int_in_range(0..=11)? {
            0..=2 => {
                self.groups += 1;
                self.out.push('(');
            }
            3 => {
                self.groups += 1;
                let name = format!("g{}", self.names.len());
                self.out.push_str(&format!("(?P<{name}>"));
                self.names.push(name);
            }
            4 => self.out.push_str("(?:"),
            5 => self.out.push_str("(?="),
            6 => self.out.push_str("(?!"),
            // Lookbehind wants a fixed width: sometimes it gets one (a literal), sometimes the
            // general subtree (usually an error, which must then be the same error).
            7 => self.out.push_str(self.u.choose(&["(?<=", "(?<!"])?),
            8 => self.out.push_str("(?>"),
            9 => {
                let flags = *self
                    .u
                    .choose(&["i", "s", "m", "x", "a", "u", "-i", "i-s", "s-i", "-x"])?;
                self.out.push_str(&format!("(?{flags}:"));
            }
            10 if self.groups > 0 || !self.names.is_empty() => {
                let cond = if !self.names.is_empty() && self.u.arbitrary()? {
                    self.u.choose(&self.names)?.clone()
                } else {
                    self.u.int_in_range(1..=self.groups.max(1))?.to_string()
                };
                self.out.push_str(&format!("(?({cond})"));
                self.node(depth + 1)?;
                if self.u.arbitrary()? {
                    self.out.push('|');
                    self.node(depth + 1)?;
                }
                self.out.push(')');
                return Ok(());
            }
            _ => {
                self.groups += 1;
                self.out.push('(');
            }
        }
        self.node(depth + 1)?;
        self.out.push(')');
        Ok(())
    }

    fn backref(&mut self) -> Result<()> {
        if !self.names.is_empty() && self.u.arbitrary()? {
            let name = self.u.choose(&self.names)?.clone();
            self.out.push_str(&format!("(?P={name})"));
        } else {
            // One past the last group now and then: "invalid group reference".
            let n = self.u.int_in_range(1..=self.groups + 1)?;
            self.out.push_str(&format!("\\{n}"));
        }
        Ok(())
    }

    /// A sequence of atoms (possibly quantified), possibly an alternation of them.
    fn node(&mut self, depth: u32) -> Result<()> {
        let alternatives = if self.u.ratio(1, 4)? {
            self.u.int_in_range(2..=3)?
        } else {
            1
        };
        for alt in 0..alternatives {
            if alt > 0 {
                self.out.push('|');
            }
            let atoms = self.u.int_in_range(0..=4)?;
            for _ in 0..atoms {
                if self.fuel == 0 {
                    return Ok(());
                }
                self.fuel -= 1;
                self.atom(depth)?;
                if self.u.ratio(1, 3)? {
                    self.quantifier()?;
                }
            }
        }
        Ok(())
    }

    fn atom(&mut self, depth: u32) -> Result<()> {
        match self.u.int_in_range(0..=15)? {
            0..=4 => self.literal(),
            5 => {
                self.out.push('.');
                Ok(())
            }
            6 | 7 => self.escape(),
            8 | 9 => self.class(),
            10 => {
                self.out.push_str(self.u.choose(&["^", "$"])?);
                Ok(())
            }
            11 | 12 if depth < 5 => self.group(depth),
            13 if self.groups > 0 || !self.names.is_empty() => self.backref(),
            14 if self.u.ratio(1, 4)? => {
                self.out.push_str(self.u.choose(RAW)?);
                Ok(())
            }
            _ => self.literal(),
        }
    }
}

impl Case {
    /// Builds one case from fuzz bytes: pattern from the grammar, flags, 1–3 inputs.
    pub fn generate(u: &mut Unstructured<'_>) -> Result<Self> {
        let mut g = Gen {
            u,
            out: String::new(),
            groups: 0,
            names: Vec::new(),
            literals: Vec::new(),
            fuel: 24,
        };
        if g.u.ratio(1, 8)? {
            // Inline global flags at the start (Python 3.11 rejects them anywhere else).
            g.out
                .push_str(g.u.choose(&["(?i)", "(?x)", "(?s)", "(?m)", "(?a)", "(?ix)", "(?L)"])?);
        }
        g.node(0)?;
        let Gen {
            u, out, literals, ..
        } = g;
        let mut flags = 0;
        if u.ratio(1, 3)? {
            for f in FLAGS {
                if u.ratio(1, 3)? {
                    flags |= f;
                }
            }
        }
        let n_inputs = u.int_in_range(1..=3)?;
        let mut inputs = Vec::with_capacity(n_inputs);
        for _ in 0..n_inputs {
            let len = u.int_in_range(0..=12)?;
            let mut s = String::with_capacity(len);
            for _ in 0..len {
                // Mostly the pattern's own literals, so that matches happen.
                let c = if !literals.is_empty() && u.ratio(2, 3)? {
                    *u.choose(&literals)?
                } else {
                    *u.choose(ALPHABET)?
                };
                s.push(c);
            }
            inputs.push(s);
        }
        Ok(Self {
            pattern: out,
            flags,
            inputs,
        })
    }
}

/// The cases one fuzz input stands for (a few, so one oracle round trip checks several).
/// Byte 0 picks the mode: `0` is raw, one case written out as `pattern NUL flags NUL input NUL
/// input...` (flags in decimal), so a seed can be readable; anything else is the grammar.
pub fn cases(data: &[u8]) -> Vec<Case> {
    let [mode, rest @ ..] = data else {
        return Vec::new();
    };
    if *mode == 0 {
        let text = String::from_utf8_lossy(rest);
        let mut parts = text.split('\0');
        let pattern = parts.next().unwrap_or_default().to_owned();
        let flags = parts.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        return vec![Case {
            pattern,
            flags,
            inputs: parts.map(str::to_owned).collect(),
        }];
    }
    let mut u = Unstructured::new(rest);
    let mut out = Vec::new();
    while out.len() < 4 && !u.is_empty() {
        match Case::generate(&mut u) {
            Ok(case) => out.push(case),
            Err(_) => break,
        }
    }
    out
}

/// CPython's answer for one case (see `pyre_oracle.py`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PyOutcome {
    /// `re.compile` raised.
    Error {
        /// Exception class name (`error`, `OverflowError`, ...).
        err: String,
        /// `str(exception)`.
        msg: String,
    },
    /// Per input: `[search, match, finditer]`, or `"timeout"`.
    Matches {
        /// One entry per input.
        m: Vec<Value>,
    },
    /// The compile itself ran past the alarm.
    Timeout(String),
}

/// Counts of what a run compared and what it could not, by reason.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Cases compared (pattern compiled or rejected identically).
    pub cases: u64,
    /// Cases where both rejected the pattern.
    pub both_errors: u64,
    /// Inputs compared (search, match and finditer).
    pub inputs: u64,
    /// Inputs where `search` found a match.
    pub matched: u64,
    /// Inputs pyre gave up on (step budget): not compared.
    pub pyre_gave_up: u64,
    /// Compiles or inputs Python timed out on: not compared.
    pub python_timeouts: u64,
    /// Patterns pyre rejects as unsupported (`\N{...}`): not compared.
    pub unsupported: u64,
    /// Inputs where, under a possessive repeat, only group spans differ (open finding).
    pub possessive_group_spans: u64,
    /// Patterns nested past pyre's depth limit (Python's is higher): not compared.
    pub too_deep: u64,
    /// Inputs where CPython raised its internal `SystemError` about a group's span, under a
    /// possessive repeat (python/cpython#101955): not compared.
    pub python_span_errors: u64,
}

/// A long-lived `python3` running `pyre_oracle.py`.
pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    /// Starts `python3` (or `$PYTHON3`) on the oracle script; checks that it is Python 3.11
    /// with the Unicode version pyre's tables were generated from, since any other would give
    /// differences that are not bugs.
    pub fn spawn() -> std::io::Result<Self> {
        let python = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".to_owned());
        let mut child = Command::new(python)
            .args(["-c", ORACLE_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin was piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout was piped"));
        let mut hello = String::new();
        stdout.read_line(&mut hello)?;
        let hello: Value = serde_json::from_str(&hello).map_err(std::io::Error::other)?;
        let unicode = hello["unicode"].as_str().unwrap_or_default();
        let version = &hello["python"];
        if unicode != pyre::UNICODE_VERSION || *version != serde_json::json!([3, 11]) {
            return Err(std::io::Error::other(format!(
                "the oracle must be Python 3.11 with Unicode {} (pyre's tables); got {hello}",
                pyre::UNICODE_VERSION
            )));
        }
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// CPython's outcomes for `cases`, in one round trip.
    pub fn ask(&mut self, cases: &[Case]) -> std::io::Result<Vec<PyOutcome>> {
        let mut line = serde_json::to_string(cases).map_err(std::io::Error::other)?;
        line.push('\n');
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.flush()?;
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::other("the python3 oracle exited"));
        }
        let outcomes: Vec<PyOutcome> =
            serde_json::from_str(&answer).map_err(std::io::Error::other)?;
        if outcomes.len() != cases.len() {
            return Err(std::io::Error::other(
                "the oracle answered the wrong number of cases",
            ));
        }
        Ok(outcomes)
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        // Closing stdin ends its loop; kill in case it is stuck in a long match.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's exception class for a pyre error kind.
fn python_class(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Syntax => "error",
        ErrorKind::Overflow => "OverflowError",
        ErrorKind::Value => "ValueError",
        ErrorKind::Recursion => "RecursionError",
        ErrorKind::Unsupported => "(unsupported)",
    }
}

/// One match as the oracle writes it: every group's `[start, end]` or `null`.
fn spans_json(caps: Option<&Captures>) -> Value {
    match caps {
        None => Value::Null,
        Some(c) => Value::Array(
            (0..c.len())
                .map(|i| match c.get(i) {
                    Some((s, e)) => serde_json::json!([s, e]),
                    None => Value::Null,
                })
                .collect(),
        ),
    }
}

/// pyre's `[search, match, finditer]` for one input, or `None` when it ran out of budget.
fn pyre_results(re: &Regex, input: &str, cache: &mut Cache, budget: u64) -> Option<Value> {
    let chars: Vec<char> = input.chars().collect();
    let mut budget = budget;
    let search = re.search(&chars, cache, &mut budget).ok()?;
    let matched = re.match_at(&chars, 0, cache, &mut budget).ok()?;
    let all = re.find_all(&chars, cache, &mut budget).ok()?;
    Some(Value::Array(vec![
        spans_json(search.as_ref()),
        spans_json(matched.as_ref()),
        Value::Array(all.iter().map(|c| spans_json(Some(c))).collect()),
    ]))
}

/// Whether `pattern` has a possessive quantifier (`*+`, `++`, `?+`, `}+`), roughly: the open
/// finding below is only tolerated there.
fn has_possessive_repeat(pattern: &str) -> bool {
    ["*+", "++", "?+", "}+"].iter().any(|q| pattern.contains(q))
}

/// The whole-match span (group 0) of every match in a `[search, match, finditer]` result.
fn whole_matches(result: &Value) -> Vec<Value> {
    let group0 = |m: &Value| m.get(0).cloned().unwrap_or(Value::Null);
    let mut out = vec![group0(&result[0]), group0(&result[1])];
    if let Some(all) = result[2].as_array() {
        out.extend(all.iter().map(group0));
    }
    out
}

/// pyre's side of one case, worked out in the fuzzer's own thread (so that its coverage
/// guides libFuzzer) before anything is sent to Python.
#[derive(Debug, Clone)]
pub enum Expected {
    /// pyre rejected the pattern: Python's exception class and message, as pyre has them.
    Error {
        /// Python's class for pyre's error kind.
        class: &'static str,
        /// pyre's message.
        msg: String,
    },
    /// pyre compiled the pattern: `[search, match, finditer]` for each input that is sent
    /// (those pyre gave up on are not).
    Matches(Vec<Value>),
}

/// Compiled patterns, by (pattern, flags). libFuzzer's mutations often keep the pattern and
/// change only the inputs, and compiling is most of pyre's side (a profile showed 57% of the
/// fuzzer's time in `Regex::new`, mostly case-folding big classes such as `[\u0100-\uffff]`
/// under IGNORECASE); a repeat only skips coverage libFuzzer has already seen.
static COMPILED: Mutex<BTreeMap<(String, u32), CompileResult>> = Mutex::new(BTreeMap::new());

/// Patterns [`COMPILED`] holds before it starts over (a few MB at most).
const COMPILED_MAX: usize = 4096;

/// pyre's compile outcome, shared.
type CompileResult = std::result::Result<std::sync::Arc<Regex>, pyre::Error>;

/// One case ready for the oracle: what is sent, and what pyre says it should answer.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The case as sent: inputs pyre gave up on are dropped (Python could take its 0.5 s alarm
    /// on each, for a result nobody compares).
    pub case: Case,
    /// pyre's answer.
    pub expected: Expected,
}

/// Runs pyre on `case`, each input within `budget` steps, and decides what to ask Python:
/// `None` when nothing can be compared (pattern unsupported or nested too deep; counted in
/// `stats`).
pub fn evaluate(case: &Case, budget: u64, stats: &mut Stats) -> Option<Pending> {
    let mut compiled = lock(&COMPILED);
    if compiled.len() >= COMPILED_MAX {
        compiled.clear();
    }
    let key = (case.pattern.clone(), case.flags);
    let re = compiled
        .entry(key)
        .or_insert_with(|| Regex::new(&case.pattern, case.flags).map(std::sync::Arc::new))
        .clone();
    drop(compiled);
    let re = match re {
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            stats.unsupported += 1;
            return None;
        }
        Err(e) if e.kind() == ErrorKind::Recursion && case.pattern.matches('(').count() >= 100 => {
            stats.too_deep += 1;
            return None;
        }
        Err(e) => {
            return Some(Pending {
                case: case.clone(),
                expected: Expected::Error {
                    class: python_class(e.kind()),
                    msg: e.message().to_owned(),
                },
            });
        }
        Ok(re) => re,
    };
    let mut cache = Cache::new();
    let mut inputs = Vec::with_capacity(case.inputs.len());
    let mut results = Vec::with_capacity(case.inputs.len());
    for input in &case.inputs {
        match pyre_results(&re, input, &mut cache, budget) {
            Some(result) => {
                inputs.push(input.clone());
                results.push(result);
            }
            None => stats.pyre_gave_up += 1,
        }
    }
    Some(Pending {
        case: Case {
            pattern: case.pattern.clone(),
            flags: case.flags,
            inputs,
        },
        expected: Expected::Matches(results),
    })
}

/// Compares pyre's answer with CPython's for one case; `Err` describes the disagreement.
pub fn compare(
    pending: &Pending,
    python: &PyOutcome,
    stats: &mut Stats,
) -> std::result::Result<(), String> {
    let case = &pending.case;
    let (py, ours) = match (python, &pending.expected) {
        (PyOutcome::Timeout(_), _) => {
            stats.python_timeouts += 1;
            return Ok(());
        }
        (
            PyOutcome::Error { err, msg },
            Expected::Error {
                class,
                msg: our_msg,
            },
        ) => {
            stats.cases += 1;
            stats.both_errors += 1;
            if class != err || our_msg != msg {
                return Err(format!(
                    "different errors: python {err}: {msg:?}; pyre {class}: {our_msg:?}"
                ));
            }
            return Ok(());
        }
        (PyOutcome::Error { err, msg }, Expected::Matches(_)) => {
            return Err(format!("python raised {err}: {msg:?}; pyre compiled it"));
        }
        (PyOutcome::Matches { .. }, Expected::Error { class, msg }) => {
            return Err(format!("python compiled it; pyre raised {class}: {msg:?}"));
        }
        (PyOutcome::Matches { m }, Expected::Matches(ours)) => (m, ours),
    };
    stats.cases += 1;
    if py.len() != ours.len() {
        return Err(format!(
            "the oracle answered {} inputs for {}",
            py.len(),
            ours.len()
        ));
    }
    for ((input, py), ours) in case.inputs.iter().zip(py).zip(ours) {
        if py.as_str() == Some("timeout") {
            stats.python_timeouts += 1;
            continue;
        }
        if py.as_str() == Some("systemerror") && has_possessive_repeat(&case.pattern) {
            // CPython's bug, not a result (module doc): nothing to compare with.
            stats.python_span_errors += 1;
            continue;
        }
        stats.inputs += 1;
        if !ours[0].is_null() {
            stats.matched += 1;
        }
        if ours != py
            && has_possessive_repeat(&case.pattern)
            && whole_matches(ours) == whole_matches(py)
        {
            // Open finding, see the module doc: same matches, different group spans.
            stats.possessive_group_spans += 1;
            continue;
        }
        if ours != py {
            return Err(format!(
                "input {input:?}: [search, match, finditer] python {py}, pyre {ours}"
            ));
        }
    }
    Ok(())
}

/// How a disagreement is reported: the case and the difference, as one message.
fn disagreement(case: &Case, difference: &str) -> String {
    format!(
        "pyre and CPython disagree on re.compile({:?}, {}): {difference}",
        case.pattern, case.flags
    )
}

/// Asks the oracle about `pending` in one round trip and compares; `Err` is the first
/// disagreement, with the case it is about.
fn ask_and_compare(
    oracle: &mut Oracle,
    pending: &[Pending],
    stats: &mut Stats,
) -> std::result::Result<(), (usize, String)> {
    if pending.is_empty() {
        return Ok(());
    }
    let cases: Vec<Case> = pending.iter().map(|p| p.case.clone()).collect();
    let outcomes = oracle.ask(&cases).expect("the python3 oracle answers");
    for (n, (p, python)) in pending.iter().zip(&outcomes).enumerate() {
        compare(p, python, stats).map_err(|d| (n, disagreement(&p.case, &d)))?;
    }
    Ok(())
}

/// Checks `cases` against the oracle in one round trip; panics on the first disagreement, with
/// everything needed to reproduce it. (The short run's way: synchronous, in batches.)
pub fn check(oracle: &mut Oracle, cases: &[Case], stats: &mut Stats) {
    let pending: Vec<Pending> = cases
        .iter()
        .filter_map(|c| evaluate(c, STEP_BUDGET, stats))
        .collect();
    if let Err((_, message)) = ask_and_compare(oracle, &pending, stats) {
        panic!("{message}");
    }
}

/// Cases per oracle round trip in the campaign. A round trip costs two context switches and a
/// `json.loads`; at 64 cases that is noise next to CPython compiling the patterns.
pub const BATCH: usize = 64;

/// Batches that may wait for the oracle before the fuzzer blocks (so memory stays bounded and
/// a slow Python slows the fuzzer down rather than falling behind for ever).
const QUEUE: usize = 8;

/// A queued case and the fuzz input it came from (written out if it disagrees).
struct Queued {
    pending: Pending,
    input: std::sync::Arc<[u8]>,
}

/// Work for the oracle thread.
enum Job {
    Batch(Vec<Queued>),
    /// Answer on the channel once every earlier batch is compared.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The campaign's pipeline: [`run`] evaluates pyre at once and queues the cases; one thread
/// owns the oracle and compares batches while the fuzzer goes on.
struct Pipeline {
    jobs: std::sync::mpsc::SyncSender<Job>,
    batch: Vec<Queued>,
    /// Flush after every input (`PYRE_DIFF_SYNC=1`): slower, but a disagreement then stops
    /// libFuzzer on the very input that caused it (for `-minimize_crash` and replays).
    sync: bool,
}

/// Totals over the process, shared by [`run`] and the oracle thread.
static STATS: Mutex<Stats> = Mutex::new(Stats {
    cases: 0,
    both_errors: 0,
    inputs: 0,
    matched: 0,
    pyre_gave_up: 0,
    python_timeouts: 0,
    unsupported: 0,
    possessive_group_spans: 0,
    too_deep: 0,
    python_span_errors: 0,
});

/// The first disagreement the oracle thread found, reported by the next [`run`] (or [`finish`]).
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// The pipeline of this process (libFuzzer calls [`run`] on one thread).
static PIPELINE: Mutex<Option<Pipeline>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a lock poisons it; the fuzzer stops at that panic anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Totals since the process started: every case compared and every one that was not, by reason.
pub fn stats() -> Stats {
    *lock(&STATS)
}

/// Where libFuzzer writes artifacts (`-artifact_prefix=`), so a disagreement found after its
/// input has gone lands beside libFuzzer's own crash files.
fn artifact_prefix() -> String {
    std::env::args()
        .find_map(|a| a.strip_prefix("-artifact_prefix=").map(str::to_owned))
        .unwrap_or_else(|| "./".to_owned())
}

/// Writes the input behind a disagreement, and the case alone in raw mode (`0 pattern NUL
/// flags NUL inputs...`, replayable and small), next to libFuzzer's artifacts.
fn save_disagreement(q: &Queued) -> String {
    let mut raw = vec![0u8];
    raw.extend_from_slice(q.pending.case.pattern.as_bytes());
    raw.push(0);
    raw.extend_from_slice(q.pending.case.flags.to_string().as_bytes());
    for input in &q.pending.case.inputs {
        raw.push(0);
        raw.extend_from_slice(input.as_bytes());
    }
    let hash = raw.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let base = format!("{}disagreement-{hash:016x}", artifact_prefix());
    let written = std::fs::write(format!("{base}-input"), &q.input)
        .and_then(|()| std::fs::write(format!("{base}-case"), &raw));
    match written {
        Ok(()) => format!("{base}-input (the fuzz input) and {base}-case (the case, raw mode)"),
        Err(e) => format!("nowhere ({base}: {e})"),
    }
}

/// The oracle thread: compares each batch; after a disagreement it only drains the queue.
fn oracle_thread(mut oracle: Oracle, jobs: std::sync::mpsc::Receiver<Job>) {
    let mut reported = 1u64 << 16;
    for job in jobs {
        match job {
            Job::Batch(batch) => {
                if lock(&FAILURE).is_some() {
                    continue;
                }
                let pending: Vec<Pending> = batch.iter().map(|q| q.pending.clone()).collect();
                let mut stats = Stats::default();
                let result = ask_and_compare(&mut oracle, &pending, &mut stats);
                let total = {
                    let mut all = lock(&STATS);
                    all.add(&stats);
                    *all
                };
                if let Err((n, message)) = result {
                    let saved = save_disagreement(&batch[n]);
                    eprintln!("pyre_diff: {message}\npyre_diff: saved to {saved}");
                    *lock(&FAILURE) = Some(format!("{message} (saved to {saved})"));
                }
                // Like libFuzzer's pulses, so a long campaign's log shows the counts as it goes.
                if total.cases >= reported {
                    eprintln!("pyre_diff {total:?}");
                    reported = total.cases.next_power_of_two() * 2;
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.both_errors += o.both_errors;
        self.inputs += o.inputs;
        self.matched += o.matched;
        self.pyre_gave_up += o.pyre_gave_up;
        self.python_timeouts += o.python_timeouts;
        self.unsupported += o.unsupported;
        self.possessive_group_spans += o.possessive_group_spans;
        self.too_deep += o.too_deep;
        self.python_span_errors += o.python_span_errors;
    }
}

impl Pipeline {
    fn start() -> Self {
        let oracle = Oracle::spawn().expect("python3 3.11 runs");
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("pyre-oracle".into())
            .spawn(move || oracle_thread(oracle, queue))
            .expect("a thread for the oracle");
        Self {
            jobs,
            batch: Vec::with_capacity(BATCH),
            sync: std::env::var_os("PYRE_DIFF_SYNC").is_some_and(|v| v == "1"),
        }
    }

    /// Sends the current batch, and with `wait` returns once it has been compared.
    fn send(&mut self, wait: bool) {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            self.jobs
                .send(Job::Batch(batch))
                .expect("the oracle thread runs");
        }
        if wait {
            let (done, wait_for) = std::sync::mpsc::sync_channel(1);
            self.jobs
                .send(Job::Flush(done))
                .expect("the oracle thread runs");
            wait_for.recv().expect("the oracle thread answers");
        }
    }
}

/// Panics with the oracle thread's disagreement, if it found one.
fn report_failure() {
    if let Some(message) = lock(&FAILURE).clone() {
        panic!(
            "{message}\n(found after its input had been run: libFuzzer's crash file for this \
             input is not the culprit; the saved files are)"
        );
    }
}

/// Runs one fuzz input (see the module doc): pyre now, CPython in the oracle thread's next
/// batch. A disagreement stops the next call (or [`finish`]).
pub fn run(data: &[u8]) {
    report_failure();
    let cases = cases(data);
    if cases.is_empty() {
        return;
    }
    // FNV-1a of the bytes: a replay of the input gets the same budget.
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let budget = if hash % FULL_BUDGET_SAMPLE == 0 {
        FULL_STEP_BUDGET
    } else {
        STEP_BUDGET
    };
    let mut stats = Stats::default();
    let pending: Vec<Pending> = cases
        .iter()
        .filter_map(|c| evaluate(c, budget, &mut stats))
        .collect();
    lock(&STATS).add(&stats);
    if pending.is_empty() {
        return;
    }
    let mut pipeline = lock(&PIPELINE);
    let pipeline = pipeline.get_or_insert_with(Pipeline::start);
    let input: std::sync::Arc<[u8]> = data.into();
    pipeline
        .batch
        .extend(pending.into_iter().map(|pending| Queued {
            pending,
            input: input.clone(),
        }));
    if pipeline.sync {
        pipeline.send(true);
        report_failure();
    } else if pipeline.batch.len() >= BATCH {
        pipeline.send(false);
    }
}

/// Compares whatever is still queued and prints the totals; returns the disagreement, if any.
/// The harness calls it when libFuzzer exits, which it does without returning to [`run`].
pub fn finish() -> Option<String> {
    if let Some(pipeline) = lock(&PIPELINE).as_mut() {
        pipeline.send(true);
    }
    eprintln!("pyre_diff {:?}", stats());
    lock(&FAILURE).clone()
}
