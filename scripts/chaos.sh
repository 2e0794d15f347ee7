#!/usr/bin/env bash
# The chaos run (issue 26; scripts/chaos.py says what runs and what is checked): a store and three nodes writing
# back to SeaweedFS, 8 exactly-once writers, 50 readers, and every 2-6 s a SIGKILL of a node, the store or
# SeaweedFS (restarted at once); once a minute a node cut off for 10 s. Ends with
#   chaos: K kills (store S, nodes N, object store O), P partitions, E events acknowledged, 0 lost, 0 duplicated, order kept
# and exit 0, or the first problem and exit 1.
# Usage: scripts/chaos.sh [--minutes M] [--cut-every SECONDS] [--keep]   (default 5 minutes; builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product eddy 2>&1 | tail -1
exec python3 scripts/chaos.py --eddy .build/release/eddy "$@"
