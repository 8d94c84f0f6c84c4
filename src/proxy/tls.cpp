// varanus::proxy — TLS contexts and non-blocking TLS connections (OpenSSL 3).
#include "varanus/proxy/tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace varanus::proxy {

namespace {

/// OpenSSL's queued errors as one line ("no start line; ..."), queue emptied.
std::string drain_errors() {
  std::string text;
  while (unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    if (!text.empty()) text += "; ";
    if (reason) {
      text += reason;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      text += buf;
    }
  }
  return text.empty() ? std::string("unknown OpenSSL error") : text;
}

/// The reason of the last queued error (0 when none), queue left as is.
int last_reason() {
  return ERR_GET_REASON(ERR_peek_last_error());
}

[[noreturn]] void throw_file(std::string_view what, const std::string& path, std::string_view why) {
  throw TlsError("TLS " + std::string(what) + " " + path + ": " + std::string(why));
}

/// The file's first MiB (PEM files are small); throws when it cannot be
/// read, naming it and errno's text.
std::string read_head(std::string_view what, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    const int err = errno;
    ERR_clear_error();
    throw_file(what, path, std::string("cannot open: ") + std::strerror(err));
  }
  std::string text(1 << 20, '\0');
  const std::size_t n = std::fread(text.data(), 1, text.size(), f);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) throw_file(what, path, std::string("cannot read: ") + std::strerror(err));
  text.resize(n);
  return text;
}

bool has_pem_certificate(const std::string& text) {
  return text.find("-----BEGIN CERTIFICATE-----") != std::string::npos ||
         text.find("-----BEGIN TRUSTED CERTIFICATE-----") != std::string::npos;
}

/// Refuses to prompt for a passphrase on the terminal: encrypted keys fail.
int no_password(char*, int, int, void*) {
  return 0;
}

struct CtxGuard {
  SSL_CTX* ctx;
  ~CtxGuard() { SSL_CTX_free(ctx); }
};

SSL_CTX* new_ctx(bool server, TlsVersion minVersion, bool ktls) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) throw TlsError("TLS: cannot create an OpenSSL context: " + drain_errors());
  SSL_CTX_set_min_proto_version(ctx,
                                minVersion == TlsVersion::v1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
  // Partial writes + a moving buffer: the relay retries a short write from
  // its out-buffer, not from the buffer the first attempt used.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // A TCP EOF without close_notify is an EOF like any other (the relay
  // passes the half-close on); no renegotiation (TLS 1.2) at all.
  std::uint64_t options = SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION;
  if (ktls) options |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(ctx, options);
  SSL_CTX_set_default_passwd_cb(ctx, no_password);
  return ctx;
}

/// Certificate chain (leaf first) from certFile, private key from keyFile.
void load_cert_and_key(SSL_CTX* ctx, std::string_view certWhat, const std::string& certFile,
                       std::string_view keyWhat, const std::string& keyFile) {
  if (!has_pem_certificate(read_head(certWhat, certFile)))
    throw_file(certWhat, certFile, "no PEM certificate in the file");
  const std::string keyText = read_head(keyWhat, keyFile);
  if (keyText.find("-----BEGIN ") == std::string::npos ||
      keyText.find("PRIVATE KEY-----") == std::string::npos)
    throw_file(keyWhat, keyFile, "no PEM private key in the file");
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, certFile.c_str()) != 1)
    throw_file(certWhat, certFile, "not a valid PEM certificate (" + drain_errors() + ")");
  if (SSL_CTX_use_PrivateKey_file(ctx, keyFile.c_str(), SSL_FILETYPE_PEM) != 1) {
    const int reason = last_reason();
    const std::string why = drain_errors();
    if (reason == X509_R_KEY_VALUES_MISMATCH || reason == X509_R_KEY_TYPE_MISMATCH)
      throw_file(keyWhat, keyFile, "the key does not match the certificate in " + certFile);
    if (reason == PEM_R_NO_START_LINE)
      throw_file(keyWhat, keyFile, "no PEM private key in the file");
    if (reason == PEM_R_BAD_PASSWORD_READ || reason == PEM_R_PROBLEMS_GETTING_PASSWORD ||
        reason == EVP_R_BAD_DECRYPT)
      throw_file(keyWhat, keyFile,
                 "the key is encrypted (keys with a passphrase are not supported)");
    throw_file(keyWhat, keyFile, "not a valid PEM private key (" + why + ")");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    throw_file(keyWhat, keyFile, "the key does not match the certificate in " + certFile);
  }
}

void load_ca(SSL_CTX* ctx, std::string_view what, const std::string& caFile) {
  if (!has_pem_certificate(read_head(what, caFile)))
    throw_file(what, caFile, "no PEM CA certificate in the file");
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(ctx, caFile.c_str(), nullptr) != 1) {
    const std::string why = drain_errors();
    throw_file(what, caFile, "no usable PEM CA certificate in the file (" + why + ")");
  }
  // OpenSSL caches a certificate's extensions (key identifiers, ...) the
  // first time a verification looks at them, under a lock that its readers
  // skip: two handshakes verifying against the same CA at once race on the
  // cache (ThreadSanitizer reported it on the relay's I/O threads). Filled
  // here, before any handshake, the cache is only read afterwards.
  if (X509_STORE* store = SSL_CTX_get_cert_store(ctx)) {
    STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
      if (X509* cert = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i)))
        X509_check_purpose(cert, -1, 0);
    }
  }
}

std::string name_text(const X509_NAME* name) {
  if (!name) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return {};
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<std::size_t>(len > 0 ? len : 0));
  BIO_free(bio);
  return text;
}

}  // namespace

// --- TlsContext --------------------------------------------------------------

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

std::shared_ptr<const TlsContext> TlsContext::server(const TlsServerSettings& s) {
  if (s.certFile.empty()) throw TlsError("TLS: no certificate file given (--tls-cert)");
  const std::string& keyFile = s.keyFile.empty() ? s.certFile : s.keyFile;
  CtxGuard guard{new_ctx(true, s.minVersion, s.ktls)};
  load_cert_and_key(guard.ctx, "certificate file", s.certFile, "key file", keyFile);
  // Needed for session resumption together with client certificates.
  static constexpr unsigned char kSessionId[] = "varanus";
  SSL_CTX_set_session_id_context(guard.ctx, kSessionId, sizeof kSessionId - 1);
  if (!s.caFile.empty()) {
    load_ca(guard.ctx, "CA file", s.caFile);
    ERR_clear_error();
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.caFile.c_str());
    if (!names)
      throw_file("CA file", s.caFile, "no PEM CA certificate in the file (" + drain_errors() + ")");
    SSL_CTX_set_client_CA_list(guard.ctx, names);
    SSL_CTX_set_verify(guard.ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  std::shared_ptr<TlsContext> ctx(new TlsContext);
  ctx->ctx_ = std::exchange(guard.ctx, nullptr);
  ctx->role_ = Role::server;
  ctx->ktls_ = s.ktls;
  if (X509* cert = SSL_CTX_get0_certificate(ctx->ctx_))
    ctx->subject_ = name_text(X509_get_subject_name(cert));
  return ctx;
}

std::shared_ptr<const TlsContext> TlsContext::client(const TlsClientSettings& s) {
  CtxGuard guard{new_ctx(false, s.minVersion, s.ktls)};
  if (!s.certFile.empty() || !s.keyFile.empty()) {
    if (s.certFile.empty())
      throw TlsError("TLS: a client key without a client certificate (--upstream-tls-cert)");
    load_cert_and_key(guard.ctx, "client certificate file", s.certFile, "client key file",
                      s.keyFile.empty() ? s.certFile : s.keyFile);
  }
  if (!s.caFile.empty()) {
    load_ca(guard.ctx, "CA file", s.caFile);
  } else if (SSL_CTX_set_default_verify_paths(guard.ctx) != 1) {
    throw TlsError("TLS: cannot load the system's CA certificates: " + drain_errors());
  }
  SSL_CTX_set_verify(guard.ctx, s.insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
  std::shared_ptr<TlsContext> ctx(new TlsContext);
  ctx->ctx_ = std::exchange(guard.ctx, nullptr);
  ctx->role_ = Role::client;
  ctx->insecure_ = s.insecure;
  ctx->ktls_ = s.ktls;
  if (X509* cert = SSL_CTX_get0_certificate(ctx->ctx_))
    ctx->subject_ = name_text(X509_get_subject_name(cert));
  return ctx;
}

std::optional<std::int64_t> TlsContext::seconds_until_expiry() const {
  X509* cert = SSL_CTX_get0_certificate(ctx_);
  if (!cert) return std::nullopt;
  int days = 0, secs = 0;
  if (ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert)) != 1) return std::nullopt;
  return std::int64_t{days} * 86'400 + secs;
}

// --- TlsContextHolder --------------------------------------------------------

TlsContextHolder::TlsContextHolder(Builder build) : build_(std::move(build)), current_(build_()) {}

std::shared_ptr<TlsContextHolder> TlsContextHolder::server(TlsServerSettings settings) {
  return std::make_shared<TlsContextHolder>(
      [s = std::move(settings)] { return TlsContext::server(s); });
}

std::shared_ptr<TlsContextHolder> TlsContextHolder::client(TlsClientSettings settings) {
  return std::make_shared<TlsContextHolder>(
      [s = std::move(settings)] { return TlsContext::client(s); });
}

std::shared_ptr<const TlsContext> TlsContextHolder::get() const {
  std::lock_guard lock(mutex_);
  return current_;
}

std::optional<std::string> TlsContextHolder::reload() {
  std::shared_ptr<const TlsContext> fresh;
  try {
    fresh = build_();
  } catch (const TlsError& e) {
    return std::string(e.what());
  }
  std::shared_ptr<const TlsContext> old;
  {
    std::lock_guard lock(mutex_);
    old = std::exchange(current_, std::move(fresh));
  }
  return std::nullopt;  // old is freed here, outside the lock
}

// --- TlsConn -----------------------------------------------------------------

TlsConn::TlsConn(std::shared_ptr<const TlsContext> ctx, int fd, std::string_view peerHost)
    : ctx_(std::move(ctx)) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx_->native());
  if (!ssl_ || SSL_set_fd(ssl_, fd) != 1) {
    SSL_free(ssl_);
    throw TlsError("TLS: cannot create a connection: " + drain_errors());
  }
  if (ctx_->role() == TlsContext::Role::server) {
    SSL_set_accept_state(ssl_);
    return;
  }
  SSL_set_connect_state(ssl_);
  if (peerHost.empty()) return;
  const std::string host(peerHost);
  unsigned char addr[16];
  const bool isIp =
      inet_pton(AF_INET, host.c_str(), addr) == 1 || inet_pton(AF_INET6, host.c_str(), addr) == 1;
  // SNI for names only (RFC 6066); sent in insecure mode too (routing).
  if (!isIp) SSL_set_tlsext_host_name(ssl_, host.c_str());
  if (ctx_->insecure()) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int ok =
      isIp ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) : SSL_set1_host(ssl_, host.c_str());
  if (ok != 1) {
    SSL_free(ssl_);
    throw TlsError("TLS: cannot verify the host name " + host + ": " + drain_errors());
  }
}

TlsConn::~TlsConn() {
  SSL_free(ssl_);
}

TlsConn::Handshake TlsConn::handshake() {
  if (done_) return Handshake::done;
  if (!kind_.empty()) return Handshake::failed;
  ERR_clear_error();
  errno = 0;
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    done_ = true;
    return Handshake::done;
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) return Handshake::want_read;
  if (e == SSL_ERROR_WANT_WRITE) return Handshake::want_write;
  fail(e, r, "handshake");
  return Handshake::failed;
}

TlsConn::Result TlsConn::read(std::byte* buf, std::size_t size) {
  std::size_t total = 0;
  ERR_clear_error();
  while (total < size) {
    std::size_t n = 0;
    errno = 0;
    const int r = SSL_read_ex(ssl_, buf + total, size - total, &n);
    if (r == 1) {
      total += n;
      continue;
    }
    switch (const int e = SSL_get_error(ssl_, r)) {
      case SSL_ERROR_WANT_READ:
        return {total, Status::again, Wait::readable};
      case SSL_ERROR_WANT_WRITE:
        return {total, Status::again, Wait::writable};
      case SSL_ERROR_ZERO_RETURN:
        return {total, Status::eof, Wait::none};
      case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0 && errno == 0) return {total, Status::eof, Wait::none};
        fail(e, r, "read");
        return {total, Status::error, Wait::none};
      default:
        fail(e, r, "read");
        return {total, Status::error, Wait::none};
    }
  }
  return {total, Status::ok, Wait::none};
}

TlsConn::Result TlsConn::write(const std::byte* buf, std::size_t size) {
  std::size_t total = 0;
  ERR_clear_error();
  while (total < size) {
    std::size_t n = 0;
    errno = 0;
    const int r = SSL_write_ex(ssl_, buf + total, size - total, &n);
    if (r == 1) {
      total += n;
      continue;
    }
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_WRITE) return {total, Status::again, Wait::writable};
    if (e == SSL_ERROR_WANT_READ) return {total, Status::again, Wait::readable};
    fail(e, r, "write");
    return {total, Status::error, Wait::none};
  }
  return {total, Status::ok, Wait::none};
}

TlsConn::Result TlsConn::shutdown() {
  if (shutdownSent_) return {};
  ERR_clear_error();
  const int r = SSL_shutdown(ssl_);
  if (r >= 0) {
    shutdownSent_ = true;
    return {};
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_WRITE) return {0, Status::again, Wait::writable};
  if (e == SSL_ERROR_WANT_READ) return {0, Status::again, Wait::readable};
  fail(e, r, "shutdown");
  return {0, Status::error, Wait::none};
}

std::string_view TlsConn::version() const {
  return SSL_get_version(ssl_);
}

std::string_view TlsConn::cipher() const {
  const char* name = SSL_get_cipher_name(ssl_);
  return name ? name : "";
}

bool TlsConn::ktls_send() const {
  return BIO_get_ktls_send(SSL_get_wbio(ssl_)) != 0;
}
bool TlsConn::ktls_recv() const {
  return BIO_get_ktls_recv(SSL_get_rbio(ssl_)) != 0;
}

std::string TlsConn::peer_subject() const {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  return cert ? name_text(X509_get_subject_name(cert)) : std::string();
}

void TlsConn::fail(int sslError, int ret, std::string_view during) {
  const int err = errno;
  const unsigned long code = ERR_peek_last_error();
  const int reason = ERR_GET_REASON(code);
  const long verify = SSL_get_verify_result(ssl_);
  auto set = [this](std::string_view kind, std::string text) {
    kind_ = kind;
    reason_ = std::move(text);
  };
  if (sslError == SSL_ERROR_ZERO_RETURN) {  // EOF or close_notify (SSL_OP_IGNORE_UNEXPECTED_EOF)
    set("peer_closed", "connection closed by the peer during the " + std::string(during));
    ERR_clear_error();
    return;
  }
  if (sslError == SSL_ERROR_SYSCALL && code == 0) {
    if (ret == 0 || err == 0 || err == ECONNRESET || err == EPIPE)
      set("peer_closed", "connection closed by the peer during the " + std::string(during) +
                             (err != 0 ? std::string(": ") + std::strerror(err) : std::string()));
    else
      set("other", std::string(during) + ": " + std::strerror(err));
    ERR_clear_error();
    return;
  }
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
    std::string_view kind = "other";
    switch (verify) {
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_CERT_UNTRUSTED:
        kind = "unknown_ca";
        break;
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID:
        kind = "expired";
        break;
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        kind = "hostname_mismatch";
        break;
      default:
        break;
    }
    set(kind, std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify));
    ERR_clear_error();
    return;
  }
  const std::string detail = drain_errors();
  switch (reason) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
      set("protocol_version", "unsupported protocol version (" + detail + ")");
      return;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      set("no_client_cert", "peer did not return a certificate");
      return;
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      set("no_client_cert", "the peer requires a client certificate (certificate required alert)");
      return;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      set("unknown_ca", "the peer does not trust our certificate (unknown CA alert)");
      return;
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      set("expired", "the peer says our certificate has expired (certificate expired alert)");
      return;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      set("peer_closed", "connection closed by the peer during the " + std::string(during));
      return;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_UNKNOWN_PROTOCOL:
      set("not_tls", "the peer does not speak TLS (" + detail + ")");
      return;
    default:
      set("other", std::string("TLS ") + std::string(during) + " failed: " + detail);
      return;
  }
}

}  // namespace varanus::proxy
