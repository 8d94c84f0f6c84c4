#!/usr/bin/env bash
# Configures and builds varanus into ./build (or $BUILD_DIR).
#   WERROR=ON      warnings are errors (CI)
#   SANITIZE=ON    ASan + UBSan
#   BUILD_TYPE=... CMake build type (default RelWithDebInfo)
#   TARGETS="a b" build only these targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
    -DVARANUS_WERROR="${WERROR:-OFF}" \
    -DVARANUS_SANITIZE="${SANITIZE:-OFF}" \
    ${CMAKE_EXTRA:-}
fi
# Two cores on the project's machines; more jobs only thrash memory.
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" --parallel "${JOBS:-$(nproc)}" "${targets[@]}"
