// TCP and UDP sinks through real loopback sockets: delivery, a collector
// that stops reading (publish stays instant, drops counted), a collector
// that goes away and comes back (reconnect, events flow again).
#include "varanus/sinks/net_sinks.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "sink_test_util.hpp"
#include "varanus/sinks/dispatcher.hpp"

using namespace varanus;
using namespace sinks_test;
using namespace std::chrono_literals;
using nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

int bound_socket(int type, std::uint16_t port = 0, int rcvbuf = 0) {
  const int fd = ::socket(AF_INET, type, 0);
  REQUIRE(fd >= 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (rcvbuf != 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  if (type == SOCK_STREAM) REQUIRE(::listen(fd, 4) == 0);
  return fd;
}

std::uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return ntohs(a.sin_port);
}

int accept_within(int listener, std::chrono::milliseconds timeout) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return -1;
  return ::accept(listener, nullptr, nullptr);
}

// Reads lines from a connected socket until `done(lines)` or the timeout.
template <class Done>
std::vector<json> read_lines(int fd, std::chrono::milliseconds timeout, Done done) {
  std::vector<json> lines;
  std::string pending;
  const auto deadline = clk::now() + timeout;
  char buf[65536];
  while (!done(lines) && clk::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      lines.push_back(json::parse(pending.substr(0, nl)));
      pending.erase(0, nl + 1);
    }
  }
  return lines;
}

bool has_request(const std::vector<json>& lines, std::int32_t id) {
  for (const auto& l : lines)
    if (l["requestId"] == id) return true;
  return false;
}

}  // namespace

TEST_CASE("tcp sink: every line reaches the collector") {
  const int listener = bound_socket(SOCK_STREAM);
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto tcp =
      std::make_shared<sinks::TcpSink>(sinks::NetSinkOptions{"127.0.0.1", port_of(listener)});
  CHECK(tcp->name() == "tcp:127.0.0.1:" + std::to_string(port_of(listener)));
  d.add(tcp);
  d.start();
  for (int i = 0; i < 1000; ++i) d.publish(started(i));
  const int conn = accept_within(listener, 5s);
  REQUIRE(conn >= 0);
  auto lines = read_lines(conn, 10s, [](const auto& l) { return l.size() >= 1000; });
  REQUIRE(lines.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(lines[static_cast<std::size_t>(i)]["requestId"] == i);
  d.stop();
  CHECK(tcp->dropped() == 0);
  CHECK(tcp->written() == 1000);
  CHECK(tcp->connects() == 1);
  ::close(conn);
  ::close(listener);
}

TEST_CASE("tcp sink: a collector that stops reading costs drops, never time") {
  const int listener = bound_socket(SOCK_STREAM, 0, 4096);
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  sinks::NetSinkOptions o{"127.0.0.1", port_of(listener)};
  o.maxBufferBytes = 64 * 1024;
  auto tcp = std::make_shared<sinks::TcpSink>(o);
  d.add(tcp);
  d.start();
  const int conn = accept_within(listener, 5s);
  REQUIRE(conn >= 0);
  // The collector reads nothing. Publish ~30 MB of lines.
  constexpr int kEvents = 50000;
  clk::duration worst{};
  const auto t0 = clk::now();
  for (int i = 0; i < kEvents; ++i) {
    const auto a = clk::now();
    d.publish(started(i));
    worst = std::max(worst, clk::now() - a);
    if (i % 5000 == 0) std::this_thread::sleep_for(5ms);  // let the sink thread work
  }
  const auto total = clk::now() - t0;
  MESSAGE("publish of ", kEvents,
          " events: ", std::chrono::duration_cast<std::chrono::milliseconds>(total).count(),
          " ms, worst ", std::chrono::duration_cast<std::chrono::microseconds>(worst).count(),
          " us");
  CHECK(worst < 50ms);  // never waits on the network (generous for a loaded CI box)
  // The sink thread gets through everything by dropping.
  const auto deadline = clk::now() + 10s;
  while (tcp->written() + tcp->dropped() + d.dropped() < static_cast<std::uint64_t>(kEvents) &&
         clk::now() < deadline)
    std::this_thread::sleep_for(10ms);
  CHECK(tcp->dropped() > 0);
  CHECK(tcp->written() + tcp->dropped() == kEvents);

  // The collector reads again: new events flow.
  std::atomic<bool> reading{true};
  std::vector<json> lines;
  std::thread reader([&] {
    lines = read_lines(conn, 15s, [](const auto& l) { return has_request(l, 999999); });
    reading = false;
  });
  for (int i = 0; i < 200 && reading; ++i) {
    d.publish(started(999000 + i));
    std::this_thread::sleep_for(20ms);
  }
  d.publish(started(999999));
  reader.join();
  CHECK(has_request(lines, 999999));
  d.stop();
  ::close(conn);
  ::close(listener);
}

TEST_CASE("tcp sink: the collector goes away (drops counted) and comes back (reconnect)") {
  int listener = bound_socket(SOCK_STREAM);
  const std::uint16_t port = port_of(listener);
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  sinks::NetSinkOptions o{"127.0.0.1", port};
  o.minBackoff = 20ms;
  o.maxBackoff = 200ms;
  auto tcp = std::make_shared<sinks::TcpSink>(o);
  std::vector<std::string> reports;
  tcp->set_error_handler([&](std::string_view l) { reports.emplace_back(l); });
  d.add(tcp);
  d.start();
  int conn = accept_within(listener, 5s);
  REQUIRE(conn >= 0);
  for (int i = 0; i < 10; ++i) d.publish(started(i));
  CHECK(read_lines(conn, 5s, [](const auto& l) { return l.size() >= 10; }).size() == 10);

  // Collector gone.
  ::close(conn);
  ::close(listener);
  const auto deadline = clk::now() + 5s;
  int next = 100;
  while (tcp->dropped() == 0 && clk::now() < deadline) {
    d.publish(started(next++));
    std::this_thread::sleep_for(5ms);
  }
  CHECK(tcp->dropped() > 0);
  CHECK(!tcp->connected());

  // Back on the same port: the sink reconnects and events flow again.
  listener = bound_socket(SOCK_STREAM, port);
  std::vector<json> lines;
  std::atomic<bool> got{false};
  std::thread collector([&] {
    const int c = accept_within(listener, 10s);
    if (c < 0) return;
    lines = read_lines(c, 10s, [](const auto& l) { return has_request(l, 777777); });
    got = true;
    ::close(c);
  });
  for (int i = 0; i < 500 && !got; ++i) {
    d.publish(started(i == 0 ? 0 : 777777));
    std::this_thread::sleep_for(20ms);
  }
  collector.join();
  CHECK(has_request(lines, 777777));
  CHECK(tcp->connects() == 2);
  d.stop();
  ::close(listener);
  CHECK(!reports.empty());  // the loss of the collector was reported
}

TEST_CASE("udp sink: one datagram per line") {
  const int rx = bound_socket(SOCK_DGRAM);
  monitor::Stats stats;
  sinks::Dispatcher d(stats);
  auto udp = std::make_shared<sinks::UdpSink>(sinks::NetSinkOptions{"127.0.0.1", port_of(rx)});
  d.add(udp);
  d.start();
  for (int i = 0; i < 100; ++i) d.publish(started(i));
  std::vector<json> got;
  char buf[65536];
  const auto deadline = clk::now() + 5s;
  while (got.size() < 100 && clk::now() < deadline) {
    pollfd p{rx, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(rx, buf, sizeof buf, 0);
    REQUIRE(n > 0);
    std::string dgram(buf, static_cast<std::size_t>(n));
    CHECK(dgram.back() == '\n');
    CHECK(std::count(dgram.begin(), dgram.end(), '\n') == 1);
    got.push_back(json::parse(dgram));
  }
  d.stop();
  REQUIRE(got.size() == 100);
  CHECK(got[42]["requestId"] == 42);
  CHECK(udp->written() == 100);
  ::close(rx);
}

TEST_CASE("udp sink: nobody listening is not an error, only drops") {
  const int rx = bound_socket(SOCK_DGRAM);
  const std::uint16_t port = port_of(rx);
  ::close(rx);  // now the port is closed: ICMP unreachable
  sinks::UdpSink udp(sinks::NetSinkOptions{"127.0.0.1", port});
  for (int i = 0; i < 50; ++i) udp.write(started(i));
  CHECK(udp.errors() == 0);
  CHECK(udp.written() + udp.dropped() == 50);
  CHECK_THROWS_AS(sinks::UdpSink(sinks::NetSinkOptions{"no-such-host.invalid", 9}),
                  std::system_error);
}
