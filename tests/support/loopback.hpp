// Test support: a TCP listener on 127.0.0.1 at a free port, the fake
// servers' first step (upstreams, collectors, ports to take).
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>

namespace varanus::test {

struct Listener {
  int fd = -1;
  std::uint16_t port = 0;
};

/// A close-on-exec socket listening on 127.0.0.1, port chosen by the kernel.
inline Listener listen_loopback(int backlog = 16) {
  Listener l;
  l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(l.fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(l.fd, backlog) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  l.port = ntohs(a.sin_port);
  return l;
}

}  // namespace varanus::test
