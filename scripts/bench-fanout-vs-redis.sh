#!/usr/bin/env bash
# Append-to-delivery latency with many tail readers: Eddy's ring against Redis Streams (XADD + XREAD BLOCK), in
# one run, with the same client runtime (`eddy bench fanout`, which speaks RESP for --redis), the same readers,
# rate, tick and payload. Redis runs with appendfsync always, so both acknowledge durable writes.
# Usage: [ROUNDS=3] [EDDY=binary] scripts/bench-fanout-vs-redis.sh [seconds] [rate] [readers...]   (defaults: 8 100 100 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
rate=${2:-100}
shift $(( $# > 2 ? 2 : $# ))
counts=("$@"); [ ${#counts[@]} -eq 0 ] && counts=(100 1000)
if ! command -v redis-server >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
# EDDY=path runs another build (an older commit's, to bisect a regression).
if [ -z "${EDDY:-}" ]; then
  [ -x .build/release/eddy ] || swift build -c release --product eddy
fi
eddy=${EDDY:-$PWD/.build/release/eddy}
work=$(mktemp -d /tmp/eddy-redis-XXXXXX)
redis-server --port 16379 --bind 127.0.0.1 --dir "$work" --save "" --appendonly yes --appendfsync always \
  --maxclients 10000 --daemonize no > "$work/redis.log" 2>&1 &
redis_pid=$!
"$eddy" up --data "$work/eddy" --log-level warning > "$work/up.log" 2>&1 &
up_pid=$!
trap 'kill $redis_pid $up_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
for _ in $(seq 200); do grep -q '^eddy up:' "$work/up.log" 2>/dev/null && break; sleep 0.1; done
# Older builds (EDDY=...) have no --server-pids: their rounds report no CPU figures.
pids_flag=$("$eddy" bench fanout --help 2>/dev/null | grep -q -- --server-pids && echo yes || true)
p99() { python3 -c "import json,sys; d=json.load(sys.stdin); print('%.2f %.2f %.2f %.0f' % (d['p50_ms'], d['p99_ms'], d['p999_ms'], d.get('deliveries_per_server_cpu_s', 0)))"; }
median() { python3 -c "import statistics,sys; print('%.2f' % statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
# The guard: docs/benchmarks.md records, for some reader counts and rates, Eddy's and Redis's p99 from one run
# (a row `| N readers, R events/s | E ms | R ms | ... |` of its fan-out guard table). This run's figures are printed
# against them; since the machine's speed varies, the ratio redis/eddy is what is compared: below half the
# recorded one is flagged as a regression (it was how a 60x slowdown went unnoticed for many commits).
guard() {
  local row
  row=$(grep -F "| $1 readers, $2 events/s |" docs/benchmarks.md | head -1 || true)
  [ -n "$row" ] || { echo "  guard: no recorded figure for $1 readers at $2 events/s in docs/benchmarks.md"; return; }
  python3 - "$row" "$3" "$4" <<'PY'
import re, sys
row, eddy, redis = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
cells = [c.strip() for c in row.strip().strip("|").split("|")]
rec_eddy, rec_redis = (float(re.match(r"[\d.]+", c).group()) for c in cells[1:3])
now, then = redis / eddy, rec_redis / rec_eddy
verdict = "REGRESSION: below half the recorded ratio" if now < then / 2 else "within range"
print(f"  guard: recorded ({cells[3]}) eddy p99 {rec_eddy} ms, redis {rec_redis} ms, redis/eddy {then:.2f}; "
      f"this run eddy {eddy} ms ({eddy / rec_eddy:.1f}x the record), redis {redis} ms, redis/eddy {now:.2f}: {verdict}")
PY
}
# This machine's speed swings from run to run (both systems' p99 moves 2-3x), so each count runs ROUNDS rounds,
# Eddy and Redis alternating, and the ratio is taken of the medians.
rounds=${ROUNDS:-3}
for n in "${counts[@]}"; do
  e99=(); r99=(); e50=(); r50=()
  for round in $(seq "$rounds"); do
    e=$("$eddy" bench fanout --stream "bench/redis-cmp-$n-$round" --segments 1 --readers "$n" --rate "$rate" \
      --duration "$seconds" ${pids_flag:+--server-pids "$up_pid"} --json 2>/dev/null | p99)
    r=$("$eddy" bench fanout --redis 127.0.0.1:16379 --readers "$n" --rate "$rate" --duration "$seconds" \
      ${pids_flag:+--server-pids "$redis_pid"} --json 2>/dev/null | p99)
    read -r ep50 ep99 ep999 eeff <<< "$e"
    read -r rp50 rp99 rp999 reff <<< "$r"
    echo "  round $round, $n readers: eddy p50/p99/p999 $ep50/$ep99/$ep999 ms; redis $rp50/$rp99/$rp999 ms;" \
      "deliveries per server CPU second: eddy $eeff, redis $reff"
    e99+=("$ep99"); r99+=("$rp99"); e50+=("$ep50"); r50+=("$rp50")
  done
  me99=$(median "${e99[@]}"); mr99=$(median "${r99[@]}")
  echo "$n readers, $rate events/s, median of $rounds: eddy p50/p99 $(median "${e50[@]}")/$me99 ms;" \
    "redis $(median "${r50[@]}")/$mr99 ms; p99 redis/eddy $(python3 -c "print(f'{$mr99/$me99:.2f}')")"
  guard "$n" "$rate" "$me99" "$mr99"
done
