// varanus-bench — load generator (see bench_client.hpp).
#include "bench_client.hpp"

#include <arpa/inet.h>
#include <bson/bson.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "bench_proc.hpp"
#include "varanus/proxy/tls.hpp"
#include "varanus/wire/builder.hpp"

namespace varanus::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kMagic = 0x5A5A5A5A5A5A5A5ALL;
constexpr std::chrono::seconds kIoTimeout{10};  // any single blocking send/recv
constexpr std::chrono::seconds kDrain{5};       // replies still in flight after a window

/// An owned bson_t (unique_ptr<bson_t> trips -Wignored-attributes: bson_t is over-aligned).
class Doc {
 public:
  Doc() : p_(bson_new()) {}
  ~Doc() {
    if (p_) bson_destroy(p_);
  }
  Doc(Doc&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Doc& operator=(Doc&&) = delete;
  Doc(const Doc&) = delete;
  Doc& operator=(const Doc&) = delete;
  bson_t* get() const noexcept { return p_; }

 private:
  bson_t* p_;
};
Doc new_doc() {
  return Doc();
}

wire::BsonView view(const Doc& d) {
  return wire::BsonView::of(d.get());
}

void append_lsid(bson_t* body) {
  bson_t lsid;
  BSON_APPEND_DOCUMENT_BEGIN(body, "lsid", &lsid);
  const std::uint8_t uuid[16] = {0x3b, 0x1f, 0x6a, 0x90, 0x22, 0x41, 0x4c, 0x0e,
                                 0x9d, 0x5a, 0x11, 0x82, 0x7c, 0xe4, 0x03, 0xb6};
  bson_append_binary(&lsid, "id", 2, BSON_SUBTYPE_UUID, uuid, 16);
  bson_append_document_end(body, &lsid);
}

std::size_t find_magic(const Bytes& frame) {
  std::uint8_t m[8];
  std::memcpy(m, &kMagic, 8);
  auto it = std::search(frame.begin(), frame.end(), m, m + 8);
  return it == frame.end() ? 0 : static_cast<std::size_t>(it - frame.begin());
}

Bytes op_msg(const Doc& body, const std::vector<wire::DocumentSequence>& seqs = {}) {
  return wire::build_op_msg(1, 0, 0, view(body), seqs);
}

Doc small_doc(std::int64_t id) {
  Doc d = new_doc();
  BSON_APPEND_INT64(d.get(), "_id", id);
  BSON_APPEND_UTF8(d.get(), "name", "varanus-bench");
  BSON_APPEND_INT32(d.get(), "n", 42);
  BSON_APPEND_DOUBLE(d.get(), "score", 3.25);
  BSON_APPEND_UTF8(d.get(), "tag", "abcdefghijklmnopqrstuvwxyz0123456789");
  return d;
}

std::int32_t le32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, 4);
  return static_cast<std::int32_t>(v);
}

/// The reply's body document: OP_MSG kind-0 section, or OP_REPLY's first document.
bool reply_body(const Bytes& f, std::size_t len, bson_t* out) {
  if (len < 21) return false;
  const std::int32_t op = le32(f.data() + 12);
  std::size_t at = 0;
  if (op == 2013) {
    // flagBits, then sections; the body is usually first.
    at = 20;
    while (at < len && f[at] != 0) {
      if (f[at] != 1 || at + 5 > len) return false;
      at += 1 + static_cast<std::size_t>(le32(f.data() + at + 1));
    }
    at += 1;
  } else if (op == 1) {
    at = 16 + 4 + 8 + 4 + 4;
  } else {
    return false;
  }
  if (at + 5 > len) return false;
  const auto n = static_cast<std::size_t>(le32(f.data() + at));
  if (n < 5 || at + n > len) return false;
  return bson_init_static(out, f.data() + at, n);
}

bool reply_ok(const Bytes& f, std::size_t len) {
  bson_t b;
  if (!reply_body(f, len, &b)) return false;
  bson_iter_t it;
  return bson_iter_init_find(&it, &b, "ok") && bson_iter_as_double(&it) == 1.0;
}

std::string reply_error(const Bytes& f, std::size_t len) {
  bson_t b;
  if (!reply_body(f, len, &b)) return "unparsable reply";
  char* json = bson_as_relaxed_extended_json(&b, nullptr);
  std::string s = json ? json : "?";
  bson_free(json);
  if (s.size() > 300) s.resize(300);
  return s;
}

std::int64_t cursor_id(const Bytes& f, std::size_t len) {
  bson_t b;
  if (!reply_body(f, len, &b)) return -1;
  bson_iter_t it, child;
  if (bson_iter_init(&it, &b) && bson_iter_find_descendant(&it, "cursor.id", &child)) {
    return bson_iter_as_int64(&child);
  }
  return -1;
}

// ---------------------------------------------------------------- TLS
//
// With use_tls(ctx), every connection the client opens speaks TLS: its
// TlsConn sits in g_conns[fd]. The plaintext path tests one pointer.

using proxy::TlsConn;
std::shared_ptr<const proxy::TlsContext> g_tls;
std::vector<std::unique_ptr<TlsConn>> g_conns;  // by descriptor; one client thread

TlsConn* tls_of(int fd) {
  if (!g_tls || fd < 0 || static_cast<std::size_t>(fd) >= g_conns.size()) return nullptr;
  return g_conns[static_cast<std::size_t>(fd)].get();
}

/// Wraps a connected socket in a TlsConn (nothing when TLS is off).
void attach_tls(int fd) {
  if (!g_tls || fd < 0) return;
  const auto i = static_cast<std::size_t>(fd);
  if (g_conns.size() <= i) g_conns.resize(i + 1);
  // The upstream's name as a driver would check it (the test certificate
  // has IP:127.0.0.1 in its subjectAltName).
  g_conns[i] = std::make_unique<TlsConn>(g_tls, fd, "127.0.0.1");
}

void close_fd(int fd) {
  if (fd < 0) return;
  if (TlsConn* t = tls_of(fd)) {
    t->shutdown();  // close_notify, best effort (never waits)
    g_conns[static_cast<std::size_t>(fd)].reset();
  }
  ::close(fd);
}

/// Waits (bounded) for the readiness a TLS operation asked for.
bool wait_ready(int fd, TlsConn::Wait wait, std::chrono::milliseconds timeout) {
  pollfd p{fd, static_cast<short>(wait == TlsConn::Wait::writable ? POLLOUT : POLLIN), 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

/// Drives the handshake of fd's TlsConn to its end (bounded by kIoTimeout
/// per step). True when done (or no TLS).
bool handshake_blocking(int fd) {
  TlsConn* t = tls_of(fd);
  if (!t) return true;
  for (int steps = 0; steps < 100; ++steps) {
    switch (t->handshake()) {
      case TlsConn::Handshake::done:
        return true;
      case TlsConn::Handshake::want_read:
        if (!wait_ready(fd, TlsConn::Wait::readable, kIoTimeout)) return false;
        break;
      case TlsConn::Handshake::want_write:
        if (!wait_ready(fd, TlsConn::Wait::writable, kIoTimeout)) return false;
        break;
      case TlsConn::Handshake::failed:
        return false;
    }
  }
  return false;
}

/// send(2) or TLS write: bytes moved (> 0), or -1 with errno (EAGAIN: try
/// again when writable).
ssize_t io_send(int fd, const std::uint8_t* p, std::size_t n) {
  if (TlsConn* t = tls_of(fd)) {
    const auto r = t->write(reinterpret_cast<const std::byte*>(p), n);
    if (r.bytes > 0) return static_cast<ssize_t>(r.bytes);
    errno = r.status == TlsConn::Status::again ? EAGAIN : EPIPE;
    return -1;
  }
  return ::send(fd, p, n, MSG_NOSIGNAL);
}

/// recv(2) or TLS read: bytes (> 0), 0 at EOF, or -1 with errno (EAGAIN:
/// nothing now).
ssize_t io_recv(int fd, std::uint8_t* p, std::size_t n) {
  if (TlsConn* t = tls_of(fd)) {
    const auto r = t->read(reinterpret_cast<std::byte*>(p), n);
    if (r.bytes > 0) return static_cast<ssize_t>(r.bytes);
    if (r.status == TlsConn::Status::eof) return 0;
    errno = r.status == TlsConn::Status::again ? EAGAIN : ECONNRESET;
    return -1;
  }
  return ::recv(fd, p, n, 0);
}

void set_timeouts(int fd) {
  timeval tv{};
  tv.tv_sec = kIoTimeout.count();
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int tcp_socket(bool nonblocking) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

/// A blocking connection with 10 s send/receive timeouts.
int connect_blocking(std::uint16_t port) {
  int fd = tcp_socket(false);
  if (fd < 0) return -1;
  set_timeouts(fd);
  sockaddr_in a = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close_fd(fd);
    return -1;
  }
  attach_tls(fd);
  if (!handshake_blocking(fd)) {
    close_fd(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::uint8_t* p, std::size_t n) {
  // Bounded: each send either progresses or times out (SO_SNDTIMEO).
  while (n > 0) {
    ssize_t k = io_send(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

/// Reads exactly one frame into buf (grown as needed); returns its length or 0.
std::size_t recv_frame(int fd, Bytes& buf) {
  if (buf.size() < 65536) buf.resize(65536);
  std::size_t have = 0, need = 16;
  while (have < need) {
    ssize_t k = io_recv(fd, buf.data() + have, std::min(buf.size(), need) - have);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return 0;
    have += static_cast<std::size_t>(k);
    if (need == 16 && have >= 4) {
      const std::int32_t len = le32(buf.data());
      if (len < 16 || len > 64 * 1024 * 1024) return 0;
      need = static_cast<std::size_t>(len);
      if (buf.size() < need) buf.resize(need);
    }
  }
  return need;
}

/// Sends `req` (requestID patched) and reads its reply; 0 on failure.
std::size_t roundtrip(int fd, Bytes& req, std::int32_t id, Bytes& reply) {
  set_request_id(req, id);
  if (!send_all(fd, req.data(), req.size())) return 0;
  std::size_t n = recv_frame(fd, reply);
  if (n == 0 || le32(reply.data() + 8) != id) return 0;
  return n;
}

bool command(std::uint16_t port, const Bytes& frame, std::string* error) {
  int fd = connect_blocking(port);
  if (fd < 0) {
    if (error) *error = "connect failed";
    return false;
  }
  Bytes req = frame, reply;
  std::size_t n = roundtrip(fd, req, 7, reply);
  close_fd(fd);
  if (n == 0 || !reply_ok(reply, n)) {
    if (error) *error = n == 0 ? "no reply" : reply_error(reply, n);
    return false;
  }
  return true;
}

Bytes insert_frame(const std::string& coll, const std::vector<Doc>& docs) {
  Doc body = new_doc();
  BSON_APPEND_UTF8(body.get(), "insert", coll.c_str());
  BSON_APPEND_BOOL(body.get(), "ordered", true);
  BSON_APPEND_UTF8(body.get(), "$db", "bench");
  std::vector<wire::DocumentSequence> seqs(1);
  seqs[0].identifier = "documents";
  for (const auto& d : docs) seqs[0].documents.push_back(view(d));
  return op_msg(body, seqs);
}

struct Cpu {
  double total = -1, main = -1;
};
Cpu cpu_of(pid_t pid) {
  if (pid <= 0) return {};
  return {cpu_seconds(pid), cpu_seconds_task(pid, pid)};
}
void set_cpu(Window& w, const Cpu& a, const Cpu& b) {
  if (a.total >= 0 && b.total >= 0) w.cpuSeconds = b.total - a.total;
  if (a.main >= 0 && b.main >= 0) w.cpuMainSeconds = b.main - a.main;
}

void note(Window& w, std::string msg) {
  ++w.errors;
  if (w.firstError.empty()) w.firstError = std::move(msg);
}

}  // namespace

void use_tls(std::shared_ptr<const proxy::TlsContext> ctx) {
  g_conns.clear();
  g_tls = std::move(ctx);
}

bool tls_enabled() {
  return g_tls != nullptr;
}

void set_request_id(Bytes& frame, std::int32_t id) {
  std::memcpy(frame.data() + 4, &id, 4);
}
void put_i64(Bytes& frame, std::size_t offset, std::int64_t v) {
  std::memcpy(frame.data() + offset, &v, 8);
}

Requests Requests::make() {
  Requests r;
  {
    Doc b = new_doc();
    BSON_APPEND_INT32(b.get(), "ping", 1);
    BSON_APPEND_UTF8(b.get(), "$db", "admin");
    r.ping = op_msg(b);
  }
  {
    Doc q = new_doc();
    BSON_APPEND_INT32(q.get(), "isMaster", 1);
    BSON_APPEND_BOOL(q.get(), "helloOk", true);
    bson_t client, driver, os;
    BSON_APPEND_DOCUMENT_BEGIN(q.get(), "client", &client);
    BSON_APPEND_DOCUMENT_BEGIN(&client, "driver", &driver);
    BSON_APPEND_UTF8(&driver, "name", "varanus-bench");
    BSON_APPEND_UTF8(&driver, "version", "1");
    bson_append_document_end(&client, &driver);
    BSON_APPEND_DOCUMENT_BEGIN(&client, "os", &os);
    BSON_APPEND_UTF8(&os, "type", "Linux");
    bson_append_document_end(&client, &os);
    BSON_APPEND_UTF8(&client, "platform", "raw sockets");
    bson_append_document_end(q.get(), &client);
    bson_t comp;
    BSON_APPEND_ARRAY_BEGIN(q.get(), "compression", &comp);
    bson_append_array_end(q.get(), &comp);
    r.isMaster = wire::build_op_query(1, 0, 0, "admin.$cmd", 0, -1, view(q));
  }
  {
    Doc b = new_doc();
    BSON_APPEND_UTF8(b.get(), "find", "small");
    bson_t filter;
    BSON_APPEND_DOCUMENT_BEGIN(b.get(), "filter", &filter);
    BSON_APPEND_INT64(&filter, "_id", kMagic);
    bson_append_document_end(b.get(), &filter);
    BSON_APPEND_INT64(b.get(), "limit", 1);
    BSON_APPEND_BOOL(b.get(), "singleBatch", true);
    append_lsid(b.get());
    BSON_APPEND_UTF8(b.get(), "$db", "bench");
    r.find = op_msg(b);
    r.findKeyOffset = find_magic(r.find);
  }
  {
    Doc b = new_doc();
    BSON_APPEND_UTF8(b.get(), "insert", "mix");
    BSON_APPEND_BOOL(b.get(), "ordered", true);
    append_lsid(b.get());
    BSON_APPEND_UTF8(b.get(), "$db", "bench");
    Doc d = small_doc(kMagic);
    std::vector<wire::DocumentSequence> seqs(1);
    seqs[0].identifier = "documents";
    seqs[0].documents.push_back(view(d));
    r.insert = op_msg(b, seqs);
    r.insertIdOffset = find_magic(r.insert);
  }
  return r;
}

bool seed(std::uint16_t stubPort, std::string* error) {
  drop(stubPort, "small");
  drop(stubPort, "read10k");
  std::vector<Doc> docs;
  for (std::int64_t i = 0; i < 100; ++i) docs.push_back(small_doc(i));
  if (!command(stubPort, insert_frame("small", docs), error)) return false;
  const std::string pad(1000, 'x');
  for (std::int64_t batch = 0; batch < 10; ++batch) {
    docs.clear();
    for (std::int64_t i = 0; i < 1000; ++i) {
      Doc d = new_doc();
      BSON_APPEND_INT64(d.get(), "_id", batch * 1000 + i);
      BSON_APPEND_INT32(d.get(), "i", static_cast<std::int32_t>(i));
      BSON_APPEND_UTF8(d.get(), "pad", pad.c_str());
      docs.push_back(std::move(d));
    }
    if (!command(stubPort, insert_frame("read10k", docs), error)) return false;
  }
  return true;
}

bool drop(std::uint16_t port, const std::string& coll) {
  Doc b = new_doc();
  BSON_APPEND_UTF8(b.get(), "drop", coll.c_str());
  BSON_APPEND_UTF8(b.get(), "$db", "bench");
  std::string err;
  // A missing collection is an error reply (NamespaceNotFound): fine.
  command(port, op_msg(b), &err);
  return true;
}

std::vector<double> ping_latency(std::uint16_t port, std::size_t maxCount, Seconds maxTime,
                                 Window* w) {
  std::vector<double> us;
  us.reserve(maxCount);
  int fd = connect_blocking(port);
  if (fd < 0) {
    note(*w, "connect failed");
    return us;
  }
  Requests req = Requests::make();
  Bytes reply;
  if (roundtrip(fd, req.isMaster, 1, reply) == 0) note(*w, "handshake failed");
  // Warm-up, not measured.
  for (std::int32_t i = 0; i < 200 && w->errors == 0; ++i) {
    if (roundtrip(fd, req.ping, 2 + i, reply) == 0) note(*w, "ping failed");
  }
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(maxTime);
  std::int32_t id = 1000;
  while (w->errors == 0 && us.size() < maxCount) {
    const auto a = Clock::now();
    if (a >= end) break;
    std::size_t n = roundtrip(fd, req.ping, ++id, reply);
    const auto b = Clock::now();
    if (n == 0 || !reply_ok(reply, n)) {
      note(*w, n == 0 ? "ping: no reply" : "ping: " + reply_error(reply, n));
      break;
    }
    us.push_back(std::chrono::duration<double, std::micro>(b - a).count());
  }
  w->seconds = Seconds(Clock::now() - t0).count();
  w->ops = w->commands = us.size();
  close_fd(fd);
  return us;
}

void add(Window& into, const Window& w) {
  const auto sum = [](double a, double b) { return a < 0 ? b : (b < 0 ? a : a + b); };
  into.ops += w.ops;
  into.commands += w.commands;
  into.bytes += w.bytes;
  into.seconds += w.seconds;
  into.cpuSeconds = sum(into.cpuSeconds, w.cpuSeconds);
  into.cpuMainSeconds = sum(into.cpuMainSeconds, w.cpuMainSeconds);
  into.completed += w.completed;
  if (into.errors == 0 && w.errors != 0) into.firstError = w.firstError;
  into.errors += w.errors;
}

PingConnection::PingConnection(PingConnection&& o) noexcept
    : fd_(o.fd_), req_(std::move(o.req_)), reply_(std::move(o.reply_)), id_(o.id_) {
  o.fd_ = -1;
}

PingConnection::~PingConnection() {
  close();
}

void PingConnection::close() {
  if (fd_ >= 0) close_fd(fd_);
  fd_ = -1;
}

bool PingConnection::open(std::uint16_t port, Window* w) {
  close();
  fd_ = connect_blocking(port);
  if (fd_ < 0) {
    note(*w, "connect failed");
    return false;
  }
  req_ = Requests::make();
  if (roundtrip(fd_, req_.isMaster, 1, reply_) == 0) {
    note(*w, "handshake failed");
    close();
    return false;
  }
  for (std::int32_t i = 0; i < 200; ++i) {
    if (roundtrip(fd_, req_.ping, 2 + i, reply_) == 0) {
      note(*w, "ping failed");
      close();
      return false;
    }
  }
  return true;
}

void PingConnection::run(Seconds slice, std::size_t maxCount, std::vector<double>& out, Window* w) {
  if (fd_ < 0) return;
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(slice);
  std::size_t n = 0;
  while (n < maxCount) {
    const auto a = Clock::now();
    if (a >= end) break;
    const std::size_t got = roundtrip(fd_, req_.ping, ++id_, reply_);
    const auto b = Clock::now();
    if (got == 0 || !reply_ok(reply_, got)) {
      note(*w, got == 0 ? "ping: no reply" : "ping: " + reply_error(reply_, got));
      close();
      break;
    }
    out.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    ++n;
  }
  w->seconds += Seconds(Clock::now() - t0).count();
  w->ops += n;
  w->commands += n;
}

namespace {

/// One connection of the epoll workloads.
struct EConn {
  int fd = -1;
  int step = 0;  // churn/idle: 0 connecting, 3 TLS handshake, 1 isMaster sent, 2 ping sent
  bool wantOut = false;
  Bytes out;
  std::size_t outOff = 0;
  Bytes in;
  std::size_t have = 0;
  std::int32_t id = 0;
  std::uint64_t n = 0;  // commands sent on this connection
  Bytes find, insert;
};

class Epoll {
 public:
  Epoll() : fd_(::epoll_create1(EPOLL_CLOEXEC)) {}
  ~Epoll() {
    if (fd_ >= 0) close_fd(fd_);
  }
  Epoll(const Epoll&) = delete;
  Epoll& operator=(const Epoll&) = delete;
  bool ok() const { return fd_ >= 0; }
  void add(EConn* c, std::uint32_t ev) { ctl(EPOLL_CTL_ADD, c, ev); }
  void mod(EConn* c, std::uint32_t ev) { ctl(EPOLL_CTL_MOD, c, ev); }
  void del(EConn* c) { ::epoll_ctl(fd_, EPOLL_CTL_DEL, c->fd, nullptr); }
  int wait(epoll_event* evs, int max, int ms) {
    int n = ::epoll_wait(fd_, evs, max, ms);
    return n < 0 ? 0 : n;
  }

 private:
  void ctl(int op, EConn* c, std::uint32_t ev) {
    epoll_event e{};
    e.events = ev;
    e.data.ptr = c;
    ::epoll_ctl(fd_, op, c->fd, &e);
  }
  int fd_;
};

enum class Io { again, done, error };

/// Sends what is left of c.out; arms EPOLLOUT when the socket is full.
Io flush(Epoll& ep, EConn& c) {
  while (c.outOff < c.out.size()) {
    ssize_t k = io_send(c.fd, c.out.data() + c.outOff, c.out.size() - c.outOff);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c.wantOut) {
        c.wantOut = true;
        ep.mod(&c, EPOLLIN | EPOLLOUT);
      }
      return Io::again;
    }
    if (k <= 0) return Io::error;
    c.outOff += static_cast<std::size_t>(k);
  }
  if (c.wantOut) {
    c.wantOut = false;
    ep.mod(&c, EPOLLIN);
  }
  return Io::done;
}

Io send_frame(Epoll& ep, EConn& c, const Bytes& frame) {
  c.out = frame;  // capacity reused after the first time
  c.id += 1;
  set_request_id(c.out, c.id);
  c.outOff = 0;
  ++c.n;
  return flush(ep, c);
}

/// Reads into c.in; done when one whole frame answering c.id is there.
Io read_frame(EConn& c, std::size_t* len) {
  if (c.in.size() < 4096) c.in.resize(4096);
  for (int guard = 0; guard < 1'000'000; ++guard) {
    std::size_t need = 16;
    if (c.have >= 4) need = static_cast<std::size_t>(le32(c.in.data()));
    if (need < 16 || need > 64 * 1024 * 1024) return Io::error;
    if (c.have >= need) {
      if (c.have > need || le32(c.in.data() + 8) != c.id) return Io::error;
      *len = need;
      c.have = 0;
      return Io::done;
    }
    if (c.in.size() < need) c.in.resize(need);
    ssize_t k = io_recv(c.fd, c.in.data() + c.have, need - c.have);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Io::again;
    if (k <= 0) return Io::error;
    c.have += static_cast<std::size_t>(k);
  }
  return Io::error;
}

void set_nonblocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

bool start_connect(Epoll& ep, EConn& c, std::uint16_t port) {
  c = EConn{};
  c.fd = tcp_socket(true);
  if (c.fd < 0) return false;
  sockaddr_in a = loopback(port);
  int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r != 0 && errno != EINPROGRESS) {
    close_fd(c.fd);
    c.fd = -1;
    return false;
  }
  c.step = 0;
  c.wantOut = true;
  ep.add(&c, EPOLLOUT | EPOLLIN);
  return true;
}

void close_conn(Epoll& ep, EConn& c) {
  if (c.fd < 0) return;
  ep.del(&c);
  close_fd(c.fd);
  c.fd = -1;
}

}  // namespace

Window mix(std::uint16_t port, int conns, Seconds duration, std::uint64_t maxOps, pid_t cpuPid) {
  Window w;
  Epoll ep;
  const Requests req = Requests::make();
  std::vector<EConn> cs(static_cast<std::size_t>(conns));
  int open = 0;
  for (auto& c : cs) {
    c.fd = connect_blocking(port);
    Bytes hello = req.isMaster, reply;
    std::size_t n = c.fd < 0 ? 0 : roundtrip(c.fd, hello, 1, reply);
    if (n == 0 || !reply_ok(reply, n)) {
      note(w, "mix: connect/handshake failed");
      if (c.fd >= 0) close_fd(c.fd);
      c.fd = -1;
      continue;
    }
    c.id = 1;
    set_nonblocking(c.fd);
    c.find = req.find;
    c.insert = req.insert;
    ep.add(&c, EPOLLIN);
    ++open;
  }
  static std::int64_t insertId = 1'000'000;  // unique _ids across runs (bench.mix is dropped)
  std::int64_t key = 0;
  auto issue = [&](EConn& c) {
    const bool isFind = (c.n % 2) == 0;
    Bytes& f = isFind ? c.find : c.insert;
    if (isFind) {
      put_i64(f, req.findKeyOffset, key++ % 100);
    } else {
      put_i64(f, req.insertIdOffset, ++insertId);
    }
    return send_frame(ep, c, f);
  };
  std::uint64_t issued = 0, done = 0, inWindow = 0;
  const auto t0 = Clock::now();
  const Cpu cpu0 = cpu_of(cpuPid);
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(duration);
  bool windowOpen = true;
  Cpu cpu1;
  Clock::time_point t1 = t0;
  for (auto& c : cs) {
    if (c.fd < 0) continue;
    if (issue(c) == Io::error) {
      note(w, "mix: send failed");
      close_conn(ep, c);
      --open;
    } else {
      ++issued;
    }
  }
  epoll_event evs[256];
  while (open > 0 && issued > done) {
    const auto now = Clock::now();
    if (windowOpen && (now >= end || inWindow >= maxOps)) {
      windowOpen = false;
      t1 = now;
      cpu1 = cpu_of(cpuPid);
    }
    if (!windowOpen && now >= t1 + kDrain) {
      note(w, "mix: replies missing after the window");
      break;
    }
    int n = ep.wait(evs, 256, 50);
    for (int i = 0; i < n; ++i) {
      EConn& c = *static_cast<EConn*>(evs[i].data.ptr);
      if (c.fd < 0) continue;
      Io r = Io::again;
      if ((evs[i].events & EPOLLOUT) && c.outOff < c.out.size()) r = flush(ep, c);
      if (r == Io::error) {
        note(w, "mix: send failed");
        close_conn(ep, c);
        --open;
        continue;
      }
      std::size_t len = 0;
      r = read_frame(c, &len);
      if (r == Io::again) continue;
      if (r == Io::error || !reply_ok(c.in, len)) {
        note(w, r == Io::error ? "mix: connection error" : "mix: " + reply_error(c.in, len));
        close_conn(ep, c);
        --open;
        continue;
      }
      ++done;
      if (windowOpen) {
        ++inWindow;
        if (issue(c) == Io::error) {
          note(w, "mix: send failed");
          close_conn(ep, c);
          --open;
        } else {
          ++issued;
        }
      }
    }
  }
  if (windowOpen) {
    t1 = Clock::now();
    cpu1 = cpu_of(cpuPid);
  }
  for (auto& c : cs) close_conn(ep, c);
  w.ops = w.commands = inWindow;
  w.completed = done;
  w.seconds = Seconds(t1 - t0).count();
  set_cpu(w, cpu0, cpu1);
  return w;
}

Window big_inserts(std::uint16_t port, std::size_t docBytes, Seconds duration,
                   std::uint64_t maxCount, pid_t cpuPid) {
  Window w;
  Bytes frame;
  std::size_t idOffset = 0;
  {
    Doc d = new_doc();
    BSON_APPEND_INT64(d.get(), "_id", kMagic);
    Bytes blob(docBytes > 64 ? docBytes - 64 : docBytes, 0xA5);
    bson_append_binary(d.get(), "data", 4, BSON_SUBTYPE_BINARY, blob.data(),
                       static_cast<std::uint32_t>(blob.size()));
    std::vector<Doc> docs;
    docs.push_back(std::move(d));
    frame = insert_frame("big", docs);
    idOffset = find_magic(frame);
  }
  int fd = connect_blocking(port);
  Bytes hello = Requests::make().isMaster, reply;
  if (fd < 0 || roundtrip(fd, hello, 1, reply) == 0) {
    note(w, "big: connect/handshake failed");
    if (fd >= 0) close_fd(fd);
    return w;
  }
  static std::int64_t nextId = 1;
  std::int32_t id = 1;
  const Cpu cpu0 = cpu_of(cpuPid);
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(duration);
  while (w.ops < maxCount && (w.ops == 0 || Clock::now() < end)) {
    put_i64(frame, idOffset, nextId++);
    std::size_t n = roundtrip(fd, frame, ++id, reply);
    if (n == 0 || !reply_ok(reply, n)) {
      note(w, n == 0 ? "big: no reply" : "big: " + reply_error(reply, n));
      break;
    }
    ++w.ops;
    w.bytes += frame.size();
  }
  w.seconds = Seconds(Clock::now() - t0).count();
  const Cpu cpu1 = cpu_of(cpuPid);
  set_cpu(w, cpu0, cpu1);
  w.commands = w.ops;
  close_fd(fd);
  drop(port, "big");
  return w;
}

Window read_back(std::uint16_t port, Seconds duration, std::uint64_t maxScans, pid_t cpuPid) {
  Window w;
  Bytes find;
  {
    Doc b = new_doc();
    BSON_APPEND_UTF8(b.get(), "find", "read10k");
    bson_t filter;
    BSON_APPEND_DOCUMENT_BEGIN(b.get(), "filter", &filter);
    bson_append_document_end(b.get(), &filter);
    append_lsid(b.get());
    BSON_APPEND_UTF8(b.get(), "$db", "bench");
    find = op_msg(b);
  }
  int fd = connect_blocking(port);
  Bytes hello = Requests::make().isMaster, reply;
  if (fd < 0 || roundtrip(fd, hello, 1, reply) == 0) {
    note(w, "read: connect/handshake failed");
    if (fd >= 0) close_fd(fd);
    return w;
  }
  std::int32_t id = 1;
  const Cpu cpu0 = cpu_of(cpuPid);
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(duration);
  while (w.ops < maxScans && (w.ops == 0 || Clock::now() < end) && w.errors == 0) {
    std::size_t n = roundtrip(fd, find, ++id, reply);
    if (n == 0 || !reply_ok(reply, n)) {
      note(w, n == 0 ? "read: find: no reply" : "read: " + reply_error(reply, n));
      break;
    }
    w.bytes += n;
    ++w.commands;
    std::int64_t cursor = cursor_id(reply, n);
    for (int batches = 0; cursor > 0 && batches < 1000; ++batches) {
      Doc g = new_doc();
      BSON_APPEND_INT64(g.get(), "getMore", cursor);
      BSON_APPEND_UTF8(g.get(), "collection", "read10k");
      BSON_APPEND_INT64(g.get(), "batchSize", 1000);
      append_lsid(g.get());
      BSON_APPEND_UTF8(g.get(), "$db", "bench");
      Bytes gm = op_msg(g);
      n = roundtrip(fd, gm, ++id, reply);
      if (n == 0 || !reply_ok(reply, n)) {
        note(w, n == 0 ? "read: getMore: no reply" : "read: " + reply_error(reply, n));
        break;
      }
      w.bytes += n;
      ++w.commands;
      cursor = cursor_id(reply, n);
    }
    if (cursor != 0) note(w, "read: cursor not exhausted");
    ++w.ops;
  }
  w.seconds = Seconds(Clock::now() - t0).count();
  const Cpu cpu1 = cpu_of(cpuPid);
  set_cpu(w, cpu0, cpu1);
  close_fd(fd);
  return w;
}

Window churn(std::uint16_t port, int concurrency, Seconds duration, std::uint64_t maxConns,
             pid_t cpuPid) {
  Window w;
  Epoll ep;
  const Requests req = Requests::make();
  std::vector<EConn> cs(static_cast<std::size_t>(concurrency));
  const Cpu cpu0 = cpu_of(cpuPid);
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(duration);
  std::uint64_t started = 0;
  int active = 0;
  auto begin = [&](EConn& c) {
    if (started >= maxConns || Clock::now() >= end) return;
    if (!start_connect(ep, c, port)) {
      note(w, "churn: connect failed");
      return;
    }
    ++started;
    ++active;
  };
  auto fail = [&](EConn& c, const std::string& what) {
    note(w, what);
    close_conn(ep, c);
    --active;
    if (w.errors < 100) begin(c);
  };
  for (auto& c : cs) begin(c);
  epoll_event evs[256];
  Clock::time_point t1 = t0;
  while (active > 0) {
    if (Clock::now() >= end + kDrain) {
      note(w, "churn: connections stuck after the window");
      break;
    }
    int n = ep.wait(evs, 256, 50);
    for (int i = 0; i < n; ++i) {
      EConn& c = *static_cast<EConn*>(evs[i].data.ptr);
      if (c.fd < 0) continue;
      if (c.step == 0) {
        if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          fail(c, std::string("churn: connect: ") + std::strerror(err));
          continue;
        }
        if (g_tls) {
          // A full TLS handshake each time: no session is offered for resumption.
          attach_tls(c.fd);
          c.step = 3;
        } else {
          c.wantOut = true;  // flush() re-arms EPOLLIN only
          c.step = 1;
          if (send_frame(ep, c, req.isMaster) == Io::error) fail(c, "churn: send failed");
          continue;
        }
      }
      if (c.step == 3) {
        const auto h = tls_of(c.fd)->handshake();
        if (h == TlsConn::Handshake::failed) {
          fail(c, "churn: TLS handshake: " + tls_of(c.fd)->error_reason());
        } else if (h == TlsConn::Handshake::want_read) {
          c.wantOut = false;
          ep.mod(&c, EPOLLIN);
        } else if (h == TlsConn::Handshake::want_write) {
          c.wantOut = true;
          ep.mod(&c, EPOLLIN | EPOLLOUT);
        } else {
          c.wantOut = true;  // flush() re-arms EPOLLIN only
          c.step = 1;
          if (send_frame(ep, c, req.isMaster) == Io::error) fail(c, "churn: send failed");
        }
        continue;
      }
      if ((evs[i].events & EPOLLOUT) && c.outOff < c.out.size() && flush(ep, c) == Io::error) {
        fail(c, "churn: send failed");
        continue;
      }
      std::size_t len = 0;
      Io r = read_frame(c, &len);
      if (r == Io::again) continue;
      if (r == Io::error || !reply_ok(c.in, len)) {
        fail(c, r == Io::error ? "churn: connection error" : "churn: " + reply_error(c.in, len));
        continue;
      }
      ++w.commands;
      if (c.step == 1) {
        c.step = 2;
        if (send_frame(ep, c, req.ping) == Io::error) fail(c, "churn: send failed");
        continue;
      }
      close_conn(ep, c);
      --active;
      ++w.ops;
      t1 = Clock::now();
      begin(c);
    }
  }
  for (auto& c : cs) close_conn(ep, c);
  const Cpu cpu1 = cpu_of(cpuPid);
  set_cpu(w, cpu0, cpu1);
  w.seconds = Seconds(t1 - t0).count();
  return w;
}

std::vector<int> open_idle(std::uint16_t port, int n, Seconds timeout, std::string* error) {
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(n));
  Epoll ep;
  const Requests req = Requests::make();
  std::vector<EConn> cs(64);
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  int started = 0, active = 0, errors = 0;
  auto begin = [&](EConn& c) {
    if (started >= n || Clock::now() >= end || errors > 0) return;
    if (!start_connect(ep, c, port)) {
      ++errors;
      if (error && error->empty()) *error = std::string("connect: ") + std::strerror(errno);
      return;
    }
    ++started;
    ++active;
  };
  auto fail = [&](EConn& c, const std::string& what) {
    ++errors;
    if (error && error->empty()) *error = what;
    close_conn(ep, c);
    --active;
  };
  for (auto& c : cs) begin(c);
  epoll_event evs[256];
  while (active > 0 && Clock::now() < end) {
    int k = ep.wait(evs, 256, 50);
    for (int i = 0; i < k; ++i) {
      EConn& c = *static_cast<EConn*>(evs[i].data.ptr);
      if (c.fd < 0) continue;
      if (c.step == 0) {
        if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          fail(c, std::string("idle: connect: ") + std::strerror(err));
          continue;
        }
        c.wantOut = true;
        c.step = 1;
        if (send_frame(ep, c, req.isMaster) == Io::error) fail(c, "idle: send failed");
        continue;
      }
      if ((evs[i].events & EPOLLOUT) && c.outOff < c.out.size() && flush(ep, c) == Io::error) {
        fail(c, "idle: send failed");
        continue;
      }
      std::size_t len = 0;
      Io r = read_frame(c, &len);
      if (r == Io::again) continue;
      if (r == Io::error || !reply_ok(c.in, len)) {
        fail(c, "idle: handshake failed");
        continue;
      }
      // Established: keep the descriptor, forget the slot.
      ep.del(&c);
      fds.push_back(c.fd);
      c.fd = -1;
      --active;
      begin(c);
    }
  }
  for (auto& c : cs) close_conn(ep, c);
  if (static_cast<int>(fds.size()) < n && error && error->empty()) *error = "idle: timed out";
  return fds;
}

void close_all(std::vector<int>& fds) {
  for (int fd : fds) close_fd(fd);
  fds.clear();
}

std::size_t one_huge_insert(std::uint16_t port, std::size_t totalBytes, std::string* error) {
  // Documents of at most 15.9 MB (maxBsonObjectSize 16 MiB) in one sequence.
  constexpr std::size_t kDoc = 15'900'000;
  std::vector<Doc> docs;
  std::size_t left = totalBytes > 4096 ? totalBytes - 4096 : totalBytes;
  Bytes blob(std::min(left, kDoc), 0x5A);
  for (std::int64_t i = 0; left > 0 && i < 8; ++i) {
    const std::size_t sz = std::min(left, kDoc);
    Doc d = new_doc();
    BSON_APPEND_INT64(d.get(), "_id", i);
    bson_append_binary(d.get(), "data", 4, BSON_SUBTYPE_BINARY, blob.data(),
                       static_cast<std::uint32_t>(sz));
    docs.push_back(std::move(d));
    left -= sz;
  }
  Bytes frame = insert_frame("huge", docs);
  docs.clear();
  int fd = connect_blocking(port);
  Bytes hello = Requests::make().isMaster, reply;
  std::size_t sent = 0;
  if (fd < 0 || roundtrip(fd, hello, 1, reply) == 0) {
    if (error) *error = "connect/handshake failed";
  } else {
    std::size_t n = roundtrip(fd, frame, 2, reply);
    if (n == 0 || !reply_ok(reply, n)) {
      if (error) *error = n == 0 ? "no reply" : reply_error(reply, n);
    } else {
      sent = frame.size();
    }
  }
  if (fd >= 0) close_fd(fd);
  drop(port, "huge");
  return sent;
}

}  // namespace varanus::bench
