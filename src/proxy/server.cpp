// varanus::proxy — Server (acceptor, I/O threads, graceful stop) and
// Session (one client connection and its upstream connection).
//
// A Session relays bytes both ways with one coroutine per direction, joined:
//
//   co_await (pump(client -> upstream) && pump(upstream -> client));
//
// Each pump reads into a buffer allocated once per connection, hands the
// bytes to the Inspector (the Tracker) BEFORE writing them on — so a request
// is always registered before its reply can come back — then writes them
// unchanged to the other side. Bytes are never rewritten; inspection works on
// the same buffer, read-only, and may stop (decode error, oversized frame)
// without affecting the relay (fail open).
//
// Ending: an EOF on one side is passed on as a half-close (shutdown(send) of
// the other side, after everything read was written); the connection ends
// when both directions are done. A reset, a write error or the end of the
// grace period closes both sockets at once, which makes the other pump's
// pending operation complete with operation_aborted. The first cause seen is
// the reason given to Inspector::closed ("client closed", "upstream reset:
// ...", ...), which fails every pending request with it.
//
// Errors travel as error_code values (as_tuple), never as exceptions.
#include "varanus/proxy/server.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <memory>
#include <vector>

namespace varanus::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

std::string endpoint_string(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  std::string out = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
  out += ':';
  out += std::to_string(ep.port());
  return out;
}

std::string remote_string(const tcp::socket& s) {
  error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("?") : endpoint_string(ep);
}

/// Used when the factory gives no inspector: relay only.
class NullInspector final : public Inspector {
 public:
  void opened(monitor::Clock) override {}
  void client_data(std::span<const std::uint8_t>, monitor::Clock) override {}
  void server_data(std::span<const std::uint8_t>, monitor::Clock) override {}
  void closed(std::string_view, monitor::Clock) override {}
  bool inspecting() const noexcept override { return false; }
  std::string_view stop_reason() const noexcept override { return {}; }
};

}  // namespace

Diagnostics stderr_diagnostics() {
  return [](std::string_view line) {
    // One write(2) per line so lines from several threads never interleave.
    std::string buf;
    buf.reserve(line.size() + 1);
    buf.append(line);
    buf.push_back('\n');
    const char* p = buf.data();
    std::size_t left = buf.size();
    while (left > 0) {
      ssize_t n = ::write(STDERR_FILENO, p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  };
}

InspectorFactory null_inspector_factory() {
  return [](const InspectorContext&) { return std::make_unique<NullInspector>(); };
}

class Session;

/// One I/O thread: its io_context and the sessions living on it. Everything
/// but the io_context itself is touched only from that thread.
struct Worker {
  // Declared before ctx so it outlives the coroutine frames ctx destroys.
  std::unordered_set<Session*> sessions;
  bool stopping = false;
  bool graceArmed = false;
  std::chrono::steady_clock::time_point graceDeadline;

  asio::io_context ctx{1};  // one thread runs it
  asio::executor_work_guard<asio::io_context::executor_type> guard{ctx.get_executor()};
  asio::steady_timer graceTimer{ctx};

  // Sessions destroyed with ctx (server destroyed while running) must not
  // touch graceTimer, which is gone by then.
  ~Worker() { stopping = false; }

  void add(Session* s);
  void remove(Session* s);
  void begin_stop(std::chrono::milliseconds grace);
  void arm_grace();
};

namespace detail {
struct ServerState {
  ProxyConfig config;
  monitor::EventOutput& out;
  monitor::Stats& stats;
  InspectorFactory inspectors;
  Diagnostics diag;
  monitor::TrackerOptions trackerOptions;
  std::optional<asio::ip::address> upstreamAddress;  // when the host is an IP literal
  std::string upstreamName;                          // "host:port" as configured

  std::vector<std::unique_ptr<Worker>> workers;
  std::optional<tcp::acceptor> acceptor;  // on workers[0]
  std::size_t nextWorker = 0;             // acceptor thread only
  std::atomic<std::uint64_t> nextConnectionId{1};
  std::atomic<std::size_t> active{0};
  std::atomic<bool> stopRequested{false};
  bool started = false;

  ServerState(ProxyConfig c, monitor::EventOutput& o, monitor::Stats& s, InspectorFactory f,
              Diagnostics d)
      : config(std::move(c)), out(o), stats(s), inspectors(std::move(f)), diag(std::move(d)) {
    if (!inspectors) inspectors = null_inspector_factory();
    if (!diag) diag = [](std::string_view) {};
    trackerOptions = config.tracker;
    trackerOptions.maxMessageSize = config.maxMessageSize;
    if (config.bufferSize == 0) config.bufferSize = 64 * 1024;
    error_code ec;
    auto addr = asio::ip::make_address(config.upstream.host, ec);
    if (!ec) upstreamAddress = addr;
    upstreamName = config.upstream.to_string();
    const unsigned n = config.ioThreads == 0 ? 1 : config.ioThreads;
    for (unsigned i = 0; i < n; ++i) workers.push_back(std::make_unique<Worker>());
  }

  asio::awaitable<void> accept_loop();
};
}  // namespace detail

class Session {
 public:
  Session(detail::ServerState& server, Worker& worker, tcp::socket client, std::uint64_t id)
      : server_(server),
        worker_(worker),
        client_(std::move(client)),
        upstream_(client_.get_executor()),
        id_(id),
        bufferSize_(server.config.bufferSize),
        toServer_(std::make_unique_for_overwrite<std::uint8_t[]>(bufferSize_)),
        toClient_(std::make_unique_for_overwrite<std::uint8_t[]>(bufferSize_)) {
    worker_.add(this);
  }
  ~Session() { worker_.remove(this); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  asio::awaitable<void> run();

  /// Grace period over (or server destroyed): close both sides now.
  void shutdown_now() {
    set_reason("proxy stopped: grace period over");
    abort();
  }

 private:
  enum class Dir { toServer, toClient };

  asio::awaitable<error_code> connect_upstream();
  asio::awaitable<error_code> resolve_and_connect();
  asio::awaitable<void> pump(Dir dir);

  void set_reason(std::string reason) {
    if (reason_.empty()) reason_ = std::move(reason);
  }
  void abort() {
    error_code ignored;
    client_.close(ignored);
    upstream_.close(ignored);
  }
  void inspection_stopped();

  detail::ServerState& server_;
  Worker& worker_;
  tcp::socket client_;
  tcp::socket upstream_;
  std::uint64_t id_;
  std::string clientName_;
  // Reused read buffers, one per direction. Left uninitialised: a read always
  // fills what is used, and untouched pages of an idle connection's buffers
  // then cost no resident memory (zero-filling made every connection 128 KiB).
  std::size_t bufferSize_;
  std::unique_ptr<std::uint8_t[]> toServer_;
  std::unique_ptr<std::uint8_t[]> toClient_;
  std::unique_ptr<Inspector> inspector_;
  std::string reason_;
};

// ---- Worker -----------------------------------------------------------------

void Worker::add(Session* s) {
  sessions.insert(s);
  if (stopping && !graceArmed) arm_grace();
}

void Worker::remove(Session* s) {
  sessions.erase(s);
  if (stopping && sessions.empty() && graceArmed) {
    graceTimer.cancel();  // nothing left to wait for: let ctx.run() return
    graceArmed = false;
  }
}

void Worker::begin_stop(std::chrono::milliseconds grace) {
  if (stopping) return;
  stopping = true;
  graceDeadline = std::chrono::steady_clock::now() + grace;
  guard.reset();
  if (!sessions.empty()) arm_grace();
}

void Worker::arm_grace() {
  graceArmed = true;
  graceTimer.expires_at(graceDeadline);
  graceTimer.async_wait([this](error_code ec) {
    if (ec) return;
    graceArmed = false;
    // shutdown_now() only closes sockets; sessions leave the set later, from
    // their own coroutines, so iterating a copy is not even needed — but a
    // copy keeps this obviously safe.
    std::vector<Session*> open(sessions.begin(), sessions.end());
    for (Session* s : open) s->shutdown_now();
  });
}

// ---- Session ----------------------------------------------------------------

asio::awaitable<error_code> Session::resolve_and_connect() {
  const auto& cfg = server_.config;
  if (server_.upstreamAddress) {
    auto [ec] = co_await upstream_.async_connect(
        tcp::endpoint(*server_.upstreamAddress, cfg.upstream.port), use_tuple);
    co_return ec;
  }
  tcp::resolver resolver(upstream_.get_executor());
  auto [rec, results] = co_await resolver.async_resolve(
      cfg.upstream.host, std::to_string(cfg.upstream.port), use_tuple);
  if (rec) co_return rec;
  auto [cec, ep] = co_await asio::async_connect(upstream_, results, use_tuple);
  co_return cec;
}

asio::awaitable<error_code> Session::connect_upstream() {
  asio::steady_timer timer(upstream_.get_executor(), server_.config.connectTimeout);
  auto result = co_await (resolve_and_connect() || timer.async_wait(use_tuple));
  if (result.index() == 1) {
    error_code ignored;
    upstream_.close(ignored);
    co_return error_code(asio::error::timed_out);
  }
  co_return std::get<0>(result);
}

asio::awaitable<void> Session::run() {
  clientName_ = remote_string(client_);
  if (server_.stopRequested.load(std::memory_order_relaxed)) {
    // Accepted just as the server began to stop: nothing relayed yet.
    abort();
    co_return;
  }

  if (error_code ec = co_await connect_upstream()) {
    if (!reason_.empty()) co_return;  // the grace period ended while connecting: not a failure
    server_.stats.add(server_.stats.upstreamConnectFailures);
    server_.diag("varanus: upstream " + server_.upstreamName + " unreachable: " + ec.message() +
                 " (client " + clientName_ + " closed)");
    abort();
    co_return;
  }
  error_code ignored;
  upstream_.set_option(tcp::no_delay(true), ignored);

  auto info = std::make_shared<monitor::ConnectionInfo>();
  info->connectionId = id_;
  info->client = clientName_;
  info->server = remote_string(upstream_);
  inspector_ = server_.inspectors(
      InspectorContext{std::move(info), server_.out, server_.stats, server_.trackerOptions});
  if (!inspector_) inspector_ = std::make_unique<NullInspector>();

  inspector_->opened(monitor::Clock::now());
  co_await (pump(Dir::toServer) && pump(Dir::toClient));
  abort();
  inspector_->closed(reason_.empty() ? std::string_view("closed") : std::string_view(reason_),
                     monitor::Clock::now());
}

void Session::inspection_stopped() {
  const std::string_view why = inspector_->stop_reason();
  const bool oversized = why.find("too_large") != std::string_view::npos;
  server_.stats.add(oversized ? server_.stats.oversizedFrames : server_.stats.decodeErrors);
  server_.diag("varanus: connection " + std::to_string(id_) + " (client " + clientName_ +
               "): inspection stopped, relaying goes on: " + std::string(why));
}

asio::awaitable<void> Session::pump(Dir dir) {
  const bool fromClient = dir == Dir::toServer;
  tcp::socket& from = fromClient ? client_ : upstream_;
  tcp::socket& to = fromClient ? upstream_ : client_;
  std::uint8_t* buf = fromClient ? toServer_.get() : toClient_.get();
  const char* fromName = fromClient ? "client" : "upstream";
  const char* toName = fromClient ? "upstream" : "client";
  auto& byteCounter = fromClient ? server_.stats.bytesFromClient : server_.stats.bytesFromServer;

  for (;;) {
    auto [rec, n] = co_await from.async_read_some(asio::buffer(buf, bufferSize_), use_tuple);
    if (n > 0) {
      server_.stats.add(byteCounter, static_cast<std::int64_t>(n));
      if (inspector_->inspecting()) {
        const std::span<const std::uint8_t> bytes(buf, n);
        if (fromClient) {
          inspector_->client_data(bytes, monitor::Clock::now());
        } else {
          inspector_->server_data(bytes, monitor::Clock::now());
        }
        if (!inspector_->inspecting()) inspection_stopped();
      }
      auto [wec, written] = co_await asio::async_write(to, asio::buffer(buf, n), use_tuple);
      if (wec) {
        if (wec != asio::error::operation_aborted) {
          set_reason(std::string(toName) + " write failed: " + wec.message());
        }
        abort();
        co_return;
      }
    }
    if (rec) {
      if (rec == asio::error::eof) {
        // Half-close: everything read has been written; pass the EOF on.
        set_reason(std::string(fromName) + " closed");
        error_code ignored;
        to.shutdown(tcp::socket::shutdown_send, ignored);
      } else if (rec != asio::error::operation_aborted) {
        set_reason(std::string(fromName) + " reset: " + rec.message());
        abort();
      }
      co_return;
    }
  }
}

// ---- Server -----------------------------------------------------------------

namespace {

asio::awaitable<void> run_session(detail::ServerState& server, Worker& worker, tcp::socket socket,
                                  std::uint64_t id) {
  struct ActiveGuard {
    detail::ServerState& s;
    ~ActiveGuard() {
      s.active.fetch_sub(1, std::memory_order_relaxed);
      s.stats.add(s.stats.connectionsActive, -1);
    }
  } guard{server};
  Session session(server, worker, std::move(socket), id);
  co_await session.run();
}

}  // namespace

asio::awaitable<void> detail::ServerState::accept_loop() {
  for (;;) {
    Worker& worker = *workers[nextWorker++ % workers.size()];
    auto [ec, socket] = co_await acceptor->async_accept(worker.ctx, use_tuple);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      // EMFILE and friends: say so, back off a little instead of spinning.
      diag("varanus: accept failed: " + ec.message());
      asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    stats.add(stats.connectionsAccepted);
    stats.add(stats.connectionsActive);
    active.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t id = nextConnectionId.fetch_add(1, std::memory_order_relaxed);
    asio::co_spawn(worker.ctx, run_session(*this, worker, std::move(socket), id),
                   [this](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& x) {
                       diag(std::string("varanus: session failed: ") + x.what());
                     } catch (...) {
                       diag("varanus: session failed");
                     }
                   });
  }
}

Server::Server(ProxyConfig config, monitor::EventOutput& out, monitor::Stats& stats,
               InspectorFactory inspectors, Diagnostics diagnostics)
    : impl_(std::make_unique<detail::ServerState>(std::move(config), out, stats,
                                                  std::move(inspectors), std::move(diagnostics))) {}

Server::~Server() {
  // Destroy sessions (coroutine frames) while the workers still exist.
  for (auto& w : impl_->workers) w->ctx.stop();
  impl_->acceptor.reset();
  for (auto it = impl_->workers.rbegin(); it != impl_->workers.rend(); ++it) it->reset();
}

Endpoint Server::start() {
  detail::ServerState& s = *impl_;
  if (s.started) throw std::logic_error("varanus::proxy::Server::start called twice");
  asio::io_context& ctx = s.workers.front()->ctx;
  tcp::endpoint ep;
  error_code ec;
  auto addr = asio::ip::make_address(s.config.listen.host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, s.config.listen.port);
  } else {
    tcp::resolver resolver(ctx);
    auto results = resolver.resolve(s.config.listen.host, std::to_string(s.config.listen.port),
                                    tcp::resolver::passive);
    ep = results.begin()->endpoint();
  }
  tcp::acceptor acceptor(ctx);
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(ep);
  acceptor.listen(asio::socket_base::max_listen_connections);
  s.acceptor.emplace(std::move(acceptor));
  s.started = true;
  asio::co_spawn(ctx, s.accept_loop(), asio::detached);
  const auto bound = s.acceptor->local_endpoint();
  return Endpoint{bound.address().to_string(), bound.port()};
}

void Server::run() {
  detail::ServerState& s = *impl_;
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < s.workers.size(); ++i) {
    threads.emplace_back([w = s.workers[i].get()] { w->ctx.run(); });
  }
  s.workers.front()->ctx.run();
  for (auto& t : threads) t.join();
}

void Server::stop(std::chrono::milliseconds grace) {
  detail::ServerState& s = *impl_;
  if (s.stopRequested.exchange(true)) return;
  asio::post(s.workers.front()->ctx, [&s] {
    error_code ignored;
    if (s.acceptor) s.acceptor->close(ignored);
  });
  for (auto& w : s.workers) {
    asio::post(w->ctx, [w = w.get(), grace] { w->begin_stop(grace); });
  }
}

void Server::stop() {
  stop(impl_->config.gracePeriod);
}

std::size_t Server::active_connections() const noexcept {
  return impl_->active.load(std::memory_order_relaxed);
}

}  // namespace varanus::proxy
