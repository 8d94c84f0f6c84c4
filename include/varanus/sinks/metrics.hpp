// varanus::sinks — Prometheus metrics and the admin HTTP endpoint.
//
// MetricsSink is an ordinary sink (it receives events on the sink thread)
// that keeps command counters and latency histograms; AdminServer serves
// them with the process-wide Stats table on /metrics, plus /healthz and
// /stats, from a thread of its own (Boost.Beast). Loopback by default.
//
// Label cardinality is bounded by construction: command names outside a
// fixed list of known MongoDB commands become "other", databases past the
// first `maxDatabases` distinct names become "other", and there are no
// collection or client-address labels.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "varanus/monitor/stats.hpp"
#include "varanus/sinks/sink.hpp"

namespace varanus::sinks {

class Dispatcher;
class CommandStatsSink;

/// The command-name label: `name` itself when it is a known MongoDB command
/// (case-insensitive; returned in its canonical spelling), else "other".
std::string_view command_label(std::string_view name) noexcept;

struct MetricsOptions {
  /// Histogram bucket upper bounds, seconds.
  std::vector<double> buckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
  /// Distinct `database` label values kept; later databases count as "other".
  /// 0 = no database label at all.
  std::size_t maxDatabases = 100;
};

/// Command metrics, fed by events:
///   varanus_commands_total{command,database,outcome}   terminal events (succeeded/failed)
///   varanus_command_duration_seconds{command}          histogram of durationMicros
///   varanus_hellos_total{kind,outcome}                 handshake/heartbeat hellos
/// Hellos are counted apart and kept out of the latency histogram (awaited
/// heartbeats wait ~10 s by design). Named "prometheus".
class MetricsSink : public Sink {
 public:
  explicit MetricsSink(MetricsOptions options = {});
  /// Appends the Prometheus text exposition of these metrics. Thread-safe.
  void render(std::string& out) const;
  /// Count of varanus_commands_total for these labels (tests). Thread-safe.
  std::uint64_t commands(std::string_view command, std::string_view database,
                         std::string_view outcome) const;
  /// Counts and times; never renders a document.
  DocumentNeed document_need() const noexcept override { return DocumentNeed::none; }

 protected:
  void write_(const RenderedEvent& event) override;

 private:
  struct Histogram {
    std::vector<std::uint64_t> counts;  // per bucket (not cumulative), + overflow
    std::int64_t sumMicros = 0;         // exact; seconds only when rendered
    std::uint64_t count = 0;
  };
  std::string_view database_label(const std::string& db);

  MetricsOptions options_;
  mutable std::mutex mutex_;
  std::vector<std::string> databases_;  // label values kept
  // (command, database, failed) -> count
  std::map<std::tuple<std::string_view, std::string, bool>, std::uint64_t, std::less<>> commands_;
  std::map<std::string_view, Histogram> durations_;
  std::map<std::pair<std::string_view, bool>, std::uint64_t> hellos_;
};

/// Appends a Prometheus metric family's "# HELP" and "# TYPE" lines.
void family(std::string& out, std::string_view name, std::string_view type, std::string_view help);

/// Upstream reachability for /healthz: ok and a short message.
using HealthCheck = std::function<std::pair<bool, std::string>()>;

/// Opens a TCP connection to host:port (a name or an address), waiting at
/// most `timeout`: the connected socket (blocking, close-on-exec), or -1
/// with `error` saying why ("cannot resolve: ...", "Connection refused").
int connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout,
                std::string& error);

/// A HealthCheck that opens (and closes) a TCP connection to host:port,
/// waiting at most `timeout`.
HealthCheck tcp_health_check(std::string host, std::uint16_t port,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

struct AdminOptions {
  std::string host = "127.0.0.1";  ///< loopback unless configured otherwise
  std::uint16_t port = 0;          ///< 0: a free port (start() returns it)
};

/// The admin HTTP endpoint (HTTP/1.1, keep-alive):
///   GET /metrics  Prometheus text format 0.0.4: the Stats table, the
///                 MetricsSink's metrics, per-sink written/dropped/errors
///   GET /healthz  200 "ok ..." when the health check passes, else 503
///   GET /stats    JSON: counters, sinks, queue
/// Runs on a thread of its own; never touches the I/O threads.
class AdminServer {
 public:
  /// `dispatcher`, `metrics` and `health` may be null / empty.
  AdminServer(AdminOptions options, const monitor::Stats& stats, const Dispatcher* dispatcher,
              std::shared_ptr<const MetricsSink> metrics, HealthCheck health = {});
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  /// Binds, listens and starts serving. Returns the bound port. Throws
  /// std::system_error naming the address when it cannot bind.
  std::uint16_t start();
  /// Stops serving and joins the thread. Idempotent.
  void stop();
  /// The version label of varanus_build_info. Before start().
  void set_version(std::string version) { version_ = std::move(version); }

  // The bodies, for tests and embedding.
  std::string metrics_text() const;
  std::string stats_json() const;
  /// /stats/commands: the command statistics' JSON ("{}" without them).
  std::string command_stats_json() const;
  /// Serves `stats` at /stats/commands. Before start().
  void set_command_stats(std::shared_ptr<const CommandStatsSink> stats) {
    commandStats_ = std::move(stats);
  }

 private:
  struct Impl;
  AdminOptions options_;
  const monitor::Stats& stats_;
  const Dispatcher* dispatcher_;
  std::shared_ptr<const MetricsSink> metrics_;
  std::shared_ptr<const CommandStatsSink> commandStats_;
  HealthCheck health_;
  std::string version_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace varanus::sinks
