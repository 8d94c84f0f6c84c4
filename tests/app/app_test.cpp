// The varanus executable: flag and config-file parsing (in-process), and the
// real binary run as a child process (help, errors, start-up line, SIGTERM).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../support/loopback.hpp"
#include "cli.hpp"
#include "config.hpp"
#include "varanus/wire/builder.hpp"

extern char** environ;

using namespace varanus;
using namespace std::chrono_literals;
using app::Cli;

namespace {

Cli parse(std::vector<std::string> args) {
  return app::parse_cli(args);
}

/// A file in the test's temp dir, removed at the end.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& content) {
    char tmpl[] = "/tmp/varanus-app-test-XXXXXX";
    int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    path = tmpl;
    REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    ::close(fd);
  }
  ~TempFile() { ::unlink(path.c_str()); }
};

/// A child process with stdout and stderr on pipes.
struct Child {
  pid_t pid = -1;
  int out = -1;
  int err = -1;
  std::string outText, errText;

  explicit Child(const std::vector<std::string>& args) {
    int o[2], e[2];
    REQUIRE(::pipe2(o, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(e, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, e[1], 2);
    std::vector<std::string> all{VARANUS_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(::posix_spawn(&pid, VARANUS_BINARY, &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(o[1]);
    ::close(e[1]);
    out = o[0];
    err = e[0];
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (out >= 0) ::close(out);
    if (err >= 0) ::close(err);
  }

  /// Reads whatever is available from both pipes, waiting up to `timeout`.
  /// Returns false when both pipes are at EOF.
  bool pump(std::chrono::milliseconds timeout) {
    pollfd fds[2] = {{out, POLLIN, 0}, {err, POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(timeout.count())) <= 0) return true;
    bool open = false;
    for (int i = 0; i < 2; ++i) {
      int fd = i == 0 ? out : err;
      if (fd < 0) continue;
      if (fds[i].revents & (POLLIN | POLLHUP)) {
        char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
          (i == 0 ? outText : errText).append(buf, static_cast<std::size_t>(n));
        } else {
          ::close(fd);
          (i == 0 ? out : err) = -1;
          continue;
        }
      }
      open = true;
    }
    return open || out >= 0 || err >= 0;
  }

  /// Waits until stderr holds `needle` (true) or the time is up (false).
  bool wait_stderr(const std::string& needle, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (errText.find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (!pump(50ms)) return errText.find(needle) != std::string::npos;
    }
    return true;
  }

  /// Reads to EOF and reaps the process; returns its exit status (or
  /// 128 + signal), -1 on timeout.
  int finish(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out >= 0 || err >= 0) {
      if (std::chrono::steady_clock::now() > deadline) return -1;
      pump(50ms);
    }
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() > deadline) return -1;
      std::this_thread::sleep_for(10ms);
    }
  }
};

int connect_to(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("defaults: listen 127.0.0.1:27018, upstream 127.0.0.1:27017") {
  Cli cli = parse({});
  REQUIRE(cli.action == Cli::Action::run);
  const auto& p = cli.config.proxy;
  CHECK(p.listen == proxy::Endpoint{"127.0.0.1", 27018});
  CHECK(p.upstream == proxy::Endpoint{"127.0.0.1", 27017});
  CHECK(p.ioThreads >= 1);
  CHECK(p.gracePeriod == 10s);
  CHECK(p.connectTimeout == 5s);
  CHECK(cli.config.tracker.maxMessageSize == 48'000'000);
  CHECK(cli.config.maxDocumentLength == 1000);
}

TEST_CASE("flags set every option, as --flag VALUE or --flag=VALUE") {
  Cli cli = parse({"--listen", "0.0.0.0:0", "--upstream=db.example:27019", "--io-threads", "3",
                   "--grace-period", "2.5", "--connect-timeout=0.25", "--max-message-size",
                   "1000000", "--max-document-length", "0", "--max-connections", "7",
                   "--half-close-timeout", "0.75", "--idle-timeout", "30"});
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  const auto& p = cli.config.proxy;
  CHECK(p.listen == proxy::Endpoint{"0.0.0.0", 0});
  CHECK(p.upstream == proxy::Endpoint{"db.example", 27019});
  CHECK(p.ioThreads == 3);
  CHECK(p.gracePeriod == 2500ms);
  CHECK(p.connectTimeout == 250ms);
  CHECK(cli.config.tracker.maxMessageSize == 1'000'000);
  CHECK(cli.config.maxDocumentLength == 0);
  CHECK(p.maxConnections == 7);
  CHECK(p.halfCloseTimeout == 750ms);
  CHECK(p.idleTimeout == 30s);
}

TEST_CASE("IPv6 endpoints take brackets") {
  Cli cli = parse({"--upstream", "[::1]:27017"});
  REQUIRE(cli.action == Cli::Action::run);
  CHECK(cli.config.proxy.upstream == proxy::Endpoint{"::1", 27017});
  CHECK(cli.config.proxy.upstream.to_string() == "[::1]:27017");
  CHECK(parse({"--upstream", "::1:27017"}).action == Cli::Action::error);
}

TEST_CASE("--upstream and the config key take a connection string") {
  Cli cli = parse({"--upstream", "mongodb://DB1:27019/?connectTimeoutMS=1500"});
  REQUIRE(cli.action == Cli::Action::run);
  CHECK(cli.config.proxy.upstream == proxy::Endpoint{"db1", 27019});
  CHECK(cli.config.upstream.uri);
  CHECK(cli.config.upstream.single_server());
  CHECK(cli.config.proxy.connectTimeout == 1500ms);  // from the string: no timeout of its own
  CHECK(cli.source("connectTimeoutSeconds") == "upstream connectTimeoutMS");
  CHECK(app::unsupported_upstream(cli.config.upstream).empty());

  // A timeout given on its own wins over the string's.
  Cli both = parse({"--connect-timeout", "7", "--upstream", "mongodb://db/?connectTimeoutMS=1"});
  CHECK(both.config.proxy.connectTimeout == 7000ms);

  TempFile f(R"({"upstream": "mongodb://a:1,b:2/?replicaSet=rs0"})");
  Cli rs = parse({"--config", f.path});
  REQUIRE(rs.action == Cli::Action::run);
  CHECK(rs.config.upstream.replicaSet == "rs0");
  CHECK(rs.config.proxy.upstream == proxy::Endpoint{"a", 1});
  CHECK(app::unsupported_upstream(rs.config.upstream).empty());
  CHECK(rs.config.proxy.members.enabled);
  CHECK(rs.config.proxy.members.rewriteHello);
  CHECK(rs.config.proxy.members.seeds ==
        std::vector<proxy::Endpoint>{proxy::Endpoint{"a", 1}, proxy::Endpoint{"b", 2}});
  CHECK_FALSE(cli.config.proxy.members.enabled);  // one host: today's single upstream
  Cli mongos = parse({"--upstream", "mongodb://m1:1,m2:2/", "--advertise-host", "proxy.example"});
  REQUIRE(mongos.action == Cli::Action::run);
  CHECK(mongos.config.proxy.members.enabled);
  CHECK_FALSE(mongos.config.proxy.members.rewriteHello);  // several mongos: nothing to rewrite
  CHECK(mongos.config.proxy.members.advertiseHost == "proxy.example");
  CHECK(parse({"--advertise-host", "a:b"}).error.find("--advertise-host: expected a host name") !=
        std::string::npos);
  TempFile mf(
      R"({"upstream": "mongodb://A:1,b:2/?replicaSet=rs0", "advertiseHost": "px",)"
      R"( "members": {"A:1": "0.0.0.0:27100", "b:2": {"host": "0.0.0.0", "port": 27101}}})");
  Cli mc = parse({"--config", mf.path});
  REQUIRE(mc.action == Cli::Action::run);
  CHECK(mc.config.proxy.members.advertiseHost == "px");
  CHECK(mc.config.proxy.members.listen.at("a:1") == proxy::Endpoint{"0.0.0.0", 27100});
  CHECK(mc.config.proxy.members.listen.at("b:2") == proxy::Endpoint{"0.0.0.0", 27101});
  TempFile badm(R"({"members": {"nope": "0.0.0.0:1"}})");
  CHECK(parse({"--config", badm.path}).error.find("/members/nope: a member address is HOST:PORT") !=
        std::string::npos);
  TempFile hp(R"({"upstream": "db:27020"})");
  CHECK(parse({"--config", hp.path}).config.proxy.upstream == proxy::Endpoint{"db", 27020});

  // The string's TLS options set the upstream leg's TLS, as a driver reads them.
  Cli tls = parse({"--upstream",
                   "mongodb://db:27017/?tls=true&tlsCAFile=/ca.pem&tlsCertificateKeyFile=/me.pem"});
  REQUIRE(tls.action == Cli::Action::run);
  CHECK(app::unsupported_upstream(tls.config.upstream).empty());
  CHECK(tls.config.proxy.tls.upstream.enabled);
  CHECK(tls.config.proxy.tls.upstream.caFile == "/ca.pem");
  CHECK(tls.config.proxy.tls.upstream.certFile == "/me.pem");
  CHECK(tls.config.proxy.tls.upstream.keyFile == "/me.pem");
  CHECK_FALSE(tls.config.proxy.tls.upstream.insecure);
  Cli implied = parse({"--upstream", "mongodb://db/?tlsInsecure=true"});
  CHECK(implied.config.proxy.tls.upstream.enabled);  // tlsInsecure implies tls, as in drivers
  CHECK(implied.config.proxy.tls.upstream.insecure);
  CHECK_FALSE(parse({"--upstream", "mongodb://db/?tls=false"}).config.proxy.tls.upstream.enabled);

  Cli bad = parse({"--upstream", "mongodb+srv://cluster0.example.net/"});
  CHECK(bad.action == Cli::Action::error);
  CHECK(bad.error.rfind("varanus: --upstream: mongodb+srv:// is not supported", 0) == 0);
  TempFile badFile(R"({"upstream": "mongodb://db/?loadBalanced=true"})");
  Cli bad2 = parse({"--config", badFile.path});
  CHECK(bad2.error.rfind("varanus: config: /upstream: option loadBalanced is not supported", 0) ==
        0);
}

TEST_CASE("bad flags are one-line errors") {
  SUBCASE("unknown option") {
    Cli cli = parse({"--bogus"});
    CHECK(cli.action == Cli::Action::error);
    CHECK(cli.error.find("unknown option '--bogus'") != std::string::npos);
  }
  SUBCASE("missing value") {
    Cli cli = parse({"--upstream"});
    CHECK(cli.action == Cli::Action::error);
    CHECK(cli.error.find("needs a value") != std::string::npos);
  }
  SUBCASE("bad values") {
    CHECK(parse({"--listen", "nohostport"}).action == Cli::Action::error);
    CHECK(parse({"--listen", "host:65536"}).action == Cli::Action::error);
    CHECK(parse({"--listen", ":27017"}).action == Cli::Action::error);
    CHECK(parse({"--io-threads", "0"}).action == Cli::Action::error);
    CHECK(parse({"--io-threads", "two"}).action == Cli::Action::error);
    CHECK(parse({"--grace-period", "-1"}).action == Cli::Action::error);
    CHECK(parse({"--max-message-size", "16"}).action == Cli::Action::error);
    CHECK(parse({"stray"}).action == Cli::Action::error);
  }
  CHECK(parse({"--help", "--bogus"}).action == Cli::Action::help);
  CHECK(parse({"--version"}).action == Cli::Action::version);
}

TEST_CASE("sink flags are parsed with the others") {
  Cli cli =
      parse({"--log-format", "mongodb-log", "--log-file=/tmp/x.log", "--admin", "127.0.0.1:0"});
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  CHECK(cli.sinkFlags.logFormat == "mongodb-log");
  CHECK(cli.sinkFlags.logFile == "/tmp/x.log");
  CHECK(cli.sinkFlags.admin == "127.0.0.1:0");
  Cli bad = parse({"--log-format", "xml"});
  CHECK(bad.action == Cli::Action::error);
  CHECK(bad.error.find("--log-format") != std::string::npos);
  CHECK(parse({"--check-config"}).action == Cli::Action::check);
  CHECK(parse({}).config.proxy.busyPoll == 50us);
  CHECK(parse({"--busy-poll-us", "0"}).config.proxy.busyPoll.count() == 0);
  CHECK(parse({"--busy-poll-us=200"}).config.proxy.busyPoll == 200us);
  for (const char* v : {"-1", "1001", "x"}) {
    Cli b = parse({"--busy-poll-us", v});
    CHECK(b.action == Cli::Action::error);
    CHECK(b.error.find("--busy-poll-us") != std::string::npos);
  }
  // --check-config FILE reads FILE as the config: a missing file is an error naming it.
  Cli missing = parse({"--check-config", "/nonexistent/varanus.json"});
  CHECK(missing.action == Cli::Action::error);
  CHECK(missing.error.find("/nonexistent/varanus.json") != std::string::npos);
}

TEST_CASE("the config file sets options and flags override it") {
  TempFile f(R"({
    "_comment": "ignored",
    "listen": {"host": "127.0.0.2", "port": 4000},
    "upstream": {"host": "mongo", "port": 27020, "_comment": "also ignored"},
    "ioThreads": 4, "gracePeriodSeconds": 0.5, "connectTimeoutSeconds": 1,
    "maxMessageSize": 2000000, "maxDocumentLength": 50, "bufferSize": 8192,
    "captureDocuments": false, "busyPollMicros": 0
  })");
  Cli cli = parse({"--io-threads", "2", "--config", f.path});
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  const auto& p = cli.config.proxy;
  CHECK(p.listen == proxy::Endpoint{"127.0.0.2", 4000});
  CHECK(p.upstream == proxy::Endpoint{"mongo", 27020});
  CHECK(p.ioThreads == 2);  // the flag wins, though it came first
  CHECK(p.gracePeriod == 500ms);
  CHECK(p.connectTimeout == 1s);
  CHECK(cli.config.tracker.maxMessageSize == 2'000'000);
  CHECK(p.bufferSize == 8192);
  CHECK(p.busyPoll.count() == 0);
  CHECK_FALSE(cli.config.tracker.captureDocuments);
  CHECK(cli.config.maxDocumentLength == 50);
}

TEST_CASE("config errors name the key path") {
  auto error_of = [](const std::string& json) {
    TempFile f(json);
    Cli cli = parse({"--config", f.path});
    CHECK(cli.action == Cli::Action::error);
    return cli.error;
  };
  CHECK(error_of(R"({"upstream": {"port": "27017"}})") ==
        "varanus: config: /upstream/port: expected integer");
  CHECK(error_of(R"({"upstream": {"prot": 1}})") == "varanus: config: /upstream/prot: unknown key");
  CHECK(error_of(R"({"listn": {}})") == "varanus: config: /listn: unknown key");
  CHECK(error_of(R"({"listen": "127.0.0.1:1"})") == "varanus: config: /listen: expected object");
  CHECK(error_of(R"({"ioThreads": 0})") ==
        "varanus: config: /ioThreads: expected integer from 1 to 1024");
  CHECK(error_of(R"({"captureDocuments": 1})") ==
        "varanus: config: /captureDocuments: expected boolean");
  CHECK(error_of(R"([1])") == "varanus: config: /: expected object");
  CHECK(error_of("{").find("invalid JSON") != std::string::npos);
  Cli missing = parse({"--config", "/nonexistent/varanus.json"});
  CHECK(missing.action == Cli::Action::error);
  CHECK(missing.error == "varanus: config: cannot read /nonexistent/varanus.json");
}

TEST_CASE("VARANUS_* variables set options: flags > environment > config file > defaults") {
  TempFile f(R"({"listen": {"host": "127.0.0.3", "port": 4000}, "ioThreads": 4,
                 "gracePeriodSeconds": 7})");
  const app::Environment env{{"VARANUS_CONFIG", f.path},
                             {"VARANUS_LISTEN", "0.0.0.0:27018"},
                             {"VARANUS_IO_THREADS", "3"},
                             {"VARANUS_UPSTREAM", "db:27019"},
                             {"VARANUS_LOG_FORMAT", "mongodb-log"},
                             {"VARANUS_ADMIN", "127.0.0.1:9108"},
                             {"VARANUS_PLUGIN", "/a.so:/b.so"},
                             {"VARANUS_STUB", "not an option"},
                             {"PATH", "/usr/bin"}};
  Cli cli = app::parse_cli({"--io-threads", "2"}, env);
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  const auto& p = cli.config.proxy;
  CHECK(p.listen == proxy::Endpoint{"0.0.0.0", 27018});  // env over the file
  CHECK(p.ioThreads == 2);                               // the flag over env and file
  CHECK(p.gracePeriod == 7s);                            // the file over the default
  CHECK(p.upstream == proxy::Endpoint{"db", 27019});
  CHECK(p.connectTimeout == 5s);  // default
  CHECK(cli.sinkFlags.logFormat == "mongodb-log");
  CHECK(cli.sinkFlags.admin == "127.0.0.1:9108");
  CHECK(cli.sinkFlags.plugins == std::vector<std::string>{"/a.so", "/b.so"});
  CHECK(cli.source("listen") == "env VARANUS_LISTEN");
  CHECK(cli.source("ioThreads") == "flag --io-threads");
  CHECK(cli.source("gracePeriodSeconds") == "config " + f.path);
  CHECK(cli.source("connectTimeoutSeconds") == "default");
  CHECK(cli.source("config") == "env VARANUS_CONFIG");
  CHECK(cli.source("admin") == "env VARANUS_ADMIN");
  CHECK(cli.unknownEnv == std::vector<std::string>{"VARANUS_STUB"});
  // --config on the command line wins over VARANUS_CONFIG.
  TempFile g(R"({"ioThreads": 5})");
  Cli other = app::parse_cli({"--config", g.path}, env);
  REQUIRE_MESSAGE(other.action == Cli::Action::run, other.error);
  CHECK(other.config.proxy.ioThreads == 3);  // env over the (other) file
  CHECK(other.config.proxy.gracePeriod == 10s);
  CHECK(app::env_name("--max-document-length") == "VARANUS_MAX_DOCUMENT_LENGTH");
}

TEST_CASE("a malformed value in a variable is an error naming the variable") {
  auto error_of = [](const std::string& name, const std::string& value) {
    Cli cli = app::parse_cli({}, {{name, value}});
    CHECK(cli.action == Cli::Action::error);
    return cli.error;
  };
  CHECK(error_of("VARANUS_LISTEN", "nohostport").find("VARANUS_LISTEN: expected HOST:PORT") !=
        std::string::npos);
  // The cause is named too.
  CHECK(error_of("VARANUS_LISTEN", "nohostport").find("no port in \"nohostport\"") !=
        std::string::npos);
  CHECK(error_of("VARANUS_UPSTREAM", "::1:27017").find("an IPv6 address needs brackets") !=
        std::string::npos);
  CHECK(error_of("VARANUS_GRACE_PERIOD", "soon").find("VARANUS_GRACE_PERIOD: expected seconds") !=
        std::string::npos);
  CHECK(error_of("VARANUS_IO_THREADS", "0").find("VARANUS_IO_THREADS: ") != std::string::npos);
  CHECK(error_of("VARANUS_LOG_FORMAT", "xml").find("VARANUS_LOG_FORMAT: expected") !=
        std::string::npos);
  CHECK(error_of("VARANUS_CONFIG", "/nonexistent.json").find("/nonexistent.json") !=
        std::string::npos);
  // The same value as a flag is fine when the flag overrides the variable.
  CHECK(app::parse_cli({"--listen", "127.0.0.1:1"}, {{"VARANUS_LISTEN", "bad"}}).action ==
        Cli::Action::run);
}

TEST_CASE("the example config parses and documents the defaults") {
  Cli cli = parse({"--config", VARANUS_EXAMPLE_CONFIG});
  REQUIRE_MESSAGE(cli.action == Cli::Action::run, cli.error);
  const auto& p = cli.config.proxy;
  CHECK(p.listen == proxy::Endpoint{"127.0.0.1", 27018});
  CHECK(p.upstream == proxy::Endpoint{"127.0.0.1", 27017});
  CHECK(p.gracePeriod == 10s);
  CHECK(cli.config.tracker.maxMessageSize == 48'000'000);
}

// ---- the real binary --------------------------------------------------------

TEST_CASE("varanus --help exits 0 and explains the options") {
  Child c({"--help"});
  CHECK(c.finish() == 0);
  CHECK(c.outText.find("--upstream") != std::string::npos);
  CHECK(c.outText.find("--listen") != std::string::npos);
  CHECK(c.outText.find("--otlp-endpoint URL") != std::string::npos);
  CHECK(c.outText.find("--config") != std::string::npos);
  CHECK(c.outText.find("--grace-period") != std::string::npos);
}

TEST_CASE("varanus --version prints the project version") {
  Child c({"--version"});
  CHECK(c.finish() == 0);
  CHECK(c.outText == "varanus 0.1.0\n");
}

TEST_CASE("varanus with a bad flag exits 2 with a message") {
  Child c({"--frobnicate"});
  CHECK(c.finish() == 2);
  CHECK(c.errText.find("unknown option '--frobnicate'") != std::string::npos);
  CHECK(c.outText.empty());
}

TEST_CASE("varanus --config with an unknown key names the key path") {
  TempFile f(R"({"upstream": {"host": "127.0.0.1", "colour": "blue"}})");
  Child c({"--config", f.path});
  CHECK(c.finish() == 2);
  CHECK(c.errText == "varanus: config: /upstream/colour: unknown key\n");
}

TEST_CASE("varanus on port 0 names the bound port and exits 0 on SIGTERM") {
  Child c({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:27017", "--grace-period", "5"});
  REQUIRE(c.wait_stderr("\n"));
  const std::string prefix = "varanus: listening on 127.0.0.1:";
  REQUIRE(c.errText.rfind(prefix, 0) == 0);
  const auto comma = c.errText.find(", upstream 127.0.0.1:27017\n");
  REQUIRE(comma != std::string::npos);
  const int port = std::stoi(c.errText.substr(prefix.size(), comma - prefix.size()));
  CHECK(port > 0);
  CHECK(port < 65536);

  // It accepts there.
  int fd = connect_to(static_cast<std::uint16_t>(port));
  CHECK(fd >= 0);
  if (fd >= 0) ::close(fd);

  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(::kill(c.pid, SIGTERM) == 0);
  CHECK(c.finish() == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 4s);  // nothing open: no need to wait out the grace
  CHECK(c.errText.find("SIGTERM: stopping") != std::string::npos);
}

TEST_CASE("varanus --check-config validates and describes without listening") {
  TempFile f(R"({"upstream": {"host": "10.1.2.3", "port": 27999}})");
  Child c({"--config", f.path, "--check-config", "--listen", "127.0.0.1:1"});
  CHECK(c.finish() == 0);
  CHECK(c.outText.find("upstream 10.1.2.3:27999 (config " + f.path + ")\n") != std::string::npos);
  CHECK(c.outText.find("listen 127.0.0.1:1 (flag --listen)\n") != std::string::npos);
  CHECK(c.outText.find("gracePeriodSeconds 10 (default)\n") != std::string::npos);
  TempFile bad(R"({"sinks": {"outputs": [{"type": "carrier-pigeon"}]}})");
  Child c2({"--config", bad.path, "--check-config"});
  CHECK(c2.finish() == 2);
  CHECK(c2.errText.find("config: /sinks/outputs/0/type") != std::string::npos);
}

TEST_CASE("a replica-set upstream: a listener per seed, each said on its own line") {
  const std::string rs = "mongodb://h1:27017,h2:27017/?replicaSet=rs0";
  Child check({"--check-config", "--upstream", rs});
  CHECK(check.finish() == 0);
  CHECK(check.outText.find("upstream " + rs + " (flag --upstream)\n") != std::string::npos);
  // The members are not reachable: the listeners open all the same.
  Child run({"--listen", "127.0.0.1:0", "--upstream", "mongodb://m1:27017,M2:27018/"});
  REQUIRE(run.wait_stderr("listening on"));
  CHECK(run.errText.find("varanus: member m1:27017 via 127.0.0.1:") != std::string::npos);
  CHECK(run.errText.find("varanus: member m2:27018 via 127.0.0.1:") != std::string::npos);
}

TEST_CASE("the real binary reads VARANUS_* variables, a bad one exits 2 naming it") {
  struct ScopedEnv {
    const char* name;
    ScopedEnv(const char* n, const char* v) : name(n) { ::setenv(n, v, 1); }
    ~ScopedEnv() { ::unsetenv(name); }
  };
  {
    ScopedEnv upstream("VARANUS_UPSTREAM", "10.9.8.7:27100");
    ScopedEnv typo("VARANUS_LISTN", "127.0.0.1:1");
    Child c({"--check-config"});
    CHECK(c.finish() == 0);
    CHECK(c.outText.find("upstream 10.9.8.7:27100 (env VARANUS_UPSTREAM)\n") != std::string::npos);
    CHECK(c.outText.find("ignored: VARANUS_LISTN names no option") != std::string::npos);
  }
  {
    ScopedEnv bad("VARANUS_MAX_MESSAGE_SIZE", "huge");
    Child c({"--check-config"});
    CHECK(c.finish() == 2);
    CHECK(c.errText.find("varanus: VARANUS_MAX_MESSAGE_SIZE: expected bytes") == 0);
  }
}

namespace {

std::int32_t le32(const std::uint8_t* p) {
  return static_cast<std::int32_t>(
      static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
      static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
}

bool read_exact(int fd, std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_all(int fd, const std::vector<std::uint8_t>& b) {
  return ::write(fd, b.data(), b.size()) == static_cast<ssize_t>(b.size());
}

/// A one-connection upstream answering each OP_MSG with {ok: 1}, or with
/// nothing when `answer` is false (a request then stays in flight).
struct OkUpstream {
  int listener = -1;
  std::uint16_t port = 0;
  std::atomic<int> requests{0};  ///< whole messages received
  std::thread thread;
  explicit OkUpstream(bool answer = true) {
    const auto l = test::listen_loopback(4);
    listener = l.fd;
    port = l.port;
    thread = std::thread([this, answer] {
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::uint8_t header[16];
      std::int32_t id = 500;
      while (read_exact(fd, header, 16)) {
        std::vector<std::uint8_t> body(static_cast<std::size_t>(le32(header)) - 16);
        if (!read_exact(fd, body.data(), body.size())) break;
        requests.fetch_add(1);
        if (!answer) continue;
        bson_t* reply = bson_new();
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        auto frame = wire::build_op_msg(id++, le32(header + 4), 0, wire::BsonView::of(reply));
        bson_destroy(reply);
        if (!write_all(fd, frame)) break;
      }
      ::close(fd);
    });
  }
  ~OkUpstream() {
    ::shutdown(listener, SHUT_RDWR);
    ::close(listener);
    thread.join();
  }
};

}  // namespace

TEST_CASE("varanus relays a ping and prints its events as JSON lines on stdout") {
  OkUpstream upstream;
  Child c({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:" + std::to_string(upstream.port),
           "--io-threads", "2"});
  REQUIRE(c.wait_stderr("\n"));
  const std::string prefix = "varanus: listening on 127.0.0.1:";
  REQUIRE(c.errText.rfind(prefix, 0) == 0);
  const int port = std::stoi(c.errText.substr(prefix.size()));

  int fd = connect_to(static_cast<std::uint16_t>(port));
  REQUIRE(fd >= 0);
  bson_t* cmd = bson_new();
  BSON_APPEND_INT32(cmd, "ping", 1);
  BSON_APPEND_UTF8(cmd, "$db", "admin");
  auto request = wire::build_op_msg(77, 0, 0, wire::BsonView::of(cmd));
  bson_destroy(cmd);
  REQUIRE(write_all(fd, request));
  std::uint8_t header[16];
  REQUIRE(read_exact(fd, header, 16));
  CHECK(le32(header + 8) == 77);
  std::vector<std::uint8_t> body(static_cast<std::size_t>(le32(header)) - 16);
  REQUIRE(read_exact(fd, body.data(), body.size()));
  ::close(fd);

  // Whether varanus sees the close first or the stop finds the connection
  // idle, connectionClosed is the last event.
  REQUIRE(::kill(c.pid, SIGTERM) == 0);
  CHECK(c.finish() == 0);

  std::vector<nlohmann::json> lines;
  std::size_t start = 0;
  for (std::size_t nl; (nl = c.outText.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(nlohmann::json::parse(c.outText.substr(start, nl - start)));
  }
  std::vector<std::string> kinds;
  for (const auto& j : lines) kinds.push_back(j.at("event").get<std::string>());
  CHECK(kinds == std::vector<std::string>{"connectionOpened", "commandStarted", "commandSucceeded",
                                          "connectionClosed"});
  REQUIRE(lines.size() == 4);
  CHECK(lines[1].at("commandName") == "ping");
  CHECK(lines[1].at("databaseName") == "admin");
  CHECK(lines[1].at("requestId") == 77);
  CHECK(lines[1].at("connectionId") == 1);
  CHECK(lines[1].at("server") == "127.0.0.1:" + std::to_string(upstream.port));
  CHECK(lines[2].at("requestId") == 77);
  CHECK(lines[2].at("durationMicros").get<std::int64_t>() >= 0);
}

namespace {

/// Starts varanus in front of `upstreamPort`, returns the port it listens on.
int start_varanus(Child& c) {
  REQUIRE(c.wait_stderr("\n"));
  const std::string prefix = "varanus: listening on 127.0.0.1:";
  REQUIRE(c.errText.rfind(prefix, 0) == 0);
  return std::stoi(c.errText.substr(prefix.size()));
}

bool still_running(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) == 0;
}

/// Sends a ping on `fd` (a connection to varanus).
void send_ping(int fd, std::int32_t requestId) {
  bson_t* cmd = bson_new();
  BSON_APPEND_INT32(cmd, "ping", 1);
  BSON_APPEND_UTF8(cmd, "$db", "admin");
  auto request = wire::build_op_msg(requestId, 0, 0, wire::BsonView::of(cmd));
  bson_destroy(cmd);
  REQUIRE(write_all(fd, request));
}

/// Waits until `upstream` has received `n` whole requests. Once it has, the
/// proxy has also inspected them: inspection follows the send in the same
/// loop turn, before any posted work (a signal's stop) runs.
bool wait_requests(const OkUpstream& upstream, int n) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (upstream.requests.load() < n) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace

TEST_CASE("SIGTERM waits for a request in flight up to the grace period, then exits 0") {
  OkUpstream upstream(false);  // never answers
  Child c({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:" + std::to_string(upstream.port),
           "--grace-period", "0.5"});
  const int port = start_varanus(c);
  int fd = connect_to(static_cast<std::uint16_t>(port));
  REQUIRE(fd >= 0);
  send_ping(fd, 5);
  REQUIRE(wait_requests(upstream, 1));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(::kill(c.pid, SIGTERM) == 0);
  CHECK(c.finish() == 0);
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 400ms);
  CHECK(waited < 5s);
  // The connection was closed at the end of the grace period, its ping failed.
  CHECK(c.outText.find("\"reason\":\"proxy stopped: grace period over\"") != std::string::npos);
  CHECK(c.outText.find("\"event\":\"commandFailed\"") != std::string::npos);
  ::close(fd);
}

TEST_CASE("SIGTERM closes a connection with nothing in flight at once") {
  OkUpstream upstream;
  Child c({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:" + std::to_string(upstream.port),
           "--grace-period", "30"});
  const int port = start_varanus(c);
  int fd = connect_to(static_cast<std::uint16_t>(port));
  REQUIRE(fd >= 0);
  send_ping(fd, 6);
  std::uint8_t header[16];
  REQUIRE(read_exact(fd, header, 16));  // answered: nothing in flight now
  std::vector<std::uint8_t> body(static_cast<std::size_t>(le32(header)) - 16);
  REQUIRE(read_exact(fd, body.data(), body.size()));
  // The client keeps the connection open, as a driver's pool does.
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(::kill(c.pid, SIGTERM) == 0);
  CHECK(c.finish() == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // far below the 30 s grace period
  CHECK(c.outText.find("\"reason\":\"proxy stopped: connection idle\"") != std::string::npos);
  CHECK(c.outText.find("\"event\":\"commandFailed\"") == std::string::npos);
  // The client sees an orderly close.
  std::uint8_t byte = 0;
  CHECK(::read(fd, &byte, 1) == 0);
  ::close(fd);
}

TEST_CASE("a second signal exits at once") {
  OkUpstream upstream(false);
  Child c({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:" + std::to_string(upstream.port),
           "--grace-period", "30"});
  const int port = start_varanus(c);
  int fd = connect_to(static_cast<std::uint16_t>(port));
  REQUIRE(fd >= 0);
  send_ping(fd, 7);
  REQUIRE(wait_requests(upstream, 1));
  REQUIRE(::kill(c.pid, SIGINT) == 0);
  REQUIRE(c.wait_stderr("SIGINT: stopping"));
  CHECK(still_running(c.pid));  // waiting for the request in flight
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(::kill(c.pid, SIGINT) == 0);
  CHECK(c.finish() == 128 + SIGINT);
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  CHECK(c.errText.find("second signal") != std::string::npos);
  ::close(fd);
}

TEST_CASE("varanus reports an address it cannot listen on and exits 1") {
  // Take a port, then ask varanus for the same one.
  const auto [fd, taken] = test::listen_loopback(1);
  const std::string port = std::to_string(taken);
  Child c({"--listen", "127.0.0.1:" + port});
  CHECK(c.finish() == 1);
  CHECK(c.errText.find("varanus: cannot listen on 127.0.0.1:" + port + ": ") == 0);
  ::close(fd);
}

TEST_CASE("an admin endpoint beyond loopback is said with a warning, loopback is not") {
  Child wide({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--admin", "0.0.0.0:0"});
  REQUIRE(wide.wait_stderr("admin endpoint on http://0.0.0.0:"));
  CHECK(wide.wait_stderr("varanus: warning: the admin endpoint 0.0.0.0:"));
  CHECK(wide.errText.find("is reachable from other machines and needs no authentication") !=
        std::string::npos);
  Child local({"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--admin", "127.0.0.1:0"});
  REQUIRE(local.wait_stderr("admin endpoint on http://127.0.0.1:"));
  // Everything said at start-up has been said once it stops.
  REQUIRE(::kill(local.pid, SIGTERM) == 0);
  CHECK(local.finish() == 0);
  CHECK(local.errText.find("SIGTERM: stopping") != std::string::npos);
  CHECK(local.errText.find("warning: the admin endpoint") == std::string::npos);
}
