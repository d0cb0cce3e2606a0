#!/usr/bin/env bash
# The long, coverage-guided fuzz campaign: libFuzzer through cargo-fuzz, on stable Rust.
#
#   scripts/fuzz.sh [TARGET|all] [RUNS] [-- LIBFUZZER_FLAGS...]
#
# TARGET is one of alias, pyre_diff, transactions, webhook, registration (default: all, one
# after the other). RUNS is the number of inputs per target (default 10000000); set
# FUZZ_SECONDS to stop each target after that many seconds instead (whichever comes first).
# Flags after `--` go to libFuzzer (e.g. -jobs=2 -workers=2, -max_len=512).
#
# Stable Rust is enough: `-s none` (no sanitizer) needs no -Z flag; the coverage
# instrumentation cargo-fuzz adds is stable codegen options. Panics (every property is an
# assert) and timeouts are what it finds. The targets are in fuzz/src (the properties are in
# their module docs); the harness is fuzz/libfuzzer, a workspace of its own.
#
# Each target's corpus grows in target/fuzz/work/<target> (seeded from fuzz/corpus/<target>);
# a failing input is saved as target/fuzz/artifacts/<target>/crash-*: replay it with
#   target/fuzz[/alias-only]/x86_64-unknown-linux-gnu/release/<target> <file>
# and, once fixed, add it to fuzz/corpus/<target>/ so `cargo test -p st2-matrix-fuzz` keeps
# checking it. pyre_diff needs python3 3.11 (its oracle), as the short run does; it asks
# Python in batches from a thread of its own, so a disagreement is saved as
# artifacts/pyre_diff/disagreement-*-{input,case} (its crash-* is the input that happened to run
# next). PYRE_DIFF_SYNC=1 checks each input before the next, for replays and -minimize_crash.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target="${1:-all}"
runs="${2:-10000000}"
shift $(( $# > 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
extra=("$@")

all=(alias pyre_diff transactions webhook registration)
if [[ "$target" == all ]]; then
  targets=("${all[@]}")
else
  targets=("$target")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz
fi

out=target/fuzz
for t in "${targets[@]}"; do
  # The st2-alias targets build without the bridge (minutes instead of most of an hour), in
  # a build directory of their own so that switching targets never rebuilds the other set.
  # alias and pyre_diff inputs are capped at 256 bytes (-max_len; a later -max_len in the
  # extra flags wins): their grammars need far less, and libFuzzer would otherwise let inputs
  # grow to 4 KiB, where the pathological searches get longer (docs/fuzzing.md, "Speed").
  case "$t" in
    alias | pyre_diff) features=(--no-default-features) build="$out/alias-only" defaults=(-max_len=256) ;;
    transactions | webhook | registration) features=() build="$out" defaults=() ;;
    *) echo "unknown target $t (one of: ${all[*]})" >&2; exit 2 ;;
  esac
  cargo fuzz build --fuzz-dir fuzz/libfuzzer --sanitizer none --target-dir "$build" "${features[@]}" "$t"
  bin="$build/x86_64-unknown-linux-gnu/release"
  mkdir -p "$out/work/$t" "$out/artifacts/$t"
  echo "== fuzzing $t: up to $runs inputs${FUZZ_SECONDS:+ or ${FUZZ_SECONDS}s}"
  start=$SECONDS
  # -timeout: an input slower than 10 s is a hang (pyre's step budget should stop any
  # search well before). -rss_limit_mb: a runaway allocation is a finding too.
  status=0
  "$bin/$t" -runs="$runs" ${FUZZ_SECONDS:+-max_total_time="$FUZZ_SECONDS"} \
    -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t/" "${defaults[@]}" "${extra[@]}" \
    "$out/work/$t" "fuzz/corpus/$t" >"$out/$t.log" 2>&1 || status=$?
  # "<target> Stats {...}": the targets' own counts (inputs that gave up on a step budget, cases
  # not compared and why), printed as the count doubles and at exit.
  grep -E '^#[0-9]+ *(pulse|DONE)|^stat::|^(alias|pyre_diff) Stats|ERROR|panicked|^[a-z].*(disagree|failed)' "$out/$t.log" || true
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$out/$t.log" | grep -oE '[0-9]+$' || echo '?')
  echo "== $t: $execs inputs in $((SECONDS - start)) s (exit $status)"
  [[ "$status" -eq 0 ]] || exit "$status"
done
