#!/usr/bin/env bash
# The tests of `make test`: the in-process suites, then the tests that drive eddy processes (EddyCLITests) in a
# test process of their own (their waits for those processes would otherwise take Swift's cooperative threads
# from the servers other tests run in-process), then a short run of every fuzzer (scripts/fuzz.sh with
# EDDY_FUZZ_RUNS executions each, 2000 by default; 0 skips it). Every part runs when one fails; the failures are
# repeated at the end, so the last lines of a long log name what failed and where.
set -uo pipefail
cd "$(dirname "$0")/.."
SWIFT="${SWIFT:-swift}"
log="$(mktemp -t eddy-test.XXXXXX)"
trap 'rm -f "$log"' EXIT

status=0
$SWIFT test --skip-build --skip EddyCLITests 2>&1 | tee -a "$log" || status=1
$SWIFT test --skip-build --filter EddyCLITests --skip ManyConnectionsTests 2>&1 | tee -a "$log" || status=1
# 10,000 open sockets make Foundation's Process.run() of Swift 6.3.1 crash now and then (it reads /proc/self/fd
# past a buffer: swift-corelibs-foundation PR 5472): that test runs alone, in a process that starts no others.
$SWIFT test --skip-build --filter ManyConnectionsTests 2>&1 | tee -a "$log" || status=1
if [ "${EDDY_FUZZ_RUNS:-2000}" != 0 ]; then
  scripts/fuzz.sh "${EDDY_FUZZ_RUNS:-2000}" 2>&1 | tee -a "$log" || status=1
fi

if [ "$status" -ne 0 ]; then
    echo
    echo "=== failures (repeated from above) ==="
    grep -E '✘|error:|Fatal error|recorded an issue|XCTAssert|failed \(|FAILED' "$log" | grep -v ' passed after ' | head -60
    echo "=== end of failures ==="
fi
exit "$status"
