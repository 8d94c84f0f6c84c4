// varanus::sinks — JSON lines to a collector over TCP or UDP (Vector,
// Fluent Bit, Logstash all read newline-delimited JSON).
//
// Neither sink ever blocks the sink thread on the network, let alone the
// I/O threads: sockets are non-blocking, the TCP sink keeps a bounded send
// buffer, and whatever does not fit — collector slow, not reading, or gone —
// is dropped and counted (dropped()). Nothing is buffered without bound.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "varanus/sinks/sink.hpp"

namespace varanus::sinks {

struct NetSinkOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  /// TCP: bytes of lines waiting to be sent (beyond the kernel's socket
  /// buffer). When full, new lines are dropped.
  std::size_t maxBufferBytes = 1024 * 1024;
  /// TCP: reconnect delay, doubling from min to max while the collector
  /// stays away.
  std::chrono::milliseconds minBackoff{100};
  std::chrono::milliseconds maxBackoff{5000};
  /// TCP: on close() (shutdown), how long to keep sending what is buffered.
  std::chrono::milliseconds closeTimeout{1000};
};

/// JSON lines over TCP. Connects in the background (non-blocking connect
/// driven from flush(), which the Dispatcher calls after every batch and
/// every tick); reconnects with exponential backoff when the collector goes
/// away. While connecting, lines are buffered (bounded); while down, they
/// are dropped and counted. Named "tcp:host:port".
///
/// Host names are resolved (getaddrinfo) on the sink thread at each
/// connection attempt; prefer an IP literal if the resolver may be slow.
class TcpSink : public Sink {
 public:
  explicit TcpSink(NetSinkOptions options, RenderOptions render = {}, SinkFilter filter = {});
  ~TcpSink() override;

  /// Any thread.
  bool connected() const noexcept {
    return state_.load(std::memory_order_relaxed) == State::connected;
  }
  /// Successful connections so far (1 after the first, 2 after a reconnect...). Any thread.
  std::uint64_t connects() const noexcept { return connects_.load(std::memory_order_relaxed); }

 protected:
  void write_(const RenderedEvent& event) override;
  void flush_() override;
  void close_() override;

 private:
  enum class State { down, connecting, connected };
  void start_connect();
  void check_connect();
  void send_buffered();
  void disconnect(std::string_view why, int err);
  bool peer_closed();

  NetSinkOptions options_;
  std::atomic<State> state_{State::down};  // written on the sink thread only
  int fd_ = -1;
  std::string buffer_;
  std::size_t sent_ = 0;  // bytes of buffer_ already sent
  std::chrono::milliseconds backoff_;
  std::chrono::steady_clock::time_point nextAttempt_{};
  std::atomic<std::uint64_t> connects_{0};
};

/// JSON lines over UDP, one line (with its '\n') per datagram, sent
/// non-blocking; a datagram that cannot be sent at once (socket buffer
/// full, no route, collector port closed) is dropped and counted. Lines
/// over 65507 bytes cannot travel in one datagram and are dropped: keep
/// maxDocumentLength bounded. Named "udp:host:port".
class UdpSink : public Sink {
 public:
  /// Resolves and connects the socket at once; throws std::system_error.
  explicit UdpSink(NetSinkOptions options, RenderOptions render = {}, SinkFilter filter = {});
  ~UdpSink() override;

 protected:
  void write_(const RenderedEvent& event) override;
  void close_() override;

 private:
  NetSinkOptions options_;
  int fd_ = -1;
  std::string datagram_;
};

}  // namespace varanus::sinks
