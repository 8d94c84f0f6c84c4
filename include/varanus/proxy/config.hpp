// varanus::proxy — what a Server needs to know, as a plain struct.
//
// No parsing here: the app fills it from flags and the config file.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "varanus/monitor/tracker.hpp"

namespace varanus::proxy {

/// A host (name or IP literal) and a port. Printed as "host:port"
/// ("[::1]:27017" for an IPv6 literal).
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;

  std::string to_string() const;
  /// Parses "host:port", "[v6]:port". nullopt when malformed or port > 65535.
  static std::optional<Endpoint> parse(std::string_view text);
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

/// hardware_concurrency(), at least 1.
inline unsigned default_io_threads() noexcept {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

struct ProxyConfig {
  Endpoint listen{"127.0.0.1", 27018};        ///< port 0: a free port (Server::start returns it)
  Endpoint upstream{"127.0.0.1", 27017};      ///< mongod / mongos
  unsigned ioThreads = default_io_threads();  ///< one epoll loop per thread
  /// stop(): how long open connections may go on before they are closed.
  std::chrono::milliseconds gracePeriod{10'000};
  /// Frames over this are not inspected (relaying goes on). Copied into
  /// tracker.maxMessageSize by the Server.
  std::int32_t maxMessageSize = wire::kDefaultMaxMessageSize;
  std::chrono::milliseconds connectTimeout{5'000};  ///< upstream connect, resolve included
  /// Bytes per read: each I/O thread has one read area of 4 x bufferSize,
  /// shared by all its connections (an idle connection holds none).
  std::size_t bufferSize = 64 * 1024;
  /// Before sleeping in epoll_wait, an I/O thread whose recent sleeps were
  /// shorter than this polls for up to this long (0: never). Saves a sleep
  /// and a wakeup per batch under load; costs at most this much CPU per
  /// batch, and nothing on a quiet or lightly loaded proxy.
  std::chrono::microseconds busyPoll{50};
  monitor::TrackerOptions tracker;
};

}  // namespace varanus::proxy
