// varanus-bench — libmongoc workloads (see bench_mongoc.hpp).
#include "bench_mongoc.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#ifdef VARANUS_BENCH_MONGOC
#include <mongoc/mongoc.h>
#endif

namespace varanus::bench {

#ifdef VARANUS_BENCH_MONGOC

namespace {

using Clock = std::chrono::steady_clock;

std::string uri_for(std::uint16_t port) {
  // directConnection: the stub (and a proxy in front of it) is one server.
  // Timeouts bound every call.
  return "mongodb://127.0.0.1:" + std::to_string(port) +
         "/?directConnection=true&serverSelectionTimeoutMS=5000&connectTimeoutMS=5000"
         "&socketTimeoutMS=10000&appname=varanus-bench";
}

void init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    mongoc_init();
    std::atexit(mongoc_cleanup);
  });
}

void note(MongocResult& r, const bson_error_t& e) {
  ++r.errors;
  if (r.firstError.empty()) r.firstError = e.message;
}

}  // namespace

bool mongoc_available() noexcept {
  return true;
}
const char* mongoc_version() noexcept {
  return mongoc_get_version();
}

MongocResult mongoc_ping(std::uint16_t port, Seconds duration, std::size_t maxCount) {
  init_once();
  MongocResult r;
  bson_error_t err;
  mongoc_uri_t* uri = mongoc_uri_new_with_error(uri_for(port).c_str(), &err);
  if (!uri) {
    note(r, err);
    return r;
  }
  mongoc_client_t* client = mongoc_client_new_from_uri(uri);
  bson_t* ping = BCON_NEW("ping", BCON_INT32(1));
  std::vector<double> us;
  us.reserve(maxCount);
  // Warm-up (connection, handshake, server selection), not measured.
  for (int i = 0; i < 100 && r.errors == 0; ++i) {
    if (!mongoc_client_command_simple(client, "admin", ping, nullptr, nullptr, &err)) note(r, err);
  }
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(duration);
  while (r.errors == 0 && us.size() < maxCount) {
    const auto a = Clock::now();
    if (a >= end) break;
    if (!mongoc_client_command_simple(client, "admin", ping, nullptr, nullptr, &err)) {
      note(r, err);
      break;
    }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  bson_destroy(ping);
  mongoc_client_destroy(client);
  mongoc_uri_destroy(uri);
  if (!us.empty()) {
    std::sort(us.begin(), us.end());
    r.p50us = us[us.size() / 2];
    r.ops = us.size();
    r.opsPerSec = secs > 0 ? static_cast<double>(us.size()) / secs : -1;
  }
  return r;
}

MongocResult mongoc_mix(std::uint16_t port, int threads, Seconds duration) {
  init_once();
  MongocResult r;
  bson_error_t err;
  mongoc_uri_t* uri = mongoc_uri_new_with_error(uri_for(port).c_str(), &err);
  if (!uri) {
    note(r, err);
    return r;
  }
  mongoc_client_pool_t* pool = mongoc_client_pool_new(uri);
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::int64_t> nextId{0};
  std::mutex m;
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(duration);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      mongoc_client_t* c = mongoc_client_pool_pop(pool);
      mongoc_collection_t* small = mongoc_client_get_collection(c, "bench", "small");
      mongoc_collection_t* mix = mongoc_client_get_collection(c, "bench", "mongoc_mix");
      bson_t* opts = BCON_NEW("limit", BCON_INT64(1), "singleBatch", BCON_BOOL(true));
      std::uint64_t mine = 0;
      bson_error_t e;
      for (std::uint64_t i = static_cast<std::uint64_t>(t); Clock::now() < end; ++i) {
        bool ok = true;
        if (i % 2 == 0) {
          bson_t* filter = BCON_NEW("_id", BCON_INT64(static_cast<std::int64_t>(i % 100)));
          mongoc_cursor_t* cur = mongoc_collection_find_with_opts(small, filter, opts, nullptr);
          const bson_t* doc = nullptr;
          while (mongoc_cursor_next(cur, &doc)) {
          }
          if (mongoc_cursor_error(cur, &e)) ok = false;
          mongoc_cursor_destroy(cur);
          bson_destroy(filter);
        } else {
          bson_t* doc = BCON_NEW("_id", BCON_INT64(nextId.fetch_add(1) + 10'000'000), "name",
                                 BCON_UTF8("varanus-bench"), "n", BCON_INT32(42), "tag",
                                 BCON_UTF8("abcdefghijklmnopqrstuvwxyz0123456789"));
          ok = mongoc_collection_insert_one(mix, doc, nullptr, nullptr, &e);
          bson_destroy(doc);
        }
        if (!ok) {
          std::lock_guard lock(m);
          note(r, e);
          break;
        }
        ++mine;
      }
      ops += mine;
      bson_destroy(opts);
      mongoc_collection_destroy(mix);
      mongoc_collection_destroy(small);
      mongoc_client_pool_push(pool, c);
    });
  }
  for (auto& t : ts) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  mongoc_client_pool_destroy(pool);
  mongoc_uri_destroy(uri);
  r.ops = ops.load();
  r.opsPerSec = secs > 0 ? static_cast<double>(r.ops) / secs : -1;
  return r;
}

#else  // without libmongoc

bool mongoc_available() noexcept {
  return false;
}
const char* mongoc_version() noexcept {
  return "";
}
MongocResult mongoc_ping(std::uint16_t, Seconds, std::size_t) {
  return {};
}
MongocResult mongoc_mix(std::uint16_t, int, Seconds) {
  return {};
}

#endif

}  // namespace varanus::bench
