#!/usr/bin/env bash
# Read-path benchmarks against `eddy up` (release), each on a fresh data folder:
#   amplification  200 catch-up readers over 8 segments on 3 nodes: store reads per block and the store's own
#                  read_bytes against the data size (data written straight to the store, so every byte must
#                  come from it once)
#   policies       --mode mixed with a ring cache of 5 % of the data: hit ratio of stream, s3fifo, arc, lru
#   fanout         append-to-delivery latency with N tail readers of one segment
# Usage: scripts/bench-read.sh [amplification|policies|fanout|all] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
seconds=${2:-10}
[ -x .build/release/eddy ] || swift build -c release --product eddy
eddy=$PWD/.build/release/eddy
work=$(mktemp -d /tmp/eddy-bench-read-XXXXXX)
up_pid=""
stop_up() { [ -n "$up_pid" ] && { kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; up_pid=""; }; }
trap 'stop_up; rm -rf "$work"' EXIT

start_up() {  # start_up NAME [node options...]
  local name=$1; shift
  "$eddy" up --data "$work/$name" --log-level warning "$@" > "$work/$name.log" 2>&1 &
  up_pid=$!
  # `eddy up` prints its last line once the store and every node listen.
  for _ in $(seq 200); do grep -q '^eddy up:' "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
}

fill_store() {  # fill_store STREAM SEGMENTS MIB: events of 1000 bytes appended straight to the store
  "$eddy" create "$1" --segments "$2" --server 127.0.0.1:9099 >/dev/null
  python3 -c "
import sys
line = ('x' * 999 + '\n').encode()
n = $3 * 1048576 // 1000
sys.stdout.buffer.write(line * n)" | "$eddy" append "$1" --server 127.0.0.1:9099 --batch 500 > /dev/null
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

if [ "$what" = amplification ] || [ "$what" = all ]; then
  start_up amp
  fill_store bench/amp 8 128
  size=$("$eddy" info bench/amp | awk '{ split($3, a, "="); s += a[2] } END { print s }')
  out=$("$eddy" bench read --stream bench/amp --readers 200 --mode catchup --duration "$seconds" --json 2>/dev/null)
  store_read=$("$eddy" admin stats --server 127.0.0.1:9099 --format json | json 'd["read_bytes"]')
  echo "amplification: 200 catch-up readers, 8 segments, 3 nodes, $((size / 1048576)) MiB of data"
  echo "  nodes: $(echo "$out" | json '"store reads per block %.3f, hit ratio %.4f, %.2f GB/s, read p99 %.1f ms" % (d["store_reads_per_block"], d["hit_ratio"], d["bytes_per_s"]/1e9, d["p99_ms"])')"
  echo "  store: read_bytes $store_read for $size bytes of data (ratio $(python3 -c "print(f'{$store_read/$size:.3f}')"))"
  stop_up
fi

if [ "$what" = policies ] || [ "$what" = all ]; then
  # 128 MiB of data, 64 KiB blocks; the ring's cache is 5 % of it: 6.4 MiB over 3 nodes.
  for policy in stream stream+hints s3fifo arc lru; do
    hints=(); [ "$policy" = stream+hints ] && hints=(--reader-hints)
    start_up "pol-$policy" --policy "${policy%+hints}" "${hints[@]}" --cache-bytes 2236962 --block-size 64K \
      --near-cache-share 0
    fill_store bench/mixed 8 128
    out=$("$eddy" bench read --stream bench/mixed --readers 64 --mode mixed --rate 2000 --duration "$seconds" --json 2>/dev/null)
    echo "policy $policy: $(echo "$out" | json '"hit ratio %.4f, %.0f events/s, read p99 %.1f ms" % (d["hit_ratio"], d["events_per_s"], d["p99_ms"])')"
    stop_up
  done
fi

if [ "$what" = fanout ] || [ "$what" = all ]; then
  start_up fan
  for readers in 100 1000; do
    out=$("$eddy" bench fanout --stream "bench/fan$readers" --segments 1 --readers "$readers" --rate 100 \
      --duration "$seconds" --json 2>/dev/null)
    echo "fanout $readers readers, 100 events/s: $(echo "$out" | json '"append-to-delivery p50 %.2f ms, p99 %.2f ms, p999 %.2f ms" % (d["p50_ms"], d["p99_ms"], d["p999_ms"])')"
  done
  stop_up
fi
