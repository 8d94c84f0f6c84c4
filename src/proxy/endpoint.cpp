// varanus::proxy — Endpoint text form ("host:port", "[v6]:port").
#include "varanus/proxy/config.hpp"
#include "varanus/wire/host_port.hpp"

namespace varanus::proxy {

std::string Endpoint::to_string() const {
  return wire::format_host_port(host, port);
}

std::optional<Endpoint> Endpoint::parse(std::string_view text) {
  const wire::HostPort hp = wire::parse_host_port(text);
  if (!hp.ok()) return std::nullopt;
  return Endpoint{std::string(hp.host), *hp.port};
}

}  // namespace varanus::proxy
