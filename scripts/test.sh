#!/usr/bin/env bash
# `make test`: builds the router the integration tests drive, runs every
# test of the workspace (unit, integration; doc tests have none), and ends
# with one summary line over all test binaries.
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

"$CARGO" build -p pgdog-router || exit 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$CARGO" test --workspace --lib --bins --tests --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "all tests: $passed passed, $failed failed"
exit "$status"
