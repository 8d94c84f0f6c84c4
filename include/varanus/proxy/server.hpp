// varanus::proxy — the listening side: accepts client connections and runs
// one Session (client <-> upstream relay) per connection.
//
// Threads: one epoll loop per I/O thread (ProxyConfig::ioThreads). The
// listener lives on the first; each accepted socket is handed round-robin to
// a thread and its Session lives there until it ends, so everything a
// Session touches (its sockets, buffers and Inspector) is single-threaded
// and lock-free. Shared state is limited to the Stats atomics and the
// EventOutput (which must be thread-safe and never block). src/proxy/
// server.cpp's header comment describes the relay and its state machine.
//
// Header kept free of Asio and of the epoll details: it is included by the
// app, the tests and embedding programs.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string_view>

#include "varanus/monitor/event.hpp"
#include "varanus/monitor/stats.hpp"
#include "varanus/proxy/config.hpp"
#include "varanus/proxy/inspector.hpp"
#include "varanus/wire/hello_rewrite.hpp"

namespace varanus::proxy {

namespace detail {
struct ServerState;
}
class TlsContextHolder;

/// Where one-line diagnostics go (no trailing newline). Called from I/O
/// threads; must be thread-safe. Default: stderr, one write per line.
using Diagnostics = std::function<void(std::string_view line)>;
Diagnostics stderr_diagnostics();

class Server {
 public:
  Server(ProxyConfig config, monitor::EventOutput& out, monitor::Stats& stats,
         InspectorFactory inspectors, Diagnostics diagnostics = stderr_diagnostics());
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// TLS for the client leg (drivers -> varanus) and/or the upstream leg
  /// (varanus -> mongod); null: plaintext. Before start(). The holders may
  /// be reloaded at any time (SIGHUP): new connections take the new
  /// certificates. Also sets Stats::tlsCertificateNotAfter.
  void use_tls(std::shared_ptr<TlsContextHolder> clientLeg,
               std::shared_ptr<TlsContextHolder> upstreamLeg);

  /// Binds and listens (port 0: a free port). Returns the bound address.
  /// Throws std::system_error when the address cannot be bound.
  Endpoint start();

  /// Runs the I/O threads (the calling thread is one of them) until stop()
  /// has drained every connection. Call once, after start().
  void run();

  /// Thread-safe, any time, idempotent: stops accepting, lets open
  /// connections go on for up to `grace`, then closes them (their pending
  /// requests fail with a network error via Inspector::closed). run()
  /// returns once every connection is gone.
  void stop(std::chrono::milliseconds grace);
  /// stop(config.gracePeriod).
  void stop();

  /// Members (config.members.enabled), thread-safe, after start():
  /// opens a listener for `member` ("host:port") unless it has one, and
  /// returns the address drivers are told ("advertised host:port"). Says
  /// "varanus: member HOST:PORT via LHOST:LPORT" on the diagnostics.
  /// Throws std::system_error when no port can be bound.
  std::string add_member(std::string_view member);
  /// The member left the set: its listener stops accepting; connections
  /// open through it go on.
  void remove_member(std::string_view member);
  /// Member -> advertised address, for every member with a listener.
  wire::AddressMap member_addresses() const;

  /// Connections open now (all threads). For tests and diagnostics.
  std::size_t active_connections() const noexcept;

 private:
  std::unique_ptr<detail::ServerState> impl_;
};

}  // namespace varanus::proxy
