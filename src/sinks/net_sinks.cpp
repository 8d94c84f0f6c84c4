// TCP and UDP line sinks on plain non-blocking POSIX sockets: no event
// loop of their own, driven by the Dispatcher's flush()/tick on the sink
// thread.
#include "varanus/sinks/net_sinks.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "varanus/wire/host_port.hpp"

namespace varanus::sinks {

namespace {

using clock = std::chrono::steady_clock;

struct Address {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
};

// getaddrinfo; "[::1]" accepted as well as "::1". Empty string on success.
std::string resolve(std::string host, std::uint16_t port, int socktype, Address& out) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr)
    return std::string("cannot resolve ") + host + ": " + gai_strerror(rc);
  std::memcpy(&out.addr, res->ai_addr, res->ai_addrlen);
  out.len = res->ai_addrlen;
  out.family = res->ai_family;
  ::freeaddrinfo(res);
  return {};
}

std::string endpoint_name(const NetSinkOptions& o) {
  return wire::format_host_port(o.host, o.port);
}

std::uint64_t lines_in(std::string_view s) {
  return static_cast<std::uint64_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

// ---- TCP ------------------------------------------------------------------

TcpSink::TcpSink(NetSinkOptions options, RenderOptions render, SinkFilter filter)
    : Sink("tcp:" + endpoint_name(options), render, std::move(filter)),
      options_(std::move(options)),
      backoff_(options_.minBackoff) {
  start_connect();  // lines published meanwhile are buffered (bounded)
}

TcpSink::~TcpSink() {
  if (fd_ >= 0) ::close(fd_);
}

void TcpSink::start_connect() {
  Address a;
  if (std::string err = resolve(options_.host, options_.port, SOCK_STREAM, a); !err.empty()) {
    disconnect(err, 0);
    return;
  }
  fd_ = ::socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    disconnect("socket", errno);
    return;
  }
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0) {
    state_ = State::connected;
    ++connects_;
    backoff_ = options_.minBackoff;
  } else if (errno == EINPROGRESS) {
    state_ = State::connecting;
  } else {
    disconnect("connect", errno);
  }
}

void TcpSink::check_connect() {
  pollfd p{fd_, POLLOUT, 0};
  if (::poll(&p, 1, 0) <= 0) return;  // still connecting
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    disconnect("connect", err);
    return;
  }
  state_ = State::connected;
  ++connects_;
  backoff_ = options_.minBackoff;
  if (connects_ > 1) report("connected again; events flow again");
}

bool TcpSink::peer_closed() {
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) return true;
  if ((p.revents & POLLIN) != 0) {
    char discard[512];  // collectors do not talk back; ignore what they send
    const ssize_t n = ::recv(fd_, discard, sizeof discard, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

void TcpSink::disconnect(std::string_view why, int err) {
  const bool wasConnected = state_ == State::connected;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  state_ = State::down;
  // Lines not (completely) sent are lost; the connection they were meant
  // for is gone, and a fresh one must start on a line boundary.
  if (sent_ < buffer_.size()) count_unwritten(lines_in(std::string_view(buffer_).substr(sent_)));
  buffer_.clear();
  sent_ = 0;
  nextAttempt_ = clock::now() + backoff_;
  std::string line = wasConnected ? "collector connection lost (" : "cannot connect (";
  line += why;
  if (err != 0) {
    line += ": ";
    line += std::strerror(err);
  }
  line += "); events are dropped until it is back, retrying in ";
  line += std::to_string(backoff_.count());
  line += " ms";
  report(line);
  backoff_ = std::min(backoff_ * 2, options_.maxBackoff);
}

void TcpSink::send_buffered() {
  while (sent_ < buffer_.size()) {
    const ssize_t n =
        ::send(fd_, buffer_.data() + sent_, buffer_.size() - sent_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent_ += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;  // the collector is slow: keep the rest, bounded by maxBufferBytes
    } else {
      disconnect("send", n < 0 ? errno : 0);
      return;
    }
  }
  if (sent_ == buffer_.size()) {
    buffer_.clear();
    sent_ = 0;
  } else if (sent_ > buffer_.size() / 2) {
    buffer_.erase(0, sent_);
    sent_ = 0;
  }
}

void TcpSink::write_(const RenderedEvent& event) {
  // Lines already buffered go first: should the connection fail now, they
  // (counted written before) move to dropped, and this one is dropped alone.
  if (state_ == State::connected && buffer_.size() - sent_ >= 64 * 1024) send_buffered();
  if (state_ == State::down) {
    count_dropped();
    return;
  }
  const std::string_view l = line(event);
  if (buffer_.size() - sent_ + l.size() + 1 > options_.maxBufferBytes) {
    count_dropped();  // the collector does not keep up: never slow anything down
    return;
  }
  buffer_.append(l.data(), l.size());
  buffer_ += '\n';
}

void TcpSink::flush_() {
  if (state_ == State::down && clock::now() >= nextAttempt_) start_connect();
  if (state_ == State::connecting) check_connect();
  if (state_ != State::connected) return;
  if (peer_closed()) {
    disconnect("closed by the collector", 0);
    return;
  }
  send_buffered();
}

void TcpSink::close_() {
  const auto deadline = clock::now() + options_.closeTimeout;
  while (state_ != State::down && clock::now() < deadline) {
    if (state_ == State::connecting) check_connect();
    if (state_ == State::connected) {
      send_buffered();
      if (state_ != State::connected || buffer_.empty()) break;
    }
    pollfd p{fd_, POLLOUT, 0};
    ::poll(&p, 1, 10);
  }
  if (sent_ < buffer_.size()) count_unwritten(lines_in(std::string_view(buffer_).substr(sent_)));
  buffer_.clear();
  sent_ = 0;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  state_ = State::down;
}

// ---- UDP ------------------------------------------------------------------

UdpSink::UdpSink(NetSinkOptions options, RenderOptions render, SinkFilter filter)
    : Sink("udp:" + endpoint_name(options), render, std::move(filter)),
      options_(std::move(options)) {
  Address a;
  if (std::string err = resolve(options_.host, options_.port, SOCK_DGRAM, a); !err.empty())
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), name() + ": " + err);
  fd_ = ::socket(a.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), name() + ": socket");
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&a.addr), a.len) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::system_error(err, std::generic_category(), name() + ": connect");
  }
}

UdpSink::~UdpSink() {
  if (fd_ >= 0) ::close(fd_);
}

void UdpSink::write_(const RenderedEvent& event) {
  const std::string_view l = line(event);
  if (fd_ < 0 || l.size() + 1 > 65507) {
    count_dropped();
    return;
  }
  datagram_.assign(l.data(), l.size());
  datagram_ += '\n';
  // Errors (buffer full, ICMP port unreachable reported on a connected
  // socket) mean this datagram is lost: count it, never retry or block.
  if (::send(fd_, datagram_.data(), datagram_.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
    count_dropped();
}

void UdpSink::close_() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace varanus::sinks
