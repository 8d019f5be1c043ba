#!/usr/bin/env bash
# The long chaos soak: random faults (kill -9, two at once, rank 0, SIGTERM, SIGSTOP,
# a coordinator restart, ...) against an elastic job on loopback, then the ledger check.
#   scripts/chaos-soak.sh [FAULTS=1000] [extra chaos_driver flags, e.g. --seed 42 --json]
# Exit 0 only if no fault hung and the ledger proves exactly-once.
set -euo pipefail
cd "$(dirname "$0")/.."
FAULTS=${1:-1000}
shift || true
export OPENBLAS_NUM_THREADS=1
exec build/bin/chaos_driver --faults "$FAULTS" "$@"
