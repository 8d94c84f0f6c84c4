// varanus app — configuration: the JSON config file (--config) and the
// values the command line may override. Parsing lives here, not in the
// proxy layer (which takes a plain ProxyConfig).
//
// Top-level keys are dispatched in config.cpp (apply_config_json). The
// "sinks" section is kept raw in AppConfig::sinks and parsed by
// plan_sinks() (sink_config.cpp), with the same path-naming errors.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "varanus/monitor/tracker.hpp"
#include "varanus/proxy/config.hpp"
#include "varanus/proxy/connection_string.hpp"

namespace varanus::app {

struct AppConfig {
  proxy::ProxyConfig proxy;
  /// How each connection is inspected (maxMessageSize, captureDocuments;
  /// the rest is set from what the sinks show): given to the inspector
  /// factory, not to the proxy.
  monitor::TrackerOptions tracker;
  /// --upstream / "upstream" as given: HOST:PORT or a connection string.
  /// proxy.upstream is its first seed (set_upstream keeps them together).
  proxy::ConnectionString upstream = proxy::ConnectionString::single(proxy.upstream);
  /// Bound on each document in an event line (JSON characters); 0 = unlimited.
  std::size_t maxDocumentLength = 1000;
  /// The config file's "sinks" section, unparsed (null when absent).
  nlohmann::json sinks;
};

/// A config problem, worded for the user: "config: /upstream/port: expected integer".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Sets cfg.upstream and the relay's target, cfg.proxy.upstream (its first seed).
void set_upstream(AppConfig& cfg, proxy::ConnectionString cs);

/// Empty when varanus can run in front of `cs`; else why not, worded for
/// the user. Until member listeners exist (issue 21) that is one server,
/// and until TLS is applied, no tls option.
std::string unsupported_upstream(const proxy::ConnectionString& cs);

/// Applies a parsed config document onto `cfg` (keys absent keep their
/// values). Unknown keys and wrong types throw ConfigError naming the JSON
/// pointer of the key. Keys starting with "_comment" are documentation: ignored.
void apply_config_json(const nlohmann::json& doc, AppConfig& cfg);

/// Reads and applies a config file; returns the top-level keys it set
/// (comments left out), for --check-config's "where it came from". Throws
/// ConfigError (unreadable file, invalid JSON, or as apply_config_json).
std::vector<std::string> load_config_file(const std::string& path, AppConfig& cfg);

}  // namespace varanus::app
