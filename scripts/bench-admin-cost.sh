#!/usr/bin/env bash
# What the admin server, the metrics and the what-if cost (docs/benchmarks.md, "Operations overhead"):
# two single-node rings on one store, one node with everything off (--admin-listen none --no-whatif: no admin
# server, no metrics recorded, no shadows) and one with the defaults (admin server, metrics, what-if at the
# automatic rate) scraped once a second on /metrics and /whatif, as Prometheus and the dashboard would.
# Alternating rounds (ABBA) of `eddy bench read --mode mixed` and `eddy bench append` through each; medians and
# ratios.
# The what-if's own share of the node's CPU is its replay time over the node process's CPU time.
# Usage: scripts/bench-admin-cost.sh [SECONDS per read round] (default 8); ROUNDS=5; BLOCK=64K CACHE=64M FILL=128;
# EXTRA_ON adds flags to the node with the defaults (EXTRA_ON="--whatif-cpu-budget 1": the what-if at rate 1, no
# governor).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release/eddy
[ -x "$B" ] || swift build -c release --product eddy
SECONDS_PER=${1:-8}
ROUNDS=${ROUNDS:-5}
BLOCK=${BLOCK:-64K}
CACHE=${CACHE:-64M}
FILL=${FILL:-128}
dir=$(mktemp -d /tmp/eddy-bench-admin.XXXXXX)
cleanup() {
  for p in $(cat "$dir"/*.pid 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1; }
cpu_seconds() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }  # utime + stime, in clock ticks of 1/100 s

S=127.0.0.1:$(port)
"$B" store --data "$dir/store" --listen "$S" --admin-listen none > "$dir/store.log" 2>&1 &
echo $! > "$dir/store.pid"
wait_log "$dir/store.log" "eddy store ready"
OFF=127.0.0.1:$(port)
ON=127.0.0.1:$(port)
ADMIN=127.0.0.1:$(port)
common=(--store "$S" --block-size "$BLOCK" --cache-bytes "$CACHE")
"$B" node --listen "$OFF" --members "$OFF" "${common[@]}" --admin-listen none --no-whatif > "$dir/node-off.log" 2>&1 &
echo $! > "$dir/node-off.pid"
# shellcheck disable=SC2086  # EXTRA_ON is a list of flags
"$B" node --listen "$ON" --members "$ON" "${common[@]}" --admin-listen "$ADMIN" ${EXTRA_ON:-} > "$dir/node-on.log" 2>&1 &
echo $! > "$dir/node-on.pid"
wait_log "$dir/node-off.log" "eddy node ready"
wait_log "$dir/node-on.log" "eddy node ready"
ON_PID=$(cat "$dir/node-on.pid")

# The scraper: /metrics and /whatif of the node with the defaults, once a second, for the whole run.
( while true; do
    curl -s -o /dev/null "http://$ADMIN/metrics"; curl -s -o /dev/null "http://$ADMIN/whatif"; sleep 1
  done ) &
echo $! > "$dir/scraper.pid"

echo "node with everything off: $OFF; node with the defaults: $ON (admin http://$ADMIN/, scraped at 1 Hz)"
echo "block $BLOCK, cache $CACHE, $FILL MiB per stream, $ROUNDS alternating rounds"
declare -A reads appends
cpu_before=$(cpu_seconds "$ON_PID")
replay_before=$(curl -s "http://$ADMIN/whatif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["replay_seconds"])')
for r in $(seq 1 "$ROUNDS"); do
  # ABBA: odd rounds run off first, even rounds on first, so what one run leaves the store (a checkpoint due, a
  # warm page cache) does not always fall on the same side.
  order="off on"; [ $((r % 2)) -eq 0 ] && order="on off"
  for t in $order; do
    case $t in off) n=$OFF;; on) n=$ON;; esac
    rate=$("$B" bench read --servers "$n" --mode mixed --readers 32 --duration "$SECONDS_PER" --fill-mib "$FILL" \
      --stream "cost/read-$t" --json 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["bytes_per_s"]))')
    reads[$t]="${reads[$t]:-} $rate"
    a=$("$B" bench append --server "$n" --events 400000 --size 200 --writers 4 --stream "cost/append-$t-$r" 2>/dev/null \
      | awk '/events\/s/ {print $2}')
    appends[$t]="${appends[$t]:-} $a"
    echo "round $r $t: read $(python3 -c "print(f'{$rate/1e6:.0f}')") MB/s, append $a events/s"
  done
done
cpu_after=$(cpu_seconds "$ON_PID")
whatif=$(curl -s "http://$ADMIN/whatif")
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ro=$(echo "${reads[off]}" | median); rn=$(echo "${reads[on]}" | median)
ao=$(echo "${appends[off]}" | median); an=$(echo "${appends[on]}" | median)
python3 - "$ro" "$rn" "$ao" "$an" "$cpu_before" "$cpu_after" "$replay_before" "$whatif" <<'EOF'
import json, sys
ro, rn, ao, an, c0, c1, p0 = map(float, sys.argv[1:8])
w = json.loads(sys.argv[8])
print(f"medians: read off {ro/1e6:.0f} MB/s, on {rn/1e6:.0f} MB/s ({rn/ro:.3f} x); "
      f"append off {ao:.0f}/s, on {an:.0f}/s ({an/ao:.3f} x)")
cpu = c1 - c0
replay = w["replay_seconds"] - p0
print(f"what-if on the node with the defaults: rate {w['sample_rate']:.4g}, {w['sampled_requests']} of "
      f"{w['requests']} block requests sampled, {w['dropped_requests']} dropped; replay {replay:.2f} s of "
      f"{cpu:.1f} s node CPU ({100 * replay / cpu:.1f} %)")
EOF
