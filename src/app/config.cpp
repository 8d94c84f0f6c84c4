// varanus app — the JSON config file. See config/varanus.example.json for
// every option; each key has one type, checked here with its JSON pointer
// in the message.
#include "config.hpp"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "json_config.hpp"

namespace varanus::app {

namespace {

using nlohmann::json;
using Json = JsonFields<ConfigError>;

double expect_seconds(const json& v, const std::string& path) {
  if (!v.is_number()) Json::fail(path, "expected number (seconds)");
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < 0 || d > 86400.0 * 365) Json::fail(path, "expected seconds >= 0");
  return d;
}

void apply_endpoint(const json& v, const std::string& path, proxy::Endpoint& ep) {
  for (const auto& [key, value] : Json::object(v, path)) {
    const std::string p = json_child(path, key);
    if (is_comment_key(key)) continue;
    if (key == "host") {
      ep.host = Json::string(value, p);
      if (ep.host.empty()) Json::fail(p, "expected a host name or address");
    } else if (key == "port") {
      ep.port = static_cast<std::uint16_t>(Json::integer(value, p, 0, 65535));
    } else {
      Json::fail(p, "unknown key");
    }
  }
}

std::chrono::milliseconds to_millis(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(seconds * 1000.0)));
}

}  // namespace

void set_upstream(AppConfig& cfg, proxy::ConnectionString cs) {
  cfg.proxy.upstream = cs.seeds.front();
  // A replica set or several mongos: a listener per member (the relay) and
  // a topology monitor of varanus's own (the app).
  auto& m = cfg.proxy.members;
  m.enabled = !cs.single_server();
  m.seeds = m.enabled ? cs.seeds : std::vector<proxy::Endpoint>{};
  m.rewriteHello = cs.replicaSet.has_value();
  // The connection string's TLS options, as a driver reads them; the
  // upstreamTls* keys and flags given after it override them.
  auto& t = cfg.proxy.tls.upstream;
  if (cs.tls) t.enabled = *cs.tls;
  if (cs.tlsCAFile) t.caFile = *cs.tlsCAFile;
  if (cs.tlsCertificateKeyFile) t.certFile = t.keyFile = *cs.tlsCertificateKeyFile;
  if (cs.tlsInsecure) t.insecure = *cs.tlsInsecure;
  if (cs.tlsCAFile || cs.tlsCertificateKeyFile || cs.tlsInsecure.value_or(false))
    t.enabled = t.enabled || !cs.tls.has_value();  // tlsCAFile etc. imply tls=true
  cfg.upstream = std::move(cs);
}

std::string unsupported_upstream(const proxy::ConnectionString&) {
  return {};  // every connection string that parses can be run in front of
}

void apply_config_json(const json& doc, AppConfig& cfg) {
  auto& p = cfg.proxy;
  for (const auto& [key, value] : Json::object(doc, "")) {
    const std::string path = json_child("", key);
    if (is_comment_key(key)) {
      continue;
    } else if (key == "listen") {
      apply_endpoint(value, path, p.listen);
    } else if (key == "upstream") {
      if (value.is_string()) {  // "HOST:PORT" or "mongodb://..."
        try {
          set_upstream(cfg, proxy::ConnectionString::parse(value.get<std::string>()));
        } catch (const proxy::ConnectionStringError& e) {
          Json::fail(path, e.what());
        }
      } else {
        apply_endpoint(value, path, p.upstream);
        set_upstream(cfg, proxy::ConnectionString::single(p.upstream));
      }
    } else if (key == "advertiseHost") {
      p.members.advertiseHost = Json::string(value, path);
      if (p.members.advertiseHost.empty() ||
          p.members.advertiseHost.find_first_of(" /:[]") != std::string::npos)
        Json::fail(path, "expected a host name or IPv4 address drivers can reach varanus at");
    } else if (key == "members") {
      p.members.listen.clear();
      for (const auto& [member, at] : Json::object(value, path)) {
        const std::string mpath = json_child(path, member);
        auto ep = proxy::Endpoint::parse(member);
        if (!ep) Json::fail(mpath, "a member address is HOST:PORT, got \"" + member + "\"");
        std::string memberKey = ep->to_string();
        for (char& c : memberKey)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        proxy::Endpoint listenAt;
        if (at.is_string()) {
          auto parsed = proxy::Endpoint::parse(at.get<std::string>());
          if (!parsed) Json::fail(mpath, "expected \"HOST:PORT\" to listen at for this member");
          listenAt = *parsed;
        } else {
          apply_endpoint(at, mpath, listenAt);
        }
        p.members.listen[memberKey] = listenAt;
      }
    } else if (key == "ioThreads") {
      p.ioThreads = static_cast<unsigned>(Json::integer(value, path, 1, 1024));
    } else if (key == "gracePeriodSeconds") {
      p.gracePeriod = to_millis(expect_seconds(value, path));
    } else if (key == "connectTimeoutSeconds") {
      p.connectTimeout = to_millis(expect_seconds(value, path));
      if (p.connectTimeout.count() == 0) Json::fail(path, "expected seconds > 0");
    } else if (key == "maxConnections") {
      p.maxConnections = static_cast<std::size_t>(Json::integer(value, path, 0, 10'000'000));
    } else if (key == "halfCloseTimeoutSeconds") {
      p.halfCloseTimeout = to_millis(expect_seconds(value, path));
    } else if (key == "idleTimeoutSeconds") {
      p.idleTimeout = to_millis(expect_seconds(value, path));
    } else if (key == "maxMessageSize") {
      cfg.tracker.maxMessageSize = static_cast<std::int32_t>(
          Json::integer(value, path, 17, std::numeric_limits<std::int32_t>::max()));
    } else if (key == "busyPollMicros") {
      p.busyPoll = std::chrono::microseconds(Json::integer(value, path, 0, 1000));
    } else if (key == "bufferSize") {
      p.bufferSize = static_cast<std::size_t>(Json::integer(value, path, 1024, 16 << 20));
    } else if (key == "maxDocumentLength") {
      cfg.maxDocumentLength = static_cast<std::size_t>(
          Json::integer(value, path, 0, std::numeric_limits<std::int32_t>::max()));
    } else if (key == "captureDocuments") {
      cfg.tracker.captureDocuments = Json::boolean(value, path);
    } else if (key == "tlsCertFile" || key == "tlsKeyFile" || key == "tlsCAFile" ||
               key == "upstreamTlsCAFile" || key == "upstreamTlsCertFile" ||
               key == "upstreamTlsKeyFile") {
      auto& t = p.tls;
      std::string file = Json::string(value, path);
      if (file.empty()) Json::fail(path, "expected a file name");
      (key == "tlsCertFile"           ? t.server.certFile
       : key == "tlsKeyFile"          ? t.server.keyFile
       : key == "tlsCAFile"           ? t.server.caFile
       : key == "upstreamTlsCAFile"   ? t.upstream.caFile
       : key == "upstreamTlsCertFile" ? t.upstream.certFile
                                      : t.upstream.keyFile) = std::move(file);
    } else if (key == "tlsMinVersion") {
      const std::string v = Json::string(value, path);
      if (v != "1.2" && v != "1.3") Json::fail(path, "expected \"1.2\" or \"1.3\"");
      p.tls.server.minVersion = v == "1.3" ? proxy::TlsVersion::v1_3 : proxy::TlsVersion::v1_2;
    } else if (key == "upstreamTls") {
      p.tls.upstream.enabled = Json::boolean(value, path);
    } else if (key == "upstreamTlsInsecure") {
      p.tls.upstream.insecure = Json::boolean(value, path);
    } else if (key == "sinks") {
      cfg.sinks = value;  // parsed by plan_sinks() (sink_config.cpp)
    } else {
      Json::fail(path, "unknown key");
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
    if (!is_comment_key(key)) keys.push_back(key);
  return keys;
}

}  // namespace varanus::app
