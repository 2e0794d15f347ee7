#!/usr/bin/env bash
# `make test`: what the build and tests need (scripts/install-deps.sh), the format check, the debug build, then
# the in-process suites and, beside them in a test process of their own, the tests that drive eddy processes
# (EddyCLITests but the WAN tests, which come after; in one process, their waits for those processes would take Swift's cooperative threads from the
# servers other tests run in-process), then a short run of every fuzzer (scripts/fuzz.sh with EDDY_FUZZ_RUNS
# executions each, 1000 by default; 0 skips it). Every part runs when one fails; the failures are repeated at the
# end, so the last lines of a long log name what failed and where.
#
# Every process the tests start inherits EDDY_TEST_RUN (a fresh ID per run): at the end the script lists any
# process that still has it, SIGKILLs it, and fails. It ends with the time of each phase.
set -uo pipefail
cd "$(dirname "$0")/.."
SWIFT="${SWIFT:-swift}"
log="$(mktemp -t eddy-test.XXXXXX)"
trap 'rm -f "$log"' EXIT
export EDDY_TEST_RUN="eddy-test-$$-$(date +%s%N)"

status=0
phases=()
# phase NAME COMMAND...: runs the command with its output in the log, and records how long it took.
phase() {
  local name=$1 started=$SECONDS rc
  shift
  "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  phases+=("$(printf '%-34s %5d s%s' "$name" $((SECONDS - started)) "$([ "$rc" -eq 0 ] || echo '  FAILED')")")
  [ "$rc" -eq 0 ] || status=1
}

# Processes other than this script that carry this run's EDDY_TEST_RUN and are not zombies.
leftovers() {
  local p pid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = $$ ] && continue
    grep -qsxF -z "EDDY_TEST_RUN=$EDDY_TEST_RUN" "$p/environ" 2>/dev/null || continue
    [ "$(awk '{print $3}' "$p/stat" 2>/dev/null)" = Z ] && continue
    echo "$pid"
  done
}

phase "dependencies (scripts/install-deps.sh)" scripts/install-deps.sh
phase "format check (swift format lint)" $SWIFT format lint --strict --recursive Sources Tests Benchmarks/Benchmarks
phase "build (debug, with tests)" $SWIFT build --build-tests
# The in-process suites and the process tests share nothing (every server on a port of its own), and the process
# tests spend most of their time waiting for processes, so the two test processes run side by side; each one's
# output is printed whole once both are done. They run the test bundle that `swift test` would run (every test is
# a Swift Testing test), directly: two `swift test` at once wait for each other on SwiftPM's build database.
tests=.build/debug/EddyPackageTests.xctest
both() {
  local dir rc1 rc2
  dir=$(mktemp -d -t eddy-test-logs.XXXXXX)
  "$tests" --testing-library swift-testing --skip EddyCLITests > "$dir/in-process.log" 2>&1 &
  local p1=$!
  "$tests" --testing-library swift-testing --filter EddyCLITests --skip 'ManyConnectionsTests|WANTests' \
    > "$dir/processes.log" 2>&1 &
  local p2=$!
  wait $p1; rc1=$?
  wait $p2; rc2=$?
  echo "=== in-process tests (exit $rc1) ==="; cat "$dir/in-process.log"
  echo "=== process tests, EddyCLITests (exit $rc2) ==="; cat "$dir/processes.log"
  rm -rf "$dir"
  [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
}
phase "in-process and process tests, side by side" both
# 10,000 open sockets once made Foundation's Process.run() of Swift 6.3.1 crash (it read /proc/self/fd past a
# buffer: swift-corelibs-foundation PR 5472); the harness spawns with posix_spawn now, but 10,000 sockets are still
# best held by a test process of their own.
phase "10,000 connections" "$tests" --testing-library swift-testing --filter ManyConnectionsTests
# The WAN tests (docs/regions.md) run two clusters, a mirror or a regional ring and 50 readers in network
# namespaces: a load that would slow the timing-sensitive process tests beside them, so they run on their own.
phase "WAN in network namespaces" "$tests" --testing-library swift-testing --filter WANTests
if [ "${EDDY_FUZZ_RUNS:-1000}" != 0 ]; then
  phase "fuzzers (build and ${EDDY_FUZZ_RUNS:-1000} runs each)" scripts/fuzz.sh "${EDDY_FUZZ_RUNS:-1000}"
fi

left=$(leftovers)
if [ -n "$left" ]; then
  echo
  echo "=== processes the tests started and left running ==="
  for pid in $left; do
    echo "$pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
    kill -9 "$pid" 2>/dev/null
  done
  echo "=== (killed) ==="
  status=1
else
  echo "no process the tests started is left running"
fi

if [ "$status" -ne 0 ]; then
    echo
    echo "=== failures (repeated from above) ==="
    grep -E '✘|error:|Fatal error|recorded an issue|XCTAssert|failed \(|FAILED' "$log" | grep -v ' passed after ' | head -60
    echo "=== end of failures ==="
fi
echo
echo "=== time per phase ==="
printf '%s\n' "${phases[@]}"
printf '%-34s %5d s\n' "total (this script)" "$SECONDS"
exit "$status"
