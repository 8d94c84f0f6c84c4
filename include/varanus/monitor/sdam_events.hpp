// varanus::monitor — the SDAM monitoring events, as documents.
//
// The events of the SDAM monitoring specification (topologyOpening,
// topologyDescriptionChanged, topologyClosed, serverOpening,
// serverDescriptionChanged, serverClosed, serverHeartbeatStarted /
// Succeeded / Failed), each a name (the `event` key of its line) and its
// fields as one BSON document, with the spec's field names. Built from the
// state machine's Updates (sdam.hpp) by the topology monitor; rare (a few
// per heartbeat interval), so they travel as rendered-once documents, not
// as command Events. Pure; tests/monitor/sdam_events_test.cpp.
//
// `address` is always the member's own address; `via` the varanus
// listener that reaches it, when it has one.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/monitor/event.hpp"
#include "varanus/monitor/sdam.hpp"
#include "varanus/wire/bson_view.hpp"

namespace varanus::monitor::sdam {

struct TopologyEvent {
  std::string name;        ///< "serverDescriptionChanged", ...
  wire::BsonBytes fields;  ///< the event's fields, in the order a line shows them
};

/// Member address -> the varanus listener that reaches it ("via").
using ViaMap = std::map<std::string, std::string, std::less<>>;

/// A server description's fields: address, type, setName, setVersion,
/// electionId, primary, hosts (hosts, passives and arbiters, as the spec's
/// event shows them), tags, roundTripTimeMicros, error when Unknown.
/// Absent values are left out.
wire::BsonBytes server_document(const ServerDescription& sd);
/// type, setName, servers [{address, type}].
wire::BsonBytes topology_document(const TopologyDescription& td);

/// What a new topology publishes: topologyOpening, topologyDescriptionChanged
/// (from an empty Unknown description to the initial one), serverOpening
/// per seed.
std::vector<TopologyEvent> opening_events(const TopologyDescription& initial, const ViaMap& via);
/// What one Topology::apply changed: serverDescriptionChanged (previous,
/// new) per changed server, serverOpening, serverClosed, then one
/// topologyDescriptionChanged.
std::vector<TopologyEvent> update_events(const Update& update, const TopologyDescription& now,
                                         const ViaMap& via);
/// serverClosed per server, then topologyClosed.
std::vector<TopologyEvent> closing_events(const TopologyDescription& last, const ViaMap& via);

TopologyEvent heartbeat_started(std::string_view address, const ViaMap& via, bool awaited);
TopologyEvent heartbeat_succeeded(std::string_view address, const ViaMap& via, bool awaited,
                                  std::chrono::microseconds duration, wire::BsonView reply);
TopologyEvent heartbeat_failed(std::string_view address, const ViaMap& via, bool awaited,
                               std::chrono::microseconds duration, std::string_view failure);

/// Every event name above, for sink filters and the docs.
inline constexpr std::string_view kTopologyEventNames[] = {
    "topologyOpening",        "topologyDescriptionChanged", "topologyClosed",
    "serverOpening",          "serverDescriptionChanged",   "serverClosed",
    "serverHeartbeatStarted", "serverHeartbeatSucceeded",   "serverHeartbeatFailed",
};

/// True when `name` is one of kTopologyEventNames (exact spelling).
bool is_topology_event_name(std::string_view name) noexcept;

}  // namespace varanus::monitor::sdam

namespace varanus::monitor {

/// The Event that carries `event` to the sinks (EventType::topology:
/// commandName = its name, document = its fields, no connection), stamped
/// `time`. A heartbeat `reply` holding speculativeAuthenticate or
/// saslSupportedMechs is emptied to {} and the event marked `redacted`
/// (the command monitoring spec's rule for hello replies), so no sink ever
/// receives an authentication secret.
Event topology_event(const sdam::TopologyEvent& event, std::chrono::system_clock::time_point time);

}  // namespace varanus::monitor
