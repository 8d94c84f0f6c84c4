// varanus::wire — rewriting the member addresses in a hello reply.
//
// In front of a replica set every member gets a varanus listener, and the
// drivers must only ever see those: each hello / isMaster reply has the
// addresses it names (hosts, passives, arbiters, primary, me) replaced by
// the advertised listener addresses. This is the one place varanus changes
// bytes. Pure: bytes in, bytes out (tests/wire/hello_rewrite_test.cpp).
//
// Use (the relay, on a reply to a hello / isMaster request):
//   auto r = rewrite_hello(frame, map);
//   if (!r) ...forward the frame unchanged (it did not decode)...
//   if (!r->unknown.empty()) ...open listeners for them, add them to the
//                               map, call again...
//   forward r->frame ? *r->frame : frame;
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "varanus/wire/builder.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::wire {

/// Member address → advertised address, both "host:port". Keys with
/// lowercase host names: a reply's addresses are lowercased before the
/// lookup (host names are case-insensitive; the SDAM spec compares them
/// lowercased).
using AddressMap = std::map<std::string, std::string, std::less<>>;

struct HelloRewrite {
  /// The rewritten frame; nullopt when nothing was replaced (forward the
  /// original frame: nothing was copied).
  std::optional<Frame> frame;
  /// The addresses the reply names that the map lacks (lowercased, in order
  /// of first appearance, each once). They are left as they were.
  std::vector<std::string> unknown;
  /// How many address strings were replaced.
  std::size_t replaced = 0;
};

/// True when `doc` is a hello / isMaster reply (it has a top-level
/// isWritablePrimary or ismaster).
bool is_hello_reply(BsonView doc) noexcept;

/// Rewrites one complete reply frame: OP_MSG (its kind-0 body; the CRC-32C
/// recomputed when checksumPresent), OP_REPLY (each document), and either
/// inside OP_COMPRESSED (recompressed with the same compressor). The
/// message length follows the new size. Other opcodes, replies that are not
/// hello replies and hello replies naming no mapped address come back with
/// frame == nullopt. A frame that does not decode is an Error.
Result<HelloRewrite> rewrite_hello(std::span<const std::uint8_t> frame, const AddressMap& map,
                                   std::int32_t maxMessageSize = kDefaultMaxMessageSize);

}  // namespace varanus::wire
