// varanus app — the sinks' side of configuration: the config file's
// "sinks" section, the sink flags of the command line, and the runtime that
// owns the Dispatcher, the sinks and the admin endpoint.
//
// Two steps, so that --check-config can validate without side effects:
//   plan_sinks()   pure: JSON + flags -> SinkPlan, or SinkConfigError naming
//                  the JSON pointer of the bad key
//   SinkRuntime    opens files, connects, loads plugins, binds the admin
//                  endpoint; errors name the sink
//
// The "sinks" section (every key optional):
//
//   "sinks": {
//     "queueSize": 65536,                    events the dispatcher queue holds (256 bytes each
//                                            plus the last document each slot carried)
//     "dropWarningIntervalSeconds": 10,      at most one "dropped N events" line per interval
//     "admin": {                             admin HTTP endpoint: /metrics /healthz /stats
//                                            /stats/commands
//       "listen": "127.0.0.1:9108",          loopback by default; port 0 = a free port
//       "maxDatabases": 100,                 `database` label values, busiest first (0: none)
//       "maxCommandStats": 256,              /stats/commands: distinct (database, collection,
//                                            command) kept; the rest count as "other"
//       "maxConnections": 64                 admin connections at once; more get a 503
//     },
//     "outputs": [                           default: one stdout sink
//       { "type": "stdout" | "stderr" | "file" | "tcp" | "udp" | "plugin",
//         "format": "varanus" | "mongodb-log",     default varanus (or --log-format)
//         "maxDocumentLength": 1000,               default --max-document-length / config's
//         "redaction": "none" | "values",
//         "lines": "events" | "commands",          default events (or --log-lines); commands:
//                                                  one "command" line per finished command
//         "documents": "object" | "string",        command/reply as objects or JSON strings
//         "extendedJson": "relaxed" | "canonical", canonical: numbers typed ($numberLong...)
//         "filter": {
//           "includeEvents": [], "excludeEvents": ["connectionOpened"],  (event names,
//             topology events included: "serverHeartbeatSucceeded", ...)
//           "includeCommands": ["find"], "excludeCommands": ["getMore"],
//           "includeDatabases": ["shop"], "excludeDatabases": ["admin"],
//           "minDurationMicros": 0, "failedOnly": false, "sampleRate": 1.0,
//           "keepHellos": true, "connectionEvents": true },
//         file:   "path": "/var/log/varanus/events.log", "rotateBytes": 0, "keepFiles": 5
//         tcp:    "address": "127.0.0.1:9000", "maxBufferBytes": 1048576
//         udp:    "address": "127.0.0.1:9001"
//         plugin: "path": "/usr/lib/libmysink.so", "config": { ...passed to the plugin... }
//         otlp:   "endpoint": "http://127.0.0.1:4318", "headers": {"x-api-key": "..."},
//                 "serviceName": "varanus", "gzip": false, "includeHellos": false,
//                 "queryText": false, "maxQueueSpans": 2048, "maxBatchSpans": 512,
//                 "batchDelaySeconds": 1, "timeoutSeconds": 10, "minBackoffSeconds": 0.5,
//                 "maxBackoffSeconds": 30, "maxRetries": 5, "closeTimeoutSeconds": 2
//       } ]
//   }
//
// "sinks": [ ...outputs... ] is accepted as a shorthand for {"outputs": [...]}.
//
// Command-line shortcuts (see sink_flags_usage()): --log-file PATH,
// --log-format FORMAT, --log-lines LINES, --admin HOST:PORT, --plugin PATH
// (repeatable), --otlp-endpoint URL.
// --max-document-length is the proxy CLI's and arrives as a parameter.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/monitor/stats.hpp"
#include "varanus/sinks/command_stats.hpp"
#include "varanus/sinks/dispatcher.hpp"
#include "varanus/sinks/line_sinks.hpp"
#include "varanus/sinks/metrics.hpp"
#include "varanus/sinks/net_sinks.hpp"
#include "varanus/sinks/otlp.hpp"

namespace varanus::app {

/// A problem in the sinks section or a sink flag, worded for the user:
/// "config: /sinks/outputs/1/format: expected \"varanus\" or \"mongodb-log\"".
class SinkConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The sink shortcuts of the command line.
struct SinkFlags {
  std::optional<std::string> logFile;    ///< --log-file PATH: a file sink instead of stdout
  std::optional<std::string> logFormat;  ///< --log-format: format of the default/flag sinks
  std::optional<std::string> logLines;   ///< --log-lines: events or commands (default/flag sinks)
  std::optional<std::string> admin;      ///< --admin HOST:PORT
  std::vector<std::string> plugins;      ///< --plugin PATH (each a sink, config "{}")
  std::optional<std::string> otlpEndpoint;  ///< --otlp-endpoint URL: an OTLP trace sink
  /// Where each flag came from when not the command line (flag -> variable).
  std::map<std::string, std::string, std::less<>> from;
  /// "--log-file", or the variable that set it ("VARANUS_LOG_FILE").
  std::string where(std::string_view flag) const {
    const auto it = from.find(flag);
    return it == from.end() ? std::string(flag) : it->second;
  }
};

/// True for --log-file, --log-format, --log-lines, --admin, --plugin, --otlp-endpoint
/// (each takes a value).
bool is_sink_flag(std::string_view flag) noexcept;
/// Records one flag. Throws SinkConfigError ("--log-format: expected ...").
void apply_sink_flag(SinkFlags& flags, std::string_view flag, const std::string& value);
/// The options' lines for --help.
std::string sink_flags_usage();

/// One sink to create.
struct SinkSpec {
  enum class Type { stdoutSink, stderrSink, file, tcp, udp, plugin, otlp };
  Type type = Type::stdoutSink;
  std::string where;  ///< its JSON pointer ("/sinks/outputs/0") or the flag
  sinks::RenderOptions render;
  sinks::SinkFilter filter;
  sinks::FileSinkOptions file;
  sinks::NetSinkOptions net;
  sinks::OtlpOptions otlp;
  std::string pluginPath;
  std::string pluginConfig = "{}";
  bool filterSet = false;  ///< "filter" given (plugins keep their own otherwise)
  bool renderSet = false;  ///< format/maxDocumentLength/redaction given
};

/// Everything the sinks need, validated, nothing opened yet.
struct SinkPlan {
  std::size_t queueSize = 65536;
  std::chrono::milliseconds dropWarningInterval{10'000};
  std::vector<SinkSpec> sinks;
  std::optional<sinks::AdminOptions> admin;
  sinks::MetricsOptions metrics;
  sinks::CommandStatsOptions commandStats;
  /// The program's version: service.version of spans, varanus_build_info.
  std::string version;
  /// Human-readable lines for --check-config.
  std::vector<std::string> describe() const;
};

/// Validates `section` (the config's "sinks" value; null when absent) and
/// the flags. Outputs: the config's, plus --log-file and --plugin ones; when
/// there are none, one stdout sink. Throws SinkConfigError.
SinkPlan plan_sinks(const nlohmann::json& section, const SinkFlags& flags,
                    std::size_t maxDocumentLength);

/// The running sinks: Dispatcher (the proxy's EventOutput), every sink,
/// the Prometheus metrics and the admin endpoint when configured.
class SinkRuntime {
 public:
  /// Creates every sink (opens files, loads plugins, starts TCP connects).
  /// Throws std::runtime_error naming the sink (e.g. "sink /sinks/outputs/1
  /// (file:/x.log): open /x.log: Permission denied", or a PluginError).
  /// `health`: for /healthz (e.g. sinks::tcp_health_check(upstream)).
  SinkRuntime(const SinkPlan& plan, monitor::Stats& stats, sinks::HealthCheck health = {},
              std::function<void(std::string_view)> diagnostics = {});
  ~SinkRuntime();
  SinkRuntime(const SinkRuntime&) = delete;
  SinkRuntime& operator=(const SinkRuntime&) = delete;

  /// What the proxy publishes into.
  sinks::Dispatcher& dispatcher() noexcept { return *dispatcher_; }
  /// The Prometheus metrics sink when the admin endpoint is on, else null.
  const std::shared_ptr<sinks::MetricsSink>& metrics() const noexcept { return metrics_; }

  /// Starts the sink thread and binds the admin endpoint. Returns the
  /// admin's bound "host:port" ("" when off). Throws std::system_error when
  /// the admin address cannot be bound.
  std::string start();
  /// SIGHUP: files reopen on the sink thread. Async-signal-safe.
  void reopen() noexcept { dispatcher_->reopen(); }
  /// Drains and flushes every event, closes the sinks, stops the admin
  /// endpoint. Call after the proxy has stopped. Idempotent. The sinks'
  /// final flush ends by `flushDeadline` (default: 10 s from now); what
  /// is not written by then is dropped, counted and said on stderr.
  void stop(std::optional<std::chrono::steady_clock::time_point> flushDeadline = std::nullopt);
  /// A second stop signal: writes what is queued and rendered where it can
  /// without waiting past `deadline`, before the process exits.
  void emergency_flush(std::chrono::steady_clock::time_point deadline) {
    dispatcher_->emergency_flush(deadline);
  }

 private:
  monitor::Stats& stats_;
  std::unique_ptr<sinks::Dispatcher> dispatcher_;
  std::shared_ptr<sinks::MetricsSink> metrics_;
  std::shared_ptr<sinks::CommandStatsSink> commandStats_;
  std::unique_ptr<sinks::AdminServer> admin_;
  std::optional<sinks::AdminOptions> adminOptions_;
};

}  // namespace varanus::app
