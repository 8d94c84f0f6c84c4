// proxy::TlsContext / TlsContextHolder / TlsConn over loopback TCP with the
// certificates of tests/support/make_certs.sh (made at test time): both ends
// non-blocking, driven by a small poll loop in the test thread.
#include "varanus/proxy/tls.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "../support/certs.hpp"
#include "../support/loopback.hpp"

using namespace varanus::proxy;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using H = TlsConn::Handshake;
using S = TlsConn::Status;

namespace {

// OpenSSL's allocations, counted: installed before OpenSSL allocates
// anything (static initialisation, before main).
std::atomic<long> g_sslAllocations{0};
void* counting_malloc(std::size_t n, const char*, int) {
  g_sslAllocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n);
}
void* counting_realloc(void* p, std::size_t n, const char*, int) {
  g_sslAllocations.fetch_add(1, std::memory_order_relaxed);
  return std::realloc(p, n);
}
void counting_free(void* p, const char*, int) {
  std::free(p);
}
const bool g_countingAllocations =
    CRYPTO_set_mem_functions(counting_malloc, counting_realloc, counting_free) == 1;

using varanus::test::cert;
using varanus::test::certs;

TlsServerSettings server_settings(const char* base = "server") {
  TlsServerSettings s;
  s.certFile = cert((std::string(base) + ".pem").c_str());
  s.keyFile = cert((std::string(base) + ".key").c_str());
  return s;
}

TlsClientSettings client_settings() {
  TlsClientSettings s;
  s.enabled = true;
  s.caFile = cert("ca.pem");
  return s;
}

void set_nonblocking(int fd) {
  REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// A connected loopback TCP pair, both non-blocking: c (client), s (server).
struct Pair {
  int c = -1, s = -1;
  Pair() {
    auto l = varanus::test::listen_loopback();
    c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(c >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(l.port);
    REQUIRE(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    s = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(s >= 0);
    ::close(l.fd);
    set_nonblocking(c);
    set_nonblocking(s);
  }
  ~Pair() {
    if (c >= 0) ::close(c);
    if (s >= 0) ::close(s);
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
};

bool final(H h) {
  return h == H::done || h == H::failed;
}

void wait_both(int a, int b) {
  pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  ::poll(p, 2, 20);
}

struct Shake {
  H c, s;
};

/// Drives both handshakes to an end (deadline 10 s). A side that fails
/// half-closes its socket, so the other never waits for it forever.
Shake handshake(TlsConn& c, int cfd, TlsConn& s, int sfd) {
  Shake r{H::want_write, H::want_read};
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool cClosed = false, sClosed = false;
  while (!(final(r.c) && final(r.s))) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    if (!final(r.c)) r.c = c.handshake();
    if (!final(r.s)) r.s = s.handshake();
    if (r.c == H::failed && !cClosed) cClosed = ::shutdown(cfd, SHUT_WR) == 0;
    if (r.s == H::failed && !sClosed) sClosed = ::shutdown(sfd, SHUT_WR) == 0;
    wait_both(cfd, sfd);
  }
  return r;
}

/// Writes all of text (poll loop, deadline 10 s).
void send_all(TlsConn& t, int fd, std::string_view text) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!text.empty()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    auto r = t.write(reinterpret_cast<const std::byte*>(text.data()), text.size());
    REQUIRE(r.status != S::error);
    text.remove_prefix(r.bytes);
    if (r.status == S::again) {
      pollfd p{fd, static_cast<short>(r.wait == TlsConn::Wait::readable ? POLLIN : POLLOUT), 0};
      ::poll(&p, 1, 20);
    }
  }
}

struct Received {
  std::string text;
  S last = S::again;
  std::string reason;
  std::string kind;
};

/// Reads until n bytes, EOF or an error (poll loop, deadline 10 s).
Received receive(TlsConn& t, int fd, std::size_t n) {
  Received out;
  std::byte buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (out.text.size() < n) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    auto r = t.read(buf, sizeof buf);
    out.text.append(reinterpret_cast<const char*>(buf), r.bytes);
    out.last = r.status;
    if (r.status == S::eof) break;
    if (r.status == S::error) {
      out.reason = t.error_reason();
      out.kind = std::string(t.failure_kind());
      break;
    }
    if (r.status == S::again) {
      pollfd p{fd, static_cast<short>(r.wait == TlsConn::Wait::writable ? POLLOUT : POLLIN), 0};
      ::poll(&p, 1, 20);
    }
  }
  return out;
}

std::string error_of(auto&& build) {
  try {
    build();
  } catch (const TlsError& e) {
    return e.what();
  }
  return "(no error)";
}

void write_file(const fs::path& p, std::string_view text) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// One connection's both ends, the handshake run.
struct Conn {
  Pair pair;
  TlsConn client;
  TlsConn server;
  Shake shake;
  Conn(std::shared_ptr<const TlsContext> cctx, std::shared_ptr<const TlsContext> sctx,
       std::string_view host = "127.0.0.1")
      : client(std::move(cctx), pair.c, host),
        server(std::move(sctx), pair.s),
        shake(handshake(client, pair.c, server, pair.s)) {}
};

}  // namespace

TEST_CASE("TLS: a handshake with the test CA, then data both ways") {
  Conn conn(TlsContext::client(client_settings()), TlsContext::server(server_settings()));
  REQUIRE(conn.shake.c == H::done);
  REQUIRE(conn.shake.s == H::done);
  CHECK(conn.client.version() == "TLSv1.3");
  CHECK(conn.server.version() == "TLSv1.3");
  CHECK_FALSE(conn.client.cipher().empty());
  send_all(conn.client, conn.pair.c, "ping from the client");
  CHECK(receive(conn.server, conn.pair.s, 20).text == "ping from the client");
  send_all(conn.server, conn.pair.s, "pong");
  CHECK(receive(conn.client, conn.pair.c, 4).text == "pong");
  // Nothing more: a read says again (drained), waiting for readability.
  std::byte buf[16];
  auto r = conn.server.read(buf, sizeof buf);
  CHECK(r.status == S::again);
  CHECK(r.bytes == 0);
  CHECK(r.wait == TlsConn::Wait::readable);
}

TEST_CASE("TLS: a host name (localhost) is verified like an IP address") {
  Conn conn(TlsContext::client(client_settings()), TlsContext::server(server_settings()),
            "localhost");
  CHECK(conn.shake.c == H::done);
  CHECK(conn.shake.s == H::done);
}

TEST_CASE("TLS: 48 MB each way at once, through partial writes from a moving buffer") {
  Conn conn(TlsContext::client(client_settings()), TlsContext::server(server_settings()));
  REQUIRE(conn.shake.c == H::done);
  constexpr std::size_t kTotal = 48u << 20;
  auto byte_at = [](std::size_t i, unsigned seed) {
    return static_cast<std::byte>((i * 131 + seed + (i >> 16)) & 0xff);
  };
  struct Side {
    TlsConn* tls;
    int fd;
    unsigned seed;                 // of what this side sends
    unsigned peerSeed;             // of what it receives
    std::size_t queued = 0;        // bytes put into `out` so far
    std::vector<std::byte> out{};  // pending (the relay's out-buffer: erased from the front)
    std::size_t received = 0;
    bool mismatch = false;
  };
  Side sides[2] = {{&conn.client, conn.pair.c, 1, 2}, {&conn.server, conn.pair.s, 2, 1}};
  std::vector<std::byte> in(64 * 1024);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + 120s;
  while (sides[0].received < kTotal || sides[1].received < kTotal) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    for (auto& side : sides) {
      // Top the out-buffer up to 100 KiB, then write what the socket takes.
      while (side.out.size() < 100 * 1024 && side.queued < kTotal)
        side.out.push_back(byte_at(side.queued++, side.seed));
      if (!side.out.empty()) {
        auto w = side.tls->write(side.out.data(), side.out.size());
        REQUIRE(w.status != S::error);
        side.out.erase(side.out.begin(), side.out.begin() + static_cast<std::ptrdiff_t>(w.bytes));
      }
      for (;;) {
        auto r = side.tls->read(in.data(), in.size());
        REQUIRE(r.status != S::error);
        REQUIRE(r.status != S::eof);
        for (std::size_t i = 0; i < r.bytes; ++i)
          if (in[i] != byte_at(side.received + i, side.peerSeed)) side.mismatch = true;
        side.received += r.bytes;
        if (r.status != S::ok) break;
      }
    }
    pollfd p[2] = {{conn.pair.c, POLLIN | POLLOUT, 0}, {conn.pair.s, POLLIN | POLLOUT, 0}};
    ::poll(p, 2, 20);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("96 MB through TLS (both ends in one thread, byte-wise checks): " << secs << " s");
  CHECK_FALSE(sides[0].mismatch);
  CHECK_FALSE(sides[1].mismatch);
  CHECK(sides[0].received == kTotal);
  CHECK(sides[1].received == kTotal);
}

TEST_CASE("TLS: close_notify is a half-close: EOF one way, data still flows the other") {
  auto cctx = TlsContext::client(client_settings());
  SUBCASE("TLS 1.3") {}
  SUBCASE("TLS 1.2") {
    SSL_CTX_set_max_proto_version(cctx->native(), TLS1_2_VERSION);
  }
  Conn conn(cctx, TlsContext::server(server_settings()));
  REQUIRE(conn.shake.c == H::done);
  send_all(conn.client, conn.pair.c, "last request");
  REQUIRE(conn.client.shutdown().status == S::ok);
  CHECK(conn.client.shutdown().status == S::ok);  // idempotent
  auto got = receive(conn.server, conn.pair.s, 100);
  CHECK(got.text == "last request");
  CHECK(got.last == S::eof);
  send_all(conn.server, conn.pair.s, "the reply after the half-close");
  CHECK(receive(conn.client, conn.pair.c, 30).text == "the reply after the half-close");
  REQUIRE(conn.server.shutdown().status == S::ok);
  CHECK(receive(conn.client, conn.pair.c, 1).last == S::eof);
}

TEST_CASE("TLS: a TCP EOF without close_notify is an EOF") {
  Conn conn(TlsContext::client(client_settings()), TlsContext::server(server_settings()));
  REQUIRE(conn.shake.c == H::done);
  send_all(conn.client, conn.pair.c, "bye");
  REQUIRE(::shutdown(conn.pair.c, SHUT_WR) == 0);
  auto got = receive(conn.server, conn.pair.s, 100);
  CHECK(got.text == "bye");
  CHECK(got.last == S::eof);
}

TEST_CASE("TLS: each handshake failure has its reason and kind") {
  auto sctx = [](const char* base) { return TlsContext::server(server_settings(base)); };
  auto cctx = TlsContext::client(client_settings());

  SUBCASE("a server certificate by an unknown CA") {
    Conn conn(cctx, sctx("unknown"));
    CHECK(conn.shake.c == H::failed);
    CHECK(conn.client.failure_kind() == "unknown_ca");
    CHECK(conn.client.error_reason() ==
          "certificate verify failed: unable to get local issuer certificate");
    CHECK(conn.shake.s == H::failed);
    CHECK(conn.server.failure_kind() == "unknown_ca");
  }
  SUBCASE("an expired server certificate") {
    Conn conn(cctx, sctx("expired"));
    CHECK(conn.shake.c == H::failed);
    CHECK(conn.client.failure_kind() == "expired");
    CHECK(conn.client.error_reason() == "certificate verify failed: certificate has expired");
    CHECK(conn.server.failure_kind() == "expired");
  }
  SUBCASE("a certificate for another host name") {
    Conn byName(cctx, sctx("otherhost"), "localhost");
    CHECK(byName.shake.c == H::failed);
    CHECK(byName.client.failure_kind() == "hostname_mismatch");
    CHECK(byName.client.error_reason() == "certificate verify failed: hostname mismatch");
    Conn byIp(cctx, sctx("otherhost"), "127.0.0.1");
    CHECK(byIp.shake.c == H::failed);
    CHECK(byIp.client.failure_kind() == "hostname_mismatch");
    CHECK(byIp.client.error_reason() == "certificate verify failed: IP address mismatch");
  }
  SUBCASE("insecure mode accepts all of those") {
    auto insecure = client_settings();
    insecure.insecure = true;
    auto ictx = TlsContext::client(insecure);
    for (const char* base : {"unknown", "expired", "otherhost"}) {
      Conn conn(ictx, sctx(base));
      CHECK_MESSAGE(conn.shake.c == H::done, base);
    }
  }
  SUBCASE("min version 1.3 refuses a client that speaks 1.2 at most") {
    auto s13 = server_settings();
    s13.minVersion = TlsVersion::v1_3;
    auto c12 = TlsContext::client(client_settings());
    SSL_CTX_set_max_proto_version(c12->native(), TLS1_2_VERSION);
    Conn conn(c12, TlsContext::server(s13));
    CHECK(conn.shake.s == H::failed);
    CHECK(conn.server.failure_kind() == "protocol_version");
    CHECK(conn.server.error_reason().starts_with("unsupported protocol version"));
    CHECK(conn.shake.c == H::failed);
    CHECK(conn.client.failure_kind() == "protocol_version");
    // The same client gets TLS 1.2 from a default server.
    Conn ok(c12, sctx("server"));
    CHECK(ok.shake.c == H::done);
    CHECK(ok.client.version() == "TLSv1.2");
  }
  SUBCASE("plaintext at a TLS server") {
    Pair pair;
    TlsConn server(sctx("server"), pair.s);
    const char hello[] =
        "\x3a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00 plaintext OP_MSG";
    REQUIRE(::send(pair.c, hello, sizeof hello - 1, 0) == static_cast<ssize_t>(sizeof hello - 1));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    H h = H::want_read;
    while (h == H::want_read && std::chrono::steady_clock::now() < deadline) {
      h = server.handshake();
      wait_both(pair.s, pair.s);
    }
    CHECK(h == H::failed);
    CHECK(server.failure_kind() == "not_tls");
  }
  SUBCASE("the peer closes during the handshake") {
    Pair pair;
    TlsConn server(sctx("server"), pair.s);
    CHECK(server.handshake() == H::want_read);
    ::close(pair.c);
    pair.c = -1;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    H h = H::want_read;
    while (h == H::want_read && std::chrono::steady_clock::now() < deadline) {
      h = server.handshake();
      wait_both(pair.s, pair.s);
    }
    CHECK(h == H::failed);
    CHECK(server.failure_kind() == "peer_closed");
    CHECK(server.error_reason() == "connection closed by the peer during the handshake");
  }
}

TEST_CASE("TLS: mutual TLS accepts a client certificate by the CA, refuses others") {
  auto mtls = server_settings();
  mtls.caFile = cert("ca.pem");
  auto sctx = TlsContext::server(mtls);

  SUBCASE("accepted") {
    auto withCert = client_settings();
    withCert.certFile = cert("client.pem");
    withCert.keyFile = cert("client.key");
    Conn conn(TlsContext::client(withCert), sctx);
    REQUIRE(conn.shake.c == H::done);
    REQUIRE(conn.shake.s == H::done);
    CHECK(conn.server.peer_subject() == "CN=varanus-test-client");
    send_all(conn.client, conn.pair.c, "authenticated");
    CHECK(receive(conn.server, conn.pair.s, 13).text == "authenticated");
  }
  SUBCASE("the bundle (certificate and key in one file) works as both") {
    auto bundle = client_settings();
    bundle.certFile = cert("client-bundle.pem");
    Conn conn(TlsContext::client(bundle), sctx);
    CHECK(conn.shake.s == H::done);
  }
  SUBCASE("refused: no client certificate") {
    Conn conn(TlsContext::client(client_settings()), sctx);
    CHECK(conn.shake.s == H::failed);
    CHECK(conn.server.failure_kind() == "no_client_cert");
    CHECK(conn.server.error_reason() == "peer did not return a certificate");
    // TLS 1.3: the client's handshake ends before the server's verdict,
    // which arrives as an alert on its first read.
    if (conn.shake.c == H::done) {
      auto got = receive(conn.client, conn.pair.c, 1);
      CHECK(got.last == S::error);
      CHECK(got.kind == "no_client_cert");
    } else {
      CHECK(conn.client.failure_kind() == "no_client_cert");
    }
  }
  SUBCASE("refused: a client certificate by an unknown CA") {
    auto other = client_settings();
    other.certFile = cert("unknown.pem");
    other.keyFile = cert("unknown.key");
    Conn conn(TlsContext::client(other), sctx);
    CHECK(conn.shake.s == H::failed);
    CHECK(conn.server.failure_kind() == "unknown_ca");
    CHECK(conn.server.error_reason() ==
          "certificate verify failed: unable to get local issuer certificate");
  }
}

TEST_CASE("TLS: a chain file (leaf + intermediate) verifies against the root alone") {
  Conn conn(TlsContext::client(client_settings()), TlsContext::server(server_settings("chain")));
  CHECK(conn.shake.c == H::done);
  CHECK(conn.shake.s == H::done);
}

TEST_CASE("TLS: context errors name the file and the reason") {
  const fs::path dir = certs() / "bad";
  fs::create_directories(dir);
  write_file(dir / "text.pem", "this is not PEM\n");
  const std::string missing = (dir / "missing.pem").string();
  auto with = [](std::string certFile, std::string keyFile, std::string caFile = {}) {
    TlsServerSettings s;
    s.certFile = std::move(certFile);
    s.keyFile = std::move(keyFile);
    s.caFile = std::move(caFile);
    return error_of([&] { TlsContext::server(s); });
  };
  CHECK(with(missing, cert("server.key")) ==
        "TLS certificate file " + missing + ": cannot open: No such file or directory");
  CHECK(with(cert("server.pem"), missing) ==
        "TLS key file " + missing + ": cannot open: No such file or directory");
  CHECK(with((dir / "text.pem").string(), cert("server.key")) ==
        "TLS certificate file " + (dir / "text.pem").string() + ": no PEM certificate in the file");
  CHECK(with(cert("server.key"), cert("server.key")) ==
        "TLS certificate file " + cert("server.key") + ": no PEM certificate in the file");
  CHECK(with(cert("server.pem"), cert("ca.pem")) ==
        "TLS key file " + cert("ca.pem") + ": no PEM private key in the file");
  CHECK(with(cert("server.pem"), cert("client.key")) ==
        "TLS key file " + cert("client.key") + ": the key does not match the certificate in " +
            cert("server.pem"));
  CHECK(with(cert("server.pem"), cert("server.key"), missing) ==
        "TLS CA file " + missing + ": cannot open: No such file or directory");
  CHECK(with(cert("server.pem"), cert("server.key"), (dir / "text.pem").string()) ==
        "TLS CA file " + (dir / "text.pem").string() + ": no PEM CA certificate in the file");
  CHECK(error_of([] { TlsContext::server({}); }) == "TLS: no certificate file given (--tls-cert)");
  if (::geteuid() != 0) {  // root reads any file
    write_file(dir / "unreadable.pem", read_file(cert("server.pem")));
    fs::permissions(dir / "unreadable.pem", fs::perms::none);
    CHECK(with((dir / "unreadable.pem").string(), cert("server.key")) ==
          "TLS certificate file " + (dir / "unreadable.pem").string() +
              ": cannot open: Permission denied");
  }
  auto client = client_settings();
  client.caFile = missing;
  CHECK(error_of([&] { TlsContext::client(client); }) ==
        "TLS CA file " + missing + ": cannot open: No such file or directory");
  client = client_settings();
  client.certFile = cert("client.pem");
  client.keyFile = cert("server.key");
  CHECK(error_of([&] { TlsContext::client(client); }) ==
        "TLS client key file " + cert("server.key") +
            ": the key does not match the certificate in " + cert("client.pem"));
  // A good pair for contrast: no error, and the served certificate's expiry.
  auto good = TlsContext::server(server_settings());
  REQUIRE(good->seconds_until_expiry().has_value());
  CHECK(*good->seconds_until_expiry() > 29 * 86'400);
  CHECK(*good->seconds_until_expiry() <= 30 * 86'400);
  CHECK(*TlsContext::server(server_settings("expired"))->seconds_until_expiry() < 0);
  CHECK_FALSE(TlsContext::client(client_settings())->seconds_until_expiry().has_value());
  CHECK(good->subject() == "CN=localhost");
}

TEST_CASE(
    "TLS: reload swaps in rotated files for new connections, a bad reload keeps the old context") {
  const fs::path dir = certs() / "rotate";
  fs::create_directories(dir);
  fs::copy_file(cert("server.pem"), dir / "cert.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(cert("server.key"), dir / "key.pem", fs::copy_options::overwrite_existing);
  TlsServerSettings s;
  s.certFile = (dir / "cert.pem").string();
  s.keyFile = (dir / "key.pem").string();
  auto holder = TlsContextHolder::server(s);
  auto cctx = TlsContext::client(client_settings());
  auto first = holder->get();
  Conn before(cctx, first);
  REQUIRE(before.shake.s == H::done);

  // Rotation: the second certificate (same names, new key).
  fs::copy_file(cert("server2.pem"), dir / "cert.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(cert("server2.key"), dir / "key.pem", fs::copy_options::overwrite_existing);
  CHECK_FALSE(holder->reload().has_value());
  auto second = holder->get();
  CHECK(second != first);
  Conn after(cctx, second);
  CHECK(after.shake.s == H::done);
  // The connection made before goes on with the old context.
  send_all(before.client, before.pair.c, "still here");
  CHECK(receive(before.server, before.pair.s, 10).text == "still here");

  // Half-rotated files (the new certificate, the old key): refused, kept.
  fs::copy_file(cert("server.pem"), dir / "cert.pem", fs::copy_options::overwrite_existing);
  auto why = holder->reload();
  REQUIRE(why.has_value());
  CHECK(*why == "TLS key file " + (dir / "key.pem").string() +
                    ": the key does not match the certificate in " + (dir / "cert.pem").string());
  CHECK(holder->get() == second);
  fs::remove(dir / "key.pem");
  why = holder->reload();
  REQUIRE(why.has_value());
  CHECK(why->find("cannot open: No such file or directory") != std::string::npos);
  CHECK(holder->get() == second);
}

TEST_CASE(
    "TLS: idle memory of a connection after the handshake, with and without released buffers") {
  constexpr int kConns = 40;
  for (bool release : {false, true}) {
    auto sctx = TlsContext::server(server_settings());
    auto cctx = TlsContext::client(client_settings());
    if (release) {
      SSL_CTX_set_mode(sctx->native(), SSL_MODE_RELEASE_BUFFERS);
      SSL_CTX_set_mode(cctx->native(), SSL_MODE_RELEASE_BUFFERS);
    }
    std::vector<std::unique_ptr<Conn>> conns;
    conns.reserve(kConns);
    // One connection first: OpenSSL's one-time allocations are not counted.
    auto warm = std::make_unique<Conn>(cctx, sctx);
    const auto before = ::mallinfo2().uordblks;
    for (int i = 0; i < kConns; ++i) {
      conns.push_back(std::make_unique<Conn>(cctx, sctx));
      REQUIRE(conns.back()->shake.s == H::done);
      send_all(conns.back()->client, conns.back()->pair.c, "x");
      REQUIRE(receive(conns.back()->server, conns.back()->pair.s, 1).text == "x");
    }
    const auto perConn = (::mallinfo2().uordblks - before) / kConns / 2;  // per TLS end
    MESSAGE("idle TLS connection end after the handshake, SSL_MODE_RELEASE_BUFFERS "
            << std::string(release ? "on" : "off") << ": " << perConn << " bytes");
    CHECK(perConn < (release ? 24u : 64u) * 1024);
  }
}

TEST_CASE("TLS: kernel TLS requested: data flows whether or not the kernel takes it") {
  auto ss = server_settings();
  ss.ktls = true;
  auto cs = client_settings();
  cs.ktls = true;
  Conn conn(TlsContext::client(cs), TlsContext::server(ss));
  REQUIRE(conn.shake.c == H::done);
  send_all(conn.client, conn.pair.c, "over kernel TLS maybe");
  CHECK(receive(conn.server, conn.pair.s, 21).text == "over kernel TLS maybe");
  send_all(conn.server, conn.pair.s, "and back");
  CHECK(receive(conn.client, conn.pair.c, 8).text == "and back");
  MESSAGE("kernel TLS on this machine: client send "
          << conn.client.ktls_send() << " recv " << conn.client.ktls_recv() << ", server send "
          << conn.server.ktls_send() << " recv " << conn.server.ktls_recv() << " ("
          << conn.client.version() << ", " << conn.client.cipher() << ")");
}

TEST_CASE("TLS: reads allocate no buffer once the connection is up") {
  REQUIRE(g_countingAllocations);
  struct Counts {
    long reads = 0, writes = 0;
  };
  // OpenSSL allocations in read() and in write() calls during 200 round
  // trips of 1000 bytes, after warm-up.
  auto allocations = [](bool releaseBuffers) {
    auto sctx = TlsContext::server(server_settings());
    if (releaseBuffers) SSL_CTX_set_mode(sctx->native(), SSL_MODE_RELEASE_BUFFERS);
    auto cctx = TlsContext::client(client_settings());
    if (releaseBuffers) SSL_CTX_set_mode(cctx->native(), SSL_MODE_RELEASE_BUFFERS);
    Conn conn(cctx, sctx);
    REQUIRE(conn.shake.c == H::done);
    const std::string msg(1000, 'm');
    std::byte buf[4096];
    Counts counts;
    auto one_way = [&](TlsConn& from, TlsConn& to, int toFd) {
      long mark = g_sslAllocations.load();
      auto w = from.write(reinterpret_cast<const std::byte*>(msg.data()), msg.size());
      counts.writes += g_sslAllocations.load() - mark;
      REQUIRE(w.status == S::ok);
      std::size_t got = 0;
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      while (got < msg.size()) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        mark = g_sslAllocations.load();
        auto r = to.read(buf, sizeof buf);
        counts.reads += g_sslAllocations.load() - mark;
        REQUIRE(r.status != S::error);
        got += r.bytes;
        if (got < msg.size()) wait_both(toFd, toFd);
      }
    };
    for (int i = 0; i < 10; ++i) {  // session tickets, record buffers
      one_way(conn.client, conn.server, conn.pair.s);
      one_way(conn.server, conn.client, conn.pair.c);
    }
    counts = {};
    for (int i = 0; i < 200; ++i) {
      one_way(conn.client, conn.server, conn.pair.s);
      one_way(conn.server, conn.client, conn.pair.c);
    }
    return counts;
  };
  // OpenSSL 3.0's record layer allocates one 40-byte WPACKET sub-packet per
  // TLS 1.3 record it decrypts and a few per record it writes
  // (crypto/packet.c, from tls13_enc and the write path): below that, none
  // is ours (no buffer per read in TlsConn).
  const Counts kept = allocations(false);
  MESSAGE("OpenSSL allocations, TLS 1.3: 400 reads " << kept.reads << ", 400 writes "
                                                     << kept.writes);
  CHECK(kept.reads <= 400);
  // SSL_MODE_RELEASE_BUFFERS (not used) frees and reallocates the record
  // buffers around reads too: the count sees that, so the bound above bites.
  const Counts released = allocations(true);
  MESSAGE("with SSL_MODE_RELEASE_BUFFERS: 400 reads " << released.reads << ", 400 writes "
                                                      << released.writes);
  CHECK(released.reads > kept.reads);
}

TEST_CASE("TLS: full handshakes per second, both ends in one thread (churn cost)") {
  auto sctx = TlsContext::server(server_settings());
  auto cctx = TlsContext::client(client_settings());
  constexpr int kHandshakes = 200;
  const std::clock_t cpu0 = std::clock();
  const auto t0 = std::chrono::steady_clock::now();
  int done = 0;
  for (int i = 0; i < kHandshakes; ++i) {
    Conn conn(cctx, sctx);
    if (conn.shake.c == H::done && conn.shake.s == H::done) ++done;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  MESSAGE(kHandshakes << " full TLS 1.3 handshakes (ECDSA P-256, client and server ends): " << secs
                      << " s wall, " << cpu / kHandshakes * 1e6 << " µs CPU each (both ends)");
  CHECK(done == kHandshakes);
}
