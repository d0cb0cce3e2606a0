//! The short fuzz run `cargo test` does: every target over its checked-in seed corpus
//! (`fuzz/corpus/<target>/`) plus generated inputs, in seconds, with no fuzzing tool installed.
//!
//! Generated inputs are random bytes and mutations of the seeds (bit flips, splices, cut
//! tails) from a fixed-seed generator, so a failure reproduces; `FUZZ_SHORT_SEED` picks other
//! inputs and `FUZZ_SHORT_RUNS` changes how many. A failing input is written to
//! `target/fuzz-short-failures/<target>-<n>` so it can be replayed with the coverage-guided
//! harness or added to the corpus.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use st2_matrix_fuzz::pyre_diff::{self, Oracle, Stats};

/// Generated inputs per target unless `FUZZ_SHORT_RUNS` says otherwise.
const DEFAULT_RUNS: usize = 3000;

/// splitmix64: tiny, deterministic, good enough to make fuzz bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable corpus entry").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("a readable seed"))
        .collect();
    assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
    seeds
}

/// Seeds first, then `runs` generated inputs: half fresh random bytes, half mutated seeds.
fn inputs(target: &str, runs: usize) -> Vec<Vec<u8>> {
    let seeds = corpus(target);
    let mut rng = Rng(env_or("FUZZ_SHORT_SEED", 0x5712_u64) ^ target.len() as u64);
    let mut out = seeds.clone();
    for i in 0..runs {
        let mut data = if i % 2 == 0 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 if !data.is_empty() => {
                    let at = rng.below(data.len());
                    data[at] ^= 1 << rng.below(8);
                }
                1 if !data.is_empty() => {
                    let at = rng.below(data.len());
                    data[at] = rng.next() as u8;
                }
                2 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    let at = rng.below(data.len() + 1);
                    data.splice(at..at, other[from..].iter().copied().take(64));
                }
                _ => data.truncate(rng.below(data.len() + 1)),
            }
        }
        out.push(data);
    }
    out
}

fn save_failure(target: &str, n: usize, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-short-failures");
    std::fs::create_dir_all(&dir).expect("a writable target dir");
    let path = dir.join(format!("{target}-{n}"));
    std::fs::write(&path, data).expect("a writable target dir");
    path
}

/// Runs `target` over its inputs; every input must pass and none may take longer than
/// `per_input` (generous: this is a debug build on a shared machine).
fn short_run(target: &str, per_input: Duration) {
    let runs = env_or("FUZZ_SHORT_RUNS", DEFAULT_RUNS);
    let started = Instant::now();
    let inputs = inputs(target, runs);
    for (n, data) in inputs.iter().enumerate() {
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            assert!(st2_matrix_fuzz::run(target, data), "no target {target}");
        }));
        if let Err(panic) = outcome {
            let path = save_failure(target, n, data);
            std::panic::resume_unwind(Box::new(format!(
                "{target}: input {n} failed (saved to {}): {:?}",
                path.display(),
                panic.downcast_ref::<String>().map(String::as_str)
            )));
        }
        let took = t.elapsed();
        if took > per_input {
            let path = save_failure(target, n, data);
            panic!(
                "{target}: input {n} took {took:?}, over {per_input:?} (saved to {})",
                path.display()
            );
        }
    }
    eprintln!(
        "{target}: {} inputs in {:?}",
        inputs.len(),
        started.elapsed()
    );
}

#[test]
fn alias_survives_its_corpus_and_generated_inputs() {
    short_run("alias", Duration::from_secs(10));
}

#[test]
fn transactions_survive_their_corpus_and_generated_inputs() {
    short_run("transactions", Duration::from_secs(5));
}

#[test]
fn webhook_bodies_survive_their_corpus_and_generated_inputs() {
    short_run("webhook", Duration::from_secs(5));
}

#[test]
fn registrations_survive_their_corpus_and_generated_inputs() {
    short_run("registration", Duration::from_secs(5));
}

/// pyre_diff batched: all cases of all inputs go to CPython in a few round trips (one per
/// 500 cases) rather than one per input.
#[test]
fn pyre_agrees_with_cpython_on_its_corpus_and_generated_inputs() {
    let runs = env_or("FUZZ_SHORT_RUNS", DEFAULT_RUNS);
    let started = Instant::now();
    let cases: Vec<_> = inputs("pyre_diff", runs)
        .iter()
        .flat_map(|data| pyre_diff::cases(data))
        .collect();
    let mut oracle = Oracle::spawn().expect("python3 (3.11) for the pyre oracle");
    let mut stats = Stats::default();
    for batch in cases.chunks(500) {
        pyre_diff::check(&mut oracle, batch, &mut stats);
    }
    eprintln!(
        "pyre_diff: {} cases in {:?}: {stats:?}",
        cases.len(),
        started.elapsed()
    );
    // The grammar must keep producing comparable, matching cases, or this test proves little.
    assert!(stats.cases * 2 > cases.len() as u64, "{stats:?}");
    assert!(stats.matched * 10 > stats.inputs, "{stats:?}");
}
