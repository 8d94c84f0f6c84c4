// varanus app — the JSON config file. See config/varanus.example.json for
// every option; each key has one type, checked here with its JSON pointer
// in the message.
#include "config.hpp"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

namespace varanus::app {

namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ConfigError("config: " + (path.empty() ? std::string("/") : path) + ": " + what);
}

std::string child(const std::string& path, const std::string& key) {
  // JSON pointer escaping (RFC 6901) so the path names the key exactly.
  std::string escaped;
  for (char c : key) {
    if (c == '~') {
      escaped += "~0";
    } else if (c == '/') {
      escaped += "~1";
    } else {
      escaped += c;
    }
  }
  return path + "/" + escaped;
}

/// "_comment", "_comment_port", ...: documentation inside the file.
bool is_comment(const std::string& key) {
  return key.rfind("_comment", 0) == 0;
}

const json::object_t& expect_object(const json& v, const std::string& path) {
  if (!v.is_object()) fail(path, "expected object");
  return v.get_ref<const json::object_t&>();
}

std::int64_t expect_integer(const json& v, const std::string& path, std::int64_t min,
                            std::int64_t max) {
  if (!v.is_number_integer()) fail(path, "expected integer");
  std::int64_t n = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(path, "out of range");
    }
    n = static_cast<std::int64_t>(u);
  } else {
    n = v.get<std::int64_t>();
  }
  if (n < min || n > max) {
    fail(path, "expected integer from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return n;
}

double expect_seconds(const json& v, const std::string& path) {
  if (!v.is_number()) fail(path, "expected number (seconds)");
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < 0 || d > 86400.0 * 365) fail(path, "expected seconds >= 0");
  return d;
}

std::string expect_string(const json& v, const std::string& path) {
  if (!v.is_string()) fail(path, "expected string");
  return v.get<std::string>();
}

bool expect_bool(const json& v, const std::string& path) {
  if (!v.is_boolean()) fail(path, "expected boolean");
  return v.get<bool>();
}

void apply_endpoint(const json& v, const std::string& path, proxy::Endpoint& ep) {
  for (const auto& [key, value] : expect_object(v, path)) {
    const std::string p = child(path, key);
    if (is_comment(key)) continue;
    if (key == "host") {
      ep.host = expect_string(value, p);
      if (ep.host.empty()) fail(p, "expected a host name or address");
    } else if (key == "port") {
      ep.port = static_cast<std::uint16_t>(expect_integer(value, p, 0, 65535));
    } else {
      fail(p, "unknown key");
    }
  }
}

std::chrono::milliseconds to_millis(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(seconds * 1000.0)));
}

}  // namespace

void set_upstream(AppConfig& cfg, proxy::ConnectionString cs) {
  cfg.proxy.upstream = cs.seeds.front();
  cfg.upstream = std::move(cs);
}

std::string unsupported_upstream(const proxy::ConnectionString& cs) {
  // The TLS options are parsed for the TLS support to apply; until then a
  // string asking for TLS must not connect in plain text.
  if (cs.tls.value_or(false) || cs.tlsCAFile || cs.tlsCertificateKeyFile || cs.tlsInsecure) {
    return "upstream " + cs.to_string() +
           ": TLS to the upstream is not supported yet: varanus would connect in plain text";
  }
  if (cs.single_server()) return {};
  const std::string what = cs.replicaSet ? "a replica set (replicaSet=" + *cs.replicaSet + ")"
                                         : "several hosts (mongos)";
  return "upstream " + cs.to_string() + ": " + what +
         " is not supported yet: varanus relays every connection to one server, and drivers "
         "would follow the members' own addresses around it. Give one server as HOST:PORT and "
         "connect the drivers with directConnection=true";
}

void apply_config_json(const json& doc, AppConfig& cfg) {
  auto& p = cfg.proxy;
  for (const auto& [key, value] : expect_object(doc, "")) {
    const std::string path = child("", key);
    if (is_comment(key)) {
      continue;
    } else if (key == "listen") {
      apply_endpoint(value, path, p.listen);
    } else if (key == "upstream") {
      if (value.is_string()) {  // "HOST:PORT" or "mongodb://..."
        try {
          set_upstream(cfg, proxy::ConnectionString::parse(value.get<std::string>()));
        } catch (const proxy::ConnectionStringError& e) {
          fail(path, e.what());
        }
      } else {
        apply_endpoint(value, path, p.upstream);
        set_upstream(cfg, proxy::ConnectionString::single(p.upstream));
      }
    } else if (key == "ioThreads") {
      p.ioThreads = static_cast<unsigned>(expect_integer(value, path, 1, 1024));
    } else if (key == "gracePeriodSeconds") {
      p.gracePeriod = to_millis(expect_seconds(value, path));
    } else if (key == "connectTimeoutSeconds") {
      p.connectTimeout = to_millis(expect_seconds(value, path));
      if (p.connectTimeout.count() == 0) fail(path, "expected seconds > 0");
    } else if (key == "maxMessageSize") {
      p.maxMessageSize = static_cast<std::int32_t>(
          expect_integer(value, path, 17, std::numeric_limits<std::int32_t>::max()));
    } else if (key == "busyPollMicros") {
      p.busyPoll = std::chrono::microseconds(expect_integer(value, path, 0, 1000));
    } else if (key == "bufferSize") {
      p.bufferSize = static_cast<std::size_t>(expect_integer(value, path, 1024, 16 << 20));
    } else if (key == "maxDocumentLength") {
      cfg.maxDocumentLength = static_cast<std::size_t>(
          expect_integer(value, path, 0, std::numeric_limits<std::int32_t>::max()));
    } else if (key == "captureDocuments") {
      p.tracker.captureDocuments = expect_bool(value, path);
    } else if (key == "sinks") {
      cfg.sinks = value;  // parsed by plan_sinks() (sink_config.cpp)
    } else {
      fail(path, "unknown key");
    }
  }
}

std::vector<std::string> load_config_file(const std::string& path, AppConfig& cfg) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("config: cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw ConfigError("config: " + path + ": invalid JSON: " + e.what());
  }
  apply_config_json(doc, cfg);
  std::vector<std::string> keys;
  for (const auto& [key, value] : doc.items())
    if (!is_comment(key)) keys.push_back(key);
  return keys;
}

}  // namespace varanus::app
