// Prometheus metrics and the admin endpoint, scraped over real HTTP.
#include "varanus/sinks/metrics.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <string>

#include "../support/loopback.hpp"
#include "sink_test_util.hpp"
#include "varanus/sinks/dispatcher.hpp"
#include "varanus/sinks/otlp.hpp"

using namespace varanus;
using namespace sinks_test;
using nlohmann::json;

namespace {

// One HTTP/1.0-style GET (Connection: close); returns the raw response.
std::string http_get(std::uint16_t port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  REQUIRE(::send(fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string body_of(const std::string& response) {
  const auto p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

monitor::Event finished(const std::string& name, const std::string& db, bool failed,
                        std::int64_t micros, monitor::HelloKind hello = monitor::HelloKind::none) {
  monitor::Event e = succeeded();
  e.type = failed ? monitor::EventType::commandFailed : monitor::EventType::commandSucceeded;
  e.commandName = name;
  e.databaseName = db;
  e.durationMicros = micros;
  e.hello = hello;
  return e;
}

}  // namespace

TEST_CASE("command labels are bounded to known commands") {
  CHECK(sinks::command_label("find") == "find");
  CHECK(sinks::command_label("ismaster") == "isMaster");
  CHECK(sinks::command_label("FINDANDMODIFY") == "findAndModify");
  CHECK(sinks::command_label("myCustomCommand123") == "other");
  CHECK(sinks::command_label("") == "other");
}

TEST_CASE("the metrics sink counts commands by name, database and outcome") {
  sinks::MetricsOptions o;
  o.maxDatabases = 2;
  sinks::MetricsSink m(o);
  m.write(finished("find", "shop", false, 300));
  m.write(finished("find", "shop", false, 2'000'000));
  m.write(finished("find", "shop", true, 10));
  m.write(finished("weirdCmd", "crm", false, 10));
  m.write(finished("insert", "third", false, 10));  // a third database: "other"
  m.write(finished("hello", "admin", false, 10'000'000, monitor::HelloKind::heartbeat));
  m.write(started());  // started events are not counted here
  CHECK(m.commands("find", "shop", "succeeded") == 2);
  CHECK(m.commands("find", "shop", "failed") == 1);
  CHECK(m.commands("other", "crm", "succeeded") == 1);
  CHECK(m.commands("insert", "other", "succeeded") == 1);
  CHECK(m.commands("hello", "admin", "succeeded") == 0);  // hellos are kept apart

  std::string text;
  m.render(text);
  CHECK(text.find(
            "varanus_commands_total{command=\"find\",database=\"shop\",outcome=\"succeeded\"} 2") !=
        std::string::npos);
  CHECK(text.find("varanus_command_duration_seconds_bucket{command=\"find\",le=\"+Inf\"} 3") !=
        std::string::npos);
  CHECK(text.find("varanus_command_duration_seconds_bucket{command=\"find\",le=\"0.0005\"} 2") !=
        std::string::npos);
  CHECK(text.find("varanus_command_duration_seconds_count{command=\"find\"} 3") !=
        std::string::npos);
  CHECK(text.find("varanus_hellos_total{kind=\"heartbeat\",outcome=\"succeeded\"} 1") !=
        std::string::npos);
  CHECK(text.find("command=\"hello\"") == std::string::npos);
  CHECK(text.find("weirdCmd") == std::string::npos);
}

TEST_CASE("the admin endpoint serves /metrics, /healthz, /stats over HTTP") {
  monitor::Stats stats;
  stats.add(stats.connectionsAccepted, 3);
  sinks::Dispatcher d(stats);
  auto metrics = std::make_shared<sinks::MetricsSink>();
  d.add(metrics);
  d.start();
  d.publish(finished("find", "shop", false, 1500));
  d.publish(finished("aggregate", "shop", true, 1500));
  d.stop();

  // /healthz checks a port that is listening, then one that is not.
  const auto [up, upPort] = test::listen_loopback(4);
  // A port nobody listens on: one we just bound and closed.
  const int gone = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in g{};
  g.sin_family = AF_INET;
  g.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(gone, reinterpret_cast<sockaddr*>(&g), sizeof g) == 0);
  socklen_t len = sizeof g;
  ::getsockname(gone, reinterpret_cast<sockaddr*>(&g), &len);
  const std::uint16_t downPort = ntohs(g.sin_port);
  ::close(gone);
  bool healthy = true;
  auto check = sinks::tcp_health_check("127.0.0.1", upPort);
  sinks::HealthCheck health = [&]() -> std::pair<bool, std::string> {
    if (healthy) return check();
    return sinks::tcp_health_check("127.0.0.1", downPort)();
  };

  sinks::AdminServer admin({"127.0.0.1", 0}, stats, &d, metrics, health);
  const std::uint16_t port = admin.start();
  REQUIRE(port != 0);

  const std::string m = http_get(port, "/metrics");
  CHECK(m.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(m.find("text/plain; version=0.0.4") != std::string::npos);
  const std::string body = body_of(m);
  CHECK(body.find("# TYPE varanus_connections_total counter\nvaranus_connections_total 3\n") !=
        std::string::npos);
  CHECK(body.find("varanus_events_published_total 2\n") != std::string::npos);
  CHECK(body.find("varanus_sink_events_dropped_total{sink=\"prometheus\"} 0\n") !=
        std::string::npos);
  CHECK(
      body.find(
          "varanus_commands_total{command=\"aggregate\",database=\"shop\",outcome=\"failed\"} 1") !=
      std::string::npos);

  std::string h = http_get(port, "/healthz");
  CHECK(h.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(body_of(h).rfind("ok: upstream 127.0.0.1:", 0) == 0);
  healthy = false;
  h = http_get(port, "/healthz");
  CHECK(h.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(body_of(h).find("unreachable") != std::string::npos);

  const json s = json::parse(body_of(http_get(port, "/stats")));
  CHECK(s["counters"]["varanus_connections_total"] == 3);
  CHECK(s["sinks"][0]["name"] == "prometheus");
  CHECK(s["sinks"][0]["written"] == 2);
  CHECK(s["queue"]["capacity"] == 65536);

  CHECK(http_get(port, "/nope").rfind("HTTP/1.1 404", 0) == 0);
  admin.stop();
  admin.stop();  // idempotent
  ::close(up);
}

TEST_CASE("an admin address that cannot be bound is a clear error") {
  monitor::Stats stats;
  sinks::AdminServer first({"127.0.0.1", 0}, stats, nullptr, nullptr);
  const std::uint16_t port = first.start();
  sinks::AdminServer second({"127.0.0.1", port}, stats, nullptr, nullptr);
  CHECK_THROWS_WITH_AS(second.start(), doctest::Contains("admin endpoint 127.0.0.1:"),
                       std::system_error);
}

TEST_CASE("histogram sums print in the shortest form: 2 x 209 us is 0.000418") {
  sinks::MetricsSink m;
  m.write(finished("find", "shop", false, 209));
  m.write(finished("find", "shop", false, 209));
  std::string text;
  m.render(text);
  // Adding 0.000209 twice as doubles gives 0.00041799999999999997.
  CHECK(text.find("varanus_command_duration_seconds_sum{command=\"find\"} 0.000418\n") !=
        std::string::npos);
}

TEST_CASE("operator metrics: build info, process, queue depth, filtered, OTLP counters") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  sinks::SinkFilter onlyFind;
  onlyFind.includeCommands = {"find"};
  auto metrics = std::make_shared<sinks::MetricsSink>();
  metrics->set_filter(onlyFind);
  d.add(metrics);
  sinks::OtlpOptions o;
  o.endpoint = "http://127.0.0.1:9";  // nothing answers: counted, never an error
  d.add(std::make_shared<sinks::OtlpSink>(o));
  d.publish(finished("find", "shop", false, 10));
  d.publish(finished("insert", "shop", false, 10));
  sinks::AdminServer admin({"127.0.0.1", 0}, stats, &d, metrics);
  admin.set_version("1.2.3");
  std::string text = admin.metrics_text();
  // Not started yet: both events wait in the queue.
  CHECK(text.find("varanus_event_queue_depth 2\n") != std::string::npos);
  d.start();
  d.stop();
  text = admin.metrics_text();
  CHECK(text.find("varanus_build_info{version=\"1.2.3\"} 1\n") != std::string::npos);
  CHECK(text.find("varanus_event_queue_depth 0\n") != std::string::npos);
  CHECK(text.find("varanus_sink_events_filtered_total{sink=\"prometheus\"} 1\n") !=
        std::string::npos);
  for (const char* name :
       {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ", "process_open_fds ", "process_max_fds ",
        "process_start_time_seconds ",
        "varanus_otlp_spans_sent_total{sink=\"otlp:http://127.0.0.1:9\"} 0",
        "varanus_otlp_spans_dropped_total{sink=", "varanus_otlp_posts_failed_total{sink=",
        "varanus_otlp_retries_total{sink=", "varanus_otlp_queue_spans{sink="})
    CHECK_MESSAGE(text.find(std::string("\n") + name) != std::string::npos, name);
  // A start time within the last day, in seconds since the epoch.
  const auto at = text.find("\nprocess_start_time_seconds ");
  const double start = std::stod(text.substr(at + 28));
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(start <= now + 1);
  CHECK(start > now - 86400);
}
