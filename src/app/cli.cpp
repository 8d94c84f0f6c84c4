// varanus app — command-line parsing. Flags take "--flag VALUE" or
// "--flag=VALUE"; errors are one line and exit code 2.
#include "cli.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

#include "varanus/wire/host_port.hpp"

extern char** environ;

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
       varanus decode FILE...       decode recorded wire messages (varanus decode --help)
       varanus healthcheck [opts]   is a running varanus healthy? (for containers;
                                    varanus healthcheck --help)
       varanus top --admin HOST:PORT  live view of a running proxy's commands
                                    (varanus top --help)
       varanus replay FILE...       the events of the MongoDB traffic in pcap/pcapng
                                    captures (varanus replay --help)
       varanus sniff -i IFACE       the same from a live interface; needs CAP_NET_RAW
                                    (varanus sniff --help)

varanus is a transparent MongoDB wire-protocol proxy. Point a driver at the
listen address; every byte is relayed unchanged to the upstream
(mongod/mongos) and each command becomes monitoring events.

options:
)" +
      std::string(
          R"(  --listen HOST:PORT        address to accept drivers on (default 127.0.0.1:27018;
                            port 0 picks a free port, named in the start-up line)
  --upstream HOST:PORT      mongod/mongos to relay to (default 127.0.0.1:27017), or a
                            connection string mongodb://HOST:PORT/?OPTIONS (options
                            connectTimeoutMS, heartbeatFrequencyMS, replicaSet,
                            directConnection, tls*). Several hosts or replicaSet:
                            a listener per member (the first at --listen, the
                            others on the next ports), hello replies rewritten to
                            name them, and the topology monitored (SDAM events)
  --advertise-host NAME     the host drivers reach varanus at, named in rewritten
                            hello replies (default: the --listen host; this
                            machine's name when listening on 0.0.0.0 or ::)
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
  --max-connections N       client connections open at once, at most; more are closed
                            at accept, counted and said on stderr. varanus raises its
                            open-files limit (RLIMIT_NOFILE) to the hard limit at
                            start; default 0 = what that limit allows, (limit-64)/2
                            (two descriptors per connection); a larger N is kept,
                            with a warning
  --half-close-timeout SECONDS
                            a client that closed while its upstream side is still
                            open (a request in flight, a hung upstream): the upstream
                            gets this long to finish, then the connection ends and
                            its pending requests fail (default 2)
  --idle-timeout SECONDS    end a connection with no byte either way for this long
                            (default 0 = never)
  --max-message-size BYTES  frames larger than this are relayed but not inspected
                            (default 48000000, mongod's maxMessageSizeBytes)
  --max-document-length N   bound on each document (command, reply) in an event line,
                            in JSON characters; cut documents say so (default 1000,
                            0 = unlimited)
  --check-config [FILE]     validate the configuration (FILE, or --config, the environment
                            and flags), print each value and where it came from, exit 0
                            (2 on an error); opens nothing

TLS (PEM files; the README's section "TLS"):
  --tls-cert FILE           serve TLS to drivers with this certificate (then any
                            intermediates: a chain); plaintext drivers are refused
  --tls-key FILE            its private key (default: in the --tls-cert file)
  --tls-ca FILE             require client certificates signed by these CAs (mutual TLS)
  --tls-min-version V       1.2 (default) or 1.3
  --upstream-tls            speak TLS to the upstream: SNI sent, its certificate and
                            host name verified
  --upstream-tls-ca FILE    CAs to verify the upstream with (default: the system store)
  --upstream-tls-cert FILE  client certificate for the upstream (x.509 authentication)
  --upstream-tls-key FILE   its private key (default: in the --upstream-tls-cert file)
  --upstream-tls-insecure   verify neither the upstream's certificate nor its name
                            (a warning at start-up)
  A certificate or key that is missing, unreadable or does not match is an error at
  start-up naming the file (exit 2); SIGHUP reloads them.

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

environment:
  Every option above that takes a value can come from a variable VARANUS_<OPTION>:
  the flag's name in capitals, dashes as underscores (VARANUS_LISTEN,
  VARANUS_UPSTREAM, VARANUS_CONFIG, VARANUS_GRACE_PERIOD, VARANUS_LOG_FILE,
  VARANUS_LOG_FORMAT, VARANUS_ADMIN, ...; VARANUS_PLUGIN takes paths separated
  by ':'). Precedence: flags > environment > config file > defaults. A bad value
  is an error naming the variable.

signals:
  SIGINT, SIGTERM   stop accepting; close at once every connection with no request
                    in flight, let the others finish within the grace period;
                    flush events, exit 0. A second signal exits at once.
  SIGHUP            reopen the log files (for logrotate); reload the TLS certificates
                    and keys (new connections use them; a reload that fails keeps
                    the old ones and says why on stderr).

exit status: 0 on a clean stop, 1 on a runtime error (cannot listen), 2 on a
usage or config error.
)";
  return text;
}

std::optional<std::string> tls_config_error(const proxy::TlsConfig& tls) {
  const auto& s = tls.server;
  if (!s.enabled() && (!s.keyFile.empty() || !s.caFile.empty()))
    return std::string(
        "--tls-key and --tls-ca need --tls-cert (the certificate varanus presents to clients)");
  const auto& u = tls.upstream;
  if (!u.enabled && (!u.caFile.empty() || !u.certFile.empty() || !u.keyFile.empty() || u.insecure))
    return std::string(
        "--upstream-tls-ca, --upstream-tls-cert, --upstream-tls-key and --upstream-tls-insecure "
        "need --upstream-tls");
  if (!u.keyFile.empty() && u.certFile.empty())
    return std::string("--upstream-tls-key needs --upstream-tls-cert");
  return std::nullopt;
}

Environment varanus_environment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view entry(*e);
    if (entry.rfind("VARANUS_", 0) != 0) continue;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace_back(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

std::string env_name(std::string_view flag) {
  std::string name = "VARANUS_";
  for (char c : flag.substr(flag.rfind("--", 0) == 0 ? 2 : 0))
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

std::string Cli::source(std::string_view key) const {
  for (auto it = sources.rbegin(); it != sources.rend(); ++it)
    if (it->first == key) return it->second;
  return "default";
}

namespace {

// The options with a value, by flag, and the config key each sets.
struct OptionKey {
  const char* flag;
  const char* key;
};
constexpr OptionKey kOptions[] = {
    {"--listen", "listen"},
    {"--upstream", "upstream"},
    {"--advertise-host", "advertiseHost"},
    {"--config", "config"},
    {"--io-threads", "ioThreads"},
    {"--grace-period", "gracePeriodSeconds"},
    {"--connect-timeout", "connectTimeoutSeconds"},
    {"--max-message-size", "maxMessageSize"},
    {"--max-document-length", "maxDocumentLength"},
    {"--busy-poll-us", "busyPollMicros"},
    {"--max-connections", "maxConnections"},
    {"--half-close-timeout", "halfCloseTimeoutSeconds"},
    {"--idle-timeout", "idleTimeoutSeconds"},
    {"--tls-cert", "tlsCertFile"},
    {"--tls-key", "tlsKeyFile"},
    {"--tls-ca", "tlsCAFile"},
    {"--tls-min-version", "tlsMinVersion"},
    {"--upstream-tls", "upstreamTls"},
    {"--upstream-tls-ca", "upstreamTlsCAFile"},
    {"--upstream-tls-cert", "upstreamTlsCertFile"},
    {"--upstream-tls-key", "upstreamTlsKeyFile"},
    {"--upstream-tls-insecure", "upstreamTlsInsecure"},
};

/// Switches: "--upstream-tls" alone means true; "--upstream-tls=false" and
/// VARANUS_UPSTREAM_TLS=true|false|1|0 also work.
bool is_switch(std::string_view flag) {
  return flag == "--upstream-tls" || flag == "--upstream-tls-insecure";
}

std::optional<bool> parse_bool(const std::string& s) {
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return std::nullopt;
}

/// The config key a flag sets ("" for an unknown flag); sink flags keep
/// their flag name without the dashes.
std::string option_key(std::string_view flag) {
  for (const auto& o : kOptions)
    if (flag == o.flag) return o.key;
  if (is_sink_flag(flag)) return std::string(flag.substr(2));
  return {};
}

/// --grace-period for VARANUS_GRACE_PERIOD ("" when it names no option).
std::string flag_of_env(std::string_view name) {
  if (name.rfind("VARANUS_", 0) != 0) return {};
  std::string flag = "--";
  for (char c : name.substr(8))
    flag += c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return option_key(flag).empty() ? std::string() : flag;
}

}  // namespace

Cli parse_cli(const std::vector<std::string>& args, const Environment& env) {
  Cli cli;
  auto error = [&cli](std::string msg) {
    cli.action = Cli::Action::error;
    cli.error = "varanus: " + std::move(msg) + " (see varanus --help)";
    return cli;
  };

  // Split into (flag, value) pairs first, so --config can be applied before
  // the options that override it.
  struct Opt {
    std::string flag;
    std::string value;
    std::string label;   ///< "--listen" or "VARANUS_LISTEN", for errors
    std::string source;  ///< "flag --listen" or "env VARANUS_LISTEN"
  };
  std::vector<Opt> flagOpts;
  std::optional<Opt> configOpt;
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
        if (configOpt) return error("--check-config FILE: --config was given too");
        configOpt = Opt{"--config", args[++i], "--check-config", "flag --check-config"};
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
    if (option_key(a).empty()) return error("unknown option '" + a + "'");
    if (!hasValue && is_switch(a)) {
      value = "true";
    } else if (!hasValue) {
      if (i + 1 >= args.size()) return error("option '" + a + "' needs a value");
      value = args[++i];
    }
    Opt o{a, value, a, "flag " + a};
    if (a == "--config") {
      configOpt = std::move(o);
    } else {
      flagOpts.push_back(std::move(o));
    }
  }

  // The environment: each variable applies unless its flag was given.
  std::vector<Opt> opts;
  for (const auto& [name, value] : env) {
    const std::string flag = flag_of_env(name);
    if (flag.empty()) {
      if (name.rfind("VARANUS_", 0) == 0) cli.unknownEnv.push_back(name);
      continue;
    }
    const bool given = flag == "--config"
                           ? configOpt.has_value()
                           : std::any_of(flagOpts.begin(), flagOpts.end(),
                                         [&](const Opt& o) { return o.flag == flag; });
    if (given) continue;
    Opt o{flag, value, name, "env " + name};
    if (flag == "--config") {
      configOpt = std::move(o);
    } else {
      opts.push_back(std::move(o));
    }
  }
  opts.insert(opts.end(), flagOpts.begin(), flagOpts.end());

  if (configOpt) {
    if (configOpt->value.empty()) return error(configOpt->label + ": expected a file name");
    try {
      for (auto& key : load_config_file(configOpt->value, cli.config))
        cli.sources.emplace_back(std::move(key), "config " + configOpt->value);
    } catch (const ConfigError& e) {
      cli.action = Cli::Action::error;
      cli.error = std::string("varanus: ") + e.what();
      return cli;
    }
    cli.sources.emplace_back("config", configOpt->source);
    cli.configPath = configOpt->value;
  }

  for (const auto& o : opts) {
    if (!is_sink_flag(o.flag)) continue;
    try {
      if (o.flag == "--plugin" && o.label != o.flag) {
        // VARANUS_PLUGIN: one path, or several separated by ':' (as PATH).
        std::size_t start = 0;
        for (std::size_t colon; (colon = o.value.find(':', start)) != std::string::npos;
             start = colon + 1)
          apply_sink_flag(cli.sinkFlags, o.flag, o.value.substr(start, colon - start));
        apply_sink_flag(cli.sinkFlags, o.flag, o.value.substr(start));
      } else {
        apply_sink_flag(cli.sinkFlags, o.flag, o.value);
      }
    } catch (const SinkConfigError& e) {
      // The message starts with the flag; name the variable instead.
      std::string what = e.what();
      if (what.rfind(o.flag, 0) == 0) what = o.label + what.substr(o.flag.size());
      return error(what);
    }
    cli.sinkFlags.from[o.flag] = o.label;
    cli.sources.emplace_back(option_key(o.flag), o.source);
  }

  auto& p = cli.config.proxy;
  for (const auto& o : opts) {
    if (is_sink_flag(o.flag)) continue;
    const std::string& flag = o.label;
    const std::string& value = o.value;
    cli.sources.emplace_back(option_key(o.flag), o.source);
    if (o.flag == "--listen") {
      const wire::HostPort hp = wire::parse_host_port(value);
      if (!hp.ok()) return error(flag + ": expected HOST:PORT, got '" + value + "': " + hp.error);
      p.listen = proxy::Endpoint{std::string(hp.host), *hp.port};
    } else if (o.flag == "--upstream") {
      try {
        set_upstream(cli.config, proxy::ConnectionString::parse(value));
      } catch (const proxy::ConnectionStringError& e) {
        return error(flag + ": " + e.what());
      }
    } else if (o.flag == "--advertise-host") {
      if (value.empty() || value.find_first_of(" /:[]") != std::string::npos)
        return error(flag + ": expected a host name or IPv4 address, got '" + value + "'");
      p.members.advertiseHost = value;
    } else if (o.flag == "--io-threads") {
      auto n = parse_number<unsigned>(value);
      if (!n || *n == 0 || *n > 1024)
        return error(flag + ": expected 1 to 1024, got '" + value + "'");
      p.ioThreads = *n;
    } else if (o.flag == "--busy-poll-us") {
      auto n = parse_number<unsigned>(value);
      if (!n || *n > 1000)
        return error(flag + ": expected microseconds, 0 to 1000, got '" + value + "'");
      p.busyPoll = std::chrono::microseconds(*n);
    } else if (o.flag == "--max-connections") {
      auto n = parse_number<std::size_t>(value);
      if (!n || *n > 10'000'000)
        return error(flag + ": expected 0 to 10000000, got '" + value + "'");
      p.maxConnections = *n;
    } else if (o.flag == "--grace-period" || o.flag == "--connect-timeout" ||
               o.flag == "--half-close-timeout" || o.flag == "--idle-timeout") {
      auto s = parse_seconds(value);
      if (!s) return error(flag + ": expected seconds, got '" + value + "'");
      if (o.flag == "--half-close-timeout") {
        p.halfCloseTimeout = to_millis(*s);
      } else if (o.flag == "--idle-timeout") {
        p.idleTimeout = to_millis(*s);
      } else if (o.flag == "--grace-period") {
        p.gracePeriod = to_millis(*s);
      } else {
        p.connectTimeout = to_millis(*s);
        if (p.connectTimeout.count() == 0) return error(flag + ": must be more than 0");
      }
    } else if (o.flag == "--max-message-size") {
      auto n = parse_number<std::int64_t>(value);
      if (!n || *n <= 16 || *n > std::numeric_limits<std::int32_t>::max()) {
        return error(flag + ": expected bytes (17 to 2147483647), got '" + value + "'");
      }
      cli.config.tracker.maxMessageSize = static_cast<std::int32_t>(*n);
    } else if (o.flag == "--tls-cert" || o.flag == "--tls-key" || o.flag == "--tls-ca" ||
               o.flag == "--upstream-tls-ca" || o.flag == "--upstream-tls-cert" ||
               o.flag == "--upstream-tls-key") {
      if (value.empty()) return error(flag + ": expected a file name");
      auto& t = p.tls;
      (o.flag == "--tls-cert"            ? t.server.certFile
       : o.flag == "--tls-key"           ? t.server.keyFile
       : o.flag == "--tls-ca"            ? t.server.caFile
       : o.flag == "--upstream-tls-ca"   ? t.upstream.caFile
       : o.flag == "--upstream-tls-cert" ? t.upstream.certFile
                                         : t.upstream.keyFile) = value;
    } else if (o.flag == "--tls-min-version") {
      if (value != "1.2" && value != "1.3")
        return error(flag + ": expected 1.2 or 1.3, got '" + value + "'");
      p.tls.server.minVersion = value == "1.3" ? proxy::TlsVersion::v1_3 : proxy::TlsVersion::v1_2;
    } else if (is_switch(o.flag)) {
      auto b = parse_bool(value);
      if (!b) return error(flag + ": expected true or false, got '" + value + "'");
      (o.flag == "--upstream-tls" ? p.tls.upstream.enabled : p.tls.upstream.insecure) = *b;
    } else if (o.flag == "--max-document-length") {
      auto n = parse_number<std::size_t>(value);
      if (!n) return error(flag + ": expected a number of characters, got '" + value + "'");
      cli.config.maxDocumentLength = *n;
    }
  }
  // connectTimeoutMS in the connection string, unless the timeout was set
  // on its own (flag, variable or config key).
  if (cli.config.upstream.connectTimeout && cli.source("connectTimeoutSeconds") == "default") {
    p.connectTimeout = *cli.config.upstream.connectTimeout;
    cli.sources.emplace_back("connectTimeoutSeconds", "upstream connectTimeoutMS");
  }
  if (auto why = tls_config_error(p.tls)) return error(*why);
  if (check) cli.action = Cli::Action::check;
  return cli;
}

}  // namespace varanus::app
