#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for
# $FUZZ_SECONDS (default 60):
#   wire     the wire codec, from fuzz/corpus (the recorded testdata frames
#            and builder-made seeds)
#   capture  the capture reader of `varanus replay` (libpcap from memory,
#            link layer, TCP reassembly, Replayer), from fuzz/corpus-capture
# FUZZ_TARGETS picks them (default "wire capture"). Fails on any crash;
# prints the executions per second and the total.
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
FUZZ_TARGETS=${FUZZ_TARGETS:-wire capture}
for target in $FUZZ_TARGETS; do
# Only the fuzz target and what it links: the proxy, sinks, stub are not needed.
cmake --build "$BUILD_DIR" --target "varanus-fuzz-$target" --parallel "${JOBS:-$(nproc)}"
corpus=fuzz/corpus
[ "$target" = wire ] || corpus="fuzz/corpus-$target"

# Work on a copy: new inputs the fuzzer finds do not litter the repository.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$corpus"/* "$work/"
log="$work/fuzz.log"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
set +e
"$BUILD_DIR/fuzz/varanus-fuzz-$target" "$work" -max_total_time="$FUZZ_SECONDS" -max_len=8192 \
  -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$BUILD_DIR/" 2>"$log"
rc=$?
set -e
tail -n 25 "$log"
execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
secs=$(grep -E '^stat::total_execs|^stat::average_exec_per_sec' "$log" | awk '{print $2}')
echo "== fuzz $target: ${execs:-?} executions in ${FUZZ_SECONDS} s, ${secs:-?} exec/s (exit $rc)"
if [ "$rc" -ne 0 ]; then
  echo "== fuzz $target FAILED: crashing input saved under $BUILD_DIR/ (crash-*); keep it as a regression case in tests/$target" >&2
  exit 1
fi
rm -rf "$work"
trap - EXIT
done
