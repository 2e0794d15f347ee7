#!/usr/bin/env bash
# Hot 1 MiB blocks to 64 clients: Eddy's ring against nginx (sendfile) serving the same bytes, and against raw
# SwiftNIO loopback streaming, in one run. Starts nginx (worker_processes 2, one 1 MiB file, `wrk -t2 -c64`),
# `eddy bench nio` (a bare NIO server streaming one shared 1 MiB buffer to 64 bare NIO readers, in two
# processes; and the same server with --sendfile, its block in shared memory) and `eddy up` (release) with
# `eddy bench read --mode hot --readers 64` (and again with --bytes-only), all measured in turn for ROUNDS rounds;
# prints each round, the medians and their ratios.
# Usage: [ROUNDS=3] scripts/bench-hot-vs-nginx.sh [seconds]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x .build/release/eddy ] || swift build -c release --product eddy
eddy=$PWD/.build/release/eddy
work=$(mktemp -d /tmp/eddy-nginx-XXXXXX)
chmod 755 "$work"
mkdir -p "$work/www" && chmod 755 "$work/www"
head -c 1048576 /dev/urandom > "$work/www/block.bin" && chmod 644 "$work/www/block.bin"
cat > "$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18080; root $work/www; }
}
CONF
nginx -c "$work/nginx.conf" &
nginx_pid=$!
up_pid=""
nio_pid=""
sendfile_pid=""
cleanup() {
  [ -n "$nio_pid" ] && kill "$nio_pid" 2>/dev/null || true
  [ -n "$sendfile_pid" ] && kill "$sendfile_pid" 2>/dev/null || true
  kill "$nginx_pid" 2>/dev/null || true
  [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
sleep 1
"$eddy" bench nio --serve 127.0.0.1:18081 2>/dev/null &
nio_pid=$!
# The same bare server sending its block from shared memory with sendfile (as nginx sends its file).
"$eddy" bench nio --serve 127.0.0.1:18082 --sendfile 2>/dev/null &
sendfile_pid=$!
"$eddy" up --data "$work/eddy" --log-level warning > "$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 200); do grep -q '^eddy up:' "$work/up.log" 2>/dev/null && break; sleep 0.1; done
# Fill the stream once (and warm the block into the caches); the rounds then only read.
"$eddy" bench read --stream bench/hot --readers 64 --mode hot --hot-blocks 1 --duration 2 --fill-mib 64 --json \
  > /dev/null 2>&1
# This machine's speed swings between runs (nginx alone moved 3.2-4.2 GB/s between two runs), so the three run
# in turn for ROUNDS rounds and the ratios are of the medians. The servers idle while another is measured.
rounds=${ROUNDS:-3}
nginx_all=(); nio_all=(); eddy_all=(); bytes_all=(); sendfile_all=()
for round in $(seq "$rounds"); do
  wrk_out=$(wrk -t2 -c64 -d"${seconds}s" http://127.0.0.1:18080/block.bin)
  nginx_bps=$(echo "$wrk_out" | awk '/Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
    if (u=="GB") n*=1024^3; else if (u=="MB") n*=1024^2; else if (u=="KB") n*=1024; printf "%.0f", n }')
  nio_bps=$("$eddy" bench nio --server 127.0.0.1:18081 --readers 64 --duration "$seconds" --json |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
  sendfile_bps=$("$eddy" bench nio --server 127.0.0.1:18082 --readers 64 --duration "$seconds" --json |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
  eddy_json=$("$eddy" bench read --stream bench/hot --readers 64 --mode hot --hot-blocks 1 --duration "$seconds" \
    --json 2>/dev/null)
  eddy_bps=$(echo "$eddy_json" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
  # The same readers counting bytes only, as wrk does with the bodies it gets (no walk over the events).
  bytes_bps=$("$eddy" bench read --stream bench/hot --readers 64 --mode hot --hot-blocks 1 --duration "$seconds" \
    --bytes-only --json 2>/dev/null | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
  echo "round $round: nginx $(python3 -c "print(f'{$nginx_bps/1e9:.2f}')") GB/s, raw SwiftNIO" \
    "$(python3 -c "print(f'{$nio_bps/1e9:.2f}')") GB/s (sendfile $(python3 -c "print(f'{$sendfile_bps/1e9:.2f}')")), eddy $(python3 -c "print(f'{$eddy_bps/1e9:.2f}')") GB/s," \
    "eddy counting bytes only $(python3 -c "print(f'{$bytes_bps/1e9:.2f}')") GB/s"
  nginx_all+=("$nginx_bps"); nio_all+=("$nio_bps"); eddy_all+=("$eddy_bps"); bytes_all+=("$bytes_bps")
  sendfile_all+=("$sendfile_bps")
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
nginx_bps=$(median "${nginx_all[@]}"); nio_bps=$(median "${nio_all[@]}"); eddy_bps=$(median "${eddy_all[@]}")
bytes_bps=$(median "${bytes_all[@]}"); sendfile_bps=$(median "${sendfile_all[@]}")
echo "medians of $rounds rounds:"
echo "nginx (sendfile, wrk -t2 -c64, 1 MiB file): $(python3 -c "print(f'{$nginx_bps/1e9:.2f}')") GB/s"
echo "raw SwiftNIO (streaming, 64 readers): $(python3 -c "print(f'{$nio_bps/1e9:.2f}')") GB/s"
echo "raw SwiftNIO sending with sendfile from shared memory: $(python3 -c "print(f'{$sendfile_bps/1e9:.2f}')") GB/s:" \
  "ratio to writev $(python3 -c "print(f'{$sendfile_bps/$nio_bps:.2f}')")"
echo "eddy  (3 nodes, 64 readers, hot 1 MiB blocks): $(python3 -c "print(f'{$eddy_bps/1e9:.2f}')") GB/s"
echo "ratio eddy/nginx: $(python3 -c "print(f'{$eddy_bps/$nginx_bps:.2f}')")"
echo "ratio eddy/raw SwiftNIO: $(python3 -c "print(f'{$eddy_bps/$nio_bps:.2f}')")"
echo "eddy, readers counting bytes only (--bytes-only): $(python3 -c "print(f'{$bytes_bps/1e9:.2f}')") GB/s:" \
  "ratio to nginx $(python3 -c "print(f'{$bytes_bps/$nginx_bps:.2f}')")," \
  "to raw SwiftNIO $(python3 -c "print(f'{$bytes_bps/$nio_bps:.2f}')")"
echo "eddy bench read --json (last round): $eddy_json"
