#!/usr/bin/env bash
# Fuzzes every decoder of hostile input with libFuzzer and AddressSanitizer (Sources/EddyFuzzing; the targets are
# the folders of Fuzz/corpus). Builds the EddyFuzz executable with `-sanitize=fuzzer,address` in the normal build
# folder (see below), then runs each target for a fixed number of
# executions, starting from the committed corpus (read only: new inputs go to a temporary folder). A crash, a trap,
# a leak (but those of packages listed in Fuzz/lsan.supp), a timeout or an out-of-memory stops that target: its input is kept under Fuzz/crashes/ and the script
# fails. Prints the executions run per target.
# Usage: scripts/fuzz.sh [executions per target] [target...]   (default 20000, every target)
#        MERGE=1 scripts/fuzz.sh N T   adds the new inputs that reach new code to Fuzz/corpus/T.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20000}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(ls Fuzz/corpus); fi

# EDDY_FUZZ_BUILD=1 makes Package.swift instrument Eddy's own targets (-sanitize=fuzzer,address, EDDY_FUZZ); the
# packages they depend on are reused from the debug build in .build, so only Eddy's targets are compiled again
# (and again, uninstrumented, by the next plain `swift build`).
EDDY_FUZZ_BUILD=1 swift build --product EddyFuzz 2>&1 | grep -v "Cannot export local symbol" | tail -3
bin=.build/debug/EddyFuzz
[ -x "$bin" ] || { echo "fuzz.sh: the fuzz build failed"; exit 1; }
nm "$bin" 2>/dev/null | grep LLVMFuzzerTestOneInput >/dev/null || { echo "fuzz.sh: $bin is not a libFuzzer build"; exit 1; }

work=$(mktemp -d /tmp/eddy-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0
total=0
for t in "${targets[@]}"; do
  [ -d "Fuzz/corpus/$t" ] || { echo "fuzz.sh: no target $t (Fuzz/corpus/$t)"; status=1; continue; }
  mkdir -p "$work/$t"
  LSAN_OPTIONS="suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0" EDDY_FUZZ_TARGET="$t" "$bin" -runs="$runs" -max_len=65536 -timeout=20 -rss_limit_mb=3072 \
    -artifact_prefix="$work/$t-" -print_final_stats=1 "$work/$t" "Fuzz/corpus/$t" > "$work/$t.log" 2>&1
  rc=$?
  executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    mkdir -p Fuzz/crashes
    for artifact in "$work/$t"-*; do [ -e "$artifact" ] && cp "$artifact" Fuzz/crashes/; done
    echo "$t: FAILED after ${executed:-?} executions (exit $rc); input kept in Fuzz/crashes/:"
    grep -E "ERROR|SUMMARY|Fatal error|==[0-9]+==|#[0-9]+ 0x" "$work/$t.log" | head -25
    status=1
    continue
  fi
  total=$((total + ${executed:-0}))
  echo "$t: ${executed:-?} executions, no crash"
  if [ "${MERGE:-0}" = 1 ]; then
    EDDY_FUZZ_TARGET="$t" "$bin" -merge=1 "Fuzz/corpus/$t" "$work/$t" > /dev/null 2>&1 &&
      echo "  corpus: $(ls "Fuzz/corpus/$t" | wc -l) inputs"
  fi
done
echo "fuzz.sh: ${#targets[@]} targets, $total executions in all, $([ $status -eq 0 ] && echo "no crash" || echo "FAILURES above")"
exit $status
