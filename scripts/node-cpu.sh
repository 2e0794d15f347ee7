#!/usr/bin/env bash
# CPU time of a node and its store over one `eddy bench append` through the node (docs/benchmarks.md,
# "Write-back"): where write-back's cost goes. Prints appends/s and the CPU ticks (1/100 s, utime + stime from
# /proc/PID/stat) each process used, for write-back off and on (file:// to a temporary folder), ROUNDS times.
# PERF=1 also records the node with `perf record -g` in both rounds, prints perf's top symbols of the write-back
# round, and splits the samples write-back adds by part (scripts/perf-split.py).
# Usage: scripts/node-cpu.sh [EVENTS] (default 300000 events of 1000 bytes, 4 writers); ROUNDS=3; OBJECTS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release/eddy
[ -x "$B" ] || swift build -c release --product eddy
EVENTS=${1:-300000}
ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d /tmp/eddy-node-cpu.XXXXXX)
pids=()
# OBJECTS_DIR puts the write-back objects elsewhere (say /dev/shm: no disk syncs shared with the store).
objects=$(mktemp -d "${OBJECTS_DIR:-$dir}/eddy-objects.XXXXXX")
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$dir" "$objects"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; cat "$1" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

round() { # name node-args...
  local name=$1; shift
  local d="$dir/$name-$RANDOM" s n
  mkdir -p "$d"
  s=127.0.0.1:$(port); n=127.0.0.1:$(port)
  "$B" store --data "$d/store" --listen "$s" > "$d/store.log" 2>&1 &
  local sp=$!; pids+=("$sp")
  wait_log "$d/store.log" "eddy store ready"
  "$B" node --listen "$n" --store "$s" --members "$n" --flush-idle 1 "$@" > "$d/node.log" 2>&1 &
  local np=$!; pids+=("$np")
  wait_log "$d/node.log" "eddy node ready"
  sleep 1
  local s0 n0 perf_pid=""
  s0=$(ticks "$sp"); n0=$(ticks "$np")
  if [ "${PERF:-0}" = 1 ]; then
    perf record -F 999 -g -p "$np" -o "$d/perf.data" -- sleep 6 > /dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
  fi
  local rate
  rate=$("$B" bench append --server "$n" --events "$EVENTS" --size 1000 --writers 4 --stream "cpu/$name" 2>/dev/null \
    | awk '/events\/s/ {print $2}')
  sleep 4  # the flushes of the last blocks
  echo "$name: $rate appends/s, node $(( $(ticks "$np") - n0 )) ticks, store $(( $(ticks "$sp") - s0 )) ticks"
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    perf script -i "$d/perf.data" -F comm,tid,ip,sym 2>/dev/null > "$dir/perf-$name.txt" || true
    if [ "$name" = file ]; then
      perf report -i "$d/perf.data" --no-children -g none --sort dso,symbol 2>/dev/null | grep -v '^#' \
        | grep -v '^$' | head -25 | cut -c1-160 || true
      python3 scripts/perf-split.py "$dir/perf-off.txt" "$dir/perf-file.txt"
    fi
  fi
  kill -9 "$sp" "$np" 2>/dev/null || true
  wait "$sp" "$np" 2>/dev/null || true
}

for r in $(seq 1 "$ROUNDS"); do
  round off
  round file --object-store "file://$objects/objects-$r"
done
