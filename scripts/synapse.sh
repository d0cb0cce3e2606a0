#!/usr/bin/env bash
# synapse.sh - the real Synapse homeserver used by st2-matrix's end-to-end tests.
#
# Usage:
#   scripts/synapse.sh install [VENV]   create VENV (a Python virtualenv) and pip-install
#                                       matrix-synapse into it, unless it is already importable
#                                       there. Idempotent: a second run only says so.
#
# VENV defaults to <repo>/.test-deps/synapse-venv (git-ignored). The e2e harness
# (e2e/tests/e2e) runs this itself when the venv is missing, then generates a throw-away
# config per test run and starts Synapse as a child process; nothing else is needed here.
#
# Environment:
#   SYNAPSE_VERSION  pip version pin (default 1.163.2: the version the harness was written
#                    against; its wheel is binary, so no compiler is needed)
#   PYTHON           interpreter that creates the venv (default python3; needs >= 3.10 + venv)
#
# Network: PyPI only, and only when installing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
PYTHON="${PYTHON:-python3}"

log() { echo "[synapse.sh] $*" >&2; }

usage() {
  # The header comment above is the help text.
  sed -n '2,/^[^#]/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

installed_version() {
  # The installed distribution's version, not synapse.__version__: inside a git work tree (the
  # venv lives in .test-deps/) Synapse appends the repository's branch and commit to that,
  # e.g. "1.163.2 (b=main,77714b2)", which never equals the pin and made every run reinstall.
  "$1/bin/python" -c 'import importlib.metadata as m, synapse; print(m.version("matrix-synapse"))' 2>/dev/null
}

install() {
  local venv="${1:-$repo/.test-deps/synapse-venv}"
  local have
  if have="$(installed_version "$venv")"; then
    if [[ "$have" == "$SYNAPSE_VERSION" ]]; then
      log "matrix-synapse $have already installed in $venv: nothing to do"
      return
    fi
    log "matrix-synapse $have found in $venv, want $SYNAPSE_VERSION: reinstalling"
  fi
  local t0=$SECONDS
  if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv $venv with $("$PYTHON" --version 2>&1)"
    mkdir -p "$(dirname "$venv")"
    "$PYTHON" -m venv "$venv"
  fi
  log "pip-installing matrix-synapse==$SYNAPSE_VERSION into $venv (binary wheels; ~45 s)"
  # -q keeps CI logs short; pip still prints errors.
  "$venv/bin/pip" install -q --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
  have="$(installed_version "$venv")" || { log "matrix-synapse is still not importable from $venv"; exit 1; }
  log "installed matrix-synapse $have in $((SECONDS - t0)) s"
}

case "${1:-}" in
  install) shift; [[ $# -le 1 ]] || usage; install "$@" ;;
  *) usage ;;
esac
