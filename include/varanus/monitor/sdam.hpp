// varanus::monitor — the Server Discovery and Monitoring state machine.
//
// What a driver knows about a deployment, as the SDAM specification
// (github.com/mongodb/specifications, source/server-discovery-and-monitoring)
// describes it: a ServerDescription per server, made from a hello reply or
// a failed check, and a TopologyDescription updated with each of them by
// the spec's TopologyType table (updateRSFromPrimary, the
// electionId/setVersion stale-primary rules, checkIfHasPrimary, ...).
//
// Pure: no I/O, no clock. The topology monitor (proxy layer) does the
// checks and feeds Topology::apply; what changed comes back as an Update,
// in the order the SDAM monitoring spec publishes its events. Tested
// against the specification's own JSON tests (tests/data/sdam,
// tests/monitor/sdam_test.cpp).
#pragma once

#include <array>
#include <chrono>
#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/wire/bson_view.hpp"

namespace varanus::monitor::sdam {

/// The spec's ServerType, without PossiblePrimary (for a monitor that
/// checks every server concurrently it is the same as Unknown).
enum class ServerType {
  Unknown,
  Standalone,
  Mongos,
  RSPrimary,
  RSSecondary,
  RSArbiter,
  RSOther,
  RSGhost,
};
enum class TopologyType { Unknown, Single, ReplicaSetNoPrimary, ReplicaSetWithPrimary, Sharded };

std::string_view to_string(ServerType t) noexcept;    ///< "RSPrimary", ...
std::string_view to_string(TopologyType t) noexcept;  ///< "ReplicaSetWithPrimary", ...

/// The wire versions varanus's own monitor speaks (MongoDB 3.6 to 8.x);
/// a server outside makes the topology not `compatible`.
inline constexpr std::int32_t kClientMinWireVersion = 6;
inline constexpr std::int32_t kClientMaxWireVersion = 25;

struct ObjectId {
  std::array<std::uint8_t, 12> bytes{};
  std::string hex() const;  ///< 24 lowercase hex digits
  /// Bytewise, as the spec compares electionIds.
  friend auto operator<=>(const ObjectId&, const ObjectId&) = default;
};

struct TopologyVersion {
  ObjectId processId;
  std::int64_t counter = 0;
  friend bool operator==(const TopologyVersion&, const TopologyVersion&) = default;
};

struct ServerDescription {
  std::string address;  ///< "host:port", host lowercased: the address varanus checks
  ServerType type = ServerType::Unknown;
  std::optional<std::string> error;                        ///< why it is Unknown, when it is
  std::optional<std::chrono::microseconds> roundTripTime;  ///< not part of equality
  std::int32_t minWireVersion = 0;
  std::int32_t maxWireVersion = 0;
  std::optional<std::string> me;
  std::vector<std::string> hosts;     ///< lowercased, as given
  std::vector<std::string> passives;  ///< lowercased
  std::vector<std::string> arbiters;  ///< lowercased
  std::map<std::string, std::string> tags;
  std::optional<std::string> setName;
  std::optional<std::int64_t> setVersion;
  std::optional<ObjectId> electionId;
  std::optional<std::string> primary;
  std::optional<std::int64_t> logicalSessionTimeoutMinutes;
  std::optional<TopologyVersion> topologyVersion;
  std::optional<bool> iscryptd;

  /// A server not checked yet (or marked Unknown by the topology).
  static ServerDescription unknown(std::string address, std::optional<std::string> error = {});
  /// From a hello / legacy hello reply. A reply without ok: 1 is Unknown
  /// with an error naming errmsg (its topologyVersion kept).
  static ServerDescription from_hello(std::string address, wire::BsonView reply,
                                      std::optional<std::chrono::microseconds> rtt = {});
  /// A failed check (network error, timeout): Unknown with `error`.
  static ServerDescription from_error(std::string address, std::string error);

  /// The spec's "Server Description Equality": the fields marked (=) equal
  /// (address assumed equal); round-trip time is not one of them.
  bool same_as(const ServerDescription& other) const;
  /// Standalone, RSPrimary, RSSecondary or Mongos.
  bool data_bearing() const noexcept;
  /// hosts, passives and arbiters.
  std::vector<std::string> members() const;
};

struct TopologyDescription {
  TopologyType type = TopologyType::Unknown;
  std::optional<std::string> setName;
  std::optional<std::int64_t> maxSetVersion;
  std::optional<ObjectId> maxElectionId;
  std::map<std::string, ServerDescription> servers;  ///< by address
  bool compatible = true;
  std::optional<std::string> compatibilityError;
  std::optional<std::int64_t> logicalSessionTimeoutMinutes;

  /// The spec's description equality for topologyDescriptionChanged: type,
  /// setName and every server (by same_as).
  bool same_as(const TopologyDescription& other) const;
  /// The address of the RSPrimary, if any.
  std::optional<std::string> primary() const;
};

/// How the topology starts (the spec's "Initial TopologyDescription").
struct Settings {
  std::vector<std::string> seeds;  ///< "host:port"; lowercased here
  std::optional<std::string> setName;
  bool directConnection = false;  ///< Single (one seed only)
};

/// What one apply() changed, in the order the SDAM monitoring spec
/// publishes its events: serverDescriptionChanged (the checked server
/// first, then any it invalidated), serverOpening, serverClosed, then
/// topologyDescriptionChanged.
struct Update {
  bool applied = false;  ///< false: the server is not in the topology, or the reply was stale
  struct Changed {
    ServerDescription previous;
    ServerDescription current;
  };
  std::vector<Changed> changed;     ///< descriptions that differ by same_as
  std::vector<std::string> opened;  ///< servers added (monitor them)
  std::vector<std::string> closed;  ///< servers removed (stop monitoring them)
  /// Set when the topology description changed: the one before.
  std::optional<TopologyDescription> previous;
};

class Topology {
 public:
  explicit Topology(Settings settings);

  const TopologyDescription& description() const noexcept { return td_; }
  const Settings& settings() const noexcept { return settings_; }

  /// Applies one check outcome (replacing the server's description, then
  /// the spec's action for the TopologyType and ServerType).
  Update apply(const ServerDescription& sd);

 private:
  void remove(const std::string& address);
  void add_unknown(const std::string& address);
  void check_if_has_primary();
  void update_rs_from_primary(const ServerDescription& sd);
  void update_rs_without_primary(const ServerDescription& sd);
  void update_rs_with_primary_from_member(const ServerDescription& sd);
  void update_unknown_with_standalone(const ServerDescription& sd);
  void update_derived();

  Settings settings_;
  TopologyDescription td_;
};

}  // namespace varanus::monitor::sdam
