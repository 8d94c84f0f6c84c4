// varanus::proxy — the upstream as a MongoDB connection string.
//
// `--upstream` takes either HOST:PORT (one server, relayed as is) or a
// connection string, mongodb://h1:p1[,h2:p2...]/[?options]. Pure: no I/O,
// no name resolution; tests/proxy/connection_string_test.cpp.
//
// Options read (names case-insensitive, as the URI spec has them):
//   replicaSet, connectTimeoutMS, heartbeatFrequencyMS, directConnection,
//   tls / ssl, tlsCAFile, tlsCertificateKeyFile, tlsInsecure.
// Anything else is an error naming it: mongodb+srv:// (varanus resolves no
// SRV records), loadBalanced, credentials (varanus does not authenticate:
// they belong in the drivers' connection string, and would end up in
// --check-config output and logs), and every other option (read
// preferences, write concerns, pool sizes... are the drivers' business).
#pragma once

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/proxy/config.hpp"

namespace varanus::proxy {

/// A connection string varanus cannot use, worded for the user:
/// "mongodb+srv:// is not supported: ...", "option 'w' is not supported ...".
class ConnectionStringError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct ConnectionString {
  /// The seed list, in the order given; host names lowercased (hosts are
  /// case-insensitive, and the hello replies compare as lowercase).
  std::vector<Endpoint> seeds;
  /// True when given as mongodb://...; false for HOST:PORT.
  bool uri = false;
  std::optional<std::string> replicaSet;
  std::optional<std::chrono::milliseconds> connectTimeout;
  /// heartbeatFrequencyMS; the SDAM spec's minimum is 500 ms.
  std::optional<std::chrono::milliseconds> heartbeatFrequency;
  std::optional<bool> directConnection;
  // TLS towards the upstream (applied by the TLS support; parsed here).
  std::optional<bool> tls;  ///< tls or its alias ssl (both given: must agree)
  std::optional<std::string> tlsCAFile;
  std::optional<std::string> tlsCertificateKeyFile;
  std::optional<bool> tlsInsecure;

  /// One server, relayed as today: HOST:PORT, or a string with one host
  /// and no replicaSet (or directConnection=true).
  bool single_server() const noexcept;

  /// HOST:PORT as given, or the normalised mongodb:// form (lowercased
  /// host names, options in a fixed order with their canonical names).
  std::string to_string() const;

  /// Parses HOST:PORT ("[v6]:port") or mongodb://... ; throws
  /// ConnectionStringError naming the problem.
  static ConnectionString parse(std::string_view text);

  /// HOST:PORT only, as before connection strings (config key
  /// {"host", "port"}).
  static ConnectionString single(const Endpoint& ep);
};

}  // namespace varanus::proxy
