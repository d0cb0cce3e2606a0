#!/usr/bin/env bash
# test.sh - every test of st2-matrix, exactly as CI runs them (.ci/run calls this).
#
#   scripts/test.sh            all tiers
#   scripts/test.sh --quick    unit + API tiers only (no Synapse, no matrix-sdk build)
#
# What it does, in order:
#   1. installs a real Synapse from PyPI into .test-deps/ (git-ignored; skipped when present),
#      and Debian's chromium + chromium-driver packages for the login-page browser test
#      (apt-get, skipped when present; CHROMIUM / CHROMEDRIVER point at others);
#   2. checks that the bridge's modules import one way (scripts/module-cycles.py), then
#      builds the bridge binary with production features and sets it aside: the end-to-end
#      tier drives that file as a separate process, as production runs it;
#   3. unit tests, parser vectors, property tests and the API tier (bridge in-process against
#      a homeserver double and a StackStorm double), plus the doubles' own tests, and the
#      short fuzz run (every fuzz target over its seed corpus and a few thousand generated
#      inputs, pyre checked against CPython's `re`; the long campaign is scripts/fuzz.sh);
#   4. the end-to-end tier: that binary against one real Synapse for the whole run, with a
#      human user driven by matrix-sdk. It is a separate cargo invocation on purpose: building
#      it together with the bridge would rebuild the bridge with matrix-sdk's ruma features.
# Needs: cargo (rustc 1.95), python3 >= 3.10 with venv (3.11 for the pyre fuzz oracle), network access to crates.io and PyPI,
# and, unless Chromium is already there, apt-get (as root or through sudo) and Debian's mirrors.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=false
[[ "${1:-}" == "--quick" ]] && quick=true
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

# Debian's Chromium and its WebDriver, which the end-to-end tier drives (e2e harness/browser.rs).
install_chromium() {
  local chromium="${CHROMIUM:-/usr/bin/chromium}" driver="${CHROMEDRIVER:-/usr/bin/chromedriver}"
  if [[ -x "$chromium" && -x "$driver" ]]; then
    echo "chromium and chromedriver present: nothing to do"
    return
  fi
  local sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  "$chromium" --version
}

if ! $quick; then
  step "installing Synapse for the end-to-end tier"
  scripts/synapse.sh install
  step "installing Chromium for the login-page browser test"
  install_chromium
fi

step "layering: no import cycle among the bridge's modules"
python3 scripts/module-cycles.py

step "building the bridge binary (production features)"
cargo build --locked -p st2-matrix --bin st2-matrix
mkdir -p target/under-test
cp target/debug/st2-matrix target/under-test/st2-matrix

step "unit, parser-vector, property and API tests"
cargo test --locked -p st2-matrix -p st2-alias -p st2-matrix-testkit -p st2-matrix-fuzz

if ! $quick; then
  step "end-to-end tests against a real Synapse"
  ST2_MATRIX_BIN="$PWD/target/under-test/st2-matrix" cargo test --locked -p st2-matrix-e2e
fi

step "all tests passed"
