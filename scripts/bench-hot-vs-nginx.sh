#!/usr/bin/env bash
# Hot 1 MiB blocks to 64 clients: Eddy's ring against nginx (sendfile) serving the same bytes, and against raw
# SwiftNIO loopback streaming, in one run. Starts nginx (worker_processes 2, one 1 MiB file, `wrk -t2 -c64`),
# then `eddy bench nio` (a bare NIO server streaming one shared 1 MiB buffer to 64 bare NIO readers, in two
# processes), then `eddy up` (release) and `eddy bench read --mode hot --readers 64`; prints the figures and the
# ratios.
# Usage: scripts/bench-hot-vs-nginx.sh [seconds]   (default 10)
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
cleanup() {
  [ -n "$nio_pid" ] && kill "$nio_pid" 2>/dev/null || true
  kill "$nginx_pid" 2>/dev/null || true
  [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
sleep 1
wrk_out=$(wrk -t2 -c64 -d"${seconds}s" http://127.0.0.1:18080/block.bin)
nginx_bps=$(echo "$wrk_out" | awk '/Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
  if (u=="GB") n*=1024^3; else if (u=="MB") n*=1024^2; else if (u=="KB") n*=1024; printf "%.0f", n }')
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true

"$eddy" bench nio --serve 127.0.0.1:18081 2>/dev/null &
nio_pid=$!
sleep 1
nio_bps=$("$eddy" bench nio --server 127.0.0.1:18081 --readers 64 --duration "$seconds" --json |
  python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
kill "$nio_pid"; wait "$nio_pid" 2>/dev/null || true

"$eddy" up --data "$work/eddy" --log-level warning > "$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 200); do grep -q '^eddy up:' "$work/up.log" 2>/dev/null && break; sleep 0.1; done
eddy_json=$("$eddy" bench read --stream bench/hot --readers 64 --mode hot --hot-blocks 1 --duration "$seconds" \
  --fill-mib 64 --json 2>/dev/null)
eddy_bps=$(echo "$eddy_json" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
echo "nginx (sendfile, wrk -t2 -c64, 1 MiB file): $(python3 -c "print(f'{$nginx_bps/1e9:.2f}')") GB/s"
echo "raw SwiftNIO (streaming, 64 readers): $(python3 -c "print(f'{$nio_bps/1e9:.2f}')") GB/s"
echo "eddy  (3 nodes, 64 readers, hot 1 MiB blocks): $(python3 -c "print(f'{$eddy_bps/1e9:.2f}')") GB/s"
echo "ratio eddy/nginx: $(python3 -c "print(f'{$eddy_bps/$nginx_bps:.2f}')")"
echo "ratio eddy/raw SwiftNIO: $(python3 -c "print(f'{$eddy_bps/$nio_bps:.2f}')")"
echo "eddy bench read --json: $eddy_json"
