#!/usr/bin/env bash
# Installs every Debian package varanus needs to build, test and benchmark.
# Used by the README quick start, .ci/run and the Dockerfile, so the three
# can never disagree about dependencies. Safe to run again (apt-get is
# idempotent).
#   (no argument)  everything: build, tests, benchmarks
#   --build        what compiling varanus needs (the Dockerfile's build stage)
#   --runtime      only the shared libraries the binary needs (the Dockerfile's final stage)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

runtime_pkgs=(
  libbson-1.0-0 libsnappy1v5 zlib1g libzstd1 libssl3 ca-certificates
  # libpcap: `varanus replay` / `varanus sniff` read captures and interfaces.
  libpcap0.8
)
build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  # Boost 1.81: Debian's default libboost-dev is 1.74, whose Asio lacks
  # as_tuple and the awaitable &&/|| operators the proxy is written with.
  libboost1.81-dev
  libbson-dev nlohmann-json3-dev doctest-dev
  libsnappy-dev zlib1g-dev libzstd-dev libssl-dev
  libpcap-dev
)
dev_pkgs=(
  # clang + its runtime: the libFuzzer target and sanitizer builds.
  clang libclang-rt-14-dev clang-format
)
test_pkgs=(
  # Real drivers used as clients in the integration tests.
  python3 python3-pymongo python3-snappy python3-zstandard
  libmongoc-dev
  nodejs npm
  # A real Prometheus scrapes /metrics in the tests (and promtool checks it).
  prometheus
  # Plain TCP relay: the benchmark's baseline.
  haproxy
  procps
  # The container image: built and run with podman (scripts/container-test.sh).
  podman runc debootstrap
  # The systemd unit is checked with systemd-analyze verify.
  systemd
  # A real terminal for `varanus top` (tests/sinks/test_slow_queries.py).
  tmux
  # Records loopback traffic for the capture tests (varanus replay/sniff).
  tcpdump
)

pkgs=("${runtime_pkgs[@]}")
case "${1:-}" in
  --runtime) ;;
  --build) pkgs+=("${build_pkgs[@]}") ;;
  "") pkgs+=("${build_pkgs[@]}" "${dev_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [--build|--runtime]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian on some images; don't fight them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present" >&2
fi
