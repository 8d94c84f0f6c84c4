// The SDAM state machine (see the header; the pseudo-code it follows is the
// specification's "Updating the TopologyDescription").
#include "varanus/monitor/sdam.hpp"

#include <bson/bson.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace varanus::monitor::sdam {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string iter_string(const bson_iter_t* it) {
  std::uint32_t len = 0;
  const char* s = bson_iter_utf8(it, &len);
  return std::string(s, len);
}

std::optional<std::int64_t> iter_integer(const bson_iter_t* it) {
  switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
      return bson_iter_int32(it);
    case BSON_TYPE_INT64:
      return bson_iter_int64(it);
    case BSON_TYPE_DOUBLE:
      return static_cast<std::int64_t>(bson_iter_double(it));
    default:
      return std::nullopt;
  }
}

bool iter_true(const bson_iter_t* it) {
  return BSON_ITER_HOLDS_BOOL(it) ? bson_iter_bool(it) : bson_iter_as_bool(it);
}

std::vector<std::string> iter_addresses(const bson_iter_t* it) {
  std::vector<std::string> out;
  bson_iter_t child;
  if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &child)) return out;
  while (bson_iter_next(&child))
    if (BSON_ITER_HOLDS_UTF8(&child)) out.push_back(lower(iter_string(&child)));
  return out;
}

ObjectId iter_oid(const bson_iter_t* it) {
  ObjectId id;
  std::copy_n(bson_iter_oid(it)->bytes, 12, id.bytes.begin());
  return id;
}

std::optional<TopologyVersion> iter_topology_version(const bson_iter_t* it) {
  bson_iter_t child;
  if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &child)) return std::nullopt;
  TopologyVersion tv;
  bool pid = false;
  bool counter = false;
  while (bson_iter_next(&child)) {
    const std::string_view key = bson_iter_key(&child);
    if (key == "processId" && BSON_ITER_HOLDS_OID(&child)) {
      tv.processId = iter_oid(&child);
      pid = true;
    } else if (key == "counter") {
      if (auto n = iter_integer(&child)) {
        tv.counter = *n;
        counter = true;
      }
    }
  }
  if (!pid || !counter) return std::nullopt;
  return tv;
}

bool same_members(std::vector<std::string> a, std::vector<std::string> b) {
  // Sets of addresses: order and repeats do not matter.
  std::sort(a.begin(), a.end());
  a.erase(std::unique(a.begin(), a.end()), a.end());
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  return a == b;
}

std::string tuple_text(const std::optional<ObjectId>& electionId,
                       const std::optional<std::int64_t>& setVersion) {
  return "{electionId: " + (electionId ? electionId->hex() : std::string("null")) +
         ", setVersion: " + (setVersion ? std::to_string(*setVersion) : std::string("null")) + "}";
}

bool is_member_type(ServerType t) {
  return t == ServerType::RSSecondary || t == ServerType::RSArbiter || t == ServerType::RSOther;
}

}  // namespace

std::string_view to_string(ServerType t) noexcept {
  switch (t) {
    case ServerType::Unknown:
      return "Unknown";
    case ServerType::Standalone:
      return "Standalone";
    case ServerType::Mongos:
      return "Mongos";
    case ServerType::RSPrimary:
      return "RSPrimary";
    case ServerType::RSSecondary:
      return "RSSecondary";
    case ServerType::RSArbiter:
      return "RSArbiter";
    case ServerType::RSOther:
      return "RSOther";
    case ServerType::RSGhost:
      return "RSGhost";
  }
  return "Unknown";
}

std::string_view to_string(TopologyType t) noexcept {
  switch (t) {
    case TopologyType::Unknown:
      return "Unknown";
    case TopologyType::Single:
      return "Single";
    case TopologyType::ReplicaSetNoPrimary:
      return "ReplicaSetNoPrimary";
    case TopologyType::ReplicaSetWithPrimary:
      return "ReplicaSetWithPrimary";
    case TopologyType::Sharded:
      return "Sharded";
  }
  return "Unknown";
}

std::string ObjectId::hex() const {
  std::string out;
  out.reserve(24);
  char buf[3];
  for (std::uint8_t b : bytes) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    out += buf;
  }
  return out;
}

ServerDescription ServerDescription::unknown(std::string address,
                                             std::optional<std::string> error) {
  ServerDescription sd;
  sd.address = lower(address);
  sd.error = std::move(error);
  return sd;
}

ServerDescription ServerDescription::from_error(std::string address, std::string error) {
  return unknown(std::move(address), std::move(error));
}

ServerDescription ServerDescription::from_hello(std::string address, wire::BsonView reply,
                                                std::optional<std::chrono::microseconds> rtt) {
  bson_t doc;
  bson_iter_t it;
  if (!reply.init_static(&doc) || !bson_iter_init(&it, &doc)) {
    return from_error(std::move(address), "hello reply is not a valid BSON document");
  }
  ServerDescription sd;
  sd.address = lower(address);
  std::optional<double> ok;
  std::optional<bool> writablePrimary;
  std::optional<bool> ismaster;
  bool secondary = false, arbiterOnly = false, hidden = false, isreplicaset = false;
  std::optional<std::string> msg;
  std::optional<std::string> errmsg;
  while (bson_iter_next(&it)) {
    const std::string_view key = bson_iter_key(&it);
    if (key == "ok") {
      ok = BSON_ITER_HOLDS_BOOL(&it) ? (bson_iter_bool(&it) ? 1.0 : 0.0) : bson_iter_as_double(&it);
    } else if (key == "isWritablePrimary") {
      writablePrimary = iter_true(&it);
    } else if (key == "ismaster") {
      ismaster = iter_true(&it);
    } else if (key == "secondary") {
      secondary = iter_true(&it);
    } else if (key == "arbiterOnly") {
      arbiterOnly = iter_true(&it);
    } else if (key == "hidden") {
      hidden = iter_true(&it);
    } else if (key == "isreplicaset") {
      isreplicaset = iter_true(&it);
    } else if (key == "msg" && BSON_ITER_HOLDS_UTF8(&it)) {
      msg = iter_string(&it);
    } else if (key == "errmsg" && BSON_ITER_HOLDS_UTF8(&it)) {
      errmsg = iter_string(&it);
    } else if (key == "setName" && BSON_ITER_HOLDS_UTF8(&it)) {
      sd.setName = iter_string(&it);
    } else if (key == "setVersion") {
      sd.setVersion = iter_integer(&it);
    } else if (key == "electionId" && BSON_ITER_HOLDS_OID(&it)) {
      sd.electionId = iter_oid(&it);
    } else if (key == "primary" && BSON_ITER_HOLDS_UTF8(&it)) {
      sd.primary = lower(iter_string(&it));
    } else if (key == "me" && BSON_ITER_HOLDS_UTF8(&it)) {
      sd.me = lower(iter_string(&it));
    } else if (key == "hosts") {
      sd.hosts = iter_addresses(&it);
    } else if (key == "passives") {
      sd.passives = iter_addresses(&it);
    } else if (key == "arbiters") {
      sd.arbiters = iter_addresses(&it);
    } else if (key == "tags" && BSON_ITER_HOLDS_DOCUMENT(&it)) {
      bson_iter_t child;
      if (bson_iter_recurse(&it, &child)) {
        while (bson_iter_next(&child))
          if (BSON_ITER_HOLDS_UTF8(&child)) sd.tags[bson_iter_key(&child)] = iter_string(&child);
      }
    } else if (key == "minWireVersion") {
      sd.minWireVersion = static_cast<std::int32_t>(iter_integer(&it).value_or(0));
    } else if (key == "maxWireVersion") {
      sd.maxWireVersion = static_cast<std::int32_t>(iter_integer(&it).value_or(0));
    } else if (key == "logicalSessionTimeoutMinutes") {
      sd.logicalSessionTimeoutMinutes = iter_integer(&it);
    } else if (key == "topologyVersion") {
      sd.topologyVersion = iter_topology_version(&it);
    } else if (key == "iscryptd") {
      sd.iscryptd = iter_true(&it);
    }
  }
  if (ok != 1.0) {
    // A failed hello: Unknown, keeping only what orders replies.
    ServerDescription failed =
        unknown(std::move(address),
                "hello failed" + (errmsg ? ": " + *errmsg : std::string(" (ok is not 1)")));
    failed.topologyVersion = sd.topologyVersion;
    return failed;
  }
  sd.roundTripTime = rtt;
  const bool primary = writablePrimary ? *writablePrimary : ismaster.value_or(false);
  if (isreplicaset) {
    sd.type = ServerType::RSGhost;
  } else if (sd.setName) {
    if (primary) {
      sd.type = ServerType::RSPrimary;
    } else if (hidden) {
      sd.type = ServerType::RSOther;
    } else if (secondary) {
      sd.type = ServerType::RSSecondary;
    } else if (arbiterOnly) {
      sd.type = ServerType::RSArbiter;
    } else {
      sd.type = ServerType::RSOther;
    }
  } else if (msg == "isdbgrid") {
    sd.type = ServerType::Mongos;
  } else {
    sd.type = ServerType::Standalone;
  }
  return sd;
}

bool ServerDescription::same_as(const ServerDescription& o) const {
  return error == o.error && type == o.type && minWireVersion == o.minWireVersion &&
         maxWireVersion == o.maxWireVersion && me == o.me && same_members(hosts, o.hosts) &&
         same_members(passives, o.passives) && same_members(arbiters, o.arbiters) &&
         tags == o.tags && setName == o.setName && setVersion == o.setVersion &&
         electionId == o.electionId && primary == o.primary &&
         logicalSessionTimeoutMinutes == o.logicalSessionTimeoutMinutes &&
         topologyVersion == o.topologyVersion && iscryptd == o.iscryptd;
}

bool ServerDescription::data_bearing() const noexcept {
  return type == ServerType::Standalone || type == ServerType::RSPrimary ||
         type == ServerType::RSSecondary || type == ServerType::Mongos;
}

std::vector<std::string> ServerDescription::members() const {
  std::vector<std::string> out = hosts;
  out.insert(out.end(), passives.begin(), passives.end());
  out.insert(out.end(), arbiters.begin(), arbiters.end());
  return out;
}

bool TopologyDescription::same_as(const TopologyDescription& o) const {
  if (type != o.type || setName != o.setName || servers.size() != o.servers.size()) return false;
  for (auto a = servers.begin(), b = o.servers.begin(); a != servers.end(); ++a, ++b) {
    if (a->first != b->first || !a->second.same_as(b->second)) return false;
  }
  return true;
}

std::optional<std::string> TopologyDescription::primary() const {
  for (const auto& [address, sd] : servers)
    if (sd.type == ServerType::RSPrimary) return address;
  return std::nullopt;
}

Topology::Topology(Settings settings) : settings_(std::move(settings)) {
  for (auto& seed : settings_.seeds) seed = lower(seed);
  for (const auto& seed : settings_.seeds)
    td_.servers.emplace(seed, ServerDescription::unknown(seed));
  td_.setName = settings_.setName;
  if (settings_.directConnection) {
    td_.type = TopologyType::Single;
  } else if (settings_.setName) {
    td_.type = TopologyType::ReplicaSetNoPrimary;
  }
}

void Topology::remove(const std::string& address) {
  td_.servers.erase(address);
}

void Topology::add_unknown(const std::string& address) {
  td_.servers.try_emplace(address, ServerDescription::unknown(address));
}

void Topology::check_if_has_primary() {
  td_.type =
      td_.primary() ? TopologyType::ReplicaSetWithPrimary : TopologyType::ReplicaSetNoPrimary;
}

void Topology::update_unknown_with_standalone(const ServerDescription& sd) {
  if (!td_.servers.count(sd.address)) return;
  if (settings_.seeds.size() == 1) {
    td_.type = TopologyType::Single;
  } else {
    remove(sd.address);
  }
}

void Topology::update_rs_without_primary(const ServerDescription& sd) {
  if (!td_.servers.count(sd.address)) return;
  if (!td_.setName) {
    td_.setName = sd.setName;
  } else if (td_.setName != sd.setName) {
    remove(sd.address);
    return;
  }
  for (const auto& address : sd.members()) add_unknown(address);
  // (PossiblePrimary is Unknown here: every server is checked at once.)
  if (sd.me && *sd.me != sd.address) remove(sd.address);
}

void Topology::update_rs_with_primary_from_member(const ServerDescription& sd) {
  if (!td_.servers.count(sd.address)) return;
  if (td_.setName != sd.setName || (sd.me && *sd.me != sd.address)) {
    remove(sd.address);
    check_if_has_primary();
    return;
  }
  if (!td_.primary()) td_.type = TopologyType::ReplicaSetNoPrimary;
}

void Topology::update_rs_from_primary(const ServerDescription& sd) {
  if (!td_.servers.count(sd.address)) return;
  if (!td_.setName) {
    td_.setName = sd.setName;
  } else if (td_.setName != sd.setName) {
    remove(sd.address);
    check_if_has_primary();
    return;
  }
  auto mark_stale = [&] {
    td_.servers[sd.address] = ServerDescription::unknown(
        sd.address, "primary marked stale due to electionId/setVersion mismatch, " +
                        tuple_text(sd.electionId, sd.setVersion) + " is stale compared to " +
                        tuple_text(td_.maxElectionId, td_.maxSetVersion));
    check_if_has_primary();
  };
  if (sd.maxWireVersion >= 17) {
    // (electionId, setVersion), electionId first; null is less than any value.
    if (sd.electionId > td_.maxElectionId ||
        (sd.electionId == td_.maxElectionId && sd.setVersion >= td_.maxSetVersion)) {
      td_.maxElectionId = sd.electionId;
      td_.maxSetVersion = sd.setVersion;
    } else {
      mark_stale();
      return;
    }
  } else {
    // Before 6.0: setVersion first, and only when both are present.
    if (sd.setVersion && sd.electionId) {
      if (td_.maxSetVersion && td_.maxElectionId &&
          (*td_.maxSetVersion > *sd.setVersion ||
           (*td_.maxSetVersion == *sd.setVersion && *td_.maxElectionId > *sd.electionId))) {
        mark_stale();
        return;
      }
      td_.maxElectionId = sd.electionId;
    }
    if (sd.setVersion && (!td_.maxSetVersion || *sd.setVersion > *td_.maxSetVersion)) {
      td_.maxSetVersion = sd.setVersion;
    }
  }
  for (auto& [address, server] : td_.servers) {
    if (address != sd.address && server.type == ServerType::RSPrimary) {
      server = ServerDescription::unknown(address,
                                          "primary marked stale due to discovery of newer primary");
    }
  }
  const std::vector<std::string> members = sd.members();
  for (const auto& address : members) add_unknown(address);
  for (auto it = td_.servers.begin(); it != td_.servers.end();) {
    if (std::find(members.begin(), members.end(), it->first) == members.end()) {
      it = td_.servers.erase(it);
    } else {
      ++it;
    }
  }
  check_if_has_primary();
}

void Topology::update_derived() {
  td_.compatible = true;
  td_.compatibilityError.reset();
  for (const auto& [address, sd] : td_.servers) {
    if (sd.type == ServerType::Unknown) continue;
    if (sd.minWireVersion > kClientMaxWireVersion) {
      td_.compatible = false;
      td_.compatibilityError =
          "Server at " + address + " requires wire version " + std::to_string(sd.minWireVersion) +
          ", but varanus only supports up to " + std::to_string(kClientMaxWireVersion);
    } else if (sd.maxWireVersion < kClientMinWireVersion) {
      td_.compatible = false;
      td_.compatibilityError = "Server at " + address + " reports wire version " +
                               std::to_string(sd.maxWireVersion) +
                               ", but varanus requires at least " +
                               std::to_string(kClientMinWireVersion) + " (MongoDB 3.6)";
    }
  }
  std::optional<std::int64_t> timeout;
  bool any = false;
  for (const auto& [address, sd] : td_.servers) {
    if (!sd.data_bearing()) continue;
    if (!sd.logicalSessionTimeoutMinutes) {
      timeout.reset();
      any = false;
      break;
    }
    timeout = any ? std::min(*timeout, *sd.logicalSessionTimeoutMinutes)
                  : *sd.logicalSessionTimeoutMinutes;
    any = true;
  }
  td_.logicalSessionTimeoutMinutes = timeout;
}

Update Topology::apply(const ServerDescription& incoming) {
  Update u;
  const auto current = td_.servers.find(incoming.address);
  if (current == td_.servers.end()) return u;  // removed meanwhile: ignored
  // A reply older than what we know (same process, lower counter) is ignored.
  const auto& have = current->second.topologyVersion;
  const auto& got = incoming.topologyVersion;
  if (have && got && have->processId == got->processId && have->counter > got->counter) return u;
  u.applied = true;

  TopologyDescription before = td_;
  ServerDescription sd = incoming;
  if (td_.type == TopologyType::Single) {
    if (settings_.setName && sd.type != ServerType::Unknown && sd.setName != settings_.setName) {
      sd = ServerDescription::unknown(sd.address, "replica set name mismatch: expected " +
                                                      *settings_.setName + ", the server has " +
                                                      sd.setName.value_or("none"));
    }
    td_.servers[sd.address] = sd;
  } else {
    td_.servers[sd.address] = sd;
    const ServerType t = sd.type;
    switch (td_.type) {
      case TopologyType::Unknown:
        if (t == ServerType::Standalone) {
          update_unknown_with_standalone(sd);
        } else if (t == ServerType::Mongos) {
          td_.type = TopologyType::Sharded;
        } else if (t == ServerType::RSPrimary) {
          td_.type = TopologyType::ReplicaSetWithPrimary;
          update_rs_from_primary(sd);
        } else if (is_member_type(t)) {
          td_.type = TopologyType::ReplicaSetNoPrimary;
          update_rs_without_primary(sd);
        }
        break;
      case TopologyType::Sharded:
        if (t != ServerType::Unknown && t != ServerType::Mongos) remove(sd.address);
        break;
      case TopologyType::ReplicaSetNoPrimary:
        if (t == ServerType::Standalone || t == ServerType::Mongos) {
          remove(sd.address);
        } else if (t == ServerType::RSPrimary) {
          td_.type = TopologyType::ReplicaSetWithPrimary;
          update_rs_from_primary(sd);
        } else if (is_member_type(t)) {
          update_rs_without_primary(sd);
        }
        break;
      case TopologyType::ReplicaSetWithPrimary:
        if (t == ServerType::Standalone || t == ServerType::Mongos) {
          remove(sd.address);
          check_if_has_primary();
        } else if (t == ServerType::RSPrimary) {
          update_rs_from_primary(sd);
        } else if (is_member_type(t)) {
          update_rs_with_primary_from_member(sd);
        } else {
          check_if_has_primary();
        }
        break;
      case TopologyType::Single:
        break;
    }
  }
  update_derived();

  // What changed, in the monitoring spec's order.
  auto note_change = [&](const std::string& address) {
    const auto a = before.servers.find(address);
    const auto b = td_.servers.find(address);
    if (a != before.servers.end() && b != td_.servers.end() && !a->second.same_as(b->second)) {
      u.changed.push_back({a->second, b->second});
    }
  };
  note_change(sd.address);
  for (const auto& [address, server] : td_.servers)
    if (address != sd.address) note_change(address);
  for (const auto& [address, server] : td_.servers)
    if (!before.servers.count(address)) u.opened.push_back(address);
  for (const auto& [address, server] : before.servers)
    if (!td_.servers.count(address)) u.closed.push_back(address);
  if (!before.same_as(td_)) u.previous = std::move(before);
  return u;
}

}  // namespace varanus::monitor::sdam
