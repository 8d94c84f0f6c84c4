// MetricsSink: command counters and latency histograms with bounded labels.
#include "varanus/sinks/metrics.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>

#include "varanus/wire/bson_walk.hpp"

namespace varanus::sinks {

namespace {

// MongoDB commands a driver or shell sends (plus a few server-internal
// ones often seen through mongos). Anything else is labelled "other".
constexpr std::string_view kKnownCommands[] = {"abortTransaction",
                                               "aggregate",
                                               "analyzeShardKey",
                                               "appendOplogNote",
                                               "applyOps",
                                               "authenticate",
                                               "buildInfo",
                                               "bulkWrite",
                                               "checkShardingIndex",
                                               "cleanupOrphaned",
                                               "clearJumboFlag",
                                               "cloneCollectionAsCapped",
                                               "collMod",
                                               "collStats",
                                               "commitTransaction",
                                               "compact",
                                               "configureFailPoint",
                                               "connPoolStats",
                                               "connectionStatus",
                                               "convertToCapped",
                                               "count",
                                               "create",
                                               "createIndexes",
                                               "createRole",
                                               "createSearchIndexes",
                                               "createUser",
                                               "currentOp",
                                               "dataSize",
                                               "dbHash",
                                               "dbStats",
                                               "delete",
                                               "distinct",
                                               "drop",
                                               "dropAllRolesFromDatabase",
                                               "dropAllUsersFromDatabase",
                                               "dropDatabase",
                                               "dropIndexes",
                                               "dropRole",
                                               "dropSearchIndex",
                                               "dropUser",
                                               "endSessions",
                                               "enableSharding",
                                               "explain",
                                               "features",
                                               "filemd5",
                                               "find",
                                               "findAndModify",
                                               "flushRouterConfig",
                                               "fsync",
                                               "fsyncUnlock",
                                               "getCmdLineOpts",
                                               "getDefaultRWConcern",
                                               "getLastError",
                                               "getLog",
                                               "getMore",
                                               "getParameter",
                                               "getShardMap",
                                               "getnonce",
                                               "grantPrivilegesToRole",
                                               "grantRolesToRole",
                                               "grantRolesToUser",
                                               "hello",
                                               "hostInfo",
                                               "insert",
                                               "invalidateUserCache",
                                               "isMaster",
                                               "killAllSessions",
                                               "killAllSessionsByPattern",
                                               "killCursors",
                                               "killOp",
                                               "killSessions",
                                               "listCollections",
                                               "listCommands",
                                               "listDatabases",
                                               "listIndexes",
                                               "listSearchIndexes",
                                               "listShards",
                                               "lockInfo",
                                               "logRotate",
                                               "logout",
                                               "mapReduce",
                                               "moveChunk",
                                               "movePrimary",
                                               "ping",
                                               "planCacheClear",
                                               "profile",
                                               "reIndex",
                                               "refreshSessions",
                                               "renameCollection",
                                               "replSetGetConfig",
                                               "replSetGetStatus",
                                               "replSetStepDown",
                                               "revokePrivilegesFromRole",
                                               "revokeRolesFromRole",
                                               "revokeRolesFromUser",
                                               "rolesInfo",
                                               "rotateCertificates",
                                               "saslContinue",
                                               "saslStart",
                                               "serverStatus",
                                               "setDefaultRWConcern",
                                               "setFeatureCompatibilityVersion",
                                               "setParameter",
                                               "shardCollection",
                                               "shutdown",
                                               "split",
                                               "startSession",
                                               "top",
                                               "update",
                                               "updateRole",
                                               "updateSearchIndex",
                                               "updateUser",
                                               "usersInfo",
                                               "validate",
                                               "whatsmyuri",
                                               "copydb",
                                               "copydbgetnonce",
                                               "copydbsaslstart"};

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

void append_double(std::string& out, double v) {
  char buf[32];
  // Shortest round-trip, in %g style: "0.0005", not "5e-04".
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  out.append(buf, r.ptr);
}

}  // namespace

void append_label_value(std::string& out, std::string_view v) {
  // The text format escapes only \\, \" and \n; a scraper rejects a whole
  // scrape for one invalid UTF-8 byte, and control bytes in a label are
  // trouble downstream. So: the three escapes, every other control byte and
  // every byte that does not start or continue a valid UTF-8 sequence
  // becomes U+FFFD, one per byte.
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  const std::size_t n = v.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if (c == '\\' || c == '"') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c == '\n') {
        out += "\\n";
      } else if (c < 0x20 || c == 0x7f) {
        out += kReplacement;
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // Length and the valid range of the second byte (RFC 3629: no
    // overlong forms, no surrogates, nothing past U+10FFFF).
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len != 0 && i + len <= n && p[i + 1] >= lo && p[i + 1] <= hi;
    for (std::size_t k = 2; ok && k < len; ++k) ok = p[i + k] >= 0x80 && p[i + k] <= 0xBF;
    // C1 controls (U+0080..U+009F) are control bytes too.
    if (ok && c == 0xC2 && p[i + 1] <= 0x9F) ok = false;
    if (!ok) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(v.data() + i, len);
    i += len;
  }
}

std::string_view command_label(std::string_view name) noexcept {
  for (std::string_view k : kKnownCommands)
    if (iequals(k, name)) return k;  // "ismaster" -> "isMaster"
  return "other";
}

MetricsSink::MetricsSink(MetricsOptions options)
    : Sink("prometheus"), options_(std::move(options)) {
  std::sort(options_.buckets.begin(), options_.buckets.end());
}

std::string_view MetricsSink::database_label(const std::string& db) {
  if (options_.maxDatabases == 0) return {};
  if (options_.rebalanceEvery != 0 && ++sinceRebalance_ >= options_.rebalanceEvery) {
    sinceRebalance_ = 0;
    rebalance();
  }
  auto r = recent_.find(db);
  if (r == recent_.end()) {
    // Room for a new candidate: the quietest candidate without a slot goes.
    const std::size_t cap = std::max<std::size_t>(options_.maxDatabases * 5, 64);
    if (recent_.size() >= cap) {
      auto quietest = recent_.end();
      for (auto it = recent_.begin(); it != recent_.end(); ++it)
        if (!slots_.contains(it->first) &&
            (quietest == recent_.end() || it->second < quietest->second))
          quietest = it;
      if (quietest != recent_.end()) recent_.erase(quietest);
    }
    r = recent_.emplace(db, 0.0).first;
  }
  r->second += 1.0;
  if (const auto s = slots_.find(db); s != slots_.end()) return *s;
  if (slots_.size() < options_.maxDatabases) return *slots_.insert(db).first;
  return "other";
}

void MetricsSink::evict(const std::string& db) {
  // Its series fold into "other": the counters stay monotonic in sum.
  for (auto it = commands_.begin(); it != commands_.end();) {
    const auto& [command, label, failed] = it->first;
    if (label != db) {
      ++it;
      continue;
    }
    commands_[std::make_tuple(command, std::string("other"), failed)] += it->second;
    it = commands_.erase(it);
  }
  slots_.erase(db);
}

void MetricsSink::rebalance() {
  const auto count = [&](const std::string& db) {
    const auto it = recent_.find(db);
    return it == recent_.end() ? 0.0 : it->second;
  };
  for (;;) {
    const std::string* weakest = nullptr;
    for (const auto& s : slots_)
      if (weakest == nullptr || count(s) < count(*weakest)) weakest = &s;
    const std::string* strongest = nullptr;
    for (const auto& [db, n] : recent_)
      if (!slots_.contains(db) && (strongest == nullptr || n > count(*strongest))) strongest = &db;
    if (weakest == nullptr || strongest == nullptr) break;
    const double challenger = count(*strongest);
    if (challenger < 16.0 || challenger <= 2.0 * count(*weakest)) break;
    const std::string winner = *strongest;
    evict(std::string(*weakest));
    slots_.insert(winner);
  }
  // Halve: "recent" means the last few rebalance intervals.
  for (auto it = recent_.begin(); it != recent_.end();) {
    it->second /= 2.0;
    if (it->second < 0.5 && !slots_.contains(it->first))
      it = recent_.erase(it);
    else
      ++it;
  }
}

namespace {

wire::BsonView view_of(const wire::BsonBytes& b) {
  return {b.data(), static_cast<std::uint32_t>(b.size())};
}

std::optional<std::string_view> string_field(wire::BsonView doc, std::string_view key) {
  wire::BsonElement e;
  if (!wire::BsonWalk::find(doc, key, e) || e.type != wire::bson_type::kUtf8) return std::nullopt;
  return e.as_string();
}

std::optional<std::int64_t> int_field(wire::BsonView doc, std::string_view key) {
  wire::BsonElement e;
  if (!wire::BsonWalk::find(doc, key, e)) return std::nullopt;
  if (e.type == wire::bson_type::kInt64) return e.as_int64();
  if (e.type == wire::bson_type::kInt32) return e.as_int32();
  return std::nullopt;
}

std::optional<wire::BsonView> document_field(wire::BsonView doc, std::string_view key) {
  wire::BsonElement e;
  if (!wire::BsonWalk::find(doc, key, e) || !e.is_document() || !wire::bson_framed(e.as_document()))
    return std::nullopt;
  return e.as_document();
}

}  // namespace

MetricsSink::Member* MetricsSink::member(std::string_view address) {
  if (auto it = members_.find(address); it != members_.end()) return &it->second;
  if (members_.size() >= kMaxMembers) {
    // A closed member's series make room (its heartbeat failures go).
    auto closed = std::find_if(members_.begin(), members_.end(),
                               [](const auto& m) { return !m.second.open; });
    if (closed == members_.end()) {
      if (membersDropped_++ == 0)
        report("more than " + std::to_string(kMaxMembers) +
               " topology members: the others have no member series (counted in "
               "varanus_topology_member_events_dropped_total)");
      return nullptr;
    }
    members_.erase(closed);
  }
  return &members_.emplace(std::string(address), Member{}).first->second;
}

void MetricsSink::topology_event(const monitor::Event& e) {
  topologySeen_ = true;
  const std::string_view name = e.commandName;
  const wire::BsonView fields = view_of(e.document);
  if (name == "topologyDescriptionChanged") {
    const auto now = document_field(fields, "newDescription");
    if (!now) return;
    TopologySnapshot snap;
    snap.type = string_field(*now, "type").value_or("Unknown");
    if (auto set = string_field(*now, "setName")) snap.setName = std::string(*set);
    std::optional<std::string> primary;
    if (const auto servers = document_field(*now, "servers")) {
      wire::BsonWalk walk(*servers);
      wire::BsonElement el;
      while (walk.next(el)) {
        if (!el.is_document() || !wire::bson_framed(el.as_document())) continue;
        TopologyServer server;
        server.address = string_field(el.as_document(), "address").value_or("");
        server.type = string_field(el.as_document(), "type").value_or("Unknown");
        if (server.type == "RSPrimary") primary = server.address;
        if (auto it = members_.find(server.address); it != members_.end()) {
          server.via = it->second.via;
          server.roundTripTimeMicros = it->second.rttMicros;
        }
        snap.servers.push_back(std::move(server));
      }
    }
    topology_ = std::move(snap);
    // A failover: a primary other than the last one seen (a blip with no
    // primary, then the same one back, is none; nor is the first primary).
    if (primary) {
      if (lastPrimary_ && *lastPrimary_ != *primary) ++primaryChanges_;
      lastPrimary_ = primary;
    }
    return;
  }
  if (name == "topologyClosed") {
    topology_.reset();
    for (auto& [address, m] : members_) m.open = false;
    return;
  }
  if (name == "topologyOpening") return;
  const auto address = string_field(fields, "address");
  if (!address) return;
  Member* m = member(*address);
  if (m == nullptr) return;
  if (auto via = string_field(fields, "via")) m->via = std::string(*via);
  if (name == "serverClosed") {
    m->open = false;
    m->type = "Unknown";
    m->rttMicros.reset();
    return;
  }
  m->open = true;
  if (name == "serverDescriptionChanged") {
    if (const auto now = document_field(fields, "newDescription")) {
      m->type = std::string(string_field(*now, "type").value_or("Unknown"));
      // Unknown has no round-trip time: its series goes until one is measured.
      if (auto rtt = int_field(*now, "roundTripTimeMicros"))
        m->rttMicros = *rtt;
      else
        m->rttMicros.reset();
    }
  } else if (name == "serverHeartbeatFailed") {
    ++m->heartbeatFailures;
  } else if (name == "serverHeartbeatSucceeded") {
    // A polling (not awaited) check's duration is a round-trip sample.
    wire::BsonElement awaited;
    const bool isAwaited = wire::BsonWalk::find(fields, "awaited", awaited) &&
                           awaited.type == wire::bson_type::kBool && awaited.as_bool();
    if (!isAwaited)
      if (auto d = int_field(fields, "durationMicros")) m->rttMicros = *d;
  }
  // Keep /stats's servers up to date with via and round-trip time.
  if (topology_)
    for (auto& server : topology_->servers)
      if (server.address == *address) {
        server.via = m->via;
        server.roundTripTimeMicros = m->rttMicros;
      }
}

std::optional<MetricsSink::TopologySnapshot> MetricsSink::topology() const {
  std::lock_guard lock(mutex_);
  return topology_;
}

std::uint64_t MetricsSink::primary_changes() const {
  std::lock_guard lock(mutex_);
  return primaryChanges_;
}

void MetricsSink::render_topology(std::string& out) const {
  if (!topologySeen_) return;
  out +=
      "# HELP varanus_topology_primary_changes_total Times the replica set's primary became a "
      "different member than the last one seen (the first primary is not a change)\n"
      "# TYPE varanus_topology_primary_changes_total counter\n"
      "varanus_topology_primary_changes_total ";
  out += std::to_string(primaryChanges_);
  out +=
      "\n# HELP varanus_server_heartbeat_failures_total Heartbeats of varanus's topology "
      "monitor that failed, per member\n"
      "# TYPE varanus_server_heartbeat_failures_total counter\n";
  for (const auto& [address, m] : members_) {
    out += "varanus_server_heartbeat_failures_total{member=\"";
    append_label_value(out, address);
    out += "\"} ";
    out += std::to_string(m.heartbeatFailures);
    out += '\n';
  }
  out +=
      "# HELP varanus_member_type The current server type of each monitored member (1; one "
      "series per member, gone when the member is closed)\n"
      "# TYPE varanus_member_type gauge\n";
  for (const auto& [address, m] : members_) {
    if (!m.open) continue;
    out += "varanus_member_type{member=\"";
    append_label_value(out, address);
    out += "\",via=\"";
    append_label_value(out, m.via);
    out += "\",type=\"";
    append_label_value(out, m.type);
    out += "\"} 1\n";
  }
  out +=
      "# HELP varanus_member_round_trip_seconds The latest round-trip time to each monitored "
      "member\n"
      "# TYPE varanus_member_round_trip_seconds gauge\n";
  for (const auto& [address, m] : members_) {
    if (!m.open || !m.rttMicros) continue;
    out += "varanus_member_round_trip_seconds{member=\"";
    append_label_value(out, address);
    out += "\"} ";
    append_double(out, static_cast<double>(*m.rttMicros) / 1e6);
    out += '\n';
  }
  out +=
      "# HELP varanus_topology_member_events_dropped_total Topology events of members past the "
      "first "
      "64, left out of the member series\n"
      "# TYPE varanus_topology_member_events_dropped_total counter\n"
      "varanus_topology_member_events_dropped_total ";
  out += std::to_string(membersDropped_);
  out += '\n';
}

void MetricsSink::write_(const RenderedEvent& event) {
  const monitor::Event& e = event.event();
  if (e.isTopology()) {
    std::lock_guard lock(mutex_);
    topology_event(e);
    return;
  }
  if (e.type != monitor::EventType::commandSucceeded && e.type != monitor::EventType::commandFailed)
    return;
  const bool failed = e.type == monitor::EventType::commandFailed;
  std::lock_guard lock(mutex_);
  if (e.hello != monitor::HelloKind::none) {
    ++hellos_[{monitor::to_string(e.hello), failed}];
    return;
  }
  const std::string_view command = command_label(e.commandName);
  const std::string_view db = database_label(e.databaseName);
  auto it = commands_.find(std::make_tuple(command, db, failed));
  if (it == commands_.end())
    it = commands_.emplace(std::make_tuple(command, std::string(db), failed), 0).first;
  ++it->second;
  Histogram& h = durations_[command];
  if (h.counts.empty()) h.counts.assign(options_.buckets.size() + 1, 0);
  const double secs = static_cast<double>(e.durationMicros) / 1e6;
  const auto b = std::lower_bound(options_.buckets.begin(), options_.buckets.end(), secs);
  ++h.counts[static_cast<std::size_t>(b - options_.buckets.begin())];
  h.sumMicros += e.durationMicros;
  ++h.count;
}

std::uint64_t MetricsSink::commands(std::string_view command, std::string_view database,
                                    std::string_view outcome) const {
  std::lock_guard lock(mutex_);
  const auto it = commands_.find(std::make_tuple(command, database, outcome == "failed"));
  return it == commands_.end() ? 0 : it->second;
}

void MetricsSink::render(std::string& out) const {
  std::lock_guard lock(mutex_);
  out +=
      "# HELP varanus_commands_total Commands completed (succeeded or failed), handshake and "
      "heartbeat hellos excluded\n# TYPE varanus_commands_total counter\n";
  for (const auto& [key, n] : commands_) {
    const auto& [command, db, failed] = key;
    out += "varanus_commands_total{command=\"";
    append_label_value(out, command);
    if (options_.maxDatabases != 0) {
      out += "\",database=\"";
      append_label_value(out, db);
    }
    out += failed ? "\",outcome=\"failed\"} " : "\",outcome=\"succeeded\"} ";
    out += std::to_string(n);
    out += '\n';
  }
  out +=
      "# HELP varanus_command_duration_seconds Command latency as the proxy saw it (request read "
      "to reply read), hellos excluded\n# TYPE varanus_command_duration_seconds histogram\n";
  for (const auto& [command, h] : durations_) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= options_.buckets.size(); ++i) {
      cumulative += h.counts[i];
      out += "varanus_command_duration_seconds_bucket{command=\"";
      append_label_value(out, command);
      out += "\",le=\"";
      if (i == options_.buckets.size())
        out += "+Inf";
      else
        append_double(out, options_.buckets[i]);
      out += "\"} ";
      out += std::to_string(cumulative);
      out += '\n';
    }
    out += "varanus_command_duration_seconds_sum{command=\"";
    append_label_value(out, command);
    out += "\"} ";
    // Summed in whole microseconds: 209 us twice is 0.000418, not the
    // 0.00041799999999999997 that adding doubles gives.
    append_double(out, static_cast<double>(h.sumMicros) / 1e6);
    out += "\nvaranus_command_duration_seconds_count{command=\"";
    append_label_value(out, command);
    out += "\"} ";
    out += std::to_string(h.count);
    out += '\n';
  }
  out +=
      "# HELP varanus_hellos_total Handshake and heartbeat hellos (kept out of command "
      "metrics)\n# TYPE varanus_hellos_total counter\n";
  for (const auto& [key, n] : hellos_) {
    out += "varanus_hellos_total{kind=\"";
    out += key.first;
    out += key.second ? "\",outcome=\"failed\"} " : "\",outcome=\"succeeded\"} ";
    out += std::to_string(n);
    out += '\n';
  }
  render_topology(out);
}

}  // namespace varanus::sinks
