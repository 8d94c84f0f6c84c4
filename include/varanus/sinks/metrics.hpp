// varanus::sinks — Prometheus metrics and the admin HTTP endpoint.
//
// MetricsSink is an ordinary sink (it receives events on the sink thread)
// that keeps command counters and latency histograms; AdminServer serves
// them with the process-wide Stats table on /metrics, plus /healthz and
// /stats, from a thread of its own (Boost.Beast). Loopback by default.
//
// Label cardinality is bounded by construction: command names outside a
// fixed list of known MongoDB commands become "other", at most
// `maxDatabases` databases (the busiest of late: see MetricsOptions) have
// a label of their own and the rest are "other", and there are no
// collection or client-address labels. Label values are valid UTF-8
// whatever the traffic holds (append_label_value).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
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

/// Appends `v` as the inside of a Prometheus label value (text format
/// 0.0.4): `\\`, `"` and newline escaped; control bytes and bytes that are
/// not valid UTF-8 replaced by U+FFFD, one per byte. The result is always
/// valid UTF-8, whatever a client put in `$db`. The one escaping function of
/// every /metrics label.
void append_label_value(std::string& out, std::string_view v);

struct MetricsOptions {
  /// Histogram bucket upper bounds, seconds.
  std::vector<double> buckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
  /// Distinct `database` label values kept; the databases without a slot
  /// count as "other". 0 = no database label at all.
  std::size_t maxDatabases = 100;
  /// Slots go by recent traffic, not by first arrival: every this many
  /// commands the recent counts are halved and a database with more than
  /// twice the recent commands of the quietest slot holder (and at least
  /// 16) takes its slot; the evicted database's series fold into "other".
  std::size_t rebalanceEvery = 4096;
};

/// Command metrics, fed by events:
///   varanus_commands_total{command,database,outcome}   terminal events (succeeded/failed)
///   varanus_command_duration_seconds{command}          histogram of durationMicros
///   varanus_hellos_total{kind,outcome}                 handshake/heartbeat hellos
/// Hellos are counted apart and kept out of the latency histogram (awaited
/// heartbeats wait ~10 s by design). Named "prometheus".
///
/// Topology events (varanus's own topology monitor), once the first one
/// arrives:
///   varanus_topology_primary_changes_total             the RSPrimary became a different
///                                                      server than the last one seen (the
///                                                      first primary is no change)
///   varanus_server_heartbeat_failures_total{member}    serverHeartbeatFailed events
///   varanus_member_type{member,via,type}               1, for the member's current type only;
///                                                      gone when the member is closed
///   varanus_member_round_trip_seconds{member}          latest round-trip time
///   varanus_topology_member_events_dropped_total             members over kMaxMembers, not tracked
/// The sink also keeps the latest topology description for /stats.
class MetricsSink : public Sink {
 public:
  /// Members with series of their own; later ones are counted in
  /// varanus_topology_member_events_dropped_total (and said once).
  static constexpr std::size_t kMaxMembers = 64;

  struct TopologyServer {
    std::string address;
    std::string type;                                 ///< "RSPrimary", ...
    std::string via;                                  ///< empty when unknown
    std::optional<std::int64_t> roundTripTimeMicros;  ///< when known
  };
  /// The latest topologyDescriptionChanged's newDescription.
  struct TopologySnapshot {
    std::string type;  ///< "ReplicaSetWithPrimary", ...
    std::optional<std::string> setName;
    std::vector<TopologyServer> servers;
  };

  explicit MetricsSink(MetricsOptions options = {});
  /// Appends the Prometheus text exposition of these metrics. Thread-safe.
  void render(std::string& out) const;
  /// Count of varanus_commands_total for these labels (tests). Thread-safe.
  std::uint64_t commands(std::string_view command, std::string_view database,
                         std::string_view outcome) const;
  /// The current topology; nullopt when no topology monitor runs (no
  /// topologyDescriptionChanged yet, or topologyClosed). Thread-safe.
  std::optional<TopologySnapshot> topology() const;
  /// varanus_topology_primary_changes_total (tests). Thread-safe.
  std::uint64_t primary_changes() const;
  /// Counts and times; never renders a document. (It reads topology
  /// events' fields, which the topology monitor publishes whole whatever
  /// the sinks' needs: the need is about command documents.)
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
  void rebalance();
  void evict(const std::string& db);

  MetricsOptions options_;
  mutable std::mutex mutex_;
  std::set<std::string, std::less<>> slots_;  // databases with a label of their own
  // Recent command counts (halved every rebalance) of the slot holders and
  // of up to 4 x maxDatabases candidates.
  std::unordered_map<std::string, double> recent_;
  std::size_t sinceRebalance_ = 0;
  // (command, database, failed) -> count
  std::map<std::tuple<std::string_view, std::string, bool>, std::uint64_t, std::less<>> commands_;
  std::map<std::string_view, Histogram> durations_;
  std::map<std::pair<std::string_view, bool>, std::uint64_t> hellos_;

  // Topology events (mutex_ held).
  void topology_event(const monitor::Event& e);
  struct Member;
  Member* member(std::string_view address);
  void render_topology(std::string& out) const;
  struct Member {
    bool open = false;  // between serverOpening (or any event) and serverClosed
    std::string type = "Unknown";
    std::string via;
    std::optional<std::int64_t> rttMicros;
    std::uint64_t heartbeatFailures = 0;
  };
  bool topologySeen_ = false;
  std::map<std::string, Member, std::less<>> members_;
  std::uint64_t membersDropped_ = 0;
  std::optional<std::string> lastPrimary_;
  std::uint64_t primaryChanges_ = 0;
  std::optional<TopologySnapshot> topology_;
};

/// Appends a Prometheus metric family's "# HELP" and "# TYPE" lines.
void family(std::string& out, std::string_view name, std::string_view type, std::string_view help);

/// Upstream reachability for /healthz: ok and a short message. It may
/// block (a connect with a timeout): the AdminServer runs it on a heartbeat
/// thread of its own, never on the thread that answers requests.
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
  /// The health check runs this often, on its own thread; /healthz answers
  /// at once with its last result.
  std::chrono::milliseconds healthInterval{2000};
  /// Admin connections open at once; one more is answered 503 and closed
  /// (slow clients must not take the descriptors the proxy needs).
  std::size_t maxConnections = 64;
  /// Request header bytes; a request with more is answered 431 and closed.
  std::size_t maxHeaderBytes = 8192;
  /// A connection with no complete request for this long is closed.
  std::chrono::milliseconds idleTimeout{30'000};
};

/// The admin HTTP endpoint (HTTP/1.1, keep-alive):
///   GET /metrics  Prometheus text format 0.0.4: the Stats table, the
///                 MetricsSink's metrics, per-sink written/dropped/errors
///   GET /healthz  200 "ok ..." when the last health check passed, else 503
///                 (answered at once from the heartbeat's last result)
///   GET /stats    JSON: counters, sinks, queue, topology (the topology
///                 monitor's latest description; null when none runs)
/// Anything else: 404 (unknown path), 405 (a method but GET / HEAD), 400
/// (a malformed request), 431 (headers over maxHeaderBytes), 503 (over
/// maxConnections); the last three close the connection.
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
  /// /healthz: the last health check's result, with its age; {false,
  /// "... not checked yet"} before the first one ends. Never blocks on the
  /// check itself.
  std::pair<bool, std::string> health_status() const;
  /// /stats/commands: the command statistics' JSON ("{}" without them).
  std::string command_stats_json() const;
  /// Admin connections refused (over maxConnections) and requests answered
  /// 400 / 431 since start. Any thread.
  std::uint64_t refused_connections() const noexcept;
  std::uint64_t bad_requests() const noexcept;
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
