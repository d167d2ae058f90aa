#!/usr/bin/env bash
# Runs the WebSocket clients nobody here wrote against a fresh hub (the debug build unless
# HUB_BIN says otherwise). Needs Python 3 with `websockets` (Debian: python3-websockets);
# .ci/run installs it. Fails, never skips, when something is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${HUB_BIN:-${CARGO_TARGET_DIR:-target}/debug/runnel}"
python="${PYTHON:-/usr/bin/python3}"
"$python" -c 'import websockets' || { echo "python3 with websockets is needed"; exit 1; }
data=$(mktemp -d)
log="$data/hub.log"
"$bin" serve --listen 127.0.0.1:0 --data "$data/db" 2>"$log" &
hub=$!
trap 'kill "$hub" 2>/dev/null; wait "$hub" 2>/dev/null; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | sed 's|.*http://||') || true
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "the hub did not start:"; cat "$log"; exit 1; }
"$python" tests/foreign/ws_client.py "$addr"
