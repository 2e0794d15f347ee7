#!/usr/bin/env bash
# The node's memory with many readers: a release store and one cache node as separate processes, a stream
# larger than the node's cache, then N readers (half tail, half catch-up) for S seconds while the node's RSS is
# sampled every 0.5 s. Prints the peak RSS against the cache budget + 64 MiB.
# With a fourth argument `churn:R`, readers come and go: rounds of R seconds (each a new bench process whose
# readers connect, read and leave, then 2 s with none) for `seconds` in all; it prints each round's peak RSS and
# whether the later half of the rounds peaked higher than the first half (growth: more than 8 MiB).
# Usage: [EDDY=binary] scripts/bench-memory.sh [readers] [seconds] [cache] [churn:R]   (defaults: 1000 20 256M)
set -euo pipefail
cd "$(dirname "$0")/.."
readers=${1:-1000}
seconds=${2:-20}
cache=${3:-256M}
churn=${4:-}
round=$seconds
if [ -n "$churn" ]; then
  [[ $churn =~ ^churn:([0-9]+)$ ]] || { echo "bench-memory: the fourth argument is churn:SECONDS, not '$churn'" >&2; exit 2; }
  round=${BASH_REMATCH[1]}
fi
# EDDY=path runs another build.
if [ -z "${EDDY:-}" ]; then
  [ -x .build/release/eddy ] || swift build -c release --product eddy
fi
eddy=${EDDY:-$PWD/.build/release/eddy}
work=$(mktemp -d /tmp/eddy-mem-XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
"$eddy" store --data "$work/store" --listen 127.0.0.1:19099 --log-level warning 2> "$work/store.log" &
pids+=($!)
sleep 1
"$eddy" node --listen 127.0.0.1:19090 --store 127.0.0.1:19099 --members 127.0.0.1:19090 --cache-bytes "$cache" \
  --log-level warning 2> "$work/node.log" &
node=$!
pids+=($node)
for _ in $(seq 100); do "$eddy" list --server 127.0.0.1:19090 >/dev/null 2>&1 && break; sleep 0.1; done
budget=$(python3 -c "s='$cache'.upper(); m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))")
fill=$(( budget * 2 / 1048576 ))
peak=0
# MEMTRACE=file: each sample also appends the node's RSS, its anonymous and file-backed parts (smaps_rollup) and
# its memory counters (admin API: memory_bytes, bytes_in_flight, connections) to `file`, for where the memory is.
sample() { while kill -0 "$node" 2>/dev/null; do
  rss=$(awk '/VmRSS/ { print $2 * 1024 }' /proc/$node/status); [ "$rss" -gt "$peak" ] && peak=$rss && echo "$peak" > "$work/peak"
  if [ -n "${MEMTRACE:-}" ]; then
    echo "rss_mib $((rss >> 20)) $(grep -E '^(Anonymous|Rss):' /proc/$node/smaps_rollup | tr -s ' ' | tr '\n' ' ')" \
      "$(curl -s http://127.0.0.1:19190/stats | python3 -c 'import json,sys; d=json.load(sys.stdin);
print({k: d[k] for k in ("memory_bytes", "bytes_in_flight", "connections") if k in d})' 2>/dev/null)" >> "$MEMTRACE"
  fi
  sleep 0.5; done; }
sample &
sampler=$!
pids+=($sampler)
started=$(date +%s)
rounds=()
n=0
while :; do
  n=$((n + 1))
  echo 0 > "$work/peak"; peak=0
  kill "$sampler" 2>/dev/null || true; sample & sampler=$!; pids+=($sampler)
  "$eddy" bench read --servers 127.0.0.1:19090 --stream bench/mem --readers "$readers" --mode mixed --rate 1000 \
    --duration "$round" --fill-mib "$fill" --json 2>/dev/null > "$work/bench.json"
  rounds+=("$(cat "$work/peak")")
  [ -n "$churn" ] || break
  echo "round $n: node peak RSS $(( ${rounds[-1]} / 1048576 )) MiB, $(( $(date +%s) - started )) s of $seconds"
  [ $(( $(date +%s) - started + round )) -le "$seconds" ] || break
  sleep 2  # no readers for a moment: what they held should be gone
done
peak=$(printf '%s\n' "${rounds[@]}" | sort -n | tail -1)
limit=$(( budget + 64 * 1048576 ))
echo "readers $readers, cache budget $((budget / 1048576)) MiB, data $fill MiB"
echo "node peak RSS: $((peak / 1048576)) MiB (limit budget + 64 MiB = $((limit / 1048576)) MiB): $([ "$peak" -le "$limit" ] && echo within || echo OVER)"
if [ -n "$churn" ]; then
  half=$(( ${#rounds[@]} / 2 ))
  first=$(printf '%s\n' "${rounds[@]:0:$half}" | sort -n | tail -1)
  later=$(printf '%s\n' "${rounds[@]:$half}" | sort -n | tail -1)
  echo "readers came and went ${#rounds[@]} times: peak of the first half $((first / 1048576)) MiB, of the later" \
    "half $((later / 1048576)) MiB: $([ "$later" -le $(( first + 8 * 1048576 )) ] && echo "no growth" || echo GROWTH)"
fi
echo "bench (last round): $(cat "$work/bench.json")"
