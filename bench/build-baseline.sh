#!/usr/bin/env bash
# Builds shoal-worker of an earlier commit (default: the last one before elastic
# workers) into /tmp/shoal-baseline, for elastic_bench's side-by-side steady-state run.
#   bench/build-baseline.sh [REV]
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-773ad0e}
SRC=/tmp/shoal-baseline-src
rm -rf "$SRC"
git worktree prune
git worktree add --detach "$SRC" "$REV" >/dev/null
ln -sfn "$(pwd)/../shared" "$SRC/../shared" 2>/dev/null || true
cmake -S "$SRC" -B /tmp/shoal-baseline -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHOAL_WITH_CUDA=OFF >/dev/null
cmake --build /tmp/shoal-baseline -j "$(nproc)" --target shoal-worker
git worktree remove --force "$SRC"
echo "baseline worker: /tmp/shoal-baseline/bin/shoal-worker ($REV)"
