// The SDAM state machine against the specification's own JSON tests
// (tests/data/sdam, see its README): for each file, a Topology made from
// the file's URI is fed the hello replies of each phase, and the topology
// and server descriptions must be the phase's outcome. The monitoring/
// files check the events an update yields (what changed, in order), and so
// the "server descriptions are equal" rule.
#include "varanus/monitor/sdam.hpp"

#include <bson/bson.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

using namespace varanus::monitor::sdam;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json load(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

std::vector<fs::path> files_in(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(std::string(VARANUS_TESTDATA_DIR) + "/sdam/" + dir))
    if (e.path().extension() == ".json") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

/// The URI's seeds, replicaSet and directConnection (the test files use no
/// other option that matters to a monitor).
Settings settings_of(const std::string& uri) {
  Settings s;
  std::string rest = uri.substr(std::string("mongodb://").size());
  const auto end = rest.find_first_of("/?");
  const std::string hosts = rest.substr(0, end);
  for (std::size_t start = 0;;) {
    const auto comma = hosts.find(',', start);
    std::string h = hosts.substr(start, comma - start);
    if (h.front() == '[' ? h.find("]:") == std::string::npos : h.find(':') == std::string::npos) {
      h += ":27017";
    }
    s.seeds.push_back(h);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const auto q = uri.find('?');
  if (q != std::string::npos) {
    std::string opts = uri.substr(q + 1);
    for (std::size_t start = 0;;) {
      const auto amp = opts.find('&', start);
      const std::string pair = opts.substr(start, amp - start);
      const auto eq = pair.find('=');
      const std::string k = pair.substr(0, eq), v = pair.substr(eq + 1);
      if (k == "replicaSet") s.setName = v;
      if (k == "directConnection") s.directConnection = v == "true";
      if (amp == std::string::npos) break;
      start = amp + 1;
    }
  }
  return s;
}

/// A hello reply as the monitor would have it: Extended JSON to BSON.
ServerDescription describe(const std::string& address, const json& reply) {
  if (reply.empty()) return ServerDescription::from_error(address, "network error");
  const std::string text = reply.dump();
  bson_error_t err;
  bson_t* doc = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(text.data()),
                                   static_cast<ssize_t>(text.size()), &err);
  REQUIRE_MESSAGE(doc != nullptr, err.message);
  ServerDescription sd = ServerDescription::from_hello(address, varanus::wire::BsonView::of(doc),
                                                       std::chrono::microseconds(100));
  bson_destroy(doc);
  return sd;
}

std::string oid_of(const json& v) {
  return v.at("$oid").get<std::string>();
}

std::int64_t integer_of(const json& v) {
  if (v.is_object()) return std::stoll(v.at("$numberLong").get<std::string>());
  return v.get<std::int64_t>();
}

/// Checks one server of an outcome.
void check_server(const std::string& address, const ServerDescription& sd, const json& want) {
  INFO("server " << address);
  std::string type = want.at("type");
  if (type == "PossiblePrimary") type = "Unknown";  // same thing for a concurrent monitor
  CHECK(to_string(sd.type) == type);
  if (want.contains("setName")) {
    if (want["setName"].is_null()) {
      CHECK_FALSE(sd.setName);
    } else {
      CHECK(sd.setName.value_or("(null)") == want["setName"].get<std::string>());
    }
  }
  if (want.contains("setVersion")) {
    if (want["setVersion"].is_null()) {
      CHECK_FALSE(sd.setVersion);
    } else {
      CHECK(sd.setVersion.value_or(-1) == integer_of(want["setVersion"]));
    }
  }
  if (want.contains("electionId")) {
    if (want["electionId"].is_null()) {
      CHECK_FALSE(sd.electionId);
    } else {
      REQUIRE(sd.electionId);
      CHECK(sd.electionId->hex() == oid_of(want["electionId"]));
    }
  }
  if (want.contains("topologyVersion")) {
    if (want["topologyVersion"].is_null()) {
      CHECK_FALSE(sd.topologyVersion);
    } else {
      REQUIRE(sd.topologyVersion);
      CHECK(sd.topologyVersion->processId.hex() == oid_of(want["topologyVersion"]["processId"]));
      CHECK(sd.topologyVersion->counter == integer_of(want["topologyVersion"]["counter"]));
    }
  }
  if (want.contains("logicalSessionTimeoutMinutes")) {
    if (want["logicalSessionTimeoutMinutes"].is_null()) {
      CHECK_FALSE(sd.logicalSessionTimeoutMinutes);
    } else {
      CHECK(sd.logicalSessionTimeoutMinutes.value_or(-1) ==
            integer_of(want["logicalSessionTimeoutMinutes"]));
    }
  }
  if (want.contains("minWireVersion"))
    CHECK(sd.minWireVersion == integer_of(want["minWireVersion"]));
  if (want.contains("maxWireVersion"))
    CHECK(sd.maxWireVersion == integer_of(want["maxWireVersion"]));
  if (want.contains("error")) {
    REQUIRE(sd.error);
    CHECK(sd.error->find(want["error"].get<std::string>()) != std::string::npos);
  }
}

void check_outcome(const TopologyDescription& td, const json& want) {
  CHECK(to_string(td.type) == want.at("topologyType").get<std::string>());
  if (want.contains("setName")) {
    if (want["setName"].is_null()) {
      CHECK_FALSE(td.setName);
    } else {
      CHECK(td.setName.value_or("(null)") == want["setName"].get<std::string>());
    }
  }
  if (want.contains("logicalSessionTimeoutMinutes")) {
    if (want["logicalSessionTimeoutMinutes"].is_null()) {
      CHECK_FALSE(td.logicalSessionTimeoutMinutes);
    } else {
      CHECK(td.logicalSessionTimeoutMinutes.value_or(-1) ==
            integer_of(want["logicalSessionTimeoutMinutes"]));
    }
  }
  if (want.contains("maxSetVersion"))
    CHECK(td.maxSetVersion.value_or(-1) == integer_of(want["maxSetVersion"]));
  if (want.contains("maxElectionId")) {
    REQUIRE(td.maxElectionId);
    CHECK(td.maxElectionId->hex() == oid_of(want["maxElectionId"]));
  }
  if (want.contains("compatible")) CHECK(td.compatible == want["compatible"].get<bool>());
  std::set<std::string> wantAddresses, haveAddresses;
  for (const auto& [address, server] : want.at("servers").items()) wantAddresses.insert(address);
  for (const auto& [address, server] : td.servers) haveAddresses.insert(address);
  CHECK(haveAddresses == wantAddresses);
  for (const auto& [address, server] : want.at("servers").items()) {
    auto it = td.servers.find(address);
    if (it != td.servers.end()) check_server(address, it->second, server);
  }
}

/// Runs every file of one directory; returns how many ran.
int run_outcome_files(const std::string& dir) {
  int ran = 0;
  for (const auto& path : files_in(dir)) {
    const json t = load(path);
    INFO("file " << dir << "/" << path.filename().string() << ": "
                 << t.value("description", std::string()));
    Topology topology(settings_of(t.at("uri")));
    int phase = 0;
    for (const auto& ph : t.at("phases")) {
      INFO("phase " << phase++);
      REQUIRE_FALSE(ph.contains("applicationErrors"));  // none in rs/, sharded/, single/
      for (const auto& r : ph.value("responses", json::array()))
        topology.apply(describe(r.at(0).get<std::string>(), r.at(1)));
      check_outcome(topology.description(), ph.at("outcome"));
    }
    ++ran;
  }
  return ran;
}

// --- monitoring/: the events, as the spec's test format names them ---

json servers_json(const TopologyDescription& td) {
  json out = json::array();
  for (const auto& [address, sd] : td.servers)
    out.push_back({{"address", address}, {"type", std::string(to_string(sd.type))}});
  return out;
}

json topology_json(const TopologyDescription& td) {
  return {{"topologyType", std::string(to_string(td.type))}, {"servers", servers_json(td)}};
}

/// The comparable part of an expected event: its name, address, types.
json reduce_expected(const json& e) {
  REQUIRE(e.size() == 1);
  const std::string name = e.begin().key();
  const json& body = e.begin().value();
  json out = {{"event", name}};
  if (body.contains("address")) out["address"] = body["address"];
  for (const char* k : {"previousDescription", "newDescription"}) {
    if (!body.contains(k)) continue;
    const json& d = body[k];
    if (d.contains("topologyType")) {
      json servers = json::array();
      for (const auto& s : d["servers"])
        servers.push_back({{"address", s["address"]},
                           {"type", s["type"] == "PossiblePrimary" ? json("Unknown") : s["type"]}});
      std::sort(servers.begin(), servers.end(),
                [](const json& a, const json& b) { return a["address"] < b["address"]; });
      out[k] = {{"topologyType", d["topologyType"]}, {"servers", servers}};
    } else {
      out[k] = {{"type", d["type"]}};
    }
  }
  return out;
}

void events_of(const Update& u, const TopologyDescription& now, json& out) {
  for (const auto& c : u.changed) {
    out.push_back({{"event", "server_description_changed_event"},
                   {"address", c.current.address},
                   {"previousDescription", {{"type", std::string(to_string(c.previous.type))}}},
                   {"newDescription", {{"type", std::string(to_string(c.current.type))}}}});
  }
  for (const auto& a : u.opened) out.push_back({{"event", "server_opening_event"}, {"address", a}});
  for (const auto& a : u.closed) out.push_back({{"event", "server_closed_event"}, {"address", a}});
  if (u.previous) {
    out.push_back({{"event", "topology_description_changed_event"},
                   {"previousDescription", topology_json(*u.previous)},
                   {"newDescription", topology_json(now)}});
  }
}

}  // namespace

TEST_CASE("SDAM spec tests: rs/ (replica sets)") {
  CHECK(run_outcome_files("rs") >= 70);
}

TEST_CASE("SDAM spec tests: sharded/") {
  CHECK(run_outcome_files("sharded") >= 8);
}

TEST_CASE("SDAM spec tests: single/") {
  CHECK(run_outcome_files("single") >= 15);
}

TEST_CASE("SDAM monitoring spec tests: the events each update yields, in order") {
  int ran = 0;
  for (const auto& path : files_in("monitoring")) {
    const json t = load(path);
    INFO("file monitoring/" << path.filename().string());
    Topology topology(settings_of(t.at("uri")));
    json have = json::array();
    // At construction: topologyOpening, the initial description, each seed.
    have.push_back({{"event", "topology_opening_event"}});
    TopologyDescription empty;
    have.push_back({{"event", "topology_description_changed_event"},
                    {"previousDescription", topology_json(empty)},
                    {"newDescription", topology_json(topology.description())}});
    for (const auto& [address, sd] : topology.description().servers)
      have.push_back({{"event", "server_opening_event"}, {"address", address}});
    int phase = 0;
    for (const auto& ph : t.at("phases")) {
      INFO("phase " << phase++);
      for (const auto& r : ph.value("responses", json::array())) {
        const Update u = topology.apply(describe(r.at(0).get<std::string>(), r.at(1)));
        events_of(u, topology.description(), have);
      }
      json want = json::array();
      for (const auto& e : ph.at("outcome").at("events")) want.push_back(reduce_expected(e));
      CHECK(have.dump(1) == want.dump(1));
      have = json::array();
    }
    ++ran;
  }
  CHECK(ran >= 7);
}

TEST_CASE("RTT alone is no change, a new topologyVersion counter is") {
  Topology t({{"a:27017"}, std::string("rs"), false});
  const std::string hello =
      R"({"ok": 1, "isWritablePrimary": true, "setName": "rs", "hosts": ["a:27017"],)"
      R"( "maxWireVersion": 21, "topologyVersion": {"processId": {"$oid": "000000000000000000000001"},)"
      R"( "counter": {"$numberLong": "1"}}})";
  const json reply = json::parse(hello);
  Update first = t.apply(describe("a:27017", reply));
  CHECK(first.changed.size() == 1);
  CHECK(first.previous);
  ServerDescription again = describe("a:27017", reply);
  again.roundTripTime = std::chrono::microseconds(99'000);
  Update second = t.apply(again);
  CHECK(second.applied);
  CHECK(second.changed.empty());
  CHECK_FALSE(second.previous);
  // An older counter from the same process is ignored altogether.
  json older = reply;
  older["topologyVersion"]["counter"] = {{"$numberLong", "0"}};
  older["isWritablePrimary"] = false;
  older["secondary"] = true;
  CHECK_FALSE(t.apply(describe("a:27017", older)).applied);
  CHECK(t.description().servers.at("a:27017").type == ServerType::RSPrimary);
  // A newer one that steps down is a change of both descriptions.
  json newer = older;
  newer["topologyVersion"]["counter"] = {{"$numberLong", "2"}};
  Update down = t.apply(describe("a:27017", newer));
  REQUIRE(down.changed.size() == 1);
  CHECK(down.changed[0].previous.type == ServerType::RSPrimary);
  CHECK(down.changed[0].current.type == ServerType::RSSecondary);
  REQUIRE(down.previous);
  CHECK(down.previous->type == TopologyType::ReplicaSetWithPrimary);
  CHECK(t.description().type == TopologyType::ReplicaSetNoPrimary);
}

TEST_CASE("a failed check: Unknown with the error, ok: 0 names errmsg") {
  Topology t({{"a:27017"}, std::string("rs"), false});
  Update u = t.apply(ServerDescription::from_error("a:27017", "connection refused"));
  CHECK(u.applied);
  REQUIRE(u.changed.size() == 1);  // the error is part of equality
  CHECK(u.changed[0].current.error == "connection refused");
  const ServerDescription notOk =
      describe("a:27017", json::parse(R"({"ok": 0, "errmsg": "node is shutting down"})"));
  CHECK(notOk.type == ServerType::Unknown);
  CHECK(notOk.error == "hello failed: node is shutting down");
  CHECK_FALSE(notOk.roundTripTime);
}
