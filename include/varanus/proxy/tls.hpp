// varanus::proxy — TLS for the relay: contexts built from PEM files and one
// non-blocking TLS connection per socket (OpenSSL, SSL_set_fd).
//
// The relay stays an edge-triggered epoll loop: where a plaintext leg calls
// recv/send, a TLS leg calls TlsConn::read/write, which never block and say
// which readiness they wait for. The handshake is driven the same way
// (TlsConn::handshake until done). OpenSSL's types stay out of this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "varanus/proxy/tls_config.hpp"

struct ssl_st;
struct ssl_ctx_st;

namespace varanus::proxy {

/// A context could not be built; what() names the file and the reason, e.g.
/// "TLS certificate file /etc/varanus/cert.pem: cannot open: No such file or directory".
class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An SSL_CTX for one leg, immutable once built; shared by its connections.
class TlsContext {
 public:
  enum class Role { server, client };

  /// The client leg's context: certificate chain + key (+ CA: mutual TLS).
  /// Throws TlsError naming the file and the reason.
  static std::shared_ptr<const TlsContext> server(const TlsServerSettings& settings);
  /// The upstream leg's context: CA file or the system store, optional
  /// client certificate. Host name verification is per connection (TlsConn).
  /// Throws TlsError naming the file and the reason.
  static std::shared_ptr<const TlsContext> client(const TlsClientSettings& settings);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  Role role() const noexcept { return role_; }
  bool insecure() const noexcept { return insecure_; }
  bool ktls() const noexcept { return ktls_; }
  /// Seconds until the certificate this context presents expires (negative
  /// once expired); nullopt when it presents none (a client without one).
  std::optional<std::int64_t> seconds_until_expiry() const;
  /// The presented certificate's subject, e.g. "CN=localhost" ("" if none).
  const std::string& subject() const noexcept { return subject_; }
  ssl_ctx_st* native() const noexcept { return ctx_; }

 private:
  TlsContext() = default;
  ssl_ctx_st* ctx_ = nullptr;
  Role role_ = Role::server;
  bool insecure_ = false;
  bool ktls_ = false;
  std::string subject_;
};

/// The context new connections use, rebuilt from the same settings on
/// reload() (SIGHUP: certificate rotation). Connections keep the context
/// they started with; a failed reload keeps the old one. Thread-safe.
class TlsContextHolder {
 public:
  using Builder = std::function<std::shared_ptr<const TlsContext>()>;
  /// Builds the first context now: throws TlsError as the builder does.
  explicit TlsContextHolder(Builder build);
  /// Holder of TlsContext::server(settings) / client(settings).
  static std::shared_ptr<TlsContextHolder> server(TlsServerSettings settings);
  static std::shared_ptr<TlsContextHolder> client(TlsClientSettings settings);

  std::shared_ptr<const TlsContext> get() const;
  /// Rebuilds from the files: nullopt when done, else why not (the TlsError
  /// text); the current context stays in use then.
  std::optional<std::string> reload();

 private:
  Builder build_;
  mutable std::mutex mutex_;
  std::shared_ptr<const TlsContext> current_;
};

/// One TLS connection on a connected non-blocking socket. Not thread-safe
/// (one I/O thread owns it, like the socket). Does not own the fd.
///
/// OpenSSL's error queue is per thread: every call clears it first, so a
/// failure on one connection never shows up on another.
class TlsConn {
 public:
  enum class Handshake { done, want_read, want_write, failed };
  enum class Status {
    ok,     ///< all size bytes moved (read: more may follow, call again)
    again,  ///< bytes (maybe 0) < size moved, nothing more now: drained;
            ///< call again once the socket has `wait` readiness
    eof,    ///< read: the peer closed (close_notify or TCP EOF)
    error,  ///< fatal: error_reason() says why; close the connection
  };
  enum class Wait { none, readable, writable };
  struct Result {
    std::size_t bytes = 0;
    Status status = Status::ok;
    /// What the blocked operation waits for. A read may wait for
    /// *writability* (TLS 1.3 post-handshake messages, key updates): retry
    /// the read on EPOLLOUT too.
    Wait wait = Wait::none;
  };

  /// server role for a server context, client role for a client context.
  /// peerHost (client role): the upstream's host name or IP literal, sent as
  /// SNI (names only) and verified against the certificate unless the context
  /// is insecure; empty: the chain is verified, no name. Throws TlsError if
  /// OpenSSL cannot make the SSL object.
  TlsConn(std::shared_ptr<const TlsContext> ctx, int fd, std::string_view peerHost = {});
  ~TlsConn();
  TlsConn(const TlsConn&) = delete;
  TlsConn& operator=(const TlsConn&) = delete;

  /// Advances the handshake. want_read / want_write: call again when the
  /// socket is readable / writable. failed: error_reason(), failure_kind().
  /// After done, call read() at once: the peer's first data may already sit
  /// in the socket (its edge was consumed by the handshake's last read).
  Handshake handshake();
  bool handshake_done() const noexcept { return done_; }

  /// Reads plaintext into buf: loops SSL_read until buf is full (ok) or
  /// OpenSSL needs the socket (again: the socket and OpenSSL's buffers are
  /// drained, safe with edge-triggered epoll). bytes may be > 0 with any
  /// status: deliver those bytes first. No allocation per call.
  Result read(std::byte* buf, std::size_t size);
  /// Writes plaintext: as many whole records as the socket takes. ok with
  /// bytes == size when all went; again when the socket is full (bytes is
  /// what went). After `again` with bytes < size, the next write must begin
  /// with the rest (buf[bytes..size)): it may come from another buffer
  /// (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) but must hold at least those bytes.
  Result write(const std::byte* buf, std::size_t size);
  /// Sends close_notify (the half-close: reading goes on). ok when sent,
  /// again (wait writable) to retry, error otherwise. Idempotent.
  Result shutdown();

  /// After failed / error: human text, e.g. "certificate verify failed:
  /// unable to get local issuer certificate", "hostname mismatch".
  const std::string& error_reason() const noexcept { return reason_; }
  /// After failed / error: a short label for metrics: unknown_ca, expired,
  /// hostname_mismatch, protocol_version, no_client_cert, not_tls,
  /// peer_closed, other.
  std::string_view failure_kind() const noexcept { return kind_; }

  /// After the handshake: "TLSv1.3", the cipher, kernel TLS in use.
  std::string_view version() const;
  std::string_view cipher() const;
  bool ktls_send() const;
  bool ktls_recv() const;
  /// The peer certificate's subject ("" if none), e.g. for a mutual-TLS client.
  std::string peer_subject() const;
  const TlsContext& context() const noexcept { return *ctx_; }

 private:
  void fail(int sslError, int ret, std::string_view during);
  std::shared_ptr<const TlsContext> ctx_;
  ssl_st* ssl_ = nullptr;
  bool done_ = false;
  bool shutdownSent_ = false;
  std::string reason_;
  std::string_view kind_;
};

}  // namespace varanus::proxy
