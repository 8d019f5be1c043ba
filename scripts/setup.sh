#!/usr/bin/env bash
# Installs the Debian 12 packages Shoal needs (idempotent) and builds into build/.
# Usage: scripts/setup.sh [--no-build] [--build-type Release|Debug]
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
BUILD_TYPE=${BUILD_TYPE:-Release}
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --build-type) BUILD_TYPE=$2; shift ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libopenmpi-dev openmpi-bin
  libgloo-dev
  libzmq3-dev cppzmq-dev
  librocksdb-dev
  libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libsodium-dev libssl-dev zlib1g-dev
  libopenblas-dev
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  dataset-fashion-mnist
  prometheus chromium   # the observability tests: promtool, a scraping server, a headless browser
  python3-jsonschema    # lineage_e2e_test validates OpenLineage events against their JSON schema
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$BUILD" = 1 ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE"
  cmake --build build -j "$(nproc)"
  scripts/prepare-data.sh
fi
