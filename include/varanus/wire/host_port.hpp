// varanus::wire — "host:port" text, the one parser and formatter of it.
//
// Addresses come as text in flags, config files and URLs ("mongo:27017",
// "[::1]:27017"), and go out as text in events and names. An IPv6 host is
// bracketed whenever a port follows it, as in URLs (RFC 3986), so the last
// colon is never ambiguous. Pure string handling: no name resolution.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace varanus::wire {

/// Whether a port must follow the host.
enum class PortRule : std::uint8_t { required, optional };

/// A "host:port" text split into its parts (views into the text).
struct HostPort {
  std::string_view host;              ///< without the brackets of an IPv6 address
  std::optional<std::uint16_t> port;  ///< absent only with PortRule::optional
  /// Empty when parsed; else why not ("no port in \"mongo\"", ...).
  std::string error;
  bool ok() const noexcept { return error.empty(); }
};

/// Splits "host:port" and "[v6]:port" (and "host", "[v6]" when the port is
/// optional). Errors: an empty host, an unclosed '[', an IPv6 address
/// without brackets, text after ']' that is not ":port", a missing port
/// when required, a port that is not a number from 0 to 65535.
HostPort parse_host_port(std::string_view text, PortRule rule = PortRule::required);

/// "host:port", the host bracketed when it is an IPv6 address (has a colon
/// and no brackets yet): the text parse_host_port reads back.
std::string format_host_port(std::string_view host, std::uint16_t port);

}  // namespace varanus::wire
