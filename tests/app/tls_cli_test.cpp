// The TLS options: flags, VARANUS_* variables and config keys fill
// ProxyConfig::tls; settings that need another are one-line errors.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cli.hpp"
#include "config.hpp"

using namespace varanus;
using app::Cli;

namespace {

Cli parse(std::vector<std::string> args, app::Environment env = {}) {
  return app::parse_cli(args, env);
}

}  // namespace

TEST_CASE("TLS flags: both legs, switches with and without a value") {
  Cli cli = parse({"--tls-cert", "/c/server.pem", "--tls-key=/c/server.key", "--tls-ca",
                   "/c/ca.pem", "--tls-min-version", "1.3", "--upstream-tls", "--upstream-tls-ca",
                   "/c/upca.pem", "--upstream-tls-cert", "/c/client.pem", "--upstream-tls-key",
                   "/c/client.key", "--upstream-tls-insecure=true"});
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  const auto& t = cli.config.proxy.tls;
  CHECK(t.server.enabled());
  CHECK(t.server.certFile == "/c/server.pem");
  CHECK(t.server.keyFile == "/c/server.key");
  CHECK(t.server.caFile == "/c/ca.pem");
  CHECK(t.server.minVersion == proxy::TlsVersion::v1_3);
  CHECK(t.upstream.enabled);
  CHECK(t.upstream.caFile == "/c/upca.pem");
  CHECK(t.upstream.certFile == "/c/client.pem");
  CHECK(t.upstream.keyFile == "/c/client.key");
  CHECK(t.upstream.insecure);
  CHECK(cli.source("tlsCertFile") == "flag --tls-cert");
  CHECK(cli.source("upstreamTls") == "flag --upstream-tls");
}

TEST_CASE("TLS defaults: plaintext both ways, minimum version 1.2") {
  Cli cli = parse({});
  REQUIRE(cli.action == Cli::Action::run);
  const auto& t = cli.config.proxy.tls;
  CHECK_FALSE(t.server.enabled());
  CHECK_FALSE(t.upstream.enabled);
  CHECK_FALSE(t.upstream.insecure);
  CHECK(t.server.minVersion == proxy::TlsVersion::v1_2);
}

TEST_CASE("TLS from VARANUS_* variables, flags winning") {
  Cli cli = parse({"--tls-key", "/flag.key"}, {{"VARANUS_TLS_CERT", "/env.pem"},
                                               {"VARANUS_TLS_KEY", "/env.key"},
                                               {"VARANUS_UPSTREAM_TLS", "1"},
                                               {"VARANUS_UPSTREAM_TLS_CA", "/ca.pem"}});
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  const auto& t = cli.config.proxy.tls;
  CHECK(t.server.certFile == "/env.pem");
  CHECK(t.server.keyFile == "/flag.key");
  CHECK(t.upstream.enabled);
  CHECK(t.upstream.caFile == "/ca.pem");
  CHECK(cli.source("tlsCertFile") == "env VARANUS_TLS_CERT");
  Cli bad = parse({}, {{"VARANUS_UPSTREAM_TLS", "maybe"}});
  REQUIRE(bad.action == Cli::Action::error);
  CHECK(bad.error ==
        "varanus: VARANUS_UPSTREAM_TLS: expected true or false, got 'maybe' (see varanus --help)");
}

TEST_CASE("TLS config keys") {
  app::AppConfig cfg;
  app::apply_config_json(nlohmann::json::parse(R"({"tlsCertFile": "/a.pem", "tlsKeyFile": "/a.key",
      "tlsCAFile": "/ca.pem", "tlsMinVersion": "1.3", "upstreamTls": true, "upstreamTlsCAFile": "/u.pem",
      "upstreamTlsCertFile": "/uc.pem", "upstreamTlsKeyFile": "/uc.key", "upstreamTlsInsecure": true})"),
                         cfg);
  const auto& t = cfg.proxy.tls;
  CHECK(t.server.certFile == "/a.pem");
  CHECK(t.server.keyFile == "/a.key");
  CHECK(t.server.caFile == "/ca.pem");
  CHECK(t.server.minVersion == proxy::TlsVersion::v1_3);
  CHECK(t.upstream.enabled);
  CHECK(t.upstream.caFile == "/u.pem");
  CHECK(t.upstream.certFile == "/uc.pem");
  CHECK(t.upstream.keyFile == "/uc.key");
  CHECK(t.upstream.insecure);
  auto error = [](const char* json) {
    app::AppConfig c;
    try {
      app::apply_config_json(nlohmann::json::parse(json), c);
    } catch (const app::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(error(R"({"tlsMinVersion": "1.1"})") ==
        R"(config: /tlsMinVersion: expected "1.2" or "1.3")");
  CHECK(error(R"({"upstreamTls": "yes"})") == "config: /upstreamTls: expected boolean");
  CHECK(error(R"({"tlsCertFile": ""})") == "config: /tlsCertFile: expected a file name");
}

TEST_CASE("TLS settings that need another are errors naming both") {
  auto err = [](std::vector<std::string> args) {
    Cli cli = parse(std::move(args));
    return cli.action == Cli::Action::error ? cli.error : std::string("(no error)");
  };
  CHECK(err({"--tls-min-version", "1.1"}) ==
        "varanus: --tls-min-version: expected 1.2 or 1.3, got '1.1' (see varanus --help)");
  CHECK(err({"--tls-key", "/k"}) ==
        "varanus: --tls-key and --tls-ca need --tls-cert (the certificate varanus presents to "
        "clients) (see varanus "
        "--help)");
  CHECK(err({"--upstream-tls-ca", "/ca"}).find("need --upstream-tls") != std::string::npos);
  CHECK(err({"--upstream-tls-insecure"}).find("need --upstream-tls") != std::string::npos);
  CHECK(err({"--upstream-tls", "--upstream-tls-key", "/k"}) ==
        "varanus: --upstream-tls-key needs --upstream-tls-cert (see varanus --help)");
  CHECK(err({"--tls-cert", ""}) ==
        "varanus: --tls-cert: expected a file name (see varanus --help)");
}

TEST_CASE("--help documents every TLS flag") {
  const std::string help = app::usage();
  for (const char* flag :
       {"--tls-cert FILE", "--tls-key FILE", "--tls-ca FILE", "--tls-min-version",
        "--upstream-tls ", "--upstream-tls-ca FILE", "--upstream-tls-cert FILE",
        "--upstream-tls-key FILE", "--upstream-tls-insecure", "reload the TLS certificates"})
    CHECK_MESSAGE(help.find(flag) != std::string::npos, flag);
}
