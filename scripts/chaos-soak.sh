#!/usr/bin/env bash
# The long chaos soak on a simulated cluster of network namespaces (root): random faults
# (kill -9 of one, two, rank 0, a joiner, rank 0 mid-checkpoint, during a regroup;
# SIGTERM, SIGSTOP, the coordinator, partitions, links down, a slow link) against jobs of
# the example spec run to completion one after another (every fourth through
# `shoalctl run`), each checked: ledger exactly-once and no split brain, every checkpoint
# verified, accuracy within 0.5 points of a fault-free run. See tests/chaos/chaos_driver.cc.
#   scripts/chaos-soak.sh [FAULTS=1000] [extra chaos_driver flags, e.g. --seed 42 --json]
# Exit 0 only if no fault hung and every job passed its checks; 77 without namespaces
# (add --net loopback to run without them).
set -euo pipefail
cd "$(dirname "$0")/.."
FAULTS=${1:-1000}
shift || true
export OPENBLAS_NUM_THREADS=1
exec build/bin/chaos_driver --faults "$FAULTS" --epochs 5 "$@"
