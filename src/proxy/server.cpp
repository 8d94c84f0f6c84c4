// varanus::proxy — Server (listener, I/O threads, graceful stop) and Session
// (one client connection and its upstream connection).
//
// Each I/O thread runs one Worker: an epoll instance (edge-triggered), an
// eventfd for work posted from other threads, one read buffer shared by all
// of its connections, and the Sessions living on it. Everything a Session
// touches (its sockets, buffers and Inspector) belongs to one thread: no
// locks on the data path.
//
// Why a hand-written loop and not Asio coroutines here (the first design
// drew the relay as Asio pumps; docs/design-notes.md has the figures): the proxy is
// CPU-bound on its I/O thread, and per relayed message Asio's reactor made
// one more recv(2) than needed (every async_read_some first tries a read,
// which fails with EAGAIN right after the previous message was forwarded)
// and ran two completion handlers (read, write) through its scheduler. A
// relay that reads only after epoll says so, reads once, and writes with a
// plain non-blocking send costs about 2 µs less CPU per command, which is
// the whole margin between "slower than haproxy" and "faster". Asio stays
// for what is not per message: name resolution of the upstream, the admin
// endpoint, signals, the stub.
//
// The relay, per Session:
//
//   client fd ──readable──▶ recv into the worker's buffer
//             ──▶ send to upstream, at the end of the epoll batch: every
//                 ready socket is read first and the peers are then woken
//                 once for all that arrived (haproxy's loop does the same;
//                 sending at once made the stub and the driver wake, and
//                 preempt the proxy, about twice as often per command)
//             ──▶ Inspector, after the sends (off the latency path), in
//                 the order the bytes were read, so a request is inspected
//                 before its reply whenever the reply was read
//             what the socket does not take waits in the session's out-buffer
//             for that side, and reading the source pauses until it is flushed
//             (EPOLLOUT) — backpressure, bounded by one buffer per direction.
//
// Edge-triggered epoll: every event only sets flags (readable / writable);
// the session then reads a side once when it is readable and its peer has no
// backlog. A short read means the socket is drained (the next byte brings a
// new edge) unless the event also said EPOLLRDHUP: then the peer's FIN is
// already queued behind the data, no further edge will announce it, and the
// side is read again to see the EOF. A full buffer means "maybe more", and
// the session is queued to read again after the other ready connections
// (fairness).
//
// Ending: an EOF on one side is passed on as a half-close (shutdown(SHUT_WR)
// of the other side, after everything read was written); the connection ends
// when both directions are done. A reset, a write error or the end of the
// grace period closes both sockets at once. The first cause seen is the
// reason given to Inspector::closed ("client closed", "upstream reset: ...",
// ...), which fails every pending request with it.
#include "varanus/proxy/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace varanus::proxy {

namespace {

using steady = std::chrono::steady_clock;

std::string errno_text(int err) {
  return std::system_category().message(err);
}

/// Sends as much of `bytes` as the non-blocking socket takes now.
struct Sent {
  std::size_t bytes = 0;
  int error = 0;  ///< errno of a failed send (not EAGAIN: that only stops it)
};
Sent send_some(int fd, std::span<const std::uint8_t> bytes) noexcept {
  Sent r;
  while (r.bytes < bytes.size()) {
    const ssize_t w = ::send(fd, bytes.data() + r.bytes, bytes.size() - r.bytes, MSG_NOSIGNAL);
    if (w >= 0) {
      r.bytes += static_cast<std::size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) r.error = errno;
    break;
  }
  return r;
}

[[noreturn]] void throw_errno(int err, const char* what) {
  throw std::system_error(err, std::system_category(), what);
}

/// The numeric host and the port of a socket address ("?" when neither v4 nor v6).
std::pair<std::string, std::uint16_t> host_and_port(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return {host, ntohs(in->sin_port)};
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return {host, ntohs(in6->sin6_port)};
  }
  return {host, 0};
}

/// "host:port" / "[v6]:port" of a socket address.
std::string address_string(const sockaddr* sa) {
  auto [host, port] = host_and_port(sa);
  return Endpoint{std::move(host), port}.to_string();
}

/// A socket address that fits any family we use.
struct SockAddr {
  sockaddr_storage storage{};
  socklen_t length = 0;
  const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
};

/// Parses an IPv4/IPv6 literal; nullopt for a host name.
std::optional<SockAddr> numeric_address(const std::string& host, std::uint16_t port) {
  SockAddr a;
  auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
  if (::inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    a.length = sizeof(sockaddr_in);
    return a;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    a.length = sizeof(sockaddr_in6);
    return a;
  }
  return std::nullopt;
}

void set_nodelay(int fd) noexcept {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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

// epoll user data: a Session pointer with the side in the low bit, or one of
// these (pointers are never this small).
constexpr std::uint64_t kWakeTag = 0;
constexpr std::uint64_t kListenTag = 2;
// Connections accepted per listener event, at most.
constexpr int kAcceptBatch = 8;

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
struct Worker;

namespace detail {
struct ServerState {
  ProxyConfig config;
  monitor::EventOutput& out;
  monitor::Stats& stats;
  InspectorFactory inspectors;
  Diagnostics diag;
  monitor::TrackerOptions trackerOptions;
  std::optional<SockAddr> upstreamAddress;  // when the host is an IP literal
  std::string upstreamName;                 // "host:port" as configured

  std::vector<std::unique_ptr<Worker>> workers;
  int listenFd = -1;           // on workers[0]
  std::size_t nextWorker = 0;  // workers[0]'s thread only
  // Set by workers[0] once the listener is closed: no connection will be
  // handed to another worker after that, so a stopping worker may end.
  std::atomic<bool> listenerClosed{false};
  std::atomic<std::uint64_t> nextConnectionId{1};
  std::atomic<std::size_t> active{0};
  std::atomic<bool> stopRequested{false};
  bool started = false;

  // Upstream host names are resolved for every connection (DNS may move a
  // member) by Asio's resolver, on a thread of its own so that a slow DNS
  // server never stalls an I/O thread. Only started for a host name.
  std::unique_ptr<boost::asio::io_context> resolverContext;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      resolverGuard;
  std::thread resolverThread;

  ServerState(ProxyConfig c, monitor::EventOutput& o, monitor::Stats& s, InspectorFactory f,
              Diagnostics d);
  ~ServerState();

  /// Accepts one connection; false when none was waiting (or accept failed).
  bool accept_ready();
};
}  // namespace detail

/// Bytes read from one side that the other side's socket has not taken yet.
/// Allocated when a send is short, freed once flushed: an idle connection
/// holds no buffer at all.
class OutBuffer {
 public:
  bool empty() const noexcept { return begin_ == end_; }
  std::span<const std::uint8_t> pending() const noexcept {
    return {data_.get() + begin_, end_ - begin_};
  }
  /// Only when empty (a side is not read while its peer has a backlog).
  void assign(std::span<const std::uint8_t> bytes) {
    data_ = std::make_unique_for_overwrite<std::uint8_t[]>(bytes.size());
    std::memcpy(data_.get(), bytes.data(), bytes.size());
    begin_ = 0;
    end_ = bytes.size();
  }
  void consume(std::size_t n) noexcept {
    begin_ += n;
    if (begin_ == end_) {
      data_.reset();
      begin_ = end_ = 0;
    }
  }

 private:
  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

/// One I/O thread. Everything but the task queue is touched only from its
/// own thread.
struct Worker {
  detail::ServerState& server;
  int epfd = -1;
  int wakeFd = -1;
  // The read buffer every session here shares: kReadAreas reads of
  // server.config.bufferSize bytes. Bytes read stay here, at increasing
  // offsets, until the end of the event batch: send_held() forwards them
  // (every ready socket is read first, so the peer is woken once for all
  // that arrived, as haproxy's loop does), then inspect_deferred() hands
  // them to the inspectors in the order they were read (no request waits
  // behind another's inspection).
  static constexpr std::size_t kReadAreas = 4;
  std::unique_ptr<std::uint8_t[]> buffer;
  std::size_t bufferUsed = 0;  // bytes held for sending or inspection
  struct Held {
    Session* session;
    std::uint32_t offset;
    std::uint32_t size;
    bool toUpstream;
  };
  std::vector<Held> held;
  struct Deferred {
    Session* session;
    std::uint32_t offset;
    std::uint32_t size;
    bool fromClient;
    monitor::Clock readAt;
  };
  std::vector<Deferred> deferred;
  /// Where the next read goes (room for one bufferSize read).
  std::uint8_t* read_area() {
    if (kReadAreas * server.config.bufferSize - bufferUsed < server.config.bufferSize) end_batch();
    return buffer.get() + bufferUsed;
  }
  std::uint32_t keep(const std::uint8_t* at, std::size_t size) {
    const auto offset = static_cast<std::uint32_t>(at - buffer.get());
    bufferUsed = std::max(bufferUsed, offset + size);
    return offset;
  }
  /// Keeps `size` bytes just read at `at` (from read_area()) to be sent to
  /// the other side at the end of the batch.
  void hold(Session* s, const std::uint8_t* at, std::size_t size, bool toUpstream) {
    held.push_back({s, keep(at, size), static_cast<std::uint32_t>(size), toUpstream});
  }
  /// ... and for inspection after that.
  void defer(Session* s, const std::uint8_t* at, std::size_t size, bool fromClient,
             monitor::Clock readAt) {
    deferred.push_back({s, keep(at, size), static_cast<std::uint32_t>(size), fromClient, readAt});
  }
  void send_held();
  void inspect_deferred();
  void end_batch() {
    send_held();
    inspect_deferred();
  }

  // Sessions (intrusive list), those waiting on a connect timeout (in
  // deadline order: every timeout has the same length), those with a side
  // left readable after a full buffer, and those finished in this round.
  Session* sessions = nullptr;
  std::size_t sessionCount = 0;
  Session* connectingHead = nullptr;
  Session* connectingTail = nullptr;
  std::vector<Session*> again;
  std::vector<Session*> finished;

  // Busy polling (ProxyConfig::busyPoll): a credit counts the waits in a row
  // that ended within the window (a sleep that short, or a poll that found
  // events); a longer sleep or a poll that found nothing resets it. Only two
  // in a row start polling, so a proxy that is quiet, or whose clients pause
  // between requests, sleeps as it would without.
  static constexpr int kBusyCreditToPoll = 2;
  static constexpr int kBusyCreditMax = 16;
  int busyCredit = 0;
  std::int64_t busyHits = 0, busyMisses = 0;  // into Stats before each sleep and at exit

  bool stopping = false;
  std::optional<steady::time_point> graceDeadline;
  std::optional<steady::time_point> listenPausedUntil;  // accept backing off (EMFILE)

  // Posted from other threads: accepted sockets (kept apart so that a worker
  // destroyed before it ran them can still close them) and other work.
  struct Incoming {
    int fd;
    SockAddr peer;
  };
  std::mutex tasksMutex;
  std::vector<Incoming> incoming;
  std::vector<std::function<void()>> tasks;

  explicit Worker(detail::ServerState& s);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Any thread: runs `task` on this worker's thread soon.
  void post(std::function<void()> task);
  void post_connection(int fd, const SockAddr& peer);
  void wake() noexcept;
  void run();
  /// epoll_wait, polling first for up to config.busyPoll when that has paid.
  int wait(epoll_event* events, int max, int timeout);
  void flush_busy_counts() noexcept;
  void add_session(int fd, const SockAddr& peer);
  void begin_stop(std::chrono::milliseconds grace);
  void close_all(std::string_view reason);
  /// Stopping: closes every connection with nothing in flight.
  void close_idle();
  void reap();
  int next_timeout_ms(steady::time_point now) const;
  void expire(steady::time_point now);
  void run_tasks();
  void link(Session* s);
  void unlink(Session* s);
  void timer_add(Session* s);
  void timer_remove(Session* s);
};

class Session {
 public:
  enum Side : unsigned { client = 0, upstream = 1 };
  enum class State { connecting, relaying, done };

  Session(Worker& worker, int clientFd, std::uint64_t id, std::string clientName);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  /// An epoll event for one of its sockets.
  void on_event(Side side, std::uint32_t events);
  /// Read again a side that filled the whole buffer last time.
  void resume() {
    queued = false;
    if (state == State::relaying) pump();
  }
  void connect_timed_out();
  /// Sends bytes read earlier from the other side (Worker::send_held).
  void send_held(Side to, std::span<const std::uint8_t> bytes);
  /// Hands bytes read earlier (Worker::inspect_deferred) to the inspector.
  void inspect(Side from, std::span<const std::uint8_t> bytes, monitor::Clock readAt);
  void resolved(std::vector<SockAddr> addresses, int gaiError, std::string gaiMessage);
  /// Relaying with nothing in flight: the inspector has seen no request
  /// without its reply and no half message, and no bytes wait to be sent.
  bool idle() const noexcept {
    if (state != State::relaying || !inspector_ || !inspector_->idle()) return false;
    for (const Peer& p : peers_)
      if (p.held || !p.out.pending().empty()) return false;
    return true;
  }
  /// Grace period over (or server destroyed): close both sides now.
  void shutdown_now(std::string_view reason) {
    set_reason(std::string(reason));
    finish();
  }

  // Worker bookkeeping.
  Session* prev = nullptr;
  Session* next = nullptr;
  Session* timerPrev = nullptr;
  Session* timerNext = nullptr;
  bool timed = false;
  steady::time_point deadline;
  bool queued = false;  // in Worker::again
  State state = State::connecting;

 private:
  struct Peer {
    int fd = -1;
    bool readable = false;  // an edge said data (or EOF, or an error) may be there
    bool rdhup = false;     // the peer's FIN has arrived: read until the EOF shows
    bool writable = true;   // false after a short send, until EPOLLOUT
    bool eof = false;       // read returned 0: nothing more comes from it
    bool shut = false;      // we shut down writing to it
    bool held = false;      // bytes for it wait in the worker's buffer (Worker::held)
    OutBuffer out;          // bytes for it that its socket has not taken yet
  };
  static const char* name(Side s) noexcept { return s == client ? "client" : "upstream"; }
  static Side other(Side s) noexcept { return s == client ? upstream : client; }
  std::uint64_t tag(Side s) const noexcept {
    return reinterpret_cast<std::uint64_t>(this) | static_cast<std::uint64_t>(s);
  }

  void connect_next();
  void connect_failed(const std::string& message);
  void connected();
  void pump();
  bool read_from(Side s);
  bool flush(Side to);
  void pass_eof(Side to);
  bool done_both_ways() const noexcept;
  void set_reason(std::string reason) {
    if (reason_.empty()) reason_ = std::move(reason);
  }
  void fail(std::string reason) {
    set_reason(std::move(reason));
    finish();
  }
  void finish();
  void inspection_stopped();
  Worker& worker_;
  detail::ServerState& server_;
  Peer peers_[2];
  std::uint64_t id_;
  std::string clientName_;
  std::string upstreamName_;
  std::vector<SockAddr> addresses_;  // to try, in order
  std::size_t nextAddress_ = 0;
  int lastConnectError_ = 0;
  std::unique_ptr<Inspector> inspector_;
  std::string reason_;
};

// ---- ServerState ---------------------------------------------------------------

detail::ServerState::ServerState(ProxyConfig c, monitor::EventOutput& o, monitor::Stats& s,
                                 InspectorFactory f, Diagnostics d)
    : config(std::move(c)), out(o), stats(s), inspectors(std::move(f)), diag(std::move(d)) {
  if (!inspectors) inspectors = null_inspector_factory();
  if (!diag) diag = [](std::string_view) {};
  trackerOptions = config.tracker;
  trackerOptions.maxMessageSize = config.maxMessageSize;
  if (config.bufferSize == 0) config.bufferSize = 64 * 1024;
  upstreamAddress = numeric_address(config.upstream.host, config.upstream.port);
  upstreamName = config.upstream.to_string();
  const unsigned n = config.ioThreads == 0 ? 1 : config.ioThreads;
  for (unsigned i = 0; i < n; ++i) workers.push_back(std::make_unique<Worker>(*this));
}

detail::ServerState::~ServerState() {
  // The resolver first: its answers are posted to workers.
  if (resolverContext) {
    resolverGuard.reset();
    resolverContext->stop();
    if (resolverThread.joinable()) resolverThread.join();
    resolverContext.reset();
  }
  // Workers close what is still open (their inspectors report it).
  for (auto it = workers.rbegin(); it != workers.rend(); ++it) it->reset();
  if (listenFd >= 0) ::close(listenFd);
}

bool detail::ServerState::accept_ready() {
  SockAddr peer;
  peer.length = sizeof peer.storage;
  const int fd = ::accept4(listenFd, reinterpret_cast<sockaddr*>(&peer.storage), &peer.length,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EINTR || err == ECONNABORTED) return true;  // the next one may be there
    if (err == EAGAIN || err == EWOULDBLOCK) return false;
    // EMFILE and friends: say so, back off a little instead of spinning.
    diag("varanus: accept failed: " + errno_text(err));
    Worker& w0 = *workers.front();
    ::epoll_ctl(w0.epfd, EPOLL_CTL_DEL, listenFd, nullptr);
    w0.listenPausedUntil = steady::now() + std::chrono::milliseconds(100);
    return false;
  }
  set_nodelay(fd);
  stats.add(stats.connectionsAccepted);
  stats.add(stats.connectionsActive);
  active.fetch_add(1, std::memory_order_relaxed);
  Worker& w = *workers[nextWorker++ % workers.size()];
  if (&w == workers.front().get()) {
    w.add_session(fd, peer);
  } else {
    w.post_connection(fd, peer);
  }
  return true;
}

// ---- Worker ----------------------------------------------------------------------

Worker::Worker(detail::ServerState& s) : server(s) {
  epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) throw_errno(errno, "epoll_create1");
  wakeFd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd < 0) {
    const int err = errno;
    ::close(epfd);
    throw_errno(err, "eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  ::epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFd, &ev);
  // Left uninitialised: a read fills what is used; untouched pages cost no
  // resident memory.
  buffer = std::make_unique_for_overwrite<std::uint8_t[]>(kReadAreas * server.config.bufferSize);
}

Worker::~Worker() {
  // Server destroyed with connections open: close them (their inspectors
  // still report the close), and the sockets handed over but never started.
  close_all("proxy stopped");
  reap();
  for (const Incoming& c : incoming) {
    ::close(c.fd);
    server.active.fetch_sub(1, std::memory_order_relaxed);
    server.stats.add(server.stats.connectionsActive, -1);
  }
  ::close(wakeFd);
  ::close(epfd);
}

void Worker::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wakeFd, &one, sizeof one);
}

void Worker::post(std::function<void()> task) {
  {
    std::lock_guard lock(tasksMutex);
    tasks.push_back(std::move(task));
  }
  wake();
}

void Worker::post_connection(int fd, const SockAddr& peer) {
  {
    std::lock_guard lock(tasksMutex);
    incoming.push_back({fd, peer});
  }
  wake();
}

void Worker::run_tasks() {
  std::uint64_t count = 0;
  [[maybe_unused]] auto n = ::read(wakeFd, &count, sizeof count);
  std::vector<Incoming> arrived;
  std::vector<std::function<void()>> todo;
  {
    std::lock_guard lock(tasksMutex);
    arrived.swap(incoming);
    todo.swap(tasks);
  }
  for (const Incoming& c : arrived) add_session(c.fd, c.peer);
  for (auto& t : todo) t();
}

void Worker::link(Session* s) {
  s->next = sessions;
  if (sessions) sessions->prev = s;
  sessions = s;
  ++sessionCount;
}

void Worker::unlink(Session* s) {
  if (s->prev) s->prev->next = s->next;
  if (s->next) s->next->prev = s->prev;
  if (sessions == s) sessions = s->next;
  s->prev = s->next = nullptr;
  --sessionCount;
}

void Worker::timer_add(Session* s) {
  s->timed = true;
  s->deadline = steady::now() + server.config.connectTimeout;
  s->timerPrev = connectingTail;
  s->timerNext = nullptr;
  if (connectingTail) connectingTail->timerNext = s;
  connectingTail = s;
  if (!connectingHead) connectingHead = s;
}

void Worker::timer_remove(Session* s) {
  if (!s->timed) return;
  s->timed = false;
  if (s->timerPrev) s->timerPrev->timerNext = s->timerNext;
  if (s->timerNext) s->timerNext->timerPrev = s->timerPrev;
  if (connectingHead == s) connectingHead = s->timerNext;
  if (connectingTail == s) connectingTail = s->timerPrev;
  s->timerPrev = s->timerNext = nullptr;
}

void Worker::add_session(int fd, const SockAddr& peer) {
  const std::uint64_t id = server.nextConnectionId.fetch_add(1, std::memory_order_relaxed);
  auto* s = new Session(*this, fd, id, address_string(peer.get()));
  link(s);
  if (server.stopRequested.load(std::memory_order_relaxed)) {
    // Accepted just as the server began to stop: nothing relayed yet.
    s->shutdown_now("proxy stopped");
  } else {
    s->start();
  }
}

void Worker::begin_stop(std::chrono::milliseconds grace) {
  if (stopping) return;
  stopping = true;
  graceDeadline = steady::now() + grace;
  if (grace.count() <= 0) {
    close_all("proxy stopped: grace period over");
  } else {
    close_idle();
  }
}

void Worker::close_idle() {
  for (Session* s = sessions; s; s = s->next)
    if (s->idle()) s->shutdown_now("proxy stopped: connection idle");
}

void Worker::close_all(std::string_view reason) {
  for (Session* s = sessions; s; s = s->next)
    if (s->state != Session::State::done) s->shutdown_now(reason);
}

void Worker::reap() {
  for (Session* s : finished) {
    if (s->queued) std::erase(again, s);
    unlink(s);
    delete s;
  }
  finished.clear();
}

int Worker::next_timeout_ms(steady::time_point now) const {
  std::optional<steady::time_point> due;
  auto consider = [&](std::optional<steady::time_point> t) {
    if (t && (!due || *t < *due)) due = t;
  };
  if (connectingHead) consider(connectingHead->deadline);
  if (stopping && sessionCount > 0) consider(graceDeadline);
  consider(listenPausedUntil);
  if (!due) return -1;
  if (*due <= now) return 0;
  // Round up: waking a little late is fine, waking early only loops.
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(*due - now).count();
  return static_cast<int>((us + 999) / 1000);
}

void Worker::expire(steady::time_point now) {
  while (connectingHead && connectingHead->deadline <= now) {
    Session* s = connectingHead;
    timer_remove(s);
    s->connect_timed_out();
  }
  if (stopping && graceDeadline && *graceDeadline <= now) {
    close_all("proxy stopped: grace period over");
  }
  if (listenPausedUntil && *listenPausedUntil <= now) {
    listenPausedUntil.reset();
    if (server.listenFd >= 0) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenTag;
      ::epoll_ctl(epfd, EPOLL_CTL_ADD, server.listenFd, &ev);
    }
  }
}

int Worker::wait(epoll_event* events, int max, int timeout) {
  const auto window = server.config.busyPoll;
  if (timeout == 0 || window.count() == 0) return ::epoll_wait(epfd, events, max, timeout);
  if (busyCredit >= kBusyCreditToPoll) {
    // The last sleeps were short: poll for up to the window before sleeping.
    const auto until = steady::now() + window;
    int n;
    for (;;) {
      n = ::epoll_wait(epfd, events, max, 0);
      const bool interrupted = n < 0 && errno == EINTR;
      if ((n != 0 && !interrupted) || steady::now() >= until) break;
      ::sched_yield();  // let the client or upstream we wait for have the core
    }
    if (n > 0) {
      busyCredit = std::min(busyCredit + 1, kBusyCreditMax);
      ++busyHits;
      return n;
    }
    if (n < 0) return n;
    busyCredit = 0;
    ++busyMisses;
  }
  // About to sleep: what the polls counted reaches /metrics before the
  // proxy goes quiet, and costs nothing while it polls.
  flush_busy_counts();
  const auto before = steady::now();
  const int n = ::epoll_wait(epfd, events, max, timeout);
  // Woken within the window: a poll would have caught it without a sleep.
  const bool shortSleep = n > 0 && steady::now() - before < window;
  busyCredit = shortSleep ? std::min(busyCredit + 1, kBusyCreditMax) : 0;
  return n;
}

void Worker::flush_busy_counts() noexcept {
  if (busyHits) server.stats.add(server.stats.busyPollHits, std::exchange(busyHits, 0));
  if (busyMisses) server.stats.add(server.stats.busyPollMisses, std::exchange(busyMisses, 0));
}

void Worker::run() {
  constexpr int kEvents = 256;
  constexpr int kReadRounds = 8;
  epoll_event events[kEvents];
  std::vector<Session*> retry;
  for (;;) {
    if (stopping && sessionCount == 0 && server.listenerClosed.load(std::memory_order_acquire)) {
      // Sockets handed over before the listener closed may still be queued.
      run_tasks();
      reap();
      if (sessionCount == 0) {
        flush_busy_counts();
        return;
      }
    }
    const int timeout = again.empty() ? next_timeout_ms(steady::now()) : 0;
    const int n = wait(events, kEvents, timeout);
    if (n < 0 && errno != EINTR) throw_errno(errno, "epoll_wait");
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kWakeTag) {
        wake = true;
      } else if (tag == kListenTag) {
        // Level-triggered: whatever is left past the batch is reported again.
        for (int k = 0; k < kAcceptBatch && server.listenFd >= 0 && server.accept_ready(); ++k) {
        }
      } else {
        auto* s = reinterpret_cast<Session*>(tag & ~std::uint64_t{1});
        if (s->state != Session::State::done)
          s->on_event(static_cast<Session::Side>(tag & 1), events[i].events);
      }
    }
    send_held();
    // Sessions that filled the whole buffer (or left a FIN unread) read
    // again after everyone else had a turn, a few rounds before the next
    // epoll_wait: a large message flows without a syscall per buffer that
    // only says "nothing new".
    for (int round = 0; round < kReadRounds && !again.empty(); ++round) {
      retry.swap(again);
      for (Session* s : retry)
        if (s->state != Session::State::done) s->resume();
      retry.clear();
      send_held();
    }
    end_batch();
    if (wake) run_tasks();
    expire(steady::now());
    end_batch();  // what a task or a timeout read (an upstream that connected, ...)
    // Stopping: a connection whose last request was answered ends now; only
    // those with requests in flight use the grace period.
    if (stopping) close_idle();
    reap();
  }
}

// ---- Session ----------------------------------------------------------------------

Session::Session(Worker& worker, int clientFd, std::uint64_t id, std::string clientName)
    : worker_(worker), server_(worker.server), id_(id), clientName_(std::move(clientName)) {
  peers_[client].fd = clientFd;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = tag(client);
  ::epoll_ctl(worker_.epfd, EPOLL_CTL_ADD, clientFd, &ev);
}

Session::~Session() {
  for (Peer& p : peers_)
    if (p.fd >= 0) ::close(p.fd);
  server_.active.fetch_sub(1, std::memory_order_relaxed);
  server_.stats.add(server_.stats.connectionsActive, -1);
}

void Session::start() {
  if (server_.upstreamAddress) {
    addresses_.push_back(*server_.upstreamAddress);
    worker_.timer_add(this);
    connect_next();
    return;
  }
  // A host name: resolve on the resolver thread, come back here with the
  // addresses. The session may be gone by then (grace period, timeout): the
  // answer looks for it by id among the sessions still waiting on their
  // connect timeout (a short list), and finds it or not.
  worker_.timer_add(this);
  Worker* w = &worker_;
  const std::uint64_t id = id_;
  auto resolver = std::make_shared<boost::asio::ip::tcp::resolver>(*server_.resolverContext);
  resolver->async_resolve(
      server_.config.upstream.host, std::to_string(server_.config.upstream.port),
      [resolver, w, id](const boost::system::error_code& ec,
                        boost::asio::ip::tcp::resolver::results_type results) {
        std::vector<SockAddr> found;
        for (const auto& entry : results) {
          SockAddr a;
          const auto ep = entry.endpoint();
          std::memcpy(&a.storage, ep.data(), ep.size());
          a.length = static_cast<socklen_t>(ep.size());
          found.push_back(a);
        }
        const int err = ec ? ec.value() : 0;
        std::string message = ec ? ec.message() : std::string();
        w->post([w, id, found = std::move(found), err, message = std::move(message)]() mutable {
          for (Session* s = w->connectingHead; s; s = s->timerNext) {
            if (s->id_ == id && s->state == State::connecting) {
              s->resolved(std::move(found), err, message);
              return;
            }
          }
        });
      });
}

void Session::resolved(std::vector<SockAddr> addresses, int gaiError, std::string gaiMessage) {
  if (gaiError != 0 || addresses.empty()) {
    connect_failed(gaiMessage.empty() ? "no address found" : gaiMessage);
    return;
  }
  addresses_ = std::move(addresses);
  connect_next();
}

void Session::connect_next() {
  Peer& up = peers_[upstream];
  while (nextAddress_ < addresses_.size()) {
    if (up.fd >= 0) {
      ::close(up.fd);  // a failed attempt (also leaves the epoll set)
      up.fd = -1;
    }
    const SockAddr& a = addresses_[nextAddress_++];
    const int fd = ::socket(a.get()->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      lastConnectError_ = errno;
      continue;
    }
    up.fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = tag(upstream);
    ::epoll_ctl(worker_.epfd, EPOLL_CTL_ADD, fd, &ev);
    if (::connect(fd, a.get(), a.length) == 0) {
      upstreamName_ = address_string(a.get());
      connected();
      return;
    }
    if (errno == EINPROGRESS) {
      upstreamName_ = address_string(a.get());
      return;  // EPOLLOUT (or EPOLLERR) says how it went
    }
    lastConnectError_ = errno;
  }
  connect_failed(errno_text(lastConnectError_));
}

void Session::connect_timed_out() {
  if (state != State::connecting) return;
  connect_failed(errno_text(ETIMEDOUT));
}

void Session::connect_failed(const std::string& message) {
  server_.stats.add(server_.stats.upstreamConnectFailures);
  server_.stats.upstreamUp.store(0, std::memory_order_relaxed);
  server_.diag("varanus: upstream " + server_.upstreamName + " unreachable: " + message +
               " (client " + clientName_ + " closed)");
  finish();  // never relayed: no inspector to tell
}

void Session::connected() {
  worker_.timer_remove(this);
  server_.stats.upstreamUp.store(1, std::memory_order_relaxed);
  state = State::relaying;
  set_nodelay(peers_[upstream].fd);
  auto info = std::make_shared<monitor::ConnectionInfo>();
  info->connectionId = id_;
  info->client = clientName_;
  info->server = upstreamName_;
  inspector_ = server_.inspectors(
      InspectorContext{std::move(info), server_.out, server_.stats, server_.trackerOptions});
  if (!inspector_) inspector_ = std::make_unique<NullInspector>();
  inspector_->opened(monitor::Clock::now());
  pump();  // the client may have written already
}

void Session::on_event(Side side, std::uint32_t events) {
  Peer& p = peers_[side];
  // Remembered in every state: an upstream may answer in the same event
  // that says its connect completed, and with edge triggering no second
  // event would tell.
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) p.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) p.rdhup = true;
  if (state == State::connecting) {
    if (side == upstream && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
      // Writable and no error: connected (no getsockopt needed for that).
      int err = 0;
      if (events & (EPOLLERR | EPOLLHUP)) {
        socklen_t len = sizeof err;
        if (::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err == 0) err = ECONNREFUSED;  // hung up without an error code
      }
      if (err == 0) {
        connected();
      } else {
        // Flags of the failed attempt do not carry over to the next one.
        p.readable = p.rdhup = false;
        lastConnectError_ = err;
        connect_next();
      }
      return;
    }
    return;  // the client wrote (or closed) before the upstream is up: remembered
  }
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) p.writable = true;
  pump();
}

void Session::pump() {
  for (Side to : {client, upstream}) {
    if (!peers_[to].out.empty() && peers_[to].writable) {
      if (!flush(to)) return;  // the session ended
    }
  }
  for (Side from : {client, upstream}) {
    Peer& p = peers_[from];
    const Peer& dst = peers_[other(from)];
    if (p.readable && !p.eof && dst.out.empty() && !dst.held) {
      if (!read_from(from)) return;
    }
  }
  if (done_both_ways()) finish();
}

bool Session::read_from(Side from) {
  Peer& src = peers_[from];
  const Side to = other(from);
  Peer& dst = peers_[to];
  std::uint8_t* buf = worker_.read_area();
  if (state == State::done) return false;  // ended by what the batch sent
  const std::size_t size = server_.config.bufferSize;
  const ssize_t n = ::recv(src.fd, buf, size, 0);
  if (n < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      src.readable = false;
      return true;
    }
    if (err == EINTR) {
      if (!queued) {
        queued = true;
        worker_.again.push_back(this);
      }
      return true;
    }
    fail(std::string(name(from)) + " reset: " + errno_text(err));
    return false;
  }
  if (n == 0) {
    src.readable = false;
    src.eof = true;
    set_reason(std::string(name(from)) + " closed");
    pass_eof(to);
    return true;
  }
  const auto got = static_cast<std::size_t>(n);
  if (got == size || src.rdhup) {
    // Maybe more (a full buffer), or the FIN is queued behind this data
    // with no edge to come: read again after the others had a turn.
    if (!queued) {
      queued = true;
      worker_.again.push_back(this);
    }
  } else {
    src.readable = false;  // a short read: drained, the next byte brings an edge
  }
  // Forwarded and inspected at the end of the batch (Worker::hold, defer),
  // after every ready socket was read: the peer is woken once for all of
  // them, and no message waits behind the Tracker's microsecond on another.
  // Inspections run in read order on this thread, so a reply read in the
  // same batch is still inspected after its request. The time is taken when
  // the bytes were read. This side is not read again before they are sent.
  const bool inspect = inspector_->inspecting();
  const monitor::Clock readAt = inspect ? monitor::Clock::now() : monitor::Clock{};
  server_.stats.add(from == client ? server_.stats.bytesFromClient : server_.stats.bytesFromServer,
                    static_cast<std::int64_t>(got));
  dst.held = true;
  worker_.hold(this, buf, got, to == upstream);
  if (inspect) worker_.defer(this, buf, got, from == client, readAt);
  return true;
}

void Session::send_held(Side to, std::span<const std::uint8_t> bytes) {
  Peer& dst = peers_[to];
  dst.held = false;
  // dst.out is empty: the source was read only with nothing waiting for dst.
  const Sent sent = send_some(dst.fd, bytes);
  if (sent.error != 0)
    return fail(std::string(name(to)) + " write failed: " + errno_text(sent.error));
  if (sent.bytes < bytes.size()) {
    // The rest waits for EPOLLOUT; the source stays unread until then.
    dst.writable = false;
    dst.out.assign(bytes.subspan(sent.bytes));
    return;
  }
  const Side from = other(to);
  Peer& src = peers_[from];
  if (src.eof) pass_eof(to);
  // Left readable while this was held (a full buffer, or a FIN behind the
  // data): read again after the others had a turn.
  if (src.readable && !src.eof && !queued) {
    queued = true;
    worker_.again.push_back(this);
  }
  if (done_both_ways()) finish();
}

bool Session::flush(Side to) {
  Peer& dst = peers_[to];
  const Sent sent = send_some(dst.fd, dst.out.pending());
  dst.out.consume(sent.bytes);
  if (sent.error != 0) {
    fail(std::string(name(to)) + " write failed: " + errno_text(sent.error));
    return false;
  }
  if (!dst.out.empty()) {
    dst.writable = false;
    return true;
  }
  // Flushed: an EOF that came from the other side can be passed on now.
  if (peers_[other(to)].eof) pass_eof(to);
  return true;
}

void Session::pass_eof(Side to) {
  Peer& dst = peers_[to];
  if (dst.shut || dst.held || !dst.out.empty()) return;  // after the send or flush
  dst.shut = true;
  // When `to` has said EOF too (and nothing waits for it), this EOF ends the
  // connection: close() right after sends the FIN, a shutdown() is one
  // syscall for nothing (a connection churn pays it every time).
  if (dst.eof && peers_[other(to)].out.empty()) return;
  ::shutdown(dst.fd, SHUT_WR);
}

bool Session::done_both_ways() const noexcept {
  return peers_[client].eof && peers_[upstream].eof && peers_[client].out.empty() &&
         peers_[upstream].out.empty() && !peers_[client].held && !peers_[upstream].held;
}

void Session::finish() {
  if (state == State::done) return;
  const bool wasRelaying = state == State::relaying;
  state = State::done;
  worker_.timer_remove(this);
  // Bytes read before the end are passed on, as far as the sockets take them.
  if (peers_[client].held || peers_[upstream].held) {
    for (const Worker::Held& h : worker_.held)
      if (h.session == this)
        send_some(peers_[h.toUpstream ? upstream : client].fd,
                  {worker_.buffer.get() + h.offset, h.size});
  }
  for (Peer& p : peers_) {
    if (p.fd >= 0) ::close(p.fd);  // also removes it from the epoll set
    p.fd = -1;
  }
  if (wasRelaying) {
    worker_.inspect_deferred();  // what was read before the close comes first
    inspector_->closed(reason_.empty() ? std::string_view("closed") : std::string_view(reason_),
                       monitor::Clock::now());
  }
  worker_.finished.push_back(this);
}

void Session::inspect(Side from, std::span<const std::uint8_t> bytes, monitor::Clock readAt) {
  if (!inspector_->inspecting()) return;  // stopped by an earlier read
  if (from == client) {
    inspector_->client_data(bytes, readAt);
  } else {
    inspector_->server_data(bytes, readAt);
  }
  if (!inspector_->inspecting()) inspection_stopped();
}

void Worker::send_held() {
  // A send never reads: nothing is added to `held` while it is walked.
  for (std::size_t i = 0; i < held.size(); ++i) {
    const Held h = held[i];
    if (h.session->state != Session::State::done)
      h.session->send_held(h.toUpstream ? Session::upstream : Session::client,
                           {buffer.get() + h.offset, h.size});
  }
  held.clear();
  if (deferred.empty()) bufferUsed = 0;
}

void Worker::inspect_deferred() {
  // An inspection never reads, sends or ends a session: the list stays put.
  for (const Deferred& d : deferred)
    d.session->inspect(d.fromClient ? Session::client : Session::upstream,
                       {buffer.get() + d.offset, d.size}, d.readAt);
  deferred.clear();
  if (held.empty()) bufferUsed = 0;
}

void Session::inspection_stopped() {
  const std::string_view why = inspector_->stop_reason();
  const bool oversized = inspector_->stop_cause() == monitor::StopCause::oversized;
  server_.stats.add(oversized ? server_.stats.oversizedFrames : server_.stats.decodeErrors);
  server_.diag("varanus: connection " + std::to_string(id_) + " (client " + clientName_ +
               "): inspection stopped, relaying goes on: " + std::string(why));
}

// ---- Server -----------------------------------------------------------------------

Server::Server(ProxyConfig config, monitor::EventOutput& out, monitor::Stats& stats,
               InspectorFactory inspectors, Diagnostics diagnostics)
    : impl_(std::make_unique<detail::ServerState>(std::move(config), out, stats,
                                                  std::move(inspectors), std::move(diagnostics))) {}

Server::~Server() = default;  // ~ServerState: resolver, then workers, then listener

Endpoint Server::start() {
  detail::ServerState& s = *impl_;
  if (s.started) throw std::logic_error("varanus::proxy::Server::start called twice");
  SockAddr addr;
  if (auto literal = numeric_address(s.config.listen.host, s.config.listen.port)) {
    addr = *literal;
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(s.config.listen.port);
    if (const int rc = ::getaddrinfo(s.config.listen.host.c_str(), port.c_str(), &hints, &res);
        rc != 0) {
      throw std::runtime_error("cannot resolve " + s.config.listen.host + ": " +
                               ::gai_strerror(rc));
    }
    std::memcpy(&addr.storage, res->ai_addr, res->ai_addrlen);
    addr.length = res->ai_addrlen;
    ::freeaddrinfo(res);
  }
  const int fd = ::socket(addr.get()->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno(errno, "socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, addr.get(), addr.length) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const int err = errno;
    ::close(fd);
    throw_errno(err, "bind");
  }
  SockAddr bound;
  bound.length = sizeof bound.storage;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound.storage), &bound.length);
  s.listenFd = fd;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  ::epoll_ctl(s.workers.front()->epfd, EPOLL_CTL_ADD, fd, &ev);
  if (!s.upstreamAddress) {
    s.resolverContext = std::make_unique<boost::asio::io_context>(1);
    s.resolverGuard.emplace(s.resolverContext->get_executor());
    s.resolverThread = std::thread([ctx = s.resolverContext.get()] { ctx->run(); });
  }
  s.started = true;
  auto [host, port] = host_and_port(bound.get());
  return Endpoint{std::move(host), port};
}

void Server::run() {
  detail::ServerState& s = *impl_;
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < s.workers.size(); ++i) {
    threads.emplace_back([w = s.workers[i].get()] { w->run(); });
  }
  s.workers.front()->run();
  for (auto& t : threads) t.join();
}

void Server::stop(std::chrono::milliseconds grace) {
  detail::ServerState& s = *impl_;
  if (s.stopRequested.exchange(true)) return;
  Worker* w0 = s.workers.front().get();
  w0->post([&s, w0] {
    if (s.listenFd >= 0) {
      ::epoll_ctl(w0->epfd, EPOLL_CTL_DEL, s.listenFd, nullptr);
      ::close(s.listenFd);
      s.listenFd = -1;
    }
    w0->listenPausedUntil.reset();
    s.listenerClosed.store(true, std::memory_order_release);
    for (auto& w : s.workers) w->wake();  // a stopping worker may end now
  });
  for (auto& w : s.workers) {
    w->post([w = w.get(), grace] { w->begin_stop(grace); });
  }
}

void Server::stop() {
  stop(impl_->config.gracePeriod);
}

std::size_t Server::active_connections() const noexcept {
  return impl_->active.load(std::memory_order_relaxed);
}

}  // namespace varanus::proxy
