// varanus-bench — the realistic variant: the same kind of load sent by a
// real driver, libmongoc (Debian's 1.23), where the driver's own cost per
// command is part of the figure. Built when libmongoc-dev is installed.
#pragma once

#include <cstdint>
#include <string>

#include "bench_client.hpp"

namespace varanus::bench {

/// False when varanus-bench was built without libmongoc.
bool mongoc_available() noexcept;
/// libmongoc's version, "" without it.
const char* mongoc_version() noexcept;

struct MongocResult {
  double p50us = -1;      ///< ping: median latency
  double opsPerSec = -1;  ///< commands per second
  std::uint64_t ops = 0;
  std::uint64_t errors = 0;
  std::string firstError;
};

/// One mongoc_client_t, sequential {ping: 1} for `duration` (at most maxCount).
MongocResult mongoc_ping(std::uint16_t port, Seconds duration, std::size_t maxCount);

/// A mongoc_client_pool_t and `threads` threads, each alternating
/// find_one({_id: k}) on bench.small and insert_one on bench.mongoc_mix.
MongocResult mongoc_mix(std::uint16_t port, int threads, Seconds duration);

}  // namespace varanus::bench
