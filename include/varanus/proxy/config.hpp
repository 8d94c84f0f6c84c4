// varanus::proxy — what a Server needs to know, as a plain struct.
//
// No parsing here: the app fills it from flags and the config file.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "varanus/proxy/tls_config.hpp"

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

/// In front of a replica set or several mongos: one listener per member
/// (docs/proxy.md, "In front of a replica set"). `listen` serves the first
/// seed; the others get the next ports (or free ports when the listen port
/// is 0), unless `listen` below fixes them.
struct MemberConfig {
  bool enabled = false;
  std::vector<Endpoint> seeds;  ///< the connection string's hosts, in order
  /// A replica set: hello replies are rewritten to name the listeners.
  /// Several mongos: nothing to rewrite.
  bool rewriteHello = true;
  /// The host drivers are told to reach varanus at (hello replies, the
  /// member lines). Empty: the listen host, or this machine's host name
  /// when listening on a wildcard address (0.0.0.0, ::).
  std::string advertiseHost;
  /// Member "host:port" (lowercase host) -> where its listener binds.
  std::map<std::string, Endpoint, std::less<>> listen;
};

struct ProxyConfig {
  Endpoint listen{"127.0.0.1", 27018};        ///< port 0: a free port (Server::start returns it)
  Endpoint upstream{"127.0.0.1", 27017};      ///< mongod / mongos
  unsigned ioThreads = default_io_threads();  ///< one epoll loop per thread
  /// stop(): how long open connections may go on before they are closed.
  std::chrono::milliseconds gracePeriod{10'000};
  std::chrono::milliseconds connectTimeout{5'000};  ///< upstream connect, resolve included
  /// Client connections open at once, at most; one more is closed at accept
  /// (counted, said on stderr, rate-limited). 0: no limit of the Server's
  /// own (the app sets it from the open-files limit).
  std::size_t maxConnections = 0;
  /// A client closed while its upstream side is still open (a request in
  /// flight, an upstream that hangs): the upstream gets this long to finish,
  /// then the connection ends and its pending requests fail.
  std::chrono::milliseconds halfCloseTimeout{2'000};
  /// A connection with no byte either way for this long ends (0: never).
  std::chrono::milliseconds idleTimeout{0};
  /// One read's size. Each I/O thread has one buffer of 4 reads shared by
  /// all of its connections (bytes wait there until the end of the epoll
  /// batch); a connection holds memory only for what a socket did not take.
  std::size_t bufferSize = 64 * 1024;
  /// Before sleeping in epoll_wait, an I/O thread whose recent sleeps were
  /// shorter than this polls for up to this long (0: never). Saves a sleep
  /// and a wakeup per batch under load; costs at most this much CPU per
  /// batch, and nothing on a quiet or lightly loaded proxy.
  std::chrono::microseconds busyPoll{50};
  TlsConfig tls;         ///< TLS on the client leg and/or the upstream leg (tls_config.hpp)
  MemberConfig members;  ///< replica set / several mongos (disabled: one upstream)
};

}  // namespace varanus::proxy
