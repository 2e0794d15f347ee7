#!/usr/bin/env bash
# Starts a release store on a fresh data directory, runs `eddy bench append` against it, stops the store.
# Usage: scripts/bench-append.sh [bench append options...]
# Default options: --events 2000000 --size 100 --writers 4 --batch 1000 --inflight 2
set -euo pipefail
cd "$(dirname "$0")/.."
eddy=.build/release/eddy
data=$(mktemp -d /tmp/eddy-bench-XXXXXX)
port=${EDDY_BENCH_PORT:-9391}
"$eddy" store --data "$data" --listen "127.0.0.1:$port" --log-level warning &
store=$!
trap 'kill $store 2>/dev/null; wait $store 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do
  "$eddy" list --server "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.1
done
if [ $# -eq 0 ]; then set -- --events 2000000 --size 100 --writers 4 --batch 1000 --inflight 2; fi
"$eddy" bench append --server "127.0.0.1:$port" "$@"
