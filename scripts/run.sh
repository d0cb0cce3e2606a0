#!/usr/bin/env bash
# run.sh - build and run the bridge (release build, embedded SQLite).
#
# First run (no config.toml yet): copies config.example.toml to config.toml and generates a
# fresh registration.local.yaml (new random tokens; git-ignored, so the real tokens cannot be
# committed over the example registration.yaml), then stops so you can edit config.toml and
# give registration.local.yaml to your homeserver.
# Later runs: `cargo run --release -- run --config config.toml`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -f config.toml ]]; then
  sed 's|^registration = "registration.yaml"|registration = "registration.local.yaml"|' \
    config.example.toml > config.toml
  grep -q '^registration = "registration.local.yaml"' config.toml ||
    { echo "config.example.toml has no registration key to point at registration.local.yaml" >&2; exit 1; }
  cargo run --release --locked --bin st2-matrix -- generate-registration --config config.toml \
    --output registration.local.yaml
  cat <<'MSG'

Created config.toml (from config.example.toml) and a fresh registration.local.yaml.
  1. Edit config.toml: [homeserver] url and server_name, [bridge] invite_allow and admins,
     and [stackstorm] url and credential (or remove that section to run without StackStorm).
  2. Give registration.local.yaml to the homeserver (Synapse: app_service_config_files). For
     encrypted rooms ([encryption] enabled, the default) also add to Synapse's homeserver.yaml:
       experimental_features:
         msc2409_to_device_messages_enabled: true
         msc3202_transaction_extensions: true
     Then restart the homeserver.
  3. Run scripts/run.sh again.
MSG
  exit 0
fi
exec cargo run --release --locked --bin st2-matrix -- run --config config.toml
