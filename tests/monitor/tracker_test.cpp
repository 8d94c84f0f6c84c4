// Tracker behaviour, driven with wire frames built in memory: no sockets.
#include "varanus/monitor/tracker.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "varanus/monitor/summary.hpp"
#include "varanus/wire/builder.hpp"

using namespace varanus;
using namespace std::chrono_literals;
using monitor::EventType;
using monitor::HelloKind;
using nlohmann::json;

namespace {

// A BSON document parsed from (relaxed) Extended JSON, owned.
struct Doc {
  bson_t* b = nullptr;
  explicit Doc(const std::string& j) {
    bson_error_t err;
    b = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(j.data()),
                           static_cast<ssize_t>(j.size()), &err);
    REQUIRE_MESSAGE(b != nullptr, err.message);
  }
  ~Doc() { bson_destroy(b); }
  Doc(const Doc&) = delete;
  wire::BsonView view() const { return wire::BsonView::of(b); }
};

json to_json(const wire::BsonBytes& bytes) {
  if (bytes.empty()) return nullptr;
  bson_t doc;
  REQUIRE(bson_init_static(&doc, bytes.data(), bytes.size()));
  char* s = bson_as_relaxed_extended_json(&doc, nullptr);
  json j = json::parse(s);
  bson_free(s);
  return j;
}

struct Recorder : monitor::EventOutput {
  std::vector<monitor::Event> events;
  void publish(monitor::Event&& e) override { events.push_back(std::move(e)); }
  std::vector<monitor::Event> commands() const {
    std::vector<monitor::Event> out;
    for (const auto& e : events)
      if (e.isCommand()) out.push_back(e);
    return out;
  }
};

// A fake clock: tests move time by hand.
struct FakeTime {
  std::chrono::steady_clock::time_point mono{};
  monitor::Clock at(std::chrono::microseconds t) const {
    return {mono + t, std::chrono::system_clock::time_point{} + t};
  }
};

struct Fixture {
  Recorder out;
  FakeTime clock;
  monitor::Tracker tracker;
  explicit Fixture(monitor::TrackerOptions options = {})
      : tracker(std::make_shared<monitor::ConnectionInfo>(
                    monitor::ConnectionInfo{1, "127.0.0.1:50000", "127.0.0.1:27017", "", "", {}}),
                out, options) {}
  void client(const wire::Frame& f, std::chrono::microseconds t = 0us) {
    tracker.client_data(f, clock.at(t));
  }
  void server(const wire::Frame& f, std::chrono::microseconds t = 0us) {
    tracker.server_data(f, clock.at(t));
  }
};

wire::Frame msg(std::int32_t id, std::int32_t to, const std::string& body,
                std::uint32_t flags = 0) {
  Doc d(body);
  return wire::build_op_msg(id, to, flags, d.view());
}

}  // namespace

TEST_CASE("a reply is paired with its request by responseTo and timed") {
  Fixture f;
  f.client(msg(7, 0, R"({"ping": 1, "$db": "admin"})"), 100us);
  f.server(msg(900, 7, R"({"ok": 1.0})"), 350us);
  auto& ev = f.out.events;
  REQUIRE(ev.size() == 2);
  CHECK(ev[0].type == EventType::commandStarted);
  CHECK(ev[0].commandName == "ping");
  CHECK(ev[0].databaseName == "admin");
  CHECK(ev[0].requestId == 7);
  CHECK(to_json(ev[0].document)["ping"] == 1);
  CHECK(ev[1].type == EventType::commandSucceeded);
  CHECK(ev[1].requestId == 7);
  CHECK(ev[1].durationMicros == 250);
  CHECK(to_json(ev[1].document)["ok"] == 1.0);
}

TEST_CASE("many requests may be outstanding and replies come in any order") {
  Fixture f;
  for (int id = 1; id <= 5; ++id) f.client(msg(id, 0, R"({"find": "c", "$db": "d"})"));
  for (int id = 5; id >= 1; --id) f.server(msg(100 + id, id, R"({"ok": 1})"));
  auto& ev = f.out.events;
  REQUIRE(ev.size() == 10);
  for (int i = 0; i < 5; ++i) {
    CHECK(ev[5 + i].type == EventType::commandSucceeded);
    CHECK(ev[5 + i].requestId == 5 - i);
  }
}

TEST_CASE("success and failure follow the command monitoring spec") {
  Fixture f;
  SUBCASE("ok 0 is failed and keeps the server's error") {
    f.client(msg(1, 0, R"({"nope": 1, "$db": "d"})"));
    f.server(msg(
        2, 1,
        R"({"ok": 0, "errmsg": "no such command: 'nope'", "code": 59, "codeName": "CommandNotFound"})"));
    REQUIRE(f.out.events.size() == 2);
    CHECK(f.out.events[1].type == EventType::commandFailed);
    CHECK(to_json(f.out.events[1].document)["code"] == 59);
    CHECK_FALSE(f.out.events[1].networkFailure());
  }
  SUBCASE("writeErrors and writeConcernError are still succeeded") {
    f.client(msg(1, 0, R"({"insert": "c", "$db": "d"})"));
    f.server(msg(
        2, 1,
        R"({"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000"}]})"));
    f.client(msg(3, 0, R"({"insert": "c", "$db": "d"})"));
    f.server(msg(4, 3, R"({"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "wc"}})"));
    REQUIRE(f.out.events.size() == 4);
    CHECK(f.out.events[1].type == EventType::commandSucceeded);
    CHECK(f.out.events[3].type == EventType::commandSucceeded);
  }
  SUBCASE("a missing ok is failed") {
    f.client(msg(1, 0, R"({"ping": 1, "$db": "d"})"));
    f.server(msg(2, 1, R"({"weird": true})"));
    CHECK(f.out.events[1].type == EventType::commandFailed);
  }
}

TEST_CASE("an unacknowledged write succeeds at once with reply {ok: 1}") {
  Fixture f;
  f.client(
      msg(1, 0, R"({"insert": "c", "$db": "d", "writeConcern": {"w": 0}})", wire::kMoreToCome));
  auto& ev = f.out.events;
  REQUIRE(ev.size() == 2);
  CHECK(ev[1].type == EventType::commandSucceeded);
  CHECK(ev[1].unacknowledged);
  CHECK(to_json(ev[1].document) == json{{"ok", 1.0}});
  // Nothing is left pending: closing fails nothing.
  f.tracker.closed("client closed", f.clock.at(0us));
  CHECK(f.out.commands().size() == 2);
}

TEST_CASE("kind-1 document sequences are merged into the command as arrays") {
  Fixture f;
  Doc body(R"({"insert": "coll", "$db": "db"})");
  Doc a(R"({"_id": 1})"), b(R"({"_id": 2})");
  wire::DocumentSequence seq{"documents", {a.view(), b.view()}};
  f.client(wire::build_op_msg(1, 0, 0, body.view(), std::span(&seq, 1)));
  REQUIRE(f.out.events.size() == 1);
  auto cmd = to_json(f.out.events[0].document);
  CHECK(cmd["insert"] == "coll");
  CHECK(cmd["documents"] == json::array({json{{"_id", 1}}, json{{"_id", 2}}}));
}

TEST_CASE("an exhaust getMore stream becomes one started/succeeded pair per reply") {
  Fixture f;
  f.client(msg(10, 0, R"({"getMore": {"$numberLong": "77"}, "collection": "c", "$db": "d"})",
               wire::kExhaustAllowed),
           0us);
  const std::string batch =
      R"({"cursor": {"id": {"$numberLong": "77"}, "ns": "d.c", "nextBatch": [{"x": 1}]}, "ok": 1})";
  f.server(msg(500, 10, batch, wire::kMoreToCome), 100us);
  f.server(msg(501, 500, batch, wire::kMoreToCome), 250us);
  f.server(
      msg(502, 501,
          R"({"cursor": {"id": {"$numberLong": "0"}, "ns": "d.c", "nextBatch": []}, "ok": 1})"),
      300us);
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 6);
  std::vector<std::int32_t> ids;
  for (const auto& e : ev) {
    CHECK(e.commandName == "getMore");
    CHECK(e.exhaust);
    ids.push_back(e.requestId);
  }
  CHECK(ids == std::vector<std::int32_t>{10, 10, 500, 500, 501, 501});
  CHECK(ev[1].durationMicros == 100);
  CHECK(ev[3].durationMicros == 150);  // timed from the previous reply
  CHECK(ev[5].durationMicros == 50);
  CHECK(to_json(ev[2].document)["collection"] == "c");
  CHECK(to_json(ev[2].document)["getMore"] == 77);
  f.tracker.closed("client closed", f.clock.at(400us));
  CHECK(f.out.commands().size() == 6);  // the stream ended: nothing pending
}

TEST_CASE("closing fails every pending request, exhaust streams included") {
  Fixture f;
  f.client(msg(1, 0, R"({"find": "c", "$db": "d"})"), 0us);
  f.client(msg(2, 0, R"({"getMore": {"$numberLong": "5"}, "collection": "c", "$db": "d"})",
               wire::kExhaustAllowed),
           10us);
  f.server(msg(600, 2,
               R"({"cursor": {"id": {"$numberLong": "5"}, "ns": "d.c", "nextBatch": []}, "ok": 1})",
               wire::kMoreToCome),
           20us);
  f.tracker.closed("upstream reset: Connection reset by peer", f.clock.at(50us));
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 6);
  CHECK(ev[4].type == EventType::commandFailed);
  CHECK(ev[4].requestId == 1);
  CHECK(ev[4].networkFailure());
  CHECK(ev[4].message == "upstream reset: Connection reset by peer");
  CHECK(ev[4].durationMicros == 50);
  CHECK(ev[5].type == EventType::commandFailed);
  CHECK(ev[5].requestId == 600);
  CHECK(ev[5].exhaust);
  auto& last = f.out.events.back();
  CHECK(last.type == EventType::connectionClosed);
  CHECK(last.commands == 3);
  f.tracker.closed("again", f.clock.at(60us));  // idempotent
  CHECK(f.out.events.back().message == "upstream reset: Connection reset by peer");
}

TEST_CASE("sensitive commands are redacted, the request decides, the reply inherits") {
  Fixture f;
  SUBCASE("saslStart in any case") {
    f.client(msg(
        1, 0,
        R"({"SASLSTART": 1, "mechanism": "SCRAM-SHA-256", "payload": "secret", "$db": "admin"})"));
    f.server(msg(
        2, 1,
        R"({"ok": 0, "errmsg": "Authentication failed.", "code": 18, "codeName": "AuthenticationFailed", "errorLabels": ["x"]})"));
    REQUIRE(f.out.events.size() == 2);
    CHECK(f.out.events[0].redacted);
    CHECK(to_json(f.out.events[0].document) == json::object());
    CHECK(f.out.events[1].type == EventType::commandFailed);
    auto failure = to_json(f.out.events[1].document);
    CHECK(failure ==
          json{{"code", 18}, {"codeName", "AuthenticationFailed"}, {"errorLabels", {"x"}}});
  }
  SUBCASE("a hello with speculativeAuthenticate") {
    f.client(
        msg(1, 0, R"({"hello": 1, "speculativeAuthenticate": {"payload": "pw"}, "$db": "admin"})"));
    f.server(msg(2, 1, R"({"ok": 1, "speculativeAuthenticate": {"payload": "server secret"}})"));
    CHECK(f.out.events[0].redacted);
    CHECK(to_json(f.out.events[0].document) == json::object());
    CHECK(to_json(f.out.events[1].document) == json::object());
  }
  SUBCASE("a plain hello is not redacted") {
    f.client(msg(1, 0, R"({"hello": 1, "$db": "admin"})"));
    CHECK_FALSE(f.out.events[0].redacted);
    CHECK(to_json(f.out.events[0].document)["hello"] == 1);
  }
}

TEST_CASE("hellos are labelled handshake, heartbeat and awaited, metadata reaches every event") {
  Fixture f;
  wire::Frame hs = wire::build_op_query(
      1, 0, 0, "admin.$cmd", 0, -1,
      Doc(R"({"isMaster": 1, "helloOk": true, "client": {"application": {"name": "billing"}, "driver": {"name": "mongoc", "version": "1.23.1"}}})")
          .view());
  f.client(hs);
  Doc isMasterReply(R"({"ismaster": true, "connectionId": 42, "ok": 1.0})");
  wire::BsonView docs[] = {isMasterReply.view()};
  f.server(wire::build_op_reply(2, 1, 0, 0, 0, docs));
  f.client(msg(3, 0, R"({"hello": 1, "$db": "admin"})"));
  f.server(msg(4, 3, R"({"isWritablePrimary": true, "ok": 1})"));
  f.client(msg(
      5, 0,
      R"({"hello": 1, "topologyVersion": {"processId": {"$oid": "000000000000000000000001"}, "counter": {"$numberLong": "0"}}, "maxAwaitTimeMS": 10000, "$db": "admin"})",
      wire::kExhaustAllowed));
  f.server(msg(6, 5, R"({"isWritablePrimary": true, "ok": 1})", wire::kMoreToCome));
  f.server(msg(7, 6, R"({"isWritablePrimary": true, "ok": 1})", wire::kMoreToCome));
  f.client(msg(8, 0, R"({"ping": 1, "$db": "admin"})"));
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 10);
  CHECK(ev[0].hello == HelloKind::handshake);
  CHECK(ev[0].commandName == "isMaster");
  CHECK(ev[0].databaseName == "admin");
  CHECK(ev[1].type == EventType::commandSucceeded);
  CHECK(ev[1].connection->serverConnectionId == 42);
  CHECK(ev[2].hello == HelloKind::heartbeat);
  CHECK_FALSE(ev[2].awaited);
  CHECK(ev[4].awaited);
  CHECK(ev[5].awaited);
  CHECK(ev[6].type == EventType::commandStarted);  // synthetic start of the next streamed reply
  CHECK(ev[6].requestId == 6);
  CHECK(ev[6].commandName == "hello");
  CHECK(ev[6].awaited);
  CHECK(ev[8].requestId == 7);  // and another, still open
  CHECK(ev[9].hello == HelloKind::none);
  CHECK(ev[9].commandName == "ping");
  for (const auto& e : ev) {
    CHECK(e.connection->appName == "billing");
    CHECK(e.connection->driver == "mongoc 1.23.1");
  }
}

TEST_CASE("an application's own hello on a pool connection is a command, not a heartbeat") {
  Fixture f;
  f.client(msg(1, 0, R"({"hello": 1, "$db": "admin"})"));  // the handshake
  f.server(msg(2, 1, R"({"isWritablePrimary": true, "ok": 1})"));
  // db.command("hello") with the session the driver attaches to commands.
  f.client(msg(
      3, 0,
      R"({"hello": 1, "lsid": {"id": {"$binary": {"base64": "AAAAAAAAAAAAAAAAAAAAAA==", "subType": "04"}}}, "$db": "admin"})"));
  f.server(msg(4, 3, R"({"isWritablePrimary": true, "ok": 1})"));
  // The same on another database, without a session.
  f.client(msg(5, 0, R"({"hello": 1, "$db": "test"})"));
  f.server(msg(6, 5, R"({"isWritablePrimary": true, "ok": 1})"));
  // A monitor's hello: admin, no session.
  f.client(msg(7, 0, R"({"hello": 1, "$db": "admin"})"));
  f.server(msg(8, 7, R"({"isWritablePrimary": true, "ok": 1})"));
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 8);
  CHECK(ev[0].hello == HelloKind::handshake);
  CHECK(ev[2].hello == HelloKind::none);
  CHECK(ev[2].commandName == "hello");
  CHECK(ev[3].hello == HelloKind::none);
  CHECK(ev[4].hello == HelloKind::none);
  CHECK(ev[4].databaseName == "test");
  CHECK(ev[6].hello == HelloKind::heartbeat);
  CHECK(ev[7].hello == HelloKind::heartbeat);
}

TEST_CASE("bytes may arrive in any chunking") {
  Fixture f;
  wire::Frame a = msg(1, 0, R"({"ping": 1, "$db": "admin"})");
  wire::Frame b = msg(2, 0, R"({"buildInfo": 1, "$db": "admin"})");
  wire::Frame stream = a;
  stream.insert(stream.end(), b.begin(), b.end());
  for (std::size_t i = 0; i < stream.size(); ++i)
    f.tracker.client_data(std::span(&stream[i], 1), f.clock.at(0us));
  REQUIRE(f.out.events.size() == 2);
  CHECK(f.out.events[0].commandName == "ping");
  CHECK(f.out.events[1].commandName == "buildInfo");
}

TEST_CASE("compressed messages give the same events, with the compressor named") {
  Fixture f;
  auto plain = msg(1, 0, R"({"find": "c", "filter": {"a": 1}, "$db": "d"})");
  auto z = wire::build_op_compressed(plain, wire::Compressor::zlib);
  REQUIRE(z.ok());
  f.client(*z);
  auto reply = wire::build_op_compressed(msg(2, 1, R"({"ok": 1})"), wire::Compressor::zstd);
  REQUIRE(reply.ok());
  f.server(*reply);
  REQUIRE(f.out.events.size() == 2);
  CHECK(f.out.events[0].commandName == "find");
  CHECK(f.out.events[0].compressor == wire::Compressor::zlib);
  CHECK(to_json(f.out.events[0].document)["filter"]["a"] == 1);
  CHECK(f.out.events[1].compressor == wire::Compressor::zstd);
}

TEST_CASE("a frame that does not decode stops inspection and fails what is pending") {
  Fixture f;
  f.client(msg(1, 0, R"({"ping": 1, "$db": "admin"})"));
  CHECK(f.tracker.stop_cause() == monitor::StopCause::none);
  SUBCASE("bad section kind") {
    wire::Frame bad = msg(2, 0, R"({"ping": 1})");
    bad[20] = 9;  // section kind byte
    f.client(bad);
    CHECK(f.tracker.stop_cause() == monitor::StopCause::malformed);
  }
  SUBCASE("length over the maximum") {
    wire::Frame huge = {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0x07, 0, 0};
    f.client(huge);
    CHECK(f.tracker.stop_cause() == monitor::StopCause::oversized);
  }
  CHECK_FALSE(f.tracker.inspecting());
  CHECK_FALSE(f.tracker.stop_reason().empty());
  CHECK(f.tracker.stats().decodeErrors == 1);
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 2);
  CHECK(ev[1].type == EventType::commandFailed);
  CHECK(ev[1].message.find("inspection stopped") == 0);
  f.client(msg(3, 0, R"({"ping": 1, "$db": "admin"})"));  // ignored from now on
  CHECK(f.out.commands().size() == 2);
}

TEST_CASE("malformed BSON inside a frame is a decode error, not an event with command: {}") {
  Fixture f;
  f.client(msg(1, 0, R"({"ping": 1, "$db": "admin"})"));
  SUBCASE("in a command") {
    wire::Frame bad = msg(2, 0, R"({"find": "c", "filter": {"a": 1}, "$db": "x"})");
    // 16 header + 4 flags + 1 kind + 4 length + "find" string element (12):
    // the type byte of "filter" becomes one BSON does not have.
    REQUIRE(bad[37] == 0x03);
    bad[37] = 0x77;
    f.client(bad);
  }
  SUBCASE("in a reply") {
    wire::Frame bad = msg(50, 1, R"({"ok": 1.0, "x": {"a": 1}})");
    // 16 + 4 + 1 + 4 + "ok" double element (12): the type byte of "x".
    REQUIRE(bad[37] == 0x03);
    bad[37] = 0x77;
    f.server(bad);
  }
  CHECK(f.tracker.stop_cause() == monitor::StopCause::malformed);
  CHECK(f.tracker.stats().decodeErrors == 1);
  CHECK(f.tracker.stop_reason().find("not valid BSON") != std::string::npos);
  const auto ev = f.out.commands();
  REQUIRE(ev.size() == 2);  // the ping started, then failed: nothing for the bad frame
  CHECK(ev[0].commandName == "ping");
  CHECK(ev[1].type == EventType::commandFailed);
  CHECK(ev[1].requestId == 1);
  CHECK(ev[1].message.find("inspection stopped") == 0);
}

TEST_CASE("a decompression bomb stops inspection from its header, without inflating it") {
  Fixture f;
  f.client(msg(1, 0, R"({"ping": 1, "$db": "admin"})"));
  // A real zstd bomb: an insert of 30 MB of one byte, a few kB compressed.
  const std::string pad(30'000'000, 'z');
  Doc body(std::string(R"({"insert": "c", "note": ")") + pad + R"(", "$db": "shop"})");
  auto bomb =
      wire::build_op_compressed(wire::build_op_msg(2, 0, 0, body.view()), wire::Compressor::zstd);
  REQUIRE(bomb.ok());
  REQUIRE(bomb->size() * 256 < pad.size());
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  f.client(*bomb);
  const auto refused = clock::now() - t0;
  // For the record: what inflating it (as before the guard) costs.
  wire::DecodeOptions opts;
  opts.validateBson = false;
  const auto t1 = clock::now();
  CHECK(wire::decode(*bomb, opts).ok());
  const auto inflated = clock::now() - t1;
  MESSAGE("a " << bomb->size() << "-byte zstd frame claiming " << pad.size()
               << " bytes: refused in "
               << std::chrono::duration_cast<std::chrono::microseconds>(refused).count()
               << " us; inflating it takes "
               << std::chrono::duration_cast<std::chrono::microseconds>(inflated).count() << " us");
  CHECK(f.tracker.stop_cause() == monitor::StopCause::oversized);
  CHECK(f.tracker.stop_reason().find("decompression bomb guard") != std::string::npos);
  CHECK(f.tracker.stats().decodeErrors == 1);
  const auto ev = f.out.commands();
  REQUIRE(ev.size() == 2);  // the ping, failed by the stop: no event for the bomb
  CHECK(ev[1].type == EventType::commandFailed);
}

TEST_CASE("legacy opcodes are reported as the commands drivers report") {
  Fixture f;
  SUBCASE("an exhaust OP_QUERY on a collection is a find, then getMores, until cursor 0") {
    Doc q(R"({"$query": {"x": 1}, "$orderby": {"y": -1}, "$comment": "hi"})");
    f.client(wire::build_op_query(1, 0, wire::kQueryExhaust, "db.coll", 5, 2, q.view()), 0us);
    Doc d1(R"({"_id": 1})"), d2(R"({"_id": 2})");
    wire::BsonView batch[] = {d1.view(), d2.view()};
    f.server(wire::build_op_reply(50, 1, 0, 99, 0, batch), 10us);
    f.server(wire::build_op_reply(51, 50, 0, 99, 2, batch), 30us);
    f.server(wire::build_op_reply(52, 51, 0, 0, 4, std::span(batch, 1)), 60us);
    auto ev = f.out.commands();
    REQUIRE(ev.size() == 6);
    auto find = to_json(ev[0].document);
    CHECK(ev[0].commandName == "find");
    CHECK(ev[0].databaseName == "db");
    CHECK(find["find"] == "coll");
    CHECK(find["filter"] == json{{"x", 1}});
    CHECK(find["sort"] == json{{"y", -1}});
    CHECK(find["skip"] == 5);
    CHECK(find["batchSize"] == 2);
    CHECK(find["comment"] == "hi");
    auto first = to_json(ev[1].document);
    CHECK(first["cursor"]["id"] == 99);
    CHECK(first["cursor"]["ns"] == "db.coll");
    CHECK(first["cursor"]["firstBatch"].size() == 2);
    CHECK(ev[2].commandName == "getMore");
    CHECK(ev[2].requestId == 50);
    CHECK(to_json(ev[3].document)["cursor"]["nextBatch"].size() == 2);
    CHECK(ev[4].requestId == 51);
    CHECK(ev[5].durationMicros == 30);
    CHECK(to_json(ev[5].document)["cursor"]["id"] == 0);
  }
  SUBCASE("a query failure is a failed find") {
    f.client(wire::build_op_query(1, 0, 0, "db.coll", 0, 0, Doc(R"({"$where": 1})").view()));
    Doc err(R"({"$err": "bad query", "code": 2})");
    wire::BsonView docs[] = {err.view()};
    f.server(wire::build_op_reply(2, 1, wire::kReplyQueryFailure, 0, 0, docs));
    REQUIRE(f.out.events.size() == 2);
    CHECK(f.out.events[1].type == EventType::commandFailed);
    CHECK(to_json(f.out.events[1].document)["$err"] == "bad query");
  }
  SUBCASE("OP_GET_MORE, OP_KILL_CURSORS and legacy writes") {
    f.client(wire::build_op_get_more(1, "db.coll", 10, 1234));
    std::int64_t ids[] = {1234};
    f.client(wire::build_op_kill_cursors(2, ids));
    Doc doc(R"({"_id": 3})");
    wire::BsonView docs[] = {doc.view()};
    f.client(wire::build_op_insert(3, 0, "db.coll", docs));
    f.client(wire::build_op_update(4, "db.coll", 1, Doc(R"({"_id": 3})").view(),
                                   Doc(R"({"$set": {"a": 1}})").view()));
    f.client(wire::build_op_delete(5, "db.coll", 1, Doc(R"({"_id": 3})").view()));
    auto ev = f.out.commands();
    REQUIRE(ev.size() == 9);  // getMore waits for its reply; the rest complete at once
    CHECK(ev[0].commandName == "getMore");
    CHECK(to_json(ev[0].document)["getMore"] == 1234);
    CHECK(ev[1].commandName == "killCursors");
    CHECK(ev[2].unacknowledged);
    CHECK(to_json(ev[2].document)["cursorsUnknown"] == json::array({1234}));
    CHECK(ev[3].commandName == "insert");
    CHECK(to_json(ev[3].document)["documents"][0]["_id"] == 3);
    CHECK(ev[4].unacknowledged);
    CHECK(to_json(ev[5].document)["updates"][0]["upsert"] == true);
    CHECK(ev[7].commandName == "delete");
    CHECK(to_json(ev[7].document)["deletes"][0]["limit"] == 1);
  }
}

TEST_CASE("every started event gets exactly one terminal event") {
  // A mixed workload closed part-way: the invariant holds whatever state it was in.
  Fixture f;
  f.client(msg(1, 0, R"({"ping": 1, "$db": "a"})"));
  f.client(msg(2, 0, R"({"insert": "c", "$db": "a"})", wire::kMoreToCome));
  f.client(msg(3, 0, R"({"find": "c", "$db": "a"})"));
  f.server(msg(4, 1, R"({"ok": 1})"));
  f.server(msg(5, 999, R"({"ok": 1})"));  // unpaired reply: ignored
  f.tracker.closed("client closed", f.clock.at(0us));
  std::map<std::int32_t, int> started, terminal;
  for (const auto& e : f.out.commands()) {
    if (e.type == EventType::commandStarted)
      ++started[e.requestId];
    else
      ++terminal[e.requestId];
  }
  CHECK(started == terminal);
  for (auto& [id, n] : terminal) CHECK(n == 1);
}

TEST_CASE("with a document bound, large commands and replies are kept bounded and marked cut") {
  Recorder out;
  monitor::TrackerOptions options;
  options.documentBound = {2128, false};
  monitor::Tracker tracker(std::make_shared<monitor::ConnectionInfo>(monitor::ConnectionInfo{
                               1, "127.0.0.1:50000", "127.0.0.1:27017", "", "", {}}),
                           out, options);
  FakeTime clock;
  // An insert of one 1 MB document in a kind-1 sequence.
  Doc body(R"({"insert": "big", "ordered": true, "$db": "bench"})");
  const std::string payload(1'000'000, 'x');
  Doc doc("{\"_id\": 1, \"payload\": \"" + payload + "\"}");
  const wire::DocumentSequence seq{"documents", {doc.view()}};
  tracker.client_data(wire::build_op_msg(5, 0, 0, body.view(), std::span(&seq, 1)), clock.at(0us));
  // A 1 MB reply, and a small one.
  tracker.server_data(msg(900, 5, "{\"n\": 1, \"pad\": \"" + payload + "\", \"ok\": 1}"),
                      clock.at(10us));
  tracker.client_data(msg(6, 0, R"({"ping": 1, "$db": "admin"})"), clock.at(20us));
  tracker.server_data(msg(901, 6, R"({"ok": 1})"), clock.at(30us));
  auto cmds = out.commands();
  REQUIRE(cmds.size() == 4);
  CHECK(cmds[0].documentCut);
  CHECK(cmds[0].document.size() < 4096);
  CHECK(to_json(cmds[0].document)["insert"] == "big");
  CHECK(to_json(cmds[0].document)["documents"][0]["_id"] == 1);
  CHECK(cmds[1].documentCut);
  CHECK(cmds[1].document.size() < 4096);
  CHECK_FALSE(cmds[2].documentCut);
  CHECK_FALSE(cmds[3].documentCut);
  CHECK(to_json(cmds[3].document)["ok"] == 1);
}

TEST_CASE("a failed reply is kept whole whatever the bound (code and errmsg come last)") {
  Recorder out;
  monitor::TrackerOptions options;
  options.documentBound = {200, false};
  monitor::Tracker tracker(std::make_shared<monitor::ConnectionInfo>(monitor::ConnectionInfo{
                               1, "127.0.0.1:50000", "127.0.0.1:27017", "", "", {}}),
                           out, options);
  FakeTime clock;
  tracker.client_data(msg(5, 0, R"({"find": "c", "$db": "d"})"), clock.at(0us));
  const std::string long_msg(5000, 'e');
  tracker.server_data(
      msg(900, 5,
          "{\"ok\": 0, \"errmsg\": \"" + long_msg + "\", \"code\": 2, \"codeName\": \"BadValue\"}"),
      clock.at(10us));
  auto cmds = out.commands();
  REQUIRE(cmds.size() == 2);
  CHECK(cmds[1].type == EventType::commandFailed);
  CHECK_FALSE(cmds[1].documentCut);
  CHECK(to_json(cmds[1].document)["codeName"] == "BadValue");
}

TEST_CASE("document buffers handed back by the output are reused for the next copies") {
  // As the Dispatcher does: the published event's document is swapped for
  // the buffer its ring cell held. The tracker copies the next document into
  // that buffer (no allocation); buffers of large documents are not kept.
  struct Swapper : monitor::EventOutput {
    std::vector<monitor::Event> events;
    std::vector<const std::uint8_t*> handedBack;
    std::size_t backCapacity = 1024;
    void publish(monitor::Event&& e) override {
      wire::BsonBytes back;
      back.reserve(backCapacity);
      handedBack.push_back(back.data());
      events.push_back(std::move(e));
      e.document = std::move(back);
    }
  } out;
  FakeTime clock;
  monitor::Tracker tracker(std::make_shared<monitor::ConnectionInfo>(monitor::ConnectionInfo{
                               1, "127.0.0.1:50000", "127.0.0.1:27017", "", "", {}}),
                           out);
  for (int i = 1; i <= 3; ++i) {
    tracker.client_data(msg(i, 0, R"({"find": "c", "$db": "d"})"), clock.at(0us));
    tracker.server_data(msg(100 + i, i, R"({"ok": 1.0})"), clock.at(5us));
  }
  REQUIRE(out.events.size() == 6);
  for (std::size_t k = 1; k < out.events.size(); ++k) {
    INFO("event " << k);
    // Each document went into the buffer the previous publish handed back.
    CHECK(out.events[k].document.data() == out.handedBack[k - 1]);
  }
  CHECK(to_json(out.events[4].document)["find"] == "c");
  CHECK(to_json(out.events[5].document)["ok"] == 1.0);

  out.backCapacity = 1 << 20;  // a large buffer is handed back: not kept
  tracker.client_data(msg(9, 0, R"({"find": "c", "$db": "d"})"), clock.at(0us));
  tracker.server_data(msg(109, 9, R"({"ok": 1.0})"), clock.at(5us));
  REQUIRE(out.events.size() == 8);
  CHECK(out.events[7].document.data() != out.handedBack[6]);
  CHECK(out.events[7].document.capacity() < (1u << 20));
}

TEST_CASE("large messages split across reads are inspected sparsely, with the same events") {
  // One tracker gets every frame in one piece (inspected in place), the
  // other in 16 KiB reads (a 1 MB frame then streams through sparse
  // framing, never buffered whole). The events must be the same.
  monitor::TrackerOptions options;
  options.documentBound = {1000, false};
  REQUIRE(monitor::sparse_budget(options) == 64 * 1024);
  struct Side {
    Recorder out;
    monitor::Tracker tracker;
    explicit Side(const monitor::TrackerOptions& o)
        : tracker(std::make_shared<monitor::ConnectionInfo>(
                      monitor::ConnectionInfo{1, "127.0.0.1:50000", "127.0.0.1:27017", "", "", {}}),
                  out, o) {}
  };
  Side whole(options), split(options);
  FakeTime clock;
  auto both = [&](bool fromClient, const wire::Frame& f, std::chrono::microseconds t) {
    if (fromClient)
      whole.tracker.client_data(f, clock.at(t));
    else
      whole.tracker.server_data(f, clock.at(t));
    for (std::size_t at = 0; at < f.size(); at += 16384) {
      const auto part = std::span(f).subspan(at, std::min<std::size_t>(16384, f.size() - at));
      if (fromClient)
        split.tracker.client_data(part, clock.at(t));
      else
        split.tracker.server_data(part, clock.at(t));
    }
  };
  // A 1 MB insert in a kind-1 sequence, acknowledged.
  Doc body(R"({"insert": "big", "ordered": true, "$db": "bench"})");
  const std::string pad(1000, 'x');
  std::string docs = "{\"_id\": 1, \"payload\": \"" + std::string(1'000'000, 'y') + "\"}";
  Doc doc(docs);
  const wire::DocumentSequence seq{"documents", {doc.view()}};
  both(true, wire::build_op_msg(5, 0, 0, body.view(), std::span(&seq, 1)), 0us);
  both(false, msg(900, 5, R"({"n": 1, "ok": 1})"), 10us);
  // An exhaust getMore: two 1 MB batches with moreToCome, then the last.
  auto batch = [&](std::int64_t id) {
    std::string j = "{\"cursor\": {\"nextBatch\": [";
    for (int i = 0; i < 900; ++i)
      j += (i ? ",{\"_id\": " : "{\"_id\": ") + std::to_string(i) + ", \"pad\": \"" + pad + "\"}";
    return j + "], \"id\": " + std::to_string(id) + ", \"ns\": \"bench.c\"}, \"ok\": 1}";
  };
  both(true,
       msg(6, 0, R"({"getMore": {"$numberLong": "77"}, "collection": "c", "$db": "bench"})",
           wire::kExhaustAllowed),
       20us);
  both(false, msg(901, 6, batch(77), wire::kMoreToCome), 30us);
  both(false, msg(902, 901, batch(77), wire::kMoreToCome), 40us);
  both(false, msg(903, 902, batch(0)), 50us);
  CHECK(whole.tracker.sparse_frames() == 0);
  CHECK(split.tracker.sparse_frames() == 4);
  const auto a = whole.out.commands();
  const auto b = split.out.commands();
  REQUIRE(a.size() == 8);
  REQUIRE(b.size() == a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(a[i].type == b[i].type);
    CHECK(a[i].commandName == b[i].commandName);
    CHECK(a[i].requestId == b[i].requestId);
    CHECK(a[i].exhaust == b[i].exhaust);
    CHECK(a[i].durationMicros == b[i].durationMicros);
    CHECK(a[i].document == b[i].document);
    CHECK(a[i].documentCut == b[i].documentCut);
    CHECK(a[i].documentOmitted == b[i].documentOmitted);
  }
  CHECK(b.back().type == EventType::commandSucceeded);
  CHECK(b[7].commandName == "getMore");
}

TEST_CASE("quiescent: nothing half read and no request but heartbeats waiting") {
  Fixture f;
  CHECK(f.tracker.quiescent());
  f.client(msg(1, 0, R"({"isMaster": 1, "$db": "admin"})"));  // the handshake waits
  CHECK_FALSE(f.tracker.quiescent());
  f.server(msg(2, 1, R"({"ismaster": true, "ok": 1})"));
  CHECK(f.tracker.quiescent());
  // Half a request: something is in flight.
  const wire::Frame find = msg(3, 0, R"({"find": "c", "$db": "d"})");
  const std::span<const std::uint8_t> bytes(find);
  f.tracker.client_data(bytes.first(10), f.clock.at(0us));
  CHECK_FALSE(f.tracker.quiescent());
  f.tracker.client_data(bytes.subspan(10), f.clock.at(0us));
  CHECK_FALSE(f.tracker.quiescent());  // whole, but not answered
  const wire::Frame reply = msg(4, 3, R"({"ok": 1})");
  const std::span<const std::uint8_t> replyBytes(reply);
  f.tracker.server_data(replyBytes.first(20), f.clock.at(0us));
  CHECK_FALSE(f.tracker.quiescent());  // the reply is half read
  f.tracker.server_data(replyBytes.subspan(20), f.clock.at(0us));
  CHECK(f.tracker.quiescent());
  // A heartbeat waiting (a monitor's hello) does not hold the connection.
  f.client(msg(5, 0, R"({"hello": 1, "$db": "admin"})"));
  CHECK(f.tracker.quiescent());
  f.tracker.closed("client closed", f.clock.at(0us));
  CHECK_FALSE(f.tracker.quiescent());
}

TEST_CASE("every command that names a collection carries it, on every event of the command") {
  Fixture f;
  const std::vector<std::pair<std::string, std::string>> named = {
      {R"({"find": "c1", "filter": {}, "$db": "d"})", "c1"},
      {R"({"insert": "c2", "documents": [{"_id": 1}], "$db": "d"})", "c2"},
      {R"({"update": "c3", "updates": [], "$db": "d"})", "c3"},
      {R"({"delete": "c4", "deletes": [], "$db": "d"})", "c4"},
      {R"({"aggregate": "c5", "pipeline": [], "cursor": {}, "$db": "d"})", "c5"},
      {R"({"count": "c6", "$db": "d"})", "c6"},
      {R"({"distinct": "c7", "key": "x", "$db": "d"})", "c7"},
      {R"({"findAndModify": "c8", "query": {}, "$db": "d"})", "c8"},
      {R"({"getMore": {"$numberLong": "77"}, "collection": "c9", "$db": "d"})", "c9"},
      {R"({"create": "c10", "$db": "d"})", "c10"},
      {R"({"drop": "c11", "$db": "d"})", "c11"},
      {R"({"createIndexes": "c12", "indexes": [], "$db": "d"})", "c12"},
      {R"({"dropIndexes": "c13", "index": "*", "$db": "d"})", "c13"},
      {R"({"listIndexes": "c14", "$db": "d"})", "c14"},
      {R"({"collMod": "c15", "$db": "d"})", "c15"},
      {R"({"aggregate": 1, "pipeline": [], "cursor": {}, "$db": "d"})", ""},
      {R"({"ping": 1, "$db": "admin"})", ""},
      {R"({"listCollections": 1, "$db": "d"})", ""},
  };
  std::int32_t id = 1;
  for (const auto& [body, coll] : named) {
    CAPTURE(body);
    f.out.events.clear();
    f.client(msg(id, 0, body));
    f.server(msg(1000 + id, id, R"({"ok": 1})"));
    ++id;
    REQUIRE(f.out.events.size() == 2);
    CHECK(f.out.events[0].collection == coll);
    CHECK(f.out.events[1].collection == coll);
  }
  SUBCASE("legacy opcodes: from their namespace") {
    f.out.events.clear();
    f.client(wire::build_op_query(50, 0, 0, "db.legacyq", 0, 0, Doc(R"({"x": 1})").view()));
    f.client(wire::build_op_get_more(51, "db.legacyg", 10, 1234));
    Doc doc(R"({"_id": 3})");
    wire::BsonView docs[] = {doc.view()};
    f.client(wire::build_op_insert(52, 0, "db.legacyi", docs));
    f.client(wire::build_op_update(53, "db.legacyu", 0, Doc(R"({"_id": 3})").view(),
                                   Doc(R"({"$set": {"a": 1}})").view()));
    f.client(wire::build_op_delete(54, "db.legacyd", 0, Doc(R"({"_id": 3})").view()));
    f.client(
        wire::build_op_query(55, 0, 0, "db.$cmd", 0, -1, Doc(R"({"count": "legacycmd"})").view()));
    std::map<std::string, std::string> seen;  // commandName -> collection
    for (const auto& e : f.out.events) seen[e.commandName] = e.collection;
    CHECK(seen["find"] == "legacyq");
    CHECK(seen["getMore"] == "legacyg");
    CHECK(seen["insert"] == "legacyi");
    CHECK(seen["update"] == "legacyu");
    CHECK(seen["delete"] == "legacyd");
    CHECK(seen["count"] == "legacycmd");
  }
}

TEST_CASE("terminal events carry the reply's summary and both message sizes") {
  Fixture f;
  SUBCASE("a find's first batch, a getMore's next batch, cursor ids") {
    auto find = msg(1, 0, R"({"find": "c", "$db": "d"})");
    f.client(find);
    auto reply = msg(2, 1,
                     R"({"cursor": {"firstBatch": [{"a": 1}, {"a": 2}, {"a": 3}],
                         "id": {"$numberLong": "2101374710788892982"}, "ns": "d.c"}, "ok": 1})");
    f.server(reply);
    f.client(msg(3, 0,
                 R"({"getMore": {"$numberLong": "2101374710788892982"}, "collection": "c",
                     "$db": "d"})"));
    f.server(msg(4, 3, R"({"cursor": {"nextBatch": [{"a": 4}], "id": 0, "ns": "d.c"}, "ok": 1})"));
    auto& ev = f.out.events;
    REQUIRE(ev.size() == 4);
    CHECK(ev[0].requestBytes == find.size());
    CHECK(ev[1].requestBytes == find.size());
    CHECK(ev[1].replyBytes == reply.size());
    CHECK(ev[1].summary.nReturned == 3);
    CHECK(ev[1].summary.hasCursor);
    CHECK(ev[1].summary.cursorId == 2101374710788892982LL);
    CHECK(ev[1].summary.n == -1);
    CHECK(ev[3].summary.nReturned == 1);
    CHECK(ev[3].summary.cursorId == 0);
  }
  SUBCASE("writes: n, nModified, upserted, writeErrors; a delete's n is nRemoved") {
    f.client(msg(1, 0, R"({"update": "c", "updates": [], "$db": "d"})"));
    f.server(msg(2, 1,
                 R"({"n": 3, "nModified": 1, "upserted": [{"index": 0, "_id": 9}],
                     "writeErrors": [{"index": 1, "code": 11000}, {"index": 2, "code": 11000}],
                     "ok": 1})"));
    f.client(msg(3, 0, R"({"delete": "c", "deletes": [], "$db": "d"})"));
    f.server(msg(4, 3, R"({"n": 5, "ok": 1})"));
    f.client(msg(5, 0, R"({"insert": "c", "documents": [], "$db": "d"})"));
    f.server(msg(6, 5, R"({"ok": 1})"));
    auto& ev = f.out.events;
    REQUIRE(ev.size() == 6);
    CHECK(ev[1].summary.n == 3);
    CHECK(ev[1].summary.nModified == 1);
    CHECK(ev[1].summary.nUpserted == 1);
    CHECK(ev[1].summary.writeErrors == 2);
    CHECK(ev[1].summary.nRemoved == -1);
    CHECK_FALSE(ev[1].summary.hasCursor);
    CHECK(ev[3].summary.nRemoved == 5);
    CHECK(ev[3].summary.n == 5);
    CHECK(ev[3].summary.nModified == -1);
    CHECK(ev[5].summary.n == 0);  // a write's counts are 0 when its reply leaves them out
    CHECK(ev[5].summary.writeErrors == 0);
  }
  SUBCASE("a legacy OP_REPLY: its documents and cursor id") {
    f.client(wire::build_op_query(1, 0, 0, "db.coll", 0, 0, Doc(R"({"x": 1})").view()));
    Doc d1(R"({"_id": 1})"), d2(R"({"_id": 2})");
    wire::BsonView batch[] = {d1.view(), d2.view()};
    f.server(wire::build_op_reply(2, 1, 0, 99, 0, batch));
    REQUIRE(f.out.events.size() == 2);
    CHECK(f.out.events[1].summary.nReturned == 2);
    CHECK(f.out.events[1].summary.cursorId == 99);
  }
  SUBCASE("off: no summary is read") {
    Recorder out;
    monitor::TrackerOptions o;
    o.replySummary = false;
    monitor::Tracker t(std::make_shared<monitor::ConnectionInfo>(), out, o);
    t.client_data(msg(1, 0, R"({"find": "c", "$db": "d"})"), f.clock.at(0us));
    t.server_data(msg(2, 1, R"({"cursor": {"firstBatch": [{}], "id": 0, "ns": "d.c"}, "ok": 1})"),
                  f.clock.at(0us));
    REQUIRE(out.events.size() == 2);
    CHECK(out.events[1].summary.nReturned == -1);
    CHECK(out.events[1].collection == "c");
  }
}

TEST_CASE("reply summary counts of any numeric value are clamped, never UB") {
  // Found by the capture fuzzer: a double count out of int32's range.
  Doc reply(R"({"n": 1e300, "nModified": {"$numberDouble": "NaN"}, "ok": 1})");
  auto s = monitor::summarize_reply("update", reply.view());
  CHECK(s.n == std::numeric_limits<std::int32_t>::max());
  CHECK(s.nModified == 0);
  Doc negative(R"({"n": -1e300, "nModified": {"$numberLong": "-1099511627776"}, "ok": 1})");
  s = monitor::summarize_reply("update", negative.view());
  CHECK(s.n == std::numeric_limits<std::int32_t>::min());
  CHECK(s.nModified == std::numeric_limits<std::int32_t>::min());
  Doc fine(R"({"n": 2.0, "nModified": {"$numberLong": "1"}, "ok": 1})");
  s = monitor::summarize_reply("update", fine.view());
  CHECK(s.n == 2);
  CHECK(s.nModified == 1);
}

TEST_CASE("a legacy query with numberToReturn INT32_MIN becomes a find without overflow") {
  // Found by the capture fuzzer: -INT32_MIN is UB.
  Fixture f;
  f.client(wire::build_op_query(1, 0, 0, "db.coll", 0, std::numeric_limits<std::int32_t>::min(),
                                Doc(R"({"x": 1})").view()));
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].commandName == "find");
  const json cmd = to_json(ev[0].document);
  CHECK(cmd["limit"] == std::numeric_limits<std::int32_t>::max());
  CHECK(cmd["singleBatch"] == true);
}

TEST_CASE("a reused requestID fails the older request with every label it had") {
  Fixture f;
  SUBCASE("a redacted handshake, compressed") {
    auto hello = wire::build_op_compressed(
        msg(1, 0, R"({"hello": 1, "speculativeAuthenticate": {"payload": "pw"}, "$db": "admin"})"),
        wire::Compressor::zlib);
    REQUIRE(hello.ok());
    f.client(*hello, 10us);
    f.client(msg(1, 0, R"({"ping": 1, "$db": "admin"})"), 40us);
    f.server(msg(2, 1, R"({"ok": 1})"), 50us);
    auto ev = f.out.commands();
    REQUIRE(ev.size() == 4);
    // The newer request's start comes first, then the older one's failure.
    CHECK(ev[1].type == EventType::commandStarted);
    CHECK(ev[1].commandName == "ping");
    const auto& failed = ev[2];
    CHECK(failed.type == EventType::commandFailed);
    CHECK(failed.requestId == 1);
    CHECK(failed.commandName == "hello");
    CHECK(failed.databaseName == "admin");
    CHECK(failed.networkFailure());
    CHECK(failed.message == "requestID reused by the client before a reply came");
    CHECK(failed.durationMicros == 30);
    CHECK(failed.hello == HelloKind::handshake);
    CHECK(failed.redacted);
    CHECK_FALSE(failed.exhaust);
    CHECK(failed.compressor == wire::Compressor::zlib);
    CHECK(failed.requestBytes == ev[0].requestBytes);
    // The newer request owns the id now: the reply pairs with it.
    CHECK(ev[3].type == EventType::commandSucceeded);
    CHECK(ev[3].commandName == "ping");
    CHECK_FALSE(ev[3].redacted);
    CHECK(ev[3].hello == HelloKind::none);
  }
  SUBCASE("an open round of an exhaust stream") {
    f.client(msg(2, 0, R"({"getMore": {"$numberLong": "5"}, "collection": "c", "$db": "d"})",
                 wire::kExhaustAllowed),
             0us);
    f.server(
        msg(600, 2,
            R"({"cursor": {"id": {"$numberLong": "5"}, "ns": "d.c", "nextBatch": []}, "ok": 1})",
            wire::kMoreToCome),
        20us);
    f.client(msg(600, 0, R"({"ping": 1, "$db": "admin"})"), 70us);
    auto ev = f.out.commands();
    REQUIRE(ev.size() == 5);
    CHECK(ev[2].type == EventType::commandStarted);  // the stream's next round
    CHECK(ev[2].requestId == 600);
    CHECK(ev[3].commandName == "ping");
    const auto& failed = ev[4];
    CHECK(failed.type == EventType::commandFailed);
    CHECK(failed.requestId == 600);
    CHECK(failed.commandName == "getMore");
    CHECK(failed.collection == "c");
    CHECK(failed.exhaust);
    CHECK(failed.durationMicros == 50);
    CHECK(failed.hello == HelloKind::none);
    CHECK_FALSE(failed.redacted);
  }
}

TEST_CASE("closing fails pending requests with the compressor they came with") {
  Fixture f;
  auto find =
      wire::build_op_compressed(msg(1, 0, R"({"find": "c", "$db": "d"})"), wire::Compressor::zstd);
  REQUIRE(find.ok());
  f.client(*find, 0us);
  f.client(msg(2, 0, R"({"find": "c", "$db": "d"})"), 0us);
  f.tracker.closed("client closed", f.clock.at(25us));
  auto ev = f.out.commands();
  REQUIRE(ev.size() == 4);
  CHECK(ev[2].type == EventType::commandFailed);
  CHECK(ev[2].requestId == 1);
  CHECK(ev[2].compressor == wire::Compressor::zstd);
  CHECK(ev[2].durationMicros == 25);
  CHECK(ev[3].requestId == 2);
  CHECK_FALSE(ev[3].compressor.has_value());
}

TEST_CASE("past maxPendingRequests without a reply, inspection stops and each request ends once") {
  monitor::TrackerOptions o;
  o.maxPendingRequests = 5;
  Fixture f(o);
  // Unacknowledged writes wait for nothing: they never count.
  for (int id = 100; id < 120; ++id)
    f.client(
        msg(id, 0, R"({"insert": "c", "documents": [{"a": 1}], "$db": "d"})", wire::kMoreToCome));
  CHECK(f.tracker.inspecting());
  for (int id = 1; id <= 5; ++id) f.client(msg(id, 0, R"({"find": "c", "$db": "d"})"));
  CHECK(f.tracker.inspecting());
  // A reply frees a slot.
  f.server(msg(901, 1, R"({"ok": 1})"));
  f.client(msg(6, 0, R"({"find": "c", "$db": "d"})"));
  CHECK(f.tracker.inspecting());
  const std::size_t before = f.out.events.size();
  f.client(msg(7, 0, R"({"find": "c", "$db": "d"})"));  // the sixth in flight
  CHECK_FALSE(f.tracker.inspecting());
  CHECK(f.tracker.stop_cause() == monitor::StopCause::backlog);
  CHECK(f.tracker.stop_reason() == "client: more than 5 requests without a reply");
  CHECK(f.tracker.stats().decodeErrors == 0);  // not a decode error: counted apart
  // Requests 2..6 fail, in order, with the reason; request 7 was never started.
  REQUIRE(f.out.events.size() == before + 5);
  for (std::size_t i = 0; i < 5; ++i) {
    const auto& e = f.out.events[before + i];
    CHECK(e.type == EventType::commandFailed);
    CHECK(e.requestId == static_cast<std::int32_t>(2 + i));
    CHECK(e.message == "inspection stopped: client: more than 5 requests without a reply");
  }
  // Late replies find nothing to pair; closing fails nothing more.
  f.server(msg(902, 3, R"({"ok": 1})"));
  f.tracker.closed("client closed", f.clock.at(0us));
  int started = 0;
  int terminal = 0;
  for (const auto& e : f.out.events) {
    if (e.type == EventType::commandStarted) ++started;
    if (e.type == EventType::commandSucceeded || e.type == EventType::commandFailed) ++terminal;
  }
  CHECK(started == 20 + 6);
  CHECK(terminal == started);
}

TEST_CASE("1M pipelined requests without replies keep at most maxPendingRequests") {
  Fixture f;  // the default bound
  REQUIRE(monitor::TrackerOptions{}.maxPendingRequests == 1000);
  int id = 1;
  for (; id <= 1'000'000 && f.tracker.inspecting(); ++id)
    f.client(msg(id, 0, R"({"find": "c", "filter": {"a": 1}, "$db": "d"})"));
  CHECK(id == 1002);  // stopped at the 1,001st, after 1,000 started
  CHECK(f.tracker.stop_cause() == monitor::StopCause::backlog);
  CHECK(f.tracker.stats().commands == 1000);
  // More bytes cost nothing: inspection ignores them.
  for (int i = 0; i < 1000; ++i) f.client(msg(id + i, 0, R"({"ping": 1, "$db": "d"})"));
  CHECK(f.tracker.stats().commands == 1000);
  CHECK(f.out.events.size() == 2000);  // 1,000 started + 1,000 failed
}

namespace {
// A compressed find whose uncompressedSize is `pad` bytes and a little.
wire::Frame compressed_find(std::int32_t id, std::size_t pad) {
  auto z = wire::build_op_compressed(msg(id, 0,
                                         std::string(R"({"find": "c", "filter": {"s": ")") +
                                             std::string(pad, 'x') + R"("}, "$db": "d"})"),
                                     wire::Compressor::zlib);
  REQUIRE(z.ok());
  return *z;
}
std::int32_t usize_of(const wire::Frame& f) {
  return static_cast<std::int32_t>(f[20] | f[21] << 8 | f[22] << 16 | f[23] << 24);
}
}  // namespace

TEST_CASE("compressed frames past the connection's decompression budget go uninspected") {
  const auto first = compressed_find(1, 39'900);
  const std::int32_t usize = usize_of(first);
  REQUIRE(usize > 39'900);
  REQUIRE(usize < 40'000);
  monitor::TrackerOptions o;
  o.decompressBytesPerSecond = 100'000;
  // The bucket holds max(rate, maxMessageSize): five frames and 10 bytes.
  o.maxMessageSize = 5 * usize + 10;
  Fixture f(o);
  // Five frames of ~40,000 fit, the sixth does not.
  f.client(first);
  for (int id = 2; id <= 6; ++id) f.client(compressed_find(id, 39'900));
  CHECK(f.tracker.stats().commands == 5);
  CHECK(f.tracker.stats().uninspectedCompressed == 1);
  CHECK(f.tracker.inspecting());  // inspection goes on: only that frame was skipped
  CHECK(f.tracker.throttle_reason().find("decompression budget (100000 bytes a second") !=
        std::string::npos);
  // Uncompressed traffic is inspected as before.
  f.client(msg(7, 0, R"({"ping": 1, "$db": "admin"})"));
  CHECK(f.tracker.stats().commands == 6);
  f.server(msg(907, 7, R"({"ok": 1})"));
  // A compressed reply past the budget ends its request, failed, saying why.
  auto reply = wire::build_op_compressed(msg(901, 1, R"({"ok": 1})"), wire::Compressor::zstd);
  REQUIRE(reply.ok());
  f.server(*reply);
  const auto& last = f.out.events.back();
  CHECK(last.type == EventType::commandFailed);
  CHECK(last.requestId == 1);
  CHECK(last.message.find("reply not inspected: compressed frames past the decompression") == 0);
  CHECK(f.tracker.stats().uninspectedCompressed == 2);
  // Half a second refills 50,000 bytes: one more frame of ~40,000 passes, not two.
  // (The reply it skipped cost nothing.)
  f.client(compressed_find(8, 39'900), 500'000us);
  f.client(compressed_find(9, 39'900), 500'000us);
  CHECK(f.tracker.stats().commands == 7);
  CHECK(f.tracker.stats().uninspectedCompressed == 3);
  // Replies within the budget pair as usual.
  auto ok2 = wire::build_op_compressed(msg(902, 2, R"({"ok": 1})"), wire::Compressor::zstd);
  REQUIRE(ok2.ok());
  f.server(*ok2, 2'000'000us);
  CHECK(f.out.events.back().type == EventType::commandSucceeded);
  CHECK(f.out.events.back().requestId == 2);
  // Every started event still ends once.
  f.tracker.closed("client closed", f.clock.at(3'000'000us));
  int started = 0;
  int terminal = 0;
  for (const auto& e : f.out.events) {
    if (e.type == EventType::commandStarted) ++started;
    if (e.type == EventType::commandSucceeded || e.type == EventType::commandFailed) ++terminal;
  }
  CHECK(started == 7);
  CHECK(terminal == 7);
}

TEST_CASE("a large compressed message is inflated only as far as its bounded events need") {
  // Bulk inserts (body, then a kind-1 sequence) and a large find reply,
  // compressed, against the same messages uncompressed in 16 KiB reads
  // (sparse framing): the same events, and the insert is never inflated
  // past what the bound keeps.
  monitor::TrackerOptions options;
  options.documentBound = {1000, false};
  REQUIRE(monitor::sparse_budget(options) == 64 * 1024);
  struct Side {
    Recorder out;
    monitor::Tracker tracker;
    explicit Side(const monitor::TrackerOptions& o)
        : tracker(std::make_shared<monitor::ConnectionInfo>(
                      monitor::ConnectionInfo{1, "127.0.0.1:50000", "127.0.0.1:27017", "", "", {}}),
                  out, o) {}
  };
  // Letters at random: about 2:1 for zlib and zstd, far from a bomb.
  std::mt19937 rng(25);
  auto noise = [&](std::size_t n) {
    std::string s(n, 'a');
    for (char& ch : s) ch = static_cast<char>('a' + rng() % 16);
    return s;
  };
  bson_t* body = bson_new();
  BSON_APPEND_UTF8(body, "insert", "big");
  BSON_APPEND_UTF8(body, "$db", "bench");
  std::vector<wire::BsonBytes> docs;  // each one's bytes (their buffers never move)
  std::vector<wire::BsonView> views;
  for (int i = 0; i < 100; ++i) {
    bson_t* d = bson_new();
    BSON_APPEND_INT32(d, "_id", i);
    BSON_APPEND_UTF8(d, "pad", noise(20'000).c_str());
    docs.emplace_back(bson_get_data(d), bson_get_data(d) + d->len);
    bson_destroy(d);
    views.push_back(
        wire::BsonView{docs.back().data(), static_cast<std::uint32_t>(docs.back().size())});
  }
  wire::DocumentSequence seq{"documents", views};
  const wire::Frame insert = wire::build_op_msg(1, 0, 0, wire::BsonView::of(body), {&seq, 1});
  bson_t* reply = bson_new();
  {
    bson_t cursor, batch;
    BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cursor);
    BSON_APPEND_ARRAY_BEGIN(&cursor, "firstBatch", &batch);
    for (int i = 0; i < 100; ++i) {
      const std::string key = std::to_string(i);
      BSON_APPEND_UTF8(&batch, key.c_str(), noise(20'000).c_str());
    }
    bson_append_array_end(&cursor, &batch);
    BSON_APPEND_INT64(&cursor, "id", 31337);
    BSON_APPEND_UTF8(&cursor, "ns", "bench.big");
    bson_append_document_end(reply, &cursor);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  }
  const wire::Frame find = msg(2, 0, R"({"find": "big", "$db": "bench"})");
  const wire::Frame found = wire::build_op_msg(900, 2, 0, wire::BsonView::of(reply));
  REQUIRE(insert.size() > 2'000'000);
  REQUIRE(found.size() > 2'000'000);

  for (wire::Compressor c : {wire::Compressor::zlib, wire::Compressor::zstd}) {
    CAPTURE(wire::to_string(c));
    Side plain(options), packed(options);
    FakeTime clock;
    auto split = [&](bool fromClient, const wire::Frame& f) {
      for (std::size_t at = 0; at < f.size(); at += 16384) {
        const auto part = std::span(f).subspan(at, std::min<std::size_t>(16384, f.size() - at));
        if (fromClient)
          plain.tracker.client_data(part, clock.at(0us));
        else
          plain.tracker.server_data(part, clock.at(0us));
      }
    };
    split(true, insert);
    split(true, find);
    split(false, found);
    auto zi = wire::build_op_compressed(insert, c);
    auto zf = wire::build_op_compressed(found, c);
    REQUIRE(zi.ok());
    REQUIRE(zf.ok());
    REQUIRE(zi->size() * 256 > insert.size());  // not a bomb: the guard lets it in
    packed.tracker.client_data(*zi, clock.at(0us));
    const std::uint64_t afterInsert = packed.tracker.stats().inflatedBytes;
    packed.tracker.client_data(find, clock.at(0us));
    packed.tracker.server_data(*zf, clock.at(0us));
    MESSAGE(wire::to_string(c) << ": insert of " << insert.size() - 16 << " bytes, " << afterInsert
                               << " inflated; reply of " << found.size() - 16 << ", "
                               << packed.tracker.stats().inflatedBytes - afterInsert);
    CHECK(afterInsert < 4 * 64 * 1024);  // stopped early
    CHECK(packed.tracker.stats().inflatedBytes - afterInsert == found.size() - 16);
    CHECK(packed.tracker.sparse_frames() == 2);
    REQUIRE(packed.tracker.inspecting());
    const auto a = plain.out.commands();
    const auto b = packed.out.commands();
    REQUIRE(a.size() == 3);  // the insert's start, the find's start and end
    REQUIRE(b.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
      CAPTURE(i);
      CHECK(a[i].type == b[i].type);
      CHECK(a[i].commandName == b[i].commandName);
      CHECK(a[i].document == b[i].document);
      CHECK(a[i].documentCut == b[i].documentCut);
      CHECK(a[i].documentOmitted == b[i].documentOmitted);
      CHECK(a[i].summary.cursorId == b[i].summary.cursorId);
      CHECK(a[i].summary.nReturned == b[i].summary.nReturned);
    }
    CHECK(b[0].compressor == c);
    CHECK(b[0].documentCut);
    CHECK(b[2].type == EventType::commandSucceeded);
    CHECK(b[2].summary.cursorId == 31337);
    CHECK(b[2].compressor == c);
  }
  bson_destroy(body);
  bson_destroy(reply);
}
