#!/usr/bin/env bash
# Soak test (not part of CI): runs examples/churn for SECONDS (default 60) under valgrind
# and fails on any memory error or definitely-lost block.
#
#   scripts/soak.sh 60            # every backend the OS has, an equal share of the time each
#   scripts/soak.sh 60 poll       # one backend
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
backend=${2:-all}
command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }
# Release with debug info, so valgrind names the frames and the churn does real work.
CARGO_PROFILE_RELEASE_DEBUG=true cargo build --release --example churn --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
  --log-file="$log" target/release/examples/churn "$secs" "$backend" || status=$?
grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|All heap blocks" "$log" || true
if [ "$status" -ne 0 ]; then
  cat "$log"
  echo "soak: FAILED (valgrind exit $status)"
  exit "$status"
fi
grep -q "ERROR SUMMARY: 0 errors" "$log" || { cat "$log"; echo "soak: FAILED"; exit 1; }
echo "soak: OK ($secs s, $backend)"
