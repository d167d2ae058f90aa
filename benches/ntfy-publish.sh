#!/usr/bin/env bash
# What a publish through ntfy's API costs the hub beside a native one (SPEC §11.1: at most
# 1.2×), measured in the same run: rounds alternate native `POST /publish/{topic}` (raw body)
# and ntfy's `POST /{topic}` (raw body, a title and tags) and ntfy's JSON `POST /`, each on
# a fresh hub at the same steady rate; the figure is the hub's CPU time per event.
#   benches/ntfy-publish.sh [rounds] [rate] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} rate=${2:-2000} secs=${3:-5}
cargo bench --bench load --no-run -q 2>/dev/null
run() {
  cargo bench -q --bench load -- publish --publishers 4 --publish-rate "$rate" --warmup 1 \
    --duration "$secs" --spawn "$@" 2>/dev/null | tail -n 1
}
cpu() { sed -n 's/.*server_cpu_per_event=\([0-9.]*\)us.*/\1/p'; }
native=() ntfy=() json=()
for r in $(seq "$rounds"); do
  a=$(run); echo "native  $a"
  b=$(run --pub-path '/{topic}' --header 'Title: Backup' --header 'Tags: nas,ok'); echo "ntfy    $b"
  c=$(run --pub-path '/' --pub-content-type application/json \
    --pub-body '{"topic":"{topic}","message":"{data}","title":"Backup","tags":["nas","ok"]}')
  echo "ntfy-js $c"
  native+=("$(echo "$a" | cpu)") ntfy+=("$(echo "$b" | cpu)") json+=("$(echo "$c" | cpu)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
n=$(median "${native[@]}") t=$(median "${ntfy[@]}") j=$(median "${json[@]}")
awk -v n="$n" -v t="$t" -v j="$j" 'BEGIN {
  printf "server CPU per event (median): native %.1f us, ntfy %.1f us (%.2fx), ntfy JSON %.1f us (%.2fx)\n",
    n, t, t / n, j, j / n }'
