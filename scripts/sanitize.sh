#!/usr/bin/env bash
# Builds with ASan+UBSan (g++; clang is kept for libFuzzer) and runs the unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
BUILD_DIR=build-asan SANITIZE=ON WERROR=ON BUILD_TYPE=Debug \
  CMAKE_EXTRA="-DVARANUS_INTEGRATION_TESTS=OFF" \
  bash scripts/build.sh
ctest --test-dir build-asan --output-on-failure --timeout 300 -j 2 -L unit
