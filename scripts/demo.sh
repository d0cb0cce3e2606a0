#!/usr/bin/env bash
# demo.sh - try st2-matrix on one machine, with nothing to set up: a newcomer's first hour.
#
#   scripts/demo.sh
#
# It starts, each in a throw-away directory that is deleted on exit:
#   1. the StackStorm double (testkit's `st2-double` binary) serving StackStorm's own example
#      aliases (testkit/fixtures/st2-aliases-real.json); every command "runs" for 2 s and then
#      "succeeds" with a made-up result, so results come back as from a real StackStorm;
#   2. a real Synapse (installed from PyPI into .test-deps/ by scripts/synapse.sh, as the
#      end-to-end tests do), server name `localhost`, with the bridge's registration and the
#      experimental features the bot's end-to-end encryption needs;
#   3. the bridge (debug build), configured for both, with the demo user as its admin;
# then registers a user with Synapse's shared secret and prints how to log in and what to try.
# Ctrl-C stops everything it started and deletes the directory.
#
# Environment:
#   DEMO_USER, DEMO_PASSWORD  the Matrix user to create (default demo / demo-password)
#   SYNAPSE_PORT              Synapse's port (default 8008, or a free one when 8008 is taken)
#   CARGO_TARGET_DIR          where cargo builds (default target/)
# Needs: cargo, python3 >= 3.10 with venv, curl; network access to PyPI and crates.io only the
# first time (Synapse install, build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

DEMO_USER="${DEMO_USER:-demo}"
DEMO_PASSWORD="${DEMO_PASSWORD:-demo-password}"
venv="$repo/.test-deps/synapse-venv"
target="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$target" = /* ]] || target="$repo/$target"

log() { printf '[demo] %s\n' "$*" >&2; }

# Process groups this script started; each child runs under setsid, so its pid is its group id
# and stopping the group also stops whatever it forked (Synapse, for one, may fork workers).
pids=()
tmp=""
# shellcheck disable=SC2317 # called by the EXIT trap, which shellcheck 0.9 does not follow
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  # The bridge drains its outbox for up to 5 s on SIGTERM; give everyone 15 s, then SIGKILL.
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [[ -n "$tmp" ]]; then
    rm -rf -- "$tmp"
  fi
  log "stopped everything and removed the demo directory"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOGFILE COMMAND...: runs COMMAND in a process group of its own, output to LOGFILE.
start() {
  local name="$1" logfile="$2"
  shift 2
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  pids+=("$!")
  log "started $name (pid $!, log $logfile)"
}

# A TCP port nobody listens on now (the kernel picks it). Racy in theory; fine for a demo.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# SO_REUSEADDR as Synapse's listener sets it: connections of a previous run lingering in
# TIME_WAIT do not keep it from the port, so they must not make us pick another.
port_is_free() {
  python3 -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what not ready after ${timeout} s"
      return 1
    fi
    sleep 0.3
  done
}

# ---- build and install (once; later runs find everything in place) ------------------------
scripts/synapse.sh install "$venv"
log "building the bridge and the StackStorm double (the first build takes a few minutes)"
# Two invocations on purpose: built alone, st2-matrix gets the same features as in
# scripts/test.sh, so both reuse one build.
cargo build --locked -p st2-matrix --bin st2-matrix
cargo build --locked -p st2-matrix-testkit --bin st2-double
bridge_bin="$target/debug/st2-matrix"
double_bin="$target/debug/st2-double"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/st2-matrix-demo.XXXXXX")"
mkdir -p "$tmp/synapse" "$tmp/bridge"
log "demo directory: $tmp"

# ---- 1. StackStorm double ------------------------------------------------------------------
start "StackStorm double" "$tmp/st2-double.log" "$double_bin" --bind 127.0.0.1:0
wait_for "StackStorm double" 20 grep -q '^api_key=' "$tmp/st2-double.log"
st2_url="$(sed -n 's/^url=//p' "$tmp/st2-double.log")"
st2_api_key="$(sed -n 's/^api_key=//p' "$tmp/st2-double.log")"

# ---- 2. the bridge's config and registration (Synapse reads registrations at start) ---------
if [[ -n "${SYNAPSE_PORT:-}" ]]; then
  synapse_port="$SYNAPSE_PORT"
elif port_is_free 8008; then
  synapse_port=8008
else
  synapse_port="$(free_port)"
fi
bridge_port="$(free_port)"
homeserver_url="http://localhost:$synapse_port"
server_name=localhost
bot="@st2bot:$server_name"
me="@$DEMO_USER:$server_name"

cat >"$tmp/bridge/config.toml" <<EOF
# Written by scripts/demo.sh: see config.example.toml for every key.
[homeserver]
url = "http://127.0.0.1:$synapse_port"
server_name = "$server_name"

[appservice]
id = "st2-matrix-demo"
bind = "127.0.0.1:$bridge_port"
url = "http://127.0.0.1:$bridge_port"
registration = "$tmp/bridge/registration.yaml"

[database]
url = "sqlite://$tmp/bridge/st2-matrix.db"

[bridge]
invite_allow = ["*:$server_name"]
# StackStorm's example packs; the fixture's other aliases are parser test cases.
packs = ["examples", "hello_st2", "packs"]
admins = ["$me"]

[stackstorm]
url = "$st2_url"
api_key = "$st2_api_key"

[secrets]
key_file = "$tmp/bridge/st2-matrix.key"

[encryption]
store = "$tmp/bridge/crypto-store"

[log]
filter = "info"
EOF
"$bridge_bin" generate-registration --config "$tmp/bridge/config.toml" \
  --output "$tmp/bridge/registration.yaml" >/dev/null

# ---- 3. Synapse ----------------------------------------------------------------------------
shared_secret="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
# In its own directory: the generated log config names homeserver.log relative to the
# working directory, which would otherwise be the repository.
(cd "$tmp/synapse" && "$venv/bin/python" -m synapse.app.homeserver --server-name "$server_name" \
  --config-path homeserver.yaml --data-directory . --config-directory . \
  --generate-config --report-stats=no >/dev/null)
# Synapse merges -c files per top-level key, the later file winning: these settings replace
# the generated ones (the same as the end-to-end harness, e2e/tests/e2e/harness/synapse.rs).
cat >"$tmp/synapse/overrides.yaml" <<EOF
public_baseurl: "$homeserver_url/"
listeners:
  - port: $synapse_port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
presence:
  enabled: false
enable_registration: false
registration_shared_secret: "$shared_secret"
# The bot's end-to-end encryption: without these Synapse sends an appservice no to-device
# messages (room keys), device lists or one-time-key counts.
experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
app_service_config_files:
  - "$tmp/bridge/registration.yaml"
EOF
start "Synapse" "$tmp/synapse.log" "$venv/bin/python" -m synapse.app.homeserver \
  -c "$tmp/synapse/homeserver.yaml" -c "$tmp/synapse/overrides.yaml"
# shellcheck disable=SC2317 # called through wait_for
synapse_healthy() { [[ "$(curl -fsS "http://127.0.0.1:$synapse_port/health")" == OK ]]; }
wait_for "Synapse (log: $tmp/synapse.log)" 120 synapse_healthy

# ---- 4. the demo user, then the bridge (which invites its admins into the admin room) ------
"$venv/bin/register_new_matrix_user" --no-admin -u "$DEMO_USER" -p "$DEMO_PASSWORD" \
  -k "$shared_secret" "http://127.0.0.1:$synapse_port" >/dev/null
log "registered $me"
start "bridge" "$tmp/bridge.log" "$bridge_bin" run --config "$tmp/bridge/config.toml"
wait_for "the bridge (log: $tmp/bridge.log)" 60 curl -fsS "http://127.0.0.1:$bridge_port/ready"

cat <<EOF

st2-matrix demo is running. Log in with any Matrix client (e.g. Element desktop):

  homeserver  $homeserver_url
  user        $DEMO_USER   (full id $me)
  password    $DEMO_PASSWORD

Then try:
  - accept the invitation to "StackStorm bridge admin" (you are the bridge's admin there);
    type: status, rooms list, help
  - create a room (or a direct chat: encrypted works too) and invite $bot
  - !st2help                            what the room can run (StackStorm's example packs)
  - !st2 run date on web1,web2          ack in a thread, then the result (made up by the double)
  - !st2 greet hello                    hello_st2's alias
  - !st2 pack search matrix             an ack, then "nothing found"
  - !st2 ping                           pong
Logs: $tmp/bridge.log, $tmp/st2-double.log, $tmp/synapse/homeserver.log
Ctrl-C stops Synapse, the bridge and the double, and deletes $tmp.
EOF

# Stay in the foreground until Ctrl-C, or until one of the three stops by itself.
set +e
wait -n "${pids[@]}"
status=$?
set -e
log "a demo process exited (status $status); see the logs above before they go. Stopping the rest."
tail -n 20 "$tmp/bridge.log" "$tmp/synapse.log" "$tmp/synapse/homeserver.log" "$tmp/st2-double.log" >&2 || true
exit 1
