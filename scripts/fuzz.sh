#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for
# $FUZZ_SECONDS (default 60) each:
#   wire     the wire codec, from fuzz/corpus (the recorded frames of
#            tests/data and builder-made seeds)
#   tracker  the Tracker over two interleaved streams, from fuzz/corpus-tracker
#   capture  the capture reader of `varanus replay` (libpcap from memory,
#            link layer, TCP reassembly, Replayer), from fuzz/corpus-capture
# FUZZ_TARGETS picks them (default "wire tracker capture"). Fails on any
# crash; prints the executions per second and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DVARANUS_FUZZ=ON -DVARANUS_BUILD_TESTS=OFF -DVARANUS_INTEGRATION_TESTS=OFF \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
fi
# Only the fuzz targets and what they link: the proxy, sinks, stub are not needed.
FUZZ_TARGETS=${FUZZ_TARGETS:-wire tracker capture}
targets=()
for t in $FUZZ_TARGETS; do targets+=(--target "varanus-fuzz-$t"); done
cmake --build "$BUILD_DIR" "${targets[@]}" --parallel "${JOBS:-$(nproc)}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# fuzz TARGET CORPUS: runs one target on a copy of its corpus (new inputs
# the fuzzer finds do not litter the repository).
fuzz() {
  local target=$1 corpus=$2
  local work
  work=$(mktemp -d)
  cp "$corpus"/* "$work/"
  local log="$work/fuzz.log"
  set +e
  "$BUILD_DIR/fuzz/$target" "$work" -max_total_time="$FUZZ_SECONDS" -max_len=8192 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$BUILD_DIR/$target-" 2>"$log"
  local rc=$?
  set -e
  tail -n 25 "$log"
  local execs secs
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  secs=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
  rm -rf "$work"
  echo "== fuzz $target: ${execs:-?} executions in ${FUZZ_SECONDS} s, ${secs:-?} exec/s (exit $rc)"
  if [ "$rc" -ne 0 ]; then
    echo "== fuzz $target FAILED: crashing input saved under $BUILD_DIR/ ($target-crash-*); keep it as a regression case in tests/" >&2
    return 1
  fi
}

for t in $FUZZ_TARGETS; do
  corpus=fuzz/corpus
  [ "$t" = wire ] || corpus="fuzz/corpus-$t"
  fuzz "varanus-fuzz-$t" "$corpus"
done
