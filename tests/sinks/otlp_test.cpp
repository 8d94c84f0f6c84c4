// OTLP trace export: traceparent parsing, the collection helper, URLs,
// gzip, and OtlpSink end to end against a small HTTP server on loopback
// (spans as JSON, db.query.text redacted, hellos left out, retries).
#include "varanus/sinks/otlp.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../support/loopback.hpp"
#include "sink_test_util.hpp"

using namespace varanus;
using namespace sinks_test;
using nlohmann::json;

namespace {

wire::BsonView view(const wire::BsonBytes& b) {
  return {b.data(), static_cast<std::uint32_t>(b.size())};
}

std::string gunzip(const std::string& in) {
  z_stream z{};
  REQUIRE(inflateInit2(&z, 15 + 16) == Z_OK);
  std::string out(std::size_t{1} << 22, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(inflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  inflateEnd(&z);
  return out;
}

/// A loopback HTTP server: answers each request with the next status of
/// `statuses` (200 when they run out) and keeps the bodies of all.
class Collector {
 public:
  explicit Collector(std::vector<int> statuses = {}) : statuses_(std::move(statuses)) {
    const auto l = test::listen_loopback(16);
    fd_ = l.fd;
    port_ = l.port;
    thread_ = std::thread([this] { run(); });
  }
  ~Collector() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::pair<std::string, std::string>> requests() {  // (head, body)
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void run() {
    while (!stop_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char buf[65536];
      std::size_t want = std::string::npos;
      std::size_t head = std::string::npos;
      while (want == std::string::npos || in.size() < want) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
        if (head == std::string::npos && (head = in.find("\r\n\r\n")) != std::string::npos) {
          const auto cl = in.find("Content-Length: ");
          want = head + 4 + std::stoul(in.substr(cl + 16));
        }
      }
      int status = 200;
      {
        std::lock_guard lock(mutex_);
        if (!statuses_.empty()) {
          status = statuses_.front();
          statuses_.erase(statuses_.begin());
        }
        if (status == 200 && head != std::string::npos)
          requests_.emplace_back(in.substr(0, head), in.substr(head + 4));
      }
      const std::string res = "HTTP/1.1 " + std::to_string(status) +
                              " X\r\nContent-Length: 2\r\nRetry-After: 0\r\n\r\n{}";
      [[maybe_unused]] auto n = ::send(c, res.data(), res.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<int> statuses_;
  std::vector<std::pair<std::string, std::string>> requests_;
  std::thread thread_;
};

json attributes(const json& span) {
  json out = json::object();
  for (const auto& a : span["attributes"]) out[a["key"].get<std::string>()] = a["value"];
  return out;
}

}  // namespace

TEST_CASE("traceparent: alone, sqlcommenter style, invalid") {
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  auto a = sinks::parse_traceparent(tp);
  REQUIRE(a);
  CHECK(a->traceId == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(a->spanId == "00f067aa0ba902b7");
  CHECK(a->flags == 1);
  CHECK(sinks::parse_traceparent("  " + tp + " "));
  auto b = sinks::parse_traceparent("/*action='x',traceparent='" + tp + "'*/");
  REQUIRE(b);
  CHECK(b->spanId == "00f067aa0ba902b7");
  auto c = sinks::parse_traceparent(
      "controller='c',traceparent='00%2D4bf92f3577b34da6a3ce929d0e0e4736%2D00f067aa0ba902b7%2D00'");
  REQUIRE(c);
  CHECK(c->flags == 0);
  CHECK_FALSE(sinks::parse_traceparent("hello"));
  CHECK_FALSE(sinks::parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
  CHECK_FALSE(sinks::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
  CHECK_FALSE(sinks::parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(sinks::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"));
  CHECK_FALSE(sinks::parse_traceparent(tp + "-extra"));  // version 00 has no more fields
}

TEST_CASE("the collection a command names") {
  CHECK(sinks::command_collection("find", view(bson(R"({"find": "orders", "$db": "shop"})"))) ==
        "orders");
  CHECK(sinks::command_collection(
            "getMore", view(bson(R"({"getMore": 12, "collection": "items"})"))) == "items");
  CHECK(sinks::command_collection("aggregate", view(bson(R"({"aggregate": 1})"))).empty());
  CHECK(sinks::command_collection("ping", {}).empty());
}

TEST_CASE("OTLP endpoint URLs") {
  auto u = sinks::parse_http_url("http://collector:4318/");
  REQUIRE(u);
  CHECK(u->host == "collector");
  CHECK(u->port == 4318);
  CHECK(u->path.empty());
  u = sinks::parse_http_url("http://[::1]:9/otlp");
  REQUIRE(u);
  CHECK(u->host == "::1");
  CHECK(u->path == "/otlp");
  CHECK(sinks::parse_http_url("http://h")->port == 80);
  std::string err;
  CHECK_FALSE(sinks::parse_http_url("https://h", &err));
  CHECK(err.find("https") != std::string::npos);
  CHECK_FALSE(sinks::parse_http_url("h:4318"));
  CHECK_FALSE(sinks::parse_http_url("http://h:99999"));
}

TEST_CASE("gzip round trip") {
  const std::string text(5000, 'x');
  const std::string z = sinks::gzip_compress(text);
  CHECK(z.size() < 200);
  CHECK(gunzip(z) == text);
}

TEST_CASE("OtlpSink: one span per command, hellos left out, query text redacted") {
  Collector collector;
  sinks::OtlpOptions o;
  o.endpoint = collector.url() + "/base";
  o.batchDelay = std::chrono::milliseconds(20);
  o.queryText = true;
  o.gzip = true;
  o.serviceVersion = "9.9.9";
  sinks::RenderOptions r;
  r.redaction = sinks::Redaction::values;
  sinks::OtlpSink sink(o, r);

  monitor::Event s = started(11, R"({"find": "orders", "filter": {"secret": "s3cr3t"},
      "comment": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "$db": "shop"})");
  s.databaseName = "shop";
  s.commandName = "find";
  sink.write(s);
  monitor::Event ok = succeeded(11);
  ok.databaseName = "shop";
  ok.commandName = "find";
  ok.time = s.time + std::chrono::microseconds(1234);
  ok.durationMicros = 1234;
  sink.write(ok);
  monitor::Event hello = succeeded(12);
  hello.commandName = "hello";
  hello.hello = monitor::HelloKind::heartbeat;
  sink.write(hello);
  monitor::Event bad = succeeded(13);
  bad.type = monitor::EventType::commandFailed;
  bad.commandName = "insert";
  bad.databaseName = "shop";
  bad.document =
      bson(R"({"ok": 0, "errmsg": "E11000 dup", "code": 11000, "codeName": "DuplicateKey"})");
  sink.write(bad);
  sink.close();

  CHECK(sink.spans_sent() == 2);
  CHECK(sink.spans_dropped() == 0);
  const auto reqs = collector.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].first.rfind("POST /base/v1/traces HTTP/1.1", 0) == 0);
  CHECK(reqs[0].first.find("Content-Encoding: gzip") != std::string::npos);
  const json body = json::parse(gunzip(reqs[0].second));
  const json& spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"];
  REQUIRE(spans.size() == 2);
  const json& find = spans[0];
  CHECK(find["name"] == "find orders");
  CHECK(find["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(find["parentSpanId"] == "00f067aa0ba902b7");
  CHECK(std::stoll(find["endTimeUnixNano"].get<std::string>()) -
            std::stoll(find["startTimeUnixNano"].get<std::string>()) ==
        1234000);
  const json a = attributes(find);
  CHECK(a["db.collection.name"]["stringValue"] == "orders");
  CHECK(a["server.address"]["stringValue"] == "db.example.net");
  CHECK(a["server.port"]["intValue"] == "27017");
  const std::string q = a["db.query.text"]["stringValue"];
  CHECK(q.find("s3cr3t") == std::string::npos);
  CHECK(q.find("\"secret\":\"string\"") != std::string::npos);
  const json& failed = spans[1];
  CHECK(failed["status"]["code"] == 2);
  CHECK(failed["status"]["message"] == "E11000 dup");
  CHECK(attributes(failed)["db.response.status_code"]["stringValue"] == "11000");
  CHECK(attributes(failed)["error.type"]["stringValue"] == "DuplicateKey");
  json res = json::object();
  for (const auto& x : body["resourceSpans"][0]["resource"]["attributes"])
    res[x["key"].get<std::string>()] = x["value"]["stringValue"];
  CHECK(res["service.name"] == "varanus");
  CHECK(res["service.version"] == "9.9.9");
}

TEST_CASE("OtlpSink: 503 and 429 retried with backoff, 400 not retried") {
  Collector collector({503, 429, 200, 400});
  sinks::OtlpOptions o;
  o.endpoint = collector.url();
  o.batchDelay = std::chrono::milliseconds(5);
  o.minBackoff = std::chrono::milliseconds(5);
  sinks::OtlpSink sink(o);
  monitor::Event e = succeeded(1);
  e.commandName = "ping";
  sink.write(e);
  for (int i = 0; i < 400 && sink.spans_sent() < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(sink.spans_sent() == 1);
  CHECK(sink.retries() == 2);
  CHECK(sink.posts_failed() == 2);
  sink.write(e);
  for (int i = 0; i < 400 && sink.posts_failed() < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(sink.posts_failed() == 3);  // the 400: dropped at once
  CHECK(sink.retries() == 2);
  CHECK(sink.spans_dropped() == 1);
  sink.close();
}

TEST_CASE("OtlpSink: a collector that never answers delays close() by closeTimeout at most") {
  // Listens, never accepts: connect and send succeed, no answer ever comes.
  const auto [fd, port] = test::listen_loopback(4);
  sinks::OtlpOptions o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(port);
  o.batchDelay = std::chrono::milliseconds(1);
  o.timeout = std::chrono::seconds(60);
  o.closeTimeout = std::chrono::milliseconds(200);
  sinks::OtlpSink sink(o);
  monitor::Event e = succeeded(1);
  e.commandName = "ping";
  for (int i = 0; i < 3; ++i) sink.write(e);
  for (int i = 0; i < 400 && sink.queued() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(sink.queued() == 0);  // the batch is in flight
  const auto t0 = std::chrono::steady_clock::now();
  sink.close();
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= std::chrono::milliseconds(190));
  CHECK(took < std::chrono::seconds(5));
  CHECK(sink.spans_dropped() == 3);
  CHECK(sink.posts_failed() == 1);
  CHECK(sink.spans_sent() == 0);
  ::close(fd);
}
