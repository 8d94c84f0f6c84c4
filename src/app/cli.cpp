// varanus app — command-line parsing. Flags take "--flag VALUE" or
// "--flag=VALUE"; errors are one line and exit code 2.
#include "cli.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

namespace varanus::app {

namespace {

template <class T>
std::optional<T> parse_number(const std::string& s) {
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_seconds(const std::string& s) {
  // from_chars for double is in g++ 12's libstdc++.
  auto v = parse_number<double>(s);
  if (!v || !std::isfinite(*v) || *v < 0) return std::nullopt;
  return v;
}

std::chrono::milliseconds to_millis(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(seconds * 1000.0)));
}

}  // namespace

std::string usage() {
  std::string text =
      R"(usage: varanus [options]
       varanus decode ...        (decode recorded wire messages; see varanus decode --help)
       varanus replay FILE...    (the events of the MongoDB traffic in pcap/pcapng captures;
                                 see varanus replay --help)
       varanus sniff -i IFACE    (the same from a live interface; needs CAP_NET_RAW;
                                 see varanus sniff --help)

varanus is a transparent MongoDB wire-protocol proxy. Point a driver at the
listen address; every byte is relayed unchanged to the upstream
(mongod/mongos) and each command becomes monitoring events.

options:
)" +
      std::string(
          R"(  --listen HOST:PORT        address to accept drivers on (default 127.0.0.1:27018;
                            port 0 picks a free port, named in the start-up line)
  --upstream HOST:PORT      mongod/mongos to relay to (default 127.0.0.1:27017)
  --config FILE             JSON config file (see config/varanus.example.json);
                            flags given on the command line override it
  --io-threads N            I/O threads (default: the number of cores)
  --busy-poll-us N          under load, poll for socket events up to N microseconds
                            before sleeping: fewer wakeups, more throughput, up to
                            N µs of CPU per wait; only while recent sleeps were
                            shorter than N (default 50, 0 = never)
  --grace-period SECONDS    on SIGINT/SIGTERM, how long open connections may go on
                            before they are closed (default 10)
  --connect-timeout SECONDS upstream connect timeout (default 5)
  --max-message-size BYTES  frames larger than this are relayed but not inspected
                            (default 48000000, mongod's maxMessageSizeBytes)
  --max-document-length N   bound on each document (command, reply) in an event line,
                            in JSON characters; cut documents say so (default 1000,
                            0 = unlimited)
  --check-config [FILE]     validate the configuration (FILE, or --config, and flags), print what
                            would run, exit 0 (2 on an error); opens nothing
  -h, --help                this text
  --version                 print the version
)") + sink_flags_usage() +
      R"(
output:
  stdout   events, one JSON object per line: commandStarted, commandSucceeded,
           commandFailed, connectionOpened, connectionClosed, with keys t, event,
           connectionId, client, server, requestId, commandName, databaseName,
           command / reply / failure, durationMicros, ...
  stderr   diagnostics; first the start-up line
             varanus: listening on HOST:PORT, upstream HOST:PORT
           then one line per problem (upstream unreachable, a connection whose
           traffic could not be decoded: relaying goes on, inspection stops).

signals:
  SIGINT, SIGTERM   stop accepting, let open connections finish within the grace
                    period, flush events, exit 0; a second signal exits at once.

exit status: 0 on a clean stop, 1 on a runtime error (cannot listen), 2 on a
usage or config error.
)";
  return text;
}

Cli parse_cli(const std::vector<std::string>& args) {
  Cli cli;
  auto error = [&cli](std::string msg) {
    cli.action = Cli::Action::error;
    cli.error = "varanus: " + std::move(msg) + " (see varanus --help)";
    return cli;
  };

  // Split into (flag, value) pairs first, so --config can be applied before
  // the flags that override it.
  struct Opt {
    std::string flag;
    std::string value;
  };
  std::vector<Opt> opts;
  std::optional<std::string> configPath;
  bool check = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "-h" || a == "--help") {
      cli.action = Cli::Action::help;
      return cli;
    }
    if (a == "--version") {
      cli.action = Cli::Action::version;
      return cli;
    }
    if (a == "--check-config") {
      check = true;
      // `varanus --check-config FILE` is short for `--config FILE --check-config`.
      if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
        if (configPath) return error("--check-config FILE: --config was given too");
        configPath = args[++i];
      }
      continue;
    }
    if (a.rfind("--", 0) != 0) return error("unexpected argument '" + a + "'");
    std::string value;
    bool hasValue = false;
    if (auto eq = a.find('='); eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      hasValue = true;
    }
    static const char* const known[] = {
        "--listen",       "--upstream",        "--config",           "--io-threads",
        "--grace-period", "--connect-timeout", "--max-message-size", "--max-document-length",
        "--busy-poll-us"};
    bool isKnown = is_sink_flag(a);
    for (const char* k : known) isKnown = isKnown || a == k;
    if (!isKnown) return error("unknown option '" + a + "'");
    if (!hasValue) {
      if (i + 1 >= args.size()) return error("option '" + a + "' needs a value");
      value = args[++i];
    }
    if (a == "--config") {
      configPath = value;
    } else if (is_sink_flag(a)) {
      try {
        apply_sink_flag(cli.sinkFlags, a, value);
      } catch (const SinkConfigError& e) {
        return error(e.what());
      }
    } else {
      opts.push_back({a, value});
    }
  }

  if (configPath) {
    try {
      load_config_file(*configPath, cli.config);
    } catch (const ConfigError& e) {
      cli.action = Cli::Action::error;
      cli.error = std::string("varanus: ") + e.what();
      return cli;
    }
  }

  auto& p = cli.config.proxy;
  for (const auto& [flag, value] : opts) {
    if (flag == "--listen" || flag == "--upstream") {
      auto ep = proxy::Endpoint::parse(value);
      if (!ep) return error(flag + ": expected HOST:PORT, got '" + value + "'");
      (flag == "--listen" ? p.listen : p.upstream) = *ep;
    } else if (flag == "--io-threads") {
      auto n = parse_number<unsigned>(value);
      if (!n || *n == 0 || *n > 1024)
        return error(flag + ": expected 1 to 1024, got '" + value + "'");
      p.ioThreads = *n;
    } else if (flag == "--busy-poll-us") {
      auto n = parse_number<unsigned>(value);
      if (!n || *n > 1000)
        return error(flag + ": expected microseconds, 0 to 1000, got '" + value + "'");
      p.busyPoll = std::chrono::microseconds(*n);
    } else if (flag == "--grace-period" || flag == "--connect-timeout") {
      auto s = parse_seconds(value);
      if (!s) return error(flag + ": expected seconds, got '" + value + "'");
      if (flag == "--grace-period") {
        p.gracePeriod = to_millis(*s);
      } else {
        p.connectTimeout = to_millis(*s);
        if (p.connectTimeout.count() == 0) return error(flag + ": must be more than 0");
      }
    } else if (flag == "--max-message-size") {
      auto n = parse_number<std::int64_t>(value);
      if (!n || *n <= 16 || *n > std::numeric_limits<std::int32_t>::max()) {
        return error(flag + ": expected bytes (17 to 2147483647), got '" + value + "'");
      }
      p.maxMessageSize = static_cast<std::int32_t>(*n);
    } else if (flag == "--max-document-length") {
      auto n = parse_number<std::size_t>(value);
      if (!n) return error(flag + ": expected a number of characters, got '" + value + "'");
      cli.config.maxDocumentLength = *n;
    }
  }
  if (check) cli.action = Cli::Action::check;
  return cli;
}

}  // namespace varanus::app
