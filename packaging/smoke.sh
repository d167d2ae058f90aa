#!/usr/bin/env bash
# Runs a cross-built binary under qemu-user and checks it end to end: it starts, answers
# /health, and an event published over HTTP arrives on an SSE stream. BINARY defaults to the
# target's release build; the container image's static binaries are checked the same way.
#   packaging/smoke.sh aarch64-unknown-linux-gnu [BINARY]
set -euo pipefail
target=${1:?usage: packaging/smoke.sh <target-triple> [binary]}
cd "$(dirname "$0")/.."
case "$target" in
  aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) run=(qemu-aarch64-static -L /usr/aarch64-linux-gnu) ;;
  armv7-unknown-linux-gnueabihf) run=(qemu-arm-static -L /usr/arm-linux-gnueabihf) ;;
  x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) run=() ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
bin=${2:-target/$target/release/runnel}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"${run[@]}" "$bin" --version
port=$(( 20000 + RANDOM % 20000 ))
"${run[@]}" "$bin" serve --listen "127.0.0.1:$port" --data "$work/data" 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/health"; echo
curl -sN --max-time 20 "http://127.0.0.1:$port/events?topic=smoke" >"$work/stream" &
reader=$!
sleep 1
answer=$(curl -fsS -H 'content-type: application/json' \
  -d '{"topic":"smoke","event":"check","data":{"from":"qemu"}}' "http://127.0.0.1:$port/publish")
echo "published: $answer"
id=$(printf %s "$answer" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
for _ in $(seq 1 50); do
  grep -q "^id: $id" "$work/stream" && break
  sleep 0.2
done
kill "$reader" 2>/dev/null || true
if ! grep -q "^id: $id" "$work/stream" || ! grep -q '^data: {"from":"qemu"}' "$work/stream"; then
  echo "smoke test failed for $target; stream:" >&2
  cat "$work/stream" "$work/log" >&2
  exit 1
fi
kill -TERM "$pid"
wait "$pid"
pid=
echo "smoke test passed: $target ($(stat -c %s "$bin") bytes)"
