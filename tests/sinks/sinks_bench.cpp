// Micro-benchmarks for the sink path (not a test; run by hand):
//   build/tests/sinks/sinks_bench
// - render: µs per event line (varanus and mongodb-log formats)
// - publish: ns per Dispatcher::publish from 1 and 2 producer threads, with
//   the sink thread draining into a no-op sink; compared with a
//   mutex-protected ring doing the same move, to justify the lock-free ring.
// The shared test helpers use doctest's REQUIRE: compiled out here.
#define DOCTEST_CONFIG_DISABLE
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "sink_test_util.hpp"
#include "varanus/sinks/dispatcher.hpp"

using namespace varanus;
using clk = std::chrono::steady_clock;

namespace {

// A typical insert command of ~240 bytes of BSON.
const std::string kCommand =
    R"({"insert": "orders", "ordered": true, "lsid": {"id": {"$binary": {"base64": "q0Vsd3F0SxK2W0dMiRFyyA==", "subType": "04"}}},)"
    R"( "$clusterTime": {"clusterTime": {"$timestamp": {"t": 1700000000, "i": 1}}}, "$db": "shop",)"
    R"( "documents": [{"_id": {"$oid": "5f1d7f0e2a3b4c5d6e7f8091"}, "sku": "A-1001", "qty": 3, "price": 19.99, "note": "gift wrap"}]})";

struct NullSink : sinks::Sink {
  NullSink() : Sink("null") {}

 protected:
  void write_(const sinks::RenderedEvent&) override {}  // rendering is timed apart
};

double render_us(sinks::RenderOptions o) {
  // As the sink thread renders: through the Dispatcher's RenderCache.
  monitor::Event e = sinks_test::started(1, kCommand);
  sinks::RenderCache cache;
  std::size_t size = 0;
  constexpr int kN = 200000;
  const auto t0 = clk::now();
  for (int i = 0; i < kN; ++i) {
    cache.next();
    size = cache.line(e, o).size();
  }
  const double us = std::chrono::duration<double, std::micro>(clk::now() - t0).count() / kN;
  std::printf("  line: %zu bytes\n", size);
  return us;
}

// Events are prepared beforehand so that only publish() is timed.
double publish_ns(int producers, bool mutexRing) {
  constexpr int kPerThread = 200000;
  monitor::Stats stats;
  sinks::DispatcherOptions o;
  o.queueSize = 1 << 16;
  sinks::Dispatcher d(stats, o);
  d.add(std::make_shared<NullSink>());
  d.start();
  // The mutex variant: a deque-backed bounded queue, consumer draining.
  std::mutex m;
  std::deque<monitor::Event> q;
  std::atomic<bool> done{false};
  std::thread consumer;
  if (mutexRing)
    consumer = std::thread([&] {
      std::vector<monitor::Event> batch;
      while (!done.load()) {
        {
          std::lock_guard l(m);
          while (!q.empty()) {
            batch.push_back(std::move(q.front()));
            q.pop_front();
          }
        }
        batch.clear();
        std::this_thread::yield();
      }
    });
  std::vector<std::vector<monitor::Event>> events(static_cast<std::size_t>(producers));
  for (auto& v : events) {
    v.reserve(kPerThread);
    for (int i = 0; i < kPerThread; ++i) {
      monitor::Event e = sinks_test::started(i, kCommand);
      v.push_back(std::move(e));
    }
  }
  std::vector<std::thread> threads;
  std::vector<double> ns(static_cast<std::size_t>(producers));
  for (int t = 0; t < producers; ++t)
    threads.emplace_back([&, t] {
      auto& v = events[static_cast<std::size_t>(t)];
      // Rounds of 8192 events (well under the ring's size with 2 producers),
      // then a pause for the sink thread to drain: times the push into warm
      // cells, not the drop path.
      clk::duration spent{};
      for (std::size_t r = 0; r < v.size(); r += 8192) {
        const auto t0 = clk::now();
        for (std::size_t i = r; i < std::min(v.size(), r + 8192); ++i) {
          if (mutexRing) {
            std::lock_guard l(m);
            if (q.size() < (1u << 16)) q.push_back(std::move(v[i]));
          } else {
            d.publish(std::move(v[i]));
          }
        }
        spent += clk::now() - t0;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ns[static_cast<std::size_t>(t)] =
          std::chrono::duration<double, std::nano>(spent).count() / kPerThread;
    });
  for (auto& t : threads) t.join();
  done = true;
  if (consumer.joinable()) consumer.join();
  d.stop();
  double sum = 0;
  for (double x : ns) sum += x;
  if (!mutexRing)
    std::printf("  dropped %llu of %d\n", static_cast<unsigned long long>(d.dropped()),
                producers * kPerThread);
  return sum / producers;
}

}  // namespace

// `sinks_bench render` times only the rendering (for profiling it).
int main(int argc, char** argv) {
  const bool renderOnly = argc > 1 && std::string_view(argv[1]) == "render";
  std::printf("sizeof(Event) = %zu\n", sizeof(monitor::Event));
  std::printf("render varanus:      %.2f us/event\n", render_us({}));
  if (renderOnly) return 0;
  std::printf("render mongodb-log:  %.2f us/event\n",
              render_us({sinks::Format::mongodbLog, 1000, sinks::Redaction::none}));
  std::printf("render values:       %.2f us/event\n",
              render_us({sinks::Format::varanus, 1000, sinks::Redaction::values}));
  for (int p : {1, 2}) {
    std::printf("publish, %d producer(s), lock-free ring: %.0f ns/event\n", p,
                publish_ns(p, false));
    std::printf("publish, %d producer(s), mutex + deque:  %.0f ns/event\n", p, publish_ns(p, true));
  }
}
