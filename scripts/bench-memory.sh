#!/usr/bin/env bash
# The node's memory with many readers: a release store and one cache node as separate processes, a stream
# larger than the node's cache, then N readers (half tail, half catch-up) for S seconds while the node's RSS is
# sampled every 0.5 s. Prints the peak RSS against the cache budget + 64 MiB.
# Usage: scripts/bench-memory.sh [readers] [seconds] [cache]   (defaults: 1000 20 256M)
set -euo pipefail
cd "$(dirname "$0")/.."
readers=${1:-1000}
seconds=${2:-20}
cache=${3:-256M}
[ -x .build/release/eddy ] || swift build -c release --product eddy
eddy=$PWD/.build/release/eddy
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
sample() { while kill -0 "$node" 2>/dev/null; do
  rss=$(awk '/VmRSS/ { print $2 * 1024 }' /proc/$node/status); [ "$rss" -gt "$peak" ] && peak=$rss && echo "$peak" > "$work/peak"
  sleep 0.5; done; }
sample &
sampler=$!
pids+=($sampler)
"$eddy" bench read --servers 127.0.0.1:19090 --stream bench/mem --readers "$readers" --mode mixed --rate 1000 \
  --duration "$seconds" --fill-mib "$fill" --json 2>/dev/null > "$work/bench.json"
peak=$(cat "$work/peak")
limit=$(( budget + 64 * 1048576 ))
echo "readers $readers, cache budget $((budget / 1048576)) MiB, data $fill MiB"
echo "node peak RSS: $((peak / 1048576)) MiB (limit budget + 64 MiB = $((limit / 1048576)) MiB): $([ "$peak" -le "$limit" ] && echo within || echo OVER)"
echo "bench: $(cat "$work/bench.json")"
