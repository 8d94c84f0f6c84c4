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
// Per direction (client -> upstream, upstream -> client) a Flow says where
// the bytes read from its source stand; each socket keeps apart what the
// last epoll edges said about it (readable, rdhup, writable: readiness, like
// the per-fd "ready" bits of haproxy's fd.c). The source of a direction is
// read only in state open.
//
//   Flow     meaning                                            source read
//   open     nothing waits for the destination                  when readable
//   held     a read's bytes wait in the worker's buffer for     no
//            the end of the batch (Worker::send_held)
//   blocked  the destination's socket took part of them; the    no
//            rest waits in the direction's OutBuffer
//   closed   the source said EOF, and the destination was told  never again
//            (shutdown(SHUT_WR), or the close when both are closed)
//
//   event (transition)                          from       to
//   read n > 0 bytes           (received)       open       held
//   read EOF                   (source_ended)   open       closed
//   batch end, all sent        (delivered)      held       open
//   batch end, short send      (backlogged)     held       blocked
//   EPOLLOUT, OutBuffer empty  (delivered)      blocked    open
//   read error, send error, grace over, stop:   the session ends (end())
//
// A session ends when both directions are closed, or at the first error;
// the first cause seen (an EndReason: "client closed", "upstream reset:
// ...", ...) is what Inspector::closed hears, and it fails every pending
// request with it. Ending closes both sockets at once; the inspector is told
// when the worker reaps the session, after the batch's inspections, so that
// what was read before the end is inspected first.
//
// In front of a replica set (ProxyConfig::members) there is a Listener per
// member, each with its own Upstream; workers[0] accepts on all of them.
// add_member binds a new one at once, from any thread (a hello reply
// naming a member without a listener, or the topology monitor), and hands
// its epoll registration to workers[0]. In replica-set mode each Session
// runs its bytes through a wire::HelloReplyStream: client bytes only to
// note hello requestIDs; upstream bytes either pass as read (the usual
// held-and-sent path) or, when a hello reply is in them, are replaced by
// the stream's output (the reply held until whole, then rewritten), sent
// at once (nothing of that direction waits: it was read in state open).
// The inspector always sees what the server sent.
//
// Batches: reads, sends and inspections happen only where Worker::run puts
// them (read every ready socket, send_held, the again rounds, end_batch,
// reap); no helper flushes the batch behind its caller's back. A read that
// finds the batch's buffer full waits in the again list for the next round.
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
#include <cstdio>
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

#include "varanus/proxy/tls.hpp"
#include "varanus/wire/hello_stream.hpp"
#include "varanus/wire/host_port.hpp"
#include "varanus/wire/sniff.hpp"

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

/// "2 s", "0.5 s": a configured bound, for a reason or a diagnostic.
std::string seconds_text(std::chrono::milliseconds d) {
  const auto ms = d.count();
  std::string text = std::to_string(ms / 1000);
  if (ms % 1000 != 0) {
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03lld", static_cast<long long>(ms % 1000));
    std::string f = frac;
    while (f.back() == '0') f.pop_back();
    text += f;
  }
  return text + " s";
}

bool out_of_descriptors(int err) noexcept {
  return err == EMFILE || err == ENFILE;
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

// epoll user data: a Session pointer with the side in the low bit, a
// Listener pointer with kListenBit set (both are 8-aligned), or the wake
// tag (pointers are never this small).
constexpr std::uint64_t kWakeTag = 0;
constexpr std::uint64_t kListenBit = 4;
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

/// Where one listener's connections go: the configured upstream, or one
/// member of a replica set (or one mongos).
struct Upstream {
  Endpoint endpoint;
  std::optional<SockAddr> address;  // when the host is an IP literal
  std::string name;                 // "host:port" as configured
  explicit Upstream(Endpoint ep)
      : endpoint(std::move(ep)),
        address(numeric_address(endpoint.host, endpoint.port)),
        name(endpoint.to_string()) {}
};
using UpstreamPtr = std::shared_ptr<const Upstream>;

/// One listening socket and the upstream its clients reach. Owned by
/// ServerState; its epoll registration belongs to workers[0].
struct Listener {
  int fd = -1;
  UpstreamPtr upstream;
  std::string member;       // the member's address (lowercase), empty for the single upstream
  std::string advertised;   // "host:port" drivers are told (member listeners)
  bool registered = false;  // in workers[0]'s epoll set
  std::uint64_t tag() const noexcept { return reinterpret_cast<std::uint64_t>(this) | kListenBit; }
};

/// Why a session ended: a cause to count and branch on, and the words
/// Inspector::closed (and so the connectionClosed event) gets.
enum class EndCause : std::uint8_t {
  closed,                ///< `side` said EOF (both did, in the end)
  reset,                 ///< a read from `side` failed: detail = errno text
  write_failed,          ///< a send to `side` failed: detail = errno text
  stopped,               ///< the server stopped (or was destroyed)
  stopped_idle,          ///< the server stopped and nothing was in flight
  grace_over,            ///< the server stopped; the grace period ran out
  half_close_timeout,    ///< the client closed, the upstream did not finish: detail = the bound
  idle_timeout,          ///< no byte either way for idleTimeout: detail = the bound
  upstream_unreachable,  ///< never relayed: detail = why
  no_descriptors,        ///< never relayed: no file descriptor left for the upstream socket
  tls_handshake,         ///< `side`'s TLS handshake failed: detail = OpenSSL's reason
  tls_error,             ///< TLS failed on `side` after the handshake: detail = why
  tls_timeout,           ///< a handshake did not finish within connectTimeout
  tls_at_plaintext,      ///< the client began a TLS handshake at a plaintext listener
};

struct EndReason {
  EndCause cause = EndCause::closed;
  bool clientSide = true;  ///< which side `closed`, `reset` and `write_failed` name
  std::string detail;

  std::string text() const {
    const std::string side = clientSide ? "client" : "upstream";
    switch (cause) {
      case EndCause::closed:
        return side + " closed";
      case EndCause::reset:
        return side + " reset: " + detail;
      case EndCause::write_failed:
        return side + " write failed: " + detail;
      case EndCause::stopped:
        return "proxy stopped";
      case EndCause::stopped_idle:
        return "proxy stopped: connection idle";
      case EndCause::grace_over:
        return "proxy stopped: grace period over";
      case EndCause::half_close_timeout:
        return "client closed; the upstream did not finish within " + detail;
      case EndCause::idle_timeout:
        return "idle timeout: no traffic for " + detail;
      case EndCause::upstream_unreachable:
        return "upstream unreachable: " + detail;
      case EndCause::no_descriptors:
        return "out of file descriptors: " + detail;
      case EndCause::tls_handshake:
        return side + " TLS handshake failed: " + detail;
      case EndCause::tls_error:
        return side + " TLS error: " + detail;
      case EndCause::tls_timeout:
        return side + " TLS handshake timed out after " + detail;
      case EndCause::tls_at_plaintext:
        return "client speaks TLS, but this listener is plaintext (configure --tls-cert and "
               "--tls-key, or connect without tls)";
    }
    return "closed";
  }
};

namespace detail {
struct ServerState {
  ProxyConfig config;
  monitor::EventOutput& out;
  monitor::Stats& stats;
  InspectorFactory inspectors;
  Diagnostics diag;
  std::shared_ptr<TlsContextHolder> clientTls;    // null: the client leg is plaintext
  std::shared_ptr<TlsContextHolder> upstreamTls;  // null: the upstream leg is plaintext

  std::vector<std::unique_ptr<Worker>> workers;
  // Every listener, in opening order; never shrinks while the server
  // lives (a retired member's listener keeps its entry, fd -1), so the
  // pointers in epoll tags stay valid. Guarded by membersMutex; accept
  // and epoll registration happen on workers[0] only.
  std::vector<std::unique_ptr<Listener>> listeners;
  std::size_t nextWorker = 0;  // workers[0]'s thread only

  // Replica set / several mongos (config.members.enabled): a listener per
  // member, opened at start for the seeds and later for every member a
  // hello reply names (add_member), from any thread.
  mutable std::mutex membersMutex;
  wire::AddressMap memberAddresses;  // member -> advertised address
  std::uint16_t nextMemberPort = 0;  // 0: free ports
  std::string advertiseHost;
  bool rewriteHello = false;
  wire::HelloReplyStream::Addresses memberLookup;  // for the sessions' hello streams
  std::string add_member(std::string_view member);
  void remove_member(std::string_view member);
  wire::AddressMap member_addresses() const;
  /// Binds a listener for `upstream` at `at` (port 0: free), registers it
  /// with workers[0] (at once when called there before run(), else posted).
  Listener& open_listener(const Endpoint& at, UpstreamPtr upstream, std::string member);
  void register_listener(Listener& l);
  void close_listeners();
  // Set by workers[0] once the listener is closed: no connection will be
  // handed to another worker after that, so a stopping worker may end.
  std::atomic<bool> listenerClosed{false};
  std::atomic<std::uint64_t> nextConnectionId{1};
  std::atomic<std::size_t> active{0};
  std::atomic<bool> stopRequested{false};
  bool started = false;
  bool acceptPausedSaid = false;  // workers[0]'s thread only

  // Lines about single connections (upstream unreachable, refused, ...)
  // are rate-limited: a burst a second, then counted and said with the
  // next line let through. An outage with thousands of clients does not
  // flood stderr.
  static constexpr int kDiagBurst = 10;
  std::mutex diagMutex;
  steady::time_point diagWindow;
  int diagSaid = 0;
  std::int64_t diagLeftOut = 0;
  void diag_limited(const std::string& line);

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
  bool accept_ready(Listener& l);
  /// Out of descriptors: every listener leaves epoll for a while.
  void pause_listeners();
};
}  // namespace detail

/// One client connection counted open (ServerState::active and
/// Stats::connectionsActive), from accept until its socket is closed:
/// held by the Session, or by the hand-over queue before that.
class ActiveConnection {
 public:
  explicit ActiveConnection(detail::ServerState& s) noexcept : s_(&s) {
    s.stats.add(s.stats.connectionsAccepted);
    s.stats.add(s.stats.connectionsActive);
    s.active.fetch_add(1, std::memory_order_relaxed);
  }
  ActiveConnection(ActiveConnection&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  ActiveConnection& operator=(ActiveConnection&&) = delete;
  ~ActiveConnection() {
    if (!s_) return;
    s_->active.fetch_sub(1, std::memory_order_relaxed);
    s_->stats.add(s_->stats.connectionsActive, -1);
  }

 private:
  detail::ServerState* s_;
};

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
    bool fromClient;
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
  /// Room left for one more bufferSize read in this batch.
  bool has_room() const noexcept {
    return kReadAreas * server.config.bufferSize - bufferUsed >= server.config.bufferSize;
  }
  /// Where the next read goes; nullptr when the batch's buffer is full (the
  /// reader waits in `again` until the loop has ended the batch).
  std::uint8_t* read_area() noexcept { return has_room() ? buffer.get() + bufferUsed : nullptr; }
  std::uint32_t keep(const std::uint8_t* at, std::size_t size) {
    const auto offset = static_cast<std::uint32_t>(at - buffer.get());
    bufferUsed = std::max(bufferUsed, offset + size);
    return offset;
  }
  /// Keeps `size` bytes just read at `at` (from read_area()) to be sent to
  /// the other side at the end of the batch.
  void hold(Session* s, const std::uint8_t* at, std::size_t size, bool fromClient) {
    held.push_back({s, keep(at, size), static_cast<std::uint32_t>(size), fromClient});
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

  // Sessions (intrusive list), those waiting on a deadline (below), those
  // with a side left readable after a full buffer, and those finished in
  // this round.
  Session* sessions = nullptr;
  std::size_t sessionCount = 0;
  /// Sessions waiting on one kind of deadline, in deadline order: an
  /// intrusive list through Session::timerPrev/timerNext. A session is on
  /// one list at most. Each kind has one length, so a new deadline goes at
  /// (or, for a lazily re-armed idle deadline, near) the tail.
  struct TimerList {
    Session* head = nullptr;
    Session* tail = nullptr;
  };
  TimerList connecting;          // connectTimeout (name resolution included)
  TimerList lingering;           // the client closed, the upstream not yet: halfCloseTimeout
  TimerList idling;              // idleTimeout, when set: checked against lastActive at expiry
  steady::time_point batchTime;  // when the current epoll batch began
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
    ActiveConnection active;
    UpstreamPtr upstream;
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
  void post_connection(int fd, const SockAddr& peer, ActiveConnection active, UpstreamPtr upstream);
  void wake() noexcept;
  void run();
  /// epoll_wait, polling first for up to config.busyPoll when that has paid.
  int wait(epoll_event* events, int max, int timeout);
  void flush_busy_counts() noexcept;
  void add_session(int fd, const SockAddr& peer, ActiveConnection active, UpstreamPtr upstream);
  void begin_stop(std::chrono::milliseconds grace);
  void close_all(EndCause cause);
  /// Stopping: closes every connection with nothing in flight.
  void close_idle();
  /// Deletes the sessions that ended in this round (after the batch's
  /// inspections: their inspectors hear of the end last).
  void reap();
  int next_timeout_ms(steady::time_point now) const;
  void expire(steady::time_point now);
  void run_tasks();
  void link(Session* s);
  void unlink(Session* s);
  void timer_add(TimerList& list, Session* s, steady::time_point deadline);
  void timer_remove(Session* s);
};

class Session {
 public:
  enum Side : unsigned { client = 0, upstream = 1 };
  /// connecting: the upstream's TCP connect (and name resolution) is under
  /// way; handshaking: it is up, a TLS handshake is not done yet (either
  /// leg's; the client's may also finish while connecting); relaying;
  /// done. connectTimeout bounds everything before relaying.
  enum class State { connecting, handshaking, relaying, done };

  Session(Worker& worker, int clientFd, std::uint64_t id, std::string clientName,
          ActiveConnection active, UpstreamPtr upstream);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  /// An epoll event for one of its sockets.
  void on_event(Side side, std::uint32_t events);
  /// Read again a side that filled the whole buffer (or found the batch's
  /// buffer full) last time.
  void resume() {
    queued = false;
    if (state == State::relaying) pump();
  }
  void connect_timed_out();
  /// The client closed and the upstream did not finish in halfCloseTimeout.
  void half_close_timed_out();
  /// idleTimeout passed since it was armed: ends the session if nothing
  /// was read since `now - idleTimeout`, else arms it again.
  void idle_check(steady::time_point now);
  /// Sends bytes read earlier from `from` on to the other side (Worker::send_held).
  void send_held(Side from, std::span<const std::uint8_t> bytes);
  /// Hands bytes read earlier (Worker::inspect_deferred) to the inspector.
  void inspect(Side from, std::span<const std::uint8_t> bytes, monitor::Clock readAt);
  void resolved(std::vector<SockAddr> addresses, int gaiError, std::string gaiMessage);
  /// Relaying with nothing in flight: the inspector has seen no request
  /// without its reply and no half message, and no bytes wait to be sent.
  bool idle() const noexcept {
    if (state != State::relaying || !inspector_ || !inspector_->idle()) return false;
    for (const Direction& d : dir_)
      if (d.flow == Flow::held || d.flow == Flow::blocked) return false;
    return true;
  }
  /// Stopping (or the server destroyed): close both sides now.
  void shutdown_now(EndCause cause) { end({cause, true, {}}); }
  /// Reaped: tells the inspector (after the batch's inspections).
  void report_end();

  // Worker bookkeeping.
  Session* prev = nullptr;
  Session* next = nullptr;
  Session* timerPrev = nullptr;
  Session* timerNext = nullptr;
  Worker::TimerList* timerList = nullptr;  // the list it waits on, if any
  steady::time_point deadline;
  bool queued = false;  // in Worker::again
  State state = State::connecting;

 private:
  /// One socket and what the last epoll edges said about it.
  struct Socket {
    int fd = -1;
    bool readable = false;            // data (or EOF, or an error) may be there: read until EAGAIN
    bool rdhup = false;               // the peer's FIN has arrived: read until the EOF shows
    bool writable = true;             // false after a short send, until EPOLLOUT
    bool eofRead = false;             // TLS: the EOF came with the last bytes; report it next
    bool readWaitsWritable = false;   // TLS: the last read wants EPOLLOUT to go on
    bool writeWaitsReadable = false;  // TLS: the last send wants EPOLLIN to go on
    std::unique_ptr<TlsConn> tls;     // null: plaintext
    bool secured() const noexcept { return !tls || tls->handshake_done(); }
  };
  /// What one read or send on a socket did (plaintext or TLS).
  struct Io {
    std::size_t bytes = 0;
    bool drained = false;  // nothing more now (EAGAIN, or TLS wants the socket)
    bool eof = false;      // read: the peer closed
    std::string error;     // not empty: the socket failed (errno's or OpenSSL's text)
    bool tlsFailure = false;
  };
  Io recv_from(Side from, std::uint8_t* buf, std::size_t size);
  Io send_to(Side to, std::span<const std::uint8_t> bytes);
  /// Where the bytes read from one side stand (the table at the top).
  enum class Flow : std::uint8_t { open, held, blocked, closed };
  struct Direction {
    Flow flow = Flow::open;
    OutBuffer out;  // blocked: what the destination has not taken yet
  };
  static const char* name(Side s) noexcept { return s == client ? "client" : "upstream"; }
  static Side other(Side s) noexcept { return s == client ? upstream : client; }
  std::uint64_t tag(Side s) const noexcept {
    return reinterpret_cast<std::uint64_t>(this) | static_cast<std::uint64_t>(s);
  }

  void connect_next();
  void connect_failed(const std::string& message);
  void no_descriptors(int err);
  void connected();
  /// Starts TLS on `side` when its leg is TLS (the socket is connected).
  bool begin_tls(Side side);
  /// Drives the handshakes; relays once both legs are secured.
  void advance_handshakes();
  void handshake_failed(Side side);
  void start_relaying();
  /// An inspector for a connection that ends before relaying but must be
  /// reported (a failed handshake): connectionOpened, then its close.
  void ensure_inspector();
  void pump();
  bool read_from(Side from);
  bool flush(Side from);
  void read_again();

  // The transitions of a direction (named after the events in the table).
  void received(Side from, std::uint8_t* at, std::size_t n);
  /// Upstream bytes with a hello reply in them (members mode): forwards the
  /// rewritten bytes itself and returns false; true: relay them as read.
  bool rewrite_hello_replies(std::uint8_t* at, std::size_t n, bool inspect, monitor::Clock readAt);
  void source_ended(Side from);
  void delivered(Side from);
  void backlogged(Side from, std::span<const std::uint8_t> rest);
  bool both_closed() const noexcept {
    return dir_[client].flow == Flow::closed && dir_[upstream].flow == Flow::closed;
  }

  /// Ends the session: the first reason given is the one reported.
  void end(EndReason why);
  void note_reason(EndReason why) {
    if (!reason_) reason_ = std::move(why);
  }
  void inspection_stopped();

  Worker& worker_;
  detail::ServerState& server_;
  ActiveConnection active_;
  Socket sock_[2];
  Direction dir_[2];  // by source side
  UpstreamPtr up_;
  // In front of a replica set: finds the hello replies to rewrite.
  std::unique_ptr<wire::HelloReplyStream> hello_;
  std::uint64_t id_;
  std::string clientName_;
  std::string upstreamName_;
  std::vector<SockAddr> addresses_;  // to try, in order
  std::size_t nextAddress_ = 0;
  int lastConnectError_ = 0;
  std::unique_ptr<Inspector> inspector_;
  std::optional<EndReason> reason_;
  steady::time_point lastActive_;  // the batch of the last read (idleTimeout only)
  bool sniffed_ = false;           // the client's first bytes were looked at
  bool throttleSaid_ = false;      // the inspector's throttle_reason was said
};

// ---- ServerState ---------------------------------------------------------------

detail::ServerState::ServerState(ProxyConfig c, monitor::EventOutput& o, monitor::Stats& s,
                                 InspectorFactory f, Diagnostics d)
    : config(std::move(c)), out(o), stats(s), inspectors(std::move(f)), diag(std::move(d)) {
  if (!inspectors) inspectors = null_inspector_factory();
  if (!diag) diag = [](std::string_view) {};
  if (config.bufferSize == 0) config.bufferSize = 64 * 1024;
  if (config.members.enabled) {
    rewriteHello = config.members.rewriteHello;
    memberLookup = [this](const std::vector<std::string>& unknown) {
      for (const std::string& m : unknown) {
        try {
          add_member(m);
        } catch (const std::exception& e) {
          diag("varanus: no listener for member " + m + ": " + e.what() +
               " (its address is passed to drivers unchanged)");
        }
      }
      return member_addresses();
    };
  }
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
  for (auto& l : listeners)
    if (l->fd >= 0) ::close(l->fd);
}

void detail::ServerState::diag_limited(const std::string& line) {
  std::int64_t leftOut = 0;
  {
    std::lock_guard lock(diagMutex);
    const auto now = steady::now();
    if (now - diagWindow >= std::chrono::seconds(1)) {
      diagWindow = now;
      diagSaid = 0;
    }
    if (diagSaid >= kDiagBurst) {
      ++diagLeftOut;
      return;
    }
    ++diagSaid;
    leftOut = std::exchange(diagLeftOut, 0);
  }
  if (leftOut > 0)
    diag("varanus: " + std::to_string(leftOut) +
         " lines about single connections left out (at most " + std::to_string(kDiagBurst) +
         " a second)");
  diag(line);
}

void detail::ServerState::pause_listeners() {
  Worker& w0 = *workers.front();
  std::lock_guard lock(membersMutex);
  for (auto& l : listeners) {
    if (l->fd >= 0 && l->registered) ::epoll_ctl(w0.epfd, EPOLL_CTL_DEL, l->fd, nullptr);
    l->registered = false;
  }
  w0.listenPausedUntil = steady::now() + std::chrono::milliseconds(100);
}

bool detail::ServerState::accept_ready(Listener& l) {
  SockAddr peer;
  peer.length = sizeof peer.storage;
  const int fd = ::accept4(l.fd, reinterpret_cast<sockaddr*>(&peer.storage), &peer.length,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EINTR || err == ECONNABORTED) return true;  // the next one may be there
    if (err == EAGAIN || err == EWOULDBLOCK) return false;
    // EMFILE and friends: say so once, back off a little instead of
    // spinning; clients wait in the listen backlog meanwhile.
    if (out_of_descriptors(err)) stats.add(stats.descriptorsExhausted);
    if (!acceptPausedSaid) {
      acceptPausedSaid = true;
      diag("varanus: accept failed: " + errno_text(err) +
           (out_of_descriptors(err) ? " (out of file descriptors; raise `ulimit -n` or lower "
                                      "maxConnections)"
                                    : "") +
           "; accepting paused, new clients wait in the listen backlog");
    }
    pause_listeners();
    return false;
  }
  if (acceptPausedSaid) {
    acceptPausedSaid = false;
    diag("varanus: accepting again");
  }
  if (config.maxConnections != 0 &&
      active.load(std::memory_order_relaxed) >= config.maxConnections) {
    ::close(fd);
    stats.add(stats.connectionsRefused);
    diag_limited("varanus: client " + address_string(peer.get()) + " refused: " +
                 std::to_string(config.maxConnections) + " connections open (maxConnections)");
    return true;
  }
  set_nodelay(fd);
  ActiveConnection counted(*this);
  Worker& w = *workers[nextWorker++ % workers.size()];
  if (&w == workers.front().get()) {
    w.add_session(fd, peer, std::move(counted), l.upstream);
  } else {
    w.post_connection(fd, peer, std::move(counted), l.upstream);
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
  // still report the close), and the sockets handed over but never started
  // (their ActiveConnection uncounts them).
  end_batch();
  close_all(EndCause::stopped);
  reap();
  for (const Incoming& c : incoming) ::close(c.fd);
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

void Worker::post_connection(int fd, const SockAddr& peer, ActiveConnection active,
                             UpstreamPtr upstream) {
  {
    std::lock_guard lock(tasksMutex);
    incoming.push_back({fd, peer, std::move(active), std::move(upstream)});
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
  for (Incoming& c : arrived) add_session(c.fd, c.peer, std::move(c.active), std::move(c.upstream));
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

void Worker::timer_add(TimerList& list, Session* s, steady::time_point deadline) {
  timer_remove(s);
  s->timerList = &list;
  s->deadline = deadline;
  // From the tail back to the last deadline not later than this one.
  Session* after = list.tail;
  while (after && after->deadline > deadline) after = after->timerPrev;
  s->timerPrev = after;
  s->timerNext = after ? after->timerNext : list.head;
  if (s->timerNext) {
    s->timerNext->timerPrev = s;
  } else {
    list.tail = s;
  }
  if (after) {
    after->timerNext = s;
  } else {
    list.head = s;
  }
}

void Worker::timer_remove(Session* s) {
  TimerList* list = s->timerList;
  if (!list) return;
  s->timerList = nullptr;
  if (s->timerPrev) s->timerPrev->timerNext = s->timerNext;
  if (s->timerNext) s->timerNext->timerPrev = s->timerPrev;
  if (list->head == s) list->head = s->timerNext;
  if (list->tail == s) list->tail = s->timerPrev;
  s->timerPrev = s->timerNext = nullptr;
}

void Worker::add_session(int fd, const SockAddr& peer, ActiveConnection active,
                         UpstreamPtr upstream) {
  const std::uint64_t id = server.nextConnectionId.fetch_add(1, std::memory_order_relaxed);
  auto* s = new Session(*this, fd, id, address_string(peer.get()), std::move(active),
                        std::move(upstream));
  link(s);
  if (server.stopRequested.load(std::memory_order_relaxed)) {
    // Accepted just as the server began to stop: nothing relayed yet.
    s->shutdown_now(EndCause::stopped);
  } else {
    s->start();
  }
}

void Worker::begin_stop(std::chrono::milliseconds grace) {
  if (stopping) return;
  stopping = true;
  graceDeadline = steady::now() + grace;
  if (grace.count() <= 0) {
    close_all(EndCause::grace_over);
  } else {
    close_idle();
  }
}

void Worker::close_idle() {
  for (Session* s = sessions; s; s = s->next)
    if (s->idle()) s->shutdown_now(EndCause::stopped_idle);
}

void Worker::close_all(EndCause cause) {
  for (Session* s = sessions; s; s = s->next)
    if (s->state != Session::State::done) s->shutdown_now(cause);
}

void Worker::reap() {
  for (Session* s : finished) {
    if (s->queued) std::erase(again, s);
    s->report_end();
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
  for (const TimerList* l : {&connecting, &lingering, &idling})
    if (l->head) consider(l->head->deadline);
  if (stopping && sessionCount > 0) consider(graceDeadline);
  consider(listenPausedUntil);
  if (!due) return -1;
  if (*due <= now) return 0;
  // Round up: waking a little late is fine, waking early only loops.
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(*due - now).count();
  return static_cast<int>((us + 999) / 1000);
}

void Worker::expire(steady::time_point now) {
  while (connecting.head && connecting.head->deadline <= now) {
    Session* s = connecting.head;
    timer_remove(s);
    s->connect_timed_out();
  }
  while (lingering.head && lingering.head->deadline <= now) {
    Session* s = lingering.head;
    timer_remove(s);
    s->half_close_timed_out();
  }
  while (idling.head && idling.head->deadline <= now) {
    Session* s = idling.head;
    timer_remove(s);
    s->idle_check(now);  // ends it, or puts it back with its new deadline
  }
  if (stopping && graceDeadline && *graceDeadline <= now) {
    close_all(EndCause::grace_over);
  }
  if (listenPausedUntil && *listenPausedUntil <= now) {
    listenPausedUntil.reset();
    std::lock_guard lock(server.membersMutex);
    for (auto& l : server.listeners) server.register_listener(*l);
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
    batchTime = steady::now();
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kWakeTag) {
        wake = true;
      } else if (tag & kListenBit) {
        // Level-triggered: whatever is left past the batch is reported again.
        // The Listener outlives its fd (a retired member's is -1).
        auto* l = reinterpret_cast<Listener*>(tag & ~kListenBit);
        for (int k = 0; k < kAcceptBatch && l->fd >= 0 && l->registered && server.accept_ready(*l);
             ++k) {
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
      if (!has_room()) end_batch();  // readers that found the buffer full
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

Session::Session(Worker& worker, int clientFd, std::uint64_t id, std::string clientName,
                 ActiveConnection active, UpstreamPtr target)
    : worker_(worker),
      server_(worker.server),
      active_(std::move(active)),
      up_(std::move(target)),
      id_(id),
      clientName_(std::move(clientName)) {
  if (server_.rewriteHello)
    hello_ = std::make_unique<wire::HelloReplyStream>(wire::kDefaultMaxMessageSize);
  sock_[client].fd = clientFd;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = tag(client);
  ::epoll_ctl(worker_.epfd, EPOLL_CTL_ADD, clientFd, &ev);
}

Session::~Session() {
  for (Socket& k : sock_)
    if (k.fd >= 0) ::close(k.fd);
}

void Session::start() {
  // A TLS client leg starts its handshake at once (the ClientHello may be
  // there already), beside the upstream's connect.
  if (!begin_tls(client)) return;
  advance_handshakes();
  if (state == State::done) return;
  if (up_->address) {
    addresses_.push_back(*up_->address);
    worker_.timer_add(worker_.connecting, this, steady::now() + server_.config.connectTimeout);
    connect_next();
    return;
  }
  // A host name: resolve on the resolver thread, come back here with the
  // addresses. The session may be gone by then (grace period, timeout): the
  // answer looks for it by id among the sessions still waiting on their
  // connect timeout (a short list), and finds it or not.
  worker_.timer_add(worker_.connecting, this, steady::now() + server_.config.connectTimeout);
  Worker* w = &worker_;
  const std::uint64_t id = id_;
  auto resolver = std::make_shared<boost::asio::ip::tcp::resolver>(*server_.resolverContext);
  resolver->async_resolve(
      up_->endpoint.host, std::to_string(up_->endpoint.port),
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
          for (Session* s = w->connecting.head; s; s = s->timerNext) {
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
  Socket& up = sock_[upstream];
  while (nextAddress_ < addresses_.size()) {
    if (up.fd >= 0) {
      ::close(up.fd);  // a failed attempt (also leaves the epoll set)
      up.fd = -1;
    }
    const SockAddr& a = addresses_[nextAddress_++];
    const int fd = ::socket(a.get()->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      lastConnectError_ = errno;
      if (out_of_descriptors(lastConnectError_)) return no_descriptors(lastConnectError_);
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
  if (state == State::connecting) return connect_failed(errno_text(ETIMEDOUT));
  if (state != State::handshaking) return;
  const Side late = sock_[client].secured() ? upstream : client;
  server_.stats.add_tls_failure(late == upstream, "other");
  server_.diag_limited("varanus: " + std::string(name(late)) + " TLS handshake timed out (client " +
                       clientName_ + " closed)");
  ensure_inspector();
  end({EndCause::tls_timeout, late == client, seconds_text(server_.config.connectTimeout)});
}

void Session::no_descriptors(int err) {
  // Not the upstream's fault: counted apart, upstreamUp left as it is.
  server_.stats.add(server_.stats.descriptorsExhausted);
  server_.diag_limited("varanus: out of file descriptors (" + errno_text(err) +
                       ") for an upstream connection; client " + clientName_ +
                       " closed (raise `ulimit -n` or lower maxConnections)");
  end({EndCause::no_descriptors, false, errno_text(err)});
}

void Session::connect_failed(const std::string& message) {
  server_.stats.add(server_.stats.upstreamConnectFailures);
  server_.stats.upstreamUp.store(0, std::memory_order_relaxed);
  server_.diag_limited("varanus: upstream " + up_->name + " unreachable: " + message + " (client " +
                       clientName_ + " closed)");
  end({EndCause::upstream_unreachable, false, message});  // never relayed: no inspector to tell
}

void Session::connected() {
  server_.stats.upstreamUp.store(1, std::memory_order_relaxed);
  set_nodelay(sock_[upstream].fd);
  if (!begin_tls(upstream)) return;
  state = State::handshaking;
  advance_handshakes();
}

bool Session::begin_tls(Side side) {
  const auto& holder = side == client ? server_.clientTls : server_.upstreamTls;
  if (!holder) return true;
  try {
    sock_[side].tls = std::make_unique<TlsConn>(
        holder->get(), sock_[side].fd,
        side == upstream ? std::string_view(up_->endpoint.host) : std::string_view());
  } catch (const std::exception& e) {
    server_.diag_limited("varanus: " + std::string(name(side)) + " TLS: " + e.what() + " (client " +
                         clientName_ + " closed)");
    end({EndCause::tls_error, side == client, e.what()});
    return false;
  }
  return true;
}

void Session::advance_handshakes() {
  for (Side side : {client, upstream}) {
    Socket& k = sock_[side];
    if (k.secured()) continue;
    if (k.tls->handshake() == TlsConn::Handshake::failed) return handshake_failed(side);
  }
  if (state == State::handshaking && sock_[client].secured() && sock_[upstream].secured())
    start_relaying();
}

void Session::handshake_failed(Side side) {
  const TlsConn& t = *sock_[side].tls;
  std::string reason = t.error_reason();
  server_.stats.add_tls_failure(side == upstream, t.failure_kind());
  if (side == client) {
    if (t.failure_kind() == "not_tls")
      reason += " (a plaintext client at this TLS listener: add tls=true to its connection string)";
    server_.diag_limited("varanus: client " + clientName_ + ": TLS handshake failed: " + reason);
  } else {
    server_.diag_limited("varanus: upstream " + upstreamName_ + ": TLS handshake failed: " +
                         reason + " (client " + clientName_ + " closed)");
  }
  ensure_inspector();
  end({EndCause::tls_handshake, side == client, reason});
}

void Session::ensure_inspector() {
  if (inspector_) return;
  auto info = std::make_shared<monitor::ConnectionInfo>();
  info->connectionId = id_;
  info->client = clientName_;
  info->server = upstreamName_.empty() ? up_->name : upstreamName_;
  inspector_ = server_.inspectors(InspectorContext{std::move(info), server_.out, server_.stats});
  if (!inspector_) inspector_ = std::make_unique<NullInspector>();
  inspector_->opened(monitor::Clock::now());
}

void Session::start_relaying() {
  worker_.timer_remove(this);
  state = State::relaying;
  ensure_inspector();
  if (server_.config.idleTimeout.count() > 0) {
    lastActive_ = steady::now();
    worker_.timer_add(worker_.idling, this, lastActive_ + server_.config.idleTimeout);
  }
  // A handshake may have read application data into OpenSSL's buffers
  // already: no edge would announce it.
  for (Socket& k : sock_)
    if (k.tls) k.readable = true;
  pump();  // the client may have written already
}

void Session::on_event(Side side, std::uint32_t events) {
  Socket& k = sock_[side];
  // Remembered in every state: an upstream may answer in the same event
  // that says its connect completed, and with edge triggering no second
  // event would tell.
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) k.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) k.rdhup = true;
  if (state == State::connecting && side == upstream) {
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
      // Writable and no error: connected (no getsockopt needed for that).
      int err = 0;
      if (events & (EPOLLERR | EPOLLHUP)) {
        socklen_t len = sizeof err;
        if (::getsockopt(k.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err == 0) err = ECONNREFUSED;  // hung up without an error code
      }
      if (err == 0) {
        connected();
      } else {
        // Flags of the failed attempt do not carry over to the next one.
        k.readable = k.rdhup = false;
        lastConnectError_ = err;
        connect_next();
      }
    }
    return;
  }
  if (state != State::relaying) {
    // A handshake goes on whenever its socket moves; plaintext bytes from
    // the client wait (remembered) until the upstream is ready.
    if (!k.secured()) advance_handshakes();
    return;
  }
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
    k.writable = true;
    if (k.readWaitsWritable) k.readable = true;
  }
  if ((events & EPOLLIN) && k.writeWaitsReadable) k.writable = true;
  pump();
}

void Session::pump() {
  for (Side from : {client, upstream}) {
    if (dir_[from].flow == Flow::blocked && sock_[other(from)].writable) {
      if (!flush(from)) return;  // the session ended
    }
  }
  for (Side from : {client, upstream}) {
    if (dir_[from].flow == Flow::open && sock_[from].readable) {
      if (!read_from(from)) return;
    }
  }
  if (both_closed()) end({EndCause::closed, true, {}});  // the reason: whoever closed first
}

void Session::read_again() {
  if (queued) return;
  queued = true;
  worker_.again.push_back(this);
}

Session::Io Session::recv_from(Side from, std::uint8_t* buf, std::size_t size) {
  Socket& k = sock_[from];
  Io io;
  if (k.tls) {
    const TlsConn::Result r = k.tls->read(reinterpret_cast<std::byte*>(buf), size);
    io.bytes = r.bytes;
    k.readWaitsWritable = r.wait == TlsConn::Wait::writable;
    switch (r.status) {
      case TlsConn::Status::ok:
        break;
      case TlsConn::Status::again:
        io.drained = true;
        break;
      case TlsConn::Status::eof:
        io.drained = io.eof = true;
        break;
      case TlsConn::Status::error:
        io.error = k.tls->error_reason();
        io.tlsFailure = true;
        break;
    }
    return io;
  }
  const ssize_t n = ::recv(k.fd, buf, size, 0);
  if (n > 0) {
    io.bytes = static_cast<std::size_t>(n);
    io.drained = io.bytes < size;  // a short read: the next byte brings an edge
  } else if (n == 0) {
    io.drained = io.eof = true;
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    io.drained = true;
  } else if (errno != EINTR) {
    io.error = errno_text(errno);
  }
  return io;
}

Session::Io Session::send_to(Side to, std::span<const std::uint8_t> bytes) {
  Socket& k = sock_[to];
  Io io;
  if (k.tls) {
    const TlsConn::Result r =
        k.tls->write(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
    io.bytes = r.bytes;
    k.writeWaitsReadable = r.wait == TlsConn::Wait::readable;
    if (r.status == TlsConn::Status::error) {
      io.error = k.tls->error_reason();
      io.tlsFailure = true;
    }
    return io;
  }
  const Sent sent = send_some(k.fd, bytes);
  io.bytes = sent.bytes;
  if (sent.error != 0) io.error = errno_text(sent.error);
  return io;
}

bool Session::read_from(Side from) {
  Socket& src = sock_[from];
  if (src.eofRead) {  // TLS: the EOF that came with the bytes just delivered
    src.readable = false;
    source_ended(from);
    return true;
  }
  std::uint8_t* buf = worker_.read_area();
  if (!buf) {  // the batch's buffer is full: after the loop has ended the batch
    read_again();
    return true;
  }
  const std::size_t size = server_.config.bufferSize;
  const Io io = recv_from(from, buf, size);
  if (!io.error.empty()) {
    end({io.tlsFailure ? EndCause::tls_error : EndCause::reset, from == client, io.error});
    return false;
  }
  if (io.bytes == 0) {
    if (io.eof) {
      src.readable = false;
      source_ended(from);
    } else if (io.drained) {
      src.readable = false;
    } else {
      read_again();  // EINTR
    }
    return true;
  }
  lastActive_ = worker_.batchTime;
  if (io.eof) {
    // The EOF comes after these bytes reach the other side.
    src.eofRead = true;
    read_again();
  } else if (!io.drained || src.rdhup) {
    // Maybe more (a full buffer), or the FIN is queued behind this data
    // with no edge to come: read again after the others had a turn.
    read_again();
  } else {
    src.readable = false;  // drained, the next byte brings an edge
  }
  if (from == client && !sniffed_) {
    sniffed_ = true;
    // A TLS ClientHello at a plaintext listener would reach mongod as a
    // garbage message: say what is wrong instead.
    if (!src.tls && wire::sniff_protocol({buf, io.bytes}) == wire::Protocol::tls) {
      server_.stats.add(server_.stats.tlsAtPlaintextListener);
      server_.diag_limited("varanus: client " + clientName_ +
                           " began a TLS handshake at this plaintext listener: closed "
                           "(configure --tls-cert and --tls-key to accept TLS clients)");
      end({EndCause::tls_at_plaintext, true, {}});
      return false;
    }
  }
  received(from, buf, io.bytes);
  return true;
}

void Session::received(Side from, std::uint8_t* at, std::size_t n) {
  // Forwarded and inspected at the end of the batch (Worker::hold, defer),
  // after every ready socket was read: the peer is woken once for all of
  // them, and no message waits behind the Tracker's microsecond on another.
  // Inspections run in read order on this thread, so a reply read in the
  // same batch is still inspected after its request. The time is taken when
  // the bytes were read.
  const bool inspect = inspector_->inspecting();
  const monitor::Clock readAt = inspect ? monitor::Clock::now() : monitor::Clock{};
  server_.stats.add(from == client ? server_.stats.bytesFromClient : server_.stats.bytesFromServer,
                    static_cast<std::int64_t>(n));
  if (hello_) {
    if (from == client) {
      hello_->client_bytes({at, n});
    } else if (!rewrite_hello_replies(at, n, inspect, readAt)) {
      return;
    }
  }
  dir_[from].flow = Flow::held;
  worker_.hold(this, at, n, from == client);
  if (inspect) worker_.defer(this, at, n, from == client, readAt);
}

bool Session::rewrite_hello_replies(std::uint8_t* at, std::size_t n, bool inspect,
                                    monitor::Clock readAt) {
  auto out = hello_->server_bytes({at, n}, server_.memberLookup);
  if (out.unchanged) return true;  // the usual path: held and sent as read
  // A hello reply (or part of one) is in these bytes: what is forwarded is
  // the stream's output, sent now (nothing of this direction waits: it was
  // read in state open); the inspector still sees what the server said.
  if (out.rewritten)
    server_.stats.add(server_.stats.helloRewrites, static_cast<std::int64_t>(out.rewritten));
  if (inspect) worker_.defer(this, at, n, false, readAt);
  if (!out.bytes.empty()) {
    dir_[upstream].flow = Flow::held;
    send_held(upstream, out.bytes);
  }
  return false;
}

void Session::source_ended(Side from) {
  // Only read in state open: nothing of this direction waits to be sent.
  dir_[from].flow = Flow::closed;
  note_reason({EndCause::closed, from == client, {}});
  // Passed on as a half-close. When the other direction is closed too, the
  // session ends now and close() sends the FIN: a shutdown() would be one
  // syscall for nothing (a connection churn pays it every time).
  if (from == upstream && hello_) {
    // A reply cut short by the close: passed on as it came (best effort).
    const auto held = hello_->take_held();
    if (!held.empty()) send_to(client, held);
  }
  if (dir_[other(from)].flow == Flow::closed) return;
  Socket& dst = sock_[other(from)];
  if (dst.tls) dst.tls->shutdown();  // close_notify first (best effort), then the FIN
  ::shutdown(dst.fd, SHUT_WR);
  // A client gone: its upstream gets halfCloseTimeout to finish (answer
  // and close), not forever. An upstream that closed first needs no bound:
  // the client (a driver) closes when it sees the EOF.
  if (from == client) {
    if (server_.config.halfCloseTimeout.count() == 0) return half_close_timed_out();
    worker_.timer_add(worker_.lingering, this, steady::now() + server_.config.halfCloseTimeout);
  }
}

void Session::half_close_timed_out() {
  if (state != State::relaying) return;
  server_.stats.add(server_.stats.halfCloseTimeouts);
  // This reason, not "client closed": the pending requests fail with it.
  reason_ =
      EndReason{EndCause::half_close_timeout, false, seconds_text(server_.config.halfCloseTimeout)};
  end(*reason_);
}

void Session::idle_check(steady::time_point now) {
  if (state != State::relaying) return;
  const auto due = lastActive_ + server_.config.idleTimeout;
  if (due > now) return worker_.timer_add(worker_.idling, this, due);
  server_.stats.add(server_.stats.idleTimeouts);
  reason_ = EndReason{EndCause::idle_timeout, false, seconds_text(server_.config.idleTimeout)};
  end(*reason_);
}

void Session::send_held(Side from, std::span<const std::uint8_t> bytes) {
  const Side to = other(from);
  const Io sent = send_to(to, bytes);
  if (!sent.error.empty())
    return end(
        {sent.tlsFailure ? EndCause::tls_error : EndCause::write_failed, to == client, sent.error});
  if (sent.bytes < bytes.size()) return backlogged(from, bytes.subspan(sent.bytes));
  delivered(from);
}

void Session::backlogged(Side from, std::span<const std::uint8_t> rest) {
  // The rest waits for EPOLLOUT; the source stays unread until then.
  sock_[other(from)].writable = false;
  dir_[from].out.assign(rest);
  dir_[from].flow = Flow::blocked;
}

void Session::delivered(Side from) {
  dir_[from].flow = Flow::open;
  // Left readable while its bytes waited (a full buffer, or a FIN behind
  // the data): read again after the others had a turn.
  if (sock_[from].readable) read_again();
}

bool Session::flush(Side from) {
  const Side to = other(from);
  Direction& d = dir_[from];
  const Io sent = send_to(to, d.out.pending());
  d.out.consume(sent.bytes);
  if (!sent.error.empty()) {
    end({sent.tlsFailure ? EndCause::tls_error : EndCause::write_failed, to == client, sent.error});
    return false;
  }
  if (!d.out.empty()) {
    sock_[to].writable = false;
    return true;
  }
  delivered(from);
  return true;
}

void Session::end(EndReason why) {
  if (state == State::done) return;
  note_reason(std::move(why));
  if (state == State::relaying) {
    // Bytes read before the end are passed on, as far as the sockets take
    // them (the batch's sends skip an ended session).
    for (Side from : {client, upstream}) {
      if (dir_[from].flow != Flow::held) continue;
      for (const Worker::Held& h : worker_.held)
        if (h.session == this && (h.fromClient ? client : upstream) == from)
          send_to(other(from), {worker_.buffer.get() + h.offset, h.size});
    }
  }
  state = State::done;
  worker_.timer_remove(this);
  for (Socket& k : sock_) {
    if (k.fd >= 0) ::close(k.fd);  // also removes it from the epoll set
    k.fd = -1;
  }
  worker_.finished.push_back(this);
}

void Session::report_end() {
  // Relayed (an inspector exists): what was read before the end has been
  // inspected (the batch ended before the reap), so the close comes last.
  if (!inspector_) return;
  inspector_->closed(reason_ ? reason_->text() : std::string("closed"), monitor::Clock::now());
}

void Session::inspect(Side from, std::span<const std::uint8_t> bytes, monitor::Clock readAt) {
  if (!inspector_->inspecting()) return;  // stopped by an earlier read
  if (from == client) {
    inspector_->client_data(bytes, readAt);
  } else {
    inspector_->server_data(bytes, readAt);
  }
  if (!throttleSaid_) {
    if (const std::string_view why = inspector_->throttle_reason(); !why.empty()) {
      throttleSaid_ = true;
      server_.diag("varanus: connection " + std::to_string(id_) + " (client " + clientName_ +
                   "): " + std::string(why));
    }
  }
  if (!inspector_->inspecting()) inspection_stopped();
}

void Worker::send_held() {
  // A send never reads: nothing is added to `held` while it is walked.
  for (std::size_t i = 0; i < held.size(); ++i) {
    const Held h = held[i];
    if (h.session->state != Session::State::done)
      h.session->send_held(h.fromClient ? Session::client : Session::upstream,
                           {buffer.get() + h.offset, h.size});
  }
  held.clear();
  if (deferred.empty()) bufferUsed = 0;
}

void Worker::inspect_deferred() {
  // An inspection never reads, sends or ends a session: the list stays put.
  // A session that ended in this batch is still inspected (its inspector
  // hears of the end when it is reaped, after this).
  for (const Deferred& d : deferred)
    d.session->inspect(d.fromClient ? Session::client : Session::upstream,
                       {buffer.get() + d.offset, d.size}, d.readAt);
  deferred.clear();
  if (held.empty()) bufferUsed = 0;
}

void Session::inspection_stopped() {
  const std::string_view why = inspector_->stop_reason();
  switch (inspector_->stop_cause()) {
    case monitor::StopCause::oversized:
      server_.stats.add(server_.stats.oversizedFrames);
      break;
    case monitor::StopCause::backlog:
      server_.stats.add(server_.stats.pendingOverflows);
      break;
    default:
      server_.stats.add(server_.stats.decodeErrors);
  }
  server_.diag("varanus: connection " + std::to_string(id_) + " (client " + clientName_ +
               "): inspection stopped, relaying goes on: " + std::string(why));
}

// ---- Server -----------------------------------------------------------------------

Server::Server(ProxyConfig config, monitor::EventOutput& out, monitor::Stats& stats,
               InspectorFactory inspectors, Diagnostics diagnostics)
    : impl_(std::make_unique<detail::ServerState>(std::move(config), out, stats,
                                                  std::move(inspectors), std::move(diagnostics))) {}

Server::~Server() = default;  // ~ServerState: resolver, then workers, then listener

void Server::use_tls(std::shared_ptr<TlsContextHolder> clientLeg,
                     std::shared_ptr<TlsContextHolder> upstreamLeg) {
  detail::ServerState& s = *impl_;
  if (s.started) throw std::logic_error("varanus::proxy::Server::use_tls after start");
  s.clientTls = std::move(clientLeg);
  s.upstreamTls = std::move(upstreamLeg);
  if (s.clientTls) {
    if (const auto left = s.clientTls->get()->seconds_until_expiry()) {
      const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
      s.stats.tlsCertificateNotAfter.store(now + *left, std::memory_order_relaxed);
    }
  }
}

namespace {

/// Binds and listens at `at` (port 0: a free port). Returns the fd.
int bind_listener(const Endpoint& at) {
  SockAddr addr;
  if (auto literal = numeric_address(at.host, at.port)) {
    addr = *literal;
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(at.port);
    if (const int rc = ::getaddrinfo(at.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
      throw std::runtime_error("cannot resolve " + at.host + ": " + ::gai_strerror(rc));
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
    const std::string what = "bind " + at.to_string();
    throw_errno(err, what.c_str());
  }
  return fd;
}

Endpoint bound_endpoint(int fd) {
  SockAddr bound;
  bound.length = sizeof bound.storage;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound.storage), &bound.length);
  auto [host, port] = host_and_port(bound.get());
  return Endpoint{std::move(host), port};
}

bool wildcard_host(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

void detail::ServerState::register_listener(Listener& l) {
  // workers[0]'s thread (or before run()), membersMutex held.
  if (l.fd < 0 || l.registered) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = l.tag();
  ::epoll_ctl(workers.front()->epfd, EPOLL_CTL_ADD, l.fd, &ev);
  l.registered = true;
}

Listener& detail::ServerState::open_listener(const Endpoint& at, UpstreamPtr upstream,
                                             std::string member) {
  // membersMutex held.
  const int fd = bind_listener(at);
  auto l = std::make_unique<Listener>();
  l->fd = fd;
  l->upstream = std::move(upstream);
  l->member = std::move(member);
  listeners.push_back(std::move(l));
  Listener& added = *listeners.back();
  if (!started) {
    register_listener(added);  // before run(): no worker thread yet
  } else {
    Worker* w0 = workers.front().get();
    w0->post([this, l = &added] {
      std::lock_guard lock(membersMutex);
      if (!stopRequested.load(std::memory_order_relaxed) && !workers.front()->listenPausedUntil)
        register_listener(*l);
    });
  }
  return added;
}

std::string detail::ServerState::add_member(std::string_view memberText) {
  const std::string member = lower(memberText);
  std::lock_guard lock(membersMutex);
  if (auto it = memberAddresses.find(member); it != memberAddresses.end()) return it->second;
  auto ep = Endpoint::parse(member);
  if (!ep) throw std::invalid_argument("not a HOST:PORT address: " + member);
  // Where it listens: fixed by the config, else the next port, else free.
  Endpoint at{config.listen.host, 0};
  bool fixed = false;
  if (auto f = config.members.listen.find(member); f != config.members.listen.end()) {
    at = f->second;
    fixed = true;
  }
  auto upstream = std::make_shared<const Upstream>(*ep);
  int fd = -1;
  Listener* l = nullptr;
  for (int attempt = 0; !l; ++attempt) {
    if (!fixed && nextMemberPort != 0) at.port = nextMemberPort;
    try {
      l = &open_listener(at, upstream, member);
    } catch (const std::system_error& e) {
      // A taken port: the next one (scripts read the member line).
      if (fixed || at.port == 0 || e.code().value() != EADDRINUSE || attempt >= 64) throw;
      if (nextMemberPort != 0) ++nextMemberPort;
    }
  }
  fd = l->fd;
  const Endpoint bound = bound_endpoint(fd);
  if (!fixed && nextMemberPort != 0) nextMemberPort = static_cast<std::uint16_t>(bound.port + 1);
  const std::string host = !advertiseHost.empty()   ? advertiseHost
                           : wildcard_host(at.host) ? advertiseHost
                                                    : at.host;
  l->advertised = wire::format_host_port(host.empty() ? bound.host : host, bound.port);
  memberAddresses[member] = l->advertised;
  diag("varanus: member " + member + " via " + l->advertised);
  return l->advertised;
}

void detail::ServerState::remove_member(std::string_view memberText) {
  const std::string member = lower(memberText);
  std::lock_guard lock(membersMutex);
  if (memberAddresses.erase(member) == 0) return;
  for (auto& l : listeners) {
    if (l->member != member || l->fd < 0) continue;
    Listener* gone = l.get();
    diag("varanus: member " + member + " left the set: its listener " + gone->advertised +
         " stops accepting (open connections go on)");
    workers.front()->post([this, gone] {
      std::lock_guard held(membersMutex);
      if (gone->fd < 0) return;
      if (gone->registered) ::epoll_ctl(workers.front()->epfd, EPOLL_CTL_DEL, gone->fd, nullptr);
      ::close(gone->fd);
      gone->fd = -1;
      gone->registered = false;
    });
  }
}

wire::AddressMap detail::ServerState::member_addresses() const {
  std::lock_guard lock(membersMutex);
  return memberAddresses;
}

void detail::ServerState::close_listeners() {
  // workers[0]'s thread.
  std::lock_guard lock(membersMutex);
  for (auto& l : listeners) {
    if (l->fd < 0) continue;
    if (l->registered) ::epoll_ctl(workers.front()->epfd, EPOLL_CTL_DEL, l->fd, nullptr);
    ::close(l->fd);
    l->fd = -1;
    l->registered = false;
  }
}

Endpoint Server::start() {
  detail::ServerState& s = *impl_;
  if (s.started) throw std::logic_error("varanus::proxy::Server::start called twice");
  const MemberConfig& m = s.config.members;
  Endpoint first;
  bool anyName = false;
  {
    std::lock_guard lock(s.membersMutex);
    if (!m.enabled) {
      auto up = std::make_shared<const Upstream>(s.config.upstream);
      anyName = !up->address;
      first = bound_endpoint(s.open_listener(s.config.listen, std::move(up), {}).fd);
    }
  }
  if (m.enabled) {
    if (m.seeds.empty()) throw std::invalid_argument("members: no seed given");
    s.advertiseHost = m.advertiseHost;
    if (s.advertiseHost.empty() && wildcard_host(s.config.listen.host)) {
      char name[256] = {};
      if (::gethostname(name, sizeof name - 1) == 0) s.advertiseHost = name;
    }
    // The first seed at --listen (its port fixed there unless the config
    // fixes it), the others after it.
    const std::string seed0 = lower(m.seeds.front().to_string());
    if (!m.listen.contains(seed0)) s.config.members.listen.emplace(seed0, s.config.listen);
    s.add_member(seed0);
    {
      std::lock_guard lock(s.membersMutex);
      first = bound_endpoint(s.listeners.back()->fd);
      if (s.config.listen.port != 0) s.nextMemberPort = static_cast<std::uint16_t>(first.port + 1);
    }
    for (std::size_t i = 1; i < m.seeds.size(); ++i) s.add_member(m.seeds[i].to_string());
    anyName = true;  // members named in hello replies may be host names
  }
  if (anyName) {
    s.resolverContext = std::make_unique<boost::asio::io_context>(1);
    s.resolverGuard.emplace(s.resolverContext->get_executor());
    s.resolverThread = std::thread([ctx = s.resolverContext.get()] { ctx->run(); });
  }
  s.started = true;
  return first;
}

std::string Server::add_member(std::string_view member) {
  return impl_->add_member(member);
}

void Server::remove_member(std::string_view member) {
  impl_->remove_member(member);
}

wire::AddressMap Server::member_addresses() const {
  return impl_->member_addresses();
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
    s.close_listeners();
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
