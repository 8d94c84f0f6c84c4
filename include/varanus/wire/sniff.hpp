// varanus::wire — what protocol a connection speaks, from its first bytes.
//
// Pure: bytes in, a verdict out. The relay uses it to diagnose a TLS client
// at a plaintext listener (and plaintext MongoDB or HTTP at a TLS listener)
// at once, instead of a silent hang.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "varanus/wire/message.hpp"

namespace varanus::wire {

enum class Protocol {
  unknown_yet,  ///< too few bytes to tell: call again with more
  tls,          ///< a TLS record carrying a ClientHello (0x16 0x03 0x00-0x04 ...)
  http,         ///< an HTTP/1.x request line ("GET ", "POST ", ...) or the HTTP/2 preface
  mongodb,      ///< a plausible MongoDB message header (sane messageLength, known opCode)
  other,        ///< none of those
};

/// "unknown_yet", "tls", "http", "mongodb", "other".
std::string_view to_string(Protocol p) noexcept;

/// Classifies a connection's first bytes (all of them so far, from the
/// start). MongoDB needs its 16-byte header; TLS is told from MongoDB by
/// the same 16 bytes (a ClientHello is always longer), or earlier when its
/// first bytes cannot start a MongoDB message; HTTP by its method and a
/// space. Returns unknown_yet while more bytes could still change the answer.
Protocol sniff_protocol(std::span<const std::uint8_t> head,
                        std::int32_t maxMessageSize = kDefaultMaxMessageSize) noexcept;

}  // namespace varanus::wire
