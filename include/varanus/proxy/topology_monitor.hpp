// varanus::proxy — varanus's own topology monitor (issue 21).
//
// Monitors a replica set or a set of mongos as a driver does (the SDAM
// specification's server monitoring, and its monitoring spec's events), so
// a failover is seen while no application is talking. One monitoring
// connection per server: a handshake hello (with client metadata), then,
// when the server offers a topologyVersion and streaming is on, the
// awaitable hello with exhaustAllowed (the server streams a reply, with
// moreToCome, on each topology change or every heartbeatFrequency) plus a
// second connection measuring the round-trip time with a plain hello every
// heartbeatFrequency; without streaming a plain hello every
// heartbeatFrequency. Each outcome goes through the pure pieces in
// monitor/ (ServerCheck -> Topology::apply -> update_events).
//
// Boost.Asio on its own io_context and thread: every callback runs on that
// thread, one at a time, events in the spec's order:
//   serverHeartbeatStarted, serverHeartbeatSucceeded / Failed, then what
//   the outcome changed (serverDescriptionChanged..., serverOpening...,
//   serverClosed..., topologyDescriptionChanged).
//
// Failures: a network error or timeout marks the server Unknown with the
// error (serverHeartbeatFailed, serverDescriptionChanged); when the server
// was known the monitor retries once at once, then every
// heartbeatFrequency. Read timeouts: connectTimeout for a plain check,
// connectTimeout + heartbeatFrequency for an awaited one.
//
// Plaintext only for now (a TLS upstream is not monitored over TLS yet);
// the handshake is an OP_MSG `hello`, which MongoDB 4.4.2 and later (and
// varanus-stub) understand.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "varanus/monitor/sdam.hpp"
#include "varanus/monitor/sdam_events.hpp"
#include "varanus/proxy/config.hpp"

namespace varanus::proxy {

struct TopologyMonitorConfig {
  std::vector<Endpoint> seeds;         ///< at least one
  std::optional<std::string> setName;  ///< replicaSet: the topology starts as ReplicaSetNoPrimary
  bool directConnection = false;       ///< Single (one seed only)
  /// Between checks, and the awaitable hello's maxAwaitTimeMS. At least
  /// 500 ms (the spec's minHeartbeatFrequencyMS).
  std::chrono::milliseconds heartbeatFrequency{10'000};
  /// Connecting, and reading a plain check's reply.
  std::chrono::milliseconds connectTimeout{10'000};
  /// The streaming (awaitable) hello where the server offers a topologyVersion.
  bool streaming = true;
  /// client.application.name in the handshake (the server logs it).
  std::string appName = "varanus topology monitor";
};

class TopologyMonitor {
 public:
  static constexpr std::chrono::milliseconds kMinHeartbeatFrequency{500};

  /// Throws std::invalid_argument naming the problem: no seeds,
  /// heartbeatFrequency under 500 ms, connectTimeout not positive,
  /// directConnection with several seeds.
  explicit TopologyMonitor(TopologyMonitorConfig config);
  ~TopologyMonitor();  ///< stop()
  TopologyMonitor(const TopologyMonitor&) = delete;
  TopologyMonitor& operator=(const TopologyMonitor&) = delete;

  // Callbacks: set before start(); each runs on the monitor thread.
  /// Every SDAM event, in the spec's order.
  void on_event(std::function<void(const monitor::sdam::TopologyEvent&)> f);
  /// A server joins the topology (each seed at start(), then each one the
  /// topology discovers): called before the events announcing it are
  /// built, so a listener opened here is named by their `via`.
  void on_server_opened(std::function<void(const std::string& address)> f);
  /// The topology removed a server (after its serverClosed event). Not
  /// called at stop(), which closes everything.
  void on_server_closed(std::function<void(const std::string& address)> f);
  /// The member -> varanus listener map the events' `via` comes from;
  /// called each time events are built (default: no `via`).
  void via(std::function<monitor::sdam::ViaMap()> f);

  /// Publishes the opening events (topologyOpening, topologyDescriptionChanged,
  /// serverOpening per seed) and starts monitoring; returns at once (the
  /// events come from the monitor thread). A second call does nothing.
  void start();
  /// Cancels every check, publishes serverClosed per server then
  /// topologyClosed, and joins the thread. Idempotent.
  void stop();

  /// A snapshot of the current topology (for /stats and health checks);
  /// servers' roundTripTime as last measured. Any thread.
  monitor::sdam::TopologyDescription description() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace varanus::proxy
