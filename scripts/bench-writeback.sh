#!/usr/bin/env bash
# Write-back figures in one run (docs/benchmarks.md, "Write-back"):
#  1. appends/s through a node with write-back off, to the filesystem, and to SeaweedFS (alternating rounds; a
#     round starts once the previous one's blocks are flushed);
#  2. flush throughput: a stream appended straight to the store, then flushed by a node (MB/s of segment bytes);
#  3. cold reads: after truncating the store, the whole stream read back through a node from object storage
#     (MB/s, and the time to the first event of a cold block);
#  4. the queue broker: messages/s through enqueue (journal durable), lease and ack.
# Usage: scripts/bench-writeback.sh [EVENTS] (default 400000 events of SIZE=1000 bytes, for parts 2-4); ROUNDS=3;
# DURATION=8 (seconds of each round of part 1: rounds of a fixed event count last about a second here, too short
# for this machine's noise); ONLY_APPENDS=1 stops after part 1; FILE_ARGS and S3_ARGS add flags to the file://
# and s3:// nodes (e.g. S3_ARGS="--object-blocks 1"). Each s3 round also prints SeaweedFS's CPU time per object.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release/eddy
[ -x "$B" ] || swift build -c release --product eddy
EVENTS=${1:-400000}
SIZE=${SIZE:-1000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
dir=$(mktemp -d /tmp/eddy-bench-wb.XXXXXX)
pids=()
cleanup() {
  exec 2>/dev/null  # not bash's "Killed" line for each server
  for p in "${pids[@]}" $(cat "$dir"/*.pid 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1; }
stat_of() { "$B" admin stats --server "$1" --format json | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2', 0))"; }

# SeaweedFS on its own ports.
weed_bin=$(command -v weed || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed")
wp=22300
cat > "$dir/s3.json" <<EOF
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"benchsecret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
mkdir -p "$dir/weed"
"$weed_bin" mini -dir="$dir/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -admin.ui=false \
  -s3.config="$dir/s3.json" -master.port=$wp -volume.port=$((wp+1)) -filer.port=$((wp+2)) -s3.port=$((wp+3)) \
  -admin.port=$((wp+4)) -webdav.port=$((wp+5)) -s3.port.iceberg=$((wp+6)) -s3.port.lance=$((wp+7)) > "$dir/weed.log" 2>&1 &
pids+=($!)
weed_pid=$!
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system, in 1/100 s
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$((wp+3))/" && break; sleep 0.2; done
echo "SeaweedFS: $("$weed_bin" version | head -1)"

S=127.0.0.1:$(port)
"$B" store --data "$dir/store" --listen "$S" > "$dir/store.log" 2>&1 &
pids+=($!)
wait_log "$dir/store.log" "eddy store ready"
start_node() { # name objectstore-args...
  local name=$1; shift
  local n=127.0.0.1:$(port)
  "$B" node --listen "$n" --store "$S" --members "$n" --flush-idle 1 "$@" > "$dir/node-$name.log" 2>&1 &
  echo $! > "$dir/node-$name.pid"  # this runs in $(...): the PID goes through a file
  wait_log "$dir/node-$name.log" "eddy node ready"
  echo "$n"
}
OFF=$(start_node off)
FILE=$(start_node file --object-store "file://$dir/objects" ${FILE_ARGS:-})
S3=$(start_node s3 --object-store s3://bench/eddy --s3-endpoint "http://127.0.0.1:$((wp+3))" --s3-path-style ${S3_ARGS:-})
sleep 2

echo "== 1. appends/s through a node ($SIZE-byte events, 4 writers, $ROUNDS rounds of $DURATION s each, the order rotating)"
declare -A rates
ratios_file=""; ratios_s3=""
order=(off file s3)
for r in $(seq 1 "$ROUNDS"); do
  declare -A this=()
  # Each round starts with the next side, so a machine that speeds up or slows down over the run favours none.
  for i in 0 1 2; do
    t=${order[$(( (i + r - 1) % 3 ))]}
    case $t in off) n=$OFF;; file) n=$FILE;; s3) n=$S3;; esac
    if [ "$t" = s3 ]; then weed_before=$(cpu_ticks "$weed_pid"); objects_before=$(stat_of "$n" objects_written); fi
    rate=$("$B" bench append --server "$n" --duration "$DURATION" --size "$SIZE" --writers 4 --stream "wb/append-$t-$r" 2>/dev/null \
      | awk '/events\/s/ {print $2}')
    rates[$t]="${rates[$t]:-} $rate"
    this[$t]=$rate
    echo "round $r $t: $rate events/s"
    # The next run starts once this one's blocks are flushed, so no run pays for another's write-back.
    if [ "$t" != off ]; then
      for _ in $(seq 1 600); do [ "$(stat_of "$n" flush_lag_bytes)" = 0 ] && break; sleep 0.1; done
    fi
    if [ "$t" = s3 ]; then
      # SeaweedFS's CPU time from the round's start until its objects are all written, per object.
      ticks=$(( $(cpu_ticks "$weed_pid") - weed_before )); objects=$(( $(stat_of "$n" objects_written) - objects_before ))
      python3 -c "print(f'  SeaweedFS: {$ticks * 10} ms of CPU for $objects objects ({$ticks * 10 / max($objects, 1):.1f} ms each)')"
    fi
  done
  ratios_file="$ratios_file $(python3 -c "print(${this[file]}/${this[off]})")"
  ratios_s3="$ratios_s3 $(python3 -c "print(${this[s3]}/${this[off]})")"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(echo "${rates[off]}" | median); file=$(echo "${rates[file]}" | median); s3=$(echo "${rates[s3]}" | median)
python3 -c "print(f'medians: off $off, file $file ({$file/$off:.2f} x), s3 $s3 ({$s3/$off:.2f} x) events/s')"
python3 -c "print(f'median of the rounds\' ratios: file {$(echo "$ratios_file" | median):.2f} x, s3 {$(echo "$ratios_s3" | median):.2f} x')"
[ "${ONLY_APPENDS:-0}" = 1 ] && exit 0

echo "== 2. flush throughput (a stream appended straight to the store, then flushed)"
for t in file s3; do
  case $t in file) n=$FILE;; s3) n=$S3;; esac
  before=$(stat_of "$n" flushed_bytes)
  "$B" bench append --server "$S" --events "$EVENTS" --size "$SIZE" --writers 4 --segments 4 --keep --stream "wb/flush-$t" > /dev/null 2>&1
  total=$("$B" info "wb/flush-$t" --server "$S" | awk -F'length=' '{split($2,a," "); s+=a[1]} END {print s}')
  t0=$(date +%s.%N)
  while [ "$(( $(stat_of "$n" flushed_bytes) - before ))" -lt "$total" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  python3 -c "print(f'$t: {$total/1e6:.1f} MB flushed in {$t1-$t0:.2f} s after the appends: {$total/1e6/($t1-$t0):.1f} MB/s')"
done

echo "== 3. cold reads (store truncated at each manifest's event boundary, read back through the node)"
for t in file s3; do
  case $t in file) n=$FILE;; s3) n=$S3;; esac
  for seg in 0 1 2 3; do
    f=$(printf '%08d' "$seg")
    if [ "$t" = file ]; then
      m=$(cat "$dir/objects/wb/flush-$t/$f.manifest")
    else
      m=$(python3 -c "import boto3; print(boto3.client('s3', endpoint_url='http://127.0.0.1:$((wp+3))', region_name='us-east-1').get_object(Bucket='bench', Key='eddy/wb/flush-$t/$f.manifest')['Body'].read().decode())")
    fi
    off=$(echo "$m" | python3 -c "import json,sys; print(json.load(sys.stdin)['event_boundary'])")
    "$B" truncate "wb/flush-$t" --segment "$seg" --offset "$off" --server "$n" > /dev/null
  done
  total=$("$B" info "wb/flush-$t" --server "$n" | awk -F'length=' '{split($2,a," "); s+=a[1]} END {print s}')
  t0=$(date +%s.%N)
  "$B" read "wb/flush-$t" --server "$n" | head -1 > /dev/null
  t1=$(date +%s.%N)
  "$B" read "wb/flush-$t" --server "$n" > /dev/null
  t2=$(date +%s.%N)
  python3 -c "print(f'$t: first event after {($t1-$t0)*1000:.0f} ms (a whole eddy read process), {$total/1e6:.1f} MB in {$t2-$t1:.2f} s: {$total/1e6/($t2-$t1):.1f} MB/s')"
done

echo "== 4. queue broker, journal on the store"
"$B" bench queue --server "$S" --messages 200000
