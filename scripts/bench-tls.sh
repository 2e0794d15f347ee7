#!/usr/bin/env bash
# The throughput cost of TLS, in one run: `eddy up` (release) with TLS off, then with TLS on every link
# (client-node, node-node, node-store; certificates of a throwaway authority made here with openssl), alternating
# for ROUNDS rounds. Each round measures
#   appends  `eddy bench append` through a node (the node forwards to the owner and appends to the store)
#   fan-out  `eddy bench read --mode hot`: 64 readers of one cached 1 MiB block across the 3 nodes
# and the script prints the medians and the ratio TLS on / off for each. Authentication is off in both runs.
# Usage: [ROUNDS=3] scripts/bench-tls.sh [seconds] [append events]   (defaults: 8 300000)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
events=${2:-300000}
rounds=${ROUNDS:-3}
[ -x .build/release/eddy ] || swift build -c release --product eddy
eddy=$PWD/.build/release/eddy
work=$(mktemp -d /tmp/eddy-bench-tls-XXXXXX)
up_pid=""
stop_up() { [ -n "$up_pid" ] && { kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; up_pid=""; }; }
trap 'stop_up; rm -rf "$work"' EXIT

# A P-256 authority and a server certificate for 127.0.0.1 (also used as the nodes' client certificate).
tls=$work/tls; mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" \
  -subj /CN=bench-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/key.pem" -out "$tls/req.csr" \
  -subj /CN=eddy 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$tls/ext"
openssl x509 -req -in "$tls/req.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -CAcreateserial \
  -out "$tls/cert.pem" -days 2 -extfile "$tls/ext" 2>/dev/null
server_tls=(--tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem" --tls-ca "$tls/ca.pem")
client_tls=(--tls-ca "$tls/ca.pem")

start_up() {  # start_up NAME [options...]
  local name=$1; shift
  "$eddy" up --data "$work/$name" --log-level warning "$@" > "$work/$name.log" 2>&1 &
  up_pid=$!
  for _ in $(seq 200); do grep -q '^eddy up:' "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
}
median() { python3 -c "import statistics,sys; print('%.0f' % statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

# Kernel TLS (the kernel encrypting, so sendfile would keep working under TLS) needs the kernel's tls module;
# swift-nio-ssl encrypts in user space either way. Say whether this kernel could offer it at all.
python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
try:
    c.setsockopt(socket.SOL_TCP, 31, b"tls")  # TCP_ULP
    print("kernel TLS: available (TCP_ULP tls accepted)")
except OSError as e:
    print(f"kernel TLS: not available here (TCP_ULP tls: {e.strerror}); encryption runs in user space")
PY
declare -A appends fanout
for round in $(seq "$rounds"); do
  for mode in off on; do
    if [ "$mode" = on ]; then start_up "tls-$round" "${server_tls[@]}"; extra=("${client_tls[@]}")
    else start_up "plain-$round"; extra=(); fi
    a=$("$eddy" bench append --server 127.0.0.1:9090 --events "$events" --size 1000 --writers 4 --batch 100 \
      --inflight 2 "${extra[@]}" 2>/dev/null | sed -n 's/^  events\/s: //p')
    f=$("$eddy" bench read --stream bench/hot --readers 64 --mode hot --hot-blocks 1 --duration "$seconds" \
      --fill-mib 64 --json "${extra[@]}" 2>/dev/null |
      python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_s"]))')
    stop_up
    echo "  round $round, TLS $mode: appends $a events/s (1000 B), hot fan-out $(python3 -c "print(f'{$f/1e9:.2f}')") GB/s"
    appends[$mode]="${appends[$mode]:-} $a"
    fanout[$mode]="${fanout[$mode]:-} $f"
  done
done
# shellcheck disable=SC2086
a_off=$(median ${appends[off]}); a_on=$(median ${appends[on]}); f_off=$(median ${fanout[off]}); f_on=$(median ${fanout[on]})
echo "median of $rounds: appends TLS off $a_off, on $a_on events/s: ratio $(python3 -c "print(f'{$a_on/$a_off:.2f}')")"
echo "median of $rounds: hot fan-out TLS off $(python3 -c "print(f'{$f_off/1e9:.2f}')") GB/s, on" \
  "$(python3 -c "print(f'{$f_on/1e9:.2f}')") GB/s: ratio $(python3 -c "print(f'{$f_on/$f_off:.2f}')")"
