#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each), starting from the committed
# seeds. Usage: fuzz/run.sh [seconds] [target...]. Needs cargo-fuzz; works on stable Rust
# without sanitizers (-s none), which is what the project's CI uses. Exits non-zero if any
# target finds a crash; the input is kept under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config topic publish event_id auth sse_parser)
cargo fuzz build -s none
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -max_len=8192 -timeout=10 >"logs/$t.log" 2>&1; then
    tail -40 "logs/$t.log"
    echo "fuzz target $t failed (log: fuzz/logs/$t.log)"
    exit 1
  fi
  grep -E '^Done' "logs/$t.log" || true
done
