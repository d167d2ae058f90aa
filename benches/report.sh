#!/usr/bin/env bash
# Runs every scenario behind the table in docs/BENCHMARKS.md against a fresh release build
# of this checkout (each scenario starts its own hub on 127.0.0.1 with an empty data dir).
# Takes about ten minutes on a 2-core VM; every line it prints is one result. The Redis rows
# (ingress, cluster) need redis-server.
#   benches/report.sh            # all of it
#   benches/report.sh quick      # the budget rows only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench load --no-run -q 2>/dev/null
run() { cargo bench -q --bench load -- "$@" --spawn 2>/dev/null | grep -v '^  '; }

# SPEC §10 rows.
run idle --streams 0
run idle --streams 10000
run fanout --streams 10000 --rate 10 --duration 10 --client-threads 2
run fanout --streams 1000 --rate 400 --duration 10 --client-threads 2
run publish --publishers 32 --duration 10
run reconnect --streams 10000 --behind 100 --client-threads 2
[ "${1:-}" = quick ] && exit 0

# How cost grows with streams and topics.
run idle --streams 1000
# 19,500, not 20,000: this VM's hard open-file limit is 20,000 per process, and the hub
# needs a few descriptors beyond its streams.
run idle --streams 19500
run fanout --streams 1000 --rate 10 --duration 10 --client-threads 2
run fanout --streams 19500 --rate 5 --duration 10 --client-threads 2
run many-topics --streams 1000 --rate 1000 --duration 10 --client-threads 2
run many-topics --streams 10000 --rate 1000 --duration 10 --client-threads 2
run fanout --streams 1000 --rate 800 --duration 10 --client-threads 2
# Publishing: one flush per request, and 100-event arrays.
run publish --publishers 32 --duration 10 --env RUNNEL_STORE_SYNC=always
run publish --publishers 32 --duration 10 --batch 100
run startup --events 100000

# Redis ingress and several hubs: the generator starts a redis-server of its own (Debian's
# redis-server package).
if command -v redis-server >/dev/null 2>&1; then
  run redis-ingress --rate 0 --duration 10
  run redis-ingress --rate 1000 --streams 10 --duration 10
  # SPEC §11.3: one hub, then two hubs on one Redis, in the same run (three lines).
  run cluster --streams 1000 --rate 100 --duration 20 --client-threads 2
else
  echo "redis-ingress, cluster: skipped (no redis-server)"
fi
