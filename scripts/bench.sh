#!/usr/bin/env bash
# Builds varanus (Release) into ./build-release (or $BUILD_DIR) and runs the
# benchmark: varanus vs haproxy (mode tcp) vs direct, workloads (a)-(f) of
# issue 6, a table on stdout and JSON in $BUILD_DIR/bench.json.
#
#   scripts/bench.sh            full run (< 10 minutes on 2 cores)
#   scripts/bench.sh --quick    about a minute
#   scripts/bench.sh --smoke    a few seconds: does everything start?
#   scripts/bench.sh --tls      TLS on both legs (issue 20's targets): haproxy
#                               and varanus with TLS to a TLS stub, workloads
#                               (a), (b) 16/64, (f); JSON in $BUILD_DIR/bench-tls.json
#                               (with --quick: about a minute)
# Any other arguments go to varanus-bench (see varanus-bench --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-build-release}
export BUILD_TYPE=${BUILD_TYPE:-Release}
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || {
  echo "bench.sh: haproxy is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
}
bash scripts/build.sh >&2
# Figures on a busy machine are noise: say how busy it is.
echo "bench.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
json="$BUILD_DIR/bench.json"
for a in "$@"; do [ "$a" = --tls ] && json="$BUILD_DIR/bench-tls.json"; done
exec "$BUILD_DIR/bench/varanus-bench" --json "$json" "$@"
