//! Target `alias`: st2 alias formats and the matcher over untrusted commands.
//!
//! Property: for any few formats (trusted-ish: they come from StackStorm's packs) and any
//! command (user input from a chat room), compiling the formats, parsing the command with each
//! ([`Format::parse_command`], [`Format::parse_command_multiple`]), the extras step
//! ([`Command::new`]) and the whole matcher ([`Matcher::match_command`], [`Matcher::closest`])
//! never panic and always return. "Always return" rests on pyre's step budget; the campaign
//! runs with libFuzzer's `-timeout`, and the short run bounds each input's time too.
//!
//! Inputs are built from fragments that stress the Python dialect and st2's `{{param}}`
//! rewriting (half the time) or taken as raw text, so both "almost valid" formats and plain
//! garbage are reached.
//!
//! Speed. The first campaign ran at 119 inputs/s. A profile (`perf`, instrumented build) put
//! 87% of the time in pyre's VM under `search_from`, half of it libFuzzer's comparison tracing
//! inside the VM's loop. Most inputs take well under a millisecond, but with formats such as
//! `(.*)*` from the grammar a search runs until the bridge's budget (`DEFAULT_STEP_LIMIT`, 10
//! million steps) gives up, and the target made up to five such searches per format
//! (`Format::parse` and `parse_multiple`, each rerunning the extras step, then the matcher
//! again), besides the warm-up match every `Matcher::build` and `rebuild` makes (on
//! `WARM_UP_COMMAND`, at the full budget). So:
//! - the target's own searches share one small budget per input ([`STEP_BUDGET`]), and the
//!   extras step runs once, after a try of the same regexes on that budget (`EXTRAS`);
//! - a format that exhausts [`WARM_UP_BUDGET`] on the warm-up command is kept out of the
//!   matcher (still compiled and searched by the target itself), counted in
//!   [`Stats::left_out`];
//! - an input whose searches or extras step gave up is counted ([`Stats::gave_up`]) and skips
//!   [`Matcher::match_command`], which would repeat the same searches at the full budget;
//!   `closest`, `build` and `rebuild` still run.
//!
//! One input in [`FULL_BUDGET_SAMPLE`] of those (chosen by a hash of the input, so a replay
//! does the same) still runs everything at the full budget ([`Stats::full_budget_runs`]), so
//! the bridge's own give-up path stays checked against libFuzzer's `-timeout`.

use std::sync::{
    LazyLock,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use arbitrary::{Result, Unstructured};
use st2_alias::pyre::{Cache, FLAG_DOTALL, Regex};
use st2_alias::{Alias, Command, Format, FormatObject, FormatSpec, Matcher, ParseError};

/// Steps pyre may take per input in the target's own searches (all formats, `parse_command`
/// and `parse_command_multiple` together). Grammar formats on commands of a few dozen
/// characters need a few thousand; an input past this is a pathological search, which the
/// bridge answers by giving up, and repeating it at 10 million steps finds nothing new.
pub const STEP_BUDGET: u64 = 30_000;

/// One input in this many of those that exhaust [`STEP_BUDGET`] still runs the matcher with
/// the bridge's full budget.
pub const FULL_BUDGET_SAMPLE: u64 = 4096;

/// The command `Matcher::build` matches once to warm itself up (st2-alias's private
/// `WARM_UP_COMMAND`; should they drift apart, only the speed-up below is lost).
const WARM_UP_COMMAND: &str = "warm up x=1";

/// Steps each format may take on `WARM_UP_COMMAND` before it is kept out of the matcher:
/// a sane format needs a few hundred on that short command.
pub const WARM_UP_BUDGET: u64 = 5_000;

/// st2's extras step (`match_kv_pairs_at_end`): the two regexes `Command::new` runs, copied
/// from st2-alias's private snippets (`format.rs`) so the target can try them on a small budget
/// first. Should they drift apart, only the speed-up is lost: the real step still runs.
static EXTRAS: LazyLock<(Regex, Regex)> = LazyLock::new(|| {
    const KEY: &str = r"\s*(\S+?)\s*";
    const VALUE: &str = r#"""|''|"(.+?)"|'(.+?)'|({.+?})|(\S+)"#;
    let pairs = format!(r"(?:^|\s+){KEY}=({VALUE})");
    let ending = format!(r".*?(({pairs}\s*)*)$");
    let compile = |p: &str| Regex::new(p, FLAG_DOTALL).expect("st2's snippets compile");
    (compile(&ending), compile(&pairs))
});

/// Whether st2's extras step finishes on `command` within `budget` steps.
fn extras_step_within(command: &str, cache: &mut Cache, mut budget: u64) -> bool {
    let (ending, pairs) = &*EXTRAS;
    let chars: Vec<char> = command.chars().collect();
    match ending.match_at(&chars, 0, cache, &mut budget) {
        Err(_) => false,
        Ok(None) => true,
        Ok(Some(caps)) => match caps.get(1) {
            Some((s, e)) if e > s => pairs.find_all(&chars[s..e], cache, &mut budget).is_ok(),
            _ => true,
        },
    }
}

/// What a run did, by outcome (totals over the process, see [`stats`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Inputs checked (those that decoded into a case).
    pub inputs: u64,
    /// Inputs whose searches exhausted [`STEP_BUDGET`] (or the extras step the bridge's
    /// budget): their `match_command` was skipped, unless sampled.
    pub gave_up: u64,
    /// Of those, inputs that ran `match_command` at the full budget anyway.
    pub full_budget_runs: u64,
    /// Formats (whole format entries) kept out of the matcher because they exhaust
    /// [`WARM_UP_BUDGET`] on the warm-up command, unless sampled.
    pub left_out: u64,
}

static INPUTS: AtomicU64 = AtomicU64::new(0);
static GAVE_UP: AtomicU64 = AtomicU64::new(0);
static FULL_BUDGET_RUNS: AtomicU64 = AtomicU64::new(0);
static LEFT_OUT: AtomicU64 = AtomicU64::new(0);

/// Totals since the process started (the campaign prints them at exit).
pub fn stats() -> Stats {
    Stats {
        inputs: INPUTS.load(Relaxed),
        gave_up: GAVE_UP.load(Relaxed),
        full_budget_runs: FULL_BUDGET_RUNS.load(Relaxed),
        left_out: LEFT_OUT.load(Relaxed),
    }
}

/// Format fragments: placeholders, Python regex syntax, and characters with case-folding or
/// whitespace quirks.
const FORMAT_PIECES: &[&str] = &[
    "run",
    " ",
    "  ",
    "on",
    "{{cmd}}",
    "{{ hosts = localhost }}",
    "{{a=\"x y\"}}",
    "{{b={'k': 1}}}",
    "{{c=[1, 2]}}",
    "{{",
    "}}",
    "{",
    "}",
    "=",
    "(",
    ")",
    "(?:",
    "(?P<n>",
    "(?P=n)",
    "(?i:",
    "(?i)",
    "(?x)",
    "(?s)",
    "(?=",
    "(?!",
    "(?<=a)",
    "(?<!b)",
    "(?>",
    "(?(1)a|b)",
    "|",
    "*",
    "+",
    "?",
    "*?",
    "++",
    "{2}",
    "{1,3}",
    "{,}",
    "[",
    "]",
    "[^a-z]",
    "[[:alpha:]]",
    "\\",
    "\\d",
    "\\w",
    "\\s",
    "\\S",
    "\\b",
    "\\1",
    "\\x4",
    "\\N{x}",
    "^",
    "$",
    "\\A",
    "\\Z",
    ".",
    ".*",
    "(.+)",
    "(.*)*",
    "\n",
    "'",
    "\"",
    "é",
    "ſ",
    "K",
    "#",
    "{{x}} {{y}}",
    "{{ z = 5 }}",
];

/// Command fragments: words, `key=value` extras with every quoting st2 knows, and unusual
/// whitespace.
const COMMAND_PIECES: &[&str] = &[
    "run",
    " ",
    "  ",
    "on",
    "date",
    "web1",
    "k=v",
    "a=\"b c\"",
    "x='y'",
    "d={\"a\": {\"b\": 1}}",
    "=",
    "\"",
    "'",
    "{",
    "}",
    "\n",
    "é",
    "ſ",
    "K",
    "aaaaaaaaaaaaaaaa",
    "\u{a0}",
    "\t",
    "\u{2028}",
    "localhost",
    "1",
    "[1, 2]",
    "x",
    "y",
    "z",
];

/// Fragments joined, or arbitrary text.
fn text(u: &mut Unstructured<'_>, pieces: &[&str], max: usize) -> Result<String> {
    if u.ratio(1, 4)? {
        let s: &str = u.arbitrary()?;
        return Ok(s.chars().take(4 * max).collect());
    }
    let n = u.int_in_range(0..=max)?;
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(u.choose(pieces)?);
    }
    Ok(out)
}

/// One fuzz case: formats for a handful of aliases and one command.
#[derive(Debug)]
pub struct Case {
    /// Each alias's formats (plain strings or `representation` lists).
    pub aliases: Vec<Vec<FormatSpec>>,
    /// The command typed in the room.
    pub command: String,
}

impl Case {
    /// Builds a case from fuzz bytes.
    pub fn generate(u: &mut Unstructured<'_>) -> Result<Self> {
        let n_aliases = u.int_in_range(1..=4)?;
        let mut aliases = Vec::with_capacity(n_aliases);
        for _ in 0..n_aliases {
            let n_formats = u.int_in_range(1..=3)?;
            let mut formats = Vec::with_capacity(n_formats);
            for _ in 0..n_formats {
                let format = text(u, FORMAT_PIECES, 10)?;
                formats.push(if u.ratio(1, 4)? {
                    FormatSpec::Object(FormatObject {
                        display: Some(format.clone()),
                        representation: vec![format, text(u, FORMAT_PIECES, 6)?],
                        match_multiple: Some(u.arbitrary()?),
                    })
                } else {
                    FormatSpec::Plain(format)
                });
            }
            aliases.push(formats);
        }
        let command = text(u, COMMAND_PIECES, 12)?;
        Ok(Self { aliases, command })
    }
}

/// Runs one input through every alias entry point (see the module doc for the property).
/// Byte 0 picks the mode: odd is structured ([`Case::generate`]); even is raw text,
/// `NUL`-separated: one alias per format, the last part being the command, so a seed is one
/// byte and readable text.
pub fn run(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let case = if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let mut parts: Vec<&str> = text.split('\0').collect();
        let command = parts.pop().unwrap_or_default().to_owned();
        Case {
            aliases: parts
                .into_iter()
                .map(|f| vec![FormatSpec::Plain(f.to_owned())])
                .collect(),
            command,
        }
    } else {
        match Case::generate(&mut Unstructured::new(rest)) {
            Ok(case) => case,
            Err(_) => return,
        }
    };
    // FNV-1a: a replay of the same bytes makes the same sampling choice.
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let stats = check(&case, hash % FULL_BUDGET_SAMPLE == 0);
    let n = INPUTS.fetch_add(stats.inputs, Relaxed) + stats.inputs;
    GAVE_UP.fetch_add(stats.gave_up, Relaxed);
    FULL_BUDGET_RUNS.fetch_add(stats.full_budget_runs, Relaxed);
    LEFT_OUT.fetch_add(stats.left_out, Relaxed);
    // Like libFuzzer's pulses, so a long campaign's log shows the counts as it goes.
    if n >= 1 << 16 && n.is_power_of_two() {
        eprintln!("alias {:?}", self::stats());
    }
}

/// The property, for one case; panics are the failures. `full_budget` runs the matcher on
/// everything even when the case exhausts [`STEP_BUDGET`] or [`WARM_UP_BUDGET`]. Returns what
/// was done (one input's [`Stats`]).
pub fn check(case: &Case, full_budget: bool) -> Stats {
    let mut cache = Cache::new();
    // At the bridge's budget, a pathological command costs 10 million steps here and again in
    // `match_command`; both are skipped when the step cannot finish in a small budget.
    let command = if full_budget || extras_step_within(&case.command, &mut cache, STEP_BUDGET) {
        // Once: `Format::parse` would rerun this step for every format.
        Command::new(&case.command).map_err(|_| ())
    } else {
        Err(())
    };
    let warm_up = Command::new(WARM_UP_COMMAND).expect("the warm-up command is short");
    let mut gave_up = command.is_err();
    let mut left_out = 0;
    let mut budget = STEP_BUDGET;
    let mut kept: Vec<Vec<FormatSpec>> = Vec::with_capacity(case.aliases.len());
    for formats in &case.aliases {
        let mut keep = Vec::with_capacity(formats.len());
        for spec in formats {
            let mut slow = false;
            for pattern in spec.patterns() {
                let Ok(format) = Format::compile(pattern.representation) else {
                    continue;
                };
                if let Ok(cmd) = &command {
                    // One budget for the whole input: once spent, every later search gives up
                    // at its first step.
                    let single = format.parse_command(cmd, &mut cache, &mut budget);
                    let multiple = format.parse_command_multiple(cmd, &mut cache, &mut budget);
                    gave_up |= matches!(single, Err(ParseError::LimitExceeded { .. }))
                        || matches!(multiple, Err(ParseError::LimitExceeded { .. }));
                }
                // Every build and rebuild matches the warm-up command at the bridge's budget:
                // a format that is pathological on it costs up to 10 million steps twice.
                let mut warm_budget = WARM_UP_BUDGET;
                slow |= matches!(
                    format.parse_command(&warm_up, &mut cache, &mut warm_budget),
                    Err(ParseError::LimitExceeded { .. })
                );
                let _ = format.required_literals().count();
                let _ = format.missing_default_group();
            }
            if slow && !full_budget {
                left_out += 1;
            } else {
                keep.push(spec.clone());
            }
        }
        kept.push(keep);
    }
    let aliases: Vec<Alias> = kept
        .into_iter()
        .enumerate()
        .map(|(i, formats)| Alias {
            name: format!("a{i}"),
            pack: Some("fuzz".into()),
            action_ref: format!("fuzz.a{i}"),
            enabled: true,
            formats,
            ..Alias::default()
        })
        .collect();
    let matcher = Matcher::build(&aliases);
    if !gave_up || full_budget {
        let _ = matcher.match_command(&case.command);
    }
    let _ = matcher.closest(&case.command);
    // A rebuild reuses compiled formats: the reuse path must agree with a fresh build.
    let rebuilt = matcher.rebuild(&aliases);
    assert_eq!(
        rebuilt.format_count(),
        matcher.format_count(),
        "rebuilding from the same aliases changed the number of formats"
    );
    Stats {
        inputs: 1,
        gave_up: u64::from(gave_up),
        full_budget_runs: u64::from(gave_up && full_budget),
        left_out,
    }
}
