#include "varanus/wire/host_port.hpp"

#include <charconv>

namespace varanus::wire {

namespace {

HostPort failed(std::string why, std::string_view text) {
  HostPort r;
  r.error = std::move(why) + " in \"" + std::string(text) + "\"";
  return r;
}

}  // namespace

HostPort parse_host_port(std::string_view text, PortRule rule) {
  HostPort out;
  std::string_view port;
  bool hasPort = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return failed("unclosed '['", text);
    out.host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return failed("expected ':port' after ']'", text);
      port = rest.substr(1);
      hasPort = true;
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon != std::string_view::npos) {
      out.host = text.substr(0, colon);
      port = text.substr(colon + 1);
      hasPort = true;
      if (out.host.find(':') != std::string_view::npos)
        return failed("an IPv6 address needs brackets ([::1]:27017)", text);
    } else {
      out.host = text;
    }
  }
  if (out.host.empty()) return failed("no host", text);
  if (!hasPort) {
    if (rule == PortRule::required) return failed("no port", text);
    return out;
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return failed("port \"" + std::string(port) + "\" is not a number from 0 to 65535", text);
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

std::string format_host_port(std::string_view host, std::uint16_t port) {
  std::string out;
  const bool bracket = host.find(':') != std::string_view::npos && !host.starts_with('[');
  if (bracket) out += '[';
  out += host;
  if (bracket) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

}  // namespace varanus::wire
