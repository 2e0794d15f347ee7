#!/usr/bin/env bash
# Web readers against binary ones, in one run of `eddy up` (docs/http.md, docs/benchmarks.md "HTTP gateway"):
#  1. tail fan-out: N readers of one segment at R events/s, `eddy bench fanout` with the binary protocol and with
#     --http (each reader a Server-Sent Events response of a node's gateway), alternating rounds; medians and the
#     ratio of the p99s (target: SSE at most 1.5x binary);
#  2. catch-up: a stream of M MiB (appended straight to the store, so the nodes read it from there) read whole by
#     `eddy read --format json` and by the gateway's NDJSON (`curl`), bytes per second of each and their ratio,
#     and the store's own count of bytes read for the stream against its length (read amplification; write-back is
#     off, since its flushes of blocks appended straight to the store read them from the store too).
# Usage: [ROUNDS=3] [EDDY=binary] scripts/bench-sse.sh [seconds] [rate] [mib] [readers...]   (defaults: 8 100 64 100 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
rate=${2:-100}
mib=${3:-64}
shift $(( $# > 3 ? 3 : $# ))
counts=("$@"); [ ${#counts[@]} -eq 0 ] && counts=(100 1000)
if [ -z "${EDDY:-}" ]; then
  [ -x .build/release/eddy ] || swift build -c release --product eddy
fi
eddy=${EDDY:-$PWD/.build/release/eddy}
work=$(mktemp -d /tmp/eddy-sse-XXXXXX)
"$eddy" up --data "$work/eddy" --object-store none --log-level warning > "$work/up.log" 2>&1 &
up_pid=$!
trap 'kill $up_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
for _ in $(seq 200); do grep -q '^eddy up:' "$work/up.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'http gateway on' "$work/up.log" || { echo "this eddy has no HTTP gateway"; exit 1; }
figures() { python3 -c "import json,sys; d=json.load(sys.stdin); print('%.2f %.2f %d' % (d['p50_ms'], d['p99_ms'], d['deliveries']))"; }
median() { python3 -c "import statistics,sys; print('%.2f' % statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
rounds=${ROUNDS:-3}
for n in "${counts[@]}"; do
  b99=(); h99=(); b50=(); h50=()
  for round in $(seq "$rounds"); do
    b=$("$eddy" bench fanout --stream "bench/sse-$n-$round" --segments 1 --readers "$n" --rate "$rate" \
      --duration "$seconds" --json 2>/dev/null | figures)
    h=$("$eddy" bench fanout --http --stream "bench/sse-$n-$round-http" --segments 1 --readers "$n" --rate "$rate" \
      --duration "$seconds" --json 2>/dev/null | figures)
    read -r bp50 bp99 bn <<< "$b"
    read -r hp50 hp99 hn <<< "$h"
    echo "  round $round, $n readers: binary p50/p99 $bp50/$bp99 ms ($bn deliveries); SSE $hp50/$hp99 ms ($hn)"
    b99+=("$bp99"); h99+=("$hp99"); b50+=("$bp50"); h50+=("$hp50")
  done
  mb=$(median "${b99[@]}"); mh=$(median "${h99[@]}")
  echo "$n readers, $rate events/s, median of $rounds: binary p50/p99 $(median "${b50[@]}")/$mb ms;" \
    "SSE $(median "${h50[@]}")/$mh ms; p99 SSE/binary $(python3 -c "print(f'{$mh/$mb:.2f}')")"
done

# Catch-up: appended to the store itself (127.0.0.1:9099), then read through node 9090 and its gateway 9290.
"$eddy" create bench/sse-catchup --segments 1 --server 127.0.0.1:9099 >/dev/null
python3 -c "
import sys
line = ('x' * 990 + '\n').encode()
sys.stdout.buffer.write(line * ($mib * 1024 * 1024 // len(line)))" |
  "$eddy" append bench/sse-catchup --server 127.0.0.1:9099 > /dev/null
length=$("$eddy" info bench/sse-catchup --server 127.0.0.1:9099 2>/dev/null | sed -n 's/.*length=\([0-9]*\).*/\1/p' | head -1)
t0=$(date +%s.%N); "$eddy" read bench/sse-catchup --format json --server 127.0.0.1:9090 | wc -c > "$work/cli.bytes"; t1=$(date +%s.%N)
curl -s 127.0.0.1:9290/v1/streams/bench/sse-catchup/events | wc -c > "$work/http.bytes"; t2=$(date +%s.%N)
read_bytes=$(curl -s 127.0.0.1:9199/stats | python3 -c "import json,sys; print(json.load(sys.stdin)['streams']['bench/sse-catchup']['read_bytes'])")
python3 - "$t0" "$t1" "$t2" "$(cat "$work/cli.bytes")" "$(cat "$work/http.bytes")" "$length" "$read_bytes" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:4]); cli, http, length, read = map(int, sys.argv[4:8])
same = "same bytes" if cli == http else f"DIFFERENT sizes ({cli} vs {http})"
print(f"catch-up of {length / 2**20:.0f} MiB: eddy read --format json {cli / (t1 - t0) / 2**20:.1f} MiB/s of JSON, "
      f"gateway NDJSON {http / (t2 - t1) / 2**20:.1f} MiB/s ({same}); NDJSON/eddy read "
      f"{(cli / (t1 - t0)) and (http / (t2 - t1)) / (cli / (t1 - t0)):.2f}; store read {read} bytes of {length}: "
      f"{read / length:.3f} per byte for both readers")
PY
