#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every CTest
# test (unit tests and the real-driver integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/setup-node.sh
bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 300 -j "${JOBS:-2}" "$@"
