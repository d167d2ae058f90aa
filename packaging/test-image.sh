#!/usr/bin/env bash
# Runs the amd64 image with podman and checks it as a user would run it: the hub refuses to
# start without credentials, starts with a secret from the environment, reports healthy through
# its HEALTHCHECK, runs as a non-root user, carries a publish to a stream, keeps its log in the
# volume across a new container, and takes a mounted config file instead of the environment.
#   packaging/test-image.sh runnel:<version>-amd64
# On this project's VMs podman needs runc with the cgroupfs manager and no default ulimits
# (PODMAN_FLAGS and the containers.conf below); elsewhere PODMAN_FLAGS= is enough.
set -euo pipefail
image=${1:?usage: packaging/test-image.sh <image>}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
name="runnel-test-$$"
volume="runnel-test-$$"
printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
read -r -a flags <<<"${PODMAN_FLAGS---runtime runc --cgroup-manager=cgroupfs}"
cleanup() {
  [ -d "$work/compose" ] && compose down -v >/dev/null 2>&1
  pm rm -f -t 0 "$name" >/dev/null 2>&1 || true
  pm volume rm -f "$volume" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "image test failed: $*" >&2
  podman "${flags[@]}" logs "$name" >&2 || true
  cat "$work/podman.log" >&2
  exit 1
}

port=$(( 20000 + RANDOM % 20000 ))
secret=$(head -c 32 /dev/urandom | base64)
url="http://127.0.0.1:$port"
# --network host: the hub's own listen address is the port. Where no systemd runs, podman
# cannot time health checks and logs so on every start and removal (kept in podman.log, shown
# on failure); `podman healthcheck run` runs the image's HEALTHCHECK command on demand.
pm() { podman "${flags[@]}" "$@" 2>>"$work/podman.log"; }
start() { pm run -d --name "$name" --network host -v "$volume:/data" "$@" "$image" >/dev/null; }
wait_healthy() {
  for _ in $(seq 1 50); do
    pm healthcheck run "$name" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "the health check never passed"
}

echo "--- no credentials: the hub refuses to listen on every address"
if podman "${flags[@]}" run --rm --network host -e RUNNEL_LISTEN="0.0.0.0:$port" "$image" \
  >"$work/refused" 2>&1; then
  fail "the hub started without credentials"
fi
grep -q 'no credentials configured' "$work/refused" || fail "unexpected refusal: $(cat "$work/refused")"

echo "--- a secret from the environment"
pm volume create "$volume" >/dev/null
env=(-e RUNNEL_LISTEN="0.0.0.0:$port" -e RUNNEL_URL="$url" -e RUNNEL_AUTH_JWT_SECRET="$secret")
start "${env[@]}"
wait_healthy
[ "$(pm inspect --format '{{.State.Health.Status}}' "$name")" = healthy ] || fail "not reported healthy"
pid=$(pm inspect --format '{{.State.Pid}}' "$name")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 10001 ] || fail "the hub runs as uid $uid, not 10001"
echo "healthy, running as uid $uid"

# Fails with WHY unless /history of TOPIC holds the event ID.
in_history() {
  local history
  history=$(curl -fsS -H "authorization: Bearer $tok" "$url/history?topic=$1")
  case "$history" in *"\"$2\""*) ;; *) fail "$3: $history" ;; esac
}

token() { pm exec "$name" /usr/bin/runnel token --sub tester --subscribe 'box/*' --publish 'box/*' --ttl 10m; }
tok=$(token)
curl -sN --max-time 15 -H "authorization: Bearer $tok" "$url/events?topic=box/a" >"$work/stream" &
reader=$!
for _ in $(seq 1 50); do grep -q '^: ' "$work/stream" 2>/dev/null && break; sleep 0.1; done
answer=$(curl -fsS -H "authorization: Bearer $tok" -H 'content-type: application/json' \
  -d '{"topic":"box/a","data":{"n":1}}' "$url/publish")
id=$(printf %s "$answer" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || fail "publish answered $answer"
for _ in $(seq 1 50); do grep -q "^id: $id" "$work/stream" && break; sleep 0.1; done
kill "$reader" 2>/dev/null || true
grep -q "^id: $id" "$work/stream" || fail "event $id did not reach the stream: $(cat "$work/stream")"
grep -q '^data: {"n":1}' "$work/stream" || fail "wrong data on the stream: $(cat "$work/stream")"
echo "published $id and streamed it"

echo "--- a new container on the same volume keeps the log"
pm stop -t 10 "$name" >/dev/null
[ "$(pm inspect --format '{{.State.ExitCode}}' "$name")" = 0 ] || fail "the hub did not exit 0 on SIGTERM"
pm rm "$name" >/dev/null
start "${env[@]}"
wait_healthy
tok=$(token)
in_history box/a "$id" "event $id lost across the restart"
echo "event $id kept in the volume"
pm rm -f -t 10 "$name" >/dev/null

echo "--- a mounted config file instead of the environment"
printf 'listen = "0.0.0.0:%s"\ndata_dir = "/data"\n[auth]\njwt_secret = "%s"\n' "$port" "$secret" >"$work/runnel.toml"
chmod 0644 "$work/runnel.toml"
start -e RUNNEL_URL="$url" -v "$work/runnel.toml:/etc/runnel/runnel.toml:ro"
wait_healthy
tok=$(token)
in_history box/a "$id" "the mounted config did not serve the volume's log"
echo "mounted config serves the same log"
pm rm -f -t 10 "$name" >/dev/null

echo "--- the compose example (podman-compose), its named volume across down and up"
mkdir "$work/compose"
cp packaging/compose.yaml "$work/compose/"
printf 'RUNNEL_JWT_SECRET=%s\nRUNNEL_IMAGE=%s\nRUNNEL_PORT=%s\n' "$secret" "$image" "$port" \
  >"$work/compose/.env"
printf '[engine]\nruntime = "%s"\ncgroup_manager = "%s"\n' runc cgroupfs >>"$work/containers.conf"
compose() { (cd "$work/compose" && podman-compose -p "$name" "$@") >>"$work/podman.log" 2>&1; }
up() {
  compose up -d || fail "podman-compose up failed"
  for _ in $(seq 1 50); do curl -fsS "$url/health" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "the compose service never answered on port $port"
}
up
tok=$(cd "$work/compose" && podman-compose -p "$name" exec -T runnel runnel token --sub tester \
  --publish 'box/*' --subscribe 'box/*' 2>>"$work/podman.log" | tail -n 1)
answer=$(curl -fsS -H "authorization: Bearer $tok" -H 'content-type: application/json' \
  -d '{"topic":"box/c","data":"compose"}' "$url/publish") || fail "the publish through the compose service failed"
cid=$(printf %s "$answer" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
compose down
up
in_history box/c "$cid" "the compose volume lost $cid"
compose down -v
echo "compose: published $cid, kept across down and up"
echo "image test passed: $image"
