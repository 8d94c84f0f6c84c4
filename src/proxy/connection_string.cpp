// varanus::proxy — parsing the upstream connection string (see the header
// for what is accepted and why the rest is refused).
#include "varanus/proxy/connection_string.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "varanus/wire/host_port.hpp"

namespace varanus::proxy {

namespace {

constexpr std::string_view kScheme = "mongodb://";
constexpr std::string_view kSrvScheme = "mongodb+srv://";

[[noreturn]] void fail(const std::string& what) {
  throw ConnectionStringError(what);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// RFC 3986 percent-decoding; `what` names the part for the error.
std::string percent_decode(std::string_view s, std::string_view what) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    const int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) fail("invalid percent-encoding in " + std::string(what));
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

Endpoint parse_host(std::string_view text) {
  if (text.empty()) fail("empty host in the host list");
  if (text.find('/') != std::string_view::npos || text.find("%2F") != std::string_view::npos ||
      text.find("%2f") != std::string_view::npos) {
    fail("host '" + std::string(text) + "': Unix domain sockets are not supported");
  }
  std::string hostPort(text);
  // No port: the default 27017 ("db", "[::1]").
  const bool bracketed = text.front() == '[';
  const auto close = text.find(']');
  const bool hasPort = bracketed ? (close != std::string_view::npos && close + 1 < text.size())
                                 : text.find(':') != std::string_view::npos;
  if (!hasPort) hostPort += ":27017";
  auto ep = Endpoint::parse(hostPort);
  if (!ep) fail("host '" + std::string(text) + "': expected HOST[:PORT] with a port up to 65535");
  if (ep->port == 0) fail("host '" + std::string(text) + "': port 0");
  ep->host = lower(ep->host);
  return *ep;
}

bool parse_bool(const std::string& name, const std::string& value) {
  if (value == "true") return true;
  if (value == "false") return false;
  fail("option " + name + ": expected true or false, got '" + value + "'");
}

std::chrono::milliseconds parse_millis(const std::string& name, const std::string& value,
                                       std::int64_t min) {
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n < min ||
      n > 86'400'000) {
    fail("option " + name + ": expected milliseconds from " + std::to_string(min) +
         " to 86400000, got '" + value + "'");
  }
  return std::chrono::milliseconds(n);
}

}  // namespace

bool ConnectionString::single_server() const noexcept {
  if (directConnection.value_or(false)) return true;
  return seeds.size() == 1 && !replicaSet;
}

ConnectionString ConnectionString::single(const Endpoint& ep) {
  ConnectionString cs;
  cs.seeds.push_back(ep);
  return cs;
}

std::string ConnectionString::to_string() const {
  if (!uri) return seeds.empty() ? std::string() : seeds.front().to_string();
  std::string out(kScheme);
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    if (i) out += ',';
    out += seeds[i].to_string();
  }
  out += '/';
  std::vector<std::string> opts;
  auto ms = [](std::chrono::milliseconds d) { return std::to_string(d.count()); };
  auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  if (replicaSet) opts.push_back("replicaSet=" + *replicaSet);
  if (directConnection) opts.push_back("directConnection=" + b(*directConnection));
  if (connectTimeout) opts.push_back("connectTimeoutMS=" + ms(*connectTimeout));
  if (heartbeatFrequency) opts.push_back("heartbeatFrequencyMS=" + ms(*heartbeatFrequency));
  if (tls) opts.push_back("tls=" + b(*tls));
  if (tlsCAFile) opts.push_back("tlsCAFile=" + *tlsCAFile);
  if (tlsCertificateKeyFile) opts.push_back("tlsCertificateKeyFile=" + *tlsCertificateKeyFile);
  if (tlsInsecure) opts.push_back("tlsInsecure=" + b(*tlsInsecure));
  for (std::size_t i = 0; i < opts.size(); ++i) out += (i ? "&" : "?") + opts[i];
  return out;
}

ConnectionString ConnectionString::parse(std::string_view text) {
  if (text.rfind(kSrvScheme, 0) == 0) {
    fail(
        "mongodb+srv:// is not supported: varanus resolves no SRV records; list the hosts as "
        "mongodb://h1:p1,h2:p2/");
  }
  if (text.rfind(kScheme, 0) != 0) {
    if (text.find("://") != std::string_view::npos) {
      fail("expected HOST:PORT or mongodb://..., got scheme '" +
           std::string(text.substr(0, text.find("://"))) + "://'");
    }
    const wire::HostPort hp = wire::parse_host_port(text);
    if (!hp.ok())
      fail("expected HOST:PORT or mongodb://HOST:PORT,..., got '" + std::string(text) +
           "': " + hp.error);
    return single(Endpoint{std::string(hp.host), *hp.port});
  }
  ConnectionString cs;
  cs.uri = true;
  std::string_view rest = text.substr(kScheme.size());
  // The host list ends at the first '/' (or '?' when there is no '/').
  const auto slash = rest.find('/');
  const auto question = rest.find('?');
  if (question != std::string_view::npos && (slash == std::string_view::npos || question < slash)) {
    fail("expected '/' before the options ('?')");
  }
  std::string_view hosts = rest.substr(0, slash);
  std::string_view tail =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  if (hosts.find('@') != std::string_view::npos) {
    // The credentials are deliberately not echoed.
    fail(
        "credentials (user:password@) are not supported: varanus does not authenticate; give "
        "them to the drivers, not to varanus");
  }
  if (hosts.empty()) fail("no host in the connection string");
  for (std::size_t start = 0;;) {
    const auto comma = hosts.find(',', start);
    cs.seeds.push_back(parse_host(hosts.substr(start, comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  for (std::size_t i = 0; i < cs.seeds.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (cs.seeds[i] == cs.seeds[j]) fail("host " + cs.seeds[i].to_string() + " given twice");

  // "/database?options": the database is the drivers' default; ignored.
  const auto q = tail.find('?');
  std::string_view options = q == std::string_view::npos ? std::string_view() : tail.substr(q + 1);
  std::vector<std::string> seen;
  std::optional<bool> ssl;
  while (!options.empty()) {
    auto amp = options.find_first_of("&;");
    std::string_view pair = options.substr(0, amp);
    options = amp == std::string_view::npos ? std::string_view() : options.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos) fail("option '" + std::string(pair) + "' has no value");
    const std::string name = percent_decode(pair.substr(0, eq), "an option name");
    const std::string key = lower(name);
    const std::string value = percent_decode(pair.substr(eq + 1), "option " + name);
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      fail("option " + name + " given twice");
    }
    seen.push_back(key);
    if (key == "replicaset") {
      if (value.empty()) fail("option replicaSet: expected a replica set name");
      cs.replicaSet = value;
    } else if (key == "connecttimeoutms") {
      cs.connectTimeout = parse_millis(name, value, 1);
    } else if (key == "heartbeatfrequencyms") {
      cs.heartbeatFrequency = parse_millis(name, value, 500);
    } else if (key == "directconnection") {
      cs.directConnection = parse_bool(name, value);
    } else if (key == "tls") {
      cs.tls = parse_bool(name, value);
    } else if (key == "ssl") {
      ssl = parse_bool(name, value);
    } else if (key == "tlscafile") {
      if (value.empty()) fail("option tlsCAFile: expected a file name");
      cs.tlsCAFile = value;
    } else if (key == "tlscertificatekeyfile") {
      if (value.empty()) fail("option tlsCertificateKeyFile: expected a file name");
      cs.tlsCertificateKeyFile = value;
    } else if (key == "tlsinsecure") {
      cs.tlsInsecure = parse_bool(name, value);
    } else if (key == "loadbalanced") {
      fail(
          "option loadBalanced is not supported: varanus relays to mongod or mongos, not "
          "through a load balancer");
    } else {
      fail("option " + name +
           " is not supported by varanus (it reads replicaSet, "
           "connectTimeoutMS, heartbeatFrequencyMS, directConnection, tls, ssl, tlsCAFile, "
           "tlsCertificateKeyFile, tlsInsecure; the others are the drivers' business)");
    }
  }
  if (ssl) {
    if (cs.tls && *cs.tls != *ssl) fail("options tls and ssl disagree");
    cs.tls = ssl;
  }
  if (cs.tls == false && (cs.tlsCAFile || cs.tlsCertificateKeyFile || cs.tlsInsecure)) {
    fail("tls=false with tlsCAFile, tlsCertificateKeyFile or tlsInsecure");
  }
  if (cs.directConnection == true && cs.seeds.size() > 1) {
    fail("directConnection=true with several hosts");
  }
  return cs;
}

}  // namespace varanus::proxy
