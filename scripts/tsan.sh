#!/usr/bin/env bash
# Builds with ThreadSanitizer and runs the unit tests (they include the
# proxy's socket tests and the dispatcher's ring, futex hand-off and
# rescuer). Any data race fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:history_size=4:suppressions=$PWD/scripts/tsan.supp}
BUILD_DIR=build-tsan WERROR=ON BUILD_TYPE=RelWithDebInfo \
  CMAKE_EXTRA="-DVARANUS_TSAN=ON -DVARANUS_INTEGRATION_TESTS=OFF" \
  bash scripts/build.sh
# GCC 12's TSan cannot map its shadow memory under the high mmap
# randomisation of recent kernels ("unexpected memory mapping"): run the
# tests without address randomisation.
run=()
if command -v setarch >/dev/null; then run=(setarch "$(uname -m)" -R); fi
# Left out: the tests that bound a latency (publish never waits, busy
# polling's sleeps): TSan slows every memory access several times, so their
# bounds say nothing there; they run in the other builds.
"${run[@]}" ctest --test-dir build-tsan --output-on-failure --timeout 600 -j 2 -L unit \
  -E "costs drops, never time|busy polling"
