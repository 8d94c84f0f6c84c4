// One server's checks without I/O: the hello sent, streaming once a
// topologyVersion is known, the RTT average, and what each outcome yields.
#include "varanus/monitor/server_check.hpp"

#include <bson/bson.h>
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

using namespace varanus::monitor::sdam;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

json to_json(const varanus::wire::BsonBytes& bytes) {
  bson_t b;
  REQUIRE(bson_init_static(&b, bytes.data(), bytes.size()));
  char* text = bson_as_canonical_extended_json(&b, nullptr);
  REQUIRE(text != nullptr);
  json j = json::parse(text);
  bson_free(text);
  return j;
}

/// Owns a BSON document made from Extended JSON.
struct Reply {
  bson_t* doc;
  explicit Reply(const char* extended_json) {
    bson_error_t err;
    doc = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(extended_json), -1, &err);
    REQUIRE_MESSAGE(doc != nullptr, err.message);
  }
  ~Reply() { bson_destroy(doc); }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  varanus::wire::BsonView view() const { return varanus::wire::BsonView::of(doc); }
};

const ViaMap kVia = {{"a:27017", "127.0.0.1:27018"}};

const char* kSecondary =
    R"({"ok": 1, "isWritablePrimary": false, "secondary": true, "setName": "rs0",)"
    R"( "hosts": ["a:27017"], "maxWireVersion": 21,)"
    R"( "topologyVersion": {"processId": {"$oid": "0000000000000000000000aa"},)"
    R"( "counter": {"$numberLong": "4"}}})";

}  // namespace

TEST_CASE("RTT: the first sample, then a 0.2-weighted average") {
  RttAverage rtt;
  CHECK_FALSE(rtt.value());
  rtt.add(1000us);
  CHECK(rtt.value() == 1000us);
  rtt.add(2000us);
  CHECK(rtt.value() == 1200us);
  rtt.add(200us);
  CHECK(rtt.value() == 1000us);
  rtt.reset();
  CHECK_FALSE(rtt.value());
}

TEST_CASE("the first hello is plain, after a topologyVersion, the awaitable one") {
  ServerCheck check("a:27017", 10'000ms);
  CHECK_FALSE(check.awaited());
  CHECK(to_json(check.hello_command()) ==
        json::parse(R"({"hello": {"$numberInt": "1"}, "helloOk": true, "$db": "admin"})"));
  CHECK(to_json(check.started(kVia).fields) ==
        json::parse(R"({"address": "a:27017", "via": "127.0.0.1:27018", "awaited": false})"));

  Reply secondary(kSecondary);
  auto out = check.succeeded(secondary.view(), 800us, false, kVia);
  CHECK(out.description.type == ServerType::RSSecondary);
  CHECK(out.description.roundTripTime == 800us);
  CHECK(out.heartbeat.name == "serverHeartbeatSucceeded");
  CHECK(to_json(out.heartbeat.fields)["durationMicros"] ==
        json::parse(R"({"$numberLong": "800"})"));

  REQUIRE(check.awaited());
  CHECK(to_json(check.hello_command()) ==
        json::parse(R"({"hello": {"$numberInt": "1"}, "helloOk": true, "topologyVersion":)"
                    R"( {"processId": {"$oid": "0000000000000000000000aa"},)"
                    R"( "counter": {"$numberLong": "4"}},)"
                    R"( "maxAwaitTimeMS": {"$numberLong": "10000"}, "$db": "admin"})"));

  // An awaited reply took as long as the server waited: not a round trip.
  auto streamed = check.succeeded(secondary.view(), 9'000'000us, true, kVia);
  CHECK(streamed.description.roundTripTime == 800us);
  CHECK(to_json(streamed.heartbeat.fields)["awaited"] == true);
}

TEST_CASE("a failed check: Unknown with the error, RTT reset, back to plain hellos") {
  ServerCheck check("a:27017", 500ms);
  Reply secondary(kSecondary);
  check.succeeded(secondary.view(), 300us, false, kVia);
  REQUIRE(check.awaited());
  auto out = check.failed("connection refused", 40us, true, kVia);
  CHECK(out.description.type == ServerType::Unknown);
  CHECK(out.description.error == "connection refused");
  CHECK_FALSE(out.description.roundTripTime);
  CHECK_FALSE(check.round_trip_time());
  CHECK_FALSE(check.awaited());
  CHECK(out.heartbeat.name == "serverHeartbeatFailed");
  CHECK(to_json(out.heartbeat.fields)["failure"] == "connection refused");

  // Back: the RTT starts again from the new sample.
  auto again = check.succeeded(secondary.view(), 5000us, false, kVia);
  CHECK(again.description.type == ServerType::RSSecondary);
  CHECK(again.description.roundTripTime == 5000us);

  // ok: 0 is a failed check too.
  Reply notOk(R"({"ok": 0, "errmsg": "interrupted at shutdown"})");
  auto down = check.succeeded(notOk.view(), 100us, false, kVia);
  CHECK(down.description.type == ServerType::Unknown);
  CHECK_FALSE(down.description.roundTripTime);
  CHECK_FALSE(check.round_trip_time());
}

TEST_CASE("RTT samples from the RTT connection feed the awaited replies' descriptions") {
  ServerCheck check("a:27017", 500ms);
  Reply secondary(kSecondary);
  check.succeeded(secondary.view(), 1000us, false, kVia);
  check.add_rtt_sample(2000us);
  CHECK(check.round_trip_time() == 1200us);
  auto streamed = check.succeeded(secondary.view(), 400'000us, true, kVia);
  CHECK(streamed.description.roundTripTime == 1200us);
}
