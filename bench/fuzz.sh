#!/usr/bin/env bash
# The long fuzz run: every file reader under whetstone-fuzz for an hour (or $1 seconds) on
# 2 threads, with a seed of its own so it explores other cases than the one in `./dev test`.
# Findings (inputs, what went wrong, the slowest input per target) go to
# ~/.cache/whetstone/fuzz-findings; the exit status is 1 if there are any.
set -euo pipefail
cd "$(dirname "$0")/.."
WHETSTONE_FUZZ_SEED="${WHETSTONE_FUZZ_SEED:-$(date +%s)}" exec ./dev fuzz "${1:-3600}"
