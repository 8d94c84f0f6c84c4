// The app's sinks configuration: the "sinks" section and flags validated
// with errors naming the key, and SinkRuntime wiring files, metrics and the
// admin endpoint.
#include "sink_config.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "sink_test_util.hpp"
#include "summary.hpp"

using namespace varanus;
using namespace sinks_test;
using app::SinkSpec;
using nlohmann::json;

namespace {

app::SinkPlan plan(const std::string& section, const app::SinkFlags& flags = {},
                   std::size_t maxDoc = 1000) {
  return app::plan_sinks(section.empty() ? json() : json::parse(section), flags, maxDoc);
}

std::string error_of(const std::string& section, const app::SinkFlags& flags = {}) {
  try {
    plan(section, flags);
  } catch (const app::SinkConfigError& e) {
    return e.what();
  }
  return "no error";
}

std::string http_get(std::uint16_t port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  REQUIRE(::send(fd, req.data(), req.size(), 0) > 0);
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("without a sinks section events go to stdout") {
  const auto p = plan("", {}, 250);
  REQUIRE(p.sinks.size() == 1);
  CHECK(p.sinks[0].type == SinkSpec::Type::stdoutSink);
  CHECK(p.sinks[0].render.maxDocumentLength == 250);
  CHECK(!p.admin);
  CHECK(p.queueSize == 65536);
}

TEST_CASE("flags: --log-file replaces stdout, --log-format, --plugin, --admin") {
  app::SinkFlags f;
  app::apply_sink_flag(f, "--log-file", "/tmp/x.log");
  app::apply_sink_flag(f, "--log-format", "mongodb-log");
  app::apply_sink_flag(f, "--admin", "127.0.0.1:0");
  app::apply_sink_flag(f, "--plugin", "/opt/a.so");
  CHECK(app::is_sink_flag("--plugin"));
  CHECK(!app::is_sink_flag("--listen"));
  const auto p = plan("", f);
  REQUIRE(p.sinks.size() == 2);
  CHECK(p.sinks[0].type == SinkSpec::Type::file);
  CHECK(p.sinks[0].file.path == "/tmp/x.log");
  CHECK(p.sinks[0].render.format == sinks::Format::mongodbLog);
  CHECK(p.sinks[1].type == SinkSpec::Type::plugin);
  REQUIRE(p.admin);
  CHECK(p.admin->port == 0);

  app::SinkFlags onlyPlugin;
  app::apply_sink_flag(onlyPlugin, "--plugin", "/opt/a.so");
  const auto q = plan("", onlyPlugin);
  REQUIRE(q.sinks.size() == 2);  // a plugin does not silence the event log
  CHECK(q.sinks[0].type == SinkSpec::Type::stdoutSink);

  CHECK_THROWS_WITH_AS(app::apply_sink_flag(f, "--log-format", "xml"),
                       doctest::Contains("--log-format: expected varanus or mongodb-log"),
                       app::SinkConfigError);
  CHECK_THROWS_WITH_AS(app::apply_sink_flag(f, "--admin", "nowhere"),
                       doctest::Contains("--admin: expected HOST:PORT"), app::SinkConfigError);
}

TEST_CASE("a full sinks section is understood") {
  const auto p = plan(R"({
    "queueSize": 1024, "dropWarningIntervalSeconds": 2.5,
    "admin": {"listen": "127.0.0.1:9108", "maxDatabases": 10},
    "outputs": [
      {"type": "file", "path": "/var/log/v.log", "rotateBytes": 1000000, "keepFiles": 3,
       "format": "mongodb-log", "maxDocumentLength": 0},
      {"type": "tcp", "address": "10.0.0.5:9000", "maxBufferBytes": 65536, "redaction": "values",
       "filter": {"failedOnly": true, "includeCommands": ["find"], "sampleRate": 0.5,
                  "keepHellos": false, "minDurationMicros": 100, "excludeDatabases": ["admin"]}},
      {"type": "udp", "address": "[::1]:9001"},
      {"type": "plugin", "path": "/opt/p.so", "config": {"x": 1}},
      {"type": "stderr", "_comment": "diagnostics and events together"}
    ]})");
  CHECK(p.queueSize == 1024);
  CHECK(p.dropWarningInterval.count() == 2500);
  REQUIRE(p.admin);
  CHECK(p.admin->port == 9108);
  CHECK(p.metrics.maxDatabases == 10);
  REQUIRE(p.sinks.size() == 5);
  CHECK(p.sinks[0].file.rotateBytes == 1000000);
  CHECK(p.sinks[0].file.keepFiles == 3);
  CHECK(p.sinks[0].render.format == sinks::Format::mongodbLog);
  CHECK(p.sinks[0].render.maxDocumentLength == 0);
  CHECK(p.sinks[1].net.host == "10.0.0.5");
  CHECK(p.sinks[1].net.maxBufferBytes == 65536);
  CHECK(p.sinks[1].render.redaction == sinks::Redaction::values);
  CHECK(p.sinks[1].filter.failedOnly);
  CHECK(p.sinks[1].filter.sampleRate == 0.5);
  CHECK(!p.sinks[1].filter.keepHellos);
  CHECK(p.sinks[1].filter.minDurationMicros == 100);
  CHECK(p.sinks[2].net.host == "::1");
  CHECK(p.sinks[3].pluginConfig == R"({"x":1})");
  CHECK(p.sinks[4].type == SinkSpec::Type::stderrSink);
  const auto lines = p.describe();
  CHECK(lines.size() == 7);
  CHECK(lines[2].find("tcp 10.0.0.5:9000") != std::string::npos);
  CHECK(lines[2].find("failed only") != std::string::npos);

  // The array shorthand.
  const auto q = plan(R"([{"type": "stdout", "format": "mongodb-log"}])");
  REQUIRE(q.sinks.size() == 1);
  CHECK(q.sinks[0].render.format == sinks::Format::mongodbLog);
}

TEST_CASE("config errors name the key path") {
  CHECK(error_of(R"({"outputs": [{"type": "file"}]})") ==
        "config: /sinks/outputs/0: a file sink needs \"path\"");
  CHECK(error_of(R"({"outputs": [{"type": "stdout", "format": "xml"}]})") ==
        "config: /sinks/outputs/0/format: expected \"varanus\" or \"mongodb-log\"");
  CHECK(error_of(R"({"outputs": [{"type": "stdout", "colour": "red"}]})") ==
        "config: /sinks/outputs/0/colour: unknown key for a stdout sink");
  CHECK(error_of(R"({"outputs": [{"type": "tcp"}]})").find("needs \"address\"") !=
        std::string::npos);
  CHECK(error_of(R"({"outputs": [{"type": "stdout", "filter": {"sampleRate": 2}}]})")
            .rfind("config: /sinks/outputs/0/filter/sampleRate: expected a number", 0) == 0);
  CHECK(error_of(R"({"outputs": [{"type": "stdout", "filter": {"excludeEvents": ["heartbeat"]}}]})")
            .rfind("config: /sinks/outputs/0/filter/excludeEvents/0: unknown event name "
                   "\"heartbeat\" (known: commandStarted, ",
                   0) == 0);
  {
    const auto p = plan(
        R"({"outputs": [{"type": "stdout", "filter": {"excludeEvents": ["serverHeartbeatStarted",)"
        R"( "serverHeartbeatSucceeded", "serverHeartbeatFailed"], "includeEvents": []}}]})");
    REQUIRE(p.sinks.size() == 1);
    CHECK(p.sinks[0].filter.excludeEvents.size() == 3);
    CHECK(p.describe()[1].find(", not events serverHeartbeatStarted") != std::string::npos);
  }
  CHECK(error_of(R"({"outputs": [{"type": "stdout", "filter": {"failedOnly": "yes"}}]})") ==
        "config: /sinks/outputs/0/filter/failedOnly: expected boolean");
  CHECK(error_of(R"({"outputs": [{"type": "kafka"}]})").find("/sinks/outputs/0/type") !=
        std::string::npos);
  CHECK(error_of(R"({"queueSize": "big"})") == "config: /sinks/queueSize: expected integer");
  CHECK(error_of(R"({"admin": {"listen": "x"}})").rfind("config: /sinks/admin/listen:", 0) == 0);
  CHECK(error_of(R"({"extra": 1})") == "config: /sinks/extra: unknown key");
  CHECK(error_of(R"("stdout")") == "config: /sinks: expected object");
}

TEST_CASE("the runtime writes files, serves metrics and reports bad sinks by name") {
  TempDir dir;
  const std::string path = (dir.path / "events.log").string();
  app::SinkFlags f;
  app::apply_sink_flag(f, "--log-file", path);
  app::apply_sink_flag(f, "--admin", "127.0.0.1:0");
  monitor::Stats stats;
  {
    app::SinkRuntime rt(plan("", f), stats);
    const std::string admin = rt.start();
    REQUIRE(admin.rfind("127.0.0.1:", 0) == 0);
    const auto port = static_cast<std::uint16_t>(std::stoi(admin.substr(10)));
    rt.dispatcher().publish(started(1));
    rt.dispatcher().publish(succeeded(1));
    // Metrics are fed on the sink thread: poll until they show.
    std::string metrics;
    for (int i = 0; i < 100; ++i) {
      metrics = http_get(port, "/metrics");
      if (metrics.find("varanus_commands_total{command=\"find\"") != std::string::npos) break;
      ::usleep(20000);
    }
    CHECK(metrics.find("varanus_commands_total{command=\"find\",database=\"shop\",outcome="
                       "\"succeeded\"} 1") != std::string::npos);
    CHECK(metrics.find("varanus_sink_events_written_total{sink=\"file:" + path + "\"}") !=
          std::string::npos);
    rt.stop();
  }
  std::ifstream in(path);
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  CHECK(lines == 2);

  CHECK_THROWS_WITH_AS(
      app::SinkRuntime(plan(R"({"outputs": [{"type": "file", "path": "/nonexistent/x.log"}]})"),
                       stats),
      doctest::Contains("sink /sinks/outputs/0 (file): open /nonexistent/x.log"),
      std::runtime_error);
  CHECK_THROWS_WITH_AS(
      app::SinkRuntime(plan(R"({"outputs": [{"type": "plugin", "path": "/nonexistent/p.so"}]})"),
                       stats),
      doctest::Contains("plugin /nonexistent/p.so: cannot load"), std::runtime_error);
}

TEST_CASE("the example sinks config is valid") {
  std::ifstream in(VARANUS_SOURCE_DIR "/examples/sinks.example.json");
  const json doc = json::parse(in);
  const auto p = app::plan_sinks(doc.at("sinks"), {}, 1000);
  REQUIRE(p.sinks.size() == 4);
  CHECK(p.sinks[0].type == SinkSpec::Type::file);
  CHECK(p.sinks[1].type == SinkSpec::Type::tcp);
  CHECK(p.sinks[1].filter.minDurationMicros == 100000);
  CHECK(p.sinks[2].render.lines == sinks::Lines::commands);
  CHECK(p.sinks[2].render.documents == sinks::Documents::string);
  CHECK(p.sinks[2].render.extendedJson == sinks::ExtendedJson::canonical);
  CHECK(p.commandStats.maxEntries == 256);
  CHECK(p.sinks[3].type == SinkSpec::Type::otlp);
  CHECK(p.sinks[3].otlp.gzip);
  REQUIRE(p.admin);
  CHECK(p.admin->port == 9108);
}

TEST_CASE("lines, documents and extendedJson per sink, --log-lines for the default sink") {
  auto p = plan(R"({"outputs": [{"type": "stdout", "lines": "commands", "documents": "string",
                                 "extendedJson": "canonical"}, {"type": "stderr"}]})");
  REQUIRE(p.sinks.size() == 2);
  CHECK(p.sinks[0].render.lines == sinks::Lines::commands);
  CHECK(p.sinks[0].render.documents == sinks::Documents::string);
  CHECK(p.sinks[0].render.extendedJson == sinks::ExtendedJson::canonical);
  CHECK(p.sinks[1].render.lines == sinks::Lines::events);
  CHECK(p.sinks[1].render.documents == sinks::Documents::object);
  CHECK(p.sinks[1].render.extendedJson == sinks::ExtendedJson::relaxed);
  bool any = false;
  for (const auto& l : p.describe()) any = any || l.find("lines commands") != std::string::npos;
  CHECK(any);

  app::SinkFlags flags;
  app::apply_sink_flag(flags, "--log-lines", "commands");
  const auto d = app::plan_sinks(nullptr, flags, 1000);
  REQUIRE(d.sinks.size() == 1);
  CHECK(d.sinks[0].render.lines == sinks::Lines::commands);
  CHECK(app::is_sink_flag("--log-lines"));
  CHECK_THROWS_WITH_AS(app::apply_sink_flag(flags, "--log-lines", "rows"),
                       doctest::Contains("expected events or commands"), app::SinkConfigError);
  CHECK_THROWS_WITH_AS(plan(R"({"outputs": [{"type": "stdout", "lines": "all"}]})"),
                       doctest::Contains("/sinks/outputs/0/lines"), app::SinkConfigError);
  CHECK_THROWS_WITH_AS(plan(R"({"outputs": [{"type": "stdout", "documents": 1}]})"),
                       doctest::Contains("/sinks/outputs/0/documents"), app::SinkConfigError);
  CHECK_THROWS_WITH_AS(plan(R"({"outputs": [{"type": "stdout", "extendedJson": "strict"}]})"),
                       doctest::Contains("/sinks/outputs/0/extendedJson"), app::SinkConfigError);
  CHECK(app::sink_flags_usage().find("--log-lines") != std::string::npos);
}

TEST_CASE("otlp sinks: config keys, --otlp-endpoint, errors naming the key") {
  const auto p = plan(R"({"outputs": [{"type": "otlp", "endpoint": "http://collector:4318",
      "headers": {"x-api-key": "k"}, "serviceName": "orders-db", "gzip": true,
      "queryText": true, "includeHellos": true, "maxQueueSpans": 10, "maxBatchSpans": 5,
      "batchDelaySeconds": 0.25, "timeoutSeconds": 2, "minBackoffSeconds": 0.1,
      "maxBackoffSeconds": 3, "maxRetries": 7, "closeTimeoutSeconds": 0.5}]})");
  REQUIRE(p.sinks.size() == 1);  // outputs given: exactly those
  const auto& o = p.sinks[0].otlp;
  CHECK(p.sinks[0].type == SinkSpec::Type::otlp);
  CHECK(o.endpoint == "http://collector:4318");
  REQUIRE(o.headers.size() == 1);
  CHECK(o.headers[0] == std::make_pair(std::string("x-api-key"), std::string("k")));
  CHECK(o.serviceName == "orders-db");
  CHECK((o.gzip && o.queryText && o.includeHellos));
  CHECK(o.maxQueueSpans == 10);
  CHECK(o.maxBatchSpans == 5);
  CHECK(o.batchDelay == std::chrono::milliseconds(250));
  CHECK(o.timeout == std::chrono::milliseconds(2000));
  CHECK(o.minBackoff == std::chrono::milliseconds(100));
  CHECK(o.maxBackoff == std::chrono::milliseconds(3000));
  CHECK(o.maxRetries == 7);
  CHECK(o.closeTimeout == std::chrono::milliseconds(500));

  app::SinkFlags flags;
  app::apply_sink_flag(flags, "--otlp-endpoint", "http://127.0.0.1:4318");
  const auto q = app::plan_sinks(nullptr, flags, 1000);
  REQUIRE(q.sinks.size() == 2);  // --otlp-endpoint alone keeps the stdout event log
  CHECK(q.sinks[0].type == SinkSpec::Type::stdoutSink);
  CHECK(q.sinks[1].type == SinkSpec::Type::otlp);
  CHECK(q.sinks[1].where == "--otlp-endpoint");
  CHECK_THROWS_WITH_AS(app::apply_sink_flag(flags, "--otlp-endpoint", "https://x"),
                       doctest::Contains("https is not supported"), app::SinkConfigError);

  CHECK_THROWS_WITH_AS(plan(R"({"outputs": [{"type": "otlp"}]})"),
                       doctest::Contains("/sinks/outputs/0: an otlp sink needs \"endpoint\""),
                       app::SinkConfigError);
  CHECK_THROWS_WITH_AS(plan(R"({"outputs": [{"type": "otlp", "endpoint": "collector:4318"}]})"),
                       doctest::Contains("/sinks/outputs/0/endpoint: expected http://"),
                       app::SinkConfigError);
  CHECK_THROWS_WITH_AS(
      plan(R"({"outputs": [{"type": "otlp", "endpoint": "http://c", "headers": {"a b": "x"}}]})"),
      doctest::Contains("/sinks/outputs/0/headers/a b: not a header name"), app::SinkConfigError);
  CHECK_THROWS_WITH_AS(
      plan(R"({"outputs": [{"type": "otlp", "endpoint": "http://c", "address": "h:1"}]})"),
      doctest::Contains("/sinks/outputs/0/address: unknown key for a otlp sink"),
      app::SinkConfigError);
}

TEST_CASE("the capture summary leaves topology events out, \"topology\" is no event name") {
  // The summary (`varanus replay --summary`) counts commands only.
  app::Summary summary;
  monitor::Event topology;
  topology.type = monitor::EventType::topology;
  topology.time = fixed_time();
  topology.commandName = "serverHeartbeatFailed";
  topology.document = bson(R"({"address": "a:27017", "failure": "refused"})");
  summary.add(topology);
  summary.add(started());
  summary.add(topology);
  summary.add(succeeded());
  CHECK(summary.by_command().size() == 1);
  CHECK(summary.by_command().at("find").count == 1);
  CHECK(summary.errors().empty());
  CHECK(summary.slowest().size() == 1);

  // Filters take the SDAM names (the sinks test above); "topology", the
  // kind, is no line's `event`: a typo, refused.
  CHECK(error_of(R"({"outputs": [{"type": "stdout", "filter": {"excludeEvents": ["topology"]}}]})")
            .find("unknown event name \"topology\"") != std::string::npos);
}
