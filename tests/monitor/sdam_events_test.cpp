// The SDAM monitoring events as documents: names, field names and order,
// for the updates of a failover.
#include "varanus/monitor/sdam_events.hpp"

#include <bson/bson.h>
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using namespace varanus::monitor::sdam;
using nlohmann::json;

namespace {

json to_json(const varanus::wire::BsonBytes& bytes) {
  bson_t b;
  REQUIRE(bson_init_static(&b, bytes.data(), bytes.size()));
  char* text = bson_as_relaxed_extended_json(&b, nullptr);
  REQUIRE(text != nullptr);
  json j = json::parse(text);
  bson_free(text);
  return j;
}

ServerDescription hello(const std::string& address, const std::string& extended_json,
                        std::chrono::microseconds rtt = std::chrono::microseconds(250)) {
  bson_error_t err;
  bson_t* doc = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(extended_json.data()),
                                   static_cast<ssize_t>(extended_json.size()), &err);
  REQUIRE_MESSAGE(doc != nullptr, err.message);
  ServerDescription sd =
      ServerDescription::from_hello(address, varanus::wire::BsonView::of(doc), rtt);
  bson_destroy(doc);
  return sd;
}

std::vector<std::string> names(const std::vector<TopologyEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.name);
  return out;
}

const ViaMap kVia = {{"a:27017", "127.0.0.1:27018"}, {"b:27017", "127.0.0.1:27019"}};

const char* kPrimaryA =
    R"({"ok": 1, "isWritablePrimary": true, "setName": "rs0", "setVersion": 1,)"
    R"( "electionId": {"$oid": "7fffffff0000000000000001"}, "hosts": ["a:27017", "b:27017"],)"
    R"( "primary": "a:27017", "me": "a:27017", "tags": {"dc": "east"}, "maxWireVersion": 21})";
const char* kSecondaryB =
    R"({"ok": 1, "isWritablePrimary": false, "secondary": true, "setName": "rs0", "setVersion": 1,)"
    R"( "hosts": ["a:27017", "b:27017"], "primary": "a:27017", "me": "b:27017", "maxWireVersion": 21})";
const char* kPrimaryB =
    R"({"ok": 1, "isWritablePrimary": true, "setName": "rs0", "setVersion": 1,)"
    R"( "electionId": {"$oid": "7fffffff0000000000000002"}, "hosts": ["a:27017", "b:27017"],)"
    R"( "primary": "b:27017", "me": "b:27017", "maxWireVersion": 21})";

}  // namespace

TEST_CASE("opening: topologyOpening, the initial description, serverOpening per seed with via") {
  Topology t({{"a:27017", "b:27017"}, std::string("rs0"), false});
  const auto events = opening_events(t.description(), kVia);
  CHECK(names(events) == std::vector<std::string>{"topologyOpening", "topologyDescriptionChanged",
                                                  "serverOpening", "serverOpening"});
  CHECK(to_json(events[0].fields) == json::object());
  const json tdc = to_json(events[1].fields);
  CHECK(tdc["previousDescription"] == json::parse(R"({"type": "Unknown", "servers": []})"));
  CHECK(tdc["newDescription"] ==
        json::parse(R"({"type": "ReplicaSetNoPrimary", "setName": "rs0", "servers":)"
                    R"( [{"address": "a:27017", "type": "Unknown"},)"
                    R"( {"address": "b:27017", "type": "Unknown"}]})"));
  CHECK(to_json(events[2].fields) ==
        json::parse(R"({"address": "a:27017", "via": "127.0.0.1:27018"})"));
}

TEST_CASE(
    "a step-down: both members change, then one topologyDescriptionChanged naming the new "
    "primary") {
  Topology t({{"a:27017", "b:27017"}, std::string("rs0"), false});
  t.apply(hello("a:27017", kPrimaryA));
  t.apply(hello("b:27017", kSecondaryB));
  REQUIRE(t.description().type == TopologyType::ReplicaSetWithPrimary);

  const Update u = t.apply(hello("b:27017", kPrimaryB));
  const auto events = update_events(u, t.description(), kVia);
  REQUIRE(names(events) == std::vector<std::string>{"serverDescriptionChanged",
                                                    "serverDescriptionChanged",
                                                    "topologyDescriptionChanged"});
  const json b = to_json(events[0].fields);
  CHECK(b["address"] == "b:27017");
  CHECK(b["via"] == "127.0.0.1:27019");
  CHECK(b["previousDescription"]["type"] == "RSSecondary");
  CHECK(b["newDescription"] ==
        json::parse(R"({"address": "b:27017", "type": "RSPrimary", "setName": "rs0",)"
                    R"( "setVersion": 1, "electionId": {"$oid": "7fffffff0000000000000002"},)"
                    R"( "primary": "b:27017", "hosts": ["a:27017", "b:27017"],)"
                    R"( "roundTripTimeMicros": 250})"));
  const json a = to_json(events[1].fields);
  CHECK(a["address"] == "a:27017");
  CHECK(a["previousDescription"]["type"] == "RSPrimary");
  CHECK(a["previousDescription"]["tags"] == json::parse(R"({"dc": "east"})"));
  CHECK(a["newDescription"] ==
        json::parse(R"({"address": "a:27017", "type": "Unknown",)"
                    R"( "error": "primary marked stale due to discovery of newer primary"})"));
  const json tdc = to_json(events[2].fields);
  CHECK(tdc["previousDescription"]["type"] == "ReplicaSetWithPrimary");
  CHECK(tdc["newDescription"] ==
        json::parse(R"({"type": "ReplicaSetWithPrimary", "setName": "rs0", "servers":)"
                    R"( [{"address": "a:27017", "type": "Unknown"},)"
                    R"( {"address": "b:27017", "type": "RSPrimary"}]})"));

  // The same reply again, only slower: no event at all.
  CHECK(update_events(t.apply(hello("b:27017", kPrimaryB, std::chrono::microseconds(9000))),
                      t.description(), kVia)
            .empty());
}

TEST_CASE("a member added to the set: serverOpening, then the topology naming it") {
  Topology t({{"a:27017"}, std::string("rs0"), false});
  t.apply(hello("a:27017", R"({"ok": 1, "isWritablePrimary": true, "setName": "rs0",)"
                           R"( "hosts": ["a:27017"], "maxWireVersion": 21})"));
  const Update u = t.apply(hello("a:27017", R"({"ok": 1, "isWritablePrimary": true, "setName":)"
                                            R"( "rs0", "hosts": ["a:27017", "c:27017"],)"
                                            R"( "maxWireVersion": 21})"));
  const auto events = update_events(u, t.description(), kVia);
  REQUIRE(names(events) == std::vector<std::string>{"serverDescriptionChanged", "serverOpening",
                                                    "topologyDescriptionChanged"});
  CHECK(to_json(events[1].fields) == json::parse(R"({"address": "c:27017"})"));  // no listener yet
  CHECK(to_json(events[2].fields)["newDescription"]["servers"][1] ==
        json::parse(R"({"address": "c:27017", "type": "Unknown"})"));
}

TEST_CASE("heartbeats and closing") {
  auto started = heartbeat_started("a:27017", kVia, true);
  CHECK(started.name == "serverHeartbeatStarted");
  CHECK(to_json(started.fields) ==
        json::parse(R"({"address": "a:27017", "via": "127.0.0.1:27018", "awaited": true})"));
  bson_t* reply = BCON_NEW("ok", BCON_DOUBLE(1.0));
  auto ok = heartbeat_succeeded("a:27017", kVia, false, std::chrono::microseconds(812),
                                varanus::wire::BsonView::of(reply));
  bson_destroy(reply);
  CHECK(ok.name == "serverHeartbeatSucceeded");
  CHECK(to_json(ok.fields) ==
        json::parse(R"({"address": "a:27017", "via": "127.0.0.1:27018", "awaited": false,)"
                    R"( "durationMicros": 812, "reply": {"ok": 1.0}})"));
  auto failed =
      heartbeat_failed("c:27017", kVia, false, std::chrono::microseconds(5), "connection refused");
  CHECK(failed.name == "serverHeartbeatFailed");
  CHECK(to_json(failed.fields) ==
        json::parse(R"({"address": "c:27017", "awaited": false, "durationMicros": 5,)"
                    R"( "failure": "connection refused"})"));

  Topology t({{"a:27017", "b:27017"}, std::string("rs0"), false});
  CHECK(names(closing_events(t.description(), kVia)) ==
        std::vector<std::string>{"serverClosed", "serverClosed", "topologyClosed"});
  // Every name is one the sinks can filter on.
  for (const auto& e : {started, ok, failed})
    CHECK(std::find(std::begin(kTopologyEventNames), std::end(kTopologyEventNames), e.name) !=
          std::end(kTopologyEventNames));
}

TEST_CASE("topology_event: the Event that carries an SDAM event, secrets left out") {
  using varanus::monitor::EventType;
  const auto when = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  const auto opening = opening_events(Topology({{"a:27017"}, {}, false}).description(), kVia);
  const auto e = varanus::monitor::topology_event(opening[2], when);
  CHECK(e.type == EventType::topology);
  CHECK(e.isTopology());
  CHECK_FALSE(e.isCommand());
  CHECK(e.commandName == "serverOpening");
  CHECK(varanus::monitor::event_name(e) == "serverOpening");
  CHECK(varanus::monitor::to_string(e.type) == "topology");
  CHECK(e.connection == nullptr);
  CHECK(e.time == when);
  CHECK(e.document == opening[2].fields);
  CHECK_FALSE(e.redacted);
  CHECK(is_topology_event_name("serverOpening"));
  CHECK_FALSE(is_topology_event_name("commandStarted"));

  // A reply with a SASL payload or a user's mechanisms: emptied, the rest kept.
  for (const char* secret : {R"({"ok": 1, "speculativeAuthenticate": {"payload": "c2VjcmV0"}})",
                             R"({"ok": 1, "saslSupportedMechs": ["SCRAM-SHA-256"]})"}) {
    bson_error_t err;
    bson_t* reply = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(secret), -1, &err);
    REQUIRE(reply != nullptr);
    const auto hb = heartbeat_succeeded("a:27017", kVia, true, std::chrono::microseconds(7),
                                        varanus::wire::BsonView::of(reply));
    bson_destroy(reply);
    const auto r = varanus::monitor::topology_event(hb, when);
    CHECK(r.redacted);
    CHECK(to_json(r.document) ==
          json::parse(R"({"address": "a:27017", "via": "127.0.0.1:27018", "awaited": true,)"
                      R"( "durationMicros": 7, "reply": {}})"));
  }
  // An ordinary reply is kept whole.
  bson_t* plain = BCON_NEW("ok", BCON_DOUBLE(1.0), "setName", BCON_UTF8("rs0"));
  const auto hb = heartbeat_succeeded("a:27017", kVia, false, std::chrono::microseconds(7),
                                      varanus::wire::BsonView::of(plain));
  bson_destroy(plain);
  const auto kept = varanus::monitor::topology_event(hb, when);
  CHECK_FALSE(kept.redacted);
  CHECK(kept.document == hb.fields);
}
