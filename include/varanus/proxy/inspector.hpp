// varanus::proxy — the Session's view of whatever inspects a connection's
// traffic. In production that is a monitor::Tracker (tracker_factory());
// tests plug in recorders or no-ops. One Inspector per client connection,
// called only from that connection's I/O thread: no locking needed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "varanus/monitor/event.hpp"
#include "varanus/monitor/stats.hpp"
#include "varanus/monitor/tracker.hpp"  // TrackerOptions, for tracker_factory

namespace varanus::proxy {

class Inspector {
 public:
  virtual ~Inspector() = default;
  /// The upstream connection is up; relaying starts.
  virtual void opened(monitor::Clock now) = 0;
  /// Bytes read from the client (just after they were sent on to the
  /// upstream; `now` is when they were read). Always before any reply to
  /// them can be read: both happen on the connection's one thread.
  virtual void client_data(std::span<const std::uint8_t> bytes, monitor::Clock now) = 0;
  /// Bytes read from the upstream, likewise (sent on to the client first).
  virtual void server_data(std::span<const std::uint8_t> bytes, monitor::Clock now) = 0;
  /// Both directions are done; `reason` says which side did what.
  virtual void closed(std::string_view reason, monitor::Clock now) = 0;
  /// False once inspection stopped (decode error, oversized frame): the
  /// Session counts that and logs one line, and keeps relaying.
  virtual bool inspecting() const noexcept = 0;
  virtual std::string_view stop_reason() const noexcept = 0;
  /// Why inspection stopped: oversized and malformed traffic are counted
  /// apart. The default, for inspectors that do not say, is malformed.
  virtual monitor::StopCause stop_cause() const noexcept { return monitor::StopCause::malformed; }
  /// Non-empty once part of the traffic went uninspected while inspection
  /// goes on (compressed frames past the decompression budget): the
  /// Session says it once per connection.
  virtual std::string_view throttle_reason() const noexcept { return {}; }
  /// True when no request is in flight and no message is half read (see
  /// monitor::Tracker::quiescent). A stopping proxy closes such a
  /// connection at once; the others get the grace period. The default
  /// knows nothing, so it says false.
  virtual bool idle() const noexcept { return false; }
};

/// What the Server knows of one connection, for the inspector factory. How
/// the connection is inspected (the tracker's options, its clock) is the
/// factory's business: the Server knows nothing of it.
struct InspectorContext {
  monitor::ConnectionInfoPtr info;
  monitor::EventOutput& out;
  monitor::Stats& stats;
};
using InspectorFactory = std::function<std::unique_ptr<Inspector>(const InspectorContext&)>;

/// The production factory: a monitor::Tracker per connection with these
/// options, publishing to ctx.out; adds the tracker's started commands to
/// stats.commands.
InspectorFactory tracker_factory(monitor::TrackerOptions options = {});

/// An inspector that ignores everything (relay only).
InspectorFactory null_inspector_factory();

}  // namespace varanus::proxy
