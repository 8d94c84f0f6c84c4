// varanus::monitor — one monitored server's checks, without the I/O.
//
// What the topology monitor (proxy layer, one monitoring connection per
// member) needs to know between a hello it sends and the reply it reads,
// as the SDAM server-monitoring spec has it: the hello to send (the
// streaming, awaitable form with the last topologyVersion and
// maxAwaitTimeMS once the server offered a topologyVersion), the
// round-trip-time average (an exponentially weighted moving average,
// alpha 0.2, of the checks that were not awaited; reset when the server
// becomes Unknown), and, for each outcome, the ServerDescription to apply
// to the Topology and the heartbeat events to publish. Pure; the monitor
// brings the connection and the clock. tests/monitor/server_check_test.cpp.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "varanus/monitor/sdam.hpp"
#include "varanus/monitor/sdam_events.hpp"
#include "varanus/wire/bson_view.hpp"

namespace varanus::monitor::sdam {

/// The spec's weighted average of round-trip times.
class RttAverage {
 public:
  /// The first sample is the average; then avg = 0.2 * sample + 0.8 * avg.
  void add(std::chrono::microseconds sample) noexcept;
  void reset() noexcept { average_.reset(); }
  std::optional<std::chrono::microseconds> value() const noexcept { return average_; }

 private:
  std::optional<std::chrono::microseconds> average_;
};

class ServerCheck {
 public:
  /// `heartbeatFrequency` is also the awaitable hello's maxAwaitTimeMS.
  ServerCheck(std::string address, std::chrono::milliseconds heartbeatFrequency,
              bool streaming = true);

  const std::string& address() const noexcept { return address_; }

  /// The next hello's body ({hello: 1, helloOk: true, $db: "admin"}, plus
  /// topologyVersion and maxAwaitTimeMS when awaited()), as an OP_MSG body.
  /// Sent with exhaustAllowed when awaited(): the server then streams a
  /// reply each time its topology changes (or maxAwaitTimeMS passes).
  wire::BsonBytes hello_command() const;
  /// The next check is an awaitable one: streaming is on and the last
  /// reply carried a topologyVersion.
  bool awaited() const noexcept { return streaming_ && topologyVersion_.has_value(); }

  /// serverHeartbeatStarted for the next check.
  TopologyEvent started(const ViaMap& via) const;

  struct Outcome {
    ServerDescription description;  ///< for Topology::apply
    TopologyEvent heartbeat;        ///< serverHeartbeatSucceeded / Failed
  };
  /// A hello reply read `elapsed` after the hello was sent (or, streaming,
  /// after the previous reply). Awaited replies do not feed the RTT.
  Outcome succeeded(wire::BsonView reply, std::chrono::microseconds elapsed, bool awaited,
                    const ViaMap& via);
  /// The check failed (connect, send, read, timeout): Unknown with the
  /// error, the RTT average reset, and the next check is not awaited (a new
  /// connection must first learn the topologyVersion again).
  Outcome failed(std::string_view error, std::chrono::microseconds elapsed, bool awaited,
                 const ViaMap& via);

  /// A round-trip time measured outside the checks (the spec's RTT
  /// monitor: a second connection sending a plain hello while the checks
  /// stream). Feeds the average the next description carries.
  void add_rtt_sample(std::chrono::microseconds sample) noexcept { rtt_.add(sample); }

  std::optional<std::chrono::microseconds> round_trip_time() const noexcept { return rtt_.value(); }

 private:
  std::string address_;
  std::chrono::milliseconds heartbeatFrequency_;
  bool streaming_;
  std::optional<TopologyVersion> topologyVersion_;
  RttAverage rtt_;
};

}  // namespace varanus::monitor::sdam
