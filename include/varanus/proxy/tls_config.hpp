// varanus::proxy — TLS settings of both legs, as plain data.
//
// The app fills them from flags, environment and the config file; the
// contexts are built from them by tls.hpp (TlsContext::server / client).
#pragma once

#include <string>

namespace varanus::proxy {

/// Lowest TLS version a context accepts.
enum class TlsVersion { v1_2, v1_3 };

/// "1.2" / "1.3".
inline const char* to_string(TlsVersion v) noexcept {
  return v == TlsVersion::v1_3 ? "1.3" : "1.2";
}

/// The client leg: varanus terminates TLS for the drivers.
struct TlsServerSettings {
  std::string certFile;  ///< PEM: the certificate, then any intermediates (a chain)
  std::string keyFile;   ///< PEM private key of the certificate
  /// PEM CA certificates: when set, clients must present a certificate
  /// signed by one of them (mutual TLS).
  std::string caFile;
  TlsVersion minVersion = TlsVersion::v1_2;
  /// Try Linux kernel TLS (SSL_OP_ENABLE_KTLS). Off: measured to not pay
  /// (docs/proxy.md, "TLS").
  bool ktls = false;
  /// The leg is TLS when a certificate is configured.
  bool enabled() const noexcept { return !certFile.empty(); }
};

/// The upstream leg: varanus is a TLS client of mongod/mongos.
struct TlsClientSettings {
  bool enabled = false;
  std::string caFile;    ///< PEM CA certificates; empty: the system store
  std::string certFile;  ///< optional client certificate (x.509 authentication) ...
  std::string keyFile;   ///< ... and its key (may be the same file as certFile)
  /// Verify nothing (neither the chain nor the host name). Logged at start-up.
  bool insecure = false;
  TlsVersion minVersion = TlsVersion::v1_2;
  bool ktls = false;  ///< as TlsServerSettings::ktls
};

/// Both legs; one member of ProxyConfig.
struct TlsConfig {
  TlsServerSettings server;    ///< drivers -> varanus
  TlsClientSettings upstream;  ///< varanus -> mongod
};

}  // namespace varanus::proxy
