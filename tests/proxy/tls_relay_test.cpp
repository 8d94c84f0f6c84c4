// The relay's TLS legs in-process (proxy::Server with use_tls), so that the
// sanitizer builds of the unit tests cover them: a client speaking TLS
// through varanus to an echo upstream, plaintext and TLS, with bytes checked
// both ways; a failed handshake counted. Certificates from
// tests/support/make_certs.sh, made once per test process.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../support/certs.hpp"
#include "../support/loopback.hpp"
#include "varanus/proxy/server.hpp"
#include "varanus/proxy/tls.hpp"

using namespace varanus;
using namespace varanus::proxy;
namespace fs = std::filesystem;

namespace {

using varanus::test::cert;

std::shared_ptr<TlsContextHolder> server_holder() {
  TlsServerSettings s;
  s.certFile = cert("server.pem");
  s.keyFile = cert("server.key");
  return TlsContextHolder::server(s);
}

std::shared_ptr<const TlsContext> client_context() {
  TlsClientSettings c;
  c.enabled = true;
  c.caFile = cert("ca.pem");
  return TlsContext::client(c);
}

int connect_to(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

void wait_fd(int fd, TlsConn::Wait w) {
  pollfd p{fd, static_cast<short>(w == TlsConn::Wait::writable ? POLLOUT : POLLIN), 0};
  ::poll(&p, 1, 5000);
}

/// Blocking-style helpers over a TlsConn on a blocking socket.
void handshake(TlsConn& t, int fd) {
  for (int i = 0; i < 1000; ++i) {
    const auto h = t.handshake();
    if (h == TlsConn::Handshake::done) return;
    REQUIRE_MESSAGE(h != TlsConn::Handshake::failed, t.error_reason());
    wait_fd(fd, h == TlsConn::Handshake::want_write ? TlsConn::Wait::writable
                                                    : TlsConn::Wait::readable);
  }
  FAIL("handshake did not finish");
}

void write_all(TlsConn& t, int fd, const std::vector<std::uint8_t>& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const auto r =
        t.write(reinterpret_cast<const std::byte*>(bytes.data() + off), bytes.size() - off);
    REQUIRE_MESSAGE(r.status != TlsConn::Status::error, t.error_reason());
    off += r.bytes;
    if (r.status == TlsConn::Status::again) wait_fd(fd, r.wait);
  }
}

std::vector<std::uint8_t> read_n(TlsConn& t, int fd, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  std::size_t got = 0;
  while (got < n) {
    const auto r = t.read(reinterpret_cast<std::byte*>(out.data() + got), n - got);
    REQUIRE_MESSAGE(r.status != TlsConn::Status::error, t.error_reason());
    REQUIRE(r.status != TlsConn::Status::eof);
    got += r.bytes;
    if (r.status == TlsConn::Status::again && got < n) wait_fd(fd, r.wait);
  }
  return out;
}

/// An upstream that echoes every byte of each connection (TLS when given a
/// context), until the peer closes.
struct EchoUpstream {
  test::Listener l = test::listen_loopback();
  std::shared_ptr<const TlsContext> tls;
  std::thread thread;
  std::atomic<bool> stop{false};

  explicit EchoUpstream(std::shared_ptr<const TlsContext> ctx = nullptr) : tls(std::move(ctx)) {
    thread = std::thread([this] {
      std::vector<std::thread> conns;
      for (;;) {
        const int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0 || stop) {
          if (fd >= 0) ::close(fd);
          break;
        }
        conns.emplace_back([this, fd] { echo(fd); });
      }
      for (auto& c : conns) c.join();
    });
  }
  void echo(int fd) {
    std::vector<std::uint8_t> buf(64 * 1024);
    if (tls) {
      // Non-blocking: TlsConn::read fills its buffer until the socket is
      // drained, which on a blocking socket would wait for a full buffer.
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      TlsConn t(tls, fd);
      for (;;) {
        const auto h = t.handshake();
        if (h == TlsConn::Handshake::done) break;
        if (h == TlsConn::Handshake::failed) {
          ::close(fd);
          return;
        }
        wait_fd(fd, h == TlsConn::Handshake::want_write ? TlsConn::Wait::writable
                                                        : TlsConn::Wait::readable);
      }
      for (;;) {
        const auto r = t.read(reinterpret_cast<std::byte*>(buf.data()), buf.size());
        if (r.bytes > 0) write_all(t, fd, {buf.begin(), buf.begin() + r.bytes});
        if (r.status == TlsConn::Status::eof || r.status == TlsConn::Status::error) break;
        if (r.status == TlsConn::Status::again) wait_fd(fd, r.wait);
      }
    } else {
      for (;;) {
        const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        ::send(fd, buf.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL);
      }
    }
    ::close(fd);
  }
  ~EchoUpstream() {
    stop = true;
    ::close(connect_to(l.port));  // wakes accept
    thread.join();
    ::close(l.fd);
  }
};

struct NullOutput : monitor::EventOutput {
  void publish(monitor::Event&&) override {}
};

/// varanus in-process with the given TLS legs, in front of `upstreamPort`.
struct Relay {
  NullOutput out;
  monitor::Stats stats;
  std::unique_ptr<Server> server;
  std::thread thread;
  std::uint16_t port = 0;

  Relay(std::uint16_t upstreamPort, std::shared_ptr<TlsContextHolder> clientLeg,
        std::shared_ptr<TlsContextHolder> upstreamLeg) {
    ProxyConfig cfg;
    cfg.listen = {"127.0.0.1", 0};
    cfg.upstream = {"127.0.0.1", upstreamPort};
    cfg.ioThreads = 2;
    cfg.gracePeriod = std::chrono::milliseconds(2000);
    server = std::make_unique<Server>(cfg, out, stats, null_inspector_factory(),
                                      [](std::string_view) {});
    server->use_tls(std::move(clientLeg), std::move(upstreamLeg));
    port = server->start().port;
    thread = std::thread([this] { server->run(); });
  }
  ~Relay() {
    server->stop();
    thread.join();
  }
};

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

/// Connects a TLS client through the relay and echoes `rounds` messages.
void echo_through(std::uint16_t port, std::size_t size, int rounds) {
  const int fd = connect_to(port);
  TlsConn t(client_context(), fd, "127.0.0.1");
  handshake(t, fd);
  for (int i = 0; i < rounds; ++i) {
    const auto msg = random_bytes(size, static_cast<unsigned>(i + 1));
    write_all(t, fd, msg);
    CHECK(read_n(t, fd, msg.size()) == msg);
  }
  ::close(fd);
}

}  // namespace

TEST_CASE("TLS relay: a TLS client through varanus to a plaintext upstream, bytes intact") {
  EchoUpstream up;
  Relay relay(up.l.port, server_holder(), nullptr);
  echo_through(relay.port, 100, 20);
  echo_through(relay.port, 3 << 20, 2);  // larger than a read: partial writes, many records
}

TEST_CASE("TLS relay: TLS on both legs, several clients at once") {
  TlsServerSettings us;
  us.certFile = cert("server.pem");
  us.keyFile = cert("server.key");
  EchoUpstream up(TlsContext::server(us));
  TlsClientSettings uc;
  uc.enabled = true;
  uc.caFile = cert("ca.pem");
  Relay relay(up.l.port, server_holder(), TlsContextHolder::client(uc));
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i)
    clients.emplace_back([&, i] { echo_through(relay.port, 1000 + 7919 * i, 10); });
  for (auto& c : clients) c.join();
}

TEST_CASE("TLS relay: an upstream whose certificate is not trusted fails the handshake, counted") {
  TlsServerSettings us;
  us.certFile = cert("unknown.pem");
  us.keyFile = cert("unknown.key");
  EchoUpstream up(TlsContext::server(us));
  TlsClientSettings uc;
  uc.enabled = true;
  uc.caFile = cert("ca.pem");
  Relay relay(up.l.port, nullptr, TlsContextHolder::client(uc));
  const int fd = connect_to(relay.port);
  char c;
  CHECK(::recv(fd, &c, 1, 0) == 0);  // closed by varanus, not hung
  ::close(fd);
  CHECK(relay.stats.tlsHandshakeFailures[1][0].load() == 1);  // upstream, unknown_ca
}
