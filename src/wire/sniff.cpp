// varanus::wire — protocol sniffing from a connection's first bytes.
#include "varanus/wire/sniff.hpp"

#include <algorithm>

namespace varanus::wire {

namespace {

constexpr std::string_view kHttpMethods[] = {"GET ",    "POST ",       "PUT ",   "HEAD ",
                                             "DELETE ", "OPTIONS ",    "PATCH ", "CONNECT ",
                                             "TRACE ",  "PRI * HTTP/2"};

enum class Maybe { no, prefix, yes };

Maybe http(std::span<const std::uint8_t> head) {
  bool prefix = false;
  for (std::string_view m : kHttpMethods) {
    const std::size_t n = std::min(head.size(), m.size());
    if (!std::equal(head.begin(), head.begin() + static_cast<std::ptrdiff_t>(n), m.begin(),
                    [](std::uint8_t a, char b) { return a == static_cast<std::uint8_t>(b); }))
      continue;
    if (n == m.size()) return Maybe::yes;
    prefix = true;
  }
  return prefix ? Maybe::prefix : Maybe::no;
}

/// A TLS record header (content type handshake, version 3.0-3.4, a sane
/// record length) whose first handshake message is a ClientHello.
bool tls_possible(std::span<const std::uint8_t> h) {
  const std::size_t n = h.size();
  if (n > 0 && h[0] != 0x16) return false;
  if (n > 1 && h[1] != 0x03) return false;
  if (n > 2 && h[2] > 0x04) return false;
  if (n > 4) {
    const unsigned len = (unsigned{h[3]} << 8) | h[4];
    if (len < 4 || len > 16384 + 2048) return false;
  }
  if (n > 5 && h[5] != 0x01) return false;  // handshake type client_hello
  return true;
}

std::int32_t le32(std::span<const std::uint8_t> h, std::size_t at) {
  return static_cast<std::int32_t>(std::uint32_t{h[at]} | std::uint32_t{h[at + 1]} << 8 |
                                   std::uint32_t{h[at + 2]} << 16 | std::uint32_t{h[at + 3]} << 24);
}

bool mongodb_possible(std::span<const std::uint8_t> h, std::int32_t maxMessageSize) {
  if (h.size() >= 4) {
    const std::int32_t len = le32(h, 0);
    if (len < 16 || len > maxMessageSize) return false;
  }
  if (h.size() >= 16 && opcode_name(le32(h, 12)) == "OP_UNKNOWN") return false;
  return true;
}

}  // namespace

std::string_view to_string(Protocol p) noexcept {
  switch (p) {
    case Protocol::unknown_yet:
      return "unknown_yet";
    case Protocol::tls:
      return "tls";
    case Protocol::http:
      return "http";
    case Protocol::mongodb:
      return "mongodb";
    case Protocol::other:
      break;
  }
  return "other";
}

Protocol sniff_protocol(std::span<const std::uint8_t> head, std::int32_t maxMessageSize) noexcept {
  if (head.empty()) return Protocol::unknown_yet;
  const Maybe h = http(head);
  if (h == Maybe::yes) return Protocol::http;
  const bool tls = tls_possible(head);
  const bool mongo = mongodb_possible(head, maxMessageSize);
  if (head.size() >= 16) {
    if (mongo) return Protocol::mongodb;
    if (tls) return Protocol::tls;
    return Protocol::other;
  }
  if (!tls && !mongo && h == Maybe::no) return Protocol::other;
  // A whole record header plus the handshake type, and no MongoDB header
  // can start like this: TLS without waiting for 16 bytes.
  if (tls && head.size() >= 6 && !mongo) return Protocol::tls;
  return Protocol::unknown_yet;
}

}  // namespace varanus::wire
