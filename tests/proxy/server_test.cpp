// proxy::Server and Session behaviour over real sockets on 127.0.0.1 (port
// 0), in-process: a fake upstream (Asio, its own thread), the proxy (its own
// I/O threads) and a blocking client in the test thread.
#include "varanus/proxy/server.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "varanus/wire/builder.hpp"

using namespace varanus;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
using Bytes = std::vector<std::uint8_t>;

Bytes random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng());
  return out;
}

/// Waits until `pred` holds or `timeout` passes; returns pred().
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

struct NullOutput : monitor::EventOutput {
  void publish(monitor::Event&&) override {}
};

/// Collects events from every I/O thread.
struct RecordingOutput : monitor::EventOutput {
  std::mutex m;
  std::vector<monitor::Event> events;
  void publish(monitor::Event&& e) override {
    std::lock_guard lock(m);
    events.push_back(std::move(e));
  }
  std::vector<monitor::Event> snapshot() {
    std::lock_guard lock(m);
    return events;
  }
  bool has(monitor::EventType t) {
    std::lock_guard lock(m);
    for (const auto& e : events)
      if (e.type == t) return true;
    return false;
  }
};

/// A BSON document built with libbson, owned.
struct Doc {
  bson_t* b = bson_new();
  Doc() = default;
  Doc(const Doc&) = delete;
  ~Doc() { bson_destroy(b); }
  wire::BsonView view() const { return wire::BsonView::of(b); }
};

/// The little-endian int32 at `at`.
std::int32_t le32(const Bytes& b, std::size_t at) {
  return static_cast<std::int32_t>(
      static_cast<std::uint32_t>(b[at]) | static_cast<std::uint32_t>(b[at + 1]) << 8 |
      static_cast<std::uint32_t>(b[at + 2]) << 16 | static_cast<std::uint32_t>(b[at + 3]) << 24);
}

/// What one connection's inspector saw, shared with the test thread.
struct Seen {
  std::mutex m;
  Bytes fromClient, fromServer;
  bool opened = false;
  std::string closedReason;
  bool closed = false;
  monitor::ConnectionInfo info;
};

/// Records every byte and the close reason; optionally stops inspecting
/// (as a Tracker does on a decode error) after the first client bytes.
class RecordingInspector final : public proxy::Inspector {
 public:
  RecordingInspector(std::shared_ptr<Seen> seen, std::string stopWith)
      : seen_(std::move(seen)), stopWith_(std::move(stopWith)) {}
  void opened(monitor::Clock) override {
    std::lock_guard lock(seen_->m);
    seen_->opened = true;
  }
  void client_data(std::span<const std::uint8_t> b, monitor::Clock) override {
    std::lock_guard lock(seen_->m);
    seen_->fromClient.insert(seen_->fromClient.end(), b.begin(), b.end());
    if (!stopWith_.empty()) inspecting_ = false;
  }
  void server_data(std::span<const std::uint8_t> b, monitor::Clock) override {
    std::lock_guard lock(seen_->m);
    seen_->fromServer.insert(seen_->fromServer.end(), b.begin(), b.end());
  }
  void closed(std::string_view reason, monitor::Clock) override {
    std::lock_guard lock(seen_->m);
    seen_->closed = true;
    seen_->closedReason = std::string(reason);
  }
  bool inspecting() const noexcept override { return inspecting_; }
  std::string_view stop_reason() const noexcept override { return stopWith_; }
  // As a Tracker classifies its wire error (the code leads the reason here).
  monitor::StopCause stop_cause() const noexcept override {
    return stopWith_.find("length_too_large") != std::string::npos ? monitor::StopCause::oversized
                                                                   : monitor::StopCause::malformed;
  }

 private:
  std::shared_ptr<Seen> seen_;
  std::string stopWith_;
  bool inspecting_ = true;
};

/// An upstream on 127.0.0.1:0 running `handler` for each connection.
class FakeUpstream {
 public:
  using Handler = std::function<asio::awaitable<void>(tcp::socket)>;

  explicit FakeUpstream(Handler handler) : handler_(std::move(handler)) {
    acceptor_.open(tcp::v4());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ctx_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ctx_.run(); });
  }
  ~FakeUpstream() {
    ctx_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }

  /// Echoes everything; on EOF passes the half-close on after the echo.
  static asio::awaitable<void> echo(tcp::socket s) {
    std::vector<std::uint8_t> buf(64 * 1024);
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      if (n > 0) {
        auto [wec, w] = co_await asio::async_write(s, asio::buffer(buf.data(), n), use_tuple);
        if (wec) co_return;
      }
      if (ec == asio::error::eof) {
        error_code ignored;
        s.shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
      if (ec) co_return;
    }
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, s] = co_await acceptor_.async_accept(use_tuple);
      if (ec) co_return;
      ++accepted_;
      asio::co_spawn(ctx_, handler_(std::move(s)), asio::detached);
    }
  }

  Handler handler_;
  asio::io_context ctx_;
  tcp::acceptor acceptor_{ctx_};
  std::uint16_t port_ = 0;
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

/// The proxy under test, running on its own threads.
struct Proxy {
  monitor::Stats stats;
  NullOutput nullOut;
  std::mutex m;
  std::vector<std::shared_ptr<Seen>> seen;  // one per connection, in order of relay start
  std::vector<std::string> diagnostics;
  std::string stopInspectionWith;  // non-empty: inspectors stop at the first client bytes
  std::unique_ptr<proxy::Server> server;
  proxy::Endpoint bound;
  std::thread thread;
  std::atomic<bool> runReturned{false};

  explicit Proxy(std::uint16_t upstreamPort, unsigned threads = 2, std::string stopWith = {},
                 monitor::EventOutput* out = nullptr, proxy::InspectorFactory factory = {},
                 std::string upstreamHost = "127.0.0.1",
                 std::optional<std::chrono::microseconds> busyPoll = std::nullopt,
                 const std::function<void(proxy::ProxyConfig&)>& configure = {})
      : stopInspectionWith(std::move(stopWith)) {
    proxy::ProxyConfig cfg;
    cfg.listen = {"127.0.0.1", 0};
    cfg.upstream = {std::move(upstreamHost), upstreamPort};
    cfg.ioThreads = threads;
    cfg.connectTimeout = 2s;
    if (busyPoll) cfg.busyPoll = *busyPoll;
    if (configure) configure(cfg);
    if (!factory) {
      factory = [this](const proxy::InspectorContext& ctx) {
        auto s = std::make_shared<Seen>();
        s->info = *ctx.info;
        std::lock_guard lock(m);
        seen.push_back(s);
        return std::make_unique<RecordingInspector>(s, stopInspectionWith);
      };
    }
    server = std::make_unique<proxy::Server>(cfg, out ? *out : nullOut, stats, std::move(factory),
                                             [this](std::string_view line) {
                                               std::lock_guard lock(m);
                                               diagnostics.emplace_back(line);
                                             });
    bound = server->start();
    thread = std::thread([this] {
      server->run();
      runReturned = true;
    });
  }
  ~Proxy() {
    server->stop(0ms);
    thread.join();
  }
  std::shared_ptr<Seen> connection(std::size_t i) {
    std::lock_guard lock(m);
    return i < seen.size() ? seen[i] : nullptr;
  }
  std::vector<std::string> diags() {
    std::lock_guard lock(m);
    return diagnostics;
  }
  std::int64_t stat(std::string_view name) const { return stats.find(name); }

  /// The busy-poll counters, read every 5 ms until `done(hits, misses)` or
  /// `tries` reads: the worker hands them to Stats only before it sleeps.
  template <class Done>
  std::pair<std::int64_t, std::int64_t> busy_polls_when(Done done, int tries) const {
    std::int64_t hits = 0, misses = 0;
    for (int i = 0; i < tries && !done(hits, misses); ++i) {
      std::this_thread::sleep_for(5ms);
      hits = stat("varanus_busy_poll_hits_total");
      misses = stat("varanus_busy_poll_misses_total");
    }
    return {hits, misses};
  }
};

/// A blocking client in the test thread.
struct Client {
  asio::io_context ctx;
  tcp::socket s{ctx};
  explicit Client(std::uint16_t port) {
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    s.set_option(tcp::no_delay(true));
  }
  void send(const Bytes& b) { asio::write(s, asio::buffer(b)); }
  Bytes receive(std::size_t n) {
    Bytes out(n);
    asio::read(s, asio::buffer(out));
    return out;
  }
  /// Reads until EOF or error; returns what came and the final error.
  std::pair<Bytes, error_code> drain() {
    Bytes out;
    std::vector<std::uint8_t> buf(64 * 1024);
    for (;;) {
      error_code ec;
      std::size_t n = s.read_some(asio::buffer(buf), ec);
      out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      if (ec) return {out, ec};
    }
  }
};

}  // namespace

TEST_CASE("bytes arrive unchanged both ways, whatever they are") {
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);

  Bytes sent;
  // Not MongoDB at all: the proxy must relay it untouched (fail open).
  for (std::uint32_t i = 0; i < 20; ++i) {
    Bytes chunk = random_bytes(1 + (i * 7919) % 100'000, i);
    client.send(chunk);
    CHECK(client.receive(chunk.size()) == chunk);
    sent.insert(sent.end(), chunk.begin(), chunk.end());
  }
  client.s.shutdown(tcp::socket::shutdown_send);
  auto [rest, ec] = client.drain();
  CHECK(rest.empty());
  CHECK(ec == asio::error::eof);

  REQUIRE(eventually([&] {
    auto c = proxy.connection(0);
    std::lock_guard lock(c->m);
    return c->closed;
  }));
  auto seen = proxy.connection(0);
  std::lock_guard lock(seen->m);
  CHECK(seen->opened);
  CHECK(seen->fromClient == sent);  // the inspector saw exactly what was relayed
  CHECK(seen->fromServer == sent);
  CHECK(seen->closedReason == "client closed");
  CHECK(seen->info.connectionId == 1);
  CHECK(seen->info.server == "127.0.0.1:" + std::to_string(upstream.port()));
  CHECK(seen->info.client.rfind("127.0.0.1:", 0) == 0);
  CHECK(proxy.stat("varanus_client_bytes_total") == static_cast<std::int64_t>(sent.size()));
  CHECK(proxy.stat("varanus_server_bytes_total") == static_cast<std::int64_t>(sent.size()));
  CHECK(proxy.stat("varanus_connections_total") == 1);
  CHECK(eventually([&] { return proxy.stat("varanus_connections_active") == 0; }));
}

TEST_CASE("a 20 MB message is relayed intact") {
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);

  Bytes big = random_bytes(20'000'000, 42);
  // A plausible header: messageLength = the whole thing, OP_MSG.
  const std::uint32_t len = static_cast<std::uint32_t>(big.size());
  for (int i = 0; i < 4; ++i)
    big[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(len >> (8 * i));
  // Send and receive concurrently: 20 MB does not fit in socket buffers.
  std::thread writer([&] { client.send(big); });
  Bytes back = client.receive(big.size());
  writer.join();
  CHECK(back == big);
}

TEST_CASE("busy polling: in a ping-pong the I/O thread polls instead of sleeping, 0 turns it off") {
  FakeUpstream up(FakeUpstream::echo);
  for (const auto window : {2000us, 0us}) {
    CAPTURE(window.count());
    Proxy p(up.port(), 1, {}, nullptr, {}, "127.0.0.1", window);
    Client c(p.bound.port);
    Bytes msg(300);
    constexpr int kRounds = 400;
    int intact = 0;
    for (int i = 0; i < kRounds; ++i) {
      for (std::size_t k = 0; k < msg.size(); ++k) msg[k] = static_cast<std::uint8_t>(i + k);
      c.send(msg);
      intact += c.receive(msg.size()) == msg;
    }
    CHECK(intact == kRounds);
    // Counts reach Stats before the worker sleeps: after the last reply it
    // polls for the window in vain (a miss), flushes, and sleeps. With no
    // window there is nothing to wait for: four reads, 20 ms.
    const bool polling = window.count() > 0;
    const auto [hits, misses] =
        p.busy_polls_when([&](auto, auto m) { return polling && m > 0; }, polling ? 100 : 4);
    if (polling) {
      // Every reply and request comes well within 2 ms: nearly every wait
      // ends in the poll (the first few sleep, until sleeps proved short).
      CHECK(hits >= kRounds / 2);
      CHECK(misses < hits);
    } else {
      CHECK(hits == 0);
      CHECK(misses == 0);
    }
  }
}

TEST_CASE("busy polling: the counts reach /metrics as soon as the proxy goes quiet") {
  FakeUpstream up(FakeUpstream::echo);
  Proxy p(up.port(), 1, {}, nullptr, {}, "127.0.0.1", 2000us);
  Client c(p.bound.port);
  const Bytes msg(100, 3);
  // A dozen round trips: far fewer batches than any periodic flush would wait for.
  for (int i = 0; i < 12; ++i) {
    c.send(msg);
    CHECK(c.receive(msg.size()) == msg);
  }
  // After the last reply the worker polls 2 ms in vain (a miss), flushes
  // the counts and sleeps.
  const auto [hits, misses] =
      p.busy_polls_when([](auto h, auto m) { return h >= 6 && m >= 1; }, 200);
  CHECK(hits >= 6);
  CHECK(misses >= 1);
}

TEST_CASE("busy polling: a client that pauses between requests never makes the proxy poll") {
  FakeUpstream up(FakeUpstream::echo);
  Proxy p(up.port(), 1, {}, nullptr, {}, "127.0.0.1", 1000us);
  Client c(p.bound.port);
  const Bytes msg(200, 7);
  for (int i = 0; i < 100; ++i) {
    c.send(msg);
    CHECK(c.receive(msg.size()) == msg);
    std::this_thread::sleep_for(3ms);  // longer than the window
  }
  // The reply comes within the window, the next request does not: never two
  // short waits in a row, so no poll (a stray pair at connection set-up at most).
  CHECK(p.stat("varanus_busy_poll_hits_total") + p.stat("varanus_busy_poll_misses_total") <= 4);
}

TEST_CASE("half-close is passed on after pending bytes are flushed") {
  // The upstream reads until EOF, then answers with everything it got and
  // "bye", then closes: only works if the client's EOF reached it while the
  // client can still read.
  FakeUpstream upstream([](tcp::socket s) -> asio::awaitable<void> {
    Bytes got;
    std::vector<std::uint8_t> buf(4096);
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      if (ec) break;
    }
    const std::string bye = "bye";
    got.insert(got.end(), bye.begin(), bye.end());
    co_await asio::async_write(s, asio::buffer(got), use_tuple);
    error_code ignored;
    s.shutdown(tcp::socket::shutdown_send, ignored);
  });
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);
  Bytes msg = random_bytes(300'000, 7);
  client.send(msg);
  client.s.shutdown(tcp::socket::shutdown_send);
  auto [back, ec] = client.drain();
  CHECK(ec == asio::error::eof);
  Bytes expected = msg;
  expected.insert(expected.end(), {'b', 'y', 'e'});
  CHECK(back == expected);
  REQUIRE(eventually([&] {
    auto c = proxy.connection(0);
    std::lock_guard lock(c->m);
    return c->closed;
  }));
  auto seen = proxy.connection(0);
  std::lock_guard lock(seen->m);
  CHECK(seen->closedReason == "client closed");
}

TEST_CASE("the upstream closing first half-closes the client") {
  FakeUpstream upstream([](tcp::socket s) -> asio::awaitable<void> {
    const std::string hi = "hello";
    co_await asio::async_write(s, asio::buffer(hi), use_tuple);
    error_code ignored;
    s.shutdown(tcp::socket::shutdown_send, ignored);
    // Keep reading until the client is gone.
    std::vector<std::uint8_t> buf(4096);
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      if (ec) co_return;
    }
  });
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);
  auto [back, ec] = client.drain();
  CHECK(std::string(back.begin(), back.end()) == "hello");
  CHECK(ec == asio::error::eof);
  client.s.close();
  REQUIRE(eventually([&] {
    auto c = proxy.connection(0);
    std::lock_guard lock(c->m);
    return c->closed;
  }));
  auto seen = proxy.connection(0);
  std::lock_guard lock(seen->m);
  CHECK(seen->closedReason == "upstream closed");
}

TEST_CASE("an upstream reset closes the client") {
  FakeUpstream upstream([](tcp::socket s) -> asio::awaitable<void> {
    std::vector<std::uint8_t> buf(16);
    co_await s.async_read_some(asio::buffer(buf), use_tuple);
    s.set_option(asio::socket_base::linger(true, 0));  // close() sends RST
    s.close();
  });
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);
  client.send(Bytes{1, 2, 3});
  auto [back, ec] = client.drain();
  CHECK(back.empty());
  CHECK(ec);
  REQUIRE(eventually([&] {
    auto c = proxy.connection(0);
    std::lock_guard lock(c->m);
    return c->closed;
  }));
  auto seen = proxy.connection(0);
  std::lock_guard lock(seen->m);
  CHECK(seen->closedReason.rfind("upstream reset: ", 0) == 0);
}

TEST_CASE("an unreachable upstream closes the client at once, with one diagnostic") {
  std::uint16_t deadPort = 0;
  {
    asio::io_context ctx;
    tcp::acceptor a(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    deadPort = a.local_endpoint().port();
  }  // closed: connecting there is refused
  Proxy proxy(deadPort);
  const auto t0 = std::chrono::steady_clock::now();
  Client client(proxy.bound.port);
  auto [back, ec] = client.drain();
  CHECK(back.empty());
  CHECK(ec);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(eventually([&] { return proxy.stat("varanus_upstream_connect_failures_total") == 1; }));
  CHECK(eventually([&] { return proxy.stat("varanus_connections_active") == 0; }));
  auto d = proxy.diags();
  REQUIRE(d.size() == 1);
  CHECK(d[0].find("varanus: upstream 127.0.0.1:" + std::to_string(deadPort) + " unreachable: ") ==
        0);
  CHECK(d[0].find("(client 127.0.0.1:") != std::string::npos);
  CHECK(proxy.connection(0) == nullptr);  // no relay, no inspector
}

TEST_CASE("many concurrent connections are relayed independently") {
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port(), 2);
  constexpr int kClients = 64;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<Client>(proxy.bound.port));
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto& c = *clients[static_cast<std::size_t>(i)];
      bool good = true;
      for (std::uint32_t round = 0; round < 10; ++round) {
        Bytes b = random_bytes(1000 + static_cast<std::size_t>(i) * 10,
                               static_cast<std::uint32_t>(i) * 100 + round);
        c.send(b);
        good = good && c.receive(b.size()) == b;
      }
      if (good) ++ok;
      c.s.close();
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == kClients);
  CHECK(proxy.stat("varanus_connections_total") == kClients);
  CHECK(eventually([&] { return proxy.server->active_connections() == 0; }));
  CHECK(upstream.accepted() == kClients);
  // Connection ids are unique, from 1.
  std::vector<std::uint64_t> ids;
  for (std::size_t i = 0; i < kClients; ++i) ids.push_back(proxy.connection(i)->info.connectionId);
  std::sort(ids.begin(), ids.end());
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == i + 1);
}

TEST_CASE("stop lets an open connection finish within the grace period") {
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);
  client.send(Bytes{1});
  CHECK(client.receive(1) == Bytes{1});

  const auto t0 = std::chrono::steady_clock::now();
  proxy.server->stop(10s);
  // New connections are refused once the acceptor is closed...
  CHECK(eventually([&] {
    try {
      Client late(proxy.bound.port);
      return false;
    } catch (const boost::system::system_error&) {
      return true;
    }
  }));
  // ...while the open one still relays.
  client.send(Bytes{2, 3});
  CHECK(client.receive(2) == Bytes{2, 3});
  CHECK_FALSE(proxy.runReturned.load());
  client.s.shutdown(tcp::socket::shutdown_send);
  client.drain();
  // Its end lets run() return at once, long before the grace period.
  CHECK(eventually([&] { return proxy.runReturned.load(); }, 3s));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("stop closes connections still open when the grace period ends") {
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port());
  Client client(proxy.bound.port);
  client.send(Bytes{1});
  CHECK(client.receive(1) == Bytes{1});
  const auto t0 = std::chrono::steady_clock::now();
  proxy.server->stop(300ms);
  auto [back, ec] = client.drain();
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(ec);
  CHECK(waited >= 250ms);
  CHECK(waited < 3s);
  CHECK(eventually([&] { return proxy.runReturned.load(); }));
  auto seen = proxy.connection(0);
  std::lock_guard lock(seen->m);
  CHECK(seen->closed);
  CHECK(seen->closedReason == "proxy stopped: grace period over");
}

TEST_CASE("stop with no connection open returns at once") {
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port());
  const auto t0 = std::chrono::steady_clock::now();
  proxy.server->stop(10s);
  CHECK(eventually([&] { return proxy.runReturned.load(); }, 2s));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

TEST_CASE("inspection stopping is counted and logged once, and relaying goes on") {
  FakeUpstream upstream(FakeUpstream::echo);
  SUBCASE("decode error") {
    Proxy proxy(upstream.port(), 1, "client message: invalid_bson at offset 21: bad length");
    Client client(proxy.bound.port);
    for (std::uint8_t i = 0; i < 5; ++i) {
      client.send(Bytes{i, i});
      CHECK(client.receive(2) == Bytes{i, i});
    }
    CHECK(proxy.stat("varanus_decode_errors_total") == 1);
    CHECK(proxy.stat("varanus_oversized_frames_total") == 0);
    auto d = proxy.diags();
    REQUIRE(d.size() == 1);
    CHECK(d[0] ==
          "varanus: connection 1 (client " + proxy.connection(0)->info.client +
              "): inspection stopped, relaying goes on: client message: invalid_bson at offset 21: "
              "bad length");
  }
  SUBCASE("oversized frame") {
    Proxy proxy(upstream.port(), 1, "client framing: length_too_large at offset 0: 60000000");
    Client client(proxy.bound.port);
    client.send(Bytes{9});
    CHECK(client.receive(1) == Bytes{9});
    CHECK(proxy.stat("varanus_oversized_frames_total") == 1);
    CHECK(proxy.stat("varanus_decode_errors_total") == 0);
    CHECK(proxy.diags().size() == 1);
  }
}

// ---- with the real Tracker ----------------------------------------------------

namespace {

/// A MongoDB-ish upstream: answers every frame with an OP_MSG {ok: 1}
/// whose responseTo is the request's requestID.
asio::awaitable<void> ok_server(tcp::socket s) {
  Bytes buf;
  std::vector<std::uint8_t> chunk(64 * 1024);
  std::int32_t nextId = 1000;
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
    buf.insert(buf.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
    while (buf.size() >= 16 && buf.size() >= static_cast<std::size_t>(le32(buf, 0))) {
      const auto len = static_cast<std::size_t>(le32(buf, 0));
      const std::int32_t requestId = le32(buf, 4);
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(len));
      Doc reply;
      BSON_APPEND_DOUBLE(reply.b, "ok", 1.0);
      auto frame = wire::build_op_msg(nextId++, requestId, 0, reply.view());
      co_await asio::async_write(s, asio::buffer(frame), use_tuple);
    }
    if (ec) co_return;
  }
}

wire::Frame ping(std::int32_t requestId) {
  Doc cmd;
  BSON_APPEND_INT32(cmd.b, "ping", 1);
  BSON_APPEND_UTF8(cmd.b, "$db", "admin");
  return wire::build_op_msg(requestId, 0, 0, cmd.view());
}

}  // namespace

TEST_CASE("a ping relayed through the proxy becomes a started + succeeded pair") {
  FakeUpstream upstream(ok_server);
  RecordingOutput out;
  Proxy proxy(upstream.port(), 2, {}, &out, proxy::tracker_factory());
  {
    Client client(proxy.bound.port);
    for (std::int32_t id = 1; id <= 3; ++id) {
      auto request = ping(id);
      client.send(request);
      Bytes header = client.receive(16);
      CHECK(le32(header, 8) == id);  // responseTo
      client.receive(static_cast<std::size_t>(le32(header, 0)) - 16);
    }
  }
  REQUIRE(eventually([&] { return out.has(monitor::EventType::connectionClosed); }));
  auto events = out.snapshot();
  REQUIRE(events.size() == 8);  // opened, 3 x (started, succeeded), closed
  CHECK(events.front().type == monitor::EventType::connectionOpened);
  CHECK(events.back().type == monitor::EventType::connectionClosed);
  CHECK(events.back().message == "client closed");
  for (std::size_t i = 1; i < 7; i += 2) {
    const auto& started = events[i];
    const auto& succeeded = events[i + 1];
    CHECK(started.type == monitor::EventType::commandStarted);
    CHECK(succeeded.type == monitor::EventType::commandSucceeded);
    CHECK(started.commandName == "ping");
    CHECK(started.databaseName == "admin");
    CHECK(started.requestId == static_cast<std::int32_t>(i / 2 + 1));
    CHECK(succeeded.requestId == started.requestId);
    CHECK(succeeded.durationMicros >= 0);
    REQUIRE(started.connection);
    CHECK(started.connection->connectionId == 1);
    CHECK(started.connection->server == "127.0.0.1:" + std::to_string(upstream.port()));
  }
  CHECK(proxy.stat("varanus_commands_started_total") == 3);
}

TEST_CASE("a request pending when the client goes fails with the close reason") {
  // An upstream that never answers.
  FakeUpstream upstream([](tcp::socket s) -> asio::awaitable<void> {
    std::vector<std::uint8_t> buf(4096);
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      if (ec) co_return;
    }
  });
  RecordingOutput out;
  Proxy proxy(upstream.port(), 1, {}, &out, proxy::tracker_factory());
  {
    Client client(proxy.bound.port);
    client.send(ping(42));
    REQUIRE(eventually([&] { return out.has(monitor::EventType::commandStarted); }));
  }
  REQUIRE(eventually([&] { return out.has(monitor::EventType::connectionClosed); }));
  auto events = out.snapshot();
  bool failed = false;
  for (const auto& e : events) {
    if (e.type == monitor::EventType::commandFailed) {
      failed = true;
      CHECK(e.requestId == 42);
      CHECK(e.networkFailure());
      CHECK(e.message.find("client closed") != std::string::npos);
    }
  }
  CHECK(failed);
}

TEST_CASE("undecodable and oversized traffic is relayed, counted and logged once") {
  FakeUpstream upstream(FakeUpstream::echo);
  RecordingOutput out;
  SUBCASE("garbage") {
    Proxy proxy(upstream.port(), 1, {}, &out, proxy::tracker_factory());
    Client client(proxy.bound.port);
    Bytes junk = {5, 0, 0, 0, 'n', 'o', 'p', 'e'};  // messageLength 5: not a frame
    for (int i = 0; i < 3; ++i) {
      client.send(junk);
      CHECK(client.receive(junk.size()) == junk);
    }
    CHECK(proxy.stat("varanus_decode_errors_total") == 1);
    CHECK(proxy.stat("varanus_oversized_frames_total") == 0);
    auto d = proxy.diags();
    REQUIRE(d.size() == 1);
    CHECK(d[0].find("varanus: connection 1 (client 127.0.0.1:") == 0);
    CHECK(d[0].find("inspection stopped, relaying goes on: ") != std::string::npos);
  }
  SUBCASE("a frame over the maximum size") {
    Proxy proxy(upstream.port(), 1, {}, &out, proxy::tracker_factory());
    Client client(proxy.bound.port);
    Bytes big = random_bytes(1000, 3);
    const std::uint32_t claimed = 60'000'000;  // over the 48 MB default
    for (int i = 0; i < 4; ++i)
      big[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(claimed >> (8 * i));
    client.send(big);
    CHECK(client.receive(big.size()) == big);
    CHECK(proxy.stat("varanus_oversized_frames_total") == 1);
    CHECK(proxy.stat("varanus_decode_errors_total") == 0);
    CHECK(proxy.diags().size() == 1);
  }
}

TEST_CASE("an upstream that speaks first and closes at once is relayed, every time") {
  // The upstream's bytes and FIN may arrive in the very event that tells the
  // proxy its connect completed: they must not be lost (edge-triggered).
  FakeUpstream upstream([](tcp::socket s) -> asio::awaitable<void> {
    const std::string hi = "hello";
    co_await asio::async_write(s, asio::buffer(hi), use_tuple);
    error_code ignored;
    s.shutdown(tcp::socket::shutdown_send, ignored);
    std::vector<std::uint8_t> buf(64);
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      if (ec) co_return;
    }
  });
  Proxy proxy(upstream.port(), 1);
  for (int i = 0; i < 200; ++i) {
    Client client(proxy.bound.port);
    auto [back, ec] = client.drain();
    REQUIRE(std::string(back.begin(), back.end()) == "hello");
    REQUIRE(ec == asio::error::eof);
  }
  CHECK(eventually([&] { return proxy.server->active_connections() == 0; }));
}

TEST_CASE("an upstream given by name is resolved and its addresses tried in turn") {
  // "localhost" may resolve to ::1 before 127.0.0.1, where nothing listens
  // on this port: that address is refused and the next one is used.
  FakeUpstream upstream(FakeUpstream::echo);
  Proxy proxy(upstream.port(), 2, {}, nullptr, {}, "localhost");
  for (int i = 0; i < 5; ++i) {
    Client client(proxy.bound.port);
    const Bytes b = random_bytes(1000, static_cast<std::uint32_t>(i));
    client.send(b);
    CHECK(client.receive(b.size()) == b);
  }
  CHECK(proxy.stat("varanus_upstream_connect_failures_total") == 0);
  CHECK(upstream.accepted() == 5);
  auto c = proxy.connection(0);
  REQUIRE(c);
  CHECK(c->info.server == "127.0.0.1:" + std::to_string(upstream.port()));
}

// ---- in front of a replica set: a listener per member -------------------------

namespace {

std::string first_key_of(wire::BsonView doc) {
  bson_t b;
  bson_iter_t it;
  if (!doc.init_static(&b) || !bson_iter_init(&it, &b) || !bson_iter_next(&it)) return {};
  return bson_iter_key(&it);
}

std::string as_json(wire::BsonView doc) {
  bson_t b;
  if (!doc.init_static(&b)) return {};
  char* json = bson_as_relaxed_extended_json(&b, nullptr);
  std::string out = json;
  bson_free(json);
  return out;
}

/// A replica-set member: answers a hello with the set's hosts (and `me`),
/// any other command with {ok: 1, hosts: [...]} (not a hello reply: must
/// pass unchanged).
struct Member {
  std::vector<std::string>* hosts;  // the whole set, shared
  std::string me;
};

FakeUpstream::Handler member_server(std::shared_ptr<Member> m) {
  return [m](tcp::socket s) -> asio::awaitable<void> {
    Bytes buf;
    std::vector<std::uint8_t> chunk(64 * 1024);
    std::int32_t nextId = 5000;
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), use_tuple);
      buf.insert(buf.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
      while (buf.size() >= 16 && buf.size() >= static_cast<std::size_t>(le32(buf, 0))) {
        const auto len = static_cast<std::size_t>(le32(buf, 0));
        Bytes frame(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(len));
        buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(len));
        auto msg = wire::decode(frame);
        bool hello = false;
        if (msg.ok()) {
          if (const auto* op = std::get_if<wire::OpMsg>(&msg->body)) {
            const std::string first = first_key_of(op->body);
            hello = first == "hello" || first == "isMaster";
          }
        }
        Doc reply;
        if (hello) BSON_APPEND_BOOL(reply.b, "isWritablePrimary", m->me == m->hosts->front());
        bson_t arr;
        BSON_APPEND_ARRAY_BEGIN(reply.b, "hosts", &arr);
        for (std::size_t i = 0; i < m->hosts->size(); ++i)
          BSON_APPEND_UTF8(&arr, std::to_string(i).c_str(), (*m->hosts)[i].c_str());
        bson_append_array_end(reply.b, &arr);
        BSON_APPEND_UTF8(reply.b, "setName", "rs0");
        BSON_APPEND_UTF8(reply.b, "me", m->me.c_str());
        BSON_APPEND_DOUBLE(reply.b, "ok", 1.0);
        auto out = wire::build_op_msg(nextId++, le32(frame, 4), 0, reply.view());
        co_await asio::async_write(s, asio::buffer(out), use_tuple);
      }
      if (ec) co_return;
    }
  };
}

wire::Frame command_frame(std::int32_t requestId, const char* name) {
  Doc cmd;
  BSON_APPEND_INT32(cmd.b, name, 1);
  BSON_APPEND_UTF8(cmd.b, "$db", "admin");
  return wire::build_op_msg(requestId, 0, 0, cmd.view());
}

/// Reads one whole reply frame and decodes its body.
std::string reply_json(Client& c) {
  Bytes head = c.receive(16);
  Bytes rest = c.receive(static_cast<std::size_t>(le32(head, 0)) - 16);
  head.insert(head.end(), rest.begin(), rest.end());
  auto m = wire::decode(head);
  REQUIRE(m.ok());
  return as_json(std::get<wire::OpMsg>(m->body).body);
}

}  // namespace

TEST_CASE("members: hello replies name the listeners, a named member gets one first") {
  std::vector<std::string> hosts(2);
  auto a = std::make_shared<Member>(Member{&hosts, {}});
  auto b = std::make_shared<Member>(Member{&hosts, {}});
  FakeUpstream upA(member_server(a)), upB(member_server(b));
  hosts[0] = a->me = "127.0.0.1:" + std::to_string(upA.port());
  hosts[1] = b->me = "127.0.0.1:" + std::to_string(upB.port());
  Proxy proxy(upA.port(), 2, {}, nullptr, {}, "127.0.0.1", std::nullopt,
              [&](proxy::ProxyConfig& cfg) {
                cfg.members.enabled = true;
                cfg.members.seeds = {proxy::Endpoint{"127.0.0.1", upA.port()}};
                cfg.members.rewriteHello = true;
              });
  // The seed's listener is the bound one, said on its line.
  const std::string viaA = "127.0.0.1:" + std::to_string(proxy.bound.port);
  CHECK(proxy.diags().at(0) == "varanus: member " + hosts[0] + " via " + viaA);
  CHECK(proxy.server->member_addresses().size() == 1);

  // Several clients at once on both I/O threads, the hello sent in pieces.
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int k = 0; k < 6; ++k) {
    clients.emplace_back([&, k] {
      Client c(proxy.bound.port);
      const wire::Frame hello = command_frame(10 + k, "hello");
      c.send(Bytes(hello.begin(), hello.begin() + 7));
      c.send(Bytes(hello.begin() + 7, hello.end()));
      const std::string r = reply_json(c);
      // A non-hello reply naming members passes as the member sent it.
      c.send(command_frame(20 + k, "ping"));
      const std::string p = reply_json(c);
      if (r.find(hosts[0]) == std::string::npos && r.find(hosts[1]) == std::string::npos &&
          r.find("\"me\" : \"" + viaA + "\"") != std::string::npos &&
          p.find(hosts[0]) != std::string::npos && p.find(hosts[1]) != std::string::npos)
        ++good;
    });
  }
  for (auto& t : clients) t.join();
  CHECK(good == 6);
  CHECK(proxy.stat("varanus_hello_rewrites_total") == 6);

  // B got its listener before the first reply naming it was forwarded.
  const auto map = proxy.server->member_addresses();
  REQUIRE(map.size() == 2);
  const std::string viaB = map.at(hosts[1]);
  CHECK(viaB != viaA);
  auto lines = proxy.diags();
  CHECK(std::count(lines.begin(), lines.end(), "varanus: member " + hosts[1] + " via " + viaB) ==
        1);
  // ... and reaches B: its `me` comes back as B's listener.
  const auto portB = static_cast<std::uint16_t>(std::stoi(viaB.substr(viaB.rfind(':') + 1)));
  Client cb(portB);
  cb.send(command_frame(1, "isMaster"));
  const std::string rb = reply_json(cb);
  CHECK(rb.find("\"me\" : \"" + viaB + "\"") != std::string::npos);
  CHECK(upB.accepted() == 1);

  // B leaves the set: its listener stops accepting; the open connection goes on.
  proxy.server->remove_member(hosts[1]);
  REQUIRE(eventually([&] {
    asio::io_context ctx;
    tcp::socket probe(ctx);
    error_code ec;
    probe.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), portB), ec);
    return static_cast<bool>(ec);
  }));
  cb.send(command_frame(2, "ping"));
  CHECK(reply_json(cb).find(hosts[1]) != std::string::npos);
}
