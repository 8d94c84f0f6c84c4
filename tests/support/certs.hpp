// Test support: the certificates of tests/support/make_certs.sh, made once
// per test process in a fresh directory (removed at exit). The test target
// defines VARANUS_MAKE_CERTS as the script's path.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace varanus::test {

inline const std::filesystem::path& certs() {
  struct Dir {
    std::filesystem::path path;
    Dir() {
      char tmpl[] = "/tmp/varanus-certs-XXXXXX";
      REQUIRE(::mkdtemp(tmpl) != nullptr);
      path = tmpl;
      const std::string cmd = "bash '" VARANUS_MAKE_CERTS "' '" + path.string() + "' >/dev/null";
      REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "make_certs.sh failed");
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static Dir dir;
  return dir.path;
}

/// The path of one file make_certs.sh made ("ca.pem", "server.key", ...).
inline std::string cert(const char* name) {
  return (certs() / name).string();
}

}  // namespace varanus::test
