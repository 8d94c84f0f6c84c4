// Event lines: every event type rendered, parsed back with nlohmann::json,
// keys / types / values asserted; truncation sweeps every cut point.
#include "varanus/sinks/render.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../support/bson_samples.hpp"
#include "sink_test_util.hpp"
#include "varanus/wire/bounded.hpp"
#include "varanus/wire/json.hpp"

using namespace varanus;
using namespace sinks_test;
using monitor::EventType;
using nlohmann::json;
using sinks::Format;
using sinks::RenderOptions;

namespace {

json render(const monitor::Event& e, RenderOptions o = {}) {
  std::string line;
  sinks::render_line(line, e, o);
  INFO(line);
  REQUIRE(line.find('\n') == std::string::npos);
  return json::parse(line);  // throws on invalid JSON or invalid UTF-8
}

// Length in code points (the writer's budget may count either way).
std::size_t code_points(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

// A command whose strings are full of multi-byte code points (2, 3 and 4 bytes).
const std::string kUnicodeCommand =
    R"({"insert": "people", "documents": [{"name": "Zoë Ångström", "city": "東京都渋谷区", )"
    R"("note": "🦎🦎🦎 varanus 🦎🦎🦎", "quote": "he said \"hi\"\n"}, {"name": "Łukasz Żółć", )"
    R"("city": "Αθήνα", "note": "🐉🐉🐉🐉🐉🐉🐉🐉🐉🐉🐉🐉"}], "$db": "crm"})";

}  // namespace

TEST_CASE("a started event renders every key of the schema with its type") {
  monitor::Event e = started();
  const json j = render(e);
  CHECK(j["t"] == "2026-11-24T19:15:24.123456Z");
  CHECK(j["event"] == "commandStarted");
  CHECK(j["connectionId"] == 7);
  CHECK(j["client"] == "127.0.0.1:50312");
  CHECK(j["server"] == "db.example.net:27017");
  CHECK(j["serverConnectionId"].is_number_integer());
  CHECK(j["serverConnectionId"] == 4242);
  CHECK(j["appName"] == "orders");
  CHECK(j["driver"] == "PyMongo 4.6.1");
  CHECK(j["requestId"] == 11);
  CHECK(j["commandName"] == "find");
  CHECK(j["databaseName"] == "shop");
  CHECK(j["command"] ==
        json::parse(R"({"find":"orders","filter":{"qty":{"$gt":5}},"$db":"shop"})"));
  // Keys that do not apply are absent, never null or false.
  for (const char* k : {"reply", "failure", "durationMicros", "hello", "unacknowledged", "exhaust",
                        "awaited", "redacted", "compressor", "commandTruncated", "reason"})
    CHECK_MESSAGE(!j.contains(k), k);
}

TEST_CASE("negative request ids and the key order of a started line") {
  monitor::Event e = started(-2147483647 - 1);
  std::string line;
  sinks::render_line(line, e, {});
  CHECK(json::parse(line)["requestId"] == -2147483648LL);
  CHECK(
      line.rfind(R"({"t":"2026-11-24T19:15:24.123456Z","event":"commandStarted","connectionId":7,)",
                 0) == 0);
}

TEST_CASE("a succeeded event has reply, durationMicros and its flags") {
  monitor::Event e = succeeded();
  e.hello = monitor::HelloKind::heartbeat;
  e.exhaust = true;
  e.awaited = true;
  e.compressor = wire::Compressor::zstd;
  const json j = render(e);
  CHECK(j["event"] == "commandSucceeded");
  CHECK(j["reply"]["cursor"]["ns"] == "shop.orders");
  CHECK(j["reply"]["ok"] == 1.0);
  CHECK(j["durationMicros"] == 1234);
  CHECK(j["hello"] == "heartbeat");
  CHECK(j["exhaust"] == true);
  CHECK(j["awaited"] == true);
  CHECK(j["compressor"] == "zstd");
  CHECK(!j.contains("command"));
  CHECK(!j.contains("unacknowledged"));

  SUBCASE("unacknowledged writes and handshakes") {
    e.hello = monitor::HelloKind::handshake;
    e.unacknowledged = true;
    e.compressor.reset();
    const json k = render(e);
    CHECK(k["hello"] == "handshake");
    CHECK(k["unacknowledged"] == true);
    CHECK(!k.contains("compressor"));
  }
}

TEST_CASE("a failed event extracts code, codeName, errmsg and errorLabels") {
  monitor::Event e = succeeded();
  e.type = EventType::commandFailed;
  e.document = bson(
      R"({"ok": 0.0, "errmsg": "Command failed with \"bad\" input", "code": 11000, )"
      R"("codeName": "DuplicateKey", "errorLabels": ["RetryableWriteError", "NoWritesPerformed"]})");
  const json j = render(e);
  CHECK(j["event"] == "commandFailed");
  CHECK(j["durationMicros"] == 1234);
  CHECK(j["failure"] ==
        json::parse(R"({"code":11000,"codeName":"DuplicateKey",)"
                    R"("errmsg":"Command failed with \"bad\" input",)"
                    R"("errorLabels":["RetryableWriteError","NoWritesPerformed"]})"));
  CHECK(!j.contains("reply"));

  SUBCASE("legacy $err and a missing code") {
    e.document = bson(R"({"$err": "not authorized", "ok": 0})");
    CHECK(render(e)["failure"] == json::parse(R"({"errmsg":"not authorized"})"));
  }
  SUBCASE("redacted server error: only code, codeName, errorLabels") {
    e.redacted = true;
    e.commandName = "saslStart";
    e.document = bson(R"({"code": 18, "codeName": "AuthenticationFailed"})");
    const json k = render(e);
    CHECK(k["failure"] == json::parse(R"({"code":18,"codeName":"AuthenticationFailed"})"));
    CHECK(k["redacted"] == true);
  }
  SUBCASE("a long errmsg is bounded and says so") {
    e.document = bson(R"({"ok": 0, "errmsg": ")" + std::string(5000, 'x') + R"(", "code": 2})");
    const json k = render(e, {Format::varanus, 100});
    CHECK(k["failure"]["errmsg"].get<std::string>().size() == 100);
    CHECK(k["failureTruncated"] == true);
  }
}

TEST_CASE("a network failure has failure.message") {
  monitor::Event e = succeeded();
  e.type = EventType::commandFailed;
  e.document.clear();
  e.message = "connection closed by server";
  const json j = render(e);
  CHECK(j["failure"] == json::parse(R"({"message":"connection closed by server"})"));
}

TEST_CASE("a redacted command renders as {} with redacted: true") {
  monitor::Event e = started();
  e.commandName = "saslStart";
  e.redacted = true;
  e.document.clear();
  const json j = render(e);
  CHECK(j["command"] == json::object());
  CHECK(j["redacted"] == true);
  e.document = bson("{}");
  CHECK(render(e)["command"] == json::object());
}

TEST_CASE("connection lines") {
  monitor::Event e;
  e.type = EventType::connectionOpened;
  e.time = fixed_time();
  e.connection = connection(3, false);
  json j = render(e);
  CHECK(j["event"] == "connectionOpened");
  CHECK(j["connectionId"] == 3);
  CHECK(j["client"] == "127.0.0.1:50312");
  CHECK(j["server"] == "db.example.net:27017");
  for (const char* k : {"serverConnectionId", "appName", "driver", "requestId", "reason"})
    CHECK_MESSAGE(!j.contains(k), k);

  e.type = EventType::connectionClosed;
  e.connection = connection(3, true);
  e.message = "client closed the connection";
  e.bytesFromClient = 1000;
  e.bytesFromServer = 123456789012ULL;
  e.commands = 17;
  j = render(e);
  CHECK(j["event"] == "connectionClosed");
  CHECK(j["reason"] == "client closed the connection");
  CHECK(j["bytesFromClient"] == 1000);
  CHECK(j["bytesFromServer"] == 123456789012ULL);
  CHECK(j["commands"] == 17);
  CHECK(j["appName"] == "orders");
  CHECK(j["serverConnectionId"] == 4242);
}

TEST_CASE("truncation keeps valid JSON, says so, and never splits a code point") {
  monitor::Event e = started(1, kUnicodeCommand);
  const json full = render(e, {Format::varanus, 0});
  CHECK(!full.contains("commandTruncated"));
  CHECK(full["command"]["documents"][1]["city"] == "Αθήνα");
  const std::size_t fullSize = full["command"].dump().size();

  for (std::size_t max = 1; max < fullSize + 20; ++max) {
    CAPTURE(max);
    const json j = render(e, {Format::varanus, max});  // parse() rejects invalid UTF-8
    REQUIRE(j["command"].is_object());
    if (j.contains("commandTruncated")) {
      CHECK(j["commandTruncated"] == true);
      // Bounded: the cut document is not much longer than asked for
      // (closing brackets and the last element may run over a little).
      CHECK(code_points(j["command"].dump()) <= max + 64);
    } else {
      CHECK(j["command"] == full["command"]);
    }
  }
  CHECK(render(e, {Format::varanus, 40}).contains("commandTruncated"));
}

TEST_CASE("reply truncation is flagged as replyTruncated") {
  monitor::Event e = succeeded();
  e.document = bson(R"({"cursor": {"firstBatch": [{"x": ")" + std::string(3000, 'y') +
                    R"("}], "id": 0, "ns": "a.b"}, "ok": 1})");
  const json j = render(e);  // default maxDocumentLength: 1000
  CHECK(j["replyTruncated"] == true);
  CHECK(j["reply"].is_object());
  CHECK(j["reply"].dump().size() < 1100);
}

TEST_CASE("values redaction keeps keys and replaces every leaf by its type") {
  monitor::Event e = started(
      5,
      R"({"insert": "people", "documents": [{"_id": {"$oid": "5f1d7f0e2a3b4c5d6e7f8091"}, )"
      R"("email": "zoe@example.com", "age": 41, "score": 2.5, "born": {"$date": "1985-03-01T00:00:00Z"}, )"
      R"("big": {"$numberLong": "9007199254740993"}, "ok": true, "nothing": null}], "$db": "crm"})");
  const RenderOptions o{Format::varanus, 0, sinks::Redaction::values};
  std::string line;
  sinks::render_line(line, e, o);
  for (const char* secret :
       {"zoe@example.com", "people", "crm\"", "41", "2.5", "5f1d7f0e", "1985", "9007199254740993"})
    CHECK_MESSAGE(line.find(secret) == std::string::npos, secret);
  const json j = json::parse(line);
  CHECK(j["command"] ==
        json::parse(R"({"insert":"string","documents":[{"_id":"objectId",)"
                    R"("email":"string","age":"int","score":"double","born":"date",)"
                    R"("big":"long","ok":"bool","nothing":"null"}],"$db":"string"})"));
  CHECK(j["databaseName"] == "shop");  // metadata is kept

  SUBCASE("errmsg of a failure is a value too") {
    monitor::Event f = succeeded();
    f.type = EventType::commandFailed;
    f.document = bson(R"({"ok": 0, "errmsg": "E11000 dup key: { email: \"zoe@example.com\" }", )"
                      R"("code": 11000, "codeName": "DuplicateKey"})");
    const json k = render(f, o);
    CHECK(k["failure"]["errmsg"] == "string");
    CHECK(k["failure"]["code"] == 11000);
  }
  SUBCASE("bounded too") {
    const json k = render(e, {Format::varanus, 30, sinks::Redaction::values});
    CHECK(k["commandTruncated"] == true);
    CHECK(k["command"].is_object());
  }
}

TEST_CASE("mongodb-log format follows the command logging spec") {
  const RenderOptions o{Format::mongodbLog};
  json j = render(started(), o);
  CHECK(j["message"] == "Command started");
  CHECK(j["commandName"] == "find");
  CHECK(j["databaseName"] == "shop");
  CHECK(j["requestId"] == 11);
  CHECK_FALSE(j.contains("operationId"));  // a proxy sees no driver operation
  CHECK(j["driverConnectionId"] == 7);
  CHECK(j["serverHost"] == "db.example.net");
  CHECK(j["serverPort"] == 27017);
  CHECK(j["serverConnectionId"] == 4242);
  REQUIRE(j["command"].is_string());
  CHECK(json::parse(j["command"].get<std::string>())["filter"]["qty"]["$gt"] == 5);

  j = render(succeeded(), o);
  CHECK(j["message"] == "Command succeeded");
  CHECK(j["durationMS"] == doctest::Approx(1.234));
  REQUIRE(j["reply"].is_string());
  CHECK(json::parse(j["reply"].get<std::string>())["ok"] == 1.0);

  monitor::Event f = succeeded();
  f.type = EventType::commandFailed;
  f.durationMicros = 5000;
  f.document.clear();
  f.message = "connection reset";
  j = render(f, o);
  CHECK(j["message"] == "Command failed");
  CHECK(j["durationMS"] == 5);
  CHECK(j["failure"] == "connection reset");

  SUBCASE("IPv6 upstreams") {
    monitor::Event e = started();
    auto c = std::make_shared<monitor::ConnectionInfo>(*e.connection);
    c->server = "[::1]:27019";
    e.connection = c;
    const json k = render(e, o);
    CHECK(k["serverHost"] == "::1");
    CHECK(k["serverPort"] == 27019);
  }
}

TEST_CASE("mongodb-log documents are cut at maxDocumentLength plus ... on a code point boundary") {
  monitor::Event e = started(1, kUnicodeCommand);
  const std::string full = render(e, {Format::mongodbLog, 0})["command"].get<std::string>();
  for (std::size_t max = 1; max < full.size() + 5; ++max) {
    CAPTURE(max);
    const json j = render(e, {Format::mongodbLog, max});  // parse() rejects invalid UTF-8
    const std::string s = j["command"].get<std::string>();
    if (full.size() <= max) {
      CHECK(s == full);
    } else {
      REQUIRE(s.size() >= 3);
      CHECK(s.substr(s.size() - 3) == "...");
      CHECK(s.size() <= max + 3);
      CHECK(s.size() + 3 > max);  // at most one code point (< 4 bytes) less than asked
      CHECK(full.rfind(s.substr(0, s.size() - 3), 0) == 0);  // a true prefix
    }
  }
}

TEST_CASE("timestamps are RFC 3339 UTC with microseconds") {
  using namespace std::chrono;
  std::string s;
  sinks::append_rfc3339(s, sys_days{year{1999} / 12 / 31} + hours{23} + minutes{59} + seconds{59} +
                               microseconds{999999});
  CHECK(s == "1999-12-31T23:59:59.999999Z");
  s.clear();
  sinks::append_rfc3339(s, system_clock::time_point{});
  CHECK(s == "1970-01-01T00:00:00.000000Z");
  s.clear();
  sinks::append_rfc3339(s, sys_days{year{2028} / 2 / 29} + microseconds{7});
  CHECK(s == "2028-02-29T00:00:00.000007Z");
}

TEST_CASE("timestamps stay right within a second and across a second, a day, a year") {
  // The calendar part is cached per second: every step must still show.
  using namespace std::chrono;
  const auto base = sys_days{year{1999} / 12 / 31} + hours{23} + minutes{59} + seconds{58};
  const char* expected[] = {"1999-12-31T23:59:58.999998Z", "1999-12-31T23:59:58.999999Z",
                            "1999-12-31T23:59:59.000000Z", "1999-12-31T23:59:59.500000Z",
                            "2000-01-01T00:00:00.000000Z", "2000-01-01T00:00:00.000001Z",
                            "1999-12-31T23:59:59.000001Z"};
  const microseconds offsets[] = {
      microseconds{999998},  microseconds{999999},  microseconds{1000000}, microseconds{1500000},
      microseconds{2000000}, microseconds{2000001}, microseconds{1000001}};
  for (int i = 0; i < 7; ++i) {
    std::string s;
    sinks::append_rfc3339(s, base + offsets[i]);
    CHECK(s == expected[i]);
  }
}

TEST_CASE("a render cache renders once per options and reuses its buffers") {
  sinks::RenderCache cache;
  monitor::Event e = started();
  const RenderOptions a{}, b{Format::mongodbLog};
  cache.next();
  std::string_view l1 = cache.line(e, a);
  std::string_view l2 = cache.line(e, a);
  CHECK(l1.data() == l2.data());
  CHECK(cache.line(e, b) != l1);
  monitor::Event e2 = started(99);
  cache.next();
  CHECK(json::parse(cache.line(e2, a))["requestId"] == 99);
}

TEST_CASE("document_copy_bound covers what each rendering reads") {
  RenderOptions o;
  o.maxDocumentLength = 0;
  CHECK(sinks::document_copy_bound(o).unlimited());
  o.redaction = sinks::Redaction::values;
  CHECK(sinks::document_copy_bound(o).unlimited());
  for (std::size_t max : {1u, 50u, 1000u}) {
    CAPTURE(max);
    o.maxDocumentLength = max;
    o.redaction = sinks::Redaction::none;
    const wire::CopyBound b = sinks::document_copy_bound(o);
    // The mongodb-log string rendering writes 2 * max + 64 before its cut.
    CHECK(b.jsonLength >= 2 * max + 64);
    CHECK(b.jsonLength == 2 * max + 128);
    CHECK_FALSE(b.typeNames);
    o.redaction = sinks::Redaction::values;
    CHECK(sinks::document_copy_bound(o).typeNames);
    CHECK(sinks::document_copy_bound(o).jsonLength == b.jsonLength);
  }
}

TEST_CASE("a bounded copy renders the same line as the whole document, in every format") {
  // Documents of every shape, large enough to be cut: the line for the
  // bounded copy (what the proxy keeps) must be the whole document's line.
  const std::string big(50'000, 'w');
  const std::string docs[] = {
      R"({"insert": "c", "documents": [{"_id": 1, "payload": ")" + big + R"("}], "$db": "d"})",
      R"({"find": "c", "filter": {"a": ")" + big +
          R"(", "b": 1, "c": {"d": [1, 2, 3]}}, "$db": "d"})",
      R"({"a": ")" + big + R"(", "after1": 1, "after2": "two", "after3": {"x": [true, null]}})",
      kUnicodeCommand,
  };
  for (const auto& text : docs) {
    const wire::BsonBytes whole = bson(text);
    for (std::size_t max : {50u, 300u, 1000u}) {
      for (Format format : {Format::varanus, Format::mongodbLog}) {
        for (sinks::Redaction redaction : {sinks::Redaction::none, sinks::Redaction::values}) {
          RenderOptions o;
          o.format = format;
          o.maxDocumentLength = max;
          o.redaction = redaction;
          const wire::CopyBound bound = sinks::document_copy_bound(o);
          const wire::BoundedBytes copy = wire::bounded_copy(
              wire::BsonView{whole.data(), static_cast<std::uint32_t>(whole.size())}, bound);
          monitor::Event full = started(11, text);
          monitor::Event kept = full;
          kept.document = copy.bytes;
          kept.documentCut = copy.cut;
          std::string a, b;
          sinks::render_line(a, full, o);
          sinks::render_line(b, kept, o);
          CAPTURE(max);
          CAPTURE(static_cast<int>(format));
          CAPTURE(static_cast<int>(redaction));
          CHECK(a == b);
          if (copy.cut) CHECK(copy.bytes.size() < whole.size());
        }
      }
    }
  }
}

TEST_CASE("the render cache gives the same lines as render_line, per connection snapshot") {
  sinks::RenderCache cache;
  std::vector<monitor::ConnectionInfoPtr> conns;
  for (std::uint64_t id = 1; id <= 200; ++id) conns.push_back(connection(id, id % 2 == 0));
  // A later snapshot of connection 1 (the handshake revealed the app name).
  auto updated = std::make_shared<monitor::ConnectionInfo>(*conns[0]);
  updated->appName = "billing";
  conns.push_back(updated);
  for (int pass = 0; pass < 3; ++pass) {
    for (const auto& c : conns) {
      for (Format format : {Format::varanus, Format::mongodbLog}) {
        monitor::Event e = started();
        e.connection = c;
        RenderOptions o;
        o.format = format;
        std::string expected;
        sinks::render_line(expected, e, o);
        cache.next();
        CHECK(cache.line(e, o) == expected);
      }
    }
  }
}

TEST_CASE("collection is on every command line that names one, in both formats") {
  monitor::Event e = started();
  e.collection = "orders";
  CHECK(render(e)["collection"] == "orders");
  CHECK(render(e, RenderOptions{Format::mongodbLog})["collection"] == "orders");
  monitor::Event s = succeeded();
  s.collection = "orders";
  CHECK(render(s)["collection"] == "orders");
  s.collection.clear();
  CHECK_FALSE(render(s).contains("collection"));
}

TEST_CASE("lines: commands renders one command line with the command, reply and summary") {
  RenderOptions o;
  o.lines = sinks::Lines::commands;
  monitor::Event st = started();
  st.collection = "orders";
  monitor::Event s = succeeded();
  s.collection = "orders";
  s.document = bson(R"({"cursor": {"firstBatch": [{"a": 1}, {"a": 2}], "id": {"$numberLong":
      "2101374710788892982"}, "ns": "shop.orders"}, "ok": 1.0})");
  s.summary.nReturned = 2;
  s.summary.hasCursor = true;
  s.summary.cursorId = 2101374710788892982LL;
  s.requestBytes = 120;
  s.replyBytes = 210;
  std::string line;
  sinks::render_line(line, s, o, &st);
  const json j = json::parse(line);
  CHECK(j["event"] == "command");
  CHECK(j["connectionId"] == 7);
  CHECK(j["appName"] == "orders");
  CHECK(j["requestId"] == 11);
  CHECK(j["commandName"] == "find");
  CHECK(j["databaseName"] == "shop");
  CHECK(j["collection"] == "orders");
  CHECK(j["command"]["filter"]["qty"]["$gt"] == 5);
  CHECK(j["reply"]["ok"] == 1.0);
  CHECK(j["outcome"] == "succeeded");
  CHECK(j["durationMicros"] == 1234);
  CHECK(j["nReturned"] == 2);
  CHECK(j["cursorId"] == 2101374710788892982LL);
  CHECK(j["cursorExhausted"] == false);
  CHECK(j["requestBytes"] == 120);
  CHECK(j["replyBytes"] == 210);
  for (const char* k : {"n", "nModified", "nUpserted", "nRemoved", "writeErrors", "failure"})
    CHECK_MESSAGE(!j.contains(k), k);

  SUBCASE("a failed write: failure, outcome, write counts") {
    monitor::Event f = succeeded();
    f.type = EventType::commandFailed;
    f.commandName = "insert";
    f.document = bson(R"({"ok": 0, "errmsg": "boom", "code": 8, "codeName": "UnknownError"})");
    f.summary.n = 0;
    f.summary.writeErrors = 0;
    line.clear();
    sinks::render_line(line, f, o, &st);
    const json k = json::parse(line);
    CHECK(k["event"] == "command");
    CHECK(k["outcome"] == "failed");
    CHECK(k["failure"]["code"] == 8);
    CHECK(k["failure"]["errmsg"] == "boom");
    CHECK(k["n"] == 0);
    CHECK(k["writeErrors"] == 0);
    CHECK_FALSE(k.contains("reply"));
  }
  SUBCASE("canonical: the cursor id and every number in documents stay typed") {
    o.extendedJson = sinks::ExtendedJson::canonical;
    line.clear();
    sinks::render_line(line, s, o, &st);
    const json k = json::parse(line);
    CHECK(k["cursorId"] == json{{"$numberLong", "2101374710788892982"}});
    CHECK(k["reply"]["cursor"]["id"] == json{{"$numberLong", "2101374710788892982"}});
    CHECK(k["reply"]["ok"] == json{{"$numberDouble", "1.0"}});
    CHECK(k["command"]["filter"]["qty"]["$gt"] == json{{"$numberInt", "5"}});
  }
  SUBCASE("documents: string") {
    o.documents = sinks::Documents::string;
    line.clear();
    sinks::render_line(line, s, o, &st);
    const json k = json::parse(line);
    REQUIRE(k["command"].is_string());
    REQUIRE(k["reply"].is_string());
    CHECK(json::parse(k["command"].get<std::string>())["find"] == "orders");
    CHECK(json::parse(k["reply"].get<std::string>())["cursor"]["firstBatch"].size() == 2);
  }
  SUBCASE("without its started event the line has no command") {
    line.clear();
    sinks::render_line(line, s, o, nullptr);
    CHECK_FALSE(json::parse(line).contains("command"));
  }
  SUBCASE("a started event renders as before (sinks skip it)") {
    CHECK(render(st, o)["event"] == "commandStarted");
  }
}

// append_type_json walks with BsonWalk; it used to walk with bson_iter.
// That version is the reference here: over random and damaged documents,
// at several budgets, both write the same text.
namespace reference {

bool walk_types(std::string& out, bson_iter_t* it, bool isArray, std::size_t start, std::size_t max,
                int depth);

const char* type_alias(bson_type_t t) {
  switch (t) {
    case BSON_TYPE_DOUBLE:
      return "double";
    case BSON_TYPE_UTF8:
      return "string";
    case BSON_TYPE_DOCUMENT:
      return "object";
    case BSON_TYPE_ARRAY:
      return "array";
    case BSON_TYPE_BINARY:
      return "binData";
    case BSON_TYPE_UNDEFINED:
      return "undefined";
    case BSON_TYPE_OID:
      return "objectId";
    case BSON_TYPE_BOOL:
      return "bool";
    case BSON_TYPE_DATE_TIME:
      return "date";
    case BSON_TYPE_NULL:
      return "null";
    case BSON_TYPE_REGEX:
      return "regex";
    case BSON_TYPE_DBPOINTER:
      return "dbPointer";
    case BSON_TYPE_CODE:
      return "javascript";
    case BSON_TYPE_SYMBOL:
      return "symbol";
    case BSON_TYPE_CODEWSCOPE:
      return "javascriptWithScope";
    case BSON_TYPE_INT32:
      return "int";
    case BSON_TYPE_TIMESTAMP:
      return "timestamp";
    case BSON_TYPE_INT64:
      return "long";
    case BSON_TYPE_DECIMAL128:
      return "decimal";
    case BSON_TYPE_MINKEY:
      return "minKey";
    case BSON_TYPE_MAXKEY:
      return "maxKey";
    default:
      return "unknown";
  }
}

bool walk_types(std::string& out, bson_iter_t* it, bool isArray, std::size_t start, std::size_t max,
                int depth) {
  out += isArray ? '[' : '{';
  bool first = true;
  bool cut = false;
  while (bson_iter_next(it)) {
    if (max != 0 && out.size() - start >= max) {
      cut = true;
      break;
    }
    if (!first) out += ',';
    first = false;
    if (!isArray) {
      varanus::wire::append_json_string(out, {bson_iter_key(it), bson_iter_key_len(it)});
      out += ':';
    }
    const bson_type_t type = bson_iter_type(it);
    bson_iter_t child;
    if ((type == BSON_TYPE_DOCUMENT || type == BSON_TYPE_ARRAY) &&
        depth + 1 < varanus::wire::kMaxBsonDepth && bson_iter_recurse(it, &child)) {
      if (walk_types(out, &child, type == BSON_TYPE_ARRAY, start, max, depth + 1)) {
        cut = true;
        break;
      }
    } else {
      out += '"';
      out += type_alias(type);
      out += '"';
    }
  }
  out += isArray ? ']' : '}';
  return cut;
}

std::string type_json(const std::vector<std::uint8_t>& d, std::size_t max, bool& cut) {
  std::string out;
  bson_iter_t it;
  if (d.empty() || !bson_iter_init_from_data(&it, d.data(), d.size())) {
    cut = false;
    return "{}";
  }
  cut = walk_types(out, &it, false, out.size(), max, 0);
  return out;
}

}  // namespace reference

TEST_CASE("append_type_json writes what the bson_iter version wrote") {
  std::mt19937 rng(1904);
  int compared = 0;
  int cut = 0;
  for (int i = 0; i < 6000; ++i) {
    auto d = varanus::test_bson::random_doc(rng);
    if (i % 3 != 0) varanus::test_bson::mutate(d, rng);
    if (varanus::test_bson::oracle(d).find("unframed\n") != std::string::npos) continue;
    for (std::size_t max : {0u, 8u, 30u, 100u}) {
      bool wantCut = false;
      const std::string want = reference::type_json(d, max, wantCut);
      std::string got;
      const bool gotCut = sinks::append_type_json(
          got, wire::BsonView{d.data(), static_cast<std::uint32_t>(d.size())}, max);
      CAPTURE(max);
      REQUIRE(got == want);
      REQUIRE(gotCut == wantCut);
      ++compared;
      if (wantCut) ++cut;
    }
  }
  CHECK(compared > 15000);
  CHECK(cut > 1000);
}
