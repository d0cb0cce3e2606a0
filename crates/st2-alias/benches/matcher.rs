//! Benchmarks of alias matching over synthetic alias sets modelled on real StackStorm packs.
//!
//! Run with `cargo bench -p st2-alias --bench matcher`. Before Criterion's measurements, a plain report is
//! printed (build time, first match right after a build, resident memory from `/proc/self/status`)
//! because those are one-off costs that Criterion's repeated sampling would hide.
//!
//! The synthetic aliases mirror `st2-aliases-real.json`: `verb noun {{p}} on {{q}}` strings,
//! `{display, representation}` objects, defaults, regex syntax (`(run|execute)`, `(...)?`,
//! `[!.]?`, `(?i:...)`), a few `match_multiple` formats, a few formats without any literal, and a
//! large family of packs whose formats all start with the same words (`pack ...`, `run ...`), so
//! that the prefilter cannot rely on the first word alone.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use serde_json::json;
use st2_alias::{Alias, FormatSpec, MatchOutcome, Matcher};

/// Small deterministic PRNG (xorshift64*), so every run benchmarks the same aliases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const VERBS: &[&str] = &[
    "get", "show", "list", "deploy", "restart", "create", "delete", "set", "check", "scale",
    "describe", "enable", "disable", "tail", "rollback", "sync", "backup", "restore", "ping",
    "purge",
];
const NOUNS: &[&str] = &[
    "service", "host", "vm", "cluster", "node", "pod", "volume", "queue", "bucket", "user",
    "group", "rule", "sensor", "trigger", "key", "secret", "dns", "cert", "alert", "ticket",
];
const PARAMS: &[&str] = &[
    "name", "target", "env", "count", "region", "id", "tag", "owner", "reason", "version",
];

/// A unique, pronounceable word for alias `i` (e.g. `kobatu`), so formats differ like real
/// pack names do rather than only by a number.
fn word(i: usize) -> String {
    const SYL: &[&str] = &[
        "ka", "to", "mi", "ra", "ne", "su", "lo", "vi", "de", "gu", "po", "ze", "ba", "chi", "fu",
        "ha",
    ];
    let mut n = i + 17;
    let mut out = String::new();
    while n > 0 {
        out.push_str(SYL[n % SYL.len()]);
        n /= SYL.len();
    }
    out
}

/// `n` aliases with three formats each, and one command per alias that matches it uniquely.
fn synthetic(n: usize) -> (Vec<Alias>, Vec<String>) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut aliases = Vec::with_capacity(n);
    let mut commands = Vec::with_capacity(n);
    for i in 0..n {
        let w = word(i);
        let verb = rng.pick(VERBS);
        let noun = rng.pick(NOUNS);
        let p = rng.pick(PARAMS);
        let q = rng.pick(PARAMS);
        let q = if q == p { "extra" } else { q };
        let pack = format!("pack{}", i % 200);
        let (formats, command) = match i % 10 {
            // A tenth of the set shares its first words: `pack <word> ...`.
            0 => (
                json!([
                    {"display": format!("pack {w} install <{p}>"),
                     "representation": [format!("pack {w} install {{{{ {p} }}}}")]},
                    format!("pack {w} remove {{{{{p}}}}}"),
                    format!("pack {w} show {{{{{p}}}}} {{{{{q}=latest}}}}"),
                ]),
                format!("pack {w} install st2-{i}"),
            ),
            // Another tenth starts with `run`, like core.remote's aliases.
            1 => (
                json!([
                    format!("run {w} {{{{cmd}}}} on {{{{hosts}}}}"),
                    {"display": format!("run {w} <cmd> [on <hosts>]"),
                     "representation": [format!("(run|execute) {w} {{{{cmd}}}} in background( on {{{{hosts=localhost}}}})?[!.]?")]},
                    format!("run {w} status"),
                ]),
                format!("run {w} uptime on web{i}"),
            ),
            2 => (
                json!([
                    format!("{verb} {noun} {w} {{{{{p}}}}} on {{{{{q}}}}}"),
                    format!("(?i:{verb}) {noun} {w} now"),
                    {"display": format!("{w} fixes <issue>"),
                     "representation": [format!(r"(?:\b|^){w} fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\b|$)")],
                     "match_multiple": true},
                ]),
                format!("{verb} {noun} {w} blue on eu-west-{i}"),
            ),
            _ => (
                json!([
                    format!("{verb} {noun} {w} {{{{{p}}}}} on {{{{{q}}}}}"),
                    {"display": format!("{verb} {noun} {w} <{p}>"),
                     "representation": [format!("{verb} {noun} {w} {{{{{p}}}}} using {{{{{q}}}}}"),
                                        format!("{verb} {w} {{{{{p}}}}} {{{{{q}=\"default value\"}}}}")]},
                    format!("{verb} {noun} {w} status"),
                ]),
                format!("{verb} {noun} {w} \"item {i}\" on target-{i} timeout=30"),
            ),
        };
        let alias = json!({
            "id": format!("{i:024x}"),
            "name": format!("{verb}_{noun}_{w}"),
            "pack": pack,
            "ref": format!("{pack}.{verb}_{noun}_{w}"),
            "description": format!("{verb} a {noun}"),
            "enabled": true,
            "action_ref": format!("{pack}.{verb}_{noun}"),
            "formats": formats,
            "ack": {"format": "On it: {{ execution.id }}"},
            "result": {"format": "{{ execution.result.stdout }}"},
        });
        aliases.push(serde_json::from_value(alias).expect("synthetic alias is valid"));
        commands.push(command);
    }
    // A handful of formats with no literal at all (always candidates), as real sets have.
    aliases.push(
        serde_json::from_value(json!({
            "name": "catch_all", "pack": "misc", "enabled": true, "action_ref": "misc.x",
            "formats": ["(?i:hey) {{greeting}}", "(?i:knock)(?i:\\s+){{host}}"],
        }))
        .expect("valid"),
    );
    (aliases, commands)
}

/// The alias list after a routine refresh in which 1% of the aliases changed: one alias in
/// every hundred (rotating through the format families) had its distinctive word reworded in
/// all its formats, displays and its name, as a pack update would. Returns the list and the
/// commands for the edited aliases.
fn refreshed(aliases: &[Alias], commands: &[String]) -> (Vec<Alias>, Vec<String>) {
    let mut out = Vec::with_capacity(aliases.len());
    let mut changed = Vec::new();
    for (i, alias) in aliases.iter().enumerate() {
        let mut alias = alias.clone();
        let word = alias.name.rsplit('_').next().map(str::to_owned);
        if let (true, Some(word), Some(command)) =
            (i % 100 == 11 * ((i / 100) % 10), word, commands.get(i))
        {
            let new_word = format!("{word}zu");
            let edit = |s: &mut String| *s = s.replace(&word, &new_word);
            for spec in &mut alias.formats {
                match spec {
                    FormatSpec::Plain(s) => edit(s),
                    FormatSpec::Object(o) => {
                        o.representation.iter_mut().for_each(edit);
                        o.display.iter_mut().for_each(edit);
                    }
                    FormatSpec::Invalid(_) => {}
                }
            }
            edit(&mut alias.name);
            alias.reference.iter_mut().for_each(edit);
            changed.push(command.replace(&word, &new_word));
        }
        out.push(alias);
    }
    (out, changed)
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`), to tell the
/// build's own cost from time lost to other processes on a busy machine.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Times the first match of `command` and then the same match again.
fn first_and_second(matcher: &Matcher, command: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let first = matcher.match_command(command);
    let first_time = start.elapsed();
    let start = Instant::now();
    black_box(matcher.match_command(command));
    let second_time = start.elapsed();
    assert!(
        matches!(first, MatchOutcome::Matched(_)),
        "{command:?} should match exactly once: {first:?}"
    );
    (first_time, second_time)
}

fn expect_unique(matcher: &Matcher, command: &str) {
    match matcher.match_command(command) {
        MatchOutcome::Matched(_) => {}
        other => panic!("benchmark command {command:?} should match exactly once: {other:?}"),
    }
}

/// One-off figures: build time, the first match after a build, resident memory.
fn report() {
    let base = rss_kib();
    let (aliases, commands) = synthetic(10_000);
    let with_aliases = rss_kib();
    let cpu_before = cpu_ns();
    let start = Instant::now();
    let matcher = Matcher::build(&aliases);
    let build = start.elapsed();
    let build_cpu = cpu_ns()
        .zip(cpu_before)
        .map(|(after, before)| Duration::from_nanos(after - before));
    let with_matcher = rss_kib();
    let (first_match, again) = first_and_second(&matcher, &commands[4_321]);
    // Another command of the same family, seen for the first time.
    let (other_first, _) = first_and_second(&matcher, &commands[4_331]);
    drop(aliases);
    let matcher_only = rss_kib();
    println!(
        "== alias matcher one-off figures (10,000 aliases, {} formats) ==",
        matcher.format_count()
    );
    let on_cpu = |cpu: Option<Duration>| cpu.map_or(String::new(), |c| format!(", {c:?} on CPU"));
    println!("build: {build:?} wall{}", on_cpu(build_cpu));
    println!(
        "first match after build: {first_match:?} (same command again: {again:?}; first match \
         of another command: {other_first:?})"
    );
    if let (Some(b), Some(a), Some(m), Some(o)) = (base, with_aliases, with_matcher, matcher_only) {
        println!(
            "VmRSS: process start {} KiB; + alias list {} KiB; + matcher {} KiB (total {:.1} MiB); \
             after dropping the alias list {:.1} MiB",
            b,
            a,
            m,
            m as f64 / 1024.0,
            o as f64 / 1024.0
        );
    }
    let failures = matcher.failures();
    assert!(
        failures.is_empty(),
        "synthetic formats failed: {failures:?}"
    );

    // A periodic refresh: 1% of the aliases changed; the new matcher is built from the old one
    // while the old one stays usable, then replaces it.
    let (aliases, commands) = synthetic(10_000);
    let (new_aliases, new_commands) = refreshed(&aliases, &commands);
    drop(aliases);
    assert_eq!(new_commands.len(), 100);
    let cpu_before = cpu_ns();
    let start = Instant::now();
    let reloaded = matcher.rebuild(&new_aliases);
    let reload = start.elapsed();
    let reload_cpu = cpu_ns()
        .zip(cpu_before)
        .map(|(after, before)| Duration::from_nanos(after - before));
    let both = rss_kib();
    assert_eq!(reloaded.format_count(), matcher.format_count());
    let distinct: HashSet<&str> = new_aliases
        .iter()
        .flat_map(|a| a.format_strings())
        .collect();
    // Commands of the same family as above: an unchanged alias and a changed one.
    let (reload_first, reload_again) = first_and_second(&reloaded, &commands[4_341]);
    let (changed_first, _) = first_and_second(&reloaded, &new_commands[1]);
    drop(matcher);
    println!(
        "reload with 1% of the aliases changed (Matcher::rebuild): {reload:?} wall{}; \
         {} of {} distinct formats reused, the rest compiled",
        on_cpu(reload_cpu),
        reloaded.reused_count(),
        distinct.len(),
    );
    println!(
        "first match after reload: {reload_first:?} (same command again: {reload_again:?}; \
         first match of a changed alias: {changed_first:?})"
    );
    if let Some(both) = both {
        println!(
            "VmRSS at the end of the reload (old and new matcher and the new alias list alive): \
             {:.1} MiB",
            both as f64 / 1024.0
        );
    }
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_command");
    let mut suggestions = Vec::new();
    for n in [10usize, 1_000, 10_000] {
        let (aliases, commands) = synthetic(n);
        let matcher = Matcher::build(&aliases);
        // Typical commands (not in the shared-prefix family), cycled so that caches do not
        // flatter one command.
        let typical: Vec<&String> = commands
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 >= 3)
            .map(|(_, c)| c)
            .collect();
        for cmd in &typical {
            expect_unique(&matcher, cmd);
        }
        let mut k = 0;
        group.bench_function(BenchmarkId::new("typical", n), |b| {
            b.iter(|| {
                k = (k + 1) % typical.len();
                black_box(matcher.match_command(black_box(typical[k])))
            })
        });
        let shared: Vec<&String> = commands.iter().step_by(10).collect();
        for cmd in &shared {
            expect_unique(&matcher, cmd);
        }
        let mut k = 0;
        group.bench_function(BenchmarkId::new("shared_first_words", n), |b| {
            b.iter(|| {
                k = (k + 1) % shared.len();
                black_box(matcher.match_command(black_box(shared[k])))
            })
        });
        group.bench_function(BenchmarkId::new("no_match", n), |b| {
            b.iter(|| black_box(matcher.match_command(black_box("pakc instal something"))))
        });
        // What an unmatched command's reply adds: "did you mean" over the help strings. The
        // misspelt first word is close to `pack`, so the whole `pack …` family is ranked.
        suggestions.push((n, matcher));
    }
    group.finish();

    let mut group = c.benchmark_group("closest");
    for (n, matcher) in &suggestions {
        group.bench_function(BenchmarkId::new("no_match_suggestions", n), |b| {
            b.iter(|| black_box(matcher.closest(black_box("pakc instal something"))))
        });
    }
    group.finish();

    let (aliases, commands) = synthetic(10_000);
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("10000_aliases", |b| {
        b.iter(|| black_box(Matcher::build(black_box(&aliases))))
    });
    let previous = Matcher::build(&aliases);
    let (refreshed, _) = refreshed(&aliases, &commands);
    group.bench_function("rebuild_10000_aliases_1pct_changed", |b| {
        b.iter(|| black_box(previous.rebuild(black_box(&refreshed))))
    });
    group.finish();
}

fn main() {
    report();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
