// varanus's own topology monitor (see the header). Boost.Asio coroutines
// on one io_context and thread: two per server (the checks, and the RTT
// connection while the checks stream), all state touched on that thread
// only, except the description snapshot (a mutex).
#include "varanus/proxy/topology_monitor.hpp"

#include <bson/bson.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "varanus/monitor/server_check.hpp"
#include "varanus/wire/builder.hpp"
#include "varanus/wire/message.hpp"

#ifndef VARANUS_VERSION
#error "VARANUS_VERSION is set by src/proxy/CMakeLists.txt from the project version"
#endif

namespace varanus::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace sdam = monitor::sdam;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
/// A hello reply is a few hundred bytes; anything past this is not one.
constexpr std::uint32_t kMaxReply = 16 * 1024 * 1024;

microseconds since(Clock::time_point t0) {
  return duration_cast<microseconds>(Clock::now() - t0);
}

/// {hello: 1, helloOk: true, client: {...}, $db: "admin"}: the handshake.
wire::BsonBytes handshake_hello(const std::string& appName) {
  bson_t b, client, app, driver, os;
  bson_init(&b);
  bson_append_int32(&b, "hello", -1, 1);
  bson_append_bool(&b, "helloOk", -1, true);
  bson_append_document_begin(&b, "client", -1, &client);
  bson_append_document_begin(&client, "application", -1, &app);
  bson_append_utf8(&app, "name", -1, appName.c_str(), -1);
  bson_append_document_end(&client, &app);
  bson_append_document_begin(&client, "driver", -1, &driver);
  bson_append_utf8(&driver, "name", -1, "varanus", -1);
  bson_append_utf8(&driver, "version", -1, VARANUS_VERSION, -1);
  bson_append_document_end(&client, &driver);
  bson_append_document_begin(&client, "os", -1, &os);
  bson_append_utf8(&os, "type", -1, "Linux", -1);
  bson_append_document_end(&client, &os);
  bson_append_utf8(&client, "platform", -1, "varanus topology monitor (Boost.Asio)", -1);
  bson_append_document_end(&b, &client);
  bson_append_utf8(&b, "$db", -1, "admin", -1);
  const std::uint8_t* p = bson_get_data(&b);
  wire::BsonBytes out(p, p + b.len);
  bson_destroy(&b);
  return out;
}

/// {hello: 1, $db: "admin"}: the RTT connection's probe.
wire::BsonBytes plain_hello() {
  bson_t b;
  bson_init(&b);
  bson_append_int32(&b, "hello", -1, 1);
  bson_append_utf8(&b, "$db", -1, "admin", -1);
  const std::uint8_t* p = bson_get_data(&b);
  wire::BsonBytes out(p, p + b.len);
  bson_destroy(&b);
  return out;
}

/// Closes a connection when an operation outlives its deadline. The timer's
/// handler may run after the operation is over (it was already queued):
/// `done` makes it a no-op then.
class Watchdog {
 public:
  Watchdog(asio::any_io_executor ex, milliseconds timeout, std::function<void()> onExpiry)
      : state_(std::make_shared<State>()), timer_(std::make_shared<asio::steady_timer>(ex)) {
    timer_->expires_after(timeout);
    timer_->async_wait([state = state_, timer = timer_,
                        onExpiry = std::move(onExpiry)](boost::system::error_code ec) {
      if (ec || state->done) return;
      state->fired = true;
      onExpiry();
    });
  }
  ~Watchdog() {
    state_->done = true;
    timer_->cancel();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  bool fired() const noexcept { return state_->fired; }

 private:
  struct State {
    bool done = false;
    bool fired = false;
  };
  std::shared_ptr<State> state_;
  std::shared_ptr<asio::steady_timer> timer_;
};

struct Reply {
  std::optional<std::string> error;  ///< why there is no reply
  wire::BsonBytes body;
  bool moreToCome = false;
};

/// What one monitored server needs between checks.
struct ServerMonitor {
  ServerMonitor(asio::io_context& ioc, std::string addr, milliseconds heartbeat, bool streamingOn)
      : address(std::move(addr)),
        check(address, heartbeat, streamingOn),
        sock(ioc),
        rttSock(ioc),
        resolver(ioc),
        rttResolver(ioc),
        wait(ioc),
        rttWait(ioc) {}

  std::string address;
  sdam::ServerCheck check;
  tcp::socket sock;     // the checks' connection
  tcp::socket rttSock;  // the RTT connection (while streaming)
  tcp::resolver resolver;
  tcp::resolver rttResolver;
  asio::steady_timer wait;     // between checks
  asio::steady_timer rttWait;  // between RTT probes
  bool stopped = false;
  bool moreToCome = false;  // the server streams the next reply unasked
  bool streaming = false;   // an awaitable hello is out on `sock`
  std::int32_t nextRequestId = 1;

  void cancel() {
    stopped = true;
    boost::system::error_code ignored;
    sock.close(ignored);
    rttSock.close(ignored);
    resolver.cancel();
    rttResolver.cancel();
    wait.cancel();
    rttWait.cancel();
  }
};

std::string describe(const boost::system::error_code& ec) {
  if (ec == asio::error::eof) return "connection closed by the server";
  return ec.message();
}

}  // namespace

struct TopologyMonitor::Impl {
  explicit Impl(TopologyMonitorConfig c)
      : cfg(std::move(c)), topology(settings_of(cfg)), snapshot(topology.description()) {}

  static sdam::Settings settings_of(const TopologyMonitorConfig& c) {
    sdam::Settings s;
    for (const auto& ep : c.seeds) s.seeds.push_back(ep.to_string());
    s.setName = c.setName;
    s.directConnection = c.directConnection;
    return s;
  }

  TopologyMonitorConfig cfg;
  std::function<void(const sdam::TopologyEvent&)> onEvent;
  std::function<void(const std::string&)> onOpened;
  std::function<void(const std::string&)> onClosed;
  std::function<sdam::ViaMap()> viaFn;

  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  bool started = false;
  bool stopRequested = false;
  std::mutex lifecycle;  // start() / stop()

  // Monitor thread only.
  sdam::Topology topology;
  std::map<std::string, std::shared_ptr<ServerMonitor>> monitors;
  bool stopping = false;

  mutable std::mutex snapMu;
  sdam::TopologyDescription snapshot;

  sdam::ViaMap via() const { return viaFn ? viaFn() : sdam::ViaMap{}; }

  void publish(const sdam::TopologyEvent& ev) {
    if (!onEvent) return;
    try {
      onEvent(ev);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "varanus: topology event handler failed on %s: %s\n", ev.name.c_str(),
                   e.what());
    } catch (...) {
      std::fprintf(stderr, "varanus: topology event handler failed on %s\n", ev.name.c_str());
    }
  }

  void notify(const std::function<void(const std::string&)>& f, const std::string& address) {
    if (!f) return;
    try {
      f(address);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "varanus: topology server handler failed for %s: %s\n", address.c_str(),
                   e.what());
    } catch (...) {
      std::fprintf(stderr, "varanus: topology server handler failed for %s\n", address.c_str());
    }
  }

  void refresh_snapshot() {
    sdam::TopologyDescription td = topology.description();
    for (auto& [address, sd] : td.servers) {
      auto it = monitors.find(address);
      if (it != monitors.end() && sd.type != sdam::ServerType::Unknown)
        sd.roundTripTime = it->second->check.round_trip_time();
    }
    std::lock_guard lock(snapMu);
    snapshot = std::move(td);
  }

  // ---- lifecycle (monitor thread) ----

  void begin() {
    const sdam::TopologyDescription& td = topology.description();
    for (const auto& [address, sd] : td.servers) notify(onOpened, address);
    for (const auto& ev : sdam::opening_events(td, via())) publish(ev);
    std::vector<std::string> addresses;
    for (const auto& [address, sd] : td.servers) addresses.push_back(address);
    for (const auto& a : addresses) start_server(a);
    refresh_snapshot();
  }

  void end() {
    stopping = true;
    for (auto& [address, m] : monitors) m->cancel();
    for (const auto& ev : sdam::closing_events(topology.description(), via())) publish(ev);
    monitors.clear();
  }

  void start_server(const std::string& address) {
    if (stopping || monitors.count(address)) return;
    auto m = std::make_shared<ServerMonitor>(ioc, address, cfg.heartbeatFrequency, cfg.streaming);
    monitors.emplace(address, m);
    auto report = [address](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "varanus: topology monitor of %s stopped: %s\n", address.c_str(),
                     x.what());
      }
    };
    asio::co_spawn(ioc, run_checks(m), report);
    if (cfg.streaming) asio::co_spawn(ioc, run_rtt(m), report);
  }

  void stop_server(const std::string& address) {
    auto it = monitors.find(address);
    if (it == monitors.end()) return;
    it->second->cancel();
    monitors.erase(it);
  }

  /// One check's outcome: its heartbeat event, then what it changed.
  void apply(ServerMonitor& m, const sdam::ServerCheck::Outcome& outcome) {
    publish(outcome.heartbeat);
    if (stopping || m.stopped) return;
    sdam::Update up = topology.apply(outcome.description);
    if (up.applied) {
      for (const auto& a : up.opened) notify(onOpened, a);
      for (const auto& ev : sdam::update_events(up, topology.description(), via())) publish(ev);
      for (const auto& a : up.opened) start_server(a);
      for (const auto& a : up.closed) {
        stop_server(a);
        notify(onClosed, a);
      }
    }
    refresh_snapshot();
  }

  // ---- I/O ----

  /// Resolves and connects `sock` within connectTimeout; an error text or nullopt.
  asio::awaitable<std::optional<std::string>> connect(ServerMonitor& m, tcp::socket& sock,
                                                      tcp::resolver& resolver) {
    const std::optional<Endpoint> ep = Endpoint::parse(m.address);
    if (!ep) co_return "cannot connect to " + m.address + ": not a host:port address";
    Watchdog wd(ioc.get_executor(), cfg.connectTimeout, [&sock, &resolver] {
      boost::system::error_code ignored;
      resolver.cancel();
      sock.close(ignored);
    });
    // No temporaries with destructors inside a co_await expression: GCC 12
    // destroys them twice (GCC bug 100611 and kin).
    const std::string port = std::to_string(ep->port);
    auto [rec, results] =
        co_await resolver.async_resolve(ep->host, port, tcp::resolver::numeric_service, kNoThrow);
    if (wd.fired())
      co_return "connecting to " + m.address + " timed out after " +
          std::to_string(cfg.connectTimeout.count()) + " ms (resolving)";
    if (rec) co_return "cannot resolve " + ep->host + ": " + describe(rec);
    auto [cec, endpoint] = co_await asio::async_connect(sock, results, kNoThrow);
    (void)endpoint;
    if (wd.fired())
      co_return "connecting to " + m.address + " timed out after " +
          std::to_string(cfg.connectTimeout.count()) + " ms";
    if (cec) co_return "cannot connect to " + m.address + ": " + describe(cec);
    boost::system::error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);
    co_return std::nullopt;
  }

  /// Sends one OP_MSG; an error text or nullopt.
  asio::awaitable<std::optional<std::string>> send(ServerMonitor& m, tcp::socket& sock,
                                                   const wire::BsonBytes& body,
                                                   std::uint32_t flags) {
    const wire::Frame frame =
        wire::build_op_msg(m.nextRequestId++, 0, flags,
                           wire::BsonView{body.data(), static_cast<std::uint32_t>(body.size())});
    Watchdog wd(ioc.get_executor(), cfg.connectTimeout, [&sock] {
      boost::system::error_code ignored;
      sock.close(ignored);
    });
    auto [ec, n] = co_await asio::async_write(sock, asio::buffer(frame), kNoThrow);
    (void)n;
    if (wd.fired())
      co_return "sending the hello timed out after " + std::to_string(cfg.connectTimeout.count()) +
          " ms";
    if (ec) co_return "sending the hello failed: " + describe(ec);
    co_return std::nullopt;
  }

  /// Reads one OP_MSG reply within `timeout`.
  asio::awaitable<Reply> receive(tcp::socket& sock, milliseconds timeout) {
    Reply r;
    Watchdog wd(ioc.get_executor(), timeout, [&sock] {
      boost::system::error_code ignored;
      sock.close(ignored);
    });
    auto timedOut = [&] {
      return "no reply within " + std::to_string(timeout.count()) + " ms (timed out)";
    };
    std::uint8_t header[16];
    auto [hec, hn] = co_await asio::async_read(sock, asio::buffer(header), kNoThrow);
    (void)hn;
    if (wd.fired()) {
      r.error = timedOut();
      co_return r;
    }
    if (hec) {
      r.error = "reading the reply failed: " + describe(hec);
      co_return r;
    }
    std::uint32_t length = 0;
    std::memcpy(&length, header, 4);  // little-endian, as the wire (x86-64, aarch64)
    if (length < 21 || length > kMaxReply) {
      r.error = "invalid reply: messageLength " + std::to_string(length);
      co_return r;
    }
    std::vector<std::uint8_t> frame(length);
    std::memcpy(frame.data(), header, sizeof header);
    auto [bec, bn] = co_await asio::async_read(
        sock, asio::buffer(frame.data() + sizeof header, length - sizeof header), kNoThrow);
    (void)bn;
    if (wd.fired()) {
      r.error = timedOut();
      co_return r;
    }
    if (bec) {
      r.error = "reading the reply failed: " + describe(bec);
      co_return r;
    }
    auto msg = wire::decode(frame);
    if (!msg) {
      r.error = "invalid reply: " + msg.error().message();
      co_return r;
    }
    const auto* op = std::get_if<wire::OpMsg>(&msg.value().body);
    if (op == nullptr) {
      r.error =
          "invalid reply: " + std::string(wire::opcode_name(msg.value().opCode)) + ", not OP_MSG";
      co_return r;
    }
    r.body.assign(op->body.data, op->body.data + op->body.size);
    r.moreToCome = op->moreToCome();
    co_return r;
  }

  /// The spec's monitor loop for one server.
  asio::awaitable<void> run_checks(std::shared_ptr<ServerMonitor> mp) {
    ServerMonitor& m = *mp;
    bool retried = false;  // the one immediate retry after a known server failed
    const milliseconds heartbeat = cfg.heartbeatFrequency;
    while (!m.stopped && !stopping) {
      const bool handshake = !m.sock.is_open();
      const bool awaited = !handshake && (m.moreToCome || m.check.awaited());
      publish(m.check.started(via()));
      const Clock::time_point t0 = Clock::now();
      std::optional<std::string> error;
      Reply reply;
      if (handshake) {
        m.streaming = false;
        m.moreToCome = false;
        error = co_await connect(m, m.sock, m.resolver);
        const wire::BsonBytes hello = handshake_hello(cfg.appName);
        if (!error && !m.stopped) error = co_await send(m, m.sock, hello, 0);
        if (!error && !m.stopped) reply = co_await receive(m.sock, cfg.connectTimeout);
      } else if (m.moreToCome) {
        reply = co_await receive(m.sock, cfg.connectTimeout + heartbeat);
      } else {
        const wire::BsonBytes hello = m.check.hello_command();
        error = co_await send(m, m.sock, hello, awaited ? wire::kExhaustAllowed : 0);
        if (!error && awaited) m.streaming = true;
        if (!error && !m.stopped)
          reply = co_await receive(m.sock,
                                   awaited ? cfg.connectTimeout + heartbeat : cfg.connectTimeout);
      }
      if (m.stopped || stopping) co_return;
      if (!error) error = reply.error;
      const microseconds elapsed = since(t0);

      if (!error) {
        retried = false;
        m.moreToCome = reply.moreToCome;
        const wire::BsonView body{reply.body.data(), static_cast<std::uint32_t>(reply.body.size())};
        apply(m, m.check.succeeded(body, elapsed, awaited, via()));
        if (m.stopped || stopping) co_return;
        if (m.moreToCome || m.check.awaited()) continue;  // streaming: no wait
        co_await sleep_until(m, t0 + heartbeat);
        continue;
      }

      // Failed: the connection is no good; Unknown with the error.
      boost::system::error_code ignored;
      m.sock.close(ignored);
      m.streaming = false;
      m.moreToCome = false;
      const auto it = topology.description().servers.find(m.address);
      const bool wasKnown = it != topology.description().servers.end() &&
                            it->second.type != sdam::ServerType::Unknown;
      apply(m, m.check.failed(*error, elapsed, awaited, via()));
      if (m.stopped || stopping) co_return;
      if (wasKnown && !retried) {
        retried = true;  // the spec's one immediate retry
        continue;
      }
      co_await sleep_until(m, std::max(t0 + heartbeat, Clock::now() + kMinHeartbeatFrequency));
    }
  }

  asio::awaitable<void> sleep_until(ServerMonitor& m, Clock::time_point when) {
    m.wait.expires_at(when);
    co_await m.wait.async_wait(kNoThrow);
  }

  /// The spec's RTT monitor: while the checks stream (and so do not
  /// measure), a plain hello every heartbeatFrequency on a connection of
  /// its own. Its failures are not the server's: the connection is
  /// reopened next time; the checks say whether the server is up.
  asio::awaitable<void> run_rtt(std::shared_ptr<ServerMonitor> mp) {
    ServerMonitor& m = *mp;
    while (!m.stopped && !stopping) {
      m.rttWait.expires_after(cfg.heartbeatFrequency);
      co_await m.rttWait.async_wait(kNoThrow);
      if (m.stopped || stopping) co_return;
      if (!m.streaming) {
        boost::system::error_code ignored;
        m.rttSock.close(ignored);
        continue;
      }
      std::optional<std::string> error;
      const bool fresh = !m.rttSock.is_open();
      if (fresh) error = co_await connect(m, m.rttSock, m.rttResolver);
      if (m.stopped || stopping) co_return;
      const Clock::time_point t0 = Clock::now();
      const wire::BsonBytes hello = fresh ? handshake_hello(cfg.appName) : plain_hello();
      if (!error) error = co_await send(m, m.rttSock, hello, 0);
      Reply reply;
      if (!error && !m.stopped) reply = co_await receive(m.rttSock, cfg.connectTimeout);
      if (m.stopped || stopping) co_return;
      if (!error) error = reply.error;
      if (error || !m.streaming) {
        boost::system::error_code ignored;
        m.rttSock.close(ignored);
        continue;
      }
      m.check.add_rtt_sample(since(t0));
      refresh_snapshot();
    }
  }
};

TopologyMonitor::TopologyMonitor(TopologyMonitorConfig config) {
  if (config.seeds.empty()) throw std::invalid_argument("topology monitor: no seed addresses");
  if (config.heartbeatFrequency < kMinHeartbeatFrequency)
    throw std::invalid_argument("topology monitor: heartbeatFrequencyMS " +
                                std::to_string(config.heartbeatFrequency.count()) +
                                " is under the minimum of 500 ms");
  if (config.connectTimeout <= milliseconds::zero())
    throw std::invalid_argument("topology monitor: connectTimeoutMS " +
                                std::to_string(config.connectTimeout.count()) +
                                " must be positive");
  if (config.directConnection && config.seeds.size() != 1)
    throw std::invalid_argument("topology monitor: directConnection takes exactly one seed, not " +
                                std::to_string(config.seeds.size()));
  for (auto& ep : config.seeds)
    for (auto& ch : ep.host) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  impl_ = std::make_unique<Impl>(std::move(config));
}

TopologyMonitor::~TopologyMonitor() {
  stop();
}

void TopologyMonitor::on_event(std::function<void(const sdam::TopologyEvent&)> f) {
  impl_->onEvent = std::move(f);
}
void TopologyMonitor::on_server_opened(std::function<void(const std::string&)> f) {
  impl_->onOpened = std::move(f);
}
void TopologyMonitor::on_server_closed(std::function<void(const std::string&)> f) {
  impl_->onClosed = std::move(f);
}
void TopologyMonitor::via(std::function<sdam::ViaMap()> f) {
  impl_->viaFn = std::move(f);
}

void TopologyMonitor::start() {
  std::lock_guard lock(impl_->lifecycle);
  if (impl_->started || impl_->stopRequested) return;
  impl_->started = true;
  impl_->guard.emplace(impl_->ioc.get_executor());
  asio::post(impl_->ioc, [impl = impl_.get()] { impl->begin(); });
  impl_->thread = std::thread([impl = impl_.get()] { impl->ioc.run(); });
}

void TopologyMonitor::stop() {
  std::lock_guard lock(impl_->lifecycle);
  if (impl_->stopRequested) return;
  impl_->stopRequested = true;
  if (!impl_->started) return;
  asio::post(impl_->ioc, [impl = impl_.get()] { impl->end(); });
  impl_->guard.reset();
  impl_->thread.join();
}

sdam::TopologyDescription TopologyMonitor::description() const {
  std::lock_guard lock(impl_->snapMu);
  return impl_->snapshot;
}

}  // namespace varanus::proxy
