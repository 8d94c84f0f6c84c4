// Topology (SDAM) events through the sinks: the nine events of a real
// sdam::Topology sequence (opening, a primary, a step-down, heartbeats,
// closing) rendered in both formats and parsed back, the filters, the
// metrics (checked by promtool), /stats and a dispatcher round trip into a
// file that jq reads.
#include <bson/bson.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "sink_test_util.hpp"
#include "varanus/monitor/sdam_events.hpp"
#include "varanus/sinks/dispatcher.hpp"
#include "varanus/sinks/line_sinks.hpp"
#include "varanus/sinks/metrics.hpp"
#include "varanus/sinks/otlp.hpp"
#include "varanus/sinks/render.hpp"

using namespace varanus;
using namespace sinks_test;
using monitor::sdam::Topology;
using nlohmann::json;
using sinks::Format;
using sinks::RenderOptions;

namespace {

namespace sdam = monitor::sdam;

sdam::ServerDescription hello(const std::string& address, const std::string& extended_json,
                              std::chrono::microseconds rtt = std::chrono::microseconds(250)) {
  const wire::BsonBytes doc = bson(extended_json);
  return sdam::ServerDescription::from_hello(
      address, wire::BsonView{doc.data(), static_cast<std::uint32_t>(doc.size())}, rtt);
}

const sdam::ViaMap kVia = {{"a:27017", "127.0.0.1:27018"}, {"b:27017", "127.0.0.1:27019"}};

const char* kPrimaryA =
    R"({"ok": 1, "isWritablePrimary": true, "setName": "rs0", "setVersion": 1,)"
    R"( "electionId": {"$oid": "7fffffff0000000000000001"}, "hosts": ["a:27017", "b:27017"],)"
    R"( "primary": "a:27017", "me": "a:27017", "maxWireVersion": 21})";
const char* kSecondaryB =
    R"({"ok": 1, "isWritablePrimary": false, "secondary": true, "setName": "rs0", "setVersion": 1,)"
    R"( "hosts": ["a:27017", "b:27017"], "primary": "a:27017", "me": "b:27017", "maxWireVersion": 21})";
const char* kPrimaryB =
    R"({"ok": 1, "isWritablePrimary": true, "setName": "rs0", "setVersion": 1,)"
    R"( "electionId": {"$oid": "7fffffff0000000000000002"}, "hosts": ["a:27017", "b:27017"],)"
    R"( "primary": "b:27017", "me": "b:27017", "maxWireVersion": 21})";
// What a hello with speculativeAuthenticate gets back: a SASL payload.
const char* kSecretReply =
    R"({"ok": 1, "isWritablePrimary": true, "saslSupportedMechs": ["SCRAM-SHA-256"],)"
    R"( "speculativeAuthenticate": {"conversationId": 1, "done": false,)"
    R"( "payload": {"$binary": {"base64": "c2VjcmV0LW5vbmNl", "subType": "00"}}}})";

std::vector<monitor::Event> to_events(const std::vector<sdam::TopologyEvent>& in) {
  std::vector<monitor::Event> out;
  for (const auto& t : in) out.push_back(monitor::topology_event(t, fixed_time()));
  return out;
}

void append(std::vector<monitor::Event>& to, std::vector<monitor::Event> more) {
  for (auto& e : more) to.push_back(std::move(e));
}

/// A replica set's life: opening, heartbeats, A primary with B secondary,
/// a step-down (B primary), a failed heartbeat, a heartbeat reply with
/// secrets, closing. Every one of the nine names occurs.
std::vector<monitor::Event> life() {
  Topology t({{"a:27017", "b:27017"}, std::string("rs0"), false});
  std::vector<monitor::Event> out = to_events(sdam::opening_events(t.description(), kVia));
  out.push_back(
      monitor::topology_event(sdam::heartbeat_started("a:27017", kVia, false), fixed_time()));
  const wire::BsonBytes replyA = bson(kPrimaryA);
  out.push_back(monitor::topology_event(
      sdam::heartbeat_succeeded(
          "a:27017", kVia, false, std::chrono::microseconds(812),
          wire::BsonView{replyA.data(), static_cast<std::uint32_t>(replyA.size())}),
      fixed_time()));
  auto u = t.apply(hello("a:27017", kPrimaryA));
  append(out, to_events(sdam::update_events(u, t.description(), kVia)));
  u = t.apply(hello("b:27017", kSecondaryB));
  append(out, to_events(sdam::update_events(u, t.description(), kVia)));
  u = t.apply(hello("b:27017", kPrimaryB, std::chrono::microseconds(400)));  // the step-down
  append(out, to_events(sdam::update_events(u, t.description(), kVia)));
  out.push_back(monitor::topology_event(
      sdam::heartbeat_failed("a:27017", kVia, true, std::chrono::microseconds(10'000'123),
                             "connection refused"),
      fixed_time()));
  const wire::BsonBytes secret = bson(kSecretReply);
  out.push_back(monitor::topology_event(
      sdam::heartbeat_succeeded(
          "b:27017", kVia, true, std::chrono::microseconds(9'000'000),
          wire::BsonView{secret.data(), static_cast<std::uint32_t>(secret.size())}),
      fixed_time()));
  append(out, to_events(sdam::closing_events(t.description(), kVia)));
  return out;
}

json render(const monitor::Event& e, RenderOptions o = {}) {
  std::string line;
  sinks::render_line(line, e, o);
  INFO(line);
  REQUIRE(line.find('\n') == std::string::npos);
  return json::parse(line);  // throws on invalid JSON or invalid UTF-8
}

std::vector<std::string> names_of(const std::vector<monitor::Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(std::string(monitor::event_name(e)));
  return out;
}

const monitor::Event& find(const std::vector<monitor::Event>& events, const std::string& name,
                           int nth = 0) {
  for (const auto& e : events)
    if (e.commandName == name && nth-- == 0) return e;
  FAIL("no event " << name);
  return events.front();
}

}  // namespace

TEST_CASE("a replica set's life holds each of the nine SDAM events, as topology Events") {
  const auto events = life();
  std::set<std::string> seen;
  for (const auto& e : events) {
    CHECK(e.type == monitor::EventType::topology);
    CHECK(e.connection == nullptr);
    CHECK(monitor::to_string(e.type) == "topology");
    CHECK(monitor::event_name(e) == e.commandName);
    seen.insert(e.commandName);
  }
  for (auto n : sdam::kTopologyEventNames) CHECK_MESSAGE(seen.count(std::string(n)) == 1, n);
  // The step-down: both members' descriptions, then the topology's.
  const auto names = names_of(events);
  const auto at = std::find(names.begin(), names.end(), "serverHeartbeatFailed");
  REQUIRE(at - names.begin() >= 3);
  CHECK(std::vector<std::string>(at - 3, at) ==
        std::vector<std::string>{"serverDescriptionChanged", "serverDescriptionChanged",
                                 "topologyDescriptionChanged"});
}

TEST_CASE("varanus format: the SDAM name as `event`, the fields at the top level") {
  const auto events = life();
  for (const auto& e : events) {
    const json j = render(e);
    CHECK(j["t"] == "2026-11-24T19:15:24.123456Z");
    CHECK(j["event"] == e.commandName);
    CHECK_FALSE(j.contains("connectionId"));  // no client connection
    CHECK_FALSE(j.contains("commandName"));
    if (e.commandName != "topologyOpening" && e.commandName != "topologyClosed" &&
        e.commandName != "topologyDescriptionChanged")
      CHECK(j["address"].is_string());
  }
  const json opening = render(find(events, "topologyOpening"));
  CHECK(opening == json{{"t", "2026-11-24T19:15:24.123456Z"}, {"event", "topologyOpening"}});
  CHECK(render(find(events, "serverOpening")) ==
        json::parse(R"({"t": "2026-11-24T19:15:24.123456Z", "event": "serverOpening",)"
                    R"( "address": "a:27017", "via": "127.0.0.1:27018"})"));

  // The step-down, as the issue lists the fields; the README's example line.
  std::string exact;
  sinks::render_line(exact, find(events, "serverDescriptionChanged", 2), RenderOptions{});
  CHECK(
      exact ==
      R"({"t":"2026-11-24T19:15:24.123456Z","event":"serverDescriptionChanged","address":"b:27017","via":"127.0.0.1:27019","previousDescription":{"address":"b:27017","type":"RSSecondary","setName":"rs0","setVersion":1,"primary":"a:27017","hosts":["a:27017","b:27017"],"roundTripTimeMicros":250},"newDescription":{"address":"b:27017","type":"RSPrimary","setName":"rs0","setVersion":1,"electionId":{"$oid":"7fffffff0000000000000002"},"primary":"b:27017","hosts":["a:27017","b:27017"],"roundTripTimeMicros":400}})");
  const json b = render(find(events, "serverDescriptionChanged", 2));
  CHECK(b["address"] == "b:27017");
  CHECK(b["via"] == "127.0.0.1:27019");
  CHECK(b["previousDescription"]["type"] == "RSSecondary");
  CHECK(b["newDescription"]["type"] == "RSPrimary");
  CHECK(b["newDescription"]["electionId"] == json{{"$oid", "7fffffff0000000000000002"}});
  CHECK(b["newDescription"]["roundTripTimeMicros"] == 400);
  CHECK(b["newDescription"]["hosts"] == json::array({"a:27017", "b:27017"}));
  const json a = render(find(events, "serverDescriptionChanged", 3));
  CHECK(a["address"] == "a:27017");
  CHECK(a["newDescription"]["type"] == "Unknown");
  CHECK(a["newDescription"]["error"] == "primary marked stale due to discovery of newer primary");
  const json tdc = render(find(events, "topologyDescriptionChanged", 3));
  CHECK(tdc["newDescription"] ==
        json::parse(R"({"type": "ReplicaSetWithPrimary", "setName": "rs0", "servers":)"
                    R"( [{"address": "a:27017", "type": "Unknown"},)"
                    R"( {"address": "b:27017", "type": "RSPrimary"}]})"));

  const json hb = render(find(events, "serverHeartbeatSucceeded"));
  CHECK(hb["awaited"] == false);
  CHECK(hb["durationMicros"] == 812);
  CHECK(hb["reply"]["setName"] == "rs0");
  CHECK_FALSE(hb.contains("redacted"));
  const json failed = render(find(events, "serverHeartbeatFailed"));
  CHECK(failed == json::parse(R"({"t": "2026-11-24T19:15:24.123456Z", "event":)"
                              R"( "serverHeartbeatFailed", "address": "a:27017", "via":)"
                              R"( "127.0.0.1:27018", "awaited": true, "durationMicros": 10000123,)"
                              R"( "failure": {"message": "connection refused"}})"));
  CHECK(render(find(events, "topologyClosed")) ==
        json{{"t", "2026-11-24T19:15:24.123456Z"}, {"event", "topologyClosed"}});
}

TEST_CASE("mongodb-log format: the SDAM logging spec's messages") {
  const auto events = life();
  RenderOptions o;
  o.format = Format::mongodbLog;
  const std::map<std::string, std::string> messages = {
      {"topologyOpening", "Starting topology monitoring"},
      {"topologyClosed", "Stopped topology monitoring"},
      {"topologyDescriptionChanged", "Topology description changed"},
      {"serverOpening", "Starting server monitoring"},
      {"serverClosed", "Stopped server monitoring"},
      {"serverDescriptionChanged", "Server description changed"},
      {"serverHeartbeatStarted", "Server heartbeat started"},
      {"serverHeartbeatSucceeded", "Server heartbeat succeeded"},
      {"serverHeartbeatFailed", "Server heartbeat failed"}};
  for (const auto& e : events) {
    const json j = render(e, o);
    CHECK(j["t"] == "2026-11-24T19:15:24.123456Z");
    CHECK(j["message"] == messages.at(e.commandName));
    CHECK_FALSE(j.contains("address"));
    CHECK_FALSE(j.contains("durationMicros"));
    CHECK_FALSE(j.contains("driverConnectionId"));
  }
  const json opening = render(find(events, "serverOpening"), o);
  CHECK(opening == json::parse(R"({"t": "2026-11-24T19:15:24.123456Z", "message":)"
                               R"( "Starting server monitoring", "serverHost": "a",)"
                               R"( "serverPort": 27017, "via": "127.0.0.1:27018"})"));
  const json b = render(find(events, "serverDescriptionChanged", 2), o);
  REQUIRE(b["newDescription"].is_string());  // documents are strings, like a command log's
  CHECK(json::parse(b["newDescription"].get<std::string>())["type"] == "RSPrimary");
  const json tdc = render(find(events, "topologyDescriptionChanged", 3), o);
  CHECK(json::parse(tdc["previousDescription"].get<std::string>())["type"] ==
        "ReplicaSetWithPrimary");
  const json failed = render(find(events, "serverHeartbeatFailed"), o);
  CHECK(failed["durationMS"] == doctest::Approx(10000.123));
  CHECK(failed["awaited"] == true);
  CHECK(failed["failure"] == "connection refused");
  const json hb = render(find(events, "serverHeartbeatSucceeded"), o);
  CHECK(hb["durationMS"] == doctest::Approx(0.812));
  CHECK(json::parse(hb["reply"].get<std::string>())["setName"] == "rs0");
}

TEST_CASE("a heartbeat reply's authentication secrets reach no line, in any format") {
  const auto events = life();
  const monitor::Event& secret = find(events, "serverHeartbeatSucceeded", 1);
  CHECK(secret.redacted);
  for (Format f : {Format::varanus, Format::mongodbLog})
    for (auto docs : {sinks::Documents::object, sinks::Documents::string})
      for (std::size_t max : {std::size_t{0}, std::size_t{1000}}) {
        RenderOptions o;
        o.format = f;
        o.documents = docs;
        o.maxDocumentLength = max;
        std::string line;
        sinks::render_line(line, secret, o);
        INFO(line);
        CHECK(line.find("speculativeAuthenticate") == std::string::npos);
        CHECK(line.find("saslSupportedMechs") == std::string::npos);
        CHECK(line.find("SCRAM") == std::string::npos);
        CHECK(line.find("c2VjcmV0") == std::string::npos);
        const json j = json::parse(line);
        CHECK(j.contains("address") == (f == Format::varanus));
      }
  const json j = render(secret);
  CHECK(j["reply"] == json::object());
  CHECK(j["redacted"] == true);
  CHECK(j["durationMicros"] == 9000000);
  // An ordinary reply is kept whole.
  CHECK_FALSE(find(events, "serverHeartbeatSucceeded", 0).redacted);
}

TEST_CASE("sink options apply to topology lines: bounds, strings, type names, canonical") {
  const auto events = life();
  const monitor::Event& hb = find(events, "serverHeartbeatSucceeded");
  RenderOptions small;
  small.maxDocumentLength = 40;
  const json cut = render(hb, small);
  CHECK(cut["replyTruncated"] == true);
  CHECK(cut["reply"].dump().size() < 100);
  CHECK(cut["address"] == "a:27017");  // top-level fields are never cut

  RenderOptions strings;
  strings.documents = sinks::Documents::string;
  const json s = render(find(events, "topologyDescriptionChanged", 3), strings);
  REQUIRE(s["newDescription"].is_string());
  CHECK(json::parse(s["newDescription"].get<std::string>())["setName"] == "rs0");

  RenderOptions types;
  types.redaction = sinks::Redaction::values;
  const json t = render(hb, types);
  CHECK(t["reply"]["setName"] == "string");  // the server's reply: values hidden
  CHECK(t["address"] == "a:27017");          // varanus's own view: kept
  const json d = render(find(events, "serverDescriptionChanged", 2), types);
  CHECK(d["newDescription"]["type"] == "RSPrimary");

  RenderOptions canonical;
  canonical.extendedJson = sinks::ExtendedJson::canonical;
  const json c = render(find(events, "serverDescriptionChanged", 2), canonical);
  CHECK(c["newDescription"]["setVersion"] == json{{"$numberLong", "1"}});
  CHECK_FALSE(c.contains("durationMicros"));
}

TEST_CASE("filters: topology events by name, command selections leave them out") {
  const auto events = life();
  auto kept = [&](const sinks::SinkFilter& f) {
    std::vector<std::string> out;
    for (const auto& e : events)
      if (f.accepts(e)) out.push_back(e.commandName);
    return out;
  };
  sinks::SinkFilter all;
  CHECK(kept(all).size() == events.size());

  sinks::SinkFilter noHeartbeats;
  noHeartbeats.excludeEvents = {"serverHeartbeatStarted", "serverheartbeatsucceeded"};
  const auto n = kept(noHeartbeats);
  CHECK(std::count(n.begin(), n.end(), "serverHeartbeatStarted") == 0);
  CHECK(std::count(n.begin(), n.end(), "serverHeartbeatSucceeded") == 0);
  CHECK(std::count(n.begin(), n.end(), "serverHeartbeatFailed") == 1);
  CHECK(n.size() == events.size() - 3);

  sinks::SinkFilter only;
  only.includeEvents = {"topologyDescriptionChanged"};
  CHECK(kept(only) == std::vector<std::string>(4, "topologyDescriptionChanged"));
  // ... and a command event is not one of them.
  CHECK_FALSE(only.accepts(started()));

  // Command selections: topology events are not commands.
  sinks::SinkFilter failedOnly;
  failedOnly.failedOnly = true;
  CHECK(kept(failedOnly).empty());
  sinks::SinkFilter slow;
  slow.minDurationMicros = 1;
  CHECK(kept(slow).empty());
  // Command, database, sample and connection filters do not touch them.
  sinks::SinkFilter commands;
  commands.includeCommands = {"find"};
  commands.includeDatabases = {"shop"};
  commands.sampleRate = 0.0;
  commands.connectionEvents = false;
  commands.keepHellos = false;
  CHECK(kept(commands).size() == events.size());
}

TEST_CASE("a lines: commands sink keeps topology changes, not heartbeats unless named") {
  const auto events = life();
  std::vector<std::string> got;
  RenderOptions o;
  o.lines = sinks::Lines::commands;
  sinks::CallbackSink sink(
      [&](const sinks::RenderedEvent& e) { got.push_back(e.event().commandName); }, "cb", o);
  for (const auto& e : events) sink.write(e);
  CHECK(std::none_of(got.begin(), got.end(),
                     [](const std::string& n) { return n.starts_with("serverHeartbeat"); }));
  CHECK(got.size() == events.size() - 4);
  CHECK(sink.filtered() == 4);

  got.clear();
  sinks::SinkFilter f;
  f.includeEvents = {"serverHeartbeatFailed", "topologyDescriptionChanged"};
  sinks::CallbackSink named(
      [&](const sinks::RenderedEvent& e) { got.push_back(e.event().commandName); }, "cb", o, f);
  for (const auto& e : events) named.write(e);
  CHECK(std::count(got.begin(), got.end(), "serverHeartbeatFailed") == 1);
  CHECK(std::count(got.begin(), got.end(), "topologyDescriptionChanged") == 4);
  CHECK(got.size() == 5);
}

namespace {

/// promtool check metrics on `text`: its output (empty when it is happy).
std::string promtool(const std::string& text) {
  TempDir dir;
  const auto path = dir.path / "metrics.txt";
  {
    std::ofstream f(path);
    f << text;
  }
  const std::string cmd = "promtool check metrics < " + path.string() + " 2>&1; echo rc=$?";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  ::pclose(p);
  return out;
}

std::string metrics_text(const sinks::MetricsSink& m) {
  std::string out;
  m.render(out);
  return out;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.starts_with(line + "\n");
}

}  // namespace

TEST_CASE("metrics: primary changes, heartbeat failures, member types and round trips") {
  const auto events = life();
  sinks::MetricsSink m;
  // No topology monitor: no topology families at all.
  CHECK(metrics_text(m).find("varanus_member_type") == std::string::npos);
  CHECK(metrics_text(m).find("varanus_topology_primary_changes_total") == std::string::npos);

  // Up to the step-down's first event: A is primary, B secondary.
  std::size_t i = 0;
  const auto names = names_of(events);
  const std::size_t stepDown =
      static_cast<std::size_t>(std::find(names.begin(), names.end(), "serverHeartbeatFailed") -
                               names.begin()) -
      3;
  for (; i < stepDown; ++i) m.write(events[i]);
  std::string text = metrics_text(m);
  INFO(text);
  CHECK(has_line(text, "varanus_topology_primary_changes_total 0"));  // the first primary
  CHECK(has_line(
      text, R"(varanus_member_type{member="a:27017",via="127.0.0.1:27018",type="RSPrimary"} 1)"));
  CHECK(has_line(
      text, R"(varanus_member_type{member="b:27017",via="127.0.0.1:27019",type="RSSecondary"} 1)"));
  CHECK(has_line(text, R"(varanus_member_round_trip_seconds{member="a:27017"} 0.00025)"));
  CHECK(has_line(text, R"(varanus_server_heartbeat_failures_total{member="a:27017"} 0)"));
  CHECK(promtool(text) == "rc=0\n");

  for (; i < events.size() && events[i].commandName != "serverClosed"; ++i) m.write(events[i]);
  text = metrics_text(m);
  CHECK(m.primary_changes() == 1);
  CHECK(has_line(text, "varanus_topology_primary_changes_total 1"));
  // One series per member: the type it has now, the old one gone.
  CHECK(has_line(
      text, R"(varanus_member_type{member="b:27017",via="127.0.0.1:27019",type="RSPrimary"} 1)"));
  CHECK(text.find(R"(type="RSSecondary")") == std::string::npos);
  CHECK(has_line(
      text, R"(varanus_member_type{member="a:27017",via="127.0.0.1:27018",type="Unknown"} 1)"));
  CHECK(has_line(text, R"(varanus_server_heartbeat_failures_total{member="a:27017"} 1)"));
  CHECK(has_line(text, R"(varanus_member_round_trip_seconds{member="b:27017"} 0.0004)"));
  CHECK(promtool(text) == "rc=0\n");

  // Closed: the member series go, the counters stay.
  for (; i < events.size(); ++i) m.write(events[i]);
  text = metrics_text(m);
  CHECK(text.find("varanus_member_type{") == std::string::npos);
  CHECK(text.find("varanus_member_round_trip_seconds{") == std::string::npos);
  CHECK(has_line(text, "varanus_topology_primary_changes_total 1"));
  CHECK(has_line(text, R"(varanus_server_heartbeat_failures_total{member="a:27017"} 1)"));
  CHECK(promtool(text) == "rc=0\n");
}

TEST_CASE("metrics: the same primary back after a blip is no change, members are bounded") {
  sinks::MetricsSink m;
  std::vector<std::string> reports;
  m.set_error_handler([&](std::string_view l) { reports.emplace_back(l); });
  Topology t({{"a:27017", "b:27017"}, std::string("rs0"), false});
  auto feed = [&](const sdam::Update& u) {
    for (auto& e : to_events(sdam::update_events(u, t.description(), kVia))) m.write(e);
  };
  for (auto& e : to_events(sdam::opening_events(t.description(), kVia))) m.write(e);
  feed(t.apply(hello("a:27017", kPrimaryA)));
  feed(t.apply(sdam::ServerDescription::from_error("a:27017", "connection reset")));
  REQUIRE_FALSE(t.description().primary());
  feed(t.apply(hello("a:27017", kPrimaryA)));
  CHECK(m.primary_changes() == 0);

  // 70 members: 64 have series, the events of the others are counted, said once.
  for (int k = 0; k < 70; ++k) {
    const std::string address = "m" + std::to_string(k) + ":27017\"\n";  // escaped in labels
    for (int twice = 0; twice < 2; ++twice)
      m.write(monitor::topology_event(
          sdam::heartbeat_failed(address, {}, false, std::chrono::microseconds(5), "refused"),
          fixed_time()));
  }
  const std::string text = metrics_text(m);
  INFO(text);
  const auto series = [&](const std::string& prefix) {
    std::size_t n = 0;
    for (std::size_t p = 0; (p = text.find("\n" + prefix, p)) != std::string::npos; ++p) ++n;
    return n;
  };
  CHECK(series("varanus_server_heartbeat_failures_total{") == sinks::MetricsSink::kMaxMembers);
  CHECK(series("varanus_member_type{") == sinks::MetricsSink::kMaxMembers);
  CHECK(has_line(
      text, "varanus_topology_member_events_dropped_total " + std::to_string((70 + 2 - 64) * 2)));
  CHECK(text.find(R"(member="m0:27017\"\n")") != std::string::npos);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("more than 64 topology members") != std::string::npos);
  CHECK(promtool(text) == "rc=0\n");
}

TEST_CASE("/stats: the latest topology, with via and round-trip times, null without one") {
  monitor::Stats stats;
  auto metrics = std::make_shared<sinks::MetricsSink>();
  sinks::AdminServer admin(sinks::AdminOptions{}, stats, nullptr, metrics);
  CHECK(json::parse(admin.stats_json())["topology"].is_null());
  sinks::AdminServer bare(sinks::AdminOptions{}, stats, nullptr, nullptr);
  CHECK(json::parse(bare.stats_json())["topology"].is_null());

  const auto events = life();
  std::size_t i = 0;
  for (; events[i].commandName != "serverClosed"; ++i) metrics->write(events[i]);
  const json j = json::parse(admin.stats_json());
  INFO(j.dump());
  CHECK(j["topology"] ==
        json::parse(R"({"type": "ReplicaSetWithPrimary", "setName": "rs0",)"
                    R"( "servers": [{"address": "a:27017", "type": "Unknown",)"
                    R"( "via": "127.0.0.1:27018"},)"
                    R"( {"address": "b:27017", "type": "RSPrimary",)"
                    R"( "via": "127.0.0.1:27019", "roundTripTimeMicros": 400}]})"));
  for (; i < events.size(); ++i) metrics->write(events[i]);
  CHECK(json::parse(admin.stats_json())["topology"].is_null());
}

TEST_CASE("dispatcher round trip: topology and command events into a file, jq reads it") {
  TempDir dir;
  const std::string path = (dir.path / "events.jsonl").string();
  monitor::Stats stats;
  auto metrics = std::make_shared<sinks::MetricsSink>();
  {
    sinks::Dispatcher d(stats);
    sinks::SinkFilter f;
    f.excludeEvents = {"serverHeartbeatStarted", "serverHeartbeatSucceeded"};
    d.add(std::make_shared<sinks::FileSink>(sinks::FileSinkOptions{path}, RenderOptions{}, f));
    RenderOptions log;
    log.format = Format::mongodbLog;
    d.add(std::make_shared<sinks::FileSink>(sinks::FileSinkOptions{path + ".log"}, log));
    d.add(metrics);
    d.start();
    d.publish(started());
    for (auto e : life()) d.publish(std::move(e));
    d.publish(succeeded());
    d.stop();
  }
  std::vector<json> lines;
  {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) lines.push_back(json::parse(line));
  }
  const auto events = life();
  REQUIRE(lines.size() == events.size() - 3 + 2);
  CHECK(lines.front()["event"] == "commandStarted");
  CHECK(lines.back()["event"] == "commandSucceeded");
  std::size_t k = 1;
  for (const auto& e : events) {
    if (e.commandName == "serverHeartbeatStarted" || e.commandName == "serverHeartbeatSucceeded")
      continue;
    CHECK(lines[k++]["event"] == e.commandName);  // in order, none lost
  }
  CHECK(metrics->primary_changes() == 1);
  // jq reads every line of both files.
  for (const std::string& p : {path, path + ".log"}) {
    const std::string cmd = "jq -c -e 'has(\"t\")' " + p + " > /dev/null 2>&1";
    CHECK_MESSAGE(std::system(cmd.c_str()) == 0, p);
  }
  std::ifstream log(path + ".log");
  std::size_t n = 0;
  for (std::string line; std::getline(log, line);) ++n;
  CHECK(n == events.size() + 2);
}

TEST_CASE("OTLP sinks export command spans only: topology events pass without a span") {
  sinks::OtlpOptions o;
  o.endpoint = "http://127.0.0.1:9";  // never reached: the batch waits an hour
  o.batchDelay = std::chrono::hours(1);
  o.closeTimeout = std::chrono::milliseconds(10);
  sinks::OtlpSink sink(o);
  const auto events = life();
  for (const auto& e : events) sink.write(e);
  CHECK(sink.written() == events.size());
  CHECK(sink.errors() == 0);
  CHECK(sink.queued() == 0);
  // The positive control: a command's pair makes one span.
  sink.write(started());
  sink.write(succeeded());
  CHECK(sink.queued() == 1);
}
