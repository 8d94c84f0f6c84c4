// /stats/commands: per (database, collection, command) counts, bytes,
// percentiles from bounded histograms, 10 s / 60 s windows, the cap.
#include "varanus/sinks/command_stats.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "sink_test_util.hpp"

using namespace varanus;
using namespace sinks_test;
using nlohmann::json;
using sinks::CommandStatsSink;

namespace {

monitor::Event done(const std::string& db, const std::string& coll, const std::string& name,
                    std::int64_t micros, std::chrono::system_clock::time_point t,
                    bool failed = false) {
  monitor::Event e = succeeded();
  if (failed) e.type = monitor::EventType::commandFailed;
  e.databaseName = db;
  e.collection = coll;
  e.commandName = name;
  e.durationMicros = micros;
  e.time = t;
  e.requestBytes = 100;
  e.replyBytes = 1000;
  return e;
}

}  // namespace

TEST_CASE("buckets: every duration lies within its bucket, 4 buckets per octave") {
  for (std::int64_t v : {1, 2, 3, 5, 7, 8, 9, 100, 1000, 12345, 999999, 80'000'000}) {
    CAPTURE(v);
    const std::size_t b = CommandStatsSink::bucket_of(v);
    CHECK(CommandStatsSink::bucket_upper(b) >= v);
    CHECK(CommandStatsSink::bucket_upper(b) <= v + v / 4 + 1);
    if (b > 1) CHECK(CommandStatsSink::bucket_upper(b - 1) < v + 1);
  }
  CHECK(CommandStatsSink::bucket_of(0) == 0);
  CHECK(CommandStatsSink::bucket_of(std::int64_t{1} << 40) == CommandStatsSink::kBuckets - 1);
}

TEST_CASE("figures per namespace and command, cumulative and over 10 s / 60 s") {
  CommandStatsSink s;
  const auto now = fixed_time();
  using std::chrono::seconds;
  for (int i = 1; i <= 100; ++i) s.write(done("shop", "orders", "find", i * 1000, now));
  s.write(done("shop", "orders", "find", 500'000, now - seconds(30), true));
  s.write(done("shop", "orders", "find", 700'000, now - seconds(120)));
  s.write(done("shop", "users", "insert", 50, now));
  monitor::Event hello = done("admin", "", "hello", 9'000'000, now);
  hello.hello = monitor::HelloKind::heartbeat;
  s.write(hello);
  monitor::Event st = started();
  st.time = now;
  s.write(st);  // started events are not counted

  const json j = json::parse(s.json(now));
  REQUIRE(j["commands"].size() == 2);  // hellos left out
  const json& f = j["commands"][0];    // largest total first
  CHECK(f["database"] == "shop");
  CHECK(f["collection"] == "orders");
  CHECK(f["commandName"] == "find");
  CHECK(f["count"] == 102);
  CHECK(f["failed"] == 1);
  CHECK(f["totalMicros"] == 5050 * 1000 + 500'000 + 700'000);
  CHECK(f["maxMicros"] == 700'000);
  CHECK(f["bytesIn"] == 10200);
  CHECK(f["bytesOut"] == 102000);
  CHECK(f["p50Micros"].get<std::int64_t>() >= 51'000);
  CHECK(f["p50Micros"].get<std::int64_t>() <= 62'000);
  CHECK(f["p99Micros"].get<std::int64_t>() >= 100'000);
  CHECK(f["last10s"]["count"] == 100);
  CHECK(f["last10s"]["failed"] == 0);
  CHECK(f["last10s"]["maxMicros"] == 100'000);
  CHECK(f["last60s"]["count"] == 101);
  CHECK(f["last60s"]["failed"] == 1);
  CHECK(j["commands"][1]["commandName"] == "insert");
  // A minute on, the windows are empty and the totals stay.
  const json later = json::parse(s.json(now + seconds(61)));
  CHECK(later["commands"][0]["last60s"]["count"] == 0);
  CHECK(later["commands"][0]["count"] == 102);
}

TEST_CASE("over the cap, later keys fold into other, counted") {
  CommandStatsSink s({3});
  const auto now = fixed_time();
  for (int i = 0; i < 5; ++i) s.write(done("db", "c" + std::to_string(i), "find", 10, now));
  s.write(done("db", "c0", "find", 10, now));
  const json j = json::parse(s.json(now));
  CHECK(j["commands"].size() == 3);
  CHECK(j["folded"] == 3);
  bool other = false;
  for (const auto& r : j["commands"])
    if (r["database"] == "other") {
      other = true;
      CHECK(r["count"] == 3);
    }
  CHECK(other);
}
