#!/usr/bin/env bash
# Takes docs/img/dashboard.png: a release `eddy up` on a fresh data folder, `eddy bench read --mode mixed` running
# through the ring, and headless Chromium (Debian's `chromium`) photographing http://127.0.0.1:9190/ while it runs.
# Usage: scripts/dashboard-screenshot.sh [OUT] (default docs/img/dashboard.png).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release/eddy
[ -x "$B" ] || swift build -c release --product eddy
OUT=${1:-docs/img/dashboard.png}
dir=$(mktemp -d /tmp/eddy-dashboard.XXXXXX)
"$B" up --data "$dir/data" --cache-bytes 64M --block-size 64K > "$dir/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do curl -sf -o /dev/null http://127.0.0.1:9190/ready && break; sleep 0.1; done
"$B" bench read --mode mixed --readers 32 --duration 40 --fill-mib 256 > "$dir/bench.log" 2>&1 &
bench=$!
sleep 25
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --window-size=1400,1150 \
  --user-data-dir="$dir/chromium" --virtual-time-budget=12000 --screenshot="$OUT" http://127.0.0.1:9190/ 2>/dev/null
wait $bench
echo "wrote $OUT"
