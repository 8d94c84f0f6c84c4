// varanus-ping-bench — a closed-loop load generator: N connections, each
// sending OP_MSG {ping: 1} (or a find by _id) and waiting for the reply,
// for a fixed time. Reports requests per second and latency percentiles.
// Used to measure varanus-stub (docs/stub.md) and, later, the proxy.
//
//   varanus-ping-bench --connect 127.0.0.1:27017 [--connections 16]
//                      [--seconds 5] [--threads 2] [--command ping|find]
#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "varanus/wire/builder.hpp"
#include "varanus/wire/message.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

struct Config {
  std::string host = "127.0.0.1";
  std::string port = "27017";
  int connections = 16;
  int seconds = 5;
  int threads = 2;
  std::string command = "ping";
};

struct Results {
  std::mutex mu;
  std::vector<std::uint32_t> latenciesMicros;
  std::atomic<std::int64_t> errors{0};
};

varanus::wire::Frame make_request(const std::string& command, std::int32_t id) {
  bson_t* body = bson_new();
  if (command == "find") {
    BSON_APPEND_UTF8(body, "find", "bench");
    bson_t filter;
    BSON_APPEND_DOCUMENT_BEGIN(body, "filter", &filter);
    BSON_APPEND_INT32(&filter, "_id", 1);
    bson_append_document_end(body, &filter);
    BSON_APPEND_BOOL(body, "singleBatch", true);
  } else {
    BSON_APPEND_INT32(body, "ping", 1);
  }
  BSON_APPEND_UTF8(body, "$db", command == "find" ? "bench" : "admin");
  auto frame = varanus::wire::build_op_msg(id, 0, 0, varanus::wire::BsonView::of(body));
  bson_destroy(body);
  return frame;
}

asio::awaitable<void> client(tcp::endpoint ep, const Config& cfg, Clock::time_point end,
                             Results& results, int index) {
  tcp::socket socket(co_await asio::this_coro::executor);
  auto [cec] = co_await socket.async_connect(ep, nothrow);
  if (cec) {
    ++results.errors;
    co_return;
  }
  socket.set_option(tcp::no_delay(true));
  std::vector<std::uint32_t> local;
  local.reserve(200000);
  std::vector<std::uint8_t> reply(64 * 1024);
  std::int32_t id = index * 1'000'000;
  while (Clock::now() < end) {
    auto request = make_request(cfg.command, ++id);
    auto t0 = Clock::now();
    auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(request), nothrow);
    if (wec) break;
    auto [hec, hn] = co_await asio::async_read(socket, asio::buffer(reply.data(), 16), nothrow);
    if (hec) break;
    std::int32_t len = 0;
    std::memcpy(&len, reply.data(), 4);
    if (len < 16 || static_cast<std::size_t>(len) > reply.size()) break;
    auto [bec, bn] = co_await asio::async_read(
        socket, asio::buffer(reply.data() + 16, static_cast<std::size_t>(len) - 16), nothrow);
    if (bec) break;
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    local.push_back(static_cast<std::uint32_t>(micros));
  }
  if (Clock::now() < end) ++results.errors;
  std::lock_guard lock(results.mu);
  results.latenciesMicros.insert(results.latenciesMicros.end(), local.begin(), local.end());
}

bool parse(int argc, char** argv, Config& cfg) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    std::string v = argv[i + 1];
    auto num = [&](int& out) {
      return std::from_chars(v.data(), v.data() + v.size(), out).ec == std::errc();
    };
    if (k == "--connect") {
      auto colon = v.rfind(':');
      if (colon == std::string::npos) return false;
      cfg.host = v.substr(0, colon);
      cfg.port = v.substr(colon + 1);
    } else if (k == "--connections") {
      if (!num(cfg.connections)) return false;
    } else if (k == "--seconds") {
      if (!num(cfg.seconds)) return false;
    } else if (k == "--threads") {
      if (!num(cfg.threads)) return false;
    } else if (k == "--command") {
      cfg.command = v;
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && cfg.connections > 0 && cfg.threads > 0 && cfg.seconds > 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  if (!parse(argc, argv, cfg)) {
    std::fprintf(stderr,
                 "usage: %s --connect HOST:PORT [--connections N] [--seconds S] [--threads T] "
                 "[--command ping|find]\n",
                 argv[0]);
    return 2;
  }
  asio::io_context resolver_ctx;
  tcp::resolver resolver(resolver_ctx);
  auto endpoints = resolver.resolve(cfg.host, cfg.port);
  tcp::endpoint ep = *endpoints.begin();

  std::vector<std::unique_ptr<asio::io_context>> contexts;
  for (int i = 0; i < cfg.threads; ++i) contexts.push_back(std::make_unique<asio::io_context>(1));
  Results results;
  auto start = Clock::now();
  auto end = start + std::chrono::seconds(cfg.seconds);
  for (int c = 0; c < cfg.connections; ++c) {
    auto& ctx = *contexts[static_cast<std::size_t>(c) % contexts.size()];
    asio::co_spawn(ctx, client(ep, cfg, end, results, c), asio::detached);
  }
  std::vector<std::thread> threads;
  for (auto& ctx : contexts) threads.emplace_back([&ctx] { ctx->run(); });
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  auto& lat = results.latenciesMicros;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) -> unsigned {
    if (lat.empty()) return 0;
    return lat[std::min(lat.size() - 1,
                        static_cast<std::size_t>(p * static_cast<double>(lat.size())))];
  };
  std::printf(
      "{\"command\":\"%s\",\"connections\":%d,\"threads\":%d,\"seconds\":%.2f,\"requests\":%zu,"
      "\"requestsPerSecond\":%.0f,\"p50Micros\":%u,\"p99Micros\":%u,\"maxMicros\":%u,\"errors\":%"
      "lld}\n",
      cfg.command.c_str(), cfg.connections, cfg.threads, elapsed, lat.size(),
      static_cast<double>(lat.size()) / elapsed, pct(0.50), pct(0.99), lat.empty() ? 0 : lat.back(),
      static_cast<long long>(results.errors.load()));
  return results.errors.load() == 0 ? 0 : 1;
}
