// varanus-stub — command-line options.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "varanus/wire/message.hpp"

namespace varanus::stub {

/// Fault injection, from the command line or {stubFault: 1, ...} on admin.
struct FaultSettings {
  std::int64_t closeAfter = 0;  ///< close a connection when its N-th message arrives (0 = never)
  std::int64_t delayMs = 0;     ///< delay every reply by this much
  bool reset = false;           ///< close with RST (SO_LINGER 0) instead of FIN
};

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 27017;
  int threads = 2;
  int maxWireVersion = 17;
  std::vector<wire::Compressor> compressors = {wire::Compressor::snappy, wire::Compressor::zlib,
                                               wire::Compressor::zstd};
  std::string replSet;  ///< empty: standalone
  int members = 1;
  bool mongos = false;  ///< answer hellos as a mongos (msg "isdbgrid"); not with replSet
  FaultSettings faults;
  bool verbose = false;
  std::string tlsCert;  ///< PEM certificate (chain): serve TLS only (empty: plaintext)
  std::string tlsKey;   ///< its PEM key (empty: in tlsCert)
  std::string tlsCa;    ///< PEM CAs: require client certificates signed by them
};

/// Parsed options, or a message for stderr (exit 2); "help" for --help.
struct ParseResult {
  std::optional<Options> options;
  std::string message;
  bool help = false;
};
ParseResult parse_options(int argc, char** argv);

std::string usage();

}  // namespace varanus::stub
