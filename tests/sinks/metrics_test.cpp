// Prometheus metrics and the admin endpoint, scraped over real HTTP.
#include "varanus/sinks/metrics.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

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

// Calls f until it returns a non-empty string (5 s at most): that string.
template <class F>
std::string wait_until(F f) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    std::string r = f();
    if (!r.empty()) return r;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
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

// True when `s` is valid UTF-8 (RFC 3629) with no control byte but '\n'.
static bool clean_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if ((c < 0x20 && c != '\n') || c == 0x7f) return false;
      ++i;
      continue;
    }
    const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (len == 0 || c > 0xF4 || i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

TEST_CASE("label values are valid UTF-8 whatever $db holds: \\xff\\xfe, controls, quotes") {
  sinks::MetricsSink m;
  const std::string hostile[] = {std::string("\xff\xfe"),
                                 std::string("a\x01"
                                             "b\x7f"
                                             "c\r\t",
                                             7),
                                 std::string("nul\0x", 5),
                                 std::string("q\"uo\\te\nnl"),
                                 std::string("\xc0\xaf"),                   // overlong '/'
                                 std::string("\xed\xa0\x80"),               // a surrogate
                                 std::string("\xf4\x90\x80\x80"),           // past U+10FFFF
                                 std::string("\xe2\x82"),                   // cut short
                                 std::string("\xc2\x85"),                   // C1 control NEL
                                 std::string("caf\xc3\xa9-\xe2\x82\xac")};  // valid: kept
  for (const auto& db : hostile) m.write(finished("find", db, false, 10));
  std::string text;
  m.render(text);
  CHECK(clean_utf8(text));
  CHECK(text.find("database=\"\xEF\xBF\xBD\xEF\xBF\xBD\"") != std::string::npos);
  CHECK(text.find("database=\"a\xEF\xBF\xBD"
                  "b\xEF\xBF\xBD"
                  "c\xEF\xBF\xBD\xEF\xBF\xBD\"") != std::string::npos);
  CHECK(text.find("database=\"q\\\"uo\\\\te\\nnl\"") != std::string::npos);
  CHECK(text.find("database=\"caf\xc3\xa9-\xe2\x82\xac\"") != std::string::npos);

  std::string one;
  sinks::append_label_value(one, std::string_view("\xe2\x82", 2));
  CHECK(one == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("database label slots go by recent traffic, not by first arrival") {
  sinks::MetricsOptions o;
  o.maxDatabases = 2;
  o.rebalanceEvery = 100;
  sinks::MetricsSink m(o);
  // Two quiet databases arrive first and take both slots.
  for (int i = 0; i < 5; ++i) {
    m.write(finished("find", "early1", false, 10));
    m.write(finished("find", "early2", false, 10));
  }
  // A busy database arrives later: "other" at first, a slot of its own
  // from the next rebalance on.
  for (int i = 0; i < 400; ++i) m.write(finished("find", "busy", false, 10));
  CHECK(m.commands("find", "busy", "succeeded") > 0);
  // One early database gave up its slot: its counts folded into "other",
  // so that every command is still counted once.
  const std::uint64_t e1 = m.commands("find", "early1", "succeeded");
  const std::uint64_t e2 = m.commands("find", "early2", "succeeded");
  CHECK(((e1 == 0) != (e2 == 0)));
  CHECK(m.commands("find", "busy", "succeeded") + m.commands("find", "other", "succeeded") + e1 +
            e2 ==
        410);
  // Hostile traffic: a thousand one-off names never take a slot, and the
  // label set stays bounded.
  for (int i = 0; i < 1000; ++i) {
    m.write(finished("find", "x" + std::to_string(i), false, 10));
    if (i % 4 == 0) m.write(finished("find", "busy", false, 10));
  }
  CHECK(m.commands("find", "x999", "succeeded") == 0);
  std::string text;
  m.render(text);
  std::size_t series = 0;
  for (std::size_t p = 0; (p = text.find("varanus_commands_total{", p)) != std::string::npos; ++p)
    ++series;
  CHECK(series <= 3);  // two slots and "other"
  CHECK(text.find("database=\"busy\"") != std::string::npos);
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
  std::atomic<bool> healthy{true};
  auto check = sinks::tcp_health_check("127.0.0.1", upPort);
  sinks::HealthCheck health = [&]() -> std::pair<bool, std::string> {
    if (healthy) return check();
    return sinks::tcp_health_check("127.0.0.1", downPort)();
  };

  sinks::AdminOptions ao;
  ao.healthInterval = std::chrono::milliseconds(20);
  sinks::AdminServer admin(ao, stats, &d, metrics, health);
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

  // /healthz answers from the heartbeat's last result: it turns within a
  // few intervals of the upstream going away.
  std::string h = wait_until([&] {
    const std::string r = http_get(port, "/healthz");
    return r.rfind("HTTP/1.1 200", 0) == 0 ? r : std::string();
  });
  CHECK(body_of(h).rfind("ok: upstream 127.0.0.1:", 0) == 0);
  CHECK(body_of(h).find("s ago)") != std::string::npos);
  healthy = false;
  h = wait_until([&] {
    const std::string r = http_get(port, "/healthz");
    return r.rfind("HTTP/1.1 503", 0) == 0 ? r : std::string();
  });
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

TEST_CASE("concurrent /healthz during an outage never delay /metrics") {
  // A health check as slow as a connect to a black-holed upstream: 1 s.
  monitor::Stats stats;
  std::atomic<int> checks{0};
  sinks::HealthCheck slow = [&]() -> std::pair<bool, std::string> {
    ++checks;
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return {false, "upstream 10.255.255.1:27017 unreachable: Connection timed out"};
  };
  sinks::AdminOptions ao;
  ao.healthInterval = std::chrono::milliseconds(10);
  sinks::AdminServer admin(ao, stats, nullptr, nullptr, slow);
  const std::uint16_t port = admin.start();
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  // Before the first check ends: 503 at once, saying so.
  const std::string first = http_get(port, "/healthz");
  CHECK(first.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(body_of(first).find("not checked yet") != std::string::npos);
  // 20 /healthz at once, then /metrics: all answered well within one
  // check's second (before: each /healthz held the admin thread for it).
  std::vector<std::future<std::string>> calls;
  for (int i = 0; i < 20; ++i)
    calls.push_back(std::async(std::launch::async, [port] { return http_get(port, "/healthz"); }));
  const std::string m = http_get(port, "/metrics");
  const auto metricsAfter = clock::now() - t0;
  CHECK(m.rfind("HTTP/1.1 200", 0) == 0);
  for (auto& c : calls) CHECK(c.get().rfind("HTTP/1.1 503", 0) == 0);
  const auto allAfter = clock::now() - t0;
  CHECK(metricsAfter < std::chrono::milliseconds(500));
  CHECK(allAfter < std::chrono::milliseconds(500));
  // The heartbeat's result, once it comes, is what /healthz says.
  const std::string later = wait_until([&] {
    const std::string r = http_get(port, "/healthz");
    return r.find("unreachable") != std::string::npos ? r : std::string();
  });
  CHECK(later.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(checks.load() >= 1);
  admin.stop();
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

namespace {

// Connects to the admin port; -1 on failure.
int admin_connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends `request` as is and reads until the server closes (or 5 s).
std::string raw_exchange(std::uint16_t port, const std::string& request) {
  const int fd = admin_connect(port);
  REQUIRE(fd >= 0);
  std::size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer and close before all is sent
    off += static_cast<std::size_t>(n);
  }
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("admin endpoint: malformed requests, oversized headers, unknown paths and methods") {
  monitor::Stats stats;
  sinks::AdminOptions ao;
  ao.maxHeaderBytes = 4096;
  sinks::AdminServer admin(ao, stats, nullptr, nullptr);
  const std::uint16_t port = admin.start();

  CHECK(raw_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(8000, 'a') +
                               "\r\n\r\n")
            .rfind("HTTP/1.1 431", 0) == 0);
  CHECK(raw_exchange(port, "GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(raw_exchange(port, "GET / HTTP/9.9\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(raw_exchange(port, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11))
            .rfind("HTTP/1.1 400", 0) == 0);  // a TLS ClientHello
  CHECK(admin.bad_requests() == 4);
  const std::string del =
      raw_exchange(port, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(del.rfind("HTTP/1.1 405", 0) == 0);
  CHECK(del.find("Allow: GET, HEAD") != std::string::npos);
  CHECK(raw_exchange(port, "BREW /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .rfind("HTTP/1.1 405", 0) == 0);
  for (const char* path : {"/", "/metrics/../etc/passwd", "/debug/pprof", "/admin", "/statsx"})
    CHECK(http_get(port, path).rfind("HTTP/1.1 404", 0) == 0);
  const std::string head =
      raw_exchange(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200", 0) == 0);
  // After all that: /metrics still answers.
  CHECK(http_get(port, "/metrics").rfind("HTTP/1.1 200", 0) == 0);
}

TEST_CASE("admin connections are capped: one more is refused, /metrics answers once one closes") {
  monitor::Stats stats;
  sinks::AdminOptions ao;
  ao.maxConnections = 8;
  sinks::AdminServer admin(ao, stats, nullptr, nullptr);
  const std::uint16_t port = admin.start();
  // Eight slow clients, each holding a connection with half a request.
  std::vector<int> slow;
  for (int i = 0; i < 8; ++i) {
    const int fd = admin_connect(port);
    REQUIRE(fd >= 0);
    REQUIRE(::send(fd, "GET /metr", 9, MSG_NOSIGNAL) == 9);
    slow.push_back(fd);
  }
  // The ninth is answered 503 at once and closed.
  std::string refused;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    refused = http_get(port, "/metrics");
  } while (refused.rfind("HTTP/1.1 503", 0) != 0 && std::chrono::steady_clock::now() < deadline);
  CHECK(refused.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(body_of(refused).find("too many admin connections (maxConnections 8)") !=
        std::string::npos);
  CHECK(admin.refused_connections() >= 1);
  // One slow client gives up: /metrics is served again.
  ::close(slow.back());
  slow.pop_back();
  const std::string ok = wait_until([&] {
    const std::string r = http_get(port, "/metrics");
    return r.rfind("HTTP/1.1 200", 0) == 0 ? r : std::string();
  });
  CHECK(ok.find("varanus_connections_total") != std::string::npos);
  for (int fd : slow) ::close(fd);
}
