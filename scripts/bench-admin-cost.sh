#!/usr/bin/env bash
# What the admin server, the metrics and the what-if cost (docs/benchmarks.md, "Operations overhead"):
# two single-node rings on one store, one node with everything off (--admin-listen none --no-whatif: no admin
# server, no metrics recorded, no shadows) and one with the defaults (admin server, metrics, what-if at the
# automatic rate) scraped once a second on /metrics and /whatif, as Prometheus and the dashboard would.
# Each round runs `eddy bench read --mode mixed` through both nodes at the same time for SECONDS, then `eddy bench
# append --duration SECONDS` through both at the same time: the machine's noise (other tenants' steal time moves a
# lone run by 2x from round to round) falls on both sides, and the round's ratio on / off is the cost. Medians of
# the rates and of the rounds' ratios.
# The what-if's own share of the node's CPU is its replay time over the node process's CPU time.
# Usage: scripts/bench-admin-cost.sh [SECONDS per read round] (default 8); ROUNDS=5; BLOCK=64K CACHE=64M FILL=128;
# STORE_DIR puts the store's data in that folder (say /dev/shm, to take the disk's fdatasync latency out);
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
store_data=${STORE_DIR:-$dir}/eddy-bench-admin-store.$$
cleanup() {
  for p in $(cat "$dir"/*.pid 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir" "$store_data"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1; }
cpu_seconds() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }  # utime + stime, in clock ticks of 1/100 s

S=127.0.0.1:$(port)
"$B" store --data "$store_data" --listen "$S" --admin-listen none > "$dir/store.log" 2>&1 &
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
echo "block $BLOCK, cache $CACHE, $FILL MiB per stream, append rounds of 200-byte events, store data in $store_data, $ROUNDS rounds of both sides at once"
declare -A reads appends
ratios_read=""; ratios_append=""
cpu_before=$(cpu_seconds "$ON_PID")
replay_before=$(curl -s "http://$ADMIN/whatif" | python3 -c 'import json,sys; print(json.load(sys.stdin)["replay_seconds"])')
for r in $(seq 1 "$ROUNDS"); do
  # Both sides at once, for the same seconds: what the machine's other tenants take (steal time moves a lone run
  # by 2x from round to round) falls on both, and the ratio of the two rates is the cost.
  both=()
  for t in off on; do
    case $t in off) n=$OFF;; on) n=$ON;; esac
    "$B" bench read --servers "$n" --mode mixed --readers 32 --duration "$SECONDS_PER" --fill-mib "$FILL" \
      --stream "cost/read-$t" --json > "$dir/read-$t.json" 2>/dev/null &
    both+=($!)
  done
  wait "${both[@]}"
  for t in off on; do
    rate=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["bytes_per_s"]))' "$dir/read-$t.json")
    reads[$t]="${reads[$t]:-} $rate"; eval "read_$t=$rate"
  done
  both=()
  for t in off on; do
    case $t in off) n=$OFF;; on) n=$ON;; esac
    "$B" bench append --server "$n" --duration "$SECONDS_PER" --size 200 --writers 4 --stream "cost/append-$t-$r" \
      > "$dir/append-$t.out" 2>/dev/null &
    both+=($!)
  done
  wait "${both[@]}"
  for t in off on; do
    a=$(awk '/events\/s/ {print $2}' "$dir/append-$t.out")
    appends[$t]="${appends[$t]:-} $a"; eval "append_$t=$a"
  done
  rr=$(python3 -c "print(f'{$read_on/$read_off:.3f}')"); ra=$(python3 -c "print(f'{$append_on/$append_off:.3f}')")
  ratios_read="$ratios_read $rr"; ratios_append="$ratios_append $ra"
  echo "round $r: read off $(python3 -c "print(round($read_off/1e6))") MB/s, on $(python3 -c "print(round($read_on/1e6))") MB/s ($rr x); append off $append_off/s, on $append_on/s ($ra x)"
done
cpu_after=$(cpu_seconds "$ON_PID")
whatif=$(curl -s "http://$ADMIN/whatif")
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ro=$(echo "${reads[off]}" | median); rn=$(echo "${reads[on]}" | median)
ao=$(echo "${appends[off]}" | median); an=$(echo "${appends[on]}" | median)
rr=$(echo "$ratios_read" | median); ra=$(echo "$ratios_append" | median)
python3 - "$ro" "$rn" "$ao" "$an" "$cpu_before" "$cpu_after" "$replay_before" "$rr" "$ra" "$whatif" <<'EOF'
import json, sys
ro, rn, ao, an, c0, c1, p0, rr, ra = map(float, sys.argv[1:10])
w = json.loads(sys.argv[10])
print(f"medians: read off {ro/1e6:.0f} MB/s, on {rn/1e6:.0f} MB/s; append off {ao:.0f}/s, on {an:.0f}/s")
print(f"median of the rounds' ratios (on / off): read {rr:.3f} x, append {ra:.3f} x")
cpu = c1 - c0
replay = w["replay_seconds"] - p0
print(f"what-if on the node with the defaults: rate {w['sample_rate']:.4g}, {w['sampled_requests']} of "
      f"{w['requests']} block requests sampled, {w['dropped_requests']} dropped; replay {replay:.2f} s of "
      f"{cpu:.1f} s node CPU ({100 * replay / cpu:.1f} %)")
EOF
