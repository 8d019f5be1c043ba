#!/usr/bin/env bash
# Sets up (Debian packages + build, idempotent) and runs every test with CTest.
# Extra arguments go to ctest, e.g. scripts/test.sh -R e2e
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export OPENBLAS_NUM_THREADS=1        # workers and tests share the cores; no BLAS oversubscription
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
