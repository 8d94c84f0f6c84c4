// The Dispatcher: delivery, drops when a sink is slow, publish never
// blocking, failing sinks isolated, stop() flushing, filters.
#include "varanus/sinks/dispatcher.hpp"

#include <doctest/doctest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sink_test_util.hpp"
#include "varanus/sinks/line_sinks.hpp"
#include "varanus/sinks/metrics.hpp"

using namespace varanus;
using namespace sinks_test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// Records (connectionId, requestId) of what it received, and its lines.
struct RecordingSink : sinks::Sink {
  explicit RecordingSink(std::string name = "rec", sinks::RenderOptions r = {},
                         sinks::SinkFilter f = {})
      : Sink(std::move(name), r, std::move(f)) {}
  std::mutex m;
  std::vector<std::pair<std::uint64_t, std::int32_t>> seen;
  std::vector<std::string> lines;
  std::vector<const char*> lineData;
  int flushes = 0;
  bool closedCalled = false;

 protected:
  void write_(const sinks::RenderedEvent& e) override {
    std::lock_guard lock(m);
    seen.emplace_back(e.event().connection->connectionId, e.event().requestId);
    const std::string_view l = line(e);
    lines.emplace_back(l);
    lineData.push_back(l.data());
  }
  void flush_() override { ++flushes; }
  void close_() override { closedCalled = true; }
};

struct ThrowingSink : sinks::Sink {
  ThrowingSink() : Sink("thrower") {}

 protected:
  void write_(const sinks::RenderedEvent&) override { throw std::runtime_error("disk on fire"); }
};

// Blocks in its first write until released.
struct BlockingSink : sinks::Sink {
  BlockingSink() : Sink("slow") {}
  std::promise<void> entered;
  std::shared_future<void> release;
  std::atomic<int> count{0};

 protected:
  void write_(const sinks::RenderedEvent&) override {
    if (count++ == 0) {
      entered.set_value();
      release.wait();
    }
  }
};

monitor::Event event_for(std::uint64_t conn, std::int32_t req) {
  monitor::Event e = started(req);
  e.connection = connection(conn);
  return e;
}

}  // namespace

TEST_CASE("every event reaches every sink, in order, and stop() closes them") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto a = std::make_shared<RecordingSink>("a");
  auto b = std::make_shared<RecordingSink>("b");
  d.add(a);
  d.add(b);
  d.start();
  for (int i = 0; i < 1000; ++i) d.publish(event_for(1, i));
  d.stop();
  REQUIRE(a->seen.size() == 1000);
  REQUIRE(b->seen.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(a->seen[static_cast<std::size_t>(i)].second == i);
  CHECK(a->closedCalled);
  CHECK(a->flushes >= 1);
  CHECK(stats.find("varanus_events_published_total") == 1000);
  CHECK(stats.find("varanus_events_dropped_total") == 0);
  CHECK(a->written() == 1000);
  CHECK(a->dropped() == 0);
}

TEST_CASE("sinks with the same format share one rendering of each event") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto a = std::make_shared<RecordingSink>("a");
  auto b = std::make_shared<RecordingSink>("b");
  auto c = std::make_shared<RecordingSink>("c", sinks::RenderOptions{sinks::Format::mongodbLog});
  d.add(a);
  d.add(b);
  d.add(c);
  d.publish(event_for(1, 1));
  d.stop();  // never started: drains on this thread
  REQUIRE(a->lines.size() == 1);
  CHECK(a->lineData[0] == b->lineData[0]);  // the same buffer, rendered once
  CHECK(a->lines[0] == b->lines[0]);
  CHECK(json::parse(c->lines[0])["message"] == "Command started");
}

TEST_CASE("a full queue drops and counts, publish never waits for a slow sink") {
  monitor::Stats stats;
  std::mutex m;
  std::vector<std::string> diagnostics;
  sinks::DispatcherOptions o;
  o.queueSize = 8;
  o.diagnostics = [&](std::string_view l) {
    std::lock_guard lock(m);
    diagnostics.emplace_back(l);
  };
  sinks::Dispatcher d(stats, o);
  auto slow = std::make_shared<BlockingSink>();
  std::promise<void> release;
  slow->release = release.get_future().share();
  auto rec = std::make_shared<RecordingSink>();
  d.add(slow);
  d.add(rec);
  d.start();
  d.publish(event_for(1, 0));
  slow->entered.get_future().wait();  // the sink thread is now stuck in the slow sink

  constexpr int kEvents = 10000;
  std::vector<monitor::Event> events;  // built first: only publish() is timed
  for (int i = 1; i < kEvents; ++i) events.push_back(event_for(1, i));
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& e : events) d.publish(std::move(e));
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  // 10k publishes against a full ring: no waiting (generous bound for
  // loaded CI machines and sanitizer builds).
  CHECK(elapsed < 200ms);
  CHECK(d.dropped() >= kEvents - 1 - 8);
  CHECK(stats.find("varanus_events_dropped_total") == static_cast<std::int64_t>(d.dropped()));
  CHECK(stats.find("varanus_events_published_total") == kEvents);

  release.set_value();
  d.stop();
  CHECK(rec->written() + d.dropped() == kEvents);
  CHECK(rec->dropped() == d.dropped());  // counted per sink
  CHECK(slow->dropped() == d.dropped());
  std::lock_guard lock(m);
  REQUIRE(!diagnostics.empty());
  CHECK(diagnostics.size() <= 2);  // rate limited: once at first, once at stop
  CHECK(diagnostics[0].find("dropped") != std::string::npos);
}

TEST_CASE("a throwing sink does not stop the others and is reported, rate limited") {
  monitor::Stats stats;
  std::vector<std::string> diagnostics;
  sinks::DispatcherOptions o;
  o.diagnostics = [&](std::string_view l) { diagnostics.emplace_back(l); };
  sinks::Dispatcher d(stats, o);
  auto bad = std::make_shared<ThrowingSink>();
  auto good = std::make_shared<RecordingSink>();
  d.add(bad);
  d.add(good);
  d.start();
  for (int i = 0; i < 500; ++i) d.publish(event_for(2, i));
  d.stop();
  CHECK(good->written() == 500);
  CHECK(bad->errors() == 500);
  CHECK(bad->written() == 0);
  REQUIRE(diagnostics.size() == 1);
  CHECK(diagnostics[0].find("thrower") != std::string::npos);
  CHECK(diagnostics[0].find("disk on fire") != std::string::npos);
}

TEST_CASE("stop() drains and flushes everything to a file") {
  TempDir dir;
  const auto path = (dir.path / "events.log").string();
  monitor::Stats stats;
  {
    sinks::Dispatcher d(stats);
    d.add(std::make_shared<sinks::FileSink>(sinks::FileSinkOptions{path}));
    d.start();
    for (int i = 0; i < 20000; ++i) d.publish(event_for(3, i));
    d.stop();
  }
  std::ifstream in(path);
  std::string l;
  int n = 0;
  while (std::getline(in, l)) {
    CHECK(json::parse(l)["requestId"] == n);
    ++n;
  }
  CHECK(n == 20000);
}

TEST_CASE("a second stop signal: emergency_flush writes what is queued, at once") {
  TempDir dir;
  const auto path = (dir.path / "events.log").string();
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  d.add(std::make_shared<sinks::FileSink>(sinks::FileSinkOptions{path}));
  // Not started: the 41 events wait in the ring, as events do that the
  // sink thread has not taken yet when the second signal comes.
  for (int i = 0; i < 41; ++i) d.publish(event_for(3, i));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(d.emergency_flush(t0 + 200ms));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  // In the file before any stop() (the process would _Exit now).
  std::ifstream in(path);
  int n = 0;
  for (std::string l; std::getline(in, l); ++n) CHECK(json::parse(l)["requestId"] == n);
  CHECK(n == 41);
  d.stop();
}

TEST_CASE("several producers: nothing lost, per-connection order kept") {
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.queueSize = 1 << 16;
  sinks::Dispatcher d(stats, o);
  auto rec = std::make_shared<RecordingSink>();
  d.add(rec);
  d.start();
  constexpr int kPerThread = 20000;
  std::vector<std::thread> producers;
  for (std::uint64_t t = 1; t <= 3; ++t)
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        monitor::Event e;
        e.connection = connection(t);
        e.requestId = i;
        d.publish(std::move(e));
        if (i % 4096 == 0) std::this_thread::sleep_for(1ms);  // let the ring drain
      }
    });
  for (auto& p : producers) p.join();
  d.stop();
  CHECK(rec->seen.size() + d.dropped() == 3 * kPerThread);
  CHECK(d.dropped() == 0);
  std::map<std::uint64_t, std::int32_t> next;
  for (auto [conn, req] : rec->seen) {
    CHECK(req == next[conn]);
    next[conn] = req + 1;
  }
}

TEST_CASE("events published after stop() are dropped and counted") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto rec = std::make_shared<RecordingSink>();
  d.add(rec);
  d.start();
  d.stop();
  d.publish(event_for(1, 1));
  CHECK(d.dropped() == 1);
  CHECK(rec->written() == 0);
  d.stop();  // idempotent
}

TEST_CASE("filters select commands, databases, slow and failed commands, hellos") {
  using monitor::EventType;
  sinks::SinkFilter f;
  monitor::Event s = started();
  monitor::Event ok = succeeded();
  monitor::Event conn;
  conn.type = EventType::connectionOpened;
  CHECK(f.accepts(s));
  CHECK(f.accepts(conn));

  SUBCASE("command names, case-insensitive") {
    f.includeCommands = {"FIND", "insert"};
    CHECK(f.accepts(s));
    s.commandName = "aggregate";
    CHECK(!f.accepts(s));
    f.includeCommands.clear();
    f.excludeCommands = {"Aggregate"};
    CHECK(!f.accepts(s));
  }
  SUBCASE("databases") {
    f.includeDatabases = {"shop"};
    CHECK(f.accepts(s));
    s.databaseName = "admin";
    CHECK(!f.accepts(s));
    f.includeDatabases.clear();
    f.excludeDatabases = {"admin"};
    CHECK(!f.accepts(s));
  }
  SUBCASE("slow commands") {
    f.minDurationMicros = 1000;
    CHECK(!f.accepts(s));  // no duration yet
    CHECK(f.accepts(ok));  // 1234 us
    ok.durationMicros = 999;
    CHECK(!f.accepts(ok));
    CHECK(!f.accepts(conn));
  }
  SUBCASE("failed only") {
    f.failedOnly = true;
    CHECK(!f.accepts(ok));
    ok.type = EventType::commandFailed;
    CHECK(f.accepts(ok));
    CHECK(!f.accepts(conn));
  }
  SUBCASE("hellos") {
    s.hello = monitor::HelloKind::heartbeat;
    CHECK(f.accepts(s));
    f.keepHellos = false;
    CHECK(!f.accepts(s));
  }
  SUBCASE("connection events") {
    f.connectionEvents = false;
    CHECK(!f.accepts(conn));
  }
  SUBCASE("event names, case-insensitive") {
    f.includeEvents = {"commandSucceeded", "CONNECTIONOPENED"};
    CHECK(!f.accepts(s));
    CHECK(f.accepts(ok));
    CHECK(f.accepts(conn));
    f.includeEvents.clear();
    f.excludeEvents = {"connectionOpened"};
    CHECK(f.accepts(s));
    CHECK(!f.accepts(conn));
  }
  SUBCASE("sampling keeps both events of a command and about the asked fraction") {
    f.sampleRate = 0.25;
    int kept = 0;
    for (int i = 0; i < 20000; ++i) {
      monitor::Event a = event_for(static_cast<std::uint64_t>(i % 7), i);
      monitor::Event b = a;
      b.type = EventType::commandSucceeded;
      CHECK(f.accepts(a) == f.accepts(b));
      kept += f.accepts(a) ? 1 : 0;
    }
    CHECK(kept > 4500);
    CHECK(kept < 5500);
    f.sampleRate = 0;
    CHECK(!f.accepts(s));
  }
}

TEST_CASE("a sink's filter applies inside the dispatcher and filtered events are counted") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  sinks::SinkFilter f;
  f.failedOnly = true;
  auto failures = std::make_shared<RecordingSink>("failures", sinks::RenderOptions{}, f);
  auto all = std::make_shared<RecordingSink>("all");
  d.add(failures);
  d.add(all);
  d.publish(started());
  monitor::Event bad = succeeded();
  bad.type = monitor::EventType::commandFailed;
  d.publish(std::move(bad));
  d.stop();
  CHECK(all->written() == 2);
  CHECK(failures->written() == 1);
  CHECK(failures->filtered() == 1);
}

TEST_CASE("a callback sink receives events on the sink thread") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  std::set<std::thread::id> threads;
  int n = 0;
  d.add(std::make_shared<sinks::CallbackSink>([&](const sinks::RenderedEvent& e) {
    threads.insert(std::this_thread::get_id());
    n += e.event().requestId == 5 ? 1 : 0;
  }));
  d.start();
  d.publish(started(5));
  d.stop();
  CHECK(n == 1);
  REQUIRE(threads.size() == 1);
  CHECK(*threads.begin() != std::this_thread::get_id());
}

TEST_CASE("the sink thread runs as SCHED_IDLE: it renders only on a core nothing else wants") {
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.tick = 10s;  // the rescuer would step in only after two ticks: the sink thread delivers
  sinks::Dispatcher d(stats, o);
  std::atomic<int> policy{-1};
  d.add(std::make_shared<sinks::CallbackSink>(
      [&](const sinks::RenderedEvent&) { policy.store(::sched_getscheduler(0)); }));
  d.start();
  d.publish(started(5));
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (policy.load() == -1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  CHECK(policy.load() == SCHED_IDLE);  // delivered by the sink thread, not by stop()
  d.stop();
  CHECK(d.rescues() == 0);
  CHECK(::sched_getscheduler(0) == SCHED_OTHER);  // the publishing thread is left alone
}

TEST_CASE("when every core is busy the rescuer drains the ring: nothing lost, order kept") {
  // Spinning threads of ordinary priority on every core starve the
  // SCHED_IDLE sink thread; once the ring is a quarter full the rescuer
  // (SCHED_BATCH) takes it over.
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.queueSize = 4096;  // rescue at 1024 queued
  sinks::Dispatcher d(stats, o);
  std::mutex m;
  std::vector<std::int32_t> order;
  std::set<int> policies;
  d.add(std::make_shared<sinks::CallbackSink>([&](const sinks::RenderedEvent& e) {
    std::lock_guard lock(m);
    order.push_back(e.event().requestId);
    policies.insert(::sched_getscheduler(0));
  }));
  d.start();
  std::atomic<bool> spin{true};
  std::atomic<unsigned> spinning{0};
  std::vector<std::thread> spinners;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < cores; ++i) {
    spinners.emplace_back([&] {
      spinning.fetch_add(1);
      while (spin.load(std::memory_order_relaxed)) {
      }
    });
  }
  // The spinners own the cores once every one of them runs.
  const auto started = std::chrono::steady_clock::now() + 10s;
  while (spinning.load() < cores && std::chrono::steady_clock::now() < started)
    std::this_thread::yield();
  REQUIRE(spinning.load() == cores);
  constexpr int kEvents = 3000;  // < the ring: none may be dropped
  for (int i = 0; i < kEvents; ++i) d.publish(event_for(1, i));
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    {
      std::lock_guard lock(m);
      if (order.size() == kEvents) break;
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(5ms);
  }
  {
    std::lock_guard lock(m);
    CHECK(order.size() == kEvents);  // delivered while the cores were still busy
  }
  spin.store(false);
  for (auto& t : spinners) t.join();
  d.stop();
  CHECK(d.dropped() == 0);
  CHECK(d.rescues() >= 1);
  CHECK(stats.find("varanus_sink_rescues_total") == static_cast<std::int64_t>(d.rescues()));
  CHECK(policies.count(SCHED_BATCH) == 1);  // the rescuer delivered some
  REQUIRE(order.size() == kEvents);
  for (int i = 0; i < kEvents; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("a sink thread that never gets a core: the rescuer delivers a trickle within ticks") {
  // Below the rescue threshold: the rescuer steps in because events waited
  // across two of its looks (a tick apart) with no batch taken.
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.tick = 20ms;
  o.idleThread = false;  // the starved sink thread, at its worst
  sinks::Dispatcher d(stats, o);
  std::atomic<int> delivered{0};
  std::atomic<int> byRescuer{0};
  d.add(std::make_shared<sinks::CallbackSink>([&](const sinks::RenderedEvent&) {
    ++delivered;
    if (::sched_getscheduler(0) == SCHED_BATCH) ++byRescuer;
  }));
  d.start();
  const auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) d.publish(event_for(1, i));
  while (delivered.load() < 5 && std::chrono::steady_clock::now() - begin < 10s)
    std::this_thread::sleep_for(1ms);
  const auto took = std::chrono::steady_clock::now() - begin;
  CHECK(delivered.load() == 5);
  CHECK(byRescuer.load() == 5);
  CHECK(took < 2s);  // a few 20 ms ticks, not "when the ring is a quarter full"
  CHECK(d.rescues() == 1);
  CHECK(d.rescue_threshold() > 5);

  // A burst of a quarter of the ring wakes the rescuer at once, unasked by
  // the tick.
  const std::size_t burst = d.rescue_threshold();
  for (std::size_t i = 0; i < burst; ++i) d.publish(event_for(2, static_cast<std::int32_t>(i)));
  const auto begin2 = std::chrono::steady_clock::now();
  while (delivered.load() < 5 + static_cast<int>(burst) &&
         std::chrono::steady_clock::now() - begin2 < 10s)
    std::this_thread::sleep_for(1ms);
  CHECK(delivered.load() == 5 + static_cast<int>(burst));
  CHECK(d.rescues() >= 2);
  CHECK(std::chrono::steady_clock::now() - begin2 < 2s);
  d.stop();
  CHECK(d.dropped() == 0);
}

TEST_CASE("while events keep coming, publishing wakes the sink thread rarely") {
  // A steady stream of one event every ~20 us for ~0.2 s: the sink thread
  // lingers between batches instead of sleeping until woken, so producers
  // almost never need a futex wake (a wake per event would be a syscall on
  // every I/O-thread publish).
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.linger = 1ms;
  sinks::Dispatcher d(stats, o);
  auto rec = std::make_shared<RecordingSink>();
  d.add(rec);
  d.start();
  constexpr int kEvents = 10'000;
  const auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < kEvents; ++i) {
    d.publish(event_for(1, i));
    const auto due = begin + std::chrono::microseconds(20 * (i + 1));
    while (std::chrono::steady_clock::now() < due) {
    }
  }
  const std::uint64_t wakes = d.wakeups();
  d.stop();
  std::lock_guard lock(rec->m);
  CHECK(rec->seen.size() == kEvents);
  MESSAGE("wake-ups for " << kEvents << " events: " << wakes);
  CHECK(wakes < kEvents / 50);
}

TEST_CASE("an event published to an idle dispatcher reaches the sink promptly") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto rec = std::make_shared<RecordingSink>();
  d.add(rec);
  d.start();
  // Wait until the sink thread has gone to its deep sleep.
  const auto asleepBy = std::chrono::steady_clock::now() + 10s;
  while (!d.sink_thread_asleep() && std::chrono::steady_clock::now() < asleepBy)
    std::this_thread::sleep_for(1ms);
  REQUIRE(d.sink_thread_asleep());
  const auto t0 = std::chrono::steady_clock::now();
  d.publish(event_for(1, 7));
  bool seen = false;
  while (!seen && std::chrono::steady_clock::now() - t0 < 2s) {
    std::this_thread::sleep_for(100us);
    std::lock_guard lock(rec->m);
    seen = !rec->seen.empty();
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(seen);
  CHECK(d.wakeups() == 1);  // it slept: the publish woke it, not the 100 ms tick
  CHECK(waited < 90ms);
  d.stop();
}

TEST_CASE("with no sink there is no sink thread and publishing only counts") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  d.start();
  CHECK_FALSE(d.running());
  for (int i = 0; i < 1000; ++i) d.publish(event_for(1, i));
  d.stop();
  CHECK(stats.find("varanus_events_published_total") == 1000);
  CHECK(d.dropped() == 0);
  CHECK(stats.find("varanus_events_dropped_total") == 0);
}

TEST_CASE("the document bound is what the sinks can show") {
  monitor::Stats stats;
  SUBCASE("no sink, or only counters: no documents") {
    sinks::Dispatcher d(stats);
    CHECK_FALSE(d.document_bound().has_value());
    d.add(std::make_shared<sinks::MetricsSink>());
    CHECK_FALSE(d.document_bound().has_value());
  }
  SUBCASE("the largest rendering wins; values redaction asks for type names") {
    sinks::Dispatcher d(stats);
    sinks::RenderOptions small;
    small.maxDocumentLength = 100;
    sinks::RenderOptions types;
    types.maxDocumentLength = 1000;
    types.redaction = sinks::Redaction::values;
    d.add(std::make_shared<RecordingSink>("a", small));
    d.add(std::make_shared<RecordingSink>("b", types));
    auto b = d.document_bound();
    REQUIRE(b.has_value());
    CHECK(b->jsonLength == sinks::document_copy_bound(types).jsonLength);
    CHECK(b->jsonLength > sinks::document_copy_bound(small).jsonLength);
    CHECK(b->typeNames);
  }
  SUBCASE("an unbounded rendering or a callback sink needs whole documents") {
    sinks::Dispatcher d(stats);
    sinks::RenderOptions unbounded;
    unbounded.maxDocumentLength = 0;
    d.add(std::make_shared<RecordingSink>("a"));
    d.add(std::make_shared<RecordingSink>("b", unbounded));
    REQUIRE(d.document_bound().has_value());
    CHECK(d.document_bound()->unlimited());
    sinks::Dispatcher d2(stats);
    d2.add(std::make_shared<sinks::CallbackSink>([](const sinks::RenderedEvent&) {}));
    REQUIRE(d2.document_bound().has_value());
    CHECK(d2.document_bound()->unlimited());
  }
}

TEST_CASE("lines: commands sinks get one line per finished command, filters on those lines") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  sinks::RenderOptions o;
  o.lines = sinks::Lines::commands;
  sinks::SinkFilter slow;
  slow.minDurationMicros = 5000;
  sinks::SinkFilter failed;
  failed.failedOnly = true;
  auto all = std::make_shared<RecordingSink>("all", o);
  auto slowSink = std::make_shared<RecordingSink>("slow", o, slow);
  auto failedSink = std::make_shared<RecordingSink>("failed", o, failed);
  auto events = std::make_shared<RecordingSink>("events");
  d.add(all);
  d.add(slowSink);
  d.add(failedSink);
  d.add(events);
  CHECK(d.wants_reply_summary());
  // Three commands on two connections, interleaved; one slow, one failed.
  for (std::int32_t req : {1, 2, 3}) {
    monitor::Event st = started(req, R"({"find": "orders", "filter": {"n": )" +
                                         std::to_string(req) + R"(}, "$db": "shop"})");
    st.connection = connection(req == 2 ? 8 : 7);
    d.publish(std::move(st));
  }
  monitor::Event hello = started(4, R"({"hello": 1, "$db": "admin"})");
  hello.hello = monitor::HelloKind::heartbeat;
  d.publish(std::move(hello));
  for (std::int32_t req : {3, 1, 2}) {
    monitor::Event t = succeeded(req);
    t.connection = connection(req == 2 ? 8 : 7);
    if (req == 2) t.durationMicros = 9000;
    if (req == 3) {
      t.type = monitor::EventType::commandFailed;
      t.document = bson(R"({"ok": 0, "errmsg": "bad", "code": 2})");
    }
    d.publish(std::move(t));
  }
  d.stop();
  REQUIRE(all->lines.size() == 3);
  REQUIRE(slowSink->lines.size() == 1);
  REQUIRE(failedSink->lines.size() == 1);
  CHECK(events->lines.size() == 7);
  for (const auto& l : all->lines) {
    const json j = json::parse(l);
    CHECK(j["event"] == "command");
    CHECK(j["command"]["filter"]["n"] == j["requestId"]);  // its own command, not another's
  }
  const json s = json::parse(slowSink->lines[0]);
  CHECK(s["requestId"] == 2);
  CHECK(s["connectionId"] == 8);
  CHECK(s["durationMicros"] == 9000);
  CHECK(s["command"]["filter"]["n"] == 2);
  const json f = json::parse(failedSink->lines[0]);
  CHECK(f["requestId"] == 3);
  CHECK(f["outcome"] == "failed");
  CHECK(f["failure"]["errmsg"] == "bad");
  CHECK(f["command"]["filter"]["n"] == 3);
}

TEST_CASE("mongodb-log sinks write no handshake or heartbeat hellos") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto log =
      std::make_shared<RecordingSink>("log", sinks::RenderOptions{sinks::Format::mongodbLog});
  auto events = std::make_shared<RecordingSink>("events");
  d.add(log);
  d.add(events);
  CHECK_FALSE(d.wants_reply_summary());
  monitor::Event hs = started(1, R"({"hello": 1, "$db": "admin"})");
  hs.hello = monitor::HelloKind::handshake;
  d.publish(std::move(hs));
  d.publish(started(2));
  d.stop();
  REQUIRE(log->lines.size() == 1);
  CHECK(json::parse(log->lines[0])["requestId"] == 2);
  CHECK(events->lines.size() == 2);
}

TEST_CASE("lines: commands reuses kept started events, a reused requestID keeps the newer") {
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  sinks::RenderOptions o;
  o.lines = sinks::Lines::commands;
  auto sink = std::make_shared<RecordingSink>("cmd", o);
  d.add(sink);
  auto find = [](std::int32_t req, int n) {
    return started(
        req, R"({"find": "orders", "filter": {"n": )" + std::to_string(n) + R"(}, "$db": "shop"})");
  };
  for (int i = 0; i < 100; ++i) {  // one after another: the kept node is reused
    d.publish(find(i, i));
    d.publish(succeeded(i));
  }
  d.publish(find(500, 1));
  d.publish(find(500, 2));  // the same requestID again before a reply
  d.publish(succeeded(500));
  d.publish(succeeded(501));  // no started event kept: a line without command
  d.stop();
  REQUIRE(sink->lines.size() == 102);
  for (int i = 0; i < 100; ++i)
    CHECK(json::parse(sink->lines[static_cast<std::size_t>(i)])["command"]["filter"]["n"] == i);
  CHECK(json::parse(sink->lines[100])["command"]["filter"]["n"] == 2);
  CHECK_FALSE(json::parse(sink->lines[101]).contains("command"));
}
